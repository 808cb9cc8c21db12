"""Attention: the notes' formula against torch's fused kernel and nn.MultiheadAttention, the
convex-combination and causality properties, positional encoding, and FLOP counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from impl.attention import (attention_weights, causal_mask, scaled_dot_product_attention_chunked, merge_heads, multi_head_attention,
                            scaled_dot_product_attention, scaled_dot_product_attention_fused,
                            self_attention, sinusoidal_positional_encoding, split_heads)
from spec.testing import count_flops, fit_exponent, generator, randn, seeds, tol


def _weights(D_in, D, seed, dtype=torch.float64, device="cpu"):
    return [randn(D_in, D, seed=seed + i, dtype=dtype, device=device) / math.sqrt(D_in) for i in range(3)]


@pytest.mark.claim("attention.convex-combination")
@settings(max_examples=8)
@given(seed=seeds(), T=st.integers(1, 9), D=st.integers(1, 6))
def test_causal_weights_are_convex_over_the_past(seed, T, D):
    q, k = randn(T, D, seed=seed), randn(T, D, seed=seed + 1)
    a = attention_weights(q, k, causal=True)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(T, dtype=a.dtype))
    assert (torch.triu(a, diagonal=1) == 0).all()  # exactly zero on the future
    assert (a[torch.tril(torch.ones(T, T, dtype=torch.bool))] > 0).all()  # every past step is reachable
    # so each output row lies in the convex hull of the past values: check against v = one-hot steps
    out = scaled_dot_product_attention(q, k, torch.eye(T, dtype=q.dtype), causal=True)
    torch.testing.assert_close(out, a)


@pytest.mark.claim("attention.convex-combination")
def test_large_logits_stay_finite():
    q = torch.full((4, 3), 1e4, dtype=torch.float32)
    k = torch.randn(4, 3) * 1e4
    a = attention_weights(q, k, causal=True)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(4))


@pytest.mark.claim("attention.masked-formula")
@settings(max_examples=8)
@given(seed=seeds(), T=st.integers(1, 8), D=st.integers(1, 5), causal=st.booleans())
def test_notes_formula_equals_torch_sdpa_f64(seed, T, D, causal):
    x = randn(2, T, 3, seed=seed)
    W_Q, W_K, W_V = _weights(3, D, seed + 7)
    ours = self_attention(x, W_Q, W_K, W_V, causal=causal)
    ref = F.scaled_dot_product_attention(x @ W_Q, x @ W_K, x @ W_V, is_causal=causal)
    torch.testing.assert_close(ours, ref, **tol(torch.float64))


@pytest.mark.claim("attention.masked-formula")
def test_notes_formula_as_written_with_square_weights():
    # the formula exactly as printed: sqrt(D) with D the width of X, W's of size D x D, M = -inf above
    # the diagonal; the reference is written out here in numpy (softmax row by row)
    T, D = 5, 4
    x = randn(T, D, seed=11)
    W_Q, W_K, W_V = _weights(D, D, 12)
    Xn, Q, K, V = x.numpy(), *(w.numpy() for w in (W_Q, W_K, W_V))
    S = (Xn @ Q) @ (Xn @ K).T / np.sqrt(D)
    S[np.triu_indices(T, 1)] = -np.inf
    E = np.exp(S - S.max(1, keepdims=True))
    ref = (E / E.sum(1, keepdims=True)) @ (Xn @ V)
    np.testing.assert_allclose(self_attention(x, W_Q, W_K, W_V).numpy(), ref, rtol=1e-12, atol=1e-14)  # default: masked
    np.testing.assert_allclose(F.scaled_dot_product_attention(x @ W_Q, x @ W_K, x @ W_V, is_causal=True).numpy(), ref,
                               rtol=1e-12, atol=1e-14)


@pytest.mark.claim("attention.masked-formula")
def test_notes_formula_equals_fused_on_device(device):
    x = randn(3, 2, 16, 8, seed=1, dtype=torch.float32, device=device)
    q, k, v = x, x.flip(-2), x * 0.5
    ours = scaled_dot_product_attention(q, k, v, causal=True)
    fused = scaled_dot_product_attention_fused(q, k, v, causal=True)
    # float32, sums of 16 terms through softmax: the default float32 tolerance of spec.testing;
    # on GPU the fused kernel may use TF32-like reduced internal precision, hence 1e-3 there.
    t = tol(torch.float32) if device.type == "cpu" else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ours, fused, **t)


@pytest.mark.claim("attention.masked-formula")
@settings(max_examples=30)
@given(seed=seeds(), T=st.integers(1, 20), chunk=st.integers(1, 9), causal=st.booleans(), masked=st.booleans())
def test_chunked_fast_path_equals_the_plain_formula(seed, T, chunk, causal, masked):
    # chunk sizes that do not divide T leave a short last block: the slicing of keys and of the
    # triangle must still match the plain (T, T) computation row for row.
    q, k, v = (randn(2, 3, T, 4, seed=seed + i) for i in range(3))
    mask = None
    if masked:
        mask = torch.where(torch.rand(T, T, generator=generator(seed)) < 0.3, float("-inf"), 0.0).double()
        mask.fill_diagonal_(0.0)  # every row keeps one allowed key
    ours = scaled_dot_product_attention_chunked(q, k, v, causal=causal, mask=mask, chunk=chunk)
    torch.testing.assert_close(ours, scaled_dot_product_attention(q, k, v, causal=causal, mask=mask),
                               **tol(torch.float64))


def test_chunked_fast_path_rejects_bad_input():
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="chunk"):
        scaled_dot_product_attention_chunked(x, x, x, chunk=0)
    with pytest.raises(ValueError, match="causal"):
        scaled_dot_product_attention_chunked(x, torch.randn(2, 6, 4), torch.randn(2, 6, 4), causal=True)
    with pytest.raises(TypeError, match="mask"):
        scaled_dot_product_attention_chunked(x, x, x, mask=torch.zeros(5, 5, dtype=torch.float64))


@pytest.mark.claim("attention.masked-formula")
def test_causal_mask_values():
    M = causal_mask(3, dtype=torch.float64)
    inf = float("-inf")
    assert torch.equal(M, torch.tensor([[0, inf, inf], [0, 0, inf], [0, 0, 0]], dtype=torch.float64))


@pytest.mark.claim("attention.weights", role="refutes")
def test_weights_of_the_defined_q_are_t_by_t(record_property):
    T, D = 5, 4
    x = randn(T, D, seed=0)
    W_Q, W_K, _ = _weights(D, D, 3)
    Q, K = x @ W_Q, x @ W_K  # Q = X W_Q in R^{T x D}, as on line 289
    alpha = torch.softmax(Q @ K.T / math.sqrt(D), dim=-1)
    assert Q.shape == (T, D) and alpha.shape == (T, T) and alpha.shape != (1, T)
    torch.testing.assert_close(attention_weights(Q, K), alpha, **tol(torch.float64))
    record_property("evidence", f"T = {T}, D = {D}: softmax(Q K^T / sqrt(D)) has shape {tuple(alpha.shape)}, not (1, {T})")


@pytest.mark.claim("attention.weights", role="corrects")
def test_each_row_of_the_weights_is_one_querys_distribution():
    T, D = 6, 3
    Q, K = randn(T, D, seed=1), randn(T, D, seed=2)
    a = attention_weights(Q, K)
    assert a.shape == (T, T)
    # A 1-row product may take another matmul kernel that sums the D terms of each score in another
    # order: each score moves by at most D ulps, and softmax keeps a relative error of that size.
    eps = torch.finfo(a.dtype).eps
    for t in range(T):  # row t = the 1 x T weights of query t alone
        torch.testing.assert_close(attention_weights(Q[t:t + 1], K), a[t:t + 1], rtol=8 * D * eps, atol=0)
        assert int(a[t].argmax()) == int((K @ Q[t]).argmax())
    torch.testing.assert_close(a.sum(-1), torch.ones(T, dtype=a.dtype))


@pytest.mark.claim("attention.weights", role="corrects")
@settings(max_examples=8)
@given(seed=seeds(), T=st.integers(1, 8), D=st.integers(1, 6))
def test_weights_row_is_softmax_of_scaled_dot_products(seed, T, D):
    q, k = randn(1, D, seed=seed), randn(T, D, seed=seed + 1)
    a = attention_weights(q, k)
    assert a.shape == (1, T)  # alpha in R^{1 x T} for one query
    # independent: numpy softmax of q.k_j / sqrt(D)
    s = (q.numpy() @ k.numpy().T) / np.sqrt(D)
    e = np.exp(s - s.max())
    np.testing.assert_allclose(a.numpy(), e / e.sum(), rtol=1e-12)
    assert int(a.argmax()) == int(np.argmax(s))  # most similar key gets the most weight


@pytest.mark.claim("attention.causal-mask")
@settings(max_examples=8)
@given(seed=seeds(), T=st.integers(2, 8), t=st.integers(0, 6))
def test_output_ignores_the_future(seed, T, t):
    t = t % (T - 1)
    x = randn(1, T, 4, seed=seed)
    W = _weights(4, 4, seed + 3)
    y = self_attention(x, *W, causal=True)
    x2 = x.clone()
    x2[:, t + 1:] = randn(1, T - t - 1, 4, seed=seed + 99)
    y2 = self_attention(x2, *W, causal=True)
    torch.testing.assert_close(y[:, :t + 1], y2[:, :t + 1], rtol=0, atol=0)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])  # the future outputs do change


@pytest.mark.claim("attention.causal-mask")
def test_additive_mask_matches_torch_attn_mask():
    # a general additive mask M (here: causal -inf plus a finite bias) against torch's float attn_mask
    T, d = 5, 3
    q, k, v = randn(2, T, d, seed=21), randn(2, T, d, seed=22), randn(2, T, 4, seed=23)
    bias = randn(T, T, seed=24)
    M = bias + torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=M)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask=M), ref, **tol(torch.float64))
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask=torch.triu(torch.full((T, T), float("-inf"),
                                                                                     dtype=torch.float64), 1)),
                               scaled_dot_product_attention(q, k, v, causal=True), rtol=0, atol=0)


@pytest.mark.claim("attention.causal-mask")
def test_without_mask_the_past_sees_the_future():
    x = randn(1, 5, 4, seed=3)
    W = _weights(4, 4, 11)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(self_attention(x, *W, causal=False)[:, 0], self_attention(x2, *W, causal=False)[:, 0])


@pytest.mark.claim("attention.multi-head")
@settings(max_examples=8)
@given(seed=seeds(), heads=st.sampled_from([1, 2, 4]), T=st.integers(1, 6), causal=st.booleans())
def test_multi_head_is_per_head_attention_concatenated(seed, heads, T, causal):
    D = 8
    x = randn(2, T, D, seed=seed)
    W_Q, W_K, W_V = _weights(D, D, seed + 1)
    out = multi_head_attention(x, W_Q, W_K, W_V, heads, causal=causal)
    d = D // heads
    parts = [self_attention(x, W_Q[:, j * d:(j + 1) * d], W_K[:, j * d:(j + 1) * d], W_V[:, j * d:(j + 1) * d],
                            causal=causal) for j in range(heads)]
    torch.testing.assert_close(out, torch.cat(parts, -1), **tol(torch.float64))
    fused = multi_head_attention(x, W_Q, W_K, W_V, heads, causal=causal, fused=True)
    torch.testing.assert_close(fused, out, **tol(torch.float64))


@pytest.mark.claim("attention.multi-head")
def test_multi_head_output_projection():
    D, heads, T = 8, 2, 4
    x = randn(1, T, D, seed=31)
    W_Q, W_K, W_V = _weights(D, D, 32)
    W_O = randn(D, 5, seed=35)
    concat = multi_head_attention(x, W_Q, W_K, W_V, heads)
    torch.testing.assert_close(multi_head_attention(x, W_Q, W_K, W_V, heads, W_O=W_O), concat @ W_O, rtol=0, atol=0)


@pytest.mark.claim("attention.multi-head")
def test_multi_head_matches_nn_multiheadattention(device, dtype):
    torch.manual_seed(0)
    D, heads, T = 16, 4, 7
    mha = torch.nn.MultiheadAttention(D, heads, batch_first=True).to(device, dtype)
    x = randn(3, T, D, seed=2, dtype=dtype, device=device)
    Wq, Wk, Wv = mha.in_proj_weight.detach().chunk(3, 0)
    bq, bk, bv = mha.in_proj_bias.detach().chunk(3, 0)
    # nn.MultiheadAttention has biases: fold them in by appending a constant-1 feature.
    ones = torch.ones(3, T, 1, device=device, dtype=dtype)
    xa = torch.cat([x, ones], -1)
    aug = lambda W, b: torch.cat([W.T, b[None]], 0)
    W_O = torch.cat([mha.out_proj.weight.detach().T, mha.out_proj.bias.detach()[None]], 0)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), 1)
    ref, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    ours = multi_head_attention(xa, aug(Wq, bq), aug(Wk, bk), aug(Wv, bv), heads, causal=True)
    ours = torch.cat([ours, torch.ones(3, T, 1, device=device, dtype=dtype)], -1) @ W_O
    # float32: a D = 16 projection, a 7-term softmax mix and a 16-term output projection.
    t = tol(dtype) if device.type == "cpu" else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ours, ref.detach(), **t)


@pytest.mark.claim("attention.positional-encoding")
@settings(max_examples=8)
@given(seed=seeds(), T=st.integers(2, 7))
def test_attention_without_positions_is_permutation_equivariant(seed, T):
    x = randn(1, T, 6, seed=seed)
    W = _weights(6, 6, seed + 5)
    perm = torch.randperm(T, generator=generator(seed))
    y = self_attention(x, *W, causal=False)
    torch.testing.assert_close(self_attention(x[:, perm], *W, causal=False), y[:, perm], **tol(torch.float64))


@pytest.mark.claim("attention.positional-encoding")
def test_positional_encoding_breaks_equivariance_and_matches_formula():
    T, D = 6, 8
    pe = sinusoidal_positional_encoding(T, D, dtype=torch.float64)
    t = np.arange(T)[:, None]
    i = np.arange(D // 2)[None, :]
    ref = np.empty((T, D))
    ref[:, 0::2] = np.sin(t / 10000 ** (2 * i / D))
    ref[:, 1::2] = np.cos(t / 10000 ** (2 * i / D))
    np.testing.assert_allclose(pe.numpy(), ref, rtol=0, atol=1e-15)
    assert torch.cdist(pe, pe).add(torch.eye(T, dtype=pe.dtype)).min() > 0.1  # distinct positions
    # same token at every position: without PE all outputs equal; with PE they differ
    x = randn(1, 1, D, seed=4).expand(1, T, D)
    W = _weights(D, D, 17)
    y0 = self_attention(x, *W, causal=False)
    assert torch.allclose(y0, y0[:, :1].expand_as(y0))
    y1 = self_attention(x + pe, *W, causal=False)
    assert (y1 - y1[:, :1]).abs().amax() > 1e-3
    perm = torch.tensor([1, 0, 2, 3, 4, 5])
    z = randn(1, T, D, seed=5)
    assert not torch.allclose(self_attention(z[:, perm] + pe, *W, causal=False),
                              self_attention(z + pe, *W, causal=False)[:, perm])


def _core(q, k, v):
    return scaled_dot_product_attention(q, k, v, causal=True)


@pytest.mark.claim("attention.cost", role="corrects")
def test_flops_of_scores_and_mixing_are_4_T2_D(record_property):
    rows = []
    for T in (8, 16, 32):
        for D in (4, 16):
            q = torch.randn(T, D)
            rows.append((T, D, count_flops(_core, q, q, q)))
            assert rows[-1][2] == 4 * T * T * D
    Ts = [r[0] for r in rows if r[1] == 16]
    p = fit_exponent(Ts, [r[2] for r in rows if r[1] == 16])
    assert abs(p - 2) < 1e-9
    record_property("evidence", f"core FLOPs = 4 T^2 D exactly for T in 8..32, D in 4,16; exponent in T {p:.3f}")


@pytest.mark.claim("attention.cost", role="corrects")
def test_full_layer_flops_are_T2D_plus_TD2():
    for T, D in ((8, 8), (4, 64), (32, 16)):
        x = torch.randn(1, T, D)
        W = [torch.randn(D, D) for _ in range(3)]
        assert count_flops(self_attention, x, *W) == 4 * T * T * D + 6 * T * D * D


@pytest.mark.claim("attention.cost", role="refutes")
def test_projections_dominate_when_D_exceeds_T(record_property):
    T = 4
    ratios = []
    for D in (128, 256, 512):
        x = torch.randn(1, T, D)
        W = [torch.randn(D, D) for _ in range(3)]
        ratios.append(count_flops(self_attention, x, *W) / (T * T * D))
    # O(T^2 D) would keep this ratio bounded; it grows linearly with D
    p = fit_exponent([128, 256, 512], ratios)
    assert p > 0.9
    record_property("evidence", f"T=4: FLOPs/(T^2 D) = {ratios[0]:.0f}, {ratios[1]:.0f}, {ratios[2]:.0f} "
                                f"for D = 128, 256, 512 (grows like D: exponent {p:.2f})")


@pytest.mark.claim("attention.cost", role="corrects")
@pytest.mark.slow
def test_figure_attention_cost_against_T(save_figure, record_property):
    import time

    import matplotlib.pyplot as plt

    Ts, flops, secs = [64, 128, 256, 512, 1024], [], []
    for T in Ts:
        q = torch.randn(8, T, 8)
        flops.append(count_flops(_core, q, q, q))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            _core(q, q, q)
            best = min(best, time.perf_counter() - t0)
        secs.append(best)
    pf, pt = fit_exponent(Ts, flops), fit_exponent(Ts[2:], secs[2:])
    assert abs(pf - 2) < 1e-9
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.loglog(Ts, np.array(flops) / flops[0], "o-", label=f"FLOPs (slope {pf:.2f})")
    ax.loglog(Ts, np.array(secs) / secs[0], "s-", label=f"time, CPU (slope {pt:.2f})")
    ax.loglog(Ts, (np.array(Ts) / Ts[0]) ** 2, "k:", label="T^2")
    ax.set_xlabel("T")
    ax.set_ylabel("cost relative to T = 64")
    ax.set_title("causal attention, 8 heads x d = 8")
    ax.legend()
    save_figure(fig, "attention-cost-vs-T.png",
                caption='FLOPs (slope 2 exactly) and CPU time of causal attention against the sequence length $T$, relative to $T = 64$, with a $T^2$ guide line.')
    record_property("evidence", f"fitted exponents: FLOPs {pf:.2f}, wall time {pt:.2f} (T = 256..1024, best of 5 on a shared CPU)")


def test_bad_inputs_are_rejected():
    x = torch.randn(2, 3, 4)
    W = torch.randn(4, 4)
    with pytest.raises(TypeError, match="q"):
        scaled_dot_product_attention(x.numpy(), x, x)
    with pytest.raises(ValueError, match="k"):
        scaled_dot_product_attention(x, torch.randn(2, 3, 5), x)
    with pytest.raises(ValueError, match="v"):
        scaled_dot_product_attention(x, x, torch.randn(2, 4, 4))
    with pytest.raises(TypeError, match="k"):
        attention_weights(x, x.double())
    with pytest.raises(ValueError, match="W_Q"):
        self_attention(x, torch.randn(5, 4), W, W)
    with pytest.raises(ValueError, match="heads"):
        multi_head_attention(x, W, W, W, 3)
    with pytest.raises(ValueError, match="heads"):
        split_heads(x, 3)
    with pytest.raises(ValueError, match="x"):
        merge_heads(x)
    with pytest.raises(ValueError, match="T"):
        causal_mask(0)
    with pytest.raises(ValueError, match="D"):
        sinusoidal_positional_encoding(4, 5)
    with pytest.raises(ValueError, match="causal"):
        attention_weights(torch.randn(3, 4), torch.randn(5, 4), causal=True)
    with pytest.raises(ValueError, match="v"):
        scaled_dot_product_attention_fused(x, x, torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="W_O"):
        multi_head_attention(x, W, W, W, 2, W_O=torch.randn(3, 4))
