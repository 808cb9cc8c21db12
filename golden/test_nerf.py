"""Golden outputs of the NeRF systems on fixed inputs: volume-rendering weights and colours, the positional
encoding, a NeRF MLP and a hash encoding with fixed weights, and the render of an analytic field through a
fixed pinhole camera. Inputs come from numpy's legacy RandomState (its stream is frozen across versions)."""

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import nerf as nf

pytestmark = pytest.mark.golden
F64 = torch.float64
TOL = dict(atol=1e-12, rtol=1e-10)


def _render_inputs():
    rs = np.random.RandomState(5)
    sigma = torch.from_numpy(rs.uniform(0, 3, size=(6, 16)))
    t = torch.from_numpy(np.sort(rs.uniform(0, 4, size=(6, 17)), axis=-1))
    colors = torch.from_numpy(rs.uniform(0, 1, size=(6, 16, 3)))
    return sigma, colors, t


def _fill(module, seed, scale=0.3):
    rs = np.random.RandomState(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rs.standard_normal(tuple(p.shape)) * scale))
    return module


def test_golden_volume_render(ndarrays_regression):
    sigma, colors, t = _render_inputs()
    c, w = nf.volume_render(sigma, colors, t)
    assert c.dtype == w.dtype == F64 and c.shape == (6, 3) and w.shape == (6, 16)
    assert_close(w, nf.alpha_compositing_weights(sigma, t))  # the notes' product form, checked before storing
    ndarrays_regression.check({"colour": c.numpy(), "weights": w.numpy()}, basename="nerf_volume_render",
                              default_tolerance=TOL)


def test_golden_volume_render_float32_on_device(device, original_datadir):
    """float32 on the device against the stored float64 values: 16-term prefix sums of O(1) optical depths,
    rounding ~16 * 6e-8; tolerance 5e-6."""
    data = np.load(original_datadir / "nerf_volume_render.npz")
    sigma, colors, t = (x.to(device=device, dtype=torch.float32) for x in _render_inputs())
    c, w = nf.volume_render(sigma, colors, t)
    assert c.dtype == torch.float32
    np.testing.assert_allclose(w.cpu().double().numpy(), data["weights"], rtol=0, atol=5e-6)
    np.testing.assert_allclose(c.cpu().double().numpy(), data["colour"], rtol=0, atol=5e-6)


def test_golden_encodings_and_mlp(ndarrays_regression):
    rs = np.random.RandomState(9)
    x = torch.from_numpy(rs.uniform(-1, 1, size=(5, 3)))
    d = torch.from_numpy(rs.standard_normal((5, 3)))
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    pe = nf.positional_encoding(x, 4)
    assert pe.shape == (5, 3 + 24) and pe.dtype == F64
    net = _fill(nf.NeRFMLP(n_freqs_pos=3, n_freqs_dir=2, width=16, depth=2).double(), 3)
    with torch.no_grad():
        rgb, sigma = net(x, d)
    enc = _fill(nf.HashEncoding(n_levels=3, log2_table_size=6, n_features=2, base_resolution=2,
                                finest_resolution=16).double(), 4, scale=1.0)
    u = (x + 1) / 2
    with torch.no_grad():
        h = enc(u)
    assert h.shape == (5, 6) and rgb.shape == (5, 3) and sigma.shape == (5,)
    ndarrays_regression.check({"positional_encoding": pe.numpy(), "rgb": rgb.numpy(), "sigma": sigma.numpy(),
                               "hash_encoding": h.numpy()}, basename="nerf_encodings_mlp", default_tolerance=TOL)


def test_golden_render_field(ndarrays_regression):
    """An analytic field (a ball of density 8 coloured by position) rendered through a 6 x 5 pinhole camera,
    deterministic samples, and with 8 hierarchical samples drawn from a seeded CPU generator."""
    eye = torch.tensor([1.5, -2.0, 1.0], dtype=F64)
    R = nf.camera_to_world_look_at(eye, torch.zeros(3, dtype=F64), torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    o, dirs = nf.pinhole_rays(eye, R, 6, 5, 6.0)

    def field(x, d):
        return (0.5 + 0.5 * x).clamp(0, 1), 8.0 * (torch.linalg.vector_norm(x, dim=-1) < 0.8).to(x.dtype)

    c, w, t = nf.render_field(field, o, dirs, 1.0, 5.0, 16, stratified=False)
    g = torch.Generator().manual_seed(0)
    c_h, _, t_h = nf.render_field(field, o, dirs, 1.0, 5.0, 16, stratified=False, n_importance=8, generator=g)
    assert c.shape == (30, 3) and t_h.shape == (30, 24) and c.dtype == F64
    ndarrays_regression.check({"rotation": R.numpy(), "dirs": dirs.numpy(), "colour": c.numpy(), "weights": w.numpy(),
                               "colour_hierarchical": c_h.numpy(), "t_hierarchical": t_h.numpy()},
                              basename="nerf_render_field", default_tolerance=TOL)


def test_golden_fast_field_fourier_features_and_directions(ndarrays_regression):
    rs = np.random.RandomState(13)
    x = torch.from_numpy(rs.uniform(-1.5, 1.5, size=(6, 3)))
    theta, phi = (torch.from_numpy(rs.uniform(0, np.pi, size=6)), torch.from_numpy(rs.uniform(-np.pi, np.pi, size=6)))
    d = nf.view_direction(theta, phi)
    assert_close(torch.linalg.vector_norm(d, dim=-1), torch.ones(6, dtype=F64))
    B = torch.from_numpy(rs.standard_normal((3, 4)))
    rff = nf.random_fourier_features(x, B)
    ngp = _fill(nf.InstantNGPField(bound=1.5, hidden=8, n_levels=3, log2_table_size=6, n_features=2,
                                   base_resolution=2, finest_resolution=16).double(), 17, scale=0.7)
    with torch.no_grad():
        rgb, sigma = ngp(x, d)
    assert rff.shape == (6, 8) and rgb.shape == (6, 3) and sigma.shape == (6,) and sigma.dtype == F64
    ndarrays_regression.check({"view_direction": d.numpy(), "fourier_features": rff.numpy(), "ngp_rgb": rgb.numpy(),
                               "ngp_sigma": sigma.numpy()}, basename="nerf_fields", default_tolerance=TOL)
