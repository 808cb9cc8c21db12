"""ML section: perceptron, MLE/MAP, cross-entropies, universal approximation, MLP backward."""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import ml
from impl.activations import ACTIVATIONS
from spec.testing import generator, randn, seeds, tol

# ----------------------------------------------------------------------------------- perceptron


@pytest.mark.claim("ml.perceptron-convergence")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(1, 5), n=st.integers(2, 60))
def test_perceptron_mistake_bound_on_separable_data(seed, d, n):
    g = generator(seed)
    u = torch.randn(d + 1, generator=g, dtype=torch.float64)
    u /= u.norm()  # a unit separator (w, b) of the augmented inputs
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    Xa = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], 1)
    s = Xa @ u
    keep = s.abs() > 0.05  # a margin gamma >= 0.05 w.r.t. u
    X, Xa, s = X[keep], Xa[keep], s[keep]
    if len(X) == 0:
        return
    y = torch.sign(s)
    gamma, R = (y * (Xa @ u)).min().item(), Xa.norm(dim=1).max().item()
    bound = (R / gamma) ** 2  # Novikoff: with any unit separator's margin
    w, updates, converged = ml.perceptron(X, y, max_updates=int(bound) + 1)
    assert converged and updates <= bound
    assert bool(((Xa @ w) * y > 0).all())  # finite time, and the result separates the data


@pytest.mark.claim("ml.perceptron-convergence")
def test_perceptron_by_hand():
    # augmented samples (1, 1) with y = +1 and (-1, 1) with y = -1, from w = 0: both misclassified (0 <= 0);
    # update on the first: w = (1, 1), the second still has y w.x = 0; update: w = (1, 1) + (-1)(-1, 1) = (2, 0),
    # which separates both. Converged on the second update, and not with a budget of one.
    X = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0], dtype=torch.float64)
    w, updates, converged = ml.perceptron(X, y, max_updates=2)
    assert converged and updates == 2 and w.tolist() == [2.0, 0.0]
    w, updates, converged = ml.perceptron(X, y, max_updates=1)
    assert not converged and updates == 1 and w.tolist() == [1.0, 1.0]
    assert ml.perceptron(X, y, max_updates=0)[1:] == (0, False)


@pytest.mark.claim("ml.perceptron-convergence")
def test_perceptron_never_converges_on_xor(record_property):
    X = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)
    y = torch.tensor([-1.0, 1, 1, -1], dtype=torch.float64)
    # not separable: no (w, b) with y_i (w.x_i + b) >= 1 (LP infeasible, status 2)
    res = scipy.optimize.linprog(np.zeros(3), A_ub=-(y[:, None] * torch.cat([X, torch.ones(4, 1, dtype=torch.float64)], 1)).numpy(),
                                 b_ub=-np.ones(4), bounds=[(None, None)] * 3)
    assert res.status == 2
    w, updates, converged = ml.perceptron(X, y, max_updates=2000)
    assert not converged and updates == 2000
    # and conversely a converged perceptron would be a separator: the algorithm stops only then
    record_property("evidence", f"XOR: LP infeasible, perceptron still misclassifies after {updates} updates")


# ------------------------------------------------------------------------------------ MLE / MAP


@pytest.mark.claim("ml.map")
@settings(max_examples=10)
@given(seed=seeds(), n=st.integers(1, 30), s0=st.floats(0.1, 5.0), m0=st.floats(-3, 3))
def test_map_gaussian_mean(seed, n, s0, m0):
    x = randn(n, seed=seed) * 1.5 + 0.7
    sigma = 1.5

    def neg_log_posterior(mu):
        return -(scipy.stats.norm.logpdf(mu, m0, s0) + scipy.stats.norm.logpdf(x.numpy(), mu, sigma).sum())

    ref = scipy.optimize.minimize_scalar(neg_log_posterior, bounds=(-20, 20), method="bounded",
                                         options=dict(xatol=1e-10)).x
    assert abs(ml.gaussian_mean_map(x, sigma, m0, s0).item() - ref) < 1e-6  # optimiser's xatol, with margin


@pytest.mark.claim("ml.mle")
@settings(max_examples=10)
@given(seed=seeds(), n=st.integers(2, 30))
def test_mle_closed_forms(seed, n):
    g = generator(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 2 + 1
    nll = lambda mu: -scipy.stats.norm.logpdf(x.numpy(), mu, 2.0).sum()
    ref = scipy.optimize.minimize_scalar(nll, bounds=(-20, 20), method="bounded", options=dict(xatol=1e-10)).x
    assert abs(ml.gaussian_mean_mle(x).item() - ref) < 1e-6
    b = (torch.rand(n, generator=g, dtype=torch.float64) < 0.3).double()
    k = int(b.sum())
    if 0 < k < n:
        nll_b = lambda p: -scipy.stats.bernoulli.logpmf(b.numpy(), p).sum()
        ref = scipy.optimize.minimize_scalar(nll_b, bounds=(1e-9, 1 - 1e-9), method="bounded", options=dict(xatol=1e-10)).x
        assert abs(ml.bernoulli_mle(b).item() - ref) < 1e-6
    # linear model y = X theta + N(0, s^2): maximising the likelihood = least squares
    X = torch.randn(n + 3, 3, generator=g, dtype=torch.float64)
    yv = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + torch.randn(n + 3, generator=g, dtype=torch.float64)
    nll_l = lambda th: -scipy.stats.norm.logpdf(yv.numpy(), X.numpy() @ th, 1.0).sum()
    th = scipy.optimize.minimize(nll_l, np.zeros(3), method="BFGS", options=dict(gtol=1e-10)).x
    np.testing.assert_allclose(th, torch.linalg.lstsq(X, yv[:, None]).solution[:, 0].numpy(), atol=1e-6)


@pytest.mark.claim("ml.mle-consistent-efficient", role="refutes")
def test_mle_inconsistent_neyman_scott(record_property):
    # pairs x_i1, x_i2 ~ N(mu_i, sigma^2), one mean per pair: the joint MLE of sigma^2 is the mean of
    # the per-pair MLE variances, whose expectation is sigma^2 / 2 for every n.
    n, sigma2 = 20000, 1.0
    mu = torch.randn(n, 1, dtype=torch.float64) * 5
    x = mu + torch.randn(n, 2, dtype=torch.float64)
    est = ml.gaussian_variance_mle(x).mean().item()
    se = sigma2 / math.sqrt(2 * n)  # each pair's (x1 - x2)^2 / 4 has variance sigma^4 / 2
    assert abs(est - sigma2 / 2) < 6 * se and abs(est - sigma2) > 0.4
    record_property("evidence", f"Neyman-Scott, n={n} pairs: MLE of sigma^2 = {est:.4f} -> sigma^2/2, true sigma^2 = 1")


@pytest.mark.claim("ml.mle-consistent-efficient", role="corrects")
def test_mle_consistent_and_efficient_under_regularity(record_property):
    p = 0.3
    probs = []
    for n in [10, 100, 1000]:
        # exact distribution of the Bernoulli MLE: apply it to every count k of ones
        k = torch.arange(n + 1)
        samples = (torch.arange(n)[None, :] < k[:, None]).double()
        phat = ml.bernoulli_mle(samples)
        pmf = torch.from_numpy(scipy.stats.binom.pmf(k.numpy(), n, p))
        mean = (pmf * phat).sum()
        var = (pmf * (phat - mean) ** 2).sum()
        assert abs(mean.item() - p) < 1e-12  # unbiased
        assert abs(var.item() - p * (1 - p) / n) < 1e-12  # attains the Cramer-Rao bound 1 / (n I(p))
        probs.append((pmf * ((phat - p).abs() > 0.05)).sum().item())
    assert probs[0] > probs[1] > probs[2] and probs[2] < 2e-3  # consistency: P(|phat - p| > 0.05) -> 0
    record_property("evidence", f"Bernoulli MLE: Var = p(1-p)/n exactly; P(|err|>0.05) = {[f'{q:.2g}' for q in probs]} for n=10,100,1000")


# ------------------------------------------------------------------------------- cross-entropies


@pytest.mark.claim("ml.binary-cross-entropy")
@settings(max_examples=10)
@given(seed=seeds())
def test_binary_cross_entropy(seed):
    g = generator(seed)
    p = torch.rand(50, generator=g, dtype=torch.float64)
    y = (torch.rand(50, generator=g, dtype=torch.float64) < 0.5).double()
    L = ml.binary_cross_entropy(p, y)
    torch.testing.assert_close(L, F.binary_cross_entropy(p, y, reduction="none"))
    torch.testing.assert_close(L, -torch.distributions.Bernoulli(probs=p).log_prob(y))
    s = torch.randn(50, generator=g, dtype=torch.float64) * 10
    torch.testing.assert_close(ml.binary_cross_entropy_with_logits(s, y), F.binary_cross_entropy_with_logits(s, y, reduction="none"))
    s = s.clamp(-5, 5)  # where log(1 - sigmoid(s)) has no cancellation, both forms agree to rounding
    torch.testing.assert_close(ml.binary_cross_entropy_with_logits(s, y), ml.binary_cross_entropy(torch.sigmoid(s), y))


@pytest.mark.claim("ml.binary-cross-entropy")
def test_binary_cross_entropy_extremes(device):
    s = torch.tensor([-1e4, 1e4, 0.0], device=device)
    y = torch.tensor([1.0, 0.0, 1.0], device=device)
    L = ml.binary_cross_entropy_with_logits(s, y)
    torch.testing.assert_close(L, F.binary_cross_entropy_with_logits(s, y, reduction="none"))
    assert torch.isfinite(L).all()
    torch.testing.assert_close(L.cpu(), torch.tensor([1e4, 1e4, math.log(2)]))
    # y_hat at the ends of [0, 1]: 0 log 0 = 0, and log 0 clamped at -100 as torch's BCE does
    p = torch.tensor([0.0, 1.0, 0.0], device=device)
    torch.testing.assert_close(ml.binary_cross_entropy(p, torch.tensor([0.0, 1.0, 1.0], device=device)),
                               F.binary_cross_entropy(p, torch.tensor([0.0, 1.0, 1.0], device=device), reduction="none"))


@pytest.mark.claim("ml.cross-entropy-decomposition")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(2, 10))
def test_cross_entropy_is_entropy_plus_kl(seed, d):
    g = generator(seed)
    p = torch.rand(d, generator=g, dtype=torch.float64) ** 3
    p[0] = 0.0  # a zero-probability outcome: 0 log 0 = 0
    p /= p.sum()
    q = torch.rand(d, generator=g, dtype=torch.float64) + 1e-3
    q /= q.sum()
    H, KL, CE = ml.entropy(p), ml.kl_divergence(p, q), ml.cross_entropy(p, q)
    torch.testing.assert_close(CE, H + KL)
    assert abs(H.item() - scipy.stats.entropy(p.numpy())) < 1e-12
    assert abs(KL.item() - scipy.stats.entropy(p.numpy(), q.numpy())) < 1e-12
    assert KL.item() >= -1e-15


# ------------------------------------------------------------------------ universal approximation

GRID = torch.linspace(-1, 1, 2001, dtype=torch.float64)


@pytest.mark.claim("ml.universal-approximation-domain", role="refutes")
@settings(max_examples=10)
@given(seed=seeds(), K=st.integers(1, 50))
def test_no_network_approximates_x_squared_on_the_real_line(seed, K, ):
    g = generator(seed)
    w1, b1, w2 = (torch.randn(K, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    b2 = torch.randn((), generator=g, dtype=torch.float64)
    eps = 1.0
    # tanh network: |g| <= |b2| + ||w2||_1, so at x with x^2 > that bound + eps it misses x^2 by > eps
    bound = b2.abs() + w2.abs().sum()
    x = torch.sqrt(bound + eps + 1).reshape(1)
    assert (ml.one_hidden_layer(x, w1, b1, w2, b2, torch.tanh) - x**2).abs().item() > eps
    # ReLU network: affine beyond its last kink, so x^2 - g(x) grows without bound there
    last = (-b1 / w1).max().clamp_min(0) + 1
    xs = last + torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64) * (1 + bound)
    gx = ml.one_hidden_layer(xs, w1, b1, w2, b2, torch.relu)
    second_difference = gx[2] - 2 * gx[1] + gx[0]
    assert abs(second_difference.item()) <= 1e-9 * gx.abs().max().item() + 1e-9  # affine: zero 2nd difference
    assert second_difference.item() < (xs[2] ** 2 - 2 * xs[1] ** 2 + xs[0] ** 2).item()  # x^2's is 2 h^2 > 0


@pytest.mark.claim("ml.universal-approximation-domain", role="corrects")
@pytest.mark.claim("ml.universal-approximation-activation", role="corrects")
@pytest.mark.parametrize("K", [8, 32, 128])
def test_one_hidden_relu_layer_approximates_on_compact_set(K, record_property):
    f = lambda x: torch.sin(3 * x)
    knots = torch.linspace(-1, 1, K + 1, dtype=torch.float64)
    net = ml.relu_interpolant(knots, f(knots))
    err = (ml.one_hidden_layer(GRID, *net, torch.relu) - f(GRID)).abs().max().item()
    h = 2 / K
    assert err <= 9 * h**2 / 8 + 1e-12  # linear interpolation error h^2/8 max|f''|, f'' <= 9
    if K == 128:
        assert err < 1e-3
        record_property("evidence", f"sin(3x) on [-1,1]: one hidden ReLU layer, K={K} units, sup error {err:.2e}")


@pytest.mark.claim("ml.universal-approximation-activation", role="refutes")
@settings(max_examples=10)
@given(seed=seeds(), K=st.integers(1, 200))
def test_quadratic_activation_cannot_approximate_abs(seed, K):
    g = generator(seed)
    w1, b1, w2 = (torch.randn(K, generator=g, dtype=torch.float64) for _ in range(3))
    b2 = torch.randn((), generator=g, dtype=torch.float64)
    out = ml.one_hidden_layer(GRID, w1, b1, w2, b2, lambda z: z**2)
    # any width: the network is a polynomial of degree <= 2 (exact fit by a quadratic) ...
    V = torch.vander(GRID, 3)
    resid = out - V @ torch.linalg.lstsq(V, out[:, None]).solution[:, 0]
    assert resid.abs().max().item() <= 1e-9 * (1 + out.abs().max().item())
    # ... and no quadratic is within 0.07 of |x| on [-1, 1]: sup error >= the least-squares RMS 0.0722
    best = torch.linalg.lstsq(V, GRID.abs()[:, None]).solution[:, 0]
    assert torch.sqrt(((V @ best - GRID.abs()) ** 2).mean()).item() > 0.07
    assert (out - GRID.abs()).abs().max().item() > 0.07


@pytest.mark.claim("ml.universal-approximation-activation", role="corrects")
def test_linear_activation_gives_affine_maps_and_relu_gets_abs():
    g = generator(1)
    w1, b1, w2 = (torch.randn(64, generator=g, dtype=torch.float64) for _ in range(3))
    out = ml.one_hidden_layer(GRID, w1, b1, w2, torch.zeros((), dtype=torch.float64), lambda z: z)
    V = torch.vander(GRID, 2)
    fit = V @ torch.linalg.lstsq(V, out[:, None]).solution[:, 0]
    torch.testing.assert_close(out, fit)  # affine, so sup error to |x| >= RMS 0.2887
    net = ml.relu_interpolant(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ml.one_hidden_layer(GRID, *net, torch.relu), GRID.abs())  # non-polynomial: exact here


# ------------------------------------------------------------------------------------------ MLP


def _mlp(seed, widths, dtype=torch.float64, device="cpu"):
    g = generator(seed)
    Ws = [(torch.randn(o, i, generator=g, dtype=torch.float64) / math.sqrt(i)).to(device, dtype) for i, o in zip(widths[:-1], widths[1:])]
    bs = [(torch.randn(o, generator=g, dtype=torch.float64) * 0.1).to(device, dtype) for o in widths[1:]]
    x = torch.randn(7, widths[0], generator=g, dtype=torch.float64).to(device, dtype)
    return x, Ws, bs


def _autograd(x, Ws, bs, act, target):
    Ws = [W.clone().requires_grad_(True) for W in Ws]
    bs = [b.clone().requires_grad_(True) for b in bs]
    x = x.clone().requires_grad_(True)
    zs, as_ = ml.mlp_forward(x, Ws, bs, act)
    for z in zs[1:]:
        z.retain_grad()
    loss = 0.5 * ((zs[-1] - target) ** 2).sum()
    loss.backward()
    return zs, as_, [W.grad for W in Ws], [b.grad for b in bs], x.grad


@pytest.mark.claim("ml.mlp-backward-inputs", "ml.mlp-backward-bias")
@settings(max_examples=10)
@given(seed=seeds(), act=st.sampled_from(["tanh", "sigmoid", "relu"]), depth=st.integers(1, 4))
def test_mlp_delta_recursion_matches_autograd(seed, act, depth):
    widths = [3] + [5 + (seed + l) % 3 for l in range(depth - 1)] + [2]
    x, Ws, bs = _mlp(seed, widths)
    target = torch.zeros(7, 2, dtype=torch.float64)
    zs, as_, gW, gb, gx = _autograd(x, Ws, bs, act, target)
    _, fprime = ACTIVATIONS[act]
    # the forward pass against torch.nn's layers with the same weights
    ref = x
    for W, b in zip(Ws, bs):
        ref = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[act](F.linear(ref, W, b))
    torch.testing.assert_close(zs[-1].detach(), ref)
    # the notes' recursion, one layer at a time, against autograd's dL/dz^(l)
    for l in range(1, depth):
        rec = (zs[l + 1].grad * fprime(as_[l].detach())) @ Ws[l]
        torch.testing.assert_close(rec, zs[l].grad)
    dWs, dbs, dx = ml.mlp_backward((zs[-1] - target).detach(), [z.detach() for z in zs], [a.detach() for a in as_], Ws, act)
    torch.testing.assert_close(dx, gx)
    for a, b in zip(dbs, gb):
        torch.testing.assert_close(a, b)
    for a, b in zip(dWs, gW):
        torch.testing.assert_close(a, b)


@pytest.mark.claim("ml.mlp-backward-weights", role="corrects")
def test_mlp_weight_gradient_uses_layer_input(device, dtype):
    x, Ws, bs = _mlp(3, [4, 4, 4, 4], dtype, device)
    target = torch.zeros(7, 4, dtype=dtype, device=device)
    zs, as_, gW, gb, _ = _autograd(x, Ws, bs, "tanh", target)
    dWs, dbs, _ = ml.mlp_backward((zs[-1] - target).detach(), [z.detach() for z in zs], [a.detach() for a in as_], Ws, "tanh")
    for l in range(3):
        delta = zs[l + 1].grad  # delta^(l) = dL/dz^(l) from autograd
        e = delta * (1 - torch.tanh(as_[l].detach()) ** 2)
        # float32: a few ulps over sums of 7 x 4 products of O(1) terms, within tol(float32)
        torch.testing.assert_close(e.T @ zs[l].detach(), gW[l], **tol(dtype))  # z_j^(l-1): the layer's input
        torch.testing.assert_close(dWs[l], gW[l], **tol(dtype))


@pytest.mark.claim("ml.mlp-backward-weights", role="refutes")
def test_mlp_weight_gradient_with_own_output_is_wrong(record_property):
    x, Ws, bs = _mlp(3, [4, 4, 4, 4])
    target = torch.zeros(7, 4, dtype=torch.float64)
    zs, as_, gW, _, _ = _autograd(x, Ws, bs, "tanh", target)
    errs = []
    for l in range(3):
        e = zs[l + 1].grad * (1 - torch.tanh(as_[l].detach()) ** 2)
        as_written = e.T @ zs[l + 1].detach()  # f'(a)_i z_j^(l) with z^(l) the layer's own output
        errs.append((as_written - gW[l]).abs().max().item())
    assert min(errs) > 1e-3
    record_property("evidence", f"max |dL/dW (z^(l)) - autograd| per layer: {[f'{e:.3g}' for e in errs]}")


# ------------------------------------------------------------------------------------ bad input


def test_bad_input():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="y"):
        ml.perceptron(x, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="y"):
        ml.perceptron(x, torch.ones(4))
    with pytest.raises(ValueError, match="max_updates"):
        ml.perceptron(x, torch.ones(3), max_updates=-1)
    with pytest.raises(ValueError, match="activation"):
        ml.mlp_forward(x, [torch.zeros(2, 2)], [torch.zeros(2)], "gelu")
    with pytest.raises(ValueError, match="weights\\[1\\]"):
        ml.mlp_forward(x, [torch.zeros(3, 2), torch.zeros(2, 4)], [torch.zeros(3), torch.zeros(2)])
    with pytest.raises(ValueError, match="biases"):
        ml.mlp_forward(x, [torch.zeros(3, 2)], [])
    with pytest.raises(ValueError, match="x"):
        ml.mlp_forward(torch.zeros(3, 5), [torch.zeros(3, 2)], [torch.zeros(3)])
    with pytest.raises(ValueError, match="y_hat"):
        ml.binary_cross_entropy(torch.tensor([1.5]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="y"):
        ml.binary_cross_entropy(torch.tensor([0.5]), torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="logits"):
        ml.categorical_cross_entropy(torch.tensor([1, 2]), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="p"):
        ml.entropy(torch.tensor([-0.1, 1.1]))
    with pytest.raises(ValueError, match="q"):
        ml.kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="sigma"):
        ml.gaussian_mean_map(torch.zeros(3), 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="knots"):
        ml.relu_interpolant(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(TypeError, match="activation"):
        ml.one_hidden_layer(torch.zeros(3), torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(()), None)
    with pytest.raises(ValueError, match="y_hat"):
        ml.negative_log_likelihood(torch.tensor([-0.5, 1.5]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="x"):
        ml.softmax(torch.tensor(1.0))


def test_bad_preconditions_are_rejected_by_name():
    F64 = torch.float64
    p = torch.tensor([0.5, 0.5], dtype=F64)
    W = [torch.zeros(3, 2, dtype=F64)]
    b = [torch.zeros(3, dtype=F64)]
    zs, as_ = ml.mlp_forward(torch.zeros(4, 2, dtype=F64), W, b)
    cases = [
        (lambda: ml.binary_cross_entropy(torch.tensor([0.5], dtype=F64), torch.tensor([2.0], dtype=F64)), "y"),
        (lambda: ml.entropy(torch.tensor([0.5, 0.2], dtype=F64)), "p"),                      # does not sum to 1
        (lambda: ml.kl_divergence(p, torch.tensor([0.9, 0.9], dtype=F64)), "q"),
        (lambda: ml.cross_entropy(torch.tensor([1.5, -0.5], dtype=F64), p), "p"),
        (lambda: ml.negative_log_likelihood(torch.tensor([0.7, 0.7], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)),
         "y_hat"),
        (lambda: ml.categorical_cross_entropy(torch.zeros(2, dtype=F64), torch.tensor([-1.0, 2.0], dtype=F64)), "y"),
        (lambda: ml.softmax_cross_entropy_grad(torch.zeros(2, dtype=F64), torch.tensor([1.0, 1.0], dtype=F64)), "y"),
        (lambda: ml.bernoulli_mle(torch.tensor([0.0, 0.5, 1.0], dtype=F64)), "x"),
        (lambda: ml.gaussian_mean_mle(torch.zeros(0, dtype=F64)), "x"),
        (lambda: ml.gaussian_variance_mle(torch.zeros(0, dtype=F64)), "x"),
        (lambda: ml.perceptron(torch.tensor([[float("nan")]], dtype=F64), torch.tensor([1.0], dtype=F64)), "X"),
        (lambda: ml.mlp_backward(torch.zeros(4, 3, dtype=F64), zs[:1], as_, W), "zs"),
        (lambda: ml.mlp_backward(torch.zeros(4, 3, dtype=F64), zs, [], W), "as_"),
        (lambda: ml.mlp_backward(torch.zeros(4, 2, dtype=F64), zs, as_, W), "dL_dout"),
    ]
    for fn, name in cases:
        with pytest.raises((TypeError, ValueError), match=name):
            fn()


def test_extreme_valid_inputs_give_finite_results():
    F64 = torch.float64
    x = torch.tensor([-1e4, 0.0, 1e4], dtype=F64)
    assert bool(torch.isfinite(ml.softmax(x)).all()) and bool(torch.isfinite(ml.softmax_jacobian(x)).all())
    y = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    assert bool(torch.isfinite(ml.categorical_cross_entropy(x, y)))
    assert bool(torch.isfinite(ml.binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0, 0.0], dtype=F64))).all())
    torch.testing.assert_close(ml.softmax_cross_entropy_grad(x, y), ml.softmax(x) - y, rtol=0, atol=0)
    assert float(ml.entropy(torch.tensor([1.0, 0.0], dtype=F64))) == 0.0                # 0 log 0 = 0


def test_binary_cross_entropy_matches_torch_with_soft_labels_and_endpoints():
    F64 = torch.float64
    y_hat = torch.tensor([0.0, 1e-3, 0.3, 0.5, 0.9, 1.0, 0.0, 1.0], dtype=F64)
    y = torch.tensor([1.0, 0.2, 0.7, 0.5, 0.0, 0.25, 0.0, 1.0], dtype=F64)
    ref = torch.nn.functional.binary_cross_entropy(y_hat, y, reduction="none")     # log clamped at -100 too
    torch.testing.assert_close(ml.binary_cross_entropy(y_hat, y), ref, rtol=1e-12, atol=1e-12)


def test_reductions_run_over_the_last_dimension_only():
    F64 = torch.float64
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 6, generator=g, dtype=F64)
    torch.testing.assert_close(ml.gaussian_mean_mle(x), x.mean(1))
    torch.testing.assert_close(ml.gaussian_variance_mle(x), torch.stack([r.var(correction=0) for r in x]))
    m = ml.gaussian_mean_map(x, 1.0, 0.5, 2.0)
    torch.testing.assert_close(m, torch.stack([(0.5 / 4 + r.sum()) / (1 / 4 + 6) for r in x]))
    p = torch.softmax(torch.randn(3, 4, generator=g, dtype=F64), -1)
    torch.testing.assert_close(ml.entropy(p), torch.distributions.Categorical(probs=p).entropy())
    y = torch.nn.functional.one_hot(torch.tensor([0, 3, 1]), 4).to(F64)
    torch.testing.assert_close(ml.negative_log_likelihood(p, y),
                               torch.nn.functional.nll_loss(p.log(), torch.tensor([0, 3, 1]), reduction="none"))
    b = ml.bernoulli_mle(torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]], dtype=F64))
    assert b.tolist() == [0.75, 0.25]


def test_distribution_arguments_are_named_exactly():
    F64 = torch.float64
    p = torch.tensor([0.5, 0.5], dtype=F64)
    bad = torch.tensor([0.9, 0.9], dtype=F64)
    for fn, name in [(lambda: ml.kl_divergence(bad, p), "p"), (lambda: ml.kl_divergence(p, bad), "q"),
                     (lambda: ml.cross_entropy(bad, p), "p"), (lambda: ml.cross_entropy(p, bad), "q"),
                     (lambda: ml.entropy(bad), "p")]:
        with pytest.raises(ValueError, match=f"^{name}: "):
            fn()


def test_relu_interpolant_takes_two_knots_and_refuses_unsorted_ones():
    F64 = torch.float64
    w1, b1, w2, b2 = ml.relu_interpolant(torch.tensor([0.0, 2.0], dtype=F64), torch.tensor([1.0, 5.0], dtype=F64))
    x = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    torch.testing.assert_close(ml.one_hidden_layer(x, w1, b1, w2, b2, torch.relu), 1 + 2 * x)
    for knots in ([0.0, 2.0, 1.0, 3.0], [0.0, 1.0, 1.0], [1.0]):
        with pytest.raises(ValueError, match="^knots: "):
            ml.relu_interpolant(torch.tensor(knots, dtype=F64), torch.zeros(len(knots), dtype=F64))
