"""Symbolic checks of the implicit-representation proofs and appendix: implicit differentiation,
the DVR depth gradient, the secant method, planes and the torus."""

import pytest
import sympy as sp

pytestmark = pytest.mark.symbolic


@pytest.mark.claim("implicit.implicit-derivative-circle")
def test_implicit_derivative_of_circle_step_by_step():
    x = sp.symbols("x", real=True)
    y = sp.Function("y")(x)
    Y, dY = sp.symbols("Y dY")
    # d/dx (x^2 + y^2) = d/dx 1
    lhs = sp.diff(x**2 + y**2, x)
    assert sp.diff(sp.Integer(1), x) == 0
    # d/dx x^2 = 2x;  d/dx y^2 = (d/dy y^2) dy/dx = 2 y dy/dx
    assert sp.diff(x**2, x) == 2 * x
    chain = sp.diff(Y**2, Y).subs(Y, y) * sp.diff(y, x)
    assert sp.simplify(sp.diff(y**2, x) - chain) == 0
    assert sp.simplify(lhs - (2 * x + 2 * y * sp.diff(y, x))) == 0
    # solve 2x + 2y y' = 0
    sol = sp.solve(sp.Eq(lhs.subs(sp.diff(y, x), dY), 0), dY)
    assert sol == [-x / y]
    # sympy's own implicit differentiation and the explicit branches y = +-sqrt(1 - x^2)
    X, Yv = sp.symbols("X Yv")
    assert sp.simplify(sp.idiff(X**2 + Yv**2 - 1, Yv, X) + X / Yv) == 0
    for branch in (sp.sqrt(1 - x**2), -sp.sqrt(1 - x**2)):
        assert sp.simplify(sp.diff(branch, x) - (-x / branch)) == 0


@pytest.mark.claim("implicit.dvr-implicit-gradient")
def test_dvr_depth_gradient_sphere_symbolic():
    """f_theta(p) = |p - c| - rho (theta = (c, rho)), ray p = r0 + d w along the z axis with offset:
    the closed-form depth's derivative equals -(df/dp . w)^{-1} df/dtheta."""
    a, b, h, cx, cy, cz = sp.symbols("a b h c_x c_y c_z", real=True)
    rho = sp.symbols("rho", positive=True)
    r0 = sp.Matrix([a, b, -h])
    w = sp.Matrix([0, 0, 1])
    c = sp.Matrix([cx, cy, cz])
    # nearest root of |r0 + d w - c| = rho (entry point of the sphere)
    d_hat = cz + h - sp.sqrt(rho**2 - (a - cx) ** 2 - (b - cy) ** 2)
    p_hat = r0 + d_hat * w
    P = sp.Matrix(sp.symbols("p1 p2 p3", real=True))
    f = sp.sqrt(((P - c).T * (P - c))[0]) - rho
    grad_p = sp.Matrix([sp.diff(f, pi) for pi in P]).subs(dict(zip(P, p_hat)))
    for theta in (rho, cx, cy, cz):
        df_dtheta = sp.diff(f, theta).subs(dict(zip(P, p_hat)))
        formula = -(df_dtheta / (grad_p.T * w)[0])
        direct = sp.diff(d_hat, theta)
        vals = {a: sp.Rational(1, 5), b: sp.Rational(-1, 7), h: 3, rho: sp.Rational(4, 5), cx: sp.Rational(1, 10),
                cy: 0, cz: sp.Rational(1, 3)}
        assert abs(sp.N(f.subs(dict(zip(P, p_hat))).subs(vals), 30)) < 1e-25
        assert abs(sp.N((formula - direct).subs(vals), 30)) < 1e-25
        # and symbolically, on the entry branch (inside the ray's reach)
        assert sp.simplify((formula - direct).subs({cz: 0, cy: 0, cx: 0})) == 0


@pytest.mark.claim("implicit.secant-line")
def test_secant_line_through_both_points():
    x, x0, x1 = sp.symbols("x x_0 x_1", real=True)
    f = sp.Function("f")
    y = (f(x1) - f(x0)) / (x1 - x0) * (x - x1) + f(x1)
    assert sp.simplify(y.subs(x, x1) - f(x1)) == 0
    assert sp.simplify(y.subs(x, x0) - f(x0)) == 0
    assert sp.diff(y, x, 2) == 0  # a line


@pytest.mark.claim("implicit.secant-root")
def test_secant_root_formula():
    x, x0, x1 = sp.symbols("x x_0 x_1", real=True)
    f0, f1 = sp.symbols("f_0 f_1", real=True)
    y = (f1 - f0) / (x1 - x0) * (x - x1) + f1
    (root,) = sp.solve(sp.Eq(y, 0), x)
    assert sp.simplify(root - (x1 - f1 * (x1 - x0) / (f1 - f0))) == 0


@pytest.mark.claim("implicit.secant-approximates-newton")
def test_secant_tends_to_newton():
    x0, x1 = sp.symbols("x_0 x_1", real=True)
    f = sp.Function("f")
    secant = x1 - f(x1) * (x1 - x0) / (f(x1) - f(x0))
    newton = x1 - f(x1) / sp.diff(f(x1), x1)
    # the chord slope tends to f'(x1) as x0 -> x1, so the step tends to Newton's
    fx = sp.exp(x1) + x1**3  # any smooth concrete f
    chord = (fx - fx.subs(x1, x0)) / (x1 - x0)
    assert sp.simplify(sp.limit(chord, x0, x1) - sp.diff(fx, x1)) == 0
    sec_c = secant.subs(f(x1), fx).subs(f(x0), fx.subs(x1, x0))
    new_c = newton.subs(sp.Derivative(f(x1), x1), sp.diff(fx, x1)).subs(f(x1), fx)
    assert sp.simplify(sp.limit(sec_c, x0, x1) - new_c) == 0
    # the order p of e_{k+1} ~ C e_k e_{k-1} solves p^2 = p + 1: the golden ratio
    p = sp.symbols("p", positive=True)
    assert sp.solve(p**2 - p - 1, p) == [(1 + sp.sqrt(5)) / 2]


@pytest.mark.claim("implicit.plane-from-intercepts")
def test_plane_from_intercepts():
    x, y, z = sp.symbols("x y z", real=True)
    x1, y1, z1 = sp.symbols("x_1 y_1 z_1", real=True, nonzero=True)
    plane = x / x1 + y / y1 + z / z1 - 1
    for pt in ((x1, 0, 0), (0, y1, 0), (0, 0, z1)):
        assert sp.simplify(plane.subs({x: pt[0], y: pt[1], z: pt[2]})) == 0
    # it is a plane (linear) with normal (1/x1, 1/y1, 1/z1), parallel to the cross product of two edges
    n = sp.Matrix([sp.diff(plane, v) for v in (x, y, z)])
    edges = sp.Matrix([0, y1, 0]) - sp.Matrix([x1, 0, 0]), sp.Matrix([0, 0, z1]) - sp.Matrix([x1, 0, 0])
    assert sp.simplify(n.cross(edges[0].cross(edges[1]))) == sp.zeros(3, 1)


@pytest.mark.claim("implicit.plane-from-cross-product", role="corrects")
def test_cross_product_plane_general():
    P = [sp.Matrix(sp.symbols(f"p{i}_1:4", real=True)) for i in range(3)]
    a, b = P[1] - P[0], P[2] - P[0]
    n = sp.Matrix([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])
    assert sp.simplify(n - a.cross(b)) == sp.zeros(3, 1)
    k = -(n.T * P[0])[0]
    for Pi in P:
        assert sp.expand((n.T * Pi)[0] + k) == 0


@pytest.mark.claim("implicit.plane-from-cross-product", role="refutes")
def test_cross_product_of_parallel_vectors_vanishes():
    a1, a2, a3, s = sp.symbols("a1 a2 a3 s", real=True)
    a = sp.Matrix([a1, a2, a3])
    assert sp.simplify(a.cross(s * a)) == sp.zeros(3, 1)


@pytest.mark.claim("implicit.torus-equation")
def test_torus_parametric_satisfies_equation():
    u, v = sp.symbols("u v", real=True)
    R, r = sp.symbols("R r", positive=True)
    X = (R + r * sp.cos(v)) * sp.cos(u)
    Y = (R + r * sp.cos(v)) * sp.sin(u)
    Z = r * sp.sin(v)
    rho = sp.sqrt(sp.simplify(sp.trigsimp(X**2 + Y**2)))
    # sqrt(x^2 + y^2) = R + r cos v (>= 0 for the ring torus R > r)
    assert sp.simplify(rho - sp.Abs(R + r * sp.cos(v))) == 0
    eq = (R + r * sp.cos(v) - R) ** 2 + Z**2 - r**2
    assert sp.simplify(eq) == 0
    # centred at 0 and symmetric about the z axis: invariant under rotation about z
    x, y, z, phi = sp.symbols("x y z phi", real=True)
    F = (sp.sqrt(x**2 + y**2) - R) ** 2 + z**2 - r**2
    rot = F.subs({x: x * sp.cos(phi) - y * sp.sin(phi), y: x * sp.sin(phi) + y * sp.cos(phi)}, simultaneous=True)
    assert sp.simplify(rot - F) == 0
