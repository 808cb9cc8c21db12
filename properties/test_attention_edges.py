"""Edge cases and bad inputs of impl/attention.py found by mutation testing
(report/mutation/attention.txt): argument checks that must name the right argument, broadcasting
and mask shapes of the chunked fast path, dtypes and devices that must be honoured. References are
written out in the tests (softmax(Q K^T / sqrt d + M) V by torch ops) or are torch built-ins."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from impl import attention
from impl.attention import (attention_weights, causal_mask, merge_heads, multi_head_attention,
                            scaled_dot_product_attention, scaled_dot_product_attention_chunked,
                            scaled_dot_product_attention_fused, self_attention,
                            sinusoidal_positional_encoding, split_heads)

f64 = torch.float64
QKV = [scaled_dot_product_attention, scaled_dot_product_attention_chunked, scaled_dot_product_attention_fused]


def _randn(*shape, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _reference(q, k, v, mask=None, causal=False):
    """softmax(Q K^T / sqrt(d) + M) V, with the causal mask written as a boolean lower triangle."""
    s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


# --------------------------------------------------------------------------- masks and checks


def test_causal_mask_checks_T_by_name():
    with pytest.raises(ValueError, match=r"^T: must be >= 1"):
        causal_mask(0)


@pytest.mark.parametrize("fn", QKV + [lambda q, k, v: attention_weights(q, k)])
def test_no_key_or_no_feature_is_refused_and_no_query_is_empty(fn):
    # a softmax over no key is undefined (the fused kernel returns zeros, the formula NaN or zeros),
    # and d = 0 divides the scores by sqrt(0); no query is a valid, empty batch of rows
    with pytest.raises(ValueError, match=r"^k: expected at least one key"):
        fn(_randn(2, 3, 4), _randn(2, 0, 4), _randn(2, 0, 4))
    with pytest.raises(ValueError, match=r"^q: expected a feature dimension d >= 1"):
        fn(_randn(2, 3, 0), _randn(2, 3, 0), _randn(2, 3, 4))
    assert fn(_randn(2, 0, 4), _randn(2, 3, 4), _randn(2, 3, 4)).shape[-2] == 0


@pytest.mark.parametrize("fn", QKV)
def test_qkv_checks_name_the_argument(fn):
    q = _randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"^q: expected 2 or 3 or 4 dimensions"):
        fn(_randn(1, 1, 2, 3, 4), _randn(1, 1, 2, 3, 4), _randn(1, 1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"^k: expected 3 dimensions"):
        fn(q, _randn(3, 4), _randn(2, 3, 4))
    with pytest.raises(TypeError, match=r"^k: dtype torch.float32 differs from q's torch.float64$"):
        fn(q, _randn(2, 3, 4, dtype=torch.float32), _randn(2, 3, 4))
    with pytest.raises(TypeError, match=r"^v: dtype torch.float32 differs from q's torch.float64$"):
        fn(q, _randn(2, 3, 4), _randn(2, 3, 4, dtype=torch.float32))
    # v's own checks name v: one dimension too few, and not a tensor at all
    with pytest.raises(ValueError, match=r"^v: expected 3 dimensions, got shape \(3, 4\)$"):
        fn(q, _randn(2, 3, 4), _randn(3, 4))
    with pytest.raises(TypeError, match=r"^v: expected a torch\.Tensor, got list$"):
        fn(q, _randn(2, 3, 4), _randn(2, 3, 4).tolist())


def test_attention_weights_checks():
    with pytest.raises(ValueError, match=r"^q: expected 2 or 3 or 4 dimensions"):
        attention_weights(_randn(1, 1, 2, 3, 4), _randn(1, 1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"^k: expected 3 dimensions, got shape \(3, 4\)$"):
        attention_weights(_randn(2, 3, 4), _randn(3, 4))
    # Tq = 3, Tk = 5, widths 4 and 2: the message reports the widths
    with pytest.raises(ValueError, match=r"^k: last dimension 2 differs from q's 4$"):
        attention_weights(_randn(3, 4), _randn(5, 2))
    with pytest.raises(ValueError, match=r"^causal: needs as many queries as keys$"):
        attention_weights(_randn(3, 4), _randn(5, 4), causal=True)
    with pytest.raises(TypeError, match=r"^mask: dtype torch.float32 differs from q's torch.float64$"):
        attention_weights(_randn(3, 4), _randn(3, 4), mask=torch.zeros(3, 3))


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_causal_attention_keeps_a_low_precision_dtype(low):
    q, k = _randn(2, 5, 4, seed=1).to(low), _randn(2, 5, 4, seed=2).to(low)
    a = attention_weights(q, k, causal=True)
    assert a.dtype == low
    assert bool((a.float().triu(1) == 0).all())


# --------------------------------------------------------------------------- chunked fast path


def test_chunked_broadcasts_queries_over_shared_keys():
    # q has a batch of 3, k and v a batch of 1 that broadcasts against it
    q, k, v = _randn(3, 6, 4, seed=3), _randn(1, 5, 4, seed=4), _randn(1, 5, 2, seed=5)
    for chunk in (None, 2):
        assert_close(scaled_dot_product_attention_chunked(q, k, v, chunk=chunk), _reference(q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_with_a_batched_mask(causal):
    q, k, v = _randn(2, 3, 5, 4, seed=6), _randn(2, 3, 5, 4, seed=7), _randn(2, 3, 5, 2, seed=8)
    for mask in (_randn(2, 3, 5, 5, seed=9), _randn(3, 5, 5, seed=10), _randn(5, 5, seed=11)):
        for chunk in (None, 2):
            got = scaled_dot_product_attention_chunked(q, k, v, mask=mask, causal=causal, chunk=chunk)
            assert_close(got, _reference(q, k, v, mask=mask, causal=causal))


def test_chunked_mask_dtype_mismatch_names_q():
    q = _randn(5, 4)
    with pytest.raises(TypeError, match=r"^mask: dtype torch.float32 differs from q's torch.float64$"):
        scaled_dot_product_attention_chunked(q, q, q, mask=torch.zeros(5, 5))


def test_chunked_causal_rows_never_read_future_keys():
    # Causality in its strong form: with one query per block, row t reads only keys and values
    # 0..t, so a NaN at the last position cannot reach the rows before it.
    T = 6
    q, k, v = _randn(T, 4, seed=12), _randn(T, 4, seed=13), _randn(T, 3, seed=14)
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[-1], v_bad[-1] = float("nan"), float("nan")
    got = scaled_dot_product_attention_chunked(q, k_bad, v_bad, causal=True, chunk=1)
    assert_close(got[:-1], _reference(q, k, v, causal=True)[:-1])


# --------------------------------------------------------------------------- self-attention and heads


def test_self_attention_checks_name_the_argument():
    x = _randn(2, 5, 4)
    W = [_randn(4, 3, seed=s) for s in range(3)]
    with pytest.raises(ValueError, match=r"^x: expected 2 or 3 dimensions"):
        self_attention(_randn(1, 2, 5, 4), *W)
    with pytest.raises(ValueError, match=r"^W_K: expected 2 dimensions"):
        self_attention(x, W[0], _randn(4, 3, 1), W[2])
    with pytest.raises(ValueError, match=r"^W_Q: expected 2 dimensions"):
        self_attention(x, _randn(4), W[1], W[2])
    with pytest.raises(TypeError, match=r"^W_Q: dtype torch.float32 differs from x's torch.float64$"):
        self_attention(x, W[0].float(), W[1], W[2])
    # W_V may differ from W_Q, W_K in its width, not in the rest of its checks
    with pytest.raises(ValueError, match=r"^W_V: expected 2 dimensions"):
        self_attention(x, W[0], W[1], _randn(4, 3, 1))
    with pytest.raises(ValueError, match=r"^W_V: expected 4 rows, got 5$"):
        self_attention(x, W[0], W[1], _randn(5, 3))
    with pytest.raises(TypeError, match=r"^W_V: dtype torch.float32 differs from x's torch.float64$"):
        self_attention(x, W[0], W[1], W[2].float())


def test_split_and_merge_heads_check_ndim():
    with pytest.raises(ValueError, match=r"^x: expected 3 dimensions"):
        split_heads(_randn(1, 2, 3, 4), 2)
    with pytest.raises(ValueError, match=r"^x: expected 4 dimensions"):
        merge_heads(_randn(2, 3, 4))


def test_multi_head_attention_checks_name_the_argument():
    x = _randn(2, 5, 4)
    Wq, Wk, Wv = (_randn(4, 4, seed=s) for s in range(3))
    with pytest.raises(ValueError, match=r"^W_K: expected shape \(4, \*\)"):
        multi_head_attention(x, Wq, _randn(3, 4), Wv, 2)
    with pytest.raises(TypeError, match=r"^W_K: dtype torch.float32 differs from x's torch.float64$"):
        multi_head_attention(x, Wq, Wk.float(), Wv, 2)
    with pytest.raises(ValueError, match=r"^W_K: W_Q, W_K and W_V must have one shape$"):
        multi_head_attention(x, Wq, Wk, _randn(4, 6), 2)
    # x is checked before it is projected: a 0-d x has no last axis to size the weights against,
    # and for a 2-d x the message reports x's own shape, not that of x W (width 6 here, not 4)
    W6 = [_randn(4, 6, seed=s) for s in range(3)]
    for bad in (torch.tensor(1.0, dtype=f64), _randn(5, 4), _randn(1, 2, 5, 4)):
        with pytest.raises(ValueError, match=rf"^x: expected 3 dimensions, got shape {re.escape(str(tuple(bad.shape)))}$"):
            multi_head_attention(bad, *W6, 2)


def test_multi_head_attention_fused_takes_the_fused_kernel(monkeypatch):
    calls = []

    def spy(q, k, v, *, causal=False):
        calls.append(causal)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    monkeypatch.setattr(attention, "scaled_dot_product_attention_fused", spy)
    x = _randn(2, 5, 4, seed=15)
    Wq, Wk, Wv = (_randn(4, 4, seed=16 + s) for s in range(3))
    multi_head_attention(x, Wq, Wk, Wv, 2, causal=True, fused=True)
    assert calls == [True]
    multi_head_attention(x, Wq, Wk, Wv, 2, causal=True)
    assert calls == [True]


# --------------------------------------------------------------------------- positional encoding


def test_positional_encoding_checks_by_name():
    with pytest.raises(ValueError, match=r"^T: must be >= 1"):
        sinusoidal_positional_encoding(0, 4)
    with pytest.raises(ValueError, match=r"^D: must be >= 2"):
        sinusoidal_positional_encoding(4, 0)


def test_positional_encoding_is_built_on_the_requested_device():
    # the meta device checks that every intermediate lives where the result is asked for
    pe = sinusoidal_positional_encoding(4, 6, device="meta", dtype=f64)
    assert pe.device.type == "meta" and pe.shape == (4, 6) and pe.dtype == f64
