"""LSTM: the notes' equations against torch.nn.LSTM (gate order and biases mapped), the gates'
roles, and the constant error flow through the cell state."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import lstm as L
from spec.testing import count_kernels, generator, seeds, tol


def _torch_lstm(D, H, seed, bias=True, dtype=torch.float64, device="cpu"):
    torch.manual_seed(seed)
    return torch.nn.LSTM(D, H, bias=bias).to(device, dtype)


@pytest.mark.claim("lstm.equations")
@pytest.mark.parametrize("bias", [True, False])
def test_sequence_matches_torch_lstm(device, dtype, bias):
    T, B, D, H = 15, 3, 4, 6
    ref = _torch_lstm(D, H, 0, bias, dtype, device)
    g = generator(1)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64).to(device, dtype)
    h0, c0 = (torch.randn(B, H, generator=g, dtype=torch.float64).to(device, dtype) for _ in range(2))
    with torch.no_grad():
        out, (hT, cT) = ref(x, (h0[None], c0[None]))
        W, b = L.weights_from_torch(ref)
        hs, (h, c) = L.lstm_sequence(x, h0, c0, W, b)
    # float32: 15 steps of gated (contracting) updates; differences are a few ulps: tol(float32)
    torch.testing.assert_close(hs, out, **tol(dtype))
    torch.testing.assert_close(c, cT[0], **tol(dtype))
    # the cell, step by step, written with the notes' concatenation W (x_t; h_{t-1})
    h, c = h0, c0
    for t in range(T):
        h, c = L.lstm_cell(x[t], h, c, W, b)
        torch.testing.assert_close(h, out[t], **tol(dtype))


@pytest.mark.claim("lstm.equations")
def test_gate_order_matters():
    # the mapping is needed: feeding torch's rows (i, f, g, o) as (i, f, o, g) gives another network
    ref = _torch_lstm(3, 4, 2)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    z = torch.zeros(2, 4, dtype=torch.float64)
    with torch.no_grad():
        out, _ = ref(x)
        W_unmapped = torch.cat([ref.weight_ih_l0, ref.weight_hh_l0], 1)
        hs, _ = L.lstm_sequence(x, z, z, W_unmapped, ref.bias_ih_l0 + ref.bias_hh_l0)
    assert (hs - out).abs().max() > 1e-2


@pytest.mark.claim("lstm.equations")
def test_gradients_match_torch_lstm():
    T, B, D, H = 8, 2, 3, 5
    ref = _torch_lstm(D, H, 3)
    x = torch.randn(T, B, D, dtype=torch.float64)
    out, _ = ref(x)
    out.sum().backward()
    W, b = (p.detach().clone().requires_grad_(True) for p in L.weights_from_torch(ref))
    z = torch.zeros(B, H, dtype=torch.float64)
    hs, _ = L.lstm_sequence(x, z, z, W, b)
    hs.sum().backward()
    W_torch_grad, _ = L.weights_from_torch(_with_grads(ref))
    torch.testing.assert_close(W.grad, W_torch_grad)


def _sequence_inputs(seed, T, bias):
    """The generator after the draws, and float64 (x: (T, 2, 3), h0, c0: (2, 4), W: (16, 7), b: (16,) or None)."""
    g = generator(seed)
    B, D, H = 2, 3, 4
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    h0, c0 = (torch.randn(B, H, generator=g, dtype=torch.float64) for _ in range(2))
    W = torch.randn(4 * H, D + H, generator=g, dtype=torch.float64)
    b = torch.randn(4 * H, generator=g, dtype=torch.float64) if bias else None
    return g, (x, h0, c0, W, b)


@pytest.mark.claim("lstm.equations")
@settings(max_examples=10)
@given(seed=seeds(), T=st.integers(1, 9), bias=st.booleans())
def test_fast_path_equals_the_plain_unrolled_lstm(seed, T, bias):
    # values and all five gradients, against autograd through the plain loop; the final state's
    # gradients too (a mutant that drops d_hT or d_cT in the hand-written backward fails here)
    g, (x, h0, c0, W, b) = _sequence_inputs(seed, T, bias)
    B, H = h0.shape
    w_hs, w_h, w_c = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((T, B, H), (B, H), (B, H)))
    grads = []
    for fn in (L.lstm_sequence, L.lstm_sequence_fast):
        leaves = [t.clone().requires_grad_(True) for t in (x, h0, c0, W) + ((b,) if bias else ())]
        hs, (h, c) = fn(*leaves[:4], leaves[4] if bias else None)
        ((hs * w_hs).sum() + (h * w_h).sum() + (c * w_c).sum()).backward()
        grads.append([hs.detach(), h.detach(), c.detach()] + [t.grad for t in leaves])
    for ours, ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, ref, **tol(torch.float64))


@pytest.mark.claim("lstm.equations")
@settings(max_examples=10)
@given(seed=seeds(), T=st.integers(1, 11), steps_per_block=st.integers(1, 4), bias=st.booleans())
def test_fast_path_without_gradients_equals_the_plain_unrolled_lstm(seed, T, steps_per_block, bias):
    # Without gradients the fast path projects the inputs block by block into one reused buffer and
    # keeps the cell state in one buffer updated in place. The block size (a 2 MB budget, all of T
    # at these sizes) is shrunk here so that blocks end inside the sequence and the last one is
    # partial: a block that starts at the wrong step, a buffer left stale or the caller's c0 changed
    # in place all fail here.
    _, (x, h0, c0, W, b) = _sequence_inputs(seed, T, bias)
    B, H = h0.shape
    inputs = [t.clone() for t in (x, h0, c0, W)]
    expected = L.lstm_sequence(x, h0, c0, W, b)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(L, "_CHUNK_FLOATS", steps_per_block * B * 4 * H)
        with torch.no_grad():
            hs, (h, c) = L.lstm_sequence_fast(x, h0, c0, W, b)
    for ours, ref in zip((hs, h, c), (expected[0],) + expected[1]):
        torch.testing.assert_close(ours, ref, **tol(torch.float64))
    for before, after in zip(inputs, (x, h0, c0, W)):
        assert torch.equal(before, after)
    hs[-1].zero_()  # the final state is the caller's own, not a view of hs
    torch.testing.assert_close(h, expected[1][0], **tol(torch.float64))


@pytest.mark.claim("lstm.equations")
def test_gradcheck_fast_path():
    g = generator(5)
    x = torch.randn(4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    W = torch.randn(16, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(16, generator=g, dtype=torch.float64, requires_grad=True)

    def f(*a):
        hs, (h, c) = L.lstm_sequence_fast(*a)
        return hs, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, W, b))


@pytest.mark.claim("lstm.equations")
def test_fast_path_on_device(device):
    ref = _torch_lstm(5, 8, 6, True, torch.float32, device)
    x = torch.randn(12, 3, 5, generator=generator(6)).to(device)
    z = torch.zeros(3, 8, device=device)
    W, b = (p.detach() for p in L.weights_from_torch(ref))
    with torch.no_grad():
        out, (hT, cT) = ref(x)
        hs, (h, c) = L.lstm_sequence_fast(x, z, z, W, b)
    # float32, 12 contracting gated steps of 13-term sums: a few ulps per step, tol(float32)
    torch.testing.assert_close(hs, out, **tol(torch.float32))
    torch.testing.assert_close(c, cT[0], **tol(torch.float32))


def _kernels(T, B, D, H, backward):
    x = torch.randn(T, B, D, generator=generator(8))
    z = torch.zeros(B, H)
    W = torch.randn(4 * H, D + H, generator=generator(9), requires_grad=backward)
    b = torch.zeros(4 * H, requires_grad=backward)
    with count_kernels() as k, torch.set_grad_enabled(backward):
        hs, _ = L.lstm_sequence_fast(x, z, z, W, b)
        if backward:
            hs.sum().backward()
    return k.n


@pytest.mark.parametrize("backward", [False, True])
def test_fast_path_kernels_per_step(backward):
    # The fast path's speed is its kernel count per step (elementwise kernels on B x H values are
    # dispatch-bound): the forward step is addmm_, sigmoid_, mul, addcmul_, sub_, tanh, mul (7), the
    # backward step addmm, mul, addcmul, stack, mul (5). A count, unlike a time, is exact on a noisy
    # machine; a change that adds a view or an op inside the loop shows up here.
    per_step = (_kernels(12, 2, 3, 4, backward) - _kernels(4, 2, 3, 4, backward)) / 8
    assert per_step <= (12 if backward else 7), per_step
    # and the count does not grow with the batch or the width (one kernel per step, whatever its size)
    assert _kernels(12, 5, 6, 7, backward) == _kernels(12, 2, 3, 4, backward)


def _with_grads(m):
    # a module whose weights are the reference's gradients, so weights_from_torch maps them too
    c = torch.nn.LSTM(m.input_size, m.hidden_size).double()
    with torch.no_grad():
        for name, p in m.named_parameters():
            getattr(c, name).copy_(p.grad)
    return c


@pytest.mark.claim("lstm.equations")
def test_gradcheck_cell():
    g = generator(4)
    x, h, c = (torch.randn(2, k, generator=g, dtype=torch.float64, requires_grad=True) for k in (3, 4, 4))
    W = torch.randn(16, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(16, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: L.lstm_cell(*a), (x, h, c, W, b))


@pytest.mark.claim("lstm.equations")
def test_module_and_extremes(device):
    m = L.LSTM(3, 8, device=device)
    x = torch.randn(6, 2, 3, device=device) * 1e4  # huge inputs saturate the gates, never NaN
    hs, (h, c) = m(x)
    assert hs.shape == (6, 2, 8) and torch.isfinite(hs).all() and torch.isfinite(c).all()
    assert (hs.abs() <= 1).all()  # |h| = |o tanh(c)| <= 1


@pytest.mark.claim("lstm.equations")
def test_module_matches_torch_lstm():
    # the nn.Module with torch.nn.LSTM's weights (mapped) gives torch's outputs, zero initial state;
    # and its own initialisation is torch's uniform(-1/sqrt(H), 1/sqrt(H))
    D, H = 3, 16
    ref = _torch_lstm(D, H, 9)
    m = L.LSTM(D, H, dtype=torch.float64)
    W, b = L.weights_from_torch(ref)
    with torch.no_grad():
        m.W.copy_(W)
        m.b.copy_(b)
        x = torch.randn(7, 2, D, generator=generator(10), dtype=torch.float64)
        out, (hT, cT) = ref(x)
        hs, (h, c) = m(x)
    torch.testing.assert_close(hs, out)
    torch.testing.assert_close(c, cT[0])
    k = H ** -0.5
    torch.manual_seed(11)
    fresh = L.LSTM(D, H)
    for p in (fresh.W, fresh.b):  # >= 4H = 64 uniform draws: both ends within 0.1 k with probability >= 1 - 2 (0.95)^64 (fixed seed)
        assert p.abs().max().item() <= k and p.max().item() > 0.9 * k and p.min().item() < -0.9 * k


@pytest.mark.claim("lstm.gate-roles")
@settings(max_examples=10)
@given(seed=seeds())
def test_gate_roles(seed):
    g = generator(seed)
    B, D, H = 3, 2, 4
    x, h, c = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64) * 3
    W = torch.randn(4 * H, D + H, generator=g, dtype=torch.float64) * 0.1
    bias = torch.zeros(4 * H, dtype=torch.float64)

    def run(bi, bf, bo):
        b = bias.clone()
        b[:H], b[H:2 * H], b[2 * H:3 * H] = bi, bf, bo
        return L.lstm_cell(x, h, c, W, b), L.gates(x, h, W, b)

    # forget gate 0, input 1: the state is reset and replaced by the candidate g
    (h1, c1), (_, _, _, gg) = run(40.0, -40.0, 0.0)
    torch.testing.assert_close(c1, gg)
    # input gate 0, forget 1: nothing is written, the state is kept
    (h2, c2), _ = run(-40.0, 40.0, 0.0)
    torch.testing.assert_close(c2, c)
    # output gate 0: nothing is read out; output gate 1: h = tanh(c)
    (h3, c3), _ = run(0.0, 0.0, -40.0)
    assert h3.abs().max() < 1e-16
    (h4, c4), _ = run(0.0, 0.0, 40.0)
    torch.testing.assert_close(h4, torch.tanh(c4))
    # the candidate lies in (-1, 1), the three gates in (0, 1)
    i, f, o, gg = L.gates(x * 100, h, W, bias)
    assert (gg.abs() <= 1).all() and all(((t >= 0) & (t <= 1)).all() for t in (i, f, o))


def _cell_inputs(seed, B, D, H):
    """A generator and float64 x_t: (B, D), h_{t-1}: (B, H), W: (4H, D + H), b: (4H,) drawn from it in
    that order (the generator goes on to draw what else a test needs)."""
    g = generator(seed)
    x, h = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64)
    W = torch.randn(4 * H, D + H, generator=g, dtype=torch.float64)
    b = torch.randn(4 * H, generator=g, dtype=torch.float64)
    return g, x, h, W, b


@pytest.mark.claim("lstm.gate-roles")
def test_gates_are_sigmoids_and_the_candidate_a_tanh_of_their_rows():
    # against numpy: i, f, o = sigma(rows 0..3H of W (x; h) + b), g = tanh(rows 3H..4H); the candidate
    # takes both signs (a sigmoid candidate, in (0, 1), could only add to the state)
    import numpy as np
    from scipy.special import expit

    B, D, H = 4, 3, 5
    g, x, h, W, b = _cell_inputs(8, B, D, H)
    z = np.concatenate([x.numpy(), h.numpy()], 1) @ W.numpy().T + b.numpy()
    want = [expit(z[:, :H]), expit(z[:, H:2 * H]), expit(z[:, 2 * H:3 * H]), np.tanh(z[:, 3 * H:])]
    for got, ref in zip(L.gates(x, h, W, b), want):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-15)  # float64, one 8-term sum each
    cand = L.gates(x, h, W, b)[3]
    assert cand.min() < -0.5 and cand.max() > 0.5


@pytest.mark.claim("lstm.constant-error-flow")
def test_cell_path_has_no_weight_factor():
    B, D, H = 2, 3, 4
    g, x, h, W, b = _cell_inputs(5, B, D, H)
    c = torch.randn(B, H, generator=g, dtype=torch.float64)
    # d c_t / d c_{t-1} with h_{t-1} held: diag(f_t), for each batch element
    J = torch.autograd.functional.jacobian(lambda cc: L.lstm_cell(x, h, cc, W, b)[1], c)
    _, f, _, _ = L.gates(x, h, W, b)
    for k in range(B):
        torch.testing.assert_close(J[k, :, k, :], torch.diag(f[k]))


@pytest.mark.claim("lstm.constant-error-flow")
def test_error_flows_unchanged_over_many_steps(record_property):
    g = generator(6)
    T, B, D, H = 100, 1, 3, 4
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    W = torch.randn(4 * H, D + H, generator=g, dtype=torch.float64)
    b = torch.zeros(4 * H, dtype=torch.float64)
    b[:H], b[H:2 * H] = -40.0, 40.0  # input gate ~0, forget gate 1 - O(e^-35) (|W (x; h)| < 5 here)
    z = torch.zeros(B, H, dtype=torch.float64)
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    # the plain loop, and the fast path whose BPTT is written by hand
    for seq in (L.lstm_sequence, L.lstm_sequence_fast):
        J = torch.autograd.functional.jacobian(lambda cc: seq(x, z, cc, W, b)[1][1], c0)[0, :, 0, :]
        err = (J - torch.eye(H, dtype=torch.float64)).abs().max().item()
        assert err < 1e-12, seq.__name__  # 100 steps of 1 - f <= 1e-15
    b[H:2 * H] = 0.0  # forget gates in (0, 1): the Jacobian is diag(prod_t f_t), far below I (a path without f keeps I)
    for seq in (L.lstm_sequence, L.lstm_sequence_fast):
        J = torch.autograd.functional.jacobian(lambda cc: seq(x, z, cc, W, b)[1][1], c0)[0, :, 0, :]
        assert J.abs().max() < 1e-10, seq.__name__
    b[H:2 * H] = 40.0
    # a vanilla tanh RNN with the same weight scale: its error signal is multiplied by W^t and vanishes
    from impl import rnn
    Wh = W[:H, D:] / torch.linalg.matrix_norm(W[:H, D:], ord=2) * 0.9
    hs, _ = rnn.rnn_forward(x, c0, Wh, W[:H, :D], torch.zeros(1, H, dtype=torch.float64))
    vanilla = rnn.jacobian_norms(hs, Wh, T)[-1, 0].item()
    assert vanilla < 0.9**T
    record_property("evidence", f"||dc_100/dc_0 - I|| = {err:.1e} (forget gate 1); vanilla RNN ||dh_100/dh_0|| = {vanilla:.1e}")


def _rejects(exc, name, fn, *args, **kwargs):
    # the message must start with the argument's own name (a mutant that names another argument,
    # or none, fails); messages are "name: what is wrong"
    with pytest.raises(exc, match=rf"^{name}:"):
        fn(*args, **kwargs)


@pytest.mark.parametrize("seq", [L.lstm_sequence, L.lstm_sequence_fast])
def test_bad_input_to_the_sequence(seq):
    x, h, c, W = torch.zeros(5, 2, 3), torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(16, 7)
    _rejects(ValueError, "x", seq, torch.zeros(2, 3), h, c, W)
    _rejects(ValueError, "h0", seq, x, torch.zeros(3, 4), torch.zeros(3, 4), W)
    _rejects(ValueError, "h0", seq, x, torch.zeros(2, 4, 1), c, W)
    _rejects(ValueError, "c0", seq, x, h, torch.zeros(2, 5), W)
    _rejects(ValueError, "W", seq, x, h, c, torch.zeros(16, 6))
    _rejects(ValueError, "b", seq, x, h, c, W, torch.zeros(15))
    _rejects(TypeError, "b", seq, x, h, c, W, torch.zeros(16, dtype=torch.float64))
    for name, bad in (("x", x.double()), ("h0", h.double()), ("c0", c.double())):
        args = dict(x=x, h0=h, c0=c) | {name: bad}
        _rejects(TypeError, name, seq, args["x"], args["h0"], args["c0"], W)


def test_bad_input():
    W = torch.zeros(16, 7)
    x, h, c = torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4)
    _rejects(ValueError, "W", L.lstm_cell, x, h, c, torch.zeros(16, 6))
    _rejects(ValueError, "c_prev", L.lstm_cell, x, h, torch.zeros(2, 5), W)
    _rejects(ValueError, "b", L.lstm_cell, x, h, c, W, torch.zeros(15))
    _rejects(TypeError, "b", L.lstm_cell, x, h, c, W, torch.zeros(16, dtype=torch.float64))
    _rejects(ValueError, "h_prev", L.lstm_cell, x, torch.zeros(3, 4), torch.zeros(3, 4), W)
    _rejects(ValueError, "h_prev", L.lstm_cell, x, torch.zeros(2, 4, 1), c, W)
    _rejects(ValueError, "x_t", L.lstm_cell, torch.zeros(2, 3, 1), h, c, W)
    _rejects(TypeError, "x_t", L.lstm_cell, x.double(), h, c, W)
    _rejects(TypeError, "h_prev", L.lstm_cell, x, h.double(), c, W)
    _rejects(TypeError, "c_prev", L.lstm_cell, x, h, c.double(), W)
    _rejects(TypeError, "lstm", L.weights_from_torch, torch.nn.GRU(3, 4))
    _rejects(ValueError, "lstm", L.weights_from_torch, torch.nn.LSTM(3, 4, num_layers=2))
    _rejects(ValueError, "lstm", L.weights_from_torch, torch.nn.LSTM(3, 4, bidirectional=True))
    _rejects(ValueError, "lstm", L.weights_from_torch, torch.nn.LSTM(3, 4, proj_size=2))
    _rejects(ValueError, "hidden_size", L.LSTM, 3, 0)
    _rejects(ValueError, "input_size", L.LSTM, 0, 3)
    _rejects(ValueError, "x", L.LSTM(3, 4), torch.zeros(2, 3))


@pytest.mark.claim("lstm.equations")
def test_module_initial_state_bias_flag_and_state_dict():
    m = L.LSTM(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, generator=generator(12), dtype=torch.float64)
    h0, c0 = (torch.randn(2, 4, generator=generator(13 + i), dtype=torch.float64) for i in range(2))
    with torch.no_grad():
        hs, (h, c) = m(x, (h0, c0))
        ref, (_, c_ref) = L.lstm_sequence(x, h0, c0, m.W, m.b)
    torch.testing.assert_close(hs, ref)  # the given (h0, c0), each in its place
    torch.testing.assert_close(c, c_ref)
    assert L.LSTM(3, 4, bias=False).b is None
    clone = L.LSTM(3, 4, dtype=torch.float64)
    clone.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(x, (h0, c0))[0], hs)


@pytest.mark.parametrize("seq", [L.lstm_sequence, L.lstm_sequence_fast])
@pytest.mark.parametrize("grad", [False, True])
def test_empty_sequence_is_refused_and_empty_batch_is_empty(seq, grad):
    # no time step leaves h_T and c_T undefined: a ValueError naming x, not an IndexError from the
    # loop; an empty batch is a valid input with an empty output (the fast path sizes its projection
    # blocks by B: B = 0 must not divide by zero)
    W = torch.randn(16, 7, dtype=torch.float64, requires_grad=grad)
    z = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="x: expected at least one time step"):
        seq(torch.zeros(0, 2, 3, dtype=torch.float64), z, z, W)
    e = torch.zeros(0, 4, dtype=torch.float64)
    hs, (h, c) = seq(torch.zeros(3, 0, 3, dtype=torch.float64), e, e, W)
    assert hs.shape == (3, 0, 4) and h.shape == c.shape == (0, 4)
