"""Golden outputs of the RNN section: the forward pass and both BPTT computations of a fixed
network, against silent drift across torch versions and devices.

Inputs from numpy's legacy RandomState, whose stream is frozen across numpy versions; float64 on
the CPU is compared with the stored arrays to 1e-12, float32 on every device to float32 rounding."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import rnn

pytestmark = pytest.mark.golden
GOLDEN = dict(atol=1e-12, rtol=1e-12)


def _net(dtype=torch.float64, device="cpu"):
    rs = np.random.RandomState(2024)
    T, B, D, H, O = 6, 2, 3, 4, 2
    arrays = [rs.standard_normal(s) * c for s, c in (((T, B, D), 1), ((B, H), 1), ((H, H), 0.5), ((H, D), 0.5),
                                                    ((O, H), 0.5), ((T, B, O), 1))]
    return [torch.from_numpy(a).to(device, dtype) for a in arrays]


def test_golden_forward_and_bptt(ndarrays_regression):
    x, h0, W_hh, W_xh, W_hy, dL_dy = _net()
    hs, ys = rnn.rnn_forward(x, h0, W_hh, W_xh, W_hy)
    grads = rnn.bptt(x, h0, W_hh, W_xh, W_hy, dL_dy)
    assert hs.dtype == ys.dtype == torch.float64 and hs.shape == (6, 2, 4) and ys.shape == (6, 2, 2)
    # the O(T^2) double sum of the notes gives the same gradients as the O(T) sweep
    for a, b in zip(rnn.bptt_notes(x, h0, W_hh, W_xh, W_hy, dL_dy), grads):
        assert_close(a, b)
    ndarrays_regression.check({"hs": hs.numpy(), "ys": ys.numpy(), "dW_hh": grads[0].numpy(),
                               "dW_xh": grads[1].numpy(), "dW_hy": grads[2].numpy(), "dh0": grads[3].numpy()},
                              basename="rnn_outputs", default_tolerance=GOLDEN)


def test_golden_forward_float32_on_device(device):
    stored = np.load(Path(__file__).parent / "data" / "rnn_outputs.npz", allow_pickle=False)
    x, h0, W_hh, W_xh, W_hy, _ = _net(torch.float32, device)
    hs, ys = rnn.rnn_forward(x, h0, W_hh, W_xh, W_hy)
    # float32: 6 contracting tanh steps of 7-term sums, each rounding ~1e-7 relative
    assert_close(hs.cpu().double(), torch.from_numpy(stored["hs"]), rtol=1e-5, atol=1e-6)
    assert_close(ys.cpu().double(), torch.from_numpy(stored["ys"]), rtol=1e-5, atol=1e-6)
