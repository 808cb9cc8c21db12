"""Attention: scaled dot-product attention with the causal mask, multi-head attention,
sinusoidal positional encoding.

The plain formula of the notes, ``softmax(Q K^T / sqrt(d) + M) V``, sits beside the fused
``torch.nn.functional.scaled_dot_product_attention`` so that one can be tested against the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from impl._checks import check_bool, check_int, check_same, check_tensor


def causal_mask(T: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Additive mask M: (T, T), 0 on and below the diagonal, -inf above it (the future)."""
    check_int(T, "T", min=1)
    full = torch.full((T, T), float("-inf"), device=device, dtype=dtype)
    return torch.triu(full, diagonal=1)


def _check_qk(q, k):
    check_tensor(q, "q", ndim=(2, 3, 4))
    check_tensor(k, "k", ndim=q.ndim)
    check_same(q, "q", k=k)
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k: last dimension {k.shape[-1]} differs from q's {q.shape[-1]}")
    if q.shape[-1] == 0:  # the scores are divided by sqrt(d)
        raise ValueError(f"q: expected a feature dimension d >= 1, got shape {tuple(q.shape)}")
    if k.shape[-2] == 0:  # each query's weights are a softmax over the keys: over none it is undefined
        raise ValueError(f"k: expected at least one key, got shape {tuple(k.shape)}")


def _check_qkv(q, k, v):
    _check_qk(q, k)
    check_tensor(v, "v", ndim=q.ndim)
    check_same(q, "q", v=v)
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v: {v.shape[-2]} positions but k has {k.shape[-2]}")


def attention_weights(q: torch.Tensor, k: torch.Tensor, *, causal: bool = False,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """alpha = softmax(Q K^T / sqrt(d) + M).

    q: (..., Tq, d), k: (..., Tk, d), mask: additive, broadcastable to (..., Tq, Tk).
    Returns (..., Tq, Tk); each row is a probability vector over the allowed keys.
    """
    check_bool(causal, "causal")
    _check_qk(q, k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        if q.shape[-2] != k.shape[-2]:
            raise ValueError("causal: needs as many queries as keys")
        scores = scores + causal_mask(q.shape[-2], device=q.device, dtype=q.dtype)
    if mask is not None:
        check_tensor(mask, "mask")
        check_same(q, "q", mask=mask)
        scores = scores + mask
    return torch.softmax(scores, dim=-1)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                 causal: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Plain reference: softmax(Q K^T / sqrt(d) + M) V.

    q: (..., Tq, d), k: (..., Tk, d), v: (..., Tk, dv) -> (..., Tq, dv).
    """
    check_bool(causal, "causal")
    _check_qkv(q, k, v)
    return attention_weights(q, k, causal=causal, mask=mask) @ v


# Rows of scores per block, so that a block (all heads) holds about 2^18 floats (1 MiB in float32):
# it stays in a core's L2 cache between the matmul that writes it, the softmax and the matmul
# that reads it. Measured on this project's 2-core CPU at T = 1024, 8 heads of width 8, causal:
# 32-row blocks run 1.3x the fused kernel (2 threads), 128-row blocks 1.6x.
_BLOCK_FLOATS = 1 << 18


def scaled_dot_product_attention_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                         causal: bool = False, mask: torch.Tensor | None = None,
                                         chunk: int | None = None) -> torch.Tensor:
    """The same formula, ``chunk`` queries at a time: the fast path beside the plain reference.

    The plain path builds the whole (Tq, Tk) score matrix three times over (scores, masked scores,
    softmax), which for T = 1024 and 8 heads no longer fits in cache: its time then grows faster
    than its T^2 FLOPs. A block of ``chunk`` query rows keeps the scores in cache; with the causal
    mask a block needs only the keys up to its last query, which halves the work; the scale is
    applied to Q once, and a user's mask enters through ``baddbmm`` in the same pass as Q K^T.
    ``chunk`` None picks the block from the cache size (``_BLOCK_FLOATS``).

    q: (..., Tq, d), k: (..., Tk, d), v: (..., Tk, dv), mask: additive, broadcastable to
    (..., Tq, Tk) -> (..., Tq, dv).
    """
    check_bool(causal, "causal")
    _check_qkv(q, k, v)
    Tq, Tk, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    if causal and Tq != Tk:
        raise ValueError("causal: needs as many queries as keys")
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n = math.prod(lead)
    if chunk is None:
        chunk = max(16, 1 << max(0, (_BLOCK_FLOATS // max(1, n * Tk)).bit_length() - 1))
    chunk = check_int(chunk, "chunk", min=1)
    # one flat batch of matrices for bmm (expand copies only when q, k, v broadcast against each other)
    q3 = (q * (1 / math.sqrt(d))).expand(*lead, Tq, d).reshape(n, Tq, d)
    k3 = k.expand(*lead, Tk, d).reshape(n, Tk, d)
    v3 = v.expand(*lead, Tk, dv).reshape(n, Tk, dv)
    if mask is not None:
        check_tensor(mask, "mask")
        check_same(q, "q", mask=mask)
        mask = mask.expand(*lead, Tq, Tk).reshape(n, Tq, Tk) if mask.ndim > 2 else mask.expand(Tq, Tk)
    if Tq == 0:  # no query, no block: an empty batch of rows
        return q.new_empty(*lead, 0, dv)
    # Causal: the keys before a block are all visible and those after its last query all masked,
    # so only the block's own (chunk, chunk) square needs the triangle (building the whole (T, T)
    # mask would cost a third of the run at T = 1024).
    tri = causal_mask(min(chunk, Tq), device=q.device, dtype=q.dtype) if causal else None
    # per-block views made once (each index of a tensor is a dispatcher call, a few microseconds
    # against a block's tens): the query blocks by split, K^T by one transpose
    kT = k3.transpose(1, 2)
    blocks = []
    for s, qb in zip(range(0, Tq, chunk), q3.split(chunk, dim=1)):
        e = s + qb.shape[1]
        keys = e if causal else Tk
        scores = (torch.bmm(qb, kT[..., :keys]) if mask is None
                  else torch.baddbmm(mask[..., s:e, :keys], qb, kT[..., :keys]))
        if causal:
            scores[..., s:e] += tri if e - s == chunk else tri[: e - s, : e - s]
        blocks.append(torch.bmm(torch.softmax(scores, dim=-1), v3[:, :keys] if causal else v3))
    return torch.cat(blocks, dim=1).view(*lead, Tq, dv)


def scaled_dot_product_attention_fused(q, k, v, *, causal: bool = False) -> torch.Tensor:
    """The same through PyTorch's fused kernel (flash / memory-efficient where available)."""
    check_bool(causal, "causal")
    _check_qkv(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def self_attention(x: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor, W_V: torch.Tensor, *,
                   causal: bool = True) -> torch.Tensor:
    """The notes' layer: softmax((X W_Q)(X W_K)^T / sqrt(D) + M)(X W_V).

    x: (..., T, D_in); W_Q, W_K: (D_in, D); W_V: (D_in, Dv) -> (..., T, Dv). D is the key width.
    """
    check_bool(causal, "causal")
    check_tensor(x, "x", ndim=(2, 3))
    for name, W in (("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V)):
        check_tensor(W, name, ndim=2)
        check_same(x, "x", **{name: W})
        if W.shape[0] != x.shape[-1]:
            raise ValueError(f"{name}: expected {x.shape[-1]} rows, got {W.shape[0]}")
    if W_K.shape != W_Q.shape:
        raise ValueError(f"W_K: shape {tuple(W_K.shape)} differs from W_Q's {tuple(W_Q.shape)}")
    return scaled_dot_product_attention(x @ W_Q, x @ W_K, x @ W_V, causal=causal)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, h, T, D / h): head j takes columns j D/h .. (j+1) D/h - 1."""
    check_tensor(x, "x", ndim=3)
    check_int(heads, "heads", min=1)
    B, T, D = x.shape
    if D % heads:
        raise ValueError(f"heads: {heads} does not divide the width {D}")
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d) -> (B, T, h d): concatenation of the heads along the feature axis."""
    check_tensor(x, "x", ndim=4)
    B, h, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d)


def multi_head_attention(x: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor, W_V: torch.Tensor,
                         heads: int, *, W_O: torch.Tensor | None = None, causal: bool = False,
                         fused: bool = False) -> torch.Tensor:
    """Multi-head self-attention: split the projections into ``heads`` heads, attend per head
    (scale sqrt(D / h)), concatenate, then the optional output projection W_O.

    x: (B, T, D_in); W_Q, W_K, W_V: (D_in, D); W_O: (D, D_out) -> (B, T, D) or (B, T, D_out).
    """
    check_bool(causal, "causal")
    check_bool(fused, "fused")
    check_tensor(x, "x", ndim=3)
    check_int(heads, "heads", min=1)
    for name, W in (("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V)):
        check_tensor(W, name, shape=(x.shape[-1], None))
        check_same(x, "x", **{name: W})
    if not (W_Q.shape == W_K.shape == W_V.shape):
        raise ValueError("W_K: W_Q, W_K and W_V must have one shape")
    q, k, v = (split_heads(x @ W, heads) for W in (W_Q, W_K, W_V))
    attend = scaled_dot_product_attention_fused if fused else scaled_dot_product_attention
    out = merge_heads(attend(q, k, v, causal=causal))
    if W_O is not None:
        check_tensor(W_O, "W_O", shape=(W_Q.shape[1], None))
        check_same(x, "x", W_O=W_O)
        out = out @ W_O
    return out


def sinusoidal_positional_encoding(T: int, D: int, *, base: float = 10000.0, device=None,
                                   dtype=torch.float32) -> torch.Tensor:
    """PE: (T, D) with PE[t, 2i] = sin(t / base^(2i/D)), PE[t, 2i+1] = cos(t / base^(2i/D))."""
    check_int(T, "T", min=1)
    check_int(D, "D", min=2)
    if D % 2:
        raise ValueError(f"D: must be even, got {D}")
    t = torch.arange(T, device=device, dtype=torch.float64)[:, None]
    freq = base ** (-torch.arange(0, D, 2, device=device, dtype=torch.float64) / D)
    pe = torch.empty(T, D, device=device, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)
    return pe.to(dtype)
