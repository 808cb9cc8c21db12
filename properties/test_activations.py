"""The activation table: values against the table's formulas, derivatives against autograd and
sympy, ranges, saturation, and ReLU'(0)."""

import math

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import activations as A
from spec.testing import finite_arrays, tol

X = sp.Symbol("x", real=True)
TABLE = {  # the table's f and f', written with sympy
    "sigmoid": (1 / (1 + sp.exp(-X)), lambda f: f * (1 - f)),
    "tanh": ((sp.exp(X) - sp.exp(-X)) / (sp.exp(X) + sp.exp(-X)), lambda f: 1 - f**2),
}


@pytest.mark.claim("activations.sigmoid", "activations.tanh")
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_table_derivative_symbolic(name):
    f, fprime_of_f = TABLE[name]
    assert sp.simplify(sp.diff(f, X) - fprime_of_f(f)) == 0


@pytest.mark.claim("activations.sigmoid", "activations.tanh", "activations.relu-value-range")
@settings(max_examples=10)
@given(x=finite_arrays((17,), lo=-30, hi=30))
def test_formulas_match_fused_and_autograd(x):
    x = torch.from_numpy(x)
    for name, formula in [("sigmoid", A.sigmoid_formula), ("tanh", A.tanh_formula), ("relu", A.relu_formula)]:
        fused, deriv = A.ACTIVATIONS[name]
        torch.testing.assert_close(formula(x), fused(x), **tol(torch.float64))
        # the table's derivatives against autograd (away from ReLU's kink, see relu-derivative)
        xs = x[x != 0].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(formula(xs).sum(), xs)
        torch.testing.assert_close(deriv(xs.detach()), g, **tol(torch.float64))
    # independent values: math.tanh / logistic in Python floats
    torch.testing.assert_close(A.tanh(x), torch.tensor([math.tanh(v) for v in x.tolist()], dtype=x.dtype))
    torch.testing.assert_close(A.sigmoid(x), torch.tensor([1 / (1 + math.exp(-v)) for v in x.tolist()], dtype=x.dtype))


@pytest.mark.claim("activations.sigmoid", "activations.tanh", "activations.relu-value-range")
def test_ranges(device):
    # ranges are open in exact arithmetic: check well inside float64's resolution, then the limits
    # |x| <= 15: there 1 - |tanh| >= 1e-13 and 1 - sigmoid >= 3e-7, far above float64's 1.1e-16
    x = torch.linspace(-15, 15, 2001, dtype=torch.float64, device=device)
    s, t, r = A.sigmoid_formula(x), A.tanh_formula(x), A.relu(x)
    assert bool((s > 0).all() and (s < 1).all())
    assert bool((t > -1).all() and (t < 1).all())
    assert bool((r >= 0).all()) and r.min().item() == 0.0
    # relu is unbounded above, sigmoid/tanh approach their open ends
    assert A.relu(torch.tensor([1e300], dtype=torch.float64)).item() == 1e300
    big = torch.tensor([-700.0, 700.0], dtype=torch.float64, device=device)
    assert torch.isfinite(A.sigmoid_formula(big)).all() and torch.isfinite(A.tanh_formula(big)).all()
    torch.testing.assert_close(A.tanh_formula(big).cpu(), torch.tensor([-1.0, 1.0], dtype=torch.float64))


@pytest.mark.claim("activations.sigmoid", "activations.tanh", "activations.relu-value-range")
def test_float32_on_device(device):
    x = torch.linspace(-20, 20, 1001, dtype=torch.float32, device=device)
    x64 = x.double()
    for formula, ref in [(A.sigmoid_formula, torch.sigmoid), (A.tanh_formula, torch.tanh), (A.relu_formula, torch.relu)]:
        # float32 rounding of exp and one division: a few ulps, within tol(float32)
        torch.testing.assert_close(formula(x).double(), ref(x64), **tol(torch.float32))


@pytest.mark.claim("activations.relu-derivative", role="refutes")
def test_relu_derivative_at_zero_does_not_exist(record_property):
    # one-sided difference quotients of max(0, x) at 0 are exactly 0 and 1: no derivative exists
    for h in [1e-3, 1e-8]:
        zero = torch.zeros((), dtype=torch.float64)
        hh = torch.tensor(h, dtype=torch.float64)
        right = (A.relu(zero + hh) - A.relu(zero)) / hh
        left = (A.relu(zero) - A.relu(zero - hh)) / hh
        assert right.item() == 1.0 and left.item() == 0.0
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(torch.relu(x).sum(), x)
    notes = A.relu_derivative(x.detach())
    assert notes.item() == 1.0 and g.item() == 0.0
    record_property("evidence", "at x=0: right quotient 1, left quotient 0; notes' [x>=0] gives 1, torch autograd gives 0")


@pytest.mark.claim("activations.relu-derivative", role="corrects")
def test_relu_derivative_away_from_zero_and_subgradient():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    x = x[x != 0].requires_grad_(True)
    (g,) = torch.autograd.grad(torch.relu(x).sum(), x)
    torch.testing.assert_close(A.relu_derivative(x.detach()), g)
    torch.testing.assert_close(A.relu_derivative(x.detach()), (x.detach() > 0).double())
    # at 0 both choices are subgradients: relu(y) >= relu(0) + s y for all y, s in [0, 1]
    y = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    for s in [0.0, 1.0, A.relu_derivative(torch.zeros(1, dtype=torch.float64)).item()]:
        assert bool((torch.relu(y) >= s * y).all())
    assert not bool((torch.relu(y) >= 1.5 * y).all())  # and nothing outside [0, 1] is


@pytest.mark.claim("activations.saturation")
def test_saturation_bounds_and_vanishing_products():
    x = torch.linspace(-40, 40, 4001, dtype=torch.float64)
    # sigma' = e^-|x| / (1 + e^-|x|)^2 and tanh' = 4 e^-2|x| / (1 + e^-2|x|)^2: the bounds are tight at
    # large |x|, so allow a relative 1e-12 for the rounding of sigma (1 - sigma)
    assert bool((A.sigmoid_derivative(x) <= torch.exp(-x.abs()) * (1 + 1e-12)).all())
    assert bool((A.tanh_derivative(x) <= 4 * torch.exp(-2 * x.abs()) * (1 + 1e-12) + 1e-16).all())
    # at |x| = 5: sigma' < 0.007, tanh' < 2e-4; through 10 such layers the product is < 1e-21
    z = torch.tensor([5.0, -5.0], dtype=torch.float64)
    assert A.sigmoid_derivative(z).max() < 7e-3 and A.tanh_derivative(z).max() < 2e-4
    assert A.sigmoid_derivative(z).max() ** 10 < 1e-21
    # maximum slopes: sigma'(0) = 1/4, tanh'(0) = 1 (so even unsaturated sigmoid chains shrink like 4^-L)
    assert A.sigmoid_derivative(torch.zeros(1, dtype=torch.float64)).item() == 0.25
    assert A.sigmoid_derivative(x).max().item() == 0.25


@pytest.mark.claim("activations.tanh-linear-near-zero")
def test_tanh_linear_near_zero():
    assert sp.series(sp.tanh(X), X, 0, 4).removeO() == X - X**3 / 3
    x = torch.logspace(-6, -1, 20, dtype=torch.float64)
    err = (A.tanh(x) - x).abs()
    # |tanh x - x| <= x^3 / 3 (alternating series), plus one rounding of tanh: 1.2e-16 x
    assert bool((err <= x**3 / 3 + 1.2e-16 * x).all()) and err[-1] > 0
    assert A.tanh_derivative(torch.zeros(1, dtype=torch.float64)).item() == 1.0


@pytest.mark.claim("activations.relu-unbounded")
@settings(max_examples=10)
@given(gain=st.floats(1.1, 3.0), depth=st.integers(1, 20))
def test_relu_blows_up(gain, depth):
    x = torch.linspace(0.1, 1.0, 8, dtype=torch.float64)
    z = x
    for _ in range(depth):
        z = A.relu(gain * z)  # positive homogeneity: relu(g z) = g relu(z)
    torch.testing.assert_close(z, gain**depth * x)
    assert A.relu(torch.tensor([1e10], dtype=torch.float64)).item() == 1e10  # no upper bound


@pytest.mark.parametrize("fn", [A.sigmoid, A.tanh, A.relu, A.sigmoid_formula, A.tanh_formula, A.relu_formula,
                                A.sigmoid_derivative, A.tanh_derivative, A.relu_derivative])
def test_bad_input(fn):
    with pytest.raises(TypeError, match="^x: "):
        fn([1.0, 2.0])
    with pytest.raises(TypeError, match="^x: "):
        fn(torch.arange(3))


@pytest.mark.claim("activations.finite-range-benefits")
@settings(max_examples=25)
@given(gain=st.floats(0.5, 50.0), depth=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_bounded_activations_stay_bounded_at_any_depth(gain, depth, seed):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(16, 8, generator=g, dtype=torch.float64)
    Ws = gain * torch.randn(depth, 8, 8, generator=g, dtype=torch.float64)
    hs, ht, hr = h0, h0, h0
    for W in Ws:
        hs, ht, hr = A.sigmoid(hs @ W), A.tanh(ht @ W), A.relu(hr @ W)
        assert bool(((hs >= 0) & (hs <= 1)).all()) and bool((ht.abs() <= 1).all())
    # ReLU with a positive gain on positive inputs: exactly gain^depth times the input (no bound)
    x = torch.linspace(0.5, 1.0, 4, dtype=torch.float64)
    z = x
    for _ in range(depth):
        z = A.relu(gain * z)
    torch.testing.assert_close(z, gain ** depth * x, rtol=1e-12, atol=0)


@pytest.mark.claim("activations.finite-range-benefits")
def test_sigmoid_maps_to_a_bernoulli_parameter():
    # |x| <= 15: 1 - sigma(x) >= 3e-7 keeps the probability form's cancellation below 1e-9 (eps / 3e-7)
    x = torch.linspace(-15, 15, 61, dtype=torch.float64)
    p = A.sigmoid(x)
    assert bool(((p > 0) & (p < 1)).all())
    dist = torch.distributions.Bernoulli(probs=p)                 # a valid distribution for every logit
    y = (torch.arange(61) % 2).double()
    torch.testing.assert_close(-dist.log_prob(y), torch.nn.functional.binary_cross_entropy_with_logits(
        x, y, reduction="none"), rtol=0, atol=1e-9)
    torch.testing.assert_close(-torch.log(p), torch.log1p(torch.exp(-x)), rtol=0, atol=1e-12)


def _mlp_grads(act, params, x, y):
    h = x
    for W, b in params[:-1]:
        h = act(h @ W.T + b)
    W, b = params[-1]
    loss = ((h @ W.T + b - y) ** 2).mean()
    flat = [t for pair in params for t in pair]
    return loss, torch.autograd.grad(loss, flat)


def _mlp(seed, depth=6, width=32, bias=0.0):
    g = torch.Generator().manual_seed(seed)
    dims = [1] + [width] * depth + [1]
    return [((torch.randn(o, i, generator=g, dtype=torch.float64) / math.sqrt(i)).requires_grad_(),
             torch.full((o,), bias if k < depth else 0.0, dtype=torch.float64).requires_grad_())
            for k, (i, o) in enumerate(zip(dims, dims[1:]))]


@pytest.mark.claim("activations.relu-faster-convergence", role="refutes")
def test_dead_relu_units_get_no_gradient(record_property):
    # hidden biases -10 with inputs in [-2, 2] and weights ~ 1: every hidden pre-activation is negative
    x = torch.linspace(-2, 2, 64, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x)
    params = _mlp(0, depth=2, bias=-10.0)
    loss, grads = _mlp_grads(A.relu, params, x, y)
    assert all(float(g.abs().max()) == 0.0 for g in grads[:-2])        # no hidden parameter moves, ever
    _, grads_t = _mlp_grads(A.tanh, _mlp(0, depth=2, bias=-10.0), x, y)
    assert float(grads_t[0].abs().max()) > 0                            # tanh still passes a gradient
    record_property("evidence", "ReLU MLP with every hidden unit dead (bias -10): all hidden gradients exactly 0")


@pytest.mark.claim("activations.relu-faster-convergence", role="corrects")
def test_relu_gradient_does_not_vanish_with_depth():
    # at the same initialisation, the first layer's gradient through 6 sigmoid layers is far smaller
    x = torch.linspace(-2, 2, 64, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x)
    norms = {}
    for name, act in (("relu", A.relu), ("sigmoid", A.sigmoid)):
        _, grads = _mlp_grads(act, _mlp(1), x, y)
        norms[name] = float(grads[0].norm())
    # sigma' <= 1/4 per layer: six layers shrink the backpropagated signal by up to 4^-6
    assert norms["relu"] > 100 * norms["sigmoid"]


@pytest.mark.slow
@pytest.mark.claim("activations.relu-faster-convergence", role="corrects")
def test_relu_mlp_trains_faster_than_sigmoid_and_tanh(record_property):
    x = torch.linspace(-2, 2, 128, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x)
    final = {}
    for name, act in (("relu", A.relu), ("sigmoid", A.sigmoid), ("tanh", A.tanh)):
        params = _mlp(0)
        for _ in range(600):
            loss, grads = _mlp_grads(act, params, x, y)
            with torch.no_grad():
                for p, g in zip([t for pair in params for t in pair], grads):
                    p -= 0.05 * g
        final[name] = float(loss)
    assert final["relu"] < 0.01 and final["relu"] < final["tanh"] < final["sigmoid"]
    record_property("evidence", "6-layer MLP on sin 2x, GD step 0.05, 600 steps, same init: training loss "
                    + ", ".join(f"{k} {v:.3g}" for k, v in final.items()))


@pytest.mark.claim("activations.tanh-linear-near-zero")
def test_tanh_formula_is_accurate_near_zero():
    # tanh(x) = x (1 - x^2/3 + ...): the table's formula keeps its relative accuracy for tiny |x|
    x = torch.tensor([-1e-12, -1e-8, 1e-10, 1e-6, 1e-3], dtype=torch.float64)
    torch.testing.assert_close(A.tanh_formula(x), torch.tanh(x), rtol=4e-16, atol=0)
    torch.testing.assert_close(A.tanh_formula(x), x - x ** 3 / 3 + 2 * x ** 5 / 15, rtol=1e-15, atol=0)
