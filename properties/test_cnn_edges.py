"""Edge cases and bad inputs of impl/cnn.py found by mutation testing (report/mutation/cnn.txt):
each test pins an argument check's message (the argument it names, the numbers it reports) or a
valid input at a boundary that a surviving mutant got wrong. References are torch built-ins."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from impl import cnn

f64 = torch.float64


def _randn(*shape, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- output size


def test_conv_output_size_reports_the_dilated_kernel_extent():
    # kernel 3 at dilation 2 spans 2 (3 - 1) + 1 = 5 pixels, more than the 2 + 2 * 0 input pixels
    with pytest.raises(ValueError, match=r"^kernel: dilated kernel extent 5 exceeds the padded input size 2$"):
        cnn.conv_output_size(2, 3, dilation=2)


# --------------------------------------------------------------------------- ROT_180


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (2, 1, 2, 3, 4)])
def test_rot180_flips_the_last_two_axes_of_any_rank(shape):
    # a bare 2-D kernel is valid, and in rank 3 or 5 "the last two axes" are not axes 2 and 3:
    # rot90 twice over (-2, -1) is the 180-degree rotation, computed independently of flip
    w = torch.arange(math.prod(shape)).reshape(shape)
    assert torch.equal(cnn.rot180(w), torch.rot90(w, 2, dims=(-2, -1)))


def test_rot180_wants_two_axes():
    with pytest.raises(ValueError, match=r"^w: expected at least 2 dimensions, got shape \(4,\)$"):
        cnn.rot180(torch.zeros(4))


# --------------------------------------------------------------------------- correlation's checks


@pytest.mark.parametrize("fn", [cnn.correlate2d, cnn.correlate2d_fast, cnn.correlate2d_reference])
def test_correlation_dtype_mismatch_names_both_arguments(fn):
    x = _randn(1, 2, 5, 5)
    with pytest.raises(TypeError, match=r"^w: dtype torch.float32 differs from x's torch.float64$"):
        fn(x, _randn(3, 2, 3, 3, dtype=torch.float32))
    with pytest.raises(TypeError, match=r"^b: dtype torch.float32 differs from x's torch.float64$"):
        fn(x, _randn(3, 2, 3, 3), _randn(3, dtype=torch.float32))


def test_correlation_channel_mismatch_reports_the_channel_counts():
    # H = W = 5 differ from the channel count 3, so a message reading another axis shows it
    with pytest.raises(ValueError, match=r"^w: has 2 input channels, x has 3$"):
        cnn.correlate2d(_randn(1, 3, 5, 5), _randn(4, 2, 3, 3))


@pytest.mark.parametrize("pad", [-1, (0, -1), (-1, 0)])
def test_negative_padding_is_named_padding(pad):
    with pytest.raises(ValueError, match=r"^padding: must be >= 0"):
        cnn.correlate2d(_randn(1, 1, 5, 5), _randn(1, 1, 3, 3), padding=pad)
    with pytest.raises(TypeError, match=r"^padding: expected an int or a pair"):
        cnn.correlate2d(_randn(1, 1, 5, 5), _randn(1, 1, 3, 3), padding=(1, 1, 1))


def test_bad_padding_and_dilation_are_reported_before_the_image_size():
    # An empty image (H = 0) is bad too, but the pair arguments are checked first: a weakened
    # padding or dilation check would let the error name `size` instead.
    x, w = _randn(1, 1, 0, 5), _randn(1, 1, 3, 3)
    with pytest.raises(ValueError, match=r"^padding: must be >= 0, got -1$"):
        cnn.correlate2d(x, w, padding=-1)
    with pytest.raises(ValueError, match=r"^dilation: must be >= 1, got 0$"):
        cnn.correlate2d(x, w, dilation=0)


# --------------------------------------------------------------------------- convolution


@pytest.mark.parametrize("stride", [2, (2, 3)])
def test_convolve2d_honours_stride(stride):
    x, w, b = _randn(2, 2, 9, 10, seed=1), _randn(3, 2, 3, 2, seed=2), _randn(3, seed=3)
    want = F.conv2d(x, torch.flip(w, (-2, -1)), b, stride=stride, padding=1)
    assert_close(cnn.convolve2d(x, w, b, stride=stride, padding=1), want)


def test_conv_backward_input_checks_w_by_name():
    delta = _randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"^w: expected 4 dimensions"):
        cnn.conv_backward_input(delta, _randn(2, 3, 3))
    with pytest.raises(TypeError, match=r"^w: expected a torch.Tensor"):
        cnn.conv_backward_input(delta, [[1.0]])


# --------------------------------------------------------------------------- 1-D and shift structure


def test_conv1d_toeplitz_checks_k_by_name():
    with pytest.raises(ValueError, match=r"^k: expected 1 dimensions"):
        cnn.conv1d_toeplitz(torch.zeros(2, 2, dtype=f64), 3)
    with pytest.raises(TypeError, match=r"^k: expected a torch.Tensor"):
        cnn.conv1d_toeplitz([1.0, 2.0], 3)


def test_circular_convolve1d_builds_its_indices_on_xs_device():
    # on the meta device no values exist, but mixing in a CPU index tensor raises: the (i - m) mod n
    # table must be made where x lives (on a GPU the same mix fails the same way)
    x, h = torch.empty(2, 5, device="meta", dtype=f64), torch.empty(5, device="meta", dtype=f64)
    y = cnn.circular_convolve1d(x, h)
    assert y.device.type == "meta" and y.shape == (2, 5)


# --------------------------------------------------------------------------- pooling and unpooling


def test_max_pool2d_checks_by_name():
    with pytest.raises(ValueError, match=r"^x: expected 4 dimensions"):
        cnn.max_pool2d(_randn(1, 4, 4), 2)
    with pytest.raises(ValueError, match=r"^kernel: must be >= 1"):
        cnn.max_pool2d(_randn(1, 1, 4, 4), 0)


def test_max_pool2d_backward_checks_by_name():
    delta = _randn(1, 1, 2, 2)
    idx = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^delta: expected 4 dimensions"):
        cnn.max_pool2d_backward(delta[0], idx, (4, 4))
    with pytest.raises(ValueError, match=r"^indices: expected 4 dimensions"):
        cnn.max_pool2d_backward(delta, idx[0], (4, 4))
    with pytest.raises(ValueError, match=r"^input_size: must be >= 1"):
        cnn.max_pool2d_backward(delta, idx, (0, 4))


def test_max_pool2d_backward_on_a_single_row():
    # H = 1 is a valid input size: pooling 1x1 windows routes every gradient to its own pixel
    x = _randn(2, 3, 1, 5, seed=4).requires_grad_()
    delta = _randn(2, 3, 1, 5, seed=5)
    _, idx = cnn.max_pool2d(x.detach(), 1)
    F.max_pool2d(x, 1).backward(delta)
    assert_close(cnn.max_pool2d_backward(delta, idx, (1, 5)), x.grad)


@pytest.mark.parametrize("fn", [cnn.unpool_nearest, cnn.unpool_bed_of_nails])
def test_unpool_checks_by_name(fn):
    with pytest.raises(ValueError, match=r"^x: expected 4 dimensions"):
        fn(_randn(2, 3, 3), 2)
    with pytest.raises(TypeError, match=r"^x: expected a torch.Tensor"):
        fn([[1.0]], 2)
    # factor 0 would otherwise fail inside torch (a zero slice step) without naming the argument
    with pytest.raises(ValueError, match=r"^factor: must be >= 1, got 0$"):
        fn(_randn(1, 1, 2, 2), 0)


def test_max_unpool2d_checks_by_name():
    x = _randn(1, 1, 2, 2)
    idx = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^x: expected 4 dimensions"):
        cnn.max_unpool2d(x[0], idx, (4, 4))
    with pytest.raises(ValueError, match=r"^indices: expected 4 dimensions"):
        cnn.max_unpool2d(x, idx[0], (4, 4))
    with pytest.raises(ValueError, match=r"^indices: shape \(1, 1, 2, 1\) differs from x's \(1, 1, 2, 2\)$"):
        cnn.max_unpool2d(x, idx[..., :1], (4, 4))
    with pytest.raises(ValueError, match=r"^output_size: must be >= 1"):
        cnn.max_unpool2d(x, idx, (0, 4))


# --------------------------------------------------------------------------- transposed convolution

TRANSPOSED = [cnn.transposed_conv2d, cnn.transposed_conv2d_fast]


@pytest.mark.parametrize("fn", TRANSPOSED)
def test_transposed_conv_checks_by_name(fn):
    x, w = _randn(1, 2, 3, 3), _randn(2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"^x: expected 4 dimensions"):
        fn(x[0], w)
    with pytest.raises(TypeError, match=r"^x: expected a torch.Tensor"):
        fn([[1.0]], w)
    with pytest.raises(TypeError, match=r"^w: dtype torch.float32 differs from x's torch.float64$"):
        fn(x, w.float())
    with pytest.raises(ValueError, match=r"^w: has 3 input channels, x has 2$"):
        fn(x, _randn(3, 3, 3, 3))
    with pytest.raises(ValueError, match=r"^stride: must be >= 1"):
        fn(x, w, stride=0)
    with pytest.raises(ValueError, match=r"^padding: must be >= 0"):
        fn(x, w, padding=-1)
    with pytest.raises(ValueError, match=r"^b: expected shape \(3\)"):
        fn(x, w, _randn(2))


@pytest.mark.parametrize("fn", TRANSPOSED)
def test_transposed_conv_bias_dtype_mismatch_names_both_arguments(fn):
    # float64 x with a float32 b would otherwise promote silently in one path and not the other
    x, w = _randn(1, 2, 3, 3), _randn(2, 3, 3, 3)
    with pytest.raises(TypeError, match=r"^b: dtype torch.float32 differs from x's torch.float64$"):
        fn(x, w, _randn(3, dtype=torch.float32))


@pytest.mark.parametrize("fn", TRANSPOSED)
@pytest.mark.parametrize("H, W", [(1, 4), (4, 1), (1, 1)])
def test_transposed_conv_padding_that_leaves_one_pixel(fn, H, W):
    # a 1-pixel input side, kernel 3, padding 1: the full side 3 is cropped to 3 - 2 = 1 pixel,
    # still a valid output
    x, w, b = _randn(2, 2, H, W, seed=6), _randn(2, 3, 3, 3, seed=7), _randn(3, seed=8)
    want = F.conv_transpose2d(x, w, b, stride=1, padding=1)
    assert_close(fn(x, w, b, stride=1, padding=1), want)
    # and padding 2 crops it away entirely on the 1-pixel side
    with pytest.raises(ValueError, match=r"^padding: 2 crops away the whole"):
        fn(x, w, b, padding=2)
