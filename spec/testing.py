"""Helpers shared by the test suites: hypothesis strategies, tolerances, fits and counts.

Tests import from here (``from spec.testing import ...``); nothing in ``impl/`` does.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# Tolerances for comparing two computations of the same quantity that take different paths
# (a reference formula against a fused kernel, say). float64: the paths differ by rounding of
# O(n * 1e-16) for sums of n terms; float32: O(n * 6e-8). Tests with long reductions or
# ill-conditioned steps state their own, with the reason beside them.
TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-10),
    torch.float32: dict(rtol=2e-4, atol=2e-5),
}


def tol(dtype: torch.dtype) -> dict:
    """``assert_close`` keyword arguments for ``dtype`` (see ``TOL``)."""
    return TOL[dtype]


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator``: hypothesis does not seed torch, so draw the seed instead."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def randn(*shape: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Seeded standard normal tensor, created on the CPU then moved, so values agree across devices."""
    return torch.randn(*shape, generator=generator(seed), dtype=dtype).to(device)


def finite_arrays(shape, *, lo: float = -10.0, hi: float = 10.0, dtype=np.float64):
    """A hypothesis strategy for finite float arrays of ``shape`` in [lo, hi]."""
    return hnp.arrays(dtype, shape, elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64))


def fit_exponent(sizes, values) -> float:
    """Slope of log(values) against log(sizes): the exponent p in values ~ c * sizes**p."""
    sizes, values = np.asarray(sizes, float), np.asarray(values, float)
    if sizes.shape != values.shape or sizes.size < 2:
        raise ValueError("fit_exponent needs two or more (size, value) pairs of equal length")
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def count_flops(fn, *args, **kwargs) -> int:
    """Total FLOPs of ``fn(*args, **kwargs)`` as counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())
