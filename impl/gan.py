"""Generative adversarial networks: value function, optimal discriminator, divergences, generator
losses (saturating / non-saturating), a k-step training loop, DCGAN modules, WGAN-GP, Pix2Pix and
CycleGAN losses, FID, GAN inversion, unrolled generator update, StyleGAN's AdaIN.

Discriminators return *logits* a with D = sigmoid(a); losses use log D = logsigmoid(a) and
log(1 - D) = logsigmoid(-a), which stay finite for any logit (the plain probability forms are
kept beside them as references).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from impl._checks import (check_choice, check_float, check_int, check_probability, check_range, check_returned,
                          check_same, check_same_shape, check_symmetric_psd, check_tensor, check_trainable)


# ---------------------------------------------------------------------------------- value function

def _recording() -> bool:
    """Autograd records here: a result without a graph then means it does not depend on the input."""
    return torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def _nonempty(t: torch.Tensor, name: str) -> torch.Tensor:
    """A sample mean needs a sample: the mean of nothing is NaN."""
    if t.shape[0] == 0:
        raise ValueError(f"{name}: the expectation needs at least one sample, got shape {tuple(t.shape)}")
    return t


def _nonnegative(p: torch.Tensor, name: str) -> None:
    # "not >= 0" rather than "< 0", so that NaN fails too; an infinite mass is no density either
    if not bool(((p >= 0) & (p < math.inf)).all()):
        if bool((p < 0).any()):
            raise ValueError(f"{name}: densities must be non-negative")
        raise ValueError(f"{name}: densities must be finite (no NaN or inf)")


def _logits(fn, x: torch.Tensor, name: str) -> torch.Tensor:
    """fn(x) as one logit per sample of x, (B,): (B,) and (B, 1) outputs are accepted."""
    out = fn(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: expected to return a tensor of logits, got {type(out).__name__}")
    if out.ndim < 1 or out.shape[0] != x.shape[0] or out.numel() != x.shape[0]:
        raise ValueError(f"{name}: expected one logit per sample, ({x.shape[0]},), got shape {tuple(out.shape)}")
    return out.reshape(-1)


def value_function(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    """V(G, D) = E_{x~p_d} log D(x) + E_{x^~p_m} log(1 - D(x^)), estimated by sample means.

    d_real_logits: (N,) logits of D on data; d_fake_logits: (M,) logits on generated samples.
    """
    check_tensor(d_real_logits, "d_real_logits", ndim=1)
    check_tensor(d_fake_logits, "d_fake_logits", ndim=1)
    check_same(d_real_logits, "d_real_logits", d_fake_logits=d_fake_logits)
    _nonempty(d_real_logits, "d_real_logits")
    _nonempty(d_fake_logits, "d_fake_logits")
    return F.logsigmoid(d_real_logits).mean() + F.logsigmoid(-d_fake_logits).mean()


def value_function_probs(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Reference form of ``value_function`` on probabilities D(x) in [0, 1]. (N,), (M,) -> ()."""
    check_tensor(d_real, "d_real", ndim=1)
    check_tensor(d_fake, "d_fake", ndim=1)
    check_same(d_real, "d_real", d_fake=d_fake)
    for name, t in (("d_real", d_real), ("d_fake", d_fake)):
        _nonempty(t, name)
        if not bool(((t >= 0) & (t <= 1)).all()):  # NaN fails too
            raise ValueError(f"{name}: probabilities must lie in [0, 1]")
    return torch.log(d_real).mean() + torch.log1p(-d_fake).mean()


def value_function_densities(p_d: torch.Tensor, p_m: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """V as a sum over a discrete space (or a quadrature grid): sum_x p_d log D + p_m log(1 - D).

    p_d, p_m: (..., K) non-negative masses (probability vectors, or densities times quadrature
    weights); d: (..., K) discriminator values in [0, 1] (0 and 1 only where the mass they would
    take the log of is zero, as at D*, else the value is -inf)."""
    check_tensor(p_d, "p_d")
    check_tensor(p_m, "p_m")
    check_tensor(d, "d")
    check_same(p_d, "p_d", p_m=p_m, d=d)
    check_same_shape(p_d, "p_d", p_m=p_m, d=d)  # a sum over x: no broadcasting
    _nonnegative(p_d, "p_d")
    _nonnegative(p_m, "p_m")
    check_range(d, "d", min=0.0, max=1.0)
    # 0 * log 0 = 0: where a distribution has no mass its term does not count. The logs are taken
    # only where that mass is positive (D* is 0 where p_d = 0 and 1 where p_m = 0): a log(0) in the
    # discarded branch of torch.where would still send 0 * inf = NaN into the gradient.
    t1 = torch.where(p_d > 0, p_d * torch.log(torch.where(p_d > 0, d, torch.ones_like(d))), torch.zeros_like(d))
    d = torch.where(p_m > 0, d, torch.zeros_like(d))
    t2 = torch.where(p_m > 0, p_m * torch.log1p(-d), torch.zeros_like(d))
    return (t1 + t2).sum(-1)


def optimal_discriminator(p_d: torch.Tensor, p_m: torch.Tensor) -> torch.Tensor:
    """D*(x) = p_d(x) / (p_d(x) + p_m(x)) from the two densities at x (same shape). Where both are
    zero the value does not matter for V; 1/2 is returned there."""
    check_tensor(p_d, "p_d")
    check_tensor(p_m, "p_m")
    check_same(p_d, "p_d", p_m=p_m)
    check_same_shape(p_d, "p_d", p_m=p_m)
    _nonnegative(p_d, "p_d")
    _nonnegative(p_m, "p_m")
    # Both divided by the larger first: p_d + p_m itself overflows for densities near the maximum
    # (D* = 0 then, instead of 1/2). The division happens only where that maximum is positive.
    m = torch.maximum(p_d, p_m)
    pos = m > 0
    safe = torch.where(pos, m, torch.ones_like(m))
    a, b = p_d / safe, p_m / safe
    return torch.where(pos, a / torch.where(pos, a + b, torch.ones_like(m)), torch.full_like(m, 0.5))


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum p log(p / q) over the last axis (0 log 0 = 0). p, q: (..., K) probability
    vectors of the same shape -> (...)."""
    check_probability(p, "p")
    check_probability(q, "q")
    check_same(p, "p", q=q)
    check_same_shape(p, "p", q=q)
    # p / q only where p > 0: at a common zero 0 / 0 in the discarded branch of torch.where would
    # still send NaN into the gradient.
    ratio = torch.where(p > 0, p / torch.where(p > 0, q, torch.ones_like(q)), torch.ones_like(p))
    return torch.where(p > 0, p * torch.log(ratio), torch.zeros_like(p)).sum(-1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JS(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2 (nats). p, q: (..., K)
    probability vectors of the same shape -> (...)."""
    check_probability(p, "p")
    check_probability(q, "q")
    check_same(p, "p", q=q)
    check_same_shape(p, "p", q=q)
    m = 0.5 * (p + q)
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


# ------------------------------------------------------------------------------------------ losses

def discriminator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    """D maximises V: its loss is -V (binary cross-entropy, real = 1, fake = 0)."""
    return -value_function(d_real_logits, d_fake_logits)


def generator_loss(d_fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """Generator loss to *minimise* on logits of D(G(z)): (M,) -> ().

    ``saturating``: E log(1 - D(G(z))) (the minimax objective; gradient w.r.t. the logit is
    -D(G(z)), which vanishes when D rejects the samples). ``non-saturating``: -E log D(G(z))
    (gradient ascent on log D(G(z)); gradient w.r.t. the logit is -(1 - D(G(z))))."""
    check_tensor(d_fake_logits, "d_fake_logits", ndim=1)
    check_choice(kind, "kind", ["saturating", "non-saturating"])
    _nonempty(d_fake_logits, "d_fake_logits")
    if kind == "saturating":
        return F.logsigmoid(-d_fake_logits).mean()
    return -F.logsigmoid(d_fake_logits).mean()


def _draw(sample, name: str, like: torch.Tensor) -> torch.Tensor:
    """sample(): a non-empty batch in the dtype and on the device of the network that reads it (shape and
    device checks only: no host synchronisation per step)."""
    x = check_returned(sample(), name, like)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: returned an empty batch, shape {tuple(x.shape)}")
    return x


class GANTrainResult(NamedTuple):
    """What ``train_gan`` returns. ``model`` is the generator and ``losses`` its loss per generator
    step (the field names every trainer shares); ``d_losses`` has one entry per discriminator step."""
    model: nn.Module
    losses: torch.Tensor
    discriminator: nn.Module
    d_losses: torch.Tensor
    d_steps: int
    g_steps: int


def train_gan(generator: nn.Module, discriminator: nn.Module, sample_data, sample_noise, *,
              steps: int, k: int = 1, lr: float = 2e-4, loss: str = "non-saturating",
              betas=(0.5, 0.999)) -> GANTrainResult:
    """Alternating GAN training: for each generator step, ``k`` discriminator steps (Adam).

    sample_data() -> (N, D) real batch; sample_noise() -> (M, Q) noise batch.
    Returns GANTrainResult(model=generator, losses (steps,), discriminator, d_losses (steps * k,),
    d_steps, g_steps). The losses stay on the device as detached tensors and are stacked once at
    the end: no host synchronisation per step."""
    check_int(steps, "steps", min=1)
    check_int(k, "k", min=1)
    check_float(lr, "lr", min=0.0, min_open=True)
    check_choice(loss, "loss", ["saturating", "non-saturating"])
    if not callable(sample_data):
        raise TypeError("sample_data: expected a callable")
    if not callable(sample_noise):
        raise TypeError("sample_noise: expected a callable")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas: expected two numbers (beta1, beta2), got {betas!r}")
    betas = tuple(check_float(b, "betas", min=0.0, max=1.0, max_open=True) for b in betas)
    p_g, p_d = check_trainable(generator, "generator"), check_trainable(discriminator, "discriminator")
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    d_hist, g_hist = [], []
    for _ in range(steps):
        for _ in range(k):
            real = _draw(sample_data, "sample_data", p_d)
            fake = generator(_draw(sample_noise, "sample_noise", p_g)).detach()
            d_loss = discriminator_loss(_logits(discriminator, real, "discriminator"),
                                        _logits(discriminator, fake, "discriminator"))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            d_hist.append(d_loss.detach())
        fake = generator(_draw(sample_noise, "sample_noise", p_g))
        g_loss = generator_loss(_logits(discriminator, fake, "discriminator"), loss)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        g_hist.append(g_loss.detach())
    return GANTrainResult(generator, torch.stack(g_hist), discriminator, torch.stack(d_hist),
                          len(d_hist), len(g_hist))


# ------------------------------------------------------------------------------------------ DCGAN

class DCGANGenerator(nn.Module):
    """DCGAN generator by the notes' rules: no pooling (fractionally-strided convolutions upsample),
    batchnorm, no fully connected layer, ReLU activations (tanh output).
    z: (B, nz) or (B, nz, 1, 1) -> image (B, channels, size, size), size = 4 * 2**ups."""

    def __init__(self, nz: int = 16, features: int = 16, channels: int = 1, ups: int = 2):
        super().__init__()
        check_int(nz, "nz", min=1)
        check_int(features, "features", min=1)
        check_int(channels, "channels", min=1)
        check_int(ups, "ups", min=1)
        self.nz = nz
        f = features * 2 ** (ups - 1)
        layers = [nn.ConvTranspose2d(nz, f, 4, 1, 0, bias=False), nn.BatchNorm2d(f), nn.ReLU()]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(f, f // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(f // 2), nn.ReLU()]
            f //= 2
        layers += [nn.ConvTranspose2d(f, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, "z", ndim=(2, 4))
        if z.shape[1] != self.nz:
            raise ValueError(f"z: expected {self.nz} channels, got shape {tuple(z.shape)}")
        if z.ndim == 4 and tuple(z.shape[2:]) != (1, 1):
            raise ValueError(f"z: expected shape (B, {self.nz}) or (B, {self.nz}, 1, 1), got {tuple(z.shape)}")
        check_same(self.net[0].weight, "the generator", z=z)  # else a RuntimeError inside the first layer
        if z.ndim == 2:
            z = z[:, :, None, None]
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: strided convolutions instead of pooling, batchnorm, no fully connected
    layer, LeakyReLU(0.2). x: (B, channels, size, size) -> logits (B,)."""

    def __init__(self, features: int = 16, channels: int = 1, downs: int = 2):
        super().__init__()
        check_int(features, "features", min=1)
        check_int(channels, "channels", min=1)
        check_int(downs, "downs", min=1)
        self.channels, self.downs = channels, downs
        layers = [nn.Conv2d(channels, features, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        f = features
        for _ in range(downs - 1):
            layers += [nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f), nn.LeakyReLU(0.2)]
            f *= 2
        layers += [nn.Conv2d(f, 1, 4, 1, 0, bias=False)]   # 4x4 -> 1x1: the logit, no FC layer
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=4)
        if x.shape[1] != self.channels:
            raise ValueError(f"x: expected {self.channels} channels, got shape {tuple(x.shape)}")
        # each strided convolution maps a size n to n // 2; the last one needs exactly 4 x 4 for one
        # logit per image (a smaller map is a RuntimeError inside it, a larger one gives several)
        f = 2 ** self.downs
        if x.shape[2] // f != 4 or x.shape[3] // f != 4:
            raise ValueError(f"x: expected {4 * f} x {4 * f} images (4 * 2^downs), got shape {tuple(x.shape)}")
        check_same(self.net[0].weight, "the discriminator", x=x)
        return self.net(x).reshape(x.shape[0])


# -------------------------------------------------------------------------------------------- WGAN

def wgan_critic_loss(critic_real: torch.Tensor, critic_fake: torch.Tensor) -> torch.Tensor:
    """Critic loss to minimise: E D(x^) - E D(x) (the critic maximises E D(x) - E D(x^), which
    over 1-Lipschitz D is the Wasserstein-1 distance). (N,), (M,) -> ()."""
    check_tensor(critic_real, "critic_real", ndim=1)
    check_tensor(critic_fake, "critic_fake", ndim=1)
    check_same(critic_real, "critic_real", critic_fake=critic_fake)
    _nonempty(critic_real, "critic_real")
    _nonempty(critic_fake, "critic_fake")
    return critic_fake.mean() - critic_real.mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *, weight: float = 10.0,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: weight * E (||grad_x D(x^)||_2 - 1)^2 at x^ = eps x + (1 - eps) x~, eps ~ U[0, 1].

    critic: (B, ...) -> (B,); real, fake: (B, ...); eps: optional (B,). Differentiable
    (create_graph) so the penalty trains the critic."""
    if not callable(critic):
        raise TypeError("critic: expected a callable")
    check_tensor(real, "real")
    if real.ndim < 1:
        raise ValueError("real: expected a batch (B, ...), got a scalar")
    _nonempty(real, "real")
    check_tensor(fake, "fake", shape=tuple(real.shape))
    check_same(real, "real", fake=fake)
    check_float(weight, "weight", min=0.0)
    if eps is None:
        eps = torch.rand(real.shape[0], dtype=real.dtype, device=real.device)
    else:  # the caller's: an interpolation weight in [0, 1] on real's device
        check_tensor(eps, "eps", shape=(real.shape[0],))
        check_same(real, "real", eps=eps)
        check_range(eps, "eps", min=0.0, max=1.0)
    eps = eps.view(-1, *([1] * (real.ndim - 1)))
    x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != real.shape[0] \
            or out.numel() != real.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"critic: expected one value per sample, ({real.shape[0]},), got {got}")
    # a critic that does not depend on its input has gradient zero (autograd.grad would refuse it);
    # without autograd at all (no_grad, inference mode) autograd.grad still raises, as it should
    grad = torch.autograd.grad(out.sum(), x_hat, create_graph=True, allow_unused=True)[0] \
        if out.requires_grad or not _recording() else None
    grad = torch.zeros_like(x_hat) if grad is None else grad
    norm = grad.reshape(grad.shape[0], -1).norm(dim=1)
    return weight * (norm - 1).pow(2).mean()


# ------------------------------------------------------------------------------- image translation

def pix2pix_generator_loss(d_fake_logits: torch.Tensor, fake: torch.Tensor, target: torch.Tensor,
                           *, l1_weight: float = 100.0) -> torch.Tensor:
    """Pix2Pix generator loss: non-saturating GAN loss on D(x, G(x)) + lambda * ||y - G(x)||_1
    (mean absolute error between the generated image and the paired target y)."""
    check_tensor(fake, "fake")
    check_tensor(target, "target", shape=tuple(fake.shape))
    check_same(fake, "fake", target=target)
    check_tensor(d_fake_logits, "d_fake_logits")
    check_same(fake, "fake", d_fake_logits=d_fake_logits)
    check_float(l1_weight, "l1_weight", min=0.0)
    if fake.numel() == 0:  # the mean absolute error of no pixel
        raise ValueError(f"fake: the L1 term needs at least one pixel, got shape {tuple(fake.shape)}")
    return generator_loss(d_fake_logits, "non-saturating") + l1_weight * (target - fake).abs().mean()


def pix2pix_discriminator_input(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """D : X, Y -> [0, 1] sees the (input, output) pair stacked along channels. (B, Cx, H, W),
    (B, Cy, H, W) -> (B, Cx + Cy, H, W)."""
    check_tensor(x, "x", ndim=4)
    check_tensor(y, "y", ndim=4)
    check_same(x, "x", y=y)
    if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
        raise ValueError(f"y: batch and spatial size must match x's {tuple(x.shape)}, got {tuple(y.shape)}")
    return torch.cat([x, y], dim=1)


def cycle_consistency_loss(x: torch.Tensor, y: torch.Tensor, F_xy, G_yx) -> torch.Tensor:
    """CycleGAN: E ||G(F(x)) - x||_1 + E ||F(G(y)) - y||_1 with F: X -> Y, G: Y -> X.
    x: (B, ...) from X, y: (B', ...) from Y (unpaired)."""
    check_tensor(x, "x")
    check_tensor(y, "y")
    check_same(x, "x", y=y)
    for name, v in (("x", x), ("y", y)):
        if v.numel() == 0:  # the mean of no pixel
            raise ValueError(f"{name}: the cycle loss needs at least one sample, got shape {tuple(v.shape)}")
    if not callable(F_xy):
        raise TypeError("F_xy: expected a callable")
    if not callable(G_yx):
        raise TypeError("G_yx: expected a callable")
    return (_cycle(x, F_xy, "F_xy", G_yx, "G_yx") - x).abs().mean() + (_cycle(y, G_yx, "G_yx", F_xy, "F_xy") - y).abs().mean()


def _cycle(v: torch.Tensor, there, there_name: str, back, back_name: str) -> torch.Tensor:
    """back(there(v)), checked to be a tensor of v's shape: it is compared with v entry by entry (no broadcasting)."""
    mid = there(v)
    if not isinstance(mid, torch.Tensor):
        raise TypeError(f"{there_name}: expected to return a tensor, got {type(mid).__name__}")
    out = back(mid)
    if not isinstance(out, torch.Tensor) or out.shape != v.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{back_name}: {back_name}({there_name}(.)) must have its input's shape {tuple(v.shape)}, got {got}")
    return out


def cyclegan_generator_loss(x, y, F_xy, G_yx, D_y, D_x, *, cycle_weight: float = 10.0) -> torch.Tensor:
    """Full CycleGAN generator objective: non-saturating GAN losses for F (judged by D_Y) and for
    G (judged by D_X) plus cycle_weight times the cycle-consistency loss."""
    check_float(cycle_weight, "cycle_weight", min=0.0)
    for name, fn in (("F_xy", F_xy), ("G_yx", G_yx), ("D_y", D_y), ("D_x", D_x)):
        if not callable(fn):
            raise TypeError(f"{name}: expected a callable")
    cycle = cycle_consistency_loss(x, y, F_xy, G_yx)  # checks x, y and the two translators first
    gan = generator_loss(_logits(D_y, F_xy(x), "D_y")) + generator_loss(_logits(D_x, G_yx(y), "D_x"))
    return gan + cycle_weight * cycle


# --------------------------------------------------------------------------------------------- FID

def feature_statistics(features: torch.Tensor):
    """Mean (D,) and unbiased covariance (D, D) of features (N, D)."""
    check_tensor(features, "features", ndim=2)
    if features.shape[0] < 2:
        raise ValueError("features: need at least 2 rows for a covariance")
    mu = features.mean(0)
    xc = features - mu
    return mu, xc.T @ xc / (features.shape[0] - 1)


def _check_psd_by_cholesky(cov: torch.Tensor, name: str) -> None:
    """Symmetric and PSD within sqrt(eps) of its largest entry (check_symmetric_psd's tolerance),
    tested by a Cholesky factorisation of cov + sqrt(eps) max|cov| I: it exists iff the smallest
    eigenvalue exceeds -sqrt(eps) max|cov|, at a fraction of an eigendecomposition's cost."""
    if not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    rtol = math.sqrt(torch.finfo(cov.dtype).eps)
    scale = cov.abs().max().clamp_min(torch.finfo(cov.dtype).tiny)
    asym = (cov - cov.T).abs().max() / scale
    if not bool(asym <= rtol):
        raise ValueError(f"{name}: must be symmetric, max relative asymmetry {asym.item():.3g}")
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    _, info = torch.linalg.cholesky_ex(cov + rtol * scale * eye)
    if bool(info != 0):
        raise ValueError(f"{name}: must be positive semi-definite (an eigenvalue below -{rtol:.2g} x its largest entry)")


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) for symmetric PSD S1, S2. mu: (D,), S: (D, D).

    tr (S1 S2)^{1/2} = tr (S1^{1/2} S2 S1^{1/2})^{1/2}: the eigenvalues of S1 S2 equal those of the
    symmetric PSD S1^{1/2} S2 S1^{1/2}, so two symmetric eigendecompositions suffice. S1's PSD check
    reuses its eigenvalues; S2's costs one Cholesky factorisation.
    The distance is the squared 2-Wasserstein distance of two Gaussians, >= 0; round-off in the
    eigenvalues can leave it a few ulps of tr(S1 + S2) below zero (identical rank-deficient
    statistics), so it is clamped at 0."""
    check_tensor(mu1, "mu1", ndim=1)
    d = mu1.shape[0]
    if d == 0:
        raise ValueError("mu1: expected at least one feature dimension, got shape (0,)")
    check_tensor(mu2, "mu2", shape=(d,))
    check_tensor(sigma1, "sigma1", shape=(d, d))
    check_tensor(sigma2, "sigma2", shape=(d, d))
    check_same(mu1, "mu1", mu2=mu2, sigma1=sigma1, sigma2=sigma2)
    # one host read for all four; NaN would reach eigh, whose failure to converge is a LinAlgError
    if not bool(torch.isfinite(mu1).all() & torch.isfinite(mu2).all() & torch.isfinite(sigma1).all()):
        for name, v in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1)):
            check_tensor(v, name, finite=True)
    s1 = 0.5 * (sigma1 + sigma1.T)
    w, v = torch.linalg.eigh(s1)
    check_symmetric_psd(sigma1, "sigma1", eigenvalues=w)
    _check_psd_by_cholesky(sigma2, "sigma2")
    root1 = (v * w.clamp_min(0).sqrt().unsqueeze(-2)) @ v.T
    m = root1 @ (0.5 * (sigma2 + sigma2.T)) @ root1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()
    dist = (mu1 - mu2).pow(2).sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_sqrt
    return dist.clamp_min(0)


def fid(features_real: torch.Tensor, features_fake: torch.Tensor) -> torch.Tensor:
    """FID: Frechet distance between Gaussians fitted to real and generated features (N, D), (M, D)."""
    check_tensor(features_real, "features_real", ndim=2)
    check_tensor(features_fake, "features_fake", ndim=2)
    check_same(features_real, "features_real", features_fake=features_fake)  # else named as mu2
    if features_fake.shape[1] != features_real.shape[1]:
        raise ValueError("features_fake: feature dimension differs from features_real's")
    if features_real.shape[1] == 0:
        raise ValueError("features_real: expected at least one feature column, got shape "
                         f"{tuple(features_real.shape)}")
    return frechet_distance(*feature_statistics(features_real), *feature_statistics(features_fake))


# ------------------------------------------------------------------------------------ GAN inversion

def invert_generator(generator, x: torch.Tensor, z0: torch.Tensor, *, steps: int = 200,
                     lr: float = 0.05, mask: torch.Tensor | None = None) -> torch.Tensor:
    """GAN inversion: z* = argmin_z ||m * (G(z) - x)||^2 by Adam from z0. x: (B, ...), z0: (B, Q);
    mask m (broadcastable to x, 1 = known pixel) restricts the fit to known pixels, for
    inpainting (default: all pixels). The generator's parameters are not changed.
    Returns z* (B, Q), detached."""
    if not callable(generator):
        raise TypeError("generator: expected a callable")
    check_tensor(x, "x")
    if x.ndim < 1:
        raise ValueError("x: expected a batch (B, ...), got a scalar")
    check_tensor(z0, "z0", ndim=2)
    check_same(x, "x", z0=z0)
    if z0.shape[0] != x.shape[0]:  # one code per image
        raise ValueError(f"z0: batch of {z0.shape[0]} differs from x's {x.shape[0]}")
    check_int(steps, "steps", min=1)
    check_float(lr, "lr", min=0.0, min_open=True)
    if mask is None:
        mask = torch.ones((), dtype=x.dtype, device=x.device)
    check_tensor(mask, "mask")
    check_same(x, "x", mask=mask)
    try:
        if torch.broadcast_shapes(mask.shape, x.shape) != x.shape:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not broadcast to x's {tuple(x.shape)}") from None
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    per_image = math.prod(x.shape[1:])  # not -1: ambiguous for an empty batch
    for _ in range(steps):
        out = generator(z)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:  # else broadcast against x
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"generator: expected images of x's shape {tuple(x.shape)}, got {got}")
        loss = (mask * (out - x)).pow(2).reshape(x.shape[0], per_image).sum(1).sum()
        # Gradient w.r.t. z only: the generator's parameters get no .grad. A generator that ignores z
        # (or an empty batch) gives gradient zero, which autograd.grad would refuse.
        g = torch.autograd.grad(loss, z, allow_unused=True)[0] if loss.requires_grad or not _recording() else None
        z.grad = torch.zeros_like(z) if g is None else g
        opt.step()
    return z.detach()


# ---------------------------------------------------------------------------------- unrolled GAN

def unrolled_generator_loss(generator: nn.Module, discriminator: nn.Module, z: torch.Tensor,
                            real: torch.Tensor, *, k: int, lr: float,
                            kind: str = "non-saturating") -> torch.Tensor:
    """Unrolled GAN (Metz et al. 2017): the generator loss against the discriminator after k
    *future* gradient-ascent steps on V (SGD, step lr), differentiated through those steps, so the
    generator sees how D would react to it. k = 0 is the ordinary loss.
    z: (M, Q) noise, real: (N, D) data. Returns a scalar with gradients w.r.t. G's parameters."""
    check_int(k, "k", min=0)
    check_float(lr, "lr", min=0.0)
    if not callable(generator):
        raise TypeError("generator: expected a callable")
    p_d = check_trainable(discriminator, "discriminator")
    check_tensor(z, "z")
    if z.ndim < 1 or z.shape[0] == 0:
        raise ValueError(f"z: the generator loss needs at least one noise sample, got shape {tuple(z.shape)}")
    check_tensor(real, "real")
    if k and (real.ndim < 1 or real.shape[0] == 0):
        raise ValueError(f"real: the unrolled discriminator steps need at least one sample, got shape {tuple(real.shape)}")
    check_same(p_d, "the discriminator", real=real)  # else a RuntimeError inside its first layer
    check_choice(kind, "kind", ["saturating", "non-saturating"])
    params = dict(discriminator.named_parameters())
    # only parameters with a gradient take the ascent steps (a frozen one stays; autograd.grad refuses it)
    moving = [n for n, p in params.items() if p.requires_grad]
    if isinstance(generator, nn.Module) and next(generator.parameters(), None) is not None:
        check_same(next(generator.parameters()), "the generator", z=z)
    fake = generator(z)
    call = torch.func.functional_call
    d = lambda v: _logits(lambda u: call(discriminator, params, (u,)), v, "discriminator")  # noqa: E731
    for _ in range(k if moving else 0):
        d_loss = discriminator_loss(d(real), d(fake))
        grads = torch.autograd.grad(d_loss, [params[n] for n in moving], create_graph=True, allow_unused=True)
        params = {**params, **{n: params[n] if g is None else params[n] - lr * g for n, g in zip(moving, grads)}}
    return generator_loss(d(fake), kind)


# ------------------------------------------------------------------------------------------ StyleGAN

def adain(x: torch.Tensor, style_scale: torch.Tensor, style_bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """StyleGAN's adaptive instance normalisation: each sample's feature map is normalised with its
    own spatial mean and std, then scaled and shifted by the style from w.
    x: (B, C, H, W); style_scale, style_bias: (B, C)."""
    check_tensor(x, "x", ndim=4)
    check_tensor(style_scale, "style_scale", shape=(x.shape[0], x.shape[1]))
    check_tensor(style_bias, "style_bias", shape=(x.shape[0], x.shape[1]))
    check_same(x, "x", style_scale=style_scale, style_bias=style_bias)
    eps = check_float(eps, "eps", min=0.0)
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    # with eps = 0 a constant feature map (every 1 x 1 map) would be 0 / 0; the read happens only then
    if eps == 0 and x.numel() and not bool((var > 0).all()):
        raise ValueError("x: a feature map is constant (zero variance), so eps = 0 leaves it 0 / 0; use eps > 0")
    return style_scale[:, :, None, None] * (x - mu) / torch.sqrt(var + eps) + style_bias[:, :, None, None]
