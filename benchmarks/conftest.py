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
