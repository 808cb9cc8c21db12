"""Edge cases and bad inputs of impl/nerf.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/nerf.py``: a shape check
that refuses a valid single ray, an error message that names the wrong argument, a tensor made on
the wrong device, a hash table initialised outside Instant-NGP's range. Expected values are
computed by hand from the definitions (w_i = T_i alpha_i) or taken from the Instant-NGP paper.
"""

import math

import pytest
import torch
from hypothesis import given

from impl import nerf as nf
from spec.testing import generator, seeds

F64 = torch.float64
WEIGHTS = [nf.volume_rendering_weights, nf.alpha_compositing_weights]


@pytest.mark.parametrize("fn", WEIGHTS)
def test_weights_of_a_single_unbatched_ray_by_hand(fn):
    """sigma: (N,) with t: (N + 1,) is one ray (the documented shape (..., N) with no batch):
    sigma = (1, 2), t = (0, 0.5, 1.5) -> delta = (0.5, 1), w = (1 - e^-0.5, e^-0.5 (1 - e^-2))."""
    sigma = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    expected = torch.tensor([1 - math.exp(-0.5), math.exp(-0.5) * (1 - math.exp(-2.0))], dtype=F64)
    torch.testing.assert_close(fn(sigma, t), expected)
    torch.testing.assert_close(fn(sigma, t, validate=False), expected)


@given(seed=seeds())
def test_unbatched_ray_equals_its_row_in_a_batch(seed):
    """The weights and colour of one ray (N,) are those of the same ray inside an (R, N) batch."""
    g = generator(seed)
    sigma = torch.rand(3, 7, generator=g, dtype=F64) * 4
    t = torch.sort(torch.rand(3, 8, generator=g, dtype=F64) * 3, -1).values
    colors = torch.rand(3, 7, 2, generator=g, dtype=F64)
    batch = nf.volume_render(sigma, colors, t)
    for r in range(3):
        one = nf.volume_render(sigma[r], colors[r], t[r])
        assert one.color.shape == (2,) and one.weights.shape == (7,)
        torch.testing.assert_close(one.weights, batch.weights[r])
        torch.testing.assert_close(one.color, batch.color[r])
        # the blend by hand: sum_i w_i c_i
        torch.testing.assert_close(one.color, (one.weights[:, None] * colors[r]).sum(0))
        for fn in WEIGHTS:
            torch.testing.assert_close(fn(sigma[r], t[r]), batch.weights[r])


@pytest.mark.parametrize("fn", WEIGHTS)
def test_dtype_mismatch_message_names_both_arguments(fn):
    """t in another dtype than sigma: the message starts with t and says whose dtype it differs from."""
    sigma, t = torch.ones(2, 3), torch.linspace(0, 1, 4, dtype=F64).expand(2, 4)
    with pytest.raises(TypeError, match=r"^t: dtype torch\.float64 differs from sigma's torch\.float32$"):
        fn(sigma, t)


def test_render_field_follows_the_rays_device(device):
    """render_field's depths, weights and colour live on the rays' device and equal the CPU float64 render
    (no buffer is made on the default device)."""
    field = lambda x, d: (torch.sigmoid(x), torch.relu(1 - x.norm(dim=-1)) * 3)  # noqa: E731
    o = torch.tensor([[0.0, 0.0, -2.0], [0.3, -0.2, -2.0]], dtype=F64)
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=F64)
    od, dd = o.to(device), d.to(device)
    ref = nf.render_field(field, o, d, 0.5, 3.5, 16, stratified=False)
    out = nf.render_field(field, od, dd, 0.5, 3.5, 16, stratified=False)
    for a, b in zip(out, ref):
        assert a.device == od.device
        torch.testing.assert_close(a.cpu(), b)
    g = torch.Generator(device=od.device).manual_seed(0)
    out = nf.render_field(field, od, dd, 0.5, 3.5, 8, generator=g, n_importance=8)
    assert all(x.device == od.device for x in out)
    assert out.t.shape == (2, 16) and bool((out.t[:, 1:] >= out.t[:, :-1]).all())


def test_hash_tables_start_in_instant_ngps_uniform_range():
    """Instant-NGP (Mueller et al. 2022, Sec. 4) initialises the hash table entries from U(-1e-4, 1e-4):
    small features, so the field starts near the MLP's value at zero. 2 x 1024 x 2 = 4096 draws fill
    the range: the chance that none lies beyond +-0.9e-4 on one side is 0.95^4096 < 1e-90."""
    torch.manual_seed(0)
    enc = nf.HashEncoding(n_levels=2, log2_table_size=10, n_features=2)
    tab = enc.tables.detach()
    assert tab.shape == (2, 1024, 2)
    assert float(tab.abs().max()) <= 1e-4
    assert float(tab.min()) < -0.9e-4 and float(tab.max()) > 0.9e-4
    assert abs(float(tab.mean())) < 6 * 1e-4 / math.sqrt(3 * tab.numel())  # 6 standard errors of the mean


# --------------------------------------------------------------------------- more (mutation sample, seed 2)


def test_messages_name_the_argument_and_its_reference():
    with pytest.raises(TypeError, match=r"^phi: dtype torch\.float64 differs from theta's torch\.float32$"):
        nf.view_direction(torch.zeros(2), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match=r"^t_far: must be >= t_near$"):
        nf.stratified_samples(torch.ones(2), torch.tensor([2.0, 0.5]), 4)


def test_hash_encoding_default_feature_width_is_instant_ngps():
    """Instant-NGP's hash tables hold F = 2 features per entry (Mueller et al. 2022, Table 1): the default
    encoding of a point has 2 features per level."""
    enc = nf.HashEncoding(n_levels=3)
    assert enc.tables.shape[-1] == 2
    assert enc(torch.rand(5, 3)).shape == (5, 3 * 2)


# --------------------------------------------------------------------------- degenerate inputs (sweep)


def _raises(exc, pattern, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ``exc`` whose message starts with ``pattern`` (the argument's name)."""
    with pytest.raises(exc, match=rf"^{pattern}"):
        fn(*args, **kwargs)


def test_scalar_inputs_are_refused_by_name():
    """A 0-d x has no last dimension to encode (was an IndexError); corners need a last dimension of 3."""
    _raises(ValueError, "x: expected shape", nf.positional_encoding, torch.tensor(1.0), 2)
    _raises(ValueError, "x: expected shape", nf.random_fourier_features, torch.tensor(1.0), torch.ones(1, 2))
    _raises(ValueError, "corners: expected shape", nf.spatial_hash, torch.tensor(1), 16)
    _raises(ValueError, "corners: expected shape", nf.spatial_hash, torch.ones(2, 2, dtype=torch.long), 16)
    _raises(ValueError, "x: expected shape", nf.trilinear_corners, torch.rand(4, 2, dtype=F64), 4)


def test_positional_encoding_refuses_a_top_frequency_that_overflows():
    """2^(L-1) pi must be finite in x's dtype, else sin/cos are NaN; L = 127 is the float32 limit."""
    x = torch.ones(2, 3)
    assert torch.isfinite(nf.positional_encoding(x, 127)).all()
    _raises(ValueError, "n_freqs", nf.positional_encoding, x, 128)
    assert torch.isfinite(nf.positional_encoding(x.double(), 1023)).all()
    _raises(ValueError, "n_freqs", nf.positional_encoding, x.double(), 1024)


def test_mlp_inputs_must_match_the_layers_and_each_other():
    """A float32 x into a float64 MLP, or x and d on different devices, were RuntimeErrors from inside a layer."""
    net = nf.NeRFMLP(n_freqs_pos=1, n_freqs_dir=1, width=4, depth=1).double()
    x = torch.zeros(2, 3, dtype=F64)
    _raises(TypeError, "x: dtype torch.float32 differs from the MLP's", net.density, x.float())
    _raises(TypeError, "x", net, x.float(), x.float())
    _raises(ValueError, "x: on meta", net, x.to("meta"), x.to("meta"))
    _raises(ValueError, "d: on meta", net, x, x.to("meta"))
    _raises(TypeError, "d: dtype", net, x, x.float())
    ngp = nf.InstantNGPField(hidden=4, n_levels=1, log2_table_size=4).double()
    _raises(ValueError, "d: on meta", ngp, x, x.to("meta"))
    _raises(TypeError, "d: dtype", ngp, x, x.float())


@pytest.mark.parametrize("fn", WEIGHTS)
def test_nan_densities_or_depths_fail_validation(fn):
    """NaN compares false with 0, so it slipped past the checks and gave NaN weights."""
    sigma, t = torch.ones(1, 2, dtype=F64), torch.tensor([[0.0, 1.0, 2.0]], dtype=F64)
    _raises(ValueError, "sigma", fn, torch.tensor([[math.nan, 1.0]], dtype=F64), t)
    _raises(ValueError, "t", fn, sigma, torch.tensor([[0.0, math.nan, 2.0]], dtype=F64))


@pytest.mark.parametrize("grad", [False, True])
def test_log_space_weights_of_an_opaque_sample_are_finite(grad):
    """An optical depth sigma delta = inf (sigma = inf, an infinite last interval, or a finite product that
    overflows) made the exclusive prefix sum inf - inf = NaN; the weights are the product form's: the first
    opaque sample takes everything behind its transmittance, later ones nothing."""
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, math.inf], [0.0, 1e10, 2e10, 3e10]], dtype=F64)
    sigma = torch.tensor([[0.5, math.inf, 1.0], [0.5, 0.5, 1.0], [1e300, 1e300, 1.0]], dtype=F64)
    s = sigma.clone().requires_grad_(grad)
    w = nf.volume_rendering_weights(s, t)
    a = math.exp(-0.5)
    expected = torch.tensor([[1 - a, a, 0.0], [1 - a, a * (1 - a), a * a], [1.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(w.detach(), expected)
    torch.testing.assert_close(nf.alpha_compositing_weights(sigma, t), expected)


def test_volume_render_names_a_sigma_that_is_not_a_tensor():
    """sigma as a list was an AttributeError (its .shape read before any check)."""
    _raises(TypeError, "sigma", nf.volume_render, [1.0], torch.ones(1, 3, dtype=F64), torch.zeros(2, dtype=F64))


def test_stratified_samples_refuse_non_finite_ends():
    """A NaN or infinite end gave NaN / inf depths."""
    one, nan, inf = (torch.tensor([v], dtype=F64) for v in (1.0, math.nan, math.inf))
    _raises(ValueError, "t_near", nf.stratified_samples, nan, one, 4)
    _raises(ValueError, "t_far", nf.stratified_samples, one - 1, inf, 4)
    _raises(ValueError, "t_near", nf.stratified_samples, -inf, one, 4)
    _raises(ValueError, "t_far: must be >= t_near$", nf.stratified_samples, one, one - 1, 4)


def test_sample_pdf_needs_a_bin_and_finite_values():
    """bins with one edge (no bin) were an IndexError, none a message about 'weights: (3, -1)'; an infinite
    weight or edge gave NaN samples."""
    _raises(ValueError, "bins: expected at least 2 edges", nf.sample_pdf, torch.zeros(3, 1, dtype=F64),
            torch.zeros(3, 0, dtype=F64), 4)
    _raises(ValueError, "bins: expected at least 2 edges", nf.sample_pdf, torch.zeros(3, 0, dtype=F64),
            torch.zeros(3, 0, dtype=F64), 4)
    bins = torch.linspace(0, 1, 5, dtype=F64).expand(2, 5)
    _raises(ValueError, "weights", nf.sample_pdf, bins, torch.full((2, 4), math.inf, dtype=F64), 4)
    _raises(ValueError, "bins", nf.sample_pdf, torch.tensor([[0.0, 1.0, math.inf]], dtype=F64),
            torch.ones(1, 2, dtype=F64), 4)


def test_sample_pdf_of_huge_weights_equals_that_of_scaled_ones():
    """Weights near the float64 maximum overflowed their sum (NaN samples); the pdf is scale-free, so the
    draws equal those of the same weights scaled to at most 1."""
    bins = torch.linspace(0, 1, 5, dtype=F64).expand(2, 5)
    w = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.5, 0.5, 0.0, 1.0]], dtype=F64)
    big = nf.sample_pdf(bins, w / 3 * 1e308, 16, generator=generator(0))
    ref = nf.sample_pdf(bins, w / 3, 16, generator=generator(0))
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, ref)


def test_pinhole_rays_extreme_focal_and_bad_rotation():
    """A tiny focal length gave x / f = inf and NaN directions: a 1 x 2 image's rays then point sideways,
    (-/+1, 0, 0). A zero or singular 'rotation' gave NaN or merged rays, a NaN eye NaN origins: refused."""
    R = torch.eye(3, dtype=F64)
    _, d = nf.pinhole_rays(torch.zeros(3, dtype=F64), R, 1, 2, 1e-320)
    torch.testing.assert_close(d, torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64))
    _, d = nf.pinhole_rays(torch.zeros(3, dtype=F64), R, 1, 1, 1e308)
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.0, -1.0]], dtype=F64))
    _raises(ValueError, "rotation", nf.pinhole_rays, torch.zeros(3, dtype=F64), torch.zeros(3, 3, dtype=F64), 2, 2, 1.0)
    _raises(ValueError, "rotation", nf.pinhole_rays, torch.zeros(3, dtype=F64), torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=F64)), 2, 2, 1.0)
    _raises(ValueError, "eye", nf.pinhole_rays, torch.tensor([math.nan, 0.0, 0.0], dtype=F64), R, 2, 2, 1.0)


def test_render_field_names_its_own_arguments():
    """Rays (3,) or (1, R, 3) were RuntimeErrors of broadcasting; a field's wrong output was reported as
    volume_render's 'colors', 't' or 'sigma', or as 'cannot unpack'; a non-callable fine_field as "'int'
    object is not callable"; a bad generator was ignored where no draw used it."""
    o, d = torch.zeros(2, 3, dtype=F64), torch.tensor([[0.0, 0.0, 1.0]] * 2, dtype=F64)
    ok = lambda x, d: (torch.sigmoid(x), torch.ones_like(x[..., 0]))  # noqa: E731
    _raises(ValueError, "origins", nf.render_field, ok, o[0], d[0], 0.0, 1.0, 4)
    _raises(ValueError, "origins", nf.render_field, ok, o[None], d[None], 0.0, 1.0, 4, stratified=False)
    _raises(TypeError, "field", nf.render_field, lambda x, d: 1, o, d, 0.0, 1.0, 4)
    _raises(ValueError, "field", nf.render_field, lambda x, d: (x, x), o, d, 0.0, 1.0, 4)
    _raises(TypeError, "field", nf.render_field, lambda x, d: (x.float(), x[..., 0].float()), o, d, 0.0, 1.0, 4)
    _raises(ValueError, "field", nf.render_field, lambda x, d: (x, -torch.ones_like(x[..., 0])), o, d, 0.0, 1.0, 4)
    bad_fine = lambda x, d: (x, x[..., :1])  # noqa: E731
    _raises(ValueError, "fine_field", nf.render_field, ok, o, d, 0.0, 1.0, 4, n_importance=2, fine_field=bad_fine)
    _raises(TypeError, "fine_field", nf.render_field, ok, o, d, 0.0, 1.0, 4, n_importance=2, fine_field=3)
    _raises(TypeError, "generator", nf.render_field, ok, o, d, 0.0, 1.0, 4, stratified=False, generator="g")
    # feature channels other than 3 stay allowed (EG3D-style fields render C channels)
    out = nf.render_field(lambda x, d: (x[..., :2], torch.ones_like(x[..., 0])), o, d, 0.0, 1.0, 4, stratified=False)
    assert out.color.shape == (2, 2)


def test_trilinear_corners_refuse_points_off_the_grid():
    """Outside [0, 1]^3 the corners left the grid (negative) and the weights extrapolated (-4, 5); NaN had
    no corner. Unvalidated (the hash encoding's loop), the corners stay on the grid."""
    _raises(ValueError, "x", nf.trilinear_corners, torch.tensor([[2.0, -1.0, 0.0]], dtype=F64), 4)
    _raises(ValueError, "x", nf.trilinear_corners, torch.tensor([[math.nan, 0.0, 0.0]], dtype=F64), 4)
    corners, w = nf.trilinear_corners(torch.tensor([[2.0, -1.0, math.nan]], dtype=F64), 4, validate=False)
    assert int(corners.min()) >= 0 and int(corners.max()) <= 4 and torch.isnan(w).all()


def test_level_indices_check_their_arguments():
    """A level past the last was an IndexError and -1 silently the last level's; float corners on the 1:1
    path came back as float 'rows'; corners (..., 2) were an IndexError."""
    enc = nf.HashEncoding(n_levels=2, log2_table_size=14, base_resolution=4, finest_resolution=8)
    c = torch.ones(2, 8, 3, dtype=torch.long)
    _raises(ValueError, "level", enc.level_indices, c, 2)
    _raises(ValueError, "level", enc.level_indices, c, -1)
    _raises(TypeError, "corners", enc.level_indices, c.float(), 0)
    _raises(ValueError, "corners", enc.level_indices, c[..., :2], 0)


def test_hash_encoding_clamps_points_outside_the_cube():
    """Outside [0, 1]^3 the 1:1 rows were negative (wrapping to another corner's row) and NaN an IndexError;
    now a point outside encodes as its clamp onto the cube, and NaN gives NaN, with no host sync."""
    torch.manual_seed(0)
    enc = nf.HashEncoding(n_levels=2, log2_table_size=14, base_resolution=4, finest_resolution=8).double()
    torch.nn.init.normal_(enc.tables)
    x = torch.tensor([[2.0, -1.0, 0.3], [-10.0, 0.5, 11.0]], dtype=F64)
    torch.testing.assert_close(enc(x), enc(x.clamp(0, 1)))
    assert torch.isnan(enc(torch.tensor([[math.nan, 0.5, 0.5]], dtype=F64))).all()
