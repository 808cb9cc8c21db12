"""Linear blend skinning on 64 bodies of 6890 vertices and 24 joints (SMPL's sizes).

Kernel: impl.body.lbs blends the 24 bone matrices per vertex with one einsum, then applies the
(B, V, 3, 4) blended matrices. Reference: impl.body.lbs_reference, the notes' formula taken
literally: move every vertex by every bone (B, K, V, 3), then weight and sum.
"""

import pytest
import torch

from impl import body as B

BODIES, VERTICES, JOINTS = 64, 6890, 24


def _inputs(requires_grad):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(BODIES, VERTICES, 3, generator=g)
    w = torch.softmax(4 * torch.randn(VERTICES, JOINTS, generator=g), -1)
    T = torch.eye(4).repeat(BODIES, JOINTS, 1, 1)
    T[..., :3, :3] = B.rodrigues(0.5 * torch.randn(BODIES, JOINTS, 3, generator=g))
    T[..., :3, 3] = torch.randn(BODIES, JOINTS, 3, generator=g)
    if requires_grad:
        v.requires_grad_(True)
        T.requires_grad_(True)
    return v, w, T


def _forward_backward(fn, v, w, T):
    out = fn(v, w, T)
    out.square().sum().backward()
    v.grad = T.grad = None
    return out


@pytest.mark.parametrize("fn,role", [(B.lbs_reference, "reference"), (B.lbs, "kernel")], ids=["reference", "einsum"])
def test_lbs_forward(benchmark, quick, fn, role):
    benchmark.group = "body.lbs-forward"
    benchmark.extra_info["role"] = role
    v, w, T = _inputs(False)
    with torch.no_grad():
        benchmark.pedantic(fn, args=(v, w, T), rounds=3 if quick else 10, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("fn,role", [(B.lbs_reference, "reference"), (B.lbs, "kernel")], ids=["reference", "einsum"])
def test_lbs_forward_backward(benchmark, quick, fn, role):
    benchmark.group = "body.lbs-forward-backward"
    benchmark.extra_info["role"] = role
    v, w, T = _inputs(True)
    benchmark.pedantic(_forward_backward, args=(fn, v, w, T), rounds=3 if quick else 10, iterations=1,
                       warmup_rounds=1)
