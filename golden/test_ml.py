"""Golden outputs of the ML section: the MLP forward pass and the notes' delta-recursion backward
pass for each activation, the softmax Jacobian, cross-entropies, the perceptron's weights and update
count on fixed separable data, and the ReLU interpolant of sin.

Inputs from numpy's legacy RandomState (frozen stream). Every float64 output is checked against an
independent computation (autograd, torch.func.jacrev, F.cross_entropy) before the comparison with
the stored file (1e-12); float32 on every device with the tolerance stated beside the assertion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from impl import ml

pytestmark = pytest.mark.golden

F64 = torch.float64
GOLD_TOL = dict(atol=1e-12, rtol=1e-10)


def _outputs(device=torch.device("cpu"), dtype=F64) -> dict[str, torch.Tensor]:
    rs = np.random.RandomState(2024)
    to = dict(device=device, dtype=dtype)
    arr = lambda *s: torch.from_numpy(rs.standard_normal(s)).to(**to)  # noqa: E731
    out = {}
    x = arr(5, 3)
    Ws = [arr(4, 3) * 0.7, arr(2, 4) * 0.7]
    bs = [arr(4) * 0.1, arr(2) * 0.1]
    dL = arr(5, 2)
    for act in ("tanh", "sigmoid", "relu"):
        zs, as_ = ml.mlp_forward(x, Ws, bs, act)
        dWs, dbs, dx = ml.mlp_backward(dL, zs, as_, Ws, act)
        out[f"mlp_{act}_out"] = zs[-1]
        out[f"mlp_{act}_dW0"], out[f"mlp_{act}_db0"], out[f"mlp_{act}_dx"] = dWs[0], dbs[0], dx
    logits = arr(4, 5) * 2
    y = F.one_hot(torch.from_numpy(rs.randint(0, 5, 4)), 5).to(**to)
    out["softmax_jacobian"] = ml.softmax_jacobian(logits)
    out["categorical_ce"] = ml.categorical_cross_entropy(logits, y)
    out["softmax_ce_grad"] = ml.softmax_cross_entropy_grad(logits, y)
    p = torch.softmax(arr(3, 4), -1)
    q = torch.softmax(arr(3, 4), -1)
    out["kl"] = ml.kl_divergence(p, q)
    out["cross_entropy"] = ml.cross_entropy(p, q)
    knots = torch.linspace(-3, 3, 7, **to)
    w1, b1, w2, b2 = ml.relu_interpolant(knots, torch.sin(knots))
    out["relu_interpolant_w2"] = w2
    out["relu_interpolant_values"] = ml.one_hidden_layer(torch.linspace(-3, 3, 13, **to), w1, b1, w2, b2, torch.relu)
    return out


def _perceptron():
    rs = np.random.RandomState(7)
    X = torch.from_numpy(rs.uniform(-1, 1, (40, 2)))
    y = torch.where(X[:, 0] + 0.5 * X[:, 1] > 0.1, 1.0, -1.0).double()
    w, updates, converged = ml.perceptron(X, y)
    return w, updates, converged, X, y


@pytest.mark.claim("ml.mlp-backward-inputs", "ml.mlp-backward-bias", "ml.softmax-cross-entropy-gradient",
                   "ml.cross-entropy-decomposition", "ml.perceptron-convergence")
def test_golden_ml_outputs_float64(ndarrays_regression):
    out = _outputs()
    for k, v in out.items():
        assert v.dtype == F64 and torch.isfinite(v).all(), k
    assert out["softmax_jacobian"].shape == (4, 5, 5) and out["mlp_tanh_dW0"].shape == (4, 3)
    # independent checks before the stored comparison
    rs = np.random.RandomState(2024)
    x = torch.from_numpy(rs.standard_normal((5, 3))).requires_grad_(True)
    Ws = [(torch.from_numpy(rs.standard_normal(s)) * 0.7).requires_grad_(True) for s in ((4, 3), (2, 4))]
    bs = [(torch.from_numpy(rs.standard_normal(s)) * 0.1).requires_grad_(True) for s in ((4,), (2,))]
    dL = torch.from_numpy(rs.standard_normal((5, 2)))
    for act, f in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("relu", torch.relu)):
        h = x
        for W, b in zip(Ws, bs):
            h = f(h @ W.T + b)
        gx, gW0, gb0 = torch.autograd.grad(h, (x, Ws[0], bs[0]), dL)
        assert_close(out[f"mlp_{act}_dx"], gx, rtol=1e-12, atol=1e-14)
        assert_close(out[f"mlp_{act}_dW0"], gW0, rtol=1e-12, atol=1e-14)
        assert_close(out[f"mlp_{act}_db0"], gb0, rtol=1e-12, atol=1e-14)
    logits = torch.from_numpy(rs.standard_normal((4, 5))) * 2
    labels = torch.from_numpy(rs.randint(0, 5, 4))
    assert_close(out["softmax_jacobian"], torch.vmap(torch.func.jacrev(lambda v: torch.softmax(v, -1)))(logits))
    assert_close(out["categorical_ce"], F.cross_entropy(logits, labels, reduction="none"))
    w, updates, converged, X, y = _perceptron()
    assert converged and bool((y * (X @ w[:2] + w[2]) > 0).all())
    store = {k: v.numpy() for k, v in out.items()}
    store["perceptron_w"] = w.numpy()
    store["perceptron_updates"] = np.array([updates], dtype=np.int64)
    ndarrays_regression.check(store, basename="ml_outputs", default_tolerance=GOLD_TOL)


@pytest.mark.claim("ml.mlp-backward-inputs", "ml.mlp-backward-bias", "ml.softmax-cross-entropy-gradient")
def test_golden_ml_outputs_float32_on_device(device):
    stored = np.load(f"{__file__.rsplit('/', 1)[0]}/data/ml_outputs.npz")
    out = _outputs(device, torch.float32)
    for k, v in out.items():
        assert v.device.type == torch.device(device).type and v.dtype == torch.float32, k
        # O(1) values through at most two layers of matmuls with 3-5 terms and elementwise maps
        # (|f'| <= 1): float32 rounding ~6e-8 per operation, a few 1e-7 in all. 1e-5 bounds it.
        assert_close(v.double().cpu(), torch.from_numpy(stored[k]), rtol=0, atol=1e-5, msg=k)
