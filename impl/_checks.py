"""Input validation shared by every module of impl/: one place for the error messages.

Each check raises ``TypeError`` for the wrong kind of object or dtype and ``ValueError`` for a
wrong shape or an out-of-range value, and names the offending argument.
"""

from __future__ import annotations

import math
import numbers
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


def check_returned(value, name: str, like: torch.Tensor, *, shape: Sequence[int] | None = None) -> torch.Tensor:
    """What the caller's function ``name`` returned: a tensor (of ``shape`` if given) on ``like``'s
    device and in its dtype. The errors name the function, not the internal argument it feeds."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected to return a tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name}: expected to return shape {tuple(shape)}, got {tuple(value.shape)}")
    if value.device != like.device:
        raise ValueError(f"{name}: returned a tensor on {value.device}, expected {like.device}")
    if value.dtype != like.dtype:
        raise TypeError(f"{name}: returned {value.dtype}, expected {like.dtype}")
    return value


def check_dtype(dtype, name: str = "dtype", *, floating: bool = True) -> torch.dtype:
    """A torch.dtype (a floating one by default: an integer cast would round). A string would be
    taken for a device by Tensor.to."""
    if not isinstance(dtype, torch.dtype) or (floating and not dtype.is_floating_point):
        raise TypeError(f"{name}: expected a {'floating-point ' if floating else ''}torch.dtype, got {dtype!r}")
    return dtype


def check_device(device, name: str = "device") -> torch.device | None:
    """``device`` as a torch.device (None stays None: the caller's default)."""
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{name}: not a torch device: {device!r}") from e


def check_trainable(module, name: str, *, what: str = "an nn.Module") -> torch.Tensor:
    """A module with parameters to train; returns its first, whose dtype and device its inputs share."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{name}: expected {what}, got {type(module).__name__}")
    p = next(module.parameters(), None)
    if p is None:
        raise ValueError(f"{name}: has no parameters to train")
    return p


def check_bool(value, name: str) -> bool:
    """A flag must be a bool: a string "False" or a tensor would otherwise be taken as true."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def check_same(ref: torch.Tensor, ref_name: str, **others: torch.Tensor) -> None:
    """Check that every tensor in ``others`` has ``ref``'s device and dtype."""
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(f"{name}: on {t.device}, but {ref_name} is on {ref.device}")
        if t.dtype != ref.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from {ref_name}'s {ref.dtype}")


def _scalar(value, name: str, integral: bool):
    """A Python number from an int/float, a NumPy scalar or a 0-d tensor (bools are refused)."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0:
            raise TypeError(f"{name}: expected a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool or (integral and (value.is_floating_point() or value.is_complex())):
            raise TypeError(f"{name}: expected {'an int' if integral else 'a real number'}, got a {value.dtype} tensor")
        return value.item()
    if isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b"):
        raise TypeError(f"{name}: expected {'an int' if integral else 'a real number'}, got {type(value).__name__}")
    if integral and not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not integral and not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    return int(value) if integral else float(value)


def check_int(value, name: str, *, min: int | None = None, max: int | None = None, odd: bool = False) -> int:
    """Check an integer in [min, max] and return it as a Python int; ``odd=True`` also requires it odd.

    Any integral type is accepted (Python and NumPy integers, 0-d integer tensors), so that
    e.g. gymnasium's ``space.n`` (np.int64) passes.
    """
    value = _scalar(value, name, integral=True)
    if odd and value % 2 == 0:
        raise ValueError(f"{name}: must be odd, got {value}")
    if min is not None and value < min:
        raise ValueError(f"{name}: must be >= {min}, got {value}")
    if max is not None and value > max:
        raise ValueError(f"{name}: must be <= {max}, got {value}")
    return value


def check_float(value, name: str, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False) -> float:
    """Check a real scalar in [min, max] (open ends with ``min_open`` / ``max_open``); returns a float.

    Python and NumPy reals and 0-d real tensors are accepted.
    """
    value = _scalar(value, name, integral=False)
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


# Checks on the values of tensors. Each reads the tensor once (one host synchronisation on a GPU):
# call them before a loop, never inside one.


def check_range(x: torch.Tensor, name: str, *, min: float | None = None, max: float | None = None) -> torch.Tensor:
    """Every entry of ``x`` in [min, max] (NaN fails)."""
    if min is not None and not bool((x >= min).all()):
        raise ValueError(f"{name}: entries must be >= {min}, got min {x.min().item():.6g}")
    if max is not None and not bool((x <= max).all()):
        raise ValueError(f"{name}: entries must be <= {max}, got max {x.max().item():.6g}")
    return x


def sum_tol(x: torch.Tensor, n: int) -> float:
    """Tolerance for a sum of ``n`` entries of ``x``'s dtype to equal 1: n ulps, at least 1e-6 in float32."""
    eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 0.0
    return max(64 * n * eps, 1e-12 if x.dtype == torch.float64 else 1e-5)


def check_probability(p: torch.Tensor, name: str, *, dim: int = -1, atol: float | None = None) -> torch.Tensor:
    """``p`` holds probability vectors along ``dim``: entries in [0, 1] that sum to one (within ``atol``,
    by default a few ulps per entry)."""
    check_tensor(p, name)
    if p.ndim == 0:
        raise ValueError(f"{name}: expected a probability vector, got a scalar")
    n = p.shape[dim]
    atol = sum_tol(p, n) if atol is None else atol
    # entries may miss [0, 1] by rounding as the sum misses 1 (a normalised one-entry vector can be 1 + eps)
    check_range(p, name, min=-atol, max=1.0 + atol)
    err = (p.sum(dim) - 1).abs()
    if not bool((err <= atol).all()):  # all() of an empty batch of vectors is true: nothing to check
        raise ValueError(f"{name}: must sum to 1 along dim {dim}, off by {err.max().item():.3g}")
    return p


def check_weights_sum_to_one(w: torch.Tensor, name: str, *, dim: int = -1) -> torch.Tensor:
    """Convex weights (skinning weights, mixture weights): nonnegative and summing to one along ``dim``."""
    return check_probability(w, name, dim=dim)


def check_symmetric_psd(cov: torch.Tensor, name: str, *, rtol: float | None = None,
                        eigenvalues: torch.Tensor | None = None) -> torch.Tensor:
    """``cov: (..., D, D)`` symmetric positive semi-definite within ``rtol`` of its largest entry.

    Pass ``eigenvalues`` where the caller computes ``eigvalsh`` anyway, so no second decomposition
    runs. The default tolerance is sqrt(eps) of the dtype relative to the matrix's scale: rounding
    in an estimated covariance is far below it, a real negative direction far above.
    """
    check_tensor(cov, name)
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name}: expected square matrices (..., D, D), got shape {tuple(cov.shape)}")
    if not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    rtol = math.sqrt(torch.finfo(cov.dtype).eps) if rtol is None else rtol
    scale = cov.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(torch.finfo(cov.dtype).tiny)
    asym = ((cov - cov.transpose(-1, -2)).abs() / scale).max()
    if not bool(asym <= rtol):
        raise ValueError(f"{name}: must be symmetric, max relative asymmetry {asym.item():.3g}")
    ev = torch.linalg.eigvalsh(cov) if eigenvalues is None else eigenvalues
    worst = (ev / scale[..., 0]).min()
    if not bool(worst >= -rtol):
        raise ValueError(f"{name}: must be positive semi-definite, smallest eigenvalue "
                         f"{ev.min().item():.3g} (relative {worst.item():.3g})")
    return cov


def check_positive_definite(cov: torch.Tensor, name: str) -> torch.Tensor:
    """``cov: (..., D, D)`` symmetric positive definite: a Cholesky factor exists."""
    check_symmetric_psd(cov, name)
    _, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name}: must be positive definite (Cholesky failed)")
    return cov


def check_sorted(x: torch.Tensor, name: str, *, dim: int = -1, strict: bool = False) -> torch.Tensor:
    """Entries of ``x`` non-decreasing (increasing with ``strict``) along ``dim``."""
    d = x.diff(dim=dim)
    if not bool((d > 0).all() if strict else (d >= 0).all()):
        raise ValueError(f"{name}: must be sorted {'strictly ' if strict else ''}increasing along dim {dim}")
    return x


def check_index(idx: torch.Tensor, name: str, size: int) -> torch.Tensor:
    """An integer tensor of indices in [0, size)."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of indices, got {type(idx).__name__}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got dtype {idx.dtype}")
    if idx.numel() and not bool(((idx >= 0) & (idx < size)).all()):
        raise ValueError(f"{name}: indices must lie in [0, {size}), got range "
                         f"[{idx.min().item()}, {idx.max().item()}]")
    return idx


def check_same_shape(ref: torch.Tensor, ref_name: str, **others: torch.Tensor) -> None:
    """Every tensor in ``others`` has exactly ``ref``'s shape (no silent broadcasting)."""
    for name, t in others.items():
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"{name}: shape {tuple(t.shape)} differs from {ref_name}'s {tuple(ref.shape)}")


def check_generator(generator, name: str, device: torch.device) -> None:
    """A ``torch.Generator`` (or None) that lives on ``device``: random numbers are drawn where the result lives."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: expected a torch.Generator, got {type(generator).__name__}")
    if torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"{name}: lives on {generator.device}, but the result is drawn on {device}")
