"""The user's own data files: labelled features, query → document pairs and user–item interactions.

Three loaders turn a file into the structures the training tasks consume; each is what a ``[data]`` section of a
run config names (``train``/``test``/``label``, ``train``/``query``/``positive``/``corpus``,
``train``/``user``/``item``/``time``):

* :func:`load_labelled_file` → :class:`~negkit.data.registry.DatasetSplits` (vectors or images with class ids);
* :func:`load_pairs_file` → :class:`~negkit.data.text.RetrievalData` (queries, documents, relevance);
* :func:`load_interactions_file` → :class:`~negkit.data.interactions.InteractionData` (leave-last-out split).

File formats are chosen by suffix (lower-case comparison): ``.csv`` (comma-separated, one header row),
``.parquet``, ``.jsonl`` (one JSON object per line; blank lines are skipped), ``.npz``, ``.npy`` and ``.pt``
(read with ``torch.load(weights_only=True)``). CSV and Parquet need pandas (and pyarrow for Parquet), installed
with ``pip install 'negkit[cli]'``; they are imported only when such a file is read.

Every problem with a file raises :class:`DataFileError` (a ``ValueError``) whose message starts with the file's
path and names, where it applies, the column and the row. **Rows are 1-based data rows**: row 1 is the first
record after a CSV's header (the header is not counted), the first row of a Parquet table, the first line of a
JSONL file (a JSONL file's row is its line number) and the first sample (index 0) of an array file.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from negkit._optional import require
from negkit.data.interactions import InteractionData
from negkit.data.registry import DatasetSplits, stratified_split
from negkit.data.text import RetrievalData, _build, normalise_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DataFileError", "load_interactions_file", "load_labelled_file", "load_pairs_file"]

logger = logging.getLogger(__name__)

LABELLED_SUFFIXES = (".csv", ".parquet", ".npz", ".npy", ".pt")
PAIRS_SUFFIXES = (".jsonl", ".csv", ".parquet")
CORPUS_SUFFIXES = (".jsonl", ".csv", ".parquet")
INTERACTION_SUFFIXES = (".csv", ".parquet")
FEATURE_ARRAY_NAMES = ("x", "features")  # which array of an NPZ/.pt dict holds the features when there are several
GROUP_COLUMN = "group"


class DataFileError(ValueError):
    """A data file that cannot be used as given.

    The message starts with the file's path and names, where it applies, the column and the 1-based data row
    (see the module docstring), e.g. ``wine.csv: column 'alcohol', row 7: non-numeric value 'n/a'``.
    """


# ------------------------------------------------------------------------------------------------ helpers


def _error(path: Path, message: str, *, column: str | None = None, row: int | None = None) -> DataFileError:
    where = [str(path)]
    if column is not None:
        where.append(f"column {column!r}")
    if row is not None:
        where.append(f"row {row}")
    return DataFileError(f"{', '.join(where)}: {message}")


def _closest(name: str, names: Sequence[str]) -> str | None:
    """The existing name most like ``name`` (a case-insensitive match first, then difflib), or ``None``."""
    for candidate in names:
        if candidate.lower() == name.lower():
            return candidate
    matches = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _missing_column(path: Path, column: str, columns: Sequence[str], role: str, kind: str = "column") -> DataFileError:
    closest = _closest(column, columns)
    hint = f" Did you mean {closest!r}?" if closest is not None else ""
    listed = ", ".join(repr(c) for c in columns) or "none"
    return _error(path, f"no {kind} {column!r} (the {role}).{hint} The file's {kind}s: {listed}")


def _check_columns(path: Path, columns: Sequence[str], wanted: dict[str, str], kind: str = "column") -> None:
    """Raise for the first ``{name: role}`` of ``wanted`` that is not in ``columns``."""
    for column, role in wanted.items():
        if column not in columns:
            raise _missing_column(path, column, columns, role, kind)


def _check_path(path: str | Path, suffixes: Sequence[str], what: str, *, folder_ok: bool = False) -> Path:
    """``path`` as a ``Path`` after checking that it exists, has a known suffix and is not empty."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found ({what})")
    if path.is_dir():
        if folder_ok:
            return path
        raise DataFileError(f"{path}: is a folder, not a file ({what})")
    if path.suffix.lower() not in suffixes:
        raise DataFileError(
            f"{path}: unknown suffix {path.suffix or '(none)'!r} for {what}; expected one of {', '.join(suffixes)}"
        )
    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: empty file")
    return path


def _is_missing(value: object) -> bool:
    """None, NaN, pandas' NA or NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    try:
        return bool(isinstance(value, float | np.floating) and math.isnan(value))
    except TypeError:
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _read_table(path: Path, *, as_text: bool = False) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame with string column names and at least one row.

    ``as_text`` (CSV only): every cell is read as the exact string written, empty cells as ``""`` (not NaN).
    pandas/pyarrow parse errors become :class:`DataFileError`.
    """
    suffix = path.suffix.lower()
    kind = "CSV" if suffix == ".csv" else "Parquet"
    pd = require("pandas", "cli", f"reading {kind} files")
    if suffix == ".parquet":
        require("pyarrow", "cli", "reading Parquet files")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str if as_text else None, keep_default_na=not as_text)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path}: empty file (no header, no rows)") from None
    except Exception as error:  # pandas and pyarrow raise many types (ParserError, ArrowInvalid, OSError, ...)
        raise DataFileError(f"{path}: cannot be read as {kind}: {_first_line(error)}") from error
    frame.columns = [str(column) for column in frame.columns]
    if len(frame) == 0:
        raise DataFileError(f"{path}: empty file: a header ({', '.join(frame.columns)}) but no data rows")
    return frame


def _numeric_columns(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """``[N, len(columns)]`` float64 values of the table's ``columns``; every cell must be a finite number.

    Raises :class:`DataFileError` for the first bad column (in order) naming its first bad row, what is wrong and
    how many of its rows are bad.
    """
    pd = require("pandas", "cli", "reading tables")
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    bad_columns: list[tuple[str, int, str, int]] = []
    for j, column in enumerate(columns):
        series = frame[column]
        missing = series.isna().to_numpy()
        numbers = pd.to_numeric(series, errors="coerce")
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        not_numeric = np.isnan(values) & ~missing
        bad = missing | not_numeric | ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            if missing[row]:
                problem = "missing value (empty cell or NaN)"
            elif not_numeric[row]:
                problem = f"non-numeric value {series.iloc[row]!r}"
            else:
                problem = f"non-finite value {series.iloc[row]!r}"
            bad_columns.append((column, row + 1, problem, int(bad.sum())))
        out[:, j] = values
    if bad_columns:
        column, row, problem, count = bad_columns[0]
        others = [name for name, *_ in bad_columns[1:]]
        also = f"; other bad feature columns: {', '.join(map(repr, others))}" if others else ""
        raise _error(
            path,
            f"{problem}: every column but the label must hold numbers ({count} bad rows in this column{also})",
            column=column,
            row=row,
        )
    return out


def _python(value: object) -> object:
    """A numpy scalar as the equivalent Python value (other values unchanged)."""
    return value.item() if isinstance(value, np.generic) else value


def _contiguous(values: Iterable[Hashable]) -> dict[Hashable, int]:
    """Ids ``0..n-1`` for the distinct values in sorted order (first-appearance order if they cannot be sorted)."""
    distinct = list(dict.fromkeys(values))
    with contextlib.suppress(TypeError):
        distinct = sorted(distinct)  # type: ignore[type-var]
    return {value: index for index, value in enumerate(distinct)}


# ------------------------------------------------------------------------------------------ labelled data


@dataclass(frozen=True)
class _Labelled:
    """One labelled file, read: raw features ``x`` (``[N, d]`` vectors or ``[N, C, H, W]`` images, numeric numpy)
    and the raw label values ``labels`` (``N`` Python values)."""

    path: Path
    x: np.ndarray
    labels: list[object]
    label_column: str
    feature_names: tuple[str, ...]  # table columns, or the array's name for array files
    images: bool
    table: bool  # features are named columns (CSV, Parquet, structured .npy), matched by name with a test file


def _label_key(path: Path, value: object, column: str, row: int) -> Hashable:
    """The class key of one label value: integral numbers → ``int``, other numbers → ``float``, text (bytes
    decoded as UTF-8) → ``str`` without surrounding whitespace, anything else → its ``str``."""
    value = _python(value)
    if isinstance(value, bytes):  # fixed-width byte strings of NumPy files
        value = value.decode("utf-8", errors="replace")
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        raise _error(path, "missing label", column=column, row=row)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(path, f"non-finite label {value!r}", column=column, row=row)
        return int(value) if value.is_integer() else value
    return value.strip() if isinstance(value, str) else str(value)


def _label_keys(data: _Labelled) -> list[Hashable]:
    return [_label_key(data.path, value, data.label_column, row) for row, value in enumerate(data.labels, start=1)]


def _sorted_classes(keys: Iterable[Hashable]) -> list[Hashable]:
    """Distinct class keys, numbers (in numeric order) before text (in string order)."""
    return sorted(set(keys), key=lambda key: (isinstance(key, str), key))


def _table_labelled(path: Path, frame: pd.DataFrame, label: str) -> _Labelled:
    columns = list(frame.columns)
    _check_columns(path, columns, {label: "label column"})
    features = [column for column in columns if column != label]
    if not features:
        raise _error(path, "no feature columns: every column but the label is a feature, and there is only the label")
    x = _numeric_columns(path, frame, features)
    return _Labelled(path, x, frame[label].tolist(), label, tuple(features), images=False, table=True)


def _finite_rows(path: Path, x: np.ndarray, name: str, images: bool) -> None:
    """Raise for the first sample of ``x`` that holds a NaN or ±inf."""
    finite = np.isfinite(x)
    if finite.all():
        return
    flat = finite.reshape(len(x), -1)
    row = int(np.argmin(flat.all(axis=1)))
    if images:
        raise _error(path, f"array {name!r} holds NaN or infinite pixel values", row=row + 1)
    column = int(np.argmin(flat[row]))
    raise _error(
        path,
        f"array {name!r}, feature {column} (0-based): {float(x[row, column])} is not a finite number",
        row=row + 1,
    )


def _arrays_labelled(path: Path, arrays: dict[str, np.ndarray], label: str) -> _Labelled:
    """An NPZ / .pt / structured-.npy dict of arrays: the label array and the features array."""
    names = list(arrays)
    if not names:
        raise DataFileError(f"{path}: empty file (no arrays)")
    _check_columns(path, names, {label: "label array"}, kind="array")
    others = [name for name in names if name != label]
    if len(others) == 1:
        feature_name = others[0]
    else:
        chosen = [name for name in FEATURE_ARRAY_NAMES if name in others]
        if not chosen:
            found = ", ".join(map(repr, others)) or "none"
            raise DataFileError(
                f"{path}: cannot tell which array holds the features: expected exactly one array besides the label "
                f"{label!r}, or one named 'x' or 'features'; found: {found}"
            )
        feature_name = chosen[0]
    x, labels = np.asarray(arrays[feature_name]), np.asarray(arrays[label])
    if x.dtype.kind not in "biuf":
        raise DataFileError(f"{path}: array {feature_name!r} is not numeric (dtype {x.dtype})")
    if x.ndim not in (2, 3, 4):
        raise DataFileError(
            f"{path}: array {feature_name!r} has shape {x.shape}; expected [N, d] feature vectors, [N, H, W] or "
            "[N, C, H, W] images"
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataFileError(f"{path}: label array {label!r} must be 1-D, one label per sample; got {labels.shape}")
    if len(labels) != len(x):
        raise DataFileError(
            f"{path}: label array {label!r} has {len(labels)} entries but features {feature_name!r} have {len(x)} rows"
        )
    if len(x) == 0:
        raise DataFileError(f"{path}: empty file (0 samples)")
    images = x.ndim > 2
    if x.dtype.kind == "f":
        _finite_rows(path, x, feature_name, images)
    return _Labelled(path, x, labels.tolist(), label, (feature_name,), images=images, table=False)


def _npy_labelled(path: Path, label: str) -> _Labelled:
    array = _load_npy(path)
    if array.dtype.names:  # a structured array: its fields are columns
        fields = list(array.dtype.names)
        _check_columns(path, fields, {label: "label field"}, kind="field")
        if all(array.dtype[name].shape == () for name in fields if name != label):
            pd = require("pandas", "cli", "reading structured .npy files")
            if array.ndim != 1 or len(array) == 0:
                raise DataFileError(f"{path}: a structured array must be 1-D with at least one row, got {array.shape}")
            frame = pd.DataFrame({name: array[name] for name in fields})
            return _table_labelled(path, frame, label)
        return _arrays_labelled(path, {name: array[name] for name in fields}, label)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise DataFileError(
            f"{path}: a plain .npy file must be a 2-D numeric array [N, d + 1] (or a structured array with named "
            f"fields); got dtype {array.dtype}, shape {array.shape}"
        )
    try:
        index = int(label)
    except ValueError:
        raise DataFileError(
            f"{path}: label {label!r} must be a column index such as '-1' (last column) or '0' for a plain 2-D .npy "
            "array (named labels need a structured array, NPZ or a table)"
        ) from None
    width = array.shape[1]
    if not -width <= index < width:
        raise DataFileError(f"{path}: label column index {index} is out of range for {width} columns")
    index %= width
    if width < 2:
        raise DataFileError(f"{path}: no feature columns: the array has only the label column")
    if len(array) == 0:
        raise DataFileError(f"{path}: empty file (0 rows)")
    x = np.delete(array, index, axis=1)
    if x.dtype.kind == "f":
        _finite_rows(path, x, "array", images=False)
    names = tuple(str(j) for j in range(width) if j != index)
    return _Labelled(path, x, array[:, index].tolist(), str(index), names, images=False, table=False)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataFileError(
                f"{path}: holds Python objects, which are not loaded (no pickle); save text as a fixed-width string "
                "array, e.g. np.asarray(labels, dtype=str)"
            ) from None
        raise DataFileError(f"{path}: cannot be read as .npy: {_first_line(error)}") from error
    except Exception as error:
        raise DataFileError(f"{path}: cannot be read as .npy: {_first_line(error)}") from error


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays: dict[str, np.ndarray] = {}
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    raise DataFileError(
                        f"{path}: array {name!r} holds Python objects, which are not loaded (no pickle); save text as "
                        "a fixed-width string array, e.g. np.asarray(labels, dtype=str)"
                    ) from None
            return arrays
    except DataFileError:
        raise
    except Exception as error:
        raise DataFileError(f"{path}: cannot be read as NPZ: {_first_line(error)}") from error


def _load_pt(path: Path) -> dict[str, np.ndarray]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataFileError(
            f"{path}: cannot be read as .pt (torch.load with weights_only=True): {_first_line(error)}"
        ) from error
    if not isinstance(content, dict) or not all(isinstance(key, str) for key in content):
        raise DataFileError(
            f"{path}: a .pt file must hold a dict {{name: tensor}} (e.g. {{'x': features, 'label': labels}}), "
            f"got {type(content).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, value in content.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            arrays[name] = (value.float() if value.dtype in (torch.bfloat16, torch.float16) else value).numpy()
        elif isinstance(value, np.ndarray | list | tuple):
            arrays[name] = np.asarray(value)
        else:
            raise DataFileError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor or a list")
    return arrays


def _read_labelled(path: Path, label: str) -> _Labelled:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        return _table_labelled(path, _read_table(path), label)
    if suffix == ".npz":
        return _arrays_labelled(path, _load_npz(path), label)
    if suffix == ".pt":
        return _arrays_labelled(path, _load_pt(path), label)
    return _npy_labelled(path, label)


def _align_test(train: _Labelled, test: _Labelled) -> np.ndarray:
    """The test features in the training file's layout (tables: the same feature columns, reordered by name)."""
    if train.table != test.table:
        raise DataFileError(
            f"{test.path}: a test file must be of the training file's kind ({train.path.name}: "
            f"{'a table' if train.table else 'arrays'}, this one: {'a table' if test.table else 'arrays'})"
        )
    if not train.table:
        if test.x.shape[1:] != train.x.shape[1:]:
            raise DataFileError(
                f"{test.path}: features of shape {list(test.x.shape[1:])} per sample do not match the training file "
                f"{train.path.name}'s {list(train.x.shape[1:])}"
            )
        return test.x
    missing = [name for name in train.feature_names if name not in test.feature_names]
    if missing:
        raise _missing_column(test.path, missing[0], (test.label_column, *test.feature_names), "a training feature")
    extra = [name for name in test.feature_names if name not in train.feature_names]
    if extra:
        raise _error(test.path, f"not a column of the training file {train.path.name}", column=extra[0])
    position = {name: j for j, name in enumerate(test.feature_names)}
    return test.x[:, [position[name] for name in train.feature_names]]


def _image_scale(x: np.ndarray) -> float:
    """255 if ``x`` looks like 0–255 pixel values (uint8, or integral values in [0, 255] with a maximum above 1),
    else 1."""
    if x.dtype == np.uint8:
        return 255.0
    if x.size == 0 or x.min() < 0 or x.max() > 255 or x.max() <= 1:
        return 1.0
    if x.dtype.kind in "iu" or bool(np.all(np.floor(x) == x)):
        return 255.0
    return 1.0


def _images(x: np.ndarray, scale: float) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64) / scale).float()
    return images.unsqueeze(1) if images.dim() == 3 else images


def load_labelled_file(
    train: str | Path,
    *,
    label: str,
    test: str | Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> DatasetSplits:
    """Labelled feature vectors or images from a file, as train/test :class:`DatasetSplits`.

    File conventions (by suffix):

    * ``.csv`` / ``.parquet``: a table; ``label`` names the label column and **every other column** is a
      feature and must hold finite numbers in every row (bool columns count as 0/1).
    * ``.npz`` / ``.pt``: a dict of arrays (``np.savez``) or of tensors/lists (``torch.save({...})``, read with
      ``weights_only=True``); ``label`` names the label array (``[N]``), the features are the one other array
      (or the one named ``x``, else ``features``, when there are several). Features ``[N, d]`` are vectors,
      ``[N, H, W]`` (one channel) or ``[N, C, H, W]`` are images. Text labels in NPZ must be a fixed-width
      string array (``np.asarray(labels, dtype=str)``): pickled objects are not loaded.
    * ``.npy``: either a **structured array** (``np.save`` of an array with named fields), read like a table
      (``label`` is a field name; the other scalar fields are the features; if they are sub-array fields, like
      an NPZ), or a **plain 2-D numeric array** ``[N, d + 1]`` whose label column is given by its index as text
      (``label = "-1"``: the last column, ``"0"``: the first); the other ``d`` columns are the features.

    Labels: class ids ``0..C−1`` follow the sorted distinct label values (numbers in numeric order, then text),
    integer labels included (``3, 7, 9`` → ``0, 1, 2``); :attr:`DatasetSplits.class_names` keeps the original
    values as text. Integral floats (``1.0``) count as integers; surrounding whitespace of text labels is ignored.

    Split: with ``test``, that file is the test split (the same format family: a table with the same feature
    columns, in any order, or arrays of the same shape; its labels must all occur in the training file).
    Without it, a seeded stratified split (:func:`~negkit.data.registry.stratified_split` with ``test_fraction``
    and ``seed``): every class needs at least 2 samples and must keep one on each side.

    Values: vectors are standardised with the **training split's** per-feature mean and (population) standard
    deviation, computed in float64; a constant feature gets standard deviation 1; returned float32 ``[N, d]``.
    Images are float32 ``[N, C, H, W]``, divided by 255 when they look like 0–255 pixel values (uint8, or
    integral values in ``[0, 255]`` with a maximum above 1; decided on the training file), else unchanged.

    Args:
        train: the (training) file.
        label: the label column / array / field, or the column index for a plain ``.npy`` array.
        test: an optional test file.
        test_fraction: share of each class held out when there is no test file, in ``(0, 1)``.
        seed: seed of that split.
        name: the dataset name for reports (default: the training file's stem).

    Returns:
        :class:`DatasetSplits` with ``train_x [N_train, d]`` (or ``[N_train, C, H, W]``), ``train_y [N_train]``
        int64, the same for test, ``num_classes = C``, ``class_names`` (``C`` strings) and a description naming
        the file(s), rows, features, classes and split.

    Raises:
        DataFileError: the file is missing, empty, of an unknown suffix or unreadable; the label column is
            missing (the message lists the existing columns and suggests the closest); a feature is NaN, infinite
            or not a number (column and row); a label is missing (row); there is only one class; a class has
            fewer than 2 samples for the split; a test file's columns, shape or labels do not match.
        ValueError: ``test_fraction`` outside ``(0, 1)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train_path = _check_path(train, LABELLED_SUFFIXES, "labelled data")
    train_data = _read_labelled(train_path, label)
    train_keys = _label_keys(train_data)
    classes = _sorted_classes(train_keys)
    if len(classes) < 2:
        raise _error(
            train_path,
            f"a single class ({classes[0]!r}) in all {len(train_keys)} rows; contrastive learning needs at least 2",
            column=train_data.label_column,
        )
    class_id = {key: index for index, key in enumerate(classes)}
    y = torch.tensor([class_id[key] for key in train_keys], dtype=torch.int64)

    if test is not None:
        test_path = _check_path(test, LABELLED_SUFFIXES, "labelled test data")
        test_data = _read_labelled(test_path, label)
        test_x_raw = _align_test(train_data, test_data)
        test_keys = _label_keys(test_data)
        for row, key in enumerate(test_keys, start=1):
            if key not in class_id:
                raise _error(
                    test_path,
                    f"label {key!r} does not occur in the training file {train_path.name}",
                    column=test_data.label_column,
                    row=row,
                )
        train_x_raw, train_y = train_data.x, y
        test_y = torch.tensor([class_id[key] for key in test_keys], dtype=torch.int64)
        split = f"test file {test_path.name} ({len(test_keys)} rows)"
    else:
        counts = torch.bincount(y, minlength=len(classes))
        for index in range(len(classes)):
            if counts[index] < 2:
                raise _error(
                    train_path,
                    f"class {classes[index]!r} has {int(counts[index])} sample; a stratified train/test split needs "
                    "at least 2 per class (add samples, drop the class or give a test file)",
                    column=train_data.label_column,
                )
        train_index, test_index = stratified_split(y, test_fraction, seed)
        left = torch.bincount(y[train_index], minlength=len(classes))
        if bool((left == 0).any()):
            index = int(torch.nonzero(left == 0)[0])
            raise _error(
                train_path,
                f"test_fraction {test_fraction} leaves no training sample of class {classes[index]!r} "
                f"({int(counts[index])} samples); use a smaller test_fraction",
                column=train_data.label_column,
            )
        train_x_raw, test_x_raw = train_data.x[train_index.numpy()], train_data.x[test_index.numpy()]
        train_y, test_y = y[train_index], y[test_index]
        split = f"seeded stratified split (test_fraction {test_fraction}, seed {seed})"

    if train_data.images:
        scale = _image_scale(train_data.x)
        train_x, test_x = _images(train_x_raw, scale), _images(test_x_raw, scale)
        shape = "×".join(map(str, train_x.shape[1:]))
        features = f"{shape} images" + (" (scaled from 0–255)" if scale != 1 else "")
    else:
        mean = train_x_raw.mean(axis=0)
        std = train_x_raw.std(axis=0)
        constant = train_x_raw.min(axis=0) == train_x_raw.max(axis=0)
        std = np.where(constant | (std == 0), 1.0, std)
        train_x = torch.from_numpy((train_x_raw - mean) / std).float()
        test_x = torch.from_numpy((test_x_raw - mean) / std).float()
        features = f"{train_x.shape[1]} features (standardised with the train mean/std)"

    names = tuple(str(key) for key in classes)
    shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    description = (
        f"{train_path.name} ({len(train_keys)} rows): {features}, {len(classes)} classes ({shown}); {split}: "
        f"{len(train_y)} train / {len(test_y)} test"
    )
    logger.info("loaded %s", description)
    return DatasetSplits(
        name=name or train_path.stem,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(classes),
        description=description,
        class_names=names,
    )


# ------------------------------------------------------------------------------------------- text pairs


@dataclass(frozen=True)
class _Records:
    """The rows of a file of records: its column names and an iterator of ``(row, {column: value})``."""

    columns: list[str]
    rows: Callable[[], Iterator[tuple[int, dict[str, Any]]]]


def _jsonl_records(path: Path) -> _Records:
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise _error(path, f"not valid JSON: {error.msg} (column {error.colno})", row=line_number) from None
                if not isinstance(record, dict):
                    raise _error(path, f"each line must be a JSON object, got {type(record).__name__}", row=line_number)
                records.append((line_number, record))
    except UnicodeDecodeError as error:
        raise DataFileError(f"{path}: not UTF-8 text: {error}") from None
    if not records:
        raise DataFileError(f"{path}: empty file (no JSON records)")
    columns = list(dict.fromkeys(key for _, record in records for key in record))
    return _Records(columns, lambda: iter(records))


def _table_records(path: Path) -> _Records:
    frame = _read_table(path, as_text=True)
    columns = list(frame.columns)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for row, values in enumerate(frame.itertuples(index=False, name=None), start=1):
            yield row, dict(zip(columns, values, strict=True))

    return _Records(columns, rows)


def _hf_records(path: Path) -> _Records:
    try:
        import datasets  # optional: a Hugging Face dataset saved with save_to_disk
    except ImportError:
        raise DataFileError(
            f"{path}: is a folder; a Hugging Face dataset folder needs the `datasets` package (pip install datasets)"
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as error:
        raise DataFileError(
            f"{path}: cannot be read as a Hugging Face dataset folder (datasets.load_from_disk): {_first_line(error)}"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" in loaded:
            loaded = loaded["train"]
        elif len(splits) == 1:
            loaded = loaded[splits[0]]
        else:
            raise DataFileError(f"{path}: a dataset with splits {', '.join(splits)}; need one named 'train'")
    if len(loaded) == 0:
        raise DataFileError(f"{path}: empty dataset (0 rows)")
    dataset = loaded
    columns = list(dataset.column_names)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for row, record in enumerate(dataset, start=1):
            yield row, dict(record)

    return _Records(columns, rows)


def _records(path: Path) -> _Records:
    if path.is_dir():
        return _hf_records(path)
    return _jsonl_records(path) if path.suffix.lower() == ".jsonl" else _table_records(path)


def _text(path: Path, value: object, column: str, row: int, what: str) -> str:
    """A non-empty, whitespace-normalised text cell."""
    value = _python(value)
    if _is_missing(value):
        raise _error(path, f"missing {what} text", column=column, row=row)
    if not isinstance(value, str):
        raise _error(path, f"{what} must be text, got {type(value).__name__} {value!r}", column=column, row=row)
    if not normalise_text(value):
        raise _error(path, f"empty {what} text", column=column, row=row)
    return value


def _positives(path: Path, value: object, column: str, row: int, *, json_lists: bool) -> list[str]:
    """The positive texts of one row: a string or a list of strings (``json_lists``: a string ``[...]`` is a
    JSON-encoded list)."""
    value = _python(value)
    if isinstance(value, str) and json_lists and value.strip().startswith("[") and value.strip().endswith("]"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise _error(
                path,
                f"bad list of positives: a cell starting with '[' is read as a JSON list of strings, and this one "
                f"is not valid JSON ({error.msg}); quote the text differently if it is a single document",
                column=column,
                row=row,
            ) from None
    if isinstance(value, str) or _is_missing(value):
        return [_text(path, value, column, row, "positive")]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise _error(
            path, f"positive must be a string or a list of strings, got {type(value).__name__}", column=column, row=row
        )
    if not value:
        raise _error(path, "bad list of positives: the list is empty", column=column, row=row)
    for item in value:
        if not isinstance(item, str):
            raise _error(
                path,
                f"bad list of positives: an entry is {type(item).__name__} {item!r}, not a string",
                column=column,
                row=row,
            )
    return [_text(path, item, column, row, "positive") for item in value]


def _corpus(path: Path) -> list[str]:
    """The texts of a corpus file (columns ``id`` and ``text``; ids distinct)."""
    records = _records(path)
    _check_columns(path, records.columns, {"id": "document id column", "text": "document text column"})
    seen: dict[str, int] = {}
    texts = []
    for row, record in records.rows():
        if "id" not in record or _is_missing(record["id"]) or not str(_python(record["id"])).strip():
            raise _error(path, "missing document id", column="id", row=row)
        key = str(_python(record["id"])).strip()
        if key in seen:
            raise _error(path, f"duplicate id {key!r} (first at row {seen[key]})", column="id", row=row)
        seen[key] = row
        texts.append(_text(path, record.get("text"), "text", row, "document"))
    return texts


def load_pairs_file(
    train: str | Path,
    *,
    query: str,
    positive: str,
    corpus: str | Path | None = None,
    name: str | None = None,
) -> RetrievalData:
    """Query → document pairs from a file, as :class:`RetrievalData`.

    File conventions:

    * ``.jsonl`` (one JSON object per line), ``.csv``, ``.parquet``, or a folder written by a Hugging Face
      ``Dataset.save_to_disk`` (read with ``datasets.load_from_disk`` when ``datasets`` is installed; of a
      ``DatasetDict``, the ``train`` split). ``query`` and ``positive`` name the columns (fields).
    * ``positive`` holds one document text, or a list of texts, per row: a JSON list in JSONL, a list column in
      Parquet / Hugging Face. In CSV, a cell whose text starts with ``[`` and ends with ``]`` is read as a
      JSON-encoded list of strings (``["first doc", "second doc"]``, quoted for CSV); any other cell is one text.
    * A query text may repeat over rows (long format: one row per positive): rows with the same normalised text
      are one query, relevant to all of their positives (its group is that of its first row).
    * A column named ``group``, if present, gives each query's group (e.g. a topic, for per-group analysis);
      otherwise every group is ``""``.
    * ``corpus`` (optional; ``.jsonl``, ``.csv`` or ``.parquet``) with columns ``id`` and ``text`` adds
      distractor documents (ids must be distinct; a text equal to a positive is the same document). Without it
      the corpus is the set of positives.

    Texts are whitespace-normalised (:func:`~negkit.data.text.normalise_text`) and documents deduplicated by
    text, as for the built-in retrieval datasets.

    Returns:
        :class:`RetrievalData` with one query per distinct query text (``relevant[i]`` the sorted ids of all its
        positives), documents = the positives in order of first appearance, then the corpus's new texts.

    Raises:
        DataFileError: the file is missing, empty, of an unknown suffix or unreadable; a column is missing
            (lists the existing ones, suggests the closest); a query or positive text is missing or empty (row);
            a positive list is bad (row); fewer than 2 distinct queries; a corpus lacks ``id``/``text``, has an
            empty text or a duplicate id (row).
    """
    train_path = _check_path(train, PAIRS_SUFFIXES, "query → document pairs", folder_ok=True)
    records = _records(train_path)
    _check_columns(train_path, records.columns, {query: "query column", positive: "positive column"})
    has_group = GROUP_COLUMN in records.columns and GROUP_COLUMN not in (query, positive)
    json_lists = not train_path.is_dir() and train_path.suffix.lower() == ".csv"
    triples: list[tuple[str, str, str]] = []
    num_rows = 0
    for row, record in records.rows():
        num_rows += 1
        if query not in record:
            raise _error(train_path, f"no field {query!r} in this record", column=query, row=row)
        if positive not in record:
            raise _error(train_path, f"no field {positive!r} in this record", column=positive, row=row)
        query_text = _text(train_path, record[query], query, row, "query")
        group_value = _python(record.get(GROUP_COLUMN)) if has_group else ""
        group = "" if _is_missing(group_value) else str(group_value)
        for text in _positives(train_path, record[positive], positive, row, json_lists=json_lists):
            triples.append((query_text, text, group))
    distinct = {normalise_text(text) for text, _, _ in triples}
    if len(distinct) < 2:
        raise DataFileError(f"{train_path}: {len(distinct)} distinct query text; need at least 2 (train and test)")

    extra: list[str] = []
    source = f"{train_path.name} ({num_rows} rows"
    if corpus is not None:
        corpus_path = _check_path(corpus, CORPUS_SUFFIXES, "corpus of documents")
        extra = _corpus(corpus_path)
        source += f"; corpus {corpus_path.name}: {len(extra)} documents"
    data = _build(name or train_path.stem, triples, source + ")", extra_documents=extra, unique_queries=True)
    logger.info("loaded %s", data.description)
    return data


# ------------------------------------------------------------------------------------------- interactions


def _time_values(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """``[N]`` float64 times: numbers as written, or dates/times (any format pandas parses) as UTC nanoseconds."""
    pd = require("pandas", "cli", "reading tables")
    series = frame[column]
    missing = series.isna().to_numpy()
    if missing.any():
        raise _error(path, "missing time value", column=column, row=int(np.argmax(missing)) + 1)
    if pd.api.types.is_bool_dtype(series):
        raise _error(path, "time must be numbers or dates, not true/false", column=column)
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64)
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        not_numbers = numbers.isna().to_numpy()
        if not not_numbers.any():
            values = numbers.to_numpy(dtype=np.float64)
        elif not not_numbers.all():  # mostly numbers: the others are typos, not dates
            row = int(np.argmax(not_numbers))
            raise _error(
                path,
                f"time {series.iloc[row]!r} is neither a number nor a date (other rows hold numbers)",
                column=column,
                row=row + 1,
            )
        else:
            try:
                dates = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
            except Exception as error:
                raise _error(path, f"times cannot be parsed: {_first_line(error)}", column=column) from error
            bad = dates.isna().to_numpy()
            if bad.any():
                row = int(np.argmax(bad))
                raise _error(
                    path, f"time {series.iloc[row]!r} is neither a number nor a date", column=column, row=row + 1
                )
            values = dates.astype("int64").to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise _error(path, "non-finite time value", column=column, row=int(np.argmin(finite)) + 1)
    return values


def _ids(path: Path, frame: pd.DataFrame, column: str, what: str) -> list[Hashable]:
    series = frame[column]
    missing = series.isna().to_numpy()
    if missing.any():
        raise _error(path, f"missing {what} id", column=column, row=int(np.argmax(missing)) + 1)
    values = [_python(value) for value in series.tolist()]
    for row, value in enumerate(values, start=1):
        if not isinstance(value, Hashable):
            raise _error(path, f"{what} id {value!r} is not a single value", column=column, row=row)
    return values


def load_interactions_file(
    train: str | Path,
    *,
    user: str,
    item: str,
    time: str | None = None,
    name: str | None = None,
) -> InteractionData:
    """Implicit feedback (one row per user–item interaction) from a CSV or Parquet file, as
    :class:`InteractionData` with a leave-last-out split.

    Conventions:

    * ``user`` and ``item`` name the id columns; ids may be any values (numbers, text) and are mapped to
      contiguous ids ``0..U−1`` / ``0..I−1`` in sorted order of the values (first-appearance order if they
      cannot be sorted). Every other column (ratings, ...) is ignored: every row is a positive.
    * ``time`` (optional) names a column of numbers (e.g. Unix seconds) or dates/times. Each user's last
      interaction by time (ties: the later row in the file) is the user's test item, the others are training
      interactions. Without ``time`` the file's row order is the time order (the last row of a user is its test).
    * Duplicate (user, item) rows: only the earliest is kept (by time, then row order); the others are dropped
      and counted in the description.
    * A user with fewer than 2 distinct items cannot have both a training and a test item: such users are
      dropped (counted in the description). The items stay: the item universe is every item in the file.
    * No side features: ``user_features`` is long ``[U, 0]``, ``user_feature_sizes = ()``, ``item_features``
      is float ``[I, 0]`` (train the two-tower model with ``features = false``). Nothing is hidden
      (``hidden_users``/``hidden_items`` are empty).

    Returns:
        :class:`InteractionData`: ``train_users``/``train_items`` ``[N]`` in time order (ties in file order),
        ``test_items [U]``, ``known [U, I]`` (every kept interaction).

    Raises:
        DataFileError: the file is missing, empty, of an unknown suffix or unreadable; a column is missing (lists
            the existing ones, suggests the closest); a user, item or time value is missing or a time is not a
            number or date (row); fewer than 2 users have at least 2 distinct items.
    """
    path = _check_path(train, INTERACTION_SUFFIXES, "user–item interactions")
    frame = _read_table(path)
    wanted = {user: "user column", item: "item column"}
    if time is not None:
        wanted[time] = "time column"
    _check_columns(path, list(frame.columns), wanted)
    if user == item:
        raise DataFileError(f"{path}: user and item must be two different columns, both are {user!r}")
    users_raw, items_raw = _ids(path, frame, user, "user"), _ids(path, frame, item, "item")
    num_rows = len(frame)
    rows = np.arange(num_rows)
    times = _time_values(path, frame, time) if time is not None else rows.astype(np.float64)

    item_id = _contiguous(items_raw)
    all_user_id = _contiguous(users_raw)
    user_codes = np.array([all_user_id[value] for value in users_raw], dtype=np.int64)
    item_codes = np.array([item_id[value] for value in items_raw], dtype=np.int64)

    # chronological order within each user: by (user, time, row)
    order = np.lexsort((rows, times, user_codes))
    pair = user_codes[order] * len(item_id) + item_codes[order]
    _, first = np.unique(pair, return_index=True)
    keep = np.zeros(len(order), dtype=bool)
    keep[first] = True  # the earliest row of each (user, item)
    duplicates = num_rows - int(keep.sum())
    order = order[keep]

    per_user = np.bincount(user_codes[order], minlength=len(all_user_id))
    kept_users = per_user >= 2
    dropped_users = int((~kept_users).sum())
    if int(kept_users.sum()) < 2:
        raise DataFileError(
            f"{path}: only {int(kept_users.sum())} of {len(all_user_id)} users have at least 2 distinct items "
            f"(column {item!r}); leave-last-out needs at least 2 such users"
        )
    new_user = np.cumsum(kept_users) - 1  # old user code -> new contiguous id (for kept users)
    order = order[kept_users[user_codes[order]]]
    users = torch.from_numpy(new_user[user_codes[order]])
    items = torch.from_numpy(item_codes[order])
    num_users, num_items = int(kept_users.sum()), len(item_id)

    counts = torch.bincount(users, minlength=num_users)
    last = torch.cumsum(counts, 0) - 1
    test_items = items[last]
    is_train = torch.ones(len(order), dtype=torch.bool)
    is_train[last] = False
    train_order = np.lexsort((rows[order][is_train.numpy()], times[order][is_train.numpy()]))
    train_users = users[is_train][torch.from_numpy(train_order)]
    train_items = items[is_train][torch.from_numpy(train_order)]

    known = torch.zeros(num_users, num_items, dtype=torch.bool)
    known[users, items] = True
    split = f"by {time!r}" if time is not None else "by row order"
    description = (
        f"{path.name} ({num_rows} rows; {duplicates} duplicate (user, item) rows dropped, earliest kept; "
        f"{dropped_users} users with fewer than 2 distinct items dropped): {num_users} users, {num_items} items; "
        f"leave-last-out {split}: {len(train_users)} train, {num_users} test"
    )
    logger.info("loaded %s", description)
    empty = torch.zeros(0, dtype=torch.int64)
    return InteractionData(
        name=name or path.stem,
        num_users=num_users,
        num_items=num_items,
        train_users=train_users,
        train_items=train_items,
        test_items=test_items,
        hidden_users=empty,
        hidden_items=empty.clone(),
        known=known,
        user_features=torch.zeros(num_users, 0, dtype=torch.int64),
        user_feature_sizes=(),
        item_features=torch.zeros(num_items, 0),
        description=description,
    )
