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
