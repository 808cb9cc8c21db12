"""RNN section: the vanilla RNN against torch.nn.RNN, the Jacobian product, the linear-RNN power and
eigen statements, truncated BPTT, gradient clipping, and the divergence statements of the Proofs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl import rnn
from spec.testing import generator, seeds, tol


def _net(seed, T=6, B=2, D=3, H=4, O=2, scale=1.0, dtype=torch.float64, device="cpu"):
    g = generator(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    W_hh = mk(H, H)
    W_hh = scale * W_hh / torch.linalg.matrix_norm(W_hh, ord=2)  # largest singular value = scale
    out = (mk(T, B, D), mk(B, H) * 0.5, W_hh, mk(H, D) * 0.5, mk(O, H))
    return [t.to(device, dtype) for t in out]


def _roll(h, x, W_hh, W_xh, k, t):
    """h_t as a function of h_k (steps k+1..t); x: (T, B, D) holds x_1..x_T at indices 0..T-1."""
    for i in range(k + 1, t + 1):
        h = torch.tanh(h @ W_hh.T + x[i - 1] @ W_xh.T)
    return h


def _autograd_jacobian(x, h0, W_hh, W_xh, k, t):
    """d h_t / d h_k by autograd for batch element 0: (H, H)."""
    hs, _ = rnn.rnn_forward(x, h0, W_hh, W_xh, torch.zeros(1, W_hh.shape[0], dtype=x.dtype))
    hk = h0[:1] if k == 0 else hs[k - 1, :1]
    J = torch.autograd.functional.jacobian(lambda h: _roll(h, x[:, :1], W_hh, W_xh, k, t), hk)
    return J[0, :, 0, :], hs


@pytest.mark.claim("rnn.vanilla")
def test_rnn_matches_torch(device, dtype):
    x, h0, W_hh, W_xh, W_hy = _net(0, T=12, B=3, dtype=dtype, device=device)
    ref = torch.nn.RNN(3, 4, nonlinearity="tanh", bias=False).to(device, dtype)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(W_xh)
        ref.weight_hh_l0.copy_(W_hh)
        out, hT = ref(x, h0[None])
    hs, ys = rnn.rnn_forward(x, h0, W_hh, W_xh, W_hy)
    # float32: 12 steps of a contraction (||W_hh|| = 1, tanh' <= 1) do not amplify rounding: tol(float32)
    torch.testing.assert_close(hs, out, **tol(dtype))
    torch.testing.assert_close(ys, out @ W_hy.T, **tol(dtype))


@pytest.mark.claim("rnn.bptt-sum")
def test_total_gradient_is_sum_over_time():
    x, h0, W_hh, W_xh, W_hy = _net(1)
    W = W_hh.clone().requires_grad_(True)
    _, ys = rnn.rnn_forward(x, h0, W, W_xh, W_hy)
    Lt = (ys**2).sum((1, 2))  # L_t
    (total,) = torch.autograd.grad(Lt.sum(), W, retain_graph=True)
    parts = sum(torch.autograd.grad(Lt[t], W, retain_graph=True)[0] for t in range(len(Lt)))
    torch.testing.assert_close(total, parts)
    # the notes' BPTT (sum over t of each L_t's gradient) and the O(T) sweep give that same sum;
    # dL_t/dy_hat_t = 2 y_hat_t for L_t = ||y_hat_t||^2
    dy = 2 * ys.detach()
    for got in (rnn.bptt_notes(x, h0, W_hh, W_xh, W_hy, dy), rnn.bptt(x, h0, W_hh, W_xh, W_hy, dy)):
        torch.testing.assert_close(got[0], parts)


@pytest.mark.claim("rnn.jacobian-product", role="refutes")
def test_jacobian_with_f_prime_of_previous_state_is_wrong(record_property):
    x, h0, W_hh, W_xh, _ = _net(2, scale=1.5)
    k, t = 1, 5
    J, hs = _autograd_jacobian(x, h0, W_hh, W_xh, k, t)
    allh = torch.cat([h0[None], hs])[:, 0]  # h_0..h_T of batch element 0
    prod = torch.eye(4, dtype=torch.float64)
    for i in range(k + 1, t + 1):  # as written: W_hh^T diag f'(h_{i-1}), i = k+1 leftmost
        prod = prod @ (W_hh.T @ torch.diag(1 - torch.tanh(allh[i - 1]) ** 2))
    err = (prod - J.T).abs().max().item()
    assert err > 1e-2
    record_property("evidence", f"max |notes' product - autograd dh_5/dh_1 (transposed)| = {err:.3g}")


@pytest.mark.claim("rnn.jacobian-product", role="corrects")
@settings(max_examples=10)
@given(seed=seeds(), k=st.integers(0, 5), span=st.integers(0, 4))
def test_jacobian_with_f_prime_of_preactivation(seed, k, span):
    t = min(6, k + span)
    x, h0, W_hh, W_xh, _ = _net(seed, scale=1.3)
    J, hs = _autograd_jacobian(x, h0, W_hh, W_xh, k, t)
    allh = torch.cat([h0[None], hs])[:, 0]
    prod = torch.eye(4, dtype=torch.float64)
    for i in range(k + 1, t + 1):  # denominator layout: W_hh^T diag f'(a_i), f'(a_i) = 1 - h_i^2
        prod = prod @ (W_hh.T @ torch.diag(1 - allh[i] ** 2))
    torch.testing.assert_close(prod, J.T)
    torch.testing.assert_close(rnn.jacobian_product(hs, W_hh, t, k)[0], J)  # numerator layout


@pytest.mark.claim("rnn.linear-power", role="refutes")
def test_linear_power_off_by_one():
    W = torch.tensor([[0.5, 1.0], [0.0, 2.0]], dtype=torch.float64)
    h1 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # h_1 = W^1 h_1 would require h_1 to be a fixed point of W
    assert not torch.allclose(torch.linalg.matrix_power(W, 1) @ h1, h1)


@pytest.mark.claim("rnn.linear-power", role="corrects")
def test_linear_power_corrected():
    g = generator(4)
    W = torch.randn(3, 3, generator=g, dtype=torch.float64)
    hs = [torch.randn(3, generator=g, dtype=torch.float64)]  # h_1
    for _ in range(6):
        hs.append(W @ hs[-1])
    for t in range(1, 8):
        torch.testing.assert_close(hs[t - 1], torch.linalg.matrix_power(W, t - 1) @ hs[0])


@pytest.mark.claim("rnn.eigendecomposition", role="refutes")
def test_diagonalizable_but_not_orthogonally(record_property):
    W = torch.tensor([[1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    lam, Q = torch.linalg.eig(W)
    assert len(set(lam.real.tolist())) == 2  # distinct eigenvalues: diagonalizable
    Q = Q.real
    cos = (Q[:, 0] @ Q[:, 1]).abs().item() / (Q[:, 0].norm() * Q[:, 1].norm()).item()
    assert cos > 0.5  # eigenvectors at 45 degrees, so no orthogonal eigenbasis exists
    # any Q diag(lambda) Q^T is symmetric, W is not
    assert not torch.equal(W, W.T)
    record_property("evidence", f"W=[[1,1],[0,2]]: |cos| between eigenvectors {cos:.3f}; W != W^T")


@pytest.mark.claim("rnn.eigendecomposition", role="corrects")
@settings(max_examples=10)
@given(seed=seeds(), t=st.integers(0, 8))
def test_eigendecomposition_powers(seed, t):
    g = generator(seed)
    Q = torch.randn(3, 3, generator=g, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    lam = torch.tensor([1.2, -0.7, 0.3], dtype=torch.float64)
    W = Q @ torch.diag(lam) @ torch.linalg.inv(Q)
    torch.testing.assert_close(torch.linalg.matrix_power(W, t), Q @ torch.diag(lam**t) @ torch.linalg.inv(Q), rtol=1e-8, atol=1e-10)
    S = W + W.T  # symmetric: orthogonal eigenbasis, Q^{-1} = Q^T
    ls, Qs = torch.linalg.eigh(S)
    torch.testing.assert_close(Qs @ Qs.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.matrix_power(S, t), Qs @ torch.diag(ls**t) @ Qs.T, rtol=1e-8, atol=1e-8)


def _direction(h):
    return h / h.norm()


@pytest.mark.claim("rnn.dominant-eigenvector", role="refutes")
def test_no_alignment_without_a_unique_dominant_eigenvalue(record_property):
    W = torch.diag(torch.tensor([2.0, -2.0], dtype=torch.float64))
    h = torch.tensor([1.0, 1.0], dtype=torch.float64)
    dirs = [_direction(torch.linalg.matrix_power(W, t) @ h) for t in range(20, 24)]
    assert (dirs[0] @ dirs[1]).abs().item() < 1e-12  # consecutive directions orthogonal, forever
    torch.testing.assert_close(dirs[0], dirs[2])
    # and no component along the dominant eigenvector: h stays on the other one
    W2 = torch.diag(torch.tensor([3.0, 0.5], dtype=torch.float64))
    h2 = torch.linalg.matrix_power(W2, 30) @ torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert h2[0].item() == 0.0
    record_property("evidence", "W=diag(2,-2), h1=(1,1): W^t h1 alternates between (1,1) and (1,-1) directions")


@pytest.mark.claim("rnn.dominant-eigenvector", role="corrects")
@settings(max_examples=10)
@given(seed=seeds())
def test_alignment_with_unique_dominant_eigenvalue(seed):
    g = generator(seed)
    Q = torch.randn(3, 3, generator=g, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    lam = torch.tensor([-1.5, 1.0, 0.5], dtype=torch.float64)  # |lambda_1| > |lambda_2|, negative: sign flips
    W = Q @ torch.diag(lam) @ torch.linalg.inv(Q)
    h1 = torch.randn(3, generator=g, dtype=torch.float64)
    c = torch.linalg.solve(Q, h1)  # coefficients in the eigenbasis
    q1 = _direction(Q[:, 0])
    h = h1
    for t in range(1, 40):
        h = W @ h
        d = _direction(h)
        sin = (d - (d @ q1) * q1).norm()  # not sqrt(1 - cos^2), which loses half the digits
        # |sin| <= ||sum_{j>1} c_j lambda_j^t q_j|| / (|c_1| |lambda_1|^t ||q_1||) <= C (2/3)^t
        C = (c[1:].abs() * Q[:, 1:].norm(dim=0)).sum() / (c[0].abs() * Q[:, 0].norm())
        assert sin.item() <= C.item() * (1.0 / 1.5) ** t + 1e-13


@pytest.mark.claim("rnn.long-term-vanish")
@settings(max_examples=10)
@given(seed=seeds(), rho=st.floats(0.3, 0.95))
def test_long_term_contributions_vanish(seed, rho):
    g = generator(seed)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    S = A + A.T
    S = rho * S / torch.linalg.eigvalsh(S).abs().max()  # symmetric, spectral radius rho
    # linear regime (h = 0, f' = 1): ||dh_t/dh_k|| = ||S^{t-k}|| = rho^{t-k} exactly
    norms = rnn.jacobian_norms(torch.zeros(12, 1, 4, dtype=torch.float64), S, 12)[:, 0]
    torch.testing.assert_close(norms, rho ** torch.arange(13, dtype=torch.float64))
    # with tanh and inputs, the norms stay below rho^{t-k}: distant steps contribute geometrically less
    x, h0, _, W_xh, _ = _net(seed, T=12, B=1)
    hs, _ = rnn.rnn_forward(x, h0, S, W_xh, torch.zeros(1, 4, dtype=torch.float64))
    nt = rnn.jacobian_norms(hs, S, 12)[:, 0]
    assert bool((nt <= rho ** torch.arange(13, dtype=torch.float64) * (1 + 1e-12)).all())


@pytest.mark.claim("rnn.long-term-vanish")
def test_long_term_vanish_rests_on_the_symmetric_w(record_property):
    # The statement carries the notes' W = Q Lambda Q^T (Q orthogonal): for a symmetric W,
    # ||diag f' W|| <= ||W|| = rho bounds every factor. The spectral radius alone does not: this
    # non-normal W has rho = 1/sqrt(2), yet inputs that keep h[0] at 0 and saturate h[1] make each
    # factor diag(1, ~0) W, whose eigenvalue 1.5 = W[0, 0] makes the product grow like 1.5^(t-k).
    W = torch.tensor([[1.5, 1.0], [-2.0, -1.0]], dtype=torch.float64)
    rho = torch.linalg.eigvals(W).abs().max().item()
    assert abs(rho - 2 ** -0.5) < 1e-12
    T, h, xs = 30, torch.zeros(1, 2, dtype=torch.float64), []
    for _ in range(T):  # the input that puts the pre-activation at (0, 10)
        xs.append(torch.tensor([[0.0, 10.0]], dtype=torch.float64) - h @ W.T)
        h = torch.tanh(h @ W.T + xs[-1])
    x = torch.stack(xs)
    hs, _ = rnn.rnn_forward(x, torch.zeros(1, 2, dtype=torch.float64), W, torch.eye(2, dtype=torch.float64),
                            torch.zeros(1, 2, dtype=torch.float64))
    grows = rnn.jacobian_norms(hs, W, T)[:, 0]
    assert grows[-1].item() > 1.4 ** T  # explodes although rho < 1
    # the same inputs with the symmetric W of the same spectral radius: the bound rho^{t-k} holds
    S = (W + W.T) / 2
    S = rho * S / torch.linalg.eigvalsh(S).abs().max()
    hs_s, _ = rnn.rnn_forward(x, torch.zeros(1, 2, dtype=torch.float64), S, torch.eye(2, dtype=torch.float64),
                              torch.zeros(1, 2, dtype=torch.float64))
    bound = rho ** torch.arange(T + 1, dtype=torch.float64)
    assert bool((rnn.jacobian_norms(hs_s, S, T)[:, 0] <= bound * (1 + 1e-12)).all())
    record_property("evidence", f"symmetric W, rho = {rho:.3f}: ||dh_t/dh_k|| <= rho^(t-k); a non-normal W with the same "
                                f"rho and saturating inputs: ||dh_30/dh_0|| = {grows[-1].item():.2e}")


@pytest.mark.claim("rnn.long-term-vanish", "rnn.bptt-vanishing")
def test_jacobian_norms_match_autograd():
    # jacobian_norms(hs, W, t)[j] = ||dh_t/dh_{t-j}||_2, against autograd's Jacobians of the unrolled map
    x, h0, W_hh, W_xh, _ = _net(7, T=6, B=1, scale=1.4)
    t = 6
    _, hs = _autograd_jacobian(x, h0, W_hh, W_xh, 0, 0)
    norms = rnn.jacobian_norms(hs, W_hh, t)[:, 0]
    for k in range(t + 1):
        J, _ = _autograd_jacobian(x, h0, W_hh, W_xh, k, t)
        torch.testing.assert_close(norms[t - k], torch.linalg.matrix_norm(J, ord=2))
    # a batch of 3 sequences of width 4: each column is that sequence's own chain
    hs3 = torch.tanh(torch.randn(6, 3, W_hh.shape[0], generator=generator(8), dtype=torch.float64))
    batched = rnn.jacobian_norms(hs3, W_hh, t)
    assert batched.shape == (t + 1, 3)
    for b in range(3):
        torch.testing.assert_close(batched[:, b], rnn.jacobian_norms(hs3[:, b:b + 1], W_hh, t)[:, 0])


@pytest.mark.claim("rnn.truncated-bptt")
@pytest.mark.parametrize("kappa", [1, 2, 4, 6, 9])
def test_truncated_bptt_matches_detached_autograd(kappa):
    x, h0, W_hh, W_xh, W_hy = _net(5, T=6)
    T = x.shape[0]
    dy = torch.randn(T, 2, 2, dtype=torch.float64, generator=generator(6))
    Wh, Wx = W_hh.clone().requires_grad_(True), W_xh.clone().requires_grad_(True)
    h0r = h0.clone().requires_grad_(True)
    gh, gx, g0 = torch.zeros_like(W_hh), torch.zeros_like(W_xh), torch.zeros_like(h0)
    for t in range(T):  # L_t = <dy_t, y_t>, the graph cut kappa steps back from step t
        h = h0r
        for i in range(t + 1):
            if i == t - kappa + 1 and i > 0:  # a window reaching back to step 1 keeps its path to h_0
                h = h.detach()
            h = torch.tanh(h @ Wh.T + x[i] @ Wx.T)
        a, b, c = torch.autograd.grad((dy[t] * (h @ W_hy.T)).sum(), (Wh, Wx, h0r), materialize_grads=True)
        gh, gx, g0 = gh + a, gx + b, g0 + c
    dW_hh, dW_xh, _, dh0 = rnn.bptt_notes(x, h0, W_hh, W_xh, W_hy, dy, kappa=kappa)
    torch.testing.assert_close(dW_hh, gh)
    torch.testing.assert_close(dW_xh, gx)
    torch.testing.assert_close(dh0, g0)  # only losses L_t with t <= kappa reach h_0
    if kappa >= T:  # the full sum
        full = rnn.bptt_notes(x, h0, W_hh, W_xh, W_hy, dy)
        torch.testing.assert_close(dW_hh, full[0])


@pytest.mark.claim("rnn.gradient-clipping", role="refutes")
def test_clipping_as_written_enlarges_small_gradients(record_property):
    g = torch.tensor([0.06, 0.08], dtype=torch.float64)  # norm 0.1
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_([p], max_norm=1.0)
    notes = rnn.clip_notes(g, 1.0)
    assert abs(notes.norm().item() - 1.0) < 1e-12 and torch.equal(p.grad, g)
    record_property("evidence", "||g|| = 0.1, threshold 1: threshold/||g|| g has norm 1 (10x larger); clip_grad_norm_ leaves g unchanged")


@pytest.mark.claim("rnn.gradient-clipping", role="corrects")
@settings(max_examples=10)
@given(seed=seeds(), scale=st.sampled_from([1e-3, 0.5, 1.0, 3.0, 1e6]), threshold=st.floats(0.1, 10))
def test_clipping_matches_torch(seed, scale, threshold):
    g = generator(seed)
    grads = [torch.randn(3, 4, generator=g, dtype=torch.float64) * scale, torch.randn(5, generator=g, dtype=torch.float64) * scale]
    ps = [torch.zeros_like(t, requires_grad=True) for t in grads]
    for p, t in zip(ps, grads):
        p.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(ps, max_norm=threshold)
    out = rnn.clip_gradient_norm(grads, threshold)
    norm = torch.sqrt(sum((t**2).sum() for t in grads))
    for o, p, t in zip(out, ps, grads):
        # torch divides by norm + 1e-6: a relative difference of at most 1e-6 / norm
        torch.testing.assert_close(o, p.grad, rtol=2e-6 / norm.item() + 1e-12, atol=0)
        torch.testing.assert_close(o / torch.sqrt(sum((q**2).sum() for q in out)), t / norm)  # direction kept
    new = torch.sqrt(sum((o**2).sum() for o in out))
    assert abs(new.item() - min(norm.item(), threshold)) <= 1e-12 * max(1.0, threshold)
    if norm > threshold:  # where clipping acts it is the notes' formula
        torch.testing.assert_close(out[1], rnn.clip_notes(torch.cat([t.flatten() for t in grads]), threshold)[12:])


@pytest.mark.claim("rnn.gradient-clipping", role="corrects")
def test_clipping_a_zero_gradient_leaves_it_zero():
    # torch leaves a zero gradient as it is; min(1, threshold / 0) = 1 must not become 0 * inf = NaN
    out = rnn.clip_gradient_norm([torch.zeros(3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)], 1.0)
    for o in out:
        assert torch.equal(o, torch.zeros_like(o))


@pytest.mark.claim("rnn.gradient-clipping", role="corrects")
def test_clipping_on_device(device):
    gs = [torch.full((10,), 3.0, device=device)]
    out = rnn.clip_gradient_norm(gs, 1.0)
    assert out[0].device == gs[0].device
    # float32: norm of 10 equal entries, rounding ~1e-7 relative
    torch.testing.assert_close(out[0].norm().cpu(), torch.tensor(1.0), rtol=1e-6, atol=0)
    # a single tensor in, a single tensor out: 10 entries of 3 rescaled to norm 1 are 1 / sqrt(10) each
    one = rnn.clip_gradient_norm(gs[0], 1.0)
    assert isinstance(one, torch.Tensor) and one.device == gs[0].device
    torch.testing.assert_close(one.cpu(), torch.full((10,), 10 ** -0.5), rtol=1e-6, atol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="grad"):
        rnn.clip_notes(torch.zeros(4), 1.0)  # threshold / ||0|| is undefined
    x, h0, W_hh, W_xh, W_hy = _net(0)
    with pytest.raises(ValueError, match="W_xh"):
        rnn.rnn_forward(x, h0, W_hh, W_xh.T, W_hy)
    with pytest.raises(ValueError, match="h0"):
        rnn.rnn_forward(x, h0[:1], W_hh, W_xh, W_hy)
    with pytest.raises(TypeError, match="W_hh"):
        rnn.rnn_forward(x, h0, W_hh.float(), W_xh, W_hy)
    with pytest.raises(ValueError, match="^W_hh:"):
        rnn.rnn_forward(x, h0, torch.zeros(W_hh.shape[0], W_hh.shape[0] + 1, dtype=torch.float64), W_xh, W_hy)
    with pytest.raises(ValueError, match="^W_hy:"):
        rnn.rnn_forward(x, h0, W_hh, W_xh, torch.zeros(2, W_hh.shape[0] + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="kappa"):
        rnn.bptt_notes(x, h0, W_hh, W_xh, W_hy, torch.zeros(6, 2, 2, dtype=torch.float64), kappa=0)
    with pytest.raises(ValueError, match="dL_dy"):
        rnn.bptt(x, h0, W_hh, W_xh, W_hy, torch.zeros(5, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="threshold"):
        rnn.clip_gradient_norm([torch.ones(2)], 0.0)
    with pytest.raises(ValueError, match="grads"):
        rnn.clip_gradient_norm([], 1.0)
    with pytest.raises(ValueError, match="k"):
        rnn.jacobian_product(torch.zeros(3, 1, 2), torch.eye(2), 1, 2)
    with pytest.raises(TypeError, match="grad"):
        rnn.clip_notes([1.0], 1.0)
