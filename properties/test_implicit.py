"""Neural implicit representations: analytic SDFs, networks, losses, mesh extraction, secant, DVR."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import implicit as im
from spec.testing import fit_exponent, generator, seeds

F64 = torch.float64


def _rotation(g, dtype=F64, device="cpu"):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype=dtype, device=device)


def _unit(n, g, dtype=F64):
    v = torch.randn(n, 3, generator=g, dtype=dtype)
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _torus_param(u, v, R, r):
    return torch.stack([(R + r * torch.cos(v)) * torch.cos(u), (R + r * torch.cos(v)) * torch.sin(u), r * torch.sin(v)], -1)


def _box_surface(n, g, h):
    """Uniform points on the faces of the box [-h, h]."""
    p = (torch.rand(n, 3, generator=g, dtype=F64) * 2 - 1) * h
    axis = torch.randint(0, 3, (n,), generator=g)
    sign = torch.randint(0, 2, (n,), generator=g).to(F64) * 2 - 1
    p[torch.arange(n), axis] = sign * h[axis]
    return p


# --------------------------------------------------------------------------- representations


@pytest.mark.claim("implicit.voxel-cubic-cost")
@pytest.mark.claim("implicit.sdf-grid-cubic")
def test_grid_memory_is_cubic(record_property):
    sizes = [8, 16, 32, 48]
    cells = [im.sdf_sphere(im.grid_points(n, 1.0), 0.5).numel() for n in sizes]
    assert cells == [n**3 for n in sizes]
    p = fit_exponent(sizes, cells)
    assert abs(p - 3) < 1e-9
    record_property("evidence", f"stored values over n={sizes}: fitted exponent {p:.3f}")


def _icosphere(levels):
    """The icosahedron subdivided ``levels`` times (each triangle into 4), vertices projected to the unit
    sphere: an inscribed convex polyhedron with 20 * 4^levels faces, outward oriented."""
    t = (1 + 5**0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]
    verts = [np.array(p, dtype=float) / np.linalg.norm(p) for p in v]
    for _ in range(levels):
        mid, nf = {}, []

        def m(a, b):
            if (b, a) in mid:
                return mid[(b, a)]
            p = verts[a] + verts[b]
            verts.append(p / np.linalg.norm(p))
            mid[(a, b)] = len(verts) - 1
            return mid[(a, b)]

        for a, b, c in f:
            ab, bc, ca = m(a, b), m(b, c), m(c, a)
            nf += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = nf
    return torch.tensor(np.array(verts)), torch.tensor(f)


def _segment_hits_triangle(p, q, tri):
    """Moller-Trumbore: does the open segment p -> q cross the interior of triangle tri (3, 3)?"""
    e1, e2, d = tri[1] - tri[0], tri[2] - tri[0], q - p
    h = torch.linalg.cross(d, e2)
    a = e1 @ h
    if abs(a) < 1e-12:
        return False
    s = p - tri[0]
    u = (s @ h) / a
    qv = torch.linalg.cross(s, e1)
    v = (d @ qv) / a
    t = (e2 @ qv) / a
    return bool(0 < u < 1 and 0 < v < 1 and u + v < 1 and 0 < t < 1)


@pytest.mark.claim("implicit.mesh-limitations", role="refutes")
def test_a_convex_mesh_has_no_self_intersection():
    """'Meshes have self-intersections', read literally, fails for the icosphere: it is convex (every vertex
    lies on the inner side of every face's plane), so no two of its faces cross."""
    verts, faces = _icosphere(2)
    tri = verts[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    side = (verts[None, :, :] - tri[:, None, 0]) @ normal[..., None]  # (F, V, 1)
    assert (side <= 1e-12).all()
    # and directly: no edge of the mesh crosses the interior of a face
    edges = torch.unique(torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(-1).values, dim=0)
    for a, b in edges[::11].tolist():
        for k in range(0, faces.shape[0], 7):
            if a in faces[k] or b in faces[k]:
                continue
            assert not _segment_hits_triangle(verts[a], verts[b], verts[faces[k]])


@pytest.mark.claim("implicit.mesh-limitations", role="corrects")
def test_mesh_granularity_error_falls_like_one_over_faces(record_property):
    """An inscribed polyhedral sphere with N faces is off the sphere by up to 1 - (distance of its face planes
    from the centre), which falls like 1/N (fitted exponent -1): halving the error needs twice the faces.
    And a list of triangles can self-intersect, where a level set {f = 0} cannot, since each point has one
    value of f."""
    counts, errors = [], []
    for levels in range(1, 5):
        verts, faces = _icosphere(levels)
        tri = verts[faces]
        normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        plane = (tri[:, 0] * normal).sum(-1) / torch.linalg.vector_norm(normal, dim=-1)
        counts.append(faces.shape[0])
        errors.append((1 - plane.min()).item())
    p = fit_exponent(counts, errors)
    assert abs(p + 1) < 0.05
    # nothing in a face list stops two faces crossing: a flat triangle and one standing through it
    verts = torch.tensor([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0.5, 0.5, -1], [0.5, 0.5, 1], [3, 3, 0]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [3, 5, 4]])
    assert _segment_hits_triangle(verts[3], verts[4], verts[faces[0]])
    record_property("evidence", f"icosphere faces {counts}: max distance to the sphere {[f'{e:.2e}' for e in errors]}, "
                                f"fitted exponent {p:.3f} in N")


@pytest.mark.claim("implicit.level-set-surface")
def test_zero_level_set_is_the_surface():
    g = generator(0)
    u = torch.rand(200, generator=g, dtype=F64) * 2 * math.pi
    v = torch.rand(200, generator=g, dtype=F64) * 2 * math.pi
    h = torch.tensor([0.3, 0.5, 0.7], dtype=F64)
    n = _unit(200, g)
    normal = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    plane_pts = torch.randn(200, 3, generator=g, dtype=F64)
    plane_pts = plane_pts - ((plane_pts @ normal + 0.3) / normal.dot(normal))[:, None] * normal
    on = {
        "sphere": im.sdf_sphere(0.8 * n, 0.8),
        "box": im.sdf_box(_box_surface(200, g, h), h),
        "torus": im.sdf_torus(_torus_param(u, v, 1.0, 0.3), 1.0, 0.3),
        "plane": im.sdf_plane(plane_pts, normal, 0.3),
    }
    for name, vals in on.items():
        assert vals.abs().max() < 1e-12, name
    # off the surface by eps along the normal, the value is exactly +-eps (not zero)
    for eps in (1e-3, -0.2):
        torch.testing.assert_close(im.sdf_sphere((0.8 + eps) * n, 0.8), torch.full((200,), eps, dtype=F64))
        ring = torch.stack([torch.cos(u) * torch.cos(v), torch.sin(u) * torch.cos(v), torch.sin(v)], -1)
        torch.testing.assert_close(im.sdf_torus(_torus_param(u, v, 1.0, 0.3) + eps * ring, 1.0, 0.3),
                                   torch.full((200,), eps, dtype=F64))
    # the box, off its surface: moved out along a face normal by eps the nearest surface point is the start
    # (the box is convex), so the value is +eps; strictly inside, minus the distance to the nearest face plane
    surf = _box_surface(200, g, h)
    outward = torch.where(surf.abs() == h, torch.sign(surf), torch.zeros_like(surf))
    face = outward.abs().sum(-1) == 1  # on exactly one face: the outward normal is that face's
    torch.testing.assert_close(im.sdf_box(surf[face] + 0.05 * outward[face], h), torch.full((int(face.sum()),), 0.05, dtype=F64))
    inner = (torch.rand(200, 3, generator=g, dtype=F64) * 2 - 1) * h * 0.99
    depth = (h - inner.abs()).min(-1).values
    assert (depth > 0).all()
    torch.testing.assert_close(im.sdf_box(inner, h), -depth)


@pytest.mark.claim("implicit.eikonal-property")
def test_eikonal_property_of_true_sdfs(device, dtype):
    g = generator(1)
    x = ((torch.rand(500, 3, generator=g, dtype=F64) * 4 - 2)).to(device=device, dtype=dtype)
    h = torch.tensor([0.3, 0.5, 0.7], dtype=dtype, device=device)
    normal = torch.tensor([1.0, -2.0, 0.5], dtype=dtype, device=device)
    fns = {
        "sphere": lambda p: im.sdf_sphere(p, 0.8),
        "box": lambda p: im.sdf_box(p, h),
        "torus": lambda p: im.sdf_torus(p, 1.0, 0.3),
        "plane": lambda p: im.sdf_plane(p, normal, 0.3),
    }
    # float32: the gradient norm is a sum of 3 squares of O(1) terms, a few ulps (6e-8) off 1.
    atol = 1e-12 if dtype == F64 else 1e-6
    for name, f in fns.items():
        gn = torch.linalg.vector_norm(im.spatial_gradient(f, x), dim=-1)
        assert (gn - 1).abs().max() < atol, name


@pytest.mark.claim("implicit.invertible-transform-exact")
@settings(max_examples=10)
@given(seed=seeds())
def test_rigid_transform_of_sdf_is_exact(seed):
    g = generator(seed)
    R, t = _rotation(g), torch.randn(3, generator=g, dtype=F64)
    x = torch.randn(300, 3, generator=g, dtype=F64) * 1.5
    # sphere: moved SDF equals the closed form |x - t| - r (rotation-invariant shape)
    moved = im.sdf_sphere(im.rigid_transform_points(x, R, t), 0.7)
    torch.testing.assert_close(moved, torch.linalg.vector_norm(x - t, dim=-1) - 0.7)
    # torus: points of the moved parametric surface are on the moved zero set, and the moved SDF is eikonal
    u = torch.rand(300, generator=g, dtype=F64) * 2 * math.pi
    v = torch.rand(300, generator=g, dtype=F64) * 2 * math.pi
    surf = _torus_param(u, v, 1.0, 0.3) @ R.T + t
    assert im.sdf_torus(im.rigid_transform_points(surf, R, t), 1.0, 0.3).abs().max() < 1e-12
    grad = im.spatial_gradient(lambda p: im.sdf_torus(im.rigid_transform_points(p, R, t), 1.0, 0.3), x)
    assert (torch.linalg.vector_norm(grad, dim=-1) - 1).abs().max() < 1e-12
    # general invertible affine map A: the zero set is still carried over exactly
    A = torch.randn(3, 3, generator=g, dtype=F64) + 3 * torch.eye(3, dtype=F64)
    surf_a = _torus_param(u, v, 1.0, 0.3) @ A.T + t
    back = torch.linalg.solve(A, (surf_a - t).T).T
    assert im.sdf_torus(back, 1.0, 0.3).abs().max() < 1e-9


@pytest.mark.claim("implicit.invertible-transform-exact")
def test_rigid_transform_distance_against_brute_force(record_property):
    """|f(R^T (x - t))| is the distance to the moved torus: compare with a brute-force minimum over a
    dense sampling of the moved surface, which over-estimates by at most half the sample spacing."""
    g = generator(3)
    R, t = _rotation(g), torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    k = 600
    u, v = torch.meshgrid(torch.linspace(0, 2 * math.pi, k, dtype=F64), torch.linspace(0, 2 * math.pi, k, dtype=F64),
                          indexing="ij")
    surf = _torus_param(u.flatten(), v.flatten(), 1.0, 0.3) @ R.T + t
    x = torch.randn(6, 3, generator=g, dtype=F64) + t
    exact = im.sdf_torus(im.rigid_transform_points(x, R, t), 1.0, 0.3).abs()
    brute = torch.cdist(x, surf).min(dim=1).values
    spacing = 2 * math.pi * 1.3 / (k - 1)
    assert (brute >= exact - 1e-12).all()
    assert (brute <= exact + spacing).all()
    record_property("evidence", f"max brute-force excess {float((brute - exact).max()):.2e} <= spacing {spacing:.2e}")


# --------------------------------------------------------------------------- networks and losses


@pytest.mark.claim("implicit.occupancy-network")
@pytest.mark.claim("implicit.deepsdf")
@pytest.mark.claim("implicit.conditioned-on-latent")
def test_networks_outputs_and_conditioning(device):
    occ = im.OccupancyNetwork(latent_dim=4, hidden=16, n_layers=2).to(device)
    sdf = im.DeepSDF(latent_dim=4, hidden=16, n_layers=2).to(device)
    x = torch.randn(2, 50, 3, device=device) * 3
    z = torch.randn(2, 4, device=device)
    p = occ.probability(x, z)
    assert p.shape == (2, 50) and ((p >= 0) & (p <= 1)).all()
    s = sdf(x, z)
    assert s.shape == (2, 50) and s.dtype == x.dtype
    # the code changes the function: same points, other code, other values
    z2 = z + 1.0
    assert (sdf(x, z2) - s).abs().max() > 1e-4
    assert (occ(x, z2) - occ(x, z)).abs().max() > 1e-4


def _small_field(cls, seed):
    """A float64 conditioned field ``cls(latent_dim=2, hidden=8, n_layers=2)`` (weights from torch's seed 0)
    with 40 points in [-1, 1]^3 and a latent code for each of 2 shapes: x: (2, 40, 3), z: (2, 2)."""
    torch.manual_seed(0)
    net = cls(latent_dim=2, hidden=8, n_layers=2).double()
    g = generator(seed)
    x, z = torch.rand(2, 40, 3, generator=g, dtype=F64) * 2 - 1, torch.randn(2, 2, generator=g, dtype=F64)
    return net, x, z


@pytest.mark.claim("implicit.deepsdf")
def test_deepsdf_output_is_an_unsquashed_real():
    """A signed distance takes both signs and any magnitude: DeepSDF's output is affine in its last layer (shifting
    that layer's bias by c shifts every output by exactly c), so it can be driven below and above 0, unlike a
    probability."""
    net, x, z = _small_field(im.DeepSDF, 31)
    with torch.no_grad():
        base = net(x, z)
        for c in (-10.0, 10.0):
            net.body[-1].bias += c
            shifted = net(x, z)
            net.body[-1].bias -= c
            torch.testing.assert_close(shifted, base + c)  # O(10) values: rounding of a few ulps of 10
            assert (torch.sign(shifted) == math.copysign(1.0, c)).all()


@pytest.mark.claim("implicit.occupancy-network")
def test_occupancy_probability_is_the_sigmoid_of_the_logit():
    """The occupancy network's probability lies in [0, 1] for any logit: a last-layer bias of +20 (-20) makes
    every point inside (outside) with probability within e^-15 of 1 (0), never beyond, and the probability
    rises with the logit, so a larger logit means more likely inside."""
    net, x, z = _small_field(im.OccupancyNetwork, 32)
    with torch.no_grad():
        logit = net(x, z)
        assert logit.abs().max() < 5  # so that +-20 moves every logit past +-15
        for c, limit in ((-20.0, 0.0), (20.0, 1.0)):
            net.body[-1].bias += c
            p = net.probability(x, z)
            net.body[-1].bias -= c
            assert ((p >= 0) & (p <= 1)).all()
            assert (p - limit).abs().max() < math.exp(-15)
        p = net.probability(x, z).flatten()
        order = logit.flatten().argsort()
        assert (p[order].diff() >= 0).all() and ((p > 0) & (p < 1)).all()


@pytest.mark.claim("implicit.continuous-resolution-memory")
def test_network_lipschitz_resolution_free_memory_and_topology():
    net = im.DeepSDF(latent_dim=0, hidden=32, n_layers=3).double()
    z = torch.zeros(1, 0, dtype=F64)
    # softplus has slope <= 1, so |f(x) - f(y)| <= prod ||W_l||_2 |x - y|
    lip = math.prod(torch.linalg.matrix_norm(m.weight, ord=2).item() for m in net.modules() if isinstance(m, torch.nn.Linear))
    g = generator(4)
    x, y = torch.randn(1, 400, 3, generator=g, dtype=F64), torch.randn(1, 400, 3, generator=g, dtype=F64)
    y = x + 1e-3 * y
    with torch.no_grad():
        diff = (net(x, z) - net(y, z)).abs()
    assert (diff <= lip * torch.linalg.vector_norm(x - y, dim=-1) + 1e-15).all()
    n_params = sum(p.numel() for p in net.parameters())
    # one network, queried at any resolution; the memory of a grid grows as n^3
    for n in (8, 16, 32):
        pts = im.grid_points(n, 1.0).reshape(1, -1, 3)
        with torch.no_grad():
            vals = net(pts, z)
        assert vals.numel() == n**3 and sum(p.numel() for p in net.parameters()) == n_params
    # any topology: the same machinery meshes a genus-0 sphere (Euler characteristic 2) and a genus-1 torus (0)
    n, b = 20, 1.6
    h = 2 * b / (n - 1)
    grid = im.grid_points(n, b) + 0.013  # off-grid offset: no sample exactly on the surface
    for f, chi in ((lambda p: im.sdf_sphere(p, 1.0), 2), (lambda p: im.sdf_torus(p, 1.0, 0.35), 0)):
        mesh = im.marching_cubes(f(grid), 0.0, h)
        V, E, F = _closed_oriented(mesh.faces, mesh.verts.shape[0])
        assert V - E + F == chi


@pytest.mark.claim("implicit.watertight-ce-loss", role="refutes")
def test_cross_entropy_with_sdf_targets_is_unbounded(record_property):
    """With an SDF target (negative inside) the cross-entropy decreases without bound."""
    target = torch.tensor([-0.3], dtype=F64)
    logits = torch.tensor([-10.0, -100.0, -1000.0], dtype=F64)
    losses = [torch.nn.functional.binary_cross_entropy_with_logits(l.reshape(1), target).item() for l in logits]
    assert losses[0] > losses[1] > losses[2] and losses[2] < -250
    record_property("evidence", f"BCE(logit, target=-0.3) at logits -10, -100, -1000: {losses}")
    with pytest.raises(ValueError, match="occupancy"):
        im.occupancy_loss(torch.zeros(1, dtype=F64), target)


@pytest.mark.claim("implicit.watertight-ce-loss", role="corrects")
@settings(max_examples=10)
@given(seed=seeds())
def test_cross_entropy_fits_occupancy_and_l1_fits_sdf(seed):
    g = generator(seed)
    y = torch.rand(20, generator=g, dtype=F64) * 0.98 + 0.01
    # BCE's gradient in the logit is sigmoid(l) - y: zero exactly at l = logit(y), the target probability
    l0 = torch.logit(y).requires_grad_(True)
    (grad,) = torch.autograd.grad(im.occupancy_loss(l0, y), l0)
    assert grad.abs().max() < 1e-15
    for shift in (-0.5, 0.5):
        assert im.occupancy_loss(l0.detach() + shift, y) > im.occupancy_loss(l0.detach(), y)
    # manual BCE formula
    p = torch.sigmoid(l0.detach())
    torch.testing.assert_close(im.occupancy_loss(l0.detach(), y), -(y * p.log() + (1 - y) * (1 - p).log()).mean())
    # clamped L1 on SDF targets: zero exactly at the target, positive elsewhere
    s = (torch.rand(20, generator=g, dtype=F64) - 0.5) * 0.15
    assert im.sdf_loss(s, s) == 0
    torch.testing.assert_close(im.sdf_loss(s + 0.01, s, clamp=1.0), torch.tensor(0.01, dtype=F64))
    # beyond the clamp distance, errors do not count (DeepSDF's clamped L1)
    assert im.sdf_loss(torch.full((3,), 0.5, dtype=F64), torch.full((3,), 0.2, dtype=F64), clamp=0.1) == 0
    # ground-truth occupancy from the SDF: 1 inside, 0 outside
    torch.testing.assert_close(im.occupancy_from_sdf(torch.tensor([-0.2, 0.3], dtype=F64)),
                               torch.tensor([1.0, 0.0], dtype=F64))


@pytest.mark.claim("implicit.point-cloud-loss", role="refutes")
def test_point_cloud_loss_with_one_surface_term(record_property):
    """As printed the surface term is |f(x_i)|^2 for one i: the SDF of any sphere through that single
    sample (centre moved, radius adjusted) has zero loss, yet misses every other sample of the surface."""
    g = generator(5)
    surface = 0.6 * _unit(64, g)
    space = torch.rand(256, 3, generator=g, dtype=F64) * 2 - 1
    x_i = surface[:1]
    centre = torch.tensor([0.3, 0.0, 0.0], dtype=F64)
    other = lambda p: im.sdf_sphere(p - centre, float(torch.linalg.vector_norm(x_i - centre)))  # noqa: E731
    assert im.point_cloud_loss(other, x_i, space) < 1e-28  # the loss as printed (one term) is zero ...
    miss = other(surface).abs().max().item()
    assert miss > 0.1  # ... for a surface that misses the samples
    assert im.point_cloud_loss(other, surface, space) > 1e-3  # the mean over the samples sees it
    record_property("evidence", f"one-term loss 0 for a sphere through x_1 that misses other samples by {miss:.2f}")


@pytest.mark.claim("implicit.point-cloud-loss", role="corrects")
def test_point_cloud_loss_values():
    g = generator(5)
    surface = 0.6 * _unit(256, g)
    space = torch.rand(512, 3, generator=g, dtype=F64) * 2 - 1
    true = lambda p: im.sdf_sphere(p, 0.6)  # noqa: E731
    assert im.point_cloud_loss(true, surface, space, lam=0.1) < 1e-28
    # the loss is even in f: it cannot tell inside from outside
    torch.testing.assert_close(im.point_cloud_loss(lambda p: -true(p) + 0.01, surface, space),
                               im.point_cloud_loss(lambda p: true(p) - 0.01, surface, space))
    # the trivial f = 0 fits the points but pays the eikonal term: loss = lam exactly
    zero = lambda p: 0.0 * p.sum(-1)  # noqa: E731
    torch.testing.assert_close(im.point_cloud_loss(zero, surface, space, lam=0.1), torch.tensor(0.1, dtype=F64))
    # the zero-loss set is not unique: the (unsigned) distance to the samples themselves has f(x_i) = 0 and
    # unit gradient wherever a single sample is nearest (almost everywhere), yet it is not the sphere's SDF
    def to_samples(p):
        return torch.cdist(p, surface, compute_mode="donot_use_mm_for_euclid_dist").min(dim=-1).values

    assert im.point_cloud_loss(to_samples, surface, space, lam=0.1) < 1e-20
    assert (to_samples(space) - true(space).abs()).abs().max() > 0.05
    # f = 2 (|x| - 0.5): surface residual (2 * 0.1)^2 each, ||grad|| = 2 everywhere -> (2 - 1)^2
    f2 = lambda p: 2 * (torch.linalg.vector_norm(p, dim=-1) - 0.5)  # noqa: E731
    torch.testing.assert_close(im.point_cloud_loss(f2, surface, space, lam=0.3), torch.tensor(0.04 + 0.3, dtype=F64))
    # f = a (|x| - 0.6): zero on the points, ||grad|| = a -> loss = lam (a - 1)^2 (a squared, not absolute,
    # deviation) and d loss / da = 2 lam (a - 1): the eikonal term must pass gradients to the parameters
    a = torch.tensor(3.0, dtype=F64, requires_grad=True)
    loss = im.point_cloud_loss(lambda p: a * (torch.linalg.vector_norm(p, dim=-1) - 0.6), surface, space, lam=0.25)
    torch.testing.assert_close(loss.detach(), torch.tensor(0.25 * 4, dtype=F64))
    (da,) = torch.autograd.grad(loss, a)
    torch.testing.assert_close(da, torch.tensor(2 * 0.25 * 2, dtype=F64))


# --------------------------------------------------------------------------- mesh extraction


def _closed_oriented(faces, n_verts):
    """(V, E, F) of a mesh after checking that it is closed and consistently oriented: every directed
    edge occurs once and its reverse once, so every edge is shared by exactly two faces, traversed in
    opposite directions."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key, rev = e[:, 0] * n_verts + e[:, 1], e[:, 1] * n_verts + e[:, 0]
    assert torch.unique(key).numel() == key.numel(), "a directed edge occurs twice"
    assert torch.isin(rev, key).all(), "an edge is on the boundary (no opposite face)"
    used = torch.unique(faces).numel()
    return used, key.numel() // 2, faces.shape[0]


def _signed_volume(verts, faces):
    tri = verts[faces]
    return (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum() / 6


def _closed_random_field(shape, g, dtype=F64):
    """Gaussian noise (every kind of cube, ambiguous faces included) with the grid's border outside."""
    f = torch.randn(*shape, generator=g, dtype=dtype)
    f[[0, -1]] = 1.0
    f[:, [0, -1]] = 1.0
    f[:, :, [0, -1]] = 1.0
    return f


def _smooth_sdf(n, b, seed):
    """A random smooth closed surface: a sphere of radius 0.8 with a few low Fourier modes added."""
    g = generator(seed)
    p = im.grid_points(n, b)
    k = torch.randint(-2, 3, (6, 3), generator=g).to(F64)
    a = torch.randn(6, generator=g, dtype=F64) * 0.03
    ph = torch.rand(6, generator=g, dtype=F64) * 2 * math.pi
    return im.sdf_sphere(p, 0.8) + (a * torch.cos(p @ k.T * math.pi + ph)).sum(-1)


def _distinct_keys():
    """The table's keys case * 64 + bits whose bits lie on ambiguous faces (two diagonal corners inside),
    after checking that every other key repeats one of them: the decider is read only where it matters."""
    keys = []
    for case in range(256):
        amb = 0
        for f, quad in enumerate(im._MC_FACES):
            s = [case >> q & 1 for q in quad]
            amb |= (s[0] == s[2] != s[1] == s[3]) << f
        keys += [case * 64 + b for b in range(64) if b & ~amb == 0]
        src = case * 64 + (torch.arange(64) & amb)
        assert (im.MC_TRIANGLES[case * 64: case * 64 + 64] == im.MC_TRIANGLES[src]).all()
        assert (im.MC_TRIANGLE_COUNT[case * 64: case * 64 + 64] == im.MC_TRIANGLE_COUNT[src]).all()
    return keys


def _table_triangles(key):
    return [tuple(t) for t in im.MC_TRIANGLES[key, : im.MC_TRIANGLE_COUNT[key]].tolist()]


@pytest.mark.claim("implicit.inference-marching-cubes")
def test_marching_cubes_table_loops_close_on_the_cube():
    """Every entry of the generated table (256 cases x the decider bits of their ambiguous faces): its
    triangles form a surface whose boundary is made of segments on the cube's faces, each crossed edge
    starting one boundary segment and ending one; no interior edge joins two vertices on one face (the
    neighbour could draw it too); only crossed edges (and the cube's own centroid vertex) are used."""
    faces_of = [{e for e, (_, lo, hi) in enumerate(im._MC_EDGES) if lo in f and hi in f} for f in im._MC_FACES]
    on_face = lambda a, b: any(a in s and b in s for s in faces_of)  # noqa: E731
    assert (im.MC_TRIANGLE_COUNT[0:64] == 0).all() and (im.MC_TRIANGLE_COUNT[255 * 64:] == 0).all()
    for key in _distinct_keys():
        case = key // 64
        crossed = {e for e, (_, lo, hi) in enumerate(im._MC_EDGES) if (case >> lo & 1) != (case >> hi & 1)}
        count = int(im.MC_TRIANGLE_COUNT[key])
        assert (im.MC_TRIANGLES[key, count:] == -1).all()
        directed = [(t[i], t[(i + 1) % 3]) for t in _table_triangles(key) for i in range(3)]
        assert len(set(directed)) == len(directed)
        boundary = [(a, b) for a, b in directed if (b, a) not in directed]
        interior = [(a, b) for a, b in directed if (b, a) in directed]
        assert sorted(a for a, _ in boundary) == sorted(crossed) == sorted(b for _, b in boundary)
        assert all(a < 12 and b < 12 and on_face(a, b) for a, b in boundary)
        assert not any(a < 12 and b < 12 and on_face(a, b) for a, b in interior)
        assert {v for t in _table_triangles(key) for v in t} - crossed <= {12}


@pytest.mark.claim("implicit.inference-marching-cubes")
def test_marching_cubes_table_complement_and_face_rule():
    """Complement symmetry: flipping every corner (inside <-> outside) gives the same triangles reversed.
    Face rule: the segments a case draws on a face depend only on that face's four signs and its decider
    bit, so two cubes sharing a face always agree there. Orientation: on a face seen from outside the
    cube, each segment has the inside corners on its right."""
    canon = lambda ts: {min((t, t[1:] + t[:1], t[2:] + t[:2])) for t in ts}  # noqa: E731
    seen = {}
    for key in _distinct_keys():
        case, bits = divmod(key, 64)
        comp = (255 - case) * 64 + bits
        assert canon(_table_triangles(key)) == canon([(a, c, b) for a, b, c in _table_triangles(comp)])
        directed = {(t[i], t[(i + 1) % 3]) for t in _table_triangles(key) for i in range(3)}
        for f, quad in enumerate(im._MC_FACES):
            mine = {e for e, (_, lo, hi) in enumerate(im._MC_EDGES) if lo in quad and hi in quad}
            segs = frozenset((a, b) for a, b in directed if a in mine and b in mine and (b, a) not in directed)
            signature = (f, tuple(case >> q & 1 for q in quad), bits >> f & 1)
            assert seen.setdefault(signature, segs) == segs
            for a, b in segs:  # the segment's start edge is entered (outside -> inside) walking the face
                k = [i for i in range(4) if {quad[i], quad[(i + 1) % 4]} == set(im._MC_EDGES[a][1:])][0]
                assert not case >> quad[k] & 1 and case >> quad[(k + 1) % 4] & 1


@pytest.mark.claim("implicit.inference-marching-cubes")
@pytest.mark.parametrize("outside, joined", [(0.5, True), (2.0, False)])
def test_marching_cubes_asymptotic_decider(outside, joined):
    """One cube whose face x = 0 has two diagonal corners at -1 and two at ``outside``; the far face is
    outside. The bilinear interpolant on that face has its saddle at (a0 a2 - a1 a3) / (a0 + a2 - a1 - a3):
    below the level the two inside corners are joined through the face (one surface piece), above it they
    are separated (two pieces)."""
    v = torch.full((2, 2, 2), 3.0, dtype=F64)
    v[0, 0, 0] = v[0, 1, 1] = -1.0
    v[0, 0, 1] = v[0, 1, 0] = outside
    saddle = (1.0 - outside**2) / (-2.0 - 2 * outside)
    assert (saddle < 0) == joined
    mesh = im.marching_cubes(v)
    # connected components of the faces (sharing a vertex)
    parent = list(range(mesh.verts.shape[0]))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b, c in mesh.faces.tolist():
        parent[root(b)] = root(a)
        parent[root(c)] = root(a)
    pieces = len({root(i) for i in mesh.faces.flatten().tolist()})
    assert pieces == (1 if joined else 2)


@pytest.mark.claim("implicit.inference-marching-cubes")
@settings(max_examples=10)
@given(seed=seeds(), negate=st.booleans())
def test_marching_cubes_watertight_on_random_fields(seed, negate):
    """Noise fields (every case, ambiguous faces, the centroid vertices): closed, consistently oriented,
    indexed (each crossed grid edge one vertex), each face inside one cube, and the negated field gives the
    same triangles reversed."""
    g = generator(seed)
    f = _closed_random_field((9, 10, 11), g)
    f = -f if negate else f
    mesh = im.marching_cubes(f)
    V, E, F = _closed_oriented(mesh.faces, mesh.verts.shape[0])
    assert V == mesh.verts.shape[0]  # no unused vertex
    inside = f < 0
    crossed = sum(int((inside.narrow(a, 0, s - 1) ^ inside.narrow(a, 1, s - 1)).sum()) for a, s in enumerate(f.shape))
    n_centre = V - crossed
    assert 0 <= n_centre < F
    tri = mesh.verts[mesh.faces]
    cell = torch.floor(tri.min(1).values)
    assert (tri.max(1).values - cell <= 1 + 1e-12).all()  # one cube holds each face
    flipped = im.marching_cubes(-f)
    torch.testing.assert_close(flipped.verts, mesh.verts, rtol=0, atol=1e-14)
    torch.testing.assert_close(flipped.faces, mesh.faces[:, [0, 2, 1]])
    # normals point from below the level to above it: the signed volume is that of the below-level pockets
    # (positive); negated, the border is below the level and the pockets above it (negative)
    vol = _signed_volume(mesh.verts, mesh.faces)
    assert vol < 0 if negate else vol > 0


def _match(ours, theirs):
    """Nearest-neighbour distances both ways between vertex sets."""
    from scipy.spatial import cKDTree

    d1, _ = cKDTree(theirs).query(ours)
    d2, _ = cKDTree(ours).query(theirs)
    return d1, d2


@pytest.mark.claim("implicit.inference-marching-cubes")
@pytest.mark.parametrize("shape", ["sphere", "torus", "smooth"])
def test_marching_cubes_matches_skimage(shape, record_property):
    """Against scikit-image's marching_cubes on the same grid and spacing: the same edge-crossing vertices
    (to 1e-6; scikit-image interpolates in float32), the same number of faces, areas within 1e-3, closed,
    oriented, the analytic volume to discretisation accuracy, and the genus by Euler's formula."""
    from skimage.measure import marching_cubes, mesh_surface_area

    n, b = 40, 1.2
    h = 2 * b / (n - 1)
    grid = im.grid_points(n, b) + 1e-3  # no sample exactly on the level
    if shape == "sphere":
        vals, chi, volume = im.sdf_sphere(grid, 0.8), 2, 4 / 3 * math.pi * 0.8**3
    elif shape == "torus":
        vals, chi, volume = im.sdf_torus(grid, 0.7, 0.3), 0, 2 * math.pi**2 * 0.7 * 0.3**2
    else:
        vals, chi, volume = _smooth_sdf(n, b, 3), 2, None
    spacing = (h, 1.1 * h, 0.9 * h)  # unequal, to pin the axis order
    mesh = im.marching_cubes(vals, 0.0, spacing)
    sk_v, sk_f, _, _ = marching_cubes(vals.numpy(), 0.0, spacing=spacing)
    d1, d2 = _match(mesh.verts.numpy(), sk_v.astype(np.float64))
    assert d1.max() < 1e-6 and d2.max() < 1e-6 and mesh.verts.shape[0] == sk_v.shape[0]
    assert mesh.faces.shape[0] == sk_f.shape[0]
    V, E, F = _closed_oriented(mesh.faces, mesh.verts.shape[0])
    assert V - E + F == chi
    area, sk_area = im.mesh_area(mesh.verts, mesh.faces).item(), mesh_surface_area(sk_v, sk_f)
    # both triangulate the same crossing polygons; only the diagonals of non-planar ones may differ
    assert abs(area - sk_area) < 1e-3 * sk_area
    vol = _signed_volume(mesh.verts, mesh.faces).item()
    sk_vol = _signed_volume(torch.from_numpy(sk_v.astype(np.float64)), torch.from_numpy(sk_f.astype(np.int64))).item()
    assert abs(abs(vol) - abs(sk_vol)) < 1e-3 * abs(sk_vol) and vol > 0
    if volume is not None:
        # interpolating a convex-ish surface from grid edges: O(h^2) relative error, constant < 1 here
        assert abs(vol - volume) < (h / 0.3) ** 2 * volume
    record_property("evidence", f"{shape}: {V} verts (= skimage, max distance {max(d1.max(), d2.max()):.1e}), "
                                f"{F} faces (= skimage), area {area:.5f} vs {sk_area:.5f}, volume {vol:.5f}"
                                + (f" vs analytic {volume:.5f}" if volume else "") + f", V - E + F = {chi}")


@pytest.mark.claim("implicit.inference-marching-cubes")
def test_marching_cubes_vertices_on_surface_in_world_coordinates(record_property):
    """grid_points(n, b)[i, j, k] = (-b + i h, ...): meshing an off-centre sphere sampled on it puts the
    vertices (index frame, shifted by -b) on that sphere, within linear interpolation's error
    3 h^2 / (8 (r - sqrt(3) h)) on an edge of length h."""
    n, b = 24, 1.3
    h = 2 * b / (n - 1)
    grid = im.grid_points(n, b)
    i, j, k = 3, 7, 11
    torch.testing.assert_close(grid[i, j, k], torch.tensor([-b + i * h, -b + j * h, -b + k * h], dtype=F64))
    centre = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    mesh = im.marching_cubes(im.sdf_sphere(grid - centre, 0.7), 0.0, h)
    err = im.sdf_sphere(mesh.verts - b - centre, 0.7).abs().max().item()
    bound = 3 * h**2 / 8 / (0.7 - math.sqrt(3) * h)
    assert err <= bound
    record_property("evidence", f"max |sdf(vertex)| {err:.2e} <= {bound:.2e}")


@pytest.mark.claim("implicit.inference-marching-cubes")
def test_marching_cubes_against_marching_tetrahedra(record_property):
    """The reference (marching tetrahedra: the cubes cut into 6 tetrahedra) meshes the same surface: area and
    volume agree within the discretisation error, and marching cubes needs far fewer faces."""
    n, b = 28, 1.2
    h = 2 * b / (n - 1)
    vals = _smooth_sdf(n, b, 5)
    mc = im.marching_cubes(vals, 0.0, h)
    mt = im.marching_tetrahedra(vals, 0.0, h)
    a_mc, a_mt = im.mesh_area(*mc).item(), im.mesh_area(*mt).item()
    v_mc, v_mt = _signed_volume(*mc).item(), _signed_volume(*mt).item()
    assert abs(a_mc - a_mt) < 2 * h**2 / 0.8**2 * a_mc and abs(v_mc - v_mt) < 2 * h**2 / 0.8**2 * v_mc
    assert mc.faces.shape[0] < 0.6 * mt.faces.shape[0]
    record_property("evidence", f"area {a_mc:.4f} (cubes) vs {a_mt:.4f} (tetrahedra), volume {v_mc:.4f} vs {v_mt:.4f}; "
                                f"{mc.faces.shape[0]} vs {mt.faces.shape[0]} faces")


@pytest.mark.claim("implicit.inference-marching-cubes")
def test_marching_cubes_float32_on_device(device):
    """The same mesh in float32 on the device: identical topology (the signs and the decider's products
    agree when no sample is within rounding of the level or of a tie), vertices within a few float32
    ulps of the grid coordinates (interpolation of values ~1 on an index scale of 24: 24 * 4 eps)."""
    n, b = 24, 1.2
    h = 2 * b / (n - 1)
    vals = _smooth_sdf(n, b, 7)
    ref = im.marching_cubes(vals, 0.0, h)
    got = im.marching_cubes(vals.to(device=device, dtype=torch.float32), 0.0, h)
    assert got.verts.dtype == torch.float32 and got.verts.device.type == torch.device(device).type
    torch.testing.assert_close(got.faces.cpu(), ref.faces)
    torch.testing.assert_close(got.verts.cpu().double(), ref.verts, rtol=0, atol=2 * b * 4 * 1.2e-7 * n)


def test_marching_cubes_bad_inputs():
    with pytest.raises(ValueError, match="values"):
        im.marching_cubes(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="values"):
        im.marching_cubes(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="values"):
        im.marching_cubes(torch.zeros(4, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="values"):
        im.marching_cubes(torch.tensor(float("nan")).expand(3, 3, 3))
    with pytest.raises(ValueError, match="spacing"):
        im.marching_cubes(torch.zeros(3, 3, 3), 0.0, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        im.marching_cubes(torch.zeros(3, 3, 3), 0.0, (1.0, 1.0))
    with pytest.raises(ValueError, match="level"):
        im.marching_cubes(torch.zeros(3, 3, 3), float("inf"))
    # nothing crosses the level: an empty mesh of the right types
    empty = im.marching_cubes(torch.ones(3, 3, 3))
    assert empty.verts.shape == (0, 3) and empty.faces.shape == (0, 3) and empty.faces.dtype == torch.long


# --------------------------------------------------------------------------- secant


@pytest.mark.claim("implicit.secant-root")
@given(seed=seeds())
def test_secant_step_is_root_of_chord(seed):
    g = generator(seed)
    x0, x1 = torch.randn(2, 30, generator=g, dtype=F64)
    f0, f1 = torch.randn(2, 30, generator=g, dtype=F64)
    x2 = im.secant_step(x0, x1, f0, f1)
    line = (f1 - f0) / (x1 - x0) * (x2 - x1) + f1
    assert line.abs().max() < 1e-9 * (1 + f1.abs().max() + f0.abs().max()) * (1 + (x2 - x1).abs().max())
    # a linear function is solved in a single step
    a, c = torch.randn(2, generator=g, dtype=F64)
    lin = lambda x: a * x + c  # noqa: E731
    torch.testing.assert_close(im.secant(lin, x0, x1, 1), (-c / a).expand(30), rtol=1e-7, atol=1e-7)


@pytest.mark.claim("implicit.secant-approximates-newton")
def test_secant_superlinear_order(record_property):
    f = lambda x: x**3 - 2  # noqa: E731  root 2^(1/3), f' = 3 r^2, f'' = 6 r
    root = 2 ** (1 / 3)
    calls = []

    def counted(x):
        assert not x.requires_grad  # values only: no derivative is ever taken
        calls.append(1)
        return f(x)

    xs = im.secant_iterates(counted, torch.tensor(1.0, dtype=F64), torch.tensor(2.0, dtype=F64), 10)
    assert len(calls) == 12  # one evaluation per iterate
    e = (xs - root).abs().numpy()
    use = np.nonzero(e > 1e-14)[0]
    k = use[use >= 3]
    # order: log e_{k+1} against log e_k over the asymptotic iterates
    order = fit_exponent(e[k[:-1]], e[k[1:]])
    phi = (1 + math.sqrt(5)) / 2
    assert abs(order - phi) < 0.1
    # the precise asymptotics: e_{k+1} ~ C e_k e_{k-1}, C = f''(r) / (2 f'(r)) = 1 / r
    ratios = e[k[-1]] / (e[k[-1] - 1] * e[k[-1] - 2])
    assert abs(ratios - 1 / root) < 0.05 / root
    record_property("evidence", f"fitted order {order:.3f} (golden ratio {phi:.3f}); e_k+1/(e_k e_k-1) = {ratios:.4f} "
                                f"vs 1/r = {1 / root:.4f}")


@pytest.mark.slow
@pytest.mark.claim("implicit.secant-approximates-newton")
def test_secant_error_figure(save_figure):
    """Figure: error against iteration for secant, Newton and bisection on x^3 - 2 = 0."""
    import matplotlib.pyplot as plt

    f = lambda x: x**3 - 2  # noqa: E731
    root = 2 ** (1 / 3)
    e = (im.secant_iterates(f, torch.tensor(1.0, dtype=F64), torch.tensor(2.0, dtype=F64), 10) - root).abs().numpy()
    k = [i for i in range(3, len(e)) if e[i] > 1e-14]
    order = fit_exponent(e[k[:-1]], e[k[1:]])
    xn = [torch.tensor(2.0, dtype=F64)]
    for _ in range(6):
        xn.append(xn[-1] - f(xn[-1]) / (3 * xn[-1] ** 2))
    en = (torch.stack(xn) - root).abs().numpy()
    # Newton is quadratic: fewer iterations than the secant method to reach 1e-12
    assert np.argmax(en < 1e-12) < np.argmax(e < 1e-12)
    bis = [1.0, 2.0]
    eb = []
    for _ in range(30):
        m = (bis[0] + bis[1]) / 2
        bis = [m, bis[1]] if m**3 - 2 < 0 else [bis[0], m]
        eb.append(abs(m - root))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(np.maximum(e, 1e-17), "o-", label=f"secant (fitted order {order:.3f})")
    ax.semilogy(np.maximum(en, 1e-17), "s-", label="Newton (order 2)")
    ax.semilogy(eb, "x-", label="bisection (order 1)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("|x_k - root|")
    ax.set_title("x^3 - 2 = 0")
    ax.legend()
    save_figure(fig, "implicit-secant-convergence.png",
                caption='Error per iteration on $x^3 - 2 = 0$: the secant method (fitted order near the golden ratio 1.618) between bisection (order 1) and Newton (order 2).')


# --------------------------------------------------------------------------- DVR


def _sphere_mlp(theta_seed=0, hidden=8):
    """f(p; c, r, W1, b1, w2) = |p - c| - r + 0.05 tanh(p W1 + b1) w2: an SDF-like field with network parameters."""
    g = generator(theta_seed)
    c = torch.tensor([0.1, -0.05, 0.0], dtype=F64)
    r = torch.tensor(0.8, dtype=F64)
    W1 = torch.randn(3, hidden, generator=g, dtype=F64)
    b1 = torch.randn(hidden, generator=g, dtype=F64)
    w2 = torch.randn(hidden, generator=g, dtype=F64) / hidden
    theta = [t.requires_grad_(True) for t in (c, r, W1, b1, w2)]

    def fn(p, c, r, W1, b1, w2):
        return torch.linalg.vector_norm(p - c, dim=-1) - r + 0.05 * torch.tanh(p @ W1 + b1) @ w2

    return fn, theta


def _camera_rays(n, g):
    o = torch.tensor([0.0, 0.0, -3.0], dtype=F64).expand(n, 3).clone()
    w = torch.cat([(torch.rand(n, 2, generator=g, dtype=F64) - 0.5) * 0.3, torch.ones(n, 1, dtype=F64)], -1)
    w = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    return o.requires_grad_(True), w.requires_grad_(True)


@pytest.mark.claim("implicit.dvr-implicit-gradient")
def test_dvr_backward_gradcheck_and_unrolled(record_property):
    fn, theta = _sphere_mlp(hidden=4)
    o, w = _camera_rays(3, generator(6))
    kw = dict(t_near=0.5, t_far=5.0, n_steps=16, n_iter=20)
    depth, hit = im.surface_depth(fn, o, w, *theta, **kw)
    assert hit.all()
    # the root: f(o + d w) = 0 to machine precision
    assert fn(o + depth[:, None] * w, *theta).abs().max() < 1e-13
    assert torch.autograd.gradcheck(lambda o, w, *th: im.surface_depth(fn, o, w, *th, **kw)[0], (o, w, *theta))
    d_unrolled, _ = im.surface_depth_unrolled(fn, o, w, *theta, **kw)
    g_impl = torch.autograd.grad(depth.sum(), (o, w, *theta))
    g_unroll = torch.autograd.grad(d_unrolled.sum(), (o, w, *theta))
    err = max((a - b).abs().max().item() for a, b in zip(g_impl, g_unroll))
    assert err < 1e-10
    record_property("evidence", f"gradcheck (float64) passed; max |implicit - unrolled autograd| {err:.1e}")


@pytest.mark.claim("implicit.dvr-implicit-gradient")
def test_dvr_implicit_formula_term_by_term():
    """Build dp/dtheta = -w (df/dp . w)^{-1} df/dtheta explicitly and check the differentiated constraint."""
    fn, theta = _sphere_mlp(1)
    o, w = _camera_rays(4, generator(7))
    o, w = o.detach(), w.detach()
    depth, _ = im.surface_depth(fn, o, w, *theta, t_near=0.5, t_far=5.0, n_iter=20)
    p = (o + depth.detach()[:, None] * w).requires_grad_(True)
    r_param = theta[1]
    for u in range(4):
        val = fn(p[u : u + 1], *theta)
        grad_p, df_dr = torch.autograd.grad(val.sum(), (p, r_param))
        grad_p = grad_p[u]
        dp_dr = -w[u] / (grad_p @ w[u]) * df_dr
        # df/dtheta + df/dp . dp/dtheta = 0
        assert abs((df_dr + grad_p @ dp_dr).item()) < 1e-12
        # dp/dtheta = w dd/dtheta with dd/dtheta from the custom backward
        (dd_dr,) = torch.autograd.grad(im.surface_depth(fn, o[u : u + 1], w[u : u + 1], *theta, t_near=0.5,
                                                        t_far=5.0, n_iter=20)[0].sum(), r_param)
        torch.testing.assert_close(dp_dr, w[u] * dd_dr, rtol=1e-10, atol=1e-12)


@pytest.mark.claim("implicit.dvr-pixel-gradient", role="refutes")
def test_dvr_pixel_gradient_with_an_undefined_t_field(record_property):
    """As printed, the second term differentiates t_theta, which the notes never define. Read as the
    section's other field, the occupancy f_theta, the formula misses the autograd gradient of the pixel."""
    fn, theta = _sphere_mlp(2)
    o, w = _camera_rays(4, generator(8))
    o, w = o.detach(), w.detach()
    kw = dict(t_near=0.5, t_far=5.0, n_iter=20)
    A = torch.randn(3, 3, generator=generator(9), dtype=F64)
    c = theta[0]

    def color(p, c):
        return torch.sigmoid((p - c) @ A)

    d, _ = im.surface_depth_unrolled(fn, o, w, *theta, **kw)
    I = color(o + d[:, None] * w, c)
    J_auto = torch.stack([torch.stack([torch.autograd.grad(I[u, k], c, retain_graph=True)[0] for k in range(3)])
                          for u in range(4)])
    p_hat = (o + d.detach()[:, None] * w)
    rest = [t.detach() for t in theta[1:]]
    J_direct = torch.autograd.functional.jacobian(lambda cc: color(p_hat, cc), c.detach())
    grad_f_p = torch.stack([torch.autograd.functional.jacobian(lambda p: fn(p, c.detach(), *rest), p_hat)[u, u]
                            for u in range(4)])  # (R, 3): df/dp, the t_theta = f_theta reading's d t / d p
    df_dc = torch.autograd.functional.jacobian(lambda cc: fn(p_hat, cc, *rest), c.detach())
    dp_dc = -w[:, :, None] / (grad_f_p * w).sum(-1)[:, None, None] * df_dc[:, None, :]
    # with t = f the second term is (df/dp . dp/dc), a scalar per pixel broadcast to the three channels
    as_printed = J_direct + (grad_f_p[:, None, :] @ dp_dc)
    gap = (as_printed - J_auto).abs().max().item()
    assert gap > 1e-2
    record_property("evidence", f"t_theta read as f_theta: max |dI/dc - autograd| = {gap:.3f}")


@pytest.mark.claim("implicit.dvr-pixel-gradient", role="corrects")
@pytest.mark.claim("implicit.dvr-chain-rule")
def test_dvr_pixel_gradient_and_chain_rule():
    fn, theta = _sphere_mlp(2)
    o, w = _camera_rays(6, generator(8))
    o, w = o.detach(), w.detach()
    kw = dict(t_near=0.5, t_far=5.0, n_iter=20)
    A = torch.randn(3, 3, generator=generator(9), dtype=F64)

    def color(p, c):  # colour field sharing theta's centre c with the shape, so theta enters both terms
        return torch.sigmoid((p - c) @ A)

    I, hit = im.dvr_render(fn, lambda p: color(p, theta[0]), o, w, *theta, **kw)
    assert hit.all()
    c_param = theta[0]
    d, _ = im.surface_depth(fn, o, w, *theta, **kw)
    p_hat = (o + d.detach()[:, None] * w)
    # explicit: dI/dc = dcolor/dc|_p + dcolor/dp . dp/dc, dp/dc = -w (df/dp . w)^{-1} df/dc
    J_direct = torch.autograd.functional.jacobian(lambda c: color(p_hat, c), c_param.detach())  # (R, 3, 3)
    J_p = torch.autograd.functional.jacobian(lambda p: color(p, c_param.detach()), p_hat)  # (R, 3, R, 3)
    J_p = torch.stack([J_p[u, :, u] for u in range(6)])  # (R, 3, 3)
    grad_f_p = torch.autograd.functional.jacobian(lambda p: fn(p, *[t.detach() for t in theta]), p_hat)
    grad_f_p = torch.stack([grad_f_p[u, u] for u in range(6)])
    df_dc = torch.autograd.functional.jacobian(lambda c: fn(p_hat, c, *[t.detach() for t in theta[1:]]), c_param.detach())
    dp_dc = -w[:, :, None] / (grad_f_p * w).sum(-1)[:, None, None] * df_dc[:, None, :]  # (R, 3, 3)
    dI_dc = J_direct + J_p @ dp_dc
    # autograd through the unrolled solver, independent of the custom backward
    d_u, _ = im.surface_depth_unrolled(fn, o, w, *theta, **kw)
    I_u = color(o + d_u[:, None] * w, c_param)
    J_auto = torch.stack([torch.stack([torch.autograd.grad(I_u[u, k], c_param, retain_graph=True)[0]
                                       for k in range(3)]) for u in range(6)])
    torch.testing.assert_close(dI_dc, J_auto, rtol=1e-9, atol=1e-11)
    # chain rule over pixels: dL/dtheta = sum_u dL/dI_u . dI_u/dtheta
    target = torch.rand(6, 3, generator=generator(10), dtype=F64)
    L = ((I - target) ** 2).sum()
    (dL,) = torch.autograd.grad(L, c_param)
    manual = sum((2 * (I[u] - target[u])).detach() @ dI_dc[u] for u in range(6))
    torch.testing.assert_close(dL, manual, rtol=1e-9, atol=1e-11)


@pytest.mark.claim("implicit.dvr-model")
def test_dvr_gives_shape_gradients_from_pixels():
    fn, theta = _sphere_mlp(3)
    o, w = _camera_rays(8, generator(11))
    I, hit = im.dvr_render(fn, lambda p: torch.sigmoid(p), o.detach(), w.detach(), *theta, t_near=0.5, t_far=5.0)
    assert hit.all() and I.shape == (8, 3)
    grads = torch.autograd.grad(((I - 0.5) ** 2).sum(), theta)
    assert all(torch.isfinite(gr).all() for gr in grads)
    assert grads[1].abs() > 1e-6 and grads[0].abs().max() > 1e-6  # radius and centre receive gradient


@pytest.mark.claim("implicit.dvr-model")
@pytest.mark.claim("implicit.dvr-implicit-gradient")
def test_dvr_on_an_occupancy_field_at_level_tau(record_property):
    """DVR as the notes set it up: f is an occupancy probability (a sigmoid of a network, in (0, 1)) and the
    surface is f(p_hat) = tau = 0.5. The depth solves it, the implicit backward equals autograd through the
    unrolled secant solver and finite differences (gradcheck), and a pixel loss reaches the shape's parameters."""
    sdf, theta = _sphere_mlp(4, hidden=4)

    def occ(p, *th):
        return torch.sigmoid(-6.0 * sdf(p, *th))  # inside (sdf < 0) -> occupancy above 1/2

    o, w = _camera_rays(3, generator(16))
    kw = dict(t_near=0.5, t_far=5.0, n_steps=32, n_iter=30, level=0.5)
    d, hit = im.surface_depth(occ, o, w, *theta, **kw)
    assert hit.all()
    assert (occ(o + d[:, None] * w, *theta) - 0.5).abs().max() < 1e-13
    assert torch.autograd.gradcheck(lambda o, w, *th: im.surface_depth(occ, o, w, *th, **kw)[0], (o, w, *theta))
    d_u, _ = im.surface_depth_unrolled(occ, o, w, *theta, **kw)
    g_impl = torch.autograd.grad(d.sum(), (o, w, *theta))
    g_unroll = torch.autograd.grad(d_u.sum(), (o, w, *theta))
    for a, b in zip(g_impl, g_unroll):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    I, hit = im.dvr_render(occ, torch.sigmoid, o.detach(), w.detach(), *theta, **kw)
    assert hit.all()
    grads = torch.autograd.grad(((I - 0.5) ** 2).sum(), theta)
    assert grads[1].abs() > 1e-6 and grads[0].abs().max() > 1e-6  # radius and centre receive gradient
    err = max((a - b).abs().max().item() for a, b in zip(g_impl, g_unroll))
    record_property("evidence", f"occupancy field, tau = 0.5: gradcheck passed; max |implicit - unrolled| {err:.1e}")


def _occupancy_sphere(k=8.0, r=0.8):
    return lambda p: torch.sigmoid(k * (r - torch.linalg.vector_norm(p, dim=-1)))


@pytest.mark.claim("implicit.dvr-forward-root", role="refutes")
def test_occupancy_has_no_zero_root(record_property):
    occ = _occupancy_sphere()
    o, w = _camera_rays(16, generator(12))
    o, w = o.detach(), w.detach()
    t = torch.linspace(0, 6, 2001, dtype=F64)
    vals = occ(o[:, None] + t[:, None] * w[:, None])
    assert (vals > 0).all()  # a probability from a sigmoid never reaches 0
    _, _, hit = im.ray_march(occ, o, w, 0.0, 6.0, 256, level=0.0)
    assert not hit.any()
    record_property("evidence", f"min occupancy along 16 rays through the sphere {vals.min():.2e} > 0: "
                                "f(p) = 0 has no root; f(p) = 0.5 has")


@pytest.mark.claim("implicit.dvr-forward-root", role="corrects")
def test_occupancy_root_at_threshold_and_pixel_colour():
    r = 0.8
    occ = _occupancy_sphere(r=r)
    fn = lambda p: occ(p)  # noqa: E731
    o, w = _camera_rays(16, generator(13))
    o, w = o.detach(), w.detach()
    t0, t1, hit = im.ray_march(occ, o, w, 0.0, 6.0, 64, level=0.5)
    assert hit.all()
    d = im.secant(lambda t: occ(o + t[:, None] * w) - 0.5, t0, t1, 30)
    p = o + d[:, None] * w
    torch.testing.assert_close(torch.linalg.vector_norm(p, dim=-1), torch.full((16,), r, dtype=F64), rtol=1e-12, atol=1e-12)
    # the same through the DVR forward; the pixel colour is c(p_hat)
    colors, hit2 = im.dvr_render(lambda q: fn(q), lambda q: q.abs(), o, w, t_near=0.0, t_far=6.0, n_iter=30, level=0.5)
    torch.testing.assert_close(colors, p.abs(), rtol=1e-10, atol=1e-12)
    # the ray distance: |p_hat - r_0| = d_hat for unit w
    torch.testing.assert_close(torch.linalg.vector_norm(p - o, dim=-1), d, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- plane and torus (numeric side)


@pytest.mark.claim("implicit.plane-from-cross-product", role="refutes")
def test_cross_product_plane_degenerate_for_parallel_vectors(record_property):
    a = torch.tensor([1.0, -1.0, 0.0], dtype=F64)  # a direction in the plane x + y + z = 1
    b = 2 * a  # another vector on that plane, parallel to a
    n = torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])
    assert (n == 0).all()
    k = -(n @ torch.tensor([1.0, 0.0, 0.0], dtype=F64))  # substitute the plane's point (1, 0, 0)
    assert k == 0
    # every point of space, on the plane or not, satisfies n_1 x + n_2 y + n_3 z + k = 0: no plane
    off = torch.tensor([[0.0, 0.0, 0.0], [5.0, -3.0, 2.0]], dtype=F64)
    assert ((off @ n + k) == 0).all() and ((off.sum(-1) - 1) != 0).all()
    record_property("evidence", "a = (1,-1,0), b = 2a on x+y+z=1 -> n = 0, k = 0: the equation 0 = 0 holds off the "
                                "plane, e.g. at (5,-3,2); points (1,0,1), (0,1,1) of z = 1 as a, b -> n = (-1,-1,1)")


@pytest.mark.claim("implicit.plane-from-cross-product", role="refutes")
def test_cross_product_of_two_points_is_not_the_normal_of_a_plane_off_the_origin():
    # "vectors on the plane" read as the position vectors of two of its points
    P = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype=F64)  # three points of z = 1
    a, b = P[0], P[1]
    n = torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])
    torch.testing.assert_close(n, torch.tensor([-1.0, -1.0, 1.0], dtype=F64))
    k = -(n @ P[0])  # substitute a point: the equation holds at a and b ...
    assert (n @ a + k) == 0 and (n @ b + k) == 0
    assert (n @ P[2] + k) != 0  # ... but not at the plane's third point: not the plane z = 1


@pytest.mark.claim("implicit.plane-from-cross-product", role="corrects")
@given(seed=seeds())
def test_cross_product_plane_from_three_points(seed):
    g = generator(seed)
    P = torch.randn(3, 3, generator=g, dtype=F64)
    a, b = P[1] - P[0], P[2] - P[0]
    n = torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])
    torch.testing.assert_close(n, torch.linalg.cross(a, b))
    assert torch.linalg.vector_norm(n) > 0
    k = -(n @ P[0])
    assert (P @ n + k).abs().max() < 1e-12 * (1 + P.abs().max() ** 3)
    # and a point off the plane is not on it
    off = P[0] + n
    assert abs((n @ off + k).item()) > 0


@pytest.mark.claim("implicit.torus-equation")
def test_torus_sdf_zero_set_matches_equation():
    g = generator(14)
    x = torch.randn(2000, 3, generator=g, dtype=F64)
    R, r = 1.0, 0.4
    eq = (torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2) - R) ** 2 + x[:, 2] ** 2 - r**2
    # the SDF and the implicit equation have the same sign everywhere (same inside, same surface)
    assert (torch.sign(im.sdf_torus(x, R, r)) == torch.sign(eq)).all()
    # converse: every solution of the equation is a point of the parametric torus. Take (x, y) with
    # |sqrt(x^2 + y^2) - R| < r, solve for z >= 0 and z <= 0, recover u = atan2(y, x), v = atan2(z, rho - R)
    xy = x[:, :2] * 0.7
    rho = torch.linalg.vector_norm(xy, dim=-1)
    keep = (rho - R).abs() < r
    xy, rho = xy[keep], rho[keep]
    assert keep.sum() > 100
    for sgn in (1.0, -1.0):
        z = sgn * torch.sqrt(r**2 - (rho - R) ** 2)
        pts = torch.cat([xy, z[:, None]], -1)
        u, v = torch.atan2(xy[:, 1], xy[:, 0]), torch.atan2(z, rho - R)
        torch.testing.assert_close(_torus_param(u, v, R, r), pts, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- input validation


def test_bad_inputs_rejected():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="x"):
        im.sdf_sphere(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="radius"):
        im.sdf_sphere(x, -1.0)
    with pytest.raises(TypeError, match="x"):
        im.sdf_sphere(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="half_extent"):
        im.sdf_box(x, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="minor"):
        im.sdf_torus(x, 1.0, 0.0)
    with pytest.raises(ValueError, match="normal"):
        im.sdf_plane(x, torch.zeros(3))
    with pytest.raises(ValueError, match="rotation"):
        im.rigid_transform_points(x, 2 * torch.eye(3), torch.zeros(3))
    with pytest.raises(ValueError, match="n"):
        im.grid_points(1, 1.0)
    with pytest.raises(ValueError, match="z"):
        im.DeepSDF(latent_dim=2, hidden=4, n_layers=1)(torch.zeros(1, 5, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="latent_dim"):
        im.OccupancyNetwork(latent_dim=-1, hidden=4, n_layers=1)
    with pytest.raises(ValueError, match="target"):
        im.sdf_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="f"):
        im.point_cloud_loss(None, x, x)
    with pytest.raises(ValueError, match="lam"):
        im.point_cloud_loss(lambda p: p.sum(-1), x, x, lam=-1.0)
    with pytest.raises(ValueError, match="values"):
        im.marching_tetrahedra(torch.zeros(1, 4, 4))
    with pytest.raises(TypeError, match="faces"):
        im.mesh_area(x, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="x1"):
        im.secant_iterates(lambda t: t, torch.zeros(3), torch.zeros(2), 2)
    with pytest.raises(ValueError, match="n_iter"):
        im.secant(lambda t: t, torch.zeros(3), torch.ones(3), -1)
    with pytest.raises(ValueError, match="t_far"):
        im.ray_march(lambda p: p.sum(-1), x, x, 2.0, 1.0)
    with pytest.raises(ValueError, match="dirs"):
        im.surface_depth(lambda p: p.sum(-1), x, torch.zeros(3, 3), t_near=0.0, t_far=1.0)
    with pytest.raises(TypeError, match="color_fn"):
        im.dvr_render(lambda p: p.sum(-1), None, x, x, t_near=0.0, t_far=1.0)
    with pytest.raises(TypeError, match="module"):
        im.functional(lambda p: p)


def test_extreme_inputs_finite():
    big = torch.tensor([[1e150, -1e150, 1e150]], dtype=F64)
    assert torch.isfinite(im.sdf_sphere(big, 1.0)).all()
    assert torch.isfinite(im.sdf_torus(big, 1.0, 0.1)).all()
    logits = torch.tensor([1e4, -1e4], dtype=F64)
    assert torch.isfinite(im.occupancy_loss(logits, torch.tensor([0.0, 1.0], dtype=F64)))
    # secant with a flat chord keeps the iterate instead of dividing by zero
    x = im.secant_step(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([2.0]))
    assert x.item() == 1.0


@pytest.mark.claim("implicit.dvr-implicit-gradient")
def test_functional_wraps_module():
    net = torch.nn.Linear(3, 1).double()
    fn, params = im.functional(net)
    x = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(fn(x, *params), net(x))
    # a module's parameters as theta of the DVR depth: implicit backward equals the unrolled one
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    f_mlp, ps = im.functional(mlp)

    def field(p, *theta):
        return torch.linalg.vector_norm(p, dim=-1) - 0.8 + 0.05 * f_mlp(p, *theta).squeeze(-1)

    o, w = _camera_rays(4, generator(15))
    kw = dict(t_near=0.5, t_far=5.0, n_iter=20)
    g1 = torch.autograd.grad(im.surface_depth(field, o, w, *ps, **kw)[0].sum(), ps)
    g2 = torch.autograd.grad(im.surface_depth_unrolled(field, o, w, *ps, **kw)[0].sum(), ps)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- slow: training


def _train(net, z, x, target, loss_fn, steps, lr=3e-3):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = loss_fn(net(x, z), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.slow
@pytest.mark.claim("implicit.uat-network-approximation")
@pytest.mark.claim("implicit.occupancy-network")
@pytest.mark.claim("implicit.deepsdf")
@pytest.mark.claim("implicit.conditioned-on-latent")
@pytest.mark.claim("implicit.inference-marching-cubes")
@pytest.mark.claim("implicit.watertight-ce-loss", role="corrects")
def test_train_from_watertight_shapes(record_property, save_figure):
    """One occupancy network and one DeepSDF, each conditioned on a class code (sphere / box), trained on
    points sampled in space with ground-truth occupancy (cross-entropy) and SDF (clamped L1)."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    h = torch.tensor([0.5, 0.3, 0.4])
    shapes = [lambda p: im.sdf_sphere(p, 0.6), lambda p: im.sdf_box(p, h)]
    z = torch.eye(2)
    g = generator(20)
    x = torch.rand(2, 2000, 3, generator=g) * 2 - 1
    x_test = torch.rand(2, 2000, 3, generator=g) * 2 - 1
    sdf = torch.stack([shapes[i](x[i]) for i in range(2)])
    sdf_test = torch.stack([shapes[i](x_test[i]) for i in range(2)])
    occ_net = _train(im.OccupancyNetwork(2, 48, 3), z, x, im.occupancy_from_sdf(sdf), im.occupancy_loss, 200)
    sdf_net = _train(im.DeepSDF(2, 48, 3), z, x, sdf, lambda p, t: im.sdf_loss(p, t, clamp=1.0), 200)
    with torch.no_grad():
        acc = ((occ_net.probability(x_test, z) > 0.5) == (sdf_test < 0)).float().mean(1)
        pred = sdf_net(x_test, z)
        err = (pred - sdf_test).abs().mean(1)
        swapped = (sdf_net(x_test, z.flip(0)) - sdf_test).abs().mean(1)
    assert (acc > 0.95).all()
    assert (err < 0.03).all()
    assert (swapped > 3 * err).all()  # each code carries its own shape
    # inference: query the network on a grid and extract the mesh
    n, b = 32, 1.0
    step = 2 * b / (n - 1)
    grid = im.grid_points(n, b, dtype=torch.float32)
    with torch.no_grad():
        vals = sdf_net(grid.reshape(1, -1, 3), z[:1]).reshape(n, n, n)
    verts, faces = im.marching_cubes(vals, 0.0, step)
    on_surface = im.sdf_sphere(verts - b, 0.6).abs()
    assert on_surface.mean() < 0.03
    fig = plt.figure(figsize=(4, 4))
    ax = fig.add_subplot(projection="3d")
    tri = (verts - b).numpy()
    ax.plot_trisurf(tri[:, 0], tri[:, 1], tri[:, 2], triangles=faces.numpy(), linewidth=0, antialiased=False)
    ax.set_title("mesh extracted from DeepSDF (sphere code)")
    save_figure(fig, "implicit-extracted-mesh.png",
                caption="The mesh that marching cubes extracts from the trained DeepSDF decoder at the sphere's latent code.")
    record_property("evidence", f"occupancy accuracy {acc.tolist()}, DeepSDF mean |err| {err.tolist()}, swapped-code "
                                f"error {swapped.tolist()}; mesh vertices mean |true sdf| {on_surface.mean():.4f}")


@pytest.mark.slow
@pytest.mark.claim("implicit.point-cloud-loss", role="corrects")
@pytest.mark.claim("implicit.eikonal-property")
def test_train_from_point_cloud_with_eikonal_loss(record_property):
    torch.manual_seed(0)
    g = generator(21)
    surface = 0.5 * _unit(1024, g, torch.float32)
    net = im.DeepSDF(latent_dim=0, hidden=64, n_layers=3)
    z = torch.zeros(1, 0)
    f = lambda p: net(p[None], z)[0]  # noqa: E731
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(400):
        space = torch.rand(512, 3, generator=g) * 2 - 1
        loss = im.point_cloud_loss(f, surface[torch.randint(0, 1024, (512,), generator=g)], space, lam=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held = 0.5 * _unit(500, g, torch.float32)
    probe = torch.rand(1000, 3, generator=g) * 2 - 1
    with torch.no_grad():
        on = f(held).abs().mean().item()
        learned = f(probe)
    true = im.sdf_sphere(probe, 0.5)
    # the loss is even in f (loss(-f) = loss(f)), so it fixes the surface and |f| but not which side is
    # inside: compare unsigned distances in a band around the surface
    band = true.abs() < 0.3
    unsigned = (learned.abs() - true.abs())[band].abs().mean().item()
    gn = torch.linalg.vector_norm(im.spatial_gradient(f, probe), dim=-1)
    assert on < 0.02 and unsigned < 0.03
    assert (gn - 1).abs().mean() < 0.1
    record_property("evidence", f"mean |f| on held-out surface points {on:.4f}; mean ||f| - |sdf|| near the surface "
                                f"{unsigned:.4f}; mean | ||grad f|| - 1 | {(gn - 1).abs().mean():.3f}")


@pytest.mark.claim("implicit.dvr-implicit-gradient")
def test_dvr_depth_and_gradient_float32_on_device(device):
    """Sphere |p - c| - rho hit along the z axis from (a, b, -h): d = c_z + h - sqrt(rho^2 - (a-c_x)^2 - (b-c_y)^2),
    dd/drho = -rho / sqrt(...). float32: the secant converges to a few ulps of a depth of ~2 (2.4e-7 each),
    and the gradient divides by df/dp . w ~ 1: tolerance 1e-5."""
    c = torch.tensor([0.1, -0.1, 0.2], device=device)
    rho = torch.tensor(0.9, device=device, requires_grad=True)
    ab = torch.tensor([[0.0, 0.0], [0.3, 0.1], [-0.2, 0.4]], device=device)
    o = torch.cat([ab, torch.full((3, 1), -3.0, device=device)], -1)
    w = torch.tensor([0.0, 0.0, 1.0], device=device).expand(3, 3)
    fn = lambda p, rho: torch.linalg.vector_norm(p - c, dim=-1) - rho  # noqa: E731
    d, hit = im.surface_depth(fn, o, w, rho, t_near=0.0, t_far=6.0, n_steps=32, n_iter=12)
    assert hit.all() and d.device == o.device and d.dtype == torch.float32
    root = torch.sqrt(rho.detach() ** 2 - ((ab - c[:2]) ** 2).sum(-1))
    torch.testing.assert_close(d.detach(), c[2] + 3.0 - root, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(d.sum(), rho)
    torch.testing.assert_close(g, -(rho.detach() / root).sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.claim("implicit.other-properties")
def test_a_neural_field_models_colour_and_force():
    """A field x -> (rgb, force) with 6 outputs: 300 Adam steps on 256 points fit a smooth colour field and
    a spring force -2 x to under 2 % of their variance on held-out points (a constant predictor scores 100 %)."""
    torch.manual_seed(0)
    g = generator(21)
    x = torch.rand(512, 3, generator=g, dtype=F64) * 2 - 1

    def truth(p):
        rgb = 0.5 + 0.5 * torch.sin(torch.stack([p[:, 0] + p[:, 1], p[:, 1] - p[:, 2], p[:, 2] + 0.5 * p[:, 0]], -1))
        return torch.cat([rgb, -2.0 * p], -1)

    y = truth(x)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 6)).double()
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(300):
        loss = ((net(x[:256]) - y[:256]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = ((net(x[256:]) - y[256:]) ** 2).mean(0) / y[256:].var(0)
    assert (err < 0.02).all()


def test_networks_round_trip_their_state_dict():
    for cls in (im.OccupancyNetwork, im.DeepSDF):
        torch.manual_seed(0)
        a = cls(latent_dim=2, hidden=8, n_layers=2).double()
        torch.manual_seed(1)
        b = cls(latent_dim=2, hidden=8, n_layers=2).double()
        x, z = torch.rand(1, 5, 3, dtype=F64), torch.rand(1, 2, dtype=F64)
        assert not torch.equal(a(x, z), b(x, z))
        b.load_state_dict(a.state_dict())
        assert torch.equal(a(x, z), b(x, z))


def test_marching_cubes_extreme_but_valid_values():
    """Values near the float64 range (1e300 times a sphere SDF) and a level far from 0 still give a finite,
    closed mesh with the same faces as the unscaled field (interpolation is scale-free)."""
    n, b = 16, 1.2
    vals = im.sdf_sphere(im.grid_points(n, b) + 1e-3, 0.8)
    ref = im.marching_cubes(vals)
    for scaled, level in ((vals * 1e300, 0.0), (vals + 1e6, 1e6)):
        mesh = im.marching_cubes(scaled, level)
        assert torch.isfinite(mesh.verts).all()
        assert torch.equal(mesh.faces, ref.faces)
        _closed_oriented(mesh.faces, mesh.verts.shape[0])
        # shifted by 1e6, each value minus the level carries 1e6 eps = 2.2e-10 of rounding; an interpolation
        # weight -c0 / (c1 - c0) then moves by ~ 4.4e-10 / |c1 - c0| (>= 1e-3 on this grid): 1e-6 bounds it
        torch.testing.assert_close(mesh.verts, ref.verts, rtol=0, atol=1e-6 if level else 1e-12)


def _raises(exc, name, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ``exc`` whose message starts with the argument's name."""
    with pytest.raises(exc, match=rf"^{name}\b"):
        fn(*args, **kwargs)


def test_every_argument_is_checked_by_name():
    x, x64 = torch.zeros(4, 3), torch.zeros(4, 3, dtype=F64)
    for fn, extra in ((im.sdf_sphere, ()), (im.sdf_torus, (1.0, 0.2)), (im.occupancy_from_sdf, None)):
        if extra is None:
            _raises(TypeError, "sdf", fn, [0.0])
            continue
        _raises(TypeError, "x", fn, [0.0, 0.0, 0.0], *extra)
        _raises(ValueError, "x", fn, torch.zeros(4, 2), *extra)
        _raises(ValueError, "x", fn, torch.zeros(()), *extra)
    _raises(ValueError, "radius", im.sdf_sphere, x, 0.0)
    _raises(ValueError, "major", im.sdf_torus, x, 0.0, 0.1)
    _raises(ValueError, "minor", im.sdf_torus, x, 1.0, -0.1)
    _raises(ValueError, "half_extent", im.sdf_box, x, torch.ones(2))
    _raises(TypeError, "half_extent", im.sdf_box, x, torch.ones(3, dtype=F64))
    _raises(ValueError, "half_extent", im.sdf_box, x, torch.tensor([1.0, 0.0, 1.0]))
    _raises(ValueError, "normal", im.sdf_plane, x, torch.ones(2))
    _raises(TypeError, "normal", im.sdf_plane, x, torch.ones(3, dtype=F64))
    _raises(TypeError, "offset", im.sdf_plane, x, torch.ones(3), "1")
    _raises(ValueError, "rotation", im.rigid_transform_points, x, torch.eye(2), torch.zeros(3))
    _raises(ValueError, "translation", im.rigid_transform_points, x, torch.eye(3), torch.zeros(2))
    _raises(TypeError, "rotation", im.rigid_transform_points, x, torch.eye(3, dtype=F64), torch.zeros(3))
    _raises(ValueError, "rotation", im.rigid_transform_points, x, torch.eye(3) * 1.01, torch.zeros(3))
    _raises(ValueError, "bound", im.grid_points, 4, 0.0)
    _raises(TypeError, "n", im.grid_points, 4.0, 1.0)
    for arg, bad in (("latent_dim", -1), ("hidden", 0), ("n_layers", 0)):
        _raises(ValueError, arg, im.DeepSDF, **{"latent_dim": 1, "hidden": 2, "n_layers": 1, arg: bad})
    net = im.DeepSDF(latent_dim=2, hidden=4, n_layers=1)
    _raises(ValueError, "x", net, torch.zeros(5, 3), torch.zeros(1, 2))
    _raises(ValueError, "x", net, torch.zeros(1, 5, 2), torch.zeros(1, 2))
    _raises(ValueError, "z", net, torch.zeros(1, 5, 3), torch.zeros(2, 2))
    _raises(ValueError, "occupancy", im.occupancy_loss, torch.zeros(3), torch.zeros(2))
    _raises(TypeError, "occupancy", im.occupancy_loss, torch.zeros(3), torch.zeros(3, dtype=F64))
    _raises(ValueError, "occupancy", im.occupancy_loss, torch.zeros(3), torch.full((3,), 1.5))
    _raises(TypeError, "logits", im.occupancy_loss, None, torch.zeros(3))
    _raises(TypeError, "pred", im.sdf_loss, None, torch.zeros(3))
    _raises(TypeError, "target", im.sdf_loss, torch.zeros(3), torch.zeros(3, dtype=F64))
    _raises(ValueError, "clamp", im.sdf_loss, torch.zeros(3), torch.zeros(3), 0.0)
    _raises(TypeError, "f", im.spatial_gradient, None, x)
    _raises(ValueError, "x", im.spatial_gradient, lambda p: p.sum(-1), torch.zeros(4, 2))
    f = lambda p: p.sum(-1)  # noqa: E731
    _raises(ValueError, "surface_points", im.point_cloud_loss, f, torch.zeros(4, 2), x)
    _raises(ValueError, "space_points", im.point_cloud_loss, f, x, torch.zeros(4, 2))
    _raises(ValueError, "surface_points", im.point_cloud_loss, f, torch.zeros(3), x)
    _raises(TypeError, "space_points", im.point_cloud_loss, f, x, x64)
    _raises(ValueError, "space_points", im.point_cloud_loss, f, x, x[None])
    _raises(TypeError, "f", im.point_cloud_loss, None, x, x)
    _raises(ValueError, "lam", im.point_cloud_loss, f, x, x, lam=-0.5)
    for mesher in (im.marching_tetrahedra, im.marching_cubes):
        _raises(ValueError, "values", mesher, torch.zeros(2, 2))
        _raises(ValueError, "values", mesher, torch.zeros(2, 1, 2))
        _raises(TypeError, "level", mesher, torch.zeros(2, 2, 2), "0")
        _raises(ValueError, "spacing", mesher, torch.zeros(2, 2, 2), 0.0, -1.0)
    _raises(ValueError, "verts", im.mesh_area, torch.zeros(3, 2), torch.zeros(1, 3, dtype=torch.long))
    _raises(ValueError, "faces", im.mesh_area, torch.zeros(3, 3), torch.tensor([[0, 1, 3]]))
    _raises(TypeError, "faces", im.mesh_area, torch.zeros(3, 3), torch.zeros(1, 2, dtype=torch.long))
    for name in ("x0", "x1", "f0", "f1"):
        args = dict(x0=torch.zeros(2), x1=torch.ones(2), f0=torch.zeros(2), f1=torch.ones(2))
        _raises(TypeError, name, im.secant_step, **{**args, name: 1.0})
    _raises(TypeError, "fn", im.secant_iterates, None, torch.zeros(2), torch.ones(2), 1)
    _raises(TypeError, "x1", im.secant_iterates, f, torch.zeros(2), torch.ones(2, dtype=F64), 1)
    _raises(TypeError, "fn", im.ray_march, None, x, x, 0.0, 1.0)
    _raises(ValueError, "origins", im.ray_march, f, torch.zeros(4, 2), x, 0.0, 1.0)
    _raises(ValueError, "dirs", im.ray_march, f, x, torch.zeros(3, 3), 0.0, 1.0)
    _raises(TypeError, "dirs", im.ray_march, f, x, x64, 0.0, 1.0)
    _raises(ValueError, "n_steps", im.ray_march, f, x, x, 0.0, 1.0, n_steps=1)
    _raises(TypeError, "level", im.ray_march, f, x, x, 0.0, 1.0, level="0")
    g = lambda p, *theta: p.sum(-1)  # noqa: E731
    for depth in (im.surface_depth, im.surface_depth_unrolled):
        _raises(TypeError, "fn", depth, None, x, x, t_near=0.0, t_far=1.0)
        _raises(ValueError, "dirs", depth, g, x, torch.zeros(3, 3), t_near=0.0, t_far=1.0)
        _raises(TypeError, "theta", depth, g, x, x, "w", t_near=0.0, t_far=1.0)
        _raises(ValueError, "n_iter", depth, g, x, x, t_near=0.0, t_far=1.0, n_iter=-1)
    _raises(TypeError, "color_fn", im.dvr_render, g, None, x, x, t_near=0.0, t_far=1.0)
    _raises(TypeError, "module", im.functional, lambda p: p)


def test_results_are_named_tuples_with_shared_fields():
    o = torch.tensor([[0.0, 0.0, -3.0]], dtype=F64)
    w = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    sphere = lambda p, *theta: im.sdf_sphere(p, 1.0)  # noqa: E731
    b = im.ray_march(lambda p: sphere(p), o, w, 0.0, 5.0, 11)
    assert isinstance(b, im.Bracket) and b.hit.all() and b.t0 <= 2.0 <= b.t1
    s = im.surface_depth(sphere, o, w, t_near=0.0, t_far=5.0)
    assert isinstance(s, im.SurfaceHit)
    torch.testing.assert_close(s.depth, torch.tensor([2.0], dtype=F64))
    r = im.dvr_render(sphere, lambda p: p, o, w, t_near=0.0, t_far=5.0)
    assert isinstance(r, im.DVRRender)
    torch.testing.assert_close(r.color, torch.tensor([[0.0, 0.0, -1.0]], dtype=F64))
    assert isinstance(im.marching_cubes(torch.ones(2, 2, 2)), im.Mesh)
