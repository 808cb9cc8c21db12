"""Edge cases and bad inputs of impl/appendix.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/appendix.py``: an input
check that names the wrong argument or lets a bad shape through, a batch axis summed or squeezed
in the wrong place. Expected values come from SciPy, ``torch.linalg`` or the definitions.
"""

import numpy as np
import pytest
import scipy.stats
import torch

from impl import appendix

F64 = torch.float64
GAUSS = [appendix.gaussian_log_density, appendix.gaussian_density]


def _spd(*batch, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(*batch, d, d, generator=g, dtype=F64)
    return M @ M.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=F64)


def _scipy_logpdf(x, mu, S):
    """Brute force: one scipy call per broadcast element."""
    batch = torch.broadcast_shapes(x.shape[:-1], mu.shape[:-1], S.shape[:-2])
    d = x.shape[-1]
    xb, mb, Sb = x.expand(*batch, d), mu.expand(*batch, d), S.expand(*batch, d, d)
    out = np.empty(batch)
    for idx in np.ndindex(*batch):
        out[idx] = scipy.stats.multivariate_normal(mb[idx].numpy(), Sb[idx].numpy()).logpdf(xb[idx].numpy())
    return torch.from_numpy(out)


def _check(fn, x, mu, S):
    ref = _scipy_logpdf(x, mu, S)
    out = fn(x, mu, S)
    if fn is appendix.gaussian_density:
        ref = ref.exp()
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


# ---- the Gaussian density: valid shapes ---------------------------------------------------------

@pytest.mark.parametrize("fn", GAUSS)
def test_gaussian_unbatched(fn):
    # x, mu: (d,), sigma: (d, d) -> a 0-d result (a sum or squeeze over dim +1 fails here)
    x = torch.tensor([0.3, -1.2, 0.5], dtype=F64)
    mu = torch.tensor([0.1, 0.0, -0.4], dtype=F64)
    _check(fn, x, mu, _spd(d=3))


@pytest.mark.parametrize("fn", GAUSS)
def test_gaussian_batched_sigma(fn):
    # a batch of covariances (B != d, so a scale without keepdim cannot broadcast by luck)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, generator=g, dtype=F64)
    _check(fn, x, torch.zeros(2, dtype=F64), _spd(3, seed=1))


@pytest.mark.parametrize("fn", GAUSS)
def test_gaussian_sigma_batch_over_single_x(fn):
    # one point, several covariances: sigma has more batch axes than x
    x = torch.tensor([0.7, -0.2], dtype=F64)
    _check(fn, x, torch.zeros(2, dtype=F64), _spd(3, seed=2))
    # the same number of axes, x's batch 1 broadcast against sigma's 3
    _check(fn, x[None], torch.zeros(2, dtype=F64), _spd(3, seed=2))


@pytest.mark.parametrize("fn", GAUSS)
def test_gaussian_two_batch_axes(fn):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 2, generator=g, dtype=F64)
    mu = torch.randn(2, generator=g, dtype=F64)
    _check(fn, x, mu, _spd(seed=3))


@pytest.mark.parametrize("fn", GAUSS)
def test_gaussian_mu_batch_over_single_x(fn):
    # several means, one point, one covariance: only mu carries the batch, so the result's batch
    # shape must come from mu's as well as x's and sigma's
    mu = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    _check(fn, torch.tensor([0.4, -0.6], dtype=F64), mu, _spd(seed=4))


def test_symmetry_tolerance_is_sqrt_eps_relative():
    eps = torch.finfo(F64).eps
    # an asymmetry of exactly sqrt(eps) (relative to the largest entry) is accepted: the check is <=
    S = torch.tensor([[1.0, 2.0**-26], [0.0, 1.0]], dtype=F64)
    assert 2.0**-26 == eps**0.5
    lp = appendix.gaussian_log_density(torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), S)
    torch.testing.assert_close(lp, torch.tensor(-np.log(2 * np.pi), dtype=F64))
    # a rounding-level asymmetry (1e-10 relative) is accepted, also at a large scale
    for scale in (1.0, 1e8):
        S = scale * torch.tensor([[2.0, 0.3], [0.3 + 1e-10, 1.0]], dtype=F64)
        x = torch.tensor([0.5, -1.0], dtype=F64) * scale**0.5
        ref = scipy.stats.multivariate_normal([0, 0], (S + S.T).numpy() / 2).logpdf(x.numpy())
        torch.testing.assert_close(appendix.gaussian_log_density(x, torch.zeros(2, dtype=F64), S),
                                   torch.tensor(ref, dtype=F64), rtol=1e-9, atol=0)


@pytest.mark.parametrize("S", [
    1e-10 * torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64),   # tiny scale, 50 % asymmetry
    torch.tensor([[[1.0, 0.5], [0.0, 1.0]]], dtype=F64),         # batched: transpose the last two axes
    torch.stack([1e6 * torch.eye(2, dtype=F64),                  # the scale is per matrix, not global
                 torch.tensor([[1.0, 1e-3], [0.0, 1.0]], dtype=F64)]),
], ids=["tiny", "batched", "per-matrix-scale"])
def test_log_density_refuses_asymmetric_sigma(S):
    with pytest.raises(ValueError, match=r"^sigma: must be symmetric"):
        appendix.gaussian_log_density(torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), S)


def test_gaussian_messages_for_singular_sigma():
    z = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match=r"^sigma: not positive definite"):
        appendix.gaussian_log_density(z, z, torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"^sigma: must be positive definite"):
        appendix.gaussian_density(z, z, torch.diag(torch.tensor([1.0, 0.0], dtype=F64)))
    # an asymmetric sigma is refused by check_symmetric_psd under sigma's name
    with pytest.raises(ValueError, match=r"^sigma: must be symmetric"):
        appendix.gaussian_density(z, z, torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64))


# ---- the Gaussian density: bad inputs, by name ------------------------------------------------

def _deep(*last):
    """A tensor of 16 dimensions (one more than the checks allow)."""
    return torch.zeros(*([1] * (16 - len(last))), *last, dtype=F64)


@pytest.mark.parametrize("fn", GAUSS)
def test_gaussian_bad_inputs_by_name(fn):
    x, mu, S = torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
    cases = [
        ((x.tolist(), mu, S), TypeError, r"^x: expected a torch.Tensor"),
        ((x, mu.tolist(), S), TypeError, r"^mu: expected a torch.Tensor"),
        ((x, mu, S.tolist()), TypeError, r"^sigma: expected a torch.Tensor"),
        ((torch.tensor(0.0, dtype=F64), mu, S), ValueError, r"^x: expected 1 or 2 or"),
        ((_deep(2), mu, S), ValueError, r"^x: expected 1 or 2 or"),
        ((x, torch.tensor(0.0, dtype=F64), S), ValueError, r"^mu: expected 1 or 2 or"),
        ((x, _deep(2), S), ValueError, r"^mu: expected 1 or 2 or"),
        # a 1-d or 0-d sigma is refused by the dimension check (before any dtype comparison)
        ((x, mu, torch.ones(2, dtype=F64)), ValueError, r"^sigma: expected 2 or 3 or"),
        ((x, mu, torch.tensor(1.0, dtype=F64)), ValueError, r"^sigma: expected 2 or 3 or"),
        ((x, mu, _deep(2, 2) + torch.eye(2, dtype=F64)), ValueError, r"^sigma: expected 2 or 3 or"),
        ((x, mu.float(), S), TypeError, r"^mu: dtype torch.float32 differs from x's"),
        ((x, mu, S.float()), TypeError, r"^sigma: dtype torch.float32 differs from x's"),
    ]
    for args, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn(*args)


# ---- the matrix determinant lemma -------------------------------------------------------------

def _lemma_ref(A, u, v):
    return torch.linalg.det(A + u.unsqueeze(-1) * v.unsqueeze(-2))


def test_det_rank_one_unbatched_and_four_d():
    g = torch.Generator().manual_seed(4)
    for shape in [(), (2, 3)]:  # unbatched, and two batch axes (A: (2, 3, 4, 4))
        A = torch.randn(*shape, 4, 4, generator=g, dtype=F64) + 3 * torch.eye(4, dtype=F64)
        u = torch.randn(*shape, 4, generator=g, dtype=F64)
        v = torch.randn(*shape, 4, generator=g, dtype=F64)
        out = appendix.det_rank_one_update(A, u, v)
        assert out.shape == shape
        torch.testing.assert_close(out, _lemma_ref(A, u, v), rtol=1e-10, atol=1e-10)


def test_det_rank_one_bad_inputs_by_name():
    A, u, v = torch.eye(3, dtype=F64), torch.ones(3, dtype=F64), torch.ones(3, dtype=F64)
    cases = [
        ((A.tolist(), u, v), TypeError, r"^A: expected a torch.Tensor"),
        ((torch.ones(3, dtype=F64), u, v), ValueError, r"^A: expected 2 or 3 or"),
        ((torch.tensor(1.0, dtype=F64), u, v), ValueError, r"^A: expected 2 or 3 or"),
        ((_deep(3, 3) + A, u, v), ValueError, r"^A: expected 2 or 3 or"),
        ((A, u.tolist(), v), TypeError, r"^u: expected a torch.Tensor"),
        ((A, torch.tensor(1.0, dtype=F64), torch.tensor(1.0, dtype=F64)), ValueError, r"^u: expected 1 or 2 or"),
        ((A, _deep(3), _deep(3)), ValueError, r"^u: expected 1 or 2 or"),
        ((A, u, torch.ones(2, dtype=F64)), ValueError, r"^v: expected shape \(3\)"),
        ((A, u.float(), v), TypeError, r"^u: dtype torch.float32 differs from A's"),
        ((A, u, v.float()), TypeError, r"^v: dtype torch.float32 differs from A's"),
        # a non-square A is refused even when u matches its last axis
        ((torch.ones(2, 3, dtype=F64), u, v), ValueError, r"^A: expected \(\.\.\., d, d\)"),
        ((torch.zeros(3, 3, dtype=F64), u, v), ValueError, r"^A: must be invertible \(the lemma uses A\^\{-1\}\)"),
    ]
    for args, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            appendix.det_rank_one_update(*args)


# ---- Bayes' rule --------------------------------------------------------------------------------

def test_bayes_batched_against_a_loop():
    # batch 4, nA = 3, nB = 2: prior's new axis and the normalising sum must sit on the A axis
    g = torch.Generator().manual_seed(5)
    lik = torch.rand(4, 3, 2, generator=g, dtype=F64)
    prior = torch.rand(4, 3, generator=g, dtype=F64)
    prior = prior / prior.sum(-1, keepdim=True)
    ref = torch.empty(4, 3, 2, dtype=F64)
    for k in range(4):
        for b in range(2):
            pb = sum(lik[k, a, b] * prior[k, a] for a in range(3))
            for a in range(3):
                ref[k, a, b] = lik[k, a, b] * prior[k, a] / pb
    torch.testing.assert_close(appendix.bayes_posterior(lik, prior), ref)


def test_bayes_zero_likelihood_is_allowed():
    # P(B = b | A = a) = 0 is a probability: the posterior of that a given b is 0
    lik = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=F64)
    prior = torch.tensor([0.5, 0.5], dtype=F64)
    ref = torch.tensor([[0.0, 2 / 3], [1.0, 1 / 3]], dtype=F64)
    torch.testing.assert_close(appendix.bayes_posterior(lik, prior), ref)


def test_bayes_bad_inputs_by_name():
    lik, prior = torch.full((2, 2), 0.5, dtype=F64), torch.tensor([0.5, 0.5], dtype=F64)
    cases = [
        ((lik.tolist(), prior), TypeError, r"^likelihood: expected a torch.Tensor"),
        ((torch.full((2,), 0.5, dtype=F64), prior), ValueError, r"^likelihood: expected 2 or 3 or"),
        ((torch.tensor(0.5, dtype=F64), prior), ValueError, r"^likelihood: expected 2 or 3 or"),
        ((_deep(2, 2) + 0.5, prior), ValueError, r"^likelihood: expected 2 or 3 or"),
        ((lik, prior.tolist()), TypeError, r"^prior: expected a torch.Tensor"),
        ((lik, torch.tensor(1.0, dtype=F64)), ValueError, r"^prior: expected 1 or 2 or"),
        ((lik, _deep(2) + 0.5), ValueError, r"^prior: expected 1 or 2 or"),
        ((lik, prior.float()), TypeError, r"^prior: dtype torch.float32 differs from likelihood's"),
        ((lik, torch.tensor([0.5, 0.6], dtype=F64)), ValueError, r"^prior: must sum to 1"),
        ((torch.tensor([[0.5, 1.5], [0.5, 0.5]], dtype=F64), prior), ValueError,
         r"^likelihood: probabilities P\(B = b \| A = a\) must lie in \[0, 1\]$"),
        ((torch.tensor([[0.5, 0.0], [0.5, 0.0]], dtype=F64), prior), ValueError,
         r"^likelihood: P\(B = b\) = 0 for some b: the posterior given b is undefined$"),
    ]
    for args, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            appendix.bayes_posterior(*args)


@pytest.mark.parametrize("x_batch, sigma_batch, out", [((3,), (1,), (3,)), ((3, 1), (4,), (3, 4)), ((), (4,), (4,))])
def test_log_density_broadcasts_x_against_a_batch_of_covariances(x_batch, sigma_batch, out):
    # x's and sigma's batches both present and different (an older version expanded one to the
    # other and raised); each entry against scipy on its own pair
    x = torch.randn(*x_batch, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    S = _spd(*sigma_batch)
    mu = torch.tensor([0.3, -0.2], dtype=F64)
    got = appendix.gaussian_log_density(x, mu, S)
    assert got.shape == out
    torch.testing.assert_close(got, _scipy_logpdf(x, mu, S), rtol=1e-12, atol=1e-12)


def test_log_density_refuses_batches_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"^sigma: batch shape \(4,\) does not broadcast"):
        appendix.gaussian_log_density(torch.zeros(3, 2, dtype=F64), torch.zeros(2, dtype=F64), _spd(4))
