"""Parametric body models: pictorial structures, heatmaps, direct regression, SMPL and fitting.

Notes: "Parametric body models" (pictorial structure, deep features, 3D: SMPL, optimisation-based
fitting, template-based capture, animatable neural implicit surfaces).

The official SMPL files cannot be redistributed, so :func:`synthetic_body_model` builds a body
model with SMPL's structure (24 joints with SMPL's parent array, a tube mesh of a few thousand
vertices, skinning weights summing to one, a PCA shape basis, 207 pose-corrective features, a
joint regressor) deterministically in code. :func:`load_smpl` reads SMPL-format files: ``.npz``
with the keys ``v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f`` (what
:func:`save_smpl_npz` writes), or the official ``.pkl`` files. A ``.pkl`` is read as data, never as code: a restricted
unpickler (the approach of ``torch.load(weights_only=True)``) admits only NumPy arrays, dtypes
and scalars, SciPy sparse matrices and chumpy's array class ``chumpy.ch.Ch`` (mapped to a stand-in
that keeps its array, so chumpy need not be installed); any other class raises ValueError naming
it before anything of it runs. A sparse ``J_regressor`` is densified.

Conventions: joints are indexed as in SMPL (0 pelvis ... 23 right hand); a pose is axis-angle
per joint, ``pose: (B, 24, 3)`` with the root's global orientation first; points are metres,
y up.
"""

from __future__ import annotations

import importlib
import itertools
import math
import pickle
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from impl._checks import (check_bool, check_float, check_int, check_same, check_tensor,
                          check_weights_sum_to_one)

# SMPL's kinematic tree: parent of each of the 24 joints (root first, parent index < child index).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
NUM_JOINTS = 24
NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)  # 207: (R_k - I) flattened for the 23 non-root joints
SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def _check_index(t, name: str, shape=None) -> torch.Tensor:
    """An integer index tensor (faces, parents, labels)."""
    check_tensor(t, name, shape=shape, floating=False)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got dtype {t.dtype}")
    return t


def _check_parents(parents, name: str = "parents") -> tuple[int, ...]:
    if isinstance(parents, torch.Tensor):
        parents = parents.tolist()
    if not isinstance(parents, (list, tuple)) or not all(isinstance(p, int) for p in parents):
        raise TypeError(f"{name}: expected a sequence of ints")
    if len(parents) == 0 or parents[0] != -1:
        raise ValueError(f"{name}: the root (index 0) must have parent -1")
    for k, p in enumerate(parents[1:], start=1):
        if not 0 <= p < k:
            raise ValueError(f"{name}: parent of part {k} must be in [0, {k}), got {p}")
    return tuple(parents)


def tree_levels(parents) -> tuple[tuple[int, ...], ...]:
    """The joints of a kinematic tree grouped by depth: level d holds the joints d edges below the
    root (SMPL's 24 joints form 9 levels), so that forward kinematics runs one batched product per
    level instead of one per joint. parents: K ints (root -1, parent index < child index)."""
    parents = _check_parents(parents)
    depth = [0] * len(parents)
    for k in range(1, len(parents)):
        depth[k] = depth[parents[k]] + 1
    return tuple(tuple(k for k in range(len(parents)) if depth[k] == d) for d in range(max(depth) + 1))


# ---------------------------------------------------------------------------------------------
# Pictorial structures: unary terms plus pairwise springs on a tree, exact MAP by min-sum DP.
# ---------------------------------------------------------------------------------------------

def spring_cost(positions: torch.Tensor, offsets: torch.Tensor, stiffness: torch.Tensor) -> torch.Tensor:
    """Pairwise spring energy between every parent location and every child location.

    positions: (L, 2) candidate locations; offsets: (P, 2) rest displacement child - parent;
    stiffness: (P, 2) spring constants. Returns (P, L_parent, L_child):
    sum_d stiffness[p, d] * (x_child,d - x_parent,d - offset[p, d])^2.
    """
    check_tensor(positions, "positions", shape=(None, 2))
    check_tensor(offsets, "offsets", shape=(None, 2))
    check_tensor(stiffness, "stiffness", shape=(offsets.shape[0], 2))
    check_same(positions, "positions", offsets=offsets, stiffness=stiffness)
    if (stiffness < 0).any():
        raise ValueError("stiffness: spring constants must be >= 0")
    d = positions[None, :, None, :] - positions[None, None, :, :]  # parent - child, (1, L, L, 2)
    r = -d - offsets[:, None, None, :]                            # child - parent - offset
    return (stiffness[:, None, None, :] * r * r).sum(-1)


def _check_ps(unary, positions, parents, offsets, stiffness):
    check_tensor(unary, "unary", ndim=3)
    check_tensor(positions, "positions", shape=(unary.shape[2], 2))
    parents = _check_parents(parents)
    if len(parents) != unary.shape[1]:
        raise ValueError(f"parents: {len(parents)} parts, but unary has {unary.shape[1]}")
    check_tensor(offsets, "offsets", shape=(unary.shape[1], 2))
    check_tensor(stiffness, "stiffness", shape=(unary.shape[1], 2))
    check_same(unary, "unary", positions=positions, offsets=offsets, stiffness=stiffness)
    return parents


def pictorial_energy(unary: torch.Tensor, positions: torch.Tensor, parents, offsets: torch.Tensor,
                     stiffness: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """E(l) = sum_p unary[p, l_p] + sum_{p != root} spring(l_parent(p), l_p).

    unary: (B, P, L); positions: (L, 2); parents: P ints (root -1); offsets, stiffness: (P, 2)
    (row 0, the root's, is unused); labels: (B, P) long. Returns (B,).
    """
    parents = _check_ps(unary, positions, parents, offsets, stiffness)
    check_tensor(labels, "labels", shape=(unary.shape[0], unary.shape[1]), floating=False)
    if labels.dtype != torch.long or (labels < 0).any() or (labels >= unary.shape[2]).any():
        raise ValueError(f"labels: expected long indices in [0, {unary.shape[2]})")
    e = unary.gather(2, labels[..., None]).squeeze(-1).sum(1)
    if len(parents) > 1:
        child = torch.arange(1, len(parents), device=labels.device)
        par = torch.tensor(parents[1:], device=labels.device)
        x = positions[labels]                                      # (B, P, 2)
        r = x[:, child] - x[:, par] - offsets[child]
        e = e + (stiffness[child] * r * r).sum((-1, -2))
    return e


def pictorial_map(unary: torch.Tensor, positions: torch.Tensor, parents, offsets: torch.Tensor,
                  stiffness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact MAP (minimum energy) labelling of a tree-structured pictorial structure.

    Min-sum dynamic programming from the leaves to the root, then backtracking; each message is a
    (B, L, L) minimum, so the cost is O(B P L^2). Arguments as in :func:`pictorial_energy`.
    Returns labels (B, P) long and their energy (B,).
    """
    parents = _check_ps(unary, positions, parents, offsets, stiffness)
    B, P, L = unary.shape
    pair = spring_cost(positions, offsets, stiffness)   # (P, L_parent, L_child)
    belief = unary.clone()                               # unary + messages from the children
    best_child = [None] * P                              # (B, L_parent) argmin per part
    for p in range(P - 1, 0, -1):                        # children have larger indices than parents
        cost = belief[:, p, None, :] + pair[p][None]     # (B, L_parent, L_child)
        msg, arg = cost.min(-1)
        best_child[p] = arg
        belief[:, parents[p]] += msg
    energy, root = belief[:, 0].min(-1)
    labels = torch.empty(B, P, dtype=torch.long, device=unary.device)
    labels[:, 0] = root
    for p in range(1, P):                                # parents are decided before children
        labels[:, p] = best_child[p].gather(1, labels[:, parents[p], None]).squeeze(1)
    return labels, energy


def pictorial_brute_force(unary: torch.Tensor, positions: torch.Tensor, parents, offsets: torch.Tensor,
                          stiffness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain reference for :func:`pictorial_map`: the energy of all L^P labellings (small only)."""
    parents = _check_ps(unary, positions, parents, offsets, stiffness)
    B, P, L = unary.shape
    if L ** P > 2_000_000:
        raise ValueError(f"unary: L^P = {L}^{P} labellings is too many for brute force")
    all_l = torch.tensor(list(itertools.product(range(L), repeat=P)), device=unary.device)  # (N, P)
    N = all_l.shape[0]
    e = pictorial_energy(unary.repeat_interleave(N, 0), positions, parents, offsets, stiffness,
                         all_l.repeat(B, 1)).view(B, N)
    energy, idx = e.min(1)
    return all_l[idx], energy


# ---------------------------------------------------------------------------------------------
# Deep features: heatmaps (Gaussian targets, argmax / soft-argmax, stages) and direct regression.
# ---------------------------------------------------------------------------------------------

def gaussian_heatmap(centers: torch.Tensor, height: int, width: int, sigma: float,
                     normalize: bool = False) -> torch.Tensor:
    """Gaussian heatmap targets exp(-|p - c|^2 / (2 sigma^2)) at pixel centres p = (x, y).

    centers: (B, J, 2) in pixel units (x = column, y = row). Returns (B, J, H, W); with
    ``normalize`` each map is divided by its sum, a probability over the pixels.
    """
    check_bool(normalize, "normalize")
    check_tensor(centers, "centers", ndim=3, shape=(None, None, 2), finite=True)
    check_int(height, "height", min=1)
    check_int(width, "width", min=1)
    check_float(sigma, "sigma", min=0.0, min_open=True)
    ys = torch.arange(height, device=centers.device, dtype=centers.dtype)
    xs = torch.arange(width, device=centers.device, dtype=centers.dtype)
    dx2 = (xs - centers[..., 0, None]) ** 2                     # (B, J, W)
    dy2 = (ys - centers[..., 1, None]) ** 2                     # (B, J, H)
    logits = -(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma ** 2)
    if normalize:
        # softmax instead of exp / sum: a centre far outside the image still gives a finite map
        return torch.softmax(logits.flatten(-2), -1).view_as(logits)
    return logits.exp()


def heatmap_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """Integer location (x, y) of each map's maximum. heatmaps: (B, J, H, W) -> (B, J, 2)."""
    check_tensor(heatmaps, "heatmaps", ndim=4)
    W = heatmaps.shape[-1]
    idx = heatmaps.flatten(-2).argmax(-1)
    return torch.stack([idx % W, idx // W], -1).to(heatmaps.dtype)


def soft_argmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Expected location under p = softmax(logits / temperature) over the pixels.

    logits: (B, J, H, W) -> (B, J, 2) as (x, y); differentiable, sub-pixel.
    """
    check_tensor(logits, "logits", ndim=4)
    check_float(temperature, "temperature", min=0.0, min_open=True)
    B, J, H, W = logits.shape
    p = torch.softmax(logits.flatten(-2) / temperature, -1).view(B, J, H, W)
    xs = torch.arange(W, device=logits.device, dtype=logits.dtype)
    ys = torch.arange(H, device=logits.device, dtype=logits.dtype)
    return torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)


class MultiStageHeatmapNet(nn.Module):
    """Heatmap stages run sequentially (as in convolutional pose machines).

    Stage 1 sees the image features; stage t > 1 sees the features and the belief maps of stage
    t - 1, so it can use the other joints' beliefs as spatial context. x: (B, C, H, W) ->
    list of ``stages`` heatmaps (B, J, H, W).
    """

    def __init__(self, in_channels: int, joints: int, stages: int = 2, hidden: int = 16, kernel: int = 5):
        super().__init__()
        check_int(in_channels, "in_channels", min=1)
        check_int(joints, "joints", min=1)
        check_int(stages, "stages", min=1)
        check_int(hidden, "hidden", min=1)
        check_int(kernel, "kernel", min=1, odd=True)  # odd keeps the map size
        self.in_channels, self.joints = in_channels, joints

        def block(cin):
            return nn.Sequential(nn.Conv2d(cin, hidden, kernel, padding=kernel // 2), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2), nn.ReLU(),
                                 nn.Conv2d(hidden, joints, 1))

        self.stages = nn.ModuleList([block(in_channels)] + [block(in_channels + joints) for _ in range(stages - 1)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_tensor(x, "x", ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} channels, got {x.shape[1]}")
        out = [self.stages[0](x)]
        for stage in self.stages[1:]:
            out.append(stage(torch.cat([x, out[-1]], 1)))
        return out


def multistage_loss(heatmaps: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Intermediate supervision: the sum over stages of the mean squared heatmap error."""
    if not isinstance(heatmaps, (list, tuple)) or not heatmaps:
        raise TypeError("heatmaps: expected a non-empty list of tensors")
    check_tensor(target, "target", ndim=4)
    for h in heatmaps:
        check_tensor(h, "heatmaps", shape=tuple(target.shape))
    return sum(F.mse_loss(h, target) for h in heatmaps)


def fit_ridge(features: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Least-squares linear regressor with a bias: W minimising |[X 1] W - Y|^2 + ridge |W|^2.

    features: (N, D); targets: (N, T). Returns W: (D + 1, T).
    """
    check_tensor(features, "features", ndim=2)
    check_tensor(targets, "targets", shape=(features.shape[0], None))
    check_same(features, "features", targets=targets)
    check_float(ridge, "ridge", min=0.0)
    X = torch.cat([features, torch.ones_like(features[:, :1])], 1)
    A = X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
    return torch.linalg.solve(A, X.T @ targets)


def ridge_predict(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """features: (N, D), weights: (D + 1, T) from :func:`fit_ridge` -> (N, T)."""
    check_tensor(features, "features", ndim=2)
    check_tensor(weights, "weights", shape=(features.shape[1] + 1, None))
    return features @ weights[:-1] + weights[-1]


def crop_patches(images: torch.Tensor, centers: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops around each (rounded) centre, zero outside the image.

    images: (B, H, W); centers: (B, 2) as (x, y). Returns patches (B, size, size) and the patch
    centres actually used (B, 2), so that a refinement stage can predict the offset from them.
    """
    check_tensor(images, "images", ndim=3)
    check_tensor(centers, "centers", shape=(images.shape[0], 2), finite=True)
    check_int(size, "size", min=1, odd=True)
    B, H, W = images.shape
    r = size // 2
    c = centers.round().long()
    c = torch.stack([c[:, 0].clamp(0, W - 1), c[:, 1].clamp(0, H - 1)], 1)
    padded = F.pad(images, (r, r, r, r))
    off = torch.arange(size, device=images.device)
    rows = (c[:, 1, None] + off)[:, :, None].expand(B, size, size)   # padded coords: +r - r
    cols = (c[:, 0, None] + off)[:, None, :].expand(B, size, size)
    flat = padded.flatten(1).gather(1, (rows * (W + 2 * r) + cols).flatten(1))
    return flat.view(B, size, size), c.to(images.dtype)


def cascade_regression_fit(images: torch.Tensor, targets: torch.Tensor, stages: int = 2,
                           crop: int = 9, pool: int = 4, ridge: float = 1e-3) -> list[torch.Tensor]:
    """Direct regression of a joint's (x, y) with refinement (a DeepPose-style cascade).

    Stage 1 regresses the coordinates from the average-pooled image; each later stage regresses the
    offset of the target from a full-resolution crop around the previous estimate.
    images: (N, H, W); targets: (N, 2). Returns the stages' regressors.
    """
    check_tensor(images, "images", ndim=3)
    check_tensor(targets, "targets", shape=(images.shape[0], 2))
    check_int(stages, "stages", min=1)
    check_int(pool, "pool", min=1)
    ws = [fit_ridge(F.avg_pool2d(images[:, None], pool).flatten(1), targets, ridge)]
    est = ridge_predict(ws[0], F.avg_pool2d(images[:, None], pool).flatten(1))
    for _ in range(stages - 1):
        patch, c = crop_patches(images, est, crop)
        w = fit_ridge(patch.flatten(1), targets - c, ridge)
        ws.append(w)
        est = c + ridge_predict(w, patch.flatten(1))
    return ws


def cascade_regression_predict(regressors: list[torch.Tensor], images: torch.Tensor, crop: int = 9,
                               pool: int = 4) -> list[torch.Tensor]:
    """The estimates (N, 2) after each stage of :func:`cascade_regression_fit`'s cascade."""
    check_tensor(images, "images", ndim=3)
    if not isinstance(regressors, (list, tuple)) or not regressors:
        raise TypeError("regressors: expected a non-empty list of weight tensors")
    out = [ridge_predict(regressors[0], F.avg_pool2d(images[:, None], pool).flatten(1))]
    for w in regressors[1:]:
        patch, c = crop_patches(images, out[-1], crop)
        out.append(c + ridge_predict(w, patch.flatten(1)))
    return out


# ---------------------------------------------------------------------------------------------
# Rotations, forward kinematics and linear blend skinning.
# ---------------------------------------------------------------------------------------------

def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix [v]_x with [v]_x u = v x u. v: (..., 3) -> (..., 3, 3)."""
    check_tensor(v, "v", shape=None)
    if v.shape[-1:] != (3,):
        raise ValueError(f"v: last dimension must be 3, got shape {tuple(v.shape)}")
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], -1).view(*v.shape, 3)


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of an axis-angle vector: R = I + sin(t)/t K + (1 - cos t)/t^2 K^2, K = [r]_x.

    axis_angle: (..., 3), angle t = |r|. Near t = 0 the coefficients use their Taylor series, so
    values and gradients stay finite at the rest pose. Returns (..., 3, 3).
    """
    check_tensor(axis_angle, "axis_angle")
    if axis_angle.shape[-1:] != (3,):
        raise ValueError(f"axis_angle: last dimension must be 3, got shape {tuple(axis_angle.shape)}")
    t2 = (axis_angle * axis_angle).sum(-1)
    small = t2 < 1e-6
    t2s = torch.where(small, torch.ones_like(t2), t2)   # keep sqrt and division off 0 for autograd
    t = t2s.sqrt()
    a = torch.where(small, 1 - t2 / 6 + t2 * t2 / 120, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - torch.cos(t)) / t2s)
    K = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def forward_kinematics(rotations: torch.Tensor, joints: torch.Tensor, parents=SMPL_PARENTS, *,
                       levels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """World transforms G_k(theta, J) of each joint's frame along the kinematic tree.

    rotations: (B, K, 3, 3) local rotations; joints: (B, K, 3) rest joint positions. G_k is the
    product over the chain root..k of [R_j | j_j - j_parent(j)]. Returns G (B, K, 4, 4) and the
    posed joints (B, K, 3) (the translations of G). ``levels`` (from :func:`tree_levels`, which
    computes it when omitted) lets a caller that runs FK often pass the tree's depth levels once.
    """
    parents = _check_parents(parents)
    K = len(parents)
    check_tensor(rotations, "rotations", shape=(None, K, 3, 3))
    check_tensor(joints, "joints", shape=(rotations.shape[0], K, 3))
    check_same(rotations, "rotations", joints=joints)
    levels = tree_levels(parents) if levels is None else levels
    return _fk_levels(rotations, joints, parents, levels)


def _fk_levels(rotations, joints, parents, levels):
    """Forward kinematics, one batched product per depth level (no checks, no host sync).

    The parents of the joints at depth d all sit at depth d - 1, so each level gathers its
    parents' world frames from the level above; no in-place writes (autograd, vmap and jacfwd)."""
    order = [k for level in levels for k in level]
    if len(order) != len(parents):
        raise ValueError(f"levels: cover {len(order)} joints, the tree has {len(parents)}")
    R_prev = rotations[:, 0:1]
    t_prev = joints[:, 0:1]
    Rs, ts = [R_prev], [t_prev]
    for prev, level in zip(levels[:-1], levels[1:]):  # a loop over the tree's depth levels, not over data
        local = {k: i for i, k in enumerate(prev)}
        pidx = [local[parents[k]] for k in level]
        Rp, tp = R_prev[:, pidx], t_prev[:, pidx]                      # parents' world frames
        rel = joints[:, list(level)] - joints[:, [parents[k] for k in level]]
        R_prev = Rp @ rotations[:, list(level)]
        t_prev = (Rp @ rel[..., None]).squeeze(-1) + tp
        Rs.append(R_prev)
        ts.append(t_prev)
    inv = [0] * len(order)
    for i, k in enumerate(order):
        inv[k] = i
    Rw, tw = torch.cat(Rs, 1)[:, inv], torch.cat(ts, 1)[:, inv]
    G = torch.cat([torch.cat([Rw, tw[..., None]], -1),
                   F.pad(torch.zeros_like(tw[:, :, None, :]), (0, 1), value=1.0)], -2)  # (B, K, 4, 4)
    return G, tw


def skinning_transforms(world: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """G'_k = G_k(theta, J) G_k(theta*, J)^{-1}: bone k's rigid motion from the rest pose.

    In the rest pose G_k(theta*, J) is a translation by j_k, so G'_k = [R_k | t_k - R_k j_k].
    world: (B, K, 4, 4); joints: (B, K, 3) rest joints. Returns (B, K, 4, 4).
    """
    check_tensor(world, "world", shape=(None, None, 4, 4))
    check_tensor(joints, "joints", shape=(world.shape[0], world.shape[1], 3))
    R = world[..., :3, :3]
    t = world[..., :3, 3] - (R @ joints[..., None]).squeeze(-1)
    out = world.clone()
    out[..., :3, 3] = t
    return out


def _check_lbs(vertices, weights, transforms, validate=True):
    check_tensor(vertices, "vertices", shape=(None, None, 3))
    check_tensor(transforms, "transforms", shape=(vertices.shape[0], None, 4, 4))
    K = transforms.shape[1]
    check_tensor(weights, "weights", ndim=(2, 3))
    want = (vertices.shape[1], K) if weights.ndim == 2 else (vertices.shape[0], vertices.shape[1], K)
    check_tensor(weights, "weights", shape=want)
    check_same(vertices, "vertices", weights=weights, transforms=transforms)
    if not isinstance(validate, bool):
        raise TypeError(f"validate: expected a bool, got {type(validate).__name__}")
    if validate:
        # Convex weights: with rows summing to s the blended matrix scales the mesh by s, and a
        # negative weight mirrors part of it; neither is a skinning.
        check_weights_sum_to_one(weights, "weights")


def lbs(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor, *,
        validate: bool = True) -> torch.Tensor:
    """Linear blend skinning t'_i = sum_k w_ki G_k t_i, by blending the matrices first.

    vertices: (B, V, 3) rest positions; weights: (V, K) or (B, V, K), non-negative, rows summing
    to one (checked unless ``validate=False``: one read of the weights, for callers that checked
    them once, as :class:`BodyModel` does); transforms: (B, K, 4, 4) rigid bone transforms from
    the rest pose (:func:`skinning_transforms`). Returns (B, V, 3).
    """
    check_bool(validate, "validate")
    _check_lbs(vertices, weights, transforms, validate)
    B, V, K = vertices.shape[0], vertices.shape[1], transforms.shape[1]
    # One (12, K) x (K, V) product per body blends the 3 x 4 matrices with vertices last, so that
    # applying them is three multiply-adds over contiguous rows of V; a batched (3, 3) @ (3, 1)
    # product per vertex (as smplx does) is 2-3x slower on the CPU.
    T = torch.matmul(transforms[:, :, :3, :].reshape(B, K, 12).transpose(1, 2),
                     weights.transpose(-1, -2)).view(B, 3, 4, V)
    v = vertices.transpose(1, 2)                                   # (B, 3, V)
    out = T[:, :, 0] * v[:, None, 0] + T[:, :, 1] * v[:, None, 1] + T[:, :, 2] * v[:, None, 2] + T[:, :, 3]
    return out.transpose(1, 2).contiguous()


def lbs_reference(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor, *,
                  validate: bool = True) -> torch.Tensor:
    """Plain reference for :func:`lbs`: move every vertex by every bone, then weight the results."""
    check_bool(validate, "validate")
    _check_lbs(vertices, weights, transforms, validate)
    R, t = transforms[:, :, :3, :3], transforms[:, :, :3, 3]
    moved = torch.einsum("bkij,bvj->bkvi", R, vertices) + t[:, :, None, :]   # (B, K, V, 3)
    w = weights if weights.ndim == 3 else weights.expand(vertices.shape[0], -1, -1)
    return torch.einsum("bvk,bkvi->bvi", w, moved)


# ---------------------------------------------------------------------------------------------
# The SMPL model: data, formula, file format and a synthetic model with SMPL's structure.
# ---------------------------------------------------------------------------------------------

@dataclass
class BodyModel:
    """An SMPL-format body model (tensors; no learnable parameters).

    v_template: (V, 3) mean rest (T-pose) mesh; shapedirs: (V, 3, S) shape basis S;
    posedirs: (V, 3, 207) pose-corrective basis P; J_regressor: (K, V); weights: (V, K) skinning
    weights (non-negative, each row summing to one); parents: (K,) long; faces: (F, 3) long.
    The kinematic tree is also kept as Python data, read once at construction: ``tree`` (the K
    parent indices) and ``levels`` (the joints by depth, :func:`tree_levels`), so a forward pass
    never reads ``parents`` back from the device.
    """

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    J_regressor: torch.Tensor
    weights: torch.Tensor
    parents: torch.Tensor
    faces: torch.Tensor
    tree: tuple = field(init=False, repr=False, compare=False)
    levels: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        v = check_tensor(self.v_template, "v_template", shape=(None, 3))
        V = v.shape[0]
        check_tensor(self.shapedirs, "shapedirs", shape=(V, 3, None))
        check_tensor(self.posedirs, "posedirs", shape=(V, 3, None))
        check_tensor(self.J_regressor, "J_regressor", shape=(None, V))
        K = self.J_regressor.shape[0]
        check_tensor(self.weights, "weights", shape=(V, K))
        _check_index(self.parents, "parents", shape=(K,))
        self.tree = _check_parents(self.parents)  # the one host read of the tree
        self.levels = tree_levels(self.tree)
        if self.posedirs.shape[2] != 9 * (K - 1):
            raise ValueError(f"posedirs: expected 9 * (K - 1) = {9 * (K - 1)} pose features, got {self.posedirs.shape[2]}")
        _check_index(self.faces, "faces", shape=(None, 3))
        check_same(v, "v_template", shapedirs=self.shapedirs, posedirs=self.posedirs,
                   J_regressor=self.J_regressor, weights=self.weights)
        check_weights_sum_to_one(self.weights, "weights")
        if self.faces.numel() and not bool(((self.faces >= 0) & (self.faces < V)).all()):
            raise ValueError(f"faces: vertex indices must lie in [0, {V})")

    def to(self, device=None, dtype=None) -> "BodyModel":
        """A copy with the float tensors on ``device`` in ``dtype`` (index tensors keep long)."""
        out = {}
        for f in fields(self):
            if not f.init:
                continue
            t = getattr(self, f.name)
            out[f.name] = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)
        return BodyModel(**out)

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[2]


def _check_model(model):
    if not isinstance(model, BodyModel):
        raise TypeError(f"model: expected a BodyModel, got {type(model).__name__}")
    return model


def shape_correctives(shapedirs: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """s(beta) = S beta per vertex. shapedirs: (V, 3, S); betas: (B, S) -> (B, V, 3)."""
    check_tensor(shapedirs, "shapedirs", shape=(None, 3, None))
    check_tensor(betas, "betas", shape=(None, shapedirs.shape[2]))
    return torch.einsum("bl,vcl->bvc", betas, shapedirs)


def pose_features(rotations: torch.Tensor) -> torch.Tensor:
    """SMPL's pose-corrective features vec(R_k(theta) - R_k(theta*)) for k = 1..K-1, R(theta*) = I.

    rotations: (B, K, 3, 3) -> (B, 9 (K - 1)); zero in the rest pose.
    """
    check_tensor(rotations, "rotations", shape=(None, None, 3, 3))
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).flatten(1)


def pose_correctives(posedirs: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """SMPL's p(theta) = P vec(R(theta) - R(theta*)). posedirs: (V, 3, 9 (K-1)) -> (B, V, 3)."""
    check_tensor(posedirs, "posedirs", shape=(None, 3, None))
    feats = pose_features(rotations)
    if feats.shape[1] != posedirs.shape[2]:
        raise ValueError(f"rotations: {feats.shape[1]} pose features, posedirs has {posedirs.shape[2]}")
    # (B, P) x (P, 3V) on a transposed view of posedirs: no copy of the (V, 3, P) basis
    return (feats @ posedirs.reshape(-1, posedirs.shape[2]).T).view(feats.shape[0], -1, 3)


def pose_correctives_linear(pose_basis: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """The notes' form p(theta) = P theta, linear in the axis-angle pose (for comparison only).

    pose_basis: (V, 3, 3K); pose: (B, K, 3) -> (B, V, 3).
    """
    check_tensor(pose, "pose", shape=(None, None, 3))
    check_tensor(pose_basis, "pose_basis", shape=(None, 3, pose.shape[1] * 3))
    return torch.einsum("bp,vcp->bvc", pose.flatten(1), pose_basis)


def regress_joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """J = J_regressor @ vertices. J_regressor: (K, V); vertices: (B, V, 3) -> (B, K, 3)."""
    check_tensor(J_regressor, "J_regressor", ndim=2)
    check_tensor(vertices, "vertices", shape=(None, J_regressor.shape[1], 3))
    return torch.einsum("kv,bvc->bkc", J_regressor, vertices)


def smpl(model: BodyModel, betas: torch.Tensor, pose: torch.Tensor, transl: torch.Tensor | None = None,
         pose_corrective: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The SMPL formula t'_i = sum_k w_ki G'_k(theta, J(beta)) (t_i + s_i(beta) + p_i(theta)).

    betas: (B, S); pose: (B, K, 3) axis-angle, root first; transl: (B, 3) or None.
    J(beta) = J_regressor (T + S beta); p(theta) = P vec(R(theta) - I) (off with
    ``pose_corrective=False``). Returns vertices (B, V, 3) and posed joints (B, K, 3).
    """
    _check_model(model)
    K = model.J_regressor.shape[0]
    check_tensor(betas, "betas", shape=(None, model.num_betas))
    check_tensor(pose, "pose", shape=(betas.shape[0], K, 3))
    check_same(model.v_template, "model", betas=betas, pose=pose)
    if not isinstance(pose_corrective, bool):
        raise TypeError(f"pose_corrective: expected a bool, got {type(pose_corrective).__name__}")
    v_shaped = model.v_template + shape_correctives(model.shapedirs, betas)
    J = regress_joints(model.J_regressor, v_shaped)
    R = rodrigues(pose)
    v_posed = v_shaped + pose_correctives(model.posedirs, R) if pose_corrective else v_shaped
    world, joints = _fk_levels(R, J, model.tree, model.levels)
    verts = lbs(v_posed, model.weights, skinning_transforms(world, J), validate=False)  # checked in BodyModel
    if transl is not None:
        check_tensor(transl, "transl", shape=(betas.shape[0], 3))
        verts, joints = verts + transl[:, None], joints + transl[:, None]
    return verts, joints


def smpl_joints(model: BodyModel, betas: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Posed joints only (no vertices): J(beta) = J_regressor T + (J_regressor S) beta, then FK.

    Identical to ``smpl(...)[1]``, at the cost of a (K, S) product: what a fit to joints needs.
    """
    _check_model(model)
    K = model.J_regressor.shape[0]
    check_tensor(betas, "betas", shape=(None, model.num_betas))
    check_tensor(pose, "pose", shape=(betas.shape[0], K, 3))
    J0 = model.J_regressor @ model.v_template
    JS = torch.einsum("kv,vcl->kcl", model.J_regressor, model.shapedirs)
    return _posed_joints(J0, JS, model, betas, pose)


def _posed_joints(J0, JS, model, betas, pose):
    J = J0 + torch.einsum("kcl,bl->bkc", JS, betas)
    return _fk_levels(rodrigues(pose), J, model.tree, model.levels)[1]


def save_smpl_npz(path, model: BodyModel) -> Path:
    """Write ``model`` as an SMPL-format ``.npz`` (keys v_template, shapedirs, posedirs,
    J_regressor, weights, kintree_table, f; kintree_table[0] holds the parents, the root's as
    2^32 - 1 as in the official files)."""
    import numpy as np

    _check_model(model)
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path: expected a .npz file name, got {path.name!r}")
    par = model.parents.cpu().numpy().astype(np.int64)
    kintree = np.stack([np.where(par < 0, 2 ** 32 - 1, par), np.arange(len(par))]).astype(np.uint32)
    np.savez(path, v_template=model.v_template.cpu().numpy(), shapedirs=model.shapedirs.cpu().numpy(),
             posedirs=model.posedirs.cpu().numpy(), J_regressor=model.J_regressor.cpu().numpy(),
             weights=model.weights.cpu().numpy(), kintree_table=kintree, f=model.faces.cpu().numpy())
    return path


class ChumpyArray:
    """Stand-in for chumpy's ``chumpy.ch.Ch`` in SMPL ``.pkl`` files: keeps the array ``x`` of its
    pickled state and nothing else (chumpy need not be installed; nothing of chumpy runs)."""

    def __setstate__(self, state):
        if not isinstance(state, dict) or "x" not in state:
            raise ValueError("path: a chumpy.ch.Ch in the file has no array 'x' in its state")
        import numpy as np

        x = state["x"]
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
            raise ValueError(f"path: a chumpy.ch.Ch holds {type(x).__name__}, expected a numeric numpy array")
        self.x = x

    def __array__(self, dtype=None, copy=None):
        return self.x if dtype is None else self.x.astype(dtype)


# (module, name) -> (module to import, attribute): what an SMPL .pkl may name, nothing else.
# NumPy 2 moved numpy.core to numpy._core; SciPy moved the sparse classes to private modules;
# Python 2 pickles name copy_reg and __builtin__.
_NP_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")
_PICKLE_ALLOWED = {
    **{(m, n): ("numpy", n) for m in ("numpy",) for n in ("ndarray", "dtype")},
    **{(m, n): (m, n) for m in _NP_CORE for n in ("_reconstruct", "scalar")},
    **{(m, n): ("scipy.sparse", n)
       for n in ("csc_matrix", "csr_matrix", "coo_matrix")
       for m in ("scipy.sparse", f"scipy.sparse.{n[:3]}", f"scipy.sparse._{n[:3]}")},
    # protocol-2 pickles written by Python 3 store bytes (numpy's array buffers) as
    # _codecs.encode(text, "latin1"): a codec call, no code of the file's choosing
    ("_codecs", "encode"): ("_codecs", "encode"),
    ("copy_reg", "_reconstructor"): ("copyreg", "_reconstructor"),
    ("copyreg", "_reconstructor"): ("copyreg", "_reconstructor"),
    # chumpy's pickled state holds sets (its dirty-variable bookkeeping)
    **{(m, n): ("builtins", n) for m in ("builtins", "__builtin__") for n in ("object", "set", "frozenset")},
}


class _SMPLUnpickler(pickle.Unpickler):
    """Unpickles data only: ``find_class`` admits NumPy arrays, dtypes and scalars, SciPy sparse
    matrices and chumpy's Ch (as :class:`ChumpyArray`); any other global raises ValueError naming
    it, before it is imported or called (the approach of ``torch.load(weights_only=True)``)."""

    def find_class(self, module, name):
        if (module, name) == ("chumpy.ch", "Ch"):
            return ChumpyArray
        target = _PICKLE_ALLOWED.get((module, name))
        if target is None:
            raise ValueError(f"path: the pickle names {module}.{name}, which a model file may not "
                             "(only numpy arrays, scipy sparse matrices and chumpy.ch.Ch are read)")
        mod, attr = target
        if mod in _NP_CORE:  # whichever of numpy._core / numpy.core this NumPy has
            try:
                return getattr(importlib.import_module(_NP_CORE[0]), attr)
            except ImportError:
                return getattr(importlib.import_module(_NP_CORE[1]), attr)
        return getattr(importlib.import_module(mod), attr)

    def persistent_load(self, pid):
        raise ValueError("path: the pickle uses persistent ids, which a model file may not")


def load_smpl(path, dtype: torch.dtype = torch.float32, device="cpu") -> BodyModel:
    """Load an SMPL-format model file (``.npz``, or the official ``.pkl``; see the module docstring).

    Both are read as data: ``.npz`` with ``allow_pickle=False`` (an object array is refused),
    ``.pkl`` with a restricted unpickler (:class:`_SMPLUnpickler`) that refuses every class but
    NumPy arrays, SciPy sparse matrices and chumpy's array. Missing keys raise ValueError naming them.
    """
    import numpy as np

    path = Path(path)
    if path.suffix not in (".npz", ".pkl"):
        raise ValueError(f"path: expected a .npz or .pkl file, got {path.name!r}")
    if not path.is_file():
        raise ValueError(f"path: no such file {str(path)!r}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            data = {}
            for k in z.files:
                try:
                    data[k] = z[k]
                except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                    raise ValueError(f"path: {path.name} holds an object array {k!r}; model files must hold "
                                     "numeric arrays only (object arrays would need pickle)") from e
    else:
        with open(path, "rb") as fh:
            try:
                data = _SMPLUnpickler(fh, encoding="latin1").load()
            except (pickle.UnpicklingError, EOFError) as e:
                raise ValueError(f"path: {path.name} is not a readable pickle ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"path: expected a pickled dict, got {type(data).__name__}")
    missing = [k for k in SMPL_KEYS if k not in data]
    if missing:
        raise ValueError(f"path: {path.name} lacks the SMPL key(s) {missing}")

    def arr(k):
        x = data[k]
        x = x.toarray() if hasattr(x, "toarray") else x  # scipy.sparse J_regressor in the .pkl files
        x = x.x if isinstance(x, ChumpyArray) else x
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise ValueError(f"path: {path.name}'s {k!r} has dtype {x.dtype}, expected numbers")
        return x

    kin = arr("kintree_table").astype(np.int64)
    parents = kin[0].copy()
    parents[0] = -1
    ft = dict(dtype=dtype, device=device)
    return BodyModel(
        v_template=torch.as_tensor(arr("v_template"), **ft), shapedirs=torch.as_tensor(arr("shapedirs"), **ft),
        posedirs=torch.as_tensor(arr("posedirs"), **ft), J_regressor=torch.as_tensor(arr("J_regressor"), **ft),
        weights=torch.as_tensor(arr("weights"), **ft),
        parents=torch.as_tensor(parents, dtype=torch.long, device=device),
        faces=torch.as_tensor(arr("f").astype(np.int64), device=device))


# Rest (T-pose) joint positions of the synthetic body, metres, x to the body's left, y up, z forward.
_REST_JOINTS = (
    (0.0, 0.93, 0.0), (0.09, 0.84, 0.0), (-0.09, 0.84, 0.0), (0.0, 1.05, 0.0), (0.10, 0.48, 0.0),
    (-0.10, 0.48, 0.0), (0.0, 1.18, 0.0), (0.10, 0.08, 0.0), (-0.10, 0.08, 0.0), (0.0, 1.26, 0.0),
    (0.10, 0.02, 0.12), (-0.10, 0.02, 0.12), (0.0, 1.47, 0.0), (0.07, 1.40, 0.0), (-0.07, 1.40, 0.0),
    (0.0, 1.60, 0.02), (0.18, 1.42, 0.0), (-0.18, 1.42, 0.0), (0.45, 1.42, 0.0), (-0.45, 1.42, 0.0),
    (0.70, 1.42, 0.0), (-0.70, 1.42, 0.0), (0.79, 1.42, 0.0), (-0.79, 1.42, 0.0),
)
# Tube radius of the bone ending at each joint (index 0 unused) and of the leaf end segments.
_RADII = (0.0, 0.10, 0.10, 0.13, 0.075, 0.075, 0.14, 0.055, 0.055, 0.15, 0.045, 0.045, 0.055, 0.06,
          0.06, 0.06, 0.055, 0.055, 0.05, 0.05, 0.04, 0.04, 0.035, 0.035)
_LEAVES = {10: (0.0, 0.0, 0.07, 0.04), 11: (0.0, 0.0, 0.07, 0.04), 15: (0.0, 0.18, 0.0, 0.09),
           22: (0.08, 0.0, 0.0, 0.03), 23: (-0.08, 0.0, 0.0, 0.03)}  # leaf: end offset, radius
# Groups of bones whose lengths and girths vary together across the synthetic population.
_GROUP = (0, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 3, 4, 4, 3, 4, 4, 5, 5, 5, 5, 5, 5)


def _segments():
    """(start joint, end joint or -1 for a leaf end, skinning joint at start, at end) per tube."""
    segs = [(SMPL_PARENTS[j], j) for j in range(1, NUM_JOINTS)]
    segs += [(j, -1 - j) for j in sorted(_LEAVES)]
    return segs


def tube_vertices(starts: torch.Tensor, ends: torch.Tensor, radii: torch.Tensor, n_rings: int,
                  n_around: int) -> torch.Tensor:
    """Open tubes (rings of ``n_around`` points at ``n_rings`` stations) around line segments.

    starts, ends: (B, G, 3); radii: (B, G). Returns (B, G, n_rings, n_around, 3). Ring frames are
    built from the segment direction so that they are shared by collinear segments.
    """
    check_tensor(starts, "starts", shape=(None, None, 3))
    check_tensor(ends, "ends", shape=tuple(starts.shape))
    check_tensor(radii, "radii", shape=tuple(starts.shape[:2]))
    check_int(n_rings, "n_rings", min=2)
    check_int(n_around, "n_around", min=3)
    d = F.normalize(ends - starts, dim=-1)
    helper = torch.tensor([0.0, 0.0, 1.0], dtype=d.dtype, device=d.device).expand_as(d)
    alt = torch.tensor([1.0, 0.0, 0.0], dtype=d.dtype, device=d.device).expand_as(d)
    helper = torch.where((d * helper).sum(-1, keepdim=True).abs() > 0.9, alt, helper)
    u = F.normalize(torch.cross(d, helper, dim=-1), dim=-1)
    v = torch.cross(d, u, dim=-1)
    s = torch.linspace(0, 1, n_rings, dtype=d.dtype, device=d.device)
    a = torch.arange(n_around, dtype=d.dtype, device=d.device) * (2 * math.pi / n_around)
    centre = starts[:, :, None, :] + s[:, None] * (ends - starts)[:, :, None, :]      # (B, G, R, 3)
    ring = torch.cos(a)[:, None] * u[:, :, None, :] + torch.sin(a)[:, None] * v[:, :, None, :]  # (B, G, A, 3)
    return centre[:, :, :, None, :] + radii[:, :, None, None, None] * ring[:, :, None, :, :]


def _person_joints_radii(length_scale: torch.Tensor, girth_scale: torch.Tensor):
    """Rest joints (N, 24, 3) and radii from per-bone length and girth factors (N, 24)."""
    rest = torch.tensor(_REST_JOINTS, dtype=length_scale.dtype, device=length_scale.device)
    J = [rest[0].expand(length_scale.shape[0], 3)]
    for j in range(1, NUM_JOINTS):
        J.append(J[SMPL_PARENTS[j]] + length_scale[:, j, None] * (rest[j] - rest[SMPL_PARENTS[j]]))
    return torch.stack(J, 1), girth_scale


def body_meshes(length_scale: torch.Tensor, girth_scale: torch.Tensor, n_rings: int = 8, n_around: int = 12
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Registered T-pose meshes of synthetic people: the same vertex order for everyone.

    length_scale, girth_scale: (N, 24) per-bone factors (1 = the mean body). Returns vertices
    (N, V, 3) and rest joints (N, 24, 3).
    """
    check_tensor(length_scale, "length_scale", shape=(None, NUM_JOINTS))
    check_tensor(girth_scale, "girth_scale", shape=tuple(length_scale.shape))
    J, g = _person_joints_radii(length_scale, girth_scale)
    radii0 = torch.tensor(_RADII, dtype=J.dtype, device=J.device)
    starts, ends, radii = [], [], []
    for a, b in _segments():
        if b >= 0:
            starts.append(J[:, a]), ends.append(J[:, b]), radii.append(radii0[b] * g[:, b])
        else:
            off = torch.tensor(_LEAVES[a][:3], dtype=J.dtype, device=J.device)
            starts.append(J[:, a]), ends.append(J[:, a] + length_scale[:, a, None] * off)
            radii.append(_LEAVES[a][3] * g[:, a])
    tubes = tube_vertices(torch.stack(starts, 1), torch.stack(ends, 1), torch.stack(radii, 1), n_rings, n_around)
    return tubes.flatten(1, 3), J


def _tube_faces(n_tubes: int, n_rings: int, n_around: int) -> torch.Tensor:
    r, a = torch.meshgrid(torch.arange(n_rings - 1), torch.arange(n_around), indexing="ij")
    v00 = r * n_around + a
    v01 = r * n_around + (a + 1) % n_around
    v10 = v00 + n_around
    v11 = v01 + n_around
    quad = torch.stack([torch.stack([v00, v01, v11], -1), torch.stack([v00, v11, v10], -1)], -2).view(-1, 3)
    base = torch.arange(n_tubes)[:, None, None] * (n_rings * n_around)
    return (quad[None] + base).view(-1, 3)


def synthetic_population(n_people: int, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bone length and girth factors (N, 24) of a deterministic synthetic population.

    Group factors (legs, spine, neck, shoulders, arms) plus a height and a girth factor, with small
    per-bone variations, so the population's shape spectrum decays gradually.
    """
    check_int(n_people, "n_people", min=1)
    check_int(seed, "seed", min=0)
    g = torch.Generator().manual_seed(seed)
    grp = torch.tensor(_GROUP)
    height = 1 + 0.07 * torch.randn(n_people, 1, generator=g, dtype=dtype)
    group_len = 1 + 0.05 * torch.randn(n_people, 6, generator=g, dtype=dtype)
    girth = 1 + 0.12 * torch.randn(n_people, 1, generator=g, dtype=dtype)
    group_girth = 1 + 0.08 * torch.randn(n_people, 6, generator=g, dtype=dtype)
    length = height * group_len[:, grp] * (1 + 0.01 * torch.randn(n_people, NUM_JOINTS, generator=g, dtype=dtype))
    girth = girth * group_girth[:, grp] * (1 + 0.02 * torch.randn(n_people, NUM_JOINTS, generator=g, dtype=dtype))
    return length, girth


def shape_pca(meshes: torch.Tensor, num_components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape deformation subspace: PCA of vectorised registered rest meshes, T = S beta + mu.

    meshes: (N, V, 3). Returns mu (V, 3), S (V, 3, C) with each column scaled by its standard
    deviation (so beta ~ N(0, I) covers the population), and the per-component standard
    deviations (C,).
    """
    check_tensor(meshes, "meshes", shape=(None, None, 3))
    N, V, _ = meshes.shape
    check_int(num_components, "num_components", min=1, max=min(N, 3 * V))
    mu = meshes.mean(0)
    X = (meshes - mu).reshape(N, -1)
    # Eigenvectors of the small N x N Gram matrix give the principal directions: far cheaper than
    # an SVD of the N x 3V data when there are fewer meshes than coordinates.
    evals, U = torch.linalg.eigh(X @ X.T)
    evals, U = evals.flip(0)[:num_components].clamp_min(0), U.flip(1)[:, :num_components]
    s = evals.sqrt()
    Vh = (U.T @ X) / s.clamp_min(torch.finfo(X.dtype).tiny)[:, None]
    std = s / math.sqrt(max(N - 1, 1))
    S = (Vh.T * std).reshape(V, 3, num_components)
    return mu, S, std


def shape_project(meshes: torch.Tensor, mu: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Least-squares betas of meshes (N, V, 3) in the subspace T = S beta + mu: (N, C)."""
    check_tensor(meshes, "meshes", shape=(None, None, 3))
    check_tensor(mu, "mu", shape=tuple(meshes.shape[1:]))
    check_tensor(S, "S", shape=(meshes.shape[1], 3, None))
    A = S.reshape(-1, S.shape[-1])
    return torch.linalg.lstsq(A, (meshes - mu).reshape(meshes.shape[0], -1).T).solution.T


def shape_reconstruct(betas: torch.Tensor, mu: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """T = S beta + mu. betas: (N, C) -> (N, V, 3)."""
    check_tensor(S, "S", shape=(None, 3, None))
    check_tensor(betas, "betas", shape=(None, S.shape[-1]))
    return mu + torch.einsum("nc,vdc->nvd", betas, S)


def synthetic_body_model(n_rings: int = 8, n_around: int = 12, num_betas: int = 10, n_people: int = 200,
                         seed: int = 0, dtype=torch.float64) -> BodyModel:
    """A body model with SMPL's structure, generated deterministically (no SMPL data involved).

    Template: tubes around SMPL's 23 bones plus 5 leaf segments (28 tubes of n_rings x n_around
    vertices; 2688 by default); shape basis: PCA of :func:`synthetic_population`'s registered
    meshes; joint regressor: uniform weights on the ring that circles each joint (rows sum to one);
    skinning weights: a bone's vertices follow its start joint, blending towards its end joint over
    the last half (rows sum to one); pose correctives: small seeded random (V, 3, 207) basis.
    """
    check_int(num_betas, "num_betas", min=1)
    check_int(n_people, "n_people", min=num_betas + 1)
    length, girth = synthetic_population(n_people, seed, dtype)
    meshes, _ = body_meshes(length, girth, n_rings, n_around)
    mu, S, _ = shape_pca(meshes, num_betas)
    segs = _segments()
    V = mu.shape[0]
    per_tube = n_rings * n_around
    s = torch.linspace(0, 1, n_rings, dtype=dtype).repeat_interleave(n_around)   # station of each vertex
    blend = 0.5 * torch.clamp((s - 0.5) / 0.5, 0, 1) ** 2 * (3 - 2 * torch.clamp((s - 0.5) / 0.5, 0, 1))
    W = torch.zeros(V, NUM_JOINTS, dtype=dtype)
    Jr = torch.zeros(NUM_JOINTS, V, dtype=dtype)
    for t, (a, b) in enumerate(segs):
        rows = slice(t * per_tube, (t + 1) * per_tube)
        if b >= 0:
            W[rows, a] = 1 - blend
            W[rows, b] = blend
            Jr[b, (t + 1) * per_tube - n_around:(t + 1) * per_tube] = 1 / n_around   # ring at the end joint
            if a == 0 and b == 3:
                Jr[0, t * per_tube:t * per_tube + n_around] = 1 / n_around           # root: first ring
        else:
            W[rows, a] = 1.0
    g = torch.Generator().manual_seed(seed + 1)
    posedirs = 2e-3 * torch.randn(V, 3, NUM_POSE_FEATURES, generator=g, dtype=dtype)
    return BodyModel(v_template=mu, shapedirs=S, posedirs=posedirs, J_regressor=Jr, weights=W,
                     parents=torch.tensor(SMPL_PARENTS), faces=_tube_faces(len(segs), n_rings, n_around))


# ---------------------------------------------------------------------------------------------
# Geometry helpers for the LBS artifact: a closed tube and the volume it encloses.
# ---------------------------------------------------------------------------------------------

def closed_tube(radius: float, length: float, n_rings: int, n_around: int, dtype=torch.float64
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed cylinder along z in [0, length] (rings plus two cap centres), outward faces.

    Returns vertices (n_rings * n_around + 2, 3) and faces (F, 3) long.
    """
    check_float(radius, "radius", min=0.0, min_open=True)
    check_float(length, "length", min=0.0, min_open=True)
    v = tube_vertices(torch.tensor([[[0.0, 0.0, 0.0]]], dtype=dtype), torch.tensor([[[0.0, 0.0, length]]], dtype=dtype),
                      torch.tensor([[radius]], dtype=dtype), n_rings, n_around)[0, 0].reshape(-1, 3)
    caps = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, length]], dtype=dtype)
    faces = _tube_faces(1, n_rings, n_around)
    n = n_rings * n_around
    a = torch.arange(n_around)
    bottom = torch.stack([torch.full_like(a, n), (a + 1) % n_around, a], -1)
    top = torch.stack([torch.full_like(a, n + 1), (n_rings - 1) * n_around + a, (n_rings - 1) * n_around + (a + 1) % n_around], -1)
    faces = torch.cat([faces, bottom, top])
    verts = torch.cat([v, caps])
    # orient outwards: the signed volume of a closed outward mesh is positive
    if mesh_volume(verts[None], faces)[0] < 0:
        faces = faces.flip(-1)
    return verts, faces


def mesh_volume(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Signed volume of closed triangle meshes by the divergence theorem: sum det[a, b, c] / 6.

    vertices: (B, V, 3); faces: (F, 3) long. Returns (B,).
    """
    check_tensor(vertices, "vertices", shape=(None, None, 3))
    _check_index(faces, "faces", shape=(None, 3))
    a, b, c = (vertices[:, faces[:, i]] for i in range(3))
    return (a * torch.cross(b, c, dim=-1)).sum((-1, -2)) / 6


# ---------------------------------------------------------------------------------------------
# Cameras, the naive 2-D to 3-D lift, optimisation-based fitting, tracking.
# ---------------------------------------------------------------------------------------------

def project(points: torch.Tensor, focal: float, transl: torch.Tensor, center: tuple[float, float] = (0.0, 0.0)
            ) -> torch.Tensor:
    """Pinhole projection of points moved into the camera frame by ``transl`` (camera looks down +z).

    points: (B, N, 3); transl: (B, 3). Returns (B, N, 2) = focal * (X + t)_xy / (X + t)_z + center.
    """
    check_tensor(points, "points", shape=(None, None, 3))
    check_tensor(transl, "transl", shape=(points.shape[0], 3))
    check_float(focal, "focal", min=0.0, min_open=True)
    p = points + transl[:, None]
    c = torch.tensor(center, dtype=points.dtype, device=points.device)
    return focal * p[..., :2] / p[..., 2:] + c


def bone_lengths(joints: torch.Tensor, parents=SMPL_PARENTS) -> torch.Tensor:
    """|j_k - j_parent(k)| for k = 1..K-1. joints: (..., K, 3) -> (..., K - 1)."""
    parents = _check_parents(parents)
    check_tensor(joints, "joints", shape=None)
    if joints.shape[-2:] != (len(parents), 3):
        raise ValueError(f"joints: expected (..., {len(parents)}, 3), got {tuple(joints.shape)}")
    par = list(parents[1:])
    return (joints[..., 1:, :] - joints[..., par, :]).norm(dim=-1)


def fit_linear_lift(joints2d: torch.Tensor, joints3d: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Naive 2-D to 3-D lift: a ridge regressor from all 2-D joints to all 3-D joints.

    joints2d: (N, K, 2); joints3d: (N, K, 3). Returns weights (2K + 1, 3K); nothing ties the output
    to a skeleton, so bone lengths are not constrained.
    """
    check_tensor(joints2d, "joints2d", shape=(None, None, 2))
    check_tensor(joints3d, "joints3d", shape=(joints2d.shape[0], joints2d.shape[1], 3))
    return fit_ridge(joints2d.flatten(1), joints3d.flatten(1), ridge)


def lift_predict(weights: torch.Tensor, joints2d: torch.Tensor) -> torch.Tensor:
    """Apply :func:`fit_linear_lift`'s regressor: (N, K, 2) -> (N, K, 3)."""
    check_tensor(joints2d, "joints2d", shape=(None, None, 2))
    return ridge_predict(weights, joints2d.flatten(1)).view(joints2d.shape[0], joints2d.shape[1], 3)


def reprojection_loss(model: BodyModel, betas: torch.Tensor, pose: torch.Tensor, transl: torch.Tensor,
                      joints2d: torch.Tensor, focal: float, center=(0.0, 0.0)) -> torch.Tensor:
    """L_reproj = sum over joints of |project(joints(beta, theta)) - x|^2, per body: (B,)."""
    _check_model(model)
    check_tensor(joints2d, "joints2d", shape=(pose.shape[0], pose.shape[1], 2))
    x = project(smpl_joints(model, betas, pose), focal, transl, center)
    return ((x - joints2d) ** 2).sum((-1, -2))


class LMResult(NamedTuple):
    """:func:`levenberg_marquardt`'s result: params (B, P) and the final costs (B,)."""
    params: torch.Tensor
    cost: torch.Tensor


class BodyFit(NamedTuple):
    """A fitted body: betas (B, S), pose (B, K, 3), transl (B, 3), loss (B,) (the minimised
    objective: reprojection plus priors), reproj (B,) (the reprojection error alone)."""
    betas: torch.Tensor
    pose: torch.Tensor
    transl: torch.Tensor
    loss: torch.Tensor
    reproj: torch.Tensor


class Track(NamedTuple):
    """:func:`track_sequence`'s result: pose (T, K, 3) and transl (T, 3) per frame."""
    pose: torch.Tensor
    transl: torch.Tensor


def levenberg_marquardt(residual, params: torch.Tensor, targets: torch.Tensor, iterations: int
                        ) -> LMResult:
    """Minimise |residual(p, target)|^2 for each of B independent problems by Levenberg-Marquardt.

    residual maps one problem's params (P,) and target to residuals (R,); params: (B, P) start;
    targets: (B, ...). Jacobians by forward-mode autodiff, batched with vmap. Returns the params
    (B, P) and the final costs (B,).
    """
    check_tensor(params, "params", ndim=2)
    check_int(iterations, "iterations", min=1)
    jac = torch.func.vmap(torch.func.jacfwd(residual))
    res = torch.func.vmap(residual)
    ft = dict(dtype=params.dtype, device=params.device)
    lam = torch.full((params.shape[0], 1, 1), 1e-3, **ft)
    eye = torch.eye(params.shape[1], **ft)
    r = res(params, targets)
    cost = (r * r).sum(1)
    for _ in range(iterations):  # solver iterations, each batched over the problems
        Jm = jac(params, targets)                                   # (B, R, P)
        JtJ, Jtr = Jm.transpose(1, 2) @ Jm, Jm.transpose(1, 2) @ r[..., None]
        damp = lam * (eye + torch.diag_embed(JtJ.diagonal(dim1=1, dim2=2)))
        cand = params + torch.linalg.solve(JtJ + damp, -Jtr)[..., 0]
        r_new = res(cand, targets)
        cost_new = (r_new * r_new).sum(1)
        better = cost_new < cost                                    # accept, or raise the damping
        params = torch.where(better[:, None], cand, params)
        r = torch.where(better[:, None], r_new, r)
        cost = torch.where(better, cost_new, cost)
        lam = torch.where(better[:, None, None], lam / 3, lam * 4).clamp(1e-12, 1e12)
    return LMResult(params, cost)


def fit_to_joints2d(model: BodyModel, joints2d: torch.Tensor, focal: float, center=(0.0, 0.0),
                    prior_weight: float = 1e-4, shape_weight: float = 1e-4, init_transl: torch.Tensor | None = None,
                    init_pose: torch.Tensor | None = None, iterations: int = 30) -> BodyFit:
    """Optimisation-based fitting: argmin over beta, theta and the camera translation of
    L_reproj + prior_weight |theta_body|^2 + shape_weight |beta|^2 (a Gaussian pose and shape prior).

    joints2d: (B, K, 2) image coordinates. Levenberg-Marquardt (damped Gauss-Newton on the stacked
    residuals, Jacobians by torch.func) from ``init_pose`` (default the rest pose; set the root's
    global orientation to face the camera), beta = 0 and ``init_transl`` (default 3 m in front of
    the camera). Returns a :class:`BodyFit` (betas, pose, transl, loss, reproj), batched over B.
    No host synchronisation in the iterations (accept/reject and damping are tensor ops).
    """
    _check_model(model)
    K = model.J_regressor.shape[0]
    check_tensor(joints2d, "joints2d", shape=(None, K, 2), finite=True)
    check_same(model.v_template, "model", joints2d=joints2d)
    check_float(prior_weight, "prior_weight", min=0.0)
    check_float(shape_weight, "shape_weight", min=0.0)
    check_int(iterations, "iterations", min=1)
    B, S = joints2d.shape[0], model.num_betas
    ft = dict(dtype=joints2d.dtype, device=joints2d.device)
    if init_pose is None:
        init_pose = torch.zeros(B, K, 3, **ft)
    if init_transl is None:
        init_transl = torch.tensor([0.0, 0.0, 3.0], **ft).expand(B, 3)
    check_tensor(init_pose, "init_pose", shape=(B, K, 3))
    check_tensor(init_transl, "init_transl", shape=(B, 3))
    sp, sb = math.sqrt(prior_weight), math.sqrt(shape_weight)
    J0 = model.J_regressor @ model.v_template
    JS = torch.einsum("kv,vcl->kcl", model.J_regressor, model.shapedirs)

    def residual(params, target):  # one body: params (S + 3K + 3,), target (K, 2)
        betas, pose, transl = params[:S], params[S:S + 3 * K].view(K, 3), params[S + 3 * K:]
        x = project(_posed_joints(J0, JS, model, betas[None], pose[None]), focal, transl[None], center)[0]
        return torch.cat([(x - target).flatten(), sp * pose[1:].flatten(), sb * betas])

    params = torch.cat([torch.zeros(B, S, **ft), init_pose.flatten(1), init_transl], 1)
    params, cost = levenberg_marquardt(residual, params, joints2d, iterations)
    betas, pose, transl = params[:, :S], params[:, S:S + 3 * K].view(B, K, 3), params[:, S + 3 * K:]
    reproj = reprojection_loss(model, betas, pose, transl, joints2d, focal, center)
    return BodyFit(betas=betas, pose=pose, transl=transl, loss=cost, reproj=reproj)


def learned_update_step(update_fn, pose: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One step of learned fitting: theta^{t+1} = theta^t + F(dL_reproj/dtheta, theta^t, x).

    ``update_fn`` is F (an nn.Module or callable) returning a tensor shaped like ``pose``;
    F(g, theta, x) = -lr g recovers gradient descent.
    """
    if not callable(update_fn):
        raise TypeError("update_fn: expected a callable F(grad, pose, x)")
    check_tensor(pose, "pose")
    check_tensor(grad, "grad", shape=tuple(pose.shape))
    check_tensor(x, "x")
    delta = update_fn(grad, pose, x)
    check_tensor(delta, "update_fn output", shape=tuple(pose.shape))
    return pose + delta


def fit_shape_to_scan(model: BodyModel, scan: torch.Tensor) -> torch.Tensor:
    """Template from the first frame: least-squares betas of a registered rest-pose scan (B, V, 3)."""
    _check_model(model)
    check_tensor(scan, "scan", shape=(None, model.v_template.shape[0], 3))
    return shape_project(scan, model.v_template, model.shapedirs)


def track_sequence(model: BodyModel, betas: torch.Tensor, frames: torch.Tensor, iterations: int = 10
                   ) -> Track:
    """Template-based capture: fit pose and translation to each frame's registered points (V, 3)
    by Levenberg-Marquardt, starting every frame from the previous frame's solution.

    betas: (1, S) from the first frame; frames: (T, V, 3). Returns poses (T, K, 3), transl (T, 3).
    """
    _check_model(model)
    check_tensor(betas, "betas", shape=(1, model.num_betas))
    check_tensor(frames, "frames", shape=(None, model.v_template.shape[0], 3))
    check_int(iterations, "iterations", min=1)
    K = model.J_regressor.shape[0]

    def residual(params, target):  # params: pose (3K) and translation (3); target (V, 3)
        v, _ = smpl(model, betas, params[:3 * K].view(1, K, 3), params[None, 3 * K:])
        return (v[0] - target).flatten()

    params = torch.zeros(1, 3 * K + 3, dtype=frames.dtype, device=frames.device)
    out = []
    for t in range(frames.shape[0]):  # sequential by nature: each frame starts from the last
        params, _ = levenberg_marquardt(residual, params, frames[t:t + 1], iterations)
        out.append(params[0])
    out = torch.stack(out)
    return Track(out[:, :3 * K].view(-1, K, 3), out[:, 3 * K:])


# ---------------------------------------------------------------------------------------------
# Animatable neural implicit surfaces: base shape and skinning weights as two neural fields.
# ---------------------------------------------------------------------------------------------

class AnimatableImplicitBody(nn.Module):
    """Two neural implicit functions in the canonical (rest) space: f(x) the signed distance of the
    base shape and w(x) the skinning weights over K bones (softmax, so they sum to one).

    Posing moves canonical points by LBS with w(x): x' = sum_k w_k(x) G_k x.
    """

    def __init__(self, joints: int = NUM_JOINTS, hidden: int = 64):
        super().__init__()
        check_int(joints, "joints", min=1)
        check_int(hidden, "hidden", min=1)
        self.sdf_net = nn.Sequential(nn.Linear(3, hidden), nn.Softplus(beta=100), nn.Linear(hidden, hidden),
                                     nn.Softplus(beta=100), nn.Linear(hidden, 1))
        self.weight_net = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, joints))

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, 3) canonical points -> (B, N)."""
        check_tensor(x, "x", shape=(None, None, 3))
        return self.sdf_net(x).squeeze(-1)

    def skinning_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, 3) -> (B, N, K), non-negative, summing to one."""
        check_tensor(x, "x", shape=(None, None, 3))
        return torch.softmax(self.weight_net(x), -1)

    def deform(self, x: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
        """Canonical points (B, N, 3) to posed space with bone transforms (B, K, 4, 4)."""
        return lbs(x, self.skinning_weights(x), transforms)
