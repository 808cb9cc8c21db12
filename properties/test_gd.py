"""GD algorithms: each optimizer as the notes write it against torch.optim over many steps (with the
change of variables where PyTorch parametrises differently), and the behavioural claims."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import gd
from spec.testing import count_kernels, generator, seeds, tol

STEPS = 40


def _problem(seed, dtype=torch.float64, device="cpu"):
    """A small least-squares regression with two parameter tensors, W: (4, 3) and b: (4,)."""
    g = generator(seed)
    X = torch.randn(32, 3, generator=g, dtype=torch.float64).to(device, dtype)
    Y = torch.randn(32, 4, generator=g, dtype=torch.float64).to(device, dtype)
    params = [(torch.randn(4, 3, generator=g, dtype=torch.float64)).to(device, dtype),
              torch.randn(4, generator=g, dtype=torch.float64).to(device, dtype)]

    def grads_at(ps):
        ps = [p.detach().requires_grad_(True) for p in ps]
        loss = ((X @ ps[0].T + ps[1] - Y) ** 2).mean() + 0.1 * torch.sin(3 * ps[0]).sum()  # nonconvex term
        return list(torch.autograd.grad(loss, ps))

    return params, grads_at


def _torch_run(opt_cls, params, grads_at, steps, **kw):
    ps = [p.clone().requires_grad_(True) for p in params]
    opt = opt_cls(ps, **kw)
    traj = []
    for _ in range(steps):
        for p, g in zip(ps, grads_at(ps)):
            p.grad = g
        opt.step()
        traj.append([p.detach().clone() for p in ps])
    return traj, opt


def _close(a, b, dtype):
    # float64: 40 steps of a few flops each, rounding differences of order steps * 1e-16 amplified by
    # the problem's Lipschitz constant (< 10): well inside rtol 1e-9. float32: tol(float32).
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **(tol(dtype) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)))


@pytest.mark.claim("gd.sgd-one-sample")
def test_sgd_matches_torch(device, dtype):
    params, grads_at = _problem(0, dtype, device)
    ref, _ = _torch_run(torch.optim.SGD, params, grads_at, STEPS, lr=0.05)
    ps = [p.clone() for p in params]
    for t in range(STEPS):
        gd.sgd_step(ps, grads_at(ps), lr=0.05)
        _close(ps, ref[t], dtype)


def _one_sample_problem(seed, n):
    """A logistic-plus-squared per-sample loss on n random points, a parameter, and the n one-sample
    gradients (rows) at it."""
    g = generator(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    theta = torch.randn(3, generator=g, dtype=torch.float64)
    per_sample = lambda th: torch.log1p(torch.exp(-(X @ th) * y)) + (X @ th - y) ** 2 / 2
    one = torch.stack([gd.minibatch_gradient(per_sample, theta, torch.tensor([i])) for i in range(n)])
    return per_sample, theta, one


@pytest.mark.claim("gd.sgd-unbiased", role="refutes")
@settings(max_examples=10)
@given(seed=seeds(), n=st.integers(2, 12))
def test_one_sample_gradient_of_a_summed_loss_is_short_by_n(seed, n):
    # the notes' "sum structured": with L = sum_i L_i the expectation over a uniform i is grad L / n
    per_sample, theta, one = _one_sample_problem(seed, n)
    th = theta.clone().requires_grad_(True)
    (full_sum,) = torch.autograd.grad(per_sample(th).sum(), th)
    assert not torch.allclose(one.mean(0), full_sum)
    torch.testing.assert_close(one.mean(0), full_sum / n)
    torch.testing.assert_close((n * one).mean(0), full_sum)  # n grad L_i is the unbiased estimate


@pytest.mark.claim("gd.sgd-one-sample")
@pytest.mark.claim("gd.sgd-unbiased", role="corrects")
@settings(max_examples=10)
@given(seed=seeds(), n=st.integers(1, 12))
def test_sgd_one_sample_gradient_is_unbiased(seed, n):
    per_sample, theta, one = _one_sample_problem(seed, n)
    # each one-sample gradient is the gradient of that sample's loss alone
    for i in [0, n - 1]:
        th = theta.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(per_sample(th)[i], th)
        torch.testing.assert_close(one[i], gi)
    th = theta.clone().requires_grad_(True)
    (full,) = torch.autograd.grad(per_sample(th).mean(), th)
    torch.testing.assert_close(one.mean(0), full)  # E_i over a uniform i, by enumeration


@pytest.mark.claim("gd.minibatch-variance")
@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_minibatch_variance_by_enumeration(m, record_property):
    n = 7
    g = generator(3)
    X, y = torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    theta = torch.randn(2, generator=g, dtype=torch.float64)
    per_sample = lambda th: (X @ th - y) ** 2
    batches = [torch.tensor(c) for c in itertools.combinations(range(n), m)]
    G = torch.stack([gd.minibatch_gradient(per_sample, theta, b) for b in batches])
    G1 = torch.stack([gd.minibatch_gradient(per_sample, theta, torch.tensor([i])) for i in range(n)])
    full = G1.mean(0)
    torch.testing.assert_close(G.mean(0), full)  # unbiased for every m
    var1 = ((G1 - full) ** 2).sum(1).mean()
    var_m = ((G - full) ** 2).sum(1).mean()
    torch.testing.assert_close(var_m, var1 / m * (n - m) / (n - 1))
    if m > 1:
        assert var_m < var1
    record_property("evidence", f"n={n}, m={m}: Var_m / Var_1 = {(var_m / var1).item():.4f}")


@pytest.mark.claim("gd.minibatch-parallel")
def test_minibatch_gradient_is_one_batched_computation():
    n, d = 256, 8
    g = generator(4)
    X, y = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    theta = torch.randn(d, generator=g, dtype=torch.float64)
    per_sample = lambda th: (X @ th - y) ** 2  # noqa: E731
    ops = {}
    for m in (1, 16, 128):
        idx = torch.randperm(n, generator=g)[:m]
        with count_kernels() as c:
            G = gd.minibatch_gradient(per_sample, theta, idx)
        ops[m] = c.n
        one_by_one = torch.stack([gd.minibatch_gradient(per_sample, theta, idx[j:j + 1]) for j in range(m)]).mean(0)
        torch.testing.assert_close(G, one_by_one, rtol=1e-12, atol=1e-13)
    assert ops[1] == ops[16] == ops[128], ops           # the batch size changes the rows, not the kernel count


@pytest.mark.claim("gd.polyak-momentum")
def test_momentum_matches_torch(device, dtype):
    params, grads_at = _problem(1, dtype, device)
    lr, alpha = 0.03, 0.9
    ref, opt = _torch_run(torch.optim.SGD, params, grads_at, STEPS, lr=lr, momentum=alpha)
    ps, vs = [p.clone() for p in params], [torch.zeros_like(p) for p in params]
    for t in range(STEPS):
        gd.momentum_step(ps, grads_at(ps), vs, lr=lr, alpha=alpha)
        _close(ps, ref[t], dtype)
    # change of variables: v = -lr * b (torch's momentum buffer)
    _close(vs, [-lr * opt.state[p]["momentum_buffer"] for p in opt.param_groups[0]["params"]], dtype)


@pytest.mark.claim("gd.nesterov-momentum")
def test_nesterov_matches_torch_at_the_look_ahead_point(device, dtype):
    params, grads_at = _problem(2, dtype, device)
    lr, alpha = 0.03, 0.9
    ref, _ = _torch_run(torch.optim.SGD, params, grads_at, STEPS, lr=lr, momentum=alpha, nesterov=True)
    ps, vs = [p.clone() for p in params], [torch.zeros_like(p) for p in params]
    seen = []
    for t in range(STEPS):
        gd.nesterov_step(ps, vs, lambda q: seen.append(q) or grads_at(q), lr=lr, alpha=alpha)
        # torch's parameters are the notes' look-ahead point theta + alpha v
        _close([p + alpha * v for p, v in zip(ps, vs)], ref[t], dtype)
    # and the gradient is taken at the future point, not at theta
    assert not torch.equal(seen[5][0], ps[0])


@pytest.mark.claim("gd.momentum-speedup")
def test_momentum_speedup(record_property):
    # consistent gradient: the velocity tends to -eps g / (1 - alpha), a 1 / (1 - alpha) = 10x larger step
    g = [torch.tensor([1.0, -2.0], dtype=torch.float64)]
    p, v = [torch.zeros(2, dtype=torch.float64)], [torch.zeros(2, dtype=torch.float64)]
    for _ in range(400):
        gd.momentum_step(p, g, v, lr=0.1, alpha=0.9)
    torch.testing.assert_close(v[0], -0.1 * g[0] / (1 - 0.9))
    # high curvature / ill conditioning: quadratic with condition number 100
    lam = torch.tensor([1.0, 100.0], dtype=torch.float64)

    def steps_to(update, tol_=1e-8):
        p, v = [torch.ones(2, dtype=torch.float64)], [torch.zeros(2, dtype=torch.float64)]
        for t in range(1, 5000):
            update(p, [lam * p[0]], v)
            if p[0].norm() < tol_:
                return t
        return 5000

    L, mu = 100.0, 1.0
    n_gd = steps_to(lambda p, g, v: gd.sgd_step(p, g, lr=1 / L))
    a = ((math.sqrt(L) - math.sqrt(mu)) / (math.sqrt(L) + math.sqrt(mu))) ** 2
    n_mom = steps_to(lambda p, g, v: gd.momentum_step(p, g, v, lr=4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, alpha=a))
    assert n_mom * 5 < n_gd
    record_property("evidence", f"kappa=100 quadratic to 1e-8: GD {n_gd} steps, heavy ball {n_mom} steps")


@pytest.mark.claim("gd.momentum-speedup")
def test_momentum_averages_noisy_gradients(record_property):
    # N independent chains in one parameter tensor; gradients g + s * noise, i.i.d. over steps and chains.
    # v_T = -eps sum_s alpha^(T-s) g_s: mean -eps g (1 - alpha^T) / (1 - alpha), variance eps^2 s^2 (1 - alpha^2T) / (1 - alpha^2)
    N, T, eps, alpha, gm, s = 20000, 120, 0.1, 0.9, 0.5, 2.0
    gen = generator(8)
    p, v = [torch.zeros(N, dtype=torch.float64)], [torch.zeros(N, dtype=torch.float64)]
    for _ in range(T):
        gd.momentum_step(p, [gm + s * torch.randn(N, generator=gen, dtype=torch.float64)], v, lr=eps, alpha=alpha)
    mean = -eps * gm * (1 - alpha**T) / (1 - alpha)
    var = eps**2 * s**2 * (1 - alpha ** (2 * T)) / (1 - alpha**2)
    # 6 standard errors: of a mean sqrt(var / N), of a Gaussian sample variance var sqrt(2 / (N - 1))
    assert abs(v[0].mean().item() - mean) < 6 * math.sqrt(var / N)
    assert abs(v[0].var().item() - var) < 6 * var * math.sqrt(2 / (N - 1))
    snr = abs(v[0].mean().item()) / v[0].std().item()
    ratio = snr / (gm / s)  # an SGD step -eps g_t has signal-to-noise ratio g / s
    theory = math.sqrt((1 + alpha) / (1 - alpha))
    se = theory * math.sqrt(var / N / mean**2 + 1 / (2 * (N - 1)))  # delta method: relative SEs of mean and std
    assert abs(ratio - theory) < 6 * se and 6 * se < theory - 1  # and far from an SGD step's ratio 1
    record_property("evidence", f"alpha=0.9, g=0.5, s=2: velocity SNR {snr:.3f} vs SGD step {gm / s:.3f} (x{ratio:.2f}, theory x{math.sqrt(19):.2f})")


@pytest.mark.claim("gd.adagrad")
def test_adagrad_matches_torch(device, dtype):
    params, grads_at = _problem(3, dtype, device)
    # a large delta makes its place (outside the square root) visible in the trajectory
    ref, _ = _torch_run(torch.optim.Adagrad, params, grads_at, STEPS, lr=0.1, eps=0.1)
    ps, r = [p.clone() for p in params], [torch.zeros_like(p) for p in params]
    for t in range(STEPS):
        gd.adagrad_step(ps, grads_at(ps), r, lr=0.1, delta=0.1)
        _close(ps, ref[t], dtype)


@pytest.mark.claim("gd.adagrad-step-sizes", role="corrects")
@settings(max_examples=25)
@given(seed=seeds())
def test_adagrad_step_sizes_only_shrink(seed):
    gen = generator(seed)
    T = 50
    G = torch.randn(T, 2, generator=gen, dtype=torch.float64)
    G[:, 0] *= 10  # coordinate 0 always has the larger gradient
    G[:, 0] = torch.where(G[:, 0].abs() < G[:, 1].abs(), G[:, 1] * 10, G[:, 0])
    p, r = [torch.zeros(2, dtype=torch.float64)], [torch.zeros(2, dtype=torch.float64)]
    rates = []
    for t in range(T):
        gd.adagrad_step(p, [G[t]], r, lr=1.0, delta=1e-10)
        rates.append(1.0 / (1e-10 + r[0].sqrt()))
    rates = torch.stack(rates)
    assert bool((rates[1:] <= rates[:-1]).all())  # never increase
    assert bool((rates[:, 0] <= rates[:, 1]).all())  # high history -> smaller step size


@pytest.mark.claim("gd.adagrad-step-sizes", role="corrects")
def test_adagrad_learning_rate_decays_to_zero():
    # constant gradient g: the step is eps g / (delta + |g| sqrt(t)) = eps / sqrt(t) -> 0
    p, r = [torch.zeros(1, dtype=torch.float64)], [torch.zeros(1, dtype=torch.float64)]
    steps = []
    for t in range(1, 401):
        before = p[0].clone()
        gd.adagrad_step(p, [torch.full((1,), 3.0, dtype=torch.float64)], r, lr=1.0, delta=0.0)
        steps.append((before - p[0]).item())
    torch.testing.assert_close(torch.tensor(steps, dtype=torch.float64), 1 / torch.arange(1, 401, dtype=torch.float64).sqrt())


@pytest.mark.claim("gd.rmsprop")
def test_rmsprop_matches_torch(device, dtype):
    params, grads_at = _problem(4, dtype, device)
    ref, _ = _torch_run(torch.optim.RMSprop, params, grads_at, STEPS, lr=0.01, alpha=0.9, eps=0.05)
    ps, r = [p.clone() for p in params], [torch.zeros_like(p) for p in params]
    for t in range(STEPS):
        gd.rmsprop_step(ps, grads_at(ps), r, lr=0.01, rho=0.9, delta=0.05)
        _close(ps, ref[t], dtype)


@pytest.mark.claim("gd.rmsprop-forgets")
@settings(max_examples=10)
@given(seed=seeds(), rho=st.floats(0.5, 0.99))
def test_rmsprop_moving_average_forgets(seed, rho):
    T = 40
    G = torch.randn(T, 3, generator=generator(seed), dtype=torch.float64)
    G[0] = 100.0  # one huge early gradient, then ordinary ones
    p, r, ra = [torch.zeros(3, dtype=torch.float64)], [torch.zeros(3, dtype=torch.float64)], [torch.zeros(3, dtype=torch.float64)]
    for t in range(T):
        gd.rmsprop_step(p, [G[t]], r, lr=1e-3, rho=rho)
        gd.adagrad_step([torch.zeros(3, dtype=torch.float64)], [G[t]], ra, lr=1e-3)
    w = (1 - rho) * rho ** torch.arange(T - 1, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(r[0], (w[:, None] * G**2).sum(0))
    # the spike's share of r is (1 - rho) rho^(T-1) 1e4 / r, versus 1e4 / r in AdaGrad's sum
    assert bool((ra[0] >= 1e4).all())
    assert bool(((1 - rho) * rho ** (T - 1) * 1e4 <= r[0]).all())


@pytest.mark.claim("gd.adam")
def test_adam_matches_torch(device, dtype):
    params, grads_at = _problem(5, dtype, device)
    kw = dict(lr=0.01, betas=(0.8, 0.95), eps=0.05)  # eps large enough that its place matters
    ref, _ = _torch_run(torch.optim.Adam, params, grads_at, STEPS, **kw)
    ps = [p.clone() for p in params]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for t in range(STEPS):
        gd.adam_step(ps, grads_at(ps), m, v, t + 1, lr=0.01, beta1=0.8, beta2=0.95, eps=0.05)
        _close(ps, ref[t], dtype)


@pytest.mark.claim("gd.adagrad", "gd.rmsprop", "gd.adam")
def test_defaults_match_torch():
    # the default delta / rho / betas / eps / lr are torch.optim's: gradients from 1e-9 to 1 per coordinate,
    # changing every step, so that eps (against sqrt(r) ~ |g|) and beta2 (the weighting of old g^2) both show
    scales = torch.logspace(-9, 0, 10, dtype=torch.float64)
    G = torch.randn(6, 10, generator=generator(9), dtype=torch.float64) * scales
    cases = [(torch.optim.Adagrad, dict(lr=0.1), lambda p, g, st, t: gd.adagrad_step(p, g, st[0], lr=0.1)),
             (torch.optim.RMSprop, dict(lr=0.1), lambda p, g, st, t: gd.rmsprop_step(p, g, st[0], lr=0.1)),
             (torch.optim.Adam, dict(), lambda p, g, st, t: gd.adam_step(p, g, st[0], st[1], t))]
    for opt_cls, kw, step in cases:
        ref = torch.zeros(10, dtype=torch.float64, requires_grad=True)
        opt = opt_cls([ref], **kw)
        p, st = [torch.zeros(10, dtype=torch.float64)], [[torch.zeros(10, dtype=torch.float64)] for _ in range(2)]
        for t in range(6):
            ref.grad = G[t].clone()
            opt.step()
            step(p, [G[t]], st, t + 1)
            torch.testing.assert_close(p[0], ref.detach(), rtol=1e-9, atol=0, msg=lambda m: f"{opt_cls.__name__}: {m}")


@pytest.mark.claim("gd.adam-bias-correction")
def test_adam_bias_correction(record_property):
    # constant gradient: the corrected moments are exact from the first step
    g = torch.tensor([0.3, -2.0], dtype=torch.float64)
    mh, vh = gd.adam_moments(g.expand(20, 2))
    torch.testing.assert_close(mh, g.expand(20, 2))
    torch.testing.assert_close(vh, (g**2).expand(20, 2))
    # stationary random gradients, mean 1, variance 1: over N sequences the mean of m_hat_t is
    # within 6 standard errors of 1 at every t, while the raw m_t = (1 - b1^t) m_hat_t is biased
    N, T = 20000, 8
    G = 1.0 + torch.randn(T, N, dtype=torch.float64)
    mh, vh = gd.adam_moments(G, beta1=0.9, beta2=0.999)
    b1t = 1 - 0.9 ** torch.arange(1, T + 1, dtype=torch.float64)
    se = mh.std(1) / math.sqrt(N)
    assert bool(((mh.mean(1) - 1).abs() < 6 * se).all())
    assert bool(((b1t * mh.mean(1) - 1).abs() > 6 * se).all())
    assert bool(((vh.mean(1) - 2).abs() < 6 * vh.std(1) / math.sqrt(N)).all())  # E[g^2] = 2
    record_property("evidence", f"mean m_hat_1..8 = {mh.mean(1).min().item():.3f}..{mh.mean(1).max().item():.3f}; raw m_1 = {(b1t * mh.mean(1))[0].item():.3f}")


@pytest.mark.claim("gd.adagrad-step-sizes", role="refutes")
def test_adagrad_leaves_the_gradients_unchanged(record_property):
    # linear loss L = c . theta: the gradient is c at every point, whatever AdaGrad has seen
    c = torch.tensor([100.0, 0.01], dtype=torch.float64)
    p, r = [torch.zeros(2, dtype=torch.float64)], [torch.zeros(2, dtype=torch.float64)]
    th = p[0].clone().requires_grad_(True)
    grads, rates = [], []
    for _ in range(200):
        th = p[0].clone().requires_grad_(True)
        (g,) = torch.autograd.grad((c * th).sum(), th)
        grads.append(g)
        gd.adagrad_step(p, [g], r, lr=0.5, delta=1e-10)
        rates.append(0.5 / (1e-10 + r[0].sqrt()))
    grads, rates = torch.stack(grads), torch.stack(rates)
    assert torch.equal(grads, c.expand(200, 2))                  # the high-history gradient did not decrease
    assert float(rates[-1, 0] / rates[0, 0]) < 0.08                # its step size did (1 / sqrt(200))
    record_property("evidence", "L = c . theta, c = (100, 0.01): gradients stay c over 200 AdaGrad steps; "
                    f"step sizes fall by {float(rates[0, 0] / rates[-1, 0]):.1f}x")


def _tilted_double_well_grad(theta, xi):
    # L_i(theta) = (theta^2 - 1)^2 + 0.3 theta + xi_i theta: minima near -1.04 (deep) and 0.96 (shallow)
    return 4 * theta * (theta ** 2 - 1) + 0.3 + xi


@pytest.mark.claim("gd.sgd-behaviour")
def test_sgd_escapes_a_shallow_minimum_where_gd_stays(record_property):
    runs, n, lr = 2000, 10, 0.05
    xi = 2.5 * torch.tensor([1.0, -1.0] * (n // 2), dtype=torch.float64)       # sum_i xi_i = 0
    theta0 = torch.tensor(0.96, dtype=torch.float64)
    g = generator(5)
    th_gd = [theta0.clone()]
    th_sgd = [torch.full((runs,), 0.96, dtype=torch.float64)]
    for _ in range(1500):
        gd.sgd_step(th_gd, [_tilted_double_well_grad(th_gd[0], xi.mean())], lr)           # full gradient
        i = torch.randint(n, (runs,), generator=g)
        gd.sgd_step(th_sgd, [_tilted_double_well_grad(th_sgd[0], xi[i])], lr)             # one sample
    escaped = float((th_sgd[0] < 0).double().mean())
    assert 0.5 < float(th_gd[0]) < 1.5            # GD sits in the shallow well
    # SGD escapes in some runs: the share is an order above 6 standard errors of zero
    assert 0.02 < escaped < 1.0
    record_property("evidence", f"tilted double well from the shallow minimum, step {lr}, 1500 steps: GD stays at "
                    f"{float(th_gd[0]):.3f}; SGD (one of {n} samples) ends in the deep well in {100 * escaped:.1f} % "
                    f"of {runs} runs")


@pytest.mark.claim("gd.sgd-behaviour")
def test_step_above_one_over_lambda_overshoots_and_above_two_diverges():
    lam = 4.0
    for lr, flips, grows in [(0.2, False, False), (0.4, True, False), (0.55, True, True)]:
        p = [torch.ones(1, dtype=torch.float64)]
        signs, sizes = [], []
        for _ in range(30):
            gd.sgd_step(p, [lam * p[0]], lr)
            signs.append(float(p[0].sign()))
            sizes.append(float(p[0].abs()))
        torch.testing.assert_close(torch.tensor(sizes[-1], dtype=torch.float64),
                                   torch.tensor(abs(1 - lr * lam) ** 30, dtype=torch.float64), rtol=1e-12, atol=0)
        assert (signs[0] < 0 and all(a != b for a, b in zip(signs, signs[1:]))) == flips   # past the minimum each step
        assert (sizes[-1] > 1) == grows


@pytest.mark.claim("gd.sgd-behaviour")
def test_one_sample_gradient_costs_one_nth():
    from spec.testing import count_flops

    n, d = 64, 32
    X = torch.randn(n, d, generator=generator(0), dtype=torch.float64)
    y = torch.randn(n, generator=generator(1), dtype=torch.float64)
    th = torch.randn(d, 1, generator=generator(2), dtype=torch.float64).requires_grad_(True)

    def grad_of(rows):
        return torch.autograd.grad(((X[rows] @ th).squeeze(-1) - y[rows]).pow(2).mean(), th)

    full = count_flops(grad_of, slice(None))
    one = count_flops(grad_of, slice(3, 4))
    assert full > 0 and one * n == full


@pytest.mark.claim("gd.rmsprop-nonconvex", role="corrects")
def test_rmsprop_crosses_a_plateau_where_adagrad_stalls(record_property):
    def grad(th):
        # f = 2 th^2 for th < 0 (a steep wall), -0.01 th on [0, 10] (a plateau), then a bowl at 10
        return torch.where(th < 0, 4 * th, torch.where(th <= 10, torch.full_like(th, -0.01), th - 10.01))

    found = []
    for lr in (0.03, 0.1, 0.3):
        out = {}
        for name in ("adagrad", "rmsprop"):
            p, r = [torch.full((1,), -10.0, dtype=torch.float64)], [torch.zeros(1, dtype=torch.float64)]
            rates, path = [], []
            for k in range(1500):
                g = grad(p[0])
                if name == "adagrad":
                    gd.adagrad_step(p, [g], r, lr=lr)
                else:
                    gd.rmsprop_step(p, [g], r, lr=lr, rho=0.9)
                rates.append(lr / (1e-8 + r[0].sqrt()))
                path.append(p[0].clone())
            rates, path = torch.cat(rates), torch.cat(path)
            hit = (path >= 10).nonzero()
            out[name] = (int(hit[0]) if hit.numel() else None, rates)
        ada, rms = out["adagrad"], out["rmsprop"]
        assert ada[0] is None and rms[0] is not None           # AdaGrad never reaches the end of the plateau
        assert bool((ada[1][1:] <= ada[1][:-1] * (1 + 1e-12)).all())   # its effective step only shrinks
        assert float(rms[1].max()) > 100 * float(rms[1][:50].min())   # RMSProp's recovers after the wall
        found.append(f"lr {lr}: RMSProp crosses at step {rms[0]}, AdaGrad's final step {float(ada[1][-1]):.1e}")
    record_property("evidence", "; ".join(found))


@pytest.mark.claim("gd.rmsprop-nonconvex", role="refutes")
def test_adagrad_beats_rmsprop_on_a_noisy_double_well(record_property):
    runs = 2000
    g = generator(3)
    err = {}
    for name in ("adagrad", "rmsprop"):
        p, r = [torch.full((runs,), 0.5, dtype=torch.float64)], [torch.zeros(runs, dtype=torch.float64)]
        for _ in range(2000):
            grad = 4 * p[0] * (p[0] ** 2 - 1) + torch.randn(runs, generator=g, dtype=torch.float64)
            if name == "adagrad":
                gd.adagrad_step(p, [grad], r, lr=0.03)
            else:
                gd.rmsprop_step(p, [grad], r, lr=0.03, rho=0.9)
        err[name] = float(((p[0].abs() - 1) ** 2).mean())
    # a mean over 2000 runs: its relative standard error is a few per cent, far below the factor 10 asked
    assert err["adagrad"] * 10 < err["rmsprop"]
    record_property("evidence", f"noisy double well (theta^2 - 1)^2, step 0.03, 2000 steps: mean squared distance "
                    f"to the minima {err['adagrad']:.2e} (AdaGrad) vs {err['rmsprop']:.2e} (RMSProp)")


def test_bad_input():
    p = [torch.zeros(3)]
    with pytest.raises(ValueError, match="lr"):
        gd.sgd_step(p, [torch.zeros(3)], lr=-1.0)
    with pytest.raises(ValueError, match="grads"):
        gd.sgd_step(p, [torch.zeros(3), torch.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="grads\\[0\\]"):
        gd.sgd_step(p, [torch.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="params"):
        gd.sgd_step(torch.zeros(3), [torch.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="alpha"):
        gd.momentum_step(p, [torch.zeros(3)], [torch.zeros(3)], lr=0.1, alpha=1.0)
    with pytest.raises(TypeError, match="grad_fn"):
        gd.nesterov_step(p, [torch.zeros(3)], None, lr=0.1, alpha=0.5)
    with pytest.raises(ValueError, match="rho"):
        gd.rmsprop_step(p, [torch.zeros(3)], [torch.zeros(3)], lr=0.1, rho=1.5)
    with pytest.raises(ValueError, match="t"):
        gd.adam_step(p, [torch.zeros(3)], [torch.zeros(3)], [torch.zeros(3)], 0)
    with pytest.raises(TypeError, match="r\\[0\\]"):
        gd.adagrad_step(p, [torch.zeros(3)], [torch.zeros(3, dtype=torch.float64)], lr=0.1)
    with pytest.raises(ValueError, match="idx"):
        gd.minibatch_gradient(lambda th: th, torch.zeros(3), torch.tensor([], dtype=torch.long))


def test_zero_gradient_with_zero_delta_gives_no_step_not_nan():
    # delta = 0 and a gradient that has been 0 so far: the step is 0 / 0; it is taken as 0
    for step in (lambda p, g, s: gd.adagrad_step(p, g, s, lr=0.1, delta=0.0),
                 lambda p, g, s: gd.rmsprop_step(p, g, s, lr=0.1, delta=0.0),
                 lambda p, g, s: gd.adam_step(p, g, s, [torch.zeros(3, dtype=torch.float64)], 1, eps=0.0)):
        p = [torch.ones(3, dtype=torch.float64)]
        step(p, [torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64)], [torch.zeros(3, dtype=torch.float64)])
        assert bool(torch.isfinite(p[0]).all()) and p[0][0] == 1.0 and p[0][2] == 1.0 and p[0][1] < 1.0


def test_bad_preconditions_are_rejected_by_name():
    th = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="idx"):
        gd.minibatch_gradient(lambda t: t.expand(3, 2).sum(-1), th, torch.tensor([5]))
    with pytest.raises(ValueError, match="per_sample_loss"):
        gd.minibatch_gradient(lambda t: t.sum(), th, torch.tensor([0]))
    with pytest.raises(ValueError, match="grads"):
        gd.adam_moments(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="delta"):
        gd.adagrad_step([th.clone()], [th.clone()], [th.clone()], lr=0.1, delta=-1.0)
    with pytest.raises(ValueError, match="lr"):
        gd.adam_step([th.clone()], [th.clone()], [th.clone()], [th.clone()], 1, lr=0.0)
    with pytest.raises(ValueError, match="beta2"):
        gd.adam_step([th.clone()], [th.clone()], [th.clone()], [th.clone()], 1, beta2=1.0)
    with pytest.raises(ValueError, match="alpha"):
        gd.nesterov_step([th.clone()], [th.clone()], lambda ps: ps, lr=0.1, alpha=-0.1)


def _z(*shape, dtype=torch.float64):
    return torch.zeros(*shape, dtype=dtype)


def _gd_bad_inputs():
    p, g3 = [_z(3)], [_z(3)]
    look = lambda ps: [torch.zeros_like(q) for q in ps]  # noqa: E731
    G = _z(4, 3)
    per = lambda t: t.expand(3, 2).sum(-1)  # noqa: E731
    return [
        # every step's lr must be > 0 and each decay in its range, named exactly
        (lambda: gd.sgd_step(p, g3, lr=0.0), ValueError, "^lr: "),
        (lambda: gd.momentum_step(p, g3, [_z(3)], lr=0.1, alpha=1.0), ValueError, "^alpha: "),
        (lambda: gd.nesterov_step(p, [_z(3)], look, lr=0.0, alpha=0.5), ValueError, "^lr: "),
        (lambda: gd.nesterov_step(p, [_z(3)], look, lr=-1.0, alpha=0.5), ValueError, "^lr: "),
        (lambda: gd.nesterov_step(p, [_z(3)], look, lr=0.1, alpha=1.0), ValueError, "^alpha: "),
        (lambda: gd.nesterov_step(p, [_z(3)], look, lr=0.1, alpha=1.5), ValueError, "^alpha: "),
        (lambda: gd.nesterov_step(p, [_z(3)], look, lr=0.1, alpha=-0.5), ValueError, "^alpha: "),
        (lambda: gd.nesterov_step(p, [_z(2)], look, lr=0.1, alpha=0.5), ValueError, r"^velocity\[0\]: "),
        (lambda: gd.nesterov_step([_z(3)], [_z(3, dtype=torch.float32)], look, lr=0.1, alpha=0.5), TypeError,
         r"^velocity\[0\]: "),
        (lambda: gd.nesterov_step(p, [_z(3)], lambda ps: [_z(2)], lr=0.1, alpha=0.5), ValueError, r"^grads\[0\]: "),
        (lambda: gd.nesterov_step(p, [_z(3)], lambda ps: [], lr=0.1, alpha=0.5), TypeError, "^grads: "),
        (lambda: gd.nesterov_step(p, [_z(3)], "f", lr=0.1, alpha=0.5), TypeError, "^grad_fn: "),
        (lambda: gd.sgd_step([_z(3)], [[0.0, 0.0, 0.0]], lr=0.1), TypeError, r"^grads\[0\]: "),
        (lambda: gd.sgd_step([_z(3), _z(2)], [_z(3), _z(3)], lr=0.1), ValueError,
         r"^grads\[1\]: shape \(3,\) differs from params\[1\]'s \(2,\)"),
        (lambda: gd.sgd_step([_z(3)], [_z(3, dtype=torch.float32)], lr=0.1), TypeError,
         r"^grads\[0\]: dtype torch.float32 differs from params\[0\]'s"),
        (lambda: gd.adagrad_step(p, g3, [_z(3)], lr=0.1, delta=-1e-3), ValueError, "^delta: "),
        (lambda: gd.rmsprop_step(p, g3, [_z(3)], lr=0.1, rho=1.0), ValueError, "^rho: "),
        (lambda: gd.adam_step(p, g3, [_z(3)], [_z(3)], 1, beta1=1.0), ValueError, "^beta1: "),
        (lambda: gd.adam_step(p, g3, [_z(3)], [_z(3)], 1, eps=-1.0), ValueError, "^eps: "),
        # adam_moments: a (T, ...) tensor with T >= 1, betas in [0, 1)
        (lambda: gd.adam_moments([[0.0]]), TypeError, "^grads: "),
        (lambda: gd.adam_moments(_z(())), ValueError, "^grads: "),
        (lambda: gd.adam_moments(_z(0, 3)), ValueError, "^grads: needs at least one step"),
        (lambda: gd.adam_moments(G, beta1=1.0), ValueError, "^beta1: "),
        (lambda: gd.adam_moments(G, beta1=1.5), ValueError, "^beta1: "),
        (lambda: gd.adam_moments(G, beta1=-0.1), ValueError, "^beta1: "),
        (lambda: gd.adam_moments(G, beta2=1.0), ValueError, "^beta2: "),
        (lambda: gd.adam_moments(G, beta2=1.5), ValueError, "^beta2: "),
        (lambda: gd.adam_moments(G, beta2=-0.1), ValueError, "^beta2: "),
        # minibatch_gradient: a float theta, a 1-D integer index tensor in range, a callable giving (n,)
        (lambda: gd.minibatch_gradient(per, [0.0, 0.0], torch.tensor([0])), TypeError, "^theta: "),
        (lambda: gd.minibatch_gradient(per, torch.zeros(2, dtype=torch.long), torch.tensor([0])), TypeError, "^theta: "),
        (lambda: gd.minibatch_gradient(per, _z(2), torch.tensor([[0]])), ValueError, "^idx: "),
        (lambda: gd.minibatch_gradient(per, _z(2), torch.tensor([0.0])), TypeError, "^idx: "),
        (lambda: gd.minibatch_gradient(per, _z(2), torch.tensor([], dtype=torch.long)), ValueError, "^idx: needs"),
        (lambda: gd.minibatch_gradient(per, _z(2), torch.tensor([3])), ValueError, r"^idx: indices must lie in \[0, 3\)"),
        (lambda: gd.minibatch_gradient(None, _z(2), torch.tensor([0])), TypeError, "^per_sample_loss: expected a callable"),
        (lambda: gd.minibatch_gradient(lambda t: t.sum(), _z(2), torch.tensor([0])), ValueError,
         r"^per_sample_loss: must return a \(n,\) tensor"),
    ]


def test_bad_inputs_are_refused_by_exact_name():
    for fn, exc, pattern in _gd_bad_inputs():
        with pytest.raises(exc, match=pattern):
            fn()


def test_valid_edge_values_are_accepted():
    # the open / closed ends of each range: alpha = 0 (no momentum), rho = 0, beta = 0 are valid
    p = [torch.ones(2, dtype=torch.float64)]
    gd.nesterov_step(p, [torch.zeros(2, dtype=torch.float64)], lambda ps: [torch.ones(2, dtype=torch.float64)],
                     lr=0.5, alpha=0.0)
    torch.testing.assert_close(p[0], torch.full((2,), 0.5, dtype=torch.float64))
    mh, vh = gd.adam_moments(torch.full((1, 2), 3.0, dtype=torch.float64), beta1=0.0, beta2=0.0)
    assert mh.tolist() == [[3.0, 3.0]] and vh.tolist() == [[9.0, 9.0]]     # T = 1: the first moments


def test_zero_delta_divides_by_the_root_below_one():
    # a gradient of 0.5: sqrt(r) = 0.5 < 1 must still divide the step (AdaGrad's first step is lr sign g)
    p, r = [torch.zeros(1, dtype=torch.float64)], [torch.zeros(1, dtype=torch.float64)]
    gd.adagrad_step(p, [torch.full((1,), 0.5, dtype=torch.float64)], r, lr=0.1, delta=0.0)
    torch.testing.assert_close(p[0], torch.full((1,), -0.1, dtype=torch.float64), rtol=1e-15, atol=0)


def test_adam_moments_of_a_scalar_gradient_sequence():
    # grads: (T,) is a sequence of scalar gradients; m_hat_1 = g_1, v_hat_1 = g_1^2 exactly
    g = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    mh, vh = gd.adam_moments(g, beta1=0.5, beta2=0.5)
    m = [2.0 * 0.5, 0.5 * (2.0 * 0.5) + 0.5 * -1.0]
    assert mh.shape == (3,) and float(mh[0]) == 2.0 and float(vh[0]) == 4.0
    assert float(mh[1]) == pytest.approx(m[1] / (1 - 0.25), abs=1e-15)
