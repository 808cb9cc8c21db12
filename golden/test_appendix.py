"""Golden outputs of the appendix's code: the Gaussian log-density and density, the matrix
determinant lemma and Bayes' posterior on fixed inputs, checked against torch.distributions,
torch.linalg.det and a direct computation before the comparison with the stored file (float64,
1e-12); float32 on every device with the tolerance stated beside the assertion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from impl import appendix

pytestmark = pytest.mark.golden

F64 = torch.float64
GOLD_TOL = dict(atol=1e-12, rtol=1e-10)


def _inputs(device, dtype):
    rs = np.random.RandomState(99)
    to = dict(device=device, dtype=dtype)
    M = torch.from_numpy(rs.standard_normal((3, 3, 3)))
    sigma = (M @ M.transpose(-1, -2) + 0.5 * torch.eye(3)).to(**to)
    x = torch.from_numpy(rs.standard_normal((3, 3))).to(**to)
    mu = torch.from_numpy(rs.standard_normal((3, 3))).to(**to)
    A = (torch.from_numpy(rs.standard_normal((2, 4, 4))) + 3 * torch.eye(4)).to(**to)
    u = torch.from_numpy(rs.standard_normal((2, 4))).to(**to)
    v = torch.from_numpy(rs.standard_normal((2, 4))).to(**to)
    lik = torch.softmax(torch.from_numpy(rs.standard_normal((3, 4))), -1).to(**to)
    prior = torch.softmax(torch.from_numpy(rs.standard_normal(3)), -1).to(**to)
    return sigma, x, mu, A, u, v, lik, prior


def _outputs(device=torch.device("cpu"), dtype=F64):
    sigma, x, mu, A, u, v, lik, prior = _inputs(device, dtype)
    return {"log_density": appendix.gaussian_log_density(x, mu, sigma),
            "density": appendix.gaussian_density(x, mu, sigma),
            "det_rank_one": appendix.det_rank_one_update(A, u, v),
            "posterior": appendix.bayes_posterior(lik, prior)}


@pytest.mark.claim("appendix.gaussian-density", "appendix.matrix-determinant-lemma", "appendix.bayes-rule")
def test_golden_appendix_float64(ndarrays_regression):
    out = _outputs()
    sigma, x, mu, A, u, v, lik, prior = _inputs("cpu", F64)
    shapes = dict(log_density=(3,), density=(3,), det_rank_one=(2,), posterior=(3, 4))
    for k, t in out.items():
        assert t.dtype == F64 and tuple(t.shape) == shapes[k], k
    ref = torch.distributions.MultivariateNormal(mu, covariance_matrix=sigma).log_prob(x)
    assert_close(out["log_density"], ref, rtol=1e-12, atol=1e-12)
    assert_close(out["density"], ref.exp(), rtol=1e-11, atol=0)
    assert_close(out["det_rank_one"], torch.linalg.det(A + u[..., :, None] * v[..., None, :]), rtol=1e-11, atol=1e-11)
    joint = lik * prior[:, None]
    assert_close(out["posterior"], joint / joint.sum(0), rtol=1e-14, atol=0)
    ndarrays_regression.check({k: t.numpy() for k, t in out.items()}, basename="appendix_outputs",
                              default_tolerance=GOLD_TOL)


@pytest.mark.claim("appendix.gaussian-density", "appendix.matrix-determinant-lemma", "appendix.bayes-rule")
def test_golden_appendix_float32_on_device(device):
    stored = np.load(f"{__file__.rsplit('/', 1)[0]}/data/appendix_outputs.npz")
    out = _outputs(device, torch.float32)
    for k, t in out.items():
        assert t.device.type == torch.device(device).type and t.dtype == torch.float32, k
        # 3x3 and 4x4 factorisations with condition numbers below ~100 (sigma >= 0.5 I, A near 3 I):
        # float32 relative error ~100 * 6e-8 = 6e-6 on each value; rtol 1e-4 bounds it with margin.
        assert_close(t.double().cpu(), torch.from_numpy(stored[k]), rtol=1e-4, atol=1e-6, msg=k)
