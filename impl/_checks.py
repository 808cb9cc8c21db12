"""Input validation shared by every module of impl/: one place for the error messages.

Each check raises ``TypeError`` for the wrong kind of object or dtype and ``ValueError`` for a
wrong shape or an out-of-range value, and names the offending argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_tensor(x, name: str, *, ndim: int | Sequence[int] | None = None, floating: bool = True,
                 shape: Sequence[int | None] | None = None, finite: bool = False) -> torch.Tensor:
    """Check that ``x`` is a tensor (floating by default) with the given ndim / shape.

    ``shape`` entries of ``None`` match any size.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(f"{name}: expected {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}")
    if shape is not None:
        if x.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if finite and not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def check_same(ref: torch.Tensor, ref_name: str, **others: torch.Tensor) -> None:
    """Check that every tensor in ``others`` has ``ref``'s device and dtype."""
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(f"{name}: on {t.device}, but {ref_name} is on {ref.device}")
        if t.dtype != ref.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from {ref_name}'s {ref.dtype}")


def check_int(value, name: str, *, min: int | None = None, max: int | None = None, odd: bool = False) -> int:
    """Check an int in [min, max]; ``odd=True`` also requires it odd (kernels that keep a centre)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if odd and value % 2 == 0:
        raise ValueError(f"{name}: must be odd, got {value}")
    if min is not None and value < min:
        raise ValueError(f"{name}: must be >= {min}, got {value}")
    if max is not None and value > max:
        raise ValueError(f"{name}: must be <= {max}, got {value}")
    return value


def check_float(value, name: str, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False) -> float:
    """Check a real scalar in [min, max] (open ends with ``min_open`` / ``max_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    if min is not None and (value < min or (min_open and value == min)):
        raise ValueError(f"{name}: must be {'>' if min_open else '>='} {min}, got {value}")
    if max is not None and (value > max or (max_open and value == max)):
        raise ValueError(f"{name}: must be {'<' if max_open else '<='} {max}, got {value}")
    return value


def check_choice(value, name: str, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
