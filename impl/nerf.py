"""Neural radiance fields: positional encoding, random Fourier features, the NeRF MLP, stratified
and hierarchical sampling, volume rendering, pinhole rays, and a multiresolution hash encoding
(Instant-NGP) with trilinear interpolation.

Conventions: rays ``origins, dirs: (R, 3)``; samples along a ray ``t: (R, N)``; densities
``sigma: (R, N)``; colours ``(R, N, 3)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from impl._checks import (check_bool, check_float, check_generator, check_int, check_range, check_same,
                          check_sorted, check_tensor)


def _last3(x, name):
    check_tensor(x, name)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (..., 3), got {tuple(x.shape)}")


# --------------------------------------------------------------------------- encodings


def positional_encoding(x: torch.Tensor, n_freqs: int, include_input: bool = True) -> torch.Tensor:
    """gamma(x) = (x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^{L-1} pi x), cos(2^{L-1} pi x)).

    x: (..., D) -> (..., D (include_input) + 2 L D).
    """
    check_bool(include_input, "include_input")
    check_tensor(x, "x")
    if x.ndim < 1:
        raise ValueError("x: expected shape (..., D), got a scalar")
    check_int(n_freqs, "n_freqs", min=0)
    # the top frequency 2^{L-1} pi must be a finite number of x's dtype, else sin/cos return NaN
    if n_freqs and n_freqs - 1 + math.log2(math.pi) >= math.log2(torch.finfo(x.dtype).max):
        raise ValueError(f"n_freqs: 2^(n_freqs - 1) pi overflows {x.dtype}, got {n_freqs}")
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi
    xf = (x[..., None, :] * freqs[:, None]).flatten(-2)  # (..., L D)
    parts = [x] if include_input else []
    return torch.cat(parts + [torch.sin(xf), torch.cos(xf)], dim=-1)


def random_fourier_features(x: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(sin(2 pi x B), cos(2 pi x B)) with a fixed random matrix B: (D, M). x: (..., D) -> (..., 2M)."""
    check_tensor(x, "x")
    if x.ndim < 1:
        raise ValueError("x: expected shape (..., D), got a scalar")
    check_tensor(B, "B", ndim=2)
    check_same(x, "x", B=B)
    if B.shape[0] != x.shape[-1]:
        raise ValueError(f"B: expected {x.shape[-1]} rows to match x's last dimension, got {B.shape[0]}")
    proj = 2 * math.pi * x @ B
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def view_direction(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Unit vector of polar angle theta and azimuth phi: (sin th cos ph, sin th sin ph, cos th)."""
    check_tensor(theta, "theta")
    check_tensor(phi, "phi", shape=tuple(theta.shape))
    check_same(theta, "theta", phi=phi)
    return torch.stack([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], -1)


# --------------------------------------------------------------------------- the NeRF MLP


class NeRFMLP(nn.Module):
    """(x, y, z, view direction) -> (r, g, b, sigma).

    The density comes out of the position trunk before the view direction enters; the colour is
    then one hidden layer on (feature, gamma(d)) followed by the RGB output (NeRF's architecture).
    """

    def __init__(self, n_freqs_pos: int = 10, n_freqs_dir: int = 4, width: int = 256, depth: int = 8):
        super().__init__()
        check_int(n_freqs_pos, "n_freqs_pos", min=0)
        check_int(n_freqs_dir, "n_freqs_dir", min=0)
        check_int(width, "width", min=1)
        check_int(depth, "depth", min=1)
        self.n_freqs_pos, self.n_freqs_dir = n_freqs_pos, n_freqs_dir
        in_pos, in_dir = 3 + 6 * n_freqs_pos, 3 + 6 * n_freqs_dir
        dims = [in_pos] + [width] * depth
        self.trunk = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.sigma_head = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.color_hidden = nn.Linear(width + in_dir, max(width // 2, 1))
        self.color_out = nn.Linear(max(width // 2, 1), 3)

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (..., 3) -> (sigma (...) >= 0, feature (..., width)); no view direction involved."""
        _last3(x, "x")
        check_same(self.sigma_head.weight, "the MLP", x=x)  # the layers' dtype and device, named as x
        h = positional_encoding(x, self.n_freqs_pos)
        for layer in self.trunk:
            h = torch.relu(layer(h))
        return torch.relu(self.sigma_head(h)).squeeze(-1), self.feature(h)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (..., 3) positions, d: (..., 3) unit view directions -> (rgb (..., 3) in [0, 1], sigma (...))."""
        _last3(x, "x")
        check_tensor(d, "d", shape=tuple(x.shape))
        check_same(x, "x", d=d)
        sigma, feat = self.density(x)
        h = torch.relu(self.color_hidden(torch.cat([feat, positional_encoding(d, self.n_freqs_dir)], -1)))
        return torch.sigmoid(self.color_out(h)), sigma


# --------------------------------------------------------------------------- volume rendering


def _render_inputs(sigma, t, validate=True):
    check_tensor(sigma, "sigma")
    check_tensor(t, "t")
    if sigma.ndim < 1:
        raise ValueError("sigma: expected shape (..., N) of densities along rays, got a scalar")
    if t.shape[:-1] != sigma.shape[:-1] or t.shape[-1] != sigma.shape[-1] + 1:
        raise ValueError(f"t: expected shape (..., N + 1) = (..., {sigma.shape[-1] + 1}) of sample depths "
                         f"t_1..t_{{N+1}} for sigma (..., N), got {tuple(t.shape)}")
    check_same(sigma, "sigma", t=t)
    delta = t[..., 1:] - t[..., :-1]
    # one host synchronisation for both preconditions; the message then says which one failed.
    # Written as "not >= 0" so that NaN (which compares false) fails too instead of giving NaN weights.
    if validate and sigma.numel() and not bool(torch.minimum(sigma.amin(), delta.amin()) >= 0):
        if not bool(sigma.amin() >= 0):
            raise ValueError("sigma: densities must be non-negative (and not NaN)")
        raise ValueError("t: sample depths must be non-decreasing along each ray (and not NaN)")
    return delta


def alpha_compositing_weights(sigma: torch.Tensor, t: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """The notes' weights w_i = T_i alpha_i, with alpha_i = 1 - exp(-sigma_i delta_i),
    delta_i = t_{i+1} - t_i and T_i = prod_{j<i} (1 - alpha_j), written as the notes write them.

    sigma: (..., N), t: (..., N + 1) -> (..., N).
    """
    check_bool(validate, "validate")
    delta = _render_inputs(sigma, t, validate)
    alpha = 1 - torch.exp(-sigma * delta)
    ones = torch.ones_like(alpha[..., :1])
    T = torch.cumprod(torch.cat([ones, 1 - alpha[..., :-1]], dim=-1), dim=-1)
    return T * alpha


def volume_rendering_weights(sigma: torch.Tensor, t: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """The same weights in log space: T_i = exp(-sum_{j<i} sigma_j delta_j), alpha_i = -expm1(-sigma_i delta_i).
    Equal to ``alpha_compositing_weights`` mathematically; no underflowing products of (1 - alpha), and
    alpha keeps its relative precision where sigma delta is tiny. sigma: (..., N), t: (..., N + 1) -> (..., N).
    """
    check_bool(validate, "validate")
    delta = _render_inputs(sigma, t, validate)
    tau = sigma * delta
    # The exclusive prefix sum as a shifted cumsum, not cumsum - tau: an opaque sample (tau = inf, also
    # from finite sigma delta that overflows) would give inf - inf = NaN there; here T is 0 behind it.
    if torch.is_grad_enabled() and (sigma.requires_grad or t.requires_grad):
        acc = nn.functional.pad(torch.cumsum(tau[..., :-1], dim=-1), (1, 0))
        return torch.exp(-acc) * -torch.expm1(-tau)
    # no graph to keep: the same arithmetic in place, two buffers instead of six
    acc = torch.zeros_like(tau)
    torch.cumsum(tau[..., :-1], dim=-1, out=acc[..., 1:])
    return acc.neg_().exp_().mul_(torch.expm1(tau.neg_()).neg_())


class Render(NamedTuple):
    """A volume render: colour (R, C) and the weights T_i alpha_i (R, N) that blended it."""

    color: torch.Tensor
    weights: torch.Tensor


class FieldRender(NamedTuple):
    """``render_field``'s result: colour (R, 3), weights (R, N) and the sample depths t (R, N)."""

    color: torch.Tensor
    weights: torch.Tensor
    t: torch.Tensor


def volume_render(sigma: torch.Tensor, colors: torch.Tensor, t: torch.Tensor,
                  validate: bool = True) -> Render:
    """c = sum_i T_i alpha_i c_i. sigma: (R, N), colors: (R, N, C), t: (R, N + 1) -> Render(color (R, C), weights (R, N)).

    ``validate`` checks sigma >= 0 and sorted t (one host synchronisation); turn it off in a loop whose
    inputs were checked once.
    """
    check_bool(validate, "validate")
    check_tensor(sigma, "sigma")
    check_tensor(colors, "colors")
    if colors.shape[:-1] != sigma.shape:
        raise ValueError(f"colors: expected shape {tuple(sigma.shape)} + (C,), got {tuple(colors.shape)}")
    check_same(sigma, "sigma", colors=colors)
    w = volume_rendering_weights(sigma, t, validate)
    # the blend as a batched (1, N) x (N, C) product: no (R, N, C) temporary
    c = torch.matmul(w.unsqueeze(-2), colors).squeeze(-2)
    return Render(c, w)


# --------------------------------------------------------------------------- sampling along rays


def stratified_samples(t_near: torch.Tensor, t_far: torch.Tensor, n_samples: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniform sample in each of n_samples equal bins of [t_near, t_far]. t_near, t_far: (R,) -> (R, N), sorted."""
    check_tensor(t_near, "t_near", ndim=1)
    check_tensor(t_far, "t_far", shape=tuple(t_near.shape))
    check_same(t_near, "t_near", t_far=t_far)
    check_int(n_samples, "n_samples", min=1)
    check_generator(generator, "generator", t_near.device)
    # one host synchronisation; NaN or infinite ends would give NaN / inf depths
    if not bool((t_far >= t_near).all() & torch.isfinite(t_near).all() & torch.isfinite(t_far).all()):
        check_tensor(t_near, "t_near", finite=True)
        check_tensor(t_far, "t_far", finite=True)
        raise ValueError("t_far: must be >= t_near")
    u = torch.rand(t_near.shape[0], n_samples, generator=generator, dtype=t_near.dtype, device=t_near.device)
    i = torch.arange(n_samples, dtype=t_near.dtype, device=t_near.device)
    return t_near[:, None] + (i + u) / n_samples * (t_far - t_near)[:, None]


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int,
               generator: torch.Generator | None = None, validate: bool = True) -> torch.Tensor:
    """Hierarchical sampling: n_samples depths from the piecewise-constant pdf that puts mass
    proportional to ``weights`` on each bin, by inverse transform sampling.

    bins: (R, M + 1) sorted edges, weights: (R, M) >= 0 -> (R, n_samples), sorted. ``validate`` checks
    both (host synchronisations); the samples are drawn on bins' device with ``generator``.
    """
    check_bool(validate, "validate")
    check_tensor(bins, "bins", ndim=2)
    if bins.shape[1] < 2:
        raise ValueError(f"bins: expected at least 2 edges (one bin) per ray, got shape {tuple(bins.shape)}")
    check_tensor(weights, "weights", shape=(bins.shape[0], bins.shape[1] - 1))
    check_same(bins, "bins", weights=weights)
    check_int(n_samples, "n_samples", min=1)
    check_generator(generator, "generator", bins.device)
    if validate:
        check_tensor(bins, "bins", finite=True)  # an infinite bin has no inverse cdf
        check_sorted(bins, "bins")
        check_tensor(weights, "weights", finite=True)
        check_range(weights, "weights", min=0.0)
    # rays whose largest weight exceeds 1 are scaled to it, so the sum cannot overflow (the pdf is
    # scale-free, and the 1e-12 floor below is relative for sums >= 1); smaller weights are untouched
    weights = weights / weights.amax(-1, keepdim=True).clamp(min=1.0)
    w = weights + 1e-12 * weights.sum(-1, keepdim=True).clamp(min=1.0)  # rays with no mass: uniform
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1).contiguous()
    cdf[:, -1] = 1.0
    u = torch.rand(bins.shape[0], n_samples, generator=generator, dtype=bins.dtype, device=bins.device)
    u = torch.sort(u, dim=-1).values.contiguous()
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    b0, b1 = bins.gather(-1, idx - 1), bins.gather(-1, idx)
    frac = (u - c0) / (c1 - c0).clamp(min=torch.finfo(bins.dtype).tiny)
    return b0 + frac.clamp(0, 1) * (b1 - b0)


# --------------------------------------------------------------------------- cameras and rendering


def camera_to_world_look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Camera-to-world rotation (3, 3) of a camera at ``eye`` looking at ``target``: its columns are the
    camera's right, up and backward axes in world coordinates (the camera looks along its -z, as in
    NeRF's OpenGL convention). eye, target, up: (3,).

    A degenerate frame (eye == target, or up parallel to the view direction) has no defined right axis
    and is refused, instead of returning NaN.
    """
    for name, v in dict(eye=eye, target=target, up=up).items():
        check_tensor(v, name, shape=(3,))
    check_same(eye, "eye", target=target, up=up)
    back = eye - target
    dist = torch.linalg.vector_norm(back)
    scale = torch.maximum(torch.linalg.vector_norm(eye), torch.linalg.vector_norm(target)).clamp(min=1.0)
    eps = torch.finfo(eye.dtype).eps
    if not bool(dist > 16 * eps * scale):
        raise ValueError("target: equals eye (within rounding), so the view direction is undefined")
    back = back / dist
    right = torch.linalg.cross(up, back)
    norm_up = torch.linalg.vector_norm(up)
    norm_right = torch.linalg.vector_norm(right)
    if not bool(norm_right > 64 * eps * norm_up) or not bool(norm_up > 0):
        raise ValueError("up: parallel to the view direction (or zero), so the camera frame is undefined")
    right = right / norm_right
    return torch.stack([right, torch.linalg.cross(back, right), back], dim=-1)


def pinhole_rays(eye: torch.Tensor, rotation: torch.Tensor, height: int, width: int, focal: float):
    """Rays through the pixel centres of a pinhole camera at ``eye`` with camera-to-world ``rotation``.
    Returns (origins (H W, 3), unit dirs (H W, 3)), rows first."""
    check_tensor(eye, "eye", shape=(3,), finite=True)
    check_tensor(rotation, "rotation", shape=(3, 3))
    check_same(eye, "eye", rotation=rotation)
    check_int(height, "height", min=1)
    check_int(width, "width", min=1)
    check_float(focal, "focal", min=0.0, min_open=True)
    # a rotation keeps the directions unit and distinct; a singular matrix would give NaN or merged rays
    err = (rotation.T @ rotation - torch.eye(3, dtype=rotation.dtype, device=rotation.device)).abs().max()
    if not bool(err <= math.sqrt(torch.finfo(rotation.dtype).eps)):
        raise ValueError(f"rotation: expected an orthonormal matrix (R^T R = I), off by {err.item():.3g}")
    j, i = torch.meshgrid(torch.arange(height, dtype=eye.dtype, device=eye.device),
                          torch.arange(width, dtype=eye.dtype, device=eye.device), indexing="ij")
    # (x / f, -y / f, -1) scaled by f / s: the same direction, but no overflow for a tiny focal length
    # (x / f) nor underflow of the norm for a huge one, since every component is at most ~1
    s = max(focal, height, width)
    cam = torch.stack([(i + 0.5 - width / 2) / s, -(j + 0.5 - height / 2) / s, torch.full_like(i, -focal / s)], -1)
    d = cam.reshape(-1, 3) @ rotation.T
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    return eye.expand_as(d).clone(), d


def _field_output(out, name, x):
    """A field's (rgb (R, N, C), sigma (R, N)) at samples x (R, N, 3), checked here so that a wrong
    field is named, not volume_render's internal arguments."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"{name}: expected to return (rgb, sigma), got {type(out).__name__}")
    rgb, sigma = out
    for part, v, ndim in (("rgb", rgb, 3), ("sigma", sigma, 2)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name}: returned {part} of type {type(v).__name__}, expected a tensor")
        if v.ndim != ndim or v.shape[:2] != x.shape[:2]:
            want = f"{tuple(x.shape[:2])}" if ndim == 2 else f"{tuple(x.shape[:2])} + (C,)"
            raise ValueError(f"{name}: returned {part} of shape {tuple(v.shape)}, expected {want}")
        if v.device != x.device:
            raise ValueError(f"{name}: returned {part} on {v.device}, but the rays are on {x.device}")
        if v.dtype != x.dtype:
            raise TypeError(f"{name}: returned {part} as {v.dtype}, but the rays are {x.dtype}")
    # the one value check of the render (its depths are sorted by construction)
    if sigma.numel() and not bool(sigma.amin() >= 0):
        raise ValueError(f"{name}: returned negative (or NaN) densities sigma")
    return rgb, sigma


def render_field(field, origins: torch.Tensor, dirs: torch.Tensor, t_near: float, t_far: float, n_samples: int,
                 generator: torch.Generator | None = None, stratified: bool = True, n_importance: int = 0,
                 fine_field=None):
    """Volume-render a radiance field along rays (NeRF's forward pass).

    field: callable (x (R, N, 3), d (R, N, 3)) -> (rgb (R, N, 3), sigma (R, N)). With n_importance > 0
    the coarse weights drive hierarchical sampling of n_importance more depths, and ``fine_field``
    (default ``field``) renders the union. The last interval runs to t_far. Returns FieldRender(color (R, 3),
    weights (R, N), t (R, N)).
    """
    check_bool(stratified, "stratified")
    if not callable(field):
        raise TypeError("field: expected a callable (x, d) -> (rgb, sigma)")
    if fine_field is not None and not callable(fine_field):
        raise TypeError("fine_field: expected a callable (x, d) -> (rgb, sigma) or None")
    _last3(origins, "origins")
    check_tensor(origins, "origins", ndim=2)  # rays (R, 3): the samples are laid out (R, N)
    check_tensor(dirs, "dirs", shape=tuple(origins.shape))
    check_same(origins, "origins", dirs=dirs)
    check_float(t_near, "t_near")
    check_float(t_far, "t_far")
    if not t_far > t_near:
        raise ValueError("t_far: must be greater than t_near")
    check_int(n_importance, "n_importance", min=0)
    check_generator(generator, "generator", origins.device)  # also where no draw uses it
    R = origins.shape[0]
    near = torch.full((R,), t_near, dtype=origins.dtype, device=origins.device)
    far = torch.full_like(near, t_far)
    if stratified:
        t = stratified_samples(near, far, n_samples, generator)
    else:
        check_int(n_samples, "n_samples", min=1)
        t = torch.linspace(t_near, t_far, n_samples + 1, dtype=origins.dtype, device=origins.device)[:-1].expand(R, -1)

    def shade(f, t, name):
        x = origins[:, None] + t[..., None] * dirs[:, None]
        rgb, sigma = _field_output(f(x, dirs[:, None].expand_as(x)), name, x)
        edges = torch.cat([t, far[:, None]], -1)
        c, w = volume_render(sigma, rgb, edges, validate=False)
        return c, w, edges

    c, w, edges = shade(field, t, "field")
    if n_importance:
        t_fine = sample_pdf(edges, w.detach(), n_importance, generator)
        t = torch.sort(torch.cat([t, t_fine.detach()], -1), -1).values
        c, w, edges = shade(field, t, "field") if fine_field is None else shade(fine_field, t, "fine_field")
    return FieldRender(c, w, t)


# --------------------------------------------------------------------------- hash encoding

_PRIMES = (1, 2654435761, 805459861)


def _check_corners(corners) -> None:
    """Integer grid corners (..., 3); negative ones are allowed (the hash wraps them)."""
    check_tensor(corners, "corners", floating=False)
    if corners.is_floating_point() or corners.is_complex() or corners.dtype == torch.bool:
        raise TypeError(f"corners: expected an integer tensor, got {corners.dtype}")
    if corners.ndim < 1 or corners.shape[-1] != 3:
        raise ValueError(f"corners: expected shape (..., 3), got {tuple(corners.shape)}")


def spatial_hash(corners: torch.Tensor, table_size: int) -> torch.Tensor:
    """Instant-NGP's hash (x_1 pi_1 XOR x_2 pi_2 XOR x_3 pi_3) mod T. corners: (..., 3) integer -> (...)."""
    _check_corners(corners)
    check_int(table_size, "table_size", min=1)
    c = corners.long()
    h = (c[..., 0] * _PRIMES[0]) ^ (c[..., 1] * _PRIMES[1]) ^ (c[..., 2] * _PRIMES[2])
    return torch.remainder(h, table_size)


def trilinear_corners(x: torch.Tensor, resolution: int, validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 grid corners around x * resolution and their trilinear weights.

    x: (N, 3) in [0, 1]^3 -> (corners (N, 8, 3) long, weights (N, 8)); weights sum to 1. ``validate``
    checks the range (one host synchronisation). Unvalidated, the corners still stay on the grid: a point
    outside extrapolates from the nearest cell (negative weights), and NaN gives NaN weights.
    """
    check_bool(validate, "validate")
    check_tensor(x, "x", ndim=2)
    if x.shape[1] != 3:
        raise ValueError(f"x: expected shape (N, 3), got {tuple(x.shape)}")
    check_int(resolution, "resolution", min=1)
    if validate:
        check_range(x, "x", min=0.0, max=1.0)
    pos = x * resolution
    # on the grid whatever x is: a corner off it would index another corner's table row, or none
    base = torch.floor(pos).nan_to_num(0.0).clamp(0, resolution - 1)
    frac = pos - base
    offs = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], device=x.device)
    corners = base.long()[:, None, :] + offs  # (N, 8, 3)
    w = torch.where(offs.bool(), frac[:, None, :], 1 - frac[:, None, :]).prod(-1)
    return corners, w


class HashEncoding(nn.Module):
    """Multiresolution hash encoding: per level l a table of T feature vectors, indexed at the 8 corners
    around x by a 1:1 index where the (N_l + 1)^3 grid fits in T and by ``spatial_hash`` otherwise,
    trilinearly interpolated; the levels' features are concatenated. x: (N, 3) in [0, 1]^3 (points outside
    are clamped onto the cube) -> (N, L F)."""

    def __init__(self, n_levels: int = 8, log2_table_size: int = 14, n_features: int = 2,
                 base_resolution: int = 4, finest_resolution: int = 128):
        super().__init__()
        check_int(n_levels, "n_levels", min=1)
        check_int(log2_table_size, "log2_table_size", min=1, max=30)
        check_int(n_features, "n_features", min=1)
        check_int(base_resolution, "base_resolution", min=1)
        check_int(finest_resolution, "finest_resolution", min=base_resolution)
        self.table_size = 2**log2_table_size
        growth = math.exp((math.log(finest_resolution) - math.log(base_resolution)) / max(n_levels - 1, 1))
        self.resolutions = [int(math.floor(base_resolution * growth**lvl)) for lvl in range(n_levels)]
        self.tables = nn.Parameter(torch.empty(n_levels, self.table_size, n_features).uniform_(-1e-4, 1e-4))

    def level_indices(self, corners: torch.Tensor, level: int) -> torch.Tensor:
        """Table rows of integer corners (..., 3) at ``level``."""
        _check_corners(corners)
        check_int(level, "level", min=0, max=len(self.resolutions) - 1)
        n = self.resolutions[level] + 1
        if n**3 <= self.table_size:
            return corners[..., 0] + n * corners[..., 1] + n * n * corners[..., 2]
        return spatial_hash(corners, self.table_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=2)
        if x.shape[-1] != 3:
            raise ValueError(f"x: expected shape (N, 3), got {tuple(x.shape)}")
        check_same(self.tables, "tables", x=x)
        # Points outside the unit cube are clamped onto it (the encoding is constant beyond its faces),
        # as refusing them would read x back to the host; NaN stays NaN.
        x = x.clamp(0, 1)
        feats = []
        for lvl, res in enumerate(self.resolutions):
            corners, w = trilinear_corners(x, res, validate=False)
            rows = self.level_indices(corners, lvl)  # (N, 8)
            feats.append((self.tables[lvl][rows] * w[..., None]).sum(1))
        return torch.cat(feats, dim=-1)


class InstantNGPField(nn.Module):
    """Fast NeRF: a hash encoding and a small MLP. (x (..., 3) in [-bound, bound]^3, d (..., 3)) -> (rgb, sigma)."""

    def __init__(self, bound: float = 1.0, hidden: int = 32, **hash_kwargs):
        super().__init__()
        self.bound = check_float(bound, "bound", min=0.0, min_open=True)
        check_int(hidden, "hidden", min=1)
        self.encoding = HashEncoding(**hash_kwargs)
        n_in = self.encoding.tables.shape[0] * self.encoding.tables.shape[2]
        self.density_net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1 + hidden))
        self.color_net = nn.Sequential(nn.Linear(hidden + 3, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor, d: torch.Tensor):
        _last3(x, "x")
        check_tensor(d, "d", shape=tuple(x.shape))
        check_same(x, "x", d=d)
        shape = x.shape[:-1]
        u = ((x.reshape(-1, 3) / self.bound + 1) / 2).clamp(0, 1)
        h = self.density_net(self.encoding(u))
        sigma = nn.functional.softplus(h[:, 0] - 1)
        rgb = torch.sigmoid(self.color_net(torch.cat([h[:, 1:], d.reshape(-1, 3)], -1)))
        return rgb.reshape(*shape, 3), sigma.reshape(shape)
