"""Autoregressive models: MADE sampling (D forward passes) against one likelihood pass, over D;
NADE's shared-weight O(HD) conditionals against the naive O(HD^2) ones, over D; a PixelCNN
training pass against full sampling of a 28 x 28 binary image."""

import pytest
import torch

from impl.autoregressive import MADE, NADE, PixelCNN


def _timed(benchmark, quick, fn, *args, group, role, size=None, sweep=None, rounds=3):
    benchmark.group = group
    benchmark.extra_info["role"] = role
    if size is not None:
        benchmark.extra_info.update(size=size, sweep=sweep)
    if quick:
        benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1, warmup_rounds=0)
    else:
        benchmark(fn, *args)


def _binary(n, D, seed=0):
    return torch.bernoulli(torch.full((n, D), 0.5), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def made_models():
    torch.manual_seed(0)
    return {D: MADE(D, [128]) for D in (16, 32, 64, 128)}


@pytest.mark.parametrize("D", [16, 32, 64, 128])
def test_made_likelihood_pass(benchmark, quick, made_models, D):
    if quick and D == 128:
        pytest.skip("D = 128 only outside quick mode")
    x = _binary(16, D)
    _timed(benchmark, quick, made_models[D].log_prob, x, group=f"autoregressive.made-D{D}", role="reference",
           size=D, sweep="autoregressive.made")


@pytest.mark.parametrize("D", [16, 32, 64, 128])
def test_made_sampling(benchmark, quick, made_models, D):
    if quick and D == 128:
        pytest.skip("D = 128 only outside quick mode")
    _timed(benchmark, quick, made_models[D].sample, 16, group=f"autoregressive.made-D{D}", role="kernel",
           size=D, sweep="autoregressive.made")


@pytest.mark.parametrize("D", [32, 64, 128])
@pytest.mark.parametrize("method", ["naive", "cumsum"])
def test_nade_conditionals(benchmark, quick, D, method):
    torch.manual_seed(0)
    model = NADE(D, 32)
    x = _binary(16, D)
    with torch.no_grad():
        _timed(benchmark, quick, model.conditional_logits, x, method, group=f"autoregressive.nade-D{D}",
               role="reference" if method == "naive" else "kernel", size=D, sweep="autoregressive.nade")


@pytest.fixture(scope="module")
def pixelcnn():
    torch.manual_seed(0)
    return PixelCNN(1, 2, hidden=8, layers=2, first_kernel=5)


def _train_pass(model, x):
    model.zero_grad()
    (-model.log_prob(x).mean()).backward()


def test_pixelcnn_training_pass(benchmark, quick, pixelcnn):
    x = torch.randint(0, 2, (1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    _timed(benchmark, quick, _train_pass, pixelcnn, x, group="autoregressive.pixelcnn-28x28", role="reference")


def test_pixelcnn_sampling(benchmark, quick, pixelcnn):
    benchmark.group = "autoregressive.pixelcnn-28x28"
    benchmark.extra_info["role"] = "kernel"
    g = torch.Generator().manual_seed(1)
    # 784 sequential forward passes: a single round even outside quick mode keeps this to seconds
    benchmark.pedantic(pixelcnn.sample, args=(1, 28, 28), kwargs={"generator": g}, rounds=1 if quick else 3, iterations=1)
