"""Tests of the shared settings in conftest.py."""

import torch


def test_float32_precision_is_ieee_outside_the_tf32_fixture():
    """Guards conftest.py's setting: a library or test that turns TF32 on and leaves it on fails here."""
    if hasattr(torch.backends, "fp32_precision"):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    else:
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_tf32_fixture_turns_tf32_on_for_its_test_only(tf32):
    if hasattr(torch.backends, "fp32_precision"):
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    else:
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
