"""Embeddings on disk: a row reader for ``.npy`` files and a sharded, resumable encoding cache.

**Reading** (:class:`NpyRows`): a 2-D ``.npy`` file (float16/float32/float64, C order) is read by row ranges with
plain file reads, so streaming a 10⁷-row corpus does not map it into the process (its pages stay in the page cache,
not in the resident set); scattered rows (positives, candidates) are read run by run (consecutive rows in one read),
not through a memory map: the kernel maps 64 KB around each page a map touches, so 3·10⁵ scattered rows of a 15 GB
file put all 15 GB in the process's resident set (measured: 14 GB peak RSS refining an ``ivfpq`` search at 10⁷).
Every run is first announced to the kernel (``posix_fadvise(WILLNEED)``), which then reads them concurrently: 10⁵
scattered rows of a 15 GB file not in the page cache took about 2 s instead of 53 s one synchronous read after
another.

**Encoding** (:func:`encode_cached`): texts are encoded in shards of ``shard_size`` texts; each shard is written
atomically as ``shard-00000.npy`` in a cache folder named by the encoder, the sequence length, the dtype and a
SHA-256 of the texts, so that:

* a killed run finds the finished shards and encodes only the others (no work is lost but the shard in flight);
* the same texts with the same model are never encoded twice (another ``--out``, another run);
* under ``torchrun`` rank ``r`` of ``W`` encodes shards ``r, r + W, ...`` (the cache folder must be on a file
  system every rank sees); rank 0 then joins the shards into ``embeddings.npy`` (a memory-mapped ``.npy`` written
  shard by shard: peak memory is one shard, whatever the corpus) and removes them.

Embeddings are L2-normalised by the encoder (cosine similarity = inner product) and stored as float32, or float16
with ``float16=True`` (half the disk and I/O; scores then differ from float32 by ~1e-3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from negkit.io import atomic_write, write_json
from negkit.mining.inputs import MiningError

__all__ = ["NpyRows", "encode_cached", "encoder_name", "open_embeddings"]

logger = logging.getLogger(__name__)

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: (stage, done, total): called after every shard (and every search block) that finished; may raise to stop a run
Callback = Callable[[str, int, int], None]


class NpyRows:
    """Rows of a 2-D ``.npy`` file: ``read(start, stop)`` ``[stop − start, d]`` and ``take(rows)`` ``[r, d]``,
    both float32 (copies; the file is never loaded whole).

    Raises:
        MiningError: not a readable ``.npy``, not 2-D, not float16/32/64, Fortran order, or truncated.
    """

    def __init__(self, path: str | Path, what: str = "embeddings") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MiningError(f"{self.path}: file not found ({what})")
        try:
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise MiningError(f"{self.path}: not a readable .npy array file ({what}): {error}") from None
        if not isinstance(mapped, np.memmap):
            raise MiningError(f"{self.path}: not a .npy array file ({what})")
        shape, dtype, fortran = mapped.shape, mapped.dtype, not mapped.flags.c_contiguous
        self.offset = int(mapped.offset)
        del mapped
        if len(shape) != 2:
            raise MiningError(f"{self.path}: {what} must be a 2-D array [rows, dim], got shape {tuple(shape)}")
        if dtype not in FLOAT_DTYPES:
            raise MiningError(f"{self.path}: {what} must be float16, float32 or float64, got {dtype}")
        if fortran and shape[0] > 1 and shape[1] > 1:
            raise MiningError(f"{self.path}: {what} is in Fortran order; save it with np.save of a C-order array")
        self.rows, self.dim = int(shape[0]), int(shape[1])
        self.dtype = np.dtype(dtype)
        expected = self.offset + self.rows * self.dim * self.dtype.itemsize
        if self.path.stat().st_size < expected:
            raise MiningError(f"{self.path}: truncated ({what}): {self.path.stat().st_size} bytes, need {expected}")
        if self.rows == 0 or self.dim == 0:
            raise MiningError(f"{self.path}: {what} is empty, shape {(self.rows, self.dim)}")

    def __len__(self) -> int:
        return self.rows

    def read(self, start: int, stop: int) -> np.ndarray:
        """``[stop − start, d]`` float32: rows ``start .. stop−1`` by a file read (no memory map)."""
        stop = min(stop, self.rows)
        count = (stop - start) * self.dim
        out = np.empty(count, dtype=self.dtype)
        with self.path.open("rb", buffering=0) as handle:
            got = _read_at(handle, memoryview(out).cast("B"), self.offset + start * self.dim * self.dtype.itemsize)
        if got != out.nbytes:
            raise MiningError(f"{self.path}: short read at rows {start}..{stop - 1}")
        return out.reshape(stop - start, self.dim).astype(np.float32, copy=False)

    def take(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """``[len(rows), d]`` float32: the given rows (any order, repeats allowed), each run of consecutive rows by
        one file read (no memory map: see the module docstring)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if int(rows.min()) < 0 or int(rows.max()) >= self.rows:
            bad = int(rows[(rows < 0) | (rows >= self.rows)][0])
            raise MiningError(f"{self.path}: row {bad} requested, the file has {self.rows} rows")
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), self.dim), dtype=self.dtype)
        view, row_bytes = memoryview(out).cast("B"), self.dim * self.dtype.itemsize
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        starts, stops = np.concatenate([[0], breaks]).tolist(), np.concatenate([breaks, [len(unique)]]).tolist()
        runs = list(zip(starts, stops, strict=True))
        positions = (self.offset + unique * row_bytes).tolist()
        with self.path.open("rb", buffering=0) as handle:
            fd = handle.fileno()
            if hasattr(os, "posix_fadvise"):  # ask for every run first: the kernel reads them in parallel
                for first, last in runs:
                    os.posix_fadvise(fd, positions[first], (last - first) * row_bytes, os.POSIX_FADV_WILLNEED)
            for first, last in runs:
                piece = view[first * row_bytes : last * row_bytes]
                got = _read_at(handle, piece, positions[first])
                if got != len(piece):
                    raise MiningError(f"{self.path}: short read at row {int(unique[first])}")
        return out.astype(np.float32, copy=False)[inverse]


def _read_at(handle: Any, buffer: memoryview, position: int) -> int:
    """Fill ``buffer`` from ``position`` of the open raw file ``handle``: one ``preadv`` where the OS has it."""
    if _HAS_PREADV:
        return os.preadv(handle.fileno(), [buffer], position)
    handle.seek(position)
    return handle.readinto(buffer)


_HAS_PREADV = hasattr(os, "preadv")


def open_embeddings(path: str | Path, rows: int, what: str, order: str) -> NpyRows:
    """A user's precomputed embeddings: ``rows`` rows expected (in ``order``, named in the error)."""
    reader = NpyRows(path, what)
    if reader.rows != rows:
        raise MiningError(f"{reader.path}: {what} has {reader.rows} rows but there are {rows} texts to match ({order})")
    return reader


def encoder_name(model: str | Path | None) -> str:
    """A cache key of the encoder: ``minilm-l6`` (the shipped model) or the folder name and a hash of its path."""
    if model is None:
        return "minilm-l6"
    path = Path(model).resolve()
    return f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\x00")
    return digest.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _world() -> tuple[int, int]:
    from negkit.distributed import world

    return world()


def _barrier() -> None:
    if _world()[1] > 1:
        torch.distributed.barrier()


def encode_cached(
    texts: Sequence[str],
    *,
    kind: str,
    cache_dir: str | Path,
    model: str | Path | None = None,
    load_encoder: Callable[[], Any],
    max_seq_length: int = 256,
    batch_size: int = 64,
    shard_size: int = 8192,
    float16: bool = False,
    callback: Callback | None = None,
) -> Path:
    """Encode ``texts`` (``[n]``) into ``<cache_dir>/<kind>-<encoder>-<hash>/embeddings.npy`` ``[n, d]``.

    Args:
        texts: the texts, in the row order of the result.
        kind: ``"queries"`` or ``"documents"`` (folder name and progress stage ``encode-<kind>``).
        cache_dir: root of the cache; one sub-folder per (kind, encoder, sequence length, dtype, texts).
        model: the model folder (``None``: the shipped MiniLM), for the key only.
        load_encoder: returns the sentence-transformers model; called only if some shard is missing.
        max_seq_length, batch_size: passed to the encoder (part of the key: they change the vectors).
        shard_size: texts per shard (the unit of resume and of the work split between ranks).
        float16: store float16 instead of float32.
        callback: ``callback("encode-<kind>", shards_done, shards_total)`` after each shard this rank finishes.

    Returns:
        The path of the joined ``.npy`` (the same path on every rank).
    """
    if shard_size < 1:
        raise MiningError(f"shard_size must be >= 1, got {shard_size}")
    dtype = np.float16 if float16 else np.float32
    key = {
        "kind": kind,
        "encoder": encoder_name(model),
        "max_seq_length": max_seq_length,
        "batch_size": batch_size,
        "dtype": np.dtype(dtype).name,
        "shard_size": shard_size,
        "texts": _texts_digest(texts),
        "rows": len(texts),
    }
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"{kind}-{key['encoder']}-{name}"
    final = folder / "embeddings.npy"
    stage = f"encode-{kind}"
    total = max(1, math.ceil(len(texts) / shard_size))
    if final.is_file():
        logger.info("%s: %d embeddings found in the cache %s", kind, len(texts), folder)
        if callback is not None:
            callback(stage, total, total)
        return final
    rank, world = _world()
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "key.json", key)
    _barrier()
    encoder = None
    mine = [s for s in range(total) if s % world == rank]
    done = sum(1 for s in range(total) if (folder / f"shard-{s:05d}.npy").is_file())
    if done:
        logger.info("%s: resuming, %d of %d shards already encoded in %s", kind, done, total, folder)
    for shard in mine:
        path = folder / f"shard-{shard:05d}.npy"
        if path.is_file():
            continue
        if encoder is None:
            encoder = load_encoder()
        part = list(texts[shard * shard_size : (shard + 1) * shard_size])
        with torch.inference_mode():
            vectors = encoder.encode(
                part,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        vectors = np.ascontiguousarray(vectors, dtype=dtype)
        if not np.isfinite(vectors).all():
            raise MiningError(f"the encoder returned non-finite embeddings for {kind} shard {shard}")
        _save_npy(path, vectors)
        done += 1
        logger.info("%s: shard %d/%d encoded (%d texts)", kind, shard + 1, total, len(part))
        if callback is not None:
            callback(stage, done, total)
    _barrier()
    if rank == 0:
        _join_shards(folder, final, total, len(texts), dtype)
    _barrier()
    return final


def _join_shards(folder: Path, final: Path, total: int, rows: int, dtype: type) -> None:
    """Write the shards into one ``.npy`` (a memory map filled shard by shard, renamed when complete)."""
    first = np.load(folder / "shard-00000.npy", mmap_mode="r")
    dim = first.shape[1]
    tmp = folder / ".embeddings.npy.tmp"
    joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(rows, dim))
    start = 0
    for shard in range(total):
        part = np.load(folder / f"shard-{shard:05d}.npy")
        joined[start : start + len(part)] = part
        start += len(part)
    if start != rows:
        raise MiningError(f"{folder}: the shards hold {start} rows, expected {rows}; delete the folder and rerun")
    joined.flush()
    del joined
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    for shard in range(total):
        (folder / f"shard-{shard:05d}.npy").unlink(missing_ok=True)
    logger.info("joined %d shards into %s", total, final)


def clear_cache(folder: str | Path) -> None:
    """Remove one cache folder (tests, or a cache written by a broken encoder)."""
    shutil.rmtree(folder, ignore_errors=True)
