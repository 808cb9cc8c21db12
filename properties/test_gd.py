"""GD algorithms: each optimizer as the notes write it against torch.optim over many steps (with the
change of variables where PyTorch parametrises differently), and the behavioural claims."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import gd
from spec.testing import generator, seeds, tol

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


@pytest.mark.claim("gd.sgd-one-sample", "gd.sgd-unbiased")
@settings(max_examples=10)
@given(seed=seeds(), n=st.integers(1, 12))
def test_sgd_one_sample_gradient_is_unbiased(seed, n):
    g = generator(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    theta = torch.randn(3, generator=g, dtype=torch.float64)
    per_sample = lambda th: torch.log1p(torch.exp(-(X @ th) * y)) + (X @ th - y) ** 2 / 2
    one = torch.stack([gd.minibatch_gradient(per_sample, theta, torch.tensor([i])) for i in range(n)])
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


@pytest.mark.claim("gd.adagrad-step-sizes")
@settings(max_examples=10)
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


@pytest.mark.claim("gd.adagrad-step-sizes")
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
