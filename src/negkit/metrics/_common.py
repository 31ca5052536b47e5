"""Input checks and small helpers shared by the :mod:`negkit.metrics` functions.

Every check raises ``ValueError`` with a message that names the offending argument. The generic tensor checks
come from :mod:`negkit._validation`; what is specific to evaluation (embedding matrices that must be
L2-normalisable, non-negative class ids, neighbour counts, chunk sizes) lives here.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

import torch
from torch import Tensor

from negkit._validation import check_labels, check_tensor, normalize_rows

DEFAULT_CHUNK_SIZE = 1024


def check_int(name: str, value: object, *, low: int, high: int | None = None, high_note: str = "") -> int:
    """Return ``value`` as an ``int`` after checking ``low <= value [<= high]``.

    Anything with ``__index__`` (Python, NumPy or 0-d torch integers) is accepted; bools and floats are not.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        note = f" ({high_note})" if high_note else ""
        raise ValueError(f"{name} must be <= {high}{note}, got {value}")
    return value


def check_chunk_size(chunk_size: object) -> int:
    return check_int("chunk_size", chunk_size, low=1)


def check_embeddings(name: str, x: object, *, min_rows: int = 1, cosine: bool = True) -> Tensor:
    """Check an ``[N,d]`` floating embedding matrix: finite, ``N >= min_rows``, ``d >= 1``, and (for cosine
    similarity) no all-zero row.

    An all-zero row has no direction, so its cosine similarity to anything is undefined; it is rejected
    rather than silently normalised to the zero vector.
    """
    x = check_tensor(name, x, 2)
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 feature column, got shape {tuple(x.shape)}")
    if not cosine:
        return x
    zero_rows = ~(x != 0).any(dim=1)
    if bool(zero_rows.any()):
        first = int(torch.nonzero(zero_rows)[0, 0])
        raise ValueError(
            f"{name} has {int(zero_rows.sum())} all-zero row(s) (first: row {first}); cosine similarity is undefined"
        )
    return x


def check_same_dim(name: str, x: Tensor, reference_name: str, reference: Tensor) -> None:
    """Check that ``x`` has ``reference``'s feature dimension and device."""
    if x.shape[1] != reference.shape[1]:
        raise ValueError(
            f"{name} must have {reference.shape[1]} features like {reference_name}, got shape {tuple(x.shape)}"
        )
    if x.device != reference.device:
        raise ValueError(f"{name} is on {x.device} but {reference_name} is on {reference.device}")


def check_class_ids(name: str, labels: object, length: int, device: torch.device) -> Tensor:
    """Check a ``[length]`` vector of non-negative integer class ids; return it (int64) on ``device``."""
    labels = check_labels(name, labels, length, device)
    if labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    if labels.numel() > 0 and int(labels.min()) < 0:
        raise ValueError(f"{name} must hold non-negative class ids, got a minimum of {int(labels.min())}")
    return labels.long()


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is promoted for the similarity work)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def normalise(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Rows of ``x [N,d]`` cast to ``dtype`` and scaled to unit L2 norm, scale-invariantly (rows ``× 1e30`` or
    ``× 1e-30`` have the same direction; :func:`negkit._validation.normalize_rows`)."""
    return normalize_rows(x.to(dtype), dim=1)


def chunks(n: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` bounds that cover ``range(n)`` in pieces of at most ``chunk_size``."""
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)
