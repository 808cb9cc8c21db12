"""Edge cases and bad inputs of impl/gan_systems.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/gan_systems.py --sample 60
--seed 3``: an input check that was loosened or names the wrong argument, a frequency grid made in
torch's default dtype instead of the input's, an encoder that only worked at one image size, a
latent drawn off the parameters' device, a default grid size. Expected values come from the
definitions (the FFT of a pure tone, absorption along the depth axis) and small cases by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from impl import gan_systems as gs
from spec.testing import randn, default_dtype
from properties.test_gan_systems import _bicycle  # the same small BicycleGAN (seeded)

F64 = torch.float64




# ---- bad arguments rejected under their own names ---------------------------------------------------

def test_bad_sizes_and_ranges_named():
    z = torch.zeros(2, 16)
    # kernel 3 with padding 2 on a width-1 grid: (1 - 1) - 4 + 3 = -1 output voxels along W only
    x_thin = torch.zeros(1, 1, 4, 4, 1, dtype=F64)
    w3 = torch.zeros(1, 1, 3, 3, 3, dtype=F64)
    cases = [
        (lambda: gs.MappingNetwork(hidden=0), "hidden"),
        (lambda: gs.ProgressiveGenerator()(z, 0, alpha=1.5), "alpha"),   # stage 0 has no fade-in to check it
        (lambda: gs.transposed_conv3d(x_thin, w3, padding=2), "padding"),
        (lambda: gs.GRAF(n_freqs_dir=-1), "n_freqs_dir"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            fn()


def test_bicyclegan_losses_reject_a_target_without_a_channel_axis():
    g, e, dv, dl = _bicycle(0)
    a, z = randn(2, 1, 8, 8, seed=0), randn(2, 2, seed=2)
    with pytest.raises(ValueError, match="^b:"):
        gs.bicyclegan_losses(g, e, dv, dl, a, randn(2, 8, 8, seed=1), z, z)


# ---- values ----------------------------------------------------------------------------------------

def test_high_frequency_share_uses_the_inputs_precision_for_the_band_edge():
    """A pure tone cos(2 pi n / 3) on 3 pixels has all its power at f = +-1/3. A cutoff 1e-12 above
    1/3 leaves it in the low band (share 0), 1e-12 below puts it in the high band (share 1); in
    float32 the bin would read 0.33333334 and land above either cutoff."""
    n = torch.arange(3, dtype=F64)
    x = torch.cos(2 * math.pi * n / 3).view(1, 1, 1, 3)
    with default_dtype(torch.float32):
        above = gs.high_frequency_share(x, cutoff=1 / 3 + 1e-12)
        below = gs.high_frequency_share(x, cutoff=1 / 3 - 1e-12)
    assert above.dtype == F64
    torch.testing.assert_close(above, torch.zeros(1, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(below, torch.ones(1, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [8, 16])
def test_platonic_gan_encodes_any_supported_image_size(n):
    """The encoder pools to a fixed 4x4 before its linear layer, so every N = 4 * 2^k >= 8 works. With
    the identity pose the rendering is absorption along depth: 1 - exp(-(2 / N) sum_d density)."""
    torch.manual_seed(0)
    g = gs.PlatonicGAN(in_channels=1, resolution=n).double()
    image = randn(2, 1, n, n, seed=1)
    rendered, density = g(image, torch.eye(3, dtype=F64).expand(2, 3, 3))
    assert rendered.shape == (2, 1, n, n) and density.shape == (2, 1, n, n, n)
    want = 1 - torch.exp(-(2 / n) * density.sum(2))
    torch.testing.assert_close(rendered, want, rtol=1e-12, atol=1e-12)


def test_train_bicyclegan_draws_its_latents_on_the_parameters_device():
    # The meta device stands in for a GPU on a CPU-only machine: a latent drawn on the CPU would
    # meet meta weights and fail.
    g, e, dv, dl = _bicycle(0)
    for m in (g, e, dv, dl):
        m.to("meta")
    a = torch.zeros(4, 1, 8, 8, dtype=F64, device="meta")
    hist = gs.train_bicyclegan(g, e, dv, dl, lambda k: (a[:k], a[:k]), steps=1, batch=4)
    assert hist.latent.device.type == "meta" and hist.latent.shape == (1,)


def test_voxel_radiance_field_default_grid_is_16_cubed():
    f = gs.VoxelRadianceField()
    assert f.grid.shape == (1, 4, 16, 16, 16)
    assert gs.parameter_count(f) == 4 * 16 ** 3
