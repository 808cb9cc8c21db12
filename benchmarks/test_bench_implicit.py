"""Implicit surfaces: DVR's backward (implicit differentiation against autograd through the unrolled secant
solver), and mesh extraction (our marching cubes against scikit-image's, and against our marching
tetrahedra) on a sphere SDF, float32, 128^3 (64^3 in quick mode)."""

import numpy as np
import pytest
import torch

from impl import implicit as im


def _setup(R):
    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(3, 64, generator=g).requires_grad_(True)
    b1 = torch.randn(64, generator=g).requires_grad_(True)
    w2 = (torch.randn(64, generator=g) / 64).requires_grad_(True)
    r = torch.tensor(0.8, requires_grad=True)

    def fn(p, W1, b1, w2, r):
        return torch.linalg.vector_norm(p, dim=-1) - r + 0.05 * torch.tanh(p @ W1 + b1) @ w2

    o = torch.tensor([0.0, 0.0, -3.0]).expand(R, 3).contiguous()
    w = torch.cat([(torch.rand(R, 2, generator=g) - 0.5) * 0.3, torch.ones(R, 1)], -1)
    w = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    return fn, o, w, (W1, b1, w2, r)


def _grad(depth_fn, fn, o, w, theta):
    d, _ = depth_fn(fn, o, w, *theta, t_near=0.5, t_far=5.0, n_steps=32, n_iter=10)
    return torch.autograd.grad(d.sum(), theta)


def _time(measure, quick, depth_fn, role):
    fn, o, w, theta = _setup(2048 if quick else 65536)
    measure(_grad, depth_fn, fn, o, w, theta, group="implicit.dvr-backward", role=role, rounds=5, rays=o.shape[0])


def test_dvr_unrolled(measure, quick):
    _time(measure, quick, im.surface_depth_unrolled, "reference")


def test_dvr_implicit(measure, quick):
    _time(measure, quick, im.surface_depth, "kernel")


# Marching cubes against scikit-image's (Lewiner, Cython) on the same float32 sphere SDF. The sweep
# (64^3 -> 128^3, and 192^3 in full mode) shows how the ratio moves with the grid: torch's per-call
# dispatch overhead weighs most on small grids.
_GRIDS = {}


def _sphere(n):
    if n not in _GRIDS:
        _GRIDS[n] = im.sdf_sphere(im.grid_points(n, 1.0, dtype=torch.float32), 0.8).contiguous()
    return _GRIDS[n]


@pytest.fixture(params=[64, 128, 192], ids=lambda n: f"{n}^3")
def grid_n(request, quick):
    if quick and request.param > 128:
        pytest.skip("quick mode times 64^3 and 128^3 only")  # not a claim test: only fewer sizes timed
    return request.param


def test_marching_cubes_skimage(measure, grid_n):
    from skimage.measure import marching_cubes

    vals = _sphere(grid_n).numpy()
    measure(marching_cubes, vals, 0.0, group=f"implicit.marching-cubes-{grid_n}", role="reference", size=grid_n)


def test_marching_cubes_ours(measure, grid_n):
    vals = _sphere(grid_n)
    measure(im.marching_cubes, vals, 0.0, group=f"implicit.marching-cubes-{grid_n}", role="kernel", size=grid_n,
            sweep="implicit.marching-cubes")


def test_marching_tetrahedra_vs_cubes(measure, quick):
    # the reference algorithm at 32^3 (it loops over the 14 tetrahedron cases in Python)
    vals = _sphere(32)
    measure(im.marching_tetrahedra, vals, 0.0, group="implicit.marching-tetrahedra-32", role="reference", rounds=3)


def test_marching_cubes_32(measure):
    vals = _sphere(32)
    measure(im.marching_cubes, vals, 0.0, group="implicit.marching-tetrahedra-32", role="kernel")
