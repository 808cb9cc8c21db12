"""Golden outputs of the 3D Gaussian splatting section's main systems on a fixed scene: the
covariances and the splat (projected means, 2-D covariances, depths), the view-dependent SH
colours, the tile rasteriser's image and the plain rasteriser's image of the same scene, and the
full renderer's image at the shared default dilation. They guard against silent drift across
torch versions and devices.

Inputs come from numpy's legacy RandomState (frozen stream). Float64 on the CPU to 1e-12; float32
on every device against the same file, with the tolerance stated beside the assertion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import splatting as gs

pytestmark = pytest.mark.golden

F64 = torch.float64
GOLD_TOL = dict(atol=1e-12, rtol=1e-12)
H, W, N = 24, 32, 40


def _scene(device=torch.device("cpu"), dtype=F64):
    rs = np.random.RandomState(2024)
    p = dict(means=rs.uniform(-0.8, 0.8, (N, 3)), log_scales=-2.2 + 0.4 * rs.standard_normal((N, 3)),
             quats=rs.standard_normal((N, 4)), opacity_logits=rs.standard_normal(N),
             sh=0.4 * rs.standard_normal((N, 9, 3)))
    p = {k: torch.from_numpy(v).to(device=device, dtype=dtype) for k, v in p.items()}
    eye = torch.tensor([0.6, -0.4, -3.2], dtype=dtype, device=device)
    view = gs.world_to_camera_look_at(eye, torch.zeros(3, dtype=dtype, device=device))
    k = torch.tensor([[36.0, 0, W / 2], [0, 34.0, H / 2], [0, 0, 1]], dtype=dtype, device=device)
    return p, view, k, eye


def _outputs(device=torch.device("cpu"), dtype=F64) -> dict[str, torch.Tensor]:
    p, view, k, eye = _scene(device, dtype)
    covs = gs.covariance_3d(torch.exp(p["log_scales"]), p["quats"])
    uv, cov2d, z = gs.project_gaussians(p["means"], covs, view, k)
    colors = gs.sh_to_color(p["sh"], p["means"] - eye)
    opac = torch.sigmoid(p["opacity_logits"])
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=dtype, device=device)
    return dict(covs=covs, means2d=uv, covs2d=cov2d, depths=z, colors=colors,
                tiles=gs.rasterize_tiles(uv, cov2d, z, colors, opac, H, W, background=bg, tile_size=8),
                reference=gs.rasterize_reference(uv, cov2d, z, colors, opac, H, W, background=bg, truncate=3.0),
                render=gs.render_gaussians(p, view, k, H, W))


SHAPES = dict(covs=(N, 3, 3), means2d=(N, 2), covs2d=(N, 2, 2), depths=(N,), colors=(N, 3), tiles=(H, W, 3),
              reference=(H, W, 3), render=(H, W, 3))


def test_golden_splatting_float64(ndarrays_regression):
    out = _outputs()
    for name, v in out.items():
        assert v.dtype == F64 and tuple(v.shape) == SHAPES[name], name
    # what is stored was checked first: the two rasterisers agree, the scene is visible
    assert_close(out["tiles"], out["reference"], rtol=1e-12, atol=1e-12)
    assert out["tiles"].std() > 0.05 and (out["depths"] > 0).all()
    ndarrays_regression.check({k: v.numpy() for k, v in out.items()}, basename="splatting_outputs",
                              default_tolerance=GOLD_TOL)


def test_golden_splatting_float32_on_device(device):
    with np.load(Path(__file__).parent / "data" / "splatting_outputs.npz", allow_pickle=False) as z:
        stored = {k: torch.from_numpy(z[k]) for k in z.files}
    out = _outputs(device, torch.float32)
    for name, v in out.items():
        assert v.device.type == torch.device(device).type and v.dtype == torch.float32, name
        ref = stored[name]
        # float32 rounds each input by 6e-8 relative; projections divide by depths ~3 and multiply
        # by focal lengths ~35 (pixels ~30: 2e-6 px), the 2-D covariances are products of three
        # such factors, and the images composite <= 40 alphas with exp(-q/2) of q <= 9: a few
        # 1e-6 on values <= 1. rtol 1e-4 / atol 1e-4 (in each array's units) bounds all of them
        # with a margin, yet catches any change of formula.
        assert_close(v.double().cpu(), ref, rtol=1e-4, atol=1e-4, msg=name)
