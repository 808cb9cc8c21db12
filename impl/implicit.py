"""Neural implicit representations: analytic SDFs, occupancy / DeepSDF networks, their losses,
mesh extraction, and differentiable volumetric rendering (DVR) with the secant method and the
implicit-differentiation backward pass.

Conventions: points ``x: (..., 3)``; a signed distance is negative inside, positive outside;
an occupancy is the probability of being inside.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from impl._checks import check_float, check_int, check_same, check_tensor

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
    check_float(offset, "offset")
    norm = torch.linalg.vector_norm(normal)
    if not norm > 0:
        raise ValueError("normal: must be non-zero")
    return (x @ normal + offset) / norm


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
    check_float(bound, "bound", min=0.0, min_open=True)
    axis = torch.linspace(-bound, bound, n, dtype=dtype, device=device)
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
    if ((occupancy < 0) | (occupancy > 1)).any():
        raise ValueError("occupancy: targets of a cross-entropy must lie in [0, 1]")
    return nn.functional.binary_cross_entropy_with_logits(logits, occupancy)


def sdf_loss(pred: torch.Tensor, target: torch.Tensor, clamp: float = 0.1) -> torch.Tensor:
    """DeepSDF's clamped L1 regression loss |clamp(pred) - clamp(target)|, mean."""
    check_tensor(pred, "pred")
    check_tensor(target, "target", shape=tuple(pred.shape))
    check_same(pred, "pred", target=target)
    check_float(clamp, "clamp", min=0.0, min_open=True)
    return (pred.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs().mean()


def spatial_gradient(f, x: torch.Tensor) -> torch.Tensor:
    """nabla_x f(x) by autograd (graph kept, so it can enter a loss). x: (..., 3) -> (..., 3)."""
    _points(x)
    if not callable(f):
        raise TypeError("f: expected a callable points -> values")
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = f(x)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    return g


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


def marching_tetrahedra(values: torch.Tensor, level: float = 0.0, spacing: float = 1.0):
    """Triangle mesh of the level set {values = level} of a grid, by marching tetrahedra
    (marching cubes with each cube cut into 6 tetrahedra, so the case table is 16 entries).

    values: (X, Y, Z) samples on a regular grid with ``spacing``; vertex coordinates are in the
    same index frame as scikit-image's ``marching_cubes`` (index * spacing). Vertices are linear
    interpolations along grid edges, as in marching cubes. Returns (verts (3F, 3), faces (F, 3)),
    faces oriented with normals pointing from below ``level`` to above it.
    """
    check_tensor(values, "values", ndim=3)
    if min(values.shape) < 2:
        raise ValueError(f"values: need at least 2 samples per axis, got {tuple(values.shape)}")
    check_float(level, "level")
    check_float(spacing, "spacing", min=0.0, min_open=True)
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
        return values.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=dev)
    verts = torch.cat(tris).reshape(-1, 3)
    faces = torch.arange(verts.shape[0], device=dev).reshape(-1, 3)
    return verts, faces


def mesh_area(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Total area of a triangle mesh. verts: (V, 3), faces: (F, 3) long."""
    check_tensor(verts, "verts", ndim=2)
    check_tensor(faces, "faces", ndim=2, floating=False)
    if faces.dtype not in (torch.int32, torch.int64) or faces.shape[-1] != 3:
        raise TypeError(f"faces: expected an integer (F, 3) tensor, got {faces.dtype} {tuple(faces.shape)}")
    tri = verts[faces]
    return 0.5 * torch.linalg.vector_norm(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1).sum()


# --------------------------------------------------------------------------- secant method


def secant_step(x0: torch.Tensor, x1: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
    """x2 = x1 - f(x1) (x1 - x0) / (f(x1) - f(x0)), the root of the line through (x0, f0), (x1, f1).

    Where f1 == f0 (converged, or a flat chord) x1 is kept.
    """
    for name, t in dict(x0=x0, x1=x1, f0=f0, f1=f1).items():
        check_tensor(t, name)
    df = f1 - f0
    safe = torch.where(df == 0, torch.ones_like(df), df)
    return torch.where(df == 0, x1, x1 - f1 * (x1 - x0) / safe)


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
    f0, f1 = fn(x0), fn(x1)
    for _ in range(n_iter):
        x2 = secant_step(xs[-2], xs[-1], f0, f1)
        xs.append(x2)
        f0, f1 = f1, fn(x2)
    return torch.stack(xs)


def secant(fn, x0: torch.Tensor, x1: torch.Tensor, n_iter: int = 8) -> torch.Tensor:
    """The secant method's last iterate for fn(x) = 0, elementwise."""
    return secant_iterates(fn, x0, x1, n_iter)[-1]


# --------------------------------------------------------------------------- DVR


def _rays(origins, dirs):
    _points(origins, "origins")
    check_tensor(dirs, "dirs", shape=tuple(origins.shape))
    check_same(origins, "origins", dirs=dirs)


def ray_march(fn, origins: torch.Tensor, dirs: torch.Tensor, t_near: float, t_far: float,
              n_steps: int = 64, level: float = 0.0):
    """March along p = o + t w at n_steps even depths and bracket the first crossing of fn = level.

    fn: callable (..., 3) -> (...). origins, dirs: (R, 3). Returns (t0, t1, hit): (R,), (R,), (R,) bool;
    fn - level changes sign between t0 and t1 on rays that hit.
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
    vals = fn(origins[..., None, :] + t[:, None] * dirs[..., None, :]) - level  # (R, S)
    change = torch.sign(vals[..., :-1]) != torch.sign(vals[..., 1:])
    hit = change.any(-1)
    first = torch.where(hit, change.float().argmax(-1), torch.zeros_like(hit, dtype=torch.long))
    return t[first], t[first + 1], hit


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

    fn: callable (points (R, 3), *theta) -> (R,). Returns (depth (R,), hit (R,) bool); the depth is
    differentiable w.r.t. origins, dirs and theta through ``ImplicitSurfaceDepth``.
    """
    if not callable(fn):
        raise TypeError("fn: expected a callable")
    _rays(origins, dirs)
    for i, t in enumerate(theta):
        check_tensor(t, f"theta[{i}]")
    check_int(n_iter, "n_iter", min=0)
    with torch.no_grad():
        f = lambda pts: fn(pts, *theta)  # noqa: E731
        t0, t1, hit = ray_march(f, origins, dirs, t_near, t_far, n_steps, level)
        ray = lambda t: fn(origins + t[..., None] * dirs, *theta) - level  # noqa: E731
        d = secant(ray, t0, t1, n_iter)
    return ImplicitSurfaceDepth.apply(fn, level, d, origins, dirs, *theta), hit


def surface_depth_unrolled(fn, origins, dirs, *theta, t_near: float, t_far: float, n_steps: int = 64,
                           n_iter: int = 12, level: float = 0.0):
    """The same depth with autograd through every secant iteration (the reference for the backward)."""
    with torch.no_grad():
        t0, t1, hit = ray_march(lambda p: fn(p, *theta), origins, dirs, t_near, t_far, n_steps, level)
    d = secant(lambda t: fn(origins + t[..., None] * dirs, *theta) - level, t0, t1, n_iter)
    return d, hit


def dvr_render(fn, color_fn, origins, dirs, *theta, t_near: float, t_far: float, n_steps: int = 64,
               n_iter: int = 12, level: float = 0.0):
    """DVR pixel colours I_u = c(p_hat), p_hat = o + d_hat w on the surface fn = level.

    color_fn: callable (R, 3) -> (R, 3) (its own parameters by closure). Returns (colors (R, 3), hit (R,)).
    """
    if not callable(color_fn):
        raise TypeError("color_fn: expected a callable")
    d, hit = surface_depth(fn, origins, dirs, *theta, t_near=t_near, t_far=t_far, n_steps=n_steps,
                           n_iter=n_iter, level=level)
    p = origins + d[..., None] * dirs
    return color_fn(p), hit


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
