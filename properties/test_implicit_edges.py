"""Edge cases and bad inputs of impl/implicit.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/implicit.py``: an input
check that names the wrong argument (every message is matched from its start, so ``XXxXX`` or ``X``
fails) or lets a boundary value through, and results changed on valid input. Expected values come
from the definitions, hand computation or brute-force loops.
"""

import math

import pytest
import torch
from torch import nn

from impl import implicit as im

F64 = torch.float64


def t(*v):
    return torch.tensor(v, dtype=F64)


P = torch.zeros(4, 3, dtype=F64)  # a valid batch of points
FN = lambda p: torch.linalg.vector_norm(p, dim=-1) - 1.0  # noqa: E731  the unit sphere


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


# ---- analytic shapes ---------------------------------------------------------------------------

def test_points_checks_by_name():
    for fn, extra in [(im.sdf_sphere, ()), (im.sdf_torus, (2.0, 0.5)), (im.sdf_box, (t(1, 1, 1),)),
                      (im.sdf_plane, (t(0, 0, 1),))]:
        _raises(TypeError, r"^x: expected a torch.Tensor", fn, P.tolist(), *extra)
        _raises(TypeError, r"^x: expected a floating-point tensor", fn, P.long(), *extra)
        _raises(ValueError, r"^x: expected shape \(\.\.\., 3\)", fn, torch.zeros(4, 2, dtype=F64), *extra)
        _raises(ValueError, r"^x: expected shape \(\.\.\., 3\)", fn, torch.tensor(3.0, dtype=F64), *extra)


def test_sphere_and_torus_scalar_checks():
    _raises(ValueError, r"^radius: must be > 0", im.sdf_sphere, P, 0.0)
    _raises(TypeError, r"^radius: expected a real number", im.sdf_sphere, P, "1")
    _raises(ValueError, r"^major: must be > 0", im.sdf_torus, P, 0.0, 0.5)
    _raises(ValueError, r"^minor: must be > 0", im.sdf_torus, P, 2.0, 0.0)
    _raises(TypeError, r"^major: expected a real number", im.sdf_torus, P, None, 0.5)
    _raises(TypeError, r"^minor: expected a real number", im.sdf_torus, P, 2.0, None)


def test_sphere_and_torus_values():
    x = t(3.0, 4.0, 0.0)
    torch.testing.assert_close(im.sdf_sphere(x), torch.tensor(4.0, dtype=F64))  # default radius 1
    torch.testing.assert_close(im.sdf_sphere(x, 2.5), torch.tensor(2.5, dtype=F64))
    # torus R = 2, r = 0.5: the point (3, 4, 1) is sqrt((5 - 2)^2 + 1^2) - 0.5 from it
    torch.testing.assert_close(im.sdf_torus(t(3.0, 4.0, 1.0), 2.0, 0.5),
                               torch.tensor(math.sqrt(10) - 0.5, dtype=F64))


def test_box_checks_and_values():
    h = t(1.0, 2.0, 3.0)
    _raises(TypeError, r"^half_extent: expected a torch.Tensor", im.sdf_box, P, [1.0, 1.0, 1.0])
    _raises(ValueError, r"^half_extent: expected shape \(3\)", im.sdf_box, P, t(1.0, 1.0))
    _raises(TypeError, r"^half_extent: dtype torch.float32 differs from x's", im.sdf_box, P, h.float())
    _raises(ValueError, r"^half_extent: every half extent must be positive", im.sdf_box, P, t(1.0, 0.0, 1.0))
    # brute force: outside, the distance to the nearest point of the box; inside, minus the nearest face
    x = torch.stack([t(0.0, 0.0, 0.0), t(0.5, 0.0, 0.0), t(2.0, 0.0, 0.0), t(2.0, 3.0, 0.0),
                     t(-2.0, -3.0, 5.0), t(0.0, -1.5, 2.9)])
    ref = []
    for p in x:
        q = p.abs() - h
        if (q <= 0).all():
            ref.append(q.max())
        else:
            ref.append(torch.linalg.vector_norm(torch.clamp(q, min=0)))
    torch.testing.assert_close(im.sdf_box(x, h), torch.stack(ref))


def test_plane_checks_and_values():
    n = t(0.0, 0.0, 2.0)
    _raises(TypeError, r"^normal: expected a torch.Tensor", im.sdf_plane, P, [0.0, 0.0, 1.0])
    _raises(ValueError, r"^normal: expected shape \(3\)", im.sdf_plane, P, t(0.0, 1.0))
    _raises(TypeError, r"^normal: dtype torch.float32 differs from x's", im.sdf_plane, P, n.float())
    _raises(TypeError, r"^offset: expected a real number", im.sdf_plane, P, n, "0")
    _raises(ValueError, r"^offset: must be finite", im.sdf_plane, P, n, float("nan"))
    _raises(ValueError, r"^normal: must be non-zero", im.sdf_plane, P, t(0.0, 0.0, 0.0))
    x = torch.stack([t(1.0, 2.0, 3.0), t(0.0, 0.0, -1.0)])
    torch.testing.assert_close(im.sdf_plane(x, n), t(3.0, -1.0))  # default offset 0
    # n.x + offset = 0 with n normalised: z + 1 = 0, the signed distance is z + 1
    torch.testing.assert_close(im.sdf_plane(x, n, 2.0), t(4.0, 0.0))


def test_occupancy_from_sdf():
    _raises(TypeError, r"^sdf: expected a torch.Tensor", im.occupancy_from_sdf, [0.0])
    # a point on the surface (sdf exactly 0) is not inside
    out = im.occupancy_from_sdf(t(-1.0, 0.0, 2.0))
    assert out.dtype == F64
    torch.testing.assert_close(out, t(1.0, 0.0, 0.0))


def test_rigid_transform_checks_and_values():
    R, tr = torch.eye(3, dtype=F64), t(1.0, 2.0, 3.0)
    f = im.rigid_transform_points
    _raises(ValueError, r"^x: expected shape \(\.\.\., 3\)", f, torch.zeros(2, dtype=F64), R, tr)
    _raises(TypeError, r"^rotation: expected a torch.Tensor", f, P, R.tolist(), tr)
    _raises(ValueError, r"^rotation: expected shape \(3, 3\)", f, P, torch.eye(2, dtype=F64), tr)
    _raises(TypeError, r"^translation: expected a torch.Tensor", f, P, R, tr.tolist())
    _raises(ValueError, r"^translation: expected shape \(3\)", f, P, R, t(1.0, 2.0))
    _raises(TypeError, r"^rotation: dtype torch.float32 differs from x's", f, P, R.float(), tr)
    _raises(TypeError, r"^translation: dtype torch.float32 differs from x's", f, P, R, tr.float())
    _raises(ValueError, r"^rotation: must be orthonormal", f, P, 2 * R, tr)
    _raises(ValueError, r"^rotation: must be orthonormal", f, P, R + 1e-3 * torch.ones(3, 3, dtype=F64), tr)
    # the inverse rigid map R^T (x - t), entry by entry
    c, s = math.cos(0.3), math.sin(0.3)
    Rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], dtype=F64)
    ref = torch.stack([torch.tensor([sum(Rz[k, i] * (p[k] - tr[k]) for k in range(3)) for i in range(3)],
                                    dtype=F64) for p in x])
    torch.testing.assert_close(f(x, Rz, tr), ref)


def test_grid_points():
    _raises(ValueError, r"^n: must be >= 2", im.grid_points, 1, 1.0)
    _raises(TypeError, r"^n: expected an int", im.grid_points, 2.0, 1.0)
    _raises(ValueError, r"^bound: must be > 0", im.grid_points, 2, 0.0)
    _raises(TypeError, r"^bound: expected a real number", im.grid_points, 2, "1")
    g = im.grid_points(2, 1.5)  # n = 2 is allowed
    assert g.shape == (2, 2, 2, 3) and g.dtype == F64
    for i in range(2):
        for j in range(2):
            for k in range(2):
                torch.testing.assert_close(g[i, j, k], 1.5 * t(2 * i - 1, 2 * j - 1, 2 * k - 1))
    g3 = im.grid_points(3, 1.0, dtype=torch.float32)
    assert g3.dtype == torch.float32 and g3.device.type == "cpu"
    torch.testing.assert_close(g3[1, 2, 0], torch.tensor([0.0, 1.0, -1.0]))


# ---- networks and losses -----------------------------------------------------------------------

def test_network_constructor_checks():
    for cls in (im.OccupancyNetwork, im.DeepSDF):
        _raises(ValueError, r"^latent_dim: must be >= 0", cls, -1, 4, 1)
        _raises(ValueError, r"^hidden: must be >= 1", cls, 2, 0, 1)
        _raises(ValueError, r"^n_layers: must be >= 1", cls, 2, 4, 0)
        _raises(TypeError, r"^latent_dim: expected an int", cls, 1.0, 4, 1)
        _raises(TypeError, r"^hidden: expected an int", cls, 2, 4.0, 1)
        _raises(TypeError, r"^n_layers: expected an int", cls, 2, 4, 1.0)
    net = im.DeepSDF(0, 1, 1)  # the smallest network: no code, one hidden unit, one layer
    assert net(torch.zeros(1, 2, 3), torch.zeros(1, 0)).shape == (1, 2)


def test_network_structure_and_forward():
    torch.manual_seed(0)
    net = im.DeepSDF(2, 5, 3).double()
    lin = [m for m in net.body if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(5, 5), (5, 5), (5, 5), (5, 1)]
    x = torch.randn(2, 4, 3, dtype=F64)
    z = torch.randn(2, 2, dtype=F64)
    # by hand: concatenate each point with its shape's code and apply the layers in turn
    ref = torch.empty(2, 4, dtype=F64)
    for b in range(2):
        for n in range(4):
            h = torch.cat([x[b, n], z[b]])
            for m in net.body:
                h = m(h)
            ref[b, n] = h[0]
    torch.testing.assert_close(net(x, z), ref)
    occ = im.OccupancyNetwork(2, 5, 2).double()
    torch.testing.assert_close(occ.probability(x, z), torch.sigmoid(occ(x, z)))
    _raises(ValueError, r"^x: expected 3 dimensions", net, x[0], z)
    _raises(ValueError, r"^x: expected shape \(B, N, 3\)", net, x[..., :2], z)
    _raises(ValueError, r"^z: expected shape \(2, 2\)", net, x, z[:, :1])
    _raises(ValueError, r"^z: expected shape \(2, 2\)", net, x, z[:1])


def test_occupancy_loss():
    logits, occ = t(0.3, -1.2, 2.0), t(1.0, 0.0, 0.5)
    _raises(TypeError, r"^logits: expected a torch.Tensor", im.occupancy_loss, [0.0], occ)
    _raises(TypeError, r"^occupancy: expected a torch.Tensor", im.occupancy_loss, logits, [0.0])
    _raises(ValueError, r"^occupancy: expected shape \(3\)", im.occupancy_loss, logits, occ[:2])
    _raises(TypeError, r"^occupancy: dtype torch.float32 differs from logits's", im.occupancy_loss, logits, occ.float())
    _raises(ValueError, r"^occupancy: targets of a cross-entropy must lie in \[0, 1\]", im.occupancy_loss,
            logits, t(1.0, 0.0, 1.5))
    _raises(ValueError, r"^occupancy: targets", im.occupancy_loss, logits, t(1.0, -0.5, 0.0))
    p = torch.sigmoid(logits)
    ref = -(occ * p.log() + (1 - occ) * (1 - p).log()).mean()
    torch.testing.assert_close(im.occupancy_loss(logits, occ), ref)


def test_sdf_loss():
    pred, target = t(0.05, 0.5, -0.3, 0.02), t(0.0, 0.2, -0.05, 0.5)
    _raises(TypeError, r"^pred: expected a torch.Tensor", im.sdf_loss, [0.0], target)
    _raises(ValueError, r"^target: expected shape \(4\)", im.sdf_loss, pred, target[:3])
    _raises(TypeError, r"^target: dtype torch.float32 differs from pred's", im.sdf_loss, pred, target.float())
    _raises(ValueError, r"^clamp: must be > 0", im.sdf_loss, pred, target, 0.0)
    # default clamp 0.1: |0.05 - 0| + |0.1 - 0.1| + |-0.1 + 0.05| + |0.02 - 0.1|
    torch.testing.assert_close(im.sdf_loss(pred, target), torch.tensor((0.05 + 0 + 0.05 + 0.08) / 4, dtype=F64))
    torch.testing.assert_close(im.sdf_loss(pred, target, 1.0), (pred - target).abs().mean())


def test_spatial_gradient():
    _raises(ValueError, r"^x: expected shape \(\.\.\., 3\)", im.spatial_gradient, FN, torch.zeros(2, 2, dtype=F64))
    _raises(TypeError, r"^f: expected a callable", im.spatial_gradient, 1.0, P)
    x = t(3.0, 0.0, 4.0)
    g = im.spatial_gradient(FN, x)
    torch.testing.assert_close(g, x / 5)
    assert g.requires_grad  # the graph is kept: a loss on g can be differentiated
    # f(x) = |x|^2 / 2 has gradient x and Laplacian 3
    y = t(1.0, -2.0, 0.5).requires_grad_(True)
    g = im.spatial_gradient(lambda p: 0.5 * (p * p).sum(-1), y)
    torch.testing.assert_close(g, y.detach())
    (lap,) = torch.autograd.grad(g.sum(), y)
    torch.testing.assert_close(lap, t(1.0, 1.0, 1.0))


def test_point_cloud_loss():
    S, X = torch.randn(5, 3, dtype=F64), torch.randn(7, 3, dtype=F64)
    lin = lambda p: p.sum(-1)  # noqa: E731  |grad| = sqrt(3) everywhere
    f = im.point_cloud_loss
    _raises(TypeError, r"^f: expected a callable", f, 1.0, S, X)
    _raises(ValueError, r"^surface_points: expected 2 dimensions", f, lin, S[0], X)
    _raises(ValueError, r"^space_points: expected 2 dimensions", f, lin, S, X[0])
    _raises(ValueError, r"^surface_points: expected shape \(\.\.\., 3\)", f, lin, S[:, :2], X)
    _raises(ValueError, r"^space_points: expected shape \(\.\.\., 3\)", f, lin, S, X[:, :2])
    _raises(TypeError, r"^space_points: dtype torch.float32 differs from surface_points's", f, lin, S, X.float())
    _raises(ValueError, r"^lam: must be >= 0", f, lin, S, X, -0.1)
    fit = S.sum(-1).pow(2).mean()
    eik = (math.sqrt(3) - 1) ** 2
    torch.testing.assert_close(f(lin, S, X), fit + 0.1 * eik)  # default lam 0.1
    torch.testing.assert_close(f(lin, S, X, 0.0), fit)
    torch.testing.assert_close(f(lin, S, X, 2.0), fit + 2.0 * eik)


# ---- meshes ------------------------------------------------------------------------------------

def test_mesh_extraction_checks():
    v = torch.randn(3, 3, 3, dtype=F64)
    for fn in (im.marching_tetrahedra, im.marching_cubes):
        _raises(TypeError, r"^values: expected a torch.Tensor", fn, v.tolist())
        _raises(ValueError, r"^values: expected 3 dimensions", fn, v[0])
        _raises(ValueError, r"^values: need at least 2 samples per axis", fn, v[:1])
        _raises(ValueError, r"^values: need at least 2 samples per axis", fn, v[:, :, :1])
        _raises(ValueError, r"^level: must be finite", fn, v, float("inf"))
        _raises(TypeError, r"^level: expected a real number", fn, v, "0")
        _raises(ValueError, r"^spacing: must be > 0", fn, v, 0.0, 0.0)
        fn(v[:2, :2, :2])  # 2 samples per axis is enough
    _raises(ValueError, r"^spacing: expected a number or 3 numbers, got 2", im.marching_cubes, v, 0.0, (1.0, 1.0))
    _raises(ValueError, r"^spacing: must be > 0", im.marching_cubes, v, 0.0, (1.0, 0.0, 1.0))
    bad = v.clone()
    bad[1, 1, 1] = float("nan")
    _raises(ValueError, r"^values: contains NaN or infinite values", im.marching_cubes, bad)


def _single_crossing(fn, corner=(0, 0, 0), **kw):
    # one corner below the level: every vertex lies on an edge (of a cube or of a tet) from it
    v = torch.ones(2, 2, 2, dtype=F64)
    v[corner] = -1.0  # the crossing is halfway along each edge from the corner
    verts, faces = fn(v, **kw)
    return verts[faces].reshape(-1, 3)


@pytest.mark.parametrize("corner", [(0, 0, 0), (1, 1, 1), (0, 1, 1)])
@pytest.mark.parametrize("fn", [im.marching_tetrahedra, im.marching_cubes])
def test_mesh_one_corner_inside(fn, corner):
    # each vertex sits at the fraction of the way from the inside corner to another corner where
    # the linear interpolant crosses the level; marching cubes uses exactly the three axis edges
    P = torch.tensor(corner, dtype=F64)
    others = [torch.tensor(c, dtype=F64) for c in {(i, j, k) for i in range(2) for j in range(2) for k in range(2)}
              if c != corner]
    axes = [Q for Q in others if (Q - P).abs().sum() == 1]
    for kw, frac, scale in [({}, 0.5, 1.0), ({"spacing": 2.0}, 0.5, 2.0), ({"level": 0.5}, 0.75, 1.0)]:
        pts = _single_crossing(fn, corner, **kw)
        got = {tuple(round(c, 9) for c in p.tolist()) for p in pts}
        key = lambda Q: tuple(round(c, 9) for c in (scale * (P + frac * (Q - P))).tolist())  # noqa: E731
        want = {key(Q) for Q in (axes if fn is im.marching_cubes else others)}
        assert {key(Q) for Q in axes} <= got <= want


def _normals(verts, faces):
    tri = verts[faces]
    return tri.mean(1), torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


@pytest.mark.parametrize("fn", [im.marching_tetrahedra, im.marching_cubes])
def test_mesh_octahedron_around_one_inside_sample(fn):
    # one sample below the level in the middle of a 3^3 grid: the surface surrounds it, normals outwards
    v = torch.ones(3, 3, 3, dtype=F64)
    v[1, 1, 1] = -1.0
    verts, faces = fn(v)
    c, n = _normals(verts, faces)
    assert bool((((c - 1.0) * n).sum(-1) > 0).all())
    if fn is im.marching_cubes:  # one triangle per cube around the sample, the 6 axis midpoints shared
        assert faces.shape == (8, 3) and verts.shape == (6, 3)
        want = {tuple(float(1 + 0.5 * s * (a == k)) for k in range(3)) for a in range(3) for s in (-1, 1)}
        assert {tuple(p) for p in verts.tolist()} == want


def test_marching_cubes_no_cube_wraps_around_a_row():
    # (2, 3, 3): the sample at (0, 1, 0) is a corner of cubes (0, 0, 0) and (0, 1, 0) only; the flat
    # index of the base (0, 0, 2) would reach it through a wrap past the end of the row
    v = torch.ones(2, 3, 3, dtype=F64)
    v[0, 1, 0] = -1.0
    verts, faces = im.marching_cubes(v)
    assert faces.shape == (2, 3)
    assert {tuple(p) for p in verts.tolist()} == {(0.5, 1.0, 0.0), (0.0, 0.5, 0.0), (0.0, 1.5, 0.0), (0.0, 1.0, 0.5)}


# ---- the marching-cubes case table, rebuilt from the cube's geometry at test time --------------

def test_mc_cube_geometry():
    corners, edges, eid, faces = im._mc_cube_geometry()
    # corner c = 4 i + 2 j + k has grid offset (i, j, k)
    assert [4 * i + 2 * j + k for i, j, k in corners] == list(range(8))
    assert all(set(c) <= {0, 1} for c in corners)
    assert len(edges) == 12 and len({(lo, hi) for _, lo, hi in edges}) == 12
    for e, (a, lo, hi) in enumerate(edges):
        d = [corners[hi][q] - corners[lo][q] for q in range(3)]
        assert d == [int(q == a) for q in range(3)]
        assert eid[frozenset((lo, hi))] == e
    assert [a for a, _, _ in edges] == [0] * 4 + [1] * 4 + [2] * 4
    assert len(faces) == 6
    seen = set()
    for quad in faces:
        P = torch.tensor([corners[q] for q in quad], dtype=F64)
        fixed = [a for a in range(3) if len(set(P[:, a].tolist())) == 1]
        assert len(fixed) == 1 and len(set(quad)) == 4
        a = fixed[0]
        side = int(P[0, a])
        seen.add((a, side))
        # consecutive corners share an edge; counter-clockwise seen from outside: the normal points outwards
        for k in range(4):
            assert (P[(k + 1) % 4] - P[k]).abs().sum() == 1
        n = torch.linalg.cross(P[1] - P[0], P[2] - P[1])
        out = torch.zeros(3, dtype=F64)
        out[a] = 1.0 if side else -1.0
        assert (n * out).sum() > 0
    assert seen == {(a, s) for a in range(3) for s in (0, 1)}


SQUARE = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]  # a face's corners, counter-clockwise from outside


def _cross2(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def test_mc_face_segments():
    for face in im._MC_FACES:
        side_of = {im._MC_EDGE_ID[frozenset((face[k], face[(k + 1) % 4]))]: k for k in range(4)}
        mid = {e: tuple((SQUARE[k][q] + SQUARE[(k + 1) % 4][q]) / 2 for q in range(2)) for e, k in side_of.items()}
        for pattern in range(16):
            inside = [bool(pattern >> k & 1) for k in range(4)]
            case = sum(1 << face[k] for k in range(4) if inside[k])
            crossed = {im._MC_EDGE_ID[frozenset((face[k], face[(k + 1) % 4]))] for k in range(4)
                       if inside[k] != inside[(k + 1) % 4]}
            for connect02 in (False, True):
                segs = im._mc_face_segments(case, face, connect02)
                assert len(segs) == len(crossed) // 2
                assert sorted(e for s in segs for e in s) == sorted(crossed)
                for a, b in segs:
                    ka, kb = side_of[a], side_of[b]
                    shared = {ka, (ka + 1) % 4} & {kb, (kb + 1) % 4}
                    if shared:  # the segment cuts off one corner: on its right if inside, left if outside
                        (q,) = shared
                        cr = _cross2(mid[a], mid[b], SQUARE[q])
                        assert (cr < 0) == inside[q]
                        if sum(inside) == 2 and inside[0] == inside[2]:
                            # ambiguous: connect02 joins corners 0 and 2, so the cut-off corners are 1 and 3
                            assert (q % 2 == 1) == connect02
                    else:  # opposite sides: inside corners on the right, outside on the left
                        for q in range(4):
                            assert (_cross2(mid[a], mid[b], SQUARE[q]) < 0) == inside[q]


def _edge_mid(e):
    _, lo, hi = im._MC_EDGES[e]
    return torch.tensor([(a + b) / 2 for a, b in zip(im._MC_CORNERS[lo], im._MC_CORNERS[hi])], dtype=F64)


def test_mc_case_triangles_orientation():
    P = [torch.tensor(c, dtype=F64) for c in im._MC_CORNERS]
    cases = []
    for c in range(8):
        cases.append((1 << c, [c]))  # one corner inside
        cases.append((255 ^ (1 << c), [c]))  # one corner outside
    for _, lo, hi in im._MC_EDGES:
        cases.append(((1 << lo) | (1 << hi), [lo, hi]))  # two adjacent corners inside
    for case, special in cases:
        tris, centres = im._mc_case_triangles(case, 0)
        assert centres == []
        assert len(tris) == (1 if len(special) == 1 else 2)
        ref = sum(P[q] for q in special) / len(special)
        for tri in tris:
            p = torch.stack([_edge_mid(e) for e in tri])
            n = torch.linalg.cross(p[1] - p[0], p[2] - p[0])
            away = p.mean(0) - ref  # from the special corner(s) towards the triangle
            inside_special = bool(case >> special[0] & 1)
            # normals point from below the level (inside) to above it (outside)
            assert ((n * away).sum() > 0) == inside_special


def test_mc_build_table_rebuilt():
    counts, table, centres = im._mc_build_table()
    assert counts.dtype == torch.int64 and counts.shape == (256 * 64,)
    assert table.dtype == torch.int64 and table.shape == (256 * 64, 12, 3)
    assert centres.dtype == torch.bool and centres.shape == (256 * 64, 2, 12)
    row = torch.arange(12)
    used = row[None, :] < counts[:, None]  # (K, 12) the rows that hold triangles
    assert bool((table[~used] == -1).all()) and bool((table[used] >= 0).all()) and bool((table[used] < 14).all())
    assert counts[:64].sum() == 0 and counts[255 * 64:].sum() == 0
    cases = torch.arange(256 * 64) // 64
    for key in range(0, 256 * 64, 61):  # a spread of keys: each crossed edge of the case is a vertex, only those
        c = int(cases[key])
        crossed = {e for e, (_, lo, hi) in enumerate(im._MC_EDGES) if (c >> lo & 1) != (c >> hi & 1)}
        ids = set(table[key, : int(counts[key])].flatten().tolist())
        assert {i for i in ids if i < 12} == crossed
        for slot in range(2):
            assert (12 + slot in ids) == bool(centres[key, slot].any())
    # the decider matters on an ambiguous face (diagonal corners inside), and only there
    for c in range(1, 255):
        for f, quad in enumerate(im._MC_FACES):
            s = [c >> q & 1 for q in quad]
            ambiguous = s[0] == s[2] and s[1] == s[3] and s[0] != s[1]
            a = table[c * 64, : int(counts[c * 64])]
            b = table[c * 64 + (1 << f), : int(counts[c * 64 + (1 << f)])]
            assert (a.shape != b.shape or not torch.equal(a, b)) == ambiguous, (c, f)


def test_mesh_area_checks_and_values():
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [0, 1, 3]])
    _raises(TypeError, r"^verts: expected a torch.Tensor", im.mesh_area, verts.tolist(), faces)
    _raises(ValueError, r"^verts: expected 2 dimensions", im.mesh_area, verts[0], faces)
    _raises(ValueError, r"^faces: expected 2 dimensions", im.mesh_area, verts, faces[0])
    _raises(TypeError, r"^faces: expected an integer \(F, 3\) tensor", im.mesh_area, verts, faces.double())
    _raises(TypeError, r"^faces: expected an integer \(F, 3\) tensor", im.mesh_area, verts, faces[:, :2])
    _raises(ValueError, r"^verts: expected shape \(V, 3\)", im.mesh_area, verts[:, :2], faces)
    _raises(ValueError, r"^faces: indices must lie in \[0, 4\)", im.mesh_area, verts, faces + 1)
    _raises(ValueError, r"^faces: indices must lie in \[0, 4\)", im.mesh_area, verts, faces - 1)
    torch.testing.assert_close(im.mesh_area(verts, faces), torch.tensor(1.0 + 1.5, dtype=F64))
    torch.testing.assert_close(im.mesh_area(verts, faces.int()), torch.tensor(2.5, dtype=F64))


# ---- the secant method -------------------------------------------------------------------------

def test_secant_step_checks_and_values():
    a = t(1.0)
    for i, name in enumerate(["x0", "x1", "f0", "f1"]):
        args = [a, a, a, a]
        args[i] = 1.0
        _raises(TypeError, rf"^{name}: expected a torch.Tensor", im.secant_step, *args)
    # the root of the chord through (0, -1) and (2, 3) is 0.5; a flat chord keeps x1
    torch.testing.assert_close(im.secant_step(t(0.0, 1.0), t(2.0, 5.0), t(-1.0, 4.0), t(3.0, 4.0)), t(0.5, 5.0))


def test_secant_iterates_checks_and_values():
    x0, x1 = t(1.0, 0.0), t(2.0, 3.0)
    f = im.secant_iterates
    sq = lambda x: x * x - 2  # noqa: E731
    _raises(TypeError, r"^fn: expected a callable", f, None, x0, x1, 2)
    _raises(TypeError, r"^x0: expected a torch.Tensor", f, sq, [1.0], x1, 2)
    _raises(ValueError, r"^x1: expected shape \(2\)", f, sq, x0, x1[:1], 2)
    _raises(TypeError, r"^x1: dtype torch.float32 differs from x0's", f, sq, x0, x1.float(), 2)
    _raises(ValueError, r"^n_iter: must be >= 0", f, sq, x0, x1, -1)
    _raises(TypeError, r"^n_iter: expected an int", f, sq, x0, x1, 2.0)
    torch.testing.assert_close(f(sq, x0, x1, 0), torch.stack([x0, x1]))
    # by hand: x_{k+1} = x_k - f(x_k) (x_k - x_{k-1}) / (f(x_k) - f(x_{k-1}))
    xs = [x0.tolist(), x1.tolist()]
    for _ in range(3):
        a, b = xs[-2], xs[-1]
        xs.append([q - (q * q - 2) * (q - p) / ((q * q - 2) - (p * p - 2)) for p, q in zip(a, b)])
    out = f(sq, x0, x1, 3)
    assert out.shape == (5, 2)
    torch.testing.assert_close(out, torch.tensor(xs, dtype=F64))
    # secant: the last of 8 iterates by default
    slow = lambda x: torch.atan(x) - 1.0  # noqa: E731
    y0, y1 = t(-3.0), t(8.0)
    ys = [y0, y1]
    for _ in range(8):
        ys.append(im.secant_step(ys[-2], ys[-1], slow(ys[-2]), slow(ys[-1])))
    torch.testing.assert_close(im.secant(slow, y0, y1), ys[-1], rtol=0, atol=0)
    torch.testing.assert_close(im.secant(slow, y0, y1, 2), ys[3], rtol=0, atol=0)


# ---- differentiable volumetric rendering -------------------------------------------------------

O = torch.tensor([[0.0, 0.0, -3.0], [0.0, 5.0, -3.0]], dtype=F64)  # one ray hits the unit sphere, one misses
W = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=F64)


def test_ray_march_checks():
    f = im.ray_march
    _raises(TypeError, r"^fn: expected a callable", f, None, O, W, 0.0, 6.0)
    _raises(ValueError, r"^origins: expected shape \(\.\.\., 3\)", f, FN, O[:, :2], W[:, :2], 0.0, 6.0)
    _raises(ValueError, r"^dirs: expected shape \(2, 3\)", f, FN, O, W[:1], 0.0, 6.0)
    _raises(TypeError, r"^dirs: dtype torch.float32 differs from origins's", f, FN, O, W.float(), 0.0, 6.0)
    _raises(TypeError, r"^t_near: expected a real number", f, FN, O, W, None, 6.0)
    _raises(TypeError, r"^t_far: expected a real number", f, FN, O, W, 0.0, None)
    _raises(ValueError, r"^t_far: must be greater than t_near", f, FN, O, W, 6.0, 6.0)
    _raises(ValueError, r"^n_steps: must be >= 2", f, FN, O, W, 0.0, 6.0, 1)
    _raises(ValueError, r"^level: must be finite", f, FN, O, W, 0.0, 6.0, 5, float("nan"))


def test_ray_march_values():
    # depths 0, 1.5, 3, 4.5, 6: sdf 2, 0.5, -1, 0.5, 2 along the first ray
    t0, t1, hit = im.ray_march(FN, O, W, 0.0, 6.0, 5)
    torch.testing.assert_close(t0[0], torch.tensor(1.5, dtype=F64))
    torch.testing.assert_close(t1[0], torch.tensor(3.0, dtype=F64))
    assert hit.tolist() == [True, False]
    # at level 0.75, sdf - level is 1.25, -0.25, ...: the first crossing is between depths 0 and 1.5
    t0, t1, hit = im.ray_march(FN, O, W, 0.0, 6.0, 5, 0.75)
    assert (t0[0].item(), t1[0].item()) == (0.0, 1.5) and hit[0]
    # two steps: the bracket is [t_near, t_far]
    t0, t1, hit = im.ray_march(lambda p: p[..., 2], O, W, 0.0, 6.0, 2)
    assert t0.tolist() == [0.0, 0.0] and t1.tolist() == [6.0, 6.0] and hit.tolist() == [True, True]
    # default 64 steps over [0, 6.3]: spacing 0.1, the crossing at depth 2 lies in [1.9 + eps, 2.0 + eps]
    t0, t1, _ = im.ray_march(lambda p: p[..., 2] + 1.05, O, W, 0.0, 6.3)
    torch.testing.assert_close(t0[0], torch.tensor(1.9, dtype=F64))
    torch.testing.assert_close(t1[0], torch.tensor(2.0, dtype=F64))


def _ball(p, r):
    return torch.linalg.vector_norm(p, dim=-1) - r


def test_surface_depth_checks():
    r = t(1.0)
    for f in (im.surface_depth, im.surface_depth_unrolled):
        _raises(TypeError, r"^fn: expected a callable", f, None, O, W, r, t_near=0.0, t_far=6.0)
        _raises(ValueError, r"^origins: expected shape", f, _ball, O[:, :2], W, r, t_near=0.0, t_far=6.0)
        _raises(ValueError, r"^dirs: expected shape \(2, 3\)", f, _ball, O, W[:1], r, t_near=0.0, t_far=6.0)
        _raises(TypeError, r"^dirs: dtype", f, _ball, O, W.float(), r, t_near=0.0, t_far=6.0)
        _raises(TypeError, r"^theta\[0\]: expected a torch.Tensor", f, _ball, O, W, 1.0, t_near=0.0, t_far=6.0)
        _raises(TypeError, r"^theta\[1\]: expected a floating-point", f, lambda p, a, b: _ball(p, a), O, W, r,
                torch.tensor(1), t_near=0.0, t_far=6.0)
        _raises(ValueError, r"^n_iter: must be >= 0", f, _ball, O, W, r, t_near=0.0, t_far=6.0, n_iter=-1)
    _raises(TypeError, r"^color_fn: expected a callable", im.dvr_render, _ball, None, O, W, r, t_near=0.0, t_far=6.0)


@pytest.mark.parametrize("unrolled", [False, True])
def test_surface_depth_values_and_gradients(unrolled):
    f = im.surface_depth_unrolled if unrolled else im.surface_depth
    r = t(1.0).requires_grad_(True)
    o = O[:1].clone().requires_grad_(True)
    w = W[:1].clone().requires_grad_(True)
    d, hit = f(_ball, o, w, r, t_near=0.0, t_far=6.0)
    assert hit.tolist() == [True]
    torch.testing.assert_close(d, t(2.0))
    d.sum().backward()
    # depth = (-o_z - r) / w_z on the axis: d/dr = -1, d/do = (0, 0, -1), d/dw = (0, 0, -2)
    torch.testing.assert_close(r.grad, t(-1.0))
    torch.testing.assert_close(o.grad, torch.tensor([[0.0, 0.0, -1.0]], dtype=F64))
    torch.testing.assert_close(w.grad, torch.tensor([[0.0, 0.0, -2.0]], dtype=F64))


def test_surface_depth_level_and_iterations():
    r = t(1.0)
    # level 0.5: |p| = 1.5, depth 1.5
    d, _ = im.surface_depth(_ball, O[:1], W[:1], r, t_near=0.0, t_far=6.0, level=0.5)
    torch.testing.assert_close(d, t(1.5))
    d, _ = im.surface_depth_unrolled(_ball, O[:1], W[:1], r, t_near=0.0, t_far=6.0, level=0.5)
    torch.testing.assert_close(d, t(1.5))
    # n_iter = 0: the bracket's far end t1 (5 steps over [0, 6]: the bracket is [1.5, 3])
    for f in (im.surface_depth, im.surface_depth_unrolled):
        d, _ = f(_ball, O[:1], W[:1], r, t_near=0.0, t_far=6.0, n_steps=5, n_iter=0)
        torch.testing.assert_close(d, t(3.0))
        d, _ = f(_ball, O[:1], W[:1], r, t_near=0.0, t_far=6.0, n_steps=5, n_iter=1)
        # one secant step on the bracket [1.5, 3] with sdf 0.5, -1: 3 - (-1)(1.5)/(-1.5) = 2
        torch.testing.assert_close(d, t(2.0))


def test_dvr_render_and_functional():
    r = t(1.0)
    col, hit = im.dvr_render(_ball, lambda p: p * 2, O, W, r, t_near=0.0, t_far=6.0, level=0.0)
    assert hit.tolist() == [True, False]
    torch.testing.assert_close(col[0], t(0.0, 0.0, -2.0))
    col, _ = im.dvr_render(_ball, lambda p: p, O[:1], W[:1], r, t_near=0.0, t_far=6.0, level=0.5)
    torch.testing.assert_close(col[0], t(0.0, 0.0, -1.5))
    _raises(TypeError, r"^module: expected an nn.Module", im.functional, lambda p: p)
    torch.manual_seed(0)
    lin = nn.Linear(3, 1).double()
    fn, params = im.functional(lin)
    x = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(fn(x, *params), lin(x))
    torch.testing.assert_close(fn(x, *[2 * p for p in params]), x @ (2 * lin.weight.T) + 2 * lin.bias)


# ---- degenerate inputs (sweep) -----------------------------------------------------------------

def test_plane_normal_of_any_finite_scale():
    """A tiny normal's squared norm underflowed to 0 ('must be non-zero' for a non-zero normal); an infinite
    or NaN normal gave NaN distances. The distance does not depend on the normal's scale."""
    x = torch.stack([t(1.0, 2.0, 3.0), t(0.0, 0.0, -1.0)])
    for scale in (1e-200, 1e200):
        torch.testing.assert_close(im.sdf_plane(x, scale * t(0.0, 0.0, 2.0), scale * 2.0), t(4.0, 0.0))
    _raises(ValueError, r"^normal: must be non-zero", im.sdf_plane, x, t(math.inf, 0.0, 1.0))
    _raises(ValueError, r"^normal: must be non-zero", im.sdf_plane, x, t(math.nan, 0.0, 1.0))


def test_grid_points_extreme_bound_and_bad_dtype_or_device():
    """bound near the float64 maximum overflowed linspace's step (inf / NaN points); an integer dtype gave a
    silently truncated grid, a string dtype a TypeError from linspace, a bad device a RuntimeError."""
    g = im.grid_points(3, 1e308)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g[2, 1, 0], t(1e308, 0.0, -1e308))
    _raises(TypeError, r"^dtype", im.grid_points, 4, 1.0, dtype=torch.long)
    _raises(TypeError, r"^dtype", im.grid_points, 4, 1.0, dtype="float")
    _raises(ValueError, r"^device", im.grid_points, 4, 1.0, device="nope")


def test_conditioned_networks_check_dtype_and_device():
    """x in another dtype than the layers, or z on another device than x, were RuntimeErrors inside a layer;
    z in float32 with float64 x was silently promoted."""
    for cls in (im.DeepSDF, im.OccupancyNetwork):
        net = cls(2, 4, 1).double()
        x, z = torch.zeros(2, 5, 3, dtype=F64), torch.zeros(2, 2, dtype=F64)
        _raises(TypeError, r"^x: dtype torch.float32 differs from the network's", net, x.float(), z.float())
        _raises(ValueError, r"^x: on meta", net, x.to("meta"), z.to("meta"))
        _raises(ValueError, r"^z: on meta", net, x, z.to("meta"))
        _raises(TypeError, r"^z: dtype", net, x, z.float())
        assert net(x[:0], z[:0]).shape == (0, 5)  # an empty batch stays fine


def test_mean_losses_refuse_empty_inputs_and_nan_targets():
    """The mean over no element was a silent NaN; a NaN occupancy target passed the [0, 1] check."""
    e = torch.zeros(0, dtype=F64)
    _raises(ValueError, r"^logits: the mean loss needs at least one", im.occupancy_loss, e, e)
    _raises(ValueError, r"^pred: the mean loss needs at least one", im.sdf_loss, e, e)
    _raises(ValueError, r"^occupancy: targets", im.occupancy_loss, t(0.3), t(math.nan))
    S = torch.randn(5, 3, dtype=F64)
    _raises(ValueError, r"^surface_points: .* at least one point", im.point_cloud_loss, FN, S[:0], S)
    _raises(ValueError, r"^space_points: .* at least one point", im.point_cloud_loss, FN, S, S[:0])


def test_spatial_gradient_of_a_constant_and_of_bad_outputs():
    """A field that does not depend on x (a constant, or one of parameters only) has gradient zero: this was
    autograd's RuntimeError 'does not require grad'; a non-tensor or integer output was an AttributeError or
    that RuntimeError."""
    x = torch.randn(4, 3, dtype=F64)
    assert torch.equal(im.spatial_gradient(lambda p: torch.ones(p.shape[:-1], dtype=F64), x), torch.zeros(4, 3, dtype=F64))
    w = torch.ones(1, dtype=F64, requires_grad=True)
    assert torch.equal(im.spatial_gradient(lambda p: w * torch.ones(p.shape[:-1], dtype=F64), x), torch.zeros(4, 3, dtype=F64))
    # the eikonal loss of a constant field is then lam * (0 - 1)^2
    torch.testing.assert_close(im.point_cloud_loss(lambda p: torch.zeros(p.shape[0], dtype=F64), x, x), torch.tensor(0.1, dtype=F64))
    _raises(TypeError, r"^f: expected to return a floating-point tensor", im.spatial_gradient, lambda p: [1.0], x)
    _raises(TypeError, r"^f: expected to return a floating-point tensor", im.spatial_gradient, lambda p: p.long().sum(-1), x)


def test_marching_tetrahedra_refuses_non_finite_values_like_marching_cubes():
    """NaN or inf samples gave NaN vertices (marching_cubes already refused them)."""
    v = torch.randn(3, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    for bad in (math.nan, math.inf):
        w = v.clone()
        w[1, 1, 1] = bad
        _raises(ValueError, r"^values: contains NaN or infinite values", im.marching_tetrahedra, w)


def test_mesh_area_faces_on_another_device():
    """faces on another device than verts was a RuntimeError (meta) or a result on the wrong device."""
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=F64)
    faces = torch.tensor([[0, 1, 2]])
    _raises(ValueError, r"^faces: on meta, but verts is on cpu", im.mesh_area, verts, faces.to("meta"))
    _raises(ValueError, r"^faces: on cpu, but verts is on meta", im.mesh_area, verts.to("meta"), faces)


def test_secant_is_elementwise_without_broadcasting():
    """Mismatched shapes were a RuntimeError or silently broadcast, mixed dtypes promoted, another device a
    RuntimeError; fn returning one value for all x (a sum) broadcast into wrong iterates."""
    a = t(0.0, 1.0)
    _raises(ValueError, r"^x0: expected shape \(2\)", im.secant_step, t(0.0), a, a, a + 1)
    _raises(ValueError, r"^f1: expected shape \(2\)", im.secant_step, a, a, a, t(1.0, 2.0, 3.0))
    _raises(TypeError, r"^f0: dtype torch.float32 differs from x1's", im.secant_step, a, a, a.float(), a + 1)
    _raises(ValueError, r"^f1: on meta", im.secant_step, a, a, a, a.to("meta"))
    x0, x1 = t(1.0, 0.0), t(2.0, 3.0)
    _raises(ValueError, r"^fn: expected to return shape \(2,\)", im.secant_iterates, lambda x: (x * x - 2).sum(), x0, x1, 2)
    _raises(TypeError, r"^fn: expected to return a tensor", im.secant_iterates, lambda x: [1.0], x0, x1, 2)
    _raises(TypeError, r"^fn: returned torch.float32", im.secant_iterates, lambda x: (x * x - 2).float(), x0, x1, 2)


def test_ray_march_checks_fn_values_and_ignores_nan_steps():
    """fn values of the wrong shape came back as a bracket of that shape (or an IndexError for a scalar); a
    non-tensor was "'float' object is not subscriptable". NaN's sign is unequal to every sign, so a field NaN
    everywhere 'hit' at the first step; now NaN steps are no crossing, and the real crossing is still found."""
    _raises(ValueError, r"^fn: expected values \(R, n_steps\)", im.ray_march, lambda p: p, O, W, 0.0, 6.0)
    _raises(ValueError, r"^fn: expected values \(R, n_steps\)", im.ray_march, lambda p: p.sum(), O, W, 0.0, 6.0)
    _raises(TypeError, r"^fn: expected to return a tensor", im.ray_march, lambda p: 1, O, W, 0.0, 6.0)
    _, _, hit = im.ray_march(lambda p: FN(p) * math.nan, O, W, 0.0, 6.0, 5)
    assert hit.tolist() == [False, False]
    # NaN in front of the sphere (z < -2.5): the crossing at depth 2 is bracketed by [1.5, 3]
    nan_front = lambda p: torch.where(p[..., 2] < -2.5, math.nan, FN(p))  # noqa: E731
    t0, t1, hit = im.ray_march(nan_front, O, W, 0.0, 6.0, 5)
    assert hit.tolist() == [True, False] and (t0[0].item(), t1[0].item()) == (1.5, 3.0)


def test_depth_functions_need_ray_batches_and_theta_on_their_device():
    """Rays (3,) were a RuntimeError inside torch.stack; theta on another device a RuntimeError inside fn;
    a colour function with the wrong output was returned as the render."""
    r = t(1.0)
    for f in (im.surface_depth, im.surface_depth_unrolled):
        _raises(ValueError, r"^origins: expected 2 dimensions", f, _ball, O[0], W[0], r, t_near=0.0, t_far=6.0)
        _raises(ValueError, r"^theta\[0\]: on meta", f, _ball, O, W, r.to("meta"), t_near=0.0, t_far=6.0)
        _raises(ValueError, r"^fn: expected values", f, lambda p, r: _ball(p, r)[..., None], O, W, r,
                t_near=0.0, t_far=6.0)
    _raises(ValueError, r"^origins: expected 2 dimensions", im.ray_march, FN, O[None], W[None], 0.0, 6.0)
    _raises(ValueError, r"^color_fn: expected colours", im.dvr_render, _ball, lambda p: p[:, :1], O, W, r, t_near=0.0, t_far=6.0)
    _raises(ValueError, r"^color_fn: expected colours", im.dvr_render, _ball, lambda p: 1, O, W, r, t_near=0.0, t_far=6.0)
