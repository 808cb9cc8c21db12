"""The GAN systems the notes only name (issue 16): StyleGAN, progressive growing, 3D-GAN, PlatonicGAN,
HoloGAN, GRAF, GIRAFFE, EG3D, BicycleGAN, vid2vid and StyleFlow, each checked on its defining
mechanism; bad inputs; state_dict round trips; figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from impl import gan_systems as gs
from impl import nerf
from spec.testing import count_host_syncs, fit_exponent, generator, perturb, randn, seeds, tol

F64 = torch.float64


def centres(n: int, dtype=F64) -> torch.Tensor:
    """Voxel / pixel centres of a grid of n cells on [-1, 1] (align_corners=False)."""
    return -1 + (torch.arange(n, dtype=dtype) + 0.5) * 2 / n


# ===================================================================================== StyleGAN

@pytest.mark.claim("gan.stylegan-mapping-network", "gan.stylegan-mapping")
@given(seed=seeds())
@settings(max_examples=2)
def test_mapping_network_and_per_layer_adain_from_w(seed):
    torch.manual_seed(seed)
    g = gs.StyleGAN(z_dim=8, w_dim=6, channels=4, resolution=16, mapping_depth=3).double()
    # The mapping network is fully connected layers only: z (B, 8) -> w (B, 6).
    assert [type(m) for m in g.mapping.layers] == [nn.Linear] * 3
    z = randn(5, 8, seed=seed)
    w = g.mapping(z)
    assert w.shape == (5, 6)
    # Per-layer AdaIN driven by w: record every level's AdaIN input and output; per sample and
    # channel the output has mean y_b and std |y_s| sqrt(v / (v + eps)) (v: the input's variance,
    # eps = 1e-5), with (y_s, y_b) = A_l(w) the level's affine map of w.
    syn = g.synthesis
    noise = syn.draw_noise(5, generator=generator(seed))
    seen, orig = [], gs.adain
    gs.adain = lambda x, s, b: seen.append((x, orig(x, s, b))) or seen[-1][1]
    try:
        syn(w, noise)
    finally:
        gs.adain = orig
    assert len(seen) == syn.levels
    for level, (x, out) in enumerate(seen):
        style = syn.styles[level](w)
        ys, yb = style[:, :4], style[:, 4:]
        v = x.var((2, 3), unbiased=False)
        assert_close(out.mean((2, 3)), yb, rtol=0, atol=1e-12)
        assert_close(out.std((2, 3), unbiased=False), ys.abs() * torch.sqrt(v / (v + 1e-5)), rtol=1e-10, atol=1e-12)
    # Per instance (not batchnorm): changing sample 0's w leaves every other sample unchanged.
    w2 = w.clone()
    w2[0] += 1.0
    out, out2 = syn(w, noise), syn(w2, noise)
    assert torch.equal(out[1:], out2[1:]) and not torch.allclose(out[0], out2[0])
    # Each level has its own style: changing w at one level only (style mixing) changes the image.
    for level in range(syn.levels):
        wl = w[:, None].expand(5, syn.levels, 6).clone()
        wl[:, level] += 0.5
        assert (syn(wl, noise) - out).abs().max() > 1e-3


def _noise_and_w_changes(seed, coarse_mutant=False):
    torch.manual_seed(seed)
    g = gs.StyleGAN(resolution=32).double()
    if coarse_mutant:   # the mutant: noise only at the coarsest (4x4) level
        with torch.no_grad():
            g.synthesis.noise_scales.zero_()
            g.synthesis.noise_scales[0] = 0.2
    gen = generator(seed)
    w = g.mapping(torch.randn(8, 16, generator=gen, dtype=F64))
    w_new = g.mapping(torch.randn(8, 16, generator=gen, dtype=F64))
    n1, n2 = g.synthesis.draw_noise(8, generator=gen), g.synthesis.draw_noise(8, generator=gen)
    x = g.synthesis(w, n1)
    return g, g.synthesis(w, n2) - x, g.synthesis(w_new, n1) - x


@pytest.mark.claim("gan.stylegan-noise-fine-detail", "gan.stylegan-mapping")
@given(seed=seeds())
@settings(max_examples=3)
def test_fresh_noise_at_fixed_w_changes_only_fine_detail(seed):
    _check_fine_detail(seed)


@pytest.mark.claim("gan.stylegan-noise-fine-detail", "gan.stylegan-mapping")
def test_fresh_noise_fine_detail_evidence(record_property):
    record_property("evidence", _check_fine_detail(0))


def _check_fine_detail(seed):
    _, d_noise, d_w = _noise_and_w_changes(seed)
    share_noise, share_w = gs.high_frequency_share(d_noise), gs.high_frequency_share(d_w)
    # White noise puts 3/4 of its energy above half-Nyquist (max(|f_h|, |f_w|) > 1/4); the noise
    # change keeps most of that, a new w's change lives at low frequency.
    assert (share_noise > 0.5).all(), share_noise
    assert (share_w < 0.3).all(), share_w
    # The mutant with noise at the coarsest level fails: its change is coarse.
    _, d_mut, _ = _noise_and_w_changes(seed, coarse_mutant=True)
    assert (gs.high_frequency_share(d_mut) < 0.3).all()
    return (f"high-frequency share of the change (8 images, 32 x 32): fresh noise {share_noise.min():.2f}-"
            f"{share_noise.max():.2f}, new w <= {share_w.max():.2f}, noise at the coarsest level "
            f"<= {gs.high_frequency_share(d_mut).max():.2f}")


def test_high_frequency_share_of_known_signals():
    # Not a claim: the measure itself. A constant has share 0, a checkerboard 1, white noise ~3/4.
    n = 32
    assert gs.high_frequency_share(torch.ones(1, 1, n, n, dtype=F64)).item() == 0
    checker = (-1.0) ** (torch.arange(n)[:, None] + torch.arange(n)[None, :]).double()
    assert_close(gs.high_frequency_share(checker[None, None]), torch.ones(1, dtype=F64))
    white = randn(64, 1, n, n, seed=3)
    # White noise spreads its energy evenly over the N x N frequencies: the share is the fraction of
    # them with max(|f_h|, |f_w|) > 1/4 (numpy's frequency grid: 15 of 32 per axis). One image's share
    # is a ratio of sums over ~512 independent exponential cells: std ~ sqrt(p (1 - p) / 512) ~ 0.02;
    # the mean over 64 images has a standard error ~ 0.0025, and 0.015 is 6 of them.
    high_axis = (np.abs(np.fft.fftfreq(n)) > 0.25).mean()
    expected = 1 - (1 - high_axis) ** 2
    shares = gs.high_frequency_share(white)
    assert shares.std().item() < 0.04
    assert abs(shares.mean().item() - expected) < 0.015


def test_high_frequency_share_of_two_tones():
    # Not a claim: the measure. a cos(2 pi f1 h) + b cos(2 pi f2 w) on a 16 x 32 image, f1 = 1/16
    # (low, along H) and f2 = 10/32 (high, along W): share b^2 / (a^2 + b^2) = 0.2 for a = 1, b = 0.5.
    h = torch.arange(16, dtype=F64)[:, None]
    w = torch.arange(32, dtype=F64)[None, :]
    x = torch.cos(2 * math.pi * h / 16) + 0.5 * torch.cos(2 * math.pi * 10 * w / 32)
    assert_close(gs.high_frequency_share(x[None, None]), torch.tensor([0.2], dtype=F64), rtol=0, atol=1e-12)
    # Along H the same 5/16 frequency is high too: the test of each axis uses that axis's length.
    y = torch.cos(2 * math.pi * 5 * h / 16).expand(16, 32)
    assert_close(gs.high_frequency_share(y[None, None]), torch.ones(1, dtype=F64), rtol=0, atol=1e-12)


def test_zero_noise_scales_make_noise_irrelevant():
    torch.manual_seed(0)
    syn = gs.SynthesisNetwork(resolution=16).double()
    with torch.no_grad():
        syn.noise_scales.zero_()
    w = randn(2, 16, seed=1)
    assert torch.equal(syn(w, syn.draw_noise(2, generator=generator(1))), syn(w, syn.draw_noise(2, generator=generator(2))))


@pytest.mark.claim("gan.stylegan-noise-fine-detail", "gan.stylegan-mapping")
def test_stylegan_float32_on_device(device):
    torch.manual_seed(0)
    g64 = gs.StyleGAN(resolution=16).double()
    g32 = gs.StyleGAN(resolution=16).to(device)
    g32.load_state_dict({k: v.float() for k, v in g64.state_dict().items()})
    z = randn(3, 16, seed=2)
    noise = g64.synthesis.draw_noise(3, generator=generator(3))
    ref = g64(z, noise)
    out = g32(z.float().to(device), [n.float().to(device) for n in noise])
    assert out.device.type == torch.device(device).type and out.dtype == torch.float32
    # Five conv/AdaIN levels of O(1) activations: float32 rounding ~1e-6 relative per level, amplified
    # by AdaIN's division by the std (O(1)); 1e-4 leaves a wide margin.
    assert_close(out.cpu().double(), ref, rtol=1e-4, atol=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    assert g32(z.float().to(device), generator=gen).shape == (3, 3, 16, 16)


# =========================================================================== progressive growing

@pytest.mark.claim("gan.progressive-fade-in", "gan.hierarchical")
@given(seed=seeds(), alpha=st.floats(0.0, 1.0))
@settings(max_examples=10)
def test_fade_in_exact_ends_and_linear(seed, alpha):
    low, high = randn(2, 3, 4, 5, seed=seed), randn(2, 3, 8, 10, seed=seed + 1)
    up = low.repeat_interleave(2, 2).repeat_interleave(2, 3)   # independent nearest upsampling
    assert torch.equal(gs.upsample_nearest(low), up)
    assert torch.equal(gs.fade_in(low, high, 0.0), up)
    assert torch.equal(gs.fade_in(low, high, 1.0), high)
    assert_close(gs.fade_in(low, high, alpha), (1 - alpha) * up + alpha * high, rtol=0, atol=1e-15)


@pytest.mark.claim("gan.progressive-fade-in", "gan.hierarchical")
def test_progressive_generator_grows_from_the_previous_stage():
    torch.manual_seed(0)
    g = gs.ProgressiveGenerator(z_dim=8, channels=6, stages=3).double()
    z = randn(4, 8, seed=5)
    sizes = [g(z, s).shape[-1] for s in range(3)]
    assert sizes == [4, 8, 16]
    for s in (1, 2):
        # alpha = 0: the new stage outputs the previous stage's image upsampled, exactly.
        assert torch.equal(g(z, s, 0.0), gs.upsample_nearest(g(z, s - 1, 1.0)))
        a, b = g(z, s, 0.0), g(z, s, 1.0)
        assert (a - b).abs().max() > 1e-3
        assert_close(g(z, s, 0.3), 0.7 * a + 0.3 * b, rtol=0, atol=1e-14)


# ======================================================================================= 3D-GAN

@pytest.mark.claim("gan.3d-gan-voxels", "gan.3d-gan")
@pytest.mark.parametrize("n", [8, 16])
def test_voxel_generator_shape_range_and_layers(n):
    torch.manual_seed(n)
    g = gs.VoxelGenerator(z_dim=8, channels=8, resolution=n).double()
    v = g(randn(3, 8, seed=n))
    assert v.shape == (3, 1, n, n, n) and v.dtype == F64
    assert ((v >= 0) & (v <= 1)).all() and v.std() > 0
    assert all(isinstance(m, nn.ConvTranspose3d) and m.stride == (2, 2, 2) for m in g.ups)
    assert len(g.ups) == round(math.log2(n / 4))


@pytest.mark.claim("gan.3d-gan-voxels", "gan.3d-gan")
def test_voxel_occupancies_stay_in_0_1_for_any_weights():
    # occupancies in [0, 1] is a property of the output layer, not of a small initialisation: with
    # the last layer's weights and bias scaled by 1e3 the grid saturates at both ends and stays inside.
    torch.manual_seed(3)
    g = gs.VoxelGenerator(z_dim=8, channels=8, resolution=8).double()
    with torch.no_grad():
        g.ups[-1].weight.mul_(1e3)
        g.ups[-1].bias.mul_(1e3)
    v = g(randn(3, 8, seed=4))
    assert ((v >= 0) & (v <= 1)).all()
    assert float(v.max()) > 0.99 and float(v.min()) < 0.01


@pytest.mark.claim("gan.3d-gan-voxels", "gan.3d-gan")
@given(seed=seeds(), stride=st.integers(1, 3), k=st.integers(1, 4), data=st.data())
@settings(max_examples=10)
def test_transposed_conv3d_is_the_adjoint_of_conv3d(seed, stride, k, data):
    pad = data.draw(st.integers(0, k - 1))
    x = randn(2, 3, 4, 5, 4, seed=seed)        # every side >= k: the output is never empty
    w = randn(3, 2, k, k, k, seed=seed + 1)
    y = gs.transposed_conv3d(x, w, stride, pad)
    assert_close(y, F.conv_transpose3d(x, w, stride=stride, padding=pad), **tol(F64))
    # Adjointness <T x, u> = <x, conv3d(u)> with the same weight (conv3d's layout (C_out', C_in', k^3)
    # = (3, 2, ...): conv3d maps the 2-channel output space back to the 3-channel input space).
    u = randn(*y.shape, seed=seed + 2)
    lhs = (y * u).sum()
    rhs = (x * F.conv3d(u, w, stride=stride, padding=pad)[..., : x.shape[2], : x.shape[3], : x.shape[4]]).sum()
    assert_close(lhs, rhs, **tol(F64))


@pytest.mark.claim("gan.3d-gan-voxels", "gan.3d-gan")
def test_generator_layer_equals_the_written_out_transposed_conv():
    torch.manual_seed(1)
    g = gs.VoxelGenerator(z_dim=4, channels=4, resolution=16).double()
    layer = g.ups[0]
    x = randn(2, 4, 4, 4, 4, seed=1)
    ref = gs.transposed_conv3d(x, layer.weight, 2, 1) + layer.bias[None, :, None, None, None]
    assert_close(layer(x), ref, **tol(F64))


# ================================================================================== PlatonicGAN

A_BLOB, S_BLOB = 3.0, 0.4
SIZES = [8, 16, 32, 64]


def _blob(n):
    c = centres(n)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return A_BLOB * torch.exp(-(x * x + y * y + z * z) / (2 * S_BLOB ** 2))[None, None]


def _blob_optical_depth(n):
    """Closed form of int_{-1}^{1} sigma dz at the pixel centres: a Gaussian times erf."""
    c = centres(n)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return (A_BLOB * torch.exp(-(x * x + y * y) / (2 * S_BLOB ** 2)) * S_BLOB * math.sqrt(2 * math.pi)
            * scipy.special.erf(1 / (S_BLOB * math.sqrt(2))))


@pytest.mark.claim("gan.platonicgan-projection", "gan.platonicgan")
def test_absorption_projection_matches_the_analytic_line_integral(record_property):
    errs = []
    for n in SIZES:
        op = gs.absorption_projection(_blob(n))[0, 0]
        errs.append((op - (1 - torch.exp(-_blob_optical_depth(n)))).abs().max().item())
    order = fit_exponent(SIZES, errs)
    record_property("evidence", f"max |opacity error| {['%.1e' % e for e in errs]} at N = {SIZES}: O(N^{order:.2f})")
    # Voxels sample the density at their centres: the optical depth is a midpoint rule, error O(1/N^2).
    assert -2.2 < order < -1.8 and errs[-1] < 1e-5
    # A constant density: exact for every N (the midpoint rule integrates constants exactly).
    sig = torch.full((1, 1, 7, 2, 3), 0.8, dtype=F64)
    assert_close(gs.absorption_projection(sig, 2.0), torch.full((1, 1, 2, 3), 1 - math.exp(-1.6), dtype=F64),
                 rtol=0, atol=1e-15)


def _ea_reference():
    sig = lambda z: A_BLOB * math.exp(-z * z / (2 * S_BLOB ** 2))
    tau = lambda z: A_BLOB * S_BLOB * math.sqrt(math.pi / 2) * (scipy.special.erf(z / (S_BLOB * math.sqrt(2)))
                                                                 - scipy.special.erf(-1 / (S_BLOB * math.sqrt(2))))
    return scipy.integrate.quad(lambda z: (z + 1) / 2 * sig(z) * math.exp(-tau(z)), -1, 1,
                                epsabs=1e-14, epsrel=1e-14)[0]


@pytest.mark.claim("gan.platonicgan-projection", "gan.platonicgan")
def test_emission_absorption_matches_the_analytic_integral(record_property):
    # Density along depth a Gaussian, colour linear in depth c(z) = (z + 1) / 2:
    # C = int c(z) sigma(z) exp(-int_{-1}^z sigma) dz, by quadrature to 1e-14.
    ref = _ea_reference()
    errs = []
    for n in SIZES:
        c = centres(n)
        sig = (A_BLOB * torch.exp(-c ** 2 / (2 * S_BLOB ** 2))).view(1, 1, n, 1, 1).expand(1, 1, n, 2, 2)
        col = ((c + 1) / 2).view(1, 1, n, 1, 1).expand(1, 1, n, 2, 2)
        errs.append((gs.emission_absorption_projection(sig, col) - ref).abs().max().item())
    order = fit_exponent(SIZES, errs)
    record_property("evidence", f"max |colour error| {['%.1e' % e for e in errs]} at N = {SIZES}: O(N^{order:.2f})")
    assert -2.2 < order < -1.8 and errs[-1] < 1e-4
    # A constant colour c gives c times the absorption-only opacity, exactly (weights sum to 1 - T).
    sig = _blob(8)
    col = torch.full((1, 2, 8, 8, 8), 0.7, dtype=F64)
    assert_close(gs.emission_absorption_projection(sig, col), 0.7 * gs.absorption_projection(sig).expand(1, 2, 8, 8),
                 **tol(F64))


@pytest.mark.claim("gan.platonicgan-projection", "gan.platonicgan")
def test_emission_absorption_front_to_back_hand_computed():
    # Two voxels along depth: alpha_0 = 1 - e^{-s0 dl}, C = alpha_0 c0 + e^{-s0 dl} (1 - e^{-s1 dl}) c1.
    sig = torch.tensor([0.5, 2.0], dtype=F64).view(1, 1, 2, 1, 1)
    col = torch.tensor([0.2, 0.9], dtype=F64).view(1, 1, 2, 1, 1)
    dl = 1.0
    want = (1 - math.exp(-0.5)) * 0.2 + math.exp(-0.5) * (1 - math.exp(-2.0)) * 0.9
    assert_close(gs.emission_absorption_projection(sig, col, 2.0).item(), want, rtol=0, atol=1e-15)
    # Front to back, not back to front: reversing the depth order changes the colour.
    assert abs(gs.emission_absorption_projection(sig.flip(2), col.flip(2), 2.0).item() - want) > 0.05
    assert dl == 2.0 / 2


@pytest.mark.claim("gan.platonicgan-differentiable", "gan.platonicgan")
def test_projections_gradcheck_in_float64():
    sig = (torch.rand(1, 1, 3, 3, 3, dtype=F64, generator=generator(0)) + 0.1).requires_grad_()
    col = torch.rand(1, 2, 3, 3, 3, dtype=F64, generator=generator(1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: gs.absorption_projection(s), (sig,))
    assert torch.autograd.gradcheck(lambda s, c: gs.emission_absorption_projection(s, c), (sig, col))
    rot = gs.rotation_z(torch.tensor([0.3], dtype=F64))
    assert torch.autograd.gradcheck(lambda s: gs.absorption_projection(gs.rotate_volume(s, rot)), (sig,))


@pytest.mark.claim("gan.platonicgan-differentiable", "gan.platonicgan")
def test_platonicgan_2d_in_3d_out_rendered_back_for_the_discriminator():
    torch.manual_seed(0)
    g = gs.PlatonicGAN(in_channels=1, resolution=8).double()
    disc = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1)).double()
    image = randn(3, 1, 8, 8, seed=1)
    rot = gs.rotation_z(torch.tensor([0.0, 0.7, 2.0], dtype=F64))
    rendered, density = g(image, rot)
    assert density.shape == (3, 1, 8, 8, 8) and rendered.shape == (3, 1, 8, 8)
    assert ((rendered >= 0) & (rendered <= 1)).all()
    # The 2-D discriminator's loss on the rendering reaches every generator parameter, the encoder's
    # first layer included: the whole 2D -> 3D -> 2D path is differentiable.
    F.softplus(-disc(rendered)).mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The rendering is the projection of the rotated grid (identity pose: of the grid itself).
    assert_close(rendered[0], gs.absorption_projection(gs.rotate_volume(density[:1], rot[:1]))[0], **tol(F64))


# ====================================================================================== HoloGAN

@pytest.mark.claim("gan.hologan-rotation")
@given(seed=seeds(), k=st.integers(1, 3))
@settings(max_examples=4)
def test_quarter_turn_of_the_pose_rotates_the_rendered_features(seed, k):
    torch.manual_seed(seed)
    g = gs.HoloGAN(z_dim=6, channels=3, size=6, projected=5).double()
    z = randn(2, 6, seed=seed)
    base = g.render_features(z, torch.eye(3, dtype=F64).expand(2, 3, 3))
    # The exact rotation matrix of k quarter turns (cos, sin in {0, +-1}): voxel centres map onto
    # voxel centres, so trilinear resampling is a permutation of the grid.
    c, s = [(0, 1), (-1, 0), (0, -1)][k - 1]
    rot = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=F64).expand(2, 3, 3)
    turned = g.render_features(z, rot)
    # out(x, y) = in(R (x, y)): for k = 1 out[h, w] = in[w, S - 1 - h], torch.rot90's k = 1.
    assert_close(turned, torch.rot90(base, k, dims=(-2, -1)), rtol=0, atol=1e-12)
    assert (turned - base).abs().max() > 1e-3


@pytest.mark.claim("gan.hologan-rotation")
def test_other_angles_rotate_approximately(record_property):
    torch.manual_seed(0)
    size = 24
    g = gs.HoloGAN(z_dim=4, channels=2, size=size, projected=3).double()
    with torch.no_grad():   # a smooth template (low frequency), so that resampling is accurate
        c = centres(size)
        zz, yy, xx = torch.meshgrid(c, c, c, indexing="ij")
        g.template.copy_(torch.stack([torch.exp(-((xx - 0.3) ** 2 + yy ** 2 + zz ** 2) / 0.2),
                                      torch.exp(-(xx ** 2 + (yy + 0.2) ** 2 + zz ** 2) / 0.3)])[None])
        g.conv3d.weight.zero_()
        g.conv3d.weight[:, :, 1, 1, 1] = torch.eye(2, dtype=F64)
        g.conv3d.bias.zero_()
    z = randn(1, 4, seed=1)
    angle = math.radians(30)
    base = g.render_features(z, torch.eye(3, dtype=F64)[None])
    turned = g.render_features(z, gs.rotation_z(torch.tensor([angle], dtype=F64)))
    # The same rotation applied to the 2-D map by 2-D resampling.
    r2 = torch.tensor([[[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0]]], dtype=F64)
    ref = F.grid_sample(base, F.affine_grid(r2, list(base.shape), align_corners=False), align_corners=False)
    disk = (centres(size)[:, None] ** 2 + centres(size)[None, :] ** 2) < 0.6   # away from the clipped corners
    rel = ((turned - ref)[..., disk].abs().max() / base.abs().max()).item()
    record_property("evidence", f"30 degrees: max |3-D rotated - 2-D rotated| = {rel:.3f} of the map's max "
                    "(interpolation error; quarter turns agree to 1e-12)")
    assert rel < 0.05
    assert ((turned - base)[..., disk].abs().max() / base.abs().max()) > 0.1


@pytest.mark.claim("gan.hologan-rotation")
def test_hologan_is_3d_features_then_2d_upsampling():
    torch.manual_seed(0)
    g = gs.HoloGAN(z_dim=6, channels=3, size=8, projected=4, ups=2).double()
    z, rot = randn(2, 6, seed=0), torch.eye(3, dtype=F64).expand(2, 3, 3)
    assert g.features_3d(z).shape == (2, 3, 8, 8, 8)
    assert g.render_features(z, rot).shape == (2, 4, 8, 8)
    img = g(z, rot)
    assert img.shape == (2, 3, 32, 32)
    assert_close(img, g.upsample(g.render_features(z, rot)), rtol=0, atol=0)


# ========================================================================================= GRAF

def _graf(seed):
    torch.manual_seed(seed)
    return gs.GRAF(z_shape_dim=4, z_app_dim=3, width=32, depth=2).double()


@pytest.mark.claim("gan.graf-codes")
@given(seed=seeds())
@settings(max_examples=4)
def test_appearance_code_changes_colour_not_density(seed):
    g = _graf(seed % 1000)
    x = randn(5, 7, 3, seed=seed) * 0.5
    d = F.normalize(randn(5, 7, 3, seed=seed + 1), dim=-1)
    zs, za1, za2 = randn(4, seed=seed + 2), randn(3, seed=seed + 3), randn(3, seed=seed + 4)
    rgb1, s1 = g(x, d, zs, za1)
    rgb2, s2 = g(x, d, zs, za2)
    assert torch.equal(s1, s2)                      # density independent of z_app: exactly
    assert (rgb1 - rgb2).abs().max() > 1e-4         # colour depends on it
    _, s3 = g(x, d, randn(4, seed=seed + 5), za1)
    assert (s1 - s3).abs().max() > 1e-6             # the shape code does move the density
    # Rendered with impl/nerf.py: opacity and depth unchanged, colour changed.
    o = torch.zeros(6, 3, dtype=F64)
    o[:, 2] = 2.0
    dirs = F.normalize(randn(6, 3, seed=seed + 6) * 0.2 + torch.tensor([0, 0, -1.0], dtype=F64), dim=-1)
    c1, w1, t1 = g.render(zs, za1, o, dirs, 1.0, 3.0, 16)
    c2, w2, t2 = g.render(zs, za2, o, dirs, 1.0, 3.0, 16)
    assert torch.equal(w1, w2) and torch.equal((w1 * t1).sum(-1), (w2 * t2).sum(-1))
    assert (c1 - c2).abs().max() > 1e-5


@pytest.mark.claim("gan.graf-codes")
def test_graf_render_equals_nerf_render_of_the_conditioned_field():
    g = _graf(0)
    zs, za = randn(4, 4, seed=1), randn(4, 3, seed=2)       # one code per ray
    o = torch.zeros(4, 3, dtype=F64)
    dirs = F.normalize(randn(4, 3, seed=3), dim=-1)
    c, w, t = g.render(zs, za, o, dirs, 0.1, 1.0, 8)
    x = o[:, None] + t[..., None] * dirs[:, None]
    rgb, sigma = g(x, dirs[:, None].expand_as(x), zs[:, None], za[:, None])
    c_ref, w_ref = nerf.volume_render(sigma, rgb, torch.cat([t, torch.ones(4, 1, dtype=F64)], -1))
    assert_close(c, c_ref, **tol(F64))
    assert_close(w, w_ref, **tol(F64))


@pytest.mark.claim("gan.graf-memory", "gan.graf")
def test_voxel_grid_grows_as_n_cubed_radiance_field_is_constant(record_property):
    ns = [8, 16, 32, 64]
    voxel = [gs.parameter_count(gs.VoxelRadianceField(n)) for n in ns]
    assert voxel == [4 * n ** 3 for n in ns]
    exponent = fit_exponent(ns, voxel)
    assert abs(exponent - 3) < 1e-9
    g = _graf(0)
    # The same field renders any resolution: its parameters do not depend on N.
    count = gs.parameter_count(g)
    for n in (4, 8):
        rays_o, rays_d = nerf.pinhole_rays(torch.tensor([0, 0, 2.0], dtype=F64), torch.eye(3, dtype=F64), n, n, n)
        c, _, _ = g.render(randn(4, seed=0), randn(3, seed=1), rays_o, rays_d, 1.0, 3.0, 8)
        assert c.shape == (n * n, 3) and gs.parameter_count(g) == count
    # Both are renderable fields with the same interface.
    v = gs.VoxelRadianceField(8).double()
    rgb, sigma = v(randn(5, 3, seed=2).clamp(-1, 1))
    assert rgb.shape == (5, 3) and sigma.shape == (5,) and (sigma >= 0).all()
    record_property("evidence", f"voxel grid parameters {voxel} at N = {ns} (exponent {exponent:.2f}); "
                    f"GRAF field {count} at every N")


def test_voxel_field_is_trilinear_in_the_grid():
    v = gs.VoxelRadianceField(3).double()
    with torch.no_grad():
        v.grid.copy_(randn(1, 4, 3, 3, 3, seed=0))
    rgb, sigma = v(torch.tensor([[1.0, -1.0, 0.0]], dtype=F64))   # a grid node (align_corners=True)
    node = v.grid[0, :, 1, 0, 2]                                  # (z = 0 -> 1, y = -1 -> 0, x = 1 -> 2)
    assert_close(sigma[0], F.softplus(node[0]), **tol(F64))
    assert_close(rgb[0], torch.sigmoid(node[1:]), **tol(F64))


# ====================================================================================== GIRAFFE

@pytest.mark.claim("gan.giraffe-composition", "gan.giraffe")
@given(seed=seeds(), k=st.integers(1, 4))
@settings(max_examples=10)
def test_composition_sums_densities_and_averages_features(seed, k):
    g = generator(seed)
    sig = torch.rand(k, 5, 6, generator=g, dtype=F64) * 3
    feat = torch.randn(k, 5, 6, 4, generator=g, dtype=F64)
    total, f = gs.composite_feature_fields(sig, feat)
    assert_close(total, sig.sum(0), rtol=0, atol=1e-15)
    ref = torch.einsum("kij,kijc->ijc", sig, feat) / sig.sum(0)[..., None]
    assert_close(f, ref, **tol(F64))
    # One field alone, or the others with zero density: the composition is that field.
    zeros = torch.cat([sig[:1], torch.zeros(k - 1, 5, 6, dtype=F64)])
    t1, f1 = gs.composite_feature_fields(zeros, feat)
    assert torch.equal(t1, sig[0])
    assert_close(f1, feat[0], rtol=4e-16, atol=0)
    t0, f0 = gs.composite_feature_fields(torch.zeros(k, 5, 6, dtype=F64), feat)
    assert (t0 == 0).all() and (f0 == 0).all()


@pytest.mark.claim("gan.giraffe-composition", "gan.giraffe")
def test_composed_scene_of_one_object_is_that_object_rendered():
    torch.manual_seed(0)
    model = gs.GIRAFFE(z_shape_dim=3, z_app_dim=2, features=5, ups=2, width=16).double()
    o, d = nerf.pinhole_rays(torch.tensor([0, 0, 2.5], dtype=F64), torch.eye(3, dtype=F64), 4, 4, 4.0)
    zs, za = randn(2, 2, 3, seed=1), randn(2, 2, 2, seed=2)
    tr = randn(2, 2, 3, seed=3) * 0.2
    fmap = model.render_features(zs, za, tr, o, d, 4, 4, 1.0, 4.0, 12)
    assert fmap.shape == (2, 5, 4, 4)
    # Independent computation: both objects' fields at the sample midpoints, summed densities and
    # density-weighted features, rendered with impl/nerf.py's volume_render.
    t = torch.linspace(1.0, 4.0, 13, dtype=F64)
    mid = 0.5 * (t[1:] + t[:-1])
    x = o[:, None] + mid[:, None] * d[:, None]
    for b in range(2):
        outs = [model.field(x - tr[b, j], d[:, None].expand_as(x), zs[b, j], za[b, j]) for j in range(2)]
        sig = outs[0][0] + outs[1][0]
        feat = (outs[0][0][..., None] * outs[0][1] + outs[1][0][..., None] * outs[1][1]) / sig[..., None]
        c, _ = nerf.volume_render(sig, feat, t.expand(16, 13))
        assert_close(fmap[b], c.T.reshape(5, 4, 4), **tol(F64))
    img = model(zs, za, tr, o, d, 4, 4, 1.0, 4.0, 12)
    assert img.shape == (2, 3, 16, 16) and ((img > 0) & (img < 1)).all()


@pytest.mark.claim("gan.giraffe-upsampling", "gan.giraffe")
def test_2d_upscaling_evaluates_the_field_16_times_less(record_property):
    torch.manual_seed(0)
    model = gs.GIRAFFE(z_shape_dim=3, z_app_dim=2, features=4, ups=2, width=16).double()
    calls = []
    model.field.register_forward_hook(lambda m, args, out: calls.append(out[0].numel()))
    eye = torch.tensor([0, 0, 2.5], dtype=F64)
    zs, za, tr = randn(1, 2, 3, seed=1), randn(1, 2, 2, seed=2), torch.zeros(1, 2, 3, dtype=F64)
    o, d = nerf.pinhole_rays(eye, torch.eye(3, dtype=F64), 4, 4, 4.0)
    img = model(zs, za, tr, o, d, 4, 4, 1.0, 4.0, 8)
    low = calls.pop()
    o, d = nerf.pinhole_rays(eye, torch.eye(3, dtype=F64), 16, 16, 16.0)
    fmap = model.render_features(zs, za, tr, o, d, 16, 16, 1.0, 4.0, 8)
    full = calls.pop()
    assert img.shape[-2:] == fmap.shape[-2:] == (16, 16)
    assert low == 4 * 4 * 8 * 2 and full == 16 * low
    record_property("evidence", f"16 x 16 image: {low} field evaluations with 2-D upscaling of a 4 x 4 "
                    f"feature map, {full} rendering every pixel")


# ========================================================================================= EG3D

def _bilinear_by_hand(plane, u, v):
    """Bilinear sample of plane (C, H, W) at normalised (u along W, v along H), align_corners=False,
    zero outside, by the four neighbours' weights."""
    c, h, w = plane.shape
    px, py = ((u + 1) * w - 1) / 2, ((v + 1) * h - 1) / 2
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c, dtype=plane.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wt = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < w and 0 <= yi < h:
                out += wt * plane[:, yi, xi]
    return out


@pytest.mark.claim("gan.eg3d-triplane", "gan.eg3d")
@given(seed=seeds())
@settings(max_examples=5)
def test_triplane_lookup_is_the_sum_of_three_bilinear_samples(seed):
    planes = randn(2, 3, 4, 5, 6, seed=seed)
    pts = torch.rand(2, 7, 3, generator=generator(seed), dtype=F64) * 2.2 - 1.1   # some outside
    f = gs.triplane_features(planes, pts)
    fm = gs.triplane_features(planes, pts, "mean")
    assert f.shape == (2, 7, 4)
    assert_close(fm, f / 3, **tol(F64))
    for b in range(2):
        for p in range(7):
            x, y, z = pts[b, p].tolist()
            want = (_bilinear_by_hand(planes[b, 0], x, y) + _bilinear_by_hand(planes[b, 1], x, z)
                    + _bilinear_by_hand(planes[b, 2], y, z))
            assert_close(f[b, p], want, **tol(F64))


@pytest.mark.claim("gan.eg3d-triplane", "gan.eg3d")
def test_triplane_at_a_known_point_by_hand():
    # 2 x 2 planes, pixel centres at +-0.5 (column index along the plane's first coordinate, row
    # along its second). The point (x, y, z) = (0, 0.5, -0.5): on the xy plane (u, v) = (0, 0.5),
    # halfway along row 1: (3 + 4) / 2; on the xz plane (0, -0.5), halfway along row 0: (10 + 20) / 2;
    # on the yz plane (0.5, -0.5): row 0, column 1: 200.
    planes = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]], [[100.0, 200.0], [300.0, 400.0]]],
                          dtype=F64).view(1, 3, 1, 2, 2)
    f = gs.triplane_features(planes, torch.tensor([[[0.0, 0.5, -0.5]]], dtype=F64))
    want = (3 + 4) / 2 + (10 + 20) / 2 + 200.0
    assert_close(f.item(), want, rtol=0, atol=1e-12)


@pytest.mark.claim("gan.eg3d-triplane", "gan.eg3d")
def test_eg3d_planes_from_stylegan_rendered(device):
    torch.manual_seed(0)
    model = gs.EG3D(z_dim=8, plane_channels=4, plane_resolution=8, hidden=8).to(device)
    z = torch.randn(2, 8, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    noise = model.backbone.synthesis.draw_noise(2, generator=gen)
    planes = model.planes(z, noise)
    assert planes.shape == (2, 3, 4, 8, 8)
    o = torch.zeros(5, 3, device=device)
    o[:, 2] = 2.0
    dirs = F.normalize(torch.randn(5, 3, device=device) * 0.2 + torch.tensor([0, 0, -1.0], device=device), dim=-1)
    rgb, w = model(z, o, dirs, 1.0, 3.0, 6, noise)
    assert rgb.shape == (2, 5, 3) and w.shape == (2, 5, 6)
    # Scene 1's rendering is the rendering of its own planes only (no mixing across the batch):
    # the same rays rendered alone. Float32: the same kernels on the same inputs, rounding only.
    rgb1, w1 = model(z[1:], o, dirs, 1.0, 3.0, 6, [n[1:] for n in noise])
    assert_close(rgb[1], rgb1[0], rtol=1e-5, atol=1e-6)
    assert_close(w[1], w1[0], rtol=1e-5, atol=1e-6)


# =================================================================================== BicycleGAN

def _bicycle(seed, z_dim=2):
    torch.manual_seed(seed)
    g = gs.BicycleGenerator(1, 1, z_dim, 8).double()
    e = gs.BicycleEncoder(1, z_dim, 8).double()
    dv = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1), nn.Flatten(0)).double()
    dl = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1), nn.Flatten(0)).double()
    return g, e, dv, dl


@pytest.mark.claim("gan.bicyclegan-losses", "gan.bicyclegan")
@given(seed=seeds())
@settings(max_examples=4)
def test_bicyclegan_objective_has_every_term(seed):
    g, e, dv, dl = _bicycle(seed % 997)
    a, b = randn(3, 1, 8, 8, seed=seed), randn(3, 1, 8, 8, seed=seed + 1).tanh()
    z, eps = randn(3, 2, seed=seed + 2), randn(3, 2, seed=seed + 3)
    out = gs.bicyclegan_losses(g, e, dv, dl, a, b, z, eps, l1_weight=10.0, kl_weight=0.01, latent_weight=0.5)
    # Independent recomputation of each term with torch's own losses.
    mu, logvar = e(b)
    b_hat = g(a, mu + (0.5 * logvar).exp() * eps)
    ones = torch.ones(3, dtype=F64)
    gan_vae = F.binary_cross_entropy_with_logits(dv(b_hat), ones)
    l1 = F.l1_loss(b_hat, b)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    b_tilde = g(a, z)
    gan_lr = F.binary_cross_entropy_with_logits(dl(b_tilde), ones)
    latent = F.l1_loss(e(b_tilde)[0], z)
    for got, want in zip(out[:5], (gan_vae, l1, kl, gan_lr, latent)):
        assert_close(got, want, **tol(F64))
    assert_close(out.total, gan_vae + 10 * l1 + 0.01 * kl + gan_lr + 0.5 * latent, **tol(F64))
    # Every term is present in the total (a mutant dropping one fails): each is nonzero, and the
    # total moves with each weight by exactly that term.
    assert all(t.abs() > 1e-8 for t in out[:5])
    for kw, term in (("l1_weight", l1), ("kl_weight", kl), ("latent_weight", latent)):
        weights = dict(l1_weight=10.0, kl_weight=0.01, latent_weight=0.5)
        weights[kw] += 1.0
        bumped = gs.bicyclegan_losses(g, e, dv, dl, a, b, z, eps, **weights).total
        assert_close(bumped - out.total, term, rtol=1e-9, atol=1e-12)


@pytest.mark.claim("gan.bicyclegan-losses", "gan.bicyclegan")
def test_default_weights_are_bicyclegans():
    # BicycleGAN's published weights: lambda_image = 10, lambda_KL = 0.01, lambda_latent = 0.5.
    g, e, dv, dl = _bicycle(0)
    a, b = randn(3, 1, 8, 8, seed=1), randn(3, 1, 8, 8, seed=2).tanh()
    out = gs.bicyclegan_losses(g, e, dv, dl, a, b, randn(3, 2, seed=3), randn(3, 2, seed=4))
    assert_close(out.total, out.gan_vae + 10 * out.image_l1 + 0.01 * out.kl + out.gan_lr + 0.5 * out.latent,
                 **tol(F64))


@pytest.mark.claim("gan.bicyclegan-losses", "gan.bicyclegan")
def test_latent_regression_trains_the_generator_not_the_encoder():
    g, e, dv, dl = _bicycle(0)
    a, b = randn(3, 1, 8, 8, seed=1), randn(3, 1, 8, 8, seed=2).tanh()
    z, eps = randn(3, 2, seed=3), randn(3, 2, seed=4)
    latent = gs.bicyclegan_losses(g, e, dv, dl, a, b, z, eps).latent
    ge = torch.autograd.grad(latent, list(e.parameters()), allow_unused=True)
    gg = torch.autograd.grad(latent, list(g.parameters()), retain_graph=False)
    assert all(x is None or (x == 0).all() for x in ge)
    assert sum(x.abs().sum() for x in gg) > 0
    # The cVAE terms do train the encoder.
    l1 = gs.bicyclegan_losses(g, e, dv, dl, a, b, z, eps).image_l1
    assert sum(x.abs().sum() for x in torch.autograd.grad(l1, list(e.parameters()))) > 0


def test_train_bicyclegan_steps_every_network():
    # Not a claim: the training loop's plumbing. One step of Adam moves every parameter that has a
    # gradient by ~lr (Adam's first step is lr * g / (|g| + eps)); the history is the objective's
    # latent and L1 terms at the step's weights and draws.
    g, e, dv, dl = _bicycle(0)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (g, e, dv, dl)]
    a, b = randn(4, 1, 8, 8, seed=1), randn(4, 1, 8, 8, seed=2).tanh()
    rng = generator(3)
    hist = gs.train_bicyclegan(g, e, dv, dl, lambda n: (a[:n], b[:n]), steps=1, batch=4, lr=1e-3, generator_rng=rng)
    assert hist.latent.shape == hist.image_l1.shape == (1,)
    for m, old in zip((g, e, dv, dl), before):
        for k, v in m.state_dict().items():
            step = (v - old[k]).abs().max().item()
            assert 0 < step <= 1e-3 * (1 + 1e-6), (type(m).__name__, k, step)
    # Replay the step's draws (z then eps from the same generator) at the initial weights.
    g0, e0, dv0, dl0 = _bicycle(0)
    rng = generator(3)
    z = torch.randn(4, 2, generator=rng, dtype=F64)
    eps = torch.randn(4, 2, generator=rng, dtype=F64)
    want = gs.bicyclegan_losses(g0, e0, dv0, dl0, a, b, z, eps)
    assert_close(hist.latent[0], want.latent.detach(), **tol(F64))
    assert_close(hist.image_l1[0], want.image_l1.detach(), **tol(F64))
    # The discriminators step on real B against the detached fakes: their loss falls for a small lr.
    fake = g0(a, z).detach()
    l_before = gs.bicyclegan_discriminator_loss(dl0, b, fake)
    assert_close(l_before, F.binary_cross_entropy_with_logits(dl0(b), torch.ones(4, dtype=F64))
                 + F.binary_cross_entropy_with_logits(dl0(fake), torch.zeros(4, dtype=F64)), **tol(F64))


def _bimodal_pairs(gen):
    """A: a random smooth input; B: A shifted up or down by one of two intensities (the mode is
    not a function of A: a translator needs the latent to produce both)."""
    def sample(n):
        a = torch.rand(n, 1, 1, 1, generator=gen, dtype=F64) * torch.ones(1, 1, 8, 8, dtype=F64) - 0.5
        mode = (torch.rand(n, 1, 1, 1, generator=gen, dtype=F64) < 0.5).double() * 2 - 1
        return a, (a + 0.4 * mode).clamp(-0.99, 0.99)
    return sample


def _diversity_and_recovery(g, e):
    with torch.no_grad():
        a = _bimodal_pairs(generator(4))(256)[0]
        z = torch.randn(256, 1, generator=generator(5), dtype=F64)
        err = (e(g(a, z))[0] - z).abs().mean().item() if e is not None else float("nan")
        other = g(a, torch.randn(256, 1, generator=generator(6), dtype=F64))
        return (g(a, z) - other).abs().mean().item(), err


@pytest.mark.slow
@pytest.mark.claim("gan.bicyclegan-latent-recovery")
def test_short_training_makes_the_latent_recoverable(record_property):
    steps = 250
    g, e, dv, dl = _bicycle(1, z_dim=1)
    hist = gs.train_bicyclegan(g, e, dv, dl, _bimodal_pairs(generator(2)), steps=steps, batch=32, lr=2e-3,
                               generator_rng=generator(3))
    div, err = _diversity_and_recovery(g, e)
    # The baseline BicycleGAN improves on: pix2pix with a noise input (GAN + L1 to the target with
    # a random z, no encoder): the L1 term rewards ignoring z.
    g0, _, d0, _ = _bicycle(1, z_dim=1)
    opt_g = torch.optim.Adam(g0.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d0.parameters(), lr=2e-3, betas=(0.5, 0.999))
    sample, rng = _bimodal_pairs(generator(2)), generator(3)
    for _ in range(steps):
        a, b = sample(32)
        fake = g0(a, torch.randn(32, 1, generator=rng, dtype=F64))
        opt_d.zero_grad()
        gs.bicyclegan_discriminator_loss(d0, b, fake).backward()
        opt_d.step()
        opt_g.zero_grad()
        (F.softplus(-d0(fake)).mean() + 10 * (fake - b).abs().mean()).backward()
        opt_g.step()
    div0, _ = _diversity_and_recovery(g0, None)
    prior = math.sqrt(2 / math.pi)   # E|z| for z ~ N(0, 1): the error of an encoder that ignores the output
    data_div = 0.4                   # two draws of the data: modes 0.8 apart, different half the time
    record_property("evidence", f"after {steps} steps: E|E(G(A, z)) - z| = {err:.3f} (prior spread {prior:.3f}); "
                    f"output diversity E|G(A, z1) - G(A, z2)| = {div:.3f} (data {data_div}), pix2pix + noise "
                    f"{div0:.3f}; latent loss {hist.latent[:10].mean():.3f} -> {hist.latent[-10:].mean():.3f}")
    assert err < 0.35 * prior
    assert div > 0.3 * data_div and div > 3 * div0


# ====================================================================================== vid2vid

@pytest.mark.claim("gan.vid2vid-warp", "gan.vid2vid")
@given(seed=seeds(), dx=st.integers(-3, 3), dy=st.integers(-3, 3))
@settings(max_examples=10)
def test_warp_by_an_integer_translation_is_a_roll(seed, dx, dy):
    frame = randn(2, 3, 9, 11, seed=seed)
    flow = torch.empty(2, 2, 9, 11, dtype=F64)
    flow[:, 0], flow[:, 1] = dx, dy
    out = gs.warp(frame, flow)
    # Backward warping: out(y, x) = frame(y + dy, x + dx): a roll by (-dy, -dx) where it stays inside.
    ref = torch.roll(frame, shifts=(-dy, -dx), dims=(2, 3))
    ys, xs = slice(max(0, -dy), 9 - max(0, dy)), slice(max(0, -dx), 11 - max(0, dx))
    assert_close(out[:, :, ys, xs], ref[:, :, ys, xs], rtol=0, atol=1e-12)
    # Outside the frame: zero.
    inside = torch.zeros(9, 11, dtype=torch.bool)
    inside[ys, xs] = True
    assert out[:, :, ~inside].abs().max() < 1e-12 if (~inside).any() else True


@pytest.mark.claim("gan.vid2vid-warp", "gan.vid2vid")
def test_warp_half_pixel_is_the_average_of_neighbours_and_differentiable():
    frame = randn(1, 1, 4, 5, seed=0)
    flow = torch.zeros(1, 2, 4, 5, dtype=F64)
    flow[:, 0] = 0.5
    out = gs.warp(frame, flow)
    assert_close(out[..., :-1], 0.5 * (frame[..., :-1] + frame[..., 1:]), rtol=0, atol=1e-12)
    f = (torch.rand(1, 2, 4, 5, generator=generator(1), dtype=F64) - 0.5).requires_grad_()
    x = randn(1, 2, 4, 5, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(gs.warp, (x, f))


@pytest.mark.claim("gan.vid2vid-sequential", "gan.vid2vid")
def test_frame_t_depends_on_frame_t_minus_1_only_through_the_warp():
    torch.manual_seed(0)
    g = perturb(gs.Vid2VidGenerator(1, 2, 8).double(), 1, 0.1)
    s_t, s_prev = randn(2, 1, 6, 7, seed=1), randn(2, 1, 6, 7, seed=2)
    x_prev, delta = randn(2, 2, 6, 7, seed=3), randn(2, 2, 6, 7, seed=4)
    flow, mask, _ = g.step_outputs(s_t, s_prev)
    # x_t is affine in x_{t-1}: x_t(x + delta) - x_t(x) = (1 - m) warp(delta, w), exactly.
    diff = g.step(s_t, s_prev, x_prev + delta) - g.step(s_t, s_prev, x_prev)
    assert_close(diff, (1 - mask) * gs.warp(delta, flow), **tol(F64))
    # A mutant without the warp ((1 - m) x_{t-1}) fails this: the flow is far from zero.
    assert ((1 - mask) * delta - diff).abs().max() > 1e-2
    # Sequential generation: each frame is the step from the previous one.
    sources = randn(2, 4, 1, 6, 7, seed=5)
    frames = g(sources)
    assert frames.shape == (2, 4, 2, 6, 7)
    for t in range(1, 4):
        assert_close(frames[:, t], g.step(sources[:, t], sources[:, t - 1], frames[:, t - 1]), **tol(F64))


@pytest.mark.claim("gan.vid2vid-sequential", "gan.vid2vid")
def test_vid2vid_float32_on_device(device):
    torch.manual_seed(0)
    g64 = perturb(gs.Vid2VidGenerator(1, 2, 8).double(), 1, 0.1)
    g32 = gs.Vid2VidGenerator(1, 2, 8).to(device)
    g32.load_state_dict({k: v.float() for k, v in g64.state_dict().items()})
    sources = randn(2, 3, 1, 6, 7, seed=5)
    ref = g64(sources)
    out = g32(sources.float().to(device))
    # Three small conv layers and bilinear sampling of O(1) values per frame, 3 frames: float32
    # rounding of order 1e-6; 1e-4 is a wide margin.
    assert_close(out.cpu().double(), ref, rtol=1e-4, atol=1e-4)


# ==================================================================================== StyleFlow

def _scale_tol(*ws):
    """Round-trip tolerance in float64: 1e-12 of the largest magnitude the map passes through
    (1 + max |w|). Each step multiplies by exp(s), |s| <= 3, so absolute rounding grows with |w|; over
    300 seeds the worst round trip was 2e-13 of that scale."""
    return 1e-12 * (1 + max(w.abs().max().item() for w in ws))


def _styleflow(seed, w_dim=4, attr_dim=2, steps=3):
    torch.manual_seed(seed)
    return perturb(gs.StyleFlow(w_dim, attr_dim, steps, hidden=16).double(), seed, 0.3)


@pytest.mark.claim("flows.styleflow-invertible", "flows.styleflow")
@given(seed=seeds())
@settings(max_examples=5)
def test_styleflow_is_exactly_invertible(seed):
    sf = _styleflow(seed % 1000)
    z, a = randn(6, 4, seed=seed), randn(6, 2, seed=seed + 1)
    w = sf.z_to_w(z, a)
    assert (w - z).abs().max() > 1e-3      # not the identity
    z_back, _ = sf.w_to_z(w, a)
    assert_close(z_back, z, rtol=0, atol=_scale_tol(w))
    assert_close(sf.z_to_w(sf.w_to_z(w, a)[0], a), w, rtol=0, atol=_scale_tol(w))


@pytest.mark.claim("flows.styleflow-likelihood")
@given(seed=seeds())
@settings(max_examples=2)
def test_styleflow_logdet_is_the_autograd_jacobian(seed):
    sf = _styleflow(seed % 1000)
    w, a = randn(5, 4, seed=seed), randn(5, 2, seed=seed + 1)
    _, logdet = sf.w_to_z(w, a)
    jac = torch.func.vmap(torch.func.jacrev(lambda v, c: sf.flow(v[None], c[None])[0][0]))(w, a)
    assert_close(logdet, torch.linalg.slogdet(jac).logabsdet, **tol(F64))


@pytest.mark.claim("flows.styleflow-likelihood")
def test_styleflow_density_integrates_to_one(record_property):
    sf = _styleflow(3, w_dim=2, attr_dim=1, steps=2)
    n, lim = 401, 8.0
    g = torch.linspace(-lim, lim, n, dtype=F64)
    ww = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    masses = []
    for attr in (-1.0, 0.5):
        logp = sf.log_prob(ww, torch.full((ww.shape[0], 1), attr, dtype=F64))
        masses.append((logp.exp().sum() * (g[1] - g[0]) ** 2).item())
    record_property("evidence", f"integral of p(w | a) over [-8, 8]^2 (401^2 grid): {masses}")
    # Riemann sum of a smooth density with Gaussian tails on a grid of step 0.04: error << 1e-3.
    for m in masses:
        assert abs(m - 1) < 1e-3


@pytest.mark.claim("flows.styleflow-attribute-edit")
@given(seed=seeds())
@settings(max_examples=4)
def test_attribute_edit_changes_w_and_keeps_z(seed):
    sf = _styleflow(seed % 1000)
    z, a, a_new = randn(4, 4, seed=seed), randn(4, 2, seed=seed + 1), randn(4, 2, seed=seed + 2)
    w = sf.z_to_w(z, a)
    w_new = sf.edit(w, a, a_new)
    assert (w_new - w).abs().max() > 1e-3                                # the attribute moves w
    assert_close(sf.w_to_z(w_new, a_new)[0], z, rtol=0, atol=_scale_tol(w_new))   # ... at the same z
    # The undo runs w_new -> z -> w: six affine steps, each scaling by exp(s) with |s| <= 3, so a
    # rounding error of eps |w| can grow by up to e^(3 * 6) on the way (seed 2584 of the dev profile
    # reached 3.6e-11 relative, beyond _scale_tol's 1e-12): bound it by that worst case.
    eps = torch.finfo(F64).eps
    assert_close(sf.edit(w_new, a_new, a), w, rtol=0,
                 atol=eps * math.exp(3 * 6) * (1 + max(w.abs().max().item(), w_new.abs().max().item())))
    # In place of the mapping network: the image is the synthesis network on w = f(z; a).
    torch.manual_seed(0)
    syn = gs.SynthesisNetwork(w_dim=4, channels=4, resolution=8).double()
    sf.synthesis = syn
    noise = syn.draw_noise(4, generator=generator(seed))
    assert_close(sf(z, a, noise), syn(w, noise), **tol(F64))


@pytest.mark.claim("flows.styleflow-invertible", "flows.styleflow")
def test_styleflow_float32_on_device(device):
    sf64 = _styleflow(0)
    sf32 = gs.StyleFlow(4, 2, 3, hidden=16).to(device)
    sf32.load_state_dict({k: v.float() for k, v in sf64.state_dict().items()})
    z, a = randn(6, 4, seed=1).float().to(device), randn(6, 2, seed=2).float().to(device)
    w = sf32.z_to_w(z, a)
    # Three steps of O(1) affine maps with exp(s), |s| <= 3: round trip to a few ulps of float32
    # times the maps' conditioning (e^3 ~ 20); 1e-4 covers it.
    assert_close(sf32.w_to_z(w, a)[0], z, rtol=0, atol=1e-4)
    assert_close(w.cpu().double(), sf64.z_to_w(z.cpu().double(), a.cpu().double()), rtol=1e-4, atol=1e-4)


# ================================================================================ shared checks

MODULES = [gs.MappingNetwork, lambda: gs.SynthesisNetwork(resolution=8), lambda: gs.StyleGAN(resolution=8),
           lambda: gs.ProgressiveGenerator(stages=2), lambda: gs.VoxelGenerator(resolution=8),
           lambda: gs.PlatonicGAN(resolution=8), lambda: gs.HoloGAN(size=4), gs.GRAF, lambda: gs.VoxelRadianceField(4),
           gs.FeatureField, gs.NeuralRenderer, gs.GIRAFFE, lambda: gs.EG3D(plane_resolution=8), gs.BicycleGenerator,
           gs.BicycleEncoder, gs.Vid2VidGenerator,
           lambda: gs.StyleFlow(synthesis=gs.SynthesisNetwork(w_dim=8, resolution=8))]


def test_state_dict_round_trip_for_every_module():
    for make in MODULES:
        torch.manual_seed(2)
        a = perturb(make(), 2, 0.1)
        torch.manual_seed(3)
        b = make()
        assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
        b.load_state_dict(a.state_dict())
        assert list(a.state_dict()) == list(b.state_dict())
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_no_host_sync_in_the_sequential_loops():
    # vid2vid's frame loop and StyleFlow's step loop stay asynchronous: as many syncs for 6 frames as
    # for 2 (none inside the loop).
    torch.manual_seed(0)
    g = gs.Vid2VidGenerator(1, 1, 4)
    with count_host_syncs() as short:
        g(torch.randn(1, 2, 1, 5, 5))
    with count_host_syncs() as long:
        g(torch.randn(1, 6, 1, 5, 5))
    assert long.count == short.count == 0, long.where
    sf = gs.StyleFlow(4, 2, 3)
    with count_host_syncs() as syncs:
        sf.z_to_w(torch.randn(2, 4), torch.randn(2, 2))
    # flows.py's ActNorm reads its `initialized` flag once per step in the normalising direction only;
    # the generative direction used here has none.
    assert syncs.count == 0, syncs.where


# ================================================================================== bad inputs

def test_bad_inputs_stylegan_and_progressive():
    g = gs.StyleGAN(resolution=8)
    with pytest.raises(ValueError, match="^z:"):
        g(torch.randn(2, 5))
    with pytest.raises(TypeError, match="^z:"):
        g.mapping(torch.randn(2, 16, dtype=F64))
    with pytest.raises(ValueError, match="^w:"):
        g.synthesis(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="^noise:"):
        g.synthesis(torch.randn(2, 16), [torch.randn(2, 1, 4, 4)])
    with pytest.raises(ValueError, match="^noise:"):
        g.synthesis(torch.randn(2, 16), [torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)])
    with pytest.raises(ValueError, match="^resolution:"):
        gs.SynthesisNetwork(resolution=12)
    with pytest.raises(ValueError, match="^noise_from:"):
        gs.SynthesisNetwork(resolution=8, noise_from=5)
    with pytest.raises(ValueError, match="^batch:"):
        g.synthesis.draw_noise(0)
    with pytest.raises(ValueError, match="^cutoff:"):
        gs.high_frequency_share(torch.randn(1, 1, 4, 4), 0.7)
    with pytest.raises(ValueError, match="^x:"):
        gs.high_frequency_share(torch.randn(4, 4))
    with pytest.raises(ValueError, match="^alpha:"):
        gs.fade_in(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 4, 4), 1.5)
    with pytest.raises(ValueError, match="^high_rgb:"):
        gs.fade_in(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 4), 0.5)
    with pytest.raises(TypeError, match="^high_rgb:"):
        gs.fade_in(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 4, 4, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="^stage:"):
        gs.ProgressiveGenerator(stages=2)(torch.randn(1, 16), 2)
    with pytest.raises(TypeError, match="^stage:"):
        gs.ProgressiveGenerator(stages=2)(torch.randn(1, 16), 1.0)
    with pytest.raises(ValueError, match="^stage:"):
        gs.ProgressiveGenerator(stages=2)(torch.randn(1, 16), -1)
    with pytest.raises(ValueError, match="^z:"):
        gs.ProgressiveGenerator(stages=2)(torch.randn(1, 15), 1)
    with pytest.raises(ValueError, match="^z:"):
        gs.ProgressiveGenerator(stages=2)(torch.randn(16), 1)
    with pytest.raises(ValueError, match="^alpha:"):
        gs.ProgressiveGenerator(stages=2)(torch.randn(1, 16), 1, -0.1)
    with pytest.raises(ValueError, match="^alpha:"):
        gs.ProgressiveGenerator(stages=2)(torch.randn(1, 16), 1, 1.1)
    with pytest.raises(ValueError, match="^alpha:"):
        gs.fade_in(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 4, 4), -0.5)
    with pytest.raises(ValueError, match="^stages:"):
        gs.ProgressiveGenerator(stages=0)
    with pytest.raises(TypeError, match="^w:"):
        g.synthesis(torch.randn(2, 16, dtype=F64))
    with pytest.raises(TypeError, match="^generator:"):
        g.synthesis.draw_noise(2, generator=1)


def test_bad_inputs_voxels_projection_rotation():
    with pytest.raises(ValueError, match="^weight:"):
        gs.transposed_conv3d(torch.randn(1, 2, 3, 3, 3), torch.randn(3, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="^padding:"):
        gs.transposed_conv3d(torch.randn(1, 2, 3, 3, 3), torch.randn(2, 1, 2, 2, 2), padding=2)
    with pytest.raises(ValueError, match="^stride:"):
        gs.transposed_conv3d(torch.randn(1, 2, 3, 3, 3), torch.randn(2, 1, 2, 2, 2), stride=0)
    with pytest.raises(ValueError, match="^padding:"):
        gs.transposed_conv3d(torch.randn(1, 2, 1, 3, 3), torch.randn(2, 1, 3, 3, 3), padding=2)
    with pytest.raises(ValueError, match="^x:"):
        gs.transposed_conv3d(torch.randn(2, 3, 3, 3), torch.randn(2, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="^resolution:"):
        gs.VoxelGenerator(resolution=10)
    with pytest.raises(ValueError, match="^resolution:"):
        gs.VoxelGenerator(resolution=2)
    with pytest.raises(ValueError, match="^z:"):
        gs.VoxelGenerator(resolution=8)(torch.randn(2, 15))
    with pytest.raises(ValueError, match="^z:"):
        gs.VoxelGenerator(resolution=8)(torch.randn(2, 16, 1))
    with pytest.raises(ValueError, match="^image:"):
        gs.PlatonicGAN(resolution=8)(torch.ones(1, 2, 8, 8), torch.eye(3)[None])
    with pytest.raises(ValueError, match="^rotation:"):
        gs.PlatonicGAN(resolution=8)(torch.ones(1, 1, 8, 8), torch.eye(3))
    with pytest.raises(ValueError, match="^rotation:"):
        gs.HoloGAN(size=4)(torch.ones(1, 16), torch.eye(3))
    with pytest.raises(ValueError, match="^sigma:"):
        gs.absorption_projection(-torch.ones(1, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="^sigma:"):
        gs.absorption_projection(torch.ones(1, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="^length:"):
        gs.absorption_projection(torch.ones(1, 1, 2, 2, 2), 0.0)
    with pytest.raises(ValueError, match="^color:"):
        gs.emission_absorption_projection(torch.ones(1, 1, 2, 2, 2), torch.ones(1, 3, 3, 2, 2))
    with pytest.raises(TypeError, match="^color:"):
        gs.emission_absorption_projection(torch.ones(1, 1, 2, 2, 2), torch.ones(1, 3, 2, 2, 2, dtype=F64))
    with pytest.raises(ValueError, match="^rotation:"):
        gs.rotate_volume(torch.ones(2, 1, 2, 2, 2), torch.eye(3)[None])
    with pytest.raises(ValueError, match="^angle:"):
        gs.rotation_z(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="^image:"):
        gs.PlatonicGAN(resolution=8)(torch.ones(1, 1, 4, 4), torch.eye(3)[None])
    with pytest.raises(ValueError, match="^weight:"):
        gs.depth_projection(torch.ones(1, 2, 3, 4, 4), torch.ones(5, 7))
    with pytest.raises(ValueError, match="^bias:"):
        gs.depth_projection(torch.ones(1, 2, 3, 4, 4), torch.ones(5, 6), torch.ones(4))
    with pytest.raises(ValueError, match="^z:"):
        gs.HoloGAN(size=4)(torch.ones(1, 3), torch.eye(3)[None])


def test_bad_inputs_fields():
    g = gs.GRAF()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="^z_shape:"):
        g(x, x, torch.zeros(5), torch.zeros(8))
    with pytest.raises(ValueError, match="^z_app:"):
        g(x, x, torch.zeros(8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="^d:"):
        g(x, torch.zeros(2, 2), torch.zeros(8), torch.zeros(8))
    with pytest.raises(ValueError, match="^x:"):
        g(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(8), torch.zeros(8))
    with pytest.raises(ValueError, match="^z_shape:"):
        g.render(torch.zeros(3, 8), torch.zeros(8), x, x, 1.0, 2.0, 4)
    with pytest.raises(ValueError, match="^t_far:"):
        g.render(torch.zeros(8), torch.zeros(8), x, x, 2.0, 1.0, 4)
    with pytest.raises(TypeError, match="^module:"):
        gs.parameter_count(torch.zeros(3))
    with pytest.raises(ValueError, match="^resolution:"):
        gs.VoxelRadianceField(1)
    with pytest.raises(ValueError, match="^sigmas:"):
        gs.composite_feature_fields(-torch.ones(2, 3), torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="^features:"):
        gs.composite_feature_fields(torch.ones(2, 3), torch.ones(2, 4, 4))
    m = gs.GIRAFFE(features=4)
    o = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="^translation:"):
        m.render_features(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), torch.zeros(1, 3, 3), o, o, 2, 2, 1.0, 2.0, 4)
    with pytest.raises(ValueError, match="^origins:"):
        m.render_features(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), torch.zeros(1, 2, 3), o, o, 3, 2, 1.0, 2.0, 4)
    with pytest.raises(ValueError, match="^t_far:"):
        m.render_features(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), torch.zeros(1, 2, 3), o, o, 2, 2, 2.0, 1.0, 4)
    with pytest.raises(ValueError, match="^x:"):
        gs.NeuralRenderer(4)(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="^d:"):
        gs.FeatureField()(x, torch.zeros(2, 2), torch.zeros(8), torch.zeros(8))
    with pytest.raises(ValueError, match="^z_app:"):
        gs.FeatureField()(x, x, torch.zeros(8), torch.zeros(7))
    with pytest.raises(ValueError, match="^origins:"):
        g.render(torch.zeros(8), torch.zeros(8), torch.zeros(3), x, 1.0, 2.0, 4)
    with pytest.raises(ValueError, match="^z_app:"):
        g.render(torch.zeros(8), torch.zeros(3, 8), x, x, 1.0, 2.0, 4)
    with pytest.raises(TypeError, match="^x:"):
        gs.VoxelRadianceField(4)(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="^z:"):
        gs.EG3D(plane_resolution=8)(torch.zeros(16), torch.zeros(3, 3), torch.zeros(3, 3), 1.0, 2.0, 4)
    with pytest.raises(ValueError, match="^origins:"):
        gs.EG3D(plane_resolution=8)(torch.zeros(1, 16), torch.zeros(3, 2), torch.zeros(3, 2), 1.0, 2.0, 4)
    with pytest.raises(ValueError, match="^planes:"):
        gs.triplane_features(torch.zeros(1, 2, 4, 3, 3), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="^points:"):
        gs.triplane_features(torch.zeros(1, 3, 4, 3, 3), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="^aggregate:"):
        gs.triplane_features(torch.zeros(1, 3, 4, 3, 3), torch.zeros(1, 5, 3), "max")
    with pytest.raises(ValueError, match="^dirs:"):
        gs.EG3D(plane_resolution=8)(torch.zeros(1, 16), torch.zeros(3, 3), torch.zeros(2, 3), 1.0, 2.0, 4)


def test_bad_inputs_bicycle_vid2vid_styleflow():
    sf = gs.StyleFlow(4, 2, 2)
    g, e, dv, dl = _bicycle(0)
    a, b, z = randn(2, 1, 8, 8, seed=0), randn(2, 1, 8, 8, seed=1), randn(2, 2, seed=2)
    with pytest.raises(ValueError, match="^z:"):
        g(a, randn(3, 2, seed=0))
    with pytest.raises(ValueError, match="^a:"):
        g(randn(2, 2, 8, 8, seed=0), z)
    with pytest.raises(ValueError, match="^image:"):
        e(randn(2, 2, 8, 8, seed=0))
    with pytest.raises(ValueError, match="^image:"):
        e(randn(2, 8, 8, seed=0))
    with pytest.raises(ValueError, match="^z:"):
        g(a, randn(2, 3, seed=0))
    with pytest.raises(TypeError, match="^real:"):
        gs.bicyclegan_discriminator_loss(dv, None, b)
    with pytest.raises(TypeError, match="^d:"):
        gs.bicyclegan_discriminator_loss(None, b, b)
    with pytest.raises(ValueError, match="^eps:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, b, z, randn(2, 3, seed=0))
    with pytest.raises(ValueError, match="^b:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, randn(3, 1, 8, 8, seed=0), z, z)
    with pytest.raises(ValueError, match="^kl_weight:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, b, z, z, kl_weight=-1.0)
    with pytest.raises(TypeError, match="^generator:"):
        gs.bicyclegan_losses(None, e, dv, dl, a, b, z, z)
    with pytest.raises(TypeError, match="^sample_pairs:"):
        gs.train_bicyclegan(g, e, dv, dl, None)
    with pytest.raises(ValueError, match="^steps:"):
        gs.train_bicyclegan(g, e, dv, dl, lambda n: (a, b), steps=0)
    with pytest.raises(ValueError, match="^fake:"):
        gs.bicyclegan_discriminator_loss(dv, b, randn(2, 1, 4, 4, seed=0))
    with pytest.raises(ValueError, match="^flow:"):
        gs.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 3))
    with pytest.raises(ValueError, match="^frame:"):
        gs.warp(torch.zeros(1, 1, 1, 4), torch.zeros(1, 2, 1, 4))
    v = gs.Vid2VidGenerator(1, 1)
    with pytest.raises(ValueError, match="^x_prev:"):
        v.step(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="^sources:"):
        v(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="^sources:"):
        v(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="^s_prev:"):
        v.step(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="^s_t:"):
        v.step(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(TypeError, match="^x_prev:"):
        v.step(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=F64))
    with pytest.raises(ValueError, match="^max_flow:"):
        gs.Vid2VidGenerator(max_flow=-1.0)
    with pytest.raises(ValueError, match="^z:"):
        sf.z_to_w(torch.zeros(3, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="^w:"):
        sf.log_prob(torch.zeros(3, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="^attributes:"):
        sf.edit(torch.zeros(3, 4), torch.zeros(3, 2), torch.zeros(3, 1))
    sf = gs.StyleFlow(4, 2, 2)
    with pytest.raises(ValueError, match="^attributes:"):
        sf.z_to_w(torch.zeros(3, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="^attributes:"):
        sf.w_to_z(torch.zeros(3, 4), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="^synthesis:"):
        sf(torch.zeros(3, 4), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="^synthesis:"):
        gs.StyleFlow(4, 2, 2, synthesis=gs.SynthesisNetwork(w_dim=5, resolution=8))
    with pytest.raises(TypeError, match="^synthesis:"):
        gs.StyleFlow(4, 2, 2, synthesis=nn.Linear(2, 2))


# ===================================================================================== figures

def test_figure_stylegan_noise_versus_w(save_figure, record_property):
    import matplotlib.pyplot as plt

    g, d_noise, d_w = _noise_and_w_changes(7)
    _, d_mut, _ = _noise_and_w_changes(7, coarse_mutant=True)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, (title, d) in zip(axes, [("fresh noise (fine levels)", d_noise), ("new w", d_w),
                                     ("noise at the coarsest level (mutant)", d_mut)]):
        share = gs.high_frequency_share(d)[0].item()
        ax.imshow(d[0, 0].detach().numpy(), cmap="RdBu")
        ax.set_title(f"{title}\nhigh-frequency share {share:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("StyleGAN: change of the output (channel 0) at fixed w under fresh noise, and under a new w")
    assert gs.high_frequency_share(d_noise)[0] > gs.high_frequency_share(d_w)[0]
    save_figure(fig, "gan-stylegan-noise.png", claims=('gan.stylegan-noise-fine-detail', 'gan.stylegan-mapping'),
                caption=("StyleGAN (32 x 32, untrained): the change of the output at fixed w when the "
                                "noise maps are redrawn (left: fine, white-noise-like detail), when w is redrawn "
                                "(middle: coarse structure), and for a mutant whose noise enters at the 4 x 4 "
                                "level (right: coarse). Titles give the share of each change's energy above half "
                                "the Nyquist frequency (claim gan.stylegan-noise-fine-detail)."))


def test_figure_platonicgan_projections(save_figure, record_property):
    import matplotlib.pyplot as plt

    sig = _blob(32)
    col = ((centres(32) + 1) / 2).view(1, 1, 32, 1, 1).expand(1, 1, 32, 32, 32)
    rot = gs.rotation_z(torch.tensor([0.0], dtype=F64))
    shifted = gs.rotate_volume(torch.roll(sig, 6, dims=4), rot)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    panels = [("absorption-only opacity", gs.absorption_projection(sig)[0, 0]),
              ("emission-absorption (colour = depth)", gs.emission_absorption_projection(sig, col)[0, 0]),
              ("shifted blob, absorption", gs.absorption_projection(shifted)[0, 0])]
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img.numpy(), cmap="magma", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle("PlatonicGAN: projections of a 32^3 Gaussian density along depth")
    assert panels[0][1].max() <= 1
    save_figure(fig, "gan-platonicgan-projection.png", claims=('gan.platonicgan-projection', 'gan.platonicgan'),
                caption=("PlatonicGAN's differentiable renderings of a 32^3 Gaussian density along depth: "
                                "absorption-only opacity 1 - exp(-sum sigma dl), emission-absorption "
                                "front-to-back compositing with colour rising with depth (the front half "
                                "dominates), and the blob shifted by 6 voxels (claims gan.platonicgan-projection, "
                                "gan.platonicgan-differentiable)."))


def test_figure_hologan_pose(save_figure, record_property):
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    g = gs.HoloGAN(z_dim=4, channels=3, size=16, projected=3).double()
    z = randn(1, 4, seed=1)
    angles = [0.0, math.pi / 2, math.radians(30)]
    maps = [g.render_features(z, gs.rotation_z(torch.tensor([a], dtype=F64)))[0, 0].detach() for a in angles]
    fig, axes = plt.subplots(1, 4, figsize=(11, 3))
    panels = [("pose 0", maps[0]), ("pose: 90 deg about depth", maps[1]), ("rot90 of pose 0", torch.rot90(maps[0], 1)),
              ("pose: 30 deg about depth", maps[2])]
    for ax, (title, m) in zip(axes, panels):
        ax.imshow(m.numpy(), cmap="viridis")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle("HoloGAN: rendered feature map (channel 0) of 3-D features rotated by the pose, then projected")
    assert_close(maps[1], torch.rot90(maps[0], 1), rtol=0, atol=1e-12)
    save_figure(fig, "gan-hologan-pose.png", claims=('gan.hologan-rotation', 'gan.hologan'),
                caption=("HoloGAN (untrained, 16^3 features): the rendered 2-D feature map at pose 0, after a "
                                "quarter turn of the pose about the depth axis (equal to torch.rot90 of the first, "
                                "to 1e-12), and after 30 degrees (a resampled rotation) (claim gan.hologan-rotation)."))


def test_bad_inputs_each_check_of_the_mechanism_functions():
    f64 = dict(dtype=F64)
    with pytest.raises(ValueError, match="^x:"):
        gs.upsample_nearest(torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match="^x:"):
        gs.upsample_nearest(torch.zeros(1, 1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="^low_rgb:"):
        gs.fade_in(torch.zeros(1, 2, 2), torch.zeros(1, 1, 4, 4), 0.5)
    with pytest.raises(TypeError, match="^low_rgb:"):
        gs.fade_in([0.0], torch.zeros(1, 1, 4, 4), 0.5)
    with pytest.raises(TypeError, match="^alpha:"):
        gs.fade_in(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4), "0.5")
    # composite: 1-D densities (K,) with features (K, C) are valid; a 0-d density is not.
    t, f = gs.composite_feature_fields(torch.tensor([1.0, 3.0]), torch.tensor([[1.0], [2.0]]))
    assert t.item() == 4.0 and abs(f.item() - 1.75) < 1e-6
    with pytest.raises(ValueError, match="^sigmas:"):
        gs.composite_feature_fields(torch.tensor(1.0), torch.ones(3))
    with pytest.raises(TypeError, match="^sigmas:"):
        gs.composite_feature_fields(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, 4))
    with pytest.raises(TypeError, match="^features:"):
        gs.composite_feature_fields(torch.ones(2, 3), torch.ones(2, 3, 4, **f64))
    with pytest.raises(ValueError, match="^planes:"):
        gs.triplane_features(torch.zeros(3, 4, 3, 3), torch.zeros(1, 5, 3))
    with pytest.raises(TypeError, match="^points:"):
        gs.triplane_features(torch.zeros(1, 3, 4, 3, 3), torch.zeros(1, 5, 3, **f64))
    with pytest.raises(ValueError, match="^points:"):
        gs.triplane_features(torch.zeros(1, 3, 4, 3, 3), torch.zeros(1, 5, 2))
    with pytest.raises(TypeError, match="^planes:"):
        gs.triplane_features(torch.zeros(1, 3, 4, 3, 3, dtype=torch.long), torch.zeros(1, 5, 3))
    with pytest.raises(TypeError, match="^flow:"):
        gs.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4, **f64))
    with pytest.raises(ValueError, match="^frame:"):
        gs.warp(torch.zeros(1, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="^frame:"):
        gs.warp(torch.zeros(1, 1, 4, 1), torch.zeros(1, 2, 4, 1))
    # The smallest frame, 2 x 2, is fine: a one-pixel shift moves column 1 onto column 0.
    small = torch.arange(4.0).view(1, 1, 2, 2)
    shift = torch.zeros(1, 2, 2, 2)
    shift[:, 0] = 1.0
    assert torch.equal(gs.warp(small, shift), torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]]))
    v = gs.Vid2VidGenerator(1, 1)
    ok = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="^s_t:"):
        v.step(torch.zeros(1, 4, 4), ok, ok)
    with pytest.raises(TypeError, match="^s_prev:"):
        v.step(ok, torch.zeros(1, 1, 4, 4, **f64), ok)
    with pytest.raises(TypeError, match="^s_t:"):
        v.step(torch.zeros(1, 1, 4, 4, **f64), ok, ok)
    with pytest.raises(ValueError, match="^x_prev:"):
        v.step(ok, ok, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="^sigma:"):
        gs.absorption_projection(torch.ones(1, 2, 2, 2))
    with pytest.raises(TypeError, match="^sigma:"):
        gs.emission_absorption_projection(torch.ones(1, 1, 2, 2, 2, dtype=torch.long), torch.ones(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="^color:"):
        gs.emission_absorption_projection(torch.ones(1, 1, 2, 2, 2), torch.ones(2, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="^color:"):
        gs.emission_absorption_projection(torch.ones(1, 1, 2, 2, 2), torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="^length:"):
        gs.emission_absorption_projection(torch.ones(1, 1, 2, 2, 2), torch.ones(1, 3, 2, 2, 2), -1.0)
    with pytest.raises(ValueError, match="^sigma:"):
        gs.emission_absorption_projection(-torch.ones(1, 1, 2, 2, 2), torch.ones(1, 3, 2, 2, 2))
    g, e, dv, dl = _bicycle(0)
    a, b, z = randn(2, 1, 8, 8, seed=0), randn(2, 1, 8, 8, seed=1), randn(2, 2, seed=2)
    with pytest.raises(ValueError, match="^a:"):
        gs.bicyclegan_losses(g, e, dv, dl, randn(2, 8, 8, seed=0), b, z, z)
    with pytest.raises(ValueError, match="^z_random:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, b, randn(2, seed=0), z)
    with pytest.raises(TypeError, match="^b:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, b.float(), z, z)
    with pytest.raises(TypeError, match="^z_random:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, b, z.float(), z)
    with pytest.raises(TypeError, match="^eps:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, b, z, z.float())
    with pytest.raises(TypeError, match="^encoder:"):
        gs.bicyclegan_losses(g, lambda x: e(x), dv, dl, a, b, z, z)
    assert torch.isfinite(gs.bicyclegan_losses(g, e, dv, dl, a, b, z, z, l1_weight=0.5).total)   # any weight >= 0
    with pytest.raises(ValueError, match="^z_random:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, b, randn(3, 2, seed=0), randn(3, 2, seed=1))
    for kw in ("l1_weight", "latent_weight"):
        with pytest.raises(ValueError, match=f"^{kw}:"):
            gs.bicyclegan_losses(g, e, dv, dl, a, b, z, z, **{kw: -1.0})
    for name, args in (("encoder", (g, None, dv, dl)), ("d_vae", (g, e, None, dl)), ("d_lr", (g, e, dv, None))):
        with pytest.raises(TypeError, match=f"^{name}:"):
            gs.bicyclegan_losses(*args, a, b, z, z)
    with pytest.raises(ValueError, match="^length:"):
        gs.emission_absorption_projection(torch.ones(1, 1, 2, 2, 2), torch.ones(1, 3, 2, 2, 2), 0.0)
    # Any positive length is fine (0.5 here): opacity 1 - exp(-sigma * length) for a constant density.
    assert abs(gs.absorption_projection(torch.ones(1, 1, 4, 1, 1), 0.5).item() - (1 - math.exp(-0.5))) < 1e-7
    c = gs.emission_absorption_projection(torch.ones(1, 1, 4, 1, 1), torch.ones(1, 1, 4, 1, 1), 0.5)
    assert abs(c.item() - (1 - math.exp(-0.5))) < 1e-6
    with pytest.raises(ValueError, match="^cutoff:"):
        gs.high_frequency_share(torch.randn(1, 1, 4, 4), -0.1)
    assert gs.high_frequency_share(torch.randn(1, 1, 4, 4), 0.5).item() == 0.0   # the edge is allowed
