"""The notes' gradient-descent algorithms ("GD algos"), written as the notes write them.

Each ``*_step`` updates lists of parameter tensors and their state tensors in place (any shapes,
any device) and returns nothing; ``grads[j]`` is the gradient for ``params[j]``. Loops run over the
list of tensors, never over their elements.

Changes of variables to torch.optim (tested in properties/test_gd.py):
* Polyak momentum: torch.optim.SGD(momentum=alpha, dampening=0) keeps b = alpha b + g and steps
  theta -= lr b; the notes' velocity is v = -lr b, the parameters are the same.
* Nesterov: torch.optim.SGD(nesterov=True) evaluates the gradient at its own parameters p and
  steps p -= lr (g + alpha b); its p is the notes' look-ahead point theta + alpha v.
* AdaGrad, RMSProp (with the AdaGrad form of the step), Adam: same variables (eps = delta).
"""

from __future__ import annotations

import torch

from impl._checks import check_float, check_index, check_int, check_same, check_tensor


def _check_lists(**lists):
    n = None
    first = None
    for name, ts in lists.items():
        if not isinstance(ts, (list, tuple)) or not ts:
            raise TypeError(f"{name}: expected a non-empty list of tensors")
        if n is None:
            n, first = len(ts), (name, ts)
        elif len(ts) != n:
            raise ValueError(f"{name}: expected {n} tensors (one per parameter), got {len(ts)}")
        for j, t in enumerate(ts):
            check_tensor(t, f"{name}[{j}]")
            ref = first[1][j]
            if t.shape != ref.shape:
                raise ValueError(f"{name}[{j}]: shape {tuple(t.shape)} differs from {first[0]}[{j}]'s {tuple(ref.shape)}")
            check_same(ref, f"{first[0]}[{j}]", **{f"{name}[{j}]": t})


@torch.no_grad()
def sgd_step(params, grads, lr: float) -> None:
    """theta := theta - eps grad (grad from one sample for SGD, m < n samples for mini-batch)."""
    _check_lists(params=params, grads=grads)
    lr = check_float(lr, "lr", min=0, min_open=True)
    for p, g in zip(params, grads):
        p.add_(g, alpha=-lr)  # fused: no temporary for lr * g


@torch.no_grad()
def momentum_step(params, grads, velocity, lr: float, alpha: float) -> None:
    """Polyak: v := alpha v - eps grad, theta := theta + v."""
    _check_lists(params=params, grads=grads, velocity=velocity)
    lr = check_float(lr, "lr", min=0, min_open=True)
    alpha = check_float(alpha, "alpha", min=0, max=1, max_open=True)
    for p, g, v in zip(params, grads, velocity):
        v.mul_(alpha).add_(g, alpha=-lr)
        p.add_(v)


def nesterov_step(params, velocity, grad_fn, lr: float, alpha: float) -> None:
    """Nesterov: v := alpha v - eps grad L(theta + alpha v), theta := theta + v.

    grad_fn(list of tensors) -> list of gradients at that point (the look-ahead point).
    """
    _check_lists(params=params, velocity=velocity)
    lr = check_float(lr, "lr", min=0, min_open=True)
    alpha = check_float(alpha, "alpha", min=0, max=1, max_open=True)
    if not callable(grad_fn):
        raise TypeError("grad_fn: expected a callable returning the gradients at a point")
    with torch.no_grad():
        ahead = [p + alpha * v for p, v in zip(params, velocity)]
    grads = grad_fn(ahead)
    _check_lists(params=params, grads=grads)
    with torch.no_grad():
        for p, g, v in zip(params, grads, velocity):
            v.mul_(alpha).add_(g, alpha=-lr)
            p.add_(v)


def _denominator(root: torch.Tensor, delta: float) -> torch.Tensor:
    """delta + sqrt(r). With delta = 0 an entry of r is 0 only where every gradient so far was 0,
    so the step there is 0 / 0: take it as 0 (divide by 1) instead of NaN."""
    if delta > 0:
        return root.add_(delta)
    return torch.where(root > 0, root, torch.ones_like(root))


@torch.no_grad()
def adagrad_step(params, grads, r, lr: float, delta: float = 1e-10) -> None:
    """AdaGrad: r := r + g * g, theta := theta - eps / (delta + sqrt(r)) * g."""
    _check_lists(params=params, grads=grads, r=r)
    lr = check_float(lr, "lr", min=0, min_open=True)
    delta = check_float(delta, "delta", min=0)
    for p, g, s in zip(params, grads, r):
        s.addcmul_(g, g)
        p.addcdiv_(g, _denominator(s.sqrt(), delta), value=-lr)


@torch.no_grad()
def rmsprop_step(params, grads, r, lr: float, rho: float = 0.99, delta: float = 1e-8) -> None:
    """RMSProp: r := rho r + (1 - rho) g * g, then AdaGrad's step theta := theta - eps / (delta + sqrt(r)) * g.

    (The notes give only the accumulator; the step is AdaGrad's with the new r, as torch.optim.RMSprop takes it.)
    """
    _check_lists(params=params, grads=grads, r=r)
    lr = check_float(lr, "lr", min=0, min_open=True)
    rho = check_float(rho, "rho", min=0, max=1, max_open=True)
    delta = check_float(delta, "delta", min=0)
    for p, g, s in zip(params, grads, r):
        s.mul_(rho).addcmul_(g, g, value=1 - rho)
        p.addcdiv_(g, _denominator(s.sqrt(), delta), value=-lr)


@torch.no_grad()
def adam_step(params, grads, m, v, t: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8) -> None:
    """Adam at step t >= 1: m := b1 m + (1 - b1) g, v := b2 v + (1 - b2) g * g,
    m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t), theta := theta - eta m_hat / (sqrt(v_hat) + eps)."""
    _check_lists(params=params, grads=grads, m=m, v=v)
    t = check_int(t, "t", min=1)
    lr = check_float(lr, "lr", min=0, min_open=True)
    beta1 = check_float(beta1, "beta1", min=0, max=1, max_open=True)
    beta2 = check_float(beta2, "beta2", min=0, max=1, max_open=True)
    eps = check_float(eps, "eps", min=0)
    c1, c2 = 1 - beta1**t, 1 - beta2**t
    for p, g, m_, v_ in zip(params, grads, m, v):
        m_.mul_(beta1).add_(g, alpha=1 - beta1)
        v_.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.addcdiv_(m_ / c1, _denominator((v_ / c2).sqrt_(), eps), value=-lr)


def adam_moments(grads: torch.Tensor, beta1: float = 0.9, beta2: float = 0.999):
    """Bias-corrected moments of a gradient sequence. grads: (T, ...) -> (m_hat, v_hat): (T, ...) each,
    with m_t = (1 - b1) sum_{s<=t} b1^{t-s} g_s (from m_0 = 0) and m_hat_t = m_t / (1 - b1^t)."""
    check_tensor(grads, "grads", ndim=range(1, 16))
    if grads.shape[0] == 0:
        raise ValueError("grads: needs at least one step (T >= 1)")
    beta1 = check_float(beta1, "beta1", min=0, max=1, max_open=True)
    beta2 = check_float(beta2, "beta2", min=0, max=1, max_open=True)
    m, v = torch.zeros_like(grads[0]), torch.zeros_like(grads[0])
    ms, vs = [], []
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        ms.append(m / (1 - beta1**t))
        vs.append(v / (1 - beta2**t))
    return torch.stack(ms), torch.stack(vs)


def minibatch_gradient(per_sample_loss, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gradient of (1/m) sum_{i in idx} L_i(theta): SGD with m = 1, mini-batch with 1 < m < n.

    per_sample_loss(theta) -> (n,) losses; theta: any shape; idx: (m,) integer indices.
    """
    check_tensor(theta, "theta")
    check_tensor(idx, "idx", ndim=1, floating=False)
    if idx.numel() == 0:
        raise ValueError("idx: needs at least one sample")
    if not callable(per_sample_loss):
        raise TypeError("per_sample_loss: expected a callable")
    th = theta.detach().requires_grad_(True)
    losses = per_sample_loss(th)
    if not isinstance(losses, torch.Tensor) or losses.ndim != 1:
        raise ValueError("per_sample_loss: must return a (n,) tensor of per-sample losses")
    check_index(idx, "idx", losses.shape[0])
    (g,) = torch.autograd.grad(losses[idx].mean(), th)
    return g
