"""The notes' LSTM (impl.lstm) against torch.nn.LSTM: sequence 256, batch 32, input and hidden 256,
forward and forward + backward, same weights. Quick mode (CI) runs 32 steps instead of 256: the work
per step is the same, but the per-call costs (the copy of W_h, the first touch of fresh buffers) are
spread over 8 times fewer steps, so the fast path's forward ratio reads about 0.1 higher there
(1.5 - 1.6 against 1.3 - 1.5 at full length); the full length takes minutes on a loaded 2-core machine."""

import os

import pytest
import torch

from impl import lstm as L

T, B, D, H = 256, 32, 256, 256


@pytest.fixture(scope="module")
def setup(request):
    # the quick fixture is function-scoped; a module fixture reads the same option itself
    quick = request.config.getoption("--quick") or os.environ.get("MP_BENCH_QUICK") == "1"
    torch.manual_seed(0)
    ref = torch.nn.LSTM(D, H)
    W, b = (p.detach().clone().requires_grad_(True) for p in L.weights_from_torch(ref))
    x = torch.randn(32 if quick else T, B, D)
    z = torch.zeros(B, H)
    return ref, W, b, x, z


def _forward(measure, setup, group, seq=None):
    """Time the forward pass of torch.nn.LSTM (seq None, the group's reference) or of ``seq``."""
    ref, W, b, x, z = setup

    def fwd():
        with torch.no_grad():
            return ref(x) if seq is None else seq(x, z, z, W, b)

    measure(fwd, group=group, role="reference" if seq is None else "kernel", rounds=5)


def _forward_backward(measure, setup, group, seq=None):
    """Time forward + backward of sum(h_1..h_T) for torch.nn.LSTM (seq None) or ``seq``."""
    ref, W, b, x, z = setup

    def fb():
        if seq is None:
            ref.zero_grad()
            out, _ = ref(x)
        else:
            W.grad = b.grad = None
            out, _ = seq(x, z, z, W, b)
        out.sum().backward()

    measure(fb, group=group, role="reference" if seq is None else "kernel", rounds=5)


def test_lstm_forward_torch(measure, setup):
    _forward(measure, setup, "lstm.forward")


def test_lstm_forward_notes(measure, setup):
    _forward(measure, setup, "lstm.forward", L.lstm_sequence)


def test_lstm_forward_backward_torch(measure, setup):
    _forward_backward(measure, setup, "lstm.forward-backward")


def test_lstm_forward_backward_notes(measure, setup):
    _forward_backward(measure, setup, "lstm.forward-backward", L.lstm_sequence)


# The fast path (one addmm per step, BPTT written out) against the same torch.nn.LSTM.
def test_lstm_fast_forward_torch(measure, setup):
    _forward(measure, setup, "lstm.fast-forward")


def test_lstm_fast_forward_notes(measure, setup):
    _forward(measure, setup, "lstm.fast-forward", L.lstm_sequence_fast)


def test_lstm_fast_forward_backward_torch(measure, setup):
    _forward_backward(measure, setup, "lstm.fast-forward-backward")


def test_lstm_fast_forward_backward_notes(measure, setup):
    _forward_backward(measure, setup, "lstm.fast-forward-backward", L.lstm_sequence_fast)
