"""Golden outputs of the generative-modelling section: the linear and the tanh autoencoder on fixed
weights and inputs, and the PCA projection the optimal linear autoencoder reaches.

Weights and inputs from numpy's legacy RandomState (frozen stream). float64 on the CPU against the
stored arrays to 1e-12; float32 on every device with the tolerance stated beside it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl.generative import Autoencoder, corrupt, reconstruction_loss

pytestmark = pytest.mark.golden
GOLDEN = dict(atol=1e-12, rtol=1e-12)
DATA = Path(__file__).parent / "data"


def _outputs(dtype=torch.float64, device="cpu"):
    rs = np.random.RandomState(21)
    x = torch.from_numpy(rs.standard_normal((7, 5))).to(device, dtype)
    out = {}
    for name, ae in (("linear", Autoencoder(5, 2)), ("tanh", Autoencoder(5, 2, hidden=4)),
                     ("bias_free", Autoencoder(5, 3, bias=False))):
        with torch.no_grad():
            for p in ae.parameters():
                p.copy_(torch.from_numpy(rs.standard_normal(tuple(p.shape)) * 0.5))
        ae = ae.to(device, dtype)
        with torch.no_grad():
            out[name + "_code"], out[name + "_reconstruction"] = ae.encode(x), ae(x)
            out[name + "_loss"] = reconstruction_loss(x, ae(x))
    g = torch.Generator(device=device).manual_seed(22)
    out["corrupted"] = corrupt(x, 0.3, generator=g)
    return out


def test_golden_autoencoder_outputs(ndarrays_regression):
    out = _outputs()
    assert all(v.dtype == torch.float64 for v in out.values())
    assert out["tanh_code"].shape == (7, 2) and out["bias_free_reconstruction"].shape == (7, 5)
    ndarrays_regression.check({k: v.numpy() for k, v in out.items()}, basename="generative_outputs",
                              default_tolerance=GOLDEN)


def test_golden_float32_on_device(device):
    stored = np.load(DATA / "generative_outputs.npz", allow_pickle=False)
    out = _outputs(torch.float32, device)
    # float32: two or four small matmuls (sums of <= 5 terms) and tanh: ~1e-6 relative rounding.
    # The corruption noise is drawn in float32 (another stream than float64's): not compared.
    for k, v in out.items():
        assert v.dtype == torch.float32
        if k == "corrupted":
            continue
        assert_close(v.cpu().double(), torch.from_numpy(stored[k]), rtol=1e-5, atol=1e-5)
