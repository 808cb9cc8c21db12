"""Appendix facts that need code: the Gaussian density, the matrix determinant lemma, Bayes' rule."""

from __future__ import annotations

import math

import torch

from impl._checks import check_probability, check_same, check_symmetric_psd, check_tensor


def _check_gaussian_args(x, mu, sigma):
    """x, mu: (..., d), sigma: (..., d, d) on one device and dtype, batches broadcasting together.
    Returns d and the broadcast batch shape; each error names the argument that breaks the rule."""
    check_tensor(x, "x", ndim=range(1, 16))
    check_tensor(mu, "mu", ndim=range(1, 16))
    check_tensor(sigma, "sigma", ndim=range(2, 16))
    check_same(x, "x", mu=mu, sigma=sigma)
    d = x.shape[-1]
    if mu.shape[-1] != d:
        raise ValueError(f"mu: expected last dimension {d} to match x's, got shape {tuple(mu.shape)}")
    if sigma.shape[-2:] != (d, d):
        raise ValueError(f"sigma: expected (..., {d}, {d}) to match x's last dim {d}, got {tuple(sigma.shape)}")
    try:
        batch = torch.broadcast_shapes(x.shape[:-1], mu.shape[:-1])
    except RuntimeError:
        raise ValueError(f"mu: batch shape {tuple(mu.shape[:-1])} does not broadcast with x's "
                         f"{tuple(x.shape[:-1])}") from None
    try:
        batch = torch.broadcast_shapes(batch, sigma.shape[:-2])
    except RuntimeError:
        raise ValueError(f"sigma: batch shape {tuple(sigma.shape[:-2])} does not broadcast with x's "
                         f"{tuple(x.shape[:-1])} and mu's {tuple(mu.shape[:-1])}") from None
    return d, batch


def gaussian_log_density(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(x | mu, Sigma) = -1/2 (d log 2 pi + log |Sigma| + (x - mu)^T Sigma^{-1} (x - mu)).

    Through the Cholesky factor, so tiny or large variances stay finite. x: (..., d), mu: (..., d),
    sigma: (..., d, d) symmetric positive definite (broadcast together) -> (...).
    """
    d, batch = _check_gaussian_args(x, mu, sigma)
    # Cholesky reads only the lower triangle: test symmetry first, so an asymmetric sigma is refused
    scale = sigma.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(torch.finfo(sigma.dtype).tiny)
    if not bool((((sigma - sigma.transpose(-1, -2)).abs() / scale) <= torch.finfo(sigma.dtype).eps ** 0.5).all()):
        raise ValueError("sigma: must be symmetric")
    L, info = torch.linalg.cholesky_ex(sigma)
    if torch.any(info != 0):
        raise ValueError("sigma: not positive definite")
    diff = (x - mu).unsqueeze(-1).expand(*batch, d, 1)
    z = torch.linalg.solve_triangular(L.expand(*batch, d, d), diff, upper=False).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1).expand(batch)
    return -0.5 * (d * math.log(2 * math.pi) + logdet + (z * z).sum(-1))


def gaussian_density(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The notes' formula 1 / sqrt((2 pi)^d |Sigma|) exp(-1/2 (x - mu)^T Sigma^{-1} (x - mu)), literally.

    x, mu: (..., d), sigma: (..., d, d) -> (...). Use gaussian_log_density where it may underflow.
    """
    d, _ = _check_gaussian_args(x, mu, sigma)
    ev = torch.linalg.eigvalsh(sigma)
    check_symmetric_psd(sigma, "sigma", eigenvalues=ev)
    if not bool((ev > 0).all()):
        raise ValueError("sigma: must be positive definite (a zero eigenvalue makes the density undefined)")
    diff = x - mu
    quad = (diff.unsqueeze(-2) @ torch.linalg.solve(sigma, diff.unsqueeze(-1))).squeeze(-1).squeeze(-1)
    return torch.exp(-0.5 * quad) / torch.sqrt((2 * math.pi) ** d * torch.linalg.det(sigma))


def det_rank_one_update(A: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """det(A + u v^T) = (1 + v^T A^{-1} u) det A (matrix determinant lemma; A invertible).

    A: (..., d, d), u, v: (..., d) -> (...). One solve instead of a second determinant.
    """
    check_tensor(A, "A", ndim=range(2, 16))
    check_tensor(u, "u", ndim=range(1, 16))
    check_tensor(v, "v", shape=u.shape)
    check_same(A, "A", u=u, v=v)
    if A.shape[-1] != A.shape[-2] or u.shape[-1] != A.shape[-1]:
        raise ValueError(f"A: expected (..., d, d) with d = {u.shape[-1]}, got {tuple(A.shape)}")
    LU, pivots, info = torch.linalg.lu_factor_ex(A)
    if bool((info != 0).any()):
        raise ValueError("A: must be invertible (the lemma uses A^{-1})")
    Ainv_u = torch.linalg.lu_solve(LU, pivots, u.unsqueeze(-1)).squeeze(-1)
    return (1 + (v * Ainv_u).sum(-1)) * torch.linalg.det(A)


def bayes_posterior(likelihood: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """P(A | B) = P(B | A) P(A) / P(B) with P(B) = sum_A P(B | A) P(A).

    likelihood: (..., nA, nB) = P(B = b | A = a), prior: (..., nA) -> (..., nA, nB) = P(A = a | B = b).
    """
    check_tensor(likelihood, "likelihood", ndim=range(2, 16))
    check_tensor(prior, "prior", ndim=range(1, 16))
    check_same(likelihood, "likelihood", prior=prior)
    if prior.shape[-1] != likelihood.shape[-2]:
        raise ValueError(f"prior: expected {likelihood.shape[-2]} entries, got {prior.shape[-1]}")
    check_probability(prior, "prior")
    if torch.any((likelihood < 0) | (likelihood > 1)):
        raise ValueError("likelihood: probabilities P(B = b | A = a) must lie in [0, 1]")
    joint = likelihood * prior.unsqueeze(-1)
    if bool((joint.sum(-2) <= 0).any()):
        raise ValueError("likelihood: P(B = b) = 0 for some b: the posterior given b is undefined")
    return joint / joint.sum(-2, keepdim=True)
