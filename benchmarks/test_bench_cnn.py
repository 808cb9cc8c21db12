"""CNN kernels against torch's fused ones on a (8, 64, 64, 64) input with 3x3 kernels."""

import pytest
import torch
import torch.nn.functional as F

from impl import cnn


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 64, 64, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g)
    return x, w


def test_conv2d_torch(measure, data):
    measure(F.conv2d, *data, kwargs=dict(padding=1), group="cnn.conv2d", role="reference")


def test_conv2d_unfold(measure, data):
    measure(cnn.correlate2d, *data, kwargs=dict(padding=1), group="cnn.conv2d")


def test_conv_transpose2d_torch(measure, data):
    measure(F.conv_transpose2d, *data, kwargs=dict(padding=1), group="cnn.conv-transpose2d", role="reference")


def test_conv_transpose2d_fold(measure, data):
    measure(cnn.transposed_conv2d, *data, kwargs=dict(padding=1), group="cnn.conv-transpose2d")


# The fast paths beside the plain ones, against the same fused kernels.
def test_conv2d_torch_beside_fast(measure, data):
    measure(F.conv2d, *data, kwargs=dict(padding=1), group="cnn.conv2d-fast", role="reference")


def test_conv2d_shifted_window(measure, data):
    measure(cnn.correlate2d_fast, *data, kwargs=dict(padding=1), group="cnn.conv2d-fast")


def test_conv_transpose2d_torch_beside_fast(measure, data):
    measure(F.conv_transpose2d, *data, kwargs=dict(padding=1), group="cnn.conv-transpose2d-fast", role="reference")


def test_conv_transpose2d_as_correlation(measure, data):
    measure(cnn.transposed_conv2d_fast, *data, kwargs=dict(padding=1), group="cnn.conv-transpose2d-fast")
