"""The shared input checks of impl/_checks.py: each names the argument it rejects."""

import pytest
import torch

from impl._checks import check_choice, check_float, check_int, check_probability, check_same, check_tensor


def test_check_int():
    assert check_int(5, "k", min=1, odd=True) == 5
    with pytest.raises(ValueError, match="k: must be odd, got 4"):
        check_int(4, "k", odd=True)
    with pytest.raises(ValueError, match="k: must be >= 1"):
        check_int(0, "k", min=1)
    with pytest.raises(ValueError, match="k: must be <= 3"):
        check_int(4, "k", max=3)
    with pytest.raises(TypeError, match="k: expected an int"):
        check_int(True, "k")


def test_check_float():
    assert check_float(0.5, "p", min=0, max=1) == 0.5
    with pytest.raises(ValueError, match="p: must be > 0"):
        check_float(0.0, "p", min=0, min_open=True)
    with pytest.raises(ValueError, match="p: must be finite"):
        check_float(float("nan"), "p")
    with pytest.raises(TypeError, match="p: expected a real number"):
        check_float("1", "p")


def test_check_tensor_and_same():
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x", ndim=2, shape=(None, 3)) is x
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 4\)"):
        check_tensor(x, "x", shape=(None, 4))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        check_tensor(torch.zeros(2, dtype=torch.int64), "x")
    with pytest.raises(ValueError, match="x: contains NaN"):
        check_tensor(torch.tensor([float("inf")]), "x", finite=True)
    with pytest.raises(TypeError, match="y: dtype"):
        check_same(x, "x", y=x.double())
    with pytest.raises(ValueError, match="mode: expected one of"):
        check_choice("z", "mode", ["a", "b"])


def test_probability_vectors_allow_rounding_and_nothing_more():
    p = torch.rand(7, dtype=torch.float64)
    check_probability((p / p.sum())[None], "p")  # sums to 1 up to rounding
    check_probability(torch.tensor([1 + 2 ** -52], dtype=torch.float64), "p")  # one entry, rounded up
    for bad in ([0.5, 0.6], [1.2, -0.2], [0.5, float("nan")]):
        with pytest.raises(ValueError, match="^p:"):
            check_probability(torch.tensor(bad, dtype=torch.float64), "p")


def test_flags_must_be_bools():
    # a flag given as the string "False", 0-d tensor or None is refused by name, not taken as true
    from impl._checks import check_bool
    assert check_bool(False, "validate") is False
    for bad in ("False", torch.tensor(True), None, 1):
        with pytest.raises(TypeError, match=r"^validate: expected a bool, got "):
            check_bool(bad, "validate")


def test_public_flags_are_checked_by_name():
    # one public function per module that takes a flag, called with otherwise valid arguments
    from impl import attention, diffusion, lstm, nerf, rl
    q = torch.zeros(1, 2, 4, dtype=torch.float64)
    sigma, t = torch.ones(1, 3, dtype=torch.float64), torch.linspace(0, 1, 4, dtype=torch.float64)[None]
    cases = [
        (lambda v: attention.scaled_dot_product_attention(q, q, q, causal=v), "causal"),
        (lambda v: nerf.volume_rendering_weights(sigma, t, validate=v), "validate"),
        (lambda v: nerf.positional_encoding(q, 2, include_input=v), "include_input"),
        (lambda v: rl.frozen_lake(slippery=v), "slippery"),
        (lambda v: lstm.LSTM(2, 3, bias=v), "bias"),
        (lambda v: diffusion.sample(lambda x, t: torch.zeros_like(x), (1, 2), diffusion.linear_beta_schedule(5),
                                    return_trajectory=v), "return_trajectory"),
    ]
    for fn, name in cases:
        fn(True), fn(False)  # both values work
        with pytest.raises(TypeError, match=rf"^{name}: expected a bool, got str$"):
            fn("False")


def test_dtype_device_and_trainable_checks_name_the_argument():
    from impl._checks import check_device, check_dtype, check_trainable
    assert check_dtype(torch.float32) is torch.float32 and check_dtype(torch.int64, floating=False) is torch.int64
    with pytest.raises(TypeError, match=r"^dtype: expected a floating-point torch.dtype, got torch.int64$"):
        check_dtype(torch.int64)
    with pytest.raises(TypeError, match=r"^dtype: expected a torch.dtype, got 'cpu'$"):
        check_dtype("cpu", floating=False)
    assert check_device(None) is None and check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^device: not a torch device: 'gpu0'$"):
        check_device("gpu0")
    lin = torch.nn.Linear(2, 1)
    assert check_trainable(lin, "model") is lin.weight
    with pytest.raises(TypeError, match=r"^model: expected an nn.Module, got int$"):
        check_trainable(3, "model")
    with pytest.raises(ValueError, match=r"^model: has no parameters to train$"):
        check_trainable(torch.nn.Identity(), "model")
