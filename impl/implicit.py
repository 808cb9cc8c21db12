"""Neural implicit representations: analytic SDFs, occupancy / DeepSDF networks, their losses,
mesh extraction, and differentiable volumetric rendering (DVR) with the secant method and the
implicit-differentiation backward pass.

Conventions: points ``x: (..., 3)``; a signed distance is negative inside, positive outside;
an occupancy is the probability of being inside.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from impl._checks import (check_device, check_dtype, check_float, check_index, check_int, check_returned, check_same,
                          check_tensor)

# --------------------------------------------------------------------------- analytic shapes


def _points(x, name="x"):
    check_tensor(x, name)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (..., 3), got {tuple(x.shape)}")
    return x


def sdf_sphere(x: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """Signed distance to the sphere of ``radius`` at the origin. x: (..., 3) -> (...)."""
    _points(x)
    check_float(radius, "radius", min=0.0, min_open=True)
    return torch.linalg.vector_norm(x, dim=-1) - radius


def sdf_box(x: torch.Tensor, half_extent: torch.Tensor) -> torch.Tensor:
    """Exact signed distance to the axis-aligned box [-h, h] at the origin. x: (..., 3), h: (3,)."""
    _points(x)
    check_tensor(half_extent, "half_extent", shape=(3,))
    check_same(x, "x", half_extent=half_extent)
    if not (half_extent > 0).all():
        raise ValueError("half_extent: every half extent must be positive")
    q = x.abs() - half_extent
    outside = torch.linalg.vector_norm(q.clamp(min=0), dim=-1)
    inside = q.amax(dim=-1).clamp(max=0)
    return outside + inside


def sdf_torus(x: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    """Signed distance to the torus around the z axis: sqrt((sqrt(x^2+y^2) - R)^2 + z^2) - r."""
    _points(x)
    major = check_float(major, "major", min=0.0, min_open=True)
    minor = check_float(minor, "minor", min=0.0, min_open=True)
    ring = torch.linalg.vector_norm(x[..., :2], dim=-1) - major
    return torch.sqrt(ring**2 + x[..., 2] ** 2) - minor


def sdf_plane(x: torch.Tensor, normal: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """Signed distance to the plane n.x + offset = 0 (n normalised here). x: (..., 3), normal: (3,)."""
    _points(x)
    check_tensor(normal, "normal", shape=(3,))
    check_same(x, "x", normal=normal)
    offset = check_float(offset, "offset")
    # scaled by its largest entry first, so that a tiny or huge (but finite) normal's squared norm
    # neither underflows to 0 nor overflows to inf; NaN or inf entries have no direction
    scale = normal.abs().amax()
    if not bool((scale > 0) & torch.isfinite(scale)):
        raise ValueError("normal: must be non-zero and finite")
    n = normal / scale
    return (x @ n + offset / scale) / torch.linalg.vector_norm(n)


def occupancy_from_sdf(sdf: torch.Tensor) -> torch.Tensor:
    """Ground-truth occupancy (1 inside, 0 outside) of a signed distance."""
    check_tensor(sdf, "sdf")
    return (sdf < 0).to(sdf.dtype)


def rigid_transform_points(x: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """The inverse rigid map R^T (x - t): evaluating f there transforms the shape f by (R, t) exactly.

    x: (..., 3), rotation: (3, 3) orthonormal, translation: (3,).
    """
    _points(x)
    check_tensor(rotation, "rotation", shape=(3, 3))
    check_tensor(translation, "translation", shape=(3,))
    check_same(x, "x", rotation=rotation, translation=translation)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    if not torch.allclose(rotation.T @ rotation, eye, atol=1e-5):
        raise ValueError("rotation: must be orthonormal (R^T R = I)")
    return (x - translation) @ rotation


def grid_points(n: int, bound: float, *, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """The n^3 grid over [-bound, bound]^3, indexed (i, j, k) -> (x, y, z). Returns (n, n, n, 3)."""
    check_int(n, "n", min=2)
    bound = check_float(bound, "bound", min=0.0, min_open=True)
    check_dtype(dtype)
    device = check_device(device)
    # bound times [-1, 1]: linspace(-bound, bound) would overflow its step 2 bound for bound > max / 2
    axis = bound * torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


# --------------------------------------------------------------------------- networks


class _ConditionedMLP(nn.Module):
    def __init__(self, latent_dim: int, hidden: int, n_layers: int):
        super().__init__()
        check_int(latent_dim, "latent_dim", min=0)
        check_int(hidden, "hidden", min=1)
        check_int(n_layers, "n_layers", min=1)
        self.latent_dim = latent_dim
        dims = [3 + latent_dim] + [hidden] * n_layers
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.Softplus(beta=100)]  # smooth, so gradients (eikonal) exist
        self.body = nn.Sequential(*layers, nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: (B, N, 3) query points, z: (B, latent_dim) code -> (B, N)."""
        check_tensor(x, "x", ndim=3)
        if x.shape[-1] != 3:
            raise ValueError(f"x: expected shape (B, N, 3), got {tuple(x.shape)}")
        check_tensor(z, "z", shape=(x.shape[0], self.latent_dim))
        check_same(x, "x", z=z)
        check_same(self.body[0].weight, "the network", x=x)  # the layers' dtype and device, named as x
        zz = z[:, None, :].expand(-1, x.shape[1], -1)
        return self.body(torch.cat([x, zz], dim=-1)).squeeze(-1)


class OccupancyNetwork(_ConditionedMLP):
    """Occupancy network: f(x, z) = logit of P(x inside the shape with code z). Output (B, N) logits;
    ``probability`` gives the sigmoid."""

    def probability(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x, z))


class DeepSDF(_ConditionedMLP):
    """DeepSDF: f(x, z) = signed distance of x to the shape with code z. Output (B, N)."""


def occupancy_loss(logits: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between predicted occupancy logits and ground-truth occupancy in [0, 1]."""
    check_tensor(logits, "logits")
    check_tensor(occupancy, "occupancy", shape=tuple(logits.shape))
    check_same(logits, "logits", occupancy=occupancy)
    if logits.numel() == 0:
        raise ValueError(f"logits: the mean loss needs at least one point, got shape {tuple(logits.shape)}")
    # "not inside" rather than "outside", so that a NaN target fails too
    if not bool(((occupancy >= 0) & (occupancy <= 1)).all()):
        raise ValueError("occupancy: targets of a cross-entropy must lie in [0, 1]")
    return nn.functional.binary_cross_entropy_with_logits(logits, occupancy)


def sdf_loss(pred: torch.Tensor, target: torch.Tensor, clamp: float = 0.1) -> torch.Tensor:
    """DeepSDF's clamped L1 regression loss |clamp(pred) - clamp(target)|, mean."""
    check_tensor(pred, "pred")
    check_tensor(target, "target", shape=tuple(pred.shape))
    check_same(pred, "pred", target=target)
    check_float(clamp, "clamp", min=0.0, min_open=True)
    if pred.numel() == 0:
        raise ValueError(f"pred: the mean loss needs at least one value, got shape {tuple(pred.shape)}")
    return (pred.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs().mean()


def spatial_gradient(f, x: torch.Tensor) -> torch.Tensor:
    """nabla_x f(x) by autograd (graph kept, so it can enter a loss). x: (..., 3) -> (..., 3)."""
    _points(x)
    if not callable(f):
        raise TypeError("f: expected a callable points -> values")
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = f(x)
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise TypeError(f"f: expected to return a floating-point tensor, got "
                            f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}")
        # f does not depend on x (nor on anything with a gradient): a constant. Under inference mode
        # nothing records, and autograd.grad below raises as it should.
        if not y.requires_grad and not torch.is_inference_mode_enabled():
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if g is None else g  # None: f depends on parameters, not on x


def point_cloud_loss(f, surface_points: torch.Tensor, space_points: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """The notes' weakly supervised loss: mean_i |f(x_i)|^2 + lam * E_x (||nabla_x f(x)|| - 1)^2.

    surface_points: (N, 3) samples of the surface; space_points: (M, 3) where the eikonal term is taken.
    """
    if not callable(f):
        raise TypeError("f: expected a callable points -> values")
    check_tensor(surface_points, "surface_points", ndim=2)
    check_tensor(space_points, "space_points", ndim=2)
    _points(surface_points, "surface_points")
    _points(space_points, "space_points")
    check_same(surface_points, "surface_points", space_points=space_points)
    check_float(lam, "lam", min=0.0)
    # each term is a mean: it needs at least one point
    if surface_points.shape[0] == 0:
        raise ValueError("surface_points: the fitting term needs at least one point, got shape (0, 3)")
    if space_points.shape[0] == 0:
        raise ValueError("space_points: the eikonal term needs at least one point, got shape (0, 3)")
    fit = f(surface_points).pow(2).mean()
    g = spatial_gradient(f, space_points)
    eikonal = (torch.linalg.vector_norm(g, dim=-1) - 1).pow(2).mean()
    return fit + lam * eikonal


# --------------------------------------------------------------------------- mesh extraction

# Kuhn subdivision of a cube into 6 tetrahedra along the diagonal 0 -> 7 (corner bits = (i, j, k)).
_CORNERS = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)])
_TETS = []
for _a, _b, _c in itertools.permutations(range(3)):
    _e1 = 1 << (2 - _a)
    _e2 = _e1 | (1 << (2 - _b))
    _TETS.append((0, _e1, _e2, 7))
_TETS = torch.tensor(_TETS)


def _tet_triangles(case: int) -> list[list[tuple[int, int]]]:
    """Triangles (as triples of tet edges (a, b)) for an inside-mask ``case`` of a tetrahedron."""
    inside = [v for v in range(4) if case >> v & 1]
    outside = [v for v in range(4) if not case >> v & 1]
    if len(inside) in (0, 4):
        return []
    if len(inside) in (1, 3):
        lone, rest = (inside, outside) if len(inside) == 1 else (outside, inside)
        return [[(lone[0], r) for r in rest]]
    (a, b), (c, d) = inside, outside
    return [[(a, c), (a, d), (b, d)], [(a, c), (b, d), (b, c)]]


class Mesh(NamedTuple):
    """An indexed triangle mesh: verts (V, 3), faces (F, 3) long indices into verts."""

    verts: torch.Tensor
    faces: torch.Tensor


def marching_tetrahedra(values: torch.Tensor, level: float = 0.0, spacing: float = 1.0):
    """Triangle mesh of the level set {values = level} of a grid, by marching tetrahedra
    (marching cubes with each cube cut into 6 tetrahedra, so the case table is 16 entries).

    values: (X, Y, Z) samples on a regular grid with ``spacing``; vertex coordinates are in the
    same index frame as scikit-image's ``marching_cubes`` (index * spacing). Vertices are linear
    interpolations along grid edges, as in marching cubes. Returns (verts (3F, 3), faces (F, 3)),
    faces oriented with normals pointing from below ``level`` to above it; ``Mesh(verts, faces)``, the
    vertices not shared between faces. The reference for ``marching_cubes``.
    """
    check_tensor(values, "values", ndim=3)
    if min(values.shape) < 2:
        raise ValueError(f"values: need at least 2 samples per axis, got {tuple(values.shape)}")
    check_float(level, "level")
    check_float(spacing, "spacing", min=0.0, min_open=True)
    check_tensor(values, "values", finite=True)  # as marching_cubes: NaN or inf would give NaN vertices
    dev, dt = values.device, values.dtype
    X, Y, Z = values.shape
    base = torch.stack(torch.meshgrid(torch.arange(X - 1, device=dev), torch.arange(Y - 1, device=dev),
                                      torch.arange(Z - 1, device=dev), indexing="ij"), -1).reshape(-1, 1, 1, 3)
    idx = base + _CORNERS.to(dev)[_TETS.to(dev)][None]  # (C, 6, 4, 3) integer grid corners of each tet
    idx = idx.reshape(-1, 4, 3)
    v = values[idx[..., 0], idx[..., 1], idx[..., 2]]  # (T, 4)
    inside = v < level
    case = (inside.long() * torch.tensor([1, 2, 4, 8], device=dev)).sum(-1)
    pos = idx.to(dt) * spacing
    tris = []
    for c in range(1, 15):
        sel = case == c
        if not sel.any():
            continue
        for tri in _tet_triangles(c):
            a = torch.tensor([e[0] for e in tri], device=dev)
            b = torch.tensor([e[1] for e in tri], device=dev)
            va, vb = v[sel][:, a], v[sel][:, b]
            w = ((level - va) / (vb - va))[..., None]
            p = pos[sel][:, a] + w * (pos[sel][:, b] - pos[sel][:, a])  # (n, 3, 3)
            # orient: the normal should point from the inside (below level) towards the outside
            inside_c = (pos[sel] * inside[sel][..., None]).sum(1) / inside[sel].sum(1, keepdim=True)
            n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
            flip = ((p.mean(1) - inside_c) * n).sum(-1) < 0
            p = torch.where(flip[:, None, None], p[:, [0, 2, 1]], p)
            tris.append(p)
    if not tris:
        return Mesh(values.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=dev))
    verts = torch.cat(tris).reshape(-1, 3)
    faces = torch.arange(verts.shape[0], device=dev).reshape(-1, 3)
    return Mesh(verts, faces)


# --------------------------------------------------------------------------- marching cubes
#
# The case table is built here, at import time, from the geometry of the cube (no table is copied):
# for a sign pattern of the 8 corners, every face of the cube crossed by the surface gets one or two
# oriented segments between the crossed edges of that face; the segments chain into closed loops on
# the cube's surface, and each loop is triangulated as a fan. A face with two diagonal corners inside
# is ambiguous; it is resolved by the asymptotic decider of the face's bilinear interpolant, which
# reads only that face's four values, so the two cubes sharing a face choose alike and the mesh is
# watertight. Corner c has grid offset ((c >> 2) & 1, (c >> 1) & 1, c & 1) along axes (0, 1, 2).


def _mc_cube_geometry():
    corners = [((c >> 2) & 1, (c >> 1) & 1, c & 1) for c in range(8)]
    cid = {xyz: c for c, xyz in enumerate(corners)}
    # 12 edges: (axis, lower corner, upper corner), ordered by axis then lower corner.
    edges = [(a, c, c | (4 >> a)) for a in range(3) for c in range(8) if not c & (4 >> a)]
    eid = {frozenset((lo, hi)): e for e, (_, lo, hi) in enumerate(edges)}
    faces = []  # 6 faces, each its 4 corners counter-clockwise seen from outside the cube
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3  # (e_b, e_c, e_a) is right-handed
        for side in (0, 1):
            square = [(0, 0), (1, 0), (1, 1), (0, 1)] if side else [(0, 0), (0, 1), (1, 1), (1, 0)]
            quad = []
            for u, w in square:
                xyz = [0, 0, 0]
                xyz[a], xyz[b], xyz[c] = side, u, w
                quad.append(cid[tuple(xyz)])
            faces.append(quad)
    return corners, edges, eid, faces


_MC_CORNERS, _MC_EDGES, _MC_EDGE_ID, _MC_FACES = _mc_cube_geometry()
_MC_FACE_EDGES = [{_MC_EDGE_ID[frozenset((f[k], f[(k + 1) % 4]))] for k in range(4)} for f in _MC_FACES]
_MC_SHARE_FACE = [[any(a in fe and b in fe for fe in _MC_FACE_EDGES) for b in range(12)] for a in range(12)]


def _mc_face_segments(case: int, face: list[int], connect02: bool) -> list[tuple[int, int]]:
    """Oriented segments (entry edge, exit edge) of the surface on one face: walking a segment with the
    outside of the cube towards the viewer, the inside corners lie on its right, so the loops it forms
    run counter-clockwise around the outward normal (from below ``level`` to above it)."""
    inside = [bool(case >> q & 1) for q in face]
    sides = [_MC_EDGE_ID[frozenset((face[k], face[(k + 1) % 4]))] for k in range(4)]  # side k: q_k -> q_k+1
    entry = {k: sides[(k - 1) % 4] for k in range(4) if inside[k] and not inside[(k - 1) % 4]}
    exit_ = {k: sides[k] for k in range(4) if inside[k] and not inside[(k + 1) % 4]}
    if sum(inside) == 2 and inside[0] == inside[2]:  # ambiguous: the inside corners are diagonal
        k0, k2 = (0, 2) if inside[0] else (1, 3)
        # the decider's bit says whether corners 0 and 2 are joined through the face's centre; joining
        # the inside pair is the same as separating the outside pair
        join_inside = connect02 if inside[0] else not connect02
        if join_inside:
            return [(entry[k0], exit_[k2]), (entry[k2], exit_[k0])]
        return [(entry[k0], exit_[k0]), (entry[k2], exit_[k2])]
    # otherwise one run of consecutive inside corners (or none): entered once and left once
    return [(e, x) for e, x in zip(entry.values(), exit_.values())]


@functools.lru_cache(maxsize=None)
def _mc_triangulate(loop: tuple[int, ...]) -> list[tuple[int, int, int]] | None:
    """Triangles of a polygon ``loop`` (cube edge ids, in order) none of whose diagonals joins two
    vertices on one face of the cube. Such a chord would lie in that face, where the neighbouring cube
    may draw the same chord: the edge would then belong to four triangles. None if there is no such
    triangulation."""
    if len(loop) == 3:
        return [tuple(loop)]
    n = len(loop)
    for k in range(n - 1, 1, -1):  # the triangle (loop[0], loop[1], loop[k]); k = n - 1 clips an ear
        if (k > 2 and _MC_SHARE_FACE[loop[1]][loop[k]]) or (k < n - 1 and _MC_SHARE_FACE[loop[k]][loop[0]]):
            continue
        left = _mc_triangulate(loop[1:k + 1]) if k > 2 else []
        right = _mc_triangulate(loop[k:] + loop[:1]) if k < n - 1 else []
        if left is not None and right is not None:
            return [(loop[0], loop[1], loop[k])] + left + right
    return None


def _mc_case_triangles(case: int, bits: int):
    """Triangles (as local edge ids; 12 + c for the c-th extra centroid vertex) of the corner pattern
    ``case`` (bit c set: corner c below level) with decider bits ``bits`` (bit f: on face f, corners 0
    and 2 are joined), and the edges whose crossings each centroid averages."""
    succ = {}
    for f, face in enumerate(_MC_FACES):
        for a, b in _mc_face_segments(case, face, bool(bits >> f & 1)):
            succ[a] = b  # each crossed edge starts one segment (on one face) and ends one (on the other)
    tris, centres = [], []
    while succ:
        start = min(succ)
        loop, e = [start], succ.pop(start)
        while e != start:
            loop.append(e)
            e = succ.pop(e)
        # triangulate the loop or its reverse, whichever reads smaller from the same start, so that the
        # complementary pattern (the same loop reversed) gets the same triangles, reversed
        back = loop[:1] + loop[:0:-1]
        canon = min(loop, back)
        t = _mc_triangulate(tuple(canon))
        if t is None:  # no such triangulation (long loops through ambiguous faces): fan around the
            # loop's centroid, an extra vertex inside the cube numbered 12, 13, ...
            centre = 12 + len(centres)
            centres.append(sorted(loop))
            t = [(centre, canon[i], canon[(i + 1) % len(canon)]) for i in range(len(canon))]
        tris += t if canon == loop else [(a, c, b) for a, b, c in t]
    return tris, centres


def _mc_build_table():
    """The case table, indexed by key = case * 64 + bits: triangle counts (K,), triangles (K, 12, 3)
    of local vertex ids (-1 padded), and the centroid vertices' edge sets (K, 2, 12) bool."""
    counts = np.zeros(256 * 64, dtype=np.int64)
    table = np.full((256 * 64, 12, 3), -1, dtype=np.int64)
    centres = np.zeros((256 * 64, 2, 12), dtype=bool)
    for case in range(256):
        ambiguous = 0
        for f, face in enumerate(_MC_FACES):
            s = [case >> q & 1 for q in face]
            ambiguous |= (s[0] == s[2] and s[1] == s[3] and s[0] != s[1]) << f
        for used in range(64):
            if used & ~ambiguous:
                continue  # the decider matters only on ambiguous faces: built once, copied below
            tri, cen = _mc_case_triangles(case, used)
            keys = case * 64 + np.array([b for b in range(64) if b & ambiguous == used])
            counts[keys] = len(tri)
            if tri:
                table[keys, : len(tri)] = tri
            for c, edges in enumerate(cen):
                centres[keys[:, None], c, edges] = True
    return torch.from_numpy(counts), torch.from_numpy(table), torch.from_numpy(centres)


MC_TRIANGLE_COUNT, MC_TRIANGLES, MC_CENTRES = _mc_build_table()
_MC_EDGE_AXIS = torch.tensor([a for a, _, _ in _MC_EDGES])
_MC_EDGE_LO = torch.tensor([lo for _, lo, _ in _MC_EDGES])
_MC_EDGE_HI = torch.tensor([hi for _, _, hi in _MC_EDGES])
_MC_CORNER_OFFSET = torch.tensor(_MC_CORNERS)  # (8, 3)
_MC_FACE_CORNERS = torch.tensor(_MC_FACES)  # (6, 4)
# an edge is made by a cube only if it is the cube's corner-0 edge along its axis, or the cube is the
# last along each axis in which the edge is offset (so each grid edge has exactly one maker)
_MC_EDGE_NEEDS_LAST = _MC_CORNER_OFFSET[_MC_EDGE_LO].bool()  # (12, 3)
_MC_EDGE_CROSSED = torch.tensor([[(c >> lo & 1) != (c >> hi & 1) for _, lo, hi in _MC_EDGES] for c in range(256)])


def _spacing(spacing, dtype, device):
    if isinstance(spacing, (tuple, list)):
        if len(spacing) != 3:
            raise ValueError(f"spacing: expected a number or 3 numbers, got {len(spacing)}")
        vals = [check_float(s, "spacing", min=0.0, min_open=True) for s in spacing]
    else:
        vals = [check_float(spacing, "spacing", min=0.0, min_open=True)] * 3
    return torch.tensor(vals, dtype=dtype, device=device)


def marching_cubes(values: torch.Tensor, level: float = 0.0, spacing=1.0) -> Mesh:
    """Triangle mesh of the level set {values = level} by marching cubes, vectorised over all cubes.

    values: (X, Y, Z) samples on a regular grid. ``spacing`` (a number, or one per axis) scales the
    index coordinates, as in scikit-image's ``marching_cubes``: a vertex is (i, j, k) * spacing in the
    array's axis order. Each vertex is the linear interpolation of ``level`` on one grid edge and is
    shared by every cube around that edge, so the mesh is indexed and watertight where the surface
    does not leave the grid. Faces are oriented with normals pointing from below ``level`` to above it
    (outwards for a signed distance). Returns ``Mesh(verts (V, 3), faces (F, 3) long)``.
    """
    check_tensor(values, "values", ndim=3)
    if min(values.shape) < 2:
        raise ValueError(f"values: need at least 2 samples per axis, got {tuple(values.shape)}")
    level = check_float(level, "level")
    step = _spacing(spacing, values.dtype, values.device)
    lo, hi = torch.aminmax(values)  # NaN propagates into both
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise ValueError("values: contains NaN or infinite values")
    dev = values.device
    X, Y, Z = values.shape
    n = X * Y * Z
    # The grid is flattened: point (i, j, k) is lin = i Y Z + j Z + k, and a shift along an axis is a
    # contiguous slice. A cube is named by the lin of its corner 0; bases that wrap past the end of a
    # row (j = Y - 1 or k = Z - 1) are dropped after the (few) active ones are found.
    flat = values.contiguous().reshape(-1)
    b = (flat < level).view(torch.uint8)
    # corner c = 4 i + 2 j + k contributes bit c: pair along k, then along j, then along i (3 passes)
    case = torch.add(b[:-1], b[1:], alpha=2)
    case = torch.add(case[:-Z], case[Z:], alpha=4)
    case = torch.add(case[:-Y * Z], case[Y * Z:], alpha=16)  # (n - YZ - Z - 1,): every base with i < X - 1
    base = ((case - 1) < 254).nonzero().squeeze(1)  # neither all outside (0) nor all inside (255)
    j, k = (base // Z) % Y, base % Z
    keep = (j < Y - 1) & (k < Z - 1)
    base, j, k = base[keep], j[keep], k[keep]
    i = base // (Y * Z)
    key8 = case[base].long()
    corner_lin = _MC_CORNER_OFFSET.to(dev) @ torch.tensor([Y * Z, Z, 1], device=dev)
    cv = flat[base[:, None] + corner_lin] - level  # (A, 8) corner values relative to the level
    fc = _MC_FACE_CORNERS.to(dev)
    join02 = cv[:, fc[:, 0]] * cv[:, fc[:, 2]] > cv[:, fc[:, 1]] * cv[:, fc[:, 3]]  # (A, 6) the decider
    key = key8 * 64 + (join02.long() << torch.arange(6, device=dev)).sum(-1)

    # vertices: each crossed grid edge once, made by the one cube that owns it (its corner-0 edges, and
    # the edges on the grid's last planes, which no cube further on could own)
    last = torch.stack([i == X - 2, j == Y - 2, k == Z - 2], -1)  # (A, 3)
    own = (~_MC_EDGE_NEEDS_LAST.to(dev) | last[:, None, :]).all(-1)  # (A, 12)
    own &= _MC_EDGE_CROSSED.to(dev)[key8]
    cube_v, edge_v = own.nonzero().unbind(-1)
    lo_c, hi_c = _MC_EDGE_LO.to(dev)[edge_v], _MC_EDGE_HI.to(dev)[edge_v]
    c0, c1 = cv[cube_v, lo_c], cv[cube_v, hi_c]
    ijk = torch.stack([i, j, k], -1)
    pos = (ijk[cube_v] + _MC_CORNER_OFFSET.to(dev)[lo_c]).to(values.dtype)
    axis = _MC_EDGE_AXIS.to(dev)[edge_v]
    pos[torch.arange(pos.shape[0], device=dev), axis] += -c0 / (c1 - c0)
    verts = pos * step
    edge_const = _MC_EDGE_AXIS.to(dev) * n + corner_lin[_MC_EDGE_LO.to(dev)]  # global edge id - base
    # global edge id -> vertex index through a dense map (12 bytes per grid point, far faster than a
    # sort or a binary search); only entries of crossed edges are written, and only those are read
    index_dtype = torch.int32 if 3 * n < 2**31 else torch.int64
    vertex_of = torch.empty(3 * n, dtype=index_dtype, device=dev)
    vertex_of[base[cube_v] + edge_const[edge_v]] = torch.arange(cube_v.shape[0], dtype=index_dtype, device=dev)

    # triangles: the table's rows for each active cube, edge ids made global, then vertex indices
    count = MC_TRIANGLE_COUNT.to(dev)[key]
    cube = torch.repeat_interleave(count)
    first = torch.cumsum(count, 0) - count
    row = key[cube] * MC_TRIANGLES.shape[1] + torch.arange(cube.shape[0], device=dev) - first[cube]
    edges = MC_TRIANGLES.to(dev).reshape(-1, 3).index_select(0, row)  # (F, 3) local vertex ids
    is_edge = edges < 12
    faces = vertex_of[base[cube][:, None] + edge_const[edges.clamp(max=11)]].long()

    # centroid vertices of the cubes whose table entry has them (rare: long loops through ambiguous faces)
    members = MC_CENTRES.to(dev)[key]  # (A, 2, 12)
    owner, slot = members.any(-1).nonzero().unbind(-1)
    m = members[owner, slot]  # (C, 12)
    around = torch.where(m, vertex_of[base[owner][:, None] + edge_const].long(), 0)
    centre = (verts[around] * m[..., None]).sum(1) / m.sum(-1, keepdim=True)
    centre_id = torch.zeros(key.shape[0], 2, dtype=torch.long, device=dev)
    centre_id[owner, slot] = verts.shape[0] + torch.arange(owner.shape[0], device=dev)
    extra = centre_id[cube[:, None].expand_as(edges), (edges - 12).clamp(min=0, max=1)]
    return Mesh(torch.cat([verts, centre]), torch.where(is_edge, faces, extra))


def mesh_area(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Total area of a triangle mesh. verts: (V, 3), faces: (F, 3) long."""
    check_tensor(verts, "verts", ndim=2)
    check_tensor(faces, "faces", ndim=2, floating=False)
    if faces.dtype not in (torch.int32, torch.int64) or faces.shape[-1] != 3:
        raise TypeError(f"faces: expected an integer (F, 3) tensor, got {faces.dtype} {tuple(faces.shape)}")
    if verts.shape[-1] != 3:
        raise ValueError(f"verts: expected shape (V, 3), got {tuple(verts.shape)}")
    if faces.device != verts.device:
        raise ValueError(f"faces: on {faces.device}, but verts is on {verts.device}")
    check_index(faces, "faces", verts.shape[0])
    tri = verts[faces]
    return 0.5 * torch.linalg.vector_norm(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1).sum()


# --------------------------------------------------------------------------- secant method


def secant_step(x0: torch.Tensor, x1: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
    """x2 = x1 - f(x1) (x1 - x0) / (f(x1) - f(x0)), the root of the line through (x0, f0), (x1, f1).

    Where f1 == f0 (converged, or a flat chord) x1 is kept.
    """
    for name, t in dict(x0=x0, x1=x1, f0=f0, f1=f1).items():
        check_tensor(t, name)
    # elementwise: no broadcasting, one dtype and device
    for name, t in dict(x0=x0, f0=f0, f1=f1).items():
        check_tensor(t, name, shape=tuple(x1.shape))
    check_same(x1, "x1", x0=x0, f0=f0, f1=f1)
    df = f1 - f0
    safe = torch.where(df == 0, torch.ones_like(df), df)
    return torch.where(df == 0, x1, x1 - f1 * (x1 - x0) / safe)


def _values(fn, x, name="fn"):
    """fn(x), checked to be elementwise: a tensor of x's shape, dtype and device."""
    return check_returned(fn(x), name, x, shape=x.shape)


def secant_iterates(fn, x0: torch.Tensor, x1: torch.Tensor, n_iter: int) -> torch.Tensor:
    """All iterates x0, x1, x2, ... of the secant method for fn(x) = 0 (elementwise, batched).
    Returns (n_iter + 2, *x0.shape); differentiable (the solver unrolled)."""
    if not callable(fn):
        raise TypeError("fn: expected a callable")
    check_tensor(x0, "x0")
    check_tensor(x1, "x1", shape=tuple(x0.shape))
    check_same(x0, "x0", x1=x1)
    check_int(n_iter, "n_iter", min=0)
    xs = [x0, x1]
    f0, f1 = _values(fn, x0), _values(fn, x1)
    for _ in range(n_iter):
        x2 = secant_step(xs[-2], xs[-1], f0, f1)
        xs.append(x2)
        f0, f1 = f1, _values(fn, x2)
    return torch.stack(xs)


def secant(fn, x0: torch.Tensor, x1: torch.Tensor, n_iter: int = 8) -> torch.Tensor:
    """The secant method's last iterate for fn(x) = 0, elementwise."""
    return secant_iterates(fn, x0, x1, n_iter)[-1]


# --------------------------------------------------------------------------- DVR


class Bracket(NamedTuple):
    """``ray_march``'s result: depths t0 < t1 around the first crossing, and whether the ray crossed. (R,) each."""

    t0: torch.Tensor
    t1: torch.Tensor
    hit: torch.Tensor


class SurfaceHit(NamedTuple):
    """The depth of the surface along each ray (R,) and whether the ray hit it (R,) bool."""

    depth: torch.Tensor
    hit: torch.Tensor


class DVRRender(NamedTuple):
    """DVR's pixel colours (R, 3) and whether each ray hit the surface (R,) bool."""

    color: torch.Tensor
    hit: torch.Tensor


def _rays(origins, dirs):
    _points(origins, "origins")
    check_tensor(origins, "origins", ndim=2)  # rays (R, 3): the depths are (R,)
    check_tensor(dirs, "dirs", shape=tuple(origins.shape))
    check_same(origins, "origins", dirs=dirs)


def _theta(theta, origins):
    """Floating parameters on the rays' device (their dtype may differ: fn's arithmetic promotes)."""
    for i, t in enumerate(theta):
        check_tensor(t, f"theta[{i}]")
        if t.device != origins.device:
            raise ValueError(f"theta[{i}]: on {t.device}, but origins is on {origins.device}")


def ray_march(fn, origins: torch.Tensor, dirs: torch.Tensor, t_near: float, t_far: float,
              n_steps: int = 64, level: float = 0.0):
    """March along p = o + t w at n_steps even depths and bracket the first crossing of fn = level.

    fn: callable (..., 3) -> (...). origins, dirs: (R, 3). Returns Bracket(t0, t1, hit): (R,), (R,), (R,) bool;
    fn - level changes sign between t0 and t1 on rays that hit. A step where fn is NaN is no crossing.
    """
    if not callable(fn):
        raise TypeError("fn: expected a callable")
    _rays(origins, dirs)
    t_near = check_float(t_near, "t_near")
    t_far = check_float(t_far, "t_far")
    if not t_far > t_near:
        raise ValueError("t_far: must be greater than t_near")
    check_int(n_steps, "n_steps", min=2)
    check_float(level, "level")
    t = torch.linspace(t_near, t_far, n_steps, dtype=origins.dtype, device=origins.device)
    vals = fn(origins[..., None, :] + t[:, None] * dirs[..., None, :])
    if not isinstance(vals, torch.Tensor):
        raise TypeError(f"fn: expected to return a tensor, got {type(vals).__name__}")
    if vals.shape != (origins.shape[0], n_steps):
        raise ValueError(f"fn: expected values (R, n_steps) = {(origins.shape[0], n_steps)} at points (R, n_steps, 3), "
                         f"got {tuple(vals.shape)}")
    vals = vals - level  # (R, S)
    # NaN's sign is NaN, unequal to everything: without the mask every NaN step would be a "crossing"
    change = (torch.sign(vals[..., :-1]) != torch.sign(vals[..., 1:])) & ~torch.isnan(vals[..., :-1] + vals[..., 1:])
    hit = change.any(-1)
    first = torch.where(hit, change.float().argmax(-1), torch.zeros_like(hit, dtype=torch.long))
    return Bracket(t[first], t[first + 1], hit)


class ImplicitSurfaceDepth(torch.autograd.Function):
    """Ray depth d with f_theta(o + d w) = tau; backward by the notes' implicit differentiation

        d(d)/d(theta) = -(df/dp . w)^{-1} df/dtheta,   and likewise for o (df/dp) and w (d df/dp).

    forward(fn, level, depth, origins, dirs, *theta): ``depth`` is the solver's result (no graph).
    """

    @staticmethod
    def forward(ctx, fn, level, depth, origins, dirs, *theta):
        ctx.fn = fn
        ctx.save_for_backward(depth, origins, dirs, *theta)
        return depth.clone()

    @staticmethod
    def backward(ctx, grad_depth):
        depth, origins, dirs, *theta = ctx.saved_tensors
        with torch.enable_grad():
            o = origins.detach().requires_grad_(True)
            w = dirs.detach().requires_grad_(True)
            th = [t.detach().requires_grad_(True) for t in theta]
            p = o + depth.detach()[..., None] * w
            val = ctx.fn(p, *th)
            (grad_p,) = torch.autograd.grad(val.sum(), p, retain_graph=True)
            denom = (grad_p * w.detach()).sum(-1)  # df/dp . w
            grads = torch.autograd.grad(val, [o, w, *th], grad_outputs=-grad_depth / denom, allow_unused=True)
        grads = [None if g is None else g for g in grads]
        return (None, None, None, *grads)


def surface_depth(fn, origins: torch.Tensor, dirs: torch.Tensor, *theta: torch.Tensor, t_near: float,
                  t_far: float, n_steps: int = 64, n_iter: int = 12, level: float = 0.0):
    """DVR forward: march, then secant to the depth d with fn(o + d w, *theta) = level.

    fn: callable (points (R, 3), *theta) -> (R,). Returns SurfaceHit(depth (R,), hit (R,) bool); the depth is
    differentiable w.r.t. origins, dirs and theta through ``ImplicitSurfaceDepth``.
    """
    if not callable(fn):
        raise TypeError("fn: expected a callable")
    _rays(origins, dirs)
    _theta(theta, origins)
    check_int(n_iter, "n_iter", min=0)
    with torch.no_grad():
        f = lambda pts: fn(pts, *theta)  # noqa: E731
        t0, t1, hit = ray_march(f, origins, dirs, t_near, t_far, n_steps, level)
        ray = lambda t: fn(origins + t[..., None] * dirs, *theta) - level  # noqa: E731
        d = secant(ray, t0, t1, n_iter)
    return SurfaceHit(ImplicitSurfaceDepth.apply(fn, level, d, origins, dirs, *theta), hit)


def surface_depth_unrolled(fn, origins, dirs, *theta, t_near: float, t_far: float, n_steps: int = 64,
                           n_iter: int = 12, level: float = 0.0):
    """The same depth with autograd through every secant iteration (the reference for the backward)."""
    if not callable(fn):
        raise TypeError("fn: expected a callable")
    _rays(origins, dirs)
    _theta(theta, origins)
    check_int(n_iter, "n_iter", min=0)
    with torch.no_grad():
        t0, t1, hit = ray_march(lambda p: fn(p, *theta), origins, dirs, t_near, t_far, n_steps, level)
    d = secant(lambda t: fn(origins + t[..., None] * dirs, *theta) - level, t0, t1, n_iter)
    return SurfaceHit(d, hit)


def dvr_render(fn, color_fn, origins, dirs, *theta, t_near: float, t_far: float, n_steps: int = 64,
               n_iter: int = 12, level: float = 0.0):
    """DVR pixel colours I_u = c(p_hat), p_hat = o + d_hat w on the surface fn = level.

    color_fn: callable (R, 3) -> (R, 3) (its own parameters by closure). Returns DVRRender(color (R, 3), hit (R,)).
    """
    if not callable(color_fn):
        raise TypeError("color_fn: expected a callable")
    d, hit = surface_depth(fn, origins, dirs, *theta, t_near=t_near, t_far=t_far, n_steps=n_steps,
                           n_iter=n_iter, level=level)
    p = origins + d[..., None] * dirs
    color = color_fn(p)
    if not isinstance(color, torch.Tensor) or color.shape != p.shape:
        got = tuple(color.shape) if isinstance(color, torch.Tensor) else type(color).__name__
        raise ValueError(f"color_fn: expected colours (R, 3) = {tuple(p.shape)} at the surface points, got {got}")
    return DVRRender(color, hit)


def functional(module: nn.Module):
    """(fn, params) with fn(points, *params) = module(points) via torch.func.functional_call,
    so that a network's parameters can be handed to ``surface_depth`` as theta."""
    if not isinstance(module, nn.Module):
        raise TypeError("module: expected an nn.Module")
    names = [n for n, _ in module.named_parameters()]
    params = [p for _, p in module.named_parameters()]

    def fn(points, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (points,))

    return fn, params
