"""Golden outputs of the flows section on fixed weights: coupling (affine, additive, conditional),
ActNorm, the full and LU 1x1 convolutions, squeeze, the affine injector and an SRFlow step, a
vector flow and a two-level Glow (latents, log-dets, log-likelihoods and inverses). Weights and
inputs come from numpy's legacy RandomState (frozen across numpy versions)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from impl import flows

pytestmark = pytest.mark.golden

F64 = torch.float64
DATA = Path(__file__).parent / "data"
TOL64 = dict(atol=1e-12, rtol=1e-10)


def _fixed(module: nn.Module, rs, scale=0.2, dtype=F64, device="cpu") -> nn.Module:
    """Every parameter from the RandomState (the LU conv's factors, ActNorm's s and b included);
    ActNorm marked initialised so that no data-dependent step runs."""
    module = module.to(dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(scale * rs.standard_normal(tuple(p.shape))))
    for m in module.modules():
        if isinstance(m, flows.ActNorm):
            m.initialized = True
    return module.to(device)


def flows_outputs(dtype=F64, device="cpu"):
    rs = np.random.RandomState(7)

    def t(a):
        return torch.as_tensor(a, dtype=dtype, device=device)

    def fixed(m, scale=0.2):
        return _fixed(m, rs, scale, dtype, device)
    out = {}
    x = t(rs.standard_normal((3, 4, 4, 4)))
    cond = t(rs.standard_normal((3, 2, 4, 4)))
    for name, layer, c in (("coupling", fixed(flows.AffineCoupling(4, hidden=8, image=True)), None),
                           ("additive", fixed(flows.AffineCoupling(4, hidden=8, image=True, additive=True)), None),
                           ("conditional", fixed(flows.AffineCoupling(4, hidden=8, image=True, cond_channels=2)), cond)):
        y, ld = layer(x, c) if c is not None else layer(x)
        out[f"{name}_y"], out[f"{name}_logdet"] = y, ld
    act = fixed(flows.ActNorm(4), 0.5)
    out["actnorm_y"], out["actnorm_logdet"] = act(x)
    full = flows.Invertible1x1Conv(4)
    with torch.no_grad():
        full.weight.copy_(torch.from_numpy(rs.standard_normal((4, 4)) + 2 * np.eye(4)))
    full = full.to(dtype).to(device)
    out["conv1x1_y"], out["conv1x1_logdet"] = full(x)
    lu = flows.Invertible1x1ConvLU(4, generator=torch.Generator().manual_seed(0))
    lu = fixed(lu, 0.3)
    out["conv1x1_lu_y"], out["conv1x1_lu_logdet"] = lu(x)
    out["squeeze"] = flows.squeeze(x)
    inj = fixed(flows.AffineInjector(4, 2, hidden=4))
    out["injector_y"], out["injector_logdet"] = inj(x, cond)
    sr = fixed(flows.SRFlowStep(4, 2, hidden=4, generator=torch.Generator().manual_seed(1)))
    out["srflow_y"], out["srflow_logdet"] = sr(x, cond)
    out["srflow_inverse"] = sr.inverse(x, cond)
    vec = fixed(flows.Flow(3, steps=3, hidden=8, generator=torch.Generator().manual_seed(2)))
    v = t(rs.standard_normal((5, 3)))
    out["flow_z"], out["flow_logdet"] = vec(v)
    out["flow_log_prob"] = vec.log_prob(v)
    out["flow_inverse"] = vec.inverse(v)
    glow = fixed(flows.Glow(1, levels=2, steps=1, hidden=4, generator=torch.Generator().manual_seed(3)), 0.1)
    img = t(rs.standard_normal((2, 1, 4, 4)))
    zs, glow_ld = glow(img)
    out["glow_z0"], out["glow_z1"], out["glow_logdet"] = zs[0], zs[1], glow_ld
    out["glow_log_prob"] = glow.log_prob(img)
    out["glow_inverse"] = glow.inverse([z * 0.5 for z in zs])
    return {k: v.detach() for k, v in out.items()}


def test_golden_flow_outputs(ndarrays_regression):
    out = flows_outputs()
    for k, v in out.items():
        assert v.dtype == F64, k
    assert out["coupling_y"].shape == out["srflow_y"].shape == (3, 4, 4, 4)
    assert out["squeeze"].shape == (3, 16, 2, 2) and out["glow_z0"].shape == (2, 2, 2, 2)
    assert out["glow_z1"].shape == (2, 8, 1, 1) and out["flow_log_prob"].shape == (5,)
    # Checks against independent facts before storing: additive coupling has log-det 0, the
    # full 1x1 conv's log-det is H W log|det W|.
    torch.testing.assert_close(out["additive_logdet"], torch.zeros(3, dtype=F64), rtol=0, atol=0)
    assert torch.isfinite(torch.cat([v.flatten() for v in out.values()])).all()
    ndarrays_regression.check({k: v.numpy() for k, v in out.items()}, basename="flows_outputs",
                              default_tolerance=TOL64)


def test_golden_flow_outputs_float32_on_device(device):
    stored = np.load(DATA / "flows_outputs.npz", allow_pickle=False)
    out = flows_outputs(torch.float32, device)
    for k, v in out.items():
        assert v.dtype == torch.float32 and v.device.type == device.type, k
        ref = torch.from_numpy(stored[k]).to(torch.float32)
        # float32: every map here is a few layers of O(1) weights with |log-scale| <= 3 and a 4x4
        # (or 3x3) matrix inverse; log-dets are sums of up to 64 terms of size <= 3 (error ~1e-5).
        # 1e-4 relative and absolute is ~10x the worst error expected from ~1e-7 per operation.
        torch.testing.assert_close(v.cpu(), ref, rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
