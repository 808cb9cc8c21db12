"""Edge cases and bad inputs of impl/ml.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/ml.py``: an input check
that names the wrong argument (every message is matched from its start) or lets a boundary value
through, and results changed on valid input. Expected values come from the definitions, autograd,
PyTorch's built-in losses or hand computation.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impl import ml

F64 = torch.float64


def t(*v):
    return torch.tensor(v, dtype=F64)


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


# ---- perceptron --------------------------------------------------------------------------------

def test_perceptron_checks():
    X, y = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64), t(1.0, -1.0)
    _raises(TypeError, r"^X: expected a torch.Tensor", ml.perceptron, X.tolist(), y)
    _raises(ValueError, r"^X: expected 2 dimensions", ml.perceptron, X[0], y)
    _raises(ValueError, r"^y: expected 1 dimensions", ml.perceptron, X, y[:, None])
    _raises(ValueError, r"^y: expected shape \(2\)", ml.perceptron, X, y[:1])
    _raises(TypeError, r"^y: dtype torch.float32 differs from X's", ml.perceptron, X, y.float())
    _raises(ValueError, r"^max_updates: must be >= 0", ml.perceptron, X, y, max_updates=-1)
    _raises(TypeError, r"^max_updates: expected an int", ml.perceptron, X, y, max_updates=1.0)
    bad = X.clone()
    bad[0, 0] = float("inf")
    _raises(ValueError, r"^X: contains NaN or infinite values", ml.perceptron, bad, y)
    _raises(ValueError, r"^y: entries must be -1 or \+1", ml.perceptron, X, t(1.0, 0.0))


def test_perceptron_updates_by_hand():
    X = torch.tensor([[2.0, 1.0], [-1.0, -3.0], [0.5, -2.0]], dtype=F64)
    y = t(1.0, -1.0, 1.0)
    # by hand, augmented x = (x, 1); each update adds y_i x_i of the first sample with y_i w.x_i <= 0
    w, ref_updates = torch.zeros(3, dtype=F64), 0
    Xa = torch.cat([X, torch.ones(3, 1, dtype=F64)], 1)
    while True:
        wrong = [i for i in range(3) if y[i] * (Xa[i] @ w) <= 0]
        if not wrong:
            break
        w = w + y[wrong[0]] * Xa[wrong[0]]
        ref_updates += 1
    out, updates, conv = ml.perceptron(X, y)
    torch.testing.assert_close(out, w)
    assert (updates, conv) == (ref_updates, True) and ref_updates >= 2
    # with a budget one short, it stops unconverged after exactly that many updates
    out, updates, conv = ml.perceptron(X, y, max_updates=ref_updates - 1)
    assert (updates, conv) == (ref_updates - 1, False)
    # zero updates allowed: w = 0 misclassifies everything (y w.x = 0 counts as wrong)
    out, updates, conv = ml.perceptron(X, y, max_updates=0)
    torch.testing.assert_close(out, torch.zeros(3, dtype=F64))
    assert (updates, conv) == (0, False)
    # XOR is not separable: the default budget of 10000 updates is used up
    Xx = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=F64)
    _, updates, conv = ml.perceptron(Xx, t(-1.0, 1.0, 1.0, -1.0))
    assert (updates, conv) == (10_000, False)


# ---- MLP ---------------------------------------------------------------------------------------

def _net(seed=0):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(4, 3, generator=g, dtype=F64), torch.randn(2, 4, generator=g, dtype=F64)]
    bs = [torch.randn(4, generator=g, dtype=F64), torch.randn(2, generator=g, dtype=F64)]
    x = torch.randn(5, 3, generator=g, dtype=F64)
    return x, Ws, bs


ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


def test_mlp_forward_values():
    x, Ws, bs = _net()
    for name, f in ACT.items():
        zs, as_ = ml.mlp_forward(x, Ws, bs, name)
        a1 = x @ Ws[0].T + bs[0]
        a2 = f(a1) @ Ws[1].T + bs[1]
        assert len(zs) == 3 and len(as_) == 2
        for got, ref in zip(zs + as_, [x, f(a1), f(a2), a1, a2]):
            torch.testing.assert_close(got, ref)
    zs, _ = ml.mlp_forward(x, Ws, bs)  # default tanh
    torch.testing.assert_close(zs[-1], torch.tanh(torch.tanh(x @ Ws[0].T + bs[0]) @ Ws[1].T + bs[1]))


def test_mlp_forward_checks():
    x, Ws, bs = _net()
    f = ml.mlp_forward
    _raises(ValueError, r"^activation: expected one of", f, x, Ws, bs, "gelu")
    _raises(TypeError, r"^weights: expected a non-empty list", f, x, [], [])
    _raises(TypeError, r"^weights: expected a non-empty list", f, x, Ws[0], bs)
    _raises(ValueError, r"^biases: expected a list of 2 tensors, one per layer", f, x, Ws, bs[:1])
    _raises(ValueError, r"^biases: expected a list of 2 tensors", f, x, Ws, bs[0])
    _raises(ValueError, r"^weights\[1\]: expected 2 dimensions", f, x, [Ws[0], Ws[1][0]], bs)
    _raises(ValueError, r"^biases\[0\]: expected shape \(4\)", f, x, Ws, [bs[0][:3], bs[1]])
    _raises(TypeError, r"^weights\[1\]: dtype torch.float32 differs from weights\[0\]'s", f, x,
            [Ws[0], Ws[1].float()], bs)
    _raises(TypeError, r"^biases\[1\]: dtype torch.float32 differs from weights\[0\]'s", f, x,
            Ws, [bs[0], bs[1].float()])
    _raises(ValueError, r"^weights\[1\]: expects 3 inputs but layer 0 has 4 outputs", f, x,
            [Ws[0], torch.zeros(2, 3, dtype=F64)], [bs[0], bs[1]])
    _raises(ValueError, r"^x: expected 2 dimensions", f, x[0], Ws, bs)
    _raises(ValueError, r"^x: expected shape \(\*, 3\)", f, x[:, :2], Ws, bs)
    _raises(TypeError, r"^x: dtype torch.float32 differs from weights\[0\]'s", f, x.float(), Ws, bs)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
def test_mlp_backward_against_autograd(act):
    x, Ws, bs = _net(1)
    x = x.clone().requires_grad_(True)
    Ws = [W.clone().requires_grad_(True) for W in Ws]
    bs = [b.clone().requires_grad_(True) for b in bs]
    zs, as_ = ml.mlp_forward(x, Ws, bs, act)
    up = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    (zs[-1] * up).sum().backward()
    dWs, dbs, dx = ml.mlp_backward(up, [z.detach() for z in zs], [a.detach() for a in as_],
                                   [W.detach() for W in Ws], act)
    for got, ref in zip(dWs + dbs + [dx], [W.grad for W in Ws] + [b.grad for b in bs] + [x.grad]):
        torch.testing.assert_close(got, ref)


def test_mlp_backward_default_and_checks():
    x, Ws, bs = _net(3)
    zs, as_ = ml.mlp_forward(x, Ws, bs)  # tanh
    up = torch.ones(5, 2, dtype=F64)
    _, _, dx = ml.mlp_backward(up, zs, as_, Ws)  # default tanh
    xr = x.clone().requires_grad_(True)
    ml.mlp_forward(xr, Ws, bs)[0][-1].sum().backward()
    torch.testing.assert_close(dx, xr.grad)
    f = ml.mlp_backward
    _raises(ValueError, r"^activation: expected one of", f, up, zs, as_, Ws, "gelu")
    _raises(TypeError, r"^weights: expected a non-empty list", f, up, zs, as_, [])
    _raises(TypeError, r"^weights: expected a non-empty list", f, up, zs, as_, Ws[0])
    _raises(ValueError, r"^zs: expected the 3 layer outputs", f, up, zs[:2], as_, Ws)
    _raises(ValueError, r"^zs: expected the 3 layer outputs", f, up, zs[0], as_, Ws)
    _raises(ValueError, r"^as_: expected the 2 pre-activations", f, up, zs, as_[:1], Ws)
    _raises(ValueError, r"^as_: expected the 2 pre-activations", f, up, zs, as_[0], Ws)
    _raises(ValueError, r"^weights\[0\]: expected 2 dimensions", f, up, zs, as_, [Ws[0][0], Ws[1]])
    _raises(ValueError, r"^as_\[1\]: expected shape \(5, 2\)", f, up, zs, [as_[0], as_[1][:, :1]], Ws)
    _raises(ValueError, r"^zs\[1\]: expected shape \(5, 4\)", f, up, [zs[0], zs[1][:, :3], zs[2]], as_, Ws)
    _raises(ValueError, r"^dL_dout: expected 2 dimensions", f, up[0], zs, as_, Ws)
    _raises(ValueError, r"^dL_dout: expected shape \(5, 2\)", f, up[:, :1], zs, as_, Ws)


# ---- cross-entropies ---------------------------------------------------------------------------

def test_binary_cross_entropy():
    y_hat, y = t(0.2, 0.9, 0.0, 1.0, 0.5), t(1.0, 0.0, 0.0, 1.0, 0.3)
    torch.testing.assert_close(ml.binary_cross_entropy(y_hat, y), F.binary_cross_entropy(y_hat, y, reduction="none"))
    # log clamped at -100, as torch's BCE: y = 1, y_hat = 0 costs 100; y = 0, y_hat = 1 too
    torch.testing.assert_close(ml.binary_cross_entropy(t(0.0, 1.0), t(1.0, 0.0)), t(100.0, 100.0))
    torch.testing.assert_close(ml.binary_cross_entropy(t(0.0, 1.0), t(0.5, 0.5)), t(50.0, 50.0))
    f = ml.binary_cross_entropy
    _raises(TypeError, r"^y_hat: expected a torch.Tensor", f, [0.5], y)
    _raises(ValueError, r"^y: expected shape \(5\)", f, y_hat, y[:2])
    _raises(TypeError, r"^y: dtype torch.float32 differs from y_hat's", f, y_hat, y.float())
    _raises(ValueError, r"^y_hat: probabilities must lie in \[0, 1\]", f, t(1.5), t(1.0))
    _raises(ValueError, r"^y_hat: probabilities must lie in \[0, 1\]", f, t(-0.1), t(1.0))
    _raises(ValueError, r"^y: entries must be >= 0", f, t(0.5), t(-0.5))
    _raises(ValueError, r"^y: entries must be <= 1", f, t(0.5), t(1.5))


def test_binary_cross_entropy_with_logits():
    s, y = t(-50.0, -1.0, 0.0, 2.0, 800.0), t(1.0, 0.0, 0.5, 1.0, 0.0)
    torch.testing.assert_close(ml.binary_cross_entropy_with_logits(s, y),
                               F.binary_cross_entropy_with_logits(s, y, reduction="none"))
    _raises(TypeError, r"^logits: expected a torch.Tensor", ml.binary_cross_entropy_with_logits, [0.0], y)
    _raises(ValueError, r"^y: expected shape \(5\)", ml.binary_cross_entropy_with_logits, s, y[:1])
    _raises(TypeError, r"^y: dtype torch.float32 differs from logits's", ml.binary_cross_entropy_with_logits, s,
            y.float())


def test_softmax_and_jacobian():
    x = torch.tensor([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]], dtype=F64)
    torch.testing.assert_close(ml.softmax(x), torch.softmax(x, -1))
    torch.testing.assert_close(ml.softmax(x[0]), torch.softmax(x[0], -1))
    J = ml.softmax_jacobian(x)
    assert J.shape == (2, 3, 3)
    for b in range(2):
        ref = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, -1), x[b])  # ref[k, i] = dy_k / dx_i
        torch.testing.assert_close(J[b], ref.T)
    torch.testing.assert_close(ml.softmax_jacobian(x[0]), J[0])
    for fn in (ml.softmax, ml.softmax_jacobian):
        _raises(TypeError, r"^x: expected a torch.Tensor", fn, [1.0])
        _raises(ValueError, r"^x: expected 1 or 2 or", fn, torch.tensor(1.0, dtype=F64))
        _raises(ValueError, r"^x: expected 1 or 2 or", fn, torch.zeros([1] * 16, dtype=F64))


def _rank_checks(fn, first, second=None, *, second_ok=None):
    """The shared rank checks of a (..., d) loss: 0-d and 16-d inputs are refused under their names."""
    ok = torch.full((3,), 1 / 3, dtype=F64)
    _raises(ValueError, rf"^{first}: expected 1 or 2 or", fn, torch.tensor(1.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    deep = torch.full([1] * 15 + [3], 1 / 3, dtype=F64)
    _raises(ValueError, rf"^{first}: expected 1 or 2 or", fn, deep, deep)
    _raises(TypeError, rf"^{first}: expected a torch.Tensor", fn, ok.tolist(), ok)
    if second:
        _raises(ValueError, rf"^{second}: expected shape \(3\)", fn, ok, ok[:2])
        _raises(TypeError, rf"^{second}: dtype torch.float32 differs from {first}'s", fn, ok, ok.float())


def test_negative_log_likelihood():
    y_hat = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=F64)
    y = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(ml.negative_log_likelihood(y_hat, y), t(-math.log(0.5), 0.0))
    _rank_checks(ml.negative_log_likelihood, "y_hat", "y")
    _raises(ValueError, r"^y_hat: must sum to 1", ml.negative_log_likelihood, t(0.2, 0.2, 0.2), t(0.0, 0.0, 1.0))
    _raises(ValueError, r"^y: entries must be >= 0", ml.negative_log_likelihood, t(0.2, 0.3, 0.5), t(-1.0, 0.0, 2.0))
    # y need not be a distribution: 2 copies of the last label
    torch.testing.assert_close(ml.negative_log_likelihood(t(0.2, 0.3, 0.5), t(0.0, 0.0, 2.0)),
                               torch.tensor(-2 * math.log(0.5), dtype=F64))


def test_categorical_cross_entropy_and_grad():
    logits = torch.tensor([[0.5, -1.0, 2.0], [300.0, -300.0, 0.0]], dtype=F64)
    y = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], dtype=F64)
    torch.testing.assert_close(ml.categorical_cross_entropy(logits, y), F.cross_entropy(logits, y, reduction="none"))
    _rank_checks(ml.categorical_cross_entropy, "logits", "y")
    _raises(ValueError, r"^y: entries must be >= 0", ml.categorical_cross_entropy, t(0.0, 1.0), t(-1.0, 2.0))
    lr = logits.clone().requires_grad_(True)
    F.cross_entropy(lr, y, reduction="sum").backward()
    torch.testing.assert_close(ml.softmax_cross_entropy_grad(logits, y), lr.grad)
    _rank_checks(ml.softmax_cross_entropy_grad, "logits", "y")
    _raises(ValueError, r"^y: must sum to 1", ml.softmax_cross_entropy_grad, t(0.0, 1.0), t(1.0, 1.0))


def test_entropy_kl_cross_entropy():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=F64)
    q = torch.tensor([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]], dtype=F64)
    H = torch.tensor([sum(-a * math.log(a) for a in row if a > 0) for row in p.tolist()], dtype=F64)
    CE = torch.tensor([sum(-a * math.log(b) for a, b in zip(r, s) if a > 0) for r, s in zip(p.tolist(), q.tolist())],
                      dtype=F64)
    torch.testing.assert_close(ml.entropy(p), H)
    torch.testing.assert_close(ml.cross_entropy(p, q), CE)
    torch.testing.assert_close(ml.kl_divergence(p, q), CE - H)
    _raises(TypeError, r"^p: expected a torch.Tensor", ml.entropy, [1.0])
    _raises(ValueError, r"^p: expected 1 or 2 or", ml.entropy, torch.tensor(1.0, dtype=F64))
    _raises(ValueError, r"^p: must sum to 1", ml.entropy, t(0.5, 0.4))
    _raises(ValueError, r"^p: entries must be >= ", ml.entropy, t(1.5, -0.5))
    for fn in (ml.kl_divergence, ml.cross_entropy):
        _rank_checks(fn, "p")
        _raises(ValueError, r"^q: expected 1 or 2 or", fn, t(0.5, 0.5), torch.tensor(1.0, dtype=F64))
        _raises(ValueError, r"^p: must sum to 1", fn, t(0.5, 0.4), t(0.5, 0.5))
        _raises(ValueError, r"^q: must sum to 1", fn, t(0.5, 0.5), t(0.5, 0.4))
        _raises(ValueError, r"^q: expected shape \(2\)", fn, t(0.5, 0.5), t(0.2, 0.3, 0.5))
        _raises(TypeError, r"^q: dtype torch.float32 differs from p's", fn, t(0.5, 0.5), t(0.5, 0.5).float())


# ---- MLE / MAP ---------------------------------------------------------------------------------

def test_mle_and_map():
    x = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]], dtype=F64)
    torch.testing.assert_close(ml.gaussian_mean_mle(x), t(3.0, 1.0))
    torch.testing.assert_close(ml.gaussian_variance_mle(x), t(14 / 3, 2.0))
    torch.testing.assert_close(ml.gaussian_variance_mle(t(5.0)), torch.tensor(0.0, dtype=F64))  # one sample
    for fn in (ml.gaussian_mean_mle, ml.gaussian_variance_mle, ml.bernoulli_mle):
        _raises(TypeError, r"^x: expected a torch.Tensor", fn, [1.0])
        _raises(ValueError, r"^x: expected 1 or 2 or", fn, torch.tensor(1.0, dtype=F64))
        _raises(ValueError, r"^x: expected 1 or 2 or", fn, torch.zeros([1] * 16, dtype=F64))
    for fn in (ml.gaussian_mean_mle, ml.gaussian_variance_mle):
        _raises(ValueError, r"^x: needs at least one sample", fn, torch.zeros(2, 0, dtype=F64))
    torch.testing.assert_close(ml.bernoulli_mle(t(1.0, 0.0, 1.0, 1.0)), torch.tensor(0.75, dtype=F64))
    _raises(ValueError, r"^x: Bernoulli samples must be 0 or 1", ml.bernoulli_mle, t(1.0, 0.5))
    # MAP by brute force: maximise the log posterior on a fine grid
    xs = t(1.0, 2.0, 6.0)
    mu = torch.linspace(-5, 10, 150001, dtype=F64)
    logpost = -0.5 * ((mu - 0.5) / 2.0) ** 2 - 0.5 * (((xs[:, None] - mu) / 1.5) ** 2).sum(0)
    torch.testing.assert_close(ml.gaussian_mean_map(xs, 1.5, 0.5, 2.0), mu[logpost.argmax()], atol=2e-4, rtol=0)
    f = ml.gaussian_mean_map
    _raises(ValueError, r"^x: expected 1 or 2 or", f, torch.tensor(1.0, dtype=F64), 1.0, 0.0, 1.0)
    _raises(ValueError, r"^sigma: must be > 0", f, xs, 0.0, 0.0, 1.0)
    _raises(ValueError, r"^prior_mean: must be finite", f, xs, 1.0, float("nan"), 1.0)
    _raises(TypeError, r"^prior_mean: expected a real number", f, xs, 1.0, "0", 1.0)
    _raises(ValueError, r"^prior_std: must be > 0", f, xs, 1.0, 0.0, 0.0)
    # no data: the prior mean
    torch.testing.assert_close(f(torch.zeros(0, dtype=F64), 1.0, 0.7, 2.0), torch.tensor(0.7, dtype=F64))


# ---- universal approximation -------------------------------------------------------------------

def test_one_hidden_layer():
    x = t(-1.0, 0.0, 2.0)
    w1, b1, w2, b2 = t(1.0, -2.0), t(0.5, 1.0), t(3.0, -1.0), torch.tensor(0.25, dtype=F64)
    ref = torch.stack([b2 + sum(w2[k] * torch.relu(w1[k] * xi + b1[k]) for k in range(2)) for xi in x])
    torch.testing.assert_close(ml.one_hidden_layer(x, w1, b1, w2, b2, torch.relu), ref)
    f = ml.one_hidden_layer
    args = [x, w1, b1, w2, b2]
    cases = [(0, x[None], ValueError, r"^x: expected 1 dimensions"),
             (1, w1[None], ValueError, r"^w1: expected 1 dimensions"),
             (2, b1[:1], ValueError, r"^b1: expected shape \(2\)"),
             (3, w2[:1], ValueError, r"^w2: expected shape \(2\)"),
             (4, b2[None], ValueError, r"^b2: expected 0 dimensions"),
             (1, w1.float(), TypeError, r"^w1: dtype torch.float32 differs from x's"),
             (2, b1.float(), TypeError, r"^b1: dtype torch.float32 differs from x's"),
             (3, w2.float(), TypeError, r"^w2: dtype torch.float32 differs from x's"),
             (4, b2.float(), TypeError, r"^b2: dtype torch.float32 differs from x's")]
    for i, bad, exc, pat in cases:
        a = list(args)
        a[i] = bad
        _raises(exc, pat, f, *a, torch.relu)
    _raises(TypeError, r"^activation: expected a callable", f, *args, "relu")


def test_relu_interpolant():
    knots, values = t(-1.0, 0.0, 2.0, 3.0), t(1.0, -1.0, 3.0, 3.0)
    w1, b1, w2, b2 = ml.relu_interpolant(knots, values)
    xs = torch.linspace(-1, 3, 41, dtype=F64)
    ref = torch.from_numpy(np.interp(xs.numpy(), knots.numpy(), values.numpy()))
    torch.testing.assert_close(ml.one_hidden_layer(xs, w1, b1, w2, b2, torch.relu), ref)
    torch.testing.assert_close(w1, torch.ones(3, dtype=F64))
    torch.testing.assert_close(b1, -knots[:-1])
    w1, b1, w2, b2 = ml.relu_interpolant(t(0.0, 2.0), t(1.0, 5.0))  # two knots are enough
    torch.testing.assert_close(ml.one_hidden_layer(t(0.0, 1.0, 2.0), w1, b1, w2, b2, torch.relu), t(1.0, 3.0, 5.0))
    f = ml.relu_interpolant
    _raises(TypeError, r"^knots: expected a torch.Tensor", f, [0.0, 1.0], values)
    _raises(ValueError, r"^knots: expected 1 dimensions", f, knots[None], values[None])
    _raises(ValueError, r"^values: expected shape \(4\)", f, knots, values[:3])
    _raises(TypeError, r"^values: dtype torch.float32 differs from knots's", f, knots, values.float())
    _raises(ValueError, r"^knots: need two or more strictly increasing knots", f, t(1.0), t(1.0))
    _raises(ValueError, r"^knots: need two or more strictly increasing knots", f, t(0.0, 1.0, 1.0), t(0.0, 1.0, 2.0))
