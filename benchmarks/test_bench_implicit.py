"""DVR's backward: the implicit-differentiation autograd.Function against autograd through the unrolled
secant solver (same rays, same field, same forward)."""

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
