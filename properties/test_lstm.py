"""LSTM: the notes' equations against torch.nn.LSTM (gate order and biases mapped), the gates'
roles, and the constant error flow through the cell state."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import lstm as L
from spec.testing import generator, seeds, tol


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
    for p in (fresh.W, fresh.b):  # >= 4H = 64 uniform draws: max |p| > 0.9 k with probability 1 - 0.9^64 (fixed seed)
        assert p.abs().max().item() <= k and p.abs().max().item() > 0.9 * k


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


@pytest.mark.claim("lstm.constant-error-flow")
def test_cell_path_has_no_weight_factor():
    g = generator(5)
    B, D, H = 2, 3, 4
    x, h = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64)
    W = torch.randn(4 * H, D + H, generator=g, dtype=torch.float64)
    b = torch.randn(4 * H, generator=g, dtype=torch.float64)
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
    J = torch.autograd.functional.jacobian(lambda cc: L.lstm_sequence(x, z, cc, W, b)[1][1], c0)[0, :, 0, :]
    err = (J - torch.eye(H, dtype=torch.float64)).abs().max().item()
    assert err < 1e-12  # 100 steps of 1 - f <= 1e-15
    # a vanilla tanh RNN with the same weight scale: its error signal is multiplied by W^t and vanishes
    from impl import rnn
    Wh = W[:H, D:] / torch.linalg.matrix_norm(W[:H, D:], ord=2) * 0.9
    hs, _ = rnn.rnn_forward(x, c0, Wh, W[:H, :D], torch.zeros(1, H, dtype=torch.float64))
    vanilla = rnn.jacobian_norms(hs, Wh, T)[-1, 0].item()
    assert vanilla < 0.9**T
    record_property("evidence", f"||dc_100/dc_0 - I|| = {err:.1e} (forget gate 1); vanilla RNN ||dh_100/dh_0|| = {vanilla:.1e}")


def test_bad_input():
    W = torch.zeros(16, 7)
    with pytest.raises(ValueError, match="W"):
        L.lstm_cell(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(16, 6))
    with pytest.raises(ValueError, match="c_prev"):
        L.lstm_cell(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 5), W)
    with pytest.raises(ValueError, match="b"):
        L.lstm_cell(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4), W, torch.zeros(15))
    with pytest.raises(ValueError, match="h_prev"):
        L.lstm_cell(torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(3, 4), W)
    with pytest.raises(ValueError, match="x"):
        L.lstm_sequence(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4), W)
    with pytest.raises(ValueError, match="c0"):
        L.lstm_sequence(torch.zeros(5, 2, 3), torch.zeros(2, 4), torch.zeros(2, 5), W)
    with pytest.raises(ValueError, match="h0"):
        L.lstm_sequence(torch.zeros(5, 2, 3), torch.zeros(3, 4), torch.zeros(3, 4), W)
    with pytest.raises(TypeError, match="lstm"):
        L.weights_from_torch(torch.nn.GRU(3, 4))
    with pytest.raises(ValueError, match="lstm"):
        L.weights_from_torch(torch.nn.LSTM(3, 4, num_layers=2))
    with pytest.raises(ValueError, match="hidden_size"):
        L.LSTM(3, 0)
    with pytest.raises(TypeError, match="x_t"):
        L.lstm_cell(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 4), torch.zeros(2, 4), W)
