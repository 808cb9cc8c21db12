"""Edge cases and bad inputs of impl/rnn.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/rnn.py``: an input check
that names the wrong argument (every message is matched from its start, and a dtype or device
mismatch must also name the argument it was compared with), drops a dimension or boundary check,
or results on valid input that a changed constant would alter. Expected values come from hand
computation, the definitions, or torch.nn.RNN / autograd.
"""

import math

import pytest
import torch

from impl import rnn

F64 = torch.float64
T, B, D, H, O = 3, 2, 3, 4, 2


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


def _net():
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=F64) * 0.5
    return mk(T, B, D), mk(B, H), mk(H, H), mk(H, D), mk(O, H), mk(T, B, O)


def _entry(name):
    """The three functions that validate through _check_rnn, as f(x, h0, W_hh, W_xh, W_hy, dL_dy)."""
    return {"rnn_forward": lambda x, h0, Whh, Wxh, Why, dy: rnn.rnn_forward(x, h0, Whh, Wxh, Why),
            "bptt_notes": rnn.bptt_notes, "bptt": rnn.bptt}[name]


ENTRIES = ["rnn_forward", "bptt_notes", "bptt"]


# ---- _check_rnn: x, W_hh, W_xh, h0, W_hy -----------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_rnn_inputs_rejected_by_name(entry):
    f = _entry(entry)
    x, h0, Whh, Wxh, Why, dy = _net()
    bad = {
        "x": [x[0], x[None], torch.zeros(()), x[:0]],  # 2-D, 4-D, 0-D, no time step (h_T undefined)
        "W_hh": [torch.zeros(H, dtype=F64), torch.zeros(1, H, H, dtype=F64), torch.zeros((), dtype=F64),
                 torch.zeros(H, H + 1, dtype=F64), torch.zeros(H + 1, H, dtype=F64)],
        "W_xh": [torch.zeros(H, D + 1, dtype=F64), torch.zeros(H + 1, D, dtype=F64), torch.zeros(H * D, dtype=F64)],
        "h0": [torch.zeros(B + 1, H, dtype=F64), torch.zeros(B, H + 1, dtype=F64), torch.zeros(H, dtype=F64),
               torch.zeros(1, B, H, dtype=F64)],
        "W_hy": [torch.zeros(O, H + 1, dtype=F64), torch.zeros(H, dtype=F64), torch.zeros(1, O, H, dtype=F64)],
    }
    order = ["x", "h0", "W_hh", "W_xh", "W_hy"]
    for name, values in bad.items():
        for v in values:
            args = dict(zip(order, (x, h0, Whh, Wxh, Why))) | {name: v}
            _raises(ValueError, rf"^{name}:", f, *(args[n] for n in order), dy)


def _named_args(entry):
    """The entry point, its argument names in order, a valid argument for each, and dL/dy."""
    x, h0, Whh, Wxh, Why, dy = _net()
    order = ["x", "h0", "W_hh", "W_xh", "W_hy"]
    return _entry(entry), order, dict(zip(order, (x, h0, Whh, Wxh, Why))), dy


@pytest.mark.parametrize("entry", ENTRIES)
def test_rnn_dtype_and_type_mismatch_named(entry):
    f, order, base, dy = _named_args(entry)
    x, h0, Whh, Wxh, Why = base.values()
    for name in order[1:]:
        args = base | {name: base[name].float()}
        # the message names the argument and the one it is compared with (x)
        _raises(TypeError, rf"^{name}: dtype torch.float32 differs from x's torch.float64", f,
                *(args[n] for n in order), dy)
        args = base | {name: base[name].tolist()}
        _raises(TypeError, rf"^{name}:", f, *(args[n] for n in order), dy)
    _raises(TypeError, r"^x:", f, x.tolist(), h0, Whh, Wxh, Why, dy)
    _raises(TypeError, r"^x:", f, torch.zeros(T, B, D, dtype=torch.int64), h0, Whh, Wxh, Why, dy)


@pytest.mark.parametrize("entry", ENTRIES)
def test_rnn_device_mismatch_named(entry):
    # meta tensors: a device other than x's, on any machine
    f, order, base, dy = _named_args(entry)
    for name in order[1:]:
        args = base | {name: base[name].to("meta")}
        _raises(ValueError, rf"^{name}: on meta, but x is on cpu", f, *(args[n] for n in order), dy)


@pytest.mark.parametrize("entry", ["bptt_notes", "bptt"])
def test_dL_dy_rejected_by_name(entry):
    f = _entry(entry)
    x, h0, Whh, Wxh, Why, dy = _net()
    for bad in (dy[:-1], dy[:, :1], dy[..., :1], dy[0], dy[None]):
        _raises(ValueError, r"^dL_dy:", f, x, h0, Whh, Wxh, Why, bad)
    _raises(TypeError, r"^dL_dy: dtype torch.float32 differs from x's torch.float64", f, x, h0, Whh, Wxh, Why, dy.float())
    _raises(ValueError, r"^dL_dy: on meta, but x is on cpu", f, x, h0, Whh, Wxh, Why, dy.to("meta"))
    _raises(TypeError, r"^dL_dy:", f, x, h0, Whh, Wxh, Why, dy.tolist())


def test_kappa_rejected_by_name():
    x, h0, Whh, Wxh, Why, dy = _net()
    for bad in (0, -1):
        _raises(ValueError, r"^kappa:", rnn.bptt_notes, x, h0, Whh, Wxh, Why, dy, kappa=bad)
    for bad in (1.5, True):
        _raises(TypeError, r"^kappa:", rnn.bptt_notes, x, h0, Whh, Wxh, Why, dy, kappa=bad)


def test_kappa_one_keeps_only_the_immediate_terms():
    # kappa = 1: each L_t reaches only its own step, dW_hh = sum_t (dL_t/dh_t * f'(a_t))^T h_{t-1},
    # and h_0 only through L_1
    x, h0, Whh, Wxh, Why, dy = _net()
    hs, _ = rnn.rnn_forward(x, h0, Whh, Wxh, Why)
    prev = torch.cat([h0[None], hs[:-1]])
    ea = (dy @ Why) * (1 - hs**2)
    dW_hh, dW_xh, dW_hy, dh0 = rnn.bptt_notes(x, h0, Whh, Wxh, Why, dy, kappa=1)
    torch.testing.assert_close(dW_hh, sum(ea[t].T @ prev[t] for t in range(T)))
    torch.testing.assert_close(dW_xh, sum(ea[t].T @ x[t] for t in range(T)))
    torch.testing.assert_close(dW_hy, sum(dy[t].T @ hs[t] for t in range(T)))
    torch.testing.assert_close(dh0, ea[0] @ Whh)


def test_scalar_rnn_by_hand():
    # T = 2, every size 1: h1 = tanh(w h0 + u x1), h2 = tanh(w h1 + u x2), y_t = v h_t, dL/dy_t = g_t
    w, u, v, h0v, x1, x2, g1, g2 = 0.5, 2.0, 3.0, 0.25, 0.1, -0.3, 1.0, -2.0
    h1 = math.tanh(w * h0v + u * x1)
    h2 = math.tanh(w * h1 + u * x2)
    d2 = g2 * v * (1 - h2**2)  # dL/da_2
    d1 = (g1 * v + d2 * w) * (1 - h1**2)  # dL/da_1
    want = (d2 * h1 + d1 * h0v, d2 * x2 + d1 * x1, g1 * h1 + g2 * h2, d1 * w)
    s = lambda *a: torch.tensor(a, dtype=F64)
    args = (s(x1, x2).reshape(2, 1, 1), s(h0v).reshape(1, 1), s(w).reshape(1, 1), s(u).reshape(1, 1), s(v).reshape(1, 1))
    hs, ys = rnn.rnn_forward(*args)
    torch.testing.assert_close(hs.flatten(), s(h1, h2))
    torch.testing.assert_close(ys.flatten(), s(3 * h1, 3 * h2))
    dy = s(g1, g2).reshape(2, 1, 1)
    for got in (rnn.bptt(*args, dy), rnn.bptt_notes(*args, dy), rnn.bptt_notes(*args, dy, kappa=2)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a.flatten(), s(b))


# ---- step_jacobian ------------------------------------------------------------------------------------


def test_step_jacobian_by_hand_and_bad_input():
    h = torch.tensor([[0.5, 0.0], [0.0, 1.0]], dtype=F64)
    W = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    # diag(1 - h^2) W: rows scaled by 0.75, 1 (first sequence) and 1, 0 (second)
    want = torch.tensor([[[0.75, 1.5], [3.0, 4.0]], [[1.0, 2.0], [0.0, 0.0]]], dtype=F64)
    torch.testing.assert_close(rnn.step_jacobian(h, W), want)
    for bad in (h[0], h[None], torch.zeros((), dtype=F64)):
        _raises(ValueError, r"^h_t:", rnn.step_jacobian, bad, W)
    _raises(TypeError, r"^h_t:", rnn.step_jacobian, h.tolist(), W)
    for bad in (torch.zeros(2, 3, dtype=F64), torch.zeros(3, 2, dtype=F64), torch.zeros(2, dtype=F64)):
        _raises(ValueError, r"^W_hh:", rnn.step_jacobian, h, bad)
    _raises(TypeError, r"^W_hh: dtype torch.float32 differs from h_t's torch.float64", rnn.step_jacobian, h, W.float())
    _raises(ValueError, r"^W_hh: on meta, but h_t is on cpu", rnn.step_jacobian, h, W.to("meta"))


# ---- jacobian_product and jacobian_norms --------------------------------------------------------------


def _hs(Tn=3, Bn=2, Hn=3, seed=1):
    return torch.tanh(torch.randn(Tn, Bn, Hn, generator=torch.Generator().manual_seed(seed), dtype=F64))


def test_jacobian_product_bounds_and_bad_input():
    hs, W = _hs(), torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    for bad in (hs[0], hs[None]):
        _raises(ValueError, r"^hs:", rnn.jacobian_product, bad, W, 1, 0)
    _raises(TypeError, r"^hs:", rnn.jacobian_product, hs.tolist(), W, 1, 0)
    for t in (-1, 4):
        _raises(ValueError, r"^t:", rnn.jacobian_product, hs, W, t, 0)
    _raises(TypeError, r"^t:", rnn.jacobian_product, hs, W, 1.0, 0)
    for k in (-1, 3):
        _raises(ValueError, r"^k:", rnn.jacobian_product, hs, W, 2, k)
    _raises(TypeError, r"^k:", rnn.jacobian_product, hs, W, 2, 0.0)
    for t, k in ((2, 2), (2, 0)):  # W_hh is checked also where no step Jacobian is formed (k = t)
        for bad in (torch.zeros(3, 4, dtype=F64), torch.zeros(4, 4, dtype=F64), torch.zeros(3, dtype=F64)):
            _raises(ValueError, r"^W_hh:", rnn.jacobian_product, hs, bad, t, k)
        _raises(TypeError, r"^W_hh: dtype torch.float32 differs from hs's torch.float64", rnn.jacobian_product, hs, W.float(), t, k)
        _raises(ValueError, r"^W_hh: on meta, but hs is on cpu", rnn.jacobian_product, hs, W.to("meta"), t, k)
    # the extremes t = T, k = 0 and k = t are valid
    full = rnn.jacobian_product(hs, W, 3, 0)
    want = rnn.step_jacobian(hs[2], W) @ rnn.step_jacobian(hs[1], W) @ rnn.step_jacobian(hs[0], W)
    torch.testing.assert_close(full, want)
    eye = rnn.jacobian_product(hs, W, 3, 3)
    assert eye.shape == (2, 3, 3) and eye.dtype == F64
    assert torch.equal(eye, torch.eye(3, dtype=F64).expand(2, 3, 3))


def test_jacobian_norms_bounds_and_bad_input():
    hs, W = _hs(), torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    for bad in (hs[0], hs[None]):
        _raises(ValueError, r"^hs:", rnn.jacobian_norms, bad, W, 1)
    _raises(TypeError, r"^hs:", rnn.jacobian_norms, hs.tolist(), W, 1)
    for t in (-1, 4):
        _raises(ValueError, r"^t:", rnn.jacobian_norms, hs, W, t)
    _raises(TypeError, r"^t:", rnn.jacobian_norms, hs, W, 1.0)
    for t in (0, 2):  # W_hh is checked also at t = 0, where no step Jacobian is formed
        for bad in (torch.zeros(3, 4, dtype=F64), torch.zeros(4, 4, dtype=F64), torch.zeros(3, dtype=F64)):
            _raises(ValueError, r"^W_hh:", rnn.jacobian_norms, hs, bad, t)
        _raises(TypeError, r"^W_hh: dtype torch.float32 differs from hs's torch.float64", rnn.jacobian_norms, hs, W.float(), t)
        _raises(ValueError, r"^W_hh: on meta, but hs is on cpu", rnn.jacobian_norms, hs, W.to("meta"), t)
    # t = 0: only ||dh_0/dh_0|| = ||I|| = 1, one per sequence (B = 2 differs from H = 3)
    n0 = rnn.jacobian_norms(hs, W, 0)
    assert n0.shape == (1, 2) and torch.equal(n0, torch.ones(1, 2, dtype=F64))
    # t = T, one sequence: every k = T..0, against the spectral norms of jacobian_product
    n = rnn.jacobian_norms(hs[:, :1], W, 3)
    assert n.shape == (4, 1)
    for j in range(4):
        torch.testing.assert_close(n[j, 0], torch.linalg.matrix_norm(rnn.jacobian_product(hs[:, :1], W, 3, 3 - j)[0], ord=2))


def test_jacobians_stay_on_the_input_device():
    # meta tensors stand for any device that is not the CPU: the identity must be built on hs's device
    hs, W = _hs().to("meta"), torch.zeros(3, 3, dtype=F64, device="meta")
    for t, k in ((2, 2), (2, 0)):
        J = rnn.jacobian_product(hs, W, t, k)
        assert J.device == hs.device and J.shape == (2, 3, 3)
    for t in (0, 2):
        n = rnn.jacobian_norms(hs, W, t)
        assert n.device == hs.device and n.shape == (t + 1, 2)


# ---- clipping -------------------------------------------------------------------------------------------


def test_clip_notes_by_hand_and_bad_input():
    g = torch.tensor([3.0, 4.0], dtype=F64)  # norm 5
    torch.testing.assert_close(rnn.clip_notes(g, 1.0), torch.tensor([0.6, 0.8], dtype=F64))
    torch.testing.assert_close(rnn.clip_notes(g, 10.0), torch.tensor([6.0, 8.0], dtype=F64))  # enlarged, as written
    torch.testing.assert_close(rnn.clip_notes(g, torch.tensor(2.5)), torch.tensor([1.5, 2.0], dtype=F64))
    for bad in (0.0, -1.0, math.inf, math.nan):
        _raises(ValueError, r"^threshold:", rnn.clip_notes, g, bad)
    for bad in ("1", True, None):
        _raises(TypeError, r"^threshold:", rnn.clip_notes, g, bad)
    for bad in (torch.zeros(3, dtype=F64), torch.tensor([math.nan, 1.0], dtype=F64)):
        _raises(ValueError, r"^grad:", rnn.clip_notes, bad, 1.0)
    for bad in ([1.0], torch.tensor([1, 2])):
        _raises(TypeError, r"^grad:", rnn.clip_notes, bad, 1.0)


def test_clip_gradient_norm_by_hand_and_bad_input():
    a, b = torch.tensor([3.0, 4.0], dtype=F64), torch.tensor([[12.0]], dtype=F64)  # global norm 13
    out = rnn.clip_gradient_norm((a, b), 1.3)
    assert isinstance(out, list) and len(out) == 2
    torch.testing.assert_close(out[0], torch.tensor([0.3, 0.4], dtype=F64))
    torch.testing.assert_close(out[1], torch.tensor([[1.2]], dtype=F64))
    same = rnn.clip_gradient_norm([a, b], 13.0)  # at the threshold: unchanged, new tensors
    assert torch.equal(same[0], a) and torch.equal(same[1], b) and same[0] is not a
    for bad in (0.0, -1.0, math.inf):
        _raises(ValueError, r"^threshold:", rnn.clip_gradient_norm, [a], bad)
    _raises(TypeError, r"^threshold:", rnn.clip_gradient_norm, [a], "1")
    _raises(ValueError, r"^grads: expected at least one tensor", rnn.clip_gradient_norm, [], 1.0)
    _raises(TypeError, r"^grads\[1\]:", rnn.clip_gradient_norm, [a, [1.0]], 1.0)
    _raises(TypeError, r"^grads\[0\]:", rnn.clip_gradient_norm, [[1.0], a], 1.0)
    _raises(TypeError, r"^grads\[1\]:", rnn.clip_gradient_norm, [a, torch.tensor([1, 2])], 1.0)
    _raises(TypeError, r"^grads\[1\]: dtype torch.float32 differs from grads\[0\]'s torch.float64",
            rnn.clip_gradient_norm, [a, b.float()], 1.0)
    _raises(ValueError, r"^grads\[1\]: on meta, but grads\[0\] is on cpu", rnn.clip_gradient_norm, [a, b.to("meta")], 1.0)
