"""Autoencoders: reconstruction, the linear autoencoder against PCA (numpy SVD, scipy principal
angles), under- and overcomplete codes, denoising."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from impl.generative import Autoencoder, corrupt, fit_autoencoder, is_undercomplete, reconstruction_loss
from spec.testing import generator


def _data(n=300, d=6, scales=(3.0, 2.0, 1.0, 0.5, 0.3, 0.1), seed=0, dtype=torch.float64):
    g = generator(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=dtype))
    z = torch.randn(n, d, generator=g, dtype=dtype) * torch.tensor(scales, dtype=dtype)
    return z @ Q.T + torch.randn(d, generator=g, dtype=dtype)  # a mean offset too


@pytest.mark.claim("generative.autoencoder")
def test_autoencoder_maps_x_to_z_to_x(device):
    torch.manual_seed(0)
    for hidden in (None, 16):
        ae = Autoencoder(5, 2, hidden=hidden).to(device, torch.float64)
        x = torch.randn(7, 5, dtype=torch.float64, device=device)
        assert ae.encode(x).shape == (7, 2) and ae(x).shape == (7, 5)
        torch.testing.assert_close(ae(x), ae.decode(ae.encode(x)))
    # data on a 2-D affine subspace: after training g o f is the identity on the data
    x = _data(n=60, scales=(2.0, 1.0, 0, 0, 0, 0)).to(device)
    ae = Autoencoder(6, 2).to(device, torch.float64)
    with torch.no_grad():
        before = float(reconstruction_loss(x, ae(x)))
    after = fit_autoencoder(ae, x, steps=100)
    assert after < 1e-10 * before


@pytest.mark.claim("generative.linear-ae-pca")
def test_linear_autoencoder_spans_the_pca_subspace(record_property):
    torch.manual_seed(1)
    x = _data()
    k = 2
    ae = Autoencoder(6, k)
    ae.double()
    loss = fit_autoencoder(ae, x, steps=500)
    xc = (x - x.mean(0)).numpy()
    _, s, Vt = np.linalg.svd(xc, full_matrices=False)
    angles = scipy.linalg.subspace_angles(ae.g.weight.detach().numpy(), Vt[:k].T)
    assert angles.max() < 1e-5
    discarded = float((s[k:] ** 2).sum() / len(xc))  # Eckart-Young: the PCA reconstruction error
    assert loss == pytest.approx(discarded, rel=1e-8)
    # reconstructions are the PCA projections
    pca = xc @ Vt[:k].T @ Vt[:k] + x.mean(0).numpy()
    np.testing.assert_allclose(ae(x).detach().numpy(), pca, atol=1e-5)
    record_property("evidence", f"max principal angle {angles.max():.1e} rad; loss {loss:.6f} = discarded variance {discarded:.6f}")


@pytest.mark.claim("generative.under-overcomplete")
def test_undercomplete_must_compress_overcomplete_can_copy():
    assert is_undercomplete(6, 2) and not is_undercomplete(6, 6) and not is_undercomplete(6, 9)
    torch.manual_seed(2)
    x = _data()
    s = np.linalg.svd((x - x.mean(0)).numpy(), compute_uv=False)
    for z_dim in (2,):
        bound = float((s[z_dim:] ** 2).sum() / len(x))
        assert fit_autoencoder(Autoencoder(6, z_dim).double(), x, steps=300) >= bound * (1 - 1e-9) > 0.01
    total = float(((x - x.mean(0)) ** 2).sum(1).mean())
    assert fit_autoencoder(Autoencoder(6, 9).double(), x, steps=150) < 1e-9 * total


@pytest.mark.claim("generative.overcomplete-denoising")
def test_overcomplete_denoising_autoencoder_removes_noise(record_property):
    torch.manual_seed(3)
    data = _data(n=2600, scales=(3.0, 2.0, 0.2, 0.2, 0.2, 0.2))
    x, x_test = data[:600], data[600:]
    ae = Autoencoder(6, 9).double()  # overcomplete
    fit_autoencoder(ae, x, noise_std=1.0, steps=300, generator=generator(0))
    noisy = corrupt(x_test, 1.0, generator=generator(1))
    err_noisy = float(reconstruction_loss(x_test, noisy))
    err_dae = float(reconstruction_loss(x_test, ae(noisy).detach()))
    assert err_dae < 0.5 * err_noisy
    # not the identity: the end-to-end linear map g o f is far from I
    M = (ae.g.weight @ ae.f.weight).detach()
    assert float((M - torch.eye(6, dtype=M.dtype)).abs().max()) > 0.3
    record_property("evidence", f"test MSE: noisy input {err_noisy:.3f}, denoising AE output {err_dae:.3f}")


@pytest.mark.claim("generative.autoencoder")
def test_hidden_autoencoder_is_a_tanh_network():
    torch.manual_seed(4)
    ae = Autoencoder(4, 2, hidden=5).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    (A1, a1), (A2, a2) = [(m.weight.detach(), m.bias.detach()) for m in ae.f if isinstance(m, torch.nn.Linear)]
    (B1, b1), (B2, b2) = [(m.weight.detach(), m.bias.detach()) for m in ae.g if isinstance(m, torch.nn.Linear)]
    z = np.tanh(x.numpy() @ A1.numpy().T + a1.numpy()) @ A2.numpy().T + a2.numpy()  # f: NN with a tanh layer
    np.testing.assert_allclose(ae.encode(x).detach().numpy(), z, rtol=1e-12, atol=1e-14)
    xh = np.tanh(z @ B1.numpy().T + b1.numpy()) @ B2.numpy().T + b2.numpy()
    np.testing.assert_allclose(ae(x).detach().numpy(), xh, rtol=1e-12, atol=1e-14)


@pytest.mark.claim("generative.overcomplete-denoising")
def test_corruption_is_gaussian_noise_of_the_given_std():
    n, std = 20000, 0.7
    x = torch.full((n, 1), 2.0, dtype=torch.float64)
    e = (corrupt(x, std, generator=generator(5)) - x)[:, 0] / std
    assert abs(float(e.mean())) < 6 / np.sqrt(n)
    assert abs(float(e.var()) - 1) < 6 * np.sqrt(2 / n)
    assert scipy.stats.kstest(e.numpy(), "norm").pvalue > 1e-6
    torch.testing.assert_close(corrupt(x, 0.0), x, rtol=0, atol=0)


@pytest.mark.claim("generative.overcomplete-denoising")
def test_fit_returns_the_denoising_objective():
    torch.manual_seed(6)
    x = _data(n=40)
    ae = Autoencoder(6, 8).double()
    loss = fit_autoencoder(ae, x, noise_std=0.5, steps=5, generator=generator(7))
    x_in = corrupt(x, 0.5, generator=generator(7))  # the same fixed noisy copy
    with torch.no_grad():
        assert loss == pytest.approx(float(reconstruction_loss(x, ae(x_in))), rel=1e-12)
        assert loss != pytest.approx(float(reconstruction_loss(x, ae(x))), rel=1e-3)


@pytest.mark.claim("generative.autoencoder")
def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="z_dim"):
        Autoencoder(3, 0)
    with pytest.raises(TypeError, match="x_dim"):
        is_undercomplete(3.0, 2)
    with pytest.raises(ValueError, match="x"):
        Autoencoder(3, 2).encode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="z"):
        Autoencoder(3, 2).decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x_hat"):
        reconstruction_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="noise_std"):
        corrupt(torch.zeros(2, 3), -1.0)
    with pytest.raises(TypeError, match="model"):
        fit_autoencoder(torch.nn.Linear(3, 3), torch.zeros(2, 3))
