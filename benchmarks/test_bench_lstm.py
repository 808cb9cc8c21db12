"""The notes' LSTM (impl.lstm) against torch.nn.LSTM: sequence 256, batch 32, input and hidden 256,
forward and forward + backward, same weights. Quick mode (CI) runs 32 steps instead of 256: the work
per step is the same, so the kernel/reference ratio is too, and the full length takes minutes on a
loaded 2-core machine."""

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


def test_lstm_forward_torch(measure, setup):
    ref, W, b, x, z = setup

    def fwd():
        with torch.no_grad():
            return ref(x)

    measure(fwd, group="lstm.forward", role="reference", rounds=5)


def test_lstm_forward_notes(measure, setup):
    ref, W, b, x, z = setup

    def fwd():
        with torch.no_grad():
            return L.lstm_sequence(x, z, z, W, b)

    measure(fwd, group="lstm.forward", rounds=5)


def test_lstm_forward_backward_torch(measure, setup):
    ref, W, b, x, z = setup

    def fb():
        ref.zero_grad()
        out, _ = ref(x)
        out.sum().backward()

    measure(fb, group="lstm.forward-backward", role="reference", rounds=5)


def test_lstm_forward_backward_notes(measure, setup):
    ref, W, b, x, z = setup

    def fb():
        W.grad = b.grad = None
        hs, _ = L.lstm_sequence(x, z, z, W, b)
        hs.sum().backward()

    measure(fb, group="lstm.forward-backward", rounds=5)


# The fast path (one addmm per step, BPTT written out) against the same torch.nn.LSTM.
def test_lstm_fast_forward_torch(measure, setup):
    ref, W, b, x, z = setup

    def fwd():
        with torch.no_grad():
            return ref(x)

    measure(fwd, group="lstm.fast-forward", role="reference", rounds=5)


def test_lstm_fast_forward_notes(measure, setup):
    ref, W, b, x, z = setup

    def fwd():
        with torch.no_grad():
            return L.lstm_sequence_fast(x, z, z, W, b)

    measure(fwd, group="lstm.fast-forward", rounds=5)


def test_lstm_fast_forward_backward_torch(measure, setup):
    ref, W, b, x, z = setup

    def fb():
        ref.zero_grad()
        out, _ = ref(x)
        out.sum().backward()

    measure(fb, group="lstm.fast-forward-backward", role="reference", rounds=5)


def test_lstm_fast_forward_backward_notes(measure, setup):
    ref, W, b, x, z = setup

    def fb():
        W.grad = b.grad = None
        hs, _ = L.lstm_sequence_fast(x, z, z, W, b)
        hs.sum().backward()

    measure(fb, group="lstm.fast-forward-backward", rounds=5)
