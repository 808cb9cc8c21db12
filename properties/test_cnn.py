"""Properties of the CNN section: definitions, convolution/correlation, backward passes, output
sizes, pooling, unpooling and transposed convolution, against scipy and torch as references."""

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from torch.testing import assert_close

from impl import cnn
from spec.testing import randn, seeds, tol

f64 = torch.float64


def circular_conv_operator(h):
    return lambda x: cnn.circular_convolve1d(x, h)


# --------------------------------------------------------------------------- definitions (808-811)


@pytest.mark.claim("cnn.linear-definition")
@given(seed=seeds(), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_convolution_is_linear_and_relu_conv_is_not(seed, a, b):
    u, v = randn(1, 2, 7, 7, seed=seed), randn(1, 2, 7, 7, seed=seed + 1)
    w = randn(3, 2, 3, 3, seed=seed + 2)
    T = lambda x: cnn.convolve2d(x, w, padding=1)
    assert_close(T(a * u + b * v), a * T(u) + b * T(v))
    # The definition has teeth: a ReLU after the convolution breaks it for a = -1, b = 0
    # unless T(u) is identically zero.
    S = lambda x: torch.relu(T(x))
    assert not torch.allclose(S(-u), -S(u))


@pytest.mark.claim("cnn.invariance-definition")
@given(seed=seeds(), shift=st.integers(1, 6))
def test_global_sum_pool_invariant_convolution_not(seed, shift):
    x = randn(8, seed=seed)
    f = lambda s: torch.roll(s, shift)
    assert_close(f(x).sum(), x.sum())
    h = randn(8, seed=seed + 1)
    T = circular_conv_operator(h)
    # Convolution is not shift-invariant: T(f(x)) = f(T(x)) != T(x) for a generic signal.
    assert not torch.allclose(T(f(x)), T(x))


@pytest.mark.claim("cnn.equivariance-definition")
@given(seed=seeds(), shift=st.integers(-7, 7))
def test_circular_convolution_is_shift_equivariant(seed, shift):
    x, h = randn(3, 8, seed=seed), randn(8, seed=seed + 1)
    T, f = circular_conv_operator(h), (lambda s: torch.roll(s, shift, dims=-1))
    assert_close(T(f(x)), f(T(x)))
    assert_close(torch.relu(f(x)), f(torch.relu(x)))
    # A position-dependent scaling is linear but not equivariant (for a shift that is not 0 mod 8).
    g = torch.arange(1.0, 9.0, dtype=f64)
    if shift % 8:
        assert not torch.allclose((g * f(x)), f(g * x))


@pytest.mark.claim("cnn.lsi-is-convolution")
@given(seed=seeds(), n=st.integers(2, 12))
def test_linear_shift_equivariant_operator_is_its_impulse_response_convolution(seed, n):
    # An arbitrary LSI operator, built without reference to convolution: average a random matrix
    # over the cyclic group, M = (1/n) sum_k S^-k A S^k, which commutes with the shift S.
    A = randn(n, n, seed=seed)
    S = torch.roll(torch.eye(n, dtype=f64), 1, dims=0)
    M = sum(torch.linalg.matrix_power(S, n - k) @ A @ torch.linalg.matrix_power(S, k) for k in range(n)) / n
    assert_close(M @ S, S @ M)
    T = lambda x: x @ M.T
    h = cnn.impulse_response(T, n)
    x = randn(5, n, seed=seed + 1)
    assert_close(T(x), cnn.circular_convolve1d(x, h))


# --------------------------------------------------------------------------- convolution and correlation (812-816)


def _scipy_single(x, w, mode, fn):
    return torch.from_numpy(fn(x[0, 0].numpy(), w[0, 0].numpy(), mode="valid"))


@pytest.mark.claim("cnn.convolution-formula")
@given(seed=seeds(), H=st.integers(3, 9), W=st.integers(3, 9), k=st.integers(1, 3))
def test_convolution_matches_scipy(seed, H, W, k):
    x, w = randn(1, 1, H, W, seed=seed), randn(1, 1, k, k, seed=seed + 1)
    assert_close(cnn.convolve2d(x, w)[0, 0], _scipy_single(x, w, "valid", scipy.signal.convolve2d))


@pytest.mark.claim("cnn.convolution-formula")
def test_convolution_formula_term_by_term():
    # I'(i, j) = sum_{m,n=-k..k} K(-m, -n) I(m + i, n + j) with centred indices, evaluated literally.
    k = 1
    rng = np.random.default_rng(0)
    I, K = rng.normal(size=(7, 6)), rng.normal(size=(3, 3))
    Kc = lambda m, n: K[m + k, n + k]
    out = np.array([[sum(Kc(-m, -n) * I[m + i, n + j] for m in range(-k, k + 1) for n in range(-k, k + 1))
                     for j in range(k, 6 - k)] for i in range(k, 7 - k)])
    got = cnn.convolve2d(torch.from_numpy(I)[None, None], torch.from_numpy(K)[None, None])[0, 0]
    assert_close(got, torch.from_numpy(out))


@pytest.mark.claim("cnn.correlation-formula")
@given(seed=seeds(), H=st.integers(3, 9), W=st.integers(3, 9), k=st.integers(1, 3))
def test_correlation_matches_scipy(seed, H, W, k):
    x, w = randn(1, 1, H, W, seed=seed), randn(1, 1, k, k, seed=seed + 1)
    assert_close(cnn.correlate2d(x, w)[0, 0], _scipy_single(x, w, "valid", scipy.signal.correlate2d))


conv_params = st.fixed_dictionaries({
    "stride": st.integers(1, 3), "padding": st.integers(0, 2), "dilation": st.integers(1, 2)})


@pytest.mark.claim("cnn.correlation-formula")
@given(seed=seeds(), p=conv_params, bias=st.booleans())
def test_im2col_correlation_matches_torch_and_the_plain_sum(seed, p, bias):
    x, w = randn(2, 3, 10, 9, seed=seed), randn(4, 3, 3, 2, seed=seed + 1)
    b = randn(4, seed=seed + 2) if bias else None
    ref = F.conv2d(x, w, b, **p)
    assert_close(cnn.correlate2d(x, w, b, **p), ref)
    assert_close(cnn.correlate2d_reference(x, w, b, **p), ref)
    assert_close(cnn.correlate2d_fast(x, w, b, **p), ref)


@pytest.mark.claim("cnn.correlation-formula")
@given(seed=seeds(), H=st.integers(1, 9), W=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
       ph=st.integers(0, 3), pw=st.integers(0, 3), dh=st.integers(1, 3), dw=st.integers(1, 3))
def test_shifted_window_fast_path_equals_the_plain_sum(seed, H, W, kh, kw, ph, pw, dh, dw):
    # the fast path's flat windows wrap from one row into the next: every geometry, narrow images
    # and wide dilated kernels included, must crop exactly those wrapped columns
    if H + 2 * ph < dh * (kh - 1) + 1 or W + 2 * pw < dw * (kw - 1) + 1:
        return
    x, w = randn(2, 3, H, W, seed=seed), randn(2, 3, kh, kw, seed=seed + 1)
    p = dict(padding=(ph, pw), dilation=(dh, dw))
    assert_close(cnn.correlate2d_fast(x, w, **p), cnn.correlate2d_reference(x, w, **p))


@pytest.mark.claim("cnn.correlation-formula")
def test_correlation_on_device_float32(device):
    # float32 against torch's conv2d on the same device: sums of 3*3*3 = 27 products of O(1)
    # terms round to ~27 * 6e-8 relative; tol(float32) allows 2e-4 relative.
    x, w = randn(2, 3, 16, 16, seed=0, dtype=torch.float32, device=device), randn(5, 3, 3, 3, seed=1, dtype=torch.float32, device=device)
    out = cnn.correlate2d(x, w, padding=1)
    assert out.device == x.device
    assert_close(out, F.conv2d(x, w, padding=1), **tol(torch.float32))
    assert_close(cnn.correlate2d_fast(x, w, padding=1), F.conv2d(x, w, padding=1), **tol(torch.float32))


@pytest.mark.claim("cnn.flip-relation")
@given(seed=seeds())
def test_convolution_is_correlation_with_rotated_kernel(seed):
    x, w = randn(1, 1, 6, 7, seed=seed), randn(1, 1, 3, 3, seed=seed + 1)
    conv = torch.from_numpy(scipy.signal.convolve2d(x[0, 0].numpy(), w[0, 0].numpy(), mode="valid"))
    corr_rot = torch.from_numpy(scipy.signal.correlate2d(x[0, 0].numpy(), w[0, 0].flip(0, 1).numpy(), mode="valid"))
    assert_close(conv, corr_rot)
    # ROT180 itself against torch's rotation by two quarter turns (an independent definition): the
    # identity below would hold for any flip as long as convolve2d and rot180 used the same one.
    assert torch.equal(cnn.rot180(w), torch.rot90(w, 2, dims=(-2, -1)))
    assert_close(cnn.convolve2d(x, w)[0, 0], conv)
    assert_close(cnn.convolve2d(x, w), cnn.correlate2d(x, cnn.rot180(w)))
    # ... and convolution differs from correlation for a kernel that is not symmetric under ROT180.
    assert not torch.allclose(cnn.convolve2d(x, w), cnn.correlate2d(x, w))


@pytest.mark.claim("cnn.conv-forward")
@given(seed=seeds())
def test_conv_forward_with_bias(seed):
    x, w, b = randn(2, 1, 6, 6, seed=seed), randn(1, 1, 3, 3, seed=seed + 1), randn(1, seed=seed + 2)
    z = cnn.convolve2d(x, w, b)
    for i in range(2):
        ref = scipy.signal.convolve2d(x[i, 0].numpy(), w[0, 0].numpy(), mode="valid") + b.item()
        assert_close(z[i, 0], torch.from_numpy(ref))


# --------------------------------------------------------------------------- backward (817-818)


@pytest.mark.claim("cnn.backward-input")
@given(seed=seeds(), H=st.integers(3, 8), k=st.integers(1, 3))
def test_backward_input_formula_matches_autograd(seed, H, k):
    x = randn(2, 3, H, H + 1, seed=seed).requires_grad_()
    w = randn(4, 3, k, k, seed=seed + 1)
    z = cnn.convolve2d(x, w)
    delta = randn(*z.shape, seed=seed + 2)
    (gx,) = torch.autograd.grad(z, x, delta)
    assert_close(cnn.conv_backward_input(delta, w), gx)
    # torch's own input gradient of its correlation, with the kernel rotated: an independent path.
    assert_close(cnn.conv_backward_input(delta, w),
                 torch.nn.grad.conv2d_input(x.shape, cnn.rot180(w), delta))


@pytest.mark.claim("cnn.backward-kernel")
@given(seed=seeds(), H=st.integers(3, 8), k=st.integers(1, 3))
def test_backward_kernel_formula_matches_autograd(seed, H, k):
    x = randn(2, 3, H, H + 1, seed=seed)
    w = randn(4, 3, k, k, seed=seed + 1).requires_grad_()
    z = cnn.convolve2d(x, w)
    delta = randn(*z.shape, seed=seed + 2)
    (gw,) = torch.autograd.grad(z, w, delta)
    assert_close(cnn.conv_backward_kernel(delta, x), gw)


@pytest.mark.claim("cnn.backward-input", "cnn.backward-kernel")
def test_convolution_gradcheck():
    x = randn(1, 2, 5, 5, seed=0).requires_grad_()
    w = randn(3, 2, 3, 3, seed=1).requires_grad_()
    b = randn(3, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: cnn.convolve2d(x, w, b, stride=2, padding=1), (x, w, b))


# --------------------------------------------------------------------------- sizes (819-821)


@pytest.mark.claim("cnn.output-size")
@given(size=st.integers(1, 40), kern=st.integers(1, 7), stride=st.integers(1, 4),
       pad=st.integers(0, 3), dil=st.integers(1, 3))
def test_output_size_matches_torch_conv(size, kern, stride, pad, dil):
    extent = dil * (kern - 1) + 1
    x = torch.zeros(1, 1, size, size)
    if extent > size + 2 * pad:
        with pytest.raises(ValueError, match="kernel"):
            cnn.conv_output_size(size, kern, stride, pad, dil)
        with pytest.raises(RuntimeError):
            F.conv2d(x, torch.zeros(1, 1, kern, kern), stride=stride, padding=pad, dilation=dil)
        return
    expected = F.conv2d(x, torch.zeros(1, 1, kern, kern), stride=stride, padding=pad, dilation=dil).shape[-1]
    assert cnn.conv_output_size(size, kern, stride, pad, dil) == expected
    assert expected == (size + 2 * pad - dil * (kern - 1) - 1) // stride + 1


@pytest.mark.claim("cnn.output-size")
@given(size=st.integers(1, 40), kern=st.integers(1, 7), stride=st.integers(1, 4),
       pad=st.integers(0, 3), dil=st.integers(1, 3))
def test_output_size_matches_torch_pooling(size, kern, stride, pad, dil):
    # torch's pooling requires pad <= kernel / 2 and a non-empty output.
    if 2 * pad > kern or dil * (kern - 1) + 1 > size + 2 * pad:
        return
    x = torch.zeros(1, 1, size, size)
    got = cnn.conv_output_size(size, kern, stride, pad, dil)
    assert F.max_pool2d(x, kern, stride, pad, dil).shape[-1] == got
    assert F.avg_pool2d(x, kern, stride, pad).shape[-1] == cnn.conv_output_size(size, kern, stride, pad)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(size=0, kernel=3), "size"), (dict(size=5, kernel=0), "kernel"),
    (dict(size=5, kernel=3, stride=0), "stride"), (dict(size=5, kernel=3, padding=-1), "padding"),
    (dict(size=5, kernel=3, dilation=0), "dilation"), (dict(size=2, kernel=5), "kernel"),
])
def test_output_size_rejects_invalid_parameters(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        cnn.conv_output_size(**kwargs)
    with pytest.raises(TypeError, match="size"):
        cnn.conv_output_size(5.0, 3)


@pytest.mark.claim("cnn.channels-equal-kernels")
@given(cin=st.integers(1, 4), nk=st.integers(1, 6))
def test_output_channels_equal_number_of_kernels(cin, nk):
    x = randn(2, cin, 6, 6, seed=cin)
    w = randn(nk, cin, 3, 3, seed=nk)
    z = cnn.correlate2d(x, w)
    assert z.shape[1] == nk
    # Each output channel is the correlation of x with one kernel, summed over all input channels.
    for o in range(nk):
        assert_close(z[:, o], sum(cnn.correlate2d(x[:, c:c + 1], w[o:o + 1, c:c + 1])[:, 0] for c in range(cin)))


@pytest.mark.claim("cnn.conv1d-toeplitz")
@given(seed=seeds(), n=st.integers(1, 10), K=st.integers(1, 4))
def test_conv1d_is_banded_toeplitz_matmul(seed, n, K):
    x, k = randn(n, seed=seed), randn(K, seed=seed + 1)
    T = cnn.conv1d_toeplitz(k, n)
    assert T.shape == (n + K - 1, n)
    assert_close(T @ x, torch.from_numpy(np.convolve(x.numpy(), k.numpy(), mode="full")))
    # The drawn structure: k_1 on the diagonal, k_2 and k_3 on the sub-diagonals, zeros above.
    assert_close(torch.diagonal(T), k[0].expand(min(n, n + K - 1)))
    assert torch.all(torch.triu(T, diagonal=1) == 0)
    if K >= 2 and n >= 2:
        assert_close(torch.diagonal(T, offset=-1)[: n - 1], k[1].expand(n - 1))


# --------------------------------------------------------------------------- pooling and unpooling (881-884)


@pytest.mark.claim("cnn.max-pool")
@given(seed=seeds(), k=st.integers(1, 3), s=st.integers(1, 3))
def test_max_pool_matches_torch(seed, k, s):
    x = randn(2, 3, 9, 8, seed=seed)
    v, i = cnn.max_pool2d(x, k, s)
    v2, i2 = F.max_pool2d(x, k, s, return_indices=True)
    assert_close(v, v2)
    assert torch.equal(i, i2)


@pytest.mark.claim("cnn.max-pool-gradient", role="corrects")
@given(seed=seeds())
def test_max_pool_gradient_routing_with_unique_maxima(seed):
    # Continuous random inputs have unique maxima with probability one.
    x = randn(2, 2, 6, 6, seed=seed).requires_grad_()
    v, idx = cnn.max_pool2d(x, 2)
    delta = randn(*v.shape, seed=seed + 1)
    (g,) = torch.autograd.grad(F.max_pool2d(x, 2), x, delta)
    assert_close(cnn.max_pool2d_backward(delta, idx, (6, 6)), g)


@pytest.mark.claim("cnn.max-pool-gradient", role="corrects")
def test_max_pool_gradient_is_the_derivative_away_from_ties():
    # Away from ties max pooling is differentiable and [i = i*] is its derivative: finite differences agree.
    x = randn(1, 2, 4, 4, seed=5)
    assert torch.autograd.gradcheck(lambda t: cnn.max_pool2d(t, 2)[0], (x.requires_grad_(),))


@pytest.mark.claim("cnn.max-pool-gradient", role="refutes")
def test_max_pool_gradient_undefined_at_ties(record_property):
    # One window [[1, 1], [0, 0]]: two maxima. d max / d z_i from above is 1 for BOTH tied entries,
    # so "dz/dz_i = [i = i*]" cannot hold for a single i*.
    x = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], dtype=f64)
    h = 1e-6
    up = []
    for pos in [(0, 0), (0, 1)]:
        xp = x.clone()
        xp[(0, 0) + pos] += h
        up.append(((cnn.max_pool2d(xp, 2)[0] - cnn.max_pool2d(x, 2)[0]) / h).item())
    assert up == pytest.approx([1.0, 1.0])
    down = x.clone()
    down[0, 0, 0, 0] -= h
    assert ((cnn.max_pool2d(x, 2)[0] - cnn.max_pool2d(down, 2)[0]) / h).item() == pytest.approx(0.0)
    record_property("evidence", "window [[1,1],[0,0]]: one-sided derivatives up = (1, 1) for both tied entries, "
                    "down = 0: max is not differentiable at a tie")
    # PyTorch's choice: the first maximum in row-major order gets the whole gradient.
    xr = x.clone().requires_grad_()
    F.max_pool2d(xr, 2).sum().backward()
    assert xr.grad.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.claim("cnn.max-pool-gradient", role="refutes")
def test_max_pool_delta_index_is_on_the_wrong_side(record_property):
    # Two 2x2 windows side by side, unique maxima: window 0 [[0.3, 2.0], [-1.0, 0.5]] has its max at
    # in-window (row-major) position i* = 1; the pooled output has one delta per window.
    x = torch.tensor([[[[0.3, 2.0, 0.1, 0.2], [-1.0, 0.5, 0.9, -0.4]]]], dtype=f64, requires_grad=True)
    delta = torch.tensor([[[[2.5, -1.0]]]], dtype=f64)  # delta^(l) = (2.5, -1.0)
    (g,) = torch.autograd.grad(F.max_pool2d(x, 2), x, delta)
    window0 = g[0, 0, :, :2].flatten()
    i_star = int(x[0, 0, :, :2].flatten().argmax())
    assert i_star == 1
    # As printed, delta^(l-1) = delta^(l)_{i*}: delta^(l) indexed by the input position i* is the OTHER
    # window's delta, and it is one number for the whole window, not zero off i*.
    printed = delta.flatten()[i_star]
    assert printed.item() == -1.0
    assert not torch.equal(window0, torch.full_like(window0, printed.item()))
    # autograd: delta^(l-1)_i = delta^(l) [i = i*], the index on the other side
    assert window0.tolist() == [0.0, 2.5, 0.0, 0.0]
    record_property("evidence", "windows [[0.3,2],[-1,0.5]] and [[0.1,0.2],[0.9,-0.4]], delta^(l) = (2.5, -1): autograd "
                    "gives delta^(l-1) = (0, 2.5, 0, 0) on window 0 (i* = 1); the printed delta^(l)_{i*} = delta^(l)_1 = -1")
    # the corrected routing (the implementation) agrees with autograd
    _, idx = cnn.max_pool2d(x.detach(), 2)
    assert_close(cnn.max_pool2d_backward(delta, idx, (2, 4)), g)


@pytest.mark.claim("cnn.unpooling")
@given(seed=seeds(), f=st.integers(1, 3))
def test_unpooling_variants(seed, f):
    x = randn(2, 3, 4, 5, seed=seed)
    assert_close(cnn.unpool_nearest(x, f), F.interpolate(x, scale_factor=f, mode="nearest"))
    bon = cnn.unpool_bed_of_nails(x, f)
    assert_close(bon[..., ::f, ::f], x)
    assert bon.abs().sum() == pytest.approx(x.abs().sum().item())  # everything else is 0
    y = randn(2, 3, 8, 10, seed=seed + 1)
    v, idx = cnn.max_pool2d(y, 2)
    up = cnn.max_unpool2d(v, idx, (8, 10))
    assert_close(up, F.max_unpool2d(v, idx, 2, output_size=(8, 10)))
    # Each pooled maximum goes back exactly where it came from.
    assert_close(up.flatten(2).gather(2, idx.flatten(2)), v.flatten(2))


@pytest.mark.claim("cnn.transposed-conv")
@given(seed=seeds(), stride=st.integers(1, 3), pad=st.integers(0, 1), k=st.integers(1, 4))
def test_transposed_conv_matches_torch_and_is_the_adjoint(seed, stride, pad, k):
    x = randn(2, 3, 5, 4, seed=seed)
    w = randn(3, 2, k, k, seed=seed + 1)
    if (4 - 1) * stride + k - 2 * pad < 1:
        return
    out = cnn.transposed_conv2d(x, w, stride=stride, padding=pad)
    assert_close(out, F.conv_transpose2d(x, w, stride=stride, padding=pad))
    assert_close(cnn.transposed_conv2d_fast(x, w, stride=stride, padding=pad), out)
    # Adjoint: <correlate(y, w), x> = <y, transposed(x, w)> for y of the transposed output's shape.
    y = randn(*out.shape, seed=seed + 2)
    lhs = (cnn.correlate2d(y, w, stride=stride, padding=pad) * x).sum()  # w: (C_in, C_out) is conv's (out, in)
    assert_close(lhs, (y * out).sum())


@pytest.mark.claim("cnn.transposed-conv")
def test_transposed_conv_is_weighted_filter_copies():
    # One input channel, two nonzero inputs: the output is a sum of two shifted, scaled copies of w.
    x = torch.zeros(1, 1, 2, 2, dtype=f64)
    x[0, 0, 0, 0], x[0, 0, 1, 1] = 2.0, -1.0
    w = randn(1, 1, 3, 3, seed=3)
    expected = torch.zeros(1, 1, 5, 5, dtype=f64)  # stride 2: (2 - 1) * 2 + 3 = 5
    expected[0, 0, 0:3, 0:3] += 2.0 * w[0, 0]
    expected[0, 0, 2:5, 2:5] += -1.0 * w[0, 0]  # overlaps the first copy at (2, 2): summed
    assert_close(cnn.transposed_conv2d(x, w, stride=2), expected)


@pytest.mark.claim("cnn.transposed-conv", "cnn.max-pool", "cnn.conv-forward")
def test_same_results_on_device(device):
    # float32 on every device against torch's own ops; products of 3x3x2 terms, tol(float32).
    x = randn(2, 2, 8, 8, seed=0, dtype=torch.float32, device=device)
    w = randn(2, 3, 3, 3, seed=1, dtype=torch.float32, device=device)
    assert_close(cnn.transposed_conv2d(x, w, stride=2), F.conv_transpose2d(x, w, stride=2), **tol(torch.float32))
    assert_close(cnn.transposed_conv2d_fast(x, w, stride=2, padding=1),
                 F.conv_transpose2d(x, w, stride=2, padding=1), **tol(torch.float32))
    v, i = cnn.max_pool2d(x, 2)
    assert_close(v, F.max_pool2d(x, 2))
    wc = randn(3, 2, 3, 3, seed=2, dtype=torch.float32, device=device)
    assert_close(cnn.convolve2d(x, wc), F.conv2d(x, wc.flip(-1, -2)), **tol(torch.float32))


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_rejected_with_the_argument_named():
    x, w = torch.zeros(1, 2, 5, 5), torch.zeros(3, 2, 3, 3)
    with pytest.raises(ValueError, match="x"):
        cnn.correlate2d(torch.zeros(2, 5, 5), w)
    with pytest.raises(ValueError, match="w"):
        cnn.correlate2d(x, torch.zeros(3, 4, 3, 3))
    with pytest.raises(TypeError, match="x"):
        cnn.convolve2d(torch.zeros(1, 2, 5, 5, dtype=torch.int64), w)
    with pytest.raises(TypeError, match="w"):
        cnn.correlate2d(x, w.double())
    with pytest.raises(ValueError, match="b"):
        cnn.correlate2d(x, w, torch.zeros(2))
    with pytest.raises(ValueError, match="stride"):
        cnn.correlate2d(x, w, stride=0)
    with pytest.raises(ValueError, match="kernel"):
        cnn.correlate2d(torch.zeros(1, 2, 2, 2), w)
    with pytest.raises(ValueError, match="w"):
        cnn.conv_backward_input(torch.zeros(1, 4, 3, 3), w)
    with pytest.raises(ValueError, match="delta"):
        cnn.conv_backward_kernel(torch.zeros(2, 3, 3, 3), x)
    with pytest.raises(ValueError, match="kernel"):
        cnn.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="indices"):
        cnn.max_unpool2d(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 99), (4, 4))
    with pytest.raises(ValueError, match="factor"):
        cnn.unpool_nearest(x, 0)
    with pytest.raises(ValueError, match="padding"):
        cnn.transposed_conv2d(torch.zeros(1, 3, 1, 1), torch.zeros(3, 1, 1, 1), padding=1)
    with pytest.raises(ValueError, match="h"):
        cnn.circular_convolve1d(torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match="k"):
        cnn.conv1d_toeplitz(torch.zeros(2, 2), 3)
    with pytest.raises(TypeError, match="T"):
        cnn.impulse_response(3, 4)
    for fast in (cnn.correlate2d_fast,):
        with pytest.raises(ValueError, match="w"):
            fast(x, torch.zeros(3, 4, 3, 3))
        with pytest.raises(ValueError, match="kernel"):
            fast(torch.zeros(1, 2, 2, 2), w)
        with pytest.raises(ValueError, match="b"):
            fast(x, w, torch.zeros(2))
    with pytest.raises(ValueError, match="padding"):
        cnn.transposed_conv2d_fast(torch.zeros(1, 3, 1, 1), torch.zeros(3, 1, 1, 1), padding=1)
    with pytest.raises(ValueError, match="w"):
        cnn.transposed_conv2d_fast(torch.zeros(1, 3, 2, 2), torch.zeros(2, 1, 1, 1))
    with pytest.raises(ValueError, match="stride"):
        cnn.transposed_conv2d_fast(torch.zeros(1, 3, 2, 2), torch.zeros(3, 1, 1, 1), stride=0)
    with pytest.raises(ValueError, match="b"):
        cnn.transposed_conv2d_fast(torch.zeros(1, 3, 2, 2), torch.zeros(3, 2, 1, 1), torch.zeros(3))


# --------------------------------------------------------------------------- review: non-square, overlapping, bias


@pytest.mark.claim("cnn.backward-input", "cnn.backward-kernel")
@pytest.mark.parametrize("kh, kw", [(2, 3), (3, 1), (1, 2)])
def test_backward_formulas_with_non_square_kernels(kh, kw):
    # Non-square kernels separate the two spatial axes (a pad or flip applied to the wrong axis
    # is invisible with k x k kernels). Expected values: autograd through torch's own conv2d.
    x = randn(2, 3, 6, 5, seed=kh * 10 + kw).requires_grad_()
    w = randn(4, 3, kh, kw, seed=kh * 10 + kw + 1).requires_grad_()
    z = F.conv2d(x, w.flip(-2, -1))  # the notes' convolution, computed by torch
    delta = randn(*z.shape, seed=kh * 10 + kw + 2)
    gx, gw = torch.autograd.grad(z, (x, w), delta)
    assert_close(cnn.conv_backward_input(delta, w.detach()), gx)
    assert_close(cnn.conv_backward_kernel(delta, x.detach()), gw)


@pytest.mark.claim("cnn.correlation-formula")
def test_correlation_with_per_axis_stride_dilation_padding():
    # Distinct settings per axis, against torch's conv2d: catches an axis mix-up in either kernel.
    x, w, b = randn(2, 2, 11, 9, seed=7), randn(3, 2, 2, 3, seed=8), randn(3, seed=9)
    p = dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1))
    ref = F.conv2d(x, w, b, **p)
    assert_close(cnn.correlate2d(x, w, b, **p), ref)
    assert_close(cnn.correlate2d_reference(x, w, b, **p), ref)
    assert_close(cnn.correlate2d_fast(x, w, b, **p), ref)



@pytest.mark.claim("cnn.max-pool-gradient", role="corrects")
@pytest.mark.parametrize("k, s", [(3, 2), (2, 1)])
def test_max_pool_gradient_sums_over_overlapping_windows(k, s):
    # With overlapping windows one input can be the maximum of several windows: its gradient is
    # the sum of their deltas (chain rule). Unique maxima (continuous draws); autograd of torch's
    # max_pool2d is the reference.
    x = randn(2, 2, 7, 8, seed=k + s).requires_grad_()
    v, idx = cnn.max_pool2d(x.detach(), k, s)
    delta = randn(*v.shape, seed=k + s + 1)
    (g,) = torch.autograd.grad(F.max_pool2d(x, k, s), x, delta)
    counts = torch.bincount(idx.flatten(2)[0, 0], minlength=7 * 8)
    assert counts.max() >= 2  # the case is exercised: some input is the max of two windows
    assert_close(cnn.max_pool2d_backward(delta, idx, (7, 8)), g)


@pytest.mark.claim("cnn.transposed-conv")
@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1)])
def test_transposed_conv_non_square_kernel_and_bias(stride, pad):
    x, w, b = randn(2, 3, 4, 5, seed=stride), randn(3, 2, 2, 4, seed=stride + 1), randn(2, seed=stride + 2)
    assert_close(cnn.transposed_conv2d(x, w, b, stride=stride, padding=pad),
                 F.conv_transpose2d(x, w, b, stride=stride, padding=pad))


@pytest.mark.claim("cnn.unpooling")
def test_max_unpool_rejects_an_index_one_past_the_end():
    # Indices address the flattened H*W plane: H*W itself is out of range (an off-by-one).
    with pytest.raises(ValueError, match="indices"):
        cnn.max_unpool2d(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 16), (4, 4))
    with pytest.raises(ValueError, match="indices"):
        cnn.max_unpool2d(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), -1), (4, 4))
    out = cnn.max_unpool2d(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 15), (4, 4))
    assert out[0, 0, 3, 3] == 1 and out.sum() == 1
