"""Symbolic checks (sympy) of the diffusion section's algebra and of the proof of q(x_t | x_0).

Random variables are handled as linear combinations of independent standard normals: a Gaussian
vector is fixed by the coefficient of x_0 and the coefficients of the noises, and independent
Gaussians "merge" because the variance of sum_i c_i eps_i is sum_i c_i^2.
"""

import pytest
import sympy as sp

pytestmark = pytest.mark.symbolic


def _positive(*names):
    return sp.symbols(names, positive=True)


@pytest.mark.claim("diffusion.proof-closed-form", role="refutes")
def test_proof_with_one_noise_symbol_is_wrong(record_property):
    """Read literally, the proof reuses one epsilon in both steps: then x_t's noise coefficient is
    sqrt(alpha_t (1 - alpha_{t-1})) + sqrt(1 - alpha_t), whose square is not 1 - alpha_t alpha_{t-1}."""
    a_t, a_s = sp.symbols("alpha_t alpha_s", positive=True)
    x2, e = sp.symbols("x_{t-2} eps")
    xt = sp.expand(sp.sqrt(a_t) * (sp.sqrt(a_s) * x2 + sp.sqrt(1 - a_s) * e) + sp.sqrt(1 - a_t) * e)
    coeff = xt.coeff(e)
    gap = sp.simplify(coeff ** 2 - (1 - a_t * a_s))
    assert gap != 0
    half = {a_t: sp.Rational(1, 2), a_s: sp.Rational(1, 2)}
    assert float(coeff.subs(half)) == pytest.approx(0.5 + 0.5 ** 0.5, rel=1e-15)
    assert float(sp.sqrt(1 - a_t * a_s).subs(half)) == pytest.approx(0.75 ** 0.5, rel=1e-15)
    record_property("evidence", f"same eps twice: coefficient^2 - (1 - alpha_t alpha_s) = {gap} != 0 "
                    "(alpha = 1/2: 1.207 against 0.866)")


@pytest.mark.claim("diffusion.proof-closed-form", role="corrects")
def test_proof_each_equality():
    """The proof's equalities one at a time, with alpha_t = 1 - beta_t."""
    a_t, a_s = sp.symbols("alpha_t alpha_s", positive=True)    # alpha_t, alpha_{t-1}
    beta_t = 1 - a_t
    # 1st '=': sqrt(1 - beta_t) x + sqrt(beta_t) eps is sqrt(alpha_t) x + sqrt(1 - alpha_t) eps
    assert sp.simplify(sp.sqrt(1 - beta_t) - sp.sqrt(a_t)) == 0
    assert sp.simplify(sp.sqrt(beta_t) - sp.sqrt(1 - a_t)) == 0
    # 2nd '=': substitute x_{t-1} = sqrt(alpha_{t-1}) x_{t-2} + sqrt(1 - alpha_{t-1}) eps'
    x2, e1, e2 = sp.symbols("x_{t-2} eps1 eps2")
    xt = sp.sqrt(a_t) * (sp.sqrt(a_s) * x2 + sp.sqrt(1 - a_s) * e1) + sp.sqrt(1 - a_t) * e2
    xt = sp.expand(xt)
    assert sp.simplify(xt.coeff(x2) - sp.sqrt(a_t * a_s)) == 0
    # independent Gaussians merge: variance of the noise part is the sum of squared coefficients
    merged_var = xt.coeff(e1) ** 2 + xt.coeff(e2) ** 2
    assert sp.simplify(merged_var - (1 - a_t * a_s)) == 0


@pytest.mark.claim("diffusion.proof-closed-form", role="corrects")
def test_proof_induction_step():
    """'= ... =': if x_{t-1} = sqrt(ab_{t-1}) x_0 + sqrt(1 - ab_{t-1}) eps then x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps'
    with ab_t = alpha_t ab_{t-1}."""
    a_t, ab_prev, x0, e1, e2 = sp.symbols("alpha_t abar_prev x0 e1 e2", positive=True)
    xt = sp.expand(sp.sqrt(a_t) * (sp.sqrt(ab_prev) * x0 + sp.sqrt(1 - ab_prev) * e1) + sp.sqrt(1 - a_t) * e2)
    ab_t = a_t * ab_prev
    assert sp.simplify(xt.coeff(x0) - sp.sqrt(ab_t)) == 0
    assert sp.simplify(xt.coeff(e1) ** 2 + xt.coeff(e2) ** 2 - (1 - ab_t)) == 0


@pytest.mark.claim("diffusion.proof-closed-form", role="corrects")
@pytest.mark.parametrize("T", [1, 2, 5])
def test_proof_unrolled_chain(T):
    """Unroll T forward steps with fresh noises: coefficient of x_0 is prod sqrt(alpha_i), noise variance 1 - prod alpha_i."""
    alphas = sp.symbols(f"alpha1:{T + 1}", positive=True)
    noises = sp.symbols(f"eps1:{T + 1}")
    x0 = sp.Symbol("x0")
    x = x0
    for a, e in zip(alphas, noises):
        x = sp.expand(sp.sqrt(1 - (1 - a)) * x + sp.sqrt(1 - a) * e)   # sqrt(1 - beta) x + sqrt(beta) eps
    ab = sp.prod(alphas)
    assert sp.simplify(x.coeff(x0) - sp.sqrt(ab)) == 0
    assert sp.simplify(sum(x.coeff(e) ** 2 for e in noises) - (1 - ab)) == 0


def _posterior_from_completing_square():
    """log q(x_t | x_{t-1}) + log q(x_{t-1} | x_0) as a quadratic in x_{t-1}: read off mean and variance."""
    a_t, ab_prev = _positive("alpha_t", "abar_prev")
    x0, xt, y = sp.symbols("x0 x_t y", real=True)                    # y = x_{t-1}
    beta_t = 1 - a_t
    logp = -(xt - sp.sqrt(a_t) * y) ** 2 / (2 * beta_t) - (y - sp.sqrt(ab_prev) * x0) ** 2 / (2 * (1 - ab_prev))
    poly = sp.Poly(sp.expand(logp), y)
    c2, c1 = poly.coeff_monomial(y ** 2), poly.coeff_monomial(y)
    var = sp.simplify(-1 / (2 * c2))                                  # quadratic => Gaussian
    mean = sp.simplify(c1 * var)
    return dict(a_t=a_t, ab_prev=ab_prev, x0=x0, xt=xt, beta_t=beta_t, mean=mean, var=var, deg=poly.degree())


@pytest.mark.claim("diffusion.posterior-gaussian")
def test_posterior_is_gaussian_with_stated_mean_and_variance():
    d = _posterior_from_completing_square()
    a_t, ab_prev, x0, xt, beta_t = d["a_t"], d["ab_prev"], d["x0"], d["xt"], d["beta_t"]
    ab_t = a_t * ab_prev
    assert d["deg"] == 2                     # log density quadratic in x_{t-1}, negative leading term below
    stated_mean = sp.sqrt(ab_prev) * beta_t / (1 - ab_t) * x0 + sp.sqrt(a_t) * (1 - ab_prev) / (1 - ab_t) * xt
    stated_var = (1 - ab_prev) / (1 - ab_t) * beta_t
    assert sp.simplify(d["mean"] - stated_mean) == 0
    assert sp.simplify(d["var"] - stated_var) == 0


@pytest.mark.claim("diffusion.eps-form")
def test_eps_form_of_posterior_mean():
    a_t, ab_prev = _positive("alpha_t", "abar_prev")
    x0, eps = sp.symbols("x0 eps0", real=True)
    ab_t = a_t * ab_prev
    beta_t = 1 - a_t
    xt = sp.sqrt(ab_t) * x0 + sp.sqrt(1 - ab_t) * eps
    mu_q = sp.sqrt(ab_prev) * beta_t / (1 - ab_t) * x0 + sp.sqrt(a_t) * (1 - ab_prev) / (1 - ab_t) * xt
    notes = xt / sp.sqrt(a_t) - (1 - a_t) / (sp.sqrt(1 - ab_t) * sp.sqrt(a_t)) * eps
    diff = sp.expand(mu_q - notes)
    # the difference is linear in x0 and eps; both coefficients vanish
    assert sp.simplify(diff.coeff(x0)) == 0
    assert sp.simplify(diff.coeff(eps)) == 0
    assert sp.simplify(diff.subs({x0: 0, eps: 0})) == 0


@pytest.mark.claim("diffusion.predict-noise")
def test_mean_error_is_scaled_noise_error():
    a_t, ab_t = _positive("alpha_t", "abar_t")
    xt, e0, eh = sp.symbols("x_t eps0 epshat", real=True)
    k = (1 - a_t) / (sp.sqrt(1 - ab_t) * sp.sqrt(a_t))
    mu_q = xt / sp.sqrt(a_t) - k * e0
    mu_th = xt / sp.sqrt(a_t) - k * eh
    assert sp.simplify((mu_th - mu_q) ** 2 - (1 - a_t) ** 2 / (a_t * (1 - ab_t)) * (eh - e0) ** 2) == 0


@pytest.mark.claim("diffusion.learn-mean")
def test_kl_of_gaussians_is_scaled_mean_distance():
    m1, m2 = sp.symbols("mu_q mu_theta", real=True)
    v, s2 = _positive("sigma_q2", "sigma_t2")
    # KL(N(m1, v) || N(m2, s2)) = E_{x ~ N(m1, v)} [log N(x; m1, v) - log N(x; m2, s2)]: the integrand is a
    # quadratic in x, so its expectation follows from E[x] = m1, E[x^2] = v + m1^2
    x = sp.Symbol("x", real=True)
    logratio = sp.expand(sp.log(sp.sqrt(s2 / v)) - (x - m1) ** 2 / (2 * v) + (x - m2) ** 2 / (2 * s2))
    poly = sp.Poly(logratio, x)
    kl = sp.simplify(poly.coeff_monomial(x ** 2) * (v + m1 ** 2) + poly.coeff_monomial(x) * m1 + poly.coeff_monomial(1))
    # theta enters only through m2, as (m2 - m1)^2 / (2 s2): the argmin is m2 = m1
    const = sp.simplify(kl - (m2 - m1) ** 2 / (2 * s2))
    assert sp.simplify(sp.diff(const, m2)) == 0
    # with sigma_t = sigma_q the KL is exactly ||mu_theta - mu_q||^2 / (2 sigma_q^2)
    assert sp.simplify(kl.subs(s2, v) - (m2 - m1) ** 2 / (2 * v)) == 0
