"""Variational autoencoders: KL divergences, the reparametrisation trick, the ELBO, beta-VAE,
a linear-Gaussian model with an exact posterior, the VQ-VAE quantiser and a small VRNN.

Conventions: a diagonal Gaussian is given by its mean ``mu`` and log-variance ``logvar`` (same
shape, last axis the latent dimension J); all log densities are summed over that last axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from impl._checks import (check_float, check_generator, check_index, check_int, check_probability, check_same,
                          check_same_shape, check_tensor)

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- KL divergences

def kl_categorical(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_x p(x) log(p(x) / q(x)) for probability vectors p, q: (..., K) -> (...).

    Terms with p(x) = 0 contribute 0; q(x) = 0 where p(x) > 0 gives +inf.
    """
    check_tensor(p, "p")
    check_tensor(q, "q", shape=tuple(p.shape))
    check_same(p, "p", q=q)
    check_probability(p, "p")
    check_probability(q, "q")
    return torch.xlogy(p, p).sum(-1) - torch.xlogy(p, q).sum(-1)


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag exp(logvar)), summed over the last axis. x, mu, logvar broadcast -> (...)."""
    check_tensor(x, "x")
    check_tensor(mu, "mu")
    check_tensor(logvar, "logvar")
    check_same(x, "x", mu=mu, logvar=logvar)
    _check_broadcast(x, "x", mu=mu, logvar=logvar)
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def _check_broadcast(ref, ref_name, **others):
    """The shapes broadcast against ``ref``'s without growing it (a prior (J,) against (B, J) is fine)."""
    for name, t in others.items():
        try:
            out = torch.broadcast_shapes(ref.shape, t.shape)
        except RuntimeError:
            raise ValueError(f"{name}: shape {tuple(t.shape)} does not broadcast against {ref_name}'s "
                             f"{tuple(ref.shape)}") from None
        if tuple(out) != tuple(ref.shape):
            raise ValueError(f"{name}: shape {tuple(t.shape)} would broadcast {ref_name}'s {tuple(ref.shape)} to {tuple(out)}")


def kl_gaussian(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, diag var_q) || N(mu_p, diag var_p)) in closed form: (..., J) -> (...).

    mu_q, logvar_q: the same shape (..., J); mu_p, logvar_p: that shape or one that broadcasts to it
    (a prior (J,) for a batch)."""
    for name, t in (("mu_q", mu_q), ("logvar_q", logvar_q), ("mu_p", mu_p), ("logvar_p", logvar_p)):
        check_tensor(t, name)
    check_same(mu_q, "mu_q", logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p)
    if mu_q.ndim == 0:
        raise ValueError("mu_q: expected (..., J), got a scalar")
    check_same_shape(mu_q, "mu_q", logvar_q=logvar_q)
    _check_broadcast(mu_q, "mu_q", mu_p=mu_p, logvar_p=logvar_p)
    ratio = torch.exp(logvar_q - logvar_p)
    return 0.5 * (ratio + (mu_q - mu_p) ** 2 * torch.exp(-logvar_p) - 1 - (logvar_q - logvar_p)).sum(-1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The notes' closed form: KL(N(mu, diag sigma^2) || N(0, I)) = -1/2 sum(1 + log s^2 - mu^2 - s^2).

    mu, logvar: (..., J) -> (...). ``expm1`` keeps tiny variances accurate.
    """
    check_tensor(mu, "mu")
    check_tensor(logvar, "logvar", shape=tuple(mu.shape))
    check_same(mu, "mu", logvar=logvar)
    # 1 + l - e^l = -(expm1(l) - l): no cancellation for |l| small, finite for l very negative.
    return 0.5 * (mu ** 2 + (torch.expm1(logvar) - logvar)).sum(-1)


def reparametrise(mu: torch.Tensor, logvar: torch.Tensor, *, n: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): differentiable in mu and logvar.

    mu, logvar: (..., J) -> (..., J), or (n, ..., J) with ``n`` samples.
    """
    check_tensor(mu, "mu")
    check_tensor(logvar, "logvar", shape=tuple(mu.shape))
    check_same(mu, "mu", logvar=logvar)
    check_generator(generator, "generator", mu.device)
    shape = mu.shape if n is None else (check_int(n, "n", min=1),) + tuple(mu.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_monte_carlo(mu_q, logvar_q, mu_p, logvar_p, *, n: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo KL(q || p) = E_q[log q(z) - log p(z)] from ``n`` reparametrised samples.

    Returns (estimate, standard error), each of shape (...).
    """
    check_int(n, "n", min=2)
    check_tensor(mu_p, "mu_p")
    check_tensor(logvar_p, "logvar_p")
    z = reparametrise(mu_q, logvar_q, n=n, generator=generator)
    check_same(mu_q, "mu_q", mu_p=mu_p, logvar_p=logvar_p)
    _check_broadcast(mu_q, "mu_q", mu_p=mu_p, logvar_p=logvar_p)
    d = gaussian_log_prob(z, mu_q, logvar_q) - gaussian_log_prob(z, mu_p, logvar_p)
    return d.mean(0), d.std(0) / math.sqrt(n)


def _cholesky_pd(S: torch.Tensor, name: str) -> torch.Tensor:
    """Cholesky factor of a batch of symmetric positive-definite matrices; the factorisation the KL
    needs anyway doubles as the check (a negative or zero eigenvalue makes it fail)."""
    scale = S.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(torch.finfo(S.dtype).tiny)
    asym = ((S - S.transpose(-1, -2)).abs() / scale).amax()
    L, info = torch.linalg.cholesky_ex(S)
    # one read of both flags: a single host synchronisation
    ok = torch.stack([asym <= torch.finfo(S.dtype).eps ** 0.5, (info == 0).all()]).tolist()
    if not ok[0]:
        raise ValueError(f"{name}: covariance must be symmetric, max relative asymmetry {asym.item():.3g}")
    if not ok[1]:
        raise ValueError(f"{name}: covariance must be positive definite (Cholesky failed: an eigenvalue <= 0)")
    return L


def kl_mvn(m0: torch.Tensor, S0: torch.Tensor, m1: torch.Tensor, S1: torch.Tensor) -> torch.Tensor:
    """KL(N(m0, S0) || N(m1, S1)) for full covariances: m (..., J), S (..., J, J) symmetric positive
    definite -> (...)."""
    check_tensor(m0, "m0")
    if m0.ndim == 0:
        raise ValueError("m0: expected (..., J), got a scalar")
    check_tensor(m1, "m1", shape=tuple(m0.shape))
    check_tensor(S0, "S0", shape=tuple(m0.shape) + (m0.shape[-1],))
    check_tensor(S1, "S1", shape=tuple(m0.shape) + (m0.shape[-1],))
    check_same(m0, "m0", S0=S0, m1=m1, S1=S1)
    L0, L1 = _cholesky_pd(S0, "S0"), _cholesky_pd(S1, "S1")
    J = m0.shape[-1]
    M = torch.cholesky_solve(S0, L1)
    diff = (m1 - m0).unsqueeze(-1)
    maha = (diff * torch.cholesky_solve(diff, L1)).sum((-2, -1))
    logdet1 = 2 * torch.log(torch.diagonal(L1, dim1=-2, dim2=-1)).sum(-1)
    logdet0 = 2 * torch.log(torch.diagonal(L0, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * (torch.diagonal(M, dim1=-2, dim2=-1).sum(-1) + maha - J + logdet1 - logdet0)


# ------------------------------------------------------------------ linear-Gaussian model

def linear_gaussian_log_marginal(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, sigma2: float) -> torch.Tensor:
    """log p(x) for p(z) = N(0, I), p(x | z) = N(W z + b, sigma2 I): x ~ N(b, W W^T + sigma2 I).

    x: (B, Dx), W: (Dx, J), b: (Dx,) -> (B,).
    """
    check_tensor(x, "x", ndim=2)
    check_tensor(W, "W", shape=(x.shape[1], None))
    check_tensor(b, "b", shape=(x.shape[1],))
    check_same(x, "x", W=W, b=b)
    check_float(sigma2, "sigma2", min=0, min_open=True)
    C = W @ W.T + sigma2 * torch.eye(x.shape[1], device=x.device, dtype=x.dtype)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=C).log_prob(x)


def linear_gaussian_posterior(x, W, b, sigma2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact posterior p(z | x) = N(m, S), S = (I + W^T W / sigma2)^-1, m = S W^T (x - b) / sigma2.

    x: (B, Dx) -> m: (B, J), S: (J, J).
    """
    check_tensor(x, "x", ndim=2)
    check_tensor(W, "W", shape=(x.shape[1], None))
    check_tensor(b, "b", shape=(x.shape[1],))
    check_same(x, "x", W=W, b=b)
    check_float(sigma2, "sigma2", min=0, min_open=True)
    J = W.shape[1]
    S = torch.linalg.inv(torch.eye(J, device=x.device, dtype=x.dtype) + W.T @ W / sigma2)
    m = (x - b) @ W @ S / sigma2
    return m, S


def linear_gaussian_elbo_terms(x, W, b, sigma2: float, m: torch.Tensor, S: torch.Tensor):
    """Closed-form ELBO terms for q(z | x) = N(m, S) under the linear-Gaussian model.

    Returns (reconstruction E_q log p(x | z), KL(q || p(z)), KL(q || p(z | x))), each (B,).
    x: (B, Dx), m: (B, J), S: (J, J) or (B, J, J).
    """
    check_tensor(x, "x", ndim=2)
    check_tensor(W, "W", shape=(x.shape[1], None))
    check_tensor(b, "b", shape=(x.shape[1],))
    check_float(sigma2, "sigma2", min=0, min_open=True)
    check_tensor(m, "m", shape=(x.shape[0], W.shape[1]))
    Dx, J = W.shape
    check_tensor(S, "S", ndim=(2, 3))
    if tuple(S.shape) not in ((J, J), (x.shape[0], J, J)):
        raise ValueError(f"S: expected shape ({J}, {J}) or ({x.shape[0]}, {J}, {J}), got {tuple(S.shape)}")
    check_same(x, "x", W=W, b=b, m=m, S=S)
    S = S.expand(x.shape[0], J, J)
    resid = x - b - m @ W.T
    trace = torch.einsum("ij,bjk,ik->b", W, S, W)
    recon = -0.5 * Dx * (LOG_2PI + math.log(sigma2)) - 0.5 * ((resid ** 2).sum(-1) + trace) / sigma2
    eye = torch.eye(J, device=x.device, dtype=x.dtype).expand_as(S)
    kl_prior = kl_mvn(m, S, torch.zeros_like(m), eye)
    pm, pS = linear_gaussian_posterior(x, W, b, sigma2)
    kl_post = kl_mvn(m, S, pm, pS.expand_as(S))
    return recon, kl_prior, kl_post


# ------------------------------------------------------------------------------ the VAE

def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian encoder q(z | x) = N(mu(x), diag s^2(x)) and Gaussian decoder p(x | z) = N(mu(z), diag s^2(z)),
    prior p(z) = N(0, I).  x: (B, x_dim), z: (B, z_dim)."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 32):
        super().__init__()
        check_int(x_dim, "x_dim", min=1)
        check_int(z_dim, "z_dim", min=1)
        check_int(hidden, "hidden", min=1)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.encoder = _mlp([x_dim, hidden, 2 * z_dim])
        self.decoder = _mlp([z_dim, hidden, 2 * x_dim])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, x_dim) -> mu_{z|x}, logvar_{z|x}: (B, z_dim)."""
        check_tensor(x, "x", shape=(None, self.x_dim))
        return self.encoder(x).chunk(2, dim=-1)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (..., z_dim) -> mu_{x|z}, logvar_{x|z}: (..., x_dim)."""
        check_tensor(z, "z")
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z: expected last dimension {self.z_dim}, got {z.shape[-1]}")
        return self.decoder(z).chunk(2, dim=-1)

    def elbo_terms(self, x: torch.Tensor, *, n: int = 1, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction E_q log p(x | z) by n reparametrised samples, analytic KL(q || p(z))): (B,) each."""
        mu, logvar = self.encode(x)
        z = reparametrise(mu, logvar, n=n, generator=generator)  # (n, B, J)
        mu_x, logvar_x = self.decode(z)
        recon = gaussian_log_prob(x.expand_as(mu_x), mu_x, logvar_x).mean(0)
        return recon, kl_standard_normal(mu, logvar)

    def elbo(self, x: torch.Tensor, *, n: int = 1, generator=None) -> torch.Tensor:
        """ELBO = E_q log p(x | z) - KL(q(z | x) || p(z)): (B,)."""
        recon, kl = self.elbo_terms(x, n=n, generator=generator)
        return recon - kl

    def sample(self, n: int, *, generator=None) -> torch.Tensor:
        """Ancestral sampling: z ~ p(z), x_hat ~ p(x | z). Returns (n, x_dim)."""
        check_int(n, "n", min=1)
        p = next(self.parameters())
        check_generator(generator, "generator", p.device)
        z = torch.randn(n, self.z_dim, generator=generator, device=p.device, dtype=p.dtype)
        mu_x, logvar_x = self.decode(z)
        return reparametrise(mu_x, logvar_x, generator=generator)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Inference without sampling: decode the posterior mean mu_{z|x}. (B, x_dim) -> (B, x_dim)."""
        mu, _ = self.encode(x)
        return self.decode(mu)[0]


def beta_vae_objective(recon: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """The Lagrangian of the beta-VAE: reconstruction - beta * KL (maximise it). beta = 1 is the ELBO."""
    check_tensor(recon, "recon")
    check_tensor(kl, "kl", shape=tuple(recon.shape))
    check_float(beta, "beta", min=0)
    return recon - beta * kl


# ---------------------------------------------------------------------------- VQ-VAE

def vq_quantise(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-codebook quantisation with the straight-through gradient.

    z: (..., d), codebook: (K, d) -> (z_q: (..., d), indices: (...) long). The forward value of
    z_q is codebook[indices]; its gradient flows to z unchanged (z + sg[e - z]).
    """
    check_tensor(z, "z")
    check_tensor(codebook, "codebook", ndim=2)
    check_same(z, "z", codebook=codebook)
    if codebook.shape[1] != z.shape[-1]:
        raise ValueError(f"codebook: width {codebook.shape[1]} differs from z's {z.shape[-1]}")
    flat = z.reshape(-1, z.shape[-1])
    # |z|^2 - 2 z.e + |e|^2: one matmul instead of a (N, K, d) difference tensor.
    d2 = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ codebook.T + (codebook ** 2).sum(1)
    idx = d2.argmin(1).reshape(z.shape[:-1])
    e = codebook[idx]
    return z + (e - z).detach(), idx


def vq_losses(z: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor, *, beta: float = 0.25):
    """(codebook loss |sg[z] - e|^2, commitment loss beta |z - sg[e]|^2), means over all entries."""
    check_tensor(z, "z")
    check_tensor(codebook, "codebook", ndim=2)
    check_tensor(indices, "indices", floating=False, shape=tuple(z.shape[:-1]))
    check_same(z, "z", codebook=codebook)
    if codebook.shape[1] != z.shape[-1]:
        raise ValueError(f"codebook: width {codebook.shape[1]} differs from z's {z.shape[-1]}")
    check_index(indices, "indices", codebook.shape[0])
    check_float(beta, "beta", min=0)
    e = codebook[indices]
    return F.mse_loss(e, z.detach()), beta * F.mse_loss(z, e.detach())


# ------------------------------------------------------------------------------- VRNN

class VRNN(nn.Module):
    """A small variational RNN with binary x_t (x_dim bits) and binary z_t (z_dim bits).

    Hidden state h_t = GRU([x_t, z_t], h_{t-1}) summarises x_{<=t}, z_{<=t}; then
      prior      p(z_t | x_<t, z_<t)          = Bern(prior(h_{t-1}))
      decoder    p(x_t | z_<=t, x_<t)         = Bern(dec(z_t, h_{t-1}))
      encoder    q(z_t | x_<=t, z_<t)         = Bern(enc(x_t, h_{t-1}))
    x, z: (B, T, x_dim), (B, T, z_dim) with values in {0, 1}.
    """

    def __init__(self, x_dim: int = 1, z_dim: int = 1, h_dim: int = 8):
        super().__init__()
        for name, v in (("x_dim", x_dim), ("z_dim", z_dim), ("h_dim", h_dim)):
            check_int(v, name, min=1)
        self.x_dim, self.z_dim, self.h_dim = x_dim, z_dim, h_dim
        self.prior = nn.Linear(h_dim, z_dim)
        self.dec = nn.Linear(z_dim + h_dim, x_dim)
        self.enc = nn.Linear(x_dim + h_dim, z_dim)
        self.rnn = nn.GRUCell(x_dim + z_dim, h_dim)

    def _check(self, x, z):
        check_tensor(x, "x", shape=(None, None, self.x_dim))
        check_tensor(z, "z", shape=(x.shape[0], x.shape[1], self.z_dim))
        check_same(x, "x", z=z)
        for name, v in (("x", x), ("z", z)):
            if not bool(((v == 0) | (v == 1)).all()):
                raise ValueError(f"{name}: entries must be 0 or 1 (binary x_t and z_t)")

    def log_factors(self, x: torch.Tensor, z: torch.Tensor):
        """Per-step log p(z_t | .), log p(x_t | .), log q(z_t | .): each (B, T)."""
        self._check(x, z)
        B, T, _ = x.shape
        h = x.new_zeros(B, self.h_dim)
        lp_z, lp_x, lq_z = [], [], []
        for t in range(T):  # a recurrence over time steps
            xt, zt = x[:, t], z[:, t]
            lp_z.append(-F.binary_cross_entropy_with_logits(self.prior(h), zt, reduction="none").sum(-1))
            lp_x.append(-F.binary_cross_entropy_with_logits(self.dec(torch.cat([zt, h], -1)), xt, reduction="none").sum(-1))
            lq_z.append(-F.binary_cross_entropy_with_logits(self.enc(torch.cat([xt, h], -1)), zt, reduction="none").sum(-1))
            h = self.rnn(torch.cat([xt, zt], -1), h)
        return torch.stack(lp_z, 1), torch.stack(lp_x, 1), torch.stack(lq_z, 1)

    def log_joint(self, x, z) -> torch.Tensor:
        """log p(x, z) = sum_t log p(x_t | z_<=t, x_<t) + log p(z_t | z_<t, x_<t): (B,)."""
        lp_z, lp_x, _ = self.log_factors(x, z)
        return (lp_z + lp_x).sum(1)

    def log_prior(self, x, z) -> torch.Tensor:
        """sum_t log p(z_t | z_<t, x_<t): (B,)."""
        return self.log_factors(x, z)[0].sum(1)

    def log_q(self, x, z) -> torch.Tensor:
        """log q(z | x) = sum_t log q(z_t | x_<=t, z_<t): (B,)."""
        return self.log_factors(x, z)[2].sum(1)

    def elbo(self, x, z) -> torch.Tensor:
        """Single-sample ELBO integrand log p(x, z) - log q(z | x) at given z: (B,)."""
        lp_z, lp_x, lq_z = self.log_factors(x, z)
        return (lp_z + lp_x - lq_z).sum(1)
