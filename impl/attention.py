"""Attention: scaled dot-product attention with the causal mask, multi-head attention,
sinusoidal positional encoding.

The plain formula of the notes, ``softmax(Q K^T / sqrt(d) + M) V``, sits beside the fused
``torch.nn.functional.scaled_dot_product_attention`` so that one can be tested against the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from impl._checks import check_int, check_same, check_tensor


def causal_mask(T: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Additive mask M: (T, T), 0 on and below the diagonal, -inf above it (the future)."""
    check_int(T, "T", min=1)
    full = torch.full((T, T), float("-inf"), device=device, dtype=dtype)
    return torch.triu(full, diagonal=1)


def _check_qkv(q, k, v):
    check_tensor(q, "q", ndim=(2, 3, 4))
    check_tensor(k, "k", ndim=q.ndim)
    check_tensor(v, "v", ndim=q.ndim)
    check_same(q, "q", k=k, v=v)
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k: last dimension {k.shape[-1]} differs from q's {q.shape[-1]}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v: {v.shape[-2]} positions but k has {k.shape[-2]}")


def attention_weights(q: torch.Tensor, k: torch.Tensor, *, causal: bool = False,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """alpha = softmax(Q K^T / sqrt(d) + M).

    q: (..., Tq, d), k: (..., Tk, d), mask: additive, broadcastable to (..., Tq, Tk).
    Returns (..., Tq, Tk); each row is a probability vector over the allowed keys.
    """
    check_tensor(q, "q", ndim=(2, 3, 4))
    check_tensor(k, "k", ndim=q.ndim)
    check_same(q, "q", k=k)
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k: last dimension {k.shape[-1]} differs from q's {q.shape[-1]}")
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
    _check_qkv(q, k, v)
    return attention_weights(q, k, causal=causal, mask=mask) @ v


def scaled_dot_product_attention_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                         causal: bool = False, mask: torch.Tensor | None = None,
                                         chunk: int = 128) -> torch.Tensor:
    """The same formula, ``chunk`` queries at a time: the fast path beside the plain reference.

    The plain path builds the whole (Tq, Tk) score matrix three times over (scores, masked scores,
    softmax), which for T = 1024 and 8 heads no longer fits in cache: its time then grows faster
    than its T^2 FLOPs. A block of ``chunk`` query rows keeps the scores in cache, and with the
    causal mask a block needs only the keys up to its last query, which halves the work.

    q: (..., Tq, d), k: (..., Tk, d), v: (..., Tk, dv), mask: additive, broadcastable to
    (..., Tq, Tk) -> (..., Tq, dv).
    """
    _check_qkv(q, k, v)
    chunk = check_int(chunk, "chunk", min=1)
    Tq, Tk = q.shape[-2], k.shape[-2]
    if causal and Tq != Tk:
        raise ValueError("causal: needs as many queries as keys")
    if mask is not None:
        check_tensor(mask, "mask")
        check_same(q, "q", mask=mask)
        mask = mask.expand(*mask.shape[:-2], Tq, Tk) if mask.ndim >= 2 else mask.expand(Tq, Tk)
    scale = 1 / math.sqrt(q.shape[-1])
    tri = causal_mask(min(chunk, Tq), device=q.device, dtype=q.dtype) if causal else None
    blocks = []
    for s in range(0, Tq, chunk):
        e = min(s + chunk, Tq)
        kk, vv = (k[..., :e, :], v[..., :e, :]) if causal else (k, v)
        scores = torch.matmul(q[..., s:e, :], kk.transpose(-2, -1)).mul_(scale)
        if causal:  # keys before the block are all visible; within it, the lower triangle
            scores[..., s:e] += tri[: e - s, : e - s]
        if mask is not None:
            scores = scores + mask[..., s:e, : kk.shape[-2]]
        blocks.append(torch.matmul(torch.softmax(scores, dim=-1), vv))
    return torch.cat(blocks, dim=-2)


def scaled_dot_product_attention_fused(q, k, v, *, causal: bool = False) -> torch.Tensor:
    """The same through PyTorch's fused kernel (flash / memory-efficient where available)."""
    _check_qkv(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def self_attention(x: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor, W_V: torch.Tensor, *,
                   causal: bool = True) -> torch.Tensor:
    """The notes' layer: softmax((X W_Q)(X W_K)^T / sqrt(D) + M)(X W_V).

    x: (..., T, D_in); W_Q, W_K: (D_in, D); W_V: (D_in, Dv) -> (..., T, Dv). D is the key width.
    """
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
