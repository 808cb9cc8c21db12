"""Edge cases and bad inputs of impl/gan.py found by mutation testing (report/mutation/gan.txt):
each test pins an argument check's message (the argument it names, the reference it compares
with), a check that was missing (negative masses in V), or the gradients of the divergences and
of V at zeros of the densities, where a surviving mutant (and, before the fix, the
implementation) sent NaN into the gradient. Expected gradients are the derivatives worked out by
hand, stated beside each test."""

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from impl import gan
from spec.testing import generator, seeds, tol

f64 = torch.float64


def _simplex_with_zeros(k, seed, zeros):
    """A probability vector of length k that is exactly 0 at the indices ``zeros``."""
    e = -torch.log(torch.rand(k, generator=generator(seed), dtype=f64))
    e[list(zeros)] = 0.0
    return e / e.sum()


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("q, exc, msg", [
    (torch.tensor([1.5, -0.5]), ValueError, r"^q: entries must be >= "),
    (torch.tensor([0.5, 0.6]), ValueError, r"^q: must sum to 1 along dim -1, off by 0\.1"),
    ([0.5, 0.5], TypeError, r"^q: expected a torch\.Tensor, got list$"),
])
def test_kl_divergence_names_a_bad_q(q, exc, msg):
    # p is a valid probability vector, so only q's own check can raise
    with pytest.raises(exc, match=msg):
        gan.kl_divergence(torch.tensor([0.5, 0.5]), q)


@pytest.mark.parametrize("fn", [gan.kl_divergence, gan.js_divergence])
def test_divergence_dtype_mismatch_names_both_arguments(fn):
    with pytest.raises(TypeError, match=r"^q: dtype torch.float64 differs from p's torch.float32$"):
        fn(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5], dtype=f64))


def test_value_function_needs_one_logit_per_real_sample():
    # (N, 1) logits, as a discriminator without a final reshape returns them, are refused
    with pytest.raises(ValueError, match=r"^d_real_logits: expected 1 dimensions, got shape \(3, 1\)$"):
        gan.value_function(torch.zeros(3, 1), torch.zeros(3))


def test_pix2pix_dtype_mismatches_name_both_arguments():
    with pytest.raises(TypeError, match=r"^target: dtype torch.float64 differs from fake's torch.float32$"):
        gan.pix2pix_generator_loss(torch.zeros(2), torch.zeros(2, 4), torch.zeros(2, 4, dtype=f64))
    with pytest.raises(TypeError, match=r"^y: dtype torch.float64 differs from x's torch.float32$"):
        gan.pix2pix_discriminator_input(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4, dtype=f64))


def test_train_gan_defaults_to_one_discriminator_step_per_generator_step():
    # k = 1, "the least expensive option" of Goodfellow et al. (2014), is the default
    torch.manual_seed(0)
    res = gan.train_gan(nn.Linear(2, 1), nn.Linear(1, 1), lambda: torch.randn(8, 1), lambda: torch.randn(8, 2), steps=3)
    assert res.d_steps == res.g_steps == 3 and res.d_losses.shape == (3,) and res.losses.shape == (3,)


def test_value_function_dtype_mismatch_names_both_arguments():
    with pytest.raises(TypeError, match=r"^d_fake_logits: dtype torch.float64 differs from d_real_logits's torch.float32$"):
        gan.value_function(torch.zeros(3), torch.zeros(2, dtype=f64))


@pytest.mark.parametrize("p_d, p_m, d, msg", [
    ([-0.1, 1.1], [0.5, 0.5], [0.5, 0.5], r"^p_d: densities must be non-negative$"),
    ([0.5, 0.5], [1.2, -0.2], [0.5, 0.5], r"^p_m: densities must be non-negative$"),
    ([0.5, 0.5], [0.5, 0.5], [0.5, 1.5], r"^d: entries must be <= 1"),
    ([0.5, 0.5], [0.5, 0.5], [-0.5, 0.5], r"^d: entries must be >= 0"),
])
def test_value_function_densities_rejects_negative_mass_and_d_outside_the_unit_interval(p_d, p_m, d, msg):
    # a negative mass would otherwise be dropped silently by the "no mass, no term" rule
    with pytest.raises(ValueError, match=msg):
        gan.value_function_densities(*(torch.tensor(t, dtype=f64) for t in (p_d, p_m, d)))


def test_value_function_densities_at_the_ends_of_the_unit_interval():
    p_d = torch.tensor([1.0, 0.0], dtype=f64)
    p_m = torch.tensor([0.0, 1.0], dtype=f64)
    # D = D* = (1, 0): both terms vanish (log 1 = 0 on each support), V = 0
    assert float(gan.value_function_densities(p_d, p_m, torch.tensor([1.0, 0.0], dtype=f64))) == 0.0
    # D = 0 on the data's support: log D = -inf there, and V = -inf
    assert float(gan.value_function_densities(p_d, p_m, torch.tensor([0.0, 0.0], dtype=f64))) == float("-inf")
    # D = 1/2 everywhere: V = log(1/2) + log(1/2) = -log 4
    v = gan.value_function_densities(p_d, p_m, torch.full((2,), 0.5, dtype=f64))
    assert float(v) == pytest.approx(-math.log(4), rel=1e-15)


def test_value_function_densities_dtype_mismatch_names_both_arguments():
    v = torch.full((3,), 0.5)
    with pytest.raises(TypeError, match=r"^p_m: dtype torch.float64 differs from p_d's torch.float32$"):
        gan.value_function_densities(v, v.double(), v)
    with pytest.raises(TypeError, match=r"^d: dtype torch.float64 differs from p_d's torch.float32$"):
        gan.value_function_densities(v, v, v.double())


@pytest.mark.parametrize("bad", ["mu2", "sigma1", "sigma2"])
def test_frechet_distance_dtype_mismatch_names_both_arguments(bad):
    args = dict(mu1=torch.zeros(2), sigma1=torch.eye(2), mu2=torch.zeros(2), sigma2=torch.eye(2))
    args[bad] = args[bad].double()
    with pytest.raises(TypeError, match=rf"^{bad}: dtype torch.float64 differs from mu1's torch.float32$"):
        gan.frechet_distance(**args)


def test_adain_dtype_mismatch_names_both_arguments():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(TypeError, match=r"^style_scale: dtype torch.float64 differs from x's torch.float32$"):
        gan.adain(x, torch.zeros(2, 3, dtype=f64), torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"^style_bias: dtype torch.float64 differs from x's torch.float32$"):
        gan.adain(x, torch.zeros(2, 3), torch.zeros(2, 3, dtype=f64))


# --------------------------------------------------------------------------- gradients at zeros


def _kl_grads(p, q):
    p, q = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    gan.kl_divergence(p, q).backward()
    return p.grad, q.grad


def test_kl_gradient_at_zeros_of_p_small_case():
    # KL = sum_i p_i log(p_i / q_i): d/dq_i = -p_i / q_i (0 where p_i = 0, where the term is 0 for
    # every q_i), d/dp_i = log(p_i / q_i) + 1 on p's support.
    # Index 2: p = 0 < q; index 3: p = q = 0 (a common zero).
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=f64)
    q = torch.tensor([0.25, 0.25, 0.5, 0.0], dtype=f64)
    gp, gq = _kl_grads(p, q)
    assert torch.isfinite(gp).all()
    assert_close(gq, torch.tensor([-2.0, -2.0, 0.0, 0.0], dtype=f64), rtol=0, atol=1e-15)
    assert_close(gp[:2], torch.full((2,), 1 + torch.log(torch.tensor(2.0, dtype=f64)).item(), dtype=f64), **tol(f64))


@given(seed=seeds(), k=st.integers(3, 7), data=st.data())
def test_kl_and_js_gradients_stay_finite_at_zeros(seed, k, data):
    # p and q have zeros (some shared, some not); q is positive wherever p is, so KL is finite.
    only_p_zero = data.draw(st.sets(st.integers(0, k - 1), max_size=k - 2))
    rest = [i for i in range(k) if i not in only_p_zero]
    both_zero = set(data.draw(st.sets(st.sampled_from(rest), max_size=len(rest) - 1)))
    p = _simplex_with_zeros(k, seed, only_p_zero | both_zero)
    q = _simplex_with_zeros(k, seed + 1, both_zero)
    gp, gq = _kl_grads(p, q)
    assert torch.isfinite(gp).all() and torch.isfinite(gq).all()
    assert_close(gq, torch.where(p > 0, -p / q, torch.zeros_like(q)), **tol(f64))
    on = p > 0
    assert_close(gp[on], torch.log(p[on] / q[on]) + 1, **tol(f64))
    # JS: on the common support d/dp_i = 1/2 log(p_i / m_i) and d/dq_i = 1/2 log(q_i / m_i)
    pj, qj = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    gan.js_divergence(pj, qj).backward()
    assert torch.isfinite(pj.grad).all() and torch.isfinite(qj.grad).all()
    m, both = 0.5 * (p + q), (p > 0) & (q > 0)
    assert_close(pj.grad[both], 0.5 * torch.log(p[both] / m[both]), **tol(f64))
    assert_close(qj.grad[both], 0.5 * torch.log(q[both] / m[both]), **tol(f64))


def test_js_gradient_of_disjoint_point_masses_is_finite():
    # p = delta_0, q = delta_1 on three points: the third is a common zero (m = 0 there)
    p = torch.tensor([1.0, 0.0, 0.0], dtype=f64, requires_grad=True)
    q = torch.tensor([0.0, 1.0, 0.0], dtype=f64, requires_grad=True)
    js = gan.js_divergence(p, q)
    js.backward()
    assert float(js.detach()) == pytest.approx(math.log(2), rel=1e-15)
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()


def test_value_gradient_at_the_optimal_discriminator_with_empty_cells():
    # dV/dD_i = p_d,i / D_i - p_m,i / (1 - D_i), each term only where its density is positive.
    # At D* = p_d / (p_d + p_m) it is 0 where both are positive, -p_m where p_d = 0 (D* = 0) and
    # p_d where p_m = 0 (D* = 1): D* sits on the boundary there.
    p_d = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=f64)
    p_m = torch.tensor([0.1, 0.2, 0.0, 0.7], dtype=f64)
    d = gan.optimal_discriminator(p_d, p_m).requires_grad_(True)
    gan.value_function_densities(p_d, p_m, d).backward()
    assert_close(d.grad, torch.tensor([0.0, 0.0, 0.2, -0.7], dtype=f64), rtol=0, atol=1e-14)


@given(seed=seeds(), k=st.integers(2, 7), data=st.data())
def test_gradient_of_c_with_respect_to_p_m_where_p_d_has_zeros(seed, k, data):
    # C(p_m) = V(p_d, p_m, D*(p_d, p_m)) = sum_i p_d,i log D*_i + p_m,i log(1 - D*_i). Since D*
    # maximises V pointwise (dV/dD = 0 where p_d > 0) and D* = 0 does not move with p_m where
    # p_d = 0, dC/dp_m,i = log(1 - D*_i) = log(p_m,i / (p_d,i + p_m,i)) for every p_m,i > 0.
    zeros = data.draw(st.sets(st.integers(0, k - 1), max_size=k - 1))
    p_d = _simplex_with_zeros(k, seed, zeros)
    p_m = _simplex_with_zeros(k, seed + 1, ()).requires_grad_(True)
    (g,) = torch.autograd.grad(gan.value_function_densities(p_d, p_m, gan.optimal_discriminator(p_d, p_m)), p_m)
    assert torch.isfinite(g).all()
    assert_close(g, torch.log(p_m / (p_d + p_m)).detach(), **tol(f64))


def test_optimal_discriminator_dtype_mismatch_names_both_arguments():
    with pytest.raises(TypeError, match=r"^p_m: dtype torch.float64 differs from p_d's torch.float32$"):
        gan.optimal_discriminator(torch.zeros(2), torch.zeros(2, dtype=f64))


def test_optimal_discriminator_gradient_at_a_common_zero_is_finite():
    # D* = p_d / s, s = p_d + p_m: dD*/dp_d = p_m / s^2, dD*/dp_m = -p_d / s^2 where s > 0; where
    # s = 0, D* is the constant 1/2 and no NaN may reach the gradient.
    p_d = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=f64, requires_grad=True)
    p_m = torch.tensor([0.25, 0.0, 0.75, 0.0], dtype=f64, requires_grad=True)
    d = gan.optimal_discriminator(p_d, p_m)
    d.sum().backward()
    s = (p_d + p_m).detach()
    on = s > 0
    assert torch.isfinite(p_d.grad).all() and torch.isfinite(p_m.grad).all()
    assert_close(p_d.grad[on], (p_m.detach() / s ** 2)[on], **tol(f64))
    assert_close(p_m.grad[on], (-p_d.detach() / s ** 2)[on], **tol(f64))
    assert float(d[3].detach()) == 0.5 and float(p_d.grad[3]) == 0.0 and float(p_m.grad[3]) == 0.0


def test_wgan_critic_loss_dtype_mismatch_names_both_arguments():
    with pytest.raises(TypeError, match=r"^critic_fake: dtype torch.float64 differs from critic_real's torch.float32$"):
        gan.wgan_critic_loss(torch.zeros(2), torch.zeros(2, dtype=f64))


def test_train_gan_returns_the_networks_it_trained():
    torch.manual_seed(0)
    g_net, d_net = nn.Linear(2, 1), nn.Linear(1, 1)
    res = gan.train_gan(g_net, d_net, lambda: torch.randn(8, 1), lambda: torch.randn(8, 2), steps=2, k=1)
    assert res.model is g_net and res.discriminator is d_net


def test_dcgan_generator_takes_a_code_of_spatial_size_one():
    torch.manual_seed(0)
    g = gan.DCGANGenerator(nz=4, features=4).double().eval()
    z = torch.randn(2, 4, dtype=f64)
    assert_close(g(z[:, :, None, None]), g(z), rtol=0, atol=0)
    # a 2 x 2 code would silently give 20 x 20 images instead of 16 x 16
    with pytest.raises(ValueError, match=r"^z: expected shape \(B, 4\) or \(B, 4, 1, 1\), got \(2, 4, 2, 2\)$"):
        g(torch.zeros(2, 4, 2, 2, dtype=f64))


def test_default_interpolation_weights_and_mask_live_on_the_device_of_the_data():
    # The meta device stands in for an accelerator on a CPU-only machine: a default eps or mask
    # created on the CPU cannot meet meta tensors, so creating them elsewhere fails here.
    x = torch.zeros(4, 3, device="meta", dtype=f64)
    w = torch.tensor([1.2, 0.0, 1.6], device="meta", dtype=f64)
    gp = gan.gradient_penalty(lambda t: t @ w, x, x)
    assert gp.device.type == "meta" and gp.shape == ()
    z = gan.invert_generator(lambda t: t, x, torch.zeros(4, 3, device="meta", dtype=f64), steps=1)
    assert z.device.type == "meta" and z.shape == (4, 3)


@pytest.mark.parametrize("which", ["sigma1", "sigma2"])
def test_covariance_asymmetry_of_exactly_the_tolerance_is_accepted(which):
    # The tolerance is sqrt(eps) = 2^-26 of the largest entry in float64, inclusive: an
    # off-diagonal asymmetry of exactly 2^-26 (largest entry 1) passes, twice that does not.
    def fd(off):
        args = dict(mu1=torch.zeros(2, dtype=f64), sigma1=torch.eye(2, dtype=f64),
                    mu2=torch.zeros(2, dtype=f64), sigma2=torch.eye(2, dtype=f64))
        args[which] = torch.tensor([[1.0, off], [0.0, 1.0]], dtype=f64)
        return gan.frechet_distance(**args)
    assert math.sqrt(torch.finfo(f64).eps) == 2.0 ** -26
    assert 0 <= float(fd(2.0 ** -26)) < 1e-14
    with pytest.raises(ValueError, match=rf"^{which}: must be symmetric"):
        fd(2.0 ** -25)


def test_inversion_with_a_single_step_is_one_adam_step():
    # G = identity, loss sum (z - x)^2, gradient g = 2 (z0 - x). Adam's first step, after bias
    # correction, is z1 = z0 - lr g / (|g| + 1e-8).
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=f64)
    z0 = torch.tensor([[0.0, 0.0], [1.5, 0.0]], dtype=f64)
    g = 2 * (z0 - x)
    z1 = gan.invert_generator(lambda t: t, x, z0, steps=1, lr=0.1)
    assert_close(z1, z0 - 0.1 * g / (g.abs() + 1e-8), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [gan.kl_divergence, gan.js_divergence])
def test_divergence_shape_mismatch_names_both_arguments(fn):
    with pytest.raises(ValueError, match=r"^q: shape \(3,\) differs from p's \(2,\)$"):
        fn(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))


def test_gradient_penalty_and_inversion_dtype_mismatches_name_both_arguments():
    with pytest.raises(TypeError, match=r"^fake: dtype torch.float64 differs from real's torch.float32$"):
        gan.gradient_penalty(lambda t: t.sum(1), torch.zeros(2, 3), torch.zeros(2, 3, dtype=f64))
    with pytest.raises(TypeError, match=r"^mask: dtype torch.float64 differs from x's torch.float32$"):
        gan.invert_generator(lambda t: t, torch.zeros(3, 1), torch.zeros(3, 1), mask=torch.ones(3, 1, dtype=f64))


@pytest.mark.parametrize("shape", [(2, 1, 4), (2, 1, 4, 4, 1)])
def test_pix2pix_pair_needs_a_four_dimensional_output_image(shape):
    with pytest.raises(ValueError, match=rf"^y: expected 4 dimensions, got shape {re.escape(str(shape))}$"):
        gan.pix2pix_discriminator_input(torch.zeros(2, 1, 4, 4), torch.zeros(shape))


@pytest.mark.parametrize("betas", [None, (0.3, 0.9)])
def test_train_gan_steps_both_networks_with_adam_at_the_given_betas(betas):
    # Reference: the alternating loop written out with torch.optim.Adam at lr and betas (DCGAN's
    # (0.5, 0.999) by default) for both networks. Adam's first step does not depend on the betas,
    # so three generator steps are compared.
    kw = {} if betas is None else dict(betas=betas)
    b = (0.5, 0.999) if betas is None else betas
    gen = generator(3)
    data = [torch.randn(8, 1, generator=gen, dtype=f64) for _ in range(3)]
    noise = [torch.randn(8, 2, generator=gen, dtype=f64) for _ in range(6)]
    torch.manual_seed(0)
    g_net, d_net = nn.Linear(2, 1).double(), nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    g_ref, d_ref = nn.Linear(2, 1).double(), nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    g_ref.load_state_dict(g_net.state_dict())
    d_ref.load_state_dict(d_net.state_dict())
    it_d, it_n = iter(data), iter(noise)
    gan.train_gan(g_net, d_net, lambda: next(it_d), lambda: next(it_n), steps=3, k=1, lr=0.01, **kw)
    opt_d = torch.optim.Adam(d_ref.parameters(), lr=0.01, betas=b)
    opt_g = torch.optim.Adam(g_ref.parameters(), lr=0.01, betas=b)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for t in range(3):
        real, fake = data[t], g_ref(noise[2 * t]).detach()
        lr_, lf = d_ref(real).reshape(-1), d_ref(fake).reshape(-1)
        d_loss = bce(lr_, torch.ones_like(lr_)) + bce(lf, torch.zeros_like(lf))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        lg = d_ref(g_ref(noise[2 * t + 1])).reshape(-1)
        g_loss = bce(lg, torch.ones_like(lg))      # non-saturating: -E log D(G(z))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    for p, q in zip(list(g_net.parameters()) + list(d_net.parameters()), list(g_ref.parameters()) + list(d_ref.parameters())):
        assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 16, 16), (1, 1, 16)])
def test_dcgan_discriminator_needs_a_batch_of_images(shape):
    # (1, 1, 16) has the right "channel" count in position 1: only the ndim check refuses it
    with pytest.raises(ValueError, match=rf"^x: expected 4 dimensions, got shape {re.escape(str(shape))}$"):
        gan.DCGANDiscriminator(channels=1)(torch.zeros(shape))


# --------------------------------------------------------------------------- degenerate inputs (sweep)


def _raises(exc, pattern, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ``exc`` whose message starts with ``pattern`` (the argument's name)."""
    with pytest.raises(exc, match=rf"^{pattern}"):
        fn(*args, **kwargs)


E = torch.zeros(0, dtype=f64)
A = torch.tensor([0.3, -1.2, 2.0], dtype=f64)


def test_sample_means_of_no_sample_are_refused():
    """The mean over an empty batch was a silent NaN in V, the losses and the critic loss."""
    _raises(ValueError, "d_real_logits: the expectation needs at least one sample", gan.value_function, E, A)
    _raises(ValueError, "d_fake_logits: the expectation", gan.value_function, A, E)
    _raises(ValueError, "d_real_logits", gan.discriminator_loss, E, A)
    _raises(ValueError, "d_fake_logits", gan.generator_loss, E)
    _raises(ValueError, "d_fake_logits", gan.generator_loss, E, "saturating")
    _raises(ValueError, "d_real: the expectation", gan.value_function_probs, E, torch.tensor([0.5], dtype=f64))
    _raises(ValueError, "critic_fake", gan.wgan_critic_loss, A, E)
    x = torch.zeros(0, 2, dtype=f64)
    _raises(ValueError, "real: the expectation", gan.gradient_penalty, lambda t: t.sum(1), x, x)
    _raises(ValueError, "fake: the L1 term", gan.pix2pix_generator_loss, A, x, x)
    y = torch.randn(3, 2, dtype=f64)
    _raises(ValueError, "x: the cycle loss", gan.cycle_consistency_loss, x, y, lambda v: v, lambda v: v)
    _raises(ValueError, "y: the cycle loss", gan.cycle_consistency_loss, y, x, lambda v: v, lambda v: v)


def test_nan_and_infinite_masses_and_probabilities_are_refused():
    """NaN compares false with 0, so NaN masses passed and became 0 (a finite, wrong V) or D* = 1/2; NaN
    probabilities gave NaN; an infinite mass gave inf / inf = NaN."""
    pd, pm = torch.tensor([0.5, 0.5], dtype=f64), torch.tensor([0.2, 0.8], dtype=f64)
    d = gan.optimal_discriminator(pd, pm)
    for bad in (math.nan, math.inf):
        v = torch.tensor([bad, 0.5], dtype=f64)
        _raises(ValueError, "p_d: densities must be finite", gan.value_function_densities, v, pm, d)
        _raises(ValueError, "p_m: densities must be finite", gan.optimal_discriminator, pd, v)
    _raises(ValueError, "d_fake: probabilities must lie in", gan.value_function_probs, pd, torch.tensor([math.nan], dtype=f64))
    _raises(ValueError, "d_fake: on meta", gan.value_function_probs, pd, pd.to("meta"))


def test_density_shapes_must_match_without_broadcasting():
    """Mismatched shapes were a broadcasting RuntimeError, or broadcast silently into a batch of values."""
    pd, pm = torch.tensor([0.5, 0.5, 0.0], dtype=f64), torch.tensor([0.0, 0.5, 0.5], dtype=f64)
    d = gan.optimal_discriminator(pd, pm)
    _raises(ValueError, r"p_m: shape \(2,\) differs from p_d's \(3,\)", gan.optimal_discriminator, pd, pm[:2])
    _raises(ValueError, r"p_m: shape \(2,\) differs", gan.value_function_densities, pd, pm[:2], d)
    _raises(ValueError, r"p_m: shape \(3,\) differs from p_d's \(2, 3\)", gan.value_function_densities,
            pd.expand(2, 3), pm, d)


def test_optimal_discriminator_of_huge_densities():
    """p_d + p_m overflowed to inf for densities near the float64 maximum, so D* came out 0 instead of the
    ratio: p_d / (p_d + p_m) = 1/2 for equal densities, 1/3 for p_m = 2 p_d."""
    big = torch.tensor([1e308, 0.5e308], dtype=f64)
    assert_close(gan.optimal_discriminator(big, torch.tensor([1e308, 1e308], dtype=f64)),
                 torch.tensor([0.5, 1 / 3], dtype=f64))
    tiny = torch.tensor([1e-320, 0.0], dtype=f64)
    assert_close(gan.optimal_discriminator(tiny, torch.tensor([1e-320, 0.0], dtype=f64)),
                 torch.tensor([0.5, 0.5], dtype=f64))


def test_divergences_of_an_empty_batch_are_empty():
    """A batch (0, K) of probability vectors was a RuntimeError of max() in the probability check."""
    p = torch.zeros(0, 3, dtype=f64)
    assert gan.kl_divergence(p, p).shape == (0,)
    assert gan.js_divergence(p, p).shape == (0,)
    with pytest.raises(ValueError, match=r"^p: must sum to 1"):  # but (2, 0) has no probability vector
        gan.kl_divergence(torch.zeros(2, 0, dtype=f64), torch.zeros(2, 0, dtype=f64))


def test_train_gan_checks_networks_betas_and_batches():
    """Non-module networks were AttributeErrors, one without parameters Adam's unnamed ValueError, bad betas
    Adam's unnamed errors; an empty batch gave NaN losses, a float32 batch into float64 networks and a
    discriminator with 3 outputs per sample a RuntimeError or a silently longer loss."""
    torch.manual_seed(0)
    G, D = nn.Linear(2, 2).double(), nn.Linear(2, 1).double()
    data, noise = (lambda: torch.randn(8, 2, dtype=f64)), (lambda: torch.randn(8, 2, dtype=f64))
    _raises(TypeError, "generator: expected an nn.Module", gan.train_gan, lambda z: z, D, data, noise, steps=1)
    _raises(TypeError, "discriminator: expected an nn.Module", gan.train_gan, G, 3, data, noise, steps=1)
    _raises(ValueError, "generator: has no parameters", gan.train_gan, nn.Identity(), D, data, noise, steps=1)
    _raises(ValueError, "betas: must be < 1", gan.train_gan, G, D, data, noise, steps=1, betas=(1.5, 0.9))
    _raises(TypeError, "betas: expected two numbers", gan.train_gan, G, D, data, noise, steps=1, betas="ab")
    _raises(ValueError, "sample_data: returned an empty batch", gan.train_gan, G, D,
            lambda: torch.zeros(0, 2, dtype=f64), noise, steps=1)
    _raises(ValueError, "sample_noise: returned an empty batch", gan.train_gan, G, D, data,
            lambda: torch.zeros(0, 2, dtype=f64), steps=1)
    _raises(TypeError, "sample_data: returned torch.float32", gan.train_gan, G, D, lambda: torch.randn(8, 2), noise, steps=1)
    _raises(TypeError, "sample_data: expected to return a tensor", gan.train_gan, G, D, lambda: [[1.0, 2.0]], noise, steps=1)
    _raises(ValueError, "discriminator: expected one logit per sample", gan.train_gan, G, nn.Linear(2, 3).double(),
            data, noise, steps=1)


def test_dcgan_networks_check_inputs_against_their_layers_and_size():
    """A float32 code or image into float64 networks, or one on another device, was a RuntimeError inside a
    convolution; a discriminator input too small was a RuntimeError, one too large 'shape [2] is invalid'."""
    g = gan.DCGANGenerator(nz=4, features=4, ups=1).double()
    _raises(TypeError, "z: dtype torch.float32 differs from the generator's", g, torch.randn(2, 4))
    _raises(ValueError, "z: on meta", g, torch.randn(2, 4, dtype=f64, device="meta"))
    d = gan.DCGANDiscriminator(features=4, downs=1).double()
    for shape in ((2, 1, 4, 4), (2, 1, 16, 16), (2, 1, 8, 16)):
        _raises(ValueError, r"x: expected 8 x 8 images", d, torch.zeros(shape, dtype=f64))
    _raises(TypeError, "x: dtype torch.float32 differs from the discriminator's", d, torch.zeros(2, 1, 8, 8))
    _raises(ValueError, "x: on meta", d, torch.zeros(2, 1, 8, 8, dtype=f64, device="meta"))
    assert d(torch.zeros(2, 1, 9, 9, dtype=f64)).shape == (2,)  # floors to the same 4 x 4 map


def test_gradient_penalty_checks_eps_and_the_critic():
    """eps on another device was a RuntimeError, eps outside [0, 1] (or NaN) extrapolated silently; a 0-d real
    was an IndexError; a critic returning a list an AttributeError, (B, D) or a scalar silently a different
    penalty; a critic that ignores its input (gradient zero) was autograd's RuntimeError, and is weight * 1."""
    r = torch.randn(3, 2, dtype=f64, generator=generator(0))
    c = lambda t: t.sum(1)  # noqa: E731
    _raises(ValueError, "eps: on meta", gan.gradient_penalty, c, r, r, eps=torch.rand(3, dtype=f64, device="meta"))
    _raises(ValueError, "eps: entries must be <= 1", gan.gradient_penalty, c, r, r, eps=torch.full((3,), 2.0, dtype=f64))
    _raises(ValueError, "eps: entries must be >= 0", gan.gradient_penalty, c, r, r, eps=torch.full((3,), math.nan, dtype=f64))
    _raises(ValueError, "real: expected a batch", gan.gradient_penalty, c, torch.tensor(1.0, dtype=f64), torch.tensor(1.0, dtype=f64))
    for bad in (lambda t: [1.0], lambda t: t, lambda t: t.sum()):
        _raises(ValueError, "critic: expected one value per sample", gan.gradient_penalty, bad, r, r)
    const = lambda t: torch.ones(t.shape[0], dtype=f64)  # noqa: E731
    assert_close(gan.gradient_penalty(const, r, r, weight=3.0), torch.tensor(3.0, dtype=f64))


def test_pix2pix_logits_must_match_the_images():
    """Logits on another device than the images gave a result on that device; in another dtype, promoted."""
    x = torch.randn(3, 2, dtype=f64)
    _raises(ValueError, "d_fake_logits: on meta", gan.pix2pix_generator_loss, A.to("meta"), x, x)
    _raises(TypeError, "d_fake_logits: dtype torch.float32", gan.pix2pix_generator_loss, A.float(), x, x)


def test_cycle_losses_check_the_translators():
    """A translator changing the shape or batch broadcast silently against x; a list return was an unnamed
    TypeError; in the full objective a non-callable F_xy was "'int' object is not callable", x a list or a
    discriminator returning a list AttributeErrors; y on another device gave a result on that device."""
    x = torch.randn(3, 2, dtype=f64)
    ident = lambda v: v  # noqa: E731
    _raises(ValueError, r"G_yx: G_yx\(F_xy\(\.\)\) must have its input's shape", gan.cycle_consistency_loss,
            x, x, lambda v: v[:, :1], ident)
    _raises(ValueError, r"G_yx: G_yx\(F_xy\(\.\)\)", gan.cycle_consistency_loss, x, x, lambda v: v[:1], ident)
    _raises(TypeError, "F_xy: expected to return a tensor", gan.cycle_consistency_loss, x, x, lambda v: [1.0], ident)
    _raises(ValueError, "y: on meta", gan.cycle_consistency_loss, x, x.to("meta"), ident, ident)
    critic = lambda v: v.sum(1)  # noqa: E731
    _raises(TypeError, "F_xy: expected a callable", gan.cyclegan_generator_loss, x, x, 3, ident, critic, critic)
    _raises(TypeError, "x: expected a torch.Tensor", gan.cyclegan_generator_loss, [[1.0]], x, ident, ident, critic, critic)
    _raises(TypeError, "D_y: expected to return a tensor", gan.cyclegan_generator_loss, x, x, ident, ident,
            lambda v: [1.0], critic)


def test_frechet_distance_refuses_empty_and_non_finite_statistics():
    """D = 0 was an IndexError of amax(); NaN in sigma1 a LinAlgError of eigh, NaN or inf in a mean a silent
    NaN; fid's mismatched devices and dtypes were named as the inner mu2."""
    mu, S = torch.zeros(2, dtype=f64), torch.eye(2, dtype=f64)
    _raises(ValueError, "mu1: expected at least one feature", gan.frechet_distance, mu[:0], S[:0, :0], mu[:0], S[:0, :0])
    _raises(ValueError, "sigma1: contains NaN", gan.frechet_distance, mu, S * math.nan, mu, S)
    _raises(ValueError, "mu2: contains NaN", gan.frechet_distance, mu, S, mu + math.inf, S)
    f = torch.randn(5, 2, dtype=f64, generator=generator(1))
    _raises(ValueError, "features_real: expected at least one feature column", gan.fid, f[:, :0], f[:, :0])
    _raises(ValueError, "features_fake: on meta", gan.fid, f, f.to("meta"))
    _raises(TypeError, "features_fake: dtype torch.float32", gan.fid, f, f.float())


def test_invert_generator_checks_codes_mask_and_generator():
    """An empty batch was a RuntimeError of reshape(0, -1) (now: no image, no code, an empty result); a batch
    mismatch, a mask that does not broadcast and a generator output of another shape were broadcasting
    RuntimeErrors; z0 in another dtype or device a RuntimeError inside G; a generator ignoring z autograd's
    RuntimeError (the gradient is zero: z stays z0)."""
    G = nn.Linear(2, 3).double()
    x, z0 = torch.randn(4, 3, dtype=f64, generator=generator(2)), torch.randn(4, 2, dtype=f64, generator=generator(3))
    assert gan.invert_generator(G, x[:0], z0[:0], steps=2).shape == (0, 2)
    _raises(ValueError, "z0: batch of 2 differs from x's 4", gan.invert_generator, G, x, z0[:2], steps=1)
    _raises(TypeError, "z0: dtype torch.float32", gan.invert_generator, G, x, z0.float(), steps=1)
    _raises(ValueError, "z0: on meta", gan.invert_generator, G, x, z0.to("meta"), steps=1)
    _raises(ValueError, r"mask: shape \(5,\) does not broadcast", gan.invert_generator, G, x, z0, steps=1,
            mask=torch.ones(5, dtype=f64))
    _raises(ValueError, "generator: expected images of x's shape", gan.invert_generator, lambda z: z, x, z0, steps=1)
    _raises(ValueError, "generator: expected images", gan.invert_generator, lambda z: [1.0], x, z0, steps=1)
    _raises(ValueError, "x: expected a batch", gan.invert_generator, G, torch.tensor(1.0, dtype=f64), z0, steps=1)
    const = lambda z: torch.zeros(4, 3, dtype=f64)  # noqa: E731
    assert torch.equal(gan.invert_generator(const, x, z0, steps=3), z0)


def test_unrolled_generator_loss_checks_networks_and_batches():
    """A non-module discriminator was an AttributeError, a non-callable generator an unnamed TypeError; real
    or z in another dtype / on another device RuntimeErrors inside a layer; a frozen discriminator autograd's
    RuntimeError (it cannot move: the loss is the ordinary one); 3 logits per sample silently a longer loss;
    an empty batch was named as the inner d_real_logits / d_fake_logits."""
    torch.manual_seed(0)
    G, D = nn.Linear(2, 2).double(), nn.Linear(2, 1).double()
    z, real = torch.randn(4, 2, dtype=f64), torch.randn(5, 2, dtype=f64)
    f = gan.unrolled_generator_loss
    _raises(TypeError, "discriminator: expected an nn.Module", f, G, lambda v: v, z, real, k=1, lr=0.1)
    _raises(TypeError, "generator: expected a callable", f, 3, D, z, real, k=1, lr=0.1)
    _raises(TypeError, "real: dtype torch.float32 differs from the discriminator's", f, G, D, z, real.float(), k=1, lr=0.1)
    _raises(ValueError, "real: on meta", f, G, D, z, real.to("meta"), k=1, lr=0.1)
    _raises(TypeError, "z: dtype torch.float32 differs from the generator's", f, G, D, z.float(), real, k=1, lr=0.1)
    _raises(ValueError, "discriminator: expected one logit per sample", f, G, nn.Linear(2, 3).double(), z, real, k=1, lr=0.1)
    _raises(ValueError, "z: the generator loss needs at least one", f, G, D, z[:0], real, k=1, lr=0.1)
    _raises(ValueError, "real: the unrolled discriminator steps need", f, G, D, z, real[:0], k=1, lr=0.1)
    frozen = nn.Linear(2, 1).double().requires_grad_(False)
    assert_close(f(G, frozen, z, real, k=3, lr=0.1), f(G, frozen, z, real, k=0, lr=0.1))


def test_adain_with_eps_zero_refuses_constant_feature_maps():
    """eps = 0 is allowed, but a constant map (every 1 x 1 map) was then 0 / 0 = NaN; with eps > 0 it is the
    style's bias."""
    x = torch.ones(2, 3, 4, 4, dtype=f64)
    s, b = torch.full((2, 3), 2.0, dtype=f64), torch.full((2, 3), 0.5, dtype=f64)
    _raises(ValueError, "x: a feature map is constant", gan.adain, x, s, b, 0.0)
    _raises(ValueError, "x: a feature map is constant", gan.adain, torch.randn(2, 3, 1, 1, dtype=f64), s, b, 0.0)
    assert_close(gan.adain(x, s, b), torch.full_like(x, 0.5))
