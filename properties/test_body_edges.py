"""Edge cases and bad inputs of impl/body.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/body.py --sample 60 --seed 1``:
an input check that was dropped or names the wrong argument, a tensor created in torch's default
dtype instead of the input's, a seeded population that reads the global random state, the blend
profile of the synthetic model's skinning weights. Expected values come from the definitions and
small cases computed by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

from impl import body as B
from spec.testing import default_dtype

F64 = torch.float64


@functools.lru_cache(maxsize=None)
def tiny_model() -> B.BodyModel:
    """The smallest synthetic model: 28 tubes of 2 rings x 3 points (168 vertices), 2 betas."""
    return B.synthetic_body_model(n_rings=2, n_around=3, num_betas=2, n_people=4, seed=0, dtype=F64)




# ---- the body model's fields ----------------------------------------------------------------------

@pytest.mark.parametrize("bad", [lambda v: v[:, :2], lambda v: v[:, 0], lambda v: v[None]],
                         ids=["two-coords", "one-dim", "three-dim"])
def test_body_model_rejects_a_template_that_is_not_points(bad):
    m = tiny_model()
    fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.init}
    fields["v_template"] = bad(m.v_template)
    with pytest.raises(ValueError, match="^v_template:"):
        B.BodyModel(**fields)


# ---- LBS: the weights' rank is checked under the weights' own name -------------------------------

@pytest.mark.parametrize("fn", [B.lbs, B.lbs_reference])
@pytest.mark.parametrize("shape", [(5,), (1, 1, 5, 2)])
def test_lbs_weights_of_the_wrong_rank_named(fn, shape):
    verts = torch.zeros(1, 5, 3, dtype=F64)
    T = torch.eye(4, dtype=F64).expand(1, 2, 4, 4)
    w = torch.full(shape, 0.5, dtype=F64)
    with pytest.raises(ValueError, match="^weights:"):
        fn(verts, w, T)


# ---- tensors made inside follow the input's dtype, not torch's default ---------------------------

def test_pose_features_keep_the_rotations_dtype():
    R = B.rodrigues(0.3 * torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0)))   # float32
    want = (R[:, 1:] - torch.eye(3)).flatten(1)                                               # by definition
    with default_dtype(F64):
        f = B.pose_features(R)
    assert f.dtype == torch.float32
    torch.testing.assert_close(f, want, rtol=0, atol=0)
    # half precision too (an identity made in float32 would promote the features to float32)
    f16 = B.pose_features(R.to(torch.bfloat16))
    assert f16.dtype == torch.bfloat16


def test_levenberg_marquardt_keeps_the_params_dtype():
    # a linear least-squares problem: r(p) = A p - y; LM from 0 reaches the normal-equation solution
    A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    y = torch.tensor([[1.0, 2.0, 2.0]])

    def residual(p, t):
        return A @ p - t

    start = torch.zeros(1, 2)                        # float32, made before the default changes
    with default_dtype(F64):
        p, cost = B.levenberg_marquardt(residual, start, y, 20)
    assert p.dtype == torch.float32 and cost.dtype == torch.float32
    # by hand: A^T A = [[3, 3], [3, 5]], A^T y = [5, 6] -> p = (7/6, 1/2), residual (1/6, -1/3, 1/6)
    torch.testing.assert_close(p, torch.tensor([[7 / 6, 0.5]]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cost, torch.tensor([1 / 6]), rtol=1e-4, atol=1e-6)


# ---- tube geometry: bad shapes named ---------------------------------------------------------------

def test_tube_vertices_bad_shapes_named():
    ok = torch.zeros(1, 2, 3, dtype=F64)
    r = torch.ones(1, 2, dtype=F64)
    cases = [
        (lambda: B.tube_vertices(ok[0], ok[0], r[0], 2, 3), "starts"),             # no batch axis
        (lambda: B.tube_vertices(torch.zeros(1, 2, 4, dtype=F64), torch.zeros(1, 2, 4, dtype=F64), r, 2, 3),
         "starts"),                                                                 # 4-D points
        (lambda: B.tube_vertices(ok, ok[:, :1], r, 2, 3), "ends"),
        (lambda: B.tube_vertices(ok, ok, r[:, :1], 2, 3), "radii"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            fn()


# ---- the synthetic population and model -------------------------------------------------------------

def test_synthetic_population_is_a_function_of_its_seed_only():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a = B.synthetic_population(6, seed=3)
        torch.manual_seed(12345)                     # the global random state must not matter
        torch.randn(100)
        b = B.synthetic_population(6, seed=3)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    c = B.synthetic_population(6, seed=4)
    assert not torch.equal(a[0], c[0])


def test_synthetic_population_default_seed_is_zero():
    for x, y in zip(B.synthetic_population(5), B.synthetic_population(5, seed=0)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_synthetic_population_and_model_bad_input_named():
    cases = [
        (lambda: B.synthetic_population(3, seed=-1), "seed"),
        (lambda: B.synthetic_body_model(num_betas=0), "num_betas"),
        (lambda: B.synthetic_body_model(num_betas=3, n_people=3), "n_people"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            fn()


def test_synthetic_skinning_weights_blend_symmetrically_over_the_last_half():
    """A bone's vertices follow its start joint up to the middle, then blend towards the end joint
    with a symmetric ramp, reaching 1/2 at the end joint: halfway through the ramp (three quarters
    along the bone) the blend is half done, weight 1/4 on the end joint. Stations s = 0, 1/4, ..., 1."""
    m = B.synthetic_body_model(n_rings=5, n_around=3, num_betas=1, n_people=3, seed=0, dtype=F64)
    per_tube = 5 * 3
    end_w = torch.tensor([0.0, 0.0, 0.0, 0.25, 0.5], dtype=F64).repeat_interleave(3)
    for t, (a, b) in enumerate(B._segments()):
        rows = m.weights[t * per_tube:(t + 1) * per_tube]
        if b >= 0:
            torch.testing.assert_close(rows[:, b], end_w, rtol=0, atol=1e-15)
            torch.testing.assert_close(rows[:, a], 1 - end_w, rtol=0, atol=1e-15)
        else:                                        # a leaf end follows its joint rigidly
            torch.testing.assert_close(rows[:, a], torch.ones(per_tube, dtype=F64), rtol=0, atol=0)
    # on a finer grid the ramp is symmetric about its midpoint: blend(c) + blend(1 - c) = 1/2
    m9 = B.synthetic_body_model(n_rings=9, n_around=3, num_betas=1, n_people=3, seed=0, dtype=F64)
    w = m9.weights[:9 * 3:3, 1]                      # tube 0 (pelvis -> left hip), one vertex per station
    c_half = w[4:]                                   # stations s = 1/2 .. 1: c = 0, 1/4, 1/2, 3/4, 1
    torch.testing.assert_close(c_half + c_half.flip(0), torch.full_like(c_half, 0.5), rtol=0, atol=1e-15)


# ---- found by a second sample (seed 2): more checks and their names -------------------------------

def _fields(m):
    return {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.init}


def test_body_model_checks_the_joint_regressor():
    m = tiny_model()
    V, K = m.v_template.shape[0], m.J_regressor.shape[0]
    # one column too many (a regressor for another mesh), and a flat vector
    for bad in (torch.cat([m.J_regressor, torch.zeros(K, 1, dtype=F64)], 1), m.J_regressor[0]):
        with pytest.raises(ValueError, match="^J_regressor:"):
            B.BodyModel(**{**_fields(m), "J_regressor": bad})
    # the regressor's dtype is checked against the template's like every other field
    with pytest.raises(TypeError, match=r"^J_regressor: dtype torch.float32 differs from v_template's torch.float64$"):
        B.BodyModel(**{**_fields(m), "J_regressor": m.J_regressor.float()})
    assert V == m.J_regressor.shape[1]


def test_body_model_pose_feature_count_message():
    m = tiny_model()
    bad = m.posedirs[:, :, :-1]                                  # 206 features for 24 joints
    with pytest.raises(ValueError, match=r"^posedirs: expected 9 \* \(K - 1\) = 207 pose features, got 206$"):
        B.BodyModel(**{**_fields(m), "posedirs": bad})


def test_pictorial_stiffness_shape_checked_for_energy_and_map():
    P, L = 3, 4
    unary = torch.zeros(1, P, L, dtype=F64)
    positions = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    parents = [-1, 0, 1]
    offsets = torch.zeros(P, 2, dtype=F64)
    labels = torch.zeros(1, P, dtype=torch.long)
    for bad in (torch.ones(P + 1, 2, dtype=F64), torch.ones(P, 3, dtype=F64)):
        with pytest.raises(ValueError, match="^stiffness:"):
            B.pictorial_energy(unary, positions, parents, offsets, bad, labels)
        with pytest.raises(ValueError, match="^stiffness:"):
            B.pictorial_map(unary, positions, parents, offsets, bad)
        with pytest.raises(ValueError, match="^stiffness:"):
            B.pictorial_brute_force(unary, positions, parents, offsets, bad)


def test_multistage_net_and_learned_update_bad_shapes_named():
    net = B.MultiStageHeatmapNet(2, 3, stages=2, hidden=4, kernel=3)
    with pytest.raises(ValueError, match="^x:"):
        net(torch.zeros(2, 8, 8))                                # no batch axis
    pose = torch.zeros(1, 24, 3, dtype=F64)
    with pytest.raises(ValueError, match="^grad:"):
        B.learned_update_step(lambda g, p, x: -g, pose, torch.zeros(1, 24, 2, dtype=F64), torch.zeros(1, dtype=F64))


def test_rodrigues_places_its_tensors_on_the_input_device_not_the_default_one():
    r = torch.tensor([[0.3, -0.2, 0.5], [0.0, 0.0, 0.0]], dtype=F64)
    want = torch.linalg.matrix_exp(B.skew(r))                    # exp([r]_x), an independent reference
    with torch.device("meta"):                                   # a default device other than the input's
        R = B.rodrigues(r)
    assert R.device == r.device
    torch.testing.assert_close(R, want, rtol=1e-14, atol=1e-15)


# ---- found by a third sample (seed 3) --------------------------------------------------------------

def test_more_bad_shapes_named():
    cases = [
        (lambda: B.spring_cost(torch.zeros(4, 3, dtype=F64), torch.zeros(2, 2, dtype=F64),
                               torch.ones(2, 2, dtype=F64)), "positions"),
        (lambda: B.regress_joints(torch.zeros(24, dtype=F64), torch.zeros(1, 24, 3, dtype=F64)), "J_regressor"),
        # a flat feature vector: one feature per sample must still be a column
        (lambda: B.fit_ridge(torch.zeros(6, dtype=F64), torch.zeros(6, 2, dtype=F64)), "features"),
        (lambda: B.crop_patches(torch.zeros(1, 5, 5, dtype=F64), torch.zeros(1, 2, dtype=F64), -1), "size"),
        (lambda: B.MultiStageHeatmapNet(0, 3), "in_channels"),
        (lambda: B.MultiStageHeatmapNet(2, 3, hidden=0), "hidden"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            fn()


def test_rodrigues_keeps_the_input_dtype_under_another_default():
    r = 0.4 * torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    for dtype, default in ((torch.float32, F64), (torch.bfloat16, torch.float32)):
        with default_dtype(default):
            R = B.rodrigues(r.to(dtype))
        assert R.dtype == dtype
    want = torch.linalg.matrix_exp(B.skew(r.double()))          # exp([r]_x)
    with default_dtype(F64):
        torch.testing.assert_close(B.rodrigues(r), want.float(), rtol=1e-5, atol=1e-6)


def test_synthetic_population_does_not_depend_on_the_default_dtype():
    with default_dtype(torch.float32):
        a = B.synthetic_population(7, seed=2, dtype=F64)
    with default_dtype(F64):
        b = B.synthetic_population(7, seed=2, dtype=F64)
    for x, y in zip(a, b):
        assert x.dtype == F64
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_synthetic_population_has_a_height_and_a_girth_factor_per_person():
    """A per-person factor shared by every bone makes bones of different groups (left knee in the
    legs, left elbow in the arms) vary together across people; without it they would be
    independent (correlation within about 1 / sqrt(N) = 0.02 of zero)."""
    length, girth = B.synthetic_population(2000, seed=0)
    knee, elbow = 4, 18
    for x in (length, girth):
        corr = torch.corrcoef(torch.stack([x[:, knee], x[:, elbow]]))[0, 1]
        assert corr > 0.3


def test_closed_tube_orientation_does_not_depend_on_scale():
    """The faces are outward for any radius; at radius 1e-200 the volume (~ r^2) underflows to 0,
    which must not read as an inward mesh."""
    v1, f1 = B.closed_tube(1.0, 1.0, 2, 3)
    assert B.mesh_volume(v1[None], f1)[0] > 0
    _, f_tiny = B.closed_tube(1e-200, 1.0, 2, 3)
    assert torch.equal(f_tiny, f1)


def test_implicit_body_sdf_uses_softplus_with_beta_100():
    """IGR's smooth ReLU, softplus_100(z) = log(1 + exp(100 z)) / 100. With one hidden unit reading
    x_0 and identity weights, f(0) = softplus_100(softplus_100(0)) = softplus_100(ln 2 / 100)
    = ln(1 + 2) / 100."""
    net = B.AnimatableImplicitBody(joints=2, hidden=1).double()
    with torch.no_grad():
        for lin in (net.sdf_net[0], net.sdf_net[2], net.sdf_net[4]):
            lin.weight.zero_()
            lin.weight[0, 0] = 1.0
            lin.bias.zero_()
    f = net.sdf(torch.zeros(1, 1, 3, dtype=F64))
    torch.testing.assert_close(f, torch.full((1, 1), math.log(3) / 100, dtype=F64), rtol=1e-14, atol=0)
