"""Benchmark fixtures. The timed run is serial (pytest-benchmark does not time under xdist)."""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="quick mode (CI): fewer rounds and smaller sizes; also set by MP_BENCH_QUICK=1")


@pytest.fixture
def quick(request) -> bool:
    """True in the gate's quick mode: benchmarks use fewer rounds or smaller sizes."""
    return request.config.getoption("--quick") or os.environ.get("MP_BENCH_QUICK") == "1"


@pytest.fixture
def measure(benchmark, quick):
    """``measure(fn, *args, group=..., role="kernel", rounds=None, kwargs=None, **info)`` times
    ``fn(*args, **kwargs)`` as one member of ``group`` and returns its result.

    ``role`` is "kernel" or "reference" (one reference per group: the gate divides by it); ``info``
    goes to ``extra_info`` (``size`` and ``sweep`` for a fitted exponent, throughput figures, ...).
    With ``rounds=None`` pytest-benchmark calibrates (many rounds of a fast kernel, bounded in quick
    mode by the gate's --benchmark-max-time): the best of many rounds is what keeps a ratio of
    millisecond kernels stable. A kernel too slow for that passes ``rounds``: that many fixed
    rounds after one warm-up, 3 in quick mode.
    """

    def run(fn, *args, group: str, role: str = "kernel", rounds: int | None = None, kwargs=None, **info):
        if role not in ("kernel", "reference"):
            raise ValueError(f"role: expected 'kernel' or 'reference', got {role!r}")
        benchmark.group = group
        benchmark.extra_info.update(role=role, **info)
        kwargs = kwargs or {}
        if rounds is None:
            # one untimed call first: quick mode turns pytest-benchmark's warm-up off, and the first
            # call pays one-time costs (oneDNN builds its convolution primitives, the allocator
            # maps fresh pages) that made whichever member of a pair ran first up to 25 % slower
            fn(*args, **kwargs)
            return benchmark(fn, *args, **kwargs)
        return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=3 if quick else rounds,
                                  iterations=1, warmup_rounds=1)

    return run
