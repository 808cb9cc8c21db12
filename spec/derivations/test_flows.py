"""Flows: the change of variables, the coupling Jacobian and volume preservation, symbolically."""

from __future__ import annotations

import pytest
import sympy as sp

pytestmark = pytest.mark.symbolic


@pytest.mark.claim("flows.change-of-variables")
def test_change_of_variables_1d_symbolic():
    x, z = sp.symbols("x z", real=True)
    p_z = sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi)
    f = sp.sinh(z)                      # x = f(z), f^{-1}(x) = asinh(x)
    f_inv = sp.asinh(x)
    inverse_form = p_z.subs(z, f_inv) * sp.Abs(sp.diff(f_inv, x))
    forward_form = (p_z / sp.Abs(sp.diff(f, z))).subs(z, f_inv)
    assert sp.simplify(inverse_form - forward_form) == 0
    # The density of x integrates to one: substituting x = sinh(z), dx = cosh(z) dz turns the
    # integrand back into p_z, which integrates to one.
    # asinh(sinh(z)) = z for real z (sympy leaves it unevaluated).
    back = (inverse_form.subs(x, sp.sinh(z)) * sp.cosh(z)).subs(sp.asinh(sp.sinh(z)), z)
    assert sp.simplify(back - p_z) == 0
    assert sp.integrate(p_z, (z, -sp.oo, sp.oo)) == 1


@pytest.mark.claim("flows.coupling-jacobian", role="corrects")
@pytest.mark.claim("flows.volume-preserving")
def test_coupling_jacobian_symbolic():
    x1, x2 = sp.symbols("x1 x2", real=True)
    s, t = sp.Function("s"), sp.Function("t")
    y = sp.Matrix([x1 * sp.exp(s(x2)) + t(x2), x2])        # y^A = h(x^A, beta(x^B)), y^B = x^B
    jac = y.jacobian([x1, x2])
    h_prime = sp.exp(s(x2))                                  # dh/dx^A
    dh_dbeta_beta_prime = x1 * sp.exp(s(x2)) * sp.diff(s(x2), x2) + sp.diff(t(x2), x2)
    assert sp.simplify(jac - sp.Matrix([[h_prime, dh_dbeta_beta_prime], [0, 1]])) == sp.zeros(2, 2)
    assert sp.simplify(jac.det() - sp.exp(s(x2))) == 0      # log|det| = s(x^B)
    # Additive coupling h = x^A + t(x^B): det = 1, volume preserving.
    y_add = sp.Matrix([x1 + t(x2), x2])
    assert sp.simplify(y_add.jacobian([x1, x2]).det()) == 1
    # Inverse: h^{-1}(y^A, beta(y^B)) = (y^A - t) exp(-s).
    y1, y2 = sp.symbols("y1 y2", real=True)
    x1_back = (y1 - t(y2)) * sp.exp(-s(y2))
    assert sp.simplify(x1_back.subs({y1: y[0], y2: x2}) - x1) == 0
