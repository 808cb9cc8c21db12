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


def _run(benchmark, quick, fn, *args, group, role, **kw):
    benchmark.group = group
    benchmark.extra_info["role"] = role
    if quick:
        benchmark.pedantic(fn, args=args, kwargs=kw, rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn, *args, **kw)


def test_conv2d_torch(benchmark, quick, data):
    _run(benchmark, quick, F.conv2d, *data, padding=1, group="cnn.conv2d", role="reference")


def test_conv2d_unfold(benchmark, quick, data):
    _run(benchmark, quick, cnn.correlate2d, *data, padding=1, group="cnn.conv2d", role="kernel")


def test_conv_transpose2d_torch(benchmark, quick, data):
    _run(benchmark, quick, F.conv_transpose2d, *data, padding=1, group="cnn.conv-transpose2d", role="reference")


def test_conv_transpose2d_fold(benchmark, quick, data):
    _run(benchmark, quick, cnn.transposed_conv2d, *data, padding=1, group="cnn.conv-transpose2d", role="kernel")
