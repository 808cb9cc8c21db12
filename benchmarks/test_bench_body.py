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


# SMPL forward against the peer library: smplx.lbs.lbs (the function behind smplx.SMPL.forward) on
# the same model arrays. A model of SMPL's sizes (6890 vertices, 24 joints, 10 betas, 207 pose
# features) with seeded random arrays (the official files cannot be shipped); 64 bodies.

def _smpl_inputs():
    g = torch.Generator().manual_seed(0)
    V, K, S = VERTICES, JOINTS, 10
    m = B.BodyModel(v_template=torch.randn(V, 3, generator=g), shapedirs=0.01 * torch.randn(V, 3, S, generator=g),
                    posedirs=1e-3 * torch.randn(V, 3, 207, generator=g),
                    J_regressor=torch.softmax(torch.randn(K, V, generator=g), -1),
                    weights=torch.softmax(4 * torch.randn(V, K, generator=g), -1),
                    parents=torch.tensor(B.SMPL_PARENTS), faces=torch.zeros(1, 3, dtype=torch.long))
    betas, pose = torch.randn(BODIES, S, generator=g), 0.3 * torch.randn(BODIES, K, 3, generator=g)
    return m, betas, pose


@pytest.mark.parametrize("who", ["smplx", "ours"])
def test_smpl_forward_vs_smplx(measure, who):
    m, betas, pose = _smpl_inputs()
    if who == "smplx":
        smplx_lbs = pytest.importorskip("smplx.lbs", reason="the peer library smplx is not installed (extra 'peers')")
        posedirs = m.posedirs.permute(2, 0, 1).reshape(207, -1).contiguous()  # smplx's (P, 3V) layout
        fn = lambda: smplx_lbs.lbs(betas, pose.reshape(BODIES, -1), m.v_template, m.shapedirs,  # noqa: E731
                                   posedirs, m.J_regressor, m.parents, m.weights)
    else:
        fn = lambda: B.smpl(m, betas, pose)  # noqa: E731
    with torch.no_grad():
        v, _ = measure(fn, group="body.smpl-forward", role="reference" if who == "smplx" else "kernel",
                       rounds=10, bodies=BODIES, vertices=VERTICES)
    assert v.shape == (BODIES, VERTICES, 3)
