"""Reinforcement learning on finite MDPs held as tensors, plus DQN, REINFORCE and actor-critic.

A finite MDP is a transition tensor ``P[..., s, a, s']`` (rows sum to one) and an expected reward
``R[..., s, a]`` (the notes' r : S x A -> R; a reward that depends on s' enters as its
expectation), with any number of leading batch dimensions: the dynamic-programming functions run
on many MDPs at once, on any device. Terminal states are absorbing with zero reward, so the
infinite discounted sum G_t of the notes needs no special case; episodes sampled for Monte Carlo
stop at them.

Learning from samples (MC, TD(0), SARSA, Q-learning) runs ``n_runs`` independent learners on one
MDP in parallel: every tensor carries a leading run dimension N.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from impl._checks import (check_bool, check_float, check_generator, check_index, check_int,
                          check_probability, check_same, check_tensor)


# ----------------------------------------------------------------------------------------------
# Finite MDPs
# ----------------------------------------------------------------------------------------------

class FiniteMDP(NamedTuple):
    """P: (..., S, A, S) transition probabilities, R: (..., S, A) expected rewards,
    start: (..., S) initial state distribution, terminal: (..., S) bool absorbing states."""
    P: torch.Tensor
    R: torch.Tensor
    start: torch.Tensor
    terminal: torch.Tensor


def check_mdp(P, R, name_p: str = "P", name_r: str = "R") -> tuple[int, int]:
    """Validate P: (..., S, A, S) stochastic and R: (..., S, A); return (S, A)."""
    check_tensor(P, name_p)
    if P.ndim < 3 or P.shape[-1] != P.shape[-3]:
        raise ValueError(f"{name_p}: expected shape (..., S, A, S), got {tuple(P.shape)}")
    S, A = P.shape[-3], P.shape[-2]
    check_tensor(R, name_r, finite=True)
    if tuple(R.shape) != tuple(P.shape[:-1]):
        raise ValueError(f"{name_r}: expected shape {tuple(P.shape[:-1])} to match {name_p}, got {tuple(R.shape)}")
    check_same(P, name_p, **{name_r: R})
    # Two reductions cover it all: a NaN or inf entry makes the row-sum error NaN or inf.
    if P.numel() and P.min() < 0:
        raise ValueError(f"{name_p}: transition probabilities must be >= 0")
    err = (P.sum(-1) - 1).abs().max() if P.numel() else torch.zeros(())
    if not err <= (1e-9 if P.dtype == torch.float64 else 1e-4):
        raise ValueError(f"{name_p}: rows P[..., s, a, :] must sum to 1 (max error {float(err):.2e})")
    return S, A


def _check_index(t, name: str, **kw) -> torch.Tensor:
    """An integer (state or action index) tensor."""
    check_tensor(t, name, floating=False, **kw)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor of indices, got dtype {t.dtype}")
    return t


def _check_gamma(gamma, *, open_one: bool = True) -> float:
    return check_float(gamma, "gamma", min=0.0, max=1.0, max_open=open_one)


def _check_policy(policy, P, name: str = "policy") -> torch.Tensor:
    """policy: (..., S, A) probabilities pi(a | s) broadcastable against P's batch."""
    check_tensor(policy, name, finite=True)
    if policy.ndim < 2 or tuple(policy.shape[-2:]) != tuple(P.shape[-3:-1]):
        raise ValueError(f"{name}: expected shape (..., {P.shape[-3]}, {P.shape[-2]}), got {tuple(policy.shape)}")
    check_same(P, "P", **{name: policy})
    if (policy < 0).any() or (policy.sum(-1) - 1).abs().max() > (1e-9 if policy.dtype == torch.float64 else 1e-4):
        raise ValueError(f"{name}: rows must be probability vectors over actions")
    return policy


def deterministic_policy(actions: torch.Tensor, n_actions: int, dtype=torch.float64) -> torch.Tensor:
    """pi : S -> A as probabilities. actions: (..., S) long -> (..., S, A) one-hot."""
    _check_index(actions, "actions")
    check_int(n_actions, "n_actions", min=1)
    if actions.numel() and (actions.min() < 0 or actions.max() >= n_actions):
        raise ValueError(f"actions: entries must lie in [0, {n_actions})")
    return nn.functional.one_hot(actions, n_actions).to(dtype)


def random_mdp(batch: int, n_states: int, n_actions: int, *, generator: torch.Generator | None = None,
               dtype=torch.float64, device="cpu", concentration: float = 1.0) -> FiniteMDP:
    """B random MDPs: P[b, s, a] ~ Dirichlet(concentration), R ~ U(-1, 1), uniform start, no terminals.

    Drawn on ``device`` (a generator must live there, DESIGN.md): the same seed gives the same
    MDP on every CPU, and a device-specific stream on a GPU.
    """
    check_int(batch, "batch", min=1)
    check_int(n_states, "n_states", min=1)
    check_int(n_actions, "n_actions", min=1)
    check_float(concentration, "concentration", min=0.0, min_open=True)
    check_generator(generator, "generator", torch.device(device))
    gdev = torch.device(device)
    # Dirichlet via normalised Gamma draws; exponential for concentration 1 keeps it cheap.
    shape = (batch, n_states, n_actions, n_states)
    if concentration == 1.0:
        # rand can return exactly 0: clamp at the dtype's smallest normal so the log stays finite
        g = -torch.rand(shape, generator=generator, dtype=dtype, device=gdev).clamp_min(torch.finfo(dtype).tiny).log()
    else:
        g = torch._standard_gamma(torch.full(shape, concentration, dtype=dtype, device=gdev), generator=generator)
    P = g / g.sum(-1, keepdim=True)
    R = 2 * torch.rand(shape[:-1], generator=generator, dtype=dtype, device=gdev) - 1
    start = torch.full((batch, n_states), 1.0 / n_states, dtype=dtype, device=gdev)
    terminal = torch.zeros(batch, n_states, dtype=torch.bool, device=gdev)
    return FiniteMDP(P, R, start, terminal)


# Actions in Gymnasium's FrozenLake order, so its table loads without a permutation.
LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
_MOVES = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}

FROZEN_LAKE_4X4 = ("SFFF", "FHFH", "FFFH", "HFFG")


def _grid_move(rows: int, cols: int) -> torch.Tensor:
    """(S, 4) next state of a deterministic move on a grid; bumping a wall stays put."""
    out = torch.empty(rows * cols, 4, dtype=torch.long)
    for a, (dr, dc) in _MOVES.items():
        r = torch.arange(rows).repeat_interleave(cols)
        c = torch.arange(cols).repeat(rows)
        out[:, a] = (r + dr).clamp(0, rows - 1) * cols + (c + dc).clamp(0, cols - 1)
    return out


def frozen_lake(desc=FROZEN_LAKE_4X4, *, slippery: bool = True, dtype=torch.float64, device="cpu") -> FiniteMDP:
    """FrozenLake as in Gymnasium: S start, F frozen, H hole, G goal; reward 1 on entering G.

    Slippery moves go in the intended direction or either perpendicular one, each with prob. 1/3.
    Holes and the goal are absorbing. R[s, a] is the expected reward sum_{s'} P[s, a, s'] [s' = G].
    desc: sequence of equal-length strings. Returns a FiniteMDP with batch shape ().
    """
    check_bool(slippery, "slippery")
    if isinstance(desc, str) or not all(isinstance(r, str) for r in desc) or len(desc) == 0:
        raise TypeError("desc: expected a sequence of strings")
    cols = len(desc[0])
    if any(len(r) != cols for r in desc) or any(ch not in "SFHG" for r in desc for ch in r):
        raise ValueError("desc: rows must have equal length and use only S, F, H, G")
    if sum(r.count("S") for r in desc) != 1:
        raise ValueError("desc: needs exactly one start S")
    rows = len(desc)
    flat = "".join(desc)
    S, A = rows * cols, 4
    move = _grid_move(rows, cols)
    P = torch.zeros(S, A, S, dtype=dtype)
    for a in range(A):
        dirs = [(a - 1) % 4, a, (a + 1) % 4] if slippery else [a]
        for d in dirs:
            P[torch.arange(S), a, move[:, d]] += 1.0 / len(dirs)
    terminal = torch.tensor([ch in "HG" for ch in flat])
    P[terminal] = 0.0
    P[terminal.nonzero()[:, 0], :, terminal.nonzero()[:, 0]] = 1.0
    goal = torch.tensor([ch == "G" for ch in flat], dtype=dtype)
    R = P @ goal
    R[terminal] = 0.0
    start = torch.tensor([float(ch == "S") for ch in flat], dtype=dtype)
    return FiniteMDP(P.to(device), R.to(device), start.to(device), terminal.to(device))


def gridworld(rows: int, cols: int, goal: int | None = None, *, step_reward: float = -1.0,
              dtype=torch.float64, device="cpu") -> FiniteMDP:
    """Deterministic gridworld: 4 moves (LEFT, DOWN, RIGHT, UP), reward step_reward per move until
    the absorbing goal (default the last cell). Starts uniform over non-goal cells."""
    check_int(rows, "rows", min=1)
    check_int(cols, "cols", min=1)
    S = rows * cols
    goal = S - 1 if goal is None else check_int(goal, "goal", min=0, max=S - 1)
    check_float(step_reward, "step_reward")
    move = _grid_move(rows, cols)
    P = nn.functional.one_hot(move, S).to(dtype)
    P[goal] = 0.0
    P[goal, :, goal] = 1.0
    R = torch.full((S, 4), step_reward, dtype=dtype)
    R[goal] = 0.0
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[goal] = True
    start = (~terminal).to(dtype) / (S - 1) if S > 1 else torch.ones(1, dtype=dtype)
    return FiniteMDP(P.to(device), R.to(device), start.to(device), terminal.to(device))


def chain(n: int, *, slip: float = 0.0, small: float = 0.1, big: float = 1.0,
          dtype=torch.float64, device="cpu") -> FiniteMDP:
    """The chain MDP: states 0..n-1, action 0 (back) returns to state 0 and pays `small`,
    action 1 (forward) moves one step right and pays 0, or `big` when taken in the last state
    (which it does not leave). With prob. `slip` the other action's move happens instead.
    No terminal states; start in state 0."""
    check_int(n, "n", min=2)
    check_float(slip, "slip", min=0.0, max=1.0)
    P = torch.zeros(n, 2, n, dtype=dtype)
    s = torch.arange(n)
    fwd = (s + 1).clamp(max=n - 1)
    for a, (main, other) in enumerate([(torch.zeros_like(s), fwd), (fwd, torch.zeros_like(s))]):
        P[s, a, main] += 1 - slip
        P[s, a, other] += slip
    # r(s, a) depends on the chosen action only, as the notes' r : S x A -> R; slips move the state.
    R = torch.zeros(n, 2, dtype=dtype)
    R[:, 0] = small
    R[n - 1, 1] = big
    start = torch.zeros(n, dtype=dtype)
    start[0] = 1.0
    return FiniteMDP(P.to(device), R.to(device), start.to(device), torch.zeros(n, dtype=torch.bool, device=device))


def from_transition_table(table: dict, n_states: int, n_actions: int, *, dtype=torch.float64,
                          device="cpu") -> FiniteMDP:
    """Load a Gymnasium-style table ``table[s][a] = [(prob, next_state, reward, terminated), ...]``.

    Repeated (s, a, s') entries add up; R[s, a] = sum prob * reward. A state whose every
    transition is a self-loop with zero reward is terminal. Start state 0.
    """
    if not isinstance(table, dict):
        raise TypeError(f"table: expected a dict, got {type(table).__name__}")
    n_states = check_int(n_states, "n_states", min=1)
    n_actions = check_int(n_actions, "n_actions", min=1)
    P = torch.zeros(n_states, n_actions, n_states, dtype=dtype)
    R = torch.zeros(n_states, n_actions, dtype=dtype)
    for s in range(n_states):
        if s not in table or any(a not in table[s] for a in range(n_actions)):
            raise ValueError(f"table: missing entries for state {s}")
        for a in range(n_actions):
            for entry in table[s][a]:
                if len(entry) != 4:
                    raise ValueError(f"table[{s}][{a}]: entries must be (prob, next_state, reward, terminated)")
                prob, s2, rew, _ = entry
                prob = check_float(prob, f"table[{s}][{a}] probability", min=0.0, max=1.0)
                s2 = check_int(s2, f"table[{s}][{a}] next state", min=0, max=n_states - 1)
                rew = check_float(rew, f"table[{s}][{a}] reward")
                P[s, a, s2] += prob
                R[s, a] += prob * rew
    err = (P.sum(-1) - 1).abs()
    if not bool(err.max() <= 1e-9):
        s, a = divmod(int(err.argmax()), n_actions)
        raise ValueError(f"table[{s}][{a}]: transition probabilities sum to {float(P[s, a].sum()):.6g}, not 1")
    idx = torch.arange(n_states)
    terminal = (P[idx, :, idx] == 1).all(-1) & (R == 0).all(-1)
    start = torch.zeros(n_states, dtype=dtype)
    start[0] = 1.0
    return FiniteMDP(P.to(device), R.to(device), start.to(device), terminal.to(device))


# ----------------------------------------------------------------------------------------------
# Dynamic programming
# ----------------------------------------------------------------------------------------------

def q_values(P, R, V, gamma) -> torch.Tensor:
    """q(s, a) = r(s, a) + gamma sum_{s'} p(s' | s, a) V(s'). P: (..., S, A, S), V: (..., S) -> (..., S, A)."""
    S, _ = check_mdp(P, R)
    check_tensor(V, "V", finite=True)
    if V.shape[-1] != S:
        raise ValueError(f"V: expected last dimension {S}, got shape {tuple(V.shape)}")
    check_same(P, "P", V=V)
    gamma = _check_gamma(gamma, open_one=False)
    return _q(P, R, V, gamma)


def _q(P, R, V, gamma):
    # the sweep itself, without the input checks (loops call it thousands of times)
    return R + gamma * torch.einsum("...sat,...t->...sa", P, V)


def bellman_expectation(P, R, policy, V, gamma) -> torch.Tensor:
    """T_pi V (s) = sum_a pi(a|s) sum_{s'} p(s'|s,a) [r(s,a) + gamma V(s')]. -> (..., S)."""
    _check_policy(policy, P)
    return (policy * q_values(P, R, V, gamma)).sum(-1)


def bellman_optimality(P, R, V, gamma) -> torch.Tensor:
    """The operator T* of the notes: T*V(s) = max_a sum_{s'} p(s'|s,a) (r(s,a) + gamma V(s')). -> (..., S)."""
    return q_values(P, R, V, gamma).amax(-1)


def greedy_policy(P, R, V, gamma) -> torch.Tensor:
    """pi'(s) = argmax_a (r(s, a) + gamma E[V(s')]). -> (..., S) long (first maximiser on ties)."""
    return q_values(P, R, V, gamma).argmax(-1)


def policy_matrices(P, R, policy) -> tuple[torch.Tensor, torch.Tensor]:
    """P_pi[s, s'] = sum_a pi(a|s) P[s, a, s'] and r_pi(s) = sum_a pi(a|s) R[s, a]."""
    check_mdp(P, R)
    _check_policy(policy, P)
    return torch.einsum("...sa,...sat->...st", policy, P), (policy * R).sum(-1)


def policy_evaluation(P, R, policy, gamma) -> torch.Tensor:
    """v_pi as the solution of the Bellman expectation equation (I - gamma P_pi) v = r_pi. -> (..., S).

    Needs gamma < 1 (then I - gamma P_pi is invertible for every stochastic P_pi).
    """
    gamma = _check_gamma(gamma)
    P_pi, r_pi = policy_matrices(P, R, policy)
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    return torch.linalg.solve(eye - gamma * P_pi, r_pi.unsqueeze(-1)).squeeze(-1)


class DPResult(NamedTuple):
    """What every dynamic-programming solver returns (value iteration, iterative policy evaluation,
    policy iteration), with the same field names.

    V: (..., S) the values reached; policy: (..., S) long, the greedy actions of V (for policy
    iteration its final policy, greedy for its own V up to the rounding margin); iterations:
    sweeps (policy iteration: evaluation-improvement rounds) made until the stopping rule held, or
    max_iter; converged: whether the rule held within max_iter.
    """
    V: torch.Tensor
    policy: torch.Tensor
    iterations: int
    converged: bool


# Convergence is read on the host once every CHECK_EVERY sweeps (one synchronisation), not per sweep.
CHECK_EVERY = 10


def _iterate(sweep, V, tol: float, max_iter: int, check_every: int, strict: bool):
    """V <- sweep(V) until max |V_new - V| <= tol (< tol with ``strict``), over the whole batch.

    The rule is tested on the device after every sweep; once it holds, V and the sweep counter
    stop changing, so the result is exactly that of a per-sweep host test (the V of the first
    sweep that met the rule, and its number). The host reads the flag only every ``check_every``
    sweeps, computing at most check_every - 1 sweeps that are then discarded.
    Returns (V, iterations, converged).
    """
    done = torch.zeros((), dtype=torch.bool, device=V.device)
    count = torch.zeros((), dtype=torch.long, device=V.device)
    k = 0
    while k < max_iter:
        for _ in range(min(check_every, max_iter - k)):
            V_new = sweep(V)
            diff = (V_new - V).abs().amax() if V.numel() else torch.zeros((), dtype=V.dtype, device=V.device)
            count += ~done
            V = torch.where(done, V, V_new)
            done = done | ((diff < tol) if strict else (diff <= tol))
            k += 1
        if bool(done):
            break
    it, conv = torch.stack([count, done.long()]).tolist()
    return V, it, bool(conv)


def policy_evaluation_iterative(P, R, policy, gamma, *, tol: float = 1e-10, max_iter: int = 100_000,
                                V0=None, check_every: int = CHECK_EVERY) -> DPResult:
    """Iterate V <- T_pi V until max |change| < tol (all MDPs of the batch).

    Convergence is tested on the device every sweep but read on the host every ``check_every``
    sweeps (see ``_iterate``): the result is the same as with a per-sweep test.
    Returns DPResult(V (..., S), policy = greedy actions of V, iterations, converged).
    """
    gamma = _check_gamma(gamma)
    check_float(tol, "tol", min=0.0, min_open=True)
    check_int(max_iter, "max_iter", min=1)
    check_every = check_int(check_every, "check_every", min=1)
    P_pi, r_pi = policy_matrices(P, R, policy)
    V = torch.zeros_like(r_pi) if V0 is None else check_tensor(V0, "V0", finite=True, shape=tuple(r_pi.shape)).clone()
    if V0 is not None:
        check_same(P, "P", V0=V0)
    V, k, conv = _iterate(lambda V: r_pi + gamma * (P_pi @ V.unsqueeze(-1)).squeeze(-1), V, tol, max_iter,
                          check_every, strict=True)
    return DPResult(V, _q(P, R, V, gamma).argmax(-1), k, conv)


def value_iteration(P, R, gamma, *, tol: float = 1e-10, max_iter: int = 100_000, V0=None,
                    check_every: int = CHECK_EVERY) -> DPResult:
    """Iterate V_new = T* V_old until max |V_new - V_old| <= tol; tol = 0 waits for exact equality.

    Returns DPResult(V, policy = greedy actions of V, iterations = sweeps, converged). The greedy
    policy of V is the optimal policy pi_* once V is close to v_*. Each sweep touches every
    (s, a, s') once: O(|S|^2 |A|) time, O(|S|) memory beyond the model. The stopping rule is
    tested on the device after each sweep and read on the host every ``check_every`` sweeps
    (one synchronisation per ``check_every`` sweeps); V and the count are those of the first
    sweep that met it, as with a per-sweep test.
    """
    S, _ = check_mdp(P, R)
    gamma = _check_gamma(gamma)
    check_float(tol, "tol", min=0.0)
    check_int(max_iter, "max_iter", min=1)
    check_every = check_int(check_every, "check_every", min=1)
    V = torch.zeros(R.shape[:-1], dtype=R.dtype, device=R.device) if V0 is None else check_tensor(V0, "V0", finite=True).clone()
    if V.shape[-1] != S:
        raise ValueError(f"V0: expected last dimension {S}, got shape {tuple(V.shape)}")
    if V0 is not None:
        check_same(P, "P", V0=V0)
        try:
            torch.broadcast_shapes(V.shape[:-1], R.shape[:-2])
        except RuntimeError:
            raise ValueError(f"V0: batch shape {tuple(V.shape[:-1])} does not broadcast with P's "
                             f"{tuple(R.shape[:-2])}") from None
    V, k, conv = _iterate(lambda V: _q(P, R, V, gamma).amax(-1), V, tol, max_iter, check_every, strict=False)
    return DPResult(V, _q(P, R, V, gamma).argmax(-1), k, conv)


def policy_iteration(P, R, gamma, *, policy0=None, max_iter: int = 10_000) -> DPResult:
    """Alternate exact evaluation v_pi and greedy improvement until the policy is stable.

    policy0: (..., S) long actions (default all 0). Returns DPResult(V = v_pi (..., S), policy =
    actions (..., S), iterations, converged). An action changes only when another is better by
    more than a rounding margin, so ties cannot make the loop cycle. The host reads the
    stability test once per round: each round is an O(|S|^3) solve, and policy iteration stops
    after a handful of rounds, so the synchronisation costs nothing next to the work.
    """
    S, A = check_mdp(P, R)
    gamma = _check_gamma(gamma)
    check_int(max_iter, "max_iter", min=1)
    if policy0 is not None:
        _check_index(policy0, "policy0", shape=tuple(R.shape[:-1]))
        if policy0.device != P.device:
            raise ValueError(f"policy0: on {policy0.device}, but P is on {P.device}")
        check_index(policy0, "policy0", A)
    actions = torch.zeros(R.shape[:-1], dtype=torch.long, device=R.device) if policy0 is None else policy0.clone()
    scale = 1 + R.abs().max() / (1 - gamma)
    margin = scale * (1e-10 if R.dtype == torch.float64 else 1e-4)
    for k in range(1, max_iter + 1):
        V = policy_evaluation(P, R, deterministic_policy(actions, A, R.dtype), gamma)
        q = _q(P, R, V, gamma)
        best = q.argmax(-1)
        q_old = q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        improve = q.amax(-1) > q_old + margin
        if not improve.any():
            return DPResult(V, actions, k, True)
        actions = torch.where(improve, best, actions)
    return DPResult(V, actions, max_iter, False)


def optimal_values_by_enumeration(P, R, gamma) -> tuple[torch.Tensor, torch.Tensor]:
    """max over all |A|^|S| deterministic policies of v_pi(s): an independent v_* for small MDPs.

    P: (S, A, S). Returns (v_* (S,), the per-policy values (|A|^|S|, S)).
    """
    S, A = check_mdp(P, R)
    if P.ndim != 3:
        raise ValueError("P: enumeration takes a single MDP of shape (S, A, S)")
    if A ** S > 200_000:
        raise ValueError(f"P: {A}^{S} policies are too many to enumerate")
    acts = torch.cartesian_prod(*[torch.arange(A, device=P.device)] * S).reshape(-1, S)
    pol = deterministic_policy(acts, A, P.dtype)
    V = policy_evaluation(P.expand(len(acts), *P.shape), R.expand(len(acts), *R.shape), pol, gamma)
    return V.amax(0), V


# ----------------------------------------------------------------------------------------------
# Sampling: episodes, Monte Carlo, TD(0), SARSA, Q-learning (n_runs independent learners)
# ----------------------------------------------------------------------------------------------

def _sample_rows(probs: torch.Tensor, generator) -> torch.Tensor:
    """One categorical draw per row of probs: (N, K) -> (N,) long (inverse CDF, vectorised)."""
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=probs.dtype, device=probs.device)
    cdf = probs.cumsum(-1)
    return (cdf < u * cdf[:, -1:]).sum(-1).clamp(max=probs.shape[-1] - 1)


def env_step(P, R, states, actions, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample s' ~ p(. | s, a) for N parallel runs. P: (S, A, S), states, actions: (N,) -> (s' (N,), r (N,))."""
    S, A = check_mdp(P, R)
    if P.ndim != 3:
        raise ValueError("P: sampling takes a single MDP of shape (S, A, S)")
    _check_index(states, "states", ndim=1)
    _check_index(actions, "actions", ndim=1, shape=tuple(states.shape))
    _check_on(P, states=states, actions=actions)
    check_index(states, "states", S)
    check_index(actions, "actions", A)
    check_generator(generator, "generator", P.device)
    return _step(P, R, states, actions, generator)


def _check_on(ref: torch.Tensor, **others: torch.Tensor) -> None:
    """Index tensors live on ref's device (their dtype is their own)."""
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(f"{name}: on {t.device}, but the tables are on {ref.device}")


def _step(P, R, states, actions, generator):
    return _sample_rows(P[states, actions], generator), R[states, actions]


def epsilon_greedy_probs(Q, epsilon) -> torch.Tensor:
    """epsilon-greedy policy of Q: (..., S, A) -> (..., S, A): eps/|A| each, plus 1 - eps on the argmax."""
    check_tensor(Q, "Q", finite=True)
    epsilon = check_float(epsilon, "epsilon", min=0.0, max=1.0)
    A = Q.shape[-1]
    greedy = nn.functional.one_hot(Q.argmax(-1), A).to(Q.dtype)
    return epsilon / A + (1 - epsilon) * greedy


def epsilon_greedy(Q, states, epsilon, generator=None) -> torch.Tensor:
    """With prob. epsilon a uniformly random action, else the greedy one.

    Q: (N, S, A) one table per run, states: (N,) -> actions (N,) long.
    """
    check_tensor(Q, "Q", ndim=3, finite=True)
    _check_index(states, "states", shape=(Q.shape[0],))
    _check_on(Q, states=states)
    check_index(states, "states", Q.shape[1])
    epsilon = check_float(epsilon, "epsilon", min=0.0, max=1.0)
    check_generator(generator, "generator", Q.device)
    return _epsilon_greedy(Q, states, epsilon, generator)


def _epsilon_greedy(Q, states, epsilon, generator):
    N, _, A = Q.shape
    q = Q[torch.arange(N, device=Q.device), states]
    explore = torch.rand(N, generator=generator, device=Q.device, dtype=Q.dtype) < epsilon
    rand_a = torch.randint(A, (N,), generator=generator, device=Q.device)
    return torch.where(explore, rand_a, q.argmax(-1))


def sample_episodes(mdp: FiniteMDP, policy, n_episodes: int, horizon: int, generator=None):
    """Roll out pi from s_0 ~ start for `horizon` steps (stopping at terminal states).

    policy: (S, A). Returns states (E, T+1), actions (E, T), rewards (E, T), alive (E, T) bool
    (True for steps taken before reaching a terminal state).
    """
    P, R, start, terminal = mdp
    check_mdp(P, R)
    if P.ndim != 3:
        raise ValueError("P: sampling takes a single MDP of shape (S, A, S)")
    _check_policy(policy, P)
    check_probability(start, "start")
    check_int(n_episodes, "n_episodes", min=1)
    check_int(horizon, "horizon", min=1)
    check_generator(generator, "generator", P.device)
    s = _sample_rows(start.expand(n_episodes, -1), generator)
    states, actions, rewards, alive = [s], [], [], []
    live = ~terminal[s]
    for _ in range(horizon):
        a = _sample_rows(policy[s], generator)
        s2, r = _step(P, R, s, a, generator)
        states.append(s2), actions.append(a), rewards.append(r * live), alive.append(live)
        live = live & ~terminal[s2]
        s = s2
    return torch.stack(states, 1), torch.stack(actions, 1), torch.stack(rewards, 1), torch.stack(alive, 1)


def discounted_returns(rewards, gamma) -> torch.Tensor:
    """G_t = sum_k gamma^k R_{t+k+1} for every t, by the recursion G_t = R_{t+1} + gamma G_{t+1}.

    rewards: (..., T) where rewards[..., t] is R_{t+1} -> (..., T).
    """
    check_tensor(rewards, "rewards", finite=True)
    if rewards.ndim == 0:
        raise ValueError("rewards: expected shape (..., T), got a scalar")
    gamma = _check_gamma(gamma, open_one=False)
    out = torch.empty_like(rewards)
    G = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        G = rewards[..., t] + gamma * G
        out[..., t] = G
    return out


def mc_evaluation(states, rewards, alive, gamma, n_states: int, *, first_visit: bool = True):
    """Monte-Carlo estimate of v_pi: average the returns that follow (first or every) visits.

    states: (..., E, T) the states S_t at which each step starts, rewards, alive: (..., E, T).
    Returns (V (..., S), visit counts (..., S)); states never visited get 0 and count 0.
    """
    check_bool(first_visit, "first_visit")
    _check_index(states, "states")
    check_tensor(rewards, "rewards", finite=True)
    check_tensor(alive, "alive", floating=False)
    if alive.dtype != torch.bool:
        raise TypeError(f"alive: expected a bool tensor, got dtype {alive.dtype}")
    n_states = check_int(n_states, "n_states", min=1)
    if states.shape != rewards.shape or alive.shape != rewards.shape or rewards.ndim < 2:
        raise ValueError(f"rewards: states, rewards and alive need one shape (..., E, T), got "
                         f"{tuple(states.shape)}, {tuple(rewards.shape)}, {tuple(alive.shape)}")
    _check_on(rewards, states=states, alive=alive)
    check_index(states, "states", n_states)
    G = discounted_returns(rewards, gamma)
    onehot = nn.functional.one_hot(states, n_states).to(rewards.dtype) * alive.unsqueeze(-1)
    if first_visit:
        onehot = onehot * (onehot.cumsum(-2) == 1)
    total = (onehot * G.unsqueeze(-1)).sum((-3, -2))
    count = onehot.sum((-3, -2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total)), count


def _check_alpha(alpha, ref: torch.Tensor, n: int):
    """A step size in (0, 1] (the update is then a convex combination of old value and target):
    a real number, or one per run, (n,) on ref's device and dtype."""
    if isinstance(alpha, torch.Tensor) and alpha.ndim > 0:
        check_tensor(alpha, "alpha", shape=(n,))
        check_same(ref, "V" if ref.ndim == 2 else "Q", alpha=alpha)
        if not bool(((alpha > 0) & (alpha <= 1)).all()):
            raise ValueError("alpha: step sizes must lie in (0, 1]")
        return alpha
    return check_float(alpha, "alpha", min=0.0, max=1.0, min_open=True)


def _check_update(table, name, rewards, gamma, alpha, **indices):
    """Shared checks of td0_update, sarsa_update and q_learning_update (before any loop)."""
    n = table.shape[0]
    check_tensor(rewards, "rewards" if name == "V" else "r", shape=(n,), finite=True)
    check_same(table, name, **{"rewards" if name == "V" else "r": rewards})
    for idx_name, (t, size) in indices.items():
        _check_index(t, idx_name, shape=(n,))
        _check_on(table, **{idx_name: t})
        check_index(t, idx_name, size)
    _check_alpha(alpha, table, n)
    return _check_gamma(gamma, open_one=False)


def td0_update(V, states, rewards, next_states, gamma, alpha) -> torch.Tensor:
    """V(s) += alpha Delta V(s), Delta V(s) = r(s, a) + gamma V(s') - V(s), for N runs at once.

    V: (N, S), states, next_states: (N,) long in [0, S), rewards: (N,), gamma in [0, 1],
    alpha in (0, 1] (a float or (N,)). Returns the new V.
    """
    check_tensor(V, "V", ndim=2, finite=True)
    S = V.shape[1]
    gamma = _check_update(V, "V", rewards, gamma, alpha, states=(states, S), next_states=(next_states, S))
    return _td0(V, states, rewards, next_states, gamma, alpha)[0]


def _td0(V, states, rewards, next_states, gamma, alpha):
    """The update without checks (loops call it every step). -> (new V, Delta V (N,))."""
    idx = torch.arange(V.shape[0], device=V.device)
    delta = rewards + gamma * V[idx, next_states] - V[idx, states]
    V = V.clone()
    V[idx, states] += alpha * delta
    return V, delta


def sarsa_update(Q, s, a, r, s2, a2, gamma, alpha) -> torch.Tensor:
    """Q(S, A) += alpha [r(S, A) + gamma Q(S', A') - Q(S, A)] for N runs. Q: (N, S, A);
    s, a, s2, a2: (N,) long indices in range, r: (N,), gamma in [0, 1], alpha in (0, 1]."""
    check_tensor(Q, "Q", ndim=3, finite=True)
    _, S, A = Q.shape
    gamma = _check_update(Q, "Q", r, gamma, alpha, s=(s, S), a=(a, A), s2=(s2, S), a2=(a2, A))
    return _sarsa(Q, s, a, r, s2, a2, gamma, alpha)[0]


def _sarsa(Q, s, a, r, s2, a2, gamma, alpha):
    idx = torch.arange(Q.shape[0], device=Q.device)
    delta = r + gamma * Q[idx, s2, a2] - Q[idx, s, a]
    Q = Q.clone()
    Q[idx, s, a] += alpha * delta
    return Q, delta


def q_learning_update(Q, s, a, r, s2, gamma, alpha) -> torch.Tensor:
    """Q(S, A) += alpha [R + gamma max_a Q(S', a) - Q(S, A)] for N runs. Q: (N, S, A);
    s, a, s2: (N,) long indices in range, r: (N,), gamma in [0, 1], alpha in (0, 1]."""
    check_tensor(Q, "Q", ndim=3, finite=True)
    _, S, A = Q.shape
    gamma = _check_update(Q, "Q", r, gamma, alpha, s=(s, S), a=(a, A), s2=(s2, S))
    return _q_learning(Q, s, a, r, s2, gamma, alpha)[0]


def _q_learning(Q, s, a, r, s2, gamma, alpha):
    idx = torch.arange(Q.shape[0], device=Q.device)
    delta = r + gamma * Q[idx, s2].amax(-1) - Q[idx, s, a]
    Q = Q.clone()
    Q[idx, s, a] += alpha * delta
    return Q, delta


class TrainResult(NamedTuple):
    """What every trainer returns (TD(0), SARSA, Q-learning, DQN, actor-critic), with the field
    names the other sections' trainers use.

    model: what was learned: the value table V (N, S) (TD(0)), the Q table (N, S, A) (SARSA,
    Q-learning), the QNetwork (DQN) or the actor's logits (S, A) (actor-critic); losses: (steps,)
    tensor of the per-step loss on the model's device (tabular learners: mean squared TD error over
    the runs; DQN: the loss of each update; actor-critic: the critic's TD loss), never read on the
    host during training; critic: the actor-critic's value network (None for the others).
    """
    model: object
    losses: torch.Tensor
    critic: nn.Module | None = None


def _check_learning(mdp, gamma, n_runs, n_steps, alpha, decay, generator=None):
    if not isinstance(mdp, tuple) or len(mdp) != 4:
        raise TypeError("mdp: expected a FiniteMDP (P, R, start, terminal)")
    P, R, start, terminal = mdp
    S, _ = check_mdp(P, R)
    if P.ndim != 3:
        raise ValueError("P: learning takes a single MDP of shape (S, A, S)")
    check_tensor(start, "start", shape=(S,))
    check_same(P, "P", start=start)
    check_probability(start, "start")
    check_tensor(terminal, "terminal", floating=False, shape=(S,))
    if terminal.dtype != torch.bool or terminal.device != P.device:
        raise TypeError(f"terminal: expected a bool tensor on {P.device}")
    check_int(n_runs, "n_runs", min=1)
    check_int(n_steps, "n_steps", min=1)
    check_float(alpha, "alpha", min=0.0, max=1.0, min_open=True)
    check_float(decay, "decay", min=0.0, max=1.0)
    check_generator(generator, "generator", P.device)
    return _check_gamma(gamma)


def _step_size(counts, alpha, decay):
    # alpha_n = alpha / n^decay: decay in (1/2, 1] meets Robbins-Monro (sum = inf, sum of squares < inf).
    return alpha / counts.clamp_min(1) ** decay


def _restart(mdp, s, generator):
    """Runs standing in a terminal state restart from the start distribution (episodic tasks)."""
    fresh = _sample_rows(mdp.start.expand(s.shape[0], -1), generator)
    return torch.where(mdp.terminal[s], fresh, s)


def _initial_table(T0, name, shape, P):
    if T0 is None:
        return torch.zeros(shape, dtype=P.dtype, device=P.device)
    check_tensor(T0, name, shape=shape, finite=True)
    check_same(P, "P", **{name: T0})
    return T0.clone()


def run_td0(mdp: FiniteMDP, policy, gamma, *, n_runs: int, n_steps: int, alpha: float = 0.5,
            decay: float = 0.0, generator=None, V0=None) -> TrainResult:
    """TD(0) evaluation of pi with n_runs independent learners. Step alpha / n(s)^decay.
    -> TrainResult(model = V (N, S), losses = mean Delta V^2 per step (n_steps,))."""
    gamma = _check_learning(mdp, gamma, n_runs, n_steps, alpha, decay, generator)
    P, R = mdp.P, mdp.R
    _check_policy(policy, P)
    S = P.shape[0]
    V = _initial_table(V0, "V0", (n_runs, S), P)
    counts = torch.zeros(n_runs, S, dtype=P.dtype, device=P.device)
    idx = torch.arange(n_runs, device=P.device)
    losses = []
    s = _sample_rows(mdp.start.expand(n_runs, -1), generator)
    for _ in range(n_steps):
        s = _restart(mdp, s, generator)
        a = _sample_rows(policy[s], generator)
        s2, r = _step(P, R, s, a, generator)
        counts[idx, s] += 1
        V, delta = _td0(V, s, r, s2, gamma, _step_size(counts[idx, s], alpha, decay))
        losses.append((delta ** 2).mean())
        s = s2
    return TrainResult(V, torch.stack(losses))


def run_sarsa(mdp: FiniteMDP, gamma, *, n_runs: int, n_steps: int, alpha: float = 0.5, decay: float = 0.0,
              epsilon: float = 0.1, policy=None, generator=None, Q0=None) -> TrainResult:
    """SARSA (on-policy) with n_runs learners: A' is drawn from the policy being learned about:
    epsilon-greedy on Q (control), or the fixed `policy` (S, A) when given (evaluation of q_pi).
    Step alpha / n(s, a)^decay. -> TrainResult(model = Q (N, S, A), losses (n_steps,))."""
    gamma = _check_learning(mdp, gamma, n_runs, n_steps, alpha, decay, generator)
    epsilon = check_float(epsilon, "epsilon", min=0.0, max=1.0)
    P, R = mdp.P, mdp.R
    if policy is not None:
        _check_policy(policy, P)
    S, A = P.shape[0], P.shape[1]
    Q = _initial_table(Q0, "Q0", (n_runs, S, A), P)
    counts = torch.zeros_like(Q)
    idx = torch.arange(n_runs, device=P.device)
    losses = []

    def act(Q, s):
        return _epsilon_greedy(Q, s, epsilon, generator) if policy is None else _sample_rows(policy[s], generator)

    s = _sample_rows(mdp.start.expand(n_runs, -1), generator)
    a = act(Q, s)
    for _ in range(n_steps):
        s2, r = _step(P, R, s, a, generator)
        a2 = act(Q, s2)
        counts[idx, s, a] += 1
        Q, delta = _sarsa(Q, s, a, r, s2, a2, gamma, _step_size(counts[idx, s, a], alpha, decay))
        losses.append((delta ** 2).mean())
        # A run that reached a terminal state restarts; its next action is drawn afresh.
        restart = mdp.terminal[s2]
        s = _restart(mdp, s2, generator)
        a = torch.where(restart, act(Q, s), a2)
    return TrainResult(Q, torch.stack(losses))


def run_q_learning(mdp: FiniteMDP, gamma, *, n_runs: int, n_steps: int, alpha: float = 0.5, decay: float = 0.0,
                   epsilon: float = 0.1, behaviour=None, generator=None, Q0=None) -> TrainResult:
    """Q-learning (off-policy): actions from epsilon-greedy on Q, or from a fixed `behaviour`
    policy (S, A) when given; the target uses max_a Q(S', a) whatever the behaviour.
    Step alpha / n(s, a)^decay. -> TrainResult(model = Q (N, S, A), losses (n_steps,))."""
    gamma = _check_learning(mdp, gamma, n_runs, n_steps, alpha, decay, generator)
    epsilon = check_float(epsilon, "epsilon", min=0.0, max=1.0)
    P, R = mdp.P, mdp.R
    if behaviour is not None:
        _check_policy(behaviour, P, "behaviour")
    S, A = P.shape[0], P.shape[1]
    Q = _initial_table(Q0, "Q0", (n_runs, S, A), P)
    counts = torch.zeros_like(Q)
    idx = torch.arange(n_runs, device=P.device)
    losses = []
    s = _sample_rows(mdp.start.expand(n_runs, -1), generator)
    for _ in range(n_steps):
        s = _restart(mdp, s, generator)
        a = _epsilon_greedy(Q, s, epsilon, generator) if behaviour is None else _sample_rows(behaviour[s], generator)
        s2, r = _step(P, R, s, a, generator)
        counts[idx, s, a] += 1
        Q, delta = _q_learning(Q, s, a, r, s2, gamma, _step_size(counts[idx, s, a], alpha, decay))
        losses.append((delta ** 2).mean())
        s = s2
    return TrainResult(Q, torch.stack(losses))


# ----------------------------------------------------------------------------------------------
# Deep Q-learning: CartPole in torch, replay buffer, DQN loss and encoder
# ----------------------------------------------------------------------------------------------

# Gymnasium CartPole-v1's constants (Barto, Sutton & Anderson 1983), Euler integration.
_CP = dict(g=9.8, m_cart=1.0, m_pole=0.1, half_len=0.5, force=10.0, tau=0.02,
           theta_max=12 * 2 * math.pi / 360, x_max=2.4)


def cartpole_reset(n: int, *, generator=None, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """n initial states (x, x_dot, theta, theta_dot) ~ U(-0.05, 0.05). -> (n, 4)."""
    check_int(n, "n", min=1)
    check_generator(generator, "generator", torch.device(device))
    return (torch.rand(n, 4, generator=generator, dtype=dtype, device=device) - 0.5) * 0.1


def cartpole_step(state, action) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One CartPole step for N carts. state: (N, 4), action: (N,) in {0 (push left), 1 (right)}.

    Returns (next state (N, 4), reward (N,) = 1, done (N,) bool: pole beyond 12 degrees or cart
    beyond 2.4), with Gymnasium CartPole-v1's equations of motion.
    """
    check_tensor(state, "state", ndim=2, shape=(None, 4))
    _check_index(action, "action", ndim=1)
    c = _CP
    x, x_dot, th, th_dot = state.unbind(-1)
    force = torch.where(action == 1, c["force"], -c["force"]).to(state.dtype)
    total = c["m_cart"] + c["m_pole"]
    pml = c["m_pole"] * c["half_len"]
    cos, sin = th.cos(), th.sin()
    temp = (force + pml * th_dot ** 2 * sin) / total
    th_acc = (c["g"] * sin - cos * temp) / (c["half_len"] * (4.0 / 3.0 - c["m_pole"] * cos ** 2 / total))
    x_acc = temp - pml * th_acc * cos / total
    nxt = torch.stack([x + c["tau"] * x_dot, x_dot + c["tau"] * x_acc,
                       th + c["tau"] * th_dot, th_dot + c["tau"] * th_acc], -1)
    done = (nxt[:, 0].abs() > c["x_max"]) | (nxt[:, 2].abs() > c["theta_max"])
    return nxt, torch.ones_like(x), done


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', done) held as tensors on one device.

    sample() draws uniformly with replacement, so the draws of a batch are independent given the
    buffer's content, whatever the correlation between consecutive transitions stored.
    """

    def __init__(self, capacity: int, state_dim: int, *, dtype=torch.float32, device="cpu"):
        check_int(capacity, "capacity", min=1)
        check_int(state_dim, "state_dim", min=1)
        self.s = torch.zeros(capacity, state_dim, dtype=dtype, device=device)
        self.s2 = torch.zeros_like(self.s)
        self.a = torch.zeros(capacity, dtype=torch.long, device=device)
        self.r = torch.zeros(capacity, dtype=dtype, device=device)
        self.done = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.capacity, self.size, self.pos = capacity, 0, 0

    def add(self, s, a, r, s2, done) -> None:
        """Append a batch of n transitions: s, s2: (n, state_dim), a, r, done: (n,)."""
        check_tensor(s, "s", ndim=2, shape=(None, self.s.shape[1]))
        n = s.shape[0]
        check_tensor(s2, "s2", shape=tuple(s.shape))
        check_tensor(r, "r", shape=(n,))
        _check_index(a, "a", shape=(n,))
        check_tensor(done, "done", floating=False, shape=(n,))
        if n > self.capacity:
            raise ValueError(f"s: {n} transitions do not fit a buffer of capacity {self.capacity}")
        idx = (self.pos + torch.arange(n, device=self.s.device)) % self.capacity
        self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx] = s, a, r, s2, done
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch: int, generator=None):
        """Uniform draws with replacement -> (s, a, r, s2, done) with leading dimension batch."""
        check_int(batch, "batch", min=1)
        if self.size == 0:
            raise ValueError("batch: the buffer is empty")
        check_generator(generator, "generator", self.s.device)
        i = torch.randint(self.size, (batch,), generator=generator, device=self.s.device)
        return self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i]


def dqn_loss(q_net: nn.Module, s, a, r, s2, done, gamma, target_net: nn.Module | None = None) -> torch.Tensor:
    """Mean of (R + gamma max_a' Q(S', a') - Q_theta(S, A))^2, backprop only through Q_theta(S, A).

    The target is computed without gradient (by `target_net`, default q_net itself); done: (N,)
    bool marks terminal S' (no bootstrap). s, s2: (N, ...), a: (N,) long, r: (N,).
    """
    if not isinstance(q_net, nn.Module):
        raise TypeError("q_net: expected an nn.Module")
    check_tensor(r, "r", ndim=1)
    _check_index(a, "a", ndim=1)
    gamma = _check_gamma(gamma, open_one=False)
    with torch.no_grad():
        target = r + gamma * (~done).to(r.dtype) * (target_net or q_net)(s2).amax(-1)
    q_sa = q_net(s).gather(-1, a.unsqueeze(-1)).squeeze(-1)
    return ((target - q_sa) ** 2).mean()


class QNetwork(nn.Module):
    """MLP state -> Q-values: (N, state_dim) -> (N, n_actions)."""

    def __init__(self, state_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        check_int(state_dim, "state_dim", min=1)
        check_int(n_actions, "n_actions", min=1)
        check_int(hidden, "hidden", min=1)
        self.net = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, s):
        return self.net(s)


class DQNEncoder(nn.Module):
    """DQN's state encoder (Mnih et al. 2015): a stack of 4 frames 84x84 -> a 512-d code.
    x: (N, 4, 84, 84) -> (N, 512); head(code) gives the Q-values (N, n_actions)."""

    def __init__(self, n_actions: int, in_channels: int = 4, code: int = 512):
        super().__init__()
        check_int(n_actions, "n_actions", min=1)
        check_int(in_channels, "in_channels", min=1)
        check_int(code, "code", min=1)
        self.conv = nn.Sequential(nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
                                  nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(64 * 7 * 7, code), nn.ReLU())
        self.head = nn.Linear(code, n_actions)

    def encode(self, x):
        check_tensor(x, "x", ndim=4, shape=(None, self.conv[0].in_channels, 84, 84))
        return self.conv(x)

    def forward(self, x):
        return self.head(self.encode(x))


def train_dqn(*, n_envs: int = 16, steps: int = 3000, gamma: float = 0.99, lr: float = 1e-3, batch: int = 128,
              epsilon_end: float = 0.05, target_every: int = 100, generator=None, device="cpu") -> TrainResult:
    """Deep Q-learning on vectorised CartPole: epsilon-greedy acting, replay buffer, no-grad target
    from a periodically copied network. `steps` counts vector steps (n_envs transitions each).

    Returns TrainResult(model = the QNetwork, losses = the DQN loss of each update (one per step
    once the buffer holds `batch` transitions), kept on the device).
    """
    check_int(n_envs, "n_envs", min=1)
    check_int(steps, "steps", min=1)
    check_int(batch, "batch", min=1)
    check_float(lr, "lr", min=0.0, min_open=True)
    check_float(epsilon_end, "epsilon_end", min=0.0, max=1.0)
    check_int(target_every, "target_every", min=1)
    gamma = _check_gamma(gamma)
    check_generator(generator, "generator", torch.device(device))
    q = QNetwork(4, 2).to(device)
    target = QNetwork(4, 2).to(device)
    target.load_state_dict(q.state_dict())
    # fused: keeps the step count on the device (the plain path reads it with .item() every step)
    opt = torch.optim.Adam(q.parameters(), lr=lr, fused=True)
    buf = ReplayBuffer(50_000, 4, device=device)
    s = cartpole_reset(n_envs, generator=generator, device=device)
    losses = []
    for k in range(steps):
        eps = max(epsilon_end, 1 - k / (0.5 * steps))
        with torch.no_grad():
            greedy = q(s).argmax(-1)
        explore = torch.rand(n_envs, generator=generator, device=device) < eps
        a = torch.where(explore, torch.randint(2, (n_envs,), generator=generator, device=device), greedy)
        s2, r, done = cartpole_step(s, a)
        buf.add(s, a, r, s2, done)
        s = torch.where(done.unsqueeze(-1), cartpole_reset(n_envs, generator=generator, device=device), s2)
        if buf.size >= batch:
            loss = dqn_loss(q, *buf.sample(batch, generator), gamma, target_net=target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        if k % target_every == 0:
            target.load_state_dict(q.state_dict())
    return TrainResult(q, torch.stack(losses) if losses else torch.zeros(0, device=device))


def cartpole_episode_lengths(policy_fn, n: int = 32, max_steps: int = 500, generator=None, device="cpu") -> torch.Tensor:
    """Steps each of n carts survives (capped at max_steps) under policy_fn: (n, 4) -> (n,) actions.

    Whether any cart is still alive is read on the host only every 50 steps (later steps of dead
    carts add nothing to their length), so the loop makes one synchronisation per 50 steps.
    """
    if not callable(policy_fn):
        raise TypeError("policy_fn: expected a callable (n, 4) -> (n,) actions")
    check_int(n, "n", min=1)
    max_steps = check_int(max_steps, "max_steps", min=1)
    s = cartpole_reset(n, generator=generator, device=device)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    length = torch.zeros(n, dtype=torch.long, device=device)
    for k in range(1, max_steps + 1):
        with torch.no_grad():
            s, _, done = cartpole_step(s, policy_fn(s))
        length += alive
        alive &= ~done
        if k % 50 == 0 and not alive.any():
            break
    return length


# ----------------------------------------------------------------------------------------------
# Policy gradients
# ----------------------------------------------------------------------------------------------

def gaussian_log_prob(a, mu, log_std) -> torch.Tensor:
    """log N(a | mu, sigma^2) summed over the action dimension. a, mu, log_std: (..., D) -> (...)."""
    for n, t in (("a", a), ("mu", mu), ("log_std", log_std)):
        check_tensor(t, n)
    z = (a - mu) * torch.exp(-log_std)
    return (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class GaussianPolicy(nn.Module):
    """pi(a | s) = N(mu_theta(s), sigma_theta(s)^2): an MLP gives mu and log sigma (clamped to
    [-20, 2] so that extreme inputs keep the density finite). s: (N, state_dim) -> a: (N, action_dim)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int = 32):
        super().__init__()
        check_int(state_dim, "state_dim", min=1)
        check_int(action_dim, "action_dim", min=1)
        self.body = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * action_dim))

    def forward(self, s):
        check_tensor(s, "s", ndim=2)
        mu, log_std = self.body(s).chunk(2, -1)
        return mu, log_std.clamp(-20.0, 2.0)

    def log_prob(self, s, a):
        mu, log_std = self(s)
        return gaussian_log_prob(a, mu, log_std)

    def sample(self, s, generator=None):
        mu, log_std = self(s)
        check_generator(generator, "generator", mu.device)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return (mu + log_std.exp() * eps).detach()


def enumerate_trajectories(mdp: FiniteMDP, policy, horizon: int):
    """Every trajectory tau = (s_1, a_1, ..., s_T, a_T) with its probability
    p(tau) = p(s_1) prod_t pi(a_t | s_t) p(s_{t+1} | s_t, a_t) (differentiable in policy).

    mdp: single MDP (S, A, S); policy: (S, A). Returns states (K, T), actions (K, T), log_pi (K, T)
    (log pi(a_t | s_t) along each), log_p (K,) (log p(tau)), rewards (K, T); K = (S A)^T.
    """
    P, R, start, _ = mdp
    S, A = check_mdp(P, R)
    _check_policy(policy, P)
    check_int(horizon, "horizon", min=1)
    if (S * A) ** horizon > 500_000:
        raise ValueError(f"horizon: {(S * A) ** horizon} trajectories are too many to enumerate")
    grid = torch.cartesian_prod(*[torch.arange(S * A, device=P.device)] * horizon).reshape(-1, horizon)
    states, actions = grid // A, grid % A
    tiny = torch.finfo(P.dtype).tiny
    log_pi = torch.log(policy[states, actions].clamp_min(tiny))
    log_dyn = torch.log(start[states[:, 0]].clamp_min(tiny))
    log_dyn = log_dyn + torch.log(P[states[:, :-1], actions[:, :-1], states[:, 1:]].clamp_min(tiny)).sum(-1)
    return states, actions, log_pi, log_dyn + log_pi.sum(-1), R[states, actions]


def discount_weights(horizon: int, gamma, *, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """(gamma^0, ..., gamma^{T-1}): (T,)."""
    check_int(horizon, "horizon", min=1)
    gamma = _check_gamma(gamma, open_one=False)
    return gamma ** torch.arange(horizon, dtype=dtype, device=device)


def reinforce_surrogate(log_pi, rewards, gamma, *, baseline=None, reward_to_go: bool = False,
                        alive=None) -> torch.Tensor:
    """A scalar whose gradient is the REINFORCE estimate of grad J from N sampled trajectories.

    log_pi: (N, T) log pi_theta(a_t | s_t) with graph; rewards: (N, T); baseline: (N, T) b(s_t)
    (no graph) or None. Full-trajectory form (the notes' proof):
        (1/N) sum_i (sum_t grad log pi(a_t|s_t)) (sum_t gamma^t (r_t - b(s_t)));
    reward_to_go form (causal): (1/N) sum_i sum_t grad log pi(a_t|s_t) (sum_{t'>=t} gamma^t' r_t' - gamma^t b(s_t)).
    """
    check_bool(reward_to_go, "reward_to_go")
    check_tensor(log_pi, "log_pi", ndim=2)
    check_tensor(rewards, "rewards", ndim=2, shape=tuple(log_pi.shape))
    if baseline is not None:
        check_tensor(baseline, "baseline", ndim=2, shape=tuple(log_pi.shape))
    gamma = _check_gamma(gamma, open_one=False)
    if alive is not None:
        log_pi = log_pi * alive
    w = discount_weights(rewards.shape[-1], gamma, dtype=rewards.dtype, device=rewards.device)
    b = torch.zeros_like(rewards) if baseline is None else baseline.detach()
    if reward_to_go:
        rtg = (w * rewards).flip(-1).cumsum(-1).flip(-1)
        return (log_pi * (rtg - w * b)).sum(-1).mean()
    return (log_pi.sum(-1) * (w * (rewards - b)).sum(-1)).mean()


def actor_critic_surrogate(log_pi, rewards, values, next_values, gamma, *, alive=None,
                           discount_states: bool = False) -> torch.Tensor:
    """A scalar whose gradient is the actor-critic estimate
    (1/N) sum_i sum_t grad log pi(a_t|s_t) (r(s_t, a_t) + gamma V(s_{t+1}) - V(s_t)),
    with each term weighted by gamma^t when discount_states is True.

    log_pi, rewards, values (V(s_t)), next_values (V(s_{t+1}); 0 after termination): (N, T).
    """
    check_bool(discount_states, "discount_states")
    check_tensor(log_pi, "log_pi", ndim=2)
    for n, t in (("rewards", rewards), ("values", values), ("next_values", next_values)):
        check_tensor(t, n, ndim=2, shape=tuple(log_pi.shape))
    gamma = _check_gamma(gamma, open_one=False)
    adv = (rewards + gamma * next_values - values).detach()
    if discount_states:
        adv = adv * discount_weights(rewards.shape[-1], gamma, dtype=rewards.dtype, device=rewards.device)
    if alive is not None:
        adv = adv * alive
    return (log_pi * adv).sum(-1).mean()


def finite_horizon_objective(mdp: FiniteMDP, policy, horizon: int, gamma) -> torch.Tensor:
    """J = E[sum_{t<T} gamma^t r(s_t, a_t)] by backward dynamic programming (differentiable in policy)."""
    P, R, start, _ = mdp
    check_mdp(P, R)
    _check_policy(policy, P)
    check_int(horizon, "horizon", min=1)
    gamma = _check_gamma(gamma, open_one=False)
    V = torch.zeros_like(R[..., 0])
    for _ in range(horizon):
        V = bellman_expectation(P, R, policy, V, gamma)
    return (start * V).sum(-1)


def train_actor_critic(mdp: FiniteMDP, gamma, *, n_runs: int = 64, n_steps: int = 300, lr_actor: float = 0.5,
                       lr_critic: float = 0.05, hidden: int = 32, generator=None) -> TrainResult:
    """One-step actor-critic on a finite MDP: a tabular softmax actor (logits (S, A)) and an MLP
    critic V_w(one-hot s) learned by TD(0); n_runs transitions per update from parallel runs.
    Returns TrainResult(model = the actor's logits (S, A), losses = the critic's TD loss per step
    (n_steps,), critic = V_w)."""
    gamma = _check_learning(mdp, gamma, n_runs, n_steps, 0.5, 0.0, generator)
    check_float(lr_actor, "lr_actor", min=0.0, min_open=True)
    check_float(lr_critic, "lr_critic", min=0.0, min_open=True)
    check_int(hidden, "hidden", min=1)
    P, R = mdp.P, mdp.R
    S, A = P.shape[0], P.shape[1]
    logits = torch.zeros(S, A, dtype=P.dtype, device=P.device, requires_grad=True)
    critic = nn.Sequential(nn.Linear(S, hidden), nn.Tanh(), nn.Linear(hidden, 1)).to(P.device, P.dtype)
    opt_a = torch.optim.SGD([logits], lr=lr_actor)
    opt_c = torch.optim.Adam(critic.parameters(), lr=lr_critic, fused=True)   # no .item() per step
    eye = torch.eye(S, dtype=P.dtype, device=P.device)
    s = _sample_rows(mdp.start.expand(n_runs, -1), generator)
    losses = []
    for _ in range(n_steps):
        s = _restart(mdp, s, generator)
        pi = torch.softmax(logits, -1)
        a = _sample_rows(pi[s].detach(), generator)
        s2, r = _step(P, R, s, a, generator)
        v = critic(eye[s]).squeeze(-1)
        v2 = critic(eye[s2]).squeeze(-1) * (~mdp.terminal[s2])
        target = (r + gamma * v2).detach()
        opt_c.zero_grad()
        critic_loss = ((target - v) ** 2).mean()
        critic_loss.backward()
        opt_c.step()
        losses.append(critic_loss.detach())
        opt_a.zero_grad()
        (-actor_critic_surrogate(torch.log(pi[s, a]).unsqueeze(-1), r.unsqueeze(-1), v.detach().unsqueeze(-1),
                                 v2.detach().unsqueeze(-1), gamma)).backward()
        opt_a.step()
        s = s2
    return TrainResult(logits.detach(), torch.stack(losses), critic)
