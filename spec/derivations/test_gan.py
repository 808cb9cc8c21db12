"""Proofs: optimal discriminator, checked step by step with sympy, and numerically where the
step is an integral."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import sympy as sp
import torch

from impl import gan

pytestmark = pytest.mark.symbolic


@pytest.mark.claim("gan.optimal-discriminator-proof", role="corrects")
def test_pointwise_maximiser_symbolic():
    a, b = sp.symbols("a b", positive=True)
    y = sp.symbols("y", positive=True)
    f = a * sp.log(y) + b * sp.log(1 - y)
    f1 = sp.diff(f, y)
    assert sp.simplify(f1 - (a / y - b / (1 - y))) == 0                     # f'(y) = a/y - b/(1-y)
    assert sp.solve(sp.Eq(f1, 0), y) == [a / (a + b)]                       # unique stationary point
    f2 = sp.diff(f, y, 2)
    assert sp.simplify(f2 - (-a / y**2 - b / (1 - y) ** 2)) == 0
    y_star = a / (a + b)
    notes_f2 = -a / y_star**2 - b / (1 - y_star) ** 2                       # the notes' expression
    assert sp.simplify(f2.subs(y, y_star) - notes_f2) == 0
    assert sp.simplify(notes_f2 + (a + b) ** 3 / (a * b)) == 0              # = -(a+b)^3/(ab) < 0
    assert sp.ask(sp.Q.negative(-(a + b) ** 3 / (a * b)), sp.Q.positive(a) & sp.Q.positive(b))
    # f'' < 0 on all of (0, 1): f is concave, so the stationary point is the global maximum.
    assert sp.ask(sp.Q.negative(f2), sp.Q.positive(a) & sp.Q.positive(b) & sp.Q.positive(y) & sp.Q.positive(1 - y)) \
        or all(float(f2.subs({a: 2, b: 3, y: v})) < 0 for v in np.linspace(0.01, 0.99, 50))


@pytest.mark.claim("gan.optimal-discriminator-proof", role="corrects")
@pytest.mark.claim("gan.global-minimum", role="corrects")
def test_value_at_d_star_symbolic_is_minus_log4_plus_kl_terms():
    pd, pm = sp.symbols("p_d p_m", positive=True)
    d_star = pd / (pd + pm)
    m = (pd + pm) / 2
    pointwise = pd * sp.log(d_star) + pm * sp.log(1 - d_star)
    # Pointwise: p_d log(p_d/m) + p_m log(p_m/m) - (p_d + p_m) log 2; integrated (p_d, p_m
    # densities): KL(p_d||m) + KL(p_m||m) - 2 log 2 = 2 JS - log 4.
    target = pd * sp.log(pd / m) + pm * sp.log(pm / m) - (pd + pm) * sp.log(2)
    assert sp.simplify(sp.expand_log(pointwise - target, force=True)) == 0


@pytest.mark.claim("gan.optimal-discriminator-proof", role="corrects")
def test_change_of_integration_variable_numerically(record_property):
    # int p(z) log(1 - D(G(z))) dz = int p_m(x) log(1 - D(x)) dx for G(z) = mu + s z, z ~ N(0, 1).
    mu, s = 1.3, 0.7

    def d(x):
        return 1 / (1 + np.exp(-(0.8 * x - 0.5)))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)   # Gauss-Hermite for E_z
    lhs = float((weights * np.log1p(-d(mu + s * nodes))).sum() / math.sqrt(2 * math.pi))
    rhs = scipy.integrate.quad(lambda x: scipy.stats.norm.pdf(x, mu, s) * np.log1p(-d(x)), mu - 40 * s, mu + 40 * s,
                               epsabs=1e-12, epsrel=1e-12, limit=200)[0]
    record_property("evidence", f"E_z log(1 - D(G(z))) = {lhs:.12f}, int p_m log(1 - D) dx = {rhs:.12f}")
    assert abs(lhs - rhs) < 1e-9   # both quadratures converge to ~1e-12


@pytest.mark.claim("gan.optimal-discriminator-proof", role="corrects")
@pytest.mark.claim("gan.global-minimum", role="corrects")
def test_continuous_gaussians_v_at_d_star(record_property):
    # p_d = N(0, 1), p_m = N(1, 1.5^2): V(G, D*) by quadrature = -log 4 + 2 JS (JS by quadrature),
    # and any other D does worse.
    pd = scipy.stats.norm(0, 1).pdf
    pm = scipy.stats.norm(1, 1.5).pdf

    def v(dfun):
        return scipy.integrate.quad(lambda x: pd(x) * np.log(dfun(x)) + pm(x) * np.log1p(-dfun(x)), -30, 30, limit=200)[0]

    def d_star(x):
        return float(gan.optimal_discriminator(torch.tensor(pd(x), dtype=torch.float64), torch.tensor(pm(x), dtype=torch.float64)))
    m = lambda x: 0.5 * (pd(x) + pm(x))   # noqa: E731
    js = 0.5 * scipy.integrate.quad(lambda x: pd(x) * np.log(pd(x) / m(x)) + pm(x) * np.log(pm(x) / m(x)), -30, 30, limit=200)[0]
    v_star = v(d_star)
    record_property("evidence", f"V(G, D*) = {v_star:.10f}, -log 4 + 2 JS = {-math.log(4) + 2 * js:.10f}")
    assert abs(v_star - (-math.log(4) + 2 * js)) < 1e-8
    assert v(lambda x: 0.9 * d_star(x) + 0.05) < v_star


@pytest.mark.claim("gan.optimal-discriminator-proof", role="refutes")
def test_second_term_as_printed_is_not_the_expectation(record_property):
    # As printed the last expression is int_x p_d log D dx + p_m(x) log(1 - D(x)) dz: the second
    # term stands outside the x-integral and is closed by dz. Read that way it is a function of x
    # (and, integrated over z in [-L, L], grows with L), not the number E_z log(1 - D(G(z))).
    mu, s = 1.3, 0.7

    def d(x):
        return 1 / (1 + np.exp(-(0.8 * x - 0.5)))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    expectation = float((weights * np.log1p(-d(mu + s * nodes))).sum() / math.sqrt(2 * math.pi))
    xs = np.array([-1.0, 0.0, 1.3, 3.0])
    as_printed = scipy.stats.norm.pdf(xs, mu, s) * np.log1p(-d(xs))             # p_m(x) log(1 - D(x))
    over_z = {length: 2 * length * as_printed[2] for length in (1.0, 10.0)}       # int_{-L}^{L} ... dz
    record_property("evidence", f"E_z log(1 - D(G(z))) = {expectation:.4f}; p_m(x) log(1 - D(x)) at x = "
                                f"{xs.tolist()}: {np.round(as_printed, 4).tolist()}; its dz-integral over [-L, L] at "
                                f"x = 1.3: {over_z[1.0]:.3f} (L = 1), {over_z[10.0]:.3f} (L = 10)")
    assert np.ptp(as_printed) > 0.1                      # depends on x: not a number
    assert np.abs(as_printed - expectation).min() > 1e-2
    assert abs(over_z[10.0] - over_z[1.0]) > 1.0
