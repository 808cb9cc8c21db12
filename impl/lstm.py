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

from impl._checks import check_bool, check_same, check_tensor

# torch's blocks (i, f, g, o) taken in the notes' order (i, f, o, g)
_TORCH_TO_NOTES = (0, 1, 3, 2)


def _check_weights(W, b, D, H):
    check_tensor(W, "W", shape=(4 * H, D + H))
    if b is not None:
        check_tensor(b, "b", shape=(4 * H,))
        check_same(W, "W", b=b)


def _check_sequence(x, h0, c0, W, b):
    check_tensor(x, "x", ndim=3)
    if x.shape[0] == 0:  # no step: h_T and c_T would be undefined
        raise ValueError(f"x: expected at least one time step, got shape {tuple(x.shape)}")
    check_tensor(h0, "h0", ndim=2, shape=(x.shape[1], None))
    check_tensor(c0, "c0", shape=h0.shape)
    _check_weights(W, b, x.shape[2], h0.shape[1])
    check_same(W, "W", x=x, h0=h0, c0=c0)


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
    _check_sequence(x, h0, c0, W, b)
    D = x.shape[2]
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


# tanh(z) = 2 sigma(2 z) - 1: with the candidate's pre-activation doubled, one sigmoid over a step's
# whole contiguous block of gates replaces a sigmoid and a tanh on strided slices (a sixth of a
# step's time at B = 32, H = 256); g itself is never formed. The doubling is done once per block of
# steps on the input projection and once per call on W_h's copy.


def _recurrent_weights(W, D, H):
    """W_h^T: (H, 4H), a contiguous copy of W's recurrent half, candidate columns doubled. The copy
    (1 MB at H = 256) is cheaper than reading W's strided half in each step's matmul."""
    W_hT = W[:, D:].T.contiguous()
    W_hT[:, 3 * H:] *= 2
    return W_hT


def _project(x2, W, b, D, H, out=None):
    """The input projection x_t W_x^T + b of a block of steps, candidate block doubled.
    x2: (N, D) -> (N, 4H). W's input half multiplies as a transposed view: no copy of it is made."""
    W_xT = W[:, :D].T
    Z = torch.mm(x2, W_xT, out=out) if b is None else torch.addmm(b, x2, W_xT, out=out)
    Z[:, 3 * H:] *= 2
    return Z


def _step(z, i, f, o, s, h, W_h, c, c_out, tc_out, h_out):
    """One step on the doubled-candidate layout: z: (B, 4H) holds x_t W_x^T (+ b) and becomes the
    activated gates, of which i, f, o, s = sigma(2 z_g) are views. Returns (h_t, c_t), written into
    h_out and c_out (c_out may be c itself: the update is elementwise)."""
    z.addmm_(h, W_h).sigmoid_()
    c = torch.mul(f, c, out=c_out).addcmul_(i, s, value=2).sub_(i)  # c_t = f c_{t-1} + i g, g = 2 s - 1
    return torch.mul(o, torch.tanh(c, out=tc_out), out=h_out), c      # h_t = o tanh(c_t)


# Floats in the inference path's projection buffer: 2 MB of float32, which stays in a core's L2
_CHUNK_FLOATS = 1 << 19


def _lstm_inference(x, h0, c0, W, b):
    """The forward pass when nothing needs a gradient: nothing is kept for a backward pass, so the
    gates of a block of steps and the cell state live in small buffers reused across the sequence.
    Buffers for the whole sequence (56 MB at T = 256, B = 32, D = H = 256) are fresh pages that the
    kernels fault in one by one, a fifth of the forward time; nn.LSTM's inference kernel keeps no
    such buffers either. x: (T, B, D) -> hs: (T, B, H), h_T, c_T."""
    T, B, D = x.shape
    H = h0.shape[1]
    W_h = _recurrent_weights(W, D, H)
    n = max(1, min(T, _CHUNK_FLOATS // max(1, B * 4 * H)))  # steps per projection block
    x2 = x.reshape(T * B, D)
    buf = x.new_empty(n * B, 4 * H)
    out = x.new_empty(T, B, H)
    outs = out.unbind(0)
    h, c, tc = h0, c0.clone(), torch.empty_like(c0)
    for t0 in range(0, T, n):
        m = min(n, T - t0)
        Z = _project(x2[t0 * B:(t0 + m) * B], W, b, D, H, out=buf[:m * B]).view(m, B, 4 * H)
        Zs = Z.unbind(0)
        I, F, O, S = (gate.unbind(0) for gate in Z.view(m, B, 4, H).unbind(2))
        for k in range(m):
            h, c = _step(Zs[k], I[k], F[k], O[k], S[k], h, W_h, c, c, tc, outs[t0 + k])
    return out, out[-1].clone(), c


class _LSTMSequence(torch.autograd.Function):
    """The unrolled LSTM with its backward pass (BPTT) written out by hand.

    Autograd of the unrolled loop records a dozen small ops per step and replays them one by one.
    Here a step of the forward pass is seven ops (:func:`_step`), all writing into buffers for the
    whole sequence (the activated gates overwrite the input projection in place); a step of the
    backward pass is five, because every factor that does not depend on the recurrence is computed
    for all steps at once before the loop. The gradients of W and x for all steps come from one
    matmul each after it. First derivatives only.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, W, b):
        T, B, D = x.shape
        H = h0.shape[1]
        # Z: (T, B, 4H), the input projection of every step (bias included, in the same matmul);
        # step t adds h_{t-1} W_h and then holds the activated gates (i, f, o, s) of that step.
        Z = _project(x.reshape(T * B, D), W, b, D, H).view(T, B, 4 * H)
        W_h = _recurrent_weights(W, D, H)
        C, TC, out = x.new_empty(T, B, H), x.new_empty(T, B, H), x.new_empty(T, B, H)
        # tuples of per-step views made once: a step then indexes Python tuples, not tensors (each
        # tensor index or unbind is a dispatcher call, a tenth of a step's elementwise time)
        Zs, Cs, TCs, outs = Z.unbind(0), C.unbind(0), TC.unbind(0), out.unbind(0)
        I, F, O, S = (gate.unbind(0) for gate in Z.view(T, B, 4, H).unbind(2))
        h, c = h0, c0
        for t in range(T):
            h, c = _step(Zs[t], I[t], F[t], O[t], S[t], h, W_h, c, Cs[t], TCs[t], outs[t])
        # x, W and the output go through save_for_backward, which guards them against in-place
        # changes; the buffers are this function's own
        ctx.save_for_backward(x, W, h0, c0, out)
        ctx.Z, ctx.C, ctx.TC = Z, C, TC
        ctx.has_bias = b is not None
        return out, out[-1].clone(), C[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_hs, d_hT, d_cT):
        x, W, h0, c0, out = ctx.saved_tensors
        Z, C, TC = ctx.Z, ctx.C, ctx.TC
        T, B, D = x.shape
        H = h0.shape[1]
        W_h = W[:, D:].contiguous()
        i, f, o, s = Z.view(T, B, 4, H).unbind(2)
        g = 2 * s - 1  # the candidate, from the forward pass's sigma(2 z_g)
        c_prev = torch.cat([c0[None], C[:-1]])
        # dL/dz_t = M_t * (dc_t, dc_t, dh_t, dc_t) gate by gate, with M_t the derivatives of the
        # activations (sigma' = s (1 - s), tanh' = 1 - tanh^2) times the other factor of each product
        M = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), TC * o * (1 - o), i * (1 - g * g)], dim=2)
        A = o * (1 - TC * TC)  # dc_t / dh_t through h_t = o tanh(c_t)
        dhs = d_hs if d_hs is not None else x.new_zeros(T, B, H)
        dh = dhs[-1] if d_hT is None else dhs[-1] + d_hT
        dc = dh * A[-1] if d_cT is None else torch.addcmul(d_cT, dh, A[-1])
        dZ = torch.empty_like(Z).view(T, B, 4, H)
        # tuples of per-step views, as in the forward pass
        dZs, dZ2, M, f, A, dhs = (dZ.unbind(0), dZ.view(T, B, 4 * H).unbind(0), M.unbind(0), f.unbind(0),
                                  A.unbind(0), dhs.unbind(0))
        for t in range(T - 1, -1, -1):  # BPTT: the chain of the section "BPTT" in the Proofs
            if t < T - 1:
                dh = torch.addmm(dhs[t], dZ2[t + 1], W_h)
                dc = torch.addcmul(dc * f[t + 1], dh, A[t])
            torch.mul(M[t], torch.stack([dc, dc, dh, dc], dim=1), out=dZs[t])
        dz = dZ.view(T * B, 4 * H)
        h_prev = torch.cat([h0[None], out[:-1]]).reshape(T * B, H)
        dW = torch.cat([dz.T @ x.reshape(T * B, D), dz.T @ h_prev], dim=1)
        dx = (dz @ W[:, :D]).view(T, B, D)
        return dx, dZ[0].view(B, 4 * H) @ W_h, dc * f[0], dW, (dz.sum(0) if ctx.has_bias else None)


def lstm_sequence_fast(x, h0, c0, W, b=None):
    """The fast path beside :func:`lstm_sequence`: the same arithmetic, with the four gates of a
    step in one ``addmm`` and the backward pass written out (first derivatives only; use
    ``lstm_sequence`` for double backward). x: (T, B, D), h0, c0: (B, H) -> (hs: (T, B, H), (h_T, c_T)).
    """
    _check_sequence(x, h0, c0, W, b)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, W, b))
    hs, h, c = (_LSTMSequence.apply if needs_grad else _lstm_inference)(x, h0, c0, W, b)
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
        check_bool(bias, "bias")
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
