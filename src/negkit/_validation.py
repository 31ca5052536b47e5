"""Input checks, the degenerate-batch policy and safe normalisation, shared by every public entry point.

Every check raises ``ValueError`` with a message that names the offending argument, so that a bad call fails
loudly instead of producing a NaN or a silent zero further down.

**Malformed** input (wrong shapes, dtypes or devices, non-finite values, arguments out of range) is always an
error. **Degenerate but legal** batches (empty, a single row, no positive pair, an anchor with no negative left
after masking) are not: by default every loss gives such anchors a loss of 0, leaves them out of the mean, and
counts them (:func:`count_skipped`, and ``.skipped_anchors`` on the modules); in *strict mode*
(:func:`set_strict`, or the :func:`strict` context manager) they raise :class:`DegenerateBatchError` instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
SIMILARITIES = ("cosine", "dot")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_similarity(similarity: str) -> None:
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


def _real(name: str, value: object) -> float:
    """``value`` as a float: a real number (not a bool or a string) or a one-element real tensor."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a real number, got a tensor of dtype {value.dtype}")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def check_positive_scalar(name: str, value: float | Tensor) -> float:
    """Return ``value`` as a float after checking that it is finite and > 0 (temperatures, sigma)."""
    value_f = _real(name, value)
    if not math.isfinite(value_f) or value_f <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value_f}")
    return value_f


def check_finite_scalar(
    name: str, value: float, *, low: float | None = None, high: float | None = None, high_inclusive: bool = True
) -> float:
    value_f = _real(name, value)
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
        check_finite(**{name: x})
    return x


def check_finite(**tensors: Tensor | None) -> None:
    """Raise ``ValueError`` naming the first argument that holds a NaN or an inf; ``None`` entries are ignored.

    One cheap pass and one host synchronisation for all of them: the sum of every tensor is finite unless one
    holds a non-finite value (NaN and ±inf propagate through a sum) or the sum overflowed; only then are the
    entries counted, one tensor at a time, to name the offender (an overflow alone raises nothing). Skipped
    inside :func:`fast_checks` (shapes, dtypes and arguments are still checked).
    """
    if not value_checks():
        return
    present = [(name, x) for name, x in tensors.items() if x is not None and x.numel()]
    if not present:
        return
    total = present[0][1].detach().sum()
    for _, x in present[1:]:
        total = total + x.detach().sum()
    if bool(torch.isfinite(total)):
        return
    for name, x in present:
        bad = count_non_finite(x)
        if bad:
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


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
        if value_checks() and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must contain only 0 and 1")
        mask = mask != 0
    return mask.to(device)


def format_rows(rows: Tensor, limit: int = 10) -> str:
    """Format the indices of the True entries of a 1-D bool tensor for an error message."""
    idx = torch.nonzero(rows, as_tuple=False).flatten().tolist()
    shown = ", ".join(str(i) for i in idx[:limit])
    more = f", ... ({len(idx)} in all)" if len(idx) > limit else ""
    return f"[{shown}{more}]"


def check_ids(name: str, ids: object, length: int | None = None) -> Tensor:
    """Check a 1-D tensor of integer ids or indices (not float, complex or bool) of the given length."""
    if not isinstance(ids, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer ids, got {type(ids).__name__}")
    if ids.dim() != 1 or (length is not None and ids.shape[0] != length):
        expected = f"[{length}]" if length is not None else "1-D"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer ids, got dtype {ids.dtype}")
    return ids


def check_features(name: str, x: object, ndim: int | Sequence[int], *, finite: bool = True) -> Tensor:
    """:func:`check_tensor` for embeddings: also at least one feature (last dimension >= 1)."""
    x = check_tensor(name, x, ndim, finite=finite)
    if x.shape[-1] < 1:
        raise ValueError(f"{name} must have at least 1 feature (last dimension), got shape {tuple(x.shape)}")
    return x


def check_pair(
    first: object, second: object, names: tuple[str, str] = ("anchor", "positive"), *, finite: bool = True
) -> None:
    """Check two paired ``[B,d]`` feature tensors (row i of one goes with row i of the other): both finite and
    floating, the same shape, dtype family and device. ``names`` are the arguments' names for the messages.
    ``finite=False`` leaves the value scan to the caller (to batch it with other tensors in one
    :func:`check_finite`)."""
    check_features(names[0], first, 2, finite=False)
    check_tensor(names[1], second, 2, finite=False)
    if second.shape != first.shape:
        raise ValueError(
            f"{names[1]} must have the shape of {names[0]} {tuple(first.shape)}, got {tuple(second.shape)}"
        )
    check_compatible(names[0], first, **{names[1]: second})
    if finite:
        check_finite(**{names[0]: first, names[1]: second})


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking ``low <= value [<= high]``; bools and floats are refused."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value.__index__())
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


# ------------------------------------------------------------------------------------ safe L2 normalisation

#: Rows whose L2 norm is below this (or overflows) are normalised through their max-abs scale instead.
_NORM_FLOOR = 1e-12


def normalize_rows(x: Tensor, dim: int = -1) -> Tensor:
    """``x / ‖x‖`` along ``dim``, scale-invariant: the same direction for ``x · 1e30`` and ``x · 1e-30``.

    Rows whose norm is finite and at least ``1e-12`` are computed exactly as ``F.normalize(x, dim=dim)`` (same
    value and gradient). A row whose squared norm overflows (``|x| ≳ 1e19`` in float32) or is too small for
    ``F.normalize``'s ``eps`` is first divided by its largest absolute entry (a constant of the backward pass,
    so the gradient is the exact ``(I − u uᵀ) / ‖x‖``). An all-zero row has no direction: it is returned as
    zeros (its cosine similarity to anything is 0) and receives a zero gradient, never ``1/eps``.
    """
    norm = x.norm(p=2.0, dim=dim, keepdim=True)
    if norm.numel() == 0:
        return x / norm.clamp_min(_NORM_FLOOR).expand_as(x)
    low, high = torch.aminmax(norm.detach())  # one reduction for both bounds (NaN fails both tests)
    if bool(low >= _NORM_FLOOR) and bool(high < math.inf):
        return x / norm.clamp_min(_NORM_FLOOR).expand_as(x)  # F.normalize's own arithmetic, the norm reused
    bad = ~(norm >= _NORM_FLOOR) | torch.isinf(norm)
    scale = x.detach().abs().amax(dim=dim, keepdim=True)
    zero = scale == 0
    scaled = x / torch.where(zero, torch.ones_like(scale), scale)
    scaled_norm = scaled.norm(p=2.0, dim=dim, keepdim=True)
    rescued = scaled / torch.where(zero, torch.ones_like(scaled_norm), scaled_norm)
    plain_x = torch.where(bad, torch.ones_like(x), x)  # keep inf/0 norms out of the unused branch's backward
    plain = F.normalize(plain_x, dim=dim)
    out = torch.where(bad, rescued, plain)
    return out.masked_fill(zero, 0.0)


def check_logits_finite(logits: Tensor, *, similarity: str, temperature: float | Tensor, names: str) -> None:
    """Raise ``ValueError`` if ``similarity / temperature`` overflowed the compute dtype."""
    if bool(torch.isfinite(logits).all()):
        return
    value = float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)
    hint = "scale the inputs down or use similarity='cosine'" if similarity == "dot" else "raise temperature"
    raise ValueError(
        f"the logits similarity({names}) / temperature overflow {logits.dtype} (similarity={similarity!r}, "
        f"temperature={value:g}); {hint}"
    )


# ------------------------------------------------------------------------------------- fast checks

_FAST_DEFAULT = [False]
_FAST_OVERRIDE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("negkit_fast_checks", default=None)


def set_fast_checks(flag: bool = True) -> None:
    """Process-wide: skip the checks that read every value (non-finite inputs, 0/1 masks) on the hot path
    (``True``), or run them (``False``, the default). Shapes, dtypes, devices and arguments are checked either
    way, and the degenerate-batch policy is unchanged. A :func:`fast_checks` block overrides it.

    With the value checks off a NaN or inf in the inputs is not reported: the loss comes out NaN (or, for an
    anchor the loss skips, is silently 0). Use it once a pipeline is known to produce finite embeddings.
    """
    _FAST_DEFAULT[0] = bool(flag)


def value_checks() -> bool:
    """Whether the checks that scan every value run here (not inside :func:`fast_checks` / after
    :func:`set_fast_checks`)."""
    override = _FAST_OVERRIDE.get()
    return not (_FAST_DEFAULT[0] if override is None else override)


@contextlib.contextmanager
def fast_checks(flag: bool = True) -> Iterator[None]:
    """``with fast_checks():`` the value scans (non-finite inputs) are skipped inside the block; see
    :func:`set_fast_checks` (``fast_checks(False)`` turns them back on)."""
    token = _FAST_OVERRIDE.set(bool(flag))
    try:
        yield
    finally:
        _FAST_OVERRIDE.reset(token)


# ----------------------------------------------------------------------------------- degenerate batches


class DegenerateBatchError(ValueError):
    """A legal but degenerate batch (empty, one row, no positive pair, no negative left) in strict mode."""


_STRICT_DEFAULT = [False]
_STRICT_OVERRIDE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("negkit_strict", default=None)


def set_strict(flag: bool = True) -> None:
    """Process-wide: degenerate batches raise :class:`DegenerateBatchError` (``True``) or give a loss of 0
    (``False``, the default). A :func:`strict` block overrides it."""
    _STRICT_DEFAULT[0] = bool(flag)


def is_strict() -> bool:
    """Whether degenerate batches raise here (the innermost :func:`strict` block, else :func:`set_strict`)."""
    override = _STRICT_OVERRIDE.get()
    return _STRICT_DEFAULT[0] if override is None else override


@contextlib.contextmanager
def strict(flag: bool = True) -> Iterator[None]:
    """``with strict():`` degenerate batches raise inside the block (``strict(False)``: they give 0)."""
    token = _STRICT_OVERRIDE.set(bool(flag))
    try:
        yield
    finally:
        _STRICT_OVERRIDE.reset(token)


@dataclass
class SkipCounter:
    """Anchors skipped by the losses called inside a :func:`count_skipped` block.

    Attributes:
        anchors: anchors that contributed nothing (loss 0, left out of the mean): no positive, or no negative
            left after masking. Two-view losses count each view as an anchor, symmetric InfoNCE each direction.
        calls: loss calls recorded.
    """

    anchors: int = 0
    calls: int = 0


_COUNTERS: contextvars.ContextVar[tuple[SkipCounter, ...]] = contextvars.ContextVar("negkit_skips", default=())


@contextlib.contextmanager
def count_skipped() -> Iterator[SkipCounter]:
    """``with count_skipped() as skipped: loss = info_nce(...)`` — then ``skipped.anchors`` is the number of
    anchors the losses in the block skipped (blocks nest; each counts every call inside it)."""
    counter = SkipCounter()
    token = _COUNTERS.set((*_COUNTERS.get(), counter))
    try:
        yield counter
    finally:
        _COUNTERS.reset(token)


def record_skipped(count: int) -> None:
    """Add ``count`` skipped anchors (of one loss call) to every active :func:`count_skipped` block."""
    for counter in _COUNTERS.get():
        counter.anchors += int(count)
        counter.calls += 1


def degenerate(message: str) -> None:
    """Raise :class:`DegenerateBatchError` with ``message`` in strict mode; do nothing otherwise."""
    if is_strict():
        raise DegenerateBatchError(message)
