"""CNN: convolution and correlation, their backward passes, output sizes, pooling, unpooling and
transposed convolution, written as the notes write them (ETH Machine Perception, section CNN).

Index conventions: images are ``(B, C, H, W)``, kernels ``(C_out, C_in, kh, kw)``. *Correlation*
is what ``torch.nn.functional.conv2d`` computes; the notes' *convolution* is correlation with the
kernel rotated by 180 degrees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from impl._checks import check_int, check_same, check_tensor

# --------------------------------------------------------------------------- shapes


def _pair(value, name: str, *, min: int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, tuple) and len(value) == 2):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return tuple(check_int(v, name, min=min) for v in value)  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Width or height after a convolution or pooling layer (the notes' formula, rounded down):

        floor((in + 2 pad - dil (kern - 1) - 1) / stride) + 1
    """
    check_int(size, "size", min=1)
    check_int(kernel, "kernel", min=1)
    check_int(stride, "stride", min=1)
    check_int(padding, "padding", min=0)
    check_int(dilation, "dilation", min=1)
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        raise ValueError(f"kernel: dilated kernel extent {dilation * (kernel - 1) + 1} exceeds the padded "
                         f"input size {size + 2 * padding}")
    return span // stride + 1


# --------------------------------------------------------------------------- convolution


def rot180(w: torch.Tensor) -> torch.Tensor:
    """ROT_180 of the notes: flip the last two (spatial) dimensions. w: (..., kh, kw)."""
    check_tensor(w, "w", floating=False)
    if w.ndim < 2:
        raise ValueError(f"w: expected at least 2 dimensions, got shape {tuple(w.shape)}")
    return torch.flip(w, dims=(-2, -1))


def _conv_geometry(x, w, b, stride, padding, dilation):
    """Check a correlation's arguments; return (stride, padding, dilation) as pairs and (H', W')."""
    check_tensor(x, "x", ndim=4)
    check_tensor(w, "w", ndim=4)
    check_same(x, "x", w=w)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w: has {w.shape[1]} input channels, x has {x.shape[1]}")
    if b is not None:
        check_tensor(b, "b", shape=(w.shape[0],))
        check_same(x, "x", b=b)
    stride, padding = _pair(stride, "stride", min=1), _pair(padding, "padding", min=0)
    dilation = _pair(dilation, "dilation", min=1)
    out = tuple(conv_output_size(x.shape[2 + d], w.shape[2 + d], stride[d], padding[d], dilation[d]) for d in (0, 1))
    return stride, padding, dilation, out


def correlate2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *,
                stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Cross-correlation by im2col: I'(i, j) = sum_{m, n} K(m, n) I(i + m, j + n) (+ b).

    x: (B, C_in, H, W), w: (C_out, C_in, kh, kw), b: (C_out,) -> (B, C_out, H', W') with H', W'
    from :func:`conv_output_size`. One matrix product over all patches (``F.unfold``).
    """
    stride, padding, dilation, (Ho, Wo) = _conv_geometry(x, w, b, stride, padding, dilation)
    (B, _, H, W), (O, _, kh, kw) = x.shape, w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C kh kw, L)
    out = w.reshape(O, -1) @ cols  # (B, O, L)
    if b is not None:
        out = out + b[:, None]
    return out.reshape(B, O, Ho, Wo)


def correlate2d_fast(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *,
                     stride=1, padding=0, dilation=1) -> torch.Tensor:
    """The fast path beside :func:`correlate2d`: the same sum, one kernel tap at a time, each tap
    one batched matrix product over a *shifted window* of the flattened padded image.

    With the image channels-last and its rows flattened, tap (m, n) reads the input at a fixed
    offset m dil W_p + n dil from each output position: a contiguous window, so no patch matrix
    (im2col's C kh kw copies of the image) is built. Each output row is computed W_p wide and the
    last (kw - 1) dil columns, which wrap into the next row, are cropped. Stride 1 only; other
    strides take :func:`correlate2d`. Returns a channels-last (B, C_out, H', W') tensor.
    """
    stride, padding, dilation, (Ho, Wo) = _conv_geometry(x, w, b, stride, padding, dilation)
    if stride != (1, 1):
        return correlate2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    (B, C, H, W), (O, _, kh, kw) = x.shape, w.shape
    Hp, Wp = H + 2 * padding[0], W + 2 * padding[1]
    # one more zero row below: the last tap's window runs (kw - 1) dil entries past Hp Wp
    extra = -(-(kw - 1) * dilation[1] // Wp)
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, padding[1], padding[1], padding[0], padding[0] + extra))
    xp = xp.reshape(B, (Hp + extra) * Wp, C)
    wt = w.permute(2, 3, 1, 0)  # (kh, kw, C_in, C_out)
    L = Ho * Wp
    out = (b.expand(B, L, O) if b is not None else x.new_zeros(()).expand(B, L, O)).contiguous()
    for m in range(kh):
        for n in range(kw):
            s = m * dilation[0] * Wp + n * dilation[1]
            out.baddbmm_(xp[:, s: s + L], wt[m, n].expand(B, C, O))
    return out.view(B, Ho, Wp, O)[:, :, :Wo].permute(0, 3, 1, 2)


def correlate2d_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *,
                          stride=1, padding=0, dilation=1) -> torch.Tensor:
    """The plain sum of the notes' correlation formula, one kernel tap at a time (the reference
    that :func:`correlate2d` is tested against). Same shapes as :func:`correlate2d`."""
    stride, padding, dilation, (Ho, Wo) = _conv_geometry(x, w, b, stride, padding, dilation)
    (B, _, H, W), (O, _, kh, kw) = x.shape, w.shape
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out = x.new_zeros(B, O, Ho, Wo)
    for m in range(kh):
        for n in range(kw):
            i0, j0 = m * dilation[0], n * dilation[1]
            patch = xp[:, :, i0: i0 + stride[0] * (Ho - 1) + 1: stride[0], j0: j0 + stride[1] * (Wo - 1) + 1: stride[1]]
            out = out + torch.einsum("oc,bchw->bohw", w[:, :, m, n], patch)
    if b is not None:
        out = out + b[:, None, None]
    return out


def convolve2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *,
               stride=1, padding=0, dilation=1) -> torch.Tensor:
    """The notes' convolution: z = w * x + b = sum_{m, n} w_{m, n} x_{i - m, j - n} + b, that is,
    correlation with the rotated kernel. Shapes as :func:`correlate2d`."""
    check_tensor(w, "w", ndim=4)
    return correlate2d(x, rot180(w), b, stride=stride, padding=padding, dilation=dilation)


def conv_backward_input(delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Backward pass to the inputs of a stride-1 'valid' convolution, as the notes write it:
    delta^(l-1) = delta^(l) * ROT180(w^(l)), a full convolution.

    delta: (B, C_out, H', W'), w: (C_out, C_in, kh, kw) -> (B, C_in, H' + kh - 1, W' + kw - 1).
    """
    check_tensor(delta, "delta", ndim=4)
    check_tensor(w, "w", ndim=4)
    if w.shape[0] != delta.shape[1]:
        raise ValueError(f"w: has {w.shape[0]} output channels, delta has {delta.shape[1]}")
    kh, kw = w.shape[-2:]
    # Summing over output channels: each input channel c sees the kernels w[:, c].
    return convolve2d(delta, rot180(w).transpose(0, 1), padding=(kh - 1, kw - 1))


def conv_backward_kernel(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Backward pass to the kernel of a stride-1 'valid' convolution, as the notes write it:
    dC/dw = delta^(l) * ROT180(z^(l-1)), a valid convolution, summed over the batch.

    delta: (B, C_out, H', W'), x: (B, C_in, H, W) -> (C_out, C_in, H - H' + 1, W - W' + 1).
    """
    check_tensor(delta, "delta", ndim=4)
    check_tensor(x, "x", ndim=4)
    if delta.shape[0] != x.shape[0]:
        raise ValueError(f"delta: batch {delta.shape[0]} differs from x's {x.shape[0]}")
    # conv(delta, rot x) = conv(rot x, delta): treat the batch as the channel to sum over.
    out = convolve2d(rot180(x).transpose(0, 1), delta.transpose(0, 1))  # (C_in, C_out, kh, kw)
    return out.transpose(0, 1)


# --------------------------------------------------------------------------- 1-D and shift structure


def conv1d_toeplitz(k: torch.Tensor, n: int) -> torch.Tensor:
    """The banded Toeplitz matrix the notes draw: T[i, j] = k[i - j] (0-based), shape (n + K - 1, n),
    so that T @ x is the full 1-D convolution of x (length n) with k (length K)."""
    check_tensor(k, "k", ndim=1)
    check_int(n, "n", min=1)
    K = k.shape[0]
    i = torch.arange(n + K - 1, device=k.device)[:, None]
    j = torch.arange(n, device=k.device)[None, :]
    d = i - j
    return torch.where((d >= 0) & (d < K), k[d.clamp(0, K - 1)], k.new_zeros(()))


def circular_convolve1d(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Circular convolution y[i] = sum_m h[m] x[(i - m) mod n]. x: (..., n), h: (n,) -> (..., n)."""
    check_tensor(x, "x")
    check_tensor(h, "h", ndim=1)
    n = x.shape[-1]
    if h.shape[0] != n:
        raise ValueError(f"h: length {h.shape[0]} differs from the signal length {n}")
    idx = (torch.arange(n, device=x.device)[:, None] - torch.arange(n, device=x.device)[None, :]) % n
    return (x[..., idx] * h).sum(-1)  # idx[i, m] = (i - m) mod n


def impulse_response(T, n: int, *, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """h = T(e_0): the response of an operator on length-n signals to the unit impulse at 0."""
    check_int(n, "n", min=1)
    if not callable(T):
        raise TypeError("T: expected a callable operator on (n,) tensors")
    e0 = torch.zeros(n, dtype=dtype, device=device)
    e0[0] = 1
    return T(e0)


# --------------------------------------------------------------------------- pooling and unpooling


def max_pool2d(x: torch.Tensor, kernel: int, stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling z = max_i z_i over each window, with i* = argmax (the first maximum in row-major
    order within the window when several tie).

    x: (B, C, H, W) -> values (B, C, H', W') and indices (B, C, H', W') into the flattened H*W plane
    (the layout torch's max_unpool2d takes).
    """
    check_tensor(x, "x", ndim=4)
    check_int(kernel, "kernel", min=1)
    stride = kernel if stride is None else check_int(stride, "stride", min=1)
    B, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, kernel, stride), conv_output_size(W, kernel, stride)
    cols = F.unfold(x.reshape(B * C, 1, H, W), kernel, stride=stride)  # (BC, k*k, L)
    # argmax of a float tensor picks the first maximal entry: the tie rule stated above.
    arg = cols.argmax(dim=1)  # (BC, L)
    vals = cols.gather(1, arg[:, None]).squeeze(1)
    # Window offset -> position in the input plane.
    li = torch.arange(Ho * Wo, device=x.device)
    r0, c0 = (li // Wo) * stride, (li % Wo) * stride
    rows, colsi = r0 + arg // kernel, c0 + arg % kernel
    idx = rows * W + colsi
    return vals.reshape(B, C, Ho, Wo), idx.reshape(B, C, Ho, Wo)


def max_pool2d_backward(delta: torch.Tensor, indices: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """The notes' routing: d z / d z_i = [i = i*], so delta^(l-1)_{i*} = delta^(l) and 0 elsewhere
    (summed where windows overlap). delta, indices: (B, C, H', W') -> (B, C, H, W)."""
    check_tensor(delta, "delta", ndim=4)
    check_tensor(indices, "indices", ndim=4, floating=False)
    if indices.shape != delta.shape:
        raise ValueError(f"indices: shape {tuple(indices.shape)} differs from delta's {tuple(delta.shape)}")
    H, W = _pair(tuple(input_size), "input_size", min=1)
    B, C = delta.shape[:2]
    out = delta.new_zeros(B, C, H * W)
    out.scatter_add_(2, indices.reshape(B, C, -1), delta.reshape(B, C, -1))
    return out.reshape(B, C, H, W)


def unpool_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour unpooling: duplicate each value into a factor x factor block.
    x: (B, C, H, W) -> (B, C, factor H, factor W)."""
    check_tensor(x, "x", ndim=4)
    check_int(factor, "factor", min=1)
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def unpool_bed_of_nails(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bed-of-nails unpooling: each value goes to the top-left of its factor x factor block, the
    rest is 0. x: (B, C, H, W) -> (B, C, factor H, factor W)."""
    check_tensor(x, "x", ndim=4)
    check_int(factor, "factor", min=1)
    B, C, H, W = x.shape
    out = x.new_zeros(B, C, H * factor, W * factor)
    out[..., ::factor, ::factor] = x
    return out


def max_unpool2d(x: torch.Tensor, indices: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """Max unpooling: put each value back where the max came from when pooling (``indices`` from
    :func:`max_pool2d`), the rest 0. x, indices: (B, C, H', W') -> (B, C, *output_size)."""
    check_tensor(x, "x", ndim=4)
    check_tensor(indices, "indices", ndim=4, floating=False)
    if indices.shape != x.shape:
        raise ValueError(f"indices: shape {tuple(indices.shape)} differs from x's {tuple(x.shape)}")
    H, W = _pair(tuple(output_size), "output_size", min=1)
    if indices.numel() and (indices.min() < 0 or indices.max() >= H * W):
        raise ValueError(f"indices: must lie in [0, {H * W}) for output_size {(H, W)}")
    B, C = x.shape[:2]
    out = x.new_zeros(B, C, H * W)
    out.scatter_(2, indices.reshape(B, C, -1), x.reshape(B, C, -1))
    return out.reshape(B, C, H, W)


# --------------------------------------------------------------------------- transposed convolution


def transposed_conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *,
                      stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Transposed convolution as the notes describe it: the output is copies of the filter weighted
    by each input value, placed ``stride`` apart and summed where they overlap (``F.fold`` sums
    overlapping patches); ``padding`` then crops each border.

    x: (B, C_in, H, W), w: (C_in, C_out, kh, kw) (torch's conv_transpose2d layout), b: (C_out,)
    -> (B, C_out, (H - 1) stride - 2 padding + kh, (W - 1) stride - 2 padding + kw).
    """
    check_tensor(x, "x", ndim=4)
    check_tensor(w, "w", ndim=4)
    check_same(x, "x", w=w)
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"w: has {w.shape[0]} input channels, x has {x.shape[1]}")
    check_int(stride, "stride", min=1)
    check_int(padding, "padding", min=0)
    B, Ci, H, W = x.shape
    _, Co, kh, kw = w.shape
    Hf, Wf = (H - 1) * stride + kh, (W - 1) * stride + kw
    if Hf - 2 * padding < 1 or Wf - 2 * padding < 1:
        raise ValueError(f"padding: {padding} crops away the whole {Hf}x{Wf} output")
    # copies[b, (o, m, n), (i, j)] = sum_c x[b, c, i, j] w[c, o, m, n]: the weighted filter copies.
    copies = torch.einsum("bcl,ck->bkl", x.reshape(B, Ci, H * W), w.reshape(Ci, Co * kh * kw))
    out = F.fold(copies, (Hf, Wf), (kh, kw), stride=stride)
    out = out[..., padding: Hf - padding, padding: Wf - padding]
    if b is not None:
        check_tensor(b, "b", shape=(Co,))
        check_same(x, "x", b=b)
        out = out + b[:, None, None]
    return out


def transposed_conv2d_fast(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *,
                           stride: int = 1, padding: int = 0) -> torch.Tensor:
    """The fast path beside :func:`transposed_conv2d`: the adjoint of a correlation is a correlation
    of the input, spread ``stride`` apart with zeros in between, with the rotated kernel (its two
    channel axes swapped), padded by k - 1 - padding: summing the filter copies placed on the output
    grid equals sliding the rotated filter over the input grid. Shapes as :func:`transposed_conv2d`.
    """
    check_tensor(x, "x", ndim=4)
    check_tensor(w, "w", ndim=4)
    check_same(x, "x", w=w)
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"w: has {w.shape[0]} input channels, x has {x.shape[1]}")
    stride = check_int(stride, "stride", min=1)
    padding = check_int(padding, "padding", min=0)
    B, Ci, H, W = x.shape
    _, Co, kh, kw = w.shape
    Hf, Wf = (H - 1) * stride + kh, (W - 1) * stride + kw
    if Hf - 2 * padding < 1 or Wf - 2 * padding < 1:
        raise ValueError(f"padding: {padding} crops away the whole {Hf}x{Wf} output")
    if b is not None:
        check_tensor(b, "b", shape=(Co,))
        check_same(x, "x", b=b)
    if stride > 1:
        spread = x.new_zeros(B, Ci, (H - 1) * stride + 1, (W - 1) * stride + 1)
        spread[:, :, ::stride, ::stride] = x
        x = spread
    k = rot180(w).transpose(0, 1)  # (C_out, C_in, kh, kw)
    # padding beyond k - 1 crops into the correlation's own output instead
    ph, pw = kh - 1 - padding, kw - 1 - padding
    out = correlate2d_fast(x, k, b, padding=(max(ph, 0), max(pw, 0)))
    ch, cw = max(-ph, 0), max(-pw, 0)
    return out[..., ch: out.shape[-2] - ch, cw: out.shape[-1] - cw]
