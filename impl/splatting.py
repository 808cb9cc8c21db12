"""3D Gaussian splatting (Kerbl et al. 2023) in plain PyTorch.

Each point carries a 3-D Gaussian: a mean, a covariance Sigma = R S S^T R^T built from a unit
quaternion (R) and a scale vector (S = diag(s)), an opacity o and a colour (spherical-harmonics
coefficients, so that the colour depends on the view direction). A camera with world-to-camera
transform W = [R_w | t] and intrinsics K projects ("splats") each Gaussian to a 2-D Gaussian with
mean mu' = pi(W mu) and covariance Sigma' = J W Sigma W^T J^T, J the Jacobian of the perspective
projection at the Gaussian's centre (EWA splatting: a first-order approximation). Each pixel x
sorts the Gaussians by depth, gives each the opacity

    alpha = o * exp(-0.5 (x - mu')^T Sigma'^-1 (x - mu'))

and composites them front to back as NeRF does: T_i = prod_{j<i} (1 - alpha_j),
C = sum_i T_i alpha_i c_i (+ T_final * background).

Conventions: camera looks along +z (OpenCV); pixel (row r, column c) has its centre at
(u, v) = (c + 0.5, r + 0.5); a projected point is (u, v) = (fx x / z + cx, fy y / z + cy);
quaternions are (w, x, y, z). Gaussians at depth <= ``near`` or with a degenerate 2-D covariance
(det <= 0) are culled (alpha = 0).

Two rasterisers give the same image: ``rasterize_reference`` evaluates every Gaussian at every
pixel (memory P x N, for small scenes and tests); ``rasterize_tiles`` bins the Gaussians into
16 x 16 pixel tiles by the bounding box of their ``truncate``-sigma ellipse, sorts each tile's list
by depth and composites only those, as the CUDA rasteriser of 3DGS does. Both are differentiable
by autograd.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from impl._checks import (check_bool, check_float, check_generator, check_int, check_range, check_same,
                          check_tensor)

# The low-pass dilation eps2d * I added to every projected covariance (3DGS' anti-aliasing filter,
# 0.3 px^2). One constant for fitting and rendering: a scene fitted with one value and rendered
# with another is a different image (a fit at 5e-4 MSE renders at 18 dB instead of 33 dB with 0).
EPS2D = 0.3

# Real spherical-harmonics normalisation constants (degrees 0..3), as in 3DGS' eval_sh.
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


# --------------------------------------------------------------------------- 3-D Gaussians

def quaternion_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of quaternions (w, x, y, z), normalised first. quats: (..., 4) -> (..., 3, 3)."""
    check_tensor(quats, "quats")
    if quats.ndim < 1 or quats.shape[-1] != 4:
        raise ValueError(f"quats: expected shape (..., 4), got {tuple(quats.shape)}")
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(quats.dtype).tiny)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T with S = diag(scales), R from ``quats``.

    scales: (..., 3) (any real values: only s^2 matters), quats: (..., 4) -> (..., 3, 3).
    """
    check_tensor(scales, "scales")
    if scales.ndim < 1 or scales.shape[-1] != 3:
        raise ValueError(f"scales: expected shape (..., 3), got {tuple(scales.shape)}")
    check_tensor(quats, "quats")
    check_same(scales, "scales", quats=quats)
    if quats.shape[:-1] != scales.shape[:-1]:
        raise ValueError(f"quats: batch shape {tuple(quats.shape[:-1])} differs from scales' {tuple(scales.shape[:-1])}")
    m = quaternion_to_rotation(quats) * scales.unsqueeze(-2)  # R S: scales column j of R
    return m @ m.transpose(-1, -2)


# --------------------------------------------------------------------------- projection

def _check_camera(viewmat, intrinsics, ref):
    check_tensor(viewmat, "viewmat", shape=(4, 4))
    check_tensor(intrinsics, "intrinsics", shape=(3, 3))
    check_same(ref, "means", viewmat=viewmat, intrinsics=intrinsics)


def world_to_camera(points: torch.Tensor, viewmat: torch.Tensor) -> torch.Tensor:
    """Camera-frame coordinates W x + t. points: (N, 3), viewmat: (4, 4) -> (N, 3)."""
    check_tensor(points, "points", ndim=2, shape=(None, 3))
    check_tensor(viewmat, "viewmat", shape=(4, 4))
    check_same(points, "points", viewmat=viewmat)
    return points @ viewmat[:3, :3].T + viewmat[:3, 3]


def perspective_jacobian(points_cam: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Jacobian of (u, v) = (fx x / z + cx, fy y / z + cy) at camera points. (N, 3), (3, 3) -> (N, 2, 3)."""
    check_tensor(points_cam, "points_cam", ndim=2, shape=(None, 3))
    check_tensor(intrinsics, "intrinsics", shape=(3, 3))
    check_same(points_cam, "points_cam", intrinsics=intrinsics)
    x, y, z = points_cam.unbind(-1)
    fx, fy = intrinsics[0, 0], intrinsics[1, 1]
    zero = torch.zeros_like(z)
    row_u = torch.stack([fx / z, zero, -fx * x / (z * z)], -1)
    row_v = torch.stack([zero, fy / z, -fy * y / (z * z)], -1)
    return torch.stack([row_u, row_v], -2)


def project_gaussians(means: torch.Tensor, covs: torch.Tensor, viewmat: torch.Tensor,
                      intrinsics: torch.Tensor, *, eps2d: float = 0.0):
    """Splat 3-D Gaussians to the image plane.

    means: (N, 3), covs: (N, 3, 3) world frame; viewmat: (4, 4) world-to-camera; intrinsics: (3, 3).
    Returns means2d (N, 2) = pi(W mu), covs2d (N, 2, 2) = J W Sigma W^T J^T (+ eps2d I, the
    low-pass dilation 3DGS uses against aliasing; 0 gives the formula exactly), depths (N,) = z_cam.
    """
    check_tensor(means, "means", ndim=2, shape=(None, 3))
    check_tensor(covs, "covs", ndim=3, shape=(means.shape[0], 3, 3))
    check_same(means, "means", covs=covs)
    _check_camera(viewmat, intrinsics, means)
    check_float(eps2d, "eps2d", min=0.0)
    p = world_to_camera(means, viewmat)
    z = p[:, 2]
    uv = p[:, :2] / z.unsqueeze(-1) * torch.stack([intrinsics[0, 0], intrinsics[1, 1]]) + intrinsics[:2, 2]
    jw = perspective_jacobian(p, intrinsics) @ viewmat[:3, :3]  # (N, 2, 3)
    cov2d = jw @ covs @ jw.transpose(-1, -2)
    cov2d = 0.5 * (cov2d + cov2d.transpose(-1, -2))  # symmetric up to rounding
    if eps2d:
        cov2d = cov2d + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    return uv, cov2d, z


# --------------------------------------------------------------------------- colour

def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics Y_lm(d) for l = 0..degree, ordered (l, m = -l..l), in 3DGS' sign
    convention. dirs: (..., 3) (normalised here) -> (..., (degree + 1)^2)."""
    check_int(degree, "degree", min=0, max=3)
    check_tensor(dirs, "dirs")
    if dirs.ndim < 1 or dirs.shape[-1] != 3:
        raise ValueError(f"dirs: expected shape (..., 3), got {tuple(dirs.shape)}")
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dirs.dtype).tiny)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def sh_to_color(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """View-dependent colour max(sum_lm k_lm Y_lm(d) + 0.5, 0) as in 3DGS.

    sh: (N, K, C) with K = (degree + 1)^2 for degree 0..3; dirs: (N, 3) viewing directions -> (N, C).
    """
    check_tensor(sh, "sh", ndim=3)
    check_tensor(dirs, "dirs", ndim=2, shape=(sh.shape[0], 3))
    check_same(sh, "sh", dirs=dirs)
    degree = math.isqrt(sh.shape[1]) - 1
    if (degree + 1) ** 2 != sh.shape[1] or degree > 3:
        raise ValueError(f"sh: expected (degree + 1)^2 = 1, 4, 9 or 16 coefficients, got {sh.shape[1]}")
    basis = sh_basis(degree, dirs)  # (N, K)
    return (torch.einsum("nk,nkc->nc", basis, sh) + 0.5).clamp_min(0.0)


# --------------------------------------------------------------------------- opacity and compositing

def _conic(covs2d):
    """Inverse (a, b, c) of [[A, B], [B, C]] and a mask of non-degenerate covariances.

    The matrix is scaled by max(|A|, |C|) first so that det does not underflow for tiny variances
    (1e-30 in float32) nor overflow for huge ones."""
    s = torch.maximum(covs2d[..., 0, 0].abs(), covs2d[..., 1, 1].abs())
    s = torch.where(s > 0, s, torch.ones_like(s))
    a, b, c = covs2d[..., 0, 0] / s, covs2d[..., 0, 1] / s, covs2d[..., 1, 1] / s
    det = a * c - b * b
    ok = det > 0
    det = torch.where(ok, det, torch.ones_like(det)) * s
    return torch.stack([c / det, -b / det, a / det], -1), ok


def _mahalanobis_sq(d, conic):
    """d: (..., 2), conic: (..., 3) -> (...,) d^T Sigma'^-1 d."""
    return conic[..., 0] * d[..., 0] ** 2 + 2 * conic[..., 1] * d[..., 0] * d[..., 1] + conic[..., 2] * d[..., 1] ** 2


def _check_validate(validate):
    if not isinstance(validate, bool):
        raise TypeError(f"validate: expected a bool, got {type(validate).__name__}")
    return validate


def gaussian_alpha(pixels: torch.Tensor, means2d: torch.Tensor, covs2d: torch.Tensor,
                   opacities: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    """alpha = o exp(-0.5 (x - mu')^T Sigma'^-1 (x - mu')) for every pixel and Gaussian.

    pixels: (P, 2), means2d: (N, 2), covs2d: (N, 2, 2), opacities: (N,) in [0, 1] (checked
    unless ``validate=False``) -> (P, N). Degenerate covariances (det <= 0) give alpha = 0.
    """
    check_bool(validate, "validate")
    check_tensor(pixels, "pixels", ndim=2, shape=(None, 2))
    _check_splats(means2d, covs2d, opacities, validate)
    check_same(means2d, "means2d", pixels=pixels)
    conic, ok = _conic(covs2d)
    q = _mahalanobis_sq(pixels[:, None, :] - means2d[None], conic[None])
    return torch.where(ok, opacities * torch.exp(-0.5 * q), torch.zeros_like(q))


def composite(alphas: torch.Tensor, colors: torch.Tensor, background: torch.Tensor | None = None, *,
              validate: bool = True):
    """Front-to-back alpha compositing: T_i = prod_{j<i} (1 - alpha_j), w_i = T_i alpha_i,
    C = sum_i w_i c_i + T_final * background.

    alphas: (..., K) in [0, 1] (an alpha above 1 would make the transmittance negative; checked
    unless ``validate=False``), sorted front to back; colors: (..., K, C); background: (C,) or
    None (black). Returns (color (..., C), weights (..., K), final transmittance (...,)).
    """
    check_bool(validate, "validate")
    check_tensor(alphas, "alphas", ndim=range(1, 10))
    if _check_validate(validate):
        check_range(alphas, "alphas", min=0.0, max=1.0)
    check_tensor(colors, "colors")
    if colors.shape[:-1] != alphas.shape:
        raise ValueError(f"colors: expected shape {tuple(alphas.shape)} + (C,), got {tuple(colors.shape)}")
    check_same(alphas, "alphas", colors=colors)
    if background is not None:
        check_tensor(background, "background", shape=(colors.shape[-1],))
        check_same(alphas, "alphas", background=background)
    weights, t_final = transmittance_weights(alphas, validate=False)
    color = (weights.unsqueeze(-1) * colors).sum(-2)
    if background is not None:
        color = color + t_final.unsqueeze(-1) * background
    return color, weights, t_final


def transmittance_weights(alphas: torch.Tensor, *, validate: bool = True):
    """w_i = T_i alpha_i with T_i = prod_{j<i} (1 - alpha_j). alphas: (..., K) in [0, 1] (checked
    unless ``validate=False``), front to back -> (weights (..., K), final transmittance T_{K+1} (...,))."""
    check_bool(validate, "validate")
    check_tensor(alphas, "alphas", ndim=range(1, 10))
    if _check_validate(validate):
        check_range(alphas, "alphas", min=0.0, max=1.0)
    trans = torch.cumprod(torch.cat([torch.ones_like(alphas[..., :1]), 1 - alphas], -1), -1)
    return trans[..., :-1] * alphas, trans[..., -1]


def _check_splats(means2d, covs2d, opacities, validate=True):
    check_tensor(means2d, "means2d", ndim=2, shape=(None, 2))
    n = means2d.shape[0]
    check_tensor(covs2d, "covs2d", shape=(n, 2, 2))
    check_tensor(opacities, "opacities", shape=(n,))
    check_same(means2d, "means2d", covs2d=covs2d, opacities=opacities)
    if _check_validate(validate):
        # an opacity outside [0, 1] gives an alpha outside [0, 1]: negative transmittance
        check_range(opacities, "opacities", min=0.0, max=1.0)


def _check_raster(means2d, covs2d, depths, colors, opacities, height, width, background, near, validate=True):
    _check_splats(means2d, covs2d, opacities, validate)
    n = means2d.shape[0]
    check_tensor(depths, "depths", shape=(n,))
    check_tensor(colors, "colors", ndim=2, shape=(n, None))
    check_same(means2d, "means2d", depths=depths, colors=colors)
    check_int(height, "height", min=1)
    check_int(width, "width", min=1)
    check_float(near, "near", min=0.0)
    if background is not None:
        check_tensor(background, "background", shape=(colors.shape[1],))
        check_same(means2d, "means2d", background=background)


def pixel_centers(height: int, width: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(H * W, 2) pixel centres (u, v) = (col + 0.5, row + 0.5), row-major."""
    check_int(height, "height", min=1)
    check_int(width, "width", min=1)
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype, device=device) + 0.5,
                          torch.arange(width, dtype=dtype, device=device) + 0.5, indexing="ij")
    return torch.stack([u, v], -1).reshape(-1, 2)


def rasterize_reference(means2d, covs2d, depths, colors, opacities, height: int, width: int, *,
                        background=None, truncate: float | None = None, near: float = 0.01,
                        validate: bool = True):
    """Plain rasteriser: every pixel composites every Gaussian, sorted by depth.

    means2d: (N, 2), covs2d: (N, 2, 2), depths: (N,), colors: (N, C), opacities: (N,),
    background: (C,) or None. ``truncate`` = k sets alpha = 0 beyond Mahalanobis distance k (what
    the tile rasteriser's bounding boxes do); None uses the notes' alpha everywhere. Opacities
    must lie in [0, 1] (checked unless ``validate=False``, for callers inside a loop).
    Returns the image (H, W, C). Memory O(H W N): small scenes only.
    """
    check_bool(validate, "validate")
    _check_raster(means2d, covs2d, depths, colors, opacities, height, width, background, near, validate)
    if truncate is not None:
        check_float(truncate, "truncate", min=0.0, min_open=True)
    pix = pixel_centers(height, width, dtype=means2d.dtype, device=means2d.device)
    conic, ok = _conic(covs2d)
    q = _mahalanobis_sq(pix[:, None, :] - means2d[None], conic[None])  # (P, N)
    keep = ok & (depths > near)
    alpha = opacities * torch.exp(-0.5 * q)
    keep = keep.expand_as(q) if truncate is None else keep & (q <= truncate * truncate)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    # Each Gaussian has one depth (its centre's z), so every pixel's depth order is this one order.
    order = torch.argsort(depths, stable=True)
    color, _, _ = composite(alpha[:, order], colors[order].expand(pix.shape[0], -1, -1), background, validate=False)
    return color.reshape(height, width, -1)


def tile_assignment(means2d, covs2d, depths, height: int, width: int, *, tile_size: int = 16,
                    truncate: float = 3.0, near: float = 0.01):
    """Per-tile Gaussian lists, each sorted by depth.

    A Gaussian goes to every tile that its ``truncate``-sigma ellipse's bounding box
    (half-width truncate * sqrt(lambda_max(Sigma'))) overlaps. Returns (tile_ids, gauss_ids), both
    (M,) int64 over all M (tile, Gaussian) pairs, sorted by tile then by depth (ties by index).
    """
    check_tensor(means2d, "means2d", ndim=2, shape=(None, 2))
    n = means2d.shape[0]
    check_tensor(covs2d, "covs2d", shape=(n, 2, 2))
    check_tensor(depths, "depths", shape=(n,))
    check_int(height, "height", min=1)
    check_int(width, "width", min=1)
    check_int(tile_size, "tile_size", min=1)
    check_float(truncate, "truncate", min=0.0, min_open=True)
    check_float(near, "near", min=0.0)
    dev = means2d.device
    ntx, nty = -(-width // tile_size), -(-height // tile_size)
    with torch.no_grad():
        a, b, c = covs2d[:, 0, 0], covs2d[:, 0, 1], covs2d[:, 1, 1]
        lam = 0.5 * (a + c) + torch.sqrt((0.5 * (a - c)) ** 2 + b * b)
        r = truncate * torch.sqrt(lam.clamp_min(0))
        ok = (a * c - b * b > 0) & (depths > near) & torch.isfinite(r) & torch.isfinite(means2d).all(-1)
        r = torch.where(ok, r, torch.zeros_like(r))
        mu = torch.where(ok.unsqueeze(-1), means2d, torch.zeros_like(means2d))
        lo = torch.floor((mu - r.unsqueeze(-1)) / tile_size)
        hi = torch.floor((mu + r.unsqueeze(-1)) / tile_size)
        lo = lo.clamp(min=0).clamp(max=1e9).long()
        hi_x = hi[:, 0].clamp(max=ntx - 1).clamp(min=-1).long()
        hi_y = hi[:, 1].clamp(max=nty - 1).clamp(min=-1).long()
        cnt_x = (hi_x - lo[:, 0] + 1).clamp_min(0)
        cnt_y = (hi_y - lo[:, 1] + 1).clamp_min(0)
        counts = torch.where(ok, cnt_x * cnt_y, torch.zeros_like(cnt_x))
        gid = torch.repeat_interleave(torch.arange(n, device=dev), counts)
        start = torch.cumsum(counts, 0) - counts
        k = torch.arange(gid.shape[0], device=dev) - start[gid]
        tx = lo[gid, 0] + k % cnt_x[gid].clamp_min(1)
        ty = lo[gid, 1] + k // cnt_x[gid].clamp_min(1)
        tile = ty * ntx + tx
        rank = torch.empty(n, dtype=torch.long, device=dev)
        rank[torch.argsort(depths, stable=True)] = torch.arange(n, device=dev)
        perm = torch.argsort(tile * max(n, 1) + rank[gid])
    return tile[perm], gid[perm]


def rasterize_tiles(means2d, covs2d, depths, colors, opacities, height: int, width: int, *,
                    background=None, tile_size: int = 16, truncate: float = 3.0, near: float = 0.01,
                    chunk_elements: int = 1 << 22, validate: bool = True):
    """Tile-based rasteriser (3DGS): per-tile depth-sorted Gaussian lists, front-to-back compositing.

    Same arguments and image (H, W, C) as ``rasterize_reference(..., truncate=truncate)``; the
    two agree to rounding. Tiles are processed in chunks of at most ``chunk_elements``
    pixel-Gaussian pairs (a loop over chunks of tiles, not over pixels). The per-tile lists have a
    data-dependent length, so one call reads two sizes back from the device (the list length and
    the number of tile-Gaussian pairs), as 3DGS' CUDA rasteriser does; the reference has none.
    """
    check_bool(validate, "validate")
    _check_raster(means2d, covs2d, depths, colors, opacities, height, width, background, near, validate)
    check_int(chunk_elements, "chunk_elements", min=1)
    tile, gid = tile_assignment(means2d, covs2d, depths, height, width, tile_size=tile_size,
                                truncate=truncate, near=near)
    n, ch = means2d.shape[0], colors.shape[1]
    dev, dt = means2d.device, means2d.dtype
    ntx, nty = -(-width // tile_size), -(-height // tile_size)
    ntiles, tp = ntx * nty, tile_size * tile_size
    per_tile = torch.bincount(tile, minlength=ntiles)
    start = torch.cumsum(per_tile, 0) - per_tile
    length = int(per_tile.max()) if tile.numel() else 0
    # Padded per-tile lists; index n is a dummy Gaussian with opacity 0 (alpha 0, T unchanged).
    lists = torch.full((ntiles, max(length, 1)), n, dtype=torch.long, device=dev)
    lists[tile, torch.arange(tile.shape[0], device=dev) - start[tile]] = gid
    conic, _ = _conic(covs2d)
    conic = torch.cat([conic, conic.new_tensor([[1.0, 0.0, 1.0]])])
    mu = torch.cat([means2d, means2d.new_zeros(1, 2)])
    op = torch.cat([opacities, opacities.new_zeros(1)])
    col = torch.cat([colors, colors.new_zeros(1, ch)])
    # Pixel centres of every tile: (ntiles, tp, 2).
    ly, lx = torch.meshgrid(torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev), indexing="ij")
    ty, tx = torch.div(torch.arange(ntiles, device=dev), ntx, rounding_mode="floor"), torch.arange(ntiles, device=dev) % ntx
    pu = (tx[:, None] * tile_size + lx.reshape(1, -1)).to(dt) + 0.5
    pv = (ty[:, None] * tile_size + ly.reshape(1, -1)).to(dt) + 0.5
    k2 = truncate * truncate
    step = max(1, chunk_elements // (tp * max(length, 1)))
    out = []
    for s in range(0, ntiles, step):
        g = lists[s:s + step]  # (c, L)
        m, cn = mu[g], conic[g]  # (c, L, 2), (c, L, 3)
        du = pu[s:s + step, :, None] - m[:, None, :, 0]  # (c, tp, L)
        dv = pv[s:s + step, :, None] - m[:, None, :, 1]
        q = cn[:, None, :, 0] * du * du + 2 * cn[:, None, :, 1] * du * dv + cn[:, None, :, 2] * dv * dv
        alpha = op[g][:, None] * torch.exp(-0.5 * q)
        alpha = torch.where(q <= k2, alpha, torch.zeros_like(alpha))
        weights, t_final = transmittance_weights(alpha, validate=False)
        c = torch.bmm(weights, col[g])  # (c, tp, C)
        if background is not None:
            c = c + t_final.unsqueeze(-1) * background
        out.append(c)
    img = torch.cat(out).reshape(nty, ntx, tile_size, tile_size, ch).permute(0, 2, 1, 3, 4)
    return img.reshape(nty * tile_size, ntx * tile_size, ch)[:height, :width]


# --------------------------------------------------------------------------- the full renderer

PARAM_KEYS = ("means", "log_scales", "quats", "opacity_logits", "sh")


def check_gaussians(params: dict) -> int:
    """Validate a Gaussian parameter dict; returns N.

    means (N, 3), log_scales (N, 3), quats (N, 4), opacity_logits (N,), sh (N, K, C).
    """
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict, got {type(params).__name__}")
    missing = [k for k in PARAM_KEYS if k not in params]
    if missing:
        raise ValueError(f"params: missing keys {missing}")
    means = check_tensor(params["means"], "params['means']", ndim=2, shape=(None, 3))
    n = means.shape[0]
    check_tensor(params["log_scales"], "params['log_scales']", shape=(n, 3))
    check_tensor(params["quats"], "params['quats']", shape=(n, 4))
    check_tensor(params["opacity_logits"], "params['opacity_logits']", shape=(n,))
    check_tensor(params["sh"], "params['sh']", ndim=3)
    if params["sh"].shape[0] != n:
        raise ValueError(f"params['sh']: expected {n} rows, got {params['sh'].shape[0]}")
    check_same(means, "params['means']", **{k: params[k] for k in PARAM_KEYS[1:]})
    return n


def render_gaussians(params: dict, viewmat: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int, *,
                     background=None, tile_size: int = 16, truncate: float = 3.0, near: float = 0.01,
                     eps2d: float = EPS2D, reference: bool = False) -> torch.Tensor:
    """Render Gaussians (see ``check_gaussians``) seen by a camera: covariance, splatting (with the
    dilation ``eps2d`` I, by default :data:`EPS2D` as in :func:`fit_gaussians`), SH colour from the
    viewing direction, rasterisation (tiles, or the plain reference). -> (H, W, C)."""
    check_gaussians(params)
    _check_camera(viewmat, intrinsics, params["means"])
    if not isinstance(reference, bool):
        raise TypeError(f"reference: expected a bool, got {type(reference).__name__}")
    return _render(params, viewmat, intrinsics, height, width, background=background, tile_size=tile_size,
                   truncate=truncate, near=near, eps2d=eps2d, reference=reference)


def _render(params, viewmat, intrinsics, height, width, *, background, tile_size, truncate, near, eps2d,
            reference, keep_uv=False):
    """The renderer without the parameter checks (fit_gaussians checks once before its loop).
    With ``keep_uv`` also returns the projected means, with their gradient retained."""
    covs = covariance_3d(torch.exp(params["log_scales"]), params["quats"])
    uv, cov2d, z = project_gaussians(params["means"], covs, viewmat, intrinsics, eps2d=eps2d)
    if keep_uv and uv.requires_grad:
        uv.retain_grad()
    # Camera centre in world coordinates: -R^T t.
    centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
    colors = sh_to_color(params["sh"], params["means"] - centre)
    opac = torch.sigmoid(params["opacity_logits"])
    if reference:
        img = rasterize_reference(uv, cov2d, z, colors, opac, height, width, background=background,
                                  truncate=truncate, near=near, validate=False)
    else:
        img = rasterize_tiles(uv, cov2d, z, colors, opac, height, width, background=background,
                              tile_size=tile_size, truncate=truncate, near=near, validate=False)
    return (img, uv) if keep_uv else img


# --------------------------------------------------------------------------- adaptive density control

def _select(params, mask):
    return {k: params[k][mask] for k in PARAM_KEYS}


def clone_gaussians(params: dict, mask: torch.Tensor) -> dict:
    """Clone: append an exact copy of each masked Gaussian (3DGS' under-reconstruction case; the
    optimiser then moves the copy). mask: (N,) bool."""
    n = check_gaussians(params)
    _check_mask(mask, n, params)
    new = _select(params, mask)
    return {k: torch.cat([params[k], new[k]]) for k in PARAM_KEYS}


def split_gaussians(params: dict, mask: torch.Tensor, *, n_split: int = 2, factor: float = 1.6,
                    generator: torch.Generator | None = None) -> dict:
    """Split: replace each masked Gaussian by ``n_split`` children whose means are drawn from the
    parent N(mu, Sigma) and whose scales are the parent's divided by ``factor`` (3DGS: 2 and 1.6);
    rotation, opacity and colour are copied. mask: (N,) bool."""
    n = check_gaussians(params)
    _check_mask(mask, n, params)
    check_int(n_split, "n_split", min=1)
    check_float(factor, "factor", min=0.0, min_open=True)
    check_generator(generator, "generator", params["means"].device)
    par = _select(params, mask)
    kids = {k: par[k].repeat_interleave(n_split, 0) for k in PARAM_KEYS}
    scales = torch.exp(kids["log_scales"])
    z = torch.randn(scales.shape, generator=generator, dtype=scales.dtype, device=scales.device) \
        if generator is not None else torch.randn_like(scales)
    kids["means"] = kids["means"] + (quaternion_to_rotation(kids["quats"]) @ (scales * z).unsqueeze(-1)).squeeze(-1)
    kids["log_scales"] = kids["log_scales"] - math.log(factor)
    keep = ~mask
    return {k: torch.cat([params[k][keep], kids[k]]) for k in PARAM_KEYS}


def prune_gaussians(params: dict, *, min_opacity: float = 0.005, max_scale: float | None = None) -> dict:
    """Prune: remove Gaussians with opacity < ``min_opacity`` or (if given) largest scale > ``max_scale``."""
    check_gaussians(params)
    check_float(min_opacity, "min_opacity", min=0.0, max=1.0)
    drop = torch.sigmoid(params["opacity_logits"]) < min_opacity
    if max_scale is not None:
        check_float(max_scale, "max_scale", min=0.0, min_open=True)
        drop = drop | (torch.exp(params["log_scales"]).amax(-1) > max_scale)
    return _select(params, ~drop)


def densify_and_prune(params: dict, grad_norm: torch.Tensor, *, grad_threshold: float, scene_extent: float,
                      percent_dense: float = 0.01, min_opacity: float = 0.005, max_scale: float | None = None,
                      generator: torch.Generator | None = None) -> dict:
    """3DGS adaptive density control. Gaussians whose average view-space positional gradient
    ``grad_norm`` (N,) reaches ``grad_threshold`` are densified: cloned if their largest scale is
    <= percent_dense * scene_extent (under-reconstruction), split otherwise (over-reconstruction);
    then nearly transparent or oversized Gaussians are pruned. No step merges Gaussians."""
    n = check_gaussians(params)
    check_tensor(grad_norm, "grad_norm", shape=(n,))
    check_float(grad_threshold, "grad_threshold", min=0.0)
    check_float(scene_extent, "scene_extent", min=0.0, min_open=True)
    check_float(percent_dense, "percent_dense", min=0.0)
    hot = grad_norm.to(params["means"].device) >= grad_threshold
    big = torch.exp(params["log_scales"]).amax(-1) > percent_dense * scene_extent
    cloned = clone_gaussians(params, hot & ~big)
    pad = torch.zeros(cloned["means"].shape[0] - n, dtype=torch.bool, device=hot.device)
    split = split_gaussians(cloned, torch.cat([hot & big, pad]), generator=generator)
    return prune_gaussians(split, min_opacity=min_opacity, max_scale=max_scale)


def _check_mask(mask, n, params):
    check_tensor(mask, "mask", floating=False, shape=(n,))
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor, got {mask.dtype}")
    if mask.device != params["means"].device:
        raise ValueError(f"mask: on {mask.device}, but params are on {params['means'].device}")


# --------------------------------------------------------------------------- cameras

def world_to_camera_look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World-to-camera (4, 4) matrix W = [R | -R eye] for a camera at ``eye`` looking at ``target``
    (camera +z forward, +y down in the image, OpenCV); ``up`` is the world direction seen as up in
    the image (default -y, the y-down OpenCV world). eye, target, up: (3,).

    (impl.nerf's look-at returns a camera-to-world rotation looking along -z: a different matrix.)
    Raises ValueError for a degenerate frame: eye == target, or ``up`` parallel to the view.
    """
    check_tensor(eye, "eye", shape=(3,))
    check_tensor(target, "target", shape=(3,))
    check_same(eye, "eye", target=target)
    if up is None:
        up = eye.new_tensor([0.0, -1.0, 0.0])
    check_tensor(up, "up", shape=(3,))
    check_same(eye, "eye", up=up)
    f = target - eye
    dist = f.norm()
    if not bool(dist > torch.finfo(eye.dtype).eps * eye.abs().max().clamp_min(1)):
        raise ValueError("target: equals eye, so there is no viewing direction")
    f = f / dist
    r = torch.linalg.cross(f, up)
    # |f x up| = |up| sin(angle): below ~1e-6 (float64) the image's right axis is rounding noise
    if not bool(r.norm() > math.sqrt(torch.finfo(eye.dtype).eps) * up.norm()):
        raise ValueError("up: parallel to the viewing direction (or zero), so the camera's roll is undefined")
    r = r / r.norm()
    d = torch.linalg.cross(f, r)  # image "down"
    rot = torch.stack([r, d, f])
    m = torch.eye(4, dtype=eye.dtype, device=eye.device)
    m[:3, :3] = rot
    m[:3, 3] = -rot @ eye
    return m


# --------------------------------------------------------------------------- initialising a scene

def _inverse_sigmoid(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def _dc_from_rgb(rgb: torch.Tensor, sh_degree: int) -> torch.Tensor:
    """SH coefficients (N, K, C) whose colour is ``rgb`` (N, C) from every direction: the DC term
    (rgb - 0.5) / Y_00 (3DGS' RGB2SH), the higher degrees zero."""
    k = (sh_degree + 1) ** 2
    sh = rgb.new_zeros(rgb.shape[0], k, rgb.shape[1])
    sh[:, 0] = (rgb - 0.5) / SH_C0
    return sh


def init_gaussians_from_points(points: torch.Tensor, colors: torch.Tensor | None = None, *, neighbours: int = 3,
                               sh_degree: int = 0, opacity: float = 0.1, chunk: int = 4096) -> dict:
    """A Gaussian scene from a point cloud, as 3DGS initialises from SfM points: one isotropic
    Gaussian per point with scale sqrt(mean squared distance to its ``neighbours`` nearest points),
    identity rotation, opacity ``opacity`` and the point's colour (grey 0.5 if None) as the DC term.

    points: (N, 3), N > neighbours; colors: (N, C) in [0, 1]. Returns a parameter dict
    (see :func:`check_gaussians`). Distances in chunks of ``chunk`` points (memory chunk x N).
    """
    check_tensor(points, "points", ndim=2, shape=(None, 3), finite=True)
    n = points.shape[0]
    check_int(neighbours, "neighbours", min=1, max=max(n - 1, 1))
    if n <= neighbours:
        raise ValueError(f"points: need more than neighbours = {neighbours} points, got {n}")
    check_int(sh_degree, "sh_degree", min=0, max=3)
    check_float(opacity, "opacity", min=0.0, max=1.0, min_open=True, max_open=True)
    check_int(chunk, "chunk", min=1)
    if colors is None:
        colors = torch.full((n, 3), 0.5, dtype=points.dtype, device=points.device)
    check_tensor(colors, "colors", ndim=2, shape=(n, None))
    check_same(points, "points", colors=colors)
    check_range(colors, "colors", min=0.0, max=1.0)
    d2 = []
    for s in range(0, n, chunk):  # a loop over chunks of points, bounding memory at chunk x N
        d = ((points[s:s + chunk, None, :] - points[None]) ** 2).sum(-1)   # exact, unlike cdist's matmul form
        d[torch.arange(d.shape[0], device=d.device), torch.arange(s, s + d.shape[0], device=d.device)] = float("inf")
        d2.append(d.topk(neighbours, dim=1, largest=False).values.mean(1))
    scale = torch.cat(d2).sqrt().clamp_min(torch.finfo(points.dtype).tiny)  # coincident points: tiny, not 0
    return dict(means=points.clone(), log_scales=torch.log(scale)[:, None].expand(n, 3).clone(),
                quats=points.new_tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone(),
                opacity_logits=_inverse_sigmoid(torch.full((n,), opacity, dtype=points.dtype, device=points.device)),
                sh=_dc_from_rgb(colors, sh_degree))


def init_gaussians_from_image(image: torch.Tensor, n: int, intrinsics: torch.Tensor, *, depth: float = 1.0,
                              sh_degree: int = 0, opacity: float = 0.5,
                              generator: torch.Generator | None = None) -> dict:
    """A Gaussian scene that starts as an image seen by the camera ``intrinsics`` at the identity
    pose (world = camera frame): Gaussians at depth ``depth`` in front of n pixels (a regular grid
    of about n pixels, or n distinct random pixels with ``generator``), each with its pixel's
    colour, identity rotation and an isotropic scale whose projection is the pixel spacing.

    image: (H, W, C) in [0, 1]; intrinsics: (3, 3). Returns a parameter dict (see
    :func:`check_gaussians`) with about n Gaussians (exactly n with a generator).
    """
    check_tensor(image, "image", ndim=3)
    h, w, _ = image.shape
    check_int(n, "n", min=1, max=h * w)
    check_tensor(intrinsics, "intrinsics", shape=(3, 3))
    check_same(image, "image", intrinsics=intrinsics)
    check_float(depth, "depth", min=0.0, min_open=True)
    check_int(sh_degree, "sh_degree", min=0, max=3)
    check_float(opacity, "opacity", min=0.0, max=1.0, min_open=True, max_open=True)
    check_generator(generator, "generator", image.device)
    check_range(image, "image", min=0.0, max=1.0)
    dev, dt = image.device, image.dtype
    if generator is None:
        step = max(1.0, math.sqrt(h * w / n))
        rows = torch.arange(step / 2, h, step, device=dev).long().clamp(max=h - 1)
        cols = torch.arange(step / 2, w, step, device=dev).long().clamp(max=w - 1)
        r, c = torch.meshgrid(rows, cols, indexing="ij")
        r, c = r.reshape(-1), c.reshape(-1)
    else:
        step = math.sqrt(h * w / n)
        idx = torch.randperm(h * w, generator=generator, device=dev)[:n]
        r, c = idx // w, idx % w
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    u, v = c.to(dt) + 0.5, r.to(dt) + 0.5
    means = torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, torch.full_like(u, depth)], -1)
    scale = step * depth / torch.sqrt(fx * fy)  # projects to ~ the pixel spacing
    m = means.shape[0]
    return dict(means=means, log_scales=torch.log(scale).expand(m, 3).clone(),
                quats=means.new_tensor([1.0, 0.0, 0.0, 0.0]).expand(m, 4).clone(),
                opacity_logits=_inverse_sigmoid(torch.full((m,), opacity, dtype=dt, device=dev)),
                sh=_dc_from_rgb(image[r, c], sh_degree))


# --------------------------------------------------------------------------- fitting a scene

class GaussianFit(NamedTuple):
    """:func:`fit_gaussians`' result: the fitted parameter dict and the per-step training losses
    (steps,), each the loss of the parameters before that step's update."""
    params: dict
    losses: torch.Tensor


def fit_gaussians(params: dict, images: torch.Tensor, viewmats: torch.Tensor, intrinsics: torch.Tensor, *,
                  steps: int, lr: float = 0.01, densify_every: int = 0, densify_until: int | None = None,
                  grad_threshold: float = 2e-4, scene_extent: float = 1.0, percent_dense: float = 0.01,
                  background=None, eps2d: float = EPS2D, reference: bool = False,
                  generator: torch.Generator | None = None) -> GaussianFit:
    """Fit Gaussians to posed images by Adam on the mean squared error, cycling through the views,
    with adaptive density control every ``densify_every`` steps (0: never) until ``densify_until``.
    Density control densifies the Gaussians whose view-space positional gradient, averaged over the
    steps that saw them, reaches ``grad_threshold``; the gradient is taken in normalised device
    coordinates (the pixel gradient times half the image's width and height), as 3DGS and gsplat
    take it, so their default 2e-4 means the same here (a threshold of 0 densifies every Gaussian).

    params: Gaussian dict (see ``check_gaussians``); images: (V, H, W, C); viewmats: (V, 4, 4);
    intrinsics: (3, 3). The learning rate of the means is ``lr`` times ``scene_extent`` / 10, the
    others' ``lr`` (opacity and scale logits 5 lr). Renders as :func:`render_gaussians` with the
    same defaults (``eps2d`` = :data:`EPS2D`, tiles or ``reference``), so the fitted scene
    rendered with the renderer's defaults has the training loss. Returns a :class:`GaussianFit`.
    Inputs are checked once before the loop; a step reads nothing back from the device except
    the tile rasteriser's two list sizes (none with ``reference=True``) and density control.
    """
    n = check_gaussians(params)
    check_tensor(images, "images", ndim=4)
    v, h, w, _ = images.shape
    check_tensor(viewmats, "viewmats", shape=(v, 4, 4))
    check_tensor(intrinsics, "intrinsics", shape=(3, 3))
    check_same(images, "images", viewmats=viewmats, intrinsics=intrinsics, means=params["means"])
    check_int(steps, "steps", min=1)
    check_float(lr, "lr", min=0.0, min_open=True)
    check_int(densify_every, "densify_every", min=0)
    check_float(scene_extent, "scene_extent", min=0.0, min_open=True)
    check_float(eps2d, "eps2d", min=0.0)
    check_float(grad_threshold, "grad_threshold", min=0.0)
    check_float(percent_dense, "percent_dense", min=0.0)
    check_generator(generator, "generator", images.device)
    if not isinstance(reference, bool):
        raise TypeError(f"reference: expected a bool, got {type(reference).__name__}")
    if background is not None:
        check_tensor(background, "background", shape=(images.shape[-1],))
        check_same(images, "images", background=background)
    if params["sh"].shape[2] != images.shape[-1]:
        raise ValueError(f"params['sh']: {params['sh'].shape[2]} colour channels, images have {images.shape[-1]}")
    densify_until = steps if densify_until is None else check_int(densify_until, "densify_until", min=0)
    rates = {"means": lr * scene_extent / 10, "log_scales": 5 * lr, "quats": lr, "opacity_logits": 5 * lr, "sh": lr}

    def make_opt(p):
        # fused: the step count stays on the device (the unfused Adam reads it back every step)
        return torch.optim.Adam([{"params": [p[k]], "lr": rates[k]} for k in PARAM_KEYS], fused=True)

    params = {k: params[k].detach().clone().requires_grad_(True) for k in PARAM_KEYS}
    opt = make_opt(params)
    grad_sum = torch.zeros(n, dtype=images.dtype, device=images.device)
    grad_cnt = torch.zeros_like(grad_sum)
    losses = []
    for step in range(steps):
        i = step % v
        img, uv = _render(params, viewmats[i], intrinsics, h, w, background=background, tile_size=16, truncate=3.0,
                          near=0.01, eps2d=eps2d, reference=reference, keep_uv=True)
        loss = ((img - images[i]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        with torch.no_grad():
            # View-space positional gradient in NDC units (d pixel / d ndc = size / 2), accumulated
            # where the Gaussian was visible.
            g = (uv.grad * uv.new_tensor([w / 2, h / 2])).norm(dim=-1)
            grad_sum += g
            grad_cnt += (g > 0).to(g.dtype)
            if densify_every and (step + 1) % densify_every == 0 and step + 1 < densify_until:
                avg = grad_sum / grad_cnt.clamp_min(1)
                params = densify_and_prune({k: params[k].detach() for k in PARAM_KEYS}, avg,
                                           grad_threshold=grad_threshold, scene_extent=scene_extent,
                                           percent_dense=percent_dense, generator=generator)
                params = {k: params[k].clone().requires_grad_(True) for k in PARAM_KEYS}
                opt = make_opt(params)
                grad_sum = torch.zeros(params["means"].shape[0], dtype=images.dtype, device=images.device)
                grad_cnt = torch.zeros_like(grad_sum)
    return GaussianFit({k: params[k].detach() for k in PARAM_KEYS}, torch.stack(losses))
