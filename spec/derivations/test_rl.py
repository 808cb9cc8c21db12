"""Symbolic checks of the reinforcement-learning derivations (Bellman recursion, the contraction
proof's algebra, value iteration's closed form on one state, the log-derivative trick and the
log-probability of a trajectory)."""

from __future__ import annotations

import pytest
import sympy as sp

pytestmark = pytest.mark.symbolic


@pytest.mark.claim("rl.bellman-expectation")
def test_return_recursion():
    # G_t = sum_{k=0}^{n} gamma^k R_{t+k+1} = R_{t+1} + gamma G_{t+1} for any horizon n (here n = 6)
    g = sp.Symbol("gamma")
    R = sp.symbols("R1:9")
    n = 6

    def G(t):  # rewards R_{t+1}, ..., R_{t+n+1}, the tail beyond index 8 being zero
        return sum(g ** k * (R[t + k] if t + k < len(R) else 0) for k in range(n + 2))

    assert sp.expand(G(0) - (R[0] + g * G(1))) == 0


@pytest.mark.claim("rl.proof-contraction-steps")
def test_rewards_cancel_in_the_contraction_proof():
    # sum_{s'} p (r + gamma V1(s')) - sum_{s'} p (r + gamma V2(s')) = gamma sum_{s'} p (V1(s') - V2(s'))
    g, r = sp.symbols("gamma r")
    p = sp.symbols("p1:4")
    V1, V2 = sp.symbols("a1:4"), sp.symbols("b1:4")
    lhs = sum(pi * (r + g * v) for pi, v in zip(p, V1)) - sum(pi * (r + g * v) for pi, v in zip(p, V2))
    rhs = g * sum(pi * (v1 - v2) for pi, v1, v2 in zip(p, V1, V2))
    assert sp.expand(lhs - rhs) == 0


@pytest.mark.claim("rl.vi-finite-steps", role="refutes")
def test_value_iteration_closed_form_on_one_state():
    # V_{k+1} = r + gamma V_k, V_0 = 0: V_k = r (1 - gamma^k) / (1 - gamma) never equals r / (1 - gamma)
    k = sp.Symbol("k", integer=True, nonnegative=True)
    g = sp.Symbol("gamma", positive=True)
    r = sp.Symbol("r", positive=True)
    V = sp.Function("V")
    sol = sp.rsolve(V(k + 1) - r - g * V(k), V(k), {V(0): 0})
    assert sp.simplify(sol - r * (1 - g ** k) / (1 - g)) == 0
    gap = sp.simplify(r / (1 - g) - sol)
    assert sp.simplify(gap - r * g ** k / (1 - g)) == 0        # > 0 for every k when 0 < gamma < 1


@pytest.mark.claim("rl.proof-log-derivative")
def test_log_derivative_trick():
    th = sp.Symbol("theta")
    p = sp.Function("p", positive=True)(th)
    assert sp.simplify(sp.diff(p, th) - p * sp.diff(sp.log(p), th)) == 0
    # and on a concrete softmax probability
    q = sp.exp(th) / (sp.exp(th) + sp.exp(2 - th))
    assert sp.simplify(sp.diff(q, th) - q * sp.diff(sp.log(q), th)) == 0


@pytest.mark.claim("rl.proof-log-trajectory", role="corrects")
def test_grad_log_trajectory_drops_dynamics():
    th = sp.Symbol("theta")
    p1, d1, d2 = sp.symbols("p_s1 p_s2 p_s3", positive=True)        # dynamics: free of theta
    pi = [sp.exp(c * th) / (sp.exp(c * th) + 1) for c in (1, -2, 3)]  # pi_theta(a_t | s_t)
    log_p = sp.log(p1 * pi[0] * d1 * pi[1] * d2 * pi[2])
    assert sp.simplify(sp.diff(log_p, th) - sum(sp.diff(sp.log(x), th) for x in pi)) == 0


@pytest.mark.claim("rl.proof-log-trajectory", role="refutes")
def test_log_trajectory_keeps_dynamics_terms():
    p1, d1 = sp.Rational(1, 2), sp.Rational(1, 3)                    # a random start, a slippery move
    pi = sp.symbols("pi1 pi2", positive=True)
    log_p = sp.expand_log(sp.log(p1 * pi[0] * d1 * pi[1]), force=True)
    assert sp.simplify(log_p - (sp.log(pi[0]) + sp.log(pi[1]))) == -sp.log(6)
