"""Helpers shared by the test suites: hypothesis strategies, tolerances, fits and counts.

Tests import from here (``from spec.testing import ...``); nothing in ``impl/`` does.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.utils._python_dispatch import TorchDispatchMode

# Tolerances for comparing two computations of the same quantity that take different paths
# (a reference formula against a fused kernel, say). float64: the paths differ by rounding of
# O(n * 1e-16) for sums of n terms; float32: O(n * 6e-8). Tests with long reductions or
# ill-conditioned steps state their own, with the reason beside them.
TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-10),
    torch.float32: dict(rtol=2e-4, atol=2e-5),
}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set to ``dtype`` inside the block (restored after): a function that builds
    a constant in the default dtype instead of its input's shows up under another default."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


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


def perturb(module, seed: int, scale: float = 0.3):
    """Add seeded N(0, scale^2) noise to every parameter of ``module`` in place and return it:
    layers initialised at zero (the last layer of a coupling, say) would make a map the identity,
    which hides a wrong composition."""
    g = generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))
    return module


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


# Calls that make a GPU wait for its queue and copy a value to the host. Boolean-mask indexing and
# nonzero() also sync (their result's size is data-dependent).
_SYNC_CALLS = frozenset({"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
                         "nonzero", "masked_select", "unique", "unique_consecutive", "repeat_interleave"})
_IMPL_DIR = str((__import__("pathlib").Path(__file__).resolve().parent.parent / "impl")) + "/"


class count_kernels(TorchDispatchMode):
    """Count the ATen kernels run inside the ``with`` block, views included (each is a dispatcher
    call), also those inside a custom autograd.Function::

        with count_kernels() as k:
            fn()
        k.n  # the number of kernels

    A count, unlike a time, is exact on a noisy machine: it gates code whose speed is its number
    of small kernels (a loop of elementwise ops on a few thousand values is dispatch-bound).
    """

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """Result of :func:`count_host_syncs`: ``count`` and ``where`` (``"impl/x.py:12 item"`` per call)."""

    def __init__(self):
        self.where: list[str] = []

    @property
    def count(self) -> int:
        return len(self.where)

    def __repr__(self):
        return f"HostSyncCounter(count={self.count}, where={self.where[:10]})"


def _bool_index(args) -> bool:
    idx = args[1] if len(args) > 1 else None
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class count_host_syncs(torch.overrides.TorchFunctionMode):
    """Count host synchronisations made by code in ``impl/`` inside the ``with`` block.

    ``.item()``, ``bool()``, ``float()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``nonzero`` and
    boolean-mask indexing are counted when the innermost non-torch caller is a file under impl/.
    On the CPU nothing waits, but the same code on a GPU would stall there, so counting on the CPU
    tells whether a loop stays asynchronous (DESIGN.md: no host synchronisation inside a loop)::

        with count_host_syncs() as syncs:
            one_sweep()
        assert syncs.count == 0, syncs.where
    """

    def __init__(self):
        super().__init__()
        self.result = HostSyncCounter()

    def __enter__(self):
        super().__enter__()
        return self.result

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _SYNC_CALLS or (name in ("__getitem__", "__setitem__") and _bool_index(args)):
            import sys

            f = sys._getframe(1)
            # torch.optim reads its step counters, host tensors unless capturable, with .item():
            # no device is waited on, so those calls are not counted.
            if "/torch/optim/" in f.f_code.co_filename:
                return func(*args, **(kwargs or {}))
            while f is not None and "/torch/" in f.f_code.co_filename:
                f = f.f_back
            if f is not None and f.f_code.co_filename.startswith(_IMPL_DIR):
                rel = f.f_code.co_filename[len(_IMPL_DIR) - 5:]
                self.result.where.append(f"{rel}:{f.f_lineno} {name}")
        return func(*args, **(kwargs or {}))
