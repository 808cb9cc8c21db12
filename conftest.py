"""Shared fixtures: devices, dtypes, seeding, hypothesis profiles, golden storage, figures.

* ``device``: a test that takes ``device`` runs once on the CPU and once on CUDA when a GPU is
  present (``--device cpu|cuda|cuda:N|all`` restricts it). With several GPUs, each xdist worker
  takes its own GPU (gw0 -> cuda:0, gw1 -> cuda:1, ...), so the suite spreads over them.
* ``dtype``: a test that takes ``dtype`` runs in float64 and float32.
* Every test starts from a seed derived from its node id (torch, numpy, random).
* Hypothesis profiles ``ci`` (deterministic, default), ``dev`` and ``thorough``: set
  ``HYPOTHESIS_PROFILE``.
* Golden files live in ``golden/data`` and are rewritten only by pytest-regressions' explicit
  ``--force-regen`` / ``--regen-all`` flags.
"""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

from spec.golden import GoldenArrays

pytest_plugins = ["spec.plugin", "pytester"]

ROOT = Path(__file__).resolve().parent

# Under xdist each worker would start one thread per core; with 2 workers on 2 cores that is 4
# threads fighting for 2 (DESIGN.md). The tests' tensors are small, so serial test runs take one
# thread too (on a shared machine several threads per process made small trainings 25x slower).
# Only the timed benchmark run (--benchmark-only) keeps torch's default threads.


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER") or not config.getoption("benchmark_only", False):
        torch.set_num_threads(1)
    _ieee_float32()


def _ieee_float32() -> None:
    """Full-precision float32 everywhere (DESIGN.md, "Numbers"). cuDNN convolutions and cuBLAS matmuls
    default to TF32 on Ampere and later GPUs: 10 mantissa bits, errors near 1e-3, which the float32
    tolerances of the device tests (2e-4) do not allow. A test that wants TF32 takes the ``tf32`` fixture."""
    _set_float32_precision("ieee")


def _set_float32_precision(mode: str) -> None:
    # torch refuses a mix of its legacy (allow_tf32) and new (fp32_precision) switches: use one.
    if hasattr(torch.backends, "fp32_precision"):
        torch.backends.fp32_precision = mode
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode
    else:  # torch before 2.9
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"


@pytest.fixture
def tf32():
    """TF32 matmuls and convolutions for this test only (say why in the test: its tolerance must allow
    TF32's 2**-11 relative rounding)."""
    _set_float32_precision("tf32")
    yield
    _set_float32_precision("ieee")

os.environ.setdefault("MPLBACKEND", "Agg")

# No explain phase: it writes patch files and imports libcst, seconds per failing test for nothing
# the failure report lacks.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink])
settings.register_profile("ci", derandomize=True, max_examples=25, database=None, print_blob=True, **_common)
settings.register_profile("dev", max_examples=60, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--device", default="all",
                     help="where device-parametrised tests run: cpu, cuda, cuda:N, or all (default)")


def _worker_index() -> int:
    w = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(w[2:]) if w.startswith("gw") and w[2:].isdigit() else 0


def _devices(config) -> list[tuple[str, torch.device]]:
    choice = config.getoption("--device")
    has_cuda = torch.cuda.is_available()
    if choice == "cpu":
        return [("cpu", torch.device("cpu"))]
    if choice.startswith("cuda"):
        if not has_cuda:
            raise pytest.UsageError(f"--device {choice}: no CUDA device is available")
        dev = torch.device(choice) if ":" in choice else torch.device("cuda", _worker_index() % torch.cuda.device_count())
        return [("cuda", dev)]
    if choice != "all":
        raise pytest.UsageError(f"--device: expected cpu, cuda, cuda:N or all, got {choice!r}")
    out = [("cpu", torch.device("cpu"))]
    if has_cuda:
        # The id stays "cuda" on every worker so that xdist workers collect identical test ids.
        out.append(("cuda", torch.device("cuda", _worker_index() % torch.cuda.device_count())))
    return out


def pytest_generate_tests(metafunc):
    # Plain parametrisation (not a fixture) keeps @given tests free of the function-scoped
    # fixture health check.
    if "device" in metafunc.fixturenames:
        devs = _devices(metafunc.config)
        metafunc.parametrize(
            "device",
            [pytest.param(d, id=name, marks=[pytest.mark.gpu] if name == "cuda" else []) for name, d in devs],
        )
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])


@pytest.fixture(autouse=True)
def _seed_everything(request):
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    yield


@pytest.fixture
def ndarrays_regression(lazy_datadir, original_datadir, request) -> GoldenArrays:
    return GoldenArrays(lazy_datadir, original_datadir, request)


@pytest.fixture
def original_datadir() -> Path:
    """pytest-regressions' golden files live in golden/data, not beside each test module."""
    return ROOT / "golden" / "data"


@pytest.fixture
def save_figure(request, record_property):
    """``save_figure(fig, "cnn-max-pool.png", caption="...", claims=("cnn.max-pool",))`` writes a
    matplotlib figure where the HTML ledger shows it (``<ledger dir>/figures``, by default
    report/figures) and closes it. The page shows ``caption`` (what the figure shows; ``$...$`` renders
    as math) beside the claims of the test's markers and those named in ``claims``: a figure-only test
    carries no claim marker (it backs nothing), so it names the claims it illustrates here."""
    out = Path(request.config.getoption("ledger") or ROOT / "report") / "figures"

    def save(fig, name: str, caption: str | None = None, claims: tuple[str, ...] | list[str] = ()) -> Path:
        import matplotlib.pyplot as plt

        if not name.endswith(".png") or "/" in name:
            raise ValueError(f"name: expected a plain file name ending in .png, got {name!r}")
        unknown = [c for c in claims if c not in request.config._claims]
        if isinstance(claims, str) or unknown:
            raise ValueError(f"claims: expected a sequence of registered claim ids, got {claims!r}")
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        path = f"figures/{name}"
        record_property("figure", path)
        if caption:
            record_property("caption", [path, caption])
        if claims:
            record_property("figure_claims", [path, list(claims)])
        return out / name

    return save

