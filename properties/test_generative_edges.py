"""Edge cases and bad inputs of impl/generative.py found by mutation testing
(report/mutation/generative.txt): each test pins an argument check's message (the argument it
names, the type it reports, the order of the checks), where a result lives, or a property of the
fit (no random draws without noise, never ending above the starting loss) that a surviving mutant
got wrong."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from impl.generative import Autoencoder, corrupt, fit_autoencoder, reconstruction_loss
from spec.testing import generator

f64 = torch.float64


@pytest.mark.parametrize("bias, kind", [(1, "int"), ("yes", "str"), (1.0, "float")])
def test_non_bool_bias_reports_the_type_it_got(bias, kind):
    with pytest.raises(TypeError, match=rf"^bias: expected a bool, got {kind}$"):
        Autoencoder(3, 2, bias=bias)


def test_corruption_noise_is_drawn_on_the_device_of_x():
    # The meta device stands in for an accelerator on a CPU-only machine: noise drawn on the CPU
    # cannot be added to a meta tensor, so a draw that ignores x's device fails here.
    x = torch.zeros(4, 3, device="meta", dtype=f64)
    y = corrupt(x, 0.5)
    assert y.device.type == "meta" and y.dtype == f64 and y.shape == (4, 3)


def test_fit_reports_a_dtype_mismatch_between_data_and_model():
    with pytest.raises(TypeError, match=r"^x: dtype torch.float64 differs from model's parameters's torch.float32$"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(2, 3, dtype=f64))
    with pytest.raises(TypeError, match=r"^x: dtype torch.float32 differs from model's parameters's torch.float64$"):
        fit_autoencoder(Autoencoder(3, 2, hidden=4).double(), torch.zeros(2, 3))


def test_biases_only_drop_from_the_linear_autoencoder_message():
    with pytest.raises(ValueError, match=r"^bias: only the linear autoencoder \(hidden=None\) can drop its biases$"):
        Autoencoder(3, 2, hidden=4, bias=False)


def test_reconstruction_loss_dtype_mismatch_names_both_arguments():
    with pytest.raises(TypeError, match=r"^x_hat: dtype torch.float64 differs from x's torch.float32$"):
        reconstruction_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=f64))


def test_fit_rejects_a_non_autoencoder_naming_its_type():
    with pytest.raises(TypeError, match=r"^model: expected an Autoencoder, got Linear$"):
        fit_autoencoder(torch.nn.Linear(3, 3), torch.zeros(2, 3))


def test_fit_checks_the_data_shape_before_its_dtype():
    # both are wrong; the shape against the model's x_dim is the first thing fit_autoencoder checks
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*, 3\), got \(2, 4\)$"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(2, 4, dtype=f64))
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*, 3\), got \(4,\)$"):
        fit_autoencoder(Autoencoder(3, 2), torch.zeros(4, dtype=f64), noise_std=0.1)


def test_fit_without_noise_draws_no_random_numbers():
    # noise_std = 0 is the plain autoencoder: nothing is corrupted, so neither the caller's
    # generator nor the global stream may advance (a fit must not perturb later draws)
    torch.manual_seed(0)
    ae = Autoencoder(3, 2).double()
    x = torch.randn(8, 3, dtype=f64)
    g = generator(11)
    g_state, global_state = g.get_state(), torch.get_rng_state()
    fit_autoencoder(ae, x, noise_std=0.0, steps=3, generator=g)
    assert torch.equal(g.get_state(), g_state)
    fit_autoencoder(ae, x, noise_std=0.0, steps=3)
    assert torch.equal(torch.get_rng_state(), global_state)
    # with noise the generator is used (the check above is not vacuous)
    fit_autoencoder(ae, x, noise_std=0.1, steps=1, generator=g)
    assert not torch.equal(g.get_state(), g_state)


def _fit_ratio(seed, scale, steps):
    """final / initial reconstruction loss of fit_autoencoder on a tanh autoencoder."""
    torch.manual_seed(seed)
    x = torch.randn(30, 4, dtype=f64) * scale
    ae = Autoencoder(4, 2, hidden=6).double()
    with torch.no_grad():
        before = float(reconstruction_loss(x, ae(x)))
    return fit_autoencoder(ae, x, steps=steps) / before


# Cases where L-BFGS with a fixed unit step (no line search) ends above its starting loss (by
# factors 1.5 to 360); a line search that enforces sufficient decrease cannot.
@pytest.mark.parametrize("seed, scale, steps", [(0, 1.0, 10), (0, 3.0, 10), (4, 3.0, 3), (6, 10.0, 10), (9, 3.0, 5)])
def test_fit_never_ends_above_the_starting_loss(seed, scale, steps):
    assert _fit_ratio(seed, scale, steps) <= 1.0


@given(seed=st.integers(0, 2 ** 16), scale=st.sampled_from([0.3, 1.0, 3.0, 10.0]), steps=st.integers(1, 10))
def test_fit_never_ends_above_the_starting_loss_any_seed(seed, scale, steps):
    # strong-Wolfe line search: every accepted step satisfies the Armijo decrease condition
    assert _fit_ratio(seed, scale, steps) <= 1.0
