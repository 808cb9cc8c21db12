"""LSTM exactly as the notes write it (section "LSTM"):

    (i, f, o, g) = (sigma, sigma, sigma, tanh) W (x_t; h_{t-1})    [+ b, optional; the notes have none]
    c_t = f * c_{t-1} + i * g,    h_t = o * tanh(c_t)

W: (4H, D + H), rows in the notes' gate order i, f, o, g. torch.nn.LSTM orders its rows i, f, g, o
and splits W into weight_ih (4H, D) and weight_hh (4H, H) with two biases; ``weights_from_torch``
maps one to the other.
"""

from __future__ import annotations

import torch
from torch import nn

from impl._checks import check_same, check_tensor

# torch's blocks (i, f, g, o) taken in the notes' order (i, f, o, g)
_TORCH_TO_NOTES = (0, 1, 3, 2)


def _check_weights(W, b, D, H):
    check_tensor(W, "W", shape=(4 * H, D + H))
    if b is not None:
        check_tensor(b, "b", shape=(4 * H,))
        check_same(W, "W", b=b)


def gates(x_t, h_prev, W, b=None):
    """The four gates. x_t: (B, D), h_prev: (B, H) -> i, f, o, g: each (B, H)."""
    check_tensor(x_t, "x_t", ndim=2)
    check_tensor(h_prev, "h_prev", ndim=2, shape=(x_t.shape[0], None))
    _check_weights(W, b, x_t.shape[1], h_prev.shape[1])
    check_same(W, "W", x_t=x_t, h_prev=h_prev)
    z = torch.cat([x_t, h_prev], dim=1) @ W.T
    if b is not None:
        z = z + b
    zi, zf, zo, zg = z.chunk(4, dim=1)
    return torch.sigmoid(zi), torch.sigmoid(zf), torch.sigmoid(zo), torch.tanh(zg)


def lstm_cell(x_t, h_prev, c_prev, W, b=None):
    """One step. x_t: (B, D), h_prev, c_prev: (B, H) -> (h_t, c_t): (B, H) each."""
    i, f, o, g = gates(x_t, h_prev, W, b)
    check_tensor(c_prev, "c_prev", shape=h_prev.shape)
    check_same(W, "W", c_prev=c_prev)
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


def lstm_sequence(x, h0, c0, W, b=None):
    """Unrolled LSTM. x: (T, B, D), h0, c0: (B, H) -> (hs: (T, B, H), (h_T, c_T)).

    The input half of W multiplies all x_t in one matmul before the loop (as cuDNN does); the
    recurrence itself is sequential. Same arithmetic as lstm_cell, step by step.
    """
    check_tensor(x, "x", ndim=3)
    check_tensor(h0, "h0", ndim=2, shape=(x.shape[1], None))
    check_tensor(c0, "c0", shape=h0.shape)
    D, H = x.shape[2], h0.shape[1]
    _check_weights(W, b, D, H)
    check_same(W, "W", x=x, h0=h0, c0=c0)
    zx = x @ W[:, :D].T
    if b is not None:
        zx = zx + b
    W_h = W[:, D:].T
    h, c, hs = h0, c0, []
    for t in range(x.shape[0]):
        zi, zf, zo, zg = (zx[t] + h @ W_h).chunk(4, dim=1)
        c = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
        h = torch.sigmoid(zo) * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs), (h, c)


class _LSTMSequence(torch.autograd.Function):
    """The unrolled LSTM with its backward pass (BPTT) written out by hand.

    Autograd of the unrolled loop records a dozen small ops per step and replays them one by one;
    here each step is one matmul each way plus element-wise work, and the gradients of W and x
    for all steps come from one matmul each after the loop. First derivatives only.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, W, b):
        T, B, D = x.shape
        H = h0.shape[1]
        zx = (x.reshape(T * B, D) @ W[:, :D].T).view(T, B, 4 * H)
        if b is not None:
            zx = zx + b
        # contiguous: a matmul with a transposed slice of W runs about a third slower per step
        W_h = W[:, D:].T.contiguous()
        keep = any(ctx.needs_input_grad)  # under no_grad nothing is kept for a backward pass
        h, c, hs, cs, tcs, ifos, gs = h0, c0, [], [c0], [], [], []
        for t in range(T):
            zi, zf, zo, zg = torch.addmm(zx[t], h, W_h).chunk(4, dim=1)  # the notes' gate order
            i, f, o, g = torch.sigmoid(zi), torch.sigmoid(zf), torch.sigmoid(zo), torch.tanh(zg)
            c = f * c + i * g
            tc = torch.tanh(c)
            h = o * tc
            hs.append(h)
            if keep:
                cs.append(c)
                tcs.append(tc)
                ifos.append((i, f, o))
                gs.append(g)
        out = torch.stack(hs)
        if keep:
            # intermediates live on ctx as lists: no copy into stacked tensors; x, W and the
            # output go through save_for_backward, which guards them against in-place changes
            ctx.save_for_backward(x, W, h0, out)
            ctx.cs, ctx.tcs, ctx.ifos, ctx.gs = cs, tcs, ifos, gs
            ctx.has_bias = b is not None
        return out, h, c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_hs, d_hT, d_cT):
        x, W, h0, out = ctx.saved_tensors
        cs, tcs, ifos, gs = ctx.cs, ctx.tcs, ctx.ifos, ctx.gs
        T, B, D = x.shape
        H = h0.shape[1]
        W_h = W[:, D:].contiguous()
        dh = d_hT.clone() if d_hT is not None else h0.new_zeros(B, H)
        dc = d_cT.clone() if d_cT is not None else h0.new_zeros(B, H)
        dz = []
        for t in range(T - 1, -1, -1):  # BPTT: the chain of the section "BPTT" in the Proofs
            if d_hs is not None:
                dh = dh + d_hs[t]
            i, f, o = ifos[t]
            g, tc = gs[t], tcs[t]
            dc = dc + dh * o * (1 - tc * tc)
            dz_t = torch.cat([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f), dh * tc * o * (1 - o),
                              dc * i * (1 - g * g)], dim=1)
            dz.append(dz_t)
            dc = dc * f
            dh = dz_t @ W_h
        dz = torch.stack(dz[::-1]).view(T * B, 4 * H)
        h_prev = torch.cat([h0[None], out[:-1]]).reshape(T * B, H)
        dW = torch.cat([dz.T @ x.reshape(T * B, D), dz.T @ h_prev], dim=1)
        dx = (dz @ W[:, :D]).view(T, B, D)
        return dx, dh, dc, dW, (dz.sum(0) if ctx.has_bias else None)


def lstm_sequence_fast(x, h0, c0, W, b=None):
    """The fast path beside :func:`lstm_sequence`: the same arithmetic, with the four gates of a
    step in one ``addmm`` and the backward pass written out (first derivatives only; use
    ``lstm_sequence`` for double backward). x: (T, B, D), h0, c0: (B, H) -> (hs: (T, B, H), (h_T, c_T)).
    """
    check_tensor(x, "x", ndim=3)
    check_tensor(h0, "h0", ndim=2, shape=(x.shape[1], None))
    check_tensor(c0, "c0", shape=h0.shape)
    _check_weights(W, b, x.shape[2], h0.shape[1])
    check_same(W, "W", x=x, h0=h0, c0=c0)
    hs, h, c = _LSTMSequence.apply(x, h0, c0, W, b)
    return hs, (h, c)


def weights_from_torch(lstm: nn.LSTM):
    """(W, b) in the notes' layout from a one-layer unidirectional torch.nn.LSTM.

    W = [weight_ih | weight_hh] with row blocks reordered (i, f, g, o) -> (i, f, o, g);
    b = bias_ih + bias_hh reordered the same way (None if the module has no bias).
    """
    if not isinstance(lstm, nn.LSTM):
        raise TypeError(f"lstm: expected a torch.nn.LSTM, got {type(lstm).__name__}")
    if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
        raise ValueError("lstm: only one layer, one direction and no projection map to the notes' cell")

    def reorder(t):
        return torch.cat([t.chunk(4, dim=0)[k] for k in _TORCH_TO_NOTES], dim=0)

    W = reorder(torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], dim=1))
    b = reorder(lstm.bias_ih_l0 + lstm.bias_hh_l0) if lstm.bias else None
    return W, b


class LSTM(nn.Module):
    """The notes' LSTM with parameters W: (4H, D + H) and b: (4H,). forward(x: (T, B, D)) -> hs, (h_T, c_T).

    Runs the fast path (:func:`lstm_sequence_fast`)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        from impl._checks import check_int
        check_int(input_size, "input_size", min=1)
        check_int(hidden_size, "hidden_size", min=1)
        k = hidden_size ** -0.5  # torch.nn.LSTM's uniform(-k, k) initialisation
        kw = dict(device=device, dtype=dtype)
        self.W = nn.Parameter(torch.empty(4 * hidden_size, input_size + hidden_size, **kw).uniform_(-k, k))
        self.b = nn.Parameter(torch.empty(4 * hidden_size, **kw).uniform_(-k, k)) if bias else None
        self.hidden_size = hidden_size

    def forward(self, x, state=None):
        check_tensor(x, "x", ndim=3)
        if state is None:
            z = x.new_zeros(x.shape[1], self.hidden_size)
            state = (z, z)
        return lstm_sequence_fast(x, state[0], state[1], self.W, self.b)
