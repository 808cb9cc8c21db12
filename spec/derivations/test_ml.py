"""Proofs: Softmax derivative, step by step with sympy (d = 3), then numerically against autograd."""

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import ml
from spec.testing import generator, seeds, tol

D = 3
x = sp.symbols("x0:3", real=True)
y = sp.symbols("y0:3", real=True)
S = sum(sp.exp(xj) for xj in x)
yhat = [sp.exp(xi) / S for xi in x]
L = -sum(y[i] * sp.log(yhat[i]) for i in range(D))
Y = sp.symbols("yh0:3", positive=True)  # y_hat as free symbols, for dL/dy_hat


def zero(e):
    return sp.simplify(sp.expand(e)) == 0


@pytest.mark.symbolic
@pytest.mark.claim("ml.softmax-derivative-diagonal")
def test_diagonal_steps():
    i = 0
    step1 = (sp.exp(x[i]) * S - sp.exp(x[i]) ** 2) / S**2
    step2 = sp.exp(x[i]) / S * (S / S - sp.exp(x[i]) / S)
    step3 = yhat[i] * (1 - yhat[i])
    d = sp.diff(yhat[i], x[i])
    assert zero(d - step1) and zero(step1 - step2) and zero(step2 - step3)
    # and the chain rule dL/dx_i = sum_k dL/dy_hat_k dy_hat_k/dx_i (the proof's first line)
    Ly = -sum(y[k] * sp.log(Y[k]) for k in range(D))
    chain = sum(sp.diff(Ly, Y[k]).subs({Y[j]: yhat[j] for j in range(D)}) * sp.diff(yhat[k], x[i]) for k in range(D))
    assert zero(sp.diff(L, x[i]) - chain)


@pytest.mark.symbolic
@pytest.mark.claim("ml.softmax-derivative-offdiagonal")
def test_offdiagonal_steps():
    i, k = 0, 2
    step1 = -sp.exp(x[i]) * sp.exp(x[k]) / S**2
    assert zero(sp.diff(yhat[k], x[i]) - step1) and zero(step1 + yhat[i] * yhat[k])


@pytest.mark.symbolic
@pytest.mark.claim("ml.nll-derivative")
def test_nll_derivative():
    Ly = -sum(y[k] * sp.log(Y[k]) for k in range(D))
    for k in range(D):
        notes = -y[k] / Y[k]
        assert zero(sp.diff(Ly, Y[k]) - notes)


@pytest.mark.claim("ml.nll-derivative")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(2, 8))
def test_nll_derivative_matches_autograd(seed, d):
    # dL/dy_hat_k = -y_k / y_hat_k for the implementation's NLL, by autograd; y_hat on the simplex
    # (any entry may exceed 1/2), y a soft label. Both sides are one division apart: tol(float64).
    g = generator(seed)
    y_hat = torch.softmax(torch.randn(6, d, generator=g, dtype=torch.float64) * 3, -1).requires_grad_(True)
    yv = torch.softmax(torch.randn(6, d, generator=g, dtype=torch.float64), -1)
    (grad,) = torch.autograd.grad(ml.negative_log_likelihood(y_hat, yv).sum(), y_hat)
    torch.testing.assert_close(grad, -yv / y_hat.detach(), **tol(torch.float64))


@pytest.mark.symbolic
@pytest.mark.claim("ml.softmax-cross-entropy-gradient")
def test_gradient_steps():
    i = 1
    line1 = -(y[i] / yhat[i]) * yhat[i] * (1 - yhat[i]) - sum(y[k] / yhat[k] * (-yhat[i] * yhat[k]) for k in range(D) if k != i)
    line2 = -y[i] + y[i] * yhat[i] + sum(y[k] * yhat[i] for k in range(D) if k != i)
    line3 = -y[i] + yhat[i] * sum(y)
    d = sp.diff(L, x[i])
    assert zero(d - line1) and zero(line1 - line2) and zero(line2 - line3)
    # the last step, = y_hat_i - y_i, uses sum_k y_k = 1 (one-hot)
    assert zero(line3.subs(y[2], 1 - y[0] - y[1]) - (yhat[i] - y[i]))
    assert not zero(line3 - (yhat[i] - y[i]))


@pytest.mark.claim("ml.softmax-derivative-diagonal", "ml.softmax-derivative-offdiagonal")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(1, 8))
def test_softmax_jacobian_matches_autograd(seed, d):
    xs = torch.randn(4, d, generator=generator(seed), dtype=torch.float64) * 5
    # J[b, k, i] = d y_hat_k / d x_i from autograd, one batch element at a time
    J = torch.stack([torch.autograd.functional.jacobian(lambda v: torch.softmax(v, -1), xb) for xb in xs])
    torch.testing.assert_close(ml.softmax_jacobian(xs), J, **tol(torch.float64))
    torch.testing.assert_close(ml.softmax(xs), torch.softmax(xs, -1), **tol(torch.float64))


@pytest.mark.claim("ml.softmax-cross-entropy-gradient", "ml.softmax-nll-setup")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(2, 8), scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_cross_entropy_gradient_matches_autograd(seed, d, scale):
    g = generator(seed)
    xs = (torch.randn(5, d, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    c = torch.randint(d, (5,), generator=g)
    yv = F.one_hot(c, d).double()
    loss = F.cross_entropy(xs, c, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xs)
    out = ml.softmax_cross_entropy_grad(xs.detach(), yv)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, grad, **tol(torch.float64))
    ce = ml.categorical_cross_entropy(xs.detach(), yv)
    assert torch.isfinite(ce).all()
    torch.testing.assert_close(ce, F.cross_entropy(xs.detach(), c, reduction="none"), **tol(torch.float64))
    if scale == 1.0:  # probabilities not underflowing: the notes' NLL of y_hat, literally
        torch.testing.assert_close(ml.negative_log_likelihood(ml.softmax(xs.detach()), yv), ce, **tol(torch.float64))


@pytest.mark.claim("ml.softmax-cross-entropy-gradient")
def test_cross_entropy_gradient_float32_on_device(device):
    xs = torch.randn(64, 10, device=device) * 3
    c = torch.randint(10, (64,), device=device)
    xg = xs.clone().requires_grad_(True)
    F.cross_entropy(xg, c, reduction="sum").backward()
    # float32 softmax of 10 entries: a few ulps of values <= 1, within tol(float32)
    torch.testing.assert_close(ml.softmax_cross_entropy_grad(xs, F.one_hot(c, 10).float()), xg.grad, **tol(torch.float32))
