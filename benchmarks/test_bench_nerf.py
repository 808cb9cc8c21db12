"""NeRF kernels: volume rendering (vectorised against a per-ray loop, and the notes' cumprod form against
the log-space form on 65536 rays x 128 samples) and hash-encoding throughput (2^20 points; 2^16 quick)."""

import pytest
import torch

from impl import nerf as nf


def _rays(R, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    sigma = torch.rand(R, N, generator=g) * 3
    t = torch.sort(torch.rand(R, N + 1, generator=g) * 4, -1).values
    colors = torch.rand(R, N, 3, generator=g)
    return sigma, colors, t


def render_loop(sigma, colors, t):
    """Reference: one ray at a time, one sample at a time, as the notes' sum is written."""
    out = torch.empty(sigma.shape[0], 3)
    for r in range(sigma.shape[0]):
        T, c = 1.0, torch.zeros(3)
        for i in range(sigma.shape[1]):
            a = 1 - torch.exp(-sigma[r, i] * (t[r, i + 1] - t[r, i]))
            c = c + T * a * colors[r, i]
            T = T * (1 - a)
        out[r] = c
    return out


# Per-ray loop against the vectorised kernel on the same rays: a loop over all 65536 rays x 128 samples
# would take minutes, so both sides render a subset (256 rays; 32 quick) and the ratio is per ray.
def test_volume_render_loop(measure, quick):
    data = _rays(32 if quick else 256, 128)
    measure(render_loop, *data, group="nerf.volume-render-vs-loop", role="reference", rounds=1,
            rays=data[0].shape[0], samples=128)


def test_volume_render_vectorised_subset(measure, quick):
    data = _rays(32 if quick else 256, 128)
    measure(nf.volume_render, data[0], data[1], data[2], group="nerf.volume-render-vs-loop",
            role="kernel", rays=data[0].shape[0], samples=128, rounds=5)


# 65536 rays x 128 samples (8192 quick): the notes' cumprod weights against the log-space weights,
# and a sweep over the number of rays (time should grow linearly).
_CACHE = {}


@pytest.fixture
def full(quick):
    key = ("rays", quick)
    if key not in _CACHE:
        _CACHE[key] = _rays(8192 if quick else 65536, 128)
    return _CACHE[key]


def test_volume_render_cumprod(measure, full):
    sigma, _, t = full
    measure(nf.alpha_compositing_weights, sigma, t, group="nerf.volume-render", role="reference",
            rays=sigma.shape[0], samples=128, rounds=5)


def test_volume_render_logspace(measure, full):
    sigma, colors, t = full
    measure(nf.volume_render, sigma, colors, t, group="nerf.volume-render", role="kernel",
            rays=sigma.shape[0], samples=128, rounds=5)


@pytest.mark.parametrize("frac", [4, 2, 1])
def test_volume_render_sweep(measure, full, frac):
    sigma, colors, t = full
    n = sigma.shape[0] // frac
    measure(nf.volume_render, sigma[:n], colors[:n], t[:n], group=f"nerf.volume-render-sweep-{n}",
            role="kernel", size=n, sweep="nerf.volume-render-rays", rounds=5)


# Hash encoding: 8 levels of 2 features, finest resolution 128, table 2^19. Reference: the same levels as
# dense grids interpolated by torch's fused grid_sample (which the hash table replaces to save memory).
@pytest.fixture
def hash_setup(quick):
    key = ("hash", quick)
    if key not in _CACHE:
        _CACHE[key] = _hash_setup(quick)
    return _CACHE[key]


def _hash_setup(quick):
    torch.manual_seed(0)
    enc = nf.HashEncoding(n_levels=8, log2_table_size=19, n_features=2, base_resolution=16, finest_resolution=128)
    torch.nn.init.normal_(enc.tables)
    x = torch.rand(2**16 if quick else 2**20, 3)
    grids = [torch.randn(1, 2, r + 1, r + 1, r + 1) for r in enc.resolutions]
    return enc, x, grids


def dense_grid_sample(grids, x):
    g = (x * 2 - 1)[None, None, None]
    return torch.cat([torch.nn.functional.grid_sample(gr, g, align_corners=True)[0, :, 0, 0].T for gr in grids], -1)


def test_hash_encoding_dense_grid_sample(measure, hash_setup):
    _, x, grids = hash_setup
    with torch.no_grad():
        measure(dense_grid_sample, grids, x, group="nerf.hash-encoding", role="reference",
                points=x.shape[0], rounds=3)


def test_hash_encoding(benchmark, measure, hash_setup):
    enc, x, _ = hash_setup
    with torch.no_grad():
        measure(enc, x, group="nerf.hash-encoding", role="kernel", points=x.shape[0], rounds=3)
    if benchmark.stats is not None:  # None under --benchmark-disable / xdist
        benchmark.extra_info["points_per_s"] = x.shape[0] / benchmark.stats.stats.median


# Peer: nerfacc 0.5.3's dense path (render_weight_from_density + accumulate_along_rays), 4096 rays x 128
# samples, float32, same inputs. nerfacc's packed path runs only with its CUDA extension (recorded in
# properties/test_nerf.py::test_nerfacc_packed_path_needs_cuda), so the CPU comparison is the dense one.
@pytest.fixture
def peer_rays():
    key = "peer"
    if key not in _CACHE:
        _CACHE[key] = _rays(4096, 128, seed=1)
    return _CACHE[key]


def _nerfacc_render(sigma, colors, t):
    import nerfacc

    w, _, _ = nerfacc.render_weight_from_density(t[:, :-1], t[:, 1:], sigma)
    return nerfacc.accumulate_along_rays(w, colors), w


def test_volume_render_nerfacc(measure, peer_rays):
    pytest.importorskip("nerfacc", reason="the peer library (extra 'peers') is not installed")
    measure(_nerfacc_render, *peer_rays, group="nerf.volume-render-nerfacc", role="reference", rays=4096, samples=128)


def test_volume_render_ours_vs_nerfacc(measure, peer_rays):
    sigma, colors, t = peer_rays
    measure(nf.volume_render, sigma, colors, t, group="nerf.volume-render-nerfacc", role="kernel", rays=4096,
            samples=128)
