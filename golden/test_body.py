"""Golden outputs of the parametric-body section's main systems on fixed inputs: the synthetic
SMPL-structured model itself (template, shape basis, joint regressor), Rodrigues rotations,
forward kinematics, SMPL vertices and joints of fixed bodies (LBS of a fixed body), the exact
pictorial-structure MAP and the heatmap decoders. They guard against silent drift across torch
versions and devices.

Inputs come from numpy's legacy RandomState (frozen stream); the synthetic model is built by
impl.body.synthetic_body_model from its fixed seed. Float64 on the CPU to 1e-12; float32 on every
device against the same file, with the tolerance stated beside the assertion."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import body as B

pytestmark = pytest.mark.golden

F64 = torch.float64
GOLD_TOL = dict(atol=1e-12, rtol=1e-12)


def _inputs(device, dtype):
    rs = np.random.RandomState(77)
    t = lambda a: torch.from_numpy(a).to(device=device, dtype=dtype)  # noqa: E731
    return dict(betas=t(rs.standard_normal((3, 10))), pose=t(0.4 * rs.standard_normal((3, 24, 3))),
                transl=t(rs.standard_normal((3, 3))), unary=t(3 * rs.uniform(size=(2, 4, 9))),
                offsets=t(rs.standard_normal((4, 2))), stiffness=t(rs.uniform(size=(4, 2))),
                centers=t(rs.uniform(2, 14, (2, 3, 2))))


@functools.lru_cache(maxsize=1)
def _model() -> B.BodyModel:
    return B.synthetic_body_model(n_rings=4, n_around=8, n_people=60, seed=0, dtype=F64)


def _outputs(device=torch.device("cpu"), dtype=F64) -> dict[str, torch.Tensor]:
    m = _model().to(device, dtype)
    x = _inputs(device, dtype)
    R = B.rodrigues(x["pose"])
    J = B.regress_joints(m.J_regressor, m.v_template + B.shape_correctives(m.shapedirs, x["betas"]))
    G, _ = B.forward_kinematics(R, J)
    verts, joints = B.smpl(m, x["betas"], x["pose"], x["transl"])
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    positions = torch.stack([xs, ys], -1).reshape(-1, 2).to(device=device, dtype=dtype)
    labels, energy = B.pictorial_map(x["unary"], positions, (-1, 0, 0, 1), x["offsets"], x["stiffness"])
    heat = B.gaussian_heatmap(x["centers"], 16, 16, 1.5)
    return dict(v_template=m.v_template, shapedirs=m.shapedirs, J_regressor=m.J_regressor, rotations=R,
                world_transforms=G, vertices=verts, joints=joints, pictorial_labels=labels, pictorial_energy=energy,
                heatmaps=heat, soft_argmax=B.soft_argmax(torch.log(heat.clamp_min(1e-300))))


SHAPES = dict(v_template=(896, 3), shapedirs=(896, 3, 10), J_regressor=(24, 896), rotations=(3, 24, 3, 3),
              world_transforms=(3, 24, 4, 4), vertices=(3, 896, 3), joints=(3, 24, 3), pictorial_labels=(2, 4),
              pictorial_energy=(2,), heatmaps=(2, 3, 16, 16), soft_argmax=(2, 3, 2))


def test_golden_body_float64(ndarrays_regression):
    out = _outputs()
    for name, v in out.items():
        want = torch.long if name == "pictorial_labels" else F64
        assert v.dtype == want and tuple(v.shape) == SHAPES[name], name
    # what is stored was checked first: the MAP is the brute-force optimum, the vertices equal
    # LBS's plain per-bone reference, the soft-argmax of a heatmap's log is its expectation over the pixels
    x = _inputs("cpu", F64)
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    positions = torch.stack([xs, ys], -1).reshape(-1, 2).to(F64)
    _, e_bf = B.pictorial_brute_force(x["unary"], positions, (-1, 0, 0, 1), x["offsets"], x["stiffness"])
    assert_close(out["pictorial_energy"], e_bf, rtol=0, atol=1e-12)
    h = out["heatmaps"].numpy()
    p = h / h.sum((-1, -2), keepdims=True)  # the expectation over the pixels, written out
    want = np.stack([(p.sum(-2) * np.arange(16)).sum(-1), (p.sum(-1) * np.arange(16)).sum(-1)], -1)
    np.testing.assert_allclose(out["soft_argmax"].numpy(), want, rtol=0, atol=1e-12)
    m = _model()
    v_shaped = m.v_template + B.shape_correctives(m.shapedirs, x["betas"])
    J = B.regress_joints(m.J_regressor, v_shaped)
    v_posed = v_shaped + B.pose_correctives(m.posedirs, out["rotations"])
    plain = B.lbs_reference(v_posed, m.weights, B.skinning_transforms(out["world_transforms"], J))
    assert_close(out["vertices"], plain + x["transl"][:, None], rtol=0, atol=1e-12)
    ndarrays_regression.check({k: v.numpy() for k, v in out.items()}, basename="body_outputs",
                              default_tolerance=GOLD_TOL)


def test_golden_body_float32_on_device(device):
    with np.load(Path(__file__).parent / "data" / "body_outputs.npz", allow_pickle=False) as z:
        stored = {k: torch.from_numpy(z[k]) for k in z.files}
    out = _outputs(device, torch.float32)
    for name, v in out.items():
        assert v.device.type == torch.device(device).type, name
        if name == "pictorial_labels":  # an exact argmin over energies; no ties in these draws
            assert torch.equal(v.cpu(), stored[name])
            continue
        assert v.dtype == torch.float32, name
        # float32 rounds the model and inputs by 6e-8 relative; the body's coordinates are ~1 m and
        # pass 8 levels of chained 4x4 products and 24-term blends (~1e-6 m), the energies are
        # sums of ~10 terms of size ~3 (~1e-6), the heatmap decoders average 256 pixels: 1e-4
        # absolute and relative bounds all with a margin and still catches any change of formula.
        assert_close(v.double().cpu(), stored[name], rtol=1e-4, atol=1e-4, msg=name)
