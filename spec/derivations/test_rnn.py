"""Proofs: BPTT (the recursion and its unrolled sum, sympy for a scalar RNN and numerically with full
Jacobians), and BPTT divergence (both directions, as written), with the gradient-norm figure."""

import math

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import rnn
from spec.testing import generator, seeds, tol


@pytest.mark.symbolic
@pytest.mark.claim("rnn.bptt-recursion")
def test_bptt_recursion_scalar_sympy():
    # h_t = tanh(w h_{t-1} + u x_t), T = 3, all symbolic; rho(w) = w is the "immediate" copy of w
    w, u, h0 = sp.symbols("w u h0", real=True)
    xs = sp.symbols("x1:4", real=True)
    r = sp.Symbol("r", real=True)  # rho(W), held apart from the recurrence
    hs = [h0]
    for x in xs:
        hs.append(sp.tanh(w * hs[-1] + u * x))
    T = 3
    total = sp.diff(hs[T], w)
    # d+h_k/dw: differentiate through rho only, h_{k-1} held fixed
    Hprev = sp.Symbol("Hprev", real=True)
    plus = [None] + [sp.diff(sp.tanh(r * Hprev + u * xs[k - 1]), r).subs({r: w, Hprev: hs[k - 1]}) for k in range(1, T + 1)]
    # dh_t/dh_k as the product of one-step derivatives dh_i/dh_{i-1} = f'(a_i) w
    step = [None] + [sp.diff(sp.tanh(w * Hprev + u * xs[i - 1]), Hprev).subs(Hprev, hs[i - 1]) for i in range(1, T + 1)]
    dhdh = lambda t, k: sp.Mul(*[step[i] for i in range(k + 1, t + 1)])
    # the recursion dh_t/dw = d+h_t/dw + dh_t/dh_{t-1} dh_{t-1}/dw, and its unrolled sum: the exact
    # symbolic expressions are compared at random points with 50-digit arithmetic (simplify of the
    # nested tanh takes a minute; a wrong identity differs by O(1) at a generic point)
    recursion = total - (plus[T] + step[T] * sp.diff(hs[T - 1], w))
    unrolled = total - sum(dhdh(T, k) * plus[k] for k in range(1, T + 1))
    wrong = total - plus[T]  # the immediate derivative alone, to show the check can fail
    import mpmath
    mpmath.mp.dps = 50
    syms = (w, u, h0, *xs)
    fns = [sp.lambdify(syms, e, "mpmath") for e in (recursion, unrolled, wrong)]
    rng = __import__("random").Random(0)
    for _ in range(5):
        pt = [mpmath.mpf(rng.randint(-300, 300)) / 100 for _ in syms]
        assert abs(fns[0](*pt)) < 1e-40 and abs(fns[1](*pt)) < 1e-40
        assert abs(fns[2](*pt)) > 1e-6


@pytest.mark.claim("rnn.bptt-recursion")
def test_bptt_recursion_full_jacobians():
    g = generator(11)
    H, D, T = 3, 2, 5
    x = torch.randn(T, 1, D, generator=g, dtype=torch.float64)
    h0 = torch.randn(1, H, generator=g, dtype=torch.float64)
    W = torch.randn(H, H, generator=g, dtype=torch.float64) * 0.8
    U = torch.randn(H, D, generator=g, dtype=torch.float64)
    hy = torch.zeros(1, H, dtype=torch.float64)

    def h_of_W(Wv, t):
        return rnn.rnn_forward(x[:t], h0, Wv, U, hy)[0][-1, 0]

    hs, _ = rnn.rnn_forward(x, h0, W, U, hy)
    allh = torch.cat([h0, hs[:, 0]])
    dhdW = {t: torch.autograd.functional.jacobian(lambda Wv: h_of_W(Wv, t), W).reshape(H, H * H) for t in range(1, T + 1)}
    # immediate derivative: the step function with h_{k-1} held fixed
    plus = {k: torch.autograd.functional.jacobian(lambda Wv: torch.tanh(Wv @ allh[k - 1] + U @ x[k - 1, 0]), W).reshape(H, H * H)
            for k in range(1, T + 1)}
    for t in range(2, T + 1):
        J = rnn.jacobian_product(hs, W, t, t - 1)[0]
        torch.testing.assert_close(dhdW[t], plus[t] + J @ dhdW[t - 1])
        unrolled = sum(rnn.jacobian_product(hs, W, t, k)[0] @ plus[k] for k in range(1, t + 1))
        torch.testing.assert_close(dhdW[t], unrolled)


@pytest.mark.claim("rnn.bptt-loss-gradient")
@settings(max_examples=10)
@given(seed=seeds(), T=st.integers(1, 7))
def test_bptt_notes_matches_autograd(seed, T):
    g = generator(seed)
    x = torch.randn(T, 2, 3, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    Ws = [torch.randn(*s, generator=g, dtype=torch.float64) * 0.7 for s in [(4, 4), (4, 3), (2, 4)]]
    target = torch.randn(T, 2, 2, generator=g, dtype=torch.float64)
    Wr = [w.clone().requires_grad_(True) for w in Ws]
    h0r = h0.clone().requires_grad_(True)
    _, ys = rnn.rnn_forward(x, h0r, *Wr)
    loss = 0.5 * ((ys - target) ** 2).sum()
    ref = torch.autograd.grad(loss, Wr + [h0r])
    dy = (ys - target).detach()  # dL_t/dy_hat_t
    for got in (rnn.bptt_notes(x, h0, *Ws, dy), rnn.bptt(x, h0, *Ws, dy)):
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b)


@pytest.mark.claim("rnn.bptt-loss-gradient")
def test_bptt_float32_on_device(device):
    g = generator(12)
    x = torch.randn(20, 4, 3, generator=g).to(device)
    h0 = torch.zeros(4, 8, device=device)
    Ws = [(torch.randn(*s, generator=g) * 0.3).to(device) for s in [(8, 8), (8, 3), (2, 8)]]
    Wr = [w.clone().requires_grad_(True) for w in Ws]
    _, ys = rnn.rnn_forward(x, h0, *Wr)
    ref = torch.autograd.grad((ys**2).sum() / 2, Wr)
    got = rnn.bptt(x, h0, *Ws, ys.detach())
    for a, b in zip(got, ref):
        # float32 sums over 20 steps x 4 batch of O(1) terms: relative rounding ~ 80 * 6e-8 < 1e-5
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _orthogonal(H, seed):
    return torch.linalg.qr(torch.randn(H, H, generator=generator(seed), dtype=torch.float64))[0]


@pytest.mark.claim("rnn.bptt-vanishing")
@settings(max_examples=10)
@given(seed=seeds(), lam=st.floats(0.1, 0.99), input_scale=st.floats(0.0, 3.0))
def test_vanishing_bound(seed, lam, input_scale):
    g = generator(seed)
    H, T = 5, 25
    A = torch.randn(H, H, generator=g, dtype=torch.float64)
    W = lam * A / torch.linalg.matrix_norm(A, ord=2)  # lambda_1 = lam < 1 = 1/gamma for tanh (gamma = sup tanh' = 1)
    x = torch.randn(T, 1, 2, generator=g, dtype=torch.float64)
    U = torch.randn(H, 2, generator=g, dtype=torch.float64) * input_scale
    hs, _ = rnn.rnn_forward(x, torch.zeros(1, H, dtype=torch.float64), W, U, torch.zeros(1, H, dtype=torch.float64))
    gamma = (1 - hs**2).abs().max().item()  # ||diag f'|| <= gamma <= 1 along this trajectory
    eta = lam * gamma
    assert eta < 1
    # every factor: ||dh_i/dh_{i-1}|| <= ||W^T|| ||diag f'|| <= eta
    steps = torch.linalg.matrix_norm(torch.stack([rnn.step_jacobian(h, W) for h in hs]), ord=2)
    assert bool((steps <= eta * (1 + 1e-12)).all())
    norms = rnn.jacobian_norms(hs, W, T)[:, 0]  # k = T, T-1, ..., 0
    assert bool((norms <= eta ** torch.arange(T + 1, dtype=torch.float64) * (1 + 1e-10)).all())
    assert norms[-1].item() <= lam**T * (1 + 1e-10)  # -> 0 as T - k grows


@pytest.mark.symbolic
@pytest.mark.claim("rnn.bptt-vanishing-chain", role="refutes")
def test_vanishing_chain_last_link_is_equality(record_property):
    gamma = sp.Symbol("gamma", positive=True)
    link = sp.Lt(1 / gamma * gamma, 1)  # the notes' "(1/gamma) gamma < 1"
    assert link == sp.false  # sympy decides it for every gamma > 0: 1 < 1 is false
    assert sp.simplify(1 / gamma * gamma) == 1
    record_property("evidence", "(1/gamma) * gamma simplifies to 1, so '(1/gamma) gamma < 1' is 1 < 1: false for every gamma > 0")


@pytest.mark.claim("rnn.bptt-vanishing-chain", role="corrects")
@settings(max_examples=10)
@given(seed=seeds(), lam=st.floats(0.1, 0.99))
def test_vanishing_chain_corrected(seed, lam):
    g = generator(seed)
    H, T = 4, 12
    A = torch.randn(H, H, generator=g, dtype=torch.float64)
    W = lam * A / torch.linalg.matrix_norm(A, ord=2)  # lambda_1 = lam
    hs, _ = rnn.rnn_forward(torch.randn(T, 1, 2, generator=g, dtype=torch.float64), torch.zeros(1, H, dtype=torch.float64),
                            W, torch.randn(H, 2, generator=g, dtype=torch.float64), torch.zeros(1, H, dtype=torch.float64))
    gamma = 1.0  # sup tanh' = 1 bounds ||diag f'|| at any argument
    assert lam < 1 / gamma
    for h in hs:  # ||J_i|| <= ||W^T|| ||diag f'(a_i)|| <= lambda_1 gamma = eta < (1/gamma) gamma = 1
        J = rnn.step_jacobian(h, W)[0]
        D = torch.linalg.matrix_norm(torch.diag(1 - h[0] ** 2), ord=2).item()
        lhs = torch.linalg.matrix_norm(J, ord=2).item()
        assert lhs <= torch.linalg.matrix_norm(W.T, ord=2).item() * D * (1 + 1e-12)
        assert lam * D <= lam * gamma < (1 / gamma) * gamma == 1


@pytest.mark.claim("rnn.bptt-exploding", role="refutes")
def test_above_threshold_but_vanishing(record_property):
    H, T = 4, 40
    W = 2.0 * torch.eye(H, dtype=torch.float64)  # lambda_1 = 2 > 1 = 1/gamma
    U = torch.eye(H, 1, dtype=torch.float64).expand(H, 1).clone() + 0.5
    x = torch.ones(T, 1, 1, dtype=torch.float64)
    hs, _ = rnn.rnn_forward(x, torch.zeros(1, H, dtype=torch.float64), W, U, torch.zeros(1, H, dtype=torch.float64))
    norms = rnn.jacobian_norms(hs, W, T)[:, 0]
    assert norms[-1].item() < 1e-20  # the state saturates and the gradient vanishes
    assert bool((norms[1:11] < norms[:10]).all())
    # lambda_1 > 1/gamma even for the tightest gamma: sup over the trajectory of f' at the pre-activations
    # (0.786 at step 1; any gamma > 0.786 bounds ||diag f'||) and of f' at h_{i-1} as written (f'(h_0) = 1)
    allh = torch.cat([torch.zeros(1, 1, H, dtype=torch.float64), hs])
    tight_pre, tight_written = (1 - hs**2).max().item(), (1 - torch.tanh(allh[:-1]) ** 2).max().item()
    assert 2.0 > 1 / tight_pre > 1 / tight_written
    record_property("evidence", f"W_hh = 2I (lambda_1 = 2 > 1/gamma = 1), saturating inputs: ||dh_40/dh_0|| = {norms[-1].item():.2e}")


@pytest.mark.claim("rnn.bptt-exploding", role="corrects")
@settings(max_examples=10)
@given(seed=seeds(), lam=st.floats(1.05, 2.0))
def test_explosion_needs_lambda_above_threshold_and_happens_in_linear_regime(seed, lam):
    H, T = 5, 30
    Q = _orthogonal(H, seed)
    W = lam * Q  # all singular values lam
    zero = torch.zeros(1, H, dtype=torch.float64)
    # linear regime: h stays 0, f' = 1, ||dh_t/dh_k|| = lam^{t-k}: explodes
    hs, _ = rnn.rnn_forward(torch.zeros(T, 1, 1, dtype=torch.float64), zero, W, torch.zeros(H, 1, dtype=torch.float64), zero)
    norms = rnn.jacobian_norms(hs, W, T)[:, 0]
    torch.testing.assert_close(norms, lam ** torch.arange(T + 1, dtype=torch.float64), rtol=1e-10, atol=0)
    # necessity: whenever some ||dh_t/dh_k|| > 1 then lambda_1 * gamma > 1 (contrapositive of the bound)
    g = generator(seed)
    for scale in [0.5, 0.9, 1.5, 3.0]:
        A = torch.randn(H, H, generator=g, dtype=torch.float64)
        Wr = scale * A / torch.linalg.matrix_norm(A, ord=2)
        hr, _ = rnn.rnn_forward(torch.randn(T, 1, 2, generator=g, dtype=torch.float64), zero, Wr,
                                torch.randn(H, 2, generator=g, dtype=torch.float64), zero)
        gamma = (1 - hr**2).max().item()
        if rnn.jacobian_norms(hr, Wr, T).max().item() > 1 + 1e-12:
            assert scale * gamma > 1


@pytest.mark.slow
@pytest.mark.claim("rnn.bptt-vanishing")
def test_figure_gradient_norms(save_figure, record_property):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H, T = 16, 60
    Q = _orthogonal(H, 3)
    g = generator(4)
    x = torch.randn(T, 1, 4, generator=g, dtype=torch.float64)
    U = torch.randn(H, 4, generator=g, dtype=torch.float64) * 1e-8  # tiny inputs: the linear regime (f' ~ 1)
    zero = torch.zeros(1, H, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ends = {}
    for lam, style in [(0.8, "-"), (0.95, "-"), (1.05, "--"), (1.2, "--")]:
        W = lam * Q
        hs, _ = rnn.rnn_forward(x, zero, W, U, zero)
        norms = rnn.jacobian_norms(hs, W, T)[:, 0]
        if lam < 1:
            assert bool((norms <= lam ** torch.arange(T + 1, dtype=torch.float64) * (1 + 1e-10)).all())
        ends[lam] = norms[-1].item()
        ax.semilogy(range(T + 1), norms.numpy(), style, label=f"$\\lambda_1$ = {lam}")
    W = 2.0 * Q
    hs, _ = rnn.rnn_forward(x, zero, W, U * 1e8, zero)
    sat = rnn.jacobian_norms(hs, W, T)[:, 0]
    ax.semilogy(range(T + 1), sat.numpy(), ":", label="$\\lambda_1$ = 2, saturated")
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set_xlabel("t - k")
    ax.set_ylabel(r"$\|\partial h_t / \partial h_k\|_2$")
    ax.set_title("tanh RNN: vanishing / exploding gradients (1/gamma = 1)")
    ax.legend(fontsize=7)
    save_figure(fig, "rnn-gradient-norms.png",
                caption='Norm of $\\partial h_t / \\partial h_k$ of a tanh RNN against $t - k$ for several largest singular values $\\lambda_1$: it decays geometrically for $\\lambda_1 < 1/\\gamma$, and also for $\\lambda_1 = 2$ once the state saturates.')
    assert ends[0.8] < 1e-5 and ends[1.2] > 1e3
    record_property("evidence", "||dh_T/dh_{T-60}||: " + ", ".join(f"lambda_1={k}: {v:.2e}" for k, v in ends.items()))
