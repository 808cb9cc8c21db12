"""Diffusion: sampling throughput and the cost of one training step.

* diffusion.sampling: the notes' sampling loop for 4096 2-D points over T = 1000 steps (quick mode:
  T = 20) with the MLP noise predictor, against the same T plain forward passes of the network
  (the loop's overhead over the network). Samples per second go into extra_info.
* diffusion.train-step: one training step of the small image U-Net at batch 64 (draw t and eps,
  q_sample, loss, backward, Adam step) against the same network's plain forward + backward on an
  MSE to a fixed target.
"""

import pytest
import torch

from impl import diffusion as D

N_POINTS = 4096


def _rounds(quick):
    # a full-mode round is 1000 network calls on 4096 points (tens of seconds on 2 CPU cores)
    return dict(rounds=1, iterations=1, warmup_rounds=0) if quick else dict(rounds=2, iterations=1, warmup_rounds=0)


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return D.NoisePredictor(dim=2, hidden=128, time_dim=32).eval()


def _steps(quick):
    return 20 if quick else 1000


def test_sampling_network_only(benchmark, quick, mlp):
    T = _steps(quick)
    x = torch.randn(N_POINTS, 2)
    ts = [torch.full((N_POINTS,), t) for t in range(T, 0, -1)]

    @torch.no_grad()
    def forwards():
        for t in ts:
            mlp(x, t)

    benchmark.group = "diffusion.sampling"
    benchmark.extra_info["role"] = "reference"
    benchmark.extra_info["steps"] = T
    benchmark.pedantic(forwards, **_rounds(quick))


def test_sampling_loop(benchmark, quick, mlp):
    T = _steps(quick)
    betas = D.linear_beta_schedule(T, dtype=torch.float32)   # 1e-4..0.02 over T steps (time is what is measured)
    g = torch.Generator().manual_seed(0)
    benchmark.group = "diffusion.sampling"
    benchmark.extra_info["role"] = "kernel"
    benchmark.extra_info["steps"] = T
    out = benchmark.pedantic(D.sample, args=(mlp, (N_POINTS, 2), betas), kwargs=dict(generator=g), **_rounds(quick))
    assert out.shape == (N_POINTS, 2) and torch.isfinite(out).all()
    if benchmark.stats is not None:  # None under --benchmark-disable / xdist
        benchmark.extra_info["samples_per_s"] = N_POINTS / benchmark.stats.stats.median


def _train_rounds(quick):
    return dict(rounds=3, iterations=1, warmup_rounds=1) if quick else dict(rounds=10, iterations=1, warmup_rounds=2)


@pytest.fixture(scope="module")
def unet_batch():
    torch.manual_seed(0)
    net = D.ImageNoisePredictor(channels=1, width=16, time_dim=32)
    x0 = torch.randn(64, 1, 16, 16)
    return net, x0


def test_train_step_plain_forward_backward(benchmark, quick, unet_batch):
    net, x0 = unet_batch
    t = torch.randint(1, 1001, (64,))
    target = torch.randn_like(x0)

    def step():
        net.zero_grad(set_to_none=True)
        (net(x0, t) - target).pow(2).mean().backward()

    benchmark.group = "diffusion.train-step"
    benchmark.extra_info["role"] = "reference"
    benchmark.pedantic(step, **_train_rounds(quick))


def test_train_step_ddpm(benchmark, quick, unet_batch):
    net, x0 = unet_batch
    betas = D.linear_beta_schedule(dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step():
        opt.zero_grad(set_to_none=True)
        D.ddpm_loss(net, x0, betas, generator=g).backward()
        opt.step()

    benchmark.group = "diffusion.train-step"
    benchmark.extra_info["role"] = "kernel"
    benchmark.pedantic(step, **_train_rounds(quick))


# diffusion.ddpm-vs-diffusers: the whole DDPM sampling loop, ours against diffusers' DDPMScheduler
# driven by the same network on the same points (float32, sigma_t^2 = beta_t = "fixed_large");
# T = 1000 steps (quick mode: 100). properties/test_diffusion.py checks that the two trajectories
# agree to rounding.
PEER_POINTS = 1024


def _peer_steps(quick):
    return 100 if quick else 1000


@pytest.fixture(scope="module")
def small_mlp():
    torch.manual_seed(1)
    return D.NoisePredictor(dim=2, hidden=64, time_dim=32, depth=2).eval()


def test_ddpm_sampling_ours_vs_diffusers(measure, quick, small_mlp):
    T = _peer_steps(quick)
    betas = D.linear_beta_schedule(T, 1e-4, 0.02 * 1000 / T if T < 1000 else 0.02, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    out = measure(D.sample, small_mlp, (PEER_POINTS, 2), betas, kwargs=dict(generator=g), rounds=3,
                  group="diffusion.ddpm-vs-diffusers", role="kernel", steps=T, points=PEER_POINTS)
    assert out.shape == (PEER_POINTS, 2) and torch.isfinite(out).all()


def test_ddpm_sampling_diffusers(measure, quick, small_mlp):
    diffusers = pytest.importorskip("diffusers", reason="the peer library diffusers is not installed (extra 'peers')")
    T = _peer_steps(quick)
    betas = D.linear_beta_schedule(T, 1e-4, 0.02 * 1000 / T if T < 1000 else 0.02, dtype=torch.float32)
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, trained_betas=betas.numpy(), variance_type="fixed_large",
                                    clip_sample=False)
    sched.set_timesteps(T)
    g = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def loop():
        x = torch.randn(PEER_POINTS, 2, generator=g)
        for t in sched.timesteps:
            eps = small_mlp(x, torch.full((PEER_POINTS,), int(t) + 1, dtype=torch.long))
            x = sched.step(eps, t, x, generator=g).prev_sample
        return x

    out = measure(loop, rounds=3, group="diffusion.ddpm-vs-diffusers", role="reference", steps=T, points=PEER_POINTS)
    assert out.shape == (PEER_POINTS, 2) and torch.isfinite(out).all()
