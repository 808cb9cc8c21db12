"""VAE: KL divergences against scipy / torch.distributions, the ELBO decomposition on a
linear-Gaussian model with an exact posterior, the reparametrisation trick, beta-VAE's KKT form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from impl.vae import (VAE, VRNN, beta_vae_objective, vq_losses, vq_quantise, gaussian_log_prob, kl_categorical, kl_gaussian, kl_monte_carlo,
                      kl_mvn, kl_standard_normal, linear_gaussian_elbo_terms, linear_gaussian_log_marginal,
                      linear_gaussian_posterior, reparametrise)
from spec.testing import generator, randn, seeds, tol


def _probs(seed, K, zeros=False):
    g = generator(seed)
    p = torch.rand(K, generator=g, dtype=torch.float64) + (0.0 if zeros else 0.05)
    if zeros:
        p[torch.rand(K, generator=g, dtype=torch.float64) < 0.3] = 0
        p[0] += 0.1
    return p / p.sum()


def _linear_gaussian(seed, Dx=4, J=2, dtype=torch.float64, device="cpu"):
    W = randn(Dx, J, seed=seed, dtype=dtype, device=device)
    b = randn(Dx, seed=seed + 1, dtype=dtype, device=device)
    x = randn(3, Dx, seed=seed + 2, dtype=dtype, device=device) * 2
    return x, W, b, 0.3


def _random_q(seed, B, J, dtype=torch.float64, device="cpu"):
    m = randn(B, J, seed=seed, dtype=dtype, device=device)
    L = randn(B, J, J, seed=seed + 1, dtype=dtype, device=device) * 0.3
    S = L @ L.transpose(-1, -2) + 0.2 * torch.eye(J, dtype=dtype, device=device)
    return m, S


# ------------------------------------------------------------------------------ KL

@pytest.mark.claim("vae.kl-definition")
@settings(max_examples=10)
@given(seed=seeds(), K=st.integers(2, 8))
def test_kl_categorical_matches_scipy(seed, K):
    p, q = _probs(seed, K, zeros=True), _probs(seed + 1, K)
    assert float(kl_categorical(p, q)) == pytest.approx(scipy.stats.entropy(p.numpy(), q.numpy()), rel=1e-12, abs=1e-14)


@pytest.mark.claim("vae.kl-definition")
def test_kl_gaussian_matches_torch_and_monte_carlo(device, dtype):
    mu_q, lv_q = randn(5, 3, seed=1, dtype=dtype, device=device), randn(5, 3, seed=2, dtype=dtype, device=device) * 0.5
    mu_p, lv_p = randn(5, 3, seed=3, dtype=dtype, device=device), randn(5, 3, seed=4, dtype=dtype, device=device) * 0.5
    ours = kl_gaussian(mu_q, lv_q, mu_p, lv_p)
    ref = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    torch.testing.assert_close(ours, ref, **tol(dtype))
    if dtype == torch.float64:
        est, se = kl_monte_carlo(mu_q, lv_q, mu_p, lv_p, n=4000, generator=generator(0, device))
        assert ((est - ours).abs() < 6 * se).all()  # 6 standard errors


@pytest.mark.claim("vae.kl-definition")
def test_kl_monte_carlo_standard_error():
    # q = N(0, 1), p = N(0, 4): log q(z) - log p(z) = log 2 - 3 z^2 / 8, so KL = log 2 - 3/8 and the
    # per-sample variance is (3/8)^2 Var(z^2) = 9/32; the standard error of the mean is sqrt(9/32/n)
    n = 20000
    z0 = torch.zeros(1, dtype=torch.float64)
    est, se = kl_monte_carlo(z0, z0, z0, z0 + math.log(4.0), n=n, generator=generator(3))
    assert float(se) == pytest.approx(math.sqrt(9 / 32 / n), rel=0.05)  # sample std of z^2: ~1.6 % error at n = 2e4
    assert abs(float(est) - (math.log(2) - 3 / 8)) < 6 * math.sqrt(9 / 32 / n)


@pytest.mark.claim("vae.kl-definition")
def test_kl_is_zero_iff_equal():
    p = _probs(3, 5)
    assert float(kl_categorical(p, p)) == 0.0
    assert float(kl_categorical(p, _probs(4, 5))) > 0


@pytest.mark.claim("vae.kl-asymmetric", role="refutes")
def test_kl_equals_its_reverse_for_some_pairs(record_property):
    # As printed, KL(P||Q) != KL(Q||P) for every pair: false for equal-variance Gaussians (both
    # directions are |mu_p - mu_q|^2 / (2 s^2)) and for a pair of categoricals swapped by a symmetry.
    a = [torch.tensor([v], dtype=torch.float64) for v in (0.0, 0.0, 1.0, 0.0)]
    pq, qp = float(kl_gaussian(a[0], a[1], a[2], a[3])), float(kl_gaussian(a[2], a[3], a[0], a[1]))
    assert pq == pytest.approx(0.5, rel=1e-15) and qp == pytest.approx(0.5, rel=1e-15) and pq == qp
    p, q = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)
    torch.testing.assert_close(kl_categorical(p, q), kl_categorical(q, p), rtol=1e-15, atol=0)
    assert float(kl_categorical(p, q)) > 0.5  # P != Q, yet the two directions agree
    record_property("evidence", "KL(N(0,1)||N(1,1)) = KL(N(1,1)||N(0,1)) = 0.5; "
                    "KL((.7,.2,.1)||(.1,.2,.7)) equals its reverse")


@pytest.mark.claim("vae.kl-asymmetric", role="corrects")
def test_kl_is_not_symmetric(record_property):
    pq = float(kl_gaussian(*(torch.tensor([v], dtype=torch.float64) for v in (0.0, 0.0, 1.0, math.log(4.0)))))
    qp = float(kl_gaussian(*(torch.tensor([v], dtype=torch.float64) for v in (1.0, math.log(4.0), 0.0, 0.0))))
    # by hand: KL(N(0,1)||N(1,4)) = log 2 + (1 + 1)/8 - 1/2 ; KL(N(1,4)||N(0,1)) = -log 2 + (4 + 1)/2 - 1/2
    assert pq == pytest.approx(math.log(2) + 0.25 - 0.5, rel=1e-14)
    assert qp == pytest.approx(-math.log(2) + 2.5 - 0.5, rel=1e-14)
    p, q = torch.tensor([0.9, 0.1], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert abs(float(kl_categorical(p, q) - kl_categorical(q, p))) > 0.05
    record_property("evidence", f"KL(N(0,1)||N(1,4)) = {pq:.4f} vs KL(N(1,4)||N(0,1)) = {qp:.4f}")


@pytest.mark.claim("vae.kl-nonnegative")
@settings(max_examples=15)
@given(seed=seeds(), K=st.integers(2, 10))
def test_kl_is_nonnegative(seed, K):
    assert float(kl_categorical(_probs(seed, K, zeros=True), _probs(seed + 1, K))) >= 0
    mu, lv = randn(2, K, seed=seed), randn(2, K, seed=seed + 2) * 3
    assert (kl_gaussian(mu, lv, mu.flip(0), lv.flip(0)) >= 0).all()
    assert (kl_standard_normal(mu, lv) >= 0).all()


# ----------------------------------------------------------------- ELBO, linear-Gaussian

@pytest.mark.claim("vae.marginal-likelihood")
def test_marginal_likelihood_is_the_integral_over_z():
    W = torch.tensor([[1.3], [-0.4]], dtype=torch.float64)
    b = torch.tensor([0.2, 0.1], dtype=torch.float64)
    s2 = 0.5
    x = torch.tensor([[0.7, -1.1]], dtype=torch.float64)

    def integrand(z):
        # p(x | z) = N(W z + b, s2 I): a product of two 1-D normal densities
        lik = np.prod(scipy.stats.norm.pdf(x[0].numpy(), loc=(W[:, 0] * z + b).numpy(), scale=math.sqrt(s2)))
        return lik * scipy.stats.norm.pdf(z)

    integral, _ = scipy.integrate.quad(integrand, -12, 12, epsabs=1e-14, epsrel=1e-12)
    assert float(linear_gaussian_log_marginal(x, W, b, s2)[0]) == pytest.approx(math.log(integral), rel=1e-10)


@pytest.mark.claim("vae.elbo-decomposition")
@settings(max_examples=20)
@given(seed=seeds())
def test_log_p_equals_elbo_plus_kl_to_posterior(seed):
    x, W, b, s2 = _linear_gaussian(seed)
    m, S = _random_q(seed + 5, 3, 2)
    recon, kl_prior, kl_post = linear_gaussian_elbo_terms(x, W, b, s2, m, S)
    torch.testing.assert_close(recon - kl_prior + kl_post, linear_gaussian_log_marginal(x, W, b, s2), rtol=1e-12, atol=1e-11)


@pytest.mark.claim("vae.elbo-decomposition")
def test_elbo_terms_against_independent_references(device):
    x, W, b, s2 = _linear_gaussian(3, device=device)
    m, S = _random_q(8, 3, 2, device=device)
    recon, kl_prior, kl_post = linear_gaussian_elbo_terms(x, W, b, s2, m, S)
    q = MultivariateNormal(m, covariance_matrix=S)
    prior = MultivariateNormal(torch.zeros_like(m), covariance_matrix=torch.eye(2, dtype=x.dtype, device=device))
    pm, pS = linear_gaussian_posterior(x, W, b, s2)
    torch.testing.assert_close(kl_prior, kl_divergence(q, prior), **tol(torch.float64))
    torch.testing.assert_close(kl_post, kl_divergence(q, MultivariateNormal(pm, covariance_matrix=pS)), **tol(torch.float64))
    z = q.rsample((20000,))  # Monte-Carlo reconstruction term
    ll = Normal(z @ W.T + b, math.sqrt(s2)).log_prob(x).sum(-1)
    se = ll.std(0) / math.sqrt(20000)
    assert ((ll.mean(0) - recon).abs() < 6 * se).all()
    # posterior by Bayes: p(z | x) proportional to p(x | z) p(z) -> compare its log density up to the constant
    zz = randn(5, 2, seed=9, device=device)
    lhs = MultivariateNormal(pm[0], covariance_matrix=pS).log_prob(zz)
    rhs = Normal(zz @ W.T + b, math.sqrt(s2)).log_prob(x[0]).sum(-1) + Normal(0.0, 1.0).log_prob(zz).sum(-1)
    d = lhs - rhs
    torch.testing.assert_close(d, d[:1].expand_as(d), **tol(torch.float64))


@pytest.mark.claim("vae.categorical-latent")
@settings(max_examples=10)
@given(seed=seeds(), K=st.integers(2, 6))
def test_decomposition_with_categorical_z(seed, K):
    g = generator(seed)
    prior = _probs(seed, K)
    lik = torch.rand(K, generator=g, dtype=torch.float64)  # p(x | z) for one fixed x, each z
    q = _probs(seed + 2, K)
    px = (lik * prior).sum()
    post = lik * prior / px
    rhs = (q * lik.log()).sum() - kl_categorical(q, prior) + kl_categorical(q, post)
    assert float(rhs) == pytest.approx(float(px.log()), rel=1e-12, abs=1e-13)


@pytest.mark.claim("vae.elbo-lower-bound")
@pytest.mark.claim("generative.variational-approximate")
@settings(max_examples=20)
@given(seed=seeds())
def test_elbo_is_a_lower_bound_tight_at_the_posterior(seed):
    x, W, b, s2 = _linear_gaussian(seed)
    logp = linear_gaussian_log_marginal(x, W, b, s2)
    m, S = _random_q(seed + 1, 3, 2)
    recon, kl_prior, _ = linear_gaussian_elbo_terms(x, W, b, s2, m, S)
    assert ((recon - kl_prior) < logp).all()
    pm, pS = linear_gaussian_posterior(x, W, b, s2)
    recon, kl_prior, kl_post = linear_gaussian_elbo_terms(x, W, b, s2, pm, pS)
    torch.testing.assert_close(recon - kl_prior, logp, rtol=1e-12, atol=1e-11)
    assert (kl_post.abs() < 1e-12).all()


@pytest.mark.slow
@pytest.mark.claim("vae.elbo-lower-bound")
def test_maximising_the_elbo_finds_the_posterior():
    x, W, b, s2 = _linear_gaussian(21)
    m = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    L = torch.eye(2, dtype=torch.float64).repeat(3, 1, 1).requires_grad_()
    opt = torch.optim.LBFGS([m, L], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        Lt = torch.tril(L)
        r, k, _ = linear_gaussian_elbo_terms(x, W, b, s2, m, Lt @ Lt.transpose(-1, -2))
        loss = -(r - k).sum()
        loss.backward()
        return loss

    opt.step(closure)
    pm, _ = linear_gaussian_posterior(x, W, b, s2)
    torch.testing.assert_close(m.detach(), pm, rtol=1e-6, atol=1e-6)  # L-BFGS to gradient 1e-12


@pytest.mark.claim("vae.orange-reconstruction", role="refutes")
def test_orange_grows_as_reconstruction_improves(record_property):
    """A loss falls as the reconstruction improves; Orange (the expected decoder log-likelihood,
    maximised with the ELBO) rises: it is minus the loss."""
    x = torch.zeros(1, 3, dtype=torch.float64)
    lv = torch.zeros(1, 3, dtype=torch.float64)
    perfect, off = float(gaussian_log_prob(x, x, lv)), float(gaussian_log_prob(x, x + 1, lv))
    mse_perfect, mse_off = 0.0, 3.0
    assert perfect > off and mse_perfect < mse_off  # orders opposite: Orange is not the loss
    assert perfect == pytest.approx(-1.5 * math.log(2 * math.pi), rel=1e-15)
    assert off == pytest.approx(-1.5 * math.log(2 * math.pi) - 1.5, rel=1e-15)
    record_property("evidence", f"s^2 = 1, 3-D: Orange {perfect:.2f} at zero error, {off:.2f} at error 1 per coordinate")


@pytest.mark.claim("vae.orange-reconstruction", role="corrects")
def test_gaussian_decoder_term_is_squared_error(device, dtype):
    x, mu = randn(4, 6, seed=1, dtype=dtype, device=device), randn(4, 6, seed=2, dtype=dtype, device=device)
    s2 = 0.7
    lv = torch.full_like(x, math.log(s2))
    ours = gaussian_log_prob(x, mu, lv)
    ref = -((x - mu) ** 2).sum(-1) / (2 * s2) - 3 * math.log(2 * math.pi * s2)
    torch.testing.assert_close(ours, ref, **tol(dtype))
    torch.testing.assert_close(ours, Normal(mu, math.sqrt(s2)).log_prob(x).sum(-1), **tol(dtype))


@pytest.mark.claim("vae.purple-prior-matching")
def test_kl_to_prior_pulls_to_the_prior():
    mu = torch.tensor([1.5, -2.0], dtype=torch.float64, requires_grad=True)
    lv = torch.tensor([-3.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([mu, lv], lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        kl_standard_normal(mu, lv).backward()
        opt.step()
    torch.testing.assert_close(mu.detach(), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(lv.detach(), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-6)
    assert float(kl_standard_normal(torch.zeros(3), torch.zeros(3))) == 0.0


@pytest.mark.claim("vae.purple-prior-matching")
def test_kl_to_prior_is_finite_and_accurate_at_extremes():
    mu = torch.tensor([0.0, 0.0, 1e3], dtype=torch.float32)
    lv = torch.tensor([-80.0, 1e-7, 50.0], dtype=torch.float32)
    kl = kl_standard_normal(mu[:, None], lv[:, None])
    assert torch.isfinite(kl).all()
    # log-variance 1e-7: KL = (e^l - 1 - l) / 2 = l^2 / 4 to first order, no cancellation
    assert float(kl[1]) == pytest.approx(0.25e-14, rel=1e-3)


@pytest.mark.claim("vae.reparametrisation")
def test_reparametrised_samples_have_law_n_mu_sigma(device):
    mu = torch.tensor([0.5, -2.0], dtype=torch.float64, device=device)
    lv = torch.tensor([0.3, -1.0], dtype=torch.float64, device=device)
    n = 20000
    z = reparametrise(mu, lv, n=n, generator=generator(1, device))
    var = lv.exp()
    assert ((z.mean(0) - mu).abs() < 6 * (var / n).sqrt()).all()
    assert ((z.var(0) - var).abs() < 6 * var * math.sqrt(2 / n)).all()
    ks = scipy.stats.kstest(((z[:, 0] - mu[0]) / var[0].sqrt()).cpu().numpy(), "norm")
    assert ks.pvalue > 1e-6


@pytest.mark.claim("vae.reparametrisation")
def test_gradients_pass_through_the_sample():
    mu = torch.randn(3, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(3, dtype=torch.float64, requires_grad=True)
    z = reparametrise(mu, lv, generator=generator(5))
    eps = torch.randn(3, generator=generator(5), dtype=torch.float64)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(3, dtype=torch.float64))
    sigma = (0.5 * lv).exp()
    torch.testing.assert_close(lv.grad, eps * 0.5 * sigma.detach())  # dz/dsigma = eps, dsigma/dlv = sigma/2
    assert torch.autograd.gradcheck(lambda a, b: reparametrise(a, b, generator=generator(5)), (mu.detach().requires_grad_(),
                                                                                                lv.detach().requires_grad_()))


@pytest.mark.claim("vae.pipeline")
@pytest.mark.claim("vae.ancestral-sampling")
def test_vae_pipeline_shapes_and_gradients(device):
    torch.manual_seed(0)
    model = VAE(5, 2, hidden=8).to(device, torch.float64)
    x = randn(4, 5, seed=1, device=device)
    mu, lv = model.encode(x)
    assert mu.shape == lv.shape == (4, 2)
    z = reparametrise(mu, lv, generator=generator(0, device))
    mx, lx = model.decode(z)
    assert mx.shape == lx.shape == (4, 5)
    assert model.sample(3, generator=generator(1, device)).shape == (3, 5)
    assert model.reconstruct(x).shape == (4, 5)
    recon, kl = model.elbo_terms(x, n=3, generator=generator(2, device))
    torch.testing.assert_close(model.elbo(x, n=3, generator=generator(2, device)), recon - kl)
    torch.testing.assert_close(kl, kl_standard_normal(mu, lv))
    # the reconstruction term is the sample mean of log N(x; mu_x(z), s_x^2(z)) over the same draws
    z = reparametrise(mu, lv, n=3, generator=generator(2, device))
    mx, lx = model.decode(z)
    ref = Normal(mx, (0.5 * lx).exp()).log_prob(x).sum(-1).mean(0)
    torch.testing.assert_close(recon, ref, **tol(torch.float64))
    torch.testing.assert_close(model.reconstruct(x), model.decode(mu)[0])
    model.elbo(x, generator=generator(3, device)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.claim("vae.ancestral-sampling")
def test_ancestral_samples_have_the_marginal_law():
    torch.manual_seed(0)
    model = VAE(2, 1, hidden=4).double()
    A = torch.tensor([[1.5], [-0.5]], dtype=torch.float64)
    a = torch.tensor([0.3, -0.2], dtype=torch.float64)
    lin = torch.nn.Linear(1, 4).double()
    with torch.no_grad():  # decoder: mean A z + a, log-variance log 0.25 (constant)
        lin.weight.copy_(torch.cat([A, torch.zeros(2, 1, dtype=torch.float64)]))
        lin.bias.copy_(torch.cat([a, torch.full((2,), math.log(0.25), dtype=torch.float64)]))
    model.decoder = torch.nn.Sequential(lin)
    n = 40000
    x = model.sample(n, generator=generator(3)).detach()
    cov = A @ A.T + 0.25 * torch.eye(2, dtype=torch.float64)
    assert ((x.mean(0) - a).abs() < 6 * (cov.diagonal() / n).sqrt()).all()
    xc = x - a
    prod = xc[:, :, None] * xc[:, None, :]
    se = prod.std(0) / math.sqrt(n)
    assert ((prod.mean(0) - cov).abs() < 6 * se).all()


@pytest.mark.claim("vae.elbo-lower-bound")
def test_vrnn_expected_elbo_is_below_log_likelihood():
    import itertools

    torch.manual_seed(5)
    model = VRNN(1, 1, 5).double()
    seqs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)[:, :, None]
    x = seqs[6:7].expand(len(seqs), -1, -1)  # one x, every z
    with torch.no_grad():
        logp = torch.logsumexp(model.log_joint(x, seqs), 0)
        q = model.log_q(x, seqs).exp()
        elbo = model.elbo(x, seqs)
        torch.testing.assert_close(elbo, model.log_joint(x, seqs) - model.log_q(x, seqs))
        assert float((q * elbo).sum()) < float(logp)
        # with q = the exact posterior p(z | x) the bound is tight
        post = (model.log_joint(x, seqs) - logp).exp()
        assert float((post * (model.log_joint(x, seqs) - post.log())).sum()) == pytest.approx(float(logp), abs=1e-12)


def test_log_densities_finite_for_tiny_variances():
    x = torch.tensor([[0.0, 1.0]], dtype=torch.float32)
    lv = torch.tensor([[-80.0, -80.0]])
    out = gaussian_log_prob(x, x, lv)
    assert torch.isfinite(out).all() and float(out) > 0


# -------------------------------------------------------------------------- beta-VAE

@pytest.mark.claim("vae.inference-mean")
def test_inference_uses_the_posterior_mean_which_is_also_its_mode():
    torch.manual_seed(3)
    vae = VAE(3, 2, hidden=5).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    mu, logvar = vae.encode(x)
    z = reparametrise(mu, logvar, n=4000, generator=generator(1))
    # mu is the mean (6 SE) and the mode of q(z | x)
    se = (logvar.exp() / 4000).sqrt()
    assert ((z.mean(0) - mu).abs() < 6 * se).all()
    assert (gaussian_log_prob(mu, mu, logvar) >= gaussian_log_prob(z, mu, logvar)).all()
    # the reconstruction decodes mu, deterministically; a sampled z gives another output each time
    rec = vae.reconstruct(x)
    torch.testing.assert_close(rec, vae.decode(mu)[0], rtol=0, atol=0)
    torch.testing.assert_close(vae.reconstruct(x), rec, rtol=0, atol=0)
    assert not torch.allclose(vae.decode(z[0])[0], vae.decode(z[1])[0])


@pytest.mark.claim("vae.beta-vae-kkt", role="refutes")
def test_kkt_point_of_a_nonconcave_problem_is_not_the_lagrangian_maximiser():
    # max x^2 s.t. x <= 1 on [0, 2]: the constrained optimum is x = 1 (SLSQP from inside the set)
    con = scipy.optimize.minimize(lambda p: -p[0] ** 2, [0.3], method="SLSQP", bounds=[(0, 2)],
                                  constraints=[{"type": "ineq", "fun": lambda p: 1 - p[0]}])
    assert con.success and con.x[0] == pytest.approx(1.0, abs=1e-8)
    # KKT at x = 1: stationarity f'(1) = beta c'(1) gives beta = 2 >= 0, and the constraint is active
    beta_kkt = 2 * con.x[0]
    assert beta_kkt == pytest.approx(2.0) and beta_kkt >= 0
    # ... yet x = 1 minimises x^2 - 2 x on [0, 2], and for no beta >= 0 is it a maximiser
    xs = np.linspace(0, 2, 2001)
    lag = xs ** 2 - beta_kkt * xs
    assert lag[1000] == pytest.approx(-1.0) and lag[1000] == lag.min() and lag.max() == pytest.approx(0.0)
    for beta in np.linspace(0, 10, 101):
        best = xs[np.argmax(xs ** 2 - beta * xs)]
        assert best in (0.0, 2.0)


@pytest.mark.claim("vae.beta-vae-kkt", role="corrects")
@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_beta_vae_lagrangian_solves_the_constrained_problem(beta, record_property):
    # 1-D model p(z) = N(0, 1), p(x | z) = N(w z, s^2), q = N(m, v): Orange and Purple in closed form.
    w, s2, x = 1.7, 0.4, 1.3

    def orange(m, v):
        return -0.5 * math.log(2 * math.pi * s2) - ((x - w * m) ** 2 + w * w * v) / (2 * s2)

    def purple(m, v):
        return 0.5 * (v + m * m - 1 - math.log(v))

    # maximise the Lagrangian Orange - beta Purple numerically (no closed form assumed)
    lag = scipy.optimize.minimize(lambda p: -beta_vae_objective(torch.tensor(orange(p[0], math.exp(p[1]))),
                                                                torch.tensor(purple(p[0], math.exp(p[1]))), beta).item(),
                                  [0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    m_b, v_b = lag.x[0], math.exp(lag.x[1])
    delta = purple(m_b, v_b)
    # the constrained problem: max Orange s.t. Purple <= delta
    con = scipy.optimize.minimize(lambda p: -orange(p[0], p[1]), [0.0, 1.0], method="SLSQP", bounds=[(-10, 10), (1e-6, 10)],
                                  constraints=[{"type": "ineq", "fun": lambda p: delta - purple(p[0], p[1])}],
                                  options={"ftol": 1e-15, "maxiter": 500})
    assert con.success, con.message
    assert con.x[0] == pytest.approx(m_b, abs=1e-5)
    assert con.x[1] == pytest.approx(v_b, abs=1e-5)
    if beta == 1.0:  # the ELBO: its maximiser is the exact posterior
        assert m_b == pytest.approx(w * x / (w * w + s2), abs=1e-6)
        assert v_b == pytest.approx(s2 / (w * w + s2), abs=1e-6)
    record_property("evidence", f"beta={beta}: Lagrangian optimum (m, v) = ({m_b:.6f}, {v_b:.6f}) = constrained "
                                f"optimum for delta = {delta:.5f}")


@pytest.mark.claim("vae.beta-vae-kkt", role="corrects")
def test_beta_vae_objective_values_and_effect_of_beta():
    recon = torch.tensor([-3.0, -1.5], dtype=torch.float64)
    kl = torch.tensor([0.5, 2.0], dtype=torch.float64)
    for beta in (0.0, 1.0, 4.0):
        torch.testing.assert_close(beta_vae_objective(recon, kl, beta), recon - beta * kl, rtol=0, atol=0)
    # 1-D model p(z) = N(0,1), p(x|z) = N(w z, s2), q = N(m, v): the maximiser of Orange - beta Purple is
    # m = w x / (w^2 + beta s2), v = beta s2 / (w^2 + beta s2) (set the derivatives to zero); its KL falls with beta
    w, s2, x = 1.7, 0.4, 1.3
    kls = []
    for beta in (1.0, 4.0):
        m, v = w * x / (w * w + beta * s2), beta * s2 / (w * w + beta * s2)
        mt = torch.tensor(m, dtype=torch.float64, requires_grad=True)
        lv = torch.tensor(math.log(v), dtype=torch.float64, requires_grad=True)
        orange = -0.5 * math.log(2 * math.pi * s2) - ((x - w * mt) ** 2 + w * w * lv.exp()) / (2 * s2)
        purple = kl_standard_normal(mt[None], lv[None])
        beta_vae_objective(orange, purple, beta).backward()
        assert abs(float(mt.grad)) < 1e-12 and abs(float(lv.grad)) < 1e-12  # stationary: the analytic optimum
        kls.append(float(purple.detach()))
    assert kls[1] < kls[0]


@pytest.mark.claim("autoregressive.vq-vae")
def test_vq_commitment_weight_defaults_to_a_quarter():
    # van den Oord et al. (2017) use beta = 0.25 for the commitment loss
    z, codebook = randn(3, 2, seed=41), randn(4, 2, seed=42)
    _, idx = vq_quantise(z, codebook)
    book, commit = vq_losses(z, codebook, idx)
    torch.testing.assert_close(commit, 0.25 * ((z - codebook[idx]) ** 2).mean())
    torch.testing.assert_close(book, ((z - codebook[idx]) ** 2).mean())


# ---------------------------------------------------------------------------- inputs

def test_bad_inputs_are_rejected():
    t = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="^q:"):
        kl_categorical(torch.ones(3) / 3, torch.ones(4) / 4)
    with pytest.raises(ValueError, match="^p:"):
        kl_categorical(torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5]))
    with pytest.raises(TypeError, match="^mu:"):
        gaussian_log_prob(t, [0.0], t)
    with pytest.raises(TypeError, match="^logvar_p:"):
        kl_gaussian(t, t, t, t.double())
    with pytest.raises(ValueError, match="^logvar:"):
        kl_standard_normal(t, torch.zeros(3))
    with pytest.raises(ValueError, match="^n:"):
        reparametrise(t, t, n=0)
    with pytest.raises(ValueError, match="^n:"):
        kl_monte_carlo(t, t, t, t, n=1)
    with pytest.raises(ValueError, match="^S0:"):
        kl_mvn(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="^sigma2:"):
        linear_gaussian_log_marginal(t, torch.zeros(3, 1), torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="^W:"):
        linear_gaussian_posterior(t, torch.zeros(2, 1), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="^m:"):
        linear_gaussian_elbo_terms(t, torch.zeros(3, 1), torch.zeros(3), 1.0, torch.zeros(2, 2), torch.eye(1))
    with pytest.raises(ValueError, match="^x_dim:"):
        VAE(0, 2)
    with pytest.raises(ValueError, match="^x:"):
        VAE(3, 2).encode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^z:"):
        VAE(3, 2).decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="^n:"):
        VAE(3, 2).sample(0)
    with pytest.raises(ValueError, match="^indices:"):
        vq_losses(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="^beta:"):
        vq_losses(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(2, dtype=torch.long), beta=-1.0)
    with pytest.raises(ValueError, match="^beta:"):
        beta_vae_objective(torch.zeros(2), torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="^h_dim:"):
        VRNN(1, 1, 0)
    with pytest.raises(ValueError, match="^z:"):
        VRNN(1, 1, 4).log_joint(torch.zeros(2, 3, 1), torch.zeros(2, 2, 1))
    with pytest.raises(ValueError, match="^x:"):
        VRNN(1, 1, 4).log_joint(torch.full((2, 3, 1), 0.5), torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match="^S:"):
        linear_gaussian_elbo_terms(t, torch.zeros(3, 1), torch.zeros(3), 1.0, torch.zeros(2, 1), torch.eye(2))


def test_kl_mvn_rejects_covariances_that_are_not_positive_definite():
    m = torch.zeros(2, dtype=torch.float64)
    I = torch.eye(2, dtype=torch.float64)
    bad = torch.diag(torch.tensor([1.0, -0.5], dtype=torch.float64))  # a negative eigenvalue (KL came out -1)
    with pytest.raises(ValueError, match="S0.*positive definite"):
        kl_mvn(m, bad, m, I)
    with pytest.raises(ValueError, match="S1.*positive definite"):
        kl_mvn(m, I, m, bad)
    with pytest.raises(ValueError, match="S0.*positive definite"):
        kl_mvn(m, torch.zeros(2, 2, dtype=torch.float64), m, I)  # singular: log det = -inf
    with pytest.raises(ValueError, match="S1.*symmetric"):
        kl_mvn(m, I, m, torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="^m0:"):
        kl_mvn(torch.zeros((), dtype=torch.float64), I, m, I)


def test_kl_gaussian_shapes_are_checked_not_broadcast_by_accident():
    a, b = torch.zeros(4, 3), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="^logvar_q:"):
        kl_gaussian(a, b, a, a)
    with pytest.raises(ValueError, match="^mu_p:"):
        kl_gaussian(a, a, b, a)
    with pytest.raises(ValueError, match="^logvar_p:"):
        kl_gaussian(a, a, a, torch.zeros(5, 4, 3))  # would grow the result
    with pytest.raises(ValueError, match="^mu_q:"):
        kl_gaussian(torch.zeros(()), torch.zeros(()), torch.zeros(()), torch.zeros(()))
    with pytest.raises(ValueError, match="^mu:"):
        gaussian_log_prob(a, b, a)
    with pytest.raises(ValueError, match="^mu_p:"):
        kl_monte_carlo(a, a, b, a, n=4)
    # a prior (J,) for a batch (B, J) is a legitimate broadcast
    torch.testing.assert_close(kl_gaussian(a, a, torch.zeros(3), torch.zeros(3)), torch.zeros(4))


def test_kl_categorical_needs_probability_vectors():
    with pytest.raises(ValueError, match="^p:"):
        kl_categorical(torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="^q:"):
        kl_categorical(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.2]))


def test_generators_must_live_where_the_samples_are_drawn():
    with pytest.raises(TypeError, match="^generator:"):
        reparametrise(torch.zeros(3), torch.zeros(3), generator=1)
    with pytest.raises(TypeError, match="^generator:"):
        VAE(3, 2).sample(2, generator="cpu")


def test_extreme_but_valid_inputs_stay_finite():
    mu = torch.tensor([[1e3, -1e3]], dtype=torch.float64)
    lv = torch.tensor([[-700.0, 700.0]], dtype=torch.float64)
    assert torch.isfinite(kl_standard_normal(mu, torch.zeros_like(mu))).all()
    assert torch.isfinite(kl_gaussian(mu, torch.zeros_like(mu), -mu, torch.zeros_like(mu))).all()
    assert torch.isfinite(gaussian_log_prob(mu, mu, torch.full_like(mu, -300.0))).all()
    S = torch.diag(torch.tensor([1e-150, 1e150], dtype=torch.float64))
    assert torch.isfinite(kl_mvn(torch.zeros(2, dtype=torch.float64), S, torch.zeros(2, dtype=torch.float64), S))
    del lv


def test_models_round_trip_their_state_dict():
    torch.manual_seed(0)
    for make, args in ((VAE, (3, 2)), (VRNN, (1, 1, 4))):
        a, b = make(*args).double(), make(*args).double()
        b.load_state_dict(a.state_dict())
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    x = torch.randn(5, 3, dtype=torch.float64)
    a, b = VAE(3, 2).double(), VAE(3, 2).double()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.reconstruct(x), a.reconstruct(x), rtol=0, atol=0)
    xs = torch.randint(0, 2, (2, 4, 1), generator=generator(0)).double()
    va, vb = VRNN(1, 1, 4).double(), VRNN(1, 1, 4).double()
    vb.load_state_dict(va.state_dict())
    torch.testing.assert_close(vb.log_joint(xs, xs), va.log_joint(xs, xs), rtol=0, atol=0)


def test_every_precondition_of_the_linear_gaussian_and_vq_functions_is_checked():
    f64 = dict(dtype=torch.float64)
    x, W, b = torch.zeros(2, 3, **f64), torch.zeros(3, 1, **f64), torch.zeros(3, **f64)
    m, S = torch.zeros(2, 1, **f64), torch.eye(1, **f64)
    cases = [
        (lambda: linear_gaussian_posterior(torch.zeros(3, **f64), W, b, 1.0), ValueError, "^x:"),
        (lambda: linear_gaussian_posterior(x, W, torch.zeros(2, **f64), 1.0), ValueError, "^b:"),
        (lambda: linear_gaussian_posterior(x, W, b, 0.0), ValueError, "^sigma2:"),
        (lambda: linear_gaussian_posterior(x, W.float(), b, 1.0), TypeError, "^W:"),
        (lambda: linear_gaussian_posterior(x, W, b.float(), 1.0), TypeError, "^b:"),
        (lambda: linear_gaussian_elbo_terms(torch.zeros(3, **f64), W, b, 1.0, m, S), ValueError, "^x:"),
        (lambda: linear_gaussian_elbo_terms(x, torch.zeros(2, 1, **f64), b, 1.0, m, S), ValueError, "^W:"),
        (lambda: linear_gaussian_elbo_terms(x, W, torch.zeros(2, **f64), 1.0, m, S), ValueError, "^b:"),
        (lambda: linear_gaussian_elbo_terms(x, W, b, 0.0, m, S), ValueError, "^sigma2:"),
        (lambda: linear_gaussian_elbo_terms(x, W, b, 1.0, m, torch.ones(1, **f64)), ValueError, "^S:"),
        (lambda: linear_gaussian_elbo_terms(x, W, b, 1.0, m, torch.ones(3, 1, 1, **f64)), ValueError, "^S:"),
        (lambda: linear_gaussian_elbo_terms(x, W.float(), b, 1.0, m, S), TypeError, "^W:"),
        (lambda: linear_gaussian_elbo_terms(x, W, b.float(), 1.0, m, S), TypeError, "^b:"),
        (lambda: linear_gaussian_elbo_terms(x, W, b, 1.0, m.float(), S), TypeError, "^m:"),
        (lambda: linear_gaussian_elbo_terms(x, W, b, 1.0, m, S.float()), TypeError, "^S:"),
        (lambda: beta_vae_objective([0.0], torch.zeros(1), 1.0), TypeError, "^recon:"),
        (lambda: beta_vae_objective(torch.zeros(2), torch.zeros(3), 1.0), ValueError, "^kl:"),
        (lambda: vq_quantise([0.0], torch.zeros(2, 1)), TypeError, "^z:"),
        (lambda: vq_quantise(torch.zeros(2, 1), torch.zeros(2)), ValueError, "^codebook:"),
        (lambda: vq_quantise(torch.zeros(2, 1), torch.zeros(2, 1, **f64)), TypeError, "^codebook:"),
        (lambda: vq_losses([0.0], torch.zeros(2, 1), torch.zeros(1, dtype=torch.long)), TypeError, "^z:"),
        (lambda: vq_losses(torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, dtype=torch.long)), ValueError, "^codebook:"),
        (lambda: vq_losses(torch.zeros(2, 1), torch.zeros(4, 1), torch.zeros(2)), TypeError, "^indices:"),
        (lambda: vq_losses(torch.zeros(2, 1), torch.zeros(4, 1, **f64), torch.zeros(2, dtype=torch.long)), TypeError, "^codebook:"),
        (lambda: vq_losses(torch.zeros(2, 1), torch.zeros(4, 3), torch.zeros(2, dtype=torch.long)), ValueError, "^codebook:"),
        (lambda: vq_losses(torch.zeros(2, 1), torch.zeros(4, 1), torch.full((2,), 4)), ValueError, "^indices:"),
        (lambda: kl_mvn(torch.zeros(2, **f64), torch.eye(2, **f64), torch.zeros(3, **f64), torch.eye(2, **f64)), ValueError, "^m1:"),
        (lambda: kl_mvn(torch.zeros(2, **f64), torch.eye(2, **f64), torch.zeros(2, **f64), torch.eye(3, **f64)), ValueError, "^S1:"),
        (lambda: kl_mvn(torch.zeros(2, **f64), torch.eye(2), torch.zeros(2, **f64), torch.eye(2, **f64)), TypeError, "^S0:"),
        (lambda: kl_mvn(torch.zeros(2, **f64), torch.eye(2, **f64), torch.zeros(2), torch.eye(2, **f64)), TypeError, "^m1:"),
        (lambda: kl_mvn(torch.zeros(2, **f64), torch.eye(2, **f64), torch.zeros(2, **f64), torch.eye(2)), TypeError, "^S1:"),
        (lambda: kl_mvn([0.0, 0.0], torch.eye(2, **f64), torch.zeros(2, **f64), torch.eye(2, **f64)), TypeError, "^m0:"),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            fn()


def test_kl_mvn_symmetry_check_is_relative_to_each_matrix_and_tolerates_rounding():
    f64 = dict(dtype=torch.float64)
    z = torch.zeros(2, 2, **f64)
    # a tiny covariance with a relative asymmetry of 1e-6: rejected (an absolute test would pass it)
    tiny = 1e-8 * torch.tensor([[1.0, 1e-6], [0.0, 1.0]], **f64)
    with pytest.raises(ValueError, match="^S1:.*symmetric"):
        kl_mvn(torch.zeros(2, **f64), torch.eye(2, **f64), torch.zeros(2, **f64), tiny)
    # batched: the second matrix of the batch is the asymmetric one
    batch = torch.stack([torch.eye(2, **f64), torch.tensor([[1.0, 0.3], [0.0, 1.0]], **f64)])
    with pytest.raises(ValueError, match="^S0:.*symmetric"):
        kl_mvn(z, batch, z, torch.eye(2, **f64).expand(2, 2, 2))
    # rounding-level asymmetry (relative 1e-12) is accepted, and the value is the symmetric one's
    S = torch.tensor([[2.0, 0.5], [0.5, 1.0]], **f64)
    Sr = S.clone()
    Sr[0, 1] += 1e-12
    torch.testing.assert_close(kl_mvn(torch.zeros(2, **f64), Sr, torch.ones(2, **f64), S),
                               kl_mvn(torch.zeros(2, **f64), S, torch.ones(2, **f64), S), rtol=1e-10, atol=1e-12)


def test_vae_elbo_uses_one_sample_by_default():
    torch.manual_seed(4)
    vae = VAE(3, 2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    a = vae.elbo_terms(x, generator=generator(1))
    b = vae.elbo_terms(x, n=1, generator=generator(1))
    c = vae.elbo_terms(x, n=2, generator=generator(1))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert not torch.allclose(a[0], c[0])
    torch.testing.assert_close(vae.elbo(x, generator=generator(1)), a[0] - a[1], rtol=0, atol=0)
