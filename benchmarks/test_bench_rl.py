"""Reinforcement learning: value-iteration sweeps over MDP sizes, policy against value iteration to
accuracy 1e-6, and 4096 parallel Q-learning runs on FrozenLake.

* ``rl.vi-sweep-<S>`` (S = 100 ... 2000 on a CPU): 10 sweeps of ``rl.value_iteration`` (kernel) against 10 plain matrix-vector
  sweeps (reference) on a random MDP with S states and 8 actions (float32); the kernels form the
  sweep ``rl.vi-sweep`` whose fitted exponent of time against S should be about 2 (|S|^2 |A| work).
  Dense P needs 32 |S|^2 bytes: 10^4 states (3.2 GB) run only on a GPU.
* ``rl.pi-vs-vi``: policy iteration (kernel) against value iteration (reference), both to
  max-norm accuracy 1e-6, |S| = 200, |A| = 8, gamma = 0.99.
* ``rl.q-learning-runs``: 4096 independent Q-learning runs (kernel) against one (reference), 200 steps.
"""

import pytest
import torch

from impl import rl

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _mdp(S, dtype=torch.float32, seed=0):
    m = rl.random_mdp(1, S, 8, generator=torch.Generator(device=DEVICE).manual_seed(seed), dtype=dtype, device=DEVICE)
    return m.P[0], m.R[0]


def _plain_sweeps(P, R, gamma, k):
    S, A = R.shape
    flat = P.reshape(S * A, S)
    V = torch.zeros(S, dtype=R.dtype, device=R.device)
    for _ in range(k):
        V = (R + gamma * (flat @ V).reshape(S, A)).amax(-1)
    return V


def _sizes(quick):
    sizes = [100, 300, 1000] if quick else [100, 300, 1000, 2000]
    if DEVICE.type == "cuda":
        sizes.append(10_000)
    return sizes


@pytest.mark.parametrize("S", [100, 300, 1000, 2000, 10_000])
@pytest.mark.parametrize("role", ["reference", "kernel"])
def test_vi_sweep(measure, quick, S, role):
    if S not in _sizes(quick):
        pytest.skip(f"|S| = {S} is left out in this mode / on this device (dense P is 32 |S|^2 bytes)")
    P, R = _mdp(S)
    if role == "reference":
        measure(_plain_sweeps, P, R, 0.9, 10, group=f"rl.vi-sweep-{S}", role=role)
    else:
        out = measure(rl.value_iteration, P, R, 0.9, kwargs=dict(tol=0.0, max_iter=10),
                      group=f"rl.vi-sweep-{S}", role=role, size=S, sweep="rl.vi-sweep")
        torch.testing.assert_close(out[0], _plain_sweeps(P, R, 0.9, 10), rtol=1e-5, atol=1e-5)


def test_vi_to_accuracy(measure):
    P, R = _mdp(200, torch.float64, seed=1)
    gamma = 0.99
    # stopping at step <= eps (1 - gamma) / gamma guarantees max |V - v_*| <= eps = 1e-6
    V, *_ = measure(rl.value_iteration, P, R, gamma, kwargs=dict(tol=1e-6 * (1 - gamma) / gamma),
                   group="rl.pi-vs-vi", role="reference")
    v_star = rl.policy_iteration(P, R, gamma).V
    assert (V - v_star).abs().max() <= 1e-6


def test_pi_to_accuracy(measure):
    P, R = _mdp(200, torch.float64, seed=1)
    measure(rl.policy_iteration, P, R, 0.99, group="rl.pi-vs-vi", role="kernel")


@pytest.mark.parametrize("runs, role", [(1, "reference"), (4096, "kernel")])
def test_q_learning_runs(measure, runs, role):
    lake = rl.frozen_lake(device=DEVICE, dtype=torch.float32)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    measure(rl.run_q_learning, lake, 0.9, kwargs=dict(n_runs=runs, n_steps=200, epsilon=0.2, generator=g),
            group="rl.q-learning-runs", role=role)
