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


@pytest.mark.claim("generative.linear-ae-pca", role="corrects")
def test_linear_autoencoder_spans_the_pca_subspace(record_property):
    torch.manual_seed(1)
    x = _data()
    k = 2
    xc = (x - x.mean(0)).numpy()
    _, s, Vt = np.linalg.svd(xc, full_matrices=False)
    discarded = float((s[k:] ** 2).sum() / len(xc))  # Eckart-Young: the PCA reconstruction error
    # affine (with biases) on uncentred data, and purely linear on centred data: both are PCA
    for ae, data, mean in ((Autoencoder(6, k).double(), x, x.mean(0).numpy()),
                           (Autoencoder(6, k, bias=False).double(), torch.from_numpy(xc), 0.0)):
        loss = fit_autoencoder(ae, data, steps=500)
        angles = scipy.linalg.subspace_angles(ae.g.weight.detach().numpy(), Vt[:k].T)
        assert angles.max() < 1e-5
        assert loss == pytest.approx(discarded, rel=1e-8)
        # reconstructions are the PCA projections
        pca = xc @ Vt[:k].T @ Vt[:k] + mean
        np.testing.assert_allclose(ae(data).detach().numpy(), pca, atol=1e-5)
    record_property("evidence", f"max principal angle {angles.max():.1e} rad; loss {loss:.6f} = discarded variance {discarded:.6f}")


@pytest.mark.claim("generative.linear-ae-pca", role="refutes")
def test_bias_free_linear_autoencoder_on_uncentred_data_is_not_pca(record_property):
    torch.manual_seed(1)
    x = _data() + 2.0  # a clear mean offset
    k = 2
    ae = Autoencoder(6, k, bias=False).double()
    loss = fit_autoencoder(ae, x, steps=500)
    xn = x.numpy()
    _, s_raw, V_raw = np.linalg.svd(xn, full_matrices=False)          # second-moment eigenvectors
    _, s_c, V_c = np.linalg.svd(xn - xn.mean(0), full_matrices=False)  # PCA
    raw_tail, discarded = float((s_raw[k:] ** 2).sum() / len(xn)), float((s_c[k:] ** 2).sum() / len(xn))
    # the optimum of min |x - D E x|^2 is the truncated SVD of the uncentred data (Eckart-Young) ...
    assert loss == pytest.approx(raw_tail, rel=1e-6)
    assert scipy.linalg.subspace_angles(ae.g.weight.detach().numpy(), V_raw[:k].T).max() < 1e-4
    # ... not PCA: another subspace and a larger error than the discarded variance
    angle = scipy.linalg.subspace_angles(ae.g.weight.detach().numpy(), V_c[:k].T).max()
    assert angle > 0.1 and loss > 1.2 * discarded
    record_property("evidence", f"linear AE without biases, mean offset 2: error {loss:.3f} > PCA's {discarded:.3f}, "
                    f"decoder subspace {angle:.2f} rad from the principal one")


def _curve(n=200, seed=0):
    t = torch.rand(n, generator=generator(seed), dtype=torch.float64) * 2 - 1
    return torch.stack([t, 2 * t ** 2], 1)


def _curve_autoencoder(eps=1e-2, c=1.0):
    """The project's tanh Autoencoder(2, 1, hidden=4) with weights set by hand so that
    f(x) ~ x_1 and g(z) ~ (z, 2 z^2) (a second difference of tanh gives the square)."""
    ae = Autoencoder(2, 1, hidden=4).double()
    d2 = -2 * np.tanh(c) / np.cosh(c) ** 2  # tanh''(c)
    with torch.no_grad():
        for m in list(ae.f) + list(ae.g):
            if isinstance(m, torch.nn.Linear):
                m.weight.zero_()
                m.bias.zero_()
        ae.f[0].weight[0, 0] = eps          # h = tanh(eps x_1)
        ae.f[2].weight[0, 0] = 1 / eps      # z = tanh(eps x_1) / eps ~ x_1
        ae.g[0].weight[:, 0] = torch.tensor([eps, eps, -eps, 0.0], dtype=torch.float64)
        ae.g[0].bias[:] = torch.tensor([0.0, c, c, c], dtype=torch.float64)
        ae.g[2].weight[0, 0] = 1 / eps      # x_1 ~ tanh(eps z) / eps
        ae.g[2].weight[1, 1:] = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64) * 2 / (eps ** 2 * d2)
    return ae


def test_nonlinear_undercomplete_autoencoder_beats_the_discarded_variance(record_property):
    """Not a claim of the notes (line 196 only defines the words): the linear compression bound of
    the test below is a linear fact; a tanh autoencoder with |Z| = 1 reconstructs a curve exactly."""
    x = _curve()
    s = np.linalg.svd((x - x.mean(0)).numpy(), compute_uv=False)
    discarded = float(s[1] ** 2 / len(x))
    with torch.no_grad():
        err = float(reconstruction_loss(x, _curve_autoencoder()(x)))
    assert is_undercomplete(2, 1)
    assert discarded > 0.25 and err < 1e-3 * discarded
    record_property("evidence", f"x = (t, 2t^2), t ~ U(-1, 1), |Z| = 1: discarded variance {discarded:.3f}, "
                    f"tanh autoencoder error {err:.1e}")


@pytest.mark.claim("generative.under-overcomplete")
def test_linear_undercomplete_must_compress_overcomplete_can_copy():
    # |Z| < |X| is undercomplete; else, |Z| = |X| included, overcomplete
    assert is_undercomplete(6, 2) and is_undercomplete(6, 5) and not is_undercomplete(6, 6) and not is_undercomplete(6, 9)
    torch.manual_seed(2)
    for x in (_data(), _curve()):
        d = x.shape[1]
        s = np.linalg.svd((x - x.mean(0)).numpy(), compute_uv=False)
        z_dim = d // 3 if d > 2 else 1
        bound = float((s[z_dim:] ** 2).sum() / len(x))
        # linear (affine) undercomplete: at least the discarded variance, and the optimum attains it
        err = fit_autoencoder(Autoencoder(d, z_dim).double(), x, steps=300)
        assert bound * (1 - 1e-9) <= err <= bound * (1 + 1e-6) and bound > 0.01
        total = float(((x - x.mean(0)) ** 2).sum(1).mean())
        assert fit_autoencoder(Autoencoder(d, d + 3).double(), x, steps=150) < 1e-9 * total
        assert fit_autoencoder(Autoencoder(d, d).double(), x, steps=500) < 1e-9 * total  # |Z| = |X|: overcomplete, copies


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


@pytest.mark.claim("generative.overcomplete-denoising")
def test_overcomplete_autoencoder_inpaints_a_missing_coordinate(record_property):
    # inpainting: coordinate 0 is blanked (set to 0) in the input; the overcomplete AE is trained
    # (full-batch L-BFGS, by hand here) to return the whole clean x
    torch.manual_seed(8)
    data = _data(n=2600, scales=(3.0, 2.0, 0.2, 0.2, 0.2, 0.2))
    x, x_test = data[:600], data[600:]
    keep = torch.ones(6, dtype=torch.float64)
    keep[0] = 0
    ae = Autoencoder(6, 9).double()
    opt = torch.optim.LBFGS(ae.parameters(), max_iter=300, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = reconstruction_loss(x, ae(x * keep))
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        filled = ae(x_test * keep)[:, 0]
    err_ae = float(((filled - x_test[:, 0]) ** 2).mean())
    err_blank = float((x_test[:, 0] ** 2).mean())  # the corrupted input's value, 0, at the hole
    # the best affine prediction of x_0 from the other coordinates (least squares, fitted on the same data)
    A = torch.cat([x[:, 1:], torch.ones(len(x), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(A, x[:, :1]).solution
    err_ls = float(((torch.cat([x_test[:, 1:], torch.ones(len(x_test), 1, dtype=torch.float64)], 1) @ coef)[:, 0]
                    - x_test[:, 0]).pow(2).mean())
    assert err_ae < 0.05 * err_blank
    assert err_ae == pytest.approx(err_ls, rel=1e-4)  # no bottleneck: the AE reaches the least-squares fill
    record_property("evidence", f"hole at x_0, test MSE there: blank input {err_blank:.3f}, AE {err_ae:.4f} "
                                f"(least squares {err_ls:.4f})")


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


@pytest.mark.claim("generative.flows-tractable")
def test_normalising_flow_density_is_exact_and_integrates_to_one(record_property):
    from impl.flows import Flow, standard_normal_log_prob

    torch.manual_seed(11)  # the couplings' nn.Linear layers initialise from the global generator
    g = generator(11)
    flow = Flow(2, steps=3, hidden=16, generator=g).double()
    with torch.no_grad():
        flow.log_prob(torch.randn(256, 2, generator=g, dtype=torch.float64))  # ActNorm's data-dependent init
        for name, prm in flow.named_parameters():  # couplings away from their identity start
            if "coupling" in name:
                prm.add_(0.2 * torch.randn(prm.shape, generator=g, dtype=prm.dtype))
        # the density is exact: log N(f^{-1}(x)) + log|det d f^{-1} / dx| with the Jacobian by autograd
        x = torch.randn(6, 2, generator=g, dtype=torch.float64)
        lp = flow.log_prob(x)
    for k in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[k])
        with torch.no_grad():
            ref = standard_normal_log_prob(flow(x[k:k + 1])[0])[0] + torch.linalg.slogdet(J).logabsdet
        torch.testing.assert_close(lp[k], ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        # not an affine map (whose density would be Gaussian): log|det| varies with x
        ld = flow(flow.sample(4000, generator=g))[1]
        assert float(ld.max() - ld.min()) > 1.0
        # it integrates to one: trapezoid rule on [-6, 6]^2, step 0.01 (the mass outside is negligible:
        # [-8, 8]^2 gives the same sum to 1e-15; the rule's O(h^2) error is ~1e-7: halving h moves the sum by 7e-8)
        t = torch.linspace(-6, 6, 1201, dtype=torch.float64)
        X, Y = torch.meshgrid(t, t, indexing="ij")
        p = flow.log_prob(torch.stack([X.reshape(-1), Y.reshape(-1)], 1)).exp().view(len(t), len(t))
        mass = float(torch.trapezoid(torch.trapezoid(p, t, dim=1), t))
    assert abs(mass - 1) < 1e-5
    record_property("evidence", f"3-step Glow flow in 2-D: int p(x) dx = 1 {mass - 1:+.1e}; log p matches "
                                f"the autograd-Jacobian change of variables to 1e-12")


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="^z_dim:"):
        Autoencoder(3, 0)
    with pytest.raises(TypeError, match="^x_dim:"):
        is_undercomplete(3.0, 2)
    with pytest.raises(ValueError, match="^x:"):
        Autoencoder(3, 2).encode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^z:"):
        Autoencoder(3, 2).decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="^x_hat:"):
        reconstruction_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^noise_std:"):
        corrupt(torch.zeros(2, 3), -1.0)
    with pytest.raises(TypeError, match="^model:"):
        fit_autoencoder(torch.nn.Linear(3, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="^noise_std:"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(2, 3), noise_std=-0.5)
    with pytest.raises(TypeError, match="^x:"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="^steps:"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(2, 3), steps=0)
    with pytest.raises(TypeError, match="^bias:"):
        Autoencoder(3, 2, bias=1)
    with pytest.raises(ValueError, match="^bias:"):
        Autoencoder(3, 2, hidden=4, bias=False)
    with pytest.raises(TypeError, match="^generator:"):
        corrupt(torch.zeros(2, 3), 0.1, generator=0)


def test_state_dict_round_trip():
    for hidden, bias in ((None, True), (None, False), (7, True)):
        torch.manual_seed(0)
        a, b = Autoencoder(4, 2, hidden=hidden, bias=bias).double(), Autoencoder(4, 2, hidden=hidden, bias=bias).double()
        b.load_state_dict(a.state_dict())
        x = torch.randn(5, 4, dtype=torch.float64)
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


def test_extreme_inputs_stay_finite():
    ae = Autoencoder(3, 2, hidden=4).double()
    x = torch.tensor([[1e150, -1e150, 0.0]], dtype=torch.float64)
    assert torch.isfinite(ae(x)).all()  # tanh saturates


def test_smallest_valid_sizes_are_accepted_and_zero_is_not():
    for kw in (dict(), dict(hidden=1)):
        ae = Autoencoder(1, 1, **kw).double()
        assert ae(torch.zeros(2, 1, dtype=torch.float64)).shape == (2, 1)
        assert is_undercomplete(2, 1) and not is_undercomplete(1, 1)
    with pytest.raises(ValueError, match="^x_dim:"):
        Autoencoder(0, 2)
    with pytest.raises(ValueError, match="^hidden:"):
        Autoencoder(3, 2, hidden=0)
    with pytest.raises(ValueError, match="^x_dim:"):
        is_undercomplete(0, 1)
    with pytest.raises(ValueError, match="^z_dim:"):
        is_undercomplete(2, 0)
    with pytest.raises(TypeError, match="^model's parameters:|^x:"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="^x:"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(2, 4))
    assert isinstance(fit_autoencoder(Autoencoder(2, 1).double(), torch.eye(2, dtype=torch.float64), steps=1), float)


def test_reconstruction_loss_and_corrupt_check_their_tensors():
    with pytest.raises(ValueError, match="^x:"):
        reconstruction_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="^x_hat:"):
        reconstruction_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="^x:"):
        corrupt([0.0, 1.0], 0.1)
