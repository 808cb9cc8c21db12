"""Edge cases and bad inputs of impl/rl.py found by mutation testing (report/mutation/rl.txt):
argument checks that must name the right argument or refuse a boundary value, devices and
defaults that must be honoured, and DQN's target-network schedule."""

import pytest
import torch
from torch.testing import assert_close

from impl import rl

f64 = torch.float64


def _mdp(S=3, A=2, dtype=f64, seed=0):
    m = rl.random_mdp(1, S, A, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return m.P[0], m.R[0]


def _uniform(S=3, A=2, dtype=f64):
    return torch.full((S, A), 1.0 / A, dtype=dtype)


# --------------------------------------------------------------------------- policies and MDPs


def test_policy_checks():
    P, R = _mdp()
    V = torch.zeros(3, dtype=f64)
    bad = _uniform()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^policy: contains NaN"):
        rl.bellman_expectation(P, R, bad, V, 0.9)
    # S = 3 states, A = 2 actions: the message gives both
    with pytest.raises(ValueError, match=r"^policy: expected shape \(\.\.\., 3, 2\), got \(2, 3\)$"):
        rl.bellman_expectation(P, R, _uniform(2, 3), V, 0.9)
    # float32 rows summing to 1.5 are not probability vectors
    P32, R32 = _mdp(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"^policy: rows must be probability vectors"):
        rl.bellman_expectation(P32, R32, torch.full((3, 2), 0.75), V.float(), 0.9)


def test_float64_rows_must_sum_to_one_within_1e_9():
    # float64 is held to 1e-9, float32 only to 1e-4: a 1e-6 error is rounding in float32 only
    P, R = _mdp()
    bad = P.clone()
    bad[0, 0, 0] += 1e-6
    V = torch.zeros(3, dtype=f64)
    with pytest.raises(ValueError, match=r"^P: rows P\[\.\.\., s, a, :\] must sum to 1"):
        rl.q_values(bad, R, V, 0.9)
    assert rl.q_values(bad.float(), R.float(), V.float(), 0.9).shape == (3, 2)


def test_random_mdp_checks_n_actions_by_name():
    with pytest.raises(ValueError, match=r"^n_actions: must be >= 1"):
        rl.random_mdp(1, 3, 0)


def test_random_mdp_with_a_dirichlet_concentration():
    m = rl.random_mdp(2, 4, 3, generator=torch.Generator().manual_seed(1), concentration=0.5)
    assert m.P.shape == (2, 4, 3, 4) and bool((m.P >= 0).all())
    assert_close(m.P.sum(-1), torch.ones(2, 4, 3, dtype=f64))


def test_gridworld_chain_and_table_checks():
    with pytest.raises(ValueError, match=r"^cols: must be >= 1"):
        rl.gridworld(2, 0)
    with pytest.raises(ValueError, match=r"^slip: must be <= 1"):
        rl.chain(3, slip=1.5)
    # probabilities -0.5, 0.75, 0.75 sum to 1 but are no distribution
    table = {0: {0: [(-0.5, 0, 0.0, False), (0.75, 1, 0.0, False), (0.75, 1, 0.0, False)]},
             1: {0: [(1.0, 1, 0.0, True)]}}
    with pytest.raises(ValueError, match=r"^table\[0\]\[0\] probability: must be >= 0"):
        rl.from_transition_table(table, 2, 1)


def test_value_iteration_checks_V0_by_name():
    P, R = _mdp()
    with pytest.raises(TypeError, match=r"^V0: expected a torch.Tensor"):
        rl.value_iteration(P, R, 0.9, V0=[0.0, 0.0, 0.0])


def test_policy_evaluation_iterative_from_V0():
    # v_pi is the fixed point of T_pi: started there, the first sweep already meets the rule
    P, R = _mdp()
    pi = _uniform()
    v = rl.policy_evaluation(P, R, pi, 0.9)
    res = rl.policy_evaluation_iterative(P, R, pi, 0.9, V0=v)
    assert (res.iterations, res.converged) == (1, True)
    assert_close(res.V, v, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match=r"^V0: dtype torch.float32 differs from P's torch.float64$"):
        rl.policy_evaluation_iterative(P, R, pi, 0.9, V0=v.float())


def test_policy_iteration_out_of_rounds_returns_the_last_values():
    # chain(3), always "back": v = small / (1 - gamma) = 1 in every state; going forward in the
    # last state is worth big + gamma * 1 = 1.9 > 1, so one round improves but is not stable
    m = rl.chain(3)
    res = rl.policy_iteration(m.P, m.R, 0.9, max_iter=1)
    assert (res.iterations, res.converged) == (1, False)
    assert_close(res.V, torch.ones(3, dtype=f64), rtol=0, atol=1e-12)
    assert res.policy.tolist() == [0, 0, 1]


def test_epsilon_greedy_checks_Q():
    Q = torch.zeros(3, 2, dtype=f64)
    Q[1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^Q: contains NaN or infinite"):
        rl.epsilon_greedy_probs(Q, 0.1)
    with pytest.raises(ValueError, match=r"^Q: expected 3 dimensions"):
        rl.epsilon_greedy(torch.zeros(3, 2, dtype=f64), torch.tensor([0, 1, 2]), 0.1)


def test_epsilon_greedy_states_on_the_tables_device():
    Q = torch.zeros(2, 3, 2, dtype=f64)
    with pytest.raises(ValueError, match=r"^states: on meta, but the tables are on cpu$"):
        rl.epsilon_greedy(Q, torch.zeros(2, dtype=torch.long, device="meta"), 0.1)


def test_mc_evaluation_checks_alive_and_n_states_by_name():
    states, rewards = torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=f64)
    with pytest.raises(TypeError, match=r"^alive: expected a torch.Tensor"):
        rl.mc_evaluation(states, rewards, [[True, True]], 0.9, 3)
    alive = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^n_states: must be >= 1"):
        rl.mc_evaluation(states, rewards, alive, 0.9, 0)


# --------------------------------------------------------------------------- tabular updates


def test_td0_update_checks_name_the_argument():
    V, s = torch.zeros(3, 4, dtype=f64), torch.tensor([0, 1, 2])
    r = torch.ones(3, dtype=f64)
    with pytest.raises(ValueError, match=r"^V: expected 2 dimensions"):
        rl.td0_update(torch.zeros(3, 4, 1, dtype=f64), s, r, s, 0.9, 0.5)
    with pytest.raises(ValueError, match=r"^rewards: expected shape \(3\)"):
        rl.td0_update(V, s, torch.ones(2, dtype=f64), s, 0.9, 0.5)
    # one step size per run: (3,), not a broadcastable (1,)
    with pytest.raises(ValueError, match=r"^alpha: expected shape \(3\)"):
        rl.td0_update(V, s, r, s, 0.9, torch.full((1,), 0.5, dtype=f64))


def test_q_updates_check_names():
    Q, s, a = torch.zeros(3, 4, 2, dtype=f64), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0])
    r = torch.ones(3, dtype=f64)
    with pytest.raises(ValueError, match=r"^r: expected shape \(3\)"):
        rl.q_learning_update(Q, s, a, torch.ones(2, dtype=f64), s, 0.9, 0.5)
    with pytest.raises(TypeError, match=r"^alpha: dtype torch.float32 differs from Q's torch.float64$"):
        rl.sarsa_update(Q, s, a, r, s, a, 0.9, torch.full((3,), 0.5))


def test_learning_step_size_at_most_one():
    mdp = rl.chain(3)
    with pytest.raises(ValueError, match=r"^alpha: must be <= 1"):
        rl.run_td0(mdp, _uniform(), 0.9, n_runs=2, n_steps=1, alpha=1.5)


def test_learning_checks_the_start_distribution():
    mdp = rl.chain(3)
    # a distribution over 4 states does not fit 3 states, even though it sums to one
    for start, msg in ((torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=f64), r"^start: expected shape \(3\)"),
                       (torch.tensor([0.5, 0.5, 0.5], dtype=f64), r"^start: must sum to 1")):
        with pytest.raises(ValueError, match=msg):
            rl.run_td0(mdp._replace(start=start), _uniform(), 0.9, n_runs=2, n_steps=1)


def test_run_td0_keeps_to_the_mdps_device():
    # every tensor the learner makes follows P, not torch's default device
    mdp, pi, gen = rl.chain(3), _uniform(), torch.Generator().manual_seed(0)
    with torch.device("meta"):
        out = rl.run_td0(mdp, pi, 0.9, n_runs=2, n_steps=3, generator=gen)
    assert out.model.device.type == "cpu" and out.losses.device.type == "cpu"
    assert bool(torch.isfinite(out.model).all())


# --------------------------------------------------------------------------- CartPole, replay, DQN


def test_cartpole_step_wants_a_matrix_of_states():
    with pytest.raises(ValueError, match=r"^state: expected 2 dimensions"):
        rl.cartpole_step(torch.zeros(4), torch.tensor([0]))


def test_cartpole_reset_checks_generator_by_name():
    with pytest.raises(TypeError, match=r"^generator: expected a torch.Generator"):
        rl.cartpole_reset(2, generator="seed")


def test_q_network_gives_one_value_per_action():
    torch.manual_seed(0)
    assert rl.QNetwork(4, 3, hidden=8)(torch.zeros(5, 4)).shape == (5, 3)


def test_replay_buffer_lives_on_its_device():
    buf = rl.ReplayBuffer(4, 2, device="meta")
    n = 3
    buf.add(torch.empty(n, 2, device="meta"), torch.zeros(n, dtype=torch.long, device="meta"),
            torch.empty(n, device="meta"), torch.empty(n, 2, device="meta"),
            torch.zeros(n, dtype=torch.bool, device="meta"))
    assert all(t.device.type == "meta" for t in buf.sample(5))


def test_replay_buffer_add_checks_action_shape():
    buf = rl.ReplayBuffer(4, 2)
    with pytest.raises(ValueError, match=r"^a: expected shape \(3\)"):
        buf.add(torch.zeros(3, 2), torch.zeros(1, dtype=torch.long), torch.zeros(3), torch.zeros(3, 2),
                torch.zeros(3, dtype=torch.bool))


def test_dqn_with_target_every_one_targets_the_current_network(monkeypatch):
    # target_every = 1 copies the network into the target after every step: each update's
    # target network equals the network being trained
    seen = []
    real = rl.dqn_loss

    def spy(q_net, s, a, r, s2, done, gamma, target_net=None):
        seen.append(all(torch.equal(p, t) for p, t in zip(q_net.parameters(), target_net.parameters())))
        return real(q_net, s, a, r, s2, done, gamma, target_net=target_net)

    monkeypatch.setattr(rl, "dqn_loss", spy)
    torch.manual_seed(0)
    rl.train_dqn(n_envs=4, steps=4, batch=4, target_every=1, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 4 and all(seen)


def test_cartpole_episode_lengths_checks_alive_every_50_steps():
    # every cart falls within 50 steps under a constant push; the loop then stops at step 50
    calls = []

    def push_left(s):
        calls.append(1)
        return torch.zeros(s.shape[0], dtype=torch.long)

    lengths = rl.cartpole_episode_lengths(push_left, n=4, generator=torch.Generator().manual_seed(0))
    assert bool((lengths < 50).all()) and len(calls) == 50


# --------------------------------------------------------------------------- policy gradients


def test_gaussian_policy_checks_and_device():
    with pytest.raises(ValueError, match=r"^action_dim: must be >= 1"):
        rl.GaussianPolicy(3, 0)
    pol = rl.GaussianPolicy(3, 2).to("meta")
    a = pol.sample(torch.empty(5, 3, device="meta"))
    assert a.device.type == "meta" and a.shape == (5, 2)


def test_discount_weights_on_the_device_asked_for():
    w = rl.discount_weights(3, 0.5, device="meta")
    assert w.device.type == "meta" and w.shape == (3,)


def test_actor_critic_critic_learns_the_value():
    # one state, one action, reward 1 forever: v = 1 / (1 - gamma) = 2 for gamma = 1/2
    one = rl.FiniteMDP(torch.ones(1, 1, 1, dtype=f64), torch.ones(1, 1, dtype=f64), torch.ones(1, dtype=f64),
                       torch.zeros(1, dtype=torch.bool))
    torch.manual_seed(0)
    res = rl.train_actor_critic(one, 0.5, n_runs=1, n_steps=150, hidden=8, generator=torch.Generator().manual_seed(0))
    assert abs(float(res.critic(torch.ones(1, 1, dtype=f64)).detach()) - 2.0) < 0.05


def test_train_actor_critic_default_and_checks():
    mdp = rl.chain(3)
    with pytest.raises(ValueError, match=r"^lr_critic: must be > 0"):
        rl.train_actor_critic(mdp, 0.9, n_runs=2, n_steps=1, lr_critic=0.0)
    # the documented default lr_actor = 0.5
    out = []
    for kw in ({}, {"lr_actor": 0.5}):
        torch.manual_seed(0)
        out.append(rl.train_actor_critic(mdp, 0.9, n_runs=4, n_steps=5,
                                          generator=torch.Generator().manual_seed(0), **kw).model)
    assert torch.equal(out[0], out[1])
    torch.manual_seed(0)
    other = rl.train_actor_critic(mdp, 0.9, n_runs=4, n_steps=5, lr_actor=1.5,
                                  generator=torch.Generator().manual_seed(0)).model
    assert not torch.equal(out[0], other)
