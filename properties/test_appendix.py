"""Appendix: Jensen, the Gaussian facts, Bayes' rule, the negative log-likelihood."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import appendix, ml
from spec.testing import generator, seeds, tol

CONVEX = {"exp": torch.exp, "square": lambda z: z**2, "abs": torch.abs, "softplus": F.softplus}


@pytest.mark.claim("appendix.jensen")
@settings(max_examples=10)
@given(seed=seeds(), n=st.integers(1, 20), name=st.sampled_from(["exp", "square", "abs", "softplus"]))
def test_jensen(seed, n, name):
    gen = generator(seed)
    fn = CONVEX[name]
    xs = torch.randn(n, generator=gen, dtype=torch.float64) * 2
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 1e-3
    w /= w.sum()  # a discrete distribution on the points xs
    assert fn((w * xs).sum()) <= (w * fn(xs)).sum() + 1e-12
    t = torch.rand(50, generator=gen, dtype=torch.float64)  # the two-point definition
    x1, x2 = xs[0], xs[-1]
    assert bool((fn(t * x1 + (1 - t) * x2) <= t * fn(x1) + (1 - t) * fn(x2) + 1e-12).all())


@pytest.mark.claim("appendix.jensen")
def test_jensen_fails_for_concave():
    # the convexity assumption matters: for concave sqrt the inequality reverses
    xs = torch.tensor([1.0, 9.0], dtype=torch.float64)
    assert torch.sqrt(xs.mean()) > torch.sqrt(xs).mean()


def _spd(d, gen, scale=1.0):
    M = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return scale * (M @ M.T + 0.5 * torch.eye(d, dtype=torch.float64))


@pytest.mark.claim("appendix.gaussian-density")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(1, 5))
def test_density_against_scipy(seed, d):
    gen = generator(seed)
    mu = torch.randn(d, generator=gen, dtype=torch.float64)
    S = _spd(d, gen)
    x = torch.randn(6, d, generator=gen, dtype=torch.float64) * 2
    ref = torch.from_numpy(scipy.stats.multivariate_normal(mu.numpy(), S.numpy()).logpdf(x.numpy())).reshape(6)
    torch.testing.assert_close(appendix.gaussian_log_density(x, mu, S), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(appendix.gaussian_density(x, mu, S), ref.exp(), rtol=1e-9, atol=1e-300)


@pytest.mark.claim("appendix.gaussian-density")
def test_density_extremes_and_device(device):
    # tiny variances: the log density stays finite (the literal formula's exp underflows to 0 or overflows)
    S = torch.diag(torch.tensor([1e-30, 1e-20], dtype=torch.float64)).to(device)
    x = torch.tensor([[1e-15, 0.0]], dtype=torch.float64, device=device)
    lp = appendix.gaussian_log_density(x, torch.zeros(2, dtype=torch.float64, device=device), S)
    ref = scipy.stats.norm.logpdf(1e-15, 0, 1e-15) + scipy.stats.norm.logpdf(0, 0, 1e-10)
    assert torch.isfinite(lp).all() and abs(lp.item() - ref) < 1e-9 * abs(ref)
    # float32 on the device: a 2-d density, rounding a few ulps of O(10) terms (stated tolerance 1e-5)
    S32 = torch.tensor([[2.0, 0.3], [0.3, 1.0]], device=device)
    x32 = torch.tensor([[0.5, -1.0], [2.0, 0.1]], device=device)
    ref32 = torch.from_numpy(scipy.stats.multivariate_normal([0, 0], S32.cpu().double().numpy()).logpdf(x32.cpu().double().numpy()))
    torch.testing.assert_close(appendix.gaussian_log_density(x32, torch.zeros(2, device=device), S32).cpu().double(), ref32, rtol=1e-5, atol=1e-5)


@pytest.mark.claim("appendix.gaussian-scaling")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(1, 4), a=st.floats(-5, 5).filter(lambda v: abs(v) > 1e-2))
def test_scaling(seed, d, a):
    gen = generator(seed)
    mu, S = torch.randn(d, generator=gen, dtype=torch.float64), _spd(d, gen)
    y = torch.randn(5, d, generator=gen, dtype=torch.float64) * 3
    # change of variables: the density of a X at y is p_X(y / a) / |a|^d
    lhs = appendix.gaussian_log_density(y / a, mu, S) - d * math.log(abs(a))
    torch.testing.assert_close(lhs, appendix.gaussian_log_density(y, a * mu, a**2 * S), rtol=1e-9, atol=1e-9)


@pytest.mark.claim("appendix.gaussian-sum", role="refutes")
def test_sum_of_dependent_gaussians(record_property):
    x1 = torch.randn(1000, 2, dtype=torch.float64)
    x2 = -x1  # also N(0, I), but the sum is the constant 0, not N(0, 2 I)
    s = x1 + x2
    assert s.abs().max().item() == 0.0
    record_property("evidence", "X1 ~ N(0, I), X2 = -X1 ~ N(0, I): X1 + X2 = 0, variance 0 instead of 2")


@pytest.mark.claim("appendix.gaussian-sum", role="corrects")
@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (1.5, 0.3, -0.7, 2.0), (-2.0, 0.5, 3.0, 0.5)])
def test_sum_of_independent_gaussians_is_convolution(m1, s1, m2, s2):
    # the density of the sum of independent variables is the convolution of the densities
    h = 1e-3
    t = torch.arange(-30, 30, h, dtype=torch.float64)
    z = torch.linspace(-6, 6, 25, dtype=torch.float64)
    p1 = torch.from_numpy(scipy.stats.norm.pdf(t.numpy(), m1, s1))
    p2 = torch.from_numpy(scipy.stats.norm.pdf((z[:, None] - t[None]).numpy(), m2, s2))
    conv = (p1 * p2).sum(1) * h  # Riemann sum of a Gaussian integrand: error far below 1e-10
    want = appendix.gaussian_log_density(z[:, None], torch.tensor([m1 + m2], dtype=torch.float64),
                                         torch.tensor([[s1**2 + s2**2]], dtype=torch.float64)).exp()
    torch.testing.assert_close(conv, want, rtol=1e-8, atol=1e-12)


@pytest.mark.claim("appendix.gaussian-sum", role="corrects")
def test_sum_of_jointly_gaussian_covariance():
    # multivariate, independent and correlated: sample covariance within 6 standard errors of
    # Sigma1 + Sigma2 (+ C + C^T); the SE of a covariance entry is sqrt((S_ii S_jj + S_ij^2) / n)
    gen = generator(7)
    n, d = 200_000, 2
    S1, S2 = _spd(d, gen), _spd(d, gen)
    L1, L2 = torch.linalg.cholesky(S1), torch.linalg.cholesky(S2)
    e1, e2 = torch.randn(2, n, d, generator=gen, dtype=torch.float64)
    for rho in [0.0, 0.6]:
        z2 = rho * e1 + math.sqrt(1 - rho**2) * e2  # Cov(e1, z2) = rho I
        x1, x2 = e1 @ L1.T, z2 @ L2.T
        C = rho * L1 @ L2.T  # Cov(X1, X2)
        S = S1 + S2 + C + C.T
        emp = torch.cov((x1 + x2).T)
        se = torch.sqrt((torch.diag(S)[:, None] * torch.diag(S)[None] + S**2) / n)
        assert bool(((emp - S).abs() < 6 * se).all())
        if rho:
            assert bool(((emp - (S1 + S2)).abs() > 6 * se).any())


@pytest.mark.claim("appendix.bayes-rule")
@settings(max_examples=10)
@given(seed=seeds(), na=st.integers(1, 5), nb=st.integers(1, 5))
def test_bayes_rule(seed, na, nb):
    gen = generator(seed)
    joint = torch.rand(na, nb, generator=gen, dtype=torch.float64) + 1e-3
    joint /= joint.sum()
    pA, pB = joint.sum(1), joint.sum(0)
    lik = joint / pA[:, None]  # P(B | A)
    post = appendix.bayes_posterior(lik, pA)
    torch.testing.assert_close(post, joint / pB[None, :])  # P(A | B) by definition
    torch.testing.assert_close(post, lik * pA[:, None] / pB[None, :])  # the notes' formula


@pytest.mark.claim("appendix.negative-log-likelihood")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(2, 8))
def test_negative_log_likelihood(seed, d):
    gen = generator(seed)
    logits = torch.randn(6, d, generator=gen, dtype=torch.float64)
    c = torch.randint(d, (6,), generator=gen)
    p = torch.softmax(logits, -1)
    L = ml.negative_log_likelihood(p, F.one_hot(c, d).double())
    torch.testing.assert_close(L, F.nll_loss(p.log(), c, reduction="none"))
    torch.testing.assert_close(L, -torch.log(p[torch.arange(6), c]))


def test_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        appendix.gaussian_log_density(torch.zeros(2), torch.zeros(2), -torch.eye(2))
    with pytest.raises(ValueError, match="sigma"):
        appendix.gaussian_log_density(torch.zeros(2), torch.zeros(2), torch.eye(3))
    with pytest.raises(TypeError, match="x"):
        appendix.gaussian_density([0.0], torch.zeros(1), torch.eye(1))
    with pytest.raises(ValueError, match="prior"):
        appendix.bayes_posterior(torch.ones(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="prior"):
        appendix.bayes_posterior(torch.ones(2, 3), -torch.ones(2))


def test_bad_preconditions_are_rejected_by_name():
    F64 = torch.float64
    x = torch.zeros(2, dtype=F64)
    asym = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64)          # Cholesky would read only the lower half
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=F64)
    cases = [
        (lambda: appendix.gaussian_log_density(x, x, asym), "sigma"),
        (lambda: appendix.gaussian_density(x, x, asym), "sigma"),
        (lambda: appendix.gaussian_density(x, x, singular), "sigma"),
        (lambda: appendix.gaussian_density(x, x, -torch.eye(2, dtype=F64)), "sigma"),
        # mu of the wrong width, or a batch that broadcasts with neither x nor sigma, is mu's fault
        (lambda: appendix.gaussian_density(x, torch.zeros(3, dtype=F64), torch.eye(2, dtype=F64)), "^mu: "),
        (lambda: appendix.gaussian_density(torch.zeros(3, 2, dtype=F64), torch.zeros(4, 2, dtype=F64),
                                           torch.eye(2, dtype=F64)), "^mu: batch shape"),
        (lambda: appendix.gaussian_log_density(torch.zeros(3, 2, dtype=F64), torch.zeros(4, 2, dtype=F64),
                                               torch.eye(2, dtype=F64)), "^mu: batch shape"),
        (lambda: appendix.gaussian_density(torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64),
                                           torch.eye(2, dtype=F64).expand(4, 2, 2)), "^sigma: batch shape"),
        (lambda: appendix.det_rank_one_update(singular, x, x), "A"),
        (lambda: appendix.bayes_posterior(torch.full((2, 2), 0.5, dtype=F64), torch.tensor([0.7, 0.7], dtype=F64)),
         "prior"),
        (lambda: appendix.bayes_posterior(torch.tensor([[1.5, 0.0], [0.0, 1.0]], dtype=F64),
                                          torch.tensor([0.5, 0.5], dtype=F64)), "likelihood"),
        (lambda: appendix.bayes_posterior(torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64),
                                          torch.tensor([0.5, 0.5], dtype=F64)), "likelihood"),    # P(B = 1) = 0
    ]
    for fn, name in cases:
        with pytest.raises((TypeError, ValueError), match=name):
            fn()


def test_bad_inputs_are_refused_by_exact_name():
    F64 = torch.float64
    x, I2 = torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
    lik = torch.full((2, 2), 0.5, dtype=F64)
    pr = torch.tensor([0.5, 0.5], dtype=F64)
    cases = [
        (lambda: appendix.gaussian_log_density([0.0, 0.0], x, I2), TypeError, "^x: "),
        (lambda: appendix.gaussian_log_density(x, [0.0, 0.0], I2), TypeError, "^mu: "),
        (lambda: appendix.gaussian_log_density(x, x, [[1.0, 0.0], [0.0, 1.0]]), TypeError, "^sigma: "),
        (lambda: appendix.gaussian_log_density(x, x, torch.ones(2, dtype=F64)), ValueError, "^sigma: "),
        (lambda: appendix.gaussian_log_density(x, x.float(), I2), TypeError, "^mu: "),
        (lambda: appendix.gaussian_log_density(x, x, torch.eye(3, dtype=F64)), ValueError, "^sigma: "),
        (lambda: appendix.gaussian_log_density(x, x, -I2), ValueError, "^sigma: not positive definite"),
        (lambda: appendix.gaussian_density([0.0, 0.0], x, I2), TypeError, "^x: "),
        (lambda: appendix.gaussian_density(x, [0.0, 0.0], I2), TypeError, "^mu: "),
        (lambda: appendix.gaussian_density(x, x, [[1.0, 0.0], [0.0, 1.0]]), TypeError, "^sigma: "),
        (lambda: appendix.gaussian_density(x, x, I2.float()), TypeError, "^sigma: "),
        (lambda: appendix.det_rank_one_update([[1.0]], x, x), TypeError, "^A: "),
        (lambda: appendix.det_rank_one_update(I2, [0.0, 0.0], x), TypeError, "^u: "),
        (lambda: appendix.det_rank_one_update(I2, x, torch.zeros(3, dtype=F64)), ValueError, "^v: "),
        (lambda: appendix.det_rank_one_update(torch.ones(2, 3, dtype=F64), x, x), ValueError, "^A: "),
        (lambda: appendix.det_rank_one_update(I2, x, x.float()), TypeError, "^v: "),
        (lambda: appendix.bayes_posterior([[0.5]], pr), TypeError, "^likelihood: "),
        (lambda: appendix.bayes_posterior(lik, [0.5, 0.5]), TypeError, "^prior: "),
        (lambda: appendix.bayes_posterior(lik, torch.full((3,), 1 / 3, dtype=F64)), ValueError, "^prior: expected 2"),
        (lambda: appendix.bayes_posterior(lik, pr.float()), TypeError, "^prior: "),
        (lambda: appendix.bayes_posterior(-lik, pr), ValueError, "^likelihood: "),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn()


def test_appendix_functions_broadcast_and_batch():
    # batched inputs: one density per row, one determinant per matrix, posteriors per column
    F64 = torch.float64
    g = generator(3)
    M = torch.randn(4, 3, 3, generator=g, dtype=F64)
    S = M @ M.transpose(-1, -2) + torch.eye(3, dtype=F64)
    x, mu = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    ref = torch.distributions.MultivariateNormal(mu, covariance_matrix=S).log_prob(x)
    torch.testing.assert_close(appendix.gaussian_log_density(x, mu, S), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(appendix.gaussian_density(x, mu, S), ref.exp(), rtol=1e-11, atol=0)
    u, v = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    torch.testing.assert_close(appendix.det_rank_one_update(S, u, v),
                               torch.linalg.det(S + u[..., :, None] * v[..., None, :]), rtol=1e-10, atol=1e-10)
    lik = torch.softmax(torch.randn(2, 3, 5, generator=g, dtype=F64), -1)
    prior = torch.softmax(torch.randn(2, 3, generator=g, dtype=F64), -1)
    post = appendix.bayes_posterior(lik, prior)
    torch.testing.assert_close(post.sum(-2), torch.ones(2, 5, dtype=F64))
    torch.testing.assert_close(post * (lik * prior[..., None]).sum(-2, keepdim=True), lik * prior[..., None])


@pytest.mark.claim("appendix.gaussian-density")
@pytest.mark.claim("appendix.matrix-determinant-lemma")
@pytest.mark.claim("appendix.bayes-rule")
def test_appendix_functions_over_two_batch_axes():
    # two leading batch axes (2, 3): every reduction must run over the event axes (the last ones), which a
    # single batch axis cannot tell from the first axes; references computed one matrix at a time
    F64 = torch.float64
    g = generator(12)
    d = 3
    M = torch.randn(2, 3, d, d, generator=g, dtype=F64)
    S = M @ M.transpose(-1, -2) + torch.eye(d, dtype=F64)
    x, mu = torch.randn(2, 2, 3, d, generator=g, dtype=F64)
    ref = torch.tensor([[scipy.stats.multivariate_normal(mu[i, j].numpy(), S[i, j].numpy()).logpdf(x[i, j].numpy())
                         for j in range(3)] for i in range(2)], dtype=F64)
    torch.testing.assert_close(appendix.gaussian_log_density(x, mu, S), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(appendix.gaussian_density(x, mu, S), ref.exp(), rtol=1e-9, atol=0)
    u, v = torch.randn(2, 2, 3, d, generator=g, dtype=F64)
    det_ref = torch.tensor([[float(np.linalg.det((S[i, j] + torch.outer(u[i, j], v[i, j])).numpy())) for j in range(3)]
                            for i in range(2)], dtype=F64)
    torch.testing.assert_close(appendix.det_rank_one_update(S, u, v), det_ref, rtol=1e-10, atol=1e-10)
    lik = torch.softmax(torch.randn(2, 3, 4, 5, generator=g, dtype=F64), -1)
    prior = torch.softmax(torch.randn(2, 3, 4, generator=g, dtype=F64), -1)
    post = appendix.bayes_posterior(lik, prior)
    for i in range(2):
        for j in range(3):
            joint = lik[i, j] * prior[i, j][:, None]  # P(B = b | A = a) P(A = a), (nA, nB)
            torch.testing.assert_close(post[i, j], joint / joint.sum(0, keepdim=True))
