"""Input checks shared by every public entry point.

Every check raises ``ValueError`` with a message that names the offending argument, so that a bad call fails
loudly instead of producing a NaN or a silent zero further down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
SIMILARITIES = ("cosine", "dot")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_similarity(similarity: str) -> None:
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


def check_positive_scalar(name: str, value: float | Tensor) -> float:
    """Return ``value`` as a float after checking that it is finite and > 0 (temperatures, sigma)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value_f = float(value.detach())
    else:
        value_f = float(value)
    if not math.isfinite(value_f) or value_f <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value_f}")
    return value_f


def check_finite_scalar(
    name: str, value: float, *, low: float | None = None, high: float | None = None, high_inclusive: bool = True
) -> float:
    value_f = float(value)
    if not math.isfinite(value_f):
        raise ValueError(f"{name} must be finite, got {value_f}")
    if low is not None and value_f < low:
        raise ValueError(f"{name} must be >= {low}, got {value_f}")
    if high is not None and (value_f > high or (not high_inclusive and value_f == high)):
        bound = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {bound} {high}, got {value_f}")
    return value_f


def check_tensor(name: str, x: object, ndim: int | Sequence[int], *, finite: bool = True) -> Tensor:
    """Check that ``x`` is a floating tensor with one of the allowed numbers of dimensions and finite values."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.dim() not in allowed:
        shapes = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} must be {shapes}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if finite:
        bad = count_non_finite(x)
        if bad:
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return x


def count_non_finite(x: Tensor, chunk: int = 1 << 22) -> int:
    """Number of NaN/inf entries, checked ``chunk`` elements at a time (no full-size temporary mask)."""
    flat = x.detach().reshape(-1)
    if flat.numel() <= chunk:
        return int((~torch.isfinite(flat)).sum())
    return sum(int((~torch.isfinite(flat[i : i + chunk])).sum()) for i in range(0, flat.numel(), chunk))


def check_compatible(reference_name: str, reference: Tensor, **others: Tensor | None) -> None:
    """Check that every tensor in ``others`` shares ``reference``'s dtype and device."""
    for name, other in others.items():
        if other is None:
            continue
        if other.device != reference.device:
            raise ValueError(
                f"{name} is on {other.device} but {reference_name} is on {reference.device}; "
                "move them to the same device"
            )
        if other.dtype != reference.dtype:
            raise ValueError(
                f"{name} has dtype {other.dtype} but {reference_name} has dtype {reference.dtype}; "
                "cast them to the same dtype"
            )


def check_labels(name: str, labels: object, length: int, device: torch.device) -> Tensor:
    """Check a 1-D integer label vector of the given length; return it on ``device``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer class ids, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != length:
        raise ValueError(f"{name} must have shape [{length}], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    return labels.to(device)


def check_mask(name: str, mask: object, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Check a 0/1 (or bool) mask of the given shape; return it as a bool tensor on ``device``."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must contain only 0 and 1")
        mask = mask != 0
    return mask.to(device)


def format_rows(rows: Tensor, limit: int = 10) -> str:
    """Format the indices of the True entries of a 1-D bool tensor for an error message."""
    idx = torch.nonzero(rows, as_tuple=False).flatten().tolist()
    shown = ", ".join(str(i) for i in idx[:limit])
    more = f", ... ({len(idx)} in all)" if len(idx) > limit else ""
    return f"[{shown}{more}]"
