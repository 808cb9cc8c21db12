"""Golden outputs of the RL section's main systems on fixed inputs: value iteration, policy
iteration and policy evaluation on FrozenLake 4x4 (slippery), the chain and a gridworld, the
finite-horizon objective and its gradient, and sampled episodes and Q-learning tables from fixed
CPU generator seeds. They guard against silent drift across torch versions and devices.

Inputs come from numpy's legacy RandomState (frozen stream) or are deterministic environments.
Float64 on the CPU to 1e-12; float32 on every device against the same file with the tolerance
stated beside the assertion. The sampled quantities depend on the CPU generator's stream and are
compared on the CPU only (a GPU generator draws a different stream by design)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import rl

pytestmark = pytest.mark.golden

F64 = torch.float64
GOLD_TOL = dict(atol=1e-12, rtol=1e-10)


def _policy(rs, S, A, device, dtype):
    logits = torch.from_numpy(rs.standard_normal((S, A)))
    return torch.softmax(logits, -1).to(device=device, dtype=dtype)


def _dp_outputs(device=torch.device("cpu"), dtype=F64) -> dict[str, torch.Tensor]:
    """The dynamic-programming outputs stored in golden/data/rl_dp_outputs.npz."""
    rs = np.random.RandomState(1234)
    tol = 1e-13 if dtype == F64 else 1e-7
    out = {}
    lake = rl.frozen_lake(dtype=dtype, device=device)
    vi = rl.value_iteration(lake.P, lake.R, 0.9, tol=tol)
    out["lake_vi_V"] = vi.V
    out["lake_q"] = rl.q_values(lake.P, lake.R, vi.V, 0.9)
    out["lake_pi_V"] = rl.policy_iteration(lake.P, lake.R, 0.9).V
    out["lake_uniform_V"] = rl.policy_evaluation(lake.P, lake.R, torch.full((16, 4), 0.25, dtype=dtype,
                                                                            device=device), 0.9)
    ch = rl.chain(5, slip=0.2, dtype=dtype, device=device)
    out["chain_vi_V"] = rl.value_iteration(ch.P, ch.R, 0.95, tol=tol).V
    gw = rl.gridworld(3, 4, dtype=dtype, device=device)
    pi = _policy(rs, 12, 4, device, dtype)
    out["grid_policy_V"] = rl.policy_evaluation(gw.P, gw.R, pi, 0.9)
    theta = torch.from_numpy(rs.standard_normal((5, 2))).to(device=device, dtype=dtype).requires_grad_(True)
    J = rl.finite_horizon_objective(ch, torch.softmax(theta, -1), 6, 0.9)
    (grad,) = torch.autograd.grad(J, theta)
    out["chain_J"] = J.detach().reshape(1)
    out["chain_grad_J"] = grad
    return out


@pytest.mark.claim("rl.bellman-optimality", "rl.value-iteration", "rl.policy-iteration", "rl.bellman-expectation",
                   "rl.objective")
def test_golden_dynamic_programming_float64(ndarrays_regression):
    out = _dp_outputs()
    shapes = dict(lake_vi_V=(16,), lake_q=(16, 4), lake_pi_V=(16,), lake_uniform_V=(16,), chain_vi_V=(5,),
                  grid_policy_V=(12,), chain_J=(1,), chain_grad_J=(5, 2))
    for k, v in out.items():
        assert v.dtype == F64 and tuple(v.shape) == shapes[k], k
    # independent paths agree before anything is stored: VI against PI, T* at the fixed point,
    # the finite-horizon gradient against finite differences of the same objective
    assert_close(out["lake_vi_V"], out["lake_pi_V"], rtol=0, atol=1e-11)
    assert_close(out["lake_q"].amax(-1), out["lake_vi_V"], rtol=0, atol=1e-12)
    # central differences (step 1e-6: truncation ~1e-12, rounding ~1e-16 / 1e-6 = 1e-10) of J over the
    # same theta, drawn from the same stream after the gridworld policy's logits
    rs = np.random.RandomState(1234)
    rs.standard_normal((12, 4))
    theta = torch.from_numpy(rs.standard_normal((5, 2)))
    ch = rl.chain(5, slip=0.2)
    J = lambda th: float(rl.finite_horizon_objective(ch, torch.softmax(th, -1), 6, 0.9))  # noqa: E731
    assert abs(J(theta) - float(out["chain_J"][0])) < 1e-14
    fd = torch.zeros(5, 2, dtype=F64)
    for i in range(5):
        for j in range(2):
            e = torch.zeros(5, 2, dtype=F64)
            e[i, j] = 1e-6
            fd[i, j] = (J(theta + e) - J(theta - e)) / 2e-6
    assert_close(out["chain_grad_J"], fd, rtol=0, atol=1e-8)
    assert float(out["chain_grad_J"].abs().max()) > 1e-2           # a gradient that is not trivially zero
    ndarrays_regression.check({k: v.numpy() for k, v in out.items()}, basename="rl_dp_outputs",
                              default_tolerance=GOLD_TOL)


@pytest.mark.claim("rl.bellman-optimality", "rl.value-iteration", "rl.policy-iteration")
def test_golden_dynamic_programming_float32_on_device(device):
    stored = np.load(f"{__file__.rsplit('/', 1)[0]}/data/rl_dp_outputs.npz")
    out = _dp_outputs(device, torch.float32)
    for k, v in out.items():
        assert v.device.type == torch.device(device).type and v.dtype == torch.float32, k
        # Values are at most 1/(1 - gamma) = 20 (chain, gamma 0.95); a float32 sweep rounds each
        # entry by ~|V| 6e-8 per term, and the fixed point amplifies that by 1/(1 - gamma) <= 20:
        # ~2e-5 at worst, plus the stopping error tol gamma/(1 - gamma) <= 2e-6. The solves of
        # policy evaluation have condition numbers <= 20 as well. 1e-4 bounds both.
        assert_close(v.double().cpu(), torch.from_numpy(stored[k]), rtol=0, atol=1e-4, msg=k)


def _sampled_outputs() -> dict[str, np.ndarray]:
    """Episodes and Q-learning tables from fixed CPU generator seeds (golden/data/rl_sampled_outputs.npz)."""
    lake = rl.frozen_lake()
    uniform = torch.full((16, 4), 0.25, dtype=F64)
    g = torch.Generator().manual_seed(7)
    states, actions, rewards, alive = rl.sample_episodes(lake, uniform, 6, 12, generator=g)
    # the chain pays a reward on every back step, so every learner's table moves from the first step
    ch = rl.chain(5, slip=0.2)
    q = rl.run_q_learning(ch, 0.9, n_runs=3, n_steps=300, alpha=0.5, epsilon=0.3,
                          generator=torch.Generator().manual_seed(8))
    td = rl.run_td0(ch, torch.full((5, 2), 0.5, dtype=F64), 0.9, n_runs=2, n_steps=200, alpha=0.5, decay=0.7,
                    generator=torch.Generator().manual_seed(9))
    return dict(states=states.numpy(), actions=actions.numpy(), rewards=rewards.numpy(),
                alive=alive.numpy().astype(np.int64), q_learning_Q=q.model.numpy(), q_learning_losses=q.losses.numpy(),
                td0_V=td.model.numpy())


@pytest.mark.claim("rl.q-learning", "rl.mc-average-returns")
def test_golden_sampled_episodes_and_learners(ndarrays_regression):
    out = _sampled_outputs()
    assert out["states"].shape == (6, 13) and out["states"].dtype == np.int64
    assert out["q_learning_Q"].shape == (3, 5, 2) and out["q_learning_Q"].dtype == np.float64
    assert out["td0_V"].shape == (2, 5) and out["q_learning_losses"].shape == (300,)
    # what is stored moved away from the zero start (a table of zeros would guard nothing)
    assert (np.abs(out["q_learning_Q"]) > 0.1).mean() > 0.5 and (np.abs(out["td0_V"]) > 0.1).all()
    # sanity of what is stored: episodes start at S (state 0) and stop at holes or the goal
    assert (out["states"][:, 0] == 0).all()
    lake = rl.frozen_lake()
    for ep_s, ep_alive in zip(out["states"], out["alive"]):
        dead = np.flatnonzero(ep_alive == 0)
        if dead.size:
            assert bool(lake.terminal[ep_s[dead[0]]])
    ndarrays_regression.check(out, basename="rl_sampled_outputs", default_tolerance=GOLD_TOL)
