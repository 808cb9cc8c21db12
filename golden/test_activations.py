"""Golden values of the activation table on a fixed grid that includes 0 and saturated and
extreme inputs: sigmoid, tanh, ReLU (fused and as the table's formulas) and the table's
derivatives. Checked against torch's kernels and autograd before the comparison with the stored
file (float64, 1e-12); float32 on every device with the tolerance stated beside the assertion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import activations as A

pytestmark = pytest.mark.golden

F64 = torch.float64
GOLD_TOL = dict(atol=1e-12, rtol=1e-10)
GRID = [-800.0, -40.0, -20.0, -5.0, -1.0, -0.1, -1e-8, 0.0, 1e-8, 0.1, 1.0, 5.0, 20.0, 40.0, 800.0]


def _outputs(device=torch.device("cpu"), dtype=F64):
    x = torch.tensor(GRID, dtype=dtype, device=device)
    return {"sigmoid": A.sigmoid_formula(x), "tanh": A.tanh_formula(x), "relu": A.relu_formula(x),
            "sigmoid_derivative": A.sigmoid_derivative(x), "tanh_derivative": A.tanh_derivative(x),
            "relu_derivative": A.relu_derivative(x)}


@pytest.mark.claim("activations.sigmoid", "activations.tanh", "activations.relu-value-range")
def test_golden_activation_table_float64(ndarrays_regression):
    out = _outputs()
    x = torch.tensor(GRID, dtype=F64, requires_grad=True)
    moderate = x.detach().abs() <= 5      # autograd's s (1 - s) loses 1 - s to cancellation beyond
    for name, f in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("relu", torch.relu)):
        assert out[name].dtype == F64 and out[name].shape == (len(GRID),)
        assert_close(out[name], f(x.detach()), rtol=1e-15, atol=1e-300)
        (g,) = torch.autograd.grad(f(x).sum(), x)
        keep = moderate & (x.detach() != 0) if name == "relu" else moderate     # ReLU'(0): the table takes 1
        assert_close(out[f"{name}_derivative"][keep], g[keep], rtol=1e-12, atol=1e-300)
    # everywhere, against the closed forms written with e^{-|x|} (no cancellation)
    e = torch.exp(-x.detach().abs())
    assert_close(out["sigmoid_derivative"], e / (1 + e) ** 2, rtol=1e-13, atol=1e-300)
    assert_close(out["tanh_derivative"], 4 * e ** 2 / (1 + e ** 2) ** 2, rtol=1e-13, atol=1e-300)
    assert out["relu_derivative"].tolist() == [float(v >= 0) for v in GRID]
    ndarrays_regression.check({k: v.numpy() for k, v in out.items()}, basename="activations_table",
                              default_tolerance=GOLD_TOL)


@pytest.mark.claim("activations.sigmoid", "activations.tanh", "activations.relu-value-range")
def test_golden_activation_table_float32_on_device(device):
    stored = np.load(f"{__file__.rsplit('/', 1)[0]}/data/activations_table.npz")
    out = _outputs(device, torch.float32)
    for k, v in out.items():
        assert v.device.type == torch.device(device).type and v.dtype == torch.float32, k
        ref = torch.from_numpy(stored[k])
        # one elementwise map each: float32 relative error ~1e-7; values that float32 flushes to 0
        # (sigma(-800) = e^-800, derivatives at |x| >= 40 below the float32 range) within 1e-30.
        assert_close(v.double().cpu(), ref, rtol=1e-6, atol=1e-30, msg=k)
