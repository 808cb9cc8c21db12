"""Denoising diffusion models (DDPM), as in the notes' section "Diffusion models".

Conventions. Time steps are integers t = 1..T; a schedule is a tensor ``betas`` of shape (T,) with
``betas[t - 1] = beta_t``. Functions follow their data: the schedule's products are formed in the
schedule's precision (float64 by default) and then cast to the dtype and device of x, so the
default schedule works with a float32 model out of the box. ``alpha_t = 1 - beta_t`` and ``alpha_bar_t = prod_{i <= t} alpha_i``
(``alpha_bar_0 = 1``). A time-step argument ``t`` is a tensor of shape (B,) with one step per
sample, so a batch may mix time steps. A noise predictor is any callable ``eps_model(x, t)`` (or
``eps_model(x, t, y)`` with a class label) returning a tensor shaped like ``x``.

Contents: schedules (linear, cosine, continuous time); the forward step q(x_t | x_{t-1}); the
closed form q(x_t | x_0); the posterior q(x_{t-1} | x_t, x_0); the mean in its epsilon form; the
training loss; the sampling loop; the Bayes-optimal noise predictors of Gaussian and
Gaussian-mixture data; noise-prediction networks for vectors and small images with time and class
conditioning; classifier-free guidance; a ControlNet branch; a small autoencoder for latent
diffusion.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from impl._checks import (check_bool, check_choice, check_float, check_generator, check_int, check_same,
                          check_symmetric_psd, check_tensor)

# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


def linear_beta_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, *,
                         dtype=torch.float64, device=None) -> torch.Tensor:
    """DDPM's linear variance schedule: beta_t evenly spaced from beta_start to beta_end. Returns (T,)."""
    check_int(T, "T", min=1)
    check_float(beta_start, "beta_start", min=0.0, max=1.0, min_open=True, max_open=True)
    check_float(beta_end, "beta_end", min=0.0, max=1.0, min_open=True, max_open=True)
    if beta_end < beta_start:
        raise ValueError(f"beta_end: must be >= beta_start ({beta_start}), got {beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=dtype, device=device)


def cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's alpha_bar(u) = f(u) / f(0), f(u) = cos^2((u + s) / (1 + s) pi / 2), u in [0, 1]."""
    check_tensor(u, "u")
    check_float(s, "s", min=0.0, min_open=True)
    f = lambda v: torch.cos((v + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(torch.zeros_like(u))


def cosine_beta_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999, *,
                         dtype=torch.float64, device=None) -> torch.Tensor:
    """Cosine schedule: beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T), clipped at max_beta
    (alpha_bar(1) is 0, which would make beta_T = 1). Returns (T,)."""
    check_int(T, "T", min=1)
    check_float(max_beta, "max_beta", min=0.0, max=1.0, min_open=True, max_open=True)
    u = torch.arange(T + 1, dtype=dtype, device=device) / T
    ab = cosine_alpha_bar(u, s)
    return (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)


def alphas(betas: torch.Tensor) -> torch.Tensor:
    """alpha_t = 1 - beta_t. betas: (T,) -> (T,)."""
    _check_betas(betas)
    return 1 - betas


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{i=1}^t alpha_i. betas: (T,) -> (T,)."""
    _check_betas(betas)
    return torch.cumprod(1 - betas, dim=0)


def posterior_variance(betas: torch.Tensor) -> torch.Tensor:
    """beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, the variance of q(x_{t-1} | x_t, x_0). (T,)."""
    _check_betas(betas)
    ab = alpha_bars(betas)
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return (1 - ab_prev) / (1 - ab) * betas


def alpha_bar_continuous(t: torch.Tensor, kind: str = "linear", *, beta_min: float = 0.1,
                         beta_max: float = 20.0, s: float = 0.008) -> torch.Tensor:
    """alpha_bar(t) for continuous t in [0, 1].

    linear: the limit of the linear schedule with T beta_t -> beta(t) = beta_min + t (beta_max - beta_min),
    alpha_bar(t) = exp(-int_0^t beta) (the variance-preserving SDE); cosine: ``cosine_alpha_bar``.
    """
    check_tensor(t, "t")
    check_choice(kind, "kind", ["linear", "cosine"])
    if ((t < 0) | (t > 1)).any():
        raise ValueError("t: continuous times must lie in [0, 1]")
    if kind == "cosine":
        return cosine_alpha_bar(t, s)
    check_float(beta_min, "beta_min", min=0.0)
    check_float(beta_max, "beta_max", min=beta_min)
    return torch.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t ** 2))


def _check_betas(betas):
    check_tensor(betas, "betas", ndim=1)
    if betas.numel() == 0 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("betas: a schedule needs at least one step, every beta_t in (0, 1)")


class _Schedule(NamedTuple):
    beta: torch.Tensor      # beta_t
    alpha: torch.Tensor     # alpha_t
    ab: torch.Tensor        # alpha_bar_t
    ab_prev: torch.Tensor   # alpha_bar_{t-1}
    omab: torch.Tensor      # 1 - alpha_bar_t
    omab_prev: torch.Tensor  # 1 - alpha_bar_{t-1}


def _schedule(betas: torch.Tensor, x: torch.Tensor) -> _Schedule:
    """The schedule's per-step quantities, each (T,), formed in the schedule's precision and then
    cast to x's dtype and device (functions follow their data). 1 - alpha_bar_t is formed before
    the cast: in float32, 1 - alpha_bar_1 = beta_1 would lose about half of its digits."""
    ab = torch.cumprod(1 - betas, dim=0)
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return _Schedule(*(v.to(device=x.device, dtype=x.dtype)
                       for v in (betas, 1 - betas, ab, ab_prev, 1 - ab, 1 - ab_prev)))


def _check_t(t, x, T):
    check_tensor(t, "t", ndim=1, floating=False)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"t: expected an integer tensor of time steps, got dtype {t.dtype}")
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t: expected one time step per sample ({x.shape[0]}), got {t.shape[0]}")
    if t.device != x.device:
        raise ValueError(f"t: on {t.device}, but x is on {x.device}")
    if ((t < 1) | (t > T)).any():
        raise ValueError(f"t: time steps must lie in 1..{T}")


def _at(v: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """v[t - 1] broadcast against x: (B,) -> (B, 1, ..., 1)."""
    return v[t - 1].reshape(-1, *([1] * (x.ndim - 1)))


def _noise_like(x, noise, generator, name="noise"):
    if noise is None:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    check_tensor(noise, name, shape=tuple(x.shape))
    check_same(x, "x", **{name: noise})
    return noise


# --------------------------------------------------------------------------------------------
# Forward process, posterior, epsilon form
# --------------------------------------------------------------------------------------------


def forward_step(x_prev: torch.Tensor, t: torch.Tensor, betas: torch.Tensor, noise=None, *,
                 generator=None) -> torch.Tensor:
    """One diffusion step, a sample of q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I).

    x_prev: (B, ...); t: (B,) integer steps in 1..T; noise: (B, ...) or None (drawn).
    """
    check_tensor(x_prev, "x_prev", ndim=range(1, 8))
    _check_betas(betas)
    _check_t(t, x_prev, betas.shape[0])
    eps = _noise_like(x_prev, noise, generator)
    b = _at(_schedule(betas, x_prev)[0], t, x_prev)
    return torch.sqrt(1 - b) * x_prev + torch.sqrt(b) * eps


def q_sample(x0: torch.Tensor, t: torch.Tensor, betas: torch.Tensor, noise=None, *,
             generator=None) -> torch.Tensor:
    """Closed form x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, a sample of q(x_t | x_0).

    x0: (B, ...); t: (B,) in 1..T; noise: (B, ...) or None.
    """
    check_tensor(x0, "x0", ndim=range(1, 8))
    _check_betas(betas)
    _check_t(t, x0, betas.shape[0])
    eps = _noise_like(x0, noise, generator)
    return _q_sample(x0, t, _schedule(betas, x0), eps)


def _q_sample(x0, t, sch: _Schedule, eps):
    return torch.sqrt(_at(sch.ab, t, x0)) * x0 + torch.sqrt(_at(sch.omab, t, x0)) * eps


def q_posterior(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, betas: torch.Tensor):
    """Mean and variance of q(x_{t-1} | x_t, x_0) = N(mu_q, beta~_t I).

    mu_q = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
         + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t.
    x0, xt: (B, ...); t: (B,). Returns (mean (B, ...), variance (B, 1, ..., 1)).
    """
    check_tensor(x0, "x0", ndim=range(1, 8))
    check_tensor(xt, "xt", shape=tuple(x0.shape))
    _check_betas(betas)
    check_same(x0, "x0", xt=xt)
    _check_t(t, x0, betas.shape[0])
    b, a, _, abp, omab, omabp = (_at(v, t, x0) for v in _schedule(betas, x0))
    mean = torch.sqrt(abp) * b / omab * x0 + torch.sqrt(a) * omabp / omab * xt
    return mean, omabp / omab * b


def mu_from_eps(xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """The notes' epsilon form: 1/sqrt(alpha_t) x_t - (1 - alpha_t) / (sqrt(1 - alpha_bar_t) sqrt(alpha_t)) eps.

    With the true noise eps_0 it is mu_q(x_t, x_0); with a prediction it is mu_theta(x_t, t).
    xt, eps: (B, ...); t: (B,).
    """
    check_tensor(xt, "xt", ndim=range(1, 8))
    check_tensor(eps, "eps", shape=tuple(xt.shape))
    _check_betas(betas)
    check_same(xt, "xt", eps=eps)
    _check_t(t, xt, betas.shape[0])
    b, a, _, _, omab, _ = (_at(v, t, xt) for v in _schedule(betas, xt))
    return xt / torch.sqrt(a) - b / (torch.sqrt(omab) * torch.sqrt(a)) * eps


def gaussian_kl(mean1, var1, mean2, var2) -> torch.Tensor:
    """KL(N(mean1, var1 I) || N(mean2, var2 I)), summed over all but the batch axis. (B, ...) -> (B,).

    Variances broadcast against the means (per-sample scalars (B, 1, ..) or full diagonals).
    """
    for name, v in (("mean1", mean1), ("var1", var1), ("mean2", mean2), ("var2", var2)):
        check_tensor(v, name)
    check_same(mean1, "mean1", var1=var1, mean2=mean2, var2=var2)
    for name, v in (("var1", var1), ("var2", var2)):
        if not bool((v > 0).all()):
            raise ValueError(f"{name}: variances must be positive")
    for name, v in (("var1", var1), ("mean2", mean2), ("var2", var2)):
        try:
            out = torch.broadcast_shapes(mean1.shape, v.shape)
        except RuntimeError:
            raise ValueError(f"{name}: shape {tuple(v.shape)} does not broadcast against mean1's {tuple(mean1.shape)}") from None
        if tuple(out) != tuple(mean1.shape):
            raise ValueError(f"{name}: shape {tuple(v.shape)} would broadcast mean1's {tuple(mean1.shape)} to {tuple(out)}")
    if mean1.ndim == 0:
        raise ValueError("mean1: expected a batch (B, ...), got a scalar")
    m1, v1, m2, v2 = torch.broadcast_tensors(mean1, var1, mean2, var2)
    kl = 0.5 * (torch.log(v2) - torch.log(v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)
    return kl.reshape(kl.shape[0], -1).sum(1)


# --------------------------------------------------------------------------------------------
# Training loss and sampling
# --------------------------------------------------------------------------------------------


def _call(eps_model, x, t, y):
    return eps_model(x, t) if y is None else eps_model(x, t, y)


def ddpm_loss(eps_model, x0: torch.Tensor, betas: torch.Tensor, *, t=None, noise=None, y=None,
              p_uncond: float = 0.0, null_class: int | None = None, generator=None,
              validate: bool = True) -> torch.Tensor:
    """The notes' training objective: ||eps - eps_theta(sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, t)||^2,
    summed over the data axes and averaged over the batch, with t ~ Unif{1..T} and eps ~ N(0, I).

    y: (B,) class labels or None. p_uncond: probability of replacing a label by ``null_class``
    (classifier-free guidance trains one network for both). x0: (B, ...). Returns a scalar.
    The schedule is cast to x0's dtype and device. ``validate=False`` skips the checks that read
    values on the host (the schedule's range, given t's range): a training loop validates once.
    """
    check_bool(validate, "validate")
    check_tensor(x0, "x0", ndim=range(2, 8))
    if validate:
        _check_betas(betas)
    T, B = betas.shape[0], x0.shape[0]
    check_generator(generator, "generator", x0.device)
    if t is None:
        t = torch.randint(1, T + 1, (B,), generator=generator, device=x0.device)
    elif validate:
        _check_t(t, x0, T)
    eps = _noise_like(x0, noise, generator)
    check_float(p_uncond, "p_uncond", min=0.0, max=1.0)
    if y is not None:
        check_tensor(y, "y", shape=(B,), floating=False)
        if p_uncond > 0:
            if null_class is None:
                raise ValueError("null_class: needed when p_uncond > 0")
            drop = torch.rand(B, generator=generator, device=x0.device) < p_uncond
            y = torch.where(drop, torch.full_like(y, null_class), y)
    xt = _q_sample(x0, t, _schedule(betas, x0), eps)
    err = eps - _call(eps_model, xt, t, y)
    return err.pow(2).reshape(B, -1).sum(1).mean()


class TrainResult(NamedTuple):
    """What a trainer returns (the same fields as flows' and rl's trainers): the trained ``model``
    and ``losses``, the loss of every step (steps,) as a tensor on the data's device."""
    model: nn.Module
    losses: torch.Tensor


def train_ddpm(model: nn.Module, data: torch.Tensor, betas: torch.Tensor | None = None, *, steps: int = 1000,
               batch: int = 256, lr: float = 1e-3, y: torch.Tensor | None = None, p_uncond: float = 0.0,
               null_class: int | None = None, generator: torch.Generator | None = None,
               callback: Callable[[int, torch.Tensor], None] | None = None, every: int = 100) -> TrainResult:
    """DDPM training: Adam on ``ddpm_loss`` over minibatches of ``data`` (N, ...), ``steps`` times.

    betas: the schedule (default: the linear DDPM schedule, cast to data's dtype and device); y: (N,)
    labels for a conditional model (with ``p_uncond`` / ``null_class`` for guidance). Minibatches,
    time steps and noise are drawn on data's device (``generator`` must live there). Inputs are
    validated once before the loop; the losses stay on the device (no host synchronisation per
    step). ``callback(step, loss)`` is called every ``every`` steps with the detached loss tensor.
    Returns TrainResult(model, losses (steps,)).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    check_tensor(data, "data", ndim=range(2, 8))
    if data.shape[0] < 1:
        raise ValueError("data: expected at least one sample")
    betas = linear_beta_schedule() if betas is None else betas
    _check_betas(betas)
    steps = check_int(steps, "steps", min=1)
    batch = check_int(batch, "batch", min=1)
    check_float(lr, "lr", min=0.0, min_open=True)
    check_generator(generator, "generator", data.device)
    check_float(p_uncond, "p_uncond", min=0.0, max=1.0)
    if y is not None:
        check_tensor(y, "y", shape=(data.shape[0],), floating=False)
        if y.device != data.device:
            raise ValueError(f"y: on {y.device}, but data is on {data.device}")
        if p_uncond > 0 and null_class is None:
            raise ValueError("null_class: needed when p_uncond > 0")
    if callback is not None and not callable(callback):
        raise TypeError("callback: expected a callable (step, loss)")
    every = check_int(every, "every", min=1)
    betas = betas.to(data.device)
    # the fused kernel keeps Adam's step counter on the device: the foreach/for-loop versions read
    # it with .item() at every step
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    losses = []
    n = min(batch, data.shape[0])
    for step in range(steps):
        idx = torch.randint(0, data.shape[0], (n,), generator=generator, device=data.device)
        loss = ddpm_loss(model, data[idx], betas, y=None if y is None else y[idx], p_uncond=p_uncond,
                         null_class=null_class, generator=generator, validate=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if callback is not None and (step + 1) % every == 0:
            callback(step + 1, losses[-1])
    return TrainResult(model, torch.stack(losses))


def sampling_sigmas(betas: torch.Tensor, sigma: str = "beta") -> torch.Tensor:
    """sigma_t of the reverse step: sigma_t^2 = beta_t ("beta", the notes' choice in practice) or the
    posterior variance beta~_t ("posterior"). (T,)."""
    check_choice(sigma, "sigma", ["beta", "posterior"])
    return torch.sqrt(betas if sigma == "beta" else posterior_variance(betas))


def reverse_step(eps_model, xt: torch.Tensor, t: int, betas: torch.Tensor, sigmas: torch.Tensor,
                 z=None, y=None) -> torch.Tensor:
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - (1 - alpha_t)/sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) + sigma_t z,
    a sample of p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I). xt: (B, ...); t: int; z: like xt."""
    check_tensor(xt, "xt", ndim=range(1, 8))
    _check_betas(betas)
    check_int(t, "t", min=1, max=betas.shape[0])
    check_tensor(sigmas, "sigmas", shape=tuple(betas.shape))
    z = torch.zeros_like(xt) if z is None else check_tensor(z, "z", shape=tuple(xt.shape))
    check_same(xt, "xt", z=z)
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    eps = _call(eps_model, xt, tt, y)
    b, a, _, _, omab, _ = (v[t - 1] for v in _schedule(betas, xt))
    sigma = sigmas.to(device=xt.device, dtype=xt.dtype)[t - 1]
    return (xt - b / torch.sqrt(omab) * eps) / torch.sqrt(a) + sigma * z


@torch.no_grad()
def sample(eps_model, shape, betas: torch.Tensor, *, sigma: str = "beta", y=None, x_T=None,
           generator=None, return_trajectory: bool = False, dtype=None, device=None):
    """The notes' sampling loop: x_T ~ N(0, I); for t = T..1: z ~ N(0, I) if t > 1 else z = 0;
    x_{t-1} = 1/sqrt(alpha_t) (x_t - (1 - alpha_t)/sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) + sigma_t z.

    shape: (B, ...); y: (B,) labels or None; x_T: optional start (B, ...). The samples take x_T's
    dtype and device, else ``dtype`` / ``device``, else those of the model's parameters (when
    eps_model is an nn.Module), else the schedule's; noise is drawn there (``generator`` must live
    there). Inputs are validated once before the loop: no host synchronisation per step.
    Returns x_0 (and, with return_trajectory, the list [x_T, ..., x_0]).
    """
    check_bool(return_trajectory, "return_trajectory")
    _check_betas(betas)
    shape = tuple(shape)
    if len(shape) < 1 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape: expected positive ints, got {shape}")
    sigmas = sampling_sigmas(betas, sigma)
    if x_T is not None:
        x = check_tensor(x_T, "x_T", shape=shape)
    else:
        ref = next(eps_model.parameters(), None) if isinstance(eps_model, nn.Module) else None
        ref = betas if ref is None else ref
        dtype = ref.dtype if dtype is None else dtype
        device = ref.device if device is None else torch.device(device)
        check_generator(generator, "generator", device)
        x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    check_generator(generator, "generator", x.device)
    if y is not None:
        check_tensor(y, "y", shape=(shape[0],), floating=False)
        if y.device != x.device:
            raise ValueError(f"y: on {y.device}, but the samples are on {x.device}")
    sch = _schedule(betas, x)
    sig = sigmas.to(device=x.device, dtype=x.dtype)
    coef = sch.beta / torch.sqrt(sch.omab)       # (1 - alpha_t) / sqrt(1 - alpha_bar_t)
    inv_sqrt_a = torch.rsqrt(sch.alpha)
    traj = [x]
    for t in range(betas.shape[0], 0, -1):
        tt = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
        eps = _call(eps_model, x, tt, y)
        # the hot loop inlines reverse_step (same formula) to skip its per-step input checks
        x = (x - coef[t - 1] * eps) * inv_sqrt_a[t - 1]
        if t > 1:
            x = x + sig[t - 1] * torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
        if return_trajectory:
            traj.append(x)
    return (x, traj) if return_trajectory else x


# --------------------------------------------------------------------------------------------
# Bayes-optimal noise predictors: eps*(x_t, t) = E[eps | x_t] = -sqrt(1 - ab_t) grad log q(x_t)
# --------------------------------------------------------------------------------------------


def gaussian_optimal_eps(xt: torch.Tensor, t: torch.Tensor, betas: torch.Tensor, mean: torch.Tensor,
                         cov: torch.Tensor) -> torch.Tensor:
    """E[eps | x_t] for data x_0 ~ N(mean, cov): x_t ~ N(sqrt(ab) mean, ab cov + (1 - ab) I), so
    E[eps | x_t] = sqrt(1 - ab) (ab cov + (1 - ab) I)^{-1} (x_t - sqrt(ab) mean).
    xt: (B, D); t: (B,); mean: (D,); cov: (D, D)."""
    check_tensor(xt, "xt", ndim=2)
    D = xt.shape[1]
    check_tensor(mean, "mean", shape=(D,))
    check_tensor(cov, "cov", shape=(D, D))
    _check_betas(betas)
    check_same(xt, "xt", mean=mean, cov=cov)
    check_symmetric_psd(cov, "cov")
    _check_t(t, xt, betas.shape[0])
    sch = _schedule(betas, xt)
    ab, omab = sch.ab[t - 1], sch.omab[t - 1]                            # (B,)
    eye = torch.eye(D, dtype=xt.dtype, device=xt.device)
    S = ab[:, None, None] * cov + omab[:, None, None] * eye              # (B, D, D)
    r = xt - ab.sqrt()[:, None] * mean
    return torch.sqrt(omab)[:, None] * torch.linalg.solve(S, r)


def mixture_log_density(xt, t, betas, weights, means, stds) -> torch.Tensor:
    """log q(x_t) for x_0 ~ sum_k w_k N(mu_k, s_k^2 I): components N(sqrt(ab) mu_k, (ab s_k^2 + 1 - ab) I).
    xt: (B, D); t: (B,); weights (K,); means (K, D); stds (K,). Returns (B,)."""
    check_tensor(xt, "xt", ndim=2)
    check_tensor(means, "means", shape=(None, xt.shape[1]))
    K, D = means.shape
    check_tensor(weights, "weights", shape=(K,))
    check_tensor(stds, "stds", shape=(K,))
    _check_betas(betas)
    check_same(xt, "xt", weights=weights, means=means, stds=stds)
    _check_t(t, xt, betas.shape[0])
    if not bool((weights >= 0).all()) or not bool((weights > 0).any()):
        raise ValueError("weights: mixture weights must be non-negative, not all zero")
    if not bool((stds >= 0).all()):
        raise ValueError("stds: component standard deviations must be non-negative")
    sch = _schedule(betas, xt)
    ab, omab = sch.ab[t - 1][:, None], sch.omab[t - 1][:, None]          # (B, 1)
    var = ab * stds[None] ** 2 + omab                                    # (B, K)
    d2 = (xt[:, None, :] - ab.sqrt()[..., None] * means[None]).pow(2).sum(-1)
    logc = torch.log(weights / weights.sum())[None] - 0.5 * d2 / var - 0.5 * D * torch.log(2 * math.pi * var)
    return torch.logsumexp(logc, dim=1)


def mixture_optimal_eps(xt, t, betas, weights, means, stds) -> torch.Tensor:
    """E[eps | x_t] for Gaussian-mixture data (see ``mixture_log_density``), in closed form:
    sqrt(1 - ab) sum_k r_k(x_t) (x_t - sqrt(ab) mu_k) / (ab s_k^2 + 1 - ab), r_k the responsibilities.
    Returns (B, D)."""
    mixture_log_density(xt, t, betas, weights, means, stds)             # validates the arguments
    sch = _schedule(betas, xt)
    ab, omab = sch.ab[t - 1][:, None], sch.omab[t - 1][:, None]
    var = ab * stds[None] ** 2 + omab                                    # (B, K)
    diff = xt[:, None, :] - ab.sqrt()[..., None] * means[None]           # (B, K, D)
    D = xt.shape[1]
    logc = torch.log(weights / weights.sum())[None] - 0.5 * diff.pow(2).sum(-1) / var \
        - 0.5 * D * torch.log(2 * math.pi * var)
    r = torch.softmax(logc, dim=1)
    return torch.sqrt(omab) * (r[..., None] * diff / var[..., None]).sum(1)


# --------------------------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------------------------


def classifier_free_guidance(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, rho: float) -> torch.Tensor:
    """Guided prediction (1 + rho) eps_theta1(x, c; t) - rho eps_theta2(x; t). Shapes alike."""
    check_tensor(eps_cond, "eps_cond")
    check_tensor(eps_uncond, "eps_uncond", shape=tuple(eps_cond.shape))
    check_same(eps_cond, "eps_cond", eps_uncond=eps_uncond)
    check_float(rho, "rho")
    return (1 + rho) * eps_cond - rho * eps_uncond


def guided_eps_model(model, rho: float, null_class: int):
    """eps(x, t, y) = CFG mix of model(x, t, y) and model(x, t, null_class): one shared network."""
    check_float(rho, "rho")
    check_int(null_class, "null_class", min=0)

    def eps(x, t, y):
        return classifier_free_guidance(model(x, t, y), model(x, t, torch.full_like(y, null_class)), rho)

    return eps


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly continuous) times t: (B,) -> (B, dim)."""
    check_tensor(t, "t", ndim=1, floating=False)
    check_int(dim, "dim", min=2)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class NoisePredictor(nn.Module):
    """MLP eps_theta(x, t[, y]) for vectors x: (B, D); t: (B,) (int or float); y: (B,) labels in
    0..num_classes (num_classes is the null label of classifier-free guidance)."""

    def __init__(self, dim: int = 2, hidden: int = 128, time_dim: int = 32, num_classes: int = 0, depth: int = 3):
        super().__init__()
        check_int(dim, "dim", min=1)
        check_int(hidden, "hidden", min=1)
        check_int(time_dim, "time_dim", min=2)
        check_int(num_classes, "num_classes", min=0)
        check_int(depth, "depth", min=1)
        self.dim, self.time_dim, self.num_classes = dim, time_dim, num_classes
        self.class_emb = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        layers, d = [], dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, dim))

    def forward(self, x, t, y=None):
        check_tensor(x, "x", shape=(None, self.dim))
        check_tensor(t, "t", shape=(x.shape[0],), floating=False)
        e = timestep_embedding(t, self.time_dim).to(x.dtype)
        if self.class_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            check_tensor(y, "y", shape=(x.shape[0],), floating=False)
            e = e + self.class_emb(y).to(x.dtype)
        return self.net(torch.cat([x, e], dim=1))


class _Block(nn.Module):
    """conv-norm-SiLU-conv with the time(/class) embedding added in between, plus a skip."""

    def __init__(self, cin, cout, emb_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm = nn.GroupNorm(min(8, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(x) + self.emb(e)[:, :, None, None]
        h = self.conv2(F.silu(self.norm(h)))
        return h + self.skip(x)


class ImageNoisePredictor(nn.Module):
    """A small U-Net eps_theta(x, t[, y]) for images x: (B, C, H, W), H and W even.

    Encoder blocks enc1 (H), enc2 (H/2), mid (H/2); decoder dec2 on [mid, enc2] (H/2), up, dec1 on
    [up, enc1] (H), out. ``residuals`` (three tensors) are added to the block outputs the decoder
    reads (the skips from enc1 and enc2, and mid's output), as ControlNet does; the encoder path
    itself is left unchanged.
    """

    def __init__(self, channels: int = 1, width: int = 32, time_dim: int = 64, num_classes: int = 0):
        super().__init__()
        check_int(channels, "channels", min=1)
        check_int(width, "width", min=1)
        check_int(time_dim, "time_dim", min=2)
        check_int(num_classes, "num_classes", min=0)
        self.channels, self.time_dim, self.num_classes = channels, time_dim, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.class_emb = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        self.inc = nn.Conv2d(channels, width, 3, padding=1)
        self.enc1 = _Block(width, width, time_dim)
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.enc2 = _Block(width, 2 * width, time_dim)
        self.mid = _Block(2 * width, 2 * width, time_dim)
        self.dec2 = _Block(4 * width, 2 * width, time_dim)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = _Block(2 * width, width, time_dim)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def embed(self, x, t, y):
        check_tensor(t, "t", shape=(x.shape[0],), floating=False)
        e = self.time_mlp(timestep_embedding(t, self.time_dim).to(x.dtype))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            check_tensor(y, "y", shape=(x.shape[0],), floating=False)
            e = e + self.class_emb(y).to(x.dtype)
        return e

    def forward(self, x, t, y=None, residuals=None):
        check_tensor(x, "x", ndim=4)
        if x.shape[1] != self.channels or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"x: expected (B, {self.channels}, even H, even W), got {tuple(x.shape)}")
        e = self.embed(x, t, y)
        h1 = self.enc1(self.inc(x), e)
        h2 = self.enc2(self.down(h1), e)
        h3 = self.mid(h2, e)
        if residuals is not None:
            if len(residuals) != 3:
                raise ValueError(f"residuals: expected 3 tensors, got {len(residuals)}")
            h1, h2, h3 = h1 + residuals[0], h2 + residuals[1], h3 + residuals[2]
        h = self.dec2(torch.cat([h3, h2], dim=1), e)
        h = self.dec1(torch.cat([self.up(h), h1], dim=1), e)
        return self.out(F.silu(h))


def _zero_conv(c):
    conv = nn.Conv2d(c, c, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlNet(nn.Module):
    """ControlNet: a frozen ``base`` network plus a trainable copy of its encoder, fed x + a zero conv of
    the control image, whose block outputs are added to the base's through zero-initialised 1x1 convs.
    At initialisation the output equals the base's. x, control: (B, C, H, W); t: (B,)."""

    def __init__(self, base: ImageNoisePredictor, control_channels: int | None = None):
        super().__init__()
        if not isinstance(base, ImageNoisePredictor):
            raise TypeError(f"base: expected an ImageNoisePredictor, got {type(base).__name__}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        width = base.inc.out_channels
        cc = base.channels if control_channels is None else check_int(control_channels, "control_channels", min=1)
        self.control_channels = cc
        self.hint = nn.Conv2d(cc, width, 3, padding=1)
        nn.init.zeros_(self.hint.weight)
        nn.init.zeros_(self.hint.bias)
        # the trainable copy starts from the frozen weights, as in ControlNet
        self.inc, self.enc1, self.down, self.enc2, self.mid = (copy.deepcopy(m) for m in
                                                              (base.inc, base.enc1, base.down, base.enc2, base.mid))
        for m in (self.inc, self.enc1, self.down, self.enc2, self.mid):
            m.requires_grad_(True)
        self.zero = nn.ModuleList([_zero_conv(width), _zero_conv(2 * width), _zero_conv(2 * width)])

    def forward(self, x, t, control, y=None):
        check_tensor(x, "x", ndim=4)
        check_tensor(control, "control", shape=(x.shape[0], self.control_channels, x.shape[2], x.shape[3]))
        e = self.base.embed(x, t, y)
        h1 = self.enc1(self.inc(x) + self.hint(control), e)
        h2 = self.enc2(self.down(h1), e)
        h3 = self.mid(h2, e)
        res = [z(h) for z, h in zip(self.zero, (h1, h2, h3))]
        return self.base(x, t, y, residuals=res)


class Autoencoder(nn.Module):
    """Convolutional autoencoder for latent diffusion: x (B, C, H, W) -> z (B, latent_channels, H/f, W/f),
    f = 2**levels; decode maps back."""

    def __init__(self, channels: int = 1, latent_channels: int = 4, width: int = 32, levels: int = 2):
        super().__init__()
        for name, v in (("channels", channels), ("latent_channels", latent_channels), ("width", width), ("levels", levels)):
            check_int(v, name, min=1)
        self.channels, self.latent_channels, self.factor = channels, latent_channels, 2 ** levels
        enc, dec, c = [nn.Conv2d(channels, width, 3, padding=1)], [], width
        for _ in range(levels):
            enc += [nn.SiLU(), nn.Conv2d(c, c, 4, stride=2, padding=1)]
            dec += [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.SiLU()]
        self.encoder = nn.Sequential(*enc, nn.SiLU(), nn.Conv2d(c, latent_channels, 1))
        self.decoder = nn.Sequential(nn.Conv2d(latent_channels, c, 1), nn.SiLU(), *dec, nn.Conv2d(c, channels, 3, padding=1))

    def encode(self, x):
        check_tensor(x, "x", ndim=4)
        if x.shape[1] != self.channels or x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"x: expected (B, {self.channels}, H, W) with H, W divisible by {self.factor}, got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, z):
        check_tensor(z, "z", ndim=4)
        if z.shape[1] != self.latent_channels:
            raise ValueError(f"z: expected {self.latent_channels} channels, got {z.shape[1]}")
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))


def latent_ddpm_loss(eps_model, encode, x0: torch.Tensor, betas: torch.Tensor, **kw) -> torch.Tensor:
    """Latent diffusion's training loss: the DDPM loss on z_0 = encode(x_0), the (frozen) encoder
    getting no gradient. x0: (B, ...)."""
    check_tensor(x0, "x0", ndim=range(2, 8))
    if not callable(encode):
        raise TypeError("encode: expected a callable")
    with torch.no_grad():
        z0 = encode(x0)
    return ddpm_loss(eps_model, z0, betas, **kw)


def latent_sample(eps_model, decode, latent_shape, betas: torch.Tensor, **kw) -> torch.Tensor:
    """Latent diffusion's sampler: run the sampling loop in latent space, then decode. Returns decode(z_0)."""
    if not callable(decode):
        raise TypeError("decode: expected a callable")
    with torch.no_grad():
        return decode(sample(eps_model, latent_shape, betas, **kw))


# --------------------------------------------------------------------------------------------
# The ELBO's terms
# --------------------------------------------------------------------------------------------


def elbo_terms(eps_model, x0: torch.Tensor, betas: torch.Tensor, sigmas: torch.Tensor, *, generator=None):
    """One-sample Monte-Carlo estimate of the notes' three ELBO terms for each x_0:

    recon    = E_{q(x_1|x_0)} log p_theta(x_0 | x_1),  p_theta(x_0 | x_1) = N(mu_theta(x_1, 1), sigma_1^2 I);
    prior    = KL(q(x_T | x_0) || N(0, I))  (exact);
    denoise  = sum_{t=2}^T E_{q(x_t|x_0)} KL(q(x_{t-1} | x_t, x_0) || N(mu_theta(x_t, t), sigma_t^2 I))
               (KL exact, x_t drawn once per t).
    ELBO = recon - prior - denoise. x0: (B, ...); sigmas: (T,) positive. Returns three (B,) tensors.
    """
    check_tensor(x0, "x0", ndim=range(2, 8))
    _check_betas(betas)
    check_tensor(sigmas, "sigmas", shape=tuple(betas.shape))
    check_generator(generator, "generator", x0.device)
    if not bool((sigmas > 0).all()):
        raise ValueError("sigmas: every sigma_t must be positive for the likelihood to exist")
    B, T = x0.shape[0], betas.shape[0]
    sigmas = sigmas.to(device=x0.device, dtype=x0.dtype)
    sch = _schedule(betas, x0)
    bt, at, ab, abp, omab, omabp = sch

    def steps(t):
        return torch.full((B,), t, device=x0.device, dtype=torch.long)

    def kl(m1, v1, m2, v2):  # gaussian_kl without its checks: the loop below stays free of host reads
        return (0.5 * (torch.log(v2) - torch.log(v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)).reshape(B, -1).sum(1)

    def mu_theta(xt, t):
        eps = _call(eps_model, xt, steps(t), None)
        return xt / torch.sqrt(at[t - 1]) - bt[t - 1] / (torch.sqrt(omab[t - 1]) * torch.sqrt(at[t - 1])) * eps

    def noise():
        return torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)

    one = torch.ones_like(x0)
    prior = kl(torch.sqrt(ab[-1]) * x0, omab[-1] * one, torch.zeros_like(x0), one)
    x1 = _q_sample(x0, steps(1), sch, noise())
    mu1 = mu_theta(x1, 1)
    # log N(x_0; mu_theta(x_1, 1), sigma_1^2 I)
    s2 = sigmas[0] ** 2
    recon = (-0.5 * (x0 - mu1) ** 2 / s2 - 0.5 * torch.log(2 * math.pi * s2)).reshape(B, -1).sum(1)
    denoise = torch.zeros(B, dtype=x0.dtype, device=x0.device)
    for t in range(2, T + 1):
        xt = _q_sample(x0, steps(t), sch, noise())
        # q(x_{t-1} | x_t, x_0) = N(mq, vq I)
        mq = (torch.sqrt(abp[t - 1]) * bt[t - 1] * x0 + torch.sqrt(at[t - 1]) * omabp[t - 1] * xt) / omab[t - 1]
        vq = omabp[t - 1] / omab[t - 1] * bt[t - 1]
        denoise = denoise + kl(mq, vq * one, mu_theta(xt, t), sigmas[t - 1] ** 2 * one)
    return recon, prior, denoise
