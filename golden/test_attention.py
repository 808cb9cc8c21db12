"""Golden outputs of the attention section: the masked attention weights, the masked layer and
multi-head attention of a fixed input, against silent drift across torch versions and devices.

Inputs from numpy's legacy RandomState, whose stream is frozen across numpy versions; float64 on
the CPU is compared with the stored arrays to 1e-12, float32 on every device to float32 rounding."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import attention as A

pytestmark = pytest.mark.golden
GOLDEN = dict(atol=1e-12, rtol=1e-12)


def _inputs(dtype=torch.float64, device="cpu"):
    rs = np.random.RandomState(11)
    T, D = 6, 8
    arrays = [rs.standard_normal(s) for s in ((2, T, D), (D, D), (D, D), (D, D), (D, D))]
    return [torch.from_numpy(a).to(device, dtype) for a in arrays]


def test_golden_attention_outputs(ndarrays_regression):
    x, W_Q, W_K, W_V, W_O = _inputs()
    alpha = A.attention_weights(x @ W_Q, x @ W_K, causal=True)
    layer = A.self_attention(x, W_Q, W_K, W_V, causal=True)
    mha = A.multi_head_attention(x, W_Q, W_K, W_V, 2, W_O=W_O, causal=True)
    pe = A.sinusoidal_positional_encoding(6, 8, dtype=torch.float64)
    assert alpha.shape == (2, 6, 6) and layer.shape == (2, 6, 8) and mha.shape == (2, 6, 8)
    assert alpha.dtype == layer.dtype == mha.dtype == pe.dtype == torch.float64
    assert_close(A.scaled_dot_product_attention_chunked(x @ W_Q, x @ W_K, x @ W_V, causal=True, chunk=4), layer)
    ndarrays_regression.check({"alpha": alpha.numpy(), "layer": layer.numpy(), "multi_head": mha.numpy(),
                               "positional_encoding": pe.numpy()}, basename="attention_outputs",
                              default_tolerance=GOLDEN)


def test_golden_attention_float32_on_device(device):
    stored = np.load(Path(__file__).parent / "data" / "attention_outputs.npz", allow_pickle=False)
    x, W_Q, W_K, W_V, W_O = _inputs(torch.float32, device)
    layer = A.self_attention(x, W_Q, W_K, W_V, causal=True)
    mha = A.multi_head_attention(x, W_Q, W_K, W_V, 2, W_O=W_O, causal=True, fused=True)
    # float32: scores are 8-term sums of O(3) products (|score| up to ~30), exp amplifies their
    # ~1e-6 absolute rounding into ~1e-6 relative weights; outputs are O(10)
    assert_close(layer.cpu().double(), torch.from_numpy(stored["layer"]), rtol=1e-4, atol=1e-4)
    assert_close(mha.cpu().double(), torch.from_numpy(stored["multi_head"]), rtol=1e-4, atol=1e-4)
