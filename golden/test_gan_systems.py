"""Golden outputs of the GAN systems the notes only name (StyleGAN, PlatonicGAN's projections,
HoloGAN's rendered features, EG3D's tri-plane lookup, vid2vid, StyleFlow) on fixed inputs and
weights, guarding against silent drift across torch versions and devices.

Weights and inputs come from numpy's legacy RandomState (its stream is frozen across numpy
versions), not from torch's initialisers, so a change of torch's default initialisation does not
change the stored outputs. Float64 on the CPU to 1e-12; float32 on every device against the same
files with a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from impl import gan_systems as gs

pytestmark = pytest.mark.golden

F64 = torch.float64
GOLD_TOL = dict(atol=1e-12, rtol=1e-10)


def _fill(module: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    """Every parameter (in registration order) from RandomState(seed).standard_normal * scale."""
    rs = np.random.RandomState(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rs.standard_normal(tuple(p.shape)) * scale))
    return module


def _arr(rs, *shape):
    return torch.from_numpy(rs.standard_normal(shape))


def _systems(device=torch.device("cpu"), dtype=F64) -> dict[str, torch.Tensor]:
    """The outputs stored in golden/data/gan_systems_outputs.npz, computed on ``device`` in ``dtype``."""
    rs = np.random.RandomState(1234)
    to = dict(device=device, dtype=dtype)
    out = {}
    # StyleGAN: mapping + synthesis at 8 x 8 with explicit noise maps.
    sg = _fill(gs.StyleGAN(z_dim=6, w_dim=5, channels=4, resolution=8, out_channels=2, mapping_depth=2), 1, 0.4)
    sg = sg.to(**to)
    z = _arr(rs, 2, 6).to(**to)
    noise = [_arr(rs, *s).to(**to) for s in sg.synthesis.noise_shapes(2)]
    out["stylegan"] = sg(z, noise)
    # PlatonicGAN's two projections of a fixed non-negative grid.
    sigma = _arr(rs, 2, 1, 5, 4, 3).abs().to(**to)
    color = _arr(rs, 2, 3, 5, 4, 3).sigmoid().to(**to)
    out["absorption"] = gs.absorption_projection(sigma, 2.0)
    out["emission_absorption"] = gs.emission_absorption_projection(sigma, color, 2.0)
    # HoloGAN's rendered features at a 0.4 rad pose (trilinear resampling + projection unit).
    holo = _fill(gs.HoloGAN(z_dim=3, channels=2, size=4, projected=3, ups=1), 2, 0.4).to(**to)
    zh = _arr(rs, 1, 3).to(**to)
    out["hologan_features"] = holo.render_features(zh, gs.rotation_z(torch.tensor([0.4], **to)))
    # EG3D's tri-plane lookup.
    planes = _arr(rs, 1, 3, 2, 4, 5).to(**to)
    points = (torch.from_numpy(rs.uniform(-1, 1, (1, 6, 3)))).to(**to)
    out["triplane"] = gs.triplane_features(planes, points)
    # vid2vid: three frames from fixed source maps.
    vid = _fill(gs.Vid2VidGenerator(1, 1, 4), 3, 0.2).to(**to)
    out["vid2vid"] = vid(_arr(rs, 1, 3, 1, 5, 6).to(**to))
    # StyleFlow: w = f(z; a); the LU permutation fixed to the identity (its default is drawn by torch).
    sf = _fill(gs.StyleFlow(w_dim=4, attr_dim=2, steps=2, hidden=8), 4, 0.3)
    with torch.no_grad():
        for step in sf.flow.steps:
            step.conv.perm.copy_(torch.eye(4))
            step.conv.sign_s.fill_(1.0)
    sf = sf.to(**to)
    out["styleflow_w"] = sf.z_to_w(_arr(rs, 3, 4).to(**to), _arr(rs, 3, 2).to(**to))
    # The remaining generators end to end (architecture constants included).
    prog = _fill(gs.ProgressiveGenerator(z_dim=3, channels=2, stages=2, out_channels=1), 5, 0.4).to(**to)
    zp = _arr(rs, 2, 3).to(**to)
    out["progressive"] = prog(zp, 1, 0.3)
    vox = _fill(gs.VoxelGenerator(z_dim=3, channels=2, resolution=8), 6, 0.4).to(**to)
    out["voxels"] = vox(_arr(rs, 1, 3).to(**to))
    plat = _fill(gs.PlatonicGAN(in_channels=1, resolution=8, z_dim=3, channels=2), 7, 0.3).to(**to)
    out["platonic_render"] = plat(_arr(rs, 1, 1, 8, 8).to(**to), gs.rotation_z(torch.tensor([0.3], **to)))[0]
    out["hologan_image"] = holo(zh, gs.rotation_z(torch.tensor([0.4], **to)))
    graf = _fill(gs.GRAF(z_shape_dim=2, z_app_dim=2, n_freqs_pos=2, n_freqs_dir=1, width=8, depth=2), 8, 0.4).to(**to)
    o = torch.zeros(3, 3, **to)
    o[:, 2] = 2.0
    dirs = torch.nn.functional.normalize(_arr(rs, 3, 3).to(**to) * 0.2 + torch.tensor([0, 0, -1.0], **to), dim=-1)
    out["graf_rgb"] = graf.render(_arr(rs, 2).to(**to), _arr(rs, 2).to(**to), o, dirs, 1.0, 3.0, 6)[0]
    gir = _fill(gs.GIRAFFE(z_shape_dim=2, z_app_dim=2, features=2, ups=1, width=8), 9, 0.4).to(**to)
    zs, za, tr = _arr(rs, 1, 2, 2).to(**to), _arr(rs, 1, 2, 2).to(**to), 0.2 * _arr(rs, 1, 2, 3).to(**to)
    o4 = torch.zeros(4, 3, **to)
    o4[:, 2] = 2.0
    d4 = torch.nn.functional.normalize(_arr(rs, 4, 3).to(**to) * 0.2 + torch.tensor([0, 0, -1.0], **to), dim=-1)
    out["giraffe_image"] = gir(zs, za, tr, o4, d4, 2, 2, 1.0, 3.0, 5)
    eg = _fill(gs.EG3D(z_dim=3, plane_channels=2, plane_resolution=8, hidden=4), 10, 0.3).to(**to)
    ze = _arr(rs, 1, 3).to(**to)
    noise_e = [_arr(rs, *s).to(**to) for s in eg.backbone.synthesis.noise_shapes(1)]
    out["eg3d_rgb"] = eg(ze, o, dirs, 1.0, 3.0, 5, noise_e)[0]
    bg = _fill(gs.BicycleGenerator(1, 1, 2, 3), 11, 0.3).to(**to)
    be = _fill(gs.BicycleEncoder(1, 2, 3), 12, 0.3).to(**to)
    a = _arr(rs, 1, 1, 8, 8).to(**to)
    out["bicycle_image"] = bg(a, _arr(rs, 1, 2).to(**to))
    out["bicycle_code"] = torch.cat(be(a), 1)
    return out


@pytest.mark.claim("gan.stylegan-mapping-network", "gan.progressive-fade-in", "gan.3d-gan-voxels",
                   "gan.platonicgan-projection", "gan.hologan-rotation", "gan.graf-codes", "gan.giraffe-composition",
                   "gan.eg3d-triplane", "gan.bicyclegan-losses", "gan.vid2vid-sequential", "flows.styleflow-invertible")
def test_golden_gan_systems_float64(ndarrays_regression):
    out = _systems()
    shapes = dict(stylegan=(2, 2, 8, 8), absorption=(2, 1, 4, 3), emission_absorption=(2, 3, 4, 3),
                  hologan_features=(1, 3, 4, 4), triplane=(1, 6, 2), vid2vid=(1, 3, 1, 5, 6), styleflow_w=(3, 4),
                  progressive=(2, 1, 8, 8), voxels=(1, 1, 8, 8, 8), platonic_render=(1, 1, 8, 8),
                  hologan_image=(1, 3, 8, 8), graf_rgb=(3, 3), giraffe_image=(1, 3, 4, 4), eg3d_rgb=(1, 3, 3),
                  bicycle_image=(1, 1, 8, 8), bicycle_code=(1, 4))
    for k, v in out.items():
        assert v.dtype == F64 and tuple(v.shape) == shapes[k], k
        assert torch.isfinite(v).all(), k
    ndarrays_regression.check({k: v.detach().numpy() for k, v in out.items()}, basename="gan_systems_outputs",
                              default_tolerance=GOLD_TOL)


@pytest.mark.claim("gan.stylegan-mapping-network", "gan.progressive-fade-in", "gan.3d-gan-voxels",
                   "gan.platonicgan-projection", "gan.hologan-rotation", "gan.graf-codes", "gan.giraffe-composition",
                   "gan.eg3d-triplane", "gan.bicyclegan-losses", "gan.vid2vid-sequential", "flows.styleflow-invertible")
def test_golden_gan_systems_float32_on_device(device):
    stored = np.load(f"{__file__.rsplit('/', 1)[0]}/data/gan_systems_outputs.npz")
    out = _systems(device, torch.float32)
    for k, v in out.items():
        assert v.device.type == torch.device(device).type and v.dtype == torch.float32
        # O(1) values through at most a few dozen float32 operations each (StyleGAN's 2 levels of conv
        # + AdaIN, whose division by a std of O(0.1) amplifies rounding ~10x): errors of a few 1e-6;
        # 1e-4 leaves a wide margin and still catches any change of the computation.
        assert_close(v.detach().cpu().double(), torch.from_numpy(stored[k]), rtol=1e-4, atol=1e-4, msg=k)
