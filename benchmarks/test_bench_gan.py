"""GANs: FID from 2048-dimensional feature statistics (512 in quick mode): our two symmetric
eigendecompositions (with the PSD checks) against the usual scipy.linalg.sqrtm of S1 S2, and FID at
D = 512 against torchmetrics' FID core (eigenvalues of the non-symmetric S1 S2; the Inception
network that torchmetrics' metric wraps around it needs a weights download and is not timed)."""

import functools

import numpy as np
import pytest
import scipy.linalg
import torch

from impl import gan


@pytest.fixture
def stats(quick):
    return _stats(512 if quick else 2048)


@functools.lru_cache(maxsize=None)
def _stats(d):
    g = torch.Generator().manual_seed(0)
    out = []
    for shift in (0.0, 0.3):
        a = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
        out += [torch.full((d,), shift, dtype=torch.float64), a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)]
    return out


def fid_scipy(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


def test_fid_scipy_sqrtm(measure, stats):
    measure(fid_scipy, *[t.numpy() for t in stats], group="gan.fid", role="reference", rounds=5,
            size=int(stats[0].shape[0]))


def test_fid_eigh(measure, stats):
    measure(gan.frechet_distance, *stats, group="gan.fid", rounds=5, size=int(stats[0].shape[0]))


def test_fid_torchmetrics_512(measure):
    from torchmetrics.image.fid import _compute_fid
    stats = _stats(512)
    measure(_compute_fid, *stats, group="gan.fid-torchmetrics-512", role="reference", rounds=5, size=512)


def test_fid_eigh_512(measure):
    stats = _stats(512)
    measure(gan.frechet_distance, *stats, group="gan.fid-torchmetrics-512", rounds=5, size=512)
