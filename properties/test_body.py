"""Properties of impl/body.py against the notes' "Parametric body models" (lines 700-751).

Independent references: SciPy's Rotation (Rodrigues), torch.linalg.matrix_exp, NumPy
re-implementations of LBS / SMPL written here with explicit inverse rest transforms and loops,
NumPy's SVD (PCA), brute-force enumeration (pictorial structures), torch.optim.SGD (learned update).
"""

from __future__ import annotations

import functools
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from impl import body as B
from spec.testing import generator, randn, seeds, tol

F64 = torch.float64


@functools.lru_cache(maxsize=None)
def small_model() -> B.BodyModel:
    """A small synthetic SMPL-structured model (896 vertices) for the fast tests."""
    return B.synthetic_body_model(n_rings=4, n_around=8, n_people=60, seed=0, dtype=F64)


def random_pose(n, seed, scale=0.4, dtype=F64):
    return scale * randn(n, 24, 3, seed=seed, dtype=dtype)


# ------------------------------------------------------------------ pictorial structures

def _random_ps(seed, P, side, batch=2, dtype=F64, device="cpu"):
    g = generator(seed)
    parents = [-1] + [int(torch.randint(0, k, (1,), generator=g)) for k in range(1, P)]
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    positions = torch.stack([xs, ys], -1).reshape(-1, 2).to(dtype)
    unary = torch.rand(batch, P, side * side, generator=g, dtype=dtype) * 3
    offsets = torch.randn(P, 2, generator=g, dtype=dtype)
    stiffness = torch.rand(P, 2, generator=g, dtype=dtype)
    return [t.to(device) for t in (unary, positions)] + [parents] + [t.to(device) for t in (offsets, stiffness)]


@pytest.mark.claim("body.pictorial-structure")
@settings(max_examples=10)
@given(seed=seeds(), P=st.integers(1, 4), side=st.integers(1, 3))
def test_pictorial_map_equals_brute_force(seed, P, side):
    unary, pos, parents, off, k = _random_ps(seed, P, side)
    labels, energy = B.pictorial_map(unary, pos, parents, off, k)
    _, e_brute = B.pictorial_brute_force(unary, pos, parents, off, k)
    torch.testing.assert_close(energy, e_brute, **tol(F64))
    # the labels returned achieve the energy returned
    torch.testing.assert_close(B.pictorial_energy(unary, pos, parents, off, k, labels), energy, **tol(F64))


@pytest.mark.claim("body.pictorial-structure")
def test_pictorial_energy_is_unary_plus_springs():
    unary, pos, parents, off, k = _random_ps(3, 4, 3, batch=1)
    labels = torch.tensor([[0, 4, 8, 2]])
    x = pos[labels[0]].numpy()
    want = sum(unary[0, p, labels[0, p]].item() for p in range(4))
    for p in range(1, 4):
        r = x[p] - x[parents[p]] - off[p].numpy()
        want += float((k[p].numpy() * r * r).sum())
    assert B.pictorial_energy(unary, pos, parents, off, k, labels).item() == pytest.approx(want, rel=1e-12)


@pytest.mark.claim("body.pictorial-structure")
def test_pictorial_springs_pull_parts_to_rest_offsets():
    # No image evidence and the root pinned by its unary: the springs alone place every child at
    # parent + rest offset (energy 0) when the grid contains that place.
    side = 7
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    pos = torch.stack([xs, ys], -1).reshape(-1, 2).to(F64)
    parents = [-1, 0, 1, 0]
    off = torch.tensor([[0, 0], [1, 2], [2, -1], [-2, 0]], dtype=F64)
    unary = torch.zeros(1, 4, side * side, dtype=F64)
    unary[0, 0] = 1.0
    unary[0, 0, 3 * side + 3] = 0.0
    labels, energy = B.pictorial_map(unary, pos, parents, off, torch.ones(4, 2, dtype=F64))
    x = pos[labels[0]]
    assert energy.item() == 0.0
    assert x[0].tolist() == [3, 3] and x[1].tolist() == [4, 5] and x[2].tolist() == [6, 4] and x[3].tolist() == [1, 3]


@pytest.mark.claim("body.pictorial-structure")
def test_pictorial_map_float32_on_device(device):
    unary, pos, parents, off, k = _random_ps(11, 4, 3, batch=3, dtype=torch.float32, device=device)
    labels, energy = B.pictorial_map(unary, pos, parents, off, k)
    _, e_brute = B.pictorial_brute_force(unary, pos, parents, off, k)
    assert labels.device == unary.device
    # float32 sums of <= 7 terms of size <= ~30: 1e-5 relative covers the rounding.
    torch.testing.assert_close(energy, e_brute, rtol=1e-5, atol=1e-5)


def test_pictorial_bad_input():
    unary, pos, parents, off, k = _random_ps(0, 3, 2)
    with pytest.raises(ValueError, match=r"^parents\b"):
        B.pictorial_map(unary, pos, [-1, 2, 0], off, k)
    with pytest.raises(ValueError, match=r"^positions\b"):
        B.pictorial_map(unary, pos[:-1], parents, off, k)
    with pytest.raises(ValueError, match=r"^stiffness\b"):
        B.spring_cost(pos, off, -k)
    with pytest.raises(TypeError, match=r"^unary\b"):
        B.pictorial_map(unary.long(), pos, parents, off, k)
    with pytest.raises(ValueError, match=r"^labels\b"):
        B.pictorial_energy(unary, pos, parents, off, k, torch.full((2, 3), 99))


# ------------------------------------------------------------------ heatmaps and regression

@pytest.mark.claim("body.heatmap-gaussian")
def test_gaussian_heatmap_target_and_probability():
    c = torch.tensor([[[3.25, 5.5], [0.0, 0.0]]], dtype=F64)
    h = B.gaussian_heatmap(c, 8, 10, 1.5)
    ys, xs = np.mgrid[0:8, 0:10]
    want = np.exp(-((xs - 3.25) ** 2 + (ys - 5.5) ** 2) / (2 * 1.5 ** 2))
    np.testing.assert_allclose(h[0, 0].numpy(), want, rtol=1e-12)
    assert h[0, 1, 0, 0].item() == 1.0                       # peak 1 at an integer centre
    p = B.gaussian_heatmap(c, 8, 10, 1.5, normalize=True)
    torch.testing.assert_close(p.sum((-1, -2)), torch.ones(1, 2, dtype=F64), **tol(F64))
    np.testing.assert_allclose(p[0, 0].numpy(), want / want.sum(), rtol=1e-12)
    # a centre far outside the image still gives a finite probability map
    far = B.gaussian_heatmap(torch.tensor([[[1e4, -1e4]]], dtype=F64), 8, 8, 0.5, normalize=True)
    assert torch.isfinite(far).all() and far.sum().item() == pytest.approx(1.0)


@pytest.mark.claim("body.heatmap-gaussian")
@settings(max_examples=10)
@given(seed=seeds())
def test_argmax_and_soft_argmax_decoding(seed):
    g = generator(seed)
    c = 12 + 16 * torch.rand(4, 3, 2, generator=g, dtype=F64)
    sigma = 1.2
    h = B.gaussian_heatmap(c, 40, 40, sigma)
    am = B.heatmap_argmax(h)
    assert ((am - c).abs() <= 0.5 + 1e-12).all()
    # softmax of the log-Gaussian is the normalised Gaussian; its mean is the centre up to
    # aliasing of the sampled Gaussian, O(exp(-2 pi^2 sigma^2)) ~ 1e-12 relative to a pixel, and
    # truncation at the border >= 12 px = 10 sigma away, O(exp(-50)).
    logits = h.clamp_min(1e-300).log()
    torch.testing.assert_close(B.soft_argmax(logits), c, rtol=0, atol=1e-9)


@pytest.mark.claim("body.heatmap-gaussian")
def test_soft_argmax_extreme_logits_and_device(device):
    x = 1e4 * randn(2, 3, 16, 16, seed=1, dtype=torch.float32, device=device)
    out = B.soft_argmax(x)
    assert torch.isfinite(out).all() and out.device == x.device
    # huge logits make the softmax one-hot: the soft-argmax becomes the argmax
    torch.testing.assert_close(out, B.heatmap_argmax(x), rtol=0, atol=1e-3)


def test_heatmap_bad_input():
    with pytest.raises(ValueError, match=r"^sigma\b"):
        B.gaussian_heatmap(torch.zeros(1, 1, 2), 4, 4, 0.0)
    with pytest.raises(ValueError, match=r"^centers\b"):
        B.gaussian_heatmap(torch.zeros(1, 1, 3), 4, 4, 1.0)
    with pytest.raises(ValueError, match=r"^height\b"):
        B.gaussian_heatmap(torch.zeros(1, 1, 2), 0, 4, 1.0)
    with pytest.raises(ValueError, match=r"^logits\b"):
        B.soft_argmax(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"^temperature\b"):
        B.soft_argmax(torch.zeros(1, 1, 4, 4), temperature=-1.0)
    with pytest.raises(ValueError, match=r"^heatmaps\b"):
        B.heatmap_argmax(torch.zeros(4, 4))


@pytest.mark.claim("body.heatmap-stages")
def test_multistage_structure_and_intermediate_supervision():
    torch.manual_seed(0)
    net = B.MultiStageHeatmapNet(in_channels=2, joints=3, stages=3, hidden=4, kernel=3)
    x = torch.randn(2, 2, 12, 12)
    outs = net(x)
    assert len(outs) == 3 and all(o.shape == (2, 3, 12, 12) for o in outs)
    # stage t sees stage t-1's beliefs: its input has C + J channels
    assert net.stages[1][0].in_channels == 2 + 3 and net.stages[0][0].in_channels == 2
    # changing only stage 1 changes stage 2's output (the beliefs are passed on)
    with torch.no_grad():
        before = net(x)[1].clone()
        net.stages[0][-1].bias += 1.0
        after = net(x)[1]
    assert (before - after).abs().max() > 1e-6
    # intermediate supervision: every stage's parameters get a gradient from the summed loss
    loss = B.multistage_loss(net(x), torch.rand(2, 3, 12, 12))
    loss.backward()
    for s in net.stages:
        assert s[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"^kernel\b"):
        B.MultiStageHeatmapNet(2, 3, kernel=4)
    with pytest.raises(ValueError, match=r"^x\b"):
        net(torch.randn(2, 5, 12, 12))
    with pytest.raises(TypeError, match=r"^heatmaps\b"):
        B.multistage_loss([], torch.rand(2, 3, 12, 12))


def _context_joints(n, seed, H=12, offset=6):
    """One-pixel 'image' of joint 0 at an integer c; joint 1 sits at c + (offset, 0) and is not drawn.

    With kernel 5 each stage's receptive field reaches 4 px (two 5x5 convs and a 1x1), so stage 1
    cannot see joint 0 from joint 1's place (6 px away); stage 2 reaches 8 px through stage 1's
    belief maps, so only a stage that reads the previous beliefs can place joint 1."""
    g = generator(seed)
    cx = torch.randint(1, H - offset - 1, (n,), generator=g)
    cy = torch.randint(1, H - 1, (n,), generator=g)
    img = torch.zeros(n, 1, H, H)
    img[torch.arange(n), 0, cy, cx] = 1.0
    c = torch.stack([cx, cy], -1).float()
    return img, B.gaussian_heatmap(torch.stack([c, c + torch.tensor([float(offset), 0.0])], 1), H, H, 1.0)


@pytest.mark.claim("body.heatmap-stages")
def test_trained_later_stage_refines_the_earlier_beliefs(record_property):
    # A trained two-stage net (intermediate supervision, Adam): stage 2 reads stage 1's beliefs
    # and its held-out heatmap error is far below stage 1's; the gain is on the joint that needs
    # context beyond one stage's receptive field. Kills a net whose later stages do not see the
    # previous beliefs, or whose later outputs are not their own.
    torch.manual_seed(0)
    net = B.MultiStageHeatmapNet(in_channels=1, joints=2, stages=2, hidden=6, kernel=5)
    x, y = _context_joints(256, 60)
    xt, yt = _context_joints(256, 61)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = generator(62)
    for _ in range(150):
        idx = torch.randint(0, 256, (32,), generator=g)
        loss = B.multistage_loss(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = torch.stack([((o - yt) ** 2).mean((0, 2, 3)) for o in net(xt)])   # (stage, joint)
    blind = (yt[:, 1] ** 2).mean().item()   # joint 1's error of an all-zero map
    record_property("evidence", f"held-out heatmap MSE per joint: stage 1 {err[0].tolist()}, stage 2 "
                                f"{err[1].tolist()} (all-zero map on joint 1: {blind:.4f})")
    assert err[1].sum() < 0.5 * err[0].sum()       # the later stage refines the earlier beliefs
    assert err[1, 1] < 0.3 * err[0, 1]             # most on the joint only context reveals
    assert err[0, 1] > 0.2 * blind                 # stage 1 alone cannot place it


def _blob_images(n, seed, H=32):
    g = generator(seed)
    c = 6 + 20 * torch.rand(n, 2, generator=g, dtype=F64)
    return B.gaussian_heatmap(c[:, None], H, H, 1.5)[:, 0], c


@pytest.mark.claim("body.direct-regression-refinement")
def test_direct_regression_with_refinement(record_property):
    imgs, c = _blob_images(600, 0)
    test_imgs, test_c = _blob_images(300, 1)
    ws = B.cascade_regression_fit(imgs, c, stages=2)
    est = B.cascade_regression_predict(ws, test_imgs)
    e1, e2 = ((e - test_c).norm(dim=-1).mean().item() for e in est)
    record_property("evidence", f"held-out mean error: direct {e1:.3f} px, refined {e2:.3f} px")
    assert e1 < 3.0            # direct regression already locates the joint roughly
    assert e2 < 0.5 * e1       # and the refinement stage at least halves its error


@pytest.mark.claim("body.direct-regression-refinement")
def test_ridge_matches_numpy_lstsq_and_crops():
    X, Y = randn(50, 4, seed=2), randn(50, 2, seed=3)
    W = B.fit_ridge(X, Y, ridge=0.0)
    A = np.c_[X.numpy(), np.ones(50)]
    np.testing.assert_allclose(W.numpy(), np.linalg.lstsq(A, Y.numpy(), rcond=None)[0], rtol=1e-9, atol=1e-12)
    img = torch.arange(25, dtype=F64).view(1, 5, 5)
    patch, c = B.crop_patches(img, torch.tensor([[0.2, 3.7]], dtype=F64), 3)
    assert c.tolist() == [[0.0, 4.0]]
    assert patch[0].tolist() == [[0, 15, 16], [0, 20, 21], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"^size\b"):
        B.crop_patches(img, c, 4)
    with pytest.raises(ValueError, match=r"^targets\b"):
        B.fit_ridge(X, Y[:10])


# ------------------------------------------------------------------ rotations and kinematics

@pytest.mark.claim("body.rigid-bone-transforms")
@settings(max_examples=12)
@given(seed=seeds(), scale=st.sampled_from([1e-9, 1e-4, 0.5, 3.0]))
def test_rodrigues_matches_scipy_and_matrix_exp(seed, scale):
    r = scale * randn(16, 3, seed=seed)
    R = B.rodrigues(r)
    np.testing.assert_allclose(R.numpy(), Rotation.from_rotvec(r.numpy()).as_matrix(), rtol=0, atol=1e-13)
    torch.testing.assert_close(R, torch.linalg.matrix_exp(B.skew(r)), rtol=0, atol=1e-12)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=F64).expand(16, 3, 3), rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(16, dtype=F64), rtol=0, atol=1e-13)


@pytest.mark.claim("body.rigid-bone-transforms")
def test_rodrigues_gradcheck_including_zero():
    r = torch.cat([randn(3, 3, seed=4), torch.zeros(1, 3, dtype=F64), 1e-5 * randn(1, 3, seed=5)]).requires_grad_()
    assert torch.autograd.gradcheck(B.rodrigues, (r,))
    torch.testing.assert_close(B.rodrigues(torch.zeros(2, 3, dtype=F64)), torch.eye(3, dtype=F64).expand(2, 3, 3))


@pytest.mark.claim("body.rigid-bone-transforms")
def test_forward_kinematics_against_numpy_chain():
    J = small_model().J_regressor @ small_model().v_template
    pose = random_pose(2, 6)
    G, joints = B.forward_kinematics(B.rodrigues(pose), J.expand(2, 24, 3))
    for b in range(2):
        Rw = [None] * 24
        pos = np.zeros((24, 3))
        for k in range(24):
            Rl = Rotation.from_rotvec(pose[b, k].numpy()).as_matrix()
            p = B.SMPL_PARENTS[k]
            if p < 0:
                Rw[k], pos[k] = Rl, J[k].numpy()
            else:
                Rw[k] = Rw[p] @ Rl
                pos[k] = pos[p] + Rw[p] @ (J[k] - J[p]).numpy()
        np.testing.assert_allclose(joints[b].numpy(), pos, atol=1e-12)
        np.testing.assert_allclose(G[b, :, :3, :3].numpy(), np.stack(Rw), atol=1e-12)
    # rigid: every world rotation orthonormal with determinant one
    torch.testing.assert_close(torch.linalg.det(G[..., :3, :3]), torch.ones(2, 24, dtype=F64))
    with pytest.raises(ValueError, match=r"^joints\b"):
        B.forward_kinematics(B.rodrigues(pose), J)
    with pytest.raises(ValueError, match=r"^axis_angle\b"):
        B.rodrigues(torch.zeros(2, 4))


# ------------------------------------------------------------------ linear blend skinning

def _numpy_lbs(verts, weights, transforms):
    out = np.zeros_like(verts)
    for k in range(weights.shape[1]):
        moved = verts @ transforms[k, :3, :3].T + transforms[k, :3, 3]
        out += weights[:, k:k + 1] * moved
    return out


@pytest.mark.claim("body.lbs-rest-pose", role="corrects")
def test_lbs_identity_pose_returns_template():
    m = small_model()
    J = (m.J_regressor @ m.v_template)[None]
    G, _ = B.forward_kinematics(B.rodrigues(torch.zeros(1, 24, 3, dtype=F64)), J)
    A = B.skinning_transforms(G, J)
    torch.testing.assert_close(A, torch.eye(4, dtype=F64).expand(1, 24, 4, 4), rtol=0, atol=1e-15)
    torch.testing.assert_close(B.lbs(m.v_template[None], m.weights, A)[0], m.v_template, rtol=0, atol=1e-15)
    # and G'_k = G_k G_k(theta*)^-1 written out with an explicit matrix inverse is what lbs uses
    G0 = B.forward_kinematics(torch.eye(3, dtype=F64).expand(1, 24, 3, 3), J)[0]
    pose = random_pose(1, 5)
    Gp = B.forward_kinematics(B.rodrigues(pose), J)[0]
    torch.testing.assert_close(B.skinning_transforms(Gp, J), Gp @ torch.linalg.inv(G0), **tol(F64))


@pytest.mark.claim("body.lbs-rest-pose", role="refutes")
def test_lbs_with_the_bone_transform_itself_moves_the_rest_pose(record_property):
    # The notes' G_k(theta, J) read literally: the world transform of bone k's frame along the
    # kinematic tree (SMPL's G_k, eq. 4 of Loper et al.). In the rest pose it is a translation by
    # j_k, not the identity, so skinning the template with it moves vertex i by sum_k w_ki j_k.
    m = small_model()
    J = (m.J_regressor @ m.v_template)[None]
    G, _ = B.forward_kinematics(B.rodrigues(torch.zeros(1, 24, 3, dtype=F64)), J)
    torch.testing.assert_close(G[0, :, :3, 3], J[0], rtol=0, atol=1e-15)  # sums of rest offsets
    raw = B.lbs(m.v_template[None], m.weights, G)[0]
    torch.testing.assert_close(raw - m.v_template, m.weights @ J[0], **tol(F64))
    shift = (raw - m.v_template).norm(dim=-1)
    assert shift.max() > 1.0 and shift.median() > 0.5  # the body moves by about its joints' height
    record_property("evidence", f"rest pose with G_k itself: vertices move by {shift.min():.2f}-{shift.max():.2f} m "
                                "(sum_k w_ki j_k) instead of staying put")


@pytest.mark.claim("body.lbs-rest-pose", role="corrects")
def test_lbs_matches_plain_reference_and_numpy(device, dtype):
    m = small_model().to(device, dtype)
    J = (m.J_regressor @ m.v_template).expand(3, 24, 3)
    A = B.skinning_transforms(B.forward_kinematics(B.rodrigues(random_pose(3, 7, dtype=dtype).to(device)), J)[0], J)
    v = m.v_template.expand(3, -1, -1)
    out = B.lbs(v, m.weights, A)
    torch.testing.assert_close(out, B.lbs_reference(v, m.weights, A), **tol(dtype))
    want = _numpy_lbs(m.v_template.double().cpu().numpy(), m.weights.double().cpu().numpy(),
                      A[1].double().cpu().numpy())
    # float32: coordinates ~1 m through two 24-term sums: 1e-5 absolute.
    np.testing.assert_allclose(out[1].double().cpu().numpy(), want, atol=1e-12 if dtype == F64 else 1e-5)
    # backward: gradient through the fused and the plain form agree
    vv = v.clone().requires_grad_()
    g1, = torch.autograd.grad(B.lbs(vv, m.weights, A).square().sum(), vv)
    g2, = torch.autograd.grad(B.lbs_reference(vv, m.weights, A).square().sum(), vv)
    torch.testing.assert_close(g1, g2, **tol(dtype))


def _pairwise(x):
    return (x[:, None] - x[None]).norm(dim=-1)  # exact, unlike cdist's matmul form


def _shared_rigid(seed, V=40, K=5):
    g = generator(seed)
    v = torch.randn(1, V, 3, generator=g, dtype=F64)
    w = torch.softmax(3 * torch.randn(V, K, generator=g, dtype=F64), -1)  # rows sum to one
    T = torch.eye(4, dtype=F64)
    T[:3, :3] = B.rodrigues(torch.randn(3, generator=g, dtype=F64))
    T[:3, 3] = torch.randn(3, generator=g, dtype=F64)
    return v, w, T


@pytest.mark.claim("body.lbs-rigid", role="corrects")
@settings(max_examples=30)
@given(seed=seeds())
def test_lbs_shared_rigid_transform_is_rigid(seed):
    v, w, T = _shared_rigid(seed)
    out = B.lbs(v, w, T.expand(1, w.shape[1], 4, 4))
    torch.testing.assert_close(out[0], v[0] @ T[:3, :3].T + T[:3, 3], **tol(F64))
    torch.testing.assert_close(_pairwise(out[0]), _pairwise(v[0]), **tol(F64))


@pytest.mark.claim("body.lbs-rigid", role="refutes")
def test_lbs_with_unnormalised_weights_is_not_rigid(record_property):
    # The notes' formula with 'w are weights' and nothing more: rows summing to s != 1 blend one
    # rigid motion into s G t_i, not rigid. Written out with numpy, since impl's lbs refuses them.
    v, w, T = _shared_rigid(0)
    R, t = T[:3, :3].numpy(), T[:3, 3].numpy()
    bad = w * torch.linspace(0.5, 1.5, w.shape[0], dtype=F64)[:, None]   # row sums from 0.5 to 1.5
    moved = torch.from_numpy(np.einsum("vk,vi->vi", bad.numpy(), v[0].numpy() @ R.T + t))  # sum_k w_ki G t_i
    gap = (_pairwise(moved) - _pairwise(v[0])).abs().max()
    assert gap > 0.1
    record_property("evidence", "one shared rigid transform, weights whose rows sum to 0.5..1.5: pairwise distances "
                                f"change by up to {gap:.2f} (not rigid); rows summing to one keep them to 1e-15")


@pytest.mark.claim("body.lbs-artifacts")
def test_lbs_twist_loses_volume(record_property):
    verts, faces, w, ring_z = _twist_tube()
    A0 = _ring_areas(verts[None], 41, 32)[0]
    vol0 = B.mesh_volume(verts[None], faces)[0]
    record = []
    for phi in (math.pi / 2, math.pi):
        posed = B.lbs(verts[None], w, _twist_transforms(phi))
        wr = w[: 41 * 32 : 32, 1]                          # child weight of each ring
        shrink = (1 - wr) ** 2 + wr ** 2 + 2 * wr * (1 - wr) * math.cos(phi)
        torch.testing.assert_close(_ring_areas(posed, 41, 32)[0], A0 * shrink, rtol=1e-12, atol=1e-15)
        vol = B.mesh_volume(posed, faces)[0]
        record.append(f"twist {phi:.2f} rad: volume x{(vol / vol0).item():.3f}")
        assert vol < 0.97 * vol0
    # at w = 1/2 and a half turn the cross-section collapses to a point (candy wrapper)
    posed = B.lbs(verts[None], w, _twist_transforms(math.pi))
    assert _ring_areas(posed, 41, 32)[0, 20].abs().item() < 1e-15
    # a rigid motion (same twist for both bones) keeps the volume: the loss comes from blending
    rigid = B.lbs(verts[None], w, _twist_transforms(math.pi, both=True))
    torch.testing.assert_close(B.mesh_volume(rigid, faces)[0], vol0, **tol(F64))
    record_property("evidence", "; ".join(record))


def _twist_tube():
    verts, faces = B.closed_tube(0.1, 1.0, 41, 32)
    z = verts[:, 2]
    w1 = ((z - 0.3) / 0.4).clamp(0, 1)                    # child weight ramps over the middle
    return verts, faces, torch.stack([1 - w1, w1], -1), z


def _twist_transforms(phi, both=False):
    T = torch.eye(4, dtype=F64).repeat(1, 2, 1, 1)
    Rz = B.rodrigues(torch.tensor([0.0, 0.0, phi], dtype=F64))
    T[0, 1, :3, :3] = Rz                                   # rotation about the tube's own axis
    if both:
        T[0, 0, :3, :3] = Rz
    return T


def _ring_areas(verts, n_rings, n_around):
    ring = verts[:, : n_rings * n_around].view(verts.shape[0], n_rings, n_around, 3)
    x, y = ring[..., 0], ring[..., 1]
    return 0.5 * (x * y.roll(-1, -1) - y * x.roll(-1, -1)).sum(-1)


@pytest.mark.claim("body.lbs-artifacts")
def test_mesh_volume_of_closed_prism():
    verts, faces = B.closed_tube(0.3, 2.0, 5, 12)
    want = 0.5 * 12 * 0.3 ** 2 * math.sin(2 * math.pi / 12) * 2.0
    assert B.mesh_volume(verts[None], faces).item() == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match=r"^radius\b"):
        B.closed_tube(0.0, 1.0, 3, 8)


def test_lbs_bad_input():
    v, w, T = torch.zeros(1, 4, 3), torch.ones(4, 2) / 2, torch.eye(4).expand(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"^weights\b"):
        B.lbs(v, torch.ones(4, 3), T)
    for fn in (B.lbs, B.lbs_reference):  # the case: weights summing to 3 scale the mesh 3x
        with pytest.raises(ValueError, match=r"^weights\b"):
            fn(v, 3 * w, T)
        with pytest.raises(ValueError, match=r"^weights\b"):
            fn(v, torch.tensor([[1.5, -0.5]]).expand(4, 2), T)      # sums to one, but negative
        with pytest.raises(ValueError, match=r"^weights\b"):
            fn(v, 3 * w.expand(1, 4, 2), T)                         # batched weights too
        with pytest.raises(TypeError, match=r"^validate\b"):
            fn(v, w, T, validate=1)
    assert B.lbs(v, 3 * w, T, validate=False).shape == (1, 4, 3)   # the caller vouches for them
    with pytest.raises(ValueError, match=r"^vertices\b"):
        B.lbs(torch.zeros(4, 3), w, T)
    with pytest.raises(TypeError, match=r"^transforms\b"):
        B.lbs(v, w, T.double())
    with pytest.raises(ValueError, match=r"^transforms\b"):
        B.lbs_reference(v, w, torch.eye(3).expand(1, 2, 3, 3))


# ------------------------------------------------------------------ the SMPL formula

def _numpy_smpl(m, betas, pose):
    """SMPL written out independently: rest transforms inverted explicitly, vertex loops by bone."""
    vt, sd, pd = m.v_template.numpy(), m.shapedirs.numpy(), m.posedirs.numpy()
    Jr, W = m.J_regressor.numpy(), m.weights.numpy()
    v_shaped = vt + np.tensordot(sd, betas, axes=([2], [0]))
    J = Jr @ v_shaped
    Rl = Rotation.from_rotvec(pose).as_matrix()
    feats = np.concatenate([(Rl[k] - np.eye(3)).ravel() for k in range(1, 24)])
    v_posed = v_shaped + np.tensordot(pd, feats, axes=([2], [0]))
    G, G0 = [None] * 24, [None] * 24
    for k in range(24):
        p = B.SMPL_PARENTS[k]
        loc, loc0 = np.eye(4), np.eye(4)
        loc[:3, :3] = Rl[k]
        loc[:3, 3] = loc0[:3, 3] = J[k] - (J[p] if p >= 0 else 0)
        G[k] = loc if p < 0 else G[p] @ loc
        G0[k] = loc0 if p < 0 else G0[p] @ loc0
    A = np.stack([G[k] @ np.linalg.inv(G0[k]) for k in range(24)])
    return _numpy_lbs(v_posed, W, A), np.stack([g[:3, 3] for g in G])


@pytest.mark.claim("body.smpl-formula", role="corrects")
def test_smpl_matches_independent_numpy():
    m = small_model()
    betas, pose = randn(2, 10, seed=8), random_pose(2, 9)
    v, j = B.smpl(m, betas, pose)
    for b in range(2):
        vn, jn = _numpy_smpl(m, betas[b].numpy(), pose[b].numpy())
        np.testing.assert_allclose(v[b].numpy(), vn, atol=1e-12)
        np.testing.assert_allclose(j[b].numpy(), jn, atol=1e-12)
    torch.testing.assert_close(B.smpl_joints(m, betas, pose), j, **tol(F64))
    # translation moves everything
    t = randn(2, 3, seed=10)
    v2, j2 = B.smpl(m, betas, pose, t)
    torch.testing.assert_close(v2, v + t[:, None], **tol(F64))


@pytest.mark.claim("body.smpl-formula", role="corrects")
def test_smpl_float32_on_device(device):
    m64 = small_model()
    m = m64.to(device, torch.float32)
    betas, pose = randn(4, 10, seed=11), random_pose(4, 12)
    v, _ = B.smpl(m, betas.float().to(device), pose.float().to(device))
    v64, _ = B.smpl(m64, betas, pose)
    assert v.device.type == torch.device(device).type and v.dtype == torch.float32
    # float32 through 23 chained 4x4 products and 24-term blends of ~1 m values: 2e-5 m.
    torch.testing.assert_close(v.double().cpu(), v64, rtol=0, atol=2e-5)


def test_smpl_file_format_roundtrip(tmp_path):
    import scipy.sparse

    m = small_model()
    path = B.save_smpl_npz(tmp_path / "model.npz", m)
    with np.load(path) as z:
        assert set(B.SMPL_KEYS) <= set(z.files)
        assert z["posedirs"].shape == (m.v_template.shape[0], 3, 207) and z["kintree_table"].shape == (2, 24)
        assert z["kintree_table"][0, 0] == 2 ** 32 - 1
    loaded = B.load_smpl(path, dtype=F64)
    assert loaded.parents.tolist() == list(B.SMPL_PARENTS)
    betas, pose = randn(1, 10, seed=13), random_pose(1, 14)
    for f in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces"):
        assert torch.equal(getattr(loaded, f), getattr(m, f)), f
    torch.testing.assert_close(B.smpl(loaded, betas, pose)[0], B.smpl(m, betas, pose)[0], **tol(F64))
    # the official files are pickles with a scipy.sparse J_regressor
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["J_regressor"] = scipy.sparse.csc_matrix(d["J_regressor"])
    d["bs_type"] = "lrotmin"
    with open(tmp_path / "model.pkl", "wb") as fh:
        pickle.dump(d, fh)
    from_pkl = B.load_smpl(tmp_path / "model.pkl", dtype=F64)
    torch.testing.assert_close(from_pkl.J_regressor, m.J_regressor, rtol=0, atol=0)
    del d["weights"]
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in d.items() if k != "J_regressor"})
    with pytest.raises(ValueError, match=r"^path\b"):
        B.load_smpl(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"^path\b"):
        B.load_smpl(tmp_path / "model.obj")
    with pytest.raises(TypeError, match=r"^model\b"):
        B.save_smpl_npz(tmp_path / "x.npz", {"v_template": 1})


@pytest.mark.claim("body.smpl-formula", role="refutes")
def test_smpl_formula_with_the_bone_transforms_themselves(record_property):
    # The notes' t'_i = sum_k w_ki G_k(theta, J(beta)) (t_i + s_i + p_i) with G_k read as printed:
    # the bones' world transforms (SMPL's G_k), not their motion from the rest pose G'_k.
    m = small_model()
    betas = randn(1, 10, seed=8)
    for pose in (torch.zeros(1, 24, 3, dtype=F64), random_pose(1, 9)):
        v_shaped = m.v_template + B.shape_correctives(m.shapedirs, betas)
        J = B.regress_joints(m.J_regressor, v_shaped)
        R = B.rodrigues(pose)
        G, _ = B.forward_kinematics(R, J)
        literal = B.lbs(v_shaped + B.pose_correctives(m.posedirs, R), m.weights, G)
        v, _ = B.smpl(m, betas, pose)
        gap = (literal - v).norm(dim=-1)
        assert gap.max() > 1.0 and gap.median() > 0.5, gap.median()
    # in the rest pose the literal formula does not even return the shaped template
    rest = B.lbs(v_shaped, m.weights, B.forward_kinematics(B.rodrigues(torch.zeros(1, 24, 3, dtype=F64)), J)[0])
    torch.testing.assert_close(rest - v_shaped, torch.einsum("vk,bkc->bvc", m.weights, J), **tol(F64))
    record_property("evidence", f"G_k as printed (world transforms): vertices off SMPL's by a median {gap.median():.2f} m "
                                "in a random pose, and by sum_k w_ki j_k in the rest pose")


def test_synthetic_model_has_smpl_structure():
    m = B.synthetic_body_model(n_people=20, dtype=F64)
    V = m.v_template.shape[0]
    assert 2000 <= V <= 10000 and m.posedirs.shape == (V, 3, 207) and m.J_regressor.shape == (24, V)
    torch.testing.assert_close(m.weights.sum(1), torch.ones(V, dtype=F64), **tol(F64))
    assert (m.weights >= 0).all()
    torch.testing.assert_close(m.J_regressor.sum(1), torch.ones(24, dtype=F64), **tol(F64))
    assert m.parents.tolist() == list(B.SMPL_PARENTS) and int(m.faces.max()) == V - 1
    with pytest.raises(ValueError, match=r"^posedirs\b"):
        B.BodyModel(m.v_template, m.shapedirs, m.posedirs[..., :200], m.J_regressor, m.weights, m.parents, m.faces)
    with pytest.raises(ValueError, match=r"^betas\b"):
        B.smpl(small_model(), torch.zeros(1, 3, dtype=F64), torch.zeros(1, 24, 3, dtype=F64))
    with pytest.raises(TypeError, match=r"^pose\b"):
        B.smpl(small_model(), torch.zeros(1, 10, dtype=F64), torch.zeros(1, 24, 3))


@pytest.mark.claim("body.smpl-shape-correctives")
def test_shape_correctives_linear():
    m = small_model()
    b1, b2 = randn(1, 10, seed=15), randn(1, 10, seed=16)
    zero = torch.zeros(1, 24, 3, dtype=F64)
    f = lambda b: B.smpl(m, b, zero)[0] - m.v_template
    torch.testing.assert_close(f(b1), torch.from_numpy(np.tensordot(m.shapedirs.numpy(), b1[0].numpy(), ([2], [0])))[None], **tol(F64))
    torch.testing.assert_close(f(b1 + 2 * b2), f(b1) + 2 * f(b2), **tol(F64))
    with pytest.raises(ValueError, match=r"^betas\b"):
        B.shape_correctives(m.shapedirs, torch.zeros(1, 4, dtype=F64))


@pytest.mark.claim("body.smpl-joints-shape")
def test_joints_depend_on_shape():
    m = small_model()
    betas = randn(3, 10, seed=17)
    _, j = B.smpl(m, betas, torch.zeros(3, 24, 3, dtype=F64))
    want = np.einsum("kv,bvc->bkc", m.J_regressor.numpy(),
                     m.v_template.numpy() + np.einsum("vcl,bl->bvc", m.shapedirs.numpy(), betas.numpy()))
    np.testing.assert_allclose(j.numpy(), want, atol=1e-13)
    bl = B.bone_lengths(j)
    assert (bl[0] - bl[1]).abs().max() > 1e-3          # shape changes bone lengths
    # the regressor puts each joint at the centre of the ring around it for every registered body
    length, girth = B.synthetic_population(5, seed=9)
    meshes, joints = B.body_meshes(length, girth, 4, 8)
    torch.testing.assert_close(B.regress_joints(m.J_regressor, meshes), joints, **tol(F64))


@pytest.mark.claim("body.smpl-pose-correctives", role="refutes")
def test_pose_correctives_linear_in_theta_are_not_a_function_of_rotation(record_property):
    m = small_model()
    V = m.v_template.shape[0]
    P = 2e-3 * randn(V, 3, 72, seed=18)                       # any non-zero basis, as the notes write
    pose = random_pose(1, 19)
    pose2 = pose.clone()
    r = pose[0, 18]
    pose2[0, 18] = r + 2 * math.pi * r / r.norm()              # same rotation of the left elbow
    torch.testing.assert_close(B.rodrigues(pose2), B.rodrigues(pose), rtol=0, atol=1e-12)
    betas = torch.zeros(1, 10, dtype=F64)
    J = (m.J_regressor @ m.v_template)[None]
    A = lambda p: B.skinning_transforms(B.forward_kinematics(B.rodrigues(p), J)[0], J)
    notes = lambda p: B.lbs(m.v_template + B.pose_correctives_linear(P, p), m.weights, A(p))
    gap = (notes(pose) - notes(pose2)).norm(dim=-1).max().item()
    record_property("evidence", f"p = P theta: the same joint rotations (theta vs theta + 2 pi axis) give meshes "
                                f"{gap * 1000:.1f} mm apart; P theta has {3 * 24} features, SMPL's P has 207")
    assert gap > 1e-3


@pytest.mark.claim("body.smpl-pose-correctives", role="corrects")
def test_pose_correctives_on_rotation_features():
    m = small_model()
    betas = randn(1, 10, seed=20)
    pose = random_pose(1, 19)
    pose2 = pose.clone()
    r = pose[0, 18]
    pose2[0, 18] = r + 2 * math.pi * r / r.norm()
    torch.testing.assert_close(B.smpl(m, betas, pose2)[0], B.smpl(m, betas, pose)[0], rtol=0, atol=1e-12)
    # 207 = 23 x 9 features, zero in the rest pose: the rest pose adds no corrective
    feats = B.pose_features(B.rodrigues(pose))
    assert feats.shape == (1, 207)
    rest = torch.zeros(1, 24, 3, dtype=F64)
    assert B.pose_features(B.rodrigues(rest)).abs().max().item() == 0.0
    torch.testing.assert_close(B.smpl(m, betas, rest)[0], B.smpl(m, betas, rest, pose_corrective=False)[0],
                               rtol=0, atol=0)
    # without the subtraction of R(theta*) = I the rest pose would add P vec(I) to the template
    vecI = torch.eye(3, dtype=F64).flatten().repeat(23)
    assert torch.einsum("p,vcp->vc", vecI, m.posedirs).abs().max() > 1e-3
    # the correctives do change a non-rest pose
    assert (B.smpl(m, betas, pose)[0] - B.smpl(m, betas, pose, pose_corrective=False)[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"^rotations\b"):
        B.pose_correctives(m.posedirs, B.rodrigues(torch.zeros(1, 5, 3, dtype=F64)))


# ------------------------------------------------------------------ shape space

def _population(n, seed, n_rings=4, n_around=8):
    length, girth = B.synthetic_population(n, seed=seed)
    return B.body_meshes(length, girth, n_rings, n_around)[0]


@pytest.mark.claim("body.shape-pca")
def test_pca_error_falls_with_components(record_property):
    meshes = _population(40, seed=21)
    held = _population(20, seed=22)
    X = (meshes - meshes.mean(0)).reshape(40, -1).numpy()
    sv = np.linalg.svd(X, compute_uv=False)
    train, test = [], []
    ks = (1, 2, 3, 5, 8, 13, 21, 30, 39)
    for k in ks:
        mu, S, std = B.shape_pca(meshes, k)
        rec = B.shape_reconstruct(B.shape_project(meshes, mu, S), mu, S)
        train.append(((rec - meshes) ** 2).sum().item())
        rec_h = B.shape_reconstruct(B.shape_project(held, mu, S), mu, S)
        test.append(((rec_h - held) ** 2).sum().item())
        # Eckart-Young: the training error is the energy of the discarded singular values
        assert train[-1] == pytest.approx(float((sv[k:] ** 2).sum()), rel=1e-6, abs=1e-20)
    np.testing.assert_allclose(std.numpy(), sv[:39] / math.sqrt(39), rtol=1e-10)
    assert all(a >= b - 1e-20 for a, b in zip(train, train[1:]))
    assert all(a >= b - 1e-12 for a, b in zip(test, test[1:]))
    assert train[-1] < 1e-20 * max(train[0], 1.0) + 1e-20
    record_property("evidence", "squared error (train / held-out): " + ", ".join(
        f"K={k}: {a:.2e}/{b:.2e}" for k, a, b in zip(ks, train, test)))


@pytest.mark.claim("body.shape-pca")
def test_pca_mean_and_bad_input():
    meshes = _population(12, seed=23)
    mu, S, _ = B.shape_pca(meshes, 3)
    torch.testing.assert_close(mu, meshes.mean(0), **tol(F64))
    A = S.reshape(-1, 3)
    # orthogonal columns scaled by the standard deviations
    torch.testing.assert_close(A.T @ A, torch.diag((A * A).sum(0)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"^num_components\b"):
        B.shape_pca(meshes, 0)
    with pytest.raises(ValueError, match=r"^meshes\b"):
        B.shape_pca(meshes[..., :2], 2)


@pytest.mark.claim("body.registration")
def test_pca_needs_registered_meshes(record_property):
    meshes = _population(40, seed=24)
    g = generator(25)
    shuffled = torch.stack([m[torch.randperm(m.shape[0], generator=g)] for m in meshes])
    errs = {}
    for name, data in (("registered", meshes), ("unregistered", shuffled)):
        mu, S, _ = B.shape_pca(data, 5)
        rec = B.shape_reconstruct(B.shape_project(data, mu, S), mu, S)
        errs[name] = ((rec - data) ** 2).sum(-1).mean().sqrt().item()
    # far more components for the same error: the unregistered meshes are still off by more than the registered
    # 5-component error with 38 components (errors fall with K, Eckart-Young), so only all N - 1 = 39 reach it
    mu, S, _ = B.shape_pca(shuffled, 38)
    err38 = ((B.shape_reconstruct(B.shape_project(shuffled, mu, S), mu, S) - shuffled) ** 2).sum(-1).mean().sqrt().item()
    # and the mean is not a body: averaging unrelated vertices collapses it towards the centroid
    spread = lambda x: (x - x.mean(0)).norm(dim=-1).mean().item()  # noqa: E731
    body, reg_mean, unreg_mean = spread(meshes[0]), spread(meshes.mean(0)), spread(shuffled.mean(0))
    record_property("evidence", f"RMS vertex error with 5 components: registered {errs['registered'] * 1000:.2f} mm, "
                                f"same meshes without correspondence {errs['unregistered'] * 1000:.0f} mm "
                                f"({err38 * 1000:.0f} mm with 38 components); mean vertex distance from the centroid: "
                                f"a body {body:.3f} m, registered mean {reg_mean:.3f} m, unregistered mean {unreg_mean:.3f} m")
    assert errs["unregistered"] > 20 * errs["registered"]
    assert err38 > 5 * errs["registered"]
    assert abs(reg_mean / body - 1) < 0.1 and unreg_mean < 0.25 * body


# ------------------------------------------------------------------ 2-D to 3-D

def _pose_data(n, seed, m):
    g = generator(seed)
    betas = 0.8 * torch.randn(n, 10, generator=g, dtype=F64)
    pose = 0.3 * torch.randn(n, 24, 3, generator=g, dtype=F64)
    pose[:, 0] = 0
    j = B.smpl_joints(m, betas, pose)
    x = B.project(j, 5.0, torch.tensor([0.0, -1.0, 5.0], dtype=F64).expand(n, 3))
    return x, j - j[:, :1], betas


@pytest.mark.claim("body.naive-lift")
def test_naive_lift_works(record_property):
    m = small_model()
    x, j, _ = _pose_data(800, 26, m)
    xt, jt, _ = _pose_data(300, 27, m)
    W = B.fit_linear_lift(x, j)
    err = (B.lift_predict(W, xt) - jt).norm(dim=-1).mean().item()
    base = (j.mean(0) - jt).norm(dim=-1).mean().item()
    record_property("evidence", f"held-out mean joint error: lift {err * 100:.1f} cm, mean pose {base * 100:.1f} cm")
    assert err < 0.6 * base


@pytest.mark.claim("body.naive-lift-bone-lengths")
def test_lift_breaks_bone_lengths_model_keeps_them(record_property):
    m = small_model()
    x, j, _ = _pose_data(800, 26, m)
    xt, jt, bt = _pose_data(300, 27, m)
    pred = B.lift_predict(B.fit_linear_lift(x, j), xt)
    rel = (B.bone_lengths(pred) / B.bone_lengths(jt) - 1).abs()
    # the body model: posed bone lengths equal the rest bone lengths of J(beta) whatever the pose
    rest = B.smpl_joints(m, bt, torch.zeros(300, 24, 3, dtype=F64))
    model_rel = (B.bone_lengths(jt) / B.bone_lengths(rest) - 1).abs()
    assert rel.max() > 0.3
    assert model_rel.max() < 1e-12
    # from pose to pose: one person (fixed beta) in 300 poses; the lift's bone lengths change with the pose,
    # the body model's stay fixed
    g = generator(43)
    one = (0.8 * torch.randn(1, 10, generator=g, dtype=F64)).expand(300, 10)
    poses = 0.3 * torch.randn(300, 24, 3, generator=g, dtype=F64)
    poses[:, 0] = 0
    j1 = B.smpl_joints(m, one, poses)
    lifted = B.lift_predict(B.fit_linear_lift(x, j), B.project(j1, 5.0, torch.tensor([0.0, -1.0, 5.0], dtype=F64).expand(300, 3)))
    ratio = lambda b: b.max(0).values / b.min(0).values - 1  # noqa: E731  per bone, over the poses
    lift_spread, model_spread = ratio(B.bone_lengths(lifted)), ratio(B.bone_lengths(j1))
    record_property("evidence", f"bone length error: lift max {rel.max().item():.0%} (mean {rel.mean().item():.1%}); "
                                f"body model max {model_rel.max().item():.1e}; one person in 300 poses: lift's longest/"
                                f"shortest - 1 median {lift_spread.median().item():.2f} per bone, model's "
                                f"{model_spread.max().item():.1e}")
    assert lift_spread.median() > 0.5 and model_spread.max() < 1e-12
    with pytest.raises(ValueError, match=r"^joints\b"):
        B.bone_lengths(torch.zeros(2, 5, 3))


# ------------------------------------------------------------------ parameters, fitting, tracking

@pytest.mark.claim("body.pose-parameters")
def test_pose_is_beta_theta_camera():
    m = small_model()
    betas = randn(1, 10, seed=28).requires_grad_()
    pose = random_pose(1, 29).requires_grad_()
    t = torch.tensor([[0.0, -1.0, 3.0]], dtype=F64, requires_grad=True)
    x = B.project(B.smpl(m, betas, pose, )[1], 1000.0, t)
    x2 = B.project(B.smpl(m, betas.detach(), pose.detach())[1], 1000.0, t.detach())
    torch.testing.assert_close(x, x2, rtol=0, atol=0)          # determined by the parameters
    gb, gp, gt = torch.autograd.grad(x.square().sum(), (betas, pose, t))
    assert gb.abs().max() > 0 and gp.abs().max() > 0 and gt.abs().max() > 0
    with pytest.raises(ValueError, match=r"^focal\b"):
        B.project(x2.new_zeros(1, 2, 3), 0.0, t.detach())


def _fit_problem(n, seed, m):
    g = generator(seed)
    betas = 0.8 * torch.randn(n, 10, generator=g, dtype=F64)
    pose = 0.2 * torch.randn(n, 24, 3, generator=g, dtype=F64)
    pose[:, [10, 11, 15, 22, 23]] = 0
    face = torch.tensor([0.0, math.pi, 0.0], dtype=F64)
    pose[:, 0] = face + 0.1 * torch.randn(n, 3, generator=g, dtype=F64)
    transl = torch.tensor([0.0, -1.0, 3.0], dtype=F64) + 0.1 * torch.randn(n, 3, generator=g, dtype=F64)
    init = torch.zeros(n, 24, 3, dtype=F64)
    init[:, 0] = face
    return betas, pose, transl, init


@pytest.mark.slow
@pytest.mark.claim("body.fit-joints2d", "body.pose-parameters")
def test_fit_reproduces_2d_joints(record_property):
    m = small_model()
    betas, pose, transl, init = _fit_problem(2, 30, m)
    j = B.smpl_joints(m, betas, pose) + transl[:, None]
    x = B.project(j, 1.0, torch.zeros_like(transl))
    out = B.fit_to_joints2d(m, x, 1.0, prior_weight=1e-8, shape_weight=1e-8, init_pose=init,
                            init_transl=torch.tensor([0.0, -1.0, 3.0], dtype=F64).expand(2, 3), iterations=40)
    rms = (out.reproj / 24).sqrt()
    j_fit = B.smpl_joints(m, out.betas, out.pose) + out.transl[:, None]
    err3d = (j_fit - j).norm(dim=-1).max().item()
    record_property("evidence", f"reprojection RMS {rms.max().item():.1e} (x focal = px); max 3-D joint error "
                                f"{err3d * 100:.1f} cm; max |beta - beta_true| "
                                f"{(out.betas - betas).abs().max().item():.2f}")
    assert rms.max() < 1e-4          # 0.1 px at a focal length of 1000 px
    with pytest.raises(ValueError, match=r"^joints2d\b"):
        B.fit_to_joints2d(m, x[:, :5], 1.0)


def _joint_jacobians():
    """A fitted body's parameters p0 = (beta, pose, transl), its camera-frame 3-D joints, and the
    Jacobians of the 2-D (48) and 3-D (72) joints with respect to p0 (pinhole camera, focal 1)."""
    m = small_model()
    betas, pose, transl, _ = _fit_problem(1, 31, m)
    S = 10

    def joints3d(p):
        return B.smpl_joints(m, p[None, :S], p[S:S + 72].view(1, 24, 3))[0] + p[None, S + 72:]

    def joints2d(p):
        return B.project(joints3d(p)[None], 1.0, torch.zeros(1, 3, dtype=F64))[0]

    p0 = torch.cat([betas[0], pose[0].flatten(), transl[0]])
    J2 = torch.autograd.functional.jacobian(joints2d, p0).reshape(48, -1)
    J3 = torch.autograd.functional.jacobian(joints3d, p0).reshape(72, -1)
    return p0, joints3d(p0), J2, J3


@pytest.mark.claim("body.fit-no-depth")
def test_2d_joints_have_a_null_space_in_depth(record_property):
    p0, _, J2, J3 = _joint_jacobians()
    _, s, Vh = torch.linalg.svd(J2)
    rank = int((s > 1e-9 * s[0]).sum())
    null = Vh[rank:]                                           # directions invisible in 2-D
    moved = (J3 @ null.T).norm(dim=0)
    record_property("evidence", f"2-D joints: rank {rank} of {p0.numel()} parameters (null space {null.shape[0]}); "
                                f"largest 3-D joint motion along a 2-D-invisible direction {moved.max().item():.2f} m per unit")
    assert rank <= 48 < p0.numel()
    assert moved.max() > 0.1


@pytest.mark.claim("body.fit-no-depth")
def test_a_flipped_hand_gives_exactly_the_same_2d_joints(record_property):
    # Not only to first order: the hand (joint 22, a leaf) can sit at the second intersection of its viewing
    # ray with the sphere of its bone length around the wrist (20). Rotating the wrist there (a new pose)
    # changes the 3-D hand by centimetres and leaves every 2-D joint where it was, so both poses fit.
    m = small_model()
    betas, pose, transl, _ = _fit_problem(1, 31, m)
    joints = lambda p: B.smpl_joints(m, betas, p) + transl[:, None]  # noqa: E731  camera frame
    to2d = lambda c: B.project(c, 1.0, torch.zeros(1, 3, dtype=F64))  # noqa: E731
    c = joints(pose)[0]
    bone = c[22] - c[20]
    # |s c22 - c20| = |bone| has the roots s = 1 and s = (|c20|^2 - |bone|^2) / |c22|^2 (their product)
    s = (c[20].square().sum() - bone.square().sum()) / c[22].square().sum()
    flipped = s * c[22] - c[20]
    axis = torch.linalg.cross(bone, flipped)
    Q = B.rodrigues(axis / axis.norm() * torch.atan2(axis.norm(), bone @ flipped))   # world rotation bone -> flipped
    J = B.regress_joints(m.J_regressor, m.v_template + B.shape_correctives(m.shapedirs, betas))
    R18 = B.forward_kinematics(B.rodrigues(pose), J)[0][0, 18, :3, :3]              # the wrist's parent frame
    local = R18.T @ Q @ R18 @ B.rodrigues(pose[0, 20])
    pose2 = pose.clone()
    pose2[0, 20] = torch.from_numpy(Rotation.from_matrix(local.numpy()).as_rotvec())
    c2 = joints(pose2)[0]
    moved = (c2 - c).norm(dim=-1)
    gap2d = (to2d(c2[None]) - to2d(c[None])).abs().max().item()
    record_property("evidence", f"wrist rotated by {(pose2 - pose).norm().item():.2f} rad: the hand moves "
                                f"{moved[22].item() * 100:.1f} cm in 3-D, the 2-D joints by {gap2d:.1e}")
    assert (pose2 - pose).norm() > 0.1 and moved[22] > 0.02   # a different pose and a different 3-D hand
    torch.testing.assert_close(c2[22], s * c[22], rtol=0, atol=1e-12)  # on the same viewing ray
    assert gap2d < 1e-12


@pytest.mark.claim("body.fit-no-depth")
def test_2d_invisible_motions_move_joints_along_their_viewing_rays(record_property):
    # What a pinhole camera loses is depth along each ray: x = f p_xy / p_z is unchanged to first
    # order iff dp is parallel to p (the camera sits at the origin). So every parameter direction
    # that leaves all 2-D joints still must move each 3-D joint along its own viewing ray, towards
    # or away from the camera; a camera that kept depth cues (weak perspective, orthographic) would
    # leave other motions invisible.
    p0, P, J2, J3 = _joint_jacobians()                         # P: camera-frame joint positions
    _, s, Vh = torch.linalg.svd(J2)
    null = Vh[int((s > 1e-9 * s[0]).sum()):]
    U = (J3 @ null.T).T.reshape(-1, 24, 3)                    # 3-D joint velocities, one row per direction
    off_ray = torch.linalg.cross(P.expand_as(U), U, dim=-1).norm(dim=-1) / P.norm(dim=-1)
    depth = (U * P).sum(-1) / P.norm(dim=-1)                   # speed along the ray
    record_property("evidence", f"{null.shape[0]} 2-D-invisible directions: largest motion off the viewing rays "
                                f"{off_ray.max().item():.1e} m, along them {depth.abs().max().item():.2f} m per unit")
    # SVD null vectors are exact to ~1e-15 relative; Jacobian entries are O(1): 1e-9 m is rounding
    assert off_ray.max() < 1e-9 * max(1.0, U.norm(dim=-1).max().item())
    assert depth.abs().max() > 0.1


@pytest.mark.claim("body.fit-learned-update")
def test_reprojection_loss_is_not_convex(record_property):
    # Left forearm bent by +a or -a about the vertical axis: towards or away from a distant camera.
    m = small_model()
    betas = torch.zeros(1, 10, dtype=F64)
    t = torch.tensor([[0.0, -1.0, 1e4]], dtype=F64)
    focal = 1e4
    bent = lambda a: torch.zeros(1, 24, 3, dtype=F64).index_put_((torch.tensor([0]), torch.tensor([18])),
                                                                 torch.tensor([[0.0, a, 0.0]], dtype=F64))
    x_target = B.project(B.smpl_joints(m, betas, bent(0.8)), focal, t)
    L = lambda a: B.reprojection_loss(m, betas, bent(a), t, x_target, focal).item()
    la, lb, mid = L(0.8), L(-0.8), L(0.0)
    record_property("evidence", f"L(+0.8) = {la:.1e}, L(-0.8) = {lb:.1e}, L(0) = {mid:.1e}: two minimisers, higher between")
    assert mid > 100 * max(la, lb, 1e-12) and mid > (la + lb) / 2    # violates convexity


@pytest.mark.claim("body.fit-learned-update")
def test_learned_update_generalises_gradient_descent():
    m = small_model()
    betas, pose, transl, _ = _fit_problem(2, 32, m)
    x = B.project(B.smpl_joints(m, betas, pose), 1.0, transl)
    lr = 0.05
    theta = torch.zeros(2, 24, 3, dtype=F64)
    ref = torch.zeros(2, 24, 3, dtype=F64, requires_grad=True)
    sgd = torch.optim.SGD([ref], lr=lr)
    for _ in range(5):
        th = theta.clone().requires_grad_()
        g, = torch.autograd.grad(B.reprojection_loss(m, betas, th, transl, x, 1.0).sum(), th)
        theta = B.learned_update_step(lambda grad, p, img: -lr * grad, theta, g, x)
        sgd.zero_grad()
        B.reprojection_loss(m, betas, ref, transl, x, 1.0).sum().backward()
        sgd.step()
    torch.testing.assert_close(theta, ref.detach(), **tol(F64))
    # a learned F (a small network of gradient, current pose and image evidence) runs batched
    net = torch.nn.Linear(72 + 72 + 48, 72).double()
    Fn = lambda grad, p, img: net(torch.cat([grad.flatten(1), p.flatten(1), img.flatten(1)], 1)).view_as(p)
    out = B.learned_update_step(Fn, theta, g, x)
    assert out.shape == theta.shape
    out.sum().backward()
    assert net.weight.grad.abs().sum() > 0
    with pytest.raises(TypeError, match=r"^update_fn\b"):
        B.learned_update_step(None, theta, g, x)
    with pytest.raises(ValueError, match="update_fn output"):
        B.learned_update_step(lambda *a: torch.zeros(3, dtype=F64), theta, g, x)


@pytest.mark.claim("body.template-capture")
def test_first_frame_scan_gives_the_template():
    m = small_model()
    betas = randn(2, 10, seed=33)
    scan, _ = B.smpl(m, betas, torch.zeros(2, 24, 3, dtype=F64))
    torch.testing.assert_close(B.fit_shape_to_scan(m, scan), betas, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"^scan\b"):
        B.fit_shape_to_scan(m, scan[:, :10])


@pytest.mark.slow
@pytest.mark.claim("body.template-capture")
def test_track_sequence(record_property):
    m = small_model()
    betas = randn(1, 10, seed=34)
    T = 4
    key = random_pose(1, 35, scale=0.3)
    poses = torch.stack([key[0] * (t + 1) / T for t in range(T)])        # a smooth motion
    transl = torch.linspace(0, 0.2, T, dtype=F64)[:, None] * torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    frames, _ = B.smpl(m, betas.expand(T, 10), poses, transl)
    scan0, _ = B.smpl(m, betas, torch.zeros(1, 24, 3, dtype=F64))
    b_hat = B.fit_shape_to_scan(m, scan0)
    p_hat, t_hat = B.track_sequence(m, b_hat, frames, iterations=8)
    tracked, _ = B.smpl(m, b_hat.expand(T, 10), p_hat, t_hat)
    err = (tracked - frames).norm(dim=-1).max().item()
    record_property("evidence", f"{T} frames tracked, max vertex error {err * 1000:.2e} mm")
    assert err < 1e-5


@pytest.mark.claim("body.animatable-nis")
def test_animatable_implicit_two_fields(device):
    torch.manual_seed(0)
    net = B.AnimatableImplicitBody(joints=24, hidden=16).to(device)
    x = torch.randn(2, 50, 3, device=device)
    w = net.skinning_weights(x)
    assert net.sdf(x).shape == (2, 50) and w.shape == (2, 50, 24) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 50, device=device))
    eye = torch.eye(4, device=device).expand(2, 24, 4, 4)
    torch.testing.assert_close(net.deform(x, eye), x)
    T = torch.eye(4, device=device)
    T[:3, :3] = B.rodrigues(torch.tensor([0.3, -0.2, 0.5], device=device))
    T[:3, 3] = torch.tensor([0.1, 0.2, -0.3], device=device)
    # float32: a rigid motion of unit-scale points, 1e-5 absolute.
    torch.testing.assert_close(net.deform(x, T.expand(2, 24, 4, 4)), x @ T[:3, :3].T + T[:3, 3], rtol=0, atol=1e-5)
    assert len(list(net.sdf_net.parameters())) and len(list(net.weight_net.parameters()))
    with pytest.raises(ValueError, match=r"^x\b"):
        net.sdf(torch.zeros(2, 3, device=device))


# ------------------------------------------------------------------ figures

@pytest.mark.slow
def test_figures(save_figure):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = B.synthetic_body_model(dtype=F64)
    pose = torch.zeros(1, 24, 3, dtype=F64)
    pose[0, 16] = torch.tensor([0.0, 0.0, -1.0])    # left shoulder down
    pose[0, 17] = torch.tensor([0.0, 0.0, 0.8])
    pose[0, 18] = torch.tensor([0.0, -1.2, 0.0])    # left elbow bent forward
    pose[0, 4] = torch.tensor([0.9, 0.0, 0.0])      # left knee
    pose[0, 1] = torch.tensor([-0.7, 0.0, 0.0])     # left hip
    pose[0, 15] = torch.tensor([0.3, 0.3, 0.0])
    betas = torch.zeros(1, 10, dtype=F64)
    rest, jr = B.smpl(m, betas, torch.zeros_like(pose))
    posed, jp = B.smpl(m, betas, pose)
    fig, axes = plt.subplots(1, 2, figsize=(8, 5))
    for ax, v, j, title in ((axes[0], rest, jr, "rest (T-pose)"), (axes[1], posed, jp, "posed")):
        ax.scatter(v[0, :, 0], v[0, :, 1], s=0.3, c=v[0, :, 2], cmap="viridis")
        for k in range(1, 24):
            p = B.SMPL_PARENTS[k]
            ax.plot([j[0, p, 0], j[0, k, 0]], [j[0, p, 1], j[0, k, 1]], "r-", lw=1)
        ax.set_aspect("equal")
        ax.set_title(f"synthetic SMPL-structured body, {title}")
    save_figure(fig, "body-rest-posed.png",
                caption='The synthetic SMPL-structured body with its kinematic tree: rest pose (left) and posed by linear blend skinning (right).', claims=('body.lbs-rigid', 'body.smpl-formula'))

    verts, faces, w, z = _twist_tube()
    A0 = _ring_areas(verts[None], 41, 32)[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for phi in (0.0, math.pi / 2, 3 * math.pi / 4, math.pi):
        posed = B.lbs(verts[None], w, _twist_transforms(phi))
        axes[0].plot(z[: 41 * 32 : 32], _ring_areas(posed, 41, 32)[0] / A0, label=f"twist {phi / math.pi:.2f} pi")
    axes[0].set_xlabel("position along the limb")
    axes[0].set_ylabel("cross-section area / rest")
    axes[0].legend()
    axes[0].set_title("LBS twist: the candy-wrapper artifact")
    posed = B.lbs(verts[None], w, _twist_transforms(math.pi))[0]
    axes[1].scatter(posed[:, 2], posed[:, 0], s=1, c=w[:, 1], cmap="coolwarm")
    axes[1].set_xlabel("z")
    axes[1].set_ylabel("x")
    axes[1].set_title("tube twisted by pi (colour: child weight)")
    save_figure(fig, "body-twist-artifact.png",
                caption="Linear blend skinning's candy-wrapper artifact: the cross-section area of a limb twisted by up to $\\pi$ collapses where the two bones' weights mix (left); the twisted tube (right).", claims=('body.lbs-artifacts',))


# ------------------------------------------------------------------ bad input, the remaining functions

def _bad_shape_calls():
    mesh = torch.zeros(3, 10, 3, dtype=F64)
    S = torch.zeros(10, 3, 2, dtype=F64)
    return [
        (lambda: B.shape_project(mesh, torch.zeros(9, 3, dtype=F64), S), ValueError, "mu"),
        (lambda: B.shape_reconstruct(torch.zeros(2, 3, dtype=F64), mesh[0], S), ValueError, "betas"),
        (lambda: B.synthetic_population(0), ValueError, "n_people"),
        (lambda: B.body_meshes(torch.ones(2, 24), torch.ones(2, 23)), ValueError, "girth_scale"),
        (lambda: B.tube_vertices(torch.zeros(1, 1, 3), torch.ones(1, 1, 3), torch.ones(1, 1), 1, 8), ValueError, "n_rings"),
        (lambda: B.synthetic_body_model(num_betas=10, n_people=5), ValueError, "n_people"),
    ]


@pytest.mark.parametrize("i", range(6))
def test_shape_space_bad_input(i):
    fn, exc, match = _bad_shape_calls()[i]
    with pytest.raises(exc, match=match):
        fn()


def _bad_model_calls():
    m = small_model()
    R = torch.eye(3, dtype=F64).expand(1, 24, 3, 3)
    return [
        (lambda: B.skew(torch.zeros(2, 2)), ValueError, "v"),
        (lambda: B.skinning_transforms(torch.eye(4).expand(1, 24, 4, 4), torch.zeros(1, 23, 3)), ValueError, "joints"),
        (lambda: B.pose_features(torch.zeros(1, 24, 3)), ValueError, "rotations"),
        (lambda: B.pose_correctives_linear(torch.zeros(5, 3, 10), torch.zeros(1, 24, 3)), ValueError, "pose_basis"),
        (lambda: B.regress_joints(m.J_regressor, torch.zeros(1, 5, 3, dtype=F64)), ValueError, "vertices"),
        (lambda: B.smpl_joints(m, torch.zeros(1, 10, dtype=F64), torch.zeros(2, 24, 3, dtype=F64)), ValueError, "pose"),
        (lambda: B.smpl(m, torch.zeros(1, 10, dtype=F64), torch.zeros(1, 24, 3, dtype=F64), torch.zeros(1, 2, dtype=F64)), ValueError, "transl"),
        (lambda: B.forward_kinematics(R, torch.zeros(1, 24, 3, dtype=F64), parents=[0] * 24), ValueError, "parents"),
        (lambda: B.mesh_volume(torch.zeros(1, 4, 3), torch.zeros(2, 3)), TypeError, "faces"),
        (lambda: B.smpl("model", torch.zeros(1, 10), torch.zeros(1, 24, 3)), TypeError, "model"),
        (lambda: B.smpl(m, torch.zeros(1, 10, dtype=F64), torch.zeros(1, 24, 3, dtype=F64), pose_corrective=1),
         TypeError, "pose_corrective"),
    ]


@pytest.mark.parametrize("i", range(11))
def test_model_bad_input(i):
    fn, exc, match = _bad_model_calls()[i]
    with pytest.raises(exc, match=match):
        fn()


def _bad_fit_calls():
    m = small_model()
    x = torch.zeros(1, 24, 2, dtype=F64)
    z = torch.zeros(1, 10, dtype=F64)
    p = torch.zeros(1, 24, 3, dtype=F64)
    t = torch.tensor([[0.0, 0.0, 3.0]], dtype=F64)
    return [
        (lambda: B.fit_to_joints2d(m, x, 1.0, prior_weight=-1.0), ValueError, "prior_weight"),
        (lambda: B.fit_to_joints2d(m, x, 1.0, iterations=0), ValueError, "iterations"),
        (lambda: B.fit_to_joints2d(m, x, 1.0, init_pose=p[:, :3]), ValueError, "init_pose"),
        (lambda: B.reprojection_loss(m, z, p, t, x[:, :3], 1.0), ValueError, "joints2d"),
        (lambda: B.levenberg_marquardt(lambda a, b: a, torch.zeros(3, dtype=F64), x, 3), ValueError, "params"),
        (lambda: B.track_sequence(m, z, torch.zeros(2, 5, 3, dtype=F64)), ValueError, "frames"),
        (lambda: B.track_sequence(m, torch.zeros(2, 10, dtype=F64), torch.zeros(2, 896, 3, dtype=F64)), ValueError, "betas"),
        (lambda: B.fit_linear_lift(torch.zeros(4, 24, 2), torch.zeros(4, 23, 3)), ValueError, "joints3d"),
        (lambda: B.lift_predict(torch.zeros(49, 72), torch.zeros(4, 24, 3)), ValueError, "joints2d"),
        (lambda: B.project(torch.zeros(1, 4, 3), 1.0, torch.zeros(2, 3)), ValueError, "transl"),
    ]


@pytest.mark.parametrize("i", range(10))
def test_fitting_bad_input(i):
    fn, exc, match = _bad_fit_calls()[i]
    with pytest.raises(exc, match=match):
        fn()


def _bad_regression_calls():
    imgs = torch.zeros(4, 16, 16)
    return [
        (lambda: B.ridge_predict(torch.zeros(3, 2), torch.zeros(4, 5)), ValueError, "weights"),
        (lambda: B.fit_ridge(torch.zeros(4, 3), torch.zeros(4, 2), ridge=-1.0), ValueError, "ridge"),
        (lambda: B.cascade_regression_fit(imgs, torch.zeros(4, 3)), ValueError, "targets"),
        (lambda: B.cascade_regression_fit(imgs, torch.zeros(4, 2), stages=0), ValueError, "stages"),
        (lambda: B.cascade_regression_predict([], imgs), TypeError, "regressors"),
        (lambda: B.pictorial_brute_force(torch.zeros(1, 8, 16), torch.zeros(16, 2), [-1] + list(range(7)),
                                         torch.zeros(8, 2), torch.ones(8, 2)), ValueError, "unary"),
    ]


@pytest.mark.parametrize("i", range(6))
def test_regression_bad_input(i):
    fn, exc, match = _bad_regression_calls()[i]
    with pytest.raises(exc, match=match):
        fn()


@pytest.mark.claim("body.pose-parameters")
def test_project_is_a_pinhole_camera():
    pts = torch.tensor([[[0.2, -0.4, 1.0], [1.0, 2.0, 3.0]]], dtype=F64)
    t = torch.tensor([[0.1, 0.0, 1.0]], dtype=F64)
    x = B.project(pts, 500.0, t, center=(320.0, 240.0))
    want = [[320 + 500 * 0.3 / 2.0, 240 + 500 * -0.4 / 2.0], [320 + 500 * 1.1 / 4.0, 240 + 500 * 2.0 / 4.0]]
    np.testing.assert_allclose(x[0].numpy(), want, rtol=1e-14)


@pytest.mark.claim("body.fit-joints2d")
def test_levenberg_marquardt_matches_scipy_least_squares():
    from scipy.optimize import least_squares

    ts = torch.linspace(0, 2, 20, dtype=F64)
    truth = torch.tensor([[1.5, -0.7, 0.3], [0.5, 1.2, -0.2]], dtype=F64)
    ys = truth[:, :1] * torch.exp(truth[:, 1:2] * ts) + truth[:, 2:]
    ys = ys + 0.01 * torch.sin(7 * ts)                        # not exactly representable: residual > 0

    def residual(p, y):
        return p[0] * torch.exp(p[1] * ts) + p[2] - y

    p, cost = B.levenberg_marquardt(residual, torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=F64), ys, 60)
    for b in range(2):
        ref = least_squares(lambda q: q[0] * np.exp(q[1] * ts.numpy()) + q[2] - ys[b].numpy(), [1.0, 0.0, 0.0],
                            xtol=1e-15, ftol=1e-15, gtol=1e-15)
        np.testing.assert_allclose(p[b].numpy(), ref.x, rtol=1e-7, atol=1e-9)
        assert cost[b].item() == pytest.approx(2 * ref.cost, rel=1e-8)


# ------------------------------------------------------------------ review: boundary cases

def test_pictorial_labels_one_past_the_end_rejected():
    unary, pos, parents, off, k = _random_ps(0, 3, 2)          # L = 4 labels: 4 is out of range
    with pytest.raises(ValueError, match=r"^labels\b"):
        B.pictorial_energy(unary, pos, parents, off, k, torch.full((2, 3), 4))
    with pytest.raises(ValueError, match=r"^labels\b"):
        B.pictorial_energy(unary, pos, parents, off, k, torch.full((2, 3), -1))


@pytest.mark.claim("body.rigid-bone-transforms")
def test_rodrigues_series_branch_accurate_up_to_its_threshold():
    # Angles just below the switch to the Taylor series (t^2 < 1e-6): the series must agree with
    # SciPy to rounding (its first neglected terms are O(t^6) ~ 1e-18 relative).
    d = torch.nn.functional.normalize(randn(8, 3, seed=40), dim=-1)
    r = d * torch.linspace(5e-4, 9.99e-4, 8, dtype=F64)[:, None]
    np.testing.assert_allclose(B.rodrigues(r).numpy(), Rotation.from_rotvec(r.numpy()).as_matrix(), rtol=0, atol=1e-15)


@pytest.mark.claim("body.direct-regression-refinement")
def test_crop_clamps_each_axis_to_its_own_size():
    # A wide image (H = 3, W = 7): a centre right of the image is clamped to column W - 1 = 6,
    # one below it to row H - 1 = 2.
    img = torch.arange(21, dtype=F64).view(1, 3, 7)
    patch, c = B.crop_patches(img, torch.tensor([[9.0, 1.0]], dtype=F64), 3)
    assert c.tolist() == [[6.0, 1.0]]
    assert patch[0].tolist() == [[5, 6, 0], [12, 13, 0], [19, 20, 0]]
    patch, c = B.crop_patches(img.transpose(1, 2).contiguous(), torch.tensor([[1.0, 9.0]], dtype=F64), 3)
    assert c.tolist() == [[1.0, 6.0]]


@pytest.mark.claim("body.heatmap-stages")
def test_each_stage_sees_the_previous_stage_not_the_first():
    torch.manual_seed(1)
    net = B.MultiStageHeatmapNet(in_channels=2, joints=3, stages=3, hidden=4, kernel=3)
    x = torch.randn(1, 2, 10, 10)
    with torch.no_grad():
        before = [o.clone() for o in net(x)]
        net.stages[1][-1].bias += 1.0                         # change stage 2's beliefs only
        after = net(x)
    assert torch.equal(before[0], after[0])                    # stage 1 untouched
    assert (before[2] - after[2]).abs().max() > 1e-6           # stage 3 reads stage 2's output


@pytest.mark.claim("body.fit-joints2d")
def test_fit_objective_is_reprojection_plus_priors_without_the_root():
    # One LM iteration is enough to check what is minimised: the returned loss must be
    # L_reproj + prior_weight |theta_{1..23}|^2 + shape_weight |beta|^2, recomputed here from the
    # returned parameters (the global orientation, index 0, is not penalised: it faces the camera).
    m = small_model()
    betas, pose, transl, init = _fit_problem(1, 36, m)
    x = B.project(B.smpl(m, betas, pose, transl)[1], 1.0, torch.zeros_like(transl))
    pw, sw = 1e-2, 1e-3
    out = B.fit_to_joints2d(m, x, 1.0, prior_weight=pw, shape_weight=sw, init_pose=init, iterations=1)
    j = B.smpl(m, out.betas, out.pose, out.transl)[1]
    reproj = ((B.project(j, 1.0, torch.zeros_like(transl)) - x) ** 2).sum()
    want = reproj + pw * (out.pose[:, 1:] ** 2).sum() + sw * (out.betas ** 2).sum()
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-10)
    assert pw * (out.pose[:, 0] ** 2).sum().item() > 1e-3 * want.item()   # a root prior would show


@pytest.mark.claim("body.template-capture")
def test_tracking_starts_each_frame_from_the_previous_solution():
    # The same frame twice, one LM iteration per frame: started from frame 1's solution, frame 2
    # is fitted strictly better (LM accepts only improving steps and one step does not converge);
    # a tracker restarting from the rest pose would repeat frame 1's result.
    m = small_model()
    betas = randn(1, 10, seed=37)
    frame, _ = B.smpl(m, betas, random_pose(1, 38, scale=0.3))
    p_hat, t_hat = B.track_sequence(m, betas, frame.expand(2, -1, -1), iterations=1)
    err = (B.smpl(m, betas.expand(2, 10), p_hat, t_hat)[0] - frame).square().sum((-1, -2))
    assert err[1] < 0.99 * err[0]


# ------------------------------------------------------------------ model files are data (issue 18)

class _RunsCode:
    """A pickle payload that runs a shell command (writing a marker file) when pickle.load reads it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _CallsFunction:
    """A payload naming an ordinary module-level function that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):  # module-level so pickle can name it: properties.test_body._touch
    open(path, "w").close()


def _smpl_dict(m):
    d = {k: v for k, v in zip(B.SMPL_KEYS, (m.v_template.numpy(), m.shapedirs.numpy(), m.posedirs.numpy(),
                                             m.J_regressor.numpy(), m.weights.numpy(), None, m.faces.numpy()))}
    par = m.parents.numpy()
    d["kintree_table"] = np.stack([np.where(par < 0, 2 ** 32 - 1, par), np.arange(24)]).astype(np.uint32)
    return d


@pytest.fixture
def chumpy_pickler(monkeypatch):
    """``dump(obj, path, protocol)`` pickles with a stand-in class named chumpy.ch.Ch (state: its
    __dict__, as chumpy's __getstate__ gives), then removes the stand-in module again: the loader
    must read the file without chumpy. Returns (Ch, dump)."""
    import sys
    import types

    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x, **state):
            self.__dict__.update(state)
            if x is not None:
                self.x = x
            self._dirty_vars = set()

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch = Ch

    def dump(obj, path, protocol=2):
        monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
        monkeypatch.delitem(sys.modules, "chumpy.ch")
        monkeypatch.delitem(sys.modules, "chumpy")

    return Ch, dump


@pytest.mark.parametrize("payload", ["os.system", "module function"])
def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    evil = _RunsCode(marker) if payload == "os.system" else _CallsFunction(marker)
    d = _smpl_dict(small_model())
    d["v_template"] = evil
    path = tmp_path / "model.pkl"
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=2)
    name = {"os.system": f"{__import__('os').name}.system", "module function": "properties.test_body._touch"}[payload]
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        B.load_smpl(path)
    assert not marker.exists()  # refused before anything ran
    # the payload is real: a plain pickle.load of the same file writes the marker
    if payload == "module function":
        with open(path, "rb") as fh:
            pickle.load(fh)
        assert marker.exists()


def test_official_format_pickle_with_sparse_regressor_and_chumpy_loads(tmp_path, chumpy_pickler):
    import sys

    import scipy.sparse

    Ch, dump = chumpy_pickler
    m = small_model()
    d = _smpl_dict(m)
    d["J_regressor"] = scipy.sparse.csc_matrix(d["J_regressor"])
    d["J_regressor_prior"] = scipy.sparse.csr_matrix(d["J_regressor"])
    d["weights_prior"] = scipy.sparse.coo_matrix(d["weights"])
    d["bs_type"], d["bs_style"] = "lrotmin", "lbs"
    d["vert_sym_idxs"] = np.arange(5, dtype=np.int64)
    d["scale"] = np.float64(1.0)  # a numpy scalar
    d["shapedirs"], d["posedirs"] = Ch(d["shapedirs"], _itr=0), Ch(d["posedirs"], _itr=0)
    for proto in (0, 2, 4):  # old files: protocol 0 (copy_reg._reconstructor) and 2 (NEWOBJ)
        dump(d, tmp_path / f"model{proto}.pkl", proto)
        loaded = B.load_smpl(tmp_path / f"model{proto}.pkl", dtype=F64)
        assert "chumpy" not in sys.modules
        for f in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces", "parents"):
            assert torch.equal(getattr(loaded, f), getattr(m, f)), f
        betas, pose = randn(1, 10, seed=13), random_pose(1, 14)
        torch.testing.assert_close(B.smpl(loaded, betas, pose)[0], B.smpl(m, betas, pose)[0], **tol(F64))


def test_pickle_hostile_and_malformed_files(tmp_path, chumpy_pickler):
    Ch, dump = chumpy_pickler
    d = _smpl_dict(small_model())
    cases = {
        "builtins.eval": pickle.dumps({**d, "f": eval}),  # a global that is not data
        "not a dict": pickle.dumps([1, 2, 3]),
        "truncated": pickle.dumps(d)[:100],
    }
    for what, blob in cases.items():
        path = tmp_path / "x.pkl"
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=r"^path\b"):
            B.load_smpl(path)
    dump({**d, "v_template": Ch(None, _itr=0)}, tmp_path / "nox.pkl")       # a Ch without its array
    with pytest.raises(ValueError, match="chumpy.*no array"):
        B.load_smpl(tmp_path / "nox.pkl")
    dump({**d, "v_template": Ch(np.array(["a", "b"]))}, tmp_path / "str.pkl")  # a Ch of strings
    with pytest.raises(ValueError, match="chumpy.*numeric"):
        B.load_smpl(tmp_path / "str.pkl")


def test_npz_object_array_refused_with_a_clear_message(tmp_path):
    d = _smpl_dict(small_model())
    d["f"] = np.array([object(), None], dtype=object)
    path = tmp_path / "model.npz"
    np.savez(path, **d)  # numpy pickles object arrays inside the npz
    with pytest.raises(ValueError, match="object array 'f'"):
        B.load_smpl(path)


# ------------------------------------------------------------------ models save and load; no host syncs

def test_body_model_save_load_roundtrip_and_to(tmp_path):
    m = small_model()
    back = B.load_smpl(B.save_smpl_npz(tmp_path / "m.npz", m), dtype=F64)
    for f in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "parents", "faces"):
        a, b = getattr(back, f), getattr(m, f)
        assert a.dtype == b.dtype and torch.equal(a, b), f
    assert back.tree == m.tree == B.SMPL_PARENTS and back.levels == m.levels
    m32 = m.to(dtype=torch.float32)
    assert m32.v_template.dtype == torch.float32 and m32.faces.dtype == torch.long and m32.tree == m.tree
    betas, pose = randn(2, 10, seed=3), random_pose(2, 4)
    torch.testing.assert_close(B.smpl(back, betas, pose)[0], B.smpl(m, betas, pose)[0], **tol(F64))


@pytest.mark.parametrize("make", ["heatmaps", "implicit"])
def test_modules_state_dict_roundtrip(make, tmp_path):
    torch.manual_seed(0)
    net = B.MultiStageHeatmapNet(3, 4, stages=3, hidden=8) if make == "heatmaps" else B.AnimatableImplicitBody(5, 16)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    fresh = B.MultiStageHeatmapNet(3, 4, stages=3, hidden=8) if make == "heatmaps" else B.AnimatableImplicitBody(5, 16)
    x = torch.randn(2, 3, 12, 12) if make == "heatmaps" else torch.randn(2, 7, 3)
    run = (lambda n: torch.stack(n(x))) if make == "heatmaps" else (lambda n: n.sdf(x) + n.skinning_weights(x).sum(-1))
    assert not torch.equal(run(fresh), run(net))
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert torch.equal(run(fresh), run(net))


def test_smpl_forward_and_joints_make_no_host_sync():
    from spec.testing import count_host_syncs

    m = small_model()
    betas, pose = randn(2, 10, seed=1), random_pose(2, 2)
    B.smpl(m, betas, pose)  # warm-up
    with count_host_syncs() as syncs:
        B.smpl(m, betas, pose)
        B.smpl_joints(m, betas, pose)
        B.reprojection_loss(m, betas, pose, torch.tensor([[0.0, 0, 3]] * 2, dtype=F64),
                            torch.zeros(2, 24, 2, dtype=F64), 1.0)
    assert syncs.count == 0, syncs.where


def test_fitting_loop_makes_no_host_sync_per_iteration():
    from spec.testing import count_host_syncs

    m = small_model()
    x = B.project(B.smpl_joints(m, randn(1, 10, seed=2), random_pose(1, 3, scale=0.2)), 1.0,
                  torch.tensor([[0.0, 0, 3]], dtype=F64))
    counts = []
    for it in (1, 4):
        with count_host_syncs() as syncs:
            fit = B.fit_to_joints2d(m, x, 1.0, iterations=it)
        counts.append(syncs.count)
    assert counts[0] == counts[1], syncs.where  # nothing per iteration
    assert isinstance(fit, B.BodyFit) and fit._fields == ("betas", "pose", "transl", "loss", "reproj")
    lm = B.levenberg_marquardt(lambda p, t: p - t, torch.zeros(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64), 3)
    assert lm._fields == ("params", "cost")
    tr = B.track_sequence(m, randn(1, 10, seed=2), B.smpl(m, randn(1, 10, seed=2), torch.zeros(1, 24, 3, dtype=F64))[0], 1)
    assert tr._fields == ("pose", "transl")


def test_model_checks_weights_and_faces():
    m = small_model()
    fields = dict(v_template=m.v_template, shapedirs=m.shapedirs, posedirs=m.posedirs, J_regressor=m.J_regressor,
                  weights=m.weights, parents=m.parents, faces=m.faces)
    with pytest.raises(ValueError, match=r"^weights\b"):
        B.BodyModel(**{**fields, "weights": 3 * m.weights})
    with pytest.raises(ValueError, match=r"^faces\b"):
        B.BodyModel(**{**fields, "faces": m.faces + m.v_template.shape[0]})
    with pytest.raises(ValueError, match=r"^levels\b"):
        B.forward_kinematics(torch.eye(3, dtype=F64).expand(1, 24, 3, 3), torch.zeros(1, 24, 3, dtype=F64),
                             levels=((0,), (1, 2)))


# ------------------------------------------------------------------ the peer: smplx's lbs (issue 17)

def test_smpl_agrees_with_smplx_lbs(dtype):
    smplx_lbs = pytest.importorskip("smplx.lbs", reason="smplx (the peer library) is not installed")
    m = small_model().to(dtype=dtype)
    betas, pose = randn(3, 10, seed=21, dtype=dtype), random_pose(3, 22, dtype=dtype)
    v, j = B.smpl(m, betas, pose)
    P = m.posedirs.shape[2]
    args = (m.v_template, m.shapedirs, m.posedirs.permute(2, 0, 1).reshape(P, -1), m.J_regressor, m.parents, m.weights)
    # With rotation matrices given (pose2rot=False) both run the same formula: rounding only.
    # float32: ~1 m coordinates through 8 chained 4x4 products and 24-term blends in two operation
    # orders: a few ulps of 1 m; 1e-5 is ~80 ulps.
    atol = 1e-12 if dtype == F64 else 1e-5
    vs, js = smplx_lbs.lbs(betas, B.rodrigues(pose).reshape(3, -1, 9), *args, pose2rot=False)
    torch.testing.assert_close(v, vs, rtol=0, atol=atol)
    torch.testing.assert_close(j, js, rtol=0, atol=atol)
    # From axis-angle, smplx's batch_rodrigues takes the angle of r + 1e-8 (its own guard against
    # 0), which moves every rotation by O(1e-8): agreement to 1e-7 m, not to rounding.
    vs, js = smplx_lbs.lbs(betas, pose.reshape(3, -1), *args)
    torch.testing.assert_close(v, vs, rtol=0, atol=max(atol, 1e-7))


@pytest.mark.claim("body.heatmap-stages")
def test_every_stage_is_supervised_by_its_own_term():
    # Kills the mutant that supervises only the last stage: there the gradient reaches earlier
    # stages only through the chain, and an earlier stage's own map gets no gradient at all.
    g = generator(5)
    target = torch.rand(2, 3, 6, 6, generator=g, dtype=F64)
    maps = [torch.rand(2, 3, 6, 6, generator=g, dtype=F64, requires_grad=True) for _ in range(3)]
    loss = B.multistage_loss(maps, target)
    want = sum(float(((h.detach() - target) ** 2).mean()) for h in maps)  # sum over stages of each MSE
    assert loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    for h in maps:  # d/dh_t sum_s mean((h_s - y)^2) = 2 (h_t - y) / n: every stage, its own error
        torch.testing.assert_close(h.grad, 2 * (h.detach() - target) / target.numel(), **tol(F64))


@pytest.mark.claim("body.fit-issues-occlusion-clothes")
def test_self_occlusion_leaves_the_hidden_limb_undetermined(record_property):
    # A hand hidden behind the body gives no 2-D joints for the left wrist and hand (20, 22): the
    # left elbow's rotation (joint 18) then moves no visible joint, and the fit's Jacobian loses rank.
    m = small_model()
    betas, pose, transl, _ = _fit_problem(1, 31, m)
    S = 10

    def joints2d(p):
        j = B.smpl_joints(m, p[None, :S], p[S:S + 72].view(1, 24, 3))[0] + p[None, S + 72:]
        return B.project(j[None], 1.0, torch.zeros(1, 3, dtype=F64))[0]

    p0 = torch.cat([betas[0], pose[0].flatten(), transl[0]])
    J = torch.autograd.functional.jacobian(joints2d, p0)            # (24, 2, P)
    visible = [k for k in range(24) if k not in (20, 22)]

    def rank(a):
        s = torch.linalg.svdvals(a)
        return int((s > 1e-9 * s[0]).sum())

    full, hidden = rank(J.reshape(48, -1)), rank(J[visible].reshape(-1, J.shape[-1]))
    elbow = J[visible][..., S + 18 * 3:S + 19 * 3]                  # d visible joints / d theta_elbow
    assert elbow.abs().max() == 0 and J[20][..., S + 54:S + 57].abs().max() > 0.01  # it does move the wrist
    assert full - hidden >= 2
    record_property("evidence", f"2-D joint Jacobian rank {full} with all joints, {hidden} with the left wrist and hand "
                                "hidden; the left elbow's rotation moves no visible joint")


@pytest.mark.claim("body.fit-issues-occlusion-clothes")
def test_clothes_leave_a_residual_no_shape_or_pose_removes(record_property):
    # Clothes: a non-rigid displacement outside the model's spaces (folds: 1.5 cm radial offsets
    # varying as cos(3a) around each limb). The best shape (least squares) and the tracked pose
    # of the clothed scan both leave a residual of about the folds' size; without clothes both fit.
    m = small_model()
    betas = randn(1, 10, seed=41)
    rest, _ = B.smpl(m, betas, torch.zeros(1, 24, 3, dtype=F64))
    rings = rest[0].view(-1, 8, 3)                                # 4 x 8 vertices per ring
    normal = torch.nn.functional.normalize(rings - rings.mean(1, keepdim=True), dim=-1)
    a = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
    folds = (0.015 * torch.cos(3 * a)[None, :, None] * normal).reshape(1, -1, 3)
    rms = lambda x: x.square().sum(-1).mean().sqrt().item()  # noqa: E731
    b_clean, b_cloth = B.fit_shape_to_scan(m, rest), B.fit_shape_to_scan(m, rest + folds)
    res_clean = rms(B.smpl(m, b_clean, torch.zeros(1, 24, 3, dtype=F64))[0] - rest)
    res_cloth = rms(B.smpl(m, b_cloth, torch.zeros(1, 24, 3, dtype=F64))[0] - rest - folds)
    assert res_clean < 1e-9 and res_cloth > 0.9 * rms(folds)
    # posed: track the clothed frame's pose with the true shape
    pose = random_pose(1, 42, scale=0.3)
    frame, _ = B.smpl(m, betas, pose)
    clothed = frame + B.lbs(folds, m.weights, B.skinning_transforms(*_world(m, betas, pose)))
    tr = B.track_sequence(m, betas, clothed, iterations=6)
    res_pose = rms(B.smpl(m, betas, tr.pose, tr.transl)[0] - clothed)
    assert res_pose > 0.9 * rms(folds)
    record_property("evidence", f"folds of RMS {rms(folds) * 1000:.1f} mm: best shape leaves {res_cloth * 1000:.1f} mm, "
                                f"tracked pose {res_pose * 1000:.1f} mm; without clothes {res_clean:.1e} m")


def _world(m, betas, pose):
    J = B.regress_joints(m.J_regressor, m.v_template + B.shape_correctives(m.shapedirs, betas))
    G, _ = B.forward_kinematics(B.rodrigues(pose), J)
    return G, J


def test_closed_tube_is_a_closed_outward_manifold():
    # Every edge is shared by exactly two faces in opposite directions (closed, consistently
    # oriented), the caps sit on the axis, and the volume is translation invariant (only true for
    # a closed mesh) and positive (outward faces).
    verts, faces = B.closed_tube(0.3, 2.0, 5, 12)
    edges = {}
    for f in faces.tolist():
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            edges[(a, b)] = edges.get((a, b), 0) + 1
    assert all(c == 1 for c in edges.values()) and all((b, a) in edges for a, b in edges)
    torch.testing.assert_close(verts[-2:], torch.tensor([[0.0, 0, 0], [0, 0, 2.0]], dtype=F64), rtol=0, atol=0)
    vol = B.mesh_volume(verts[None], faces)
    shifted = B.mesh_volume(verts[None] + torch.tensor([5.0, -3.0, 7.0], dtype=F64), faces)
    torch.testing.assert_close(shifted, vol, **tol(F64))
    assert vol.item() > 0
    assert faces.min() == 0 and faces.max() == verts.shape[0] - 1


def test_cascade_default_ridge_is_the_closed_form():
    imgs, c = _blob_images(30, 3)
    ws = B.cascade_regression_fit(imgs, c, stages=1)
    X = torch.nn.functional.avg_pool2d(imgs[:, None], 4).flatten(1).numpy()
    X = np.concatenate([X, np.ones((X.shape[0], 1))], 1)
    want = np.linalg.solve(X.T @ X + 1e-3 * np.eye(X.shape[1]), X.T @ c.numpy())  # ridge 1e-3, the default
    np.testing.assert_allclose(ws[0].numpy(), want, rtol=1e-8, atol=1e-10)


def test_more_bad_input():
    m = small_model()
    imgs, c = _blob_images(4, 3)
    net = B.AnimatableImplicitBody(4, 8)
    cases = [
        (lambda: B.multistage_loss([torch.zeros(1, 2, 4, 4)], torch.zeros(2, 4, 4)), ValueError, "target"),
        (lambda: B.multistage_loss([torch.zeros(1, 2, 4, 5)], torch.zeros(1, 2, 4, 4)), ValueError, "heatmaps"),
        (lambda: B.multistage_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)), TypeError, "heatmaps"),
        (lambda: B.closed_tube(0.1, 0.0, 3, 8), ValueError, "length"),
        (lambda: B.closed_tube(0.1, -1.0, 3, 8), ValueError, "length"),
        (lambda: B.mesh_volume(torch.zeros(2, 3), torch.zeros(1, 3, dtype=torch.long)), ValueError, "vertices"),
        (lambda: B.mesh_volume(torch.zeros(1, 3, 3), torch.zeros(1, 4, dtype=torch.long)), ValueError, "faces"),
        (lambda: B.mesh_volume(torch.zeros(1, 3, 3), torch.zeros(1, 3)), TypeError, "faces"),
        (lambda: B.cascade_regression_fit(imgs[0], c), ValueError, "images"),
        (lambda: B.cascade_regression_fit(imgs, c[:2]), ValueError, "targets"),
        (lambda: B.cascade_regression_fit(imgs, c, stages=0), ValueError, "stages"),
        (lambda: B.cascade_regression_fit(imgs, c, pool=0), ValueError, "pool"),
        (lambda: B.cascade_regression_predict([], imgs), TypeError, "regressors"),
        (lambda: B.cascade_regression_predict([torch.zeros(3, 2, dtype=F64)], imgs[0]), ValueError, "images"),
        (lambda: B.pose_correctives_linear(torch.zeros(5, 3, 72, dtype=F64), torch.zeros(1, 24, 2, dtype=F64)),
         ValueError, "pose"),
        (lambda: B.pose_correctives_linear(torch.zeros(5, 3, 70, dtype=F64), torch.zeros(1, 24, 3, dtype=F64)),
         ValueError, "pose_basis"),
        (lambda: B.fit_shape_to_scan(m, torch.zeros(1, 5, 3, dtype=F64)), ValueError, "scan"),
        (lambda: B.AnimatableImplicitBody(0, 8), ValueError, "joints"),
        (lambda: B.AnimatableImplicitBody(4, 0), ValueError, "hidden"),
        (lambda: net.sdf(torch.zeros(2, 3)), ValueError, "x"),
        (lambda: net.skinning_weights(torch.zeros(2, 5, 2)), ValueError, "x"),
        (lambda: B.tree_levels((0, 0)), ValueError, "parents"),
    ]
    for fn, err, name in cases:
        with pytest.raises(err, match=rf"^{name}:"):
            fn()
    assert B.AnimatableImplicitBody(1, 1).skinning_weights(torch.zeros(1, 2, 3)).shape == (1, 2, 1)  # minimum sizes
    assert len(B.cascade_regression_fit(imgs, c, stages=1, pool=1)) == 1


def test_extreme_but_valid_inputs_stay_finite(device):
    m = small_model().to(device)
    pose = torch.zeros(3, 24, 3, dtype=F64, device=device)
    pose[0] = 1e3                                   # many full turns
    pose[1] = 1e-12                                 # deep in the series branch
    pose[2, :, 0] = math.pi                         # half turns, where sin t / t -> 0
    betas = torch.tensor([[1e2] * 10, [0.0] * 10, [-1e2] * 10], dtype=F64, device=device)
    v, j = B.smpl(m, betas, pose)
    assert torch.isfinite(v).all() and torch.isfinite(j).all()
    R = B.rodrigues(pose)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=F64, device=device).expand_as(R),
                               rtol=0, atol=1e-12)
    # the rest pose limit: R = I + [r]_x + O(|r|^2) for r = 1e-12 (1, 1, 1)
    want = torch.eye(3, dtype=F64, device=device) + B.skew(pose[1])
    torch.testing.assert_close(R[1], want, rtol=0, atol=1e-20)
