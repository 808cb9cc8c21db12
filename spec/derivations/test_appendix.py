"""Appendix: the derivative rules and the matrix determinant lemma, with sympy."""

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import appendix
from spec.testing import generator, seeds, tol

x = sp.Symbol("x", real=True)
f, g = sp.Function("f"), sp.Function("g")


@pytest.mark.symbolic
@pytest.mark.claim("appendix.product-rule")
def test_product_rule():
    assert sp.simplify(sp.diff(f(x) * g(x), x) - (sp.diff(f(x), x) * g(x) + f(x) * sp.diff(g(x), x))) == 0


@pytest.mark.symbolic
@pytest.mark.claim("appendix.quotient-rule")
def test_quotient_rule():
    rhs = (sp.diff(f(x), x) * g(x) - f(x) * sp.diff(g(x), x)) / g(x) ** 2
    assert sp.simplify(sp.diff(f(x) / g(x), x) - rhs) == 0


@pytest.mark.symbolic
@pytest.mark.claim("appendix.chain-rule")
def test_chain_rule():
    lhs = sp.diff(f(g(x)), x)
    u = sp.Symbol("u")
    rhs = sp.diff(f(u), u).subs(u, g(x)) * sp.diff(g(x), x)
    assert sp.simplify(lhs - rhs.doit()) == 0


@pytest.mark.symbolic
@pytest.mark.claim("appendix.inverse-rule", role="corrects")
@pytest.mark.parametrize("fn,inv,dom", [
    (lambda t: sp.exp(t), lambda y: sp.log(y), sp.Symbol("y", positive=True)),
    (lambda t: sp.sinh(t), lambda y: sp.asinh(y), sp.Symbol("y", real=True)),
    (lambda t: sp.tanh(t), lambda y: sp.atanh(y), sp.Symbol("y", real=True)),
])
def test_inverse_rule(fn, inv, dom):
    t = sp.Symbol("t", real=True)
    fp = sp.diff(fn(t), t)
    assert sp.simplify(sp.diff(inv(dom), dom) - 1 / fp.subs(t, inv(dom))) == 0


@pytest.mark.symbolic
@pytest.mark.claim("appendix.inverse-rule", role="refutes")
def test_inverse_rule_fails_where_the_derivative_vanishes():
    # f(x) = x^3 is invertible on R, but f'(f^{-1}(0)) = 0: the printed right side is 1/0 and the
    # difference quotients of f^{-1}(y) = y^(1/3) at 0 grow without bound
    x, h = sp.symbols("x h", positive=True)
    fp = sp.diff(x ** 3, x)
    assert fp.subs(x, 0) == 0
    assert sp.limit((h ** sp.Rational(1, 3) - 0) / h, h, 0, "+") == sp.oo


@pytest.mark.symbolic
@pytest.mark.claim("appendix.log-derivative")
def test_log_derivative():
    xp = sp.Symbol("x", positive=True)
    assert sp.diff(sp.log(xp), xp) == 1 / xp


@pytest.mark.symbolic
@pytest.mark.claim("appendix.matrix-determinant-lemma")
def test_matrix_determinant_lemma_symbolic():
    n = 3
    A = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"a{i}{j}"))
    u = sp.Matrix(n, 1, lambda i, j: sp.Symbol(f"u{i}"))
    v = sp.Matrix(n, 1, lambda i, j: sp.Symbol(f"v{i}"))
    # (1 + v^T A^-1 u) det A = det A + v^T adj(A) u: a polynomial identity, no division by det A
    rhs = A.det() + (v.T * A.adjugate() * u)[0, 0]
    assert sp.expand((A + u * v.T).det() - rhs) == 0


@pytest.mark.claim("appendix.matrix-determinant-lemma")
@settings(max_examples=10)
@given(seed=seeds(), d=st.integers(1, 6))
def test_matrix_determinant_lemma_numeric(seed, d):
    gen = generator(seed)
    A = torch.randn(3, d, d, generator=gen, dtype=torch.float64) + 2 * torch.eye(d, dtype=torch.float64)
    u, v = torch.randn(2, 3, d, generator=gen, dtype=torch.float64)
    ref = torch.linalg.det(A + u[:, :, None] * v[:, None, :])
    torch.testing.assert_close(appendix.det_rank_one_update(A, u, v), ref, rtol=1e-8, atol=1e-10)


def test_bad_input():
    with pytest.raises(ValueError, match="A"):
        appendix.det_rank_one_update(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="v"):
        appendix.det_rank_one_update(torch.eye(2), torch.zeros(2), torch.zeros(3))
