"""3D Gaussian splatting: the local-affine (EWA) projection of a 3-D Gaussian, derived with sympy and checked
numerically. The camera-frame point is p = m + s e with e ~ N(0, C), C = L L^T, e = L n, n ~ N(0, I); the
pixel is (u, v) = (fx x / z, fy y / z) (the principal point only shifts the mean). Expanding in the scale s,
the covariance of (u, v) is s^2 J C J^T + s^4 K + O(s^6), J the perspective Jacobian at m: no s^3 term, so
the splat's Sigma' = J W Sigma W^T J^T is right to relative O((sigma / z)^2). (The expansion is asymptotic:
the exact perspective image of a Gaussian has no finite moments, z <= 0 having positive probability.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from impl import splatting as gs
from spec.testing import fit_exponent, generator

F64 = torch.float64
ORDER = 4  # expand to s^4

s = sp.Symbol("s", positive=True)
mx, my = sp.symbols("m_x m_y", real=True)
mz, fx, fy = sp.symbols("m_z f_x f_y", positive=True)
l11, l22, l33 = sp.symbols("l11 l22 l33", positive=True)
l21, l31, l32 = sp.symbols("l21 l31 l32", real=True)
n = sp.symbols("n1:4", real=True)
L = sp.Matrix([[l11, 0, 0], [l21, l22, 0], [l31, l32, l33]])
C = L * L.T
J = sp.Matrix([[fx / mz, 0, -fx * mx / mz**2], [0, fy / mz, -fy * my / mz**2]])


def _gauss_moment(k: int) -> int:
    """E[n^k] of a standard normal: 0 for odd k, (k - 1)!! for even k."""
    return 0 if k % 2 else math.prod(range(k - 1, 0, -2))


def _expect(poly_expr):
    """E over independent standard normals n1, n2, n3 of a polynomial in them."""
    p = sp.Poly(sp.expand(poly_expr), *n)
    return sp.Add(*[c * _gauss_moment(a) * _gauss_moment(b) * _gauss_moment(d) for (a, b, d), c in p.terms()])


def _coefficients(num_mean, num_dev, f):
    """s^k coefficients, k <= ORDER, of f (num_mean + s num_dev) / (m_z + s e_z) (a truncated geometric series)."""
    ez = (L * sp.Matrix(n))[2]
    series = sp.expand(f * (num_mean + s * num_dev) / mz * sum((-s * ez / mz) ** k for k in range(ORDER + 1)))
    return [series.coeff(s, k) for k in range(ORDER + 1)]


def _covariance_series():
    e = L * sp.Matrix(n)
    u = _coefficients(mx, e[0], fx)
    v = _coefficients(my, e[1], fy)
    comps = {(0, 0): (u, u), (0, 1): (u, v), (1, 1): (v, v)}
    out = {}
    for ij, (a, b) in comps.items():
        ea, eb = [_expect(t) for t in a], [_expect(t) for t in b]
        out[ij] = [sp.simplify(sum(_expect(a[p] * b[j - p]) - ea[p] * eb[j - p] for p in range(j + 1)))
                   for j in range(ORDER + 1)]
    return out


_SERIES = None


def covariance_series():
    global _SERIES
    if _SERIES is None:
        _SERIES = _covariance_series()
    return _SERIES


@pytest.mark.symbolic
@pytest.mark.claim("splatting.projection", role="corrects")
def test_first_order_covariance_is_j_sigma_jt_with_a_second_order_error(record_property):
    """Cov[(u, v)] = s^2 J C J^T + s^4 K + O(s^6): the s^0, s^1 and s^3 coefficients vanish, the s^2 one is
    J C J^T exactly, and the s^4 one is not zero (the perspective image is not the splat's Gaussian)."""
    series = covariance_series()
    jcj = J * C * J.T
    for (i, j), coeffs in series.items():
        assert coeffs[0] == 0 and coeffs[1] == 0 and coeffs[3] == 0
        assert sp.simplify(coeffs[2] - jcj[i, j]) == 0
    # the s^4 term is there: at the optical axis with an isotropic C it is 3 fx^2 l^4 / m_z^4 in Var u
    iso = {mx: 0, my: 0, l21: 0, l31: 0, l32: 0, l22: l11, l33: l11}
    k4 = sp.simplify(series[0, 0][4].subs(iso))
    assert sp.simplify(k4 - 3 * fx**2 * l11**4 / mz**4) == 0
    record_property("evidence", "Cov[pi(m + s e)] = s^2 J C J^T + s^4 K + O(s^6) (sympy, Isserlis moments); "
                                "on the axis, isotropic: Var u = fx^2 s^2 l^2 / m_z^2 (1 + 3 s^2 l^2 / m_z^2 + ...)")


def _numeric_case(seed=0):
    g = generator(seed)
    view = gs.world_to_camera_look_at(torch.tensor([1.0, -0.5, -4.0], dtype=F64), torch.tensor([0.1, 0.2, 0.0], dtype=F64))
    k = torch.tensor([[76.8, 0.0, 32.0], [0.0, 61.4, 30.0], [0.0, 0.0, 1.0]], dtype=F64)
    m_cam = torch.tensor([0.4, -0.3, 4.2], dtype=F64)
    lower = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [-0.4, 0.2, 0.5]], dtype=F64)
    lower = lower * (1 + 0.1 * torch.rand(3, 3, generator=g, dtype=F64)).tril()
    rot, t = view[:3, :3], view[:3, 3]
    return view, k, m_cam, lower, rot.T @ (m_cam - t), rot


@pytest.mark.symbolic
@pytest.mark.claim("splatting.projection", role="corrects")
def test_splat_covariance_equals_the_derivation_and_the_error_is_second_order(record_property):
    """The implementation's Sigma' (world-frame Sigma = W^T (s^2 C) W through a rotated camera) equals the
    derived s^2 J C J^T; Gauss-Hermite quadrature of the true perspective image (asymptotically exact at
    these scales) differs from it by s^4 K (the derived term) to first order, a fitted exponent of 2; and
    through the affine camera tangent at the mean the image's covariance is Sigma' exactly."""
    view, k, m_cam, lower, m_world, rot = _numeric_case()
    vals = {mx: m_cam[0].item(), my: m_cam[1].item(), mz: m_cam[2].item(), fx: k[0, 0].item(), fy: k[1, 1].item(),
            l11: lower[0, 0].item(), l21: lower[1, 0].item(), l22: lower[1, 1].item(),
            l31: lower[2, 0].item(), l32: lower[2, 1].item(), l33: lower[2, 2].item()}
    series = covariance_series()
    second = torch.tensor([[float(series[min(i, j), max(i, j)][2].subs(vals)) for j in range(2)] for i in range(2)],
                          dtype=F64)
    fourth = torch.tensor([[float(series[min(i, j), max(i, j)][4].subs(vals)) for j in range(2)] for i in range(2)],
                          dtype=F64)
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    grid = np.stack(np.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, 3)
    wts = torch.from_numpy((w[:, None, None] * w[None, :, None] * w[None, None, :]).reshape(-1))
    nodes = torch.from_numpy(grid)
    scales, errors = [0.005, 0.01, 0.02, 0.04], []
    for sc in scales:
        cov_cam = sc**2 * lower @ lower.T
        _, cov2d, z = gs.project_gaussians(m_world[None], (rot.T @ cov_cam @ rot)[None], view, k)
        torch.testing.assert_close(cov2d[0], sc**2 * second, rtol=1e-12, atol=0)
        pts = m_cam + sc * nodes @ lower.T  # camera frame
        uv = pts[:, :2] / pts[:, 2:] * torch.stack([k[0, 0], k[1, 1]]) + k[:2, 2]
        d = uv - (wts[:, None] * uv).sum(0)
        exact = torch.einsum("n,ni,nj->ij", wts, d, d)
        err = exact - cov2d[0]
        # the leading error is s^4 K, right to relative O(s^2): the next term is 0.2 s^2 of it here
        # (seen: 0.2013 s^2 at every s from 0.005 to 0.08), so rtol s^2 leaves a factor 5
        torch.testing.assert_close(err, sc**4 * fourth, rtol=sc**2, atol=0)
        errors.append((err.abs().max() / cov2d[0].abs().max()).item())
        # the affine camera tangent at the mean: x -> pi(W mu) + J W (x - mu) maps the Gaussian to N(mu', Sigma')
        jw = torch.from_numpy(np.array(J.subs(vals).tolist(), dtype=float))  # J in the camera frame; W = rot
        uv_aff = (pts - m_cam) @ jw.T
        d_aff = uv_aff - (wts[:, None] * uv_aff).sum(0)
        torch.testing.assert_close(torch.einsum("n,ni,nj->ij", wts, d_aff, d_aff), cov2d[0], rtol=1e-12, atol=0)
    slope = fit_exponent([sc / m_cam[2].item() for sc in scales], errors)
    assert 1.95 < slope < 2.05
    record_property("evidence", f"relative error of Sigma' against the quadrature of the perspective image: "
                                f"{', '.join(f'{e:.1e}' for e in errors)} at s = {scales}: exponent {slope:.3f}; "
                                f"equal to s^4 K of the derivation; exact through the tangent affine camera")
