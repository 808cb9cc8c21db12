"""Diffusion models: properties, statistical checks and reference comparisons for impl/diffusion.py.

Statistical checks fix their seed and allow 6 standard errors of the estimator (DESIGN.md). The
references are mathematics written out here with numpy/scipy (cumulative products, Gaussian
conditioning of the forward chain's joint law, quadrature), torch.distributions, and the notes'
algorithms transcribed line by line.
"""

import functools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st

from impl import diffusion as D
from spec.testing import count_flops, fit_exponent, generator, seeds

LIN = D.linear_beta_schedule()                       # the notes' (DDPM's) schedule, float64


def _steps(*ts, n=1):
    return torch.tensor([t for t in ts for _ in range(n)], dtype=torch.long)


def _np_alpha_bars(betas):
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


@pytest.mark.claim("diffusion.beta-increasing")
def test_linear_schedule_is_ddpm_and_increasing(record_property):
    b = LIN.numpy()
    np.testing.assert_allclose(b, np.linspace(1e-4, 0.02, 1000), rtol=0, atol=1e-15)
    assert b.shape == (1000,) and b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    assert (np.diff(b) > 0).all()
    record_property("evidence", f"linear: min step {np.diff(b).min():.3g} > 0")


@pytest.mark.claim("diffusion.beta-increasing")
@pytest.mark.parametrize("T", [10, 100, 1000])
def test_cosine_schedule_is_increasing_and_matches_its_alpha_bar(T, record_property):
    b = D.cosine_beta_schedule(T).numpy()
    s = 0.008
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    ab = f[1:] / f[0]
    unclipped = b < 0.999
    np.testing.assert_allclose(_np_alpha_bars(b)[unclipped], ab[unclipped], rtol=1e-10)
    assert (np.diff(b) >= 0).all() and (np.diff(b)[: T - 2] > 0).all()
    record_property("evidence", f"cosine T={T}: beta from {b[0]:.3g} to {b[-1]:.3g}, min step {np.diff(b).min():.3g}")


@pytest.mark.claim("diffusion.closed-form", role="corrects")
def test_alpha_and_alpha_bar_against_numpy():
    b = D.cosine_beta_schedule(50)
    torch.testing.assert_close(D.alphas(b), 1 - b)
    np.testing.assert_allclose(D.alpha_bars(b).numpy(), _np_alpha_bars(b.numpy()), rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# Forward process
# ----------------------------------------------------------------------------------------------


@pytest.mark.claim("diffusion.forward-step", role="refutes")
def test_forward_step_as_written_with_unsubscripted_beta(record_property):
    """Line 460 read literally: mean sqrt(1 - beta) x_{t-1} with one beta for every t, variance beta_t. Chaining it from
    x_0 gives x_t ~ N(c_t x_0, v_t) with c_t = (1 - beta)^(t/2), v_t = (1 - beta) v_{t-1} + beta_t (Gaussian algebra),
    where lines 465-467 need sqrt(ab_t) and 1 - ab_t. t = 1 forces beta = beta_1; then, the schedule increasing, later t
    fail: over every constant beta in (0, 1) (a fine grid) some t misses the closed form by > 0.1. And a unit-variance
    x_{t-1} gets variance 1 - beta + beta_t != 1 unless beta = beta_t."""
    b = LIN.numpy()
    ab = _np_alpha_bars(b)
    beta = np.concatenate([[b[0], b[-1], b.mean()], np.linspace(1e-6, 1 - 1e-6, 2001)])[:, None]    # (G, 1)
    c = (1 - beta) ** (np.arange(1, 1001)[None] / 2)                                              # (G, T)
    v = np.zeros_like(c)
    v[:, 0] = b[0]
    for t in range(1, 1000):
        v[:, t] = (1 - beta[:, 0]) * v[:, t - 1] + b[t]
    miss = np.maximum(np.abs(c - np.sqrt(ab)[None]), np.abs(v - (1 - ab)[None])).max(1)            # worst t per beta
    assert (miss > 0.1).all()
    # beta = beta_1 passes t = 1 exactly and is far off at t = T
    assert c[0, 0] == pytest.approx(math.sqrt(ab[0]), rel=1e-15) and abs(c[0, -1] - math.sqrt(ab[-1])) > 0.9
    assert abs((1 - b[0]) + b[-1] - 1) > 0.019                   # not variance-preserving at t = T
    # the corrected step (impl's forward_step) chained twice is exactly the closed form at t = 2 (given noises)
    x0, e1, e2 = (torch.randn(3, 2, generator=generator(k), dtype=torch.float64) for k in (90, 91, 92))
    x2 = D.forward_step(D.forward_step(x0, _steps(1, n=3), LIN, e1), _steps(2, n=3), LIN, e2)
    torch.testing.assert_close(x2 - math.sqrt(ab[1]) * x0, math.sqrt(1 - b[1]) * math.sqrt(b[0]) * e1 + math.sqrt(b[1]) * e2)
    record_property("evidence", f"over {len(beta)} constant betas the literal chain misses q(x_t|x_0) by >= {miss.min():.3f} "
                    f"at some t; beta = beta_1: mean coefficient at T {c[0, -1]:.3f} vs sqrt(ab_T) {math.sqrt(ab[-1]):.4f}")


@pytest.mark.claim("diffusion.forward-step", role="corrects")
def test_forward_step_moments(record_property):
    """q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I): sample mean and variance within 6 SE."""
    n = 40000
    x_prev = torch.tensor([[3.0, -1.0]], dtype=torch.float64).expand(2 * n, 2)
    t = _steps(1, 1000, n=n)
    xt = D.forward_step(x_prev, t, LIN, generator=generator(0))
    worst = 0.0
    for i, step in enumerate((1, 1000)):
        xs = xt[i * n:(i + 1) * n]
        beta = LIN[step - 1]
        mean_err = (xs.mean(0) - math.sqrt(1 - beta) * x_prev[0]).abs() / math.sqrt(beta / n)
        var_err = (xs.var(0) - beta).abs() / (beta * math.sqrt(2 / n))
        worst = max(worst, mean_err.max().item(), var_err.max().item())
    assert worst < 6
    record_property("evidence", f"worst deviation {worst:.2f} SE over t in {{1, 1000}}")


@pytest.mark.claim("diffusion.forward-step", role="corrects")
@given(seed=seeds())
def test_forward_step_with_given_noise(seed):
    g = generator(seed)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    e = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (5,), generator=g)
    b = LIN[t - 1][:, None]
    torch.testing.assert_close(D.forward_step(x, t, LIN, e), torch.sqrt(1 - b) * x + torch.sqrt(b) * e)


@pytest.mark.claim("diffusion.forward-fixed-reverse-learned")
def test_forward_is_fixed_reverse_is_learned():
    """The forward process is a fixed function of (x, t, noise): nothing in it can be trained. The reverse
    model has trainable parameters, and the loss's gradient reaches only them."""
    x0 = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    e = torch.randn(8, 2, dtype=torch.float64)
    t = torch.randint(1, 1001, (8,))
    assert torch.equal(D.q_sample(x0, t, LIN, e), D.q_sample(x0, t, LIN, e))
    net = D.NoisePredictor(dim=2, hidden=16).double()
    params = [p for p in net.parameters() if p.requires_grad]
    assert params
    loss = D.ddpm_loss(net, x0.detach(), LIN, t=t, noise=e)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params[-2:])


@pytest.mark.claim("diffusion.closed-form", role="refutes")
def test_product_without_range_is_not_the_closed_form(record_property):
    """Line 465 prints alpha_bar_t := prod alpha_i with no range; read as the product over every step
    (i = 1..T) it does not depend on t, and N(sqrt(ab) x_0, (1 - ab) I) is then wrong for t < T: one
    forward step from x_0 has variance beta_1."""
    ab_all = float(torch.prod(1 - LIN))
    x0 = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    n = 4000
    x1 = D.forward_step(x0.expand(n, 2), torch.ones(n, dtype=torch.long), LIN, generator=generator(90))
    var1 = float(x1.var(0).mean())
    assert var1 == pytest.approx(float(LIN[0]), rel=6 * math.sqrt(2 / (2 * n)))   # 6 SE
    assert 1 - ab_all > 0.9999 and var1 < 1e-3
    assert abs(float(x1.mean(0)[0]) - math.sqrt(ab_all) * 2) > 1.9
    record_property("evidence", f"one forward step: Var x_1 = {var1:.2e} (beta_1 = 1e-4), the all-step product gives "
                    f"1 - prod alpha_i = {1 - ab_all:.5f}")


@pytest.mark.claim("diffusion.closed-form", role="corrects")
def test_closed_form_matches_chained_forward_steps(record_property):
    """Chaining t forward steps from a fixed x_0 gives mean sqrt(ab_t) x_0 and covariance (1 - ab_t) I (6 SE)."""
    n, x0 = 4000, torch.tensor([2.0, -1.0], dtype=torch.float64)
    g = generator(1)
    x = x0.expand(n, 2).clone()
    ab = D.alpha_bars(LIN)
    worst = 0.0
    for t in range(1, 1001):
        x = D.forward_step(x, torch.full((n,), t), LIN, generator=g)
        if t in (1, 10, 300, 1000):
            v = 1 - ab[t - 1]
            m_err = (x.mean(0) - ab[t - 1].sqrt() * x0).abs().max() / math.sqrt(v / n)
            c = torch.cov(x.T)
            v_err = (torch.diagonal(c) - v).abs().max() / (v * math.sqrt(2 / n))
            o_err = c[0, 1].abs() / (v / math.sqrt(n))
            worst = max(worst, m_err.item(), v_err.item(), o_err.item())
    assert worst < 6
    record_property("evidence", f"chain of forward steps vs closed form: worst {worst:.2f} SE at t in 1, 10, 300, 1000")


@pytest.mark.claim("diffusion.closed-form", role="corrects")
@given(seed=seeds())
def test_q_sample_formula(seed):
    g = generator(seed)
    x0, e = torch.randn(6, 2, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (6,), generator=g)
    ab = torch.from_numpy(_np_alpha_bars(LIN.numpy()))[t - 1][:, None, None]
    torch.testing.assert_close(D.q_sample(x0, t, LIN, e), ab.sqrt() * x0 + (1 - ab).sqrt() * e)


@pytest.mark.claim("diffusion.closed-form", role="corrects")
@pytest.mark.claim("diffusion.posterior-gaussian", "diffusion.eps-form")
def test_float32_on_device_matches_float64(device):
    """float32 on the device against float64 on the CPU: rtol 2e-4, atol 1e-4, because ab_t is a cumprod of up
    to 1000 float32 factors (relative error up to ~1000 * 6e-8 = 6e-5) and enters through sqrt(1 - ab_t)."""
    g = generator(3)
    x0, e = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (64,), generator=g)
    ref_xt = D.q_sample(x0, t, LIN, e)
    ref_mu, ref_var = D.q_posterior(x0, ref_xt, t, LIN)
    f = dict(device=device, dtype=torch.float32)
    b32, t32 = LIN.to(**f), t.to(device)
    xt = D.q_sample(x0.to(**f), t32, b32, e.to(**f))
    mu, var = D.q_posterior(x0.to(**f), xt, t32, b32)
    mu_eps = D.mu_from_eps(xt, t32, e.to(**f), b32)
    assert xt.device.type == torch.device(device).type
    torch.testing.assert_close(xt.cpu().double(), ref_xt, rtol=2e-4, atol=1e-4)
    torch.testing.assert_close(mu.cpu().double(), ref_mu, rtol=2e-4, atol=1e-4)
    torch.testing.assert_close(mu_eps.cpu().double(), ref_mu, rtol=2e-4, atol=1e-4)
    torch.testing.assert_close(var.cpu().double(), ref_var, rtol=2e-4, atol=1e-8)


@pytest.mark.claim("diffusion.closed-form", role="corrects")
def test_extreme_steps_are_finite():
    x0 = torch.full((2, 2), 1e6, dtype=torch.float64)
    t = torch.tensor([1, 1000])
    assert torch.isfinite(D.q_sample(x0, t, LIN)).all()
    m, v = D.q_posterior(x0, x0, t, D.cosine_beta_schedule(1000))
    assert torch.isfinite(m).all() and torch.isfinite(v).all() and (v >= 0).all()


# ----------------------------------------------------------------------------------------------
# Reverse process by Bayes, posterior, epsilon form
# ----------------------------------------------------------------------------------------------

MIX1 = dict(weights=torch.tensor([0.5, 0.5], dtype=torch.float64),
            means=torch.tensor([[-2.0], [2.0]], dtype=torch.float64),
            stds=torch.tensor([0.3, 0.3], dtype=torch.float64))


def _np_mixture_pdf(x, w, mu, s):
    return sum(wk * scipy.stats.norm.pdf(x, mk, sk) for wk, mk, sk in zip(w, mu, s))


@pytest.mark.claim("diffusion.reverse-bayes")
def test_reverse_conditional_by_bayes_is_not_gaussian(record_property):
    """q(x_t) = int q(x_t | x_0) q(x_0) dx_0 by quadrature equals the closed-form marginal; q(x_{t-1} | x_t)
    by Bayes integrates to 1 and, for mixture data, is bimodal: far from every Gaussian (total variation > 0.2 from
    the Gaussian with its own mean and variance)."""
    betas = D.linear_beta_schedule(10, 0.05, 0.5)
    ab = _np_alpha_bars(betas.numpy())
    t = 3
    w, mu, s = [0.5, 0.5], [-2.0, 2.0], [0.3, 0.3]
    p0 = lambda x: _np_mixture_pdf(x, w, mu, s)  # noqa: E731
    xt = 0.0
    q_xt = scipy.integrate.quad(lambda x0: scipy.stats.norm.pdf(xt, math.sqrt(ab[t - 1]) * x0, math.sqrt(1 - ab[t - 1])) * p0(x0),
                                -10, 10, points=mu, limit=200)[0]
    ours = D.mixture_log_density(torch.tensor([[xt]], dtype=torch.float64), torch.tensor([t]), betas, **MIX1).exp().item()
    assert ours == pytest.approx(q_xt, rel=1e-8)
    # q(x_{t-1}): the same marginal one step earlier (impl, checked just above at step t)
    grid = torch.linspace(-6, 6, 4001, dtype=torch.float64)[:, None]
    q_prev = D.mixture_log_density(grid, torch.full((4001,), t - 1), betas, **MIX1).exp().numpy()
    b = betas[t - 1].item()
    lik = scipy.stats.norm.pdf(xt, math.sqrt(1 - b) * grid.squeeze(1).numpy(), math.sqrt(b))
    post = lik * q_prev / q_xt
    mass = scipy.integrate.trapezoid(post, grid.squeeze(1).numpy())
    assert mass == pytest.approx(1.0, abs=1e-6)
    peaks = np.flatnonzero((post[1:-1] > post[:-2]) & (post[1:-1] > post[2:]))
    assert len(peaks) == 2          # two modes: no Gaussian has them
    g = grid.squeeze(1).numpy()
    m = scipy.integrate.trapezoid(g * post, g)
    v = scipy.integrate.trapezoid((g - m) ** 2 * post, g)
    tv = 0.5 * scipy.integrate.trapezoid(np.abs(post - scipy.stats.norm.pdf(g, m, math.sqrt(v))), g)
    assert tv > 0.2
    record_property("evidence", f"q(x_t=0) quad {q_xt:.6g} vs closed form {ours:.6g}; q(x_(t-1)|x_t) mass {mass:.6f}, modes at "
                    f"{g[peaks + 1].round(3).tolist()}, TV to moment-matched Gaussian {tv:.3f}")


@pytest.mark.claim("diffusion.posterior-gaussian")
@given(seed=seeds())
def test_posterior_equals_gaussian_conditioning_of_the_chain(seed):
    """(x_{t-1}, x_t) | x_0 is jointly Gaussian (x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps); conditioning it on
    x_t (numpy) gives q_posterior's mean and variance."""
    g = generator(seed)
    x0, xt = torch.randn(7, 2, generator=g, dtype=torch.float64), 3 * torch.randn(7, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (7,), generator=g)
    ab = np.concatenate([[1.0], _np_alpha_bars(LIN.numpy())])
    tn, b = t.numpy(), LIN.numpy()[t.numpy() - 1]
    m_prev = np.sqrt(ab[tn - 1])[:, None] * x0.numpy()
    v_prev = 1 - ab[tn - 1]
    m_t = np.sqrt(1 - b)[:, None] * m_prev
    v_t = (1 - b) * v_prev + b
    c = np.sqrt(1 - b) * v_prev
    mean = m_prev + (c / v_t)[:, None] * (xt.numpy() - m_t)
    var = v_prev - c ** 2 / v_t
    m, v = D.q_posterior(x0, xt, t, LIN)
    np.testing.assert_allclose(m.numpy(), mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(v.squeeze(1).numpy(), var, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(D.posterior_variance(LIN).numpy()[tn - 1], var, rtol=1e-9, atol=1e-15)


@pytest.mark.claim("diffusion.eps-form")
@given(seed=seeds())
def test_eps_form_equals_posterior_mean(seed):
    g = generator(seed)
    betas = D.cosine_beta_schedule(200) if seed % 2 else LIN
    T = betas.shape[0]
    x0, e = torch.randn(9, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(9, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, T + 1, (9,), generator=g)
    xt = D.q_sample(x0, t, betas, e)
    torch.testing.assert_close(D.mu_from_eps(xt, t, e, betas), D.q_posterior(x0, xt, t, betas)[0], rtol=1e-9, atol=1e-9)


@pytest.mark.claim("diffusion.predict-noise")
@given(seed=seeds())
def test_mean_error_is_scaled_noise_error(seed):
    g = generator(seed)
    x0, e, eh = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.randint(1, 1001, (5,), generator=g)
    xt = D.q_sample(x0, t, LIN, e)
    mu_q = D.q_posterior(x0, xt, t, LIN)[0]
    mu_th = D.mu_from_eps(xt, t, eh, LIN)
    a, ab = 1 - LIN[t - 1], D.alpha_bars(LIN)[t - 1]
    lhs = (mu_th - mu_q).pow(2).sum(1)
    rhs = (1 - a) ** 2 / (a * (1 - ab)) * (eh - e).pow(2).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-12)


@pytest.mark.claim("diffusion.learn-mean")
@given(seed=seeds())
def test_kl_term_is_mean_distance_plus_constant(seed):
    g = generator(seed)
    m1, m2, m3 = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    vq = torch.rand(4, 1, generator=g, dtype=torch.float64) + 0.01
    s2 = torch.rand(4, 1, generator=g, dtype=torch.float64) + 0.01
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, vq.sqrt().expand_as(m1)), torch.distributions.Normal(m2, s2.sqrt().expand_as(m2))).sum(1)
    kl = D.gaussian_kl(m1, vq, m2, s2)
    torch.testing.assert_close(kl, ref)
    # sigma_t = sigma_q: exactly ||mu_theta - mu_q||^2 / (2 sigma_q^2)
    torch.testing.assert_close(D.gaussian_kl(m1, vq, m2, vq), (m1 - m2).pow(2).sum(1) / (2 * vq.squeeze(1)))
    # otherwise KL - ||.||^2 / (2 sigma_t^2) does not depend on mu_theta, so the argmin is mu_theta = mu_q
    c2 = kl - (m1 - m2).pow(2).sum(1) / (2 * s2.squeeze(1))
    c3 = D.gaussian_kl(m1, vq, m3, s2) - (m1 - m3).pow(2).sum(1) / (2 * s2.squeeze(1))
    torch.testing.assert_close(c2, c3)
    assert (D.gaussian_kl(m1, vq, m1, s2) <= kl + 1e-12).all()


@pytest.mark.claim("diffusion.learn-mean")
def test_gaussian_kl_tiny_variances_are_finite():
    m = torch.zeros(2, 3, dtype=torch.float64)
    kl = D.gaussian_kl(m, torch.full((2, 1), 1e-300, dtype=torch.float64), m + 1, torch.full((2, 1), 1e-300, dtype=torch.float64))
    assert torch.isfinite(kl).all() and (kl > 1e299).all()


# ----------------------------------------------------------------------------------------------
# The ELBO on a linear-Gaussian case, where every term is analytic
# ----------------------------------------------------------------------------------------------


def _forward_joint(x0, betas):
    """Mean (T+1,) and covariance (T+1, T+1) of (x_0, ..., x_T) given x_0 (scalar data), from the forward steps."""
    T = len(betas)
    A = np.zeros((T + 1, T + 1))      # X = A eps + m: eps_t the noise of step t
    m = np.zeros(T + 1)
    m[0] = x0
    for t in range(1, T + 1):
        A[t] = math.sqrt(1 - betas[t - 1]) * A[t - 1]
        A[t, t] = math.sqrt(betas[t - 1])
        m[t] = math.sqrt(1 - betas[t - 1]) * m[t - 1]
    return m, A @ A.T


def _e_log_normal(w, c, s2, m, C):
    """E[log N(w.X; w'.X + c, s2)] written as E over (w . X - c) with X ~ N(m, C)."""
    mu, var = w @ m - c, w @ C @ w
    return -0.5 * math.log(2 * math.pi * s2) - (mu ** 2 + var) / (2 * s2)


def _linear_gaussian_case(T, seed, stationary=False):
    rng = np.random.default_rng(seed)
    betas = rng.uniform(0.05, 0.5, T)
    if stationary:
        a, c, s2 = np.sqrt(1 - betas), np.zeros(T), betas.copy()
    else:
        a, c, s2 = rng.uniform(0.3, 1.2, T), rng.normal(0, 0.3, T), rng.uniform(0.05, 0.8, T)
    return betas, a, c, s2


def _elbo_joint(x0, betas, a, c, s2):
    """E_q log p(x_{0:T}) / q(x_{1:T} | x_0) from the joint law; p(x_{t-1} | x_t) = N(a_t x_t + c_t, s2_t)."""
    T = len(betas)
    m, C = _forward_joint(x0, betas)
    e = lambda i: np.eye(T + 1)[i]  # noqa: E731
    val = _e_log_normal(e(T), 0.0, 1.0, m, C)                                   # log p(x_T)
    for t in range(1, T + 1):
        val += _e_log_normal(e(t - 1) - a[t - 1] * e(t), c[t - 1], s2[t - 1], m, C)          # log p(x_{t-1}|x_t)
        val -= _e_log_normal(e(t) - math.sqrt(1 - betas[t - 1]) * e(t - 1), 0.0, betas[t - 1], m, C)  # log q(x_t|x_{t-1})
    return val


def _elbo_terms_analytic(x0, betas, a, c, s2):
    """The notes' three terms, each in closed form, with the posterior from impl's q_posterior."""
    T = len(betas)
    bt = torch.tensor(betas, dtype=torch.float64)
    ab = np.cumprod(1 - betas)
    # orange: x_1 ~ N(sqrt(ab_1) x0, 1 - ab_1); log N(x0; a_1 x_1 + c_1, s2_1)
    mu1, v1 = a[0] * math.sqrt(ab[0]) * x0 + c[0], a[0] ** 2 * (1 - ab[0])
    recon = -0.5 * math.log(2 * math.pi * s2[0]) - ((x0 - mu1) ** 2 + v1) / (2 * s2[0])
    mT, vT = math.sqrt(ab[-1]) * x0, 1 - ab[-1]
    f64 = dict(dtype=torch.float64)
    prior = D.gaussian_kl(torch.tensor([[mT]], **f64), torch.tensor([[vT]], **f64),
                          torch.zeros(1, 1, **f64), torch.ones(1, 1, **f64)).item()
    denoise = 0.0
    for t in range(2, T + 1):
        tt = torch.tensor([t])
        x0t = torch.tensor([[x0]], dtype=torch.float64)
        m0, vq = D.q_posterior(x0t, torch.zeros(1, 1, **f64), tt, bt)        # mu_q is affine in x_t:
        k = D.q_posterior(x0t, torch.ones(1, 1, **f64), tt, bt)[0] - m0        # mu_q = m0 + k x_t
        m0, k, vq = m0.item(), k.item(), vq.item()
        mt, vt = math.sqrt(ab[t - 1]) * x0, 1 - ab[t - 1]                        # x_t ~ q(x_t | x_0)
        # E KL(N(m0 + k x_t, vq) || N(a x_t + c, s2)) with d = (k - a) x_t + m0 - c
        d_mean, d_var = (k - a[t - 1]) * mt + m0 - c[t - 1], (k - a[t - 1]) ** 2 * vt
        denoise += 0.5 * (math.log(s2[t - 1] / vq) + (vq + d_mean ** 2 + d_var) / s2[t - 1] - 1)
    return recon, prior, denoise


def _log_marginal(x0, a, c, s2):
    """log p(x_0) of the linear-Gaussian reverse chain from x_T ~ N(0, 1)."""
    m, v = 0.0, 1.0
    for t in range(len(a), 0, -1):
        m, v = a[t - 1] * m + c[t - 1], a[t - 1] ** 2 * v + s2[t - 1]
    return scipy.stats.norm.logpdf(x0, m, math.sqrt(v))


@pytest.mark.claim("diffusion.elbo")
@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elbo_decomposition_exact(T, seed, record_property):
    betas, a, c, s2 = _linear_gaussian_case(T, seed)
    worst = 0.0
    for x0 in (-1.3, 0.0, 2.4):
        joint = _elbo_joint(x0, betas, a, c, s2)
        r, p, d = _elbo_terms_analytic(x0, betas, a, c, s2)
        assert joint == pytest.approx(r - p - d, rel=1e-12, abs=1e-12)
        assert _log_marginal(x0, a, c, s2) >= joint - 1e-12
        worst = max(worst, abs(joint - (r - p - d)))
    record_property("evidence", f"|E log p/q - (recon - prior - denoise)| <= {worst:.1e}; log p(x0) >= ELBO")



@pytest.mark.claim("generative.variational-approximate")
def test_diffusion_density_is_only_bounded_by_its_elbo(record_property):
    """Diffusion is 'variational' in the notes' taxonomy: for a linear-Gaussian reverse chain that is
    not the exact reverse, log p_theta(x_0) (exact, Gaussian) lies strictly above the ELBO."""
    gaps = []
    for seed in (1, 2):
        betas, a, c, s2 = _linear_gaussian_case(3, seed)
        for x0 in (-1.3, 0.0, 2.4):
            r, p, d = _elbo_terms_analytic(x0, betas, a, c, s2)
            gaps.append(_log_marginal(x0, a, c, s2) - (r - p - d))
    assert min(gaps) > 1e-4
    record_property("evidence", f"log p(x_0) - ELBO in [{min(gaps):.3g}, {max(gaps):.3g}] over 6 cases")

@pytest.mark.claim("diffusion.elbo")
def test_elbo_is_tight_for_the_exact_reverse_chain():
    """Data N(0, 1) is stationary under the forward chain; its exact reverse is N(sqrt(alpha_t) x_t, beta_t), and
    then the bound holds with equality for every x_0."""
    betas, a, c, s2 = _linear_gaussian_case(4, 7, stationary=True)
    for x0 in (-2.0, 0.5, 3.0):
        r, p, d = _elbo_terms_analytic(x0, betas, a, c, s2)
        assert r - p - d == pytest.approx(scipy.stats.norm.logpdf(x0), abs=1e-12)


@pytest.mark.claim("diffusion.elbo")
def test_elbo_terms_monte_carlo_matches_analytic(record_property):
    """impl's elbo_terms (x_t drawn, KLs exact) with the Gaussian-optimal predictor, whose mean is linear."""
    T = 4
    betas = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    mean, cov = torch.zeros(1, dtype=torch.float64), torch.full((1, 1), 0.5, dtype=torch.float64)
    eps = lambda x, t: D.gaussian_optimal_eps(x, t, betas, mean, cov)  # noqa: E731
    sig = betas.sqrt()
    n = 20000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    r, p, d = D.elbo_terms(eps, x0, betas, sig, generator=generator(5))
    est = r - p - d
    # the predictor's mean mu_theta(x_t, t) = a_t x_t: read a_t off at x_t = 1 (it is linear through 0)
    one = torch.ones(1, 1, dtype=torch.float64)
    a = np.array([D.mu_from_eps(one, torch.tensor([t]), eps(one, torch.tensor([t])), betas).item() for t in range(1, T + 1)])
    r0, p0, d0 = _elbo_terms_analytic(0.7, betas.numpy(), a, np.zeros(T), betas.numpy())
    se = est.std().item() / math.sqrt(n)
    assert abs(est.mean().item() - (r0 - p0 - d0)) < 6 * se
    assert torch.allclose(p, torch.full_like(p, p0), rtol=1e-12)
    record_property("evidence", f"MC ELBO {est.mean().item():.5f} vs analytic {r0 - p0 - d0:.5f} (SE {se:.1e})")


@pytest.mark.claim("diffusion.vae-one-step")
def test_one_step_diffusion_is_a_vae(record_property):
    """T = 1: the denoising sum is empty, and recon - prior is the VAE ELBO with encoder N(sqrt(1-beta_1) x0, beta_1),
    prior N(0, 1), decoder N(mu_theta(x_1, 1), sigma_1^2), computed here with torch.distributions."""
    betas = torch.tensor([0.3], dtype=torch.float64)
    sig = torch.tensor([0.6], dtype=torch.float64)
    eps = lambda x, t: 0.4 * x - 0.1  # noqa: E731  an arbitrary decoder network
    n = 4000
    x0 = torch.linspace(-2, 2, n, dtype=torch.float64)[:, None]
    r, p, d = D.elbo_terms(eps, x0, betas, sig, generator=generator(9))
    assert torch.equal(d, torch.zeros_like(d))
    # the same x_1 draws, through torch.distributions
    x1 = D.q_sample(x0, torch.ones(n, dtype=torch.long), betas, generator=generator(9))
    enc = torch.distributions.Normal(math.sqrt(0.7) * x0, math.sqrt(0.3))
    dec_mean = (x1 - 0.3 / math.sqrt(0.3) * eps(x1, None)) / math.sqrt(0.7)
    vae = torch.distributions.Normal(dec_mean, 0.6).log_prob(x0).sum(1) \
        - torch.distributions.kl_divergence(enc, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(r - p, vae, rtol=1e-10, atol=1e-10)
    # and the single-sample reconstruction is unbiased for the analytic one (the ELBO of the T = 1 chain)
    # mu_theta(x_1) = (x_1 - sqrt(0.3) (0.4 x_1 - 0.1)) / sqrt(0.7) = a1 x_1 + c1
    a1, c1 = (1 - 0.4 * math.sqrt(0.3)) / math.sqrt(0.7), 0.1 * math.sqrt(0.3) / math.sqrt(0.7)
    exact = np.array([_elbo_terms_analytic(v, np.array([0.3]), [a1], [c1], [0.36]) for v in (-1.0, 1.5)])
    x0b = torch.tensor([[-1.0], [1.5]], dtype=torch.float64).repeat_interleave(20000, 0)
    rb, pb, _ = D.elbo_terms(eps, x0b, betas, sig, generator=generator(10))
    est = (rb - pb).reshape(2, -1)
    se = est.std(1) / math.sqrt(20000)
    assert ((est.mean(1) - torch.from_numpy(exact[:, 0] - exact[:, 1])).abs() < 6 * se).all()
    record_property("evidence", "T=1 diffusion ELBO == VAE ELBO (torch.distributions) to 1e-10 per sample")


# ----------------------------------------------------------------------------------------------
# Training loss
# ----------------------------------------------------------------------------------------------


@pytest.mark.claim("diffusion.training")
@given(seed=seeds())
def test_loss_is_the_notes_objective(seed):
    g = generator(seed)
    x0, e = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (6,), generator=g)
    model = lambda x, tt: torch.sin(x) * tt[:, None] / 1000  # noqa: E731
    ab = torch.from_numpy(_np_alpha_bars(LIN.numpy()))[t - 1][:, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * e
    ref = (e - model(xt, t)).pow(2).sum(1).mean()
    torch.testing.assert_close(D.ddpm_loss(model, x0, LIN, t=t, noise=e), ref)


@pytest.mark.claim("diffusion.training")
def test_loss_draws_t_uniformly_from_1_to_T(record_property):
    seen = []
    model = lambda x, t: (seen.append(t.clone()), torch.zeros_like(x))[1]  # noqa: E731
    betas = D.linear_beta_schedule(10)
    D.ddpm_loss(model, torch.zeros(20000, 1, dtype=torch.float64), betas, generator=generator(2))
    counts = torch.bincount(seen[0], minlength=12).numpy()
    assert counts[0] == 0 and counts[11] == 0
    p = scipy.stats.chisquare(counts[1:11]).pvalue
    assert p > 1e-6
    record_property("evidence", f"t counts over 1..10 {counts[1:11].tolist()}, chi-square p = {p:.3f}")


@pytest.mark.claim("diffusion.training")
def test_optimal_predictor_minimises_the_loss(record_property):
    """At fixed t, E||eps - f(x_t)||^2 is minimised by f = E[eps | x_t]; its minimum is tr Cov(eps | x_t)
    = D - (1 - ab) tr (ab Sigma + (1 - ab) I)^{-1} for Gaussian data N(m, Sigma)."""
    n, t = 40000, 300
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    x0 = mean + torch.randn(n, 2, generator=generator(4), dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    tt = torch.full((n,), t)
    e = torch.randn(n, 2, generator=generator(5), dtype=torch.float64)
    opt = lambda x, s: D.gaussian_optimal_eps(x, s, LIN, mean, cov)  # noqa: E731
    per = (e - opt(D.q_sample(x0, tt, LIN, e), tt)).pow(2).sum(1)
    ab = D.alpha_bars(LIN)[t - 1]
    minimum = 2 - (1 - ab) * torch.linalg.inv(ab * cov + (1 - ab) * torch.eye(2, dtype=torch.float64)).trace()
    se = per.std() / math.sqrt(n)
    assert abs(per.mean() - minimum) < 6 * se
    for shift in (0.05, -0.05):
        worse = D.ddpm_loss(lambda x, s: opt(x, s) + shift, x0, LIN, t=tt, noise=e)
        assert worse > D.ddpm_loss(opt, x0, LIN, t=tt, noise=e)
    record_property("evidence", f"loss of E[eps|x_t] {per.mean():.4f} vs analytic minimum {minimum:.4f} (SE {se:.1e})")


@pytest.mark.claim("diffusion.training")
def test_mixture_predictor_is_minus_scaled_score():
    """The closed-form mixture predictor equals -sqrt(1 - ab_t) grad log q_t(x), the score by autograd."""
    betas = LIN
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mu = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -3.0]], dtype=torch.float64)
    s = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
    x = (3 * torch.randn(50, 2, generator=generator(6), dtype=torch.float64)).requires_grad_(True)
    t = torch.randint(1, 1001, (50,), generator=generator(7))
    (grad,) = torch.autograd.grad(D.mixture_log_density(x, t, betas, w, mu, s).sum(), x)
    ab = D.alpha_bars(betas)[t - 1][:, None]
    torch.testing.assert_close(D.mixture_optimal_eps(x.detach(), t, betas, w, mu, s), -(1 - ab).sqrt() * grad)
    far = torch.full((2, 2), 1e4, dtype=torch.float64)
    assert torch.isfinite(D.mixture_optimal_eps(far, torch.tensor([1, 2]), betas, w, mu, s)).all()


# ----------------------------------------------------------------------------------------------
# Reverse step and sampling
# ----------------------------------------------------------------------------------------------


@pytest.mark.claim("diffusion.reverse-step")
def test_reverse_step_is_gaussian_around_mu_theta(record_property):
    n, t = 40000, 500
    model = lambda x, tt: torch.tanh(x)  # noqa: E731
    xt = torch.tensor([[0.5, -1.5]], dtype=torch.float64).expand(n, 2)
    sig = D.sampling_sigmas(LIN, "posterior")
    z = torch.randn(n, 2, generator=generator(8), dtype=torch.float64)
    out = D.reverse_step(model, xt, t, LIN, sig, z)
    mu = D.mu_from_eps(xt[:1], torch.tensor([t]), model(xt[:1], None), LIN)
    torch.testing.assert_close(out, mu + sig[t - 1] * z)
    v = sig[t - 1] ** 2
    m_err = ((out.mean(0) - mu[0]).abs() / (v / n).sqrt()).max()
    v_err = ((out.var(0) - v).abs() / (v * math.sqrt(2 / n))).max()
    assert m_err < 6 and v_err < 6
    record_property("evidence", f"mean {m_err:.2f} SE, variance {v_err:.2f} SE from N(mu_theta, sigma_t^2)")


def _notes_sampler(eps_model, shape, betas, sigmas, g):
    """The notes' sampling loop, transcribed with numpy-free literal steps."""
    T = betas.shape[0]
    alpha = 1 - betas
    abar = torch.cumprod(alpha, 0)
    x = torch.randn(shape, generator=g, dtype=betas.dtype)
    for t in range(T, 0, -1):
        z = torch.randn(shape, generator=g, dtype=betas.dtype) if t > 1 else torch.zeros(shape, dtype=betas.dtype)
        x = 1 / alpha[t - 1].sqrt() * (x - (1 - alpha[t - 1]) / (1 - abar[t - 1]).sqrt()
                                       * eps_model(x, torch.full((shape[0],), t))) + sigmas[t - 1] * z
    return x


@pytest.mark.claim("diffusion.sampling")
@pytest.mark.parametrize("sigma", ["beta", "posterior"])
def test_sampler_is_the_notes_loop(sigma):
    betas = D.linear_beta_schedule(30, 1e-3, 0.2)
    model = lambda x, t: 0.3 * x * t[:, None] / 30 + 0.1  # noqa: E731
    ours, traj = D.sample(model, (64, 2), betas, sigma=sigma, generator=generator(11), return_trajectory=True)
    ref = _notes_sampler(model, (64, 2), betas, D.sampling_sigmas(betas, sigma), generator(11))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert len(traj) == 31 and torch.equal(traj[-1], ours)


@pytest.mark.claim("diffusion.sampling")
def test_sampler_last_step_is_deterministic_and_takes_x_T_and_labels():
    """T = 1 from a given x_T: the loop's only step has z = 0, so x_0 = (x_T - beta_1 / sqrt(1 - alpha_1)
    eps(x_T, 1)) / sqrt(alpha_1) = (x_T - sqrt(beta_1) eps(x_T, 1)) / sqrt(1 - beta_1) exactly, with no randomness; a
    label y reaches the model at every step (the notes' loop with eps_theta(x_t, t, y))."""
    beta = 0.3
    betas = torch.tensor([beta], dtype=torch.float64)
    x_T = torch.randn(5, 2, generator=generator(80), dtype=torch.float64)
    model = lambda x, t: torch.sin(x) + 0.1  # noqa: E731
    out, traj = D.sample(model, (5, 2), betas, x_T=x_T, return_trajectory=True, generator=generator(81))
    assert torch.equal(traj[0], x_T)
    torch.testing.assert_close(out, (x_T - math.sqrt(beta) * model(x_T, None)) / math.sqrt(1 - beta), rtol=1e-14, atol=1e-14)
    betas = D.linear_beta_schedule(6, 0.05, 0.3)
    y = torch.tensor([0, 1, 2, 0, 1])
    cmodel = lambda x, t, y: 0.2 * x + y[:, None].to(x.dtype) * t[:, None] / 6  # noqa: E731
    ours = D.sample(cmodel, (5, 2), betas, y=y, generator=generator(82))
    ref = _notes_sampler(lambda x, t: cmodel(x, t, y), (5, 2), betas, D.sampling_sigmas(betas), generator(82))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def _gaussian_sampler_moments(betas, sig2, mean, cov):
    """Exact mean and covariance of the sampler's output with the Gaussian-optimal predictor: every step is
    affine, x_{t-1} = A_t x_t + b_t + sigma_t z, from x_T ~ N(0, I) (numpy)."""
    betas, sig2, mean, cov = (np.asarray(v, dtype=np.float64) for v in (betas, sig2, mean, cov))
    d = len(mean)
    ab = np.cumprod(1 - betas)
    m, V = np.zeros(d), np.eye(d)
    for t in range(len(betas), 0, -1):
        a, abt = 1 - betas[t - 1], ab[t - 1]
        K = np.sqrt(1 - abt) * np.linalg.inv(abt * cov + (1 - abt) * np.eye(d))
        c = (1 - a) / np.sqrt(1 - abt)
        A = (np.eye(d) - c * K) / np.sqrt(a)
        b = c * K @ (np.sqrt(abt) * mean) / np.sqrt(a)
        m, V = A @ m + b, A @ V @ A.T + (sig2[t - 1] if t > 1 else 0.0) * np.eye(d)
    return m, V


MEAN2 = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV2 = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)


@pytest.mark.claim("diffusion.sampling", "diffusion.sigma-choice")
@pytest.mark.parametrize("sigma", ["beta", "posterior"])
def test_sampler_with_optimal_predictor_has_the_exact_gaussian_moments(sigma, device, record_property):
    """Monte Carlo in float32 on the device: the sampler's output mean and covariance agree with the exact affine
    recursion (float64, numpy) within 6 SE (float32 rounding over 40 steps, ~1e-6, is far below the SE ~1e-2)."""
    betas = D.linear_beta_schedule(40, 1e-3, 0.25)
    sig2 = D.sampling_sigmas(betas, sigma) ** 2
    torch.testing.assert_close(sig2, betas if sigma == "beta" else D.posterior_variance(betas))
    m, V = _gaussian_sampler_moments(betas, sig2, MEAN2, COV2)
    n = 20000
    f = dict(device=device, dtype=torch.float32)
    b32, m32, c32 = betas.to(**f), MEAN2.to(**f), COV2.to(**f)
    x = D.sample(lambda x, t: D.gaussian_optimal_eps(x, t, b32, m32, c32), (n, 2), b32, sigma=sigma,
                 generator=generator(12, device))
    assert x.device.type == torch.device(device).type and x.dtype == torch.float32
    x = x.cpu().double().numpy()
    m_err = (np.abs(x.mean(0) - m) / np.sqrt(np.diag(V) / n)).max()
    C = np.cov(x.T)
    se = np.sqrt((V ** 2 + np.outer(np.diag(V), np.diag(V))) / n)      # SE of a Gaussian sample covariance
    c_err = (np.abs(C - V) / se).max()
    assert m_err < 6 and c_err < 6
    record_property("evidence", f"sigma={sigma}: mean {m_err:.2f} SE, covariance {c_err:.2f} SE from the exact recursion")


@pytest.mark.claim("diffusion.sampling", "diffusion.sigma-choice")
@pytest.mark.parametrize("sigma", ["beta", "posterior"])
def test_sampler_reproduces_gaussian_data_at_T_1000(sigma, record_property):
    """With the notes' schedule (T = 1000) and the optimal predictor, the output law (exact recursion) matches the
    data N(m, Sigma): the discretisation error is O(beta), stated here as |mean error| < 1e-3 and a relative
    covariance error (Frobenius) < 1% (sigma^2 = beta_t) / 3% (posterior variance)."""
    sig2 = D.sampling_sigmas(LIN, sigma) ** 2
    m, V = _gaussian_sampler_moments(LIN, sig2, MEAN2, COV2)
    m_err = np.abs(m - MEAN2.numpy()).max()
    c_err = np.linalg.norm(V - COV2.numpy()) / np.linalg.norm(COV2.numpy())
    assert m_err < 1e-3 and c_err < (0.01 if sigma == "beta" else 0.03)
    record_property("evidence", f"sigma={sigma}, T=1000: max |mean err| {m_err:.1e}, relative covariance error {c_err:.2%}")


@pytest.mark.claim("diffusion.sigma-choice")
def test_sigma_beta_is_exact_for_standard_normal_data(record_property):
    """For data N(0, I) the forward chain is stationary; with sigma_t^2 = beta_t every reverse step with the optimal
    predictor is the exact reverse kernel N(sqrt(alpha_t) x_t, beta_t), so each x_t (t >= 1) is N(0, I) exactly;
    the last step, z = 0, leaves variance 1 - beta_1. The posterior variance is smaller (beta~_t <= beta_t)."""
    T = 1000
    ab, betas = D.alpha_bars(LIN).tolist(), LIN.tolist()
    v = 1.0
    worst = 0.0
    for t in range(T, 1, -1):
        a = 1 - betas[t - 1]
        k = math.sqrt(1 - ab[t - 1])                       # E[eps | x_t] = sqrt(1 - ab) x_t for N(0, I) data
        A = (1 - (1 - a) / math.sqrt(1 - ab[t - 1]) * k) / math.sqrt(a)
        v = A * A * v + betas[t - 1]
        worst = max(worst, abs(v - 1))
    assert worst < 1e-12
    assert (D.posterior_variance(LIN) <= LIN).all()
    record_property("evidence", f"max |Var x_t - 1| over t >= 1: {worst:.1e}; posterior variance <= beta_t")


@pytest.mark.slow
@pytest.mark.claim("diffusion.sigma-choice")
def test_sigma_beta_sampler_keeps_standard_normal_data(record_property):
    """The same through impl's sampler in 1-D: output variance 1 - beta_1 (6 SE)."""
    x = D.sample(lambda x, t: D.gaussian_optimal_eps(x, t, LIN, torch.zeros(1, dtype=torch.float64),
                                                      torch.eye(1, dtype=torch.float64)), (4000, 1), LIN,
                 generator=generator(13))
    se = math.sqrt(2 / 4000) * (1 - LIN[0].item())
    assert abs(x.var().item() - (1 - LIN[0].item())) < 6 * se
    record_property("evidence", f"sampled variance {x.var().item():.4f}, expected {1 - LIN[0].item():.4f} (SE {se:.1e})")


def _energy_distance(a, b):
    d = lambda u, v: torch.cdist(u, v).mean()  # noqa: E731
    return (2 * d(a, b) - d(a, a) - d(b, b)).item()


MIX2 = dict(weights=torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64),
            means=torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=torch.float64),
            stds=torch.tensor([0.3, 0.5, 0.25], dtype=torch.float64))


def _mixture_data(n, g):
    k = torch.multinomial(MIX2["weights"], n, replacement=True, generator=g)
    return MIX2["means"][k] + MIX2["stds"][k, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)


@pytest.mark.slow
@pytest.mark.claim("diffusion.sampling", "diffusion.sigma-choice")
@pytest.mark.parametrize("sigma", ["beta", "posterior"])
def test_sampler_reproduces_mixture_data(sigma, record_property):
    """Gaussian-mixture data, T = 1000, optimal predictor: component weights within 6 binomial SE, and the energy
    distance to a data sample below 3x the largest of 10 data-vs-data energy distances of the same size."""
    n = 1500
    x = D.sample(lambda x, t: D.mixture_optimal_eps(x, t, LIN, **MIX2), (n, 2), LIN, sigma=sigma, generator=generator(14))
    k = torch.cdist(x, MIX2["means"]).argmin(1)
    frac = torch.bincount(k, minlength=3).double() / n
    w = MIX2["weights"]
    assert ((frac - w).abs() < 6 * (w * (1 - w) / n).sqrt()).all()
    g = generator(15)
    null = [_energy_distance(_mixture_data(n, g), _mixture_data(n, g)) for _ in range(10)]
    e = _energy_distance(x, _mixture_data(n, g))
    assert e < 3 * max(null)
    record_property("evidence", f"sigma={sigma}: weights {frac.numpy().round(3).tolist()}, energy distance {e:.2e} "
                    f"(data-vs-data max of 10: {max(null):.2e})")


# ----------------------------------------------------------------------------------------------
# Continuous time
# ----------------------------------------------------------------------------------------------


@pytest.mark.claim("diffusion.continuous-time")
def test_discrete_linear_schedule_converges_to_continuous(record_property):
    errs = []
    for T in (100, 1000, 10000):
        ab = D.alpha_bars(D.linear_beta_schedule(T, 0.1 / T, 20.0 / T))
        cont = D.alpha_bar_continuous(torch.arange(1, T + 1, dtype=torch.float64) / T)
        errs.append((ab - cont).abs().max().item())
    p = fit_exponent([100, 1000, 10000], errs)
    assert errs[1] < 1e-2 and -1.2 < p < -0.8
    # the notes' schedule is this discretisation with beta_min = 0.1, beta_max = 20
    torch.testing.assert_close(LIN, D.linear_beta_schedule(1000, 0.1 / 1000, 20.0 / 1000))
    record_property("evidence", f"max |ab_t - ab(t/T)|: {errs}; error ~ T^{p:.2f}")


@pytest.mark.claim("diffusion.continuous-time")
@given(seed=seeds(), kind=st.sampled_from(["linear", "cosine"]))
def test_continuous_transitions_compose(seed, kind):
    """For real 0 <= s < t <= 1, q(x_s | x_0) then q(x_t | x_s) = N(sqrt(ab(t)/ab(s)) x_s, (1 - ab(t)/ab(s)) I)
    is q(x_t | x_0): mean coefficient and variance agree."""
    g = generator(seed)
    s, t = torch.sort(torch.rand(2, generator=g, dtype=torch.float64) * 0.98).values
    ab_s, ab_t = D.alpha_bar_continuous(torch.stack([s, t]), kind)
    r = ab_t / ab_s
    assert 0 < r <= 1
    torch.testing.assert_close(r.sqrt() * ab_s.sqrt(), ab_t.sqrt())
    torch.testing.assert_close(r * (1 - ab_s) + (1 - r), 1 - ab_t)


@pytest.mark.claim("diffusion.continuous-time")
def test_continuous_cosine_alpha_bar_and_time_embedding():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    s = 0.008
    f = np.cos((u.numpy() + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(D.alpha_bar_continuous(u, "cosine").numpy(), f / f[0], rtol=1e-12, atol=1e-15)
    # the sinusoidal embedding of a real time t: [cos(t w_k), sin(t w_k)], w_k = 10000^(-k / half)
    t = torch.tensor([0.0, 0.5, 17.25, 999.0])
    w = 10000.0 ** (-np.arange(4) / 4)
    ref = np.concatenate([np.cos(t.numpy()[:, None] * w), np.sin(t.numpy()[:, None] * w)], axis=1)
    # float32 embedding: arguments up to 999 are rounded by ~6e-5, hence atol 1e-4
    np.testing.assert_allclose(D.timestep_embedding(t, 8).numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.claim("diffusion.continuous-time")
def test_networks_take_real_time():
    net = D.NoisePredictor(dim=2, hidden=16).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.5, 10.25, 333.3, 999.9], dtype=torch.float64)
    out, out2 = net(x, t), net(x, t + 1e-7)
    assert torch.isfinite(out).all() and (out - out2).abs().max() < 1e-4
    img = D.ImageNoisePredictor(channels=1, width=8, time_dim=16)
    assert img(torch.randn(2, 1, 8, 8), torch.tensor([0.25, 17.5])).shape == (2, 1, 8, 8)


# ----------------------------------------------------------------------------------------------
# Conditional generation
# ----------------------------------------------------------------------------------------------


@pytest.mark.claim("diffusion.conditional-input")
def test_networks_take_a_class_label():
    torch.manual_seed(0)
    net = D.NoisePredictor(dim=2, hidden=16, num_classes=3)
    x, t = torch.randn(5, 2), torch.randint(1, 1001, (5,))
    outs = [net(x, t, torch.full((5,), c)) for c in range(4)]
    assert all((outs[i] - outs[j]).abs().max() > 1e-6 for i in range(4) for j in range(i))
    torch.testing.assert_close(net(x, t), outs[3])      # no label: the null label (unconditional)
    img = D.ImageNoisePredictor(channels=1, width=8, time_dim=16, num_classes=2)
    xi, ti = torch.randn(2, 1, 8, 8), torch.tensor([3, 500])
    assert (img(xi, ti, torch.tensor([0, 0])) - img(xi, ti, torch.tensor([1, 1]))).abs().max() > 1e-6


@pytest.mark.claim("diffusion.conditional-input")
def test_label_dropout_uses_the_null_class():
    seen = []
    model = lambda x, t, y: (seen.append(y.clone()), torch.zeros_like(x))[1]  # noqa: E731
    y = torch.zeros(4000, dtype=torch.long)
    D.ddpm_loss(model, torch.zeros(4000, 2), D.linear_beta_schedule(10, dtype=torch.float32), y=y, p_uncond=0.25,
                null_class=3, generator=generator(16))
    frac = (seen[0] == 3).double().mean().item()
    assert set(seen[0].tolist()) == {0, 3} and abs(frac - 0.25) < 6 * math.sqrt(0.25 * 0.75 / 4000)


def _tiny_unet(seed=0):
    torch.manual_seed(seed)
    return D.ImageNoisePredictor(channels=1, width=8, time_dim=16)


@pytest.mark.claim("diffusion.controlnet")
def test_controlnet_zero_init_leaves_output_and_frozen_weights_unchanged(device):
    base = _tiny_unet().to(device)
    x, t = torch.randn(3, 1, 8, 8, device=device), torch.tensor([5, 300, 900], device=device)
    ref = base(x, t).detach()
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    cn = D.ControlNet(base).to(device)
    control = torch.randn(3, 1, 8, 8, device=device)
    assert torch.equal(cn(x, t, control), ref)
    opt = torch.optim.SGD([p for p in cn.parameters() if p.requires_grad], lr=0.1)
    loss = (cn(x, t, control) - torch.randn_like(ref)).pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in base.parameters())
    assert all(z.weight.grad.abs().sum() > 0 for z in cn.zero)     # the zero convs do learn
    opt.step()
    opt.zero_grad()
    loss = (cn(x, t, control) - torch.randn_like(ref)).pow(2).mean()
    loss.backward()
    opt.step()
    assert all(torch.equal(v, frozen[k]) for k, v in base.state_dict().items())
    assert not torch.allclose(cn(x, t, control), ref)        # the branch now adds something
    assert torch.equal(base(x, t), ref)


@pytest.mark.claim("diffusion.controlnet")
def test_controlnet_branch_starts_as_a_copy_fed_by_a_zero_conv():
    """At initialisation the trainable copy has the frozen encoder's weights and the control image enters through a
    zero convolution, so the copy's block outputs are the frozen encoder's own, whatever the control image; and each of
    the three residuals the branch adds reaches the output (a residual on one block alone changes it)."""
    torch.manual_seed(1)
    base = _tiny_unet(seed=2).double()
    cn = D.ControlNet(base).double()
    for name in ("inc", "enc1", "down", "enc2", "mid"):
        for (k, v), (k2, v2) in zip(getattr(cn, name).state_dict().items(), getattr(base, name).state_dict().items()):
            assert k == k2 and torch.equal(v, v2), f"{name}.{k}"
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([4, 700])
    control = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert torch.equal(cn.hint(control), torch.zeros(2, 8, 8, 8, dtype=torch.float64))
    e = base.embed(x, t, None)
    torch.testing.assert_close(cn.enc1(cn.inc(x) + cn.hint(control), e), base.enc1(base.inc(x), e), rtol=0, atol=0)
    ref = base(x, t)
    shapes = [(2, 8, 8, 8), (2, 16, 4, 4), (2, 16, 4, 4)]
    zeros = [torch.zeros(sh, dtype=torch.float64) for sh in shapes]
    assert torch.equal(base(x, t, residuals=zeros), ref)
    for i, sh in enumerate(shapes):
        res = list(zeros)
        res[i] = torch.randn(sh, generator=generator(70 + i), dtype=torch.float64)
        assert (base(x, t, residuals=res) - ref).abs().max() > 1e-6, f"residual {i} has no effect"


@pytest.mark.claim("diffusion.cfg-formula", role="refutes")
def test_cfg_as_written_is_not_an_identity(record_property):
    """Read as an equation, eta1 = (1 + rho) eta1 - rho eta2 fails as soon as rho != 0 and the models differ."""
    eta1 = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    eta2 = torch.tensor([[0.2, 0.3]], dtype=torch.float64)
    rho = 2.0
    rhs = D.classifier_free_guidance(eta1, eta2, rho)
    torch.testing.assert_close(rhs, 3 * eta1 - 2 * eta2)
    assert not torch.allclose(rhs, eta1)
    record_property("evidence", f"rho=2, eta1={eta1.tolist()}, eta2={eta2.tolist()}: RHS {rhs.tolist()} != LHS eta1")


@pytest.mark.claim("diffusion.cfg-formula", role="corrects")
def test_cfg_guided_prediction(record_property):
    """eta~ = (1 + rho) eta1 - rho eta2: rho = 0 is the conditional model, rho = -1 the unconditional one; for
    class-conditional mixture data with the optimal predictors, eta~ = -sqrt(1 - ab) (grad log q_t(x) +
    (1 + rho) grad log q_t(c | x)) (autograd)."""
    w, mu, s = MIX2["weights"], MIX2["means"], MIX2["stds"]
    cls = [0, 1]                                         # class 0: component 0; class 1: components 1 and 2
    x = (2 * torch.randn(40, 2, generator=generator(17), dtype=torch.float64)).requires_grad_(True)
    t = torch.randint(1, 1001, (40,), generator=generator(18))
    sel = torch.tensor([1, 2])
    e_u = D.mixture_optimal_eps(x.detach(), t, LIN, w, mu, s)
    e_c = D.mixture_optimal_eps(x.detach(), t, LIN, w[sel], mu[sel], s[sel])
    assert torch.equal(D.classifier_free_guidance(e_c, e_u, 0.0), e_c)
    torch.testing.assert_close(D.classifier_free_guidance(e_c, e_u, -1.0), e_u)
    rho = 1.5
    log_qx = D.mixture_log_density(x, t, LIN, w, mu, s)
    log_q_c = torch.log(w[sel].sum()) + D.mixture_log_density(x, t, LIN, w[sel], mu[sel], s[sel]) - log_qx   # log q_t(c|x)
    (g_x,) = torch.autograd.grad(log_qx.sum(), x, retain_graph=True)
    (g_c,) = torch.autograd.grad(log_q_c.sum(), x)
    ab = D.alpha_bars(LIN)[t - 1][:, None]
    torch.testing.assert_close(D.classifier_free_guidance(e_c, e_u, rho), -(1 - ab).sqrt() * (g_x + (1 + rho) * g_c))
    # the shared-network closure mixes model(x, t, y) and model(x, t, null)
    net = D.NoisePredictor(dim=2, hidden=16, num_classes=2).double()
    y = torch.ones(40, dtype=torch.long)
    torch.testing.assert_close(D.guided_eps_model(net, rho, 2)(x.detach(), t, y),
                               (1 + rho) * net(x.detach(), t, y) - rho * net(x.detach(), t, torch.full_like(y, 2)))
    record_property("evidence", f"guided eps == -sqrt(1-ab)(score + (1+rho) class score), rho={rho}, {cls}")


@functools.lru_cache(maxsize=None)
def _guided_within_class_std(rho, n=1000, seed=19, wide=False):
    """1-D, class c = 1 has components at 0 and 2 (class 0 at -2); sample class 1 with guidance rho.
    wide=True: class 1 is N(0, 1.5^2) and class 0 N(0, 0.2^2) (weights 1/2), a class wider than the marginal."""
    if wide:
        w = torch.tensor([0.5, 0.5], dtype=torch.float64)
        mu = torch.tensor([[0.0], [0.0]], dtype=torch.float64)
        s = torch.tensor([0.2, 1.5], dtype=torch.float64)
        sel = torch.tensor([1])
    else:
        w = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
        mu = torch.tensor([[-2.0], [0.0], [2.0]], dtype=torch.float64)
        s = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
        sel = torch.tensor([1, 2])
    betas = D.linear_beta_schedule(100, 1e-3, 0.1)
    eps = lambda x, t: D.classifier_free_guidance(  # noqa: E731
        D.mixture_optimal_eps(x, t, betas, w[sel], mu[sel], s[sel]), D.mixture_optimal_eps(x, t, betas, w, mu, s), rho)
    x = D.sample(eps, (n, 1), betas, generator=generator(seed)).squeeze(1)
    # SE of the sample std from the fourth central moment (the samples are bimodal, not Gaussian)
    c = x - x.mean()
    var, m4 = c.pow(2).mean().item(), c.pow(4).mean().item()
    return math.sqrt(var), math.sqrt((m4 - var ** 2) / n) / (2 * math.sqrt(var))


@pytest.mark.claim("diffusion.cfg-diversity", role="refutes")
def test_guidance_with_positive_rho_reduces_diversity(record_property):
    sd0, se0 = _guided_within_class_std(0.0)
    sd2, se2 = _guided_within_class_std(2.0)
    assert sd0 - sd2 > 6 * math.hypot(se0, se2)
    record_property("evidence", f"std of class-1 samples: conditional (rho=0) {sd0:.3f}, guided rho=2 {sd2:.3f}")


@pytest.mark.claim("diffusion.cfg-diversity", role="corrects")
def test_interpolating_towards_unconditional_adds_diversity(record_property):
    """For a class narrower than the marginal (the notes' premise), rho = -0.5 (halfway) and rho = -1 (the
    unconditional model itself) both spread the samples more than rho = 0."""
    sd0, se0 = _guided_within_class_std(0.0)
    sdm, sem = _guided_within_class_std(-0.5)
    sdu, seu = _guided_within_class_std(-1.0)
    assert sdm - sd0 > 6 * math.hypot(se0, sem)
    assert sdu - sdm > 6 * math.hypot(sem, seu)
    # The condition matters: for a class wider than the marginal (the correction's exception) both directions
    # reverse, rho = -1 narrows the samples and rho = 2 spreads them.
    wd0, we0 = _guided_within_class_std(0.0, wide=True)
    wdu, weu = _guided_within_class_std(-1.0, wide=True)
    wd2, we2 = _guided_within_class_std(2.0, wide=True)
    assert wd0 - wdu > 6 * math.hypot(we0, weu) and wd2 - wd0 > 6 * math.hypot(we0, we2)
    record_property("evidence", f"std of class-1 samples: rho=0 {sd0:.3f}, rho=-0.5 {sdm:.3f}, rho=-1 {sdu:.3f}; "
                    f"class wider than the marginal: rho=-1 {wdu:.3f}, rho=0 {wd0:.3f}, rho=2 {wd2:.3f}")


# ----------------------------------------------------------------------------------------------
# Latent diffusion
# ----------------------------------------------------------------------------------------------


@pytest.mark.claim("diffusion.latent-cost")
def test_denoiser_cost_grows_linearly_with_pixels(record_property):
    net = D.ImageNoisePredictor(channels=3, width=8, time_dim=16)
    sizes, flops = [8, 16, 32, 64], []
    for h in sizes:
        flops.append(count_flops(net, torch.randn(1, 3, h, h), torch.tensor([10])))
    p = fit_exponent([h * h for h in sizes], flops)
    assert 0.97 < p < 1.03
    calls = []
    D.sample(lambda x, t: (calls.append(1), torch.zeros_like(x))[1], (1, 2), D.linear_beta_schedule(37))
    assert len(calls) == 37                                    # T network evaluations per sample
    record_property("evidence", f"FLOPs per step ~ pixels^{p:.3f} ({flops}); one network call per step")


@pytest.mark.claim("diffusion.latent-diffusion")
def test_latent_denoiser_is_f_squared_cheaper(record_property):
    f = 4
    pix = D.ImageNoisePredictor(channels=3, width=16, time_dim=16)
    lat = D.ImageNoisePredictor(channels=4, width=16, time_dim=16)
    fp = count_flops(pix, torch.randn(1, 3, 64, 64), torch.tensor([1]))
    fl = count_flops(lat, torch.randn(1, 4, 16, 16), torch.tensor([1]))
    # only the first and last convolutions see the channel count (3 vs 4); the rest scales with pixels
    assert 0.8 * f * f < fp / fl < 1.05 * f * f
    record_property("evidence", f"denoiser FLOPs 64x64x3 / 16x16x4 latent = {fp / fl:.2f} (f^2 = {f * f})")


@pytest.mark.claim("diffusion.latent-diffusion")
def test_latent_diffusion_through_a_linear_autoencoder(record_property):
    """Images x = U z (U orthonormal columns, 4x4 images, 2-D latent z ~ N(0, I)): encoder U^T, decoder U.
    Sampling in latent space with the optimal latent predictor (sigma^2 = beta_t, exact for N(0, I)) and decoding
    gives images with mean 0 and covariance (1 - beta_1) U U^T (6 SE)."""
    U = torch.linalg.qr(torch.randn(16, 2, generator=generator(20), dtype=torch.float64))[0]
    encode = lambda x: x.reshape(x.shape[0], 16) @ U  # noqa: E731
    decode = lambda z: (z @ U.T).reshape(-1, 1, 4, 4)  # noqa: E731
    betas = D.linear_beta_schedule(100, 1e-3, 0.1)
    zero, eye = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    eps = lambda z, t: D.gaussian_optimal_eps(z, t, betas, zero, eye)  # noqa: E731
    n = 8000
    x = D.latent_sample(eps, decode, (n, 2), betas, generator=generator(21)).reshape(n, 16)
    V = (1 - betas[0].item()) * (U @ U.T).numpy()
    C = np.cov(x.numpy().T)
    se = np.sqrt((V ** 2 + np.outer(np.diag(V), np.diag(V))) / n) + 1e-300
    mask = np.outer(np.diag(V), np.diag(V)) > 1e-6
    c_err = (np.abs(C - V) / se)[mask].max()
    m_err = (x.mean(0).abs() / (torch.from_numpy(np.diag(V).copy()).sqrt() / math.sqrt(n) + 1e-300)).max().item()
    assert c_err < 6 and m_err < 6
    # latent training loss is the DDPM loss on the encoded images, and the encoder gets no gradient
    imgs = decode(torch.randn(8, 2, dtype=torch.float64))
    tt, e = torch.randint(1, 101, (8,)), torch.randn(8, 2, dtype=torch.float64)
    torch.testing.assert_close(D.latent_ddpm_loss(eps, encode, imgs, betas, t=tt, noise=e),
                               D.ddpm_loss(eps, encode(imgs), betas, t=tt, noise=e))
    record_property("evidence", f"decoded latent samples: covariance within {c_err:.2f} SE, mean {m_err:.2f} SE")


@pytest.mark.claim("diffusion.latent-diffusion")
def test_autoencoder_shapes_and_encoder_frozen_in_latent_loss():
    torch.manual_seed(0)
    ae = D.Autoencoder(channels=1, latent_channels=4, width=8, levels=2)
    x = torch.randn(2, 1, 16, 16)
    z = ae.encode(x)
    assert z.shape == (2, 4, 4, 4) and ae.decode(z).shape == x.shape
    net = D.ImageNoisePredictor(channels=4, width=8, time_dim=16)
    loss = D.latent_ddpm_loss(net, ae.encode, x, D.linear_beta_schedule(50, dtype=torch.float32))
    loss.backward()
    assert all(p.grad is None for p in ae.parameters())
    assert any(p.grad is not None for p in net.parameters())
    out = D.latent_sample(net, ae.decode, (2, 4, 4, 4), D.linear_beta_schedule(5, dtype=torch.float32))
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# Defaults that work together, the trainer, saving and loading, no host sync per step
# ----------------------------------------------------------------------------------------------


def test_default_schedule_works_with_a_float32_model():
    """The first call a user makes: the float64 default schedule with the float32 network."""
    torch.manual_seed(0)
    net = D.NoisePredictor()
    x0 = torch.randn(8, 2)
    g = generator(1)
    loss = D.ddpm_loss(net, x0, D.linear_beta_schedule(), generator=g)
    assert loss.dtype == torch.float32 and loss.shape == () and torch.isfinite(loss)
    # the same number as with the schedule cast by hand (the products formed in float64 first, so
    # the two differ by float32 rounding of the coefficients: a few ulps of a loss of order D = 2)
    ref = D.ddpm_loss(net, x0, D.linear_beta_schedule(dtype=torch.float32), generator=generator(1))
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    out = D.sample(net, (4, 2), D.linear_beta_schedule(20), generator=generator(2))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    for f in (lambda b: D.q_sample(x0, torch.ones(8, dtype=torch.long), b),
              lambda b: D.forward_step(x0, torch.ones(8, dtype=torch.long), b),
              lambda b: D.mu_from_eps(x0, torch.ones(8, dtype=torch.long), x0, b)):
        assert f(D.linear_beta_schedule()).dtype == torch.float32


def test_functions_follow_the_data_device(device):
    """Schedule on the CPU in float64, data on the device in float32: the results live with the data.
    Tolerance: the coefficients are rounded once to float32 (rel 6e-8) and the products of x with them
    add a few ulps; 1e-5 relative covers that with margin and is far below any formula error."""
    x0 = torch.randn(6, 2, generator=generator(3)).to(device)
    t = torch.tensor([1, 10, 100, 500, 900, 1000], device=device)
    eps = torch.randn(6, 2, generator=generator(4)).to(device)
    out = D.q_sample(x0, t, LIN, eps)
    assert out.device == x0.device and out.dtype == torch.float32
    ref = D.q_sample(x0.double().cpu(), t.cpu(), LIN, eps.double().cpu())
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-6)


def _gaussian_data(n, g, dtype=torch.float64):
    return torch.randn(n, 2, generator=g, dtype=dtype) * torch.tensor([0.5, 2.0], dtype=dtype) + 1.0


@pytest.mark.claim("diffusion.training")
def test_train_ddpm_is_the_notes_training_loop(record_property):
    """train_ddpm equals a hand-written loop of the notes' steps (minibatch, t ~ Unif{1..T},
    eps ~ N(0, I), a gradient step on ||eps - eps_theta(...)||^2) with torch.optim.Adam and the same
    random stream, step by step (that training lowers the loss is the slow tests' subject)."""
    betas = D.linear_beta_schedule(50)
    data = _gaussian_data(64, generator(5))
    torch.manual_seed(6)
    net = D.NoisePredictor(hidden=16, depth=2).double()
    ref = D.NoisePredictor(hidden=16, depth=2).double()
    ref.load_state_dict(net.state_dict())
    seen = []
    res = D.train_ddpm(net, data, betas, steps=12, batch=16, lr=1e-2, generator=generator(7),
                       callback=lambda k, loss: seen.append((k, loss)), every=4)
    assert isinstance(res, D.TrainResult) and res.model is net and res.losses.shape == (12,)
    g, opt, losses = generator(7), torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True), []
    ab = torch.cumprod(1 - betas, 0)
    for _ in range(12):
        x0 = data[torch.randint(0, 64, (16,), generator=g)]
        t = torch.randint(1, 51, (16,), generator=g)
        e = torch.randn(16, 2, generator=g, dtype=torch.float64)
        a = ab[t - 1][:, None]
        loss = (e - ref(a.sqrt() * x0 + (1 - a).sqrt() * e, t)).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    torch.testing.assert_close(res.losses, torch.stack(losses), rtol=1e-12, atol=1e-12)
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert [k for k, _ in seen] == [4, 8, 12]
    assert all(isinstance(v, torch.Tensor) and v.shape == () for _, v in seen)
    torch.testing.assert_close(torch.stack([v for _, v in seen]), res.losses[[3, 7, 11]], rtol=0, atol=0)
    record_property("evidence", "train_ddpm = the hand-written loop to 1e-12 over 12 Adam steps (losses and weights)")


def test_train_ddpm_with_labels_and_default_schedule():
    """With labels, each minibatch carries its own samples' labels (the hand loop again, float32
    with the default float64 schedule cast once: both sides do the same float32 arithmetic)."""
    torch.manual_seed(9)
    net = D.NoisePredictor(hidden=16, depth=1, num_classes=2)
    ref = D.NoisePredictor(hidden=16, depth=1, num_classes=2)
    ref.load_state_dict(net.state_dict())
    data = torch.randn(32, 2, generator=generator(10))
    y = torch.arange(32) % 2
    res = D.train_ddpm(net, data, steps=3, batch=8, y=y, generator=generator(11))
    assert res.losses.dtype == torch.float32 and torch.isfinite(res.losses).all()
    g, opt, losses = generator(11), torch.optim.Adam(ref.parameters(), lr=1e-3, fused=True), []
    ab = torch.cumprod(1 - D.linear_beta_schedule(), 0)
    for _ in range(3):
        idx = torch.randint(0, 32, (8,), generator=g)
        t = torch.randint(1, 1001, (8,), generator=g)
        e = torch.randn(8, 2, generator=g)
        a = ab[t - 1][:, None]
        xt = a.sqrt().float() * data[idx] + (1 - a).sqrt().float() * e
        loss = (e - ref(xt, t, y[idx])).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    torch.testing.assert_close(res.losses, torch.stack(losses), rtol=1e-6, atol=1e-6)  # float32 rounding
    res = D.train_ddpm(net, data, steps=2, batch=8, y=y, p_uncond=0.5, null_class=2, generator=generator(12))
    assert torch.isfinite(res.losses).all()


def _syncs(fn):
    from spec.testing import count_host_syncs

    with count_host_syncs() as c:
        fn()
    return c


def test_no_host_sync_per_step_in_sampling_training_and_the_elbo():
    torch.manual_seed(12)
    net = D.NoisePredictor(hidden=8, depth=1)
    short, long = D.linear_beta_schedule(3), D.linear_beta_schedule(12)
    a = _syncs(lambda: D.sample(net, (4, 2), short, generator=generator(0)))
    b = _syncs(lambda: D.sample(net, (4, 2), long, generator=generator(0)))
    assert a.count == b.count <= 2, (a, b)      # the schedule's range check, once
    data = torch.randn(16, 2, generator=generator(13))
    a = _syncs(lambda: D.train_ddpm(net, data, short, steps=2, batch=4, generator=generator(1)))
    b = _syncs(lambda: D.train_ddpm(net, data, short, steps=8, batch=4, generator=generator(1)))
    assert a.count == b.count <= 2, (a, b)  # validation once; fused Adam keeps its step on the device
    x0 = data[:4].double()
    netd = D.NoisePredictor(hidden=8, depth=1).double()
    a = _syncs(lambda: D.elbo_terms(netd, x0, short.double(), D.sampling_sigmas(short)))
    b = _syncs(lambda: D.elbo_terms(netd, x0, long.double(), D.sampling_sigmas(long)))
    assert a.count == b.count, (a, b)


def test_models_round_trip_their_state_dict():
    torch.manual_seed(14)
    x2, t = torch.randn(3, 2), torch.tensor([1, 5, 9])
    img = torch.randn(2, 1, 8, 8)
    cases = [(lambda: D.NoisePredictor(hidden=8, num_classes=2), lambda m: m(x2, t, torch.tensor([0, 1, 2]))),
             (lambda: D.ImageNoisePredictor(width=8, time_dim=16), lambda m: m(img, t[:2])),
             (lambda: D.ControlNet(D.ImageNoisePredictor(width=8, time_dim=16)), lambda m: m(img, t[:2], img)),
             (lambda: D.Autoencoder(width=8, levels=1), lambda m: m(img))]
    for make, run in cases:
        a, b = make(), make()
        with torch.no_grad():  # make the copies differ before loading (ControlNet's zero convs too)
            for p in b.parameters():
                p.add_(1.0)
        b.load_state_dict(a.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(run(b), run(a), rtol=0, atol=0)


@pytest.mark.claim("diffusion.sampling")
@pytest.mark.parametrize("sigma, variance_type", [("beta", "fixed_large"), ("posterior", "fixed_small")])
def test_sampler_matches_diffusers_ddpm_scheduler(sigma, variance_type, record_property):
    """The same betas, network and noise through diffusers' DDPMScheduler (an independent
    implementation that works through alpha_bar ratios and the predicted x_0): the whole trajectory
    agrees to rounding. diffusers stores its schedule in float32; its alphas_cumprod is replaced
    by the float64 products so that both run in float64 (the arithmetic is still diffusers')."""
    diffusers = pytest.importorskip("diffusers")
    T = 200
    betas = D.linear_beta_schedule(T, 1e-4, 0.05)
    torch.manual_seed(15)
    net = D.NoisePredictor(hidden=16, depth=2).double()
    shape = (32, 2)
    ours, traj = D.sample(net, shape, betas, sigma=sigma, generator=generator(16), return_trajectory=True)
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, trained_betas=betas.numpy(), variance_type=variance_type,
                                    clip_sample=False)
    sched.alphas_cumprod = torch.cumprod(1 - betas, 0)
    sched.set_timesteps(T)
    g = generator(16)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    worst = 0.0
    with torch.no_grad():
        for k, t in enumerate(sched.timesteps):  # diffusers' t = ours - 1
            eps = net(x, torch.full((shape[0],), int(t) + 1, dtype=torch.long))
            x = sched.step(eps, t, x, generator=g).prev_sample
            worst = max(worst, float((x - traj[k + 1]).abs().max()))
            torch.testing.assert_close(x, traj[k + 1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x, ours, rtol=1e-10, atol=1e-10)
    record_property("evidence", f"{T} steps, {variance_type}: max |ours - diffusers| over the trajectory {worst:.1e}")


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_input_is_rejected():
    x = torch.zeros(2, 3, dtype=torch.float64)
    t = torch.tensor([1, 2])
    with pytest.raises(TypeError, match="^T:"):
        D.linear_beta_schedule(10.0)
    with pytest.raises(ValueError, match="^beta_end:"):
        D.linear_beta_schedule(10, 0.1, 0.01)
    with pytest.raises(ValueError, match="^max_beta:"):
        D.cosine_beta_schedule(10, max_beta=1.0)
    with pytest.raises(ValueError, match="^betas:"):
        D.alpha_bars(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="^betas:"):
        D.posterior_variance(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="^t:"):
        D.q_sample(x, torch.tensor([0, 1]), LIN)
    with pytest.raises(ValueError, match="^t:"):
        D.q_sample(x, torch.tensor([1, 1001]), LIN)
    with pytest.raises(TypeError, match="^t:"):
        D.forward_step(x, torch.tensor([1.0, 2.0]), LIN)
    with pytest.raises(ValueError, match="^t:"):
        D.q_sample(x, torch.tensor([1]), LIN)
    with pytest.raises(TypeError, match="^x0:"):
        D.q_sample(x.numpy(), t, LIN)
    with pytest.raises(ValueError, match="^noise:"):
        D.q_sample(x, t, LIN, torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="^xt:"):
        D.q_posterior(x, torch.zeros(2, 2, dtype=torch.float64), t, LIN)
    with pytest.raises(ValueError, match="^eps:"):
        D.mu_from_eps(x, t, torch.zeros(3, 3, dtype=torch.float64), LIN)
    with pytest.raises(ValueError, match="^var1:"):
        D.gaussian_kl(x, torch.zeros(2, 1, dtype=torch.float64), x, torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="^var2:"):
        D.gaussian_kl(x, torch.ones(2, 1, dtype=torch.float64), x, -torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="^means:"):
        D.mixture_log_density(x, t, LIN, MIX2["weights"], [[0.0, 0.0, 0.0]], MIX2["stds"])
    with pytest.raises(ValueError, match="^sigma:"):
        D.sampling_sigmas(LIN, "learned")
    with pytest.raises(ValueError, match="^shape:"):
        D.sample(lambda x, t: x, (0, 2), LIN)
    with pytest.raises(ValueError, match="^x_T:"):
        D.sample(lambda x, t: x, (2, 2), LIN, x_T=torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="^y:"):
        D.sample(lambda x, t, y: x, (2, 2), LIN, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="^t:"):
        D.reverse_step(lambda x, t: x, x, 1001, LIN, LIN.sqrt())
    with pytest.raises(ValueError, match="^sigmas:"):
        D.reverse_step(lambda x, t: x, x, 3, LIN, LIN[:10].sqrt())
    with pytest.raises(ValueError, match="^null_class:"):
        D.ddpm_loss(lambda x, t, y: x, x, LIN, y=torch.zeros(2, dtype=torch.long), p_uncond=0.5)
    with pytest.raises(ValueError, match="^p_uncond:"):
        D.ddpm_loss(lambda x, t, y: x, x, LIN, y=torch.zeros(2, dtype=torch.long), p_uncond=1.5, null_class=1)
    with pytest.raises(ValueError, match="^kind:"):
        D.alpha_bar_continuous(torch.tensor([0.5]), "quadratic")
    with pytest.raises(ValueError, match="^t:"):
        D.alpha_bar_continuous(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="^cov:"):
        D.gaussian_optimal_eps(x, t, LIN, torch.zeros(3, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="^stds:"):
        D.mixture_optimal_eps(x[:, :2], t, LIN, MIX2["weights"], MIX2["means"], MIX2["stds"][:2])
    with pytest.raises(ValueError, match="^weights:"):
        D.mixture_optimal_eps(x[:, :2], t, LIN, -MIX2["weights"], MIX2["means"], MIX2["stds"])
    with pytest.raises(ValueError, match="^weights:"):
        D.mixture_log_density(x[:, :2], t, LIN, 0 * MIX2["weights"], MIX2["means"], MIX2["stds"])
    with pytest.raises(ValueError, match="^stds"):
        D.mixture_log_density(x[:, :2], t, LIN, MIX2["weights"], MIX2["means"], -MIX2["stds"])
    with pytest.raises(ValueError, match="^eps_uncond:"):
        D.classifier_free_guidance(x, torch.zeros(2, 2, dtype=torch.float64), 1.0)
    with pytest.raises(TypeError, match="^rho:"):
        D.classifier_free_guidance(x, x, "1")
    with pytest.raises(ValueError, match="^sigmas:"):
        D.elbo_terms(lambda x, t: x, x, LIN, torch.zeros_like(LIN))
    with pytest.raises(ValueError, match="^x:"):
        D.NoisePredictor(dim=2)(torch.zeros(2, 3), t)
    with pytest.raises(ValueError, match="^x:"):
        D.ImageNoisePredictor(channels=1, width=8, time_dim=16)(torch.zeros(1, 1, 7, 8), torch.tensor([1]))
    with pytest.raises(TypeError, match="^base:"):
        D.ControlNet(D.NoisePredictor())
    with pytest.raises(ValueError, match="^control:"):
        D.ControlNet(_tiny_unet())(torch.zeros(1, 1, 8, 8), torch.tensor([1]), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="^x:"):
        D.Autoencoder(levels=2).encode(torch.zeros(1, 1, 6, 8))
    with pytest.raises(ValueError, match="^residuals:"):
        _tiny_unet()(torch.zeros(1, 1, 8, 8), torch.tensor([1]), residuals=[0])


# ----------------------------------------------------------------------------------------------
# Training (slow) and figures
# ----------------------------------------------------------------------------------------------

CLASS_OF_COMPONENT = torch.tensor([0, 1, 1])           # MIX2: class 0 is component 0, class 1 components 1 and 2


def _mixture_data_with_labels(n, g, dtype=torch.float32):
    k = torch.multinomial(MIX2["weights"], n, replacement=True, generator=g)
    x = MIX2["means"][k] + MIX2["stds"][k, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x.to(dtype), CLASS_OF_COMPONENT[k]


@pytest.mark.slow
@pytest.mark.claim("diffusion.training", "diffusion.conditional-input")
def test_training_on_a_2d_mixture_with_guidance(record_property, save_figure):
    """Train eps_theta(x, t, y) on the 3-component 2-D mixture with the notes' loss (labels dropped 20% of the
    time for guidance); then (a) the loss has fallen well below its value at initialisation, (b) unconditional
    samples put the stated component weights within 0.08 and lie within 4 std of some component (>= 90%),
    (c) class-conditional samples land on their class's components (>= 90%), more so with guidance rho = 2."""
    torch.manual_seed(0)
    betas = D.linear_beta_schedule(dtype=torch.float32)
    net = D.NoisePredictor(dim=2, hidden=128, num_classes=2)
    steps = 2000
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = generator(30)
    losses = []
    for step in range(steps):
        x0, y = _mixture_data_with_labels(256, g)
        loss = D.ddpm_loss(net, x0, betas, y=y, p_uncond=0.2, null_class=2, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:50]), np.mean(losses[-200:])
    assert last < 0.6 * first
    n = 1000

    def on_components(x, comps):
        d = torch.cdist(x.double(), MIX2["means"]) / MIX2["stds"][None]
        k = d.argmin(1)
        ok = d.min(1).values < 4
        return k, ok & torch.isin(k, torch.tensor(comps))

    with torch.no_grad():
        xu = D.sample(net, (n, 2), betas, generator=generator(31))
        k, ok = on_components(xu, [0, 1, 2])
        frac = torch.bincount(k, minlength=3).double() / n
        assert ok.double().mean() >= 0.9 and (frac - MIX2["weights"]).abs().max() < 0.08
        hits = {}
        y = torch.arange(n) % 2                          # both classes in one batch
        for rho in (0.0, 2.0):
            eps = net if rho == 0 else D.guided_eps_model(net, rho, null_class=2)
            xc = D.sample(eps, (n, 2), betas, y=y, generator=generator(32))
            for c, comps in ((0, [0]), (1, [1, 2])):
                hits[rho, c] = on_components(xc[y == c], comps)[1].double().mean().item()
    assert min(hits[0.0, 0], hits[0.0, 1]) >= 0.9
    assert hits[2.0, 0] >= hits[0.0, 0] - 0.01 and hits[2.0, 1] >= hits[0.0, 1] - 0.01
    data = _mixture_data(n, generator(33))
    fig, ax = _plt().subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    ax[0].scatter(*data.T, s=2, alpha=0.5)
    ax[0].set_title("data (3-component mixture)")
    ax[1].scatter(*xu.T, s=2, alpha=0.5, color="C1")
    ax[1].set_title("DDPM samples, trained MLP, T = 1000")
    save_figure(fig, "diffusion-samples-vs-data.png",
                caption='Left: the 2-D three-component Gaussian mixture the DDPM is trained on; right: samples of the trained noise-prediction MLP after all $T = 1000$ reverse steps.')
    record_property("evidence", f"loss {first:.3f} -> {last:.3f}; weights {frac.numpy().round(3).tolist()}; "
                    f"class hits rho=0 {hits[0.0, 0]:.3f}/{hits[0.0, 1]:.3f}, rho=2 {hits[2.0, 0]:.3f}/{hits[2.0, 1]:.3f}")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(n, g, size=8):
    """Images (n, 1, size, size) in {-1, 1} with one bright row (class 0) or column (class 1); labels (n,)."""
    y = torch.randint(0, 2, (n,), generator=g)
    pos = torch.randint(0, size, (n,), generator=g)
    img = -torch.ones(n, 1, size, size)
    rows = torch.arange(size)[None, :, None] == pos[:, None, None]
    cols = torch.arange(size)[None, None, :] == pos[:, None, None]
    img[:, 0][torch.where(y[:, None, None] == 0, rows.expand(n, size, size), cols.expand(n, size, size))] = 1.0
    return img, y


@pytest.mark.slow
@pytest.mark.claim("diffusion.latent-diffusion")
def test_latent_diffusion_with_a_trained_autoencoder(record_property):
    """End to end on 16x16 bar images: train the conv autoencoder (f = 4, 4 x 4 x 4 latents), then the U-Net denoiser on
    its latents with the DDPM loss; the reconstruction error falls below 20% of the data variance, the latent
    denoiser's loss below half that of predicting zero (latent size 64), and decoded samples are finite images."""
    torch.manual_seed(0)
    g = generator(60)
    ae = D.Autoencoder(channels=1, latent_channels=4, width=16, levels=2)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    for _ in range(250):
        x, _ = _bars(32, g, size=16)
        loss = (ae(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, _ = _bars(256, g, size=16)
    with torch.no_grad():
        rec = (ae(x) - x).pow(2).mean().item() / x.var().item()
        scale = ae.encode(x).std().item()        # latents rescaled to unit variance, as latent diffusion does
    assert rec < 0.2
    betas = D.linear_beta_schedule(dtype=torch.float32)
    net = D.ImageNoisePredictor(channels=4, width=16, time_dim=32)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    encode = lambda v: ae.encode(v) / scale  # noqa: E731
    losses = []
    for _ in range(150):
        x, _ = _bars(64, g, size=16)
        loss = D.latent_ddpm_loss(net, encode, x, betas, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    last = np.mean(losses[-30:])
    assert last < 32
    out = D.latent_sample(net, lambda z: ae.decode(z * scale), (2, 4, 4, 4), betas, generator=generator(61))
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()
    record_property("evidence", f"autoencoder relative reconstruction error {rec:.3f}; latent denoiser loss "
                    f"{np.mean(losses[:10]):.1f} -> {last:.1f} (zero predictor: 64)")


@pytest.mark.slow
@pytest.mark.claim("diffusion.training", "diffusion.predict-noise")
def test_training_the_image_network(record_property):
    """The small U-Net learns to predict the added noise on 8x8 images (bars, 2 classes): after 200 steps its loss is
    below half the loss of predicting zero (E||eps||^2 = 64)."""
    torch.manual_seed(0)
    betas = D.linear_beta_schedule(dtype=torch.float32)
    net = D.ImageNoisePredictor(channels=1, width=16, time_dim=32, num_classes=2)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = generator(40)

    losses = []
    for _ in range(200):
        x0, y = _bars(64, g)
        loss = D.ddpm_loss(net, x0, betas, y=y, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    last = np.mean(losses[-30:])
    assert last < 32
    record_property("evidence", f"image U-Net loss {np.mean(losses[:10]):.2f} -> {last:.2f} (zero predictor: 64)")


@pytest.mark.slow
def test_figure_forward_process_on_a_mixture(save_figure):
    """The forward process on the 2-D mixture at several t (closed form), with the marginal's variance going to 1."""
    x0 = _mixture_data(2000, generator(50))
    steps = [0, 50, 150, 300, 600, 1000]
    plt = _plt()
    fig, axes = plt.subplots(1, len(steps), figsize=(3 * len(steps), 3), sharex=True, sharey=True)
    for ax, t in zip(axes, steps):
        x = x0 if t == 0 else D.q_sample(x0, torch.full((2000,), t), LIN, generator=generator(t))
        ax.scatter(*x.T, s=1, alpha=0.5)
        ax.set_title(f"t = {t}" + ("" if t == 0 else f", ab = {D.alpha_bars(LIN)[t - 1]:.3f}"))
    save_figure(fig, "diffusion-forward-process.png",
                caption='The forward process $q(x_t \\mid x_0)$ applied to a 2-D mixture with the linear schedule: the data dissolve into $\\mathcal{N}(0, I)$ as $\\bar\\alpha_t$ falls to 0.', claims=('diffusion.closed-form', 'diffusion.forward-step'))
    xT = D.q_sample(x0, torch.full((2000,), 1000), LIN, generator=generator(51))
    assert (xT.var(0) - 1).abs().max() < 6 * math.sqrt(2 / 2000) + 1e-3


def test_bad_input_of_the_trainer_and_the_new_checks():
    x = torch.zeros(4, 2)
    net = D.NoisePredictor()
    with pytest.raises(TypeError, match="^model:"):
        D.train_ddpm(lambda x, t: x, x)
    with pytest.raises(ValueError, match="^data:"):
        D.train_ddpm(net, torch.zeros(4))
    with pytest.raises(ValueError, match="^steps:"):
        D.train_ddpm(net, x, steps=0)
    with pytest.raises(ValueError, match="^lr:"):
        D.train_ddpm(net, x, lr=0.0)
    with pytest.raises(ValueError, match="^betas:"):
        D.train_ddpm(net, x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="^y:"):
        D.train_ddpm(net, x, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="^null_class:"):
        D.train_ddpm(net, x, y=torch.zeros(4, dtype=torch.long), p_uncond=0.3)
    with pytest.raises(TypeError, match="^callback:"):
        D.train_ddpm(net, x, callback=3)
    with pytest.raises(ValueError, match="^every:"):
        D.train_ddpm(net, x, every=0)
    with pytest.raises(TypeError, match="^generator:"):
        D.train_ddpm(net, x, generator=1)
    with pytest.raises(TypeError, match="^generator:"):
        D.sample(net, (2, 2), LIN, generator="cpu")
    with pytest.raises(ValueError, match="^cov:"):  # a negative eigenvalue
        D.gaussian_optimal_eps(torch.zeros(2, 2, dtype=torch.float64), torch.tensor([1, 2]), LIN,
                               torch.zeros(2, dtype=torch.float64), torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)))
    with pytest.raises(ValueError, match="^mean2:"):
        D.gaussian_kl(x, torch.ones(4, 1), torch.zeros(4, 3), torch.ones(4, 1))
    with pytest.raises(ValueError, match="^var1:"):
        D.gaussian_kl(x, torch.ones(5, 4, 2), x, torch.ones(4, 1))
    with pytest.raises(TypeError, match="^var2:"):
        D.gaussian_kl(x, torch.ones(4, 1), x, torch.ones(4, 1, dtype=torch.float64))
