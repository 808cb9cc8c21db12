"""The CNN section's worked backprop example (notes lines 832-878), entry by entry, and a golden
regression of the convolution kernels."""

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from impl import cnn

pytestmark = pytest.mark.golden

# The matrices exactly as the notes print them.
X = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 1, 1], [1, 1, 1, 1, 0], [1, 0, 1, 1, 0], [1, 1, 0, 1, 1]], dtype=torch.float64)
K = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 1, 0]], dtype=torch.float64)
Y_NOTES = torch.tensor([[3, 3, 3], [4, 2, 3], [2, 3, 3]], dtype=torch.float64)
POOL_NOTES = torch.tensor([[4.0]], dtype=torch.float64)
DY_NOTES = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
DK_NOTES = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=torch.float64)
DV_NOTES = torch.tensor([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float64)

# Independent computation of Y: scipy's convolution (the notes say "rotate K").
Y_TRUE = torch.from_numpy(scipy.signal.convolve2d(X.numpy(), K.numpy(), mode="valid")).double()


def b4(t):
    return t[None, None]


def _forward(x, k):
    return cnn.convolve2d(b4(x), b4(k))[0, 0]


@pytest.mark.claim("cnn.example-forward", role="refutes")
def test_printed_y_disagrees_with_the_convolution(record_property):
    y = _forward(X, K)
    assert_close(y, Y_TRUE)
    wrong = [(i + 1, j + 1, Y_NOTES[i, j].item(), y[i, j].item()) for i, j in (y != Y_NOTES).nonzero().tolist()]
    assert wrong == [(3, 2, 3.0, 4.0)]
    # Not a correlation-versus-convolution mix-up either: correlation matches even less.
    corr = cnn.correlate2d(b4(X), b4(K))[0, 0]
    assert (corr != Y_NOTES).sum() > 1
    record_property("evidence", "Y(3,2) (1-based) is printed 3; sum(X[3:5,2:4] * ROT180(K)) = 4 "
                    "(scipy.signal.convolve2d agrees); correlation without rotation gives [[3,2,3],[1,4,3],[3,3,3]]")


def test_figure_of_the_worked_example(save_figure):
    import matplotlib.pyplot as plt

    y = _forward(X, K)
    fig, axes = plt.subplots(1, 4, figsize=(11, 3))
    for ax, (title, m) in zip(axes, [("X", X), ("K", K), ("Y as printed", Y_NOTES), ("Y = X * K (computed)", y)]):
        ax.imshow(m.numpy(), cmap="Blues", vmin=0, vmax=max(4, m.max().item()))
        for (i, j), v in np.ndenumerate(m.numpy()):
            bad = title.startswith("Y") and Y_NOTES[i, j] != y[i, j]
            ax.text(j, i, f"{v:g}", ha="center", va="center", color="red" if bad else "black",
                    fontweight="bold" if bad else "normal")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    assert (Y_NOTES != y).sum() == 1
    save_figure(fig, "cnn-worked-example.png",
                caption="The notes' worked example: X, K, Y as printed and Y = X * K computed; the one wrong entry of the printed Y is red.", claims=('cnn.example-forward',))


@pytest.mark.claim("cnn.example-forward", role="corrects")
def test_corrected_y():
    assert_close(_forward(X, K), torch.tensor([[3, 3, 3], [4, 2, 3], [2, 4, 3]], dtype=torch.float64))


@pytest.mark.claim("cnn.example-pool")
def test_pooled_value():
    for y in (Y_NOTES, Y_TRUE):
        v, _ = cnn.max_pool2d(b4(y), 3)
        assert_close(v[0, 0], POOL_NOTES)


@pytest.mark.claim("cnn.example-grad-y", role="refutes")
def test_the_maximum_is_tied(record_property):
    ties = (Y_TRUE == Y_TRUE.max()).nonzero().tolist()
    assert [(i + 1, j + 1) for i, j in ties] == [(2, 1), (3, 2)]
    # Routing the gradient to the other maximum is just as valid and gives a different dE/dY.
    other = torch.zeros(3, 3, dtype=torch.float64)
    other[2, 1] = 1
    assert not torch.equal(other, DY_NOTES)
    record_property("evidence", "the correct Y attains its max 4 at (2,1) and (3,2): dE/dY is not unique")


@pytest.mark.claim("cnn.example-grad-y", role="corrects")
def test_first_maximum_tie_break_reproduces_the_printed_gradient():
    y = Y_TRUE.clone().requires_grad_()
    F.max_pool2d(b4(y), 3).sum().backward()  # dE/dY' = 1
    assert_close(y.grad, DY_NOTES)
    _, idx = cnn.max_pool2d(b4(Y_TRUE), 3)
    assert_close(cnn.max_pool2d_backward(torch.ones(1, 1, 1, 1, dtype=torch.float64), idx, (3, 3))[0, 0], DY_NOTES)


@pytest.mark.claim("cnn.example-grad-kernel")
def test_kernel_gradient():
    assert_close(cnn.conv_backward_kernel(b4(DY_NOTES), b4(X))[0, 0], DK_NOTES)
    k = K.clone().requires_grad_()
    F.max_pool2d(cnn.convolve2d(b4(X), b4(k)), 3).sum().backward()
    assert_close(k.grad, DK_NOTES)


@pytest.mark.claim("cnn.example-grad-input", role="refutes")
def test_the_label_v_names_no_quantity_of_the_example(record_property):
    # The example's quantities: X, K, Y = X * K, Y' = Pool(Y). Their gradients, by autograd:
    x, k = X.clone().requires_grad_(), K.clone().requires_grad_()
    y = cnn.convolve2d(b4(x), b4(k))
    y.retain_grad()
    yp = F.max_pool2d(y, 3)
    yp.retain_grad()
    yp.sum().backward()  # dE/dY' = 1
    grads = {"X": x.grad, "K": k.grad, "Y": y.grad[0, 0], "Y'": yp.grad[0, 0]}
    assert "V" not in grads
    # the printed "dE/dV" is the gradient of exactly one of them, X (the only 5 x 5 quantity)
    matching = [name for name, gr in grads.items() if gr.shape == DV_NOTES.shape and torch.equal(gr, DV_NOTES)]
    assert matching == ["X"]
    assert [tuple(gr.shape) for gr in grads.values()] == [(5, 5), (3, 3), (3, 3), (1, 1)]
    record_property("evidence", "the example defines X (5x5), K (3x3), Y (3x3), Y' (1x1) and no V; "
                    "the printed dE/dV equals autograd's dE/dX and no other gradient")


@pytest.mark.claim("cnn.example-grad-input", role="corrects")
def test_input_gradient():
    assert_close(cnn.conv_backward_input(b4(DY_NOTES), b4(K))[0, 0], DV_NOTES)
    x = X.clone().requires_grad_()
    F.max_pool2d(cnn.convolve2d(b4(x), b4(K)), 3).sum().backward()
    assert_close(x.grad, DV_NOTES)


@pytest.mark.claim("cnn.correlation-formula", "cnn.transposed-conv")
def test_golden_convolution_outputs(ndarrays_regression):
    # Inputs from numpy's legacy RandomState (its stream is frozen across numpy versions).
    rs = np.random.RandomState(1234)
    x = torch.from_numpy(rs.standard_normal((2, 3, 7, 6)))
    w = torch.from_numpy(rs.standard_normal((4, 3, 3, 3)))
    corr = cnn.correlate2d(x, w, stride=2, padding=1)
    up = cnn.transposed_conv2d(corr, w, stride=2, padding=1)
    assert corr.dtype == up.dtype == torch.float64
    assert corr.shape == (2, 4, 4, 3) and up.shape == (2, 3, 7, 5)
    # The stored file was written from these outputs after they matched torch's own kernels.
    assert_close(corr, F.conv2d(x, w, stride=2, padding=1))
    assert_close(up, F.conv_transpose2d(corr, w, stride=2, padding=1))
    ndarrays_regression.check({"correlate2d": corr.numpy(), "transposed_conv2d": up.numpy()},
                              basename="cnn_conv_outputs", default_tolerance=dict(atol=1e-12, rtol=1e-10))
