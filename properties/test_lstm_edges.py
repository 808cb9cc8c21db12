"""Edge cases and bad inputs of impl/lstm.py, found by mutation testing.

Each test here kills a mutant that survived ``python -m spec.mutation impl/lstm.py --sample 60
--seed 3``: the smallest valid sizes of the nn.Module (one input, one hidden unit) refused by a
raised bound, an error message that reports another type than the one it was given, and dtype or
device mismatches that must name both the argument and W, the tensor it is compared with.
Expected values come from torch.nn.LSTM with its weights mapped to the notes' layout.
"""

import pytest
import torch

from impl import lstm as L

F64 = torch.float64


def _torch_lstm(D, H, seed):
    """A float64 torch.nn.LSTM(D, H) with weights drawn from a fixed generator (not the global seed)."""
    ref = torch.nn.LSTM(D, H).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    return ref


def test_module_with_one_input_and_one_hidden_unit_matches_torch():
    # D = H = 1 is a valid LSTM (a scalar cell): the size checks' lower bound is 1, not 2
    ref = _torch_lstm(1, 1, seed=0)
    m = L.LSTM(1, 1, dtype=F64)
    W, b = L.weights_from_torch(ref)
    x = torch.randn(4, 2, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        m.W.copy_(W)
        m.b.copy_(b)
        out, (_, c_ref) = ref(x)
        hs, (h, c) = m(x)
    assert m.W.shape == (4, 2) and m.b.shape == (4,)
    torch.testing.assert_close(hs, out)
    torch.testing.assert_close(c, c_ref[0])


def test_weights_from_torch_reports_the_type_it_was_given():
    # the message names the offending object's own type, so a GRU passed by mistake reads as one
    with pytest.raises(TypeError, match=r"^lstm: expected a torch\.nn\.LSTM, got GRU$"):
        L.weights_from_torch(torch.nn.GRU(3, 4))


def _valid_args(fn):
    """Valid float64 CPU arguments of fn by name: a cell step (B, D = 2, 3) or a 5-step sequence, H = 4."""
    names = ("x_t", "h_prev", "c_prev") if fn is L.lstm_cell else ("x", "h0", "c0")
    x = torch.zeros((2, 3) if fn is L.lstm_cell else (5, 2, 3), dtype=F64)
    return dict(zip(names + ("W", "b"), (x, torch.zeros(2, 4, dtype=F64), torch.zeros(2, 4, dtype=F64),
                                         torch.zeros(16, 7, dtype=F64), torch.zeros(16, dtype=F64))))


@pytest.mark.parametrize("fn", [L.lstm_cell, L.lstm_sequence, L.lstm_sequence_fast])
def test_dtype_and_device_mismatch_name_W_as_the_reference(fn):
    # meta tensors: a device other than W's on any machine
    base = _valid_args(fn)
    for name in [n for n in base if n != "W"]:
        with pytest.raises(TypeError, match=rf"^{name}: dtype torch.float32 differs from W's torch.float64$"):
            fn(**base | {name: base[name].float()})
        with pytest.raises(ValueError, match=rf"^{name}: on meta, but W is on cpu$"):
            fn(**base | {name: base[name].to("meta")})
