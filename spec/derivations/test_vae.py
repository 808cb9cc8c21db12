"""Proofs and Appendix for the VAE: KL >= 0, the ELBO derivation, KL for ELBO (sympy), the
expectation of the reparametrisation, and the VRNN factorisations (by exact enumeration)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl.vae import VRNN, kl_categorical, kl_gaussian, kl_standard_normal, reparametrise
from spec.testing import generator, seeds

pytestmark = pytest.mark.symbolic


def _probs(seed, K, zero_frac=0.0):
    g = generator(seed)
    p = torch.rand(K, generator=g, dtype=torch.float64) + 0.05
    if zero_frac:
        p[torch.rand(K, generator=g, dtype=torch.float64) < zero_frac] = 0
        p[0] = max(float(p[0]), 0.1)
    return p / p.sum()


# ------------------------------------------------------------------------------ KL >= 0

@pytest.mark.claim("vae.kl-nonneg-proof-jensen")
@settings(max_examples=15)
@given(seed=seeds(), K=st.integers(2, 8))
def test_kl_nonneg_proof_step_by_step(seed, K):
    p, q = _probs(seed, K), _probs(seed + 1, K)
    neg_kl = -float(kl_categorical(p, q))
    step1 = float((p * (q / p).log()).sum())  # E log q/p
    step2 = math.log(float((p * q / p).sum()))  # log E q/p (Jensen: log is concave)
    step3 = math.log(float(q.sum()))  # log int q
    assert neg_kl == pytest.approx(step1, rel=1e-12, abs=1e-14)
    assert step1 <= step2 + 1e-15
    assert step2 == pytest.approx(step3, abs=1e-14) and step3 == pytest.approx(0.0, abs=1e-14)


@pytest.mark.claim("vae.kl-nonneg-proof-support", role="refutes")
def test_expectation_of_ratio_misses_mass_outside_support(record_property):
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    on = p > 0
    e_ratio = float((p[on] * q[on] / p[on]).sum())  # E_{x ~ p} q(x)/p(x): only x with p(x) > 0 occur
    assert e_ratio == pytest.approx(0.5, abs=1e-15)
    assert abs(e_ratio - float(q.sum())) > 0.4
    record_property("evidence", "p = (.5, .5, 0), q = (.2, .3, .5): E_p[q/p] = 0.5 but int q = 1")


@pytest.mark.claim("vae.kl-nonneg-proof-support", role="corrects")
@settings(max_examples=15)
@given(seed=seeds(), K=st.integers(2, 8))
def test_corrected_support_step_keeps_the_bound(seed, K):
    p, q = _probs(seed, K, zero_frac=0.4), _probs(seed + 1, K)
    on = p > 0
    e_ratio = float((p[on] * q[on] / p[on]).sum())
    assert e_ratio == pytest.approx(float(q[on].sum()), rel=1e-12)
    # Rounding: q is normalised by a sum of K terms and E_p[q/p] is another such sum, each entry
    # off by at most 2 ulps, so e_ratio <= 1 + 4 K eps; log(1 + d) <= d carries that to the log.
    # -KL is a sum of K terms p log(q/p), each off by a few ulps of its magnitude.
    eps = np.finfo(np.float64).eps
    tol = 4 * K * eps
    assert e_ratio <= 1 + tol
    neg_kl = -float(kl_categorical(p, q))
    tol_kl = 8 * K * eps * max(1.0, float((p[on] * (q[on] / p[on]).log().abs()).sum()))
    assert neg_kl <= math.log(e_ratio) + tol_kl
    assert math.log(e_ratio) <= tol
    q_in = q * on  # q supported inside supp p: then equality with int q = 1
    q_in = q_in / q_in.sum()
    assert float((p[on] * q_in[on] / p[on]).sum()) == pytest.approx(1.0, abs=1e-14)


# --------------------------------------------------------------------------- VAE ELBO

@pytest.mark.claim("vae.elbo-derivation")
@settings(max_examples=10)
@given(seed=seeds(), K=st.integers(2, 6))
def test_each_line_of_the_elbo_derivation(seed, K):
    # categorical z, one fixed x: p(z), p(x | z) arbitrary, p(z | x) by Bayes, q arbitrary
    prior, q = _probs(seed, K), _probs(seed + 1, K)
    lik = torch.rand(K, generator=generator(seed + 2), dtype=torch.float64)
    px = (lik * prior).sum()
    post = lik * prior / px
    E = lambda f: float((q * f).sum())
    lines = [
        math.log(float(px)),
        E(px.log().expand(K)),
        E((lik * prior / post).log()),
        E((lik * prior * q / (post * q)).log()),
        E(lik.log()) - E((q / prior).log()) + E((q / post).log()),
        E(lik.log()) - float(kl_categorical(q, prior)) + float(kl_categorical(q, post)),
    ]
    for a, b in zip(lines, lines[1:]):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-12)


# -------------------------------------------------------------------------- KL for ELBO

_z = sp.symbols("z", real=True)
_mp, _mq = sp.symbols("mu_p mu_q", real=True)
_sp, _sq = sp.symbols("sigma_p sigma_q", positive=True)


def _normal(z, m, s):
    return sp.exp(-(z - m) ** 2 / (2 * s ** 2)) / sp.sqrt(2 * sp.pi * s ** 2)


def _expect(expr):
    """int N(z; mu_p, sigma_p^2) expr(z) dz for a polynomial expr, via the moments of the normal."""
    poly = sp.Poly(sp.expand(expr), _z)
    moments = {k: sp.simplify(sp.integrate(_normal(_z, _mp, _sp) * _z ** k, (_z, -sp.oo, sp.oo))) for k in range(poly.degree() + 1)}
    return sp.expand(sum(c * moments[m[0]] for m, c in zip(poly.monoms(), poly.coeffs())))


_LOGQ = -sp.log(2 * sp.pi) / 2 - sp.log(_sq ** 2) / 2 - (_z - _mq) ** 2 / (2 * _sq ** 2)  # log N(z; mu_q, sigma_q^2)


@pytest.mark.slow
@pytest.mark.claim("vae.kl-elbo-cross-entropy")
def test_cross_entropy_formula_sympy():
    got = _expect(_LOGQ)
    notes = -sp.log(2 * sp.pi) / 2 - sp.log(_sq ** 2) / 2 - (_sp ** 2 + (_mp - _mq) ** 2) / (2 * _sq ** 2)
    assert sp.simplify(got - notes) == 0


@pytest.mark.claim("vae.kl-elbo-cross-entropy")
def test_cross_entropy_formula_numeric_J3():
    rng = np.random.default_rng(0)
    mp, mq = rng.normal(size=3), rng.normal(size=3)
    sp_, sq = rng.uniform(0.5, 2, 3), rng.uniform(0.5, 2, 3)
    # independent coordinates: int p log q = sum_j of 1-D integrals, each by quadrature
    quad = sum(scipy.integrate.quad(lambda z: scipy.stats.norm.pdf(z, mp[j], sp_[j]) * scipy.stats.norm.logpdf(z, mq[j], sq[j]),
                                    -30, 30, epsabs=1e-13)[0] for j in range(3))
    notes = -1.5 * math.log(2 * math.pi) - 0.5 * np.log(sq ** 2).sum() - 0.5 * ((sp_ ** 2 + (mp - mq) ** 2) / sq ** 2).sum()
    assert quad == pytest.approx(notes, rel=1e-10)


@pytest.mark.slow
@pytest.mark.claim("vae.kl-elbo-cross-entropy-prior")
def test_cross_entropy_with_prior_sympy():
    mu, s = sp.symbols("mu", real=True), sp.symbols("sigma", positive=True)
    logp = -sp.log(2 * sp.pi) / 2 - _z ** 2 / 2  # log N(z; 0, 1)
    got = _expect(logp).subs({_mp: mu, _sp: s})
    assert sp.simplify(got - (-sp.log(2 * sp.pi) / 2 - (s ** 2 + mu ** 2) / 2)) == 0


@pytest.mark.claim("vae.kl-elbo-cross-entropy-prior")
def test_cross_entropy_with_prior_numeric():
    mu, s = np.array([0.3, -1.2]), np.array([0.7, 1.9])
    quad = sum(scipy.integrate.quad(lambda z: scipy.stats.norm.pdf(z, mu[j], s[j]) * scipy.stats.norm.logpdf(z), -30, 30,
                                    epsabs=1e-13)[0] for j in range(2))
    assert quad == pytest.approx(-math.log(2 * math.pi) - 0.5 * (s ** 2 + mu ** 2).sum(), rel=1e-10)


def _neg_entropy_numeric(s):
    return sum(scipy.integrate.quad(lambda z: scipy.stats.norm.pdf(z, 0.4, sj) * scipy.stats.norm.logpdf(z, 0.4, sj), -40, 40,
                                    epsabs=1e-13)[0] for sj in s)


@pytest.mark.claim("vae.kl-elbo-entropy", role="refutes")
def test_entropy_term_has_the_wrong_sign_on_log_2pi(record_property):
    s = np.array([1.0])
    notes = 0.5 * math.log(2 * math.pi) - 0.5 * (np.log(s ** 2) + 1).sum()
    true = _neg_entropy_numeric(s)
    assert abs(true - notes) == pytest.approx(math.log(2 * math.pi), rel=1e-10)
    record_property("evidence", f"J=1, sigma=1: int q log q = {true:.4f}, notes' formula gives {notes:.4f}")


@pytest.mark.claim("vae.kl-elbo-entropy", role="corrects")
def test_corrected_entropy_term():
    s = np.array([0.5, 1.0, 2.5])
    corrected = -1.5 * math.log(2 * math.pi) - 0.5 * (np.log(s ** 2) + 1).sum()
    assert _neg_entropy_numeric(s) == pytest.approx(corrected, rel=1e-10)
    # and it equals minus scipy's differential entropy
    assert corrected == pytest.approx(-sum(scipy.stats.norm(0, sj).entropy() for sj in s), rel=1e-12)


@pytest.mark.slow
@pytest.mark.claim("vae.kl-elbo-entropy", role="corrects")
def test_corrected_entropy_term_sympy():
    got = _expect(_LOGQ).subs({_mq: _mp, _sq: _sp})
    assert sp.simplify(got - (-sp.log(2 * sp.pi) / 2 - (sp.log(_sp ** 2) + 1) / 2)) == 0


@pytest.mark.claim("vae.kl-elbo-closed-form")
def test_closed_form_kl_against_torch(device, dtype):
    mu = torch.linspace(-2, 2, 12, dtype=dtype, device=device).view(3, 4)
    lv = torch.linspace(-3, 2, 12, dtype=dtype, device=device).view(3, 4)
    notes = -0.5 * (1 + lv - mu ** 2 - lv.exp()).sum(-1)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * lv).exp()),
                                            torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(notes, ref, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6 if dtype == torch.float32 else 1e-12)
    torch.testing.assert_close(kl_standard_normal(mu, lv), ref, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=1e-6 if dtype == torch.float32 else 1e-12)
    torch.testing.assert_close(kl_gaussian(mu, lv, torch.zeros_like(mu), torch.zeros_like(lv)), ref,
                               rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.slow
@pytest.mark.claim("vae.kl-elbo-closed-form")
def test_closed_form_kl_sympy():
    mu, s = sp.symbols("mu", real=True), sp.symbols("sigma", positive=True)
    cross = _expect(-sp.log(2 * sp.pi) / 2 - _z ** 2 / 2).subs({_mp: mu, _sp: s})
    neg_ent = _expect(_LOGQ).subs({_mq: _mp, _sq: _sp}).subs({_mp: mu, _sp: s})
    assert sp.simplify((cross - neg_ent) - (1 + sp.log(s ** 2) - mu ** 2 - s ** 2) / 2) == 0


# ------------------------------------------------------------------ reparametrisation

@pytest.mark.claim("vae.reparam-change-of-variables", role="refutes")
def test_keeping_p_phi_under_d_eps_changes_the_integral(record_property):
    mu, s = 1.0, 2.0  # p_phi = N(mu, s^2), z = g(eps) = mu + s eps, f(z) = z
    notes = scipy.integrate.quad(lambda e: scipy.stats.norm.pdf(mu + s * e, mu, s) * (mu + s * e), -40, 40)[0]
    truth = mu
    assert notes == pytest.approx(mu / s, rel=1e-10)
    assert abs(notes - truth) > 0.4
    # the printed equality is between gradients in phi = (mu, s): differentiate the printed integrand
    # p_phi(g(eps, phi)) f(g(eps, phi)) = phi(eps) (mu + s eps) / s by autograd (trapezoid on [-40, 40]);
    # by hand its integral is mu / s, gradient (1 / s, -mu / s^2), while grad E f = grad mu = (1, 0)
    m, sd = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (mu, s))
    eps = torch.linspace(-40, 40, 8001, dtype=torch.float64)
    z = m + sd * eps
    p_phi = torch.exp(-(z - m) ** 2 / (2 * sd ** 2)) / torch.sqrt(2 * math.pi * sd ** 2)
    grad = torch.stack(torch.autograd.grad(torch.trapezoid(p_phi * z, eps), (m, sd)))
    torch.testing.assert_close(grad, torch.tensor([1 / s, -mu / s ** 2], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert float((grad - torch.tensor([1.0, 0.0], dtype=torch.float64)).abs().max()) > 0.4
    record_property("evidence", f"N(1, 4), f(z) = z: int p_phi(g(eps)) f(g(eps)) d eps = {notes:.4f}, E f = {truth}; "
                                f"its gradient in (mu, sigma) is ({float(grad[0]):.4f}, {float(grad[1]):.4f}), "
                                f"grad E f = (1, 0)")


@pytest.mark.claim("vae.reparam-change-of-variables", role="corrects")
@pytest.mark.parametrize("f", [lambda z: z, lambda z: z ** 2, np.sin])
def test_change_of_variables_with_p_eps(f):
    mu, s = 0.7, 1.6
    lhs = scipy.integrate.quad(lambda z: scipy.stats.norm.pdf(z, mu, s) * f(z), -60, 60, epsabs=1e-13)[0]
    rhs = scipy.integrate.quad(lambda e: scipy.stats.norm.pdf(e) * f(mu + s * e), -40, 40, epsabs=1e-13)[0]
    assert rhs == pytest.approx(lhs, rel=1e-10, abs=1e-12)


@pytest.mark.claim("vae.reparam-change-of-variables", role="corrects")
@pytest.mark.parametrize("name", ["z", "square", "sin"])
def test_gradient_of_the_eps_integral_with_p_eps(name):
    # grad_phi int p(eps) f(g(eps, phi)) d eps = grad_phi int p_phi(z) f(z) dz, phi = (mu, s), g = mu + s eps:
    # the right side by autograd through the density on a z-grid, and by hand from E f in closed form
    mu, s = 0.7, 1.6
    f, exact = {"z": (lambda z: z, lambda m, v: (1.0, 0.0)),
                "square": (lambda z: z ** 2, lambda m, v: (2 * m, 2 * v)),  # E z^2 = mu^2 + s^2
                "sin": (torch.sin, lambda m, v: (math.cos(m) * math.exp(-v * v / 2),  # E sin z = sin mu e^{-s^2/2}
                                                 -v * math.sin(m) * math.exp(-v * v / 2)))}[name]
    m, sd = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (mu, s))
    eps = torch.linspace(-40, 40, 8001, dtype=torch.float64)
    p_eps = torch.exp(-eps ** 2 / 2) / math.sqrt(2 * math.pi)
    lhs = torch.stack(torch.autograd.grad(torch.trapezoid(p_eps * f(m + sd * eps), eps), (m, sd)))
    z = torch.linspace(-60, 60, 12001, dtype=torch.float64)
    p_phi = torch.exp(-(z - m) ** 2 / (2 * sd ** 2)) / torch.sqrt(2 * math.pi * sd ** 2)
    rhs = torch.stack(torch.autograd.grad(torch.trapezoid(p_phi * f(z), z), (m, sd)))
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lhs, torch.tensor(exact(mu, s), dtype=torch.float64), rtol=1e-10, atol=1e-12)


def _reparam_grad(f, mu, logvar, n, seed):
    """Per-sample reparametrisation gradients of f(mu + sigma eps) in (mu, logvar): mean and standard error."""
    m = torch.full((n,), mu, dtype=torch.float64, requires_grad=True)
    lv = torch.full((n,), logvar, dtype=torch.float64, requires_grad=True)
    f(reparametrise(m, lv, generator=generator(seed))).sum().backward()
    g = torch.stack([m.grad, lv.grad], 1)
    return g.mean(0), g.std(0) / math.sqrt(n)


@pytest.mark.claim("vae.reparam-gradient", role="refutes")
def test_reparam_gradient_fails_for_a_step_function(record_property):
    mu, s = 0.3, 1.0
    step = lambda z: (torch.sign(z) + 1) / 2  # 1[z > 0]
    est, _ = _reparam_grad(step, mu, 0.0, 5000, 1)
    true = scipy.stats.norm.pdf(mu / s) / s  # d/dmu P(z > 0) = d/dmu Phi(mu / s)
    assert float(est[0]) == 0.0 and true > 0.3
    record_property("evidence", f"f = 1[z>0], N(0.3, 1): E grad f(g) = 0, true d/dmu = {true:.4f}")


@pytest.mark.claim("vae.reparam-gradient", role="corrects")
@pytest.mark.parametrize("name", ["square", "sin"])
def test_reparam_gradient_is_unbiased_for_smooth_f(name, record_property):
    mu, lv = 0.4, math.log(0.81)
    s2 = math.exp(lv)
    if name == "square":  # E z^2 = mu^2 + s^2
        f, true = (lambda z: z ** 2), (2 * mu, s2)
    else:  # E sin z = sin(mu) exp(-s^2/2)
        f, true = torch.sin, (math.cos(mu) * math.exp(-s2 / 2), -math.sin(mu) * math.exp(-s2 / 2) * s2 / 2)
    est, se = _reparam_grad(f, mu, lv, 20000, 2)
    for k in range(2):
        assert abs(float(est[k]) - true[k]) < 6 * float(se[k])  # 6 standard errors
    record_property("evidence", f"{name}: MC {est.tolist()} vs exact {true}, se {se.tolist()}")


# ---------------------------------------------------------------------------- VRNN

def _vrnn_table(T=2, seed=0):
    torch.manual_seed(seed)
    model = VRNN(1, 1, 6).double()
    with torch.no_grad():  # larger weights: stronger dependence on the past, clearer counterexamples
        for prm in model.parameters():
            prm.mul_(4)
    seqs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=T)), dtype=torch.float64)  # (2^T, T)
    xs = seqs[:, None, :].expand(-1, len(seqs), -1).reshape(-1, T, 1)  # pairs (x, z): x outer, z inner
    zs = seqs[None, :, :].expand(len(seqs), -1, -1).reshape(-1, T, 1)
    return model, xs, zs, len(seqs)


@pytest.mark.claim("vae.vrnn-prior", role="refutes")
def test_vrnn_prior_product_depends_on_x(record_property):
    model, xs, zs, n = _vrnn_table(T=2, seed=4)
    with torch.no_grad():
        prior = model.log_prior(xs, zs).exp().view(n, n)  # [x, z]
        marginal = model.log_joint(xs, zs).exp().view(n, n).sum(0)  # p(z) = sum_x p(x, z)
        joint = model.log_joint(xs, zs).exp().view(n, n)  # [x, z]
        posterior = joint / joint.sum(1, keepdim=True)  # p(z | x) by Bayes, from the enumerated joint
    torch.testing.assert_close(marginal.sum(), torch.tensor(1.0, dtype=torch.float64))
    spread = float((prior.max(0).values - prior.min(0).values).max())
    assert spread > 1e-2  # one z, several values: not a function of z alone
    assert float((prior - marginal).abs().max()) > 1e-3
    # the loose reading p(z | x) fails too: the posterior also conditions on x_t and the future x
    post_err = float((prior - posterior).abs().max())
    assert post_err > 1e-2
    record_property("evidence", f"T = 2: prod_t p(z_t | z_<t, x_<t) varies by up to {spread:.4f} across x for a fixed z; "
                                f"differs from the posterior p(z | x) by up to {post_err:.4f}")


@pytest.mark.claim("vae.vrnn-prior", role="corrects")
def test_vrnn_prior_is_normalised_and_causal():
    model, xs, zs, n = _vrnn_table(T=3)
    with torch.no_grad():
        prior = model.log_prior(xs, zs).exp().view(n, n)  # [x, z]
        torch.testing.assert_close(prior.sum(1), torch.ones(n, dtype=torch.float64))
        lp_z = model.log_factors(xs, zs)[0]
        # factor t is unchanged when x_t.. and z_{t+1}.. change
        x2, z2 = xs.clone(), zs.clone()
        x2[:, 1:] = 1 - x2[:, 1:]
        z2[:, 2:] = 1 - z2[:, 2:]
        torch.testing.assert_close(model.log_factors(x2, z2)[0][:, :2], lp_z[:, :2], rtol=0, atol=0)


@pytest.mark.claim("vae.vrnn-encoder", role="refutes")
def test_vrnn_encoder_product_is_not_a_distribution_over_x(record_property):
    model, xs, zs, n = _vrnn_table()
    with torch.no_grad():
        q = model.log_q(xs, zs).exp().view(n, n)  # [x, z]
    sums_over_x = q.sum(0)
    assert (sums_over_x - 1).abs().max() > 0.05
    record_property("evidence", f"sum_x prod_t q(z_t | x_<=t, z_<t) = {[round(v, 3) for v in sums_over_x.tolist()]} (not 1)")


@pytest.mark.claim("vae.vrnn-encoder", role="corrects")
def test_vrnn_encoder_product_is_a_distribution_over_z():
    model, xs, zs, n = _vrnn_table(T=3)
    with torch.no_grad():
        q = model.log_q(xs, zs).exp().view(n, n)
        lq = model.log_factors(xs, zs)[2]
        x2 = xs.clone()
        x2[:, 1] = 1 - x2[:, 1]  # flip x_2 only
        lq2 = model.log_factors(x2, zs)[2]
    torch.testing.assert_close(q.sum(1), torch.ones(n, dtype=torch.float64))
    # factor t is q(z_t | x_<=t, z_<t): unchanged at t = 1, changed at t = 2 (it sees x_t itself)
    torch.testing.assert_close(lq2[:, 0], lq[:, 0], rtol=0, atol=0)
    assert float((lq2[:, 1] - lq[:, 1]).abs().max()) > 1e-2


def _joint_tensor(with_factor=False):
    """VRNN joint over (z1, x1, z2, x2) as a (2, 2, 2, 2) table; optionally also the model's own
    decoder factor p(x2 | .) laid out the same way."""
    model, xs, zs, n = _vrnn_table(T=2, seed=5)
    with torch.no_grad():
        p = model.log_joint(xs, zs).exp()
        fx2 = model.log_factors(xs, zs)[1][:, 1].exp()
    P = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    F2 = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    for k in range(len(p)):
        x1, x2 = int(xs[k, 0, 0]), int(xs[k, 1, 0])
        z1, z2 = int(zs[k, 0, 0]), int(zs[k, 1, 0])
        P[z1, x1, z2, x2] = p[k]
        F2[z1, x1, z2, x2] = fx2[k]
    return (P, F2) if with_factor else P


@pytest.mark.claim("vae.vrnn-joint", role="refutes")
def test_vrnn_joint_without_past_x_is_not_the_joint(record_property):
    P = _joint_tensor()
    p_z1 = P.sum((1, 2, 3))
    p_x1_g = P.sum((2, 3)) / p_z1[:, None]  # p(x1 | z1)
    p_z2_g = P.sum(3) / P.sum((2, 3))[:, :, None]  # p(z2 | z1, x1)
    p_z1z2x2 = P.sum(1)  # (z1, z2, x2)
    p_x2_notes = p_z1z2x2 / p_z1z2x2.sum(-1, keepdim=True)  # p(x2 | z1, z2): the notes' conditioning
    notes = p_z1[:, None, None, None] * p_x1_g[:, :, None, None] * p_z2_g[:, :, :, None] * p_x2_notes[:, None, :, :]
    err = float((notes - P).abs().max())
    rel = float((notes / P - 1).abs().max())
    assert err > 1e-2 and rel > 0.1
    assert float(notes.sum()) == pytest.approx(1.0, abs=1e-12)  # a distribution, but not the model's
    record_property("evidence", f"T = 2, 16 configurations: max |prod as written - joint| = {err:.4f}, "
                                f"max relative error {rel:.2f}")


@pytest.mark.claim("vae.vrnn-joint", role="corrects")
def test_vrnn_joint_with_past_x_is_the_joint():
    P, F2 = _joint_tensor(with_factor=True)
    assert float(P.sum()) == pytest.approx(1.0, abs=1e-12)
    p_z1 = P.sum((1, 2, 3))
    p_x1_g = P.sum((2, 3)) / p_z1[:, None]
    p_z2_g = P.sum(3) / P.sum((2, 3))[:, :, None]
    p_x2_g = P / P.sum(3, keepdim=True)  # p(x2 | z1, x1, z2)
    fact = p_z1[:, None, None, None] * p_x1_g[:, :, None, None] * p_z2_g[:, :, :, None] * p_x2_g
    torch.testing.assert_close(fact, P, rtol=1e-12, atol=1e-14)
    # the model's decoder factor is exactly p(x2 | z1, z2, x1), and it does depend on x1
    torch.testing.assert_close(F2, p_x2_g, rtol=1e-12, atol=1e-14)
    assert float((p_x2_g[:, 0] - p_x2_g[:, 1]).abs().max()) > 1e-2
    # and on z_2 itself (z_<=t): flipping z_2 changes p(x2 | .)
    assert float((p_x2_g[:, :, 0] - p_x2_g[:, :, 1]).abs().max()) > 1e-2
