"""Golden outputs of the LSTM section: the notes' cell unrolled over a fixed sequence, and the
gradients of its fast path, against silent drift across torch versions and devices.

Inputs from numpy's legacy RandomState, whose stream is frozen across numpy versions; float64 on
the CPU is compared with the stored arrays to 1e-12, float32 on every device to float32 rounding."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import lstm

pytestmark = pytest.mark.golden
GOLDEN = dict(atol=1e-12, rtol=1e-12)


def _inputs(dtype=torch.float64, device="cpu"):
    rs = np.random.RandomState(7)
    T, B, D, H = 7, 2, 3, 4
    arrays = [rs.standard_normal(s) * c for s, c in (((T, B, D), 1), ((B, H), 1), ((B, H), 1),
                                                    ((4 * H, D + H), 0.5), ((4 * H,), 0.5))]
    return [torch.from_numpy(a).to(device, dtype) for a in arrays]


def test_golden_sequence_and_gradients(ndarrays_regression):
    x, h0, c0, W, b = _inputs()
    W = W.requires_grad_(True)
    hs, (h, c) = lstm.lstm_sequence_fast(x, h0, c0, W, b)
    hs.sum().backward()
    ref, (_, c_ref) = lstm.lstm_sequence(x, h0, c0, W.detach(), b)
    assert hs.dtype == torch.float64 and hs.shape == (7, 2, 4) and W.grad.shape == (16, 7)
    assert_close(hs.detach(), ref)
    assert_close(c.detach(), c_ref)
    ndarrays_regression.check({"hs": hs.detach().numpy(), "c_T": c.detach().numpy(), "dW": W.grad.numpy()},
                              basename="lstm_outputs", default_tolerance=GOLDEN)


def test_golden_sequence_float32_on_device(device):
    stored = np.load(Path(__file__).parent / "data" / "lstm_outputs.npz", allow_pickle=False)
    x, h0, c0, W, b = _inputs(torch.float32, device)
    hs, (h, c) = lstm.lstm_sequence(x, h0, c0, W, b)
    # float32: 7 gated (contracting) steps of 8-term sums, ~1e-7 relative rounding each
    assert_close(hs.cpu().double(), torch.from_numpy(stored["hs"]), rtol=1e-5, atol=1e-6)
    assert_close(c.cpu().double(), torch.from_numpy(stored["c_T"]), rtol=1e-5, atol=1e-6)
