"""Autoregressive models: exact normalisation by enumeration, the autoregressive property through
Jacobians, parameter and forward-pass counts, NADE's linear cost (FLOPs), blind spot of stacked
masked convolutions, WaveNet's receptive field, VQ-VAE's quantiser."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from impl.autoregressive import (FVSBN, MADE, NADE, RNADE, GatedPixelCNN, MaskedConv2d, OrderlessNADE, PixelCNN, RowLSTM,
                                 TabularAR, WaveNet, all_binary, bernoulli_log_prob, made_masks, pixelcnn_mask, wavenet_receptive_field)
from impl.vae import vq_losses, vq_quantise
from spec.testing import count_flops, count_host_syncs, fit_exponent, generator, randn


def _perm(D, seed):
    return torch.randperm(D, generator=generator(seed))


def _binary_models(D=5):
    torch.manual_seed(0)
    return {
        "tabular": TabularAR(D).double(),
        "fvsbn": FVSBN(D).double(),
        "nade": NADE(D, 4, order=_perm(D, 1)).double(),
        "made": MADE(D, [8, 8], order=_perm(D, 2)).double(),
    }


def _grids(C, H, W, K):
    vals = torch.tensor(list(itertools.product(range(K), repeat=C * H * W)))
    return vals.view(-1, C, H, W)


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


# ----------------------------------------------------------------------- normalisation

@pytest.mark.claim("generative.autoregressive-tractable")
def test_all_binary_enumerates_in_order():
    expected = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    assert torch.equal(all_binary(3), expected)  # first coordinate most significant


@pytest.mark.claim("generative.autoregressive-tractable")
@pytest.mark.parametrize("name", ["tabular", "fvsbn", "nade", "made"])
def test_binary_models_sum_to_one(name):
    model = _binary_models()[name]
    with torch.no_grad():
        total = model.log_prob(all_binary(5)).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.claim("generative.autoregressive-tractable")
@pytest.mark.claim("autoregressive.latent-ar-prior")
def test_image_and_audio_models_sum_to_one():
    torch.manual_seed(0)
    cases = [
        (PixelCNN(1, 2, hidden=6, layers=2, first_kernel=3).double(), _grids(1, 2, 2, 2)),
        (PixelCNN(3, 2, hidden=6, layers=2, first_kernel=3).double(), _grids(3, 1, 2, 2)),
        (GatedPixelCNN(2, hidden=4, layers=2).double(), _grids(1, 2, 2, 2)),
        (RowLSTM(2, hidden=4).double(), _grids(1, 2, 3, 2)),
        (PixelCNN(1, 3, hidden=6, layers=2, first_kernel=3).double(), _grids(1, 2, 2, 3)),  # prior over K=3 codes
    ]
    for model, grids in cases:
        with torch.no_grad():
            assert float(model.log_prob(grids).exp().sum()) == pytest.approx(1.0, abs=1e-12)
    wave = WaveNet(levels=3, residual=4, dilations=[1, 2]).double()
    seqs = torch.tensor(list(itertools.product(range(3), repeat=4)))
    with torch.no_grad():
        assert float(wave.log_prob(seqs).exp().sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.claim("generative.autoregressive-tractable")
def test_autoregressive_transformer_sums_to_one():
    # "Autor. Transf.": one causal self-attention layer over the right-shifted tokens (start token 2)
    from impl.attention import self_attention, sinusoidal_positional_encoding

    T, D, K = 4, 6, 3
    emb, W_out = randn(K + 1, D, seed=1), randn(D, K, seed=2)
    W_Q, W_K, W_V = (randn(D, D, seed=3 + i) for i in range(3))
    pe = sinusoidal_positional_encoding(T, D, dtype=torch.float64)

    def log_prob(x):  # x: (B, T) tokens in 0..K-1
        shifted = torch.cat([torch.full_like(x[:, :1], K), x[:, :-1]], 1)
        logits = self_attention(emb[shifted] + pe, W_Q, W_K, W_V, causal=True) @ W_out
        return torch.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1).sum(-1)

    seqs = torch.tensor(list(itertools.product(range(K), repeat=T)))
    assert float(log_prob(seqs).exp().sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.claim("autoregressive.bernoulli-conditionals")
@pytest.mark.parametrize("name", ["fvsbn", "nade", "made"])
def test_conditionals_of_the_joint_are_the_bernoulli_outputs(name):
    model = _binary_models()[name]
    X = all_binary(5)
    with torch.no_grad():
        P = model.log_prob(X).exp()
        probs = torch.sigmoid(model(X) if name == "made" else model.conditional_logits(X))
    order = model.order.tolist() if hasattr(model, "order") else list(range(5))
    for k, d in enumerate(order):
        prev = order[:k]
        for row in range(len(X)):  # p(x_d = 1 | x_prev) from the enumerated joint
            same = (X[:, prev] == X[row, prev]).all(1) if prev else torch.ones(len(X), dtype=torch.bool)
            cond = float(P[same & (X[:, d] == 1)].sum() / P[same].sum())
            assert cond == pytest.approx(float(probs[row, d]), abs=1e-12)


# --------------------------------------------------------------------- tabular, FVSBN

@pytest.mark.claim("autoregressive.chain-rule")
def test_tabular_model_represents_any_distribution():
    n = 4
    P = torch.rand(2 ** n, generator=generator(3), dtype=torch.float64) ** 3
    P = P / P.sum()
    X = all_binary(n)
    model = TabularAR(n).double()
    with torch.no_grad():
        for i in range(n):  # logit of p(x_i = 1 | x_<i) from the marginals of P
            for idx, prefix in enumerate(itertools.product([0.0, 1.0], repeat=i)):
                same = (X[:, :i] == torch.tensor(prefix, dtype=X.dtype)).all(1)
                p1 = P[same & (X[:, i] == 1)].sum() / P[same].sum()
                model.logits[i][idx] = torch.log(p1) - torch.log1p(-p1)
        torch.testing.assert_close(model.log_prob(X).exp(), P, rtol=1e-12, atol=1e-15)


@pytest.mark.claim("autoregressive.tabular-parameters", role="refutes")
def test_the_model_does_not_have_two_to_the_i_minus_one_parameters(record_property):
    for n in range(2, 9):
        total = sum(p.numel() for p in TabularAR(n).parameters())
        assert total == 2 ** n - 1
        assert total not in {2 ** (i - 1) for i in range(1, n + 1)}  # 2^n - 1 is odd and > 1
    record_property("evidence", "TabularAR(6) has 63 parameters; 2^(i-1) for i = 1..6 gives 1..32")


@pytest.mark.claim("autoregressive.tabular-parameters", role="corrects")
def test_tabular_parameter_count():
    n = 6
    model = TabularAR(n).double()
    assert [p.numel() for p in model.logits] == [2 ** (i - 1) for i in range(1, n + 1)]
    assert sum(p.numel() for p in model.parameters()) == 2 ** n - 1
    model.log_prob(all_binary(n)).sum().backward()
    assert all((p.grad != 0).all() for p in model.parameters())  # every parameter is used


@pytest.mark.claim("autoregressive.independence-too-strong")
def test_independent_model_cannot_fit_correlated_bits(record_property):
    X = all_binary(2)
    P = torch.tensor([0.5, 0.0, 0.0, 0.5], dtype=torch.float64)  # x2 = x1
    m = torch.stack([(P[:, None] * X).sum(0), (P[:, None] * (1 - X)).sum(0)])  # marginals
    Q = (X * m[0] + (1 - X) * m[1]).prod(1)  # best product approximation in KL(P || Q)
    on = P > 0
    kl = float((P[on] * (P[on] / Q[on]).log()).sum())
    assert kl == pytest.approx(np.log(2), rel=1e-12)
    tab = TabularAR(2).double()
    with torch.no_grad():
        tab.logits[0][0] = 0.0
        tab.logits[1][:] = torch.tensor([-60.0, 60.0])
        assert float((P[on] * (P[on].log() - tab.log_prob(X)[on])).sum()) < 1e-20
    record_property("evidence", f"x2 = x1: best independent model has KL = log 2 = {kl:.4f}; tabular AR fits exactly")


@pytest.mark.claim("autoregressive.fvsbn")
def test_fvsbn_formula_parameter_count_and_linearity():
    n = 6
    model = FVSBN(n).double()
    assert sum(p.numel() for p in model.parameters()) == n * (n + 1) // 2
    A = model.weight().detach()
    assert (torch.triu(A) == 0).all()
    X = all_binary(n)
    with torch.no_grad():
        probs = torch.sigmoid(model.conditional_logits(X))
    for r in (0, 17, 63):  # the notes' formula, term by term
        for i in range(n):
            s = float(model.alpha0[i].detach()) + sum(float(A[i, j]) * float(X[r, j]) for j in range(i))
            assert float(probs[r, i]) == pytest.approx(1 / (1 + np.exp(-s)), rel=1e-12)
    # linear: the logits' Jacobian is the same matrix at every input
    f = lambda v: model.conditional_logits(v[None])[0]
    J1 = jacobian(f, X[5])
    J2 = jacobian(f, X[40])
    torch.testing.assert_close(J1, J2, rtol=0, atol=0)


# -------------------------------------------------------------------------------- NADE

@pytest.mark.claim("autoregressive.nade-definition")
@pytest.mark.parametrize("method", ["cumsum", "incremental", "naive"])
def test_nade_matches_the_notes_formula(method):
    torch.manual_seed(1)
    D, H = 5, 3
    model = NADE(D, H).double()
    X = all_binary(D)[::3]
    W, b, V, c = (t.detach() for t in (model.W, model.b, model.V, model.c))
    ref = torch.empty(len(X), D, dtype=torch.float64)
    for r in range(len(X)):
        for i in range(D):
            h = torch.sigmoid(b + W[:, :i] @ X[r, :i])
            ref[r, i] = torch.sigmoid(c[i] + V[i] @ h)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(model.conditional_logits(X, method)), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.claim("autoregressive.nade-order")
def test_nade_any_order_is_autoregressive():
    D = 6
    order = _perm(D, 5)
    model = NADE(D, 4, order=order).double()
    x = all_binary(D)[37]
    J = jacobian(lambda v: model.conditional_logits(v[None])[0], x)  # J[d, j] = d logit_d / d x_j
    pos = torch.empty(D, dtype=torch.long)
    pos[order] = torch.arange(D)
    allowed = pos[None, :] < pos[:, None]
    assert (J[~allowed] == 0).all()
    assert (J[allowed] != 0).all()


@pytest.mark.claim("autoregressive.nade-linear-cost", role="refutes")
def test_nade_cost_grows_with_the_hidden_units_not_only_the_inputs():
    # T undefined: read as the sequence length (= D here), O(TD) = O(D^2) leaves out the hidden
    # layer, yet at fixed D the cost is linear in H, so no bound in D alone holds
    B, D = 2, 16
    x = torch.bernoulli(torch.full((B, D), 0.5, dtype=torch.float64), generator=generator(D))
    Hs = [4, 8, 16, 32]
    flops = [count_flops(NADE(D, H).double().conditional_logits, x, "incremental") for H in Hs]
    assert flops == [4 * B * H * D for H in Hs]
    assert abs(fit_exponent(Hs, flops) - 1) < 1e-9


@pytest.mark.claim("autoregressive.nade-linear-cost", role="corrects")
def test_nade_flops_linear_versus_quadratic(record_property):
    B, H = 2, 8
    Ds = [8, 16, 32, 64]
    inc, naive = [], []
    for D in Ds:
        model = NADE(D, H).double()
        x = torch.bernoulli(torch.full((B, D), 0.5, dtype=torch.float64), generator=generator(D))
        inc.append(count_flops(model.conditional_logits, x, "incremental"))
        naive.append(count_flops(model.conditional_logits, x, "naive"))
        assert inc[-1] == 4 * B * H * D  # 2BH per rank-1 update + 2BH per output, for each of D steps
        assert naive[-1] == B * H * D * (D - 1) + 2 * B * D * H
    p_inc, p_naive = fit_exponent(Ds, inc), fit_exponent(Ds, naive)
    assert abs(p_inc - 1) < 1e-9 and p_naive > 1.7
    record_property("evidence", f"FLOPs exponent in D: incremental {p_inc:.2f}, naive {p_naive:.2f} (H = {H})")


@pytest.mark.claim("autoregressive.nade-second-order")
def test_nade_trains_with_a_second_order_optimiser(record_property):
    D, H, lam = 4, 2, 1e-2
    torch.manual_seed(5)
    wrapper = _LogProb(NADE(D, H).double())
    X = all_binary(D)
    P = torch.rand(2 ** D, generator=generator(4), dtype=torch.float64) ** 2
    P = P / P.sum()  # target distribution: the objective is the exact expected NLL, no sampling noise
    names = [n for n, _ in wrapper.named_parameters()]
    shapes = [p.shape for _, p in wrapper.named_parameters()]
    sizes = [p.numel() for _, p in wrapper.named_parameters()]

    def objective(theta):  # the model's own log_prob as a function of a flat parameter vector, + weight decay
        params = {n: t.view(sh) for n, t, sh in zip(names, theta.split(sizes), shapes)}
        return -(P * torch.func.functional_call(wrapper, params, (X,))).sum() + lam * (theta ** 2).sum()

    theta = torch.cat([p.detach().flatten() for p in wrapper.parameters()])
    assert float(objective(theta)) == float(objective(theta))  # deterministic
    losses, gnorms = [], []
    for _ in range(10):  # damped Newton with the exact Hessian (Levenberg shift where it is indefinite)
        th = theta.clone().requires_grad_()
        loss = objective(th)
        (g,) = torch.autograd.grad(loss, th)
        Hs = torch.autograd.functional.hessian(objective, theta)
        torch.testing.assert_close(Hs, Hs.T, rtol=1e-10, atol=1e-13)
        losses.append(float(loss.detach()))
        gnorms.append(float(g.norm()))
        shift = max(0.0, 1e-3 - float(torch.linalg.eigvalsh(Hs).min()))
        step = torch.linalg.solve(Hs + shift * torch.eye(len(theta), dtype=theta.dtype), g)
        t = 1.0
        while float(objective(theta - t * step)) > losses[-1] and t > 1e-6:
            t /= 2
        theta = theta - t * step
    assert all(b <= a for a, b in zip(losses, losses[1:]))  # monotone descent
    assert gnorms[-1] < 1e-10
    assert float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(objective, theta)).min()) > 0  # a minimum
    # superlinear (quadratic) convergence, the signature of a second-order method: the contraction ratio
    # |g_{k+1}| / |g_k| itself shrinks by 10x twice in a row (a first-order method has a fixed ratio)
    r = [b / a for a, b in zip(gnorms, gnorms[1:])]
    assert any(r[k + 1] < 0.1 * r[k] and r[k + 2] < 0.1 * r[k + 1] for k in range(len(r) - 2))
    record_property("evidence", "Newton with the exact Hessian on NADE's exact NLL (+1e-2 |theta|^2): |grad| "
                                + " -> ".join(f"{v:.1e}" for v in gnorms))


class _LogProb(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m.log_prob(x)


@pytest.mark.claim("autoregressive.nade-teacher-forcing")
def test_one_teacher_forced_pass_equals_step_by_step():
    D = 6
    model = NADE(D, 5, order=_perm(D, 7)).double()
    x = all_binary(D)[[11, 50]]
    with torch.no_grad():
        one_pass = model.conditional_logits(x)
        for k, d in enumerate(model.order.tolist()):
            prefix = x.clone()
            prefix[:, model.order[k:]] = 0  # generation state: only the ground-truth prefix is known
            torch.testing.assert_close(model.conditional_logits(prefix)[:, d], one_pass[:, d], rtol=0, atol=0)


# -------------------------------------------------------------------------------- MADE

@pytest.mark.claim("autoregressive.made-masks")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_made_is_autoregressive_for_any_order(seed):
    D = 6
    order = _perm(D, seed)
    torch.manual_seed(seed)
    model = MADE(D, [12, 12], order=order).double()
    x = torch.rand(D, dtype=torch.float64)
    J = jacobian(lambda v: model(v[None])[0], x)
    pos = torch.empty(D, dtype=torch.long)
    pos[order] = torch.arange(D)
    allowed = pos[None, :] < pos[:, None]
    assert (J[~allowed] == 0).all()
    # masks alone: which inputs can reach which outputs
    m = made_masks(D, [12, 12], order)
    reach = (m[2] @ m[1] @ m[0]) > 0
    assert torch.equal(reach, allowed)


@pytest.mark.claim("autoregressive.made-masks")
def test_made_hidden_degrees_are_one_to_d_minus_one():
    # Germain et al. (2015): hidden degrees lie in 1..D-1; degree D would be a dead unit (no output may use it)
    D = 5
    for hidden in ([3], [12], [7, 9]):
        masks = made_masks(D, hidden, _perm(D, 8))
        for m in masks[:-1]:
            assert (m.sum(1) > 0).all()  # every hidden unit receives some input
        assert (masks[-1].sum(0) > 0).all()  # every unit of the last hidden layer feeds some output
        assert masks[-1].sum() > 0


@pytest.mark.claim("autoregressive.made-large-hidden")
def test_made_needs_hidden_layers_of_width_d_minus_one(record_property):
    D = 6
    allowed = torch.tril(torch.ones(D, D, dtype=torch.bool), -1)
    cut = {}
    for H in range(1, D + 2):
        m = made_masks(D, [H], torch.arange(D))
        reach = (m[1] @ m[0]) > 0
        assert not (reach & ~allowed).any()
        cut[H] = int((allowed & ~reach).sum())
    assert all(cut[H] > 0 for H in range(1, D - 1)) and all(cut[H] == 0 for H in range(D - 1, D + 2))
    record_property("evidence", f"D = {D}: allowed dependencies cut by the masks per hidden width {cut}")


@pytest.mark.claim("autoregressive.made-large-hidden")
def test_made_width_bound_holds_for_every_degree_assignment():
    # Not only the cyclic degrees of made_masks: for D = 5, every assignment of degrees 1..D-1 to
    # the units of a hidden layer narrower than D - 1 cuts some allowed dependency (the output of
    # degree k + 1 needs a unit of degree exactly k to see input k), and every assignment that
    # holds all degrees keeps them all; MADE's masking rules written out here by hand.
    D = 5
    m_in = torch.arange(1, D + 1)
    allowed = m_in[:, None] > m_in[None, :]  # output d may see input j

    def reach(*layers):
        prev, path = m_in, torch.eye(D, dtype=torch.long)
        for m in layers:
            path = (m[:, None] >= prev[None, :]).long() @ path
            prev = m
        return ((m_in[:, None] > prev[None, :]).long() @ path) > 0

    for H in range(1, D + 1):
        for degs in itertools.product(range(1, D), repeat=H):
            m = torch.tensor(degs)
            r = reach(m)
            assert not (r & ~allowed).any()
            full = set(degs) == set(range(1, D))
            assert bool((allowed & ~r).any()) != full
            if H == D - 2:  # a narrow layer anywhere in a deep stack cuts too
                assert (allowed & ~reach(torch.arange(D - 1) + 1, m)).any()


@pytest.mark.claim("autoregressive.made-passes")
def test_made_one_pass_to_train_d_passes_to_sample():
    D = 7
    model = MADE(D, [10], order=_perm(D, 3)).double()
    calls, h = _count_calls(model.net)
    model.log_prob(all_binary(D)[:5])
    assert len(calls) == 1
    calls.clear()
    s = model.sample(4, generator=generator(0))
    h.remove()
    assert len(calls) == D and s.shape == (4, D) and ((s == 0) | (s == 1)).all()


# Sample checks: one joint chi-square test over all cells of the enumerated joint, at a stated
# false-alarm rate, on models with strong dependence between the variables; each test also runs a
# broken sampler that feeds nothing back (every conditional computed from an all-zero prefix) and
# shows that the same test rejects it, so the check has power where it matters.
FALSE_ALARM = 1e-6


def _chi2_pvalue(samples_idx, P):
    """Pearson's chi-square p-value of cell indices (n,) against the cell probabilities P (cells,)."""
    n = len(samples_idx)
    expected = (P * n).numpy()
    assert expected.min() >= 5, "too few expected counts per cell for the chi-square approximation"
    counts = np.bincount(samples_idx.numpy(), minlength=len(P))
    return scipy.stats.chisquare(counts, expected).pvalue


def _cell_index(s, X):
    """Row of X that each sample equals: (n,) long."""
    match = (s.reshape(len(s), 1, -1) == X.reshape(1, len(X), -1)).all(-1)
    assert bool(match.any(1).all())
    return match.double().argmax(1)


def _strengthen(model, factor):
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(factor)


@torch.no_grad()
def _binary_sampler_without_feedback(model, n, g):
    """The mutant: draws x_d from p(x_d | 0, .., 0) in the model's order, never feeding back."""
    zeros = torch.zeros(1, model.D, dtype=torch.float64)
    logits = model(zeros) if isinstance(model, MADE) else model.conditional_logits(zeros)
    return torch.bernoulli(torch.sigmoid(logits).expand(n, model.D), generator=g)


@pytest.mark.claim("autoregressive.made-passes")
def test_made_samples_follow_the_model(record_property):
    D = 3
    torch.manual_seed(4)
    model = MADE(D, [4], order=torch.tensor([2, 0, 1])).double()  # not the identity: sampling must follow the order
    _strengthen(model, 4)  # larger weights: strong dependence on the earlier variables
    n = 6000
    X = all_binary(D)
    with torch.no_grad():
        P = model.log_prob(X).exp()
    p_ok = _chi2_pvalue(_cell_index(model.sample(n, generator=generator(5)), X), P)
    p_bad = _chi2_pvalue(_cell_index(_binary_sampler_without_feedback(model, n, generator(5)), X), P)
    assert p_ok > FALSE_ALARM and p_bad < FALSE_ALARM
    record_property("evidence", f"chi-square over {len(P)} cells, n = {n}: p = {p_ok:.2g}; "
                    f"a sampler without feedback p = {p_bad:.1e}")


@pytest.mark.claim("autoregressive.nade-order")
def test_nade_samples_follow_the_model(record_property):
    D = 3
    torch.manual_seed(6)
    model = NADE(D, 4, order=_perm(D, 6)).double()
    with torch.no_grad():  # non-zero biases, so that a sampler mixing up c_d or b is caught
        model.b.copy_(randn(4, seed=61))
        model.c.copy_(randn(D, seed=62) * 1.5)
        model.W.mul_(6)  # strong dependence
        model.V.mul_(3)
    n = 6000
    X = all_binary(D)
    with torch.no_grad():
        P = model.log_prob(X).exp()
    p_ok = _chi2_pvalue(_cell_index(model.sample(n, generator=generator(7)), X), P)
    p_bad = _chi2_pvalue(_cell_index(_binary_sampler_without_feedback(model, n, generator(7)), X), P)
    assert p_ok > FALSE_ALARM and p_bad < FALSE_ALARM
    record_property("evidence", f"chi-square over {len(P)} cells, n = {n}: p = {p_ok:.2g}; "
                    f"a sampler without feedback p = {p_bad:.1e}")


@pytest.mark.claim("autoregressive.pixelcnn-train-vs-sample")
def test_pixelcnn_samples_follow_the_model(record_property):
    torch.manual_seed(8)
    model = PixelCNN(1, 3, hidden=6, layers=2, first_kernel=3).double()
    _strengthen(model, 4)
    n = 6000
    grids = _grids(1, 1, 2, 3)
    with torch.no_grad():
        P = model.log_prob(grids).exp()
        # the mutant: both pixels drawn from the conditionals of an all-zero image
        probs = torch.softmax(model(torch.zeros(1, 1, 1, 2, dtype=torch.long))[0, 0], dim=0)  # (K, 1, 2)
    g = generator(9)
    bad = torch.stack([torch.multinomial(probs[:, 0, j], n, replacement=True, generator=g) for j in range(2)], 1)
    p_ok = _chi2_pvalue(_cell_index(model.sample(n, 1, 2, generator=generator(9)), grids), P)
    p_bad = _chi2_pvalue(_cell_index(bad.view(n, 1, 1, 2), grids), P)
    assert p_ok > FALSE_ALARM and p_bad < FALSE_ALARM
    record_property("evidence", f"chi-square over {len(P)} cells, n = {n}: p = {p_ok:.2g}; "
                    f"a sampler without feedback p = {p_bad:.1e}")


@pytest.mark.claim("generative.autoregressive-tractable")
def test_bernoulli_log_prob_finite_for_huge_logits():
    logits = torch.tensor([[1e4, -1e4]], dtype=torch.float32)
    x = torch.tensor([[1.0, 0.0]])
    assert float(bernoulli_log_prob(logits, x)) == 0.0
    assert torch.isfinite(bernoulli_log_prob(logits, 1 - x)).all()


# ---------------------------------------------------------------- PixelCNN / PixelRNN

def _raster_jacobian(model, C, K, H, W, seed=0):
    """|d logits(c, :, i, j) / d input(c', :, r, s)| summed over levels and a few random inputs:
    (C, H, W, C, H, W) dependency table."""
    g = generator(seed)
    dep = torch.zeros(C, H, W, C, H, W, dtype=torch.float64)
    for _ in range(2):
        h = torch.randn(1, C * K, H, W, generator=g, dtype=torch.float64)
        J = jacobian(lambda v: model.logits_from_onehot(v)[0], h)  # (C, K, H, W, 1, C*K, H, W)
        J = J.abs().sum(1)[:, :, :, 0].view(C, H, W, C, K, H, W).sum(4)
        dep += J
    return dep > 0


def _before(H, W, C=1, same_pixel_channels="none"):
    """Expected dependencies: pixel (r, s) strictly before (i, j) in raster order, and at the same pixel the
    earlier colours."""
    exp = torch.zeros(C, H, W, C, H, W, dtype=torch.bool)
    for c, i, j, c2, r, s in itertools.product(range(C), range(H), range(W), range(C), range(H), range(W)):
        exp[c, i, j, c2, r, s] = (r, s) < (i, j) or ((r, s) == (i, j) and c2 < c)
    return exp


@pytest.mark.claim("autoregressive.pixelcnn-masked")
def test_pixelcnn_output_depends_only_on_previous_pixels():
    torch.manual_seed(0)
    model = PixelCNN(1, 2, hidden=6, layers=3, first_kernel=5).double()
    dep = _raster_jacobian(model, 1, 2, 4, 4)
    assert not (dep & ~_before(4, 4)).any()
    assert dep[0, 3, 3, 0, 3, 2] and dep[0, 3, 3, 0, 2, 3]  # uses left and upper neighbours


@pytest.mark.claim("autoregressive.pixelcnn-channels")
def test_rgb_masking_r_then_g_then_b():
    torch.manual_seed(1)
    model = PixelCNN(3, 2, hidden=6, layers=2, first_kernel=3).double()
    dep = _raster_jacobian(model, 3, 2, 3, 3)
    exp = _before(3, 3, C=3)
    assert not (dep & ~exp).any()
    # at the same pixel: R sees no colour of it, G sees R, B sees R and G
    same = dep[:, 1, 1, :, 1, 1]
    assert torch.equal(same, torch.tensor([[False, False, False], [True, False, False], [True, True, False]]))
    mA = pixelcnn_mask(3, 6, (3, 3), "A", 3)[:, :, 1, 1]
    mB = pixelcnn_mask(6, 6, (3, 3), "B", 3)[:, :, 1, 1]
    assert mA[0:2].sum() == 0 and mA[2:4, 0].all() and not mA[2:4, 1:].any() and mA[4:, :2].all()
    assert torch.equal(mB, torch.kron(torch.tril(torch.ones(3, 3)), torch.ones(2, 2)))


@pytest.mark.claim("autoregressive.pixelrnn")
def test_row_lstm_is_causal():
    torch.manual_seed(2)
    model = RowLSTM(2, hidden=4).double()
    dep = _raster_jacobian(model, 1, 2, 4, 5)
    assert not (dep & ~_before(4, 5)).any()
    assert dep[0, 2, 2, 0, 1, 2] and dep[0, 2, 2, 0, 0, 3] and dep[0, 2, 2, 0, 2, 1]  # reaches the row above (via the LSTM state) and the left


@pytest.mark.claim("autoregressive.pixelrnn")
def test_row_lstm_follows_the_pixelrnn_equations():
    # van den Oord et al. (2016), Row LSTM: [o, f, i, g] = K_ss * h_{i-1} + K_is * x_i (x masked to the left),
    # c_i = sigmoid(f) c_{i-1} + sigmoid(i) tanh(g), h_i = sigmoid(o) tanh(c_i); written out here in numpy
    torch.manual_seed(12)
    K, hid, k, H, W = 2, 3, 3, 3, 4
    model = RowLSTM(K, hidden=hid, kernel=k).double()
    x = torch.randn(1, K, H, W, generator=generator(13), dtype=torch.float64)
    Kis, bis = model.input_to_state.weight.detach().numpy()[:, :, 0], model.input_to_state.bias.detach().numpy()
    Kss, bss = model.state_to_state.weight.detach().numpy(), model.state_to_state.bias.detach().numpy()
    Ko, bo = model.out.weight.detach().numpy()[:, :, 0, 0], model.out.bias.detach().numpy()
    xn, r = x[0].numpy(), k // 2
    sig = lambda a: 1 / (1 + np.exp(-a))
    h, c, ref = np.zeros((hid, W)), np.zeros((hid, W)), np.zeros((K, H, W))
    for i in range(H):
        gates = np.zeros((4 * hid, W))
        for j in range(W):
            gates[:, j] = bis + bss
            for s in range(r):  # input taps strictly left of the pixel
                if 0 <= j - r + s < W:
                    gates[:, j] += Kis[:, :, s] @ xn[:, i, j - r + s]
            for s in range(k):  # state taps over the row above, zero padded
                if 0 <= j - r + s < W:
                    gates[:, j] += Kss[:, :, s] @ h[:, j - r + s]
        o, f, ig, g = np.split(gates, 4)
        c = sig(f) * c + sig(ig) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        ref[:, i] = Ko @ h + bo[:, None]
    got = model.logits_from_onehot(x)[0, 0].detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.claim("autoregressive.blind-spot")
def test_gated_stack_layers_are_residual_on_the_horizontal_stack():
    # a layer whose horizontal output conv is zero adds nothing: 3 layers with layers 2, 3 silenced = 1 layer
    torch.manual_seed(14)
    deep, shallow = GatedPixelCNN(2, hidden=4, layers=3).double(), GatedPixelCNN(2, hidden=4, layers=1).double()
    with torch.no_grad():
        for name in ("v_conv", "h_conv", "v_to_h", "h_out"):
            getattr(shallow, name)[0].load_state_dict(getattr(deep, name)[0].state_dict())
        shallow.out.load_state_dict(deep.out.state_dict())
        for layer in (1, 2):
            deep.h_out[layer].weight.zero_()
            deep.h_out[layer].bias.zero_()
    h = torch.randn(2, 2, 4, 5, generator=generator(15), dtype=torch.float64)
    torch.testing.assert_close(deep.logits_from_onehot(h), shallow.logits_from_onehot(h), rtol=1e-12, atol=1e-14)


@pytest.mark.claim("autoregressive.pixelcnn-train-vs-sample")
def test_pixelcnn_one_pass_to_train_hwc_passes_to_sample():
    torch.manual_seed(3)
    model = PixelCNN(3, 2, hidden=6, layers=2, first_kernel=3).double()
    calls, h = _count_calls(model.net)
    x = _grids(3, 1, 2, 2)[:7]
    logp = model.log_prob(x)
    assert len(calls) == 1 and logp.shape == (7,)
    calls.clear()
    s = model.sample(2, 3, 4, generator=generator(0))
    h.remove()
    assert len(calls) == 3 * 4 * 3 and s.shape == (2, 3, 3, 4)


def _receptive_field(model, H, W, i, j, K=2):
    g = generator(0)
    h = torch.randn(4, K, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    model.logits_from_onehot(h)[:, 0, :, i, j].sum().backward()
    return h.grad.abs().sum((0, 1)) > 0


def _blind_spot_fields():
    torch.manual_seed(0)
    H = W = 13
    i, j, L = 8, 6, 4
    naive = PixelCNN(1, 2, hidden=8, layers=L, first_kernel=3).double()
    gated = GatedPixelCNN(2, hidden=6, layers=L, kernel=3).double()
    return _receptive_field(naive, H, W, i, j), _receptive_field(gated, H, W, i, j), (H, W, i, j, L)


@pytest.mark.claim("autoregressive.blind-spot")
def test_stacked_masked_convs_have_a_blind_spot_gated_stacks_do_not(record_property):
    rn, rg, (H, W, i, j, L) = _blind_spot_fields()
    causal = _before(H, W)[0, i, j, 0]
    assert not (rn & ~causal).any() and not (rg & ~causal).any()
    # naive: the pixel two to the right in the row above is causal, within reach, and never seen
    assert not rn[i - 1, j + 2] and rn[i - 1, j + 1] and rn[i - L, j + L]
    rows, cols = rn[:i].nonzero(as_tuple=True)
    box = torch.zeros_like(rn)
    box[rows.min():i, cols.min():cols.max() + 1] = True
    blind = int((box & ~rn).sum())
    assert blind > 0
    # gated: exactly the full rectangle above (L+1 rows, +-L columns) and L+1 pixels to the left
    exp = torch.zeros_like(rg)
    exp[i - L - 1:i, j - L:j + L + 1] = True
    exp[i, j - L - 1:j] = True
    assert torch.equal(rg, exp)
    record_property("evidence", f"{L} layers of 3x3: {blind} causal pixels inside the naive field's box are never seen; "
                                "the gated stack sees all of its rectangle")


@pytest.mark.slow
def test_figure_receptive_fields(save_figure):
    import matplotlib.pyplot as plt

    rn, rg, (H, W, i, j, L) = _blind_spot_fields()
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    for ax, r, title in ((axes[0], rn, f"{L} stacked masked 3x3 convs"), (axes[1], rg, f"{L} gated v/h stack layers")):
        img = r.double().numpy().copy()
        img[i, j] = 0.5  # the predicted pixel
        ax.imshow(img, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("receptive field of the output at the grey pixel (blind spot: upper right)", fontsize=9)
    save_figure(fig, "autoregressive-receptive-field.png",
                caption='Receptive field of one output pixel after stacked masked 3x3 convolutions (left: the blind spot to the upper right stays unseen) and after the gated vertical/horizontal stack (right: no blind spot).', claims=('autoregressive.blind-spot',))
    assert not rn[i - 1, j + 2] and rg[i - 1, j + 2]


@pytest.mark.claim("autoregressive.blind-spot")
def test_masked_conv_equals_conv_with_masked_weights(device):
    conv = MaskedConv2d(2, 4, 3, "B").to(device)
    x = randn(1, 2, 5, 5, seed=0, dtype=torch.float32, device=device)
    ref = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref)


# ------------------------------------------------------------------------------ WaveNet

@pytest.mark.claim("autoregressive.wavenet-dilation")
@pytest.mark.parametrize("dilations", [[1, 2, 4, 8], [1, 1, 1, 1], [2, 4]])
def test_wavenet_receptive_field_and_causality(dilations):
    torch.manual_seed(0)
    model = WaveNet(levels=2, residual=4, dilations=dilations).double()
    T, t = 40, 30
    h = torch.randn(2, 2, T, dtype=torch.float64, requires_grad=True)
    model.logits_from_onehot(h)[:, :, t].sum().backward()
    seen = (h.grad.abs().sum((0, 1)) > 0).nonzero().flatten().tolist()
    R = 1 + sum(dilations) + 1  # k = 2: the shifted first causal conv plus the dilated stack
    assert model.receptive_field == R == wavenet_receptive_field(2, [1] + dilations)
    assert seen == list(range(t - R, t))


@pytest.mark.claim("autoregressive.wavenet-dilation")
def test_dilation_doubling_grows_the_field_exponentially():
    for L in range(1, 10):
        assert wavenet_receptive_field(2, [2 ** l for l in range(L)]) == 2 ** L
        assert wavenet_receptive_field(2, [1] * L) == L + 1
    assert wavenet_receptive_field(3, [1, 2, 4]) == 15


# ------------------------------------------------------------------------------ VQ-VAE

@pytest.mark.claim("autoregressive.vq-vae")
def test_vq_nearest_codebook_and_straight_through(device, dtype):
    z = randn(2, 5, 3, seed=0, dtype=dtype, device=device).requires_grad_()
    codebook = randn(7, 3, seed=1, dtype=dtype, device=device).requires_grad_()
    zq, idx = vq_quantise(z, codebook)
    d = ((z.detach().cpu().double().numpy()[..., None, :] - codebook.detach().cpu().double().numpy()) ** 2).sum(-1)
    assert (idx.cpu().numpy() == d.argmin(-1)).all()
    torch.testing.assert_close(zq, codebook[idx].detach(), rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-15)
    w = randn(2, 5, 3, seed=2, dtype=dtype, device=device)
    (zq * w).sum().backward()
    torch.testing.assert_close(z.grad, w)  # straight-through: gradient copied to the encoder output
    assert codebook.grad is None or (codebook.grad == 0).all()
    book, commit = vq_losses(z, codebook, idx, beta=0.25)
    gz, gc = torch.autograd.grad(commit, (z, codebook), allow_unused=True)
    assert gc is None and gz.abs().sum() > 0  # commitment trains the encoder only
    gz, gc = torch.autograd.grad(book, (z, codebook), allow_unused=True)
    assert gz is None and gc.abs().sum() > 0  # codebook loss trains the codebook only
    torch.testing.assert_close(commit, 0.25 * ((z - codebook[idx]) ** 2).mean())
    torch.testing.assert_close(book, ((z - codebook[idx]) ** 2).mean())


@pytest.mark.claim("autoregressive.latent-ar-prior")
def test_ar_prior_over_vq_codes_pipeline():
    torch.manual_seed(9)
    K, d = 4, 3
    codebook = randn(K, d, seed=3)
    z = randn(5, 3, 3, d, seed=4)  # encoder outputs on a 3 x 3 latent grid
    _, idx = vq_quantise(z, codebook)
    prior = PixelCNN(1, K, hidden=8, layers=2, first_kernel=3).double()
    logp = prior.log_prob(idx[:, None])
    assert logp.shape == (5,) and torch.isfinite(logp).all() and (logp < 0).all()
    codes = prior.sample(2, 3, 3, generator=generator(0))[:, 0]  # sample tokens, then look them up
    zq = codebook[codes]
    assert zq.shape == (2, 3, 3, d)
    _, back = vq_quantise(zq, codebook)
    assert torch.equal(back, codes)


# ---------------------------------------------------------------------------- devices

@pytest.mark.claim("generative.autoregressive-tractable")
def test_models_agree_across_devices(device):
    torch.manual_seed(0)
    x = _grids(1, 2, 3, 2)[:9]
    for model in (PixelCNN(1, 2, hidden=6, layers=2, first_kernel=3), GatedPixelCNN(2, 4, 2), RowLSTM(2, 4)):
        ref = model.log_prob(x)
        got = model.to(device).log_prob(x.to(device))
        torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-5)  # float32 convolutions, a few terms
    made = MADE(5, [8], order=_perm(5, 0))
    X = all_binary(5, dtype=torch.float32)
    torch.testing.assert_close(made.to(device).log_prob(X.to(device)).cpu(), made.cpu().log_prob(X), rtol=1e-4, atol=1e-5)



# ------------------------------------------------------------------- NADE's extensions

def _rnade(D=2, H=5, K=3, seed=0, strength=2.0):
    torch.manual_seed(seed)
    model = RNADE(D, H, K).double()
    with torch.no_grad():
        model.W.mul_(strength)  # the conditionals move with the prefix
        model.V[2].mul_(0.3)    # stds within about [0.5, 2]: a grid can resolve them
        model.c[2].zero_()
    return model


def _mog_pdf(model, x_prefix, i):
    """The i-th conditional density as a function of x_i (prefix fixed), from the mixture parameters."""
    x = torch.zeros(1, model.D, dtype=torch.float64)
    x[0, :i] = torch.as_tensor(x_prefix, dtype=torch.float64)
    with torch.no_grad():
        log_pi, mu, log_s = (v[0, i].numpy() for v in model.mixture(x))
    return lambda v: float(np.sum(np.exp(log_pi) * scipy.stats.norm.pdf(v, mu, np.exp(log_s))))


@pytest.mark.claim("autoregressive.rnade-normalised")
def test_rnade_conditionals_are_normalised_mixtures(record_property):
    model = _rnade(D=3)
    g = generator(1)
    worst = 0.0
    for _ in range(3):
        x = torch.randn(1, 3, generator=g, dtype=torch.float64) * 2
        with torch.no_grad():
            log_pi, mu, log_s = model.mixture(x)
        torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(1, 3, dtype=torch.float64), rtol=0, atol=1e-15)
        for i in range(3):
            # the model's own conditional log-density, as x_i varies with the prefix fixed, integrates to one
            def f(v, i=i):
                y = x.clone()
                y[0, i] = v
                with torch.no_grad():
                    return float(model.conditional_log_prob(y)[0, i].exp())
            total, err = scipy.integrate.quad(f, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-12, limit=200)
            assert abs(total - 1) < 1e-9 + 10 * err
            # and equals scipy's mixture of normals with those parameters
            v = float(x[0, i])
            assert f(v) == pytest.approx(_mog_pdf(model, x[0, :i], i)(v), rel=1e-12)
            worst = max(worst, abs(total - 1))
    record_property("evidence", f"max |int p(x_i | x_<i) dx_i - 1| = {worst:.1e} (scipy.integrate.quad, 9 conditionals)")


@pytest.mark.claim("autoregressive.rnade-normalised")
def test_rnade_joint_density_integrates_to_one_in_1d_and_2d(record_property):
    one = _rnade(D=1, K=3, seed=2)
    f1 = lambda v: float(one.log_prob(torch.tensor([[v]], dtype=torch.float64)).exp())  # noqa: E731
    with torch.no_grad():
        total1, err1 = scipy.integrate.quad(f1, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-12, limit=200)
    assert abs(total1 - 1) < 1e-9 + 10 * err1
    # 2-D: the trapezoid rule on a fine grid. The density is smooth and its tails are Gaussian, so
    # the rule is exponentially accurate once the spacing is well below the smallest std and the
    # box holds every component to many stds (both asserted below).
    two = _rnade(D=2, K=3, seed=3)
    with torch.no_grad():
        g = torch.linspace(-L2, L2, N2, dtype=torch.float64)
        pts = torch.cartesian_prod(g, g)
        dens = two.log_prob(pts).exp().view(N2, N2)
        _, mu, log_s = two.mixture(pts)
    h = float(g[1] - g[0])
    s_min, reach = float(log_s.exp().min()), float((mu.abs() + 8 * log_s.exp()).max())
    assert h < s_min / 4 and reach < L2
    total2 = float(torch.trapezoid(torch.trapezoid(dens, dx=h, dim=1), dx=h))
    assert abs(total2 - 1) < 1e-8
    record_property("evidence", f"1-D: |int p - 1| = {abs(total1 - 1):.1e} (quad); 2-D: {abs(total2 - 1):.1e} "
                    f"(trapezoid, {N2}^2 points, spacing {h:.3f} < min std / 4 = {s_min / 4:.3f})")


L2, N2 = 20.0, 401


@pytest.mark.claim("autoregressive.rnade-normalised")
def test_rnade_is_autoregressive_and_its_sampler_feeds_back(record_property):
    model = _rnade(D=3, seed=4, strength=4.0)
    x = randn(1, 3, seed=5)
    J = jacobian(lambda v: model.conditional_log_prob(v)[0], x)[:, 0, :]  # (D, D): d log p_i / d x_j
    low = torch.tril_indices(3, 3, offset=-1)
    assert (J.triu(1) == 0).all() and (J.diagonal().abs() > 0).all() and (J[low[0], low[1]].abs() > 1e-3).all()
    # Rosenblatt transform: u_i = F(x_i | x_<i) of true samples are i.i.d. U(0, 1); one chi-square
    # test on a 4 x 4 x 4 grid of (u_1, u_2, u_3) cells; a sampler that feeds nothing back fails it.
    n = 8000

    def pit(samples):
        with torch.no_grad():
            log_pi, mu, log_s = model.mixture(samples)
        cdf = scipy.stats.norm.cdf((samples[:, :, None] - mu).numpy() / log_s.exp().numpy())
        return (log_pi.exp().numpy() * cdf).sum(-1)  # (n, D)

    def pvalue(u):
        cells = np.minimum((u * 4).astype(int), 3) @ np.array([16, 4, 1])
        return scipy.stats.chisquare(np.bincount(cells, minlength=64)).pvalue

    p_ok = pvalue(pit(model.sample(n, generator=generator(6))))
    with torch.no_grad():  # the mutant: every step's mixture from an all-zero prefix
        log_pi, mu, log_s = model.mixture(torch.zeros(1, 3, dtype=torch.float64))
        g = generator(6)
        k = torch.multinomial(log_pi[0].exp(), n, replacement=True, generator=g)  # (D, n) components
        eps = torch.randn(n, 3, generator=g, dtype=torch.float64)
        bad = mu[0].gather(1, k).T + log_s[0].exp().gather(1, k).T * eps
    p_bad = pvalue(pit(bad))
    assert p_ok > FALSE_ALARM and p_bad < FALSE_ALARM
    record_property("evidence", f"Rosenblatt chi-square, 64 cells, n = {n}: p = {p_ok:.2g}; without feedback p = {p_bad:.1e}")


def _onade(D=3, seed=0):
    torch.manual_seed(seed)
    model = OrderlessNADE(D, 8).double()
    _strengthen(model, 2.0)
    return model


@pytest.mark.claim("autoregressive.orderless-nade")
def test_every_ordering_of_an_orderless_nade_is_normalised(record_property):
    D = 3
    model = _onade(D)
    X = all_binary(D)
    joints = []
    with torch.no_grad():
        for o in itertools.permutations(range(D)):
            P = model.log_prob(X, torch.tensor(o)).exp()
            assert float(P.sum()) == pytest.approx(1.0, abs=1e-14)
            joints.append(P)
        # each step's conditional is normalised: p(x_d = 1 | x_m) + p(x_d = 0 | x_m) = 1 by construction,
        # and it ignores the unobserved values
        m = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).expand(len(X), D)
        lg = model.conditional_logits(X, m)
        same = X[:, 0] == X[0, 0]
        torch.testing.assert_close(lg[same], lg[same][:1].expand(int(same.sum()), D), rtol=0, atol=0)
    spread = float(torch.stack(joints).std(0).max())
    assert spread > 1e-3  # an arbitrary network is not consistent: orderings disagree
    record_property("evidence", f"6 orderings, each sums to 1; a random network's orderings disagree by up to {spread:.2g}")


@pytest.mark.claim("autoregressive.orderless-nade")
def test_orderings_agree_on_a_joint_the_network_fits_exactly():
    # A product of Bernoullis is fitted exactly by the network that ignores its inputs and outputs
    # logit(theta_d): then every conditional is the true one and all D! orderings give the same joint.
    D = 4
    model = OrderlessNADE(D, 6).double()
    theta = torch.tensor([0.2, 0.5, 0.7, 0.9], dtype=torch.float64)
    with torch.no_grad():
        model.net[-1].weight.zero_()  # the output no longer depends on the input
        model.net[-1].bias.copy_(torch.log(theta) - torch.log1p(-theta))
    X = all_binary(D)
    truth = (theta ** X * (1 - theta) ** (1 - X)).prod(-1)
    with torch.no_grad():
        for o in itertools.permutations(range(D)):
            torch.testing.assert_close(model.log_prob(X, torch.tensor(o)).exp(), truth, rtol=1e-14, atol=0)


@pytest.mark.claim("autoregressive.orderless-nade")
def test_orderless_training_loss_is_unbiased_for_the_mean_over_orderings():
    # E_{|m| ~ U{0..D-1}, m | |m| uniform} [D / (D - |m|) sum_{d not in m} -log p(x_d | x_m)]
    #   = mean over all D! orderings of -log p_o(x), by exact enumeration.
    D = 3
    model = _onade(D, seed=1)
    X = all_binary(D)
    with torch.no_grad():
        lhs = torch.zeros(len(X), dtype=torch.float64)
        for size in range(D):
            subsets = list(itertools.combinations(range(D), size))
            for sub in subsets:
                m = torch.zeros(len(X), D, dtype=torch.float64)
                m[:, list(sub)] = 1
                lhs += model.orderless_loss(X, m) / (D * len(subsets))
        rhs = -torch.stack([model.log_prob(X, torch.tensor(o)) for o in itertools.permutations(range(D))]).mean(0)
    torch.testing.assert_close(lhs, rhs, rtol=1e-13, atol=0)


@pytest.mark.claim("autoregressive.extensions")
def test_the_three_named_extensions_are_normalised_models():
    # convolutional: PixelCNN's masked convolutions give NADE-style conditionals from a CNN (one pass)
    torch.manual_seed(0)
    cnn = PixelCNN(1, 2, hidden=4, layers=2, first_kernel=3).double()
    grids = _grids(1, 2, 2, 2)
    with torch.no_grad():
        assert float(cnn.log_prob(grids).exp().sum()) == pytest.approx(1.0, abs=1e-13)
        # real-valued: a Gaussian-mixture conditional integrates to one
        r = _rnade(D=1, seed=7)
        f = lambda v: float(r.log_prob(torch.tensor([[v]], dtype=torch.float64)).exp())  # noqa: E731
        assert scipy.integrate.quad(f, -np.inf, np.inf, epsabs=1e-12)[0] == pytest.approx(1.0, abs=1e-9)
        # order-less: p(x_k | x_{i_1} .. x_{i_j}) for an arbitrary observed subset, a Bernoulli
        o = _onade(4)
        x = all_binary(4)
        m = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64).expand(len(x), 4)
        p1 = torch.sigmoid(o.conditional_logits(x, m))
        assert ((p1 > 0) & (p1 < 1)).all()


# ------------------------------------------------- the computable parts of descriptive lines

@pytest.mark.claim("autoregressive.definition")
@pytest.mark.claim("autoregressive.discriminative-generative")
def test_a_next_step_predictor_of_the_same_variable_is_a_generative_model(record_property):
    """WaveNet predicts x_{t} of the same signal from x_{<t} only (d logits_t / d x_s = 0 for s >= t),
    and by the chain rule its predictions define a normalised joint P(X) over whole sequences that
    ancestral sampling draws from: a sequence model is generative."""
    torch.manual_seed(3)
    wn = WaveNet(levels=2, residual=4, dilations=[1, 2]).double()
    # weights x4: strong dependence on the past (KL from the no-feedback sampler's law ~0.19 nats;
    # x2 gave 1e-3, which 4000 samples cannot resolve), and still >= 10 expected counts per cell
    _strengthen(wn, 4)
    T = 6
    h = F.one_hot(torch.randint(0, 2, (1, T), generator=generator(4)), 2).transpose(1, 2).double()
    J = jacobian(lambda v: wn.logits_from_onehot(v)[0], h)  # (K, T, 1, K, T)
    dep = J.abs().sum((0, 2, 3)) > 0  # (T out, T in)
    assert not dep.triu().any() and dep.tril(-1).any()
    X = torch.tensor(list(itertools.product(range(2), repeat=4)))
    with torch.no_grad():
        P = wn.log_prob(X).exp()
    assert float(P.sum()) == pytest.approx(1.0, abs=1e-13)
    p = _chi2_pvalue(_cell_index(wn.sample(4000, 4, generator=generator(5)), X), P)
    # the same test rejects an ancestral sampler that feeds nothing back (every x_t from the
    # conditionals of an all-zero past): the chi-square has power against it
    with torch.no_grad():
        p1 = torch.softmax(wn(torch.zeros(1, 4, dtype=torch.long)), 1)[0, 1]  # p(x_t = 1 | zeros), (T,)
    bad = torch.bernoulli(p1.expand(4000, 4), generator=generator(5)).long()
    p_bad = _chi2_pvalue(_cell_index(bad, X), P)
    assert p > FALSE_ALARM and p_bad < FALSE_ALARM
    record_property("evidence", f"causal Jacobian; joint over 16 sequences sums to 1; samples chi-square p = {p:.2g}, "
                                f"without feedback p = {p_bad:.1e}")


@pytest.mark.claim("autoregressive.nll-metric")
def test_autoregressive_nll_is_exact_in_one_pass(record_property):
    """The AR model's NLL is the exact -log p(x) (its one-pass log_prob equals the log of the
    enumerated, normalised joint), so it is a metric that can be computed; a latent-variable model
    only gives a bound (generative.variational-approximate)."""
    torch.manual_seed(5)
    model = PixelCNN(1, 2, hidden=6, layers=2, first_kernel=3).double()
    grids = _grids(1, 2, 2, 2)
    with torch.no_grad():
        logp = model.log_prob(grids)
        joint = logp.exp() / logp.exp().sum()
    torch.testing.assert_close(logp, joint.log(), rtol=0, atol=1e-13)
    data = grids[torch.randint(0, 16, (50,), generator=generator(6))]
    with torch.no_grad():
        nll = -float(model.log_prob(data).mean())
    assert nll == pytest.approx(-float(joint.log()[_cell_index(data, grids)].mean()), abs=1e-12)
    record_property("evidence", f"one-pass NLL {nll:.4f} nats = -mean log of the enumerated joint")


@pytest.mark.claim("autoregressive.high-res")
def test_sampling_cost_grows_with_the_square_of_the_pixel_count(record_property):
    """Sampling runs H W C sequential full passes, each costing O(H W): FLOPs grow as (H W)^2, against
    H W for one training pass, so high resolutions are out of reach."""
    torch.manual_seed(7)
    model = PixelCNN(1, 2, hidden=4, layers=2, first_kernel=3)
    flops = {}
    for n in (2, 3, 4):
        flops[n] = (count_flops(lambda: model.sample(1, n, n, generator=generator(0))),
                    count_flops(lambda: model(torch.zeros(1, 1, n, n, dtype=torch.long))))
    e_sample = fit_exponent([n * n for n in flops], [f[0] for f in flops.values()])
    e_train = fit_exponent([n * n for n in flops], [f[1] for f in flops.values()])
    assert abs(e_sample - 2) < 0.05 and abs(e_train - 1) < 0.05
    assert flops[4][0] == 16 * flops[4][1]  # H W C passes of the training pass's cost
    record_property("evidence", f"FLOPs ~ pixels^{e_sample:.2f} to sample, pixels^{e_train:.2f} for one training pass")


# ----------------------------------------------------------------- no host sync per step

def _syncs(fn):
    with count_host_syncs() as c:
        fn()
    return c.count


def test_image_and_audio_samplers_make_no_host_sync_per_pixel():
    torch.manual_seed(0)
    pix, gated, row = PixelCNN(1, 3, hidden=4, layers=2, first_kernel=3), GatedPixelCNN(3, hidden=4, layers=2), RowLSTM(3, hidden=4)
    for model in (pix, gated, row):
        small = _syncs(lambda: model.sample(2, 2, 2, generator=generator(0)))
        big = _syncs(lambda: model.sample(2, 4, 4, generator=generator(0)))
        assert small == big == 0
    wn = WaveNet(levels=3, residual=4, dilations=[1, 2])
    assert _syncs(lambda: wn.sample(2, 3, generator=generator(0))) == _syncs(lambda: wn.sample(2, 12, generator=generator(0))) == 0
    for m in (MADE(4, [6]), NADE(4, 3), RNADE(4, 3)):  # one read of the order before the loop at most
        assert _syncs(lambda: m.sample(3, generator=generator(0))) <= 1
    # validation still runs on a user's call
    with pytest.raises(ValueError, match="^x:"):
        pix(torch.full((1, 1, 2, 2), 3))
    with pytest.raises(ValueError, match="^x:"):
        wn(torch.full((1, 4), -1))


def test_wavenet_sampler_is_causal_and_follows_the_model():
    torch.manual_seed(1)
    wn = WaveNet(levels=2, residual=4, dilations=[1]).double()
    _strengthen(wn, 3)
    T, n = 3, 6000
    X = torch.tensor(list(itertools.product(range(2), repeat=T)))
    with torch.no_grad():
        P = wn.log_prob(X).exp()
    assert float(P.sum()) == pytest.approx(1.0, abs=1e-13)
    p = _chi2_pvalue(_cell_index(wn.sample(n, T, generator=generator(2)), X), P)
    assert p > FALSE_ALARM


def test_models_round_trip_their_state_dict():
    torch.manual_seed(2)
    X = all_binary(4)
    for make in (lambda: TabularAR(4), lambda: FVSBN(4), lambda: NADE(4, 3, order=_perm(4, 0)),
                 lambda: MADE(4, [6], order=_perm(4, 1))):
        a, b = make().double(), make().double()
        b.load_state_dict(a.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(b.log_prob(X), a.log_prob(X), rtol=0, atol=0)
    x = randn(3, 4, seed=0)
    a, b = RNADE(4, 3).double(), RNADE(4, 3).double()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.log_prob(x), a.log_prob(x), rtol=0, atol=0)
    a, b = OrderlessNADE(4, 5).double(), OrderlessNADE(4, 5).double()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.log_prob(X, _perm(4, 3)), a.log_prob(X, _perm(4, 3)), rtol=0, atol=0)
    g = _grids(1, 2, 2, 2)
    for make in (lambda: PixelCNN(1, 2, hidden=4, layers=2), lambda: GatedPixelCNN(2, 4), lambda: RowLSTM(2, 4)):
        a, b = make().double(), make().double()
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(b.log_prob(g), a.log_prob(g), rtol=0, atol=0)
    a, b = WaveNet(3, 4, [1, 2]).double(), WaveNet(3, 4, [1, 2]).double()
    b.load_state_dict(a.state_dict())
    w = torch.randint(0, 3, (2, 5), generator=generator(0))
    torch.testing.assert_close(b.log_prob(w), a.log_prob(w), rtol=0, atol=0)


# ------------------------------------------------------------------------------ inputs

def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="^x:"):
        FVSBN(3).log_prob(torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="^order:"):
        NADE(3, 2, order=torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="^method:"):
        NADE(3, 2).hidden(torch.zeros(1, 3), "fast")
    with pytest.raises(ValueError, match="^D:"):
        made_masks(1, [4])
    with pytest.raises(TypeError, match="^hidden:"):
        made_masks(4, 8)
    with pytest.raises(ValueError, match="^mask_type:"):
        pixelcnn_mask(3, 3, (3, 3), "C", 3)
    with pytest.raises(ValueError, match="^colors:"):
        pixelcnn_mask(4, 6, (3, 3), "A", 3)
    with pytest.raises(ValueError, match="^kernel_size:"):
        pixelcnn_mask(1, 1, (2, 2), "A")
    with pytest.raises(ValueError, match="^x:"):
        PixelCNN(1, 2).log_prob(torch.full((1, 1, 2, 2), 2))
    with pytest.raises(TypeError, match="^x:"):
        PixelCNN(1, 2).log_prob(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="^kernel:"):
        GatedPixelCNN(2, kernel=4)
    with pytest.raises(ValueError, match="^h:"):
        RowLSTM(2).logits_from_onehot(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="^dilations:"):
        wavenet_receptive_field(2, [1, 0])
    with pytest.raises(ValueError, match="^x:"):
        WaveNet(levels=2).log_prob(torch.full((1, 4), 5))
    with pytest.raises(ValueError, match="^n:"):
        TabularAR(0)
    with pytest.raises(ValueError, match="^x:"):
        bernoulli_log_prob(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^codebook:"):
        vq_quantise(torch.zeros(2, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="^n:"):
        all_binary(0)
    with pytest.raises(ValueError, match="^height:"):
        PixelCNN(1, 2).sample(1, 0, 3)
    with pytest.raises(ValueError, match="^n:"):
        MADE(3, [4]).sample(0)
    with pytest.raises(ValueError, match="^n:"):
        NADE(3, 2).sample(0)
    with pytest.raises(ValueError, match="^mask:"):
        from impl.autoregressive import MaskedLinear
        MaskedLinear(3, 2, torch.ones(3, 3))

def test_bad_inputs_of_the_new_models_and_checks():
    with pytest.raises(ValueError, match="^x:"):
        bernoulli_log_prob(torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 2.0]]))  # x = 2 is no Bernoulli outcome
    with pytest.raises(TypeError, match="^x:"):
        bernoulli_log_prob(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="^K:"):
        RNADE(3, 2, K=0)
    with pytest.raises(ValueError, match="^x:"):
        RNADE(3, 2).log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^x:"):
        OrderlessNADE(3, 4).log_prob(torch.full((1, 3), 0.5), torch.arange(3))
    with pytest.raises(ValueError, match="^order:"):
        OrderlessNADE(3, 4).log_prob(torch.zeros(1, 3), torch.tensor([0, 0, 2]))
    with pytest.raises(ValueError, match="^m:"):
        OrderlessNADE(3, 4).conditional_logits(torch.zeros(1, 3), torch.full((1, 3), 0.5))
    with pytest.raises(ValueError, match="^m:"):
        OrderlessNADE(3, 4).orderless_loss(torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="^length:"):
        WaveNet(levels=2).sample(1, 0)
    with pytest.raises(TypeError, match="^generator:"):
        PixelCNN(1, 2).sample(1, 2, 2, generator=3)
    with pytest.raises(TypeError, match="^generator:"):
        RNADE(2, 2).sample(2, generator="g")


def test_extreme_but_valid_inputs_stay_finite():
    r = RNADE(2, 3).double()
    assert torch.isfinite(r.log_prob(torch.tensor([[1e3, -1e3]], dtype=torch.float64))).all()
    assert torch.isfinite(bernoulli_log_prob(torch.tensor([[1e300, -1e300]], dtype=torch.float64),
                                             torch.tensor([[1.0, 0.0]], dtype=torch.float64))).all()


def test_smallest_valid_sizes_are_accepted_and_the_next_smaller_rejected():
    ok = [lambda: FVSBN(1), lambda: NADE(1, 1), lambda: MADE(2, [1]), lambda: made_masks(2, [1]),
          lambda: RNADE(1, 1, K=1), lambda: OrderlessNADE(1, 1, layers=1), lambda: PixelCNN(1, 2, hidden=1, layers=1),
          lambda: GatedPixelCNN(2, hidden=1, layers=1, kernel=3), lambda: RowLSTM(2, hidden=1, kernel=3),
          lambda: WaveNet(levels=2, residual=1, dilations=[1], kernel=2), lambda: TabularAR(1)]
    for make in ok:
        make()
    bad = [(lambda: FVSBN(0), "^n:"), (lambda: OrderlessNADE(0, 1), "^D:"), (lambda: OrderlessNADE(1, 0), "^H:"),
           (lambda: OrderlessNADE(1, 1, layers=0), "^layers:"), (lambda: made_masks(2, [0]), "^hidden:"),
           (lambda: GatedPixelCNN(1), "^levels:"), (lambda: GatedPixelCNN(2, hidden=0), "^hidden:"),
           (lambda: GatedPixelCNN(2, layers=0), "^layers:"), (lambda: GatedPixelCNN(2, kernel=1), "^kernel:"),
           (lambda: RowLSTM(1), "^levels:"), (lambda: RowLSTM(2, hidden=0), "^hidden:"), (lambda: RowLSTM(2, kernel=1), "^kernel:"),
           (lambda: RowLSTM(2, kernel=4), "^kernel:"), (lambda: WaveNet(levels=1), "^levels:"),
           (lambda: WaveNet(residual=0), "^residual:"), (lambda: WaveNet(kernel=1), "^kernel:"),
           (lambda: RNADE(0, 1), "^D:"), (lambda: RNADE(1, 0), "^H:")]
    for make, msg in bad:
        with pytest.raises(ValueError, match=msg):
            make()
    x = torch.zeros(1, 3)
    for fn, exc, msg in [(lambda: MADE(3, [4])(torch.zeros(1, 4)), ValueError, "^x:"),
                         (lambda: MADE(3, [4]).log_prob(torch.full((1, 3), 0.5)), ValueError, "^x:"),
                         (lambda: OrderlessNADE(3, 4).conditional_logits(x, torch.zeros(1, 4)), ValueError, "^m:"),
                         (lambda: OrderlessNADE(3, 4).conditional_logits(x, torch.zeros(1, 3, dtype=torch.float64)), TypeError, "^m:"),
                         (lambda: OrderlessNADE(3, 4).conditional_logits(torch.zeros(1, 4), torch.zeros(1, 4)), ValueError, "^x:"),
                         (lambda: OrderlessNADE(3, 4).log_prob(torch.zeros(1, 4), torch.arange(4)), ValueError, "^x:"),
                         (lambda: GatedPixelCNN(2).logits_from_onehot(torch.zeros(1, 3, 2, 2)), ValueError, "^h:"),
                         (lambda: WaveNet(levels=2).logits_from_onehot(torch.zeros(1, 3, 4)), ValueError, "^h:"),
                         (lambda: WaveNet(levels=2)(torch.zeros(1, 2, 3, dtype=torch.long)), ValueError, "^x:"),
                         (lambda: WaveNet(levels=2)(torch.zeros(1, 3)), TypeError, "^x:"),
                         (lambda: PixelCNN(1, 2)(torch.zeros(1, 2, 2, 2, dtype=torch.long)), ValueError, "^x:"),
                         (lambda: FVSBN(3).log_prob(torch.zeros(1, 4)), ValueError, "^x:")]:
        with pytest.raises(exc, match=msg):
            fn()


def test_gated_stack_with_a_5x5_kernel_is_causal_without_a_blind_spot():
    torch.manual_seed(11)
    model = GatedPixelCNN(2, hidden=4, layers=2, kernel=5).double()
    H = W = 6
    h = torch.zeros(1, 2, H, W, dtype=torch.float64)
    i, j = 3, 2
    J = jacobian(lambda v: model.logits_from_onehot(v)[0, 0, :, i, j].sum(), h)[0].abs().sum(0)  # (H, W)
    before = torch.zeros(H, W, dtype=torch.bool)
    before[:i] = True
    before[i, :j] = True
    assert (J[~before] == 0).all()
    # every pixel of the causal rectangle within the receptive field: rows i-4..i-1, columns j-4..j+4
    # (two layers of radius 2), and the row to the left
    assert (J[i - 1, :] > 0).all() and (J[i, :j] > 0).all()
