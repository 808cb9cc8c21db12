"""Golden outputs of the autoregressive section: the enumerated joints of NADE, MADE and the
order-agnostic NADE, PixelCNN's and WaveNet's logits and RNADE's log-density on fixed inputs with
fixed weights, against silent drift across torch versions and devices.

Weights and inputs from numpy's legacy RandomState (frozen stream). float64 on the CPU against the
stored arrays to 1e-12; float32 on every device with the tolerance stated beside it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import autoregressive as A

pytestmark = pytest.mark.golden
GOLDEN = dict(atol=1e-12, rtol=1e-12)
DATA = Path(__file__).parent / "data"


def _fill(module, seed, scale=0.5):
    rs = np.random.RandomState(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rs.standard_normal(tuple(p.shape)) * scale))
    return module


def _outputs(dtype=torch.float64, device="cpu"):
    f = dict(dtype=dtype, device=device)
    X = A.all_binary(4, dtype=dtype, device=device)
    nade = _fill(A.NADE(4, 3, order=torch.tensor([2, 0, 3, 1])), 1).to(**f)
    made = _fill(A.MADE(4, [6, 6], order=torch.tensor([1, 3, 0, 2])), 2).to(**f)
    onade = _fill(A.OrderlessNADE(4, 5), 3).to(**f)
    pix = _fill(A.PixelCNN(1, 3, hidden=4, layers=2, first_kernel=3), 4).to(**f)
    wn = _fill(A.WaveNet(levels=3, residual=4, dilations=[1, 2]), 5).to(**f)
    rnade = _fill(A.RNADE(3, 4, K=2), 6, scale=0.3).to(**f)
    gated = _fill(A.GatedPixelCNN(3, hidden=4, layers=2, kernel=5), 8).to(**f)
    row = _fill(A.RowLSTM(3, hidden=5), 9).to(**f)
    rs = np.random.RandomState(7)
    img = torch.from_numpy(rs.randint(0, 3, (2, 1, 4, 4))).to(device)
    seq = torch.from_numpy(rs.randint(0, 3, (2, 9))).to(device)
    xr = torch.from_numpy(rs.standard_normal((5, 3))).to(**f)
    with torch.no_grad():
        return dict(nade=nade.log_prob(X), made=made(X), onade=onade.log_prob(X, torch.tensor([3, 1, 0, 2], device=device)),
                    pixelcnn=pix(img), wavenet=wn(seq), rnade=rnade.log_prob(xr), pixelcnn_log_prob=pix.log_prob(img),
                    gated=gated(img), row_lstm=row(img), row_lstm_log_prob=row.log_prob(img),
                    wavenet_log_prob=wn.log_prob(seq))


def test_golden_autoregressive_outputs(ndarrays_regression):
    out = _outputs()
    assert all(v.dtype == torch.float64 for v in out.values())
    assert out["pixelcnn"].shape == (2, 1, 3, 4, 4) and out["wavenet"].shape == (2, 3, 9) and out["made"].shape == (16, 4)
    # the enumerated joints are normalised (a property; the file guards the values)
    for k in ("nade", "onade"):
        assert float(out[k].exp().sum()) == pytest.approx(1.0, abs=1e-13)
    ndarrays_regression.check({k: v.cpu().numpy() for k, v in out.items()}, basename="autoregressive_outputs",
                              default_tolerance=GOLDEN)


def test_golden_float32_on_device(device):
    stored = np.load(DATA / "autoregressive_outputs.npz", allow_pickle=False)
    out = _outputs(torch.float32, device)
    # float32: a few layers of sums of at most ~30 terms of O(1) weights: ~1e-6 relative rounding;
    # log-probabilities sum 4 such terms. (cuDNN may pick other convolution algorithms: same bound.)
    for k, v in out.items():
        assert v.dtype == torch.float32
        assert_close(v.cpu().double(), torch.from_numpy(stored[k]), rtol=1e-5, atol=1e-5)
