"""ML basics of the notes: perceptron, MLP with the delta-recursion backward pass, cross-entropies,
softmax and its derivative, MLE/MAP in closed form, and a one-hidden-layer universal approximator.
"""

from __future__ import annotations

import torch

from impl._checks import (check_choice, check_float, check_int, check_probability, check_range, check_same,
                          check_tensor)
from impl.activations import ACTIVATIONS

# ----------------------------------------------------------------------------------- perceptron


def perceptron(X: torch.Tensor, y: torch.Tensor, *, max_updates: int = 10_000):
    """Rosenblatt's perceptron with a bias (inputs augmented by a constant 1).

    X: (n, d), y: (n,) with entries in {-1, +1}. Each update takes the first misclassified sample
    (y_i w.x_i <= 0) and sets w += y_i x_i. Returns (w: (d + 1,), updates: int, converged: bool);
    converged means every sample has y_i w.x_i > 0.
    """
    check_tensor(X, "X", ndim=2)
    check_tensor(y, "y", ndim=1, shape=(X.shape[0],))
    check_same(X, "X", y=y)
    max_updates = check_int(max_updates, "max_updates", min=0)
    check_tensor(X, "X", finite=True)
    # Each update needs the first misclassified sample, a data-dependent index: the loop reads one
    # flag per update on the host by nature (the algorithm is sequential in its updates).
    if not torch.all((y == 1) | (y == -1)):
        raise ValueError("y: entries must be -1 or +1")
    Xa = torch.cat([X, torch.ones_like(X[:, :1])], dim=1)
    w = torch.zeros(Xa.shape[1], dtype=X.dtype, device=X.device)
    for updates in range(max_updates + 1):
        wrong = (y * (Xa @ w)) <= 0
        if not bool(wrong.any()):
            return w, updates, True
        if updates == max_updates:
            break
        i = int(torch.argmax(wrong.to(torch.int8)))
        w = w + y[i] * Xa[i]
    return w, max_updates, False


# ------------------------------------------------------------------------------------------ MLP


def _check_layers(weights, biases):
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("weights: expected a non-empty list of (out, in) tensors")
    if not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
        raise ValueError(f"biases: expected a list of {len(weights)} tensors, one per layer")
    for l, (W, b) in enumerate(zip(weights, biases)):
        check_tensor(W, f"weights[{l}]", ndim=2)
        check_tensor(b, f"biases[{l}]", shape=(W.shape[0],))
        check_same(weights[0], "weights[0]", **{f"weights[{l}]": W, f"biases[{l}]": b})
        if l and W.shape[1] != weights[l - 1].shape[0]:
            raise ValueError(f"weights[{l}]: expects {W.shape[1]} inputs but layer {l - 1} has {weights[l - 1].shape[0]} outputs")


def mlp_forward(x: torch.Tensor, weights, biases, activation: str = "tanh"):
    """a^(l) = W^(l) z^(l-1) + b^(l), z^(l) = f(a^(l)), z^(0) = x; every layer applies f.

    x: (B, d0), weights[l]: (d_{l+1}, d_l), biases[l]: (d_{l+1},). Returns (zs, as_): the lists
    [z^(0), ..., z^(L)] and [a^(1), ..., a^(L)], each (B, d_l).
    """
    check_choice(activation, "activation", list(ACTIVATIONS))
    _check_layers(weights, biases)
    check_tensor(x, "x", ndim=2, shape=(None, weights[0].shape[1]))
    check_same(weights[0], "weights[0]", x=x)
    f, _ = ACTIVATIONS[activation]
    zs, as_ = [x], []
    for W, b in zip(weights, biases):
        a = zs[-1] @ W.T + b
        as_.append(a)
        zs.append(f(a))
    return zs, as_


def mlp_backward(dL_dout: torch.Tensor, zs, as_, weights, activation: str = "tanh"):
    """Backward pass from the notes' delta recursions, without autograd.

    delta^(L) = dL/dz^(L); delta^(l) = delta^(l+1) dz^(l+1)/dz^(l) = (delta^(l+1) * f'(a^(l+1))) W^(l+1);
    dL/dw_ij^(l) = sum_k delta_k^(l) [dz^(l)/dw_ij^(l)]_k = delta_i^(l) f'(a^(l))_i z_j^(l-1);
    dL/db_i^(l) = delta_i^(l) f'(a^(l))_i. Sums over the batch.
    dL_dout: (B, d_L); zs, as_ from mlp_forward. Returns (dWs, dbs, dL/dx: (B, d0)).
    """
    check_choice(activation, "activation", list(ACTIVATIONS))
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("weights: expected a non-empty list of (out, in) tensors")
    L = len(weights)
    if not isinstance(zs, (list, tuple)) or len(zs) != L + 1:
        raise ValueError(f"zs: expected the {L + 1} layer outputs z^(0..L) of mlp_forward")
    if not isinstance(as_, (list, tuple)) or len(as_) != L:
        raise ValueError(f"as_: expected the {L} pre-activations a^(1..L) of mlp_forward")
    for l, W in enumerate(weights):
        check_tensor(W, f"weights[{l}]", ndim=2)
        check_tensor(as_[l], f"as_[{l}]", shape=(zs[0].shape[0], W.shape[0]))
        check_tensor(zs[l], f"zs[{l}]", shape=(zs[0].shape[0], W.shape[1]))
    check_tensor(dL_dout, "dL_dout", ndim=2, shape=zs[-1].shape)
    _, fprime = ACTIVATIONS[activation]
    dWs, dbs = [None] * L, [None] * L
    delta = dL_dout  # delta^(L)
    for l in reversed(range(L)):
        e = delta * fprime(as_[l])  # (B, d_{l+1}): delta^(l) * f'(a^(l))
        dWs[l] = e.T @ zs[l]  # the input of layer l is z^(l-1) in the notes' numbering
        dbs[l] = e.sum(0)
        delta = e @ weights[l]  # delta of the layer below
    return dWs, dbs, delta


# ------------------------------------------------------------------------------- cross-entropies


def binary_cross_entropy(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-y log y_hat - (1 - y) log(1 - y_hat), elementwise. y_hat in [0, 1], y in [0, 1]; any shape."""
    check_tensor(y_hat, "y_hat")
    check_tensor(y, "y", shape=y_hat.shape)
    check_same(y_hat, "y_hat", y=y)
    if torch.any((y_hat < 0) | (y_hat > 1)):
        raise ValueError("y_hat: probabilities must lie in [0, 1]")
    check_range(y, "y", min=0.0, max=1.0)
    # xlogy gives 0 log 0 = 0, and clamping log at -100 matches the convention of torch's BCE.
    return -(torch.xlogy(y, y_hat).clamp_min(-100 * y) + torch.xlogy(1 - y, 1 - y_hat).clamp_min(-100 * (1 - y)))


def binary_cross_entropy_with_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE of y_hat = sigma(logits), stable for large |logits|: softplus(s) - y s. Any shape."""
    check_tensor(logits, "logits")
    check_tensor(y, "y", shape=logits.shape)
    check_same(logits, "logits", y=y)
    return torch.nn.functional.softplus(logits) - y * logits


def softmax(x: torch.Tensor) -> torch.Tensor:
    """y_hat_i = exp(x_i) / sum_j exp(x_j) over the last dim, shifted by the max. x: (..., d)."""
    check_tensor(x, "x", ndim=range(1, 16))
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def softmax_jacobian(x: torch.Tensor) -> torch.Tensor:
    """d y_hat_k / d x_i = y_hat_i ([i = k] - y_hat_k) (the proof's two cases). x: (..., d) -> (..., d, d)."""
    check_tensor(x, "x", ndim=range(1, 16))
    p = softmax(x)
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


def negative_log_likelihood(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L(y_hat, y) = -sum_i y_i log y_hat_i over the last dim. y_hat, y: (..., d) -> (...)."""
    check_tensor(y_hat, "y_hat", ndim=range(1, 16))
    check_tensor(y, "y", shape=y_hat.shape)
    check_same(y_hat, "y_hat", y=y)
    check_probability(y_hat, "y_hat")
    check_range(y, "y", min=0.0)
    return -torch.xlogy(y, y_hat).sum(-1)


def categorical_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-sum_i y_i log softmax(logits)_i with log-softmax, finite for any finite logits. (..., d) -> (...)."""
    check_tensor(logits, "logits", ndim=range(1, 16))
    check_tensor(y, "y", shape=logits.shape)
    check_same(logits, "logits", y=y)
    check_range(y, "y", min=0.0)
    return -(y * torch.log_softmax(logits, -1)).sum(-1)


def softmax_cross_entropy_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dL/dx = y_hat - y for a one-hot (more generally sum-to-one) y. (..., d) -> (..., d)."""
    check_tensor(logits, "logits", ndim=range(1, 16))
    check_tensor(y, "y", shape=logits.shape)
    check_same(logits, "logits", y=y)
    # the proof's last step uses sum_k y_k = 1
    check_probability(y, "y")
    return softmax(logits) - y


def _check_distribution(p, name):
    """p: (..., d) probability vectors (entries in [0, 1] summing to one): the identities of
    H, KL and H(p, q) hold for distributions only."""
    check_tensor(p, name, ndim=range(1, 16))
    check_probability(p, name)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum p log p over the last dim (0 log 0 = 0). p: (..., d) -> (...)."""
    _check_distribution(p, "p")
    return -torch.xlogy(p, p).sum(-1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum p log(p / q) over the last dim. p, q: (..., d) -> (...)."""
    _check_distribution(p, "p")
    _check_distribution(q, "q")
    check_tensor(q, "q", shape=p.shape)
    check_same(p, "p", q=q)
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


def cross_entropy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """H(p, q) = -sum p log q over the last dim. p, q: (..., d) -> (...)."""
    _check_distribution(p, "p")
    _check_distribution(q, "q")
    check_tensor(q, "q", shape=p.shape)
    check_same(p, "p", q=q)
    return -torch.xlogy(p, q).sum(-1)


# ------------------------------------------------------------------------------------ MLE / MAP


def gaussian_mean_mle(x: torch.Tensor) -> torch.Tensor:
    """argmax_mu prod_i N(x_i | mu, sigma^2) = sample mean. x: (..., n) -> (...)."""
    check_tensor(x, "x", ndim=range(1, 16))
    if x.shape[-1] == 0:
        raise ValueError("x: needs at least one sample")
    return x.mean(-1)


def gaussian_mean_map(x: torch.Tensor, sigma: float, prior_mean: float, prior_std: float) -> torch.Tensor:
    """argmax_mu N(mu | m0, s0^2) prod_i N(x_i | mu, sigma^2)
    = (m0 / s0^2 + sum x_i / sigma^2) / (1 / s0^2 + n / sigma^2). x: (..., n) -> (...)."""
    check_tensor(x, "x", ndim=range(1, 16))
    sigma = check_float(sigma, "sigma", min=0, min_open=True)
    prior_mean = check_float(prior_mean, "prior_mean")
    prior_std = check_float(prior_std, "prior_std", min=0, min_open=True)
    n = x.shape[-1]
    return (prior_mean / prior_std**2 + x.sum(-1) / sigma**2) / (1 / prior_std**2 + n / sigma**2)


def bernoulli_mle(x: torch.Tensor) -> torch.Tensor:
    """argmax_p prod_i p^x_i (1 - p)^(1 - x_i) = mean of the 0/1 samples. x: (..., n) -> (...)."""
    check_tensor(x, "x", ndim=range(1, 16))
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("x: Bernoulli samples must be 0 or 1")
    return x.mean(-1)


def gaussian_variance_mle(x: torch.Tensor) -> torch.Tensor:
    """argmax_{s2} prod_i N(x_i | mean, s2) with the mean also fitted: (1/n) sum (x_i - xbar)^2. (..., n) -> (...)."""
    check_tensor(x, "x", ndim=range(1, 16))
    if x.shape[-1] == 0:
        raise ValueError("x: needs at least one sample")
    return x.var(-1, correction=0)


# ------------------------------------------------------------------------ universal approximation


def one_hidden_layer(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                     activation) -> torch.Tensor:
    """g(x) = b2 + sum_k w2_k act(w1_k x + b1_k) for scalar inputs. x: (N,), w1, b1, w2: (K,), b2: () -> (N,)."""
    check_tensor(x, "x", ndim=1)
    check_tensor(w1, "w1", ndim=1)
    check_tensor(b1, "b1", shape=w1.shape)
    check_tensor(w2, "w2", shape=w1.shape)
    check_tensor(b2, "b2", ndim=0)
    check_same(x, "x", w1=w1, b1=b1, w2=w2, b2=b2)
    if not callable(activation):
        raise TypeError("activation: expected a callable")
    return b2 + activation(x[:, None] * w1 + b1) @ w2


def relu_interpolant(knots: torch.Tensor, values: torch.Tensor):
    """One hidden ReLU layer that interpolates (knots, values) linearly between the knots.

    g(x) = v_0 + sum_k (s_k - s_{k-1}) relu(x - t_k), s_k the slope on [t_k, t_{k+1}], s_{-1} = 0.
    knots: (K + 1,) increasing, values: (K + 1,). Returns (w1, b1, w2, b2) for one_hidden_layer.
    """
    check_tensor(knots, "knots", ndim=1)
    check_tensor(values, "values", shape=knots.shape)
    check_same(knots, "knots", values=values)
    if knots.shape[0] < 2 or not torch.all(knots[1:] > knots[:-1]):
        raise ValueError("knots: need two or more strictly increasing knots")
    slopes = (values[1:] - values[:-1]) / (knots[1:] - knots[:-1])
    w2 = torch.diff(slopes, prepend=slopes.new_zeros(1))
    w1 = torch.ones_like(w2)
    return w1, -knots[:-1], w2, values[0]
