"""Vanilla RNN, backpropagation through time from the notes' decomposition, truncated BPTT and
gradient clipping (notes: "RNN" and Proofs "BPTT", "BPTT divergence").

Shapes: x: (T, B, D) inputs x_1..x_T, h0: (B, H), W_hh: (H, H), W_xh: (H, D), W_hy: (O, H).
Jacobians are in numerator layout, as autograd builds them: J[b, i, j] = d h_t[b, i] / d h_k[b, j].
"""

from __future__ import annotations

import torch

from impl._checks import check_float, check_int, check_same, check_tensor


def _check_rnn(x, h0, W_hh, W_xh, W_hy=None):
    check_tensor(x, "x", ndim=3)
    T, B, D = x.shape
    if T == 0:
        raise ValueError(f"x: expected at least one time step, got shape {tuple(x.shape)}")
    check_tensor(W_hh, "W_hh", ndim=2)
    H = W_hh.shape[0]
    check_tensor(W_hh, "W_hh", shape=(H, H))
    check_tensor(W_xh, "W_xh", shape=(H, D))
    check_tensor(h0, "h0", shape=(B, H))
    check_same(x, "x", h0=h0, W_hh=W_hh, W_xh=W_xh)
    if W_hy is not None:
        check_tensor(W_hy, "W_hy", ndim=2, shape=(None, H))
        check_same(x, "x", W_hy=W_hy)


def rnn_forward(x, h0, W_hh, W_xh, W_hy):
    """h_t = tanh(W_hh h_{t-1} + W_xh x_t), y_hat_t = W_hy h_t.

    Returns (hs: (T, B, H) = h_1..h_T, ys: (T, B, O)).
    """
    _check_rnn(x, h0, W_hh, W_xh, W_hy)
    hs, h = [], h0
    xw = x @ W_xh.T  # all input projections at once; only the recurrence is sequential
    for t in range(x.shape[0]):
        h = torch.tanh(h @ W_hh.T + xw[t])
        hs.append(h)
    hs = torch.stack(hs)
    return hs, hs @ W_hy.T


def step_jacobian(h_t: torch.Tensor, W_hh: torch.Tensor) -> torch.Tensor:
    """d h_t / d h_{t-1} = diag(f'(a_t)) W_hh with f'(a_t) = 1 - h_t^2 for tanh, a_t = W_hh h_{t-1} + W_xh x_t.

    h_t: (B, H) -> (B, H, H). (The notes' W_hh^T diag f'(.) is this matrix's transpose: the
    denominator layout, in which products run from step k + 1 on the left to step t on the right.)
    """
    check_tensor(h_t, "h_t", ndim=2)
    check_tensor(W_hh, "W_hh", shape=(h_t.shape[1], h_t.shape[1]))
    check_same(h_t, "h_t", W_hh=W_hh)
    return (1 - h_t**2).unsqueeze(-1) * W_hh


def jacobian_product(hs: torch.Tensor, W_hh: torch.Tensor, t: int, k: int) -> torch.Tensor:
    """d h_t / d h_k = prod_{i = k+1}^t d h_i / d h_{i-1} (step t leftmost), for 0 <= k <= t <= T.

    hs: (T, B, H) from rnn_forward (h_1..h_T; h_0 is only needed as the value at k = 0, which the
    Jacobians do not use). Returns (B, H, H); the identity when k = t.
    """
    check_tensor(hs, "hs", ndim=3)
    T, B, H = hs.shape
    check_int(t, "t", min=0, max=T)
    check_int(k, "k", min=0, max=t)
    check_tensor(W_hh, "W_hh", shape=(H, H))  # also when k = t, where no step Jacobian checks it
    check_same(hs, "hs", W_hh=W_hh)
    J = torch.eye(H, dtype=hs.dtype, device=hs.device).expand(B, H, H)
    for i in range(k + 1, t + 1):
        J = step_jacobian(hs[i - 1], W_hh) @ J
    return J


def jacobian_norms(hs: torch.Tensor, W_hh: torch.Tensor, t: int) -> torch.Tensor:
    """Spectral norms ||d h_t / d h_k|| for k = t, t-1, ..., 0. hs: (T, B, H) -> (t + 1, B)."""
    check_tensor(hs, "hs", ndim=3)
    check_int(t, "t", min=0, max=hs.shape[0])
    H = hs.shape[2]
    check_tensor(W_hh, "W_hh", shape=(H, H))  # also when t = 0, where no step Jacobian checks it
    check_same(hs, "hs", W_hh=W_hh)
    J = torch.eye(H, dtype=hs.dtype, device=hs.device).expand(hs.shape[1], H, H)
    norms = [torch.linalg.matrix_norm(J, ord=2)]
    for i in range(t, 0, -1):  # J = d h_t / d h_{i-1}
        J = J @ step_jacobian(hs[i - 1], W_hh)
        norms.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(norms)


def bptt_notes(x, h0, W_hh, W_xh, W_hy, dL_dy, kappa: int | None = None):
    """dL/dW = sum_t dL_t/dy_t dy_t/dh_t sum_{k} dh_t/dh_k d+h_k/dW, literally as the BPTT proof writes it.

    The inner sum runs over k = 1..t, or over the last kappa steps k = t-kappa+1..t (truncated BPTT).
    d+h_k/dW is the immediate derivative of h_k = tanh(W_hh h_{k-1} + W_xh x_k) with h_{k-1} held fixed.
    dL_dy: (T, B, O) = dL_t/dy_hat_t for each t. Costs O(T^2) Jacobian-vector products (the double
    sum); ``bptt`` below is the O(T) sweep. Returns (dW_hh, dW_xh, dW_hy, dL/dh0).
    """
    _check_rnn(x, h0, W_hh, W_xh, W_hy)
    T = x.shape[0]
    check_tensor(dL_dy, "dL_dy", shape=(T, x.shape[1], W_hy.shape[0]))
    check_same(x, "x", dL_dy=dL_dy)
    if kappa is not None:
        check_int(kappa, "kappa", min=1)
    with torch.no_grad():
        hs, _ = rnn_forward(x, h0, W_hh, W_xh, W_hy)
        prev = torch.cat([h0[None], hs[:-1]])  # h_{k-1} for k = 1..T
        dW_hh, dW_xh = torch.zeros_like(W_hh), torch.zeros_like(W_xh)
        dW_hy = torch.einsum("tbo,tbh->oh", dL_dy, hs)
        dh0 = torch.zeros_like(h0)
        for t in range(T):
            e = dL_dy[t] @ W_hy  # dL_t/dh_t: (B, H), a row vector per batch element
            first = 0 if kappa is None else max(0, t - kappa + 1)
            for k in range(t, first - 1, -1):  # e = dL_t/dh_t . dh_t/dh_k
                ea = e * (1 - hs[k] ** 2)  # through tanh: d+h_k/da_k
                dW_hh += ea.T @ prev[k]
                dW_xh += ea.T @ x[k]
                e = ea @ W_hh  # dh_k/dh_{k-1}
            if first == 0:
                dh0 += e
    return dW_hh, dW_xh, dW_hy, dh0


def bptt(x, h0, W_hh, W_xh, W_hy, dL_dy):
    """Full BPTT in one backward sweep (the double sum regrouped): O(T). Same returns as bptt_notes."""
    _check_rnn(x, h0, W_hh, W_xh, W_hy)
    T = x.shape[0]
    check_tensor(dL_dy, "dL_dy", shape=(T, x.shape[1], W_hy.shape[0]))
    check_same(x, "x", dL_dy=dL_dy)
    with torch.no_grad():
        hs, _ = rnn_forward(x, h0, W_hh, W_xh, W_hy)
        prev = torch.cat([h0[None], hs[:-1]])
        ea = (dL_dy @ W_hy)  # direct terms dL_t/dh_t, summed with the recurrent ones below
        e = torch.zeros_like(h0)
        eas = []
        for t in range(T - 1, -1, -1):
            e = (e + ea[t]) * (1 - hs[t] ** 2)
            eas.append(e)
            e = e @ W_hh
        eas = torch.stack(eas[::-1])
        return (torch.einsum("tbi,tbj->ij", eas, prev), torch.einsum("tbi,tbj->ij", eas, x),
                torch.einsum("tbo,tbh->oh", dL_dy, hs), e)


def clip_notes(grad: torch.Tensor, threshold: float) -> torch.Tensor:
    """threshold / ||grad|| * grad, exactly as the notes write it (applied whatever the norm). grad: any shape.

    The formula divides by ||grad||: a zero gradient has no direction to rescale, so it is refused
    (one host read of the norm; use :func:`clip_gradient_norm` in a training loop).
    """
    check_tensor(grad, "grad")
    threshold = check_float(threshold, "threshold", min=0, min_open=True)
    norm = torch.linalg.vector_norm(grad)
    if not bool(norm > 0):
        raise ValueError("grad: has norm 0 (or NaN), and threshold / ||grad|| * grad is undefined there")
    return grad * (threshold / norm)


def clip_gradient_norm(grads, threshold: float):
    """Clipping by global norm: grads * min(1, threshold / ||grads||), ||.|| over all tensors together.

    grads: a tensor or a list of tensors (any shapes). Returns the same structure, new tensors.
    """
    threshold = check_float(threshold, "threshold", min=0, min_open=True)
    single = isinstance(grads, torch.Tensor)
    gs = [grads] if single else list(grads)
    if not gs:
        raise ValueError("grads: expected at least one tensor")
    for i, g in enumerate(gs):
        check_tensor(g, f"grads[{i}]")
        check_same(gs[0], "grads[0]", **{f"grads[{i}]": g})
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs]))
    # clamp instead of a branch: no host sync, and 0-norm gradients stay 0
    scale = torch.clamp(threshold / norm, max=1.0)
    out = [g * scale for g in gs]
    return out[0] if single else out
