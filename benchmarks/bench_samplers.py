"""Speed and memory of the negkit negative samplers as the pool grows.

What is measured
----------------
For each sampler below and each pool size ``N`` (default 1e3, 1e4, 1e5, 1e6), one ``sampler.sample`` call on a
batch of ``B = 256`` anchors against a pool of ``N`` items with ``d = 128`` features, asking for ``K = 64``
negatives per anchor:

* ``uniform``               — ``UniformSampler(K)``
* ``class_conditional``     — ``ClassConditionalSampler(K)`` (labels ``arange(N) % 10``)
* ``hardness``              — ``HardnessSampler(K, beta=5)``, without replacement (Gumbel-top-k)
* ``hardness_replacement``  — ``HardnessSampler(K, beta=5, replacement=True)`` (two-pass inverse CDF)
* ``mined_exact``           — ``MinedSampler(K, rank_window=(10, 10 + K), backend="exact")`` (chunked top-k)
* ``mined_faiss``           — the same with ``backend="faiss"`` (``IndexFlatIP``, built inside every call)

Data: float32 standard normal pool (fixed seed); the anchors are the first ``B`` pool rows and
``anchor_ids = pool_ids[:B]`` with ``pool_ids = arange(N)``, so every sampler must exclude each anchor's own
row. Labels are passed only to the class-conditional sampler (``MinedSampler`` would otherwise also drop the
anchor's class, which is a different workload).

How
---
Every (sampler, N) configuration runs in a fresh subprocess (this script re-invoked with ``--worker``), so the
peak memory is that configuration's own. The parent never imports torch / numpy / faiss: on Linux an exec'd
child inherits the parent's high-water RSS in ``ru_maxrss``, so a heavy parent would pollute the children's
peaks. In the child:

1. ``torch.set_num_threads(2)`` (and ``faiss.omp_set_num_threads(2)``), imports, data creation;
2. baseline = current RSS (``VmRSS`` from ``/proc/self/status``) after the data exists;
3. one warm-up call, then ``repeats`` timed calls (``time.perf_counter``; median reported). ``repeats`` is 5,
   or ``--large-repeats`` (default 3) for ``N >= 1e6``; ``--quick`` uses 2;
4. peak = ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the calls. Reported: absolute peak and growth
   ``peak - baseline`` in MB (2**20 bytes). Growth is the sampler's transient working memory (plus one-off
   allocator / thread-pool overheads of the first call).

The outputs are also sanity-checked (shape, range, own id excluded, other label for class-conditional, no
duplicates without replacement) and the exact and faiss mining results are compared (fraction of identical
negatives per anchor).

Mining at scale
---------------
A separate section mines ``--mine-queries`` (1e5) queries against ``--mine-items`` (1e6) items with
``MinedSampler`` (window ``(10, 10 + K)``, faiss and exact backends), feeding the queries in blocks of 1024 rows
(the queries are the first pool rows, ids given, so each query's own row is excluded). Each backend runs in
its own subprocess; time per block and peak RSS are reported. If the projected total of a backend exceeds
``--mine-full-limit`` seconds (default 600), only the blocks that fit in ``--mine-subset-budget`` seconds are
run and the total is *extrapolated* (per-query rate of the measured blocks × all queries), labelled as such.
The dense ``[1e5, 1e6]`` float32 similarity matrix that a naive implementation would build is computed for
contrast (4e11 bytes = 400 GB). After the peak has been recorded, the worker also times the fixed per-call
setup that ``MinedSampler`` repeats on every call (normalising the pool, building the faiss index).

Outputs (written atomically: temp file + ``os.replace``): ``benchmarks/results/samplers.json`` (all raw
numbers and machine info) and ``benchmarks/results/samplers.md`` (tables). ``--quick`` (sizes 1e3, 1e4, two
repeats, a small mining run) writes ``samplers_quick.{json,md}`` instead unless ``--stem`` is given.

Usage::

    python benchmarks/bench_samplers.py [--sizes 1000,10000,100000,1000000] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

D, B, K = 128, 256, 64
BETA = 5.0
WINDOW = (10, 10 + K)
SEED = 0
THREADS = 2
MINE_BLOCK = 1024
SAMPLERS = ("uniform", "class_conditional", "hardness", "hardness_replacement", "mined_exact", "mined_faiss")
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
RESULTS = Path(__file__).resolve().parent / "results"
MB = 2.0**20
CONTENDED = 0.25  # cores used by other processes above which a run is flagged as contended


# -- helpers usable in both processes (no torch) -----------------------------------------------------------------


def current_rss_bytes() -> int:
    """Current resident set size of this process (``VmRSS``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fmt_n(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"1e{exponent}" if n == 10**exponent else f"{n:,}"


# -- worker side (fresh process per configuration) -----------------------------------------------------------------


def code_fingerprint() -> dict:
    """Where negkit was imported from and a hash of the sampler sources this process runs (the library can
    change while a long benchmark is running; runs with different hashes measured different code)."""
    import hashlib

    import negkit
    import negkit._validation
    import negkit.negatives.samplers
    import negkit.negatives.sampling

    digest = hashlib.sha256()
    for module in (negkit._validation, negkit.negatives.sampling, negkit.negatives.samplers):
        digest.update(Path(module.__file__).read_bytes())
    return {"code_hash": digest.hexdigest()[:12], "negkit_path": str(Path(negkit.__file__).parent)}


def _setup_threads() -> None:
    import torch

    torch.set_num_threads(THREADS)
    import faiss

    faiss.omp_set_num_threads(THREADS)


def _make_sampler(name: str) -> Any:
    from negkit.negatives import ClassConditionalSampler, HardnessSampler, MinedSampler, UniformSampler

    if name == "uniform":
        return UniformSampler(K)
    if name == "class_conditional":
        return ClassConditionalSampler(K)
    if name == "hardness":
        return HardnessSampler(K, beta=BETA, replacement=False)
    if name == "hardness_replacement":
        return HardnessSampler(K, beta=BETA, replacement=True)
    if name == "mined_exact":
        return MinedSampler(K, rank_window=WINDOW, backend="exact")
    if name == "mined_faiss":
        return MinedSampler(K, rank_window=WINDOW, backend="faiss")
    raise ValueError(f"unknown sampler {name!r}")


def _check_output(name: str, indices: Any, n: int, anchor_ids: Any, anchor_labels: Any, pool_labels: Any) -> dict:
    checks: dict[str, bool] = {
        "shape": tuple(indices.shape) == (B, K),
        "in_range": bool(((indices >= 0) & (indices < n)).all()),
        "own_id_excluded": bool((indices != anchor_ids.unsqueeze(1)).all()),
    }
    if name == "class_conditional":
        checks["other_label"] = bool((pool_labels[indices] != anchor_labels.unsqueeze(1)).all())
    if name != "hardness_replacement":
        sorted_rows = indices.sort(dim=1).values
        checks["no_duplicates"] = bool((sorted_rows[:, 1:] != sorted_rows[:, :-1]).all())
    checks["all_ok"] = all(checks.values())
    return checks


def run_sampler_worker(name: str, n: int, repeats: int) -> dict:
    """Time one (sampler, N) configuration in this (fresh) process."""
    _setup_threads()
    import torch

    data_gen = torch.Generator().manual_seed(SEED)
    pool = torch.randn(n, D, generator=data_gen, dtype=torch.float32)
    anchors = pool[:B].clone()
    pool_ids = torch.arange(n)
    anchor_ids = pool_ids[:B].clone()
    pool_labels = pool_ids % 10
    anchor_labels = pool_labels[:B].clone()
    sampler = _make_sampler(name)
    kwargs: dict[str, Any] = {"anchor_ids": anchor_ids, "pool_ids": pool_ids}
    if name == "class_conditional":
        kwargs.update(anchor_labels=anchor_labels, pool_labels=pool_labels)

    baseline_rss = current_rss_bytes()
    baseline_peak = peak_rss_bytes()
    generator = torch.Generator().manual_seed(SEED + 1)

    start = time.perf_counter()
    out = sampler.sample(anchors, pool, generator=generator, **kwargs)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = sampler.sample(anchors, pool, generator=generator, **kwargs)
        times.append(time.perf_counter() - start)
    peak = peak_rss_bytes()

    result = {
        "sampler": name,
        "n": n,
        "sampler_repr": repr(sampler),
        "repeats": repeats,
        "warmup_ms": warmup_s * 1e3,
        "times_ms": [t * 1e3 for t in times],
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "baseline_rss_mb": baseline_rss / MB,
        "baseline_peak_rss_mb": baseline_peak / MB,
        "peak_rss_mb": peak / MB,
        "peak_growth_mb": (peak - baseline_rss) / MB,
        "checks": _check_output(name, out.indices, n, anchor_ids, anchor_labels, pool_labels),
        "torch_threads": torch.get_num_threads(),
        **code_fingerprint(),
    }
    if name.startswith("mined"):
        result["indices"] = out.indices.tolist()  # compared exact vs faiss by the parent, not stored
    return result


def run_mine_worker(backend: str, n_items: int, n_queries: int, block: int, full_limit: float, budget: float) -> dict:
    """Mine ``n_queries`` queries (the first pool rows) against ``n_items`` items in blocks of ``block`` rows."""
    _setup_threads()
    import torch
    import torch.nn.functional as F

    from negkit.negatives import MinedSampler

    data_gen = torch.Generator().manual_seed(SEED)
    pool = torch.randn(n_items, D, generator=data_gen, dtype=torch.float32)
    pool_ids = torch.arange(n_items)
    sampler = MinedSampler(K, rank_window=WINDOW, backend=backend)
    baseline_rss = current_rss_bytes()
    baseline_peak = peak_rss_bytes()

    n_blocks = -(-n_queries // block)
    block_times: list[float] = []
    done_queries = 0
    checks_ok = True
    start_all = time.perf_counter()
    stopped_early = False
    for b in range(n_blocks):
        lo, hi = b * block, min((b + 1) * block, n_queries)
        start = time.perf_counter()
        out = sampler.sample(pool[lo:hi], pool, anchor_ids=pool_ids[lo:hi], pool_ids=pool_ids)
        block_times.append(time.perf_counter() - start)
        done_queries = hi
        idx = out.indices
        checks_ok &= tuple(idx.shape) == (hi - lo, K) and bool((idx != pool_ids[lo:hi].unsqueeze(1)).all())
        elapsed = time.perf_counter() - start_all
        projected = elapsed / done_queries * n_queries
        print(
            f"  [mine {backend}] block {b + 1}/{n_blocks}: {block_times[-1]:.2f}s (projected total {projected:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        if hi < n_queries and projected > full_limit and elapsed >= budget and len(block_times) >= 2:
            stopped_early = True
            break
    measured_s = time.perf_counter() - start_all
    peak = peak_rss_bytes()

    # Diagnostics (after the peak was recorded): fixed work that MinedSampler repeats on every call.
    t0 = time.perf_counter()
    normalized = F.normalize(pool, dim=1)
    normalize_s = time.perf_counter() - t0
    faiss_add_s = None
    if backend == "faiss":
        import faiss

        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(D)
        index.add(normalized.contiguous().numpy())
        faiss_add_s = time.perf_counter() - t0
        del index
    del normalized

    rate = measured_s / done_queries
    return {
        "backend": backend,
        "n_items": n_items,
        "n_queries": n_queries,
        "block": block,
        "n_blocks_total": n_blocks,
        "n_blocks_measured": len(block_times),
        "queries_measured": done_queries,
        "complete": not stopped_early,
        "block_times_s": block_times,
        "median_block_s": statistics.median(block_times),
        "measured_total_s": measured_s,
        "total_s": measured_s if not stopped_early else rate * n_queries,
        "total_is_extrapolated": stopped_early,
        "baseline_rss_mb": baseline_rss / MB,
        "baseline_peak_rss_mb": baseline_peak / MB,
        "peak_rss_mb": peak / MB,
        "peak_growth_mb": (peak - baseline_rss) / MB,
        "pool_bytes_mb": n_items * D * 4 / MB,
        "per_call_normalize_pool_s": normalize_s,
        "per_call_faiss_index_build_s": faiss_add_s,
        "checks_ok": checks_ok,
        **code_fingerprint(),
    }


def run_info_worker() -> dict:
    _setup_threads()
    import faiss
    import numpy
    import torch

    return {
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_parallel_info": torch.__config__.parallel_info().splitlines()[:8],
    }


# -- parent side ----------------------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds spent busy (all cores, all processes) since boot, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(max_wait: float, threshold: float = CONTENDED) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores; return the last reading."""
    deadline = time.monotonic() + max_wait
    while True:
        before, start = busy_cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (busy_cpu_seconds() - before) / (time.monotonic() - start)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"[bench]   machine busy ({busy:.2f} cores used by others), waiting", file=sys.stderr, flush=True)


class IdleBudget:
    """Waiting for the shared machine to go idle, capped per run and in total."""

    def __init__(self, per_run: float, total: float) -> None:
        self.per_run, self.remaining = per_run, total

    def wait(self) -> float | None:
        if self.per_run <= 0 or self.remaining <= 0:
            return None
        start = time.monotonic()
        busy = wait_for_idle(min(self.per_run, self.remaining))
        self.remaining -= time.monotonic() - start
        return busy


def spawn(args: list[str], timeout: float, idle: IdleBudget | None = None) -> dict:
    """Run this script as a worker in a fresh interpreter; return its JSON result (or an error record).

    Also records how many cores *other* processes kept busy meanwhile (``foreign_cores``: machine busy CPU
    time minus this child's CPU time, per wall second) — a contention marker for the shared machine.
    """
    idle_before = idle.wait() if idle is not None else None
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    busy0, child0, start = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f}s", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    child_cpu = children_cpu_seconds() - child0
    contention = {
        "wall_s": wall,
        "child_cpu_s": child_cpu,
        "foreign_cores": max(0.0, (busy_cpu_seconds() - busy0 - child_cpu) / wall),
        "foreign_cores_before": idle_before,
        "loadavg_after": os.getloadavg()[0],
    }
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}", "stdout_tail": proc.stdout[-2000:], **contention}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    result.update(contention)
    return result


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean fraction of negatives shared by the two methods, per anchor."""
    shared = [len(set(x) & set(y)) / max(len(x), 1) for x, y in zip(a, b, strict=True)]
    return sum(shared) / len(shared)


def machine_info(worker_info: dict) -> dict:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "mem_total_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        **{
            k: v
            for k, v in worker_info.items()
            if k in ("torch", "faiss", "numpy", "torch_threads", "torch_parallel_info")
        },
    }


def _cell(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render_markdown(doc: dict) -> str:
    sizes: list[int] = doc["config"]["sizes"]
    by_key = {(r["sampler"], r["n"]): r for r in doc["runs"] if "error" not in r}
    info = doc["machine"]
    lines = [
        "# negkit sampler benchmark",
        "",
        f"{info['date']} · torch {info['torch']} · faiss {info['faiss']} · {info['cpu_count']} CPUs, "
        f"{THREADS} threads · {info['mem_total_gb']:.0f} GiB RAM",
        "",
        f"B = {B} anchors, d = {D}, K = {K}, float32 N(0, 1) pool, own ids excluded. Median ms per `sample` call "
        "(after 1 warm-up), peak RSS growth over the post-data baseline in MB; fresh process per cell. "
        f"Repeats: {doc['config']['repeats']} ({doc['config']['large_repeats']} for N ≥ 1e6).",
        "",
    ]
    header = ["sampler"]
    for n in sizes:
        header += [f"{fmt_n(n)} ms", f"{fmt_n(n)} ΔMB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in SAMPLERS:
        row = [f"`{name}`"]
        for n in sizes:
            r = by_key.get((name, n))
            if r is None:
                row += ["err", "err"]
            else:
                mark = "†" if r.get("foreign_cores", 0.0) > CONTENDED else ""
                ms = _cell(r["median_ms"], 1 if r["median_ms"] < 1000 else 0) + mark
                row += [ms, _cell(r["peak_growth_mb"], 1)]
        lines.append("| " + " | ".join(row) + " |")

    if any(r.get("foreign_cores", 0.0) > CONTENDED for r in by_key.values()):
        lines += [
            "",
            f"† other processes kept more than {CONTENDED} cores busy during that run on this shared 2-core machine "
            "(`foreign_cores` in the JSON); its time is likely inflated.",
        ]
    lines += ["", "Absolute peak RSS (MB) / post-data baseline RSS (MB):", ""]
    header = ["sampler", *[fmt_n(n) for n in sizes]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in SAMPLERS:
        row = [f"`{name}`"]
        for n in sizes:
            r = by_key.get((name, n))
            row.append("err" if r is None else f"{r['peak_rss_mb']:,.0f} / {r['baseline_rss_mb']:,.0f}")
        lines.append("| " + " | ".join(row) + " |")

    lines += [
        "",
        "Mined negatives, faiss vs exact backend (ratio < 1: faiss faster; agreement = mean fraction of identical "
        "negatives per anchor):",
        "",
        "| N | exact ms | faiss ms | faiss / exact | agreement |",
        "|---|---|---|---|---|",
    ]
    for n in sizes:
        e, f = by_key.get(("mined_exact", n)), by_key.get(("mined_faiss", n))
        ratio = None if e is None or f is None else f["median_ms"] / e["median_ms"]
        agree = doc.get("mined_agreement", {}).get(str(n))
        lines.append(
            f"| {fmt_n(n)} | {_cell(e and e['median_ms'])} | {_cell(f and f['median_ms'])} | {_cell(ratio, 2)} "
            f"| {_cell(agree, 3)} |"
        )

    failed = [r for r in doc["runs"] if "error" in r or not r.get("checks", {}).get("all_ok", False)]
    if failed:
        lines += ["", "**Failed runs / checks:**", ""]
        for r in failed:
            lines.append(f"- `{r.get('sampler')}` N={r.get('n')}: {r.get('error') or r.get('checks')}")

    mining = doc.get("mining", [])
    if mining:
        cfg = doc["config"]["mining"]
        dense_gb = cfg["n_queries"] * cfg["n_items"] * 4 / 1e9
        lines += [
            "",
            f"## Mining {fmt_n(cfg['n_queries'])} queries against {fmt_n(cfg['n_items'])} items",
            "",
            f"`MinedSampler(K={K}, rank_window={WINDOW})`, queries fed in blocks of {cfg['block']} rows (the queries "
            "are the first pool rows, own ids excluded), one process per backend. The full "
            f"[{fmt_n(cfg['n_queries'])}, {fmt_n(cfg['n_items'])}] float32 similarity matrix would need "
            f"**{dense_gb:,.0f} GB**; the pool itself is {cfg['n_items'] * D * 4 / 1e9:.2f} GB.",
            "",
            "| backend | blocks measured | total time | median s / block | peak RSS MB | growth MB | checks "
            "| other procs (cores) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in mining:
            if "error" in m:
                lines.append(f"| {m.get('backend')} | error: {m['error']} | | | | | | |")
                continue
            total = f"{m['total_s']:,.0f} s"
            if m["total_is_extrapolated"]:
                total = f"**{total} (extrapolated** from {m['measured_total_s']:,.0f} s measured)"
            lines.append(
                f"| {m['backend']} | {m['n_blocks_measured']} / {m['n_blocks_total']} | {total} "
                f"| {m['median_block_s']:.2f} | {m['peak_rss_mb']:,.0f} | {m['peak_growth_mb']:,.0f} "
                f"| {'ok' if m['checks_ok'] else 'FAILED'} | {m.get('foreign_cores', 0.0):.2f} |"
            )
        lines += ["", "Fixed work `MinedSampler` repeats on every call (timed once, after the peak was recorded):", ""]
        for m in mining:
            if "error" in m:
                continue
            extra = ""
            if m["per_call_faiss_index_build_s"] is not None:
                extra = f", building the faiss `IndexFlatIP` {m['per_call_faiss_index_build_s']:.2f} s"
            lines.append(f"- {m['backend']}: normalising the pool {m['per_call_normalize_pool_s']:.2f} s{extra}")
    hashes = sorted({r["code_hash"] for r in [*doc["runs"], *mining] if "code_hash" in r})
    if len(hashes) > 1:
        lines += ["", f"**Warning:** the runs measured {len(hashes)} different versions of the sampler code: {hashes}."]
    for note in doc.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += ["", f"Total benchmark wall time: {doc.get('total_wall_s', 0):,.0f} s."]
    if doc.get("superseded_runs"):
        lines.append(
            f"{len(doc['superseded_runs'])} earlier measurements (contended, failed, or named with --rerun-cells) "
            "were replaced by re-measurements "
            f"(`--rerun-contended`, {doc.get('rerun_wall_s', 0):,.0f} s); the originals are under "
            "`superseded_runs` in the JSON."
        )
    lines.append("")
    return "\n".join(lines)


def save(doc: dict, stem: str) -> None:
    public = dict(doc)
    public["runs"] = [{k: v for k, v in r.items() if k != "indices"} for r in doc["runs"]]
    atomic_write(RESULTS / f"{stem}.json", json.dumps(public, indent=2) + "\n")
    atomic_write(RESULTS / f"{stem}.md", render_markdown(public))


def main_parent(args: argparse.Namespace) -> None:
    wall_start = time.perf_counter()
    if args.quick:
        sizes = list(QUICK_SIZES) if args.sizes is None else args.sizes
        repeats, large_repeats = 2, 2
        mine = {"n_items": 10_000, "n_queries": 4_096}
    else:
        sizes = list(DEFAULT_SIZES) if args.sizes is None else args.sizes
        repeats, large_repeats = args.repeats, args.large_repeats
        mine = {"n_items": args.mine_items, "n_queries": args.mine_queries}
    mine.update(block=MINE_BLOCK, full_limit_s=args.mine_full_limit, subset_budget_s=args.mine_subset_budget)
    stem = args.stem or ("samplers_quick" if args.quick else "samplers")

    # --quick is a smoke check that must stay under a minute: no waiting for an idle machine.
    idle = IdleBudget(0.0, 0.0) if args.quick else IdleBudget(args.idle_wait, args.idle_wait_total)
    info = spawn(["info"], timeout=300)
    doc: dict[str, Any] = {
        "machine": machine_info(info),
        "config": {
            "B": B,
            "d": D,
            "K": K,
            "beta": BETA,
            "rank_window": list(WINDOW),
            "seed": SEED,
            "threads": THREADS,
            "sizes": sizes,
            "repeats": repeats,
            "large_repeats": large_repeats,
            "samplers": list(SAMPLERS),
            "mining": mine if not args.skip_mining else None,
            "quick": args.quick,
            "idle_wait_s": idle.per_run,
            "idle_wait_total_s": idle.remaining,
        },
        "runs": [],
        "mined_agreement": {},
        "mining": [],
    }
    for n in sizes:
        for name in SAMPLERS:
            reps = large_repeats if n >= 1_000_000 else repeats
            print(f"[bench] {name} N={n} repeats={reps}", file=sys.stderr, flush=True)
            result = spawn(["sampler", name, str(n), str(reps)], timeout=args.timeout, idle=idle)
            result.setdefault("sampler", name)
            result.setdefault("n", n)
            doc["runs"].append(result)
            print_run(result)
            doc["total_wall_s"] = time.perf_counter() - wall_start
            save(doc, stem)
        mined = {r["sampler"]: r for r in doc["runs"] if r["n"] == n and "indices" in r}
        if {"mined_exact", "mined_faiss"} <= mined.keys():
            doc["mined_agreement"][str(n)] = agreement(mined["mined_exact"]["indices"], mined["mined_faiss"]["indices"])

    if not args.skip_mining:
        for backend in ("faiss", "exact"):
            print(f"[bench] mining {mine['n_queries']} x {mine['n_items']} with {backend}", file=sys.stderr, flush=True)
            worker_args = [
                "mine",
                backend,
                str(mine["n_items"]),
                str(mine["n_queries"]),
                str(MINE_BLOCK),
                str(args.mine_full_limit),
                str(args.mine_subset_budget),
            ]
            timeout = args.mine_full_limit + args.mine_subset_budget + 600
            result = spawn(worker_args, timeout=timeout, idle=idle)
            result.setdefault("backend", backend)
            doc["mining"].append(result)
            doc["total_wall_s"] = time.perf_counter() - wall_start
            save(doc, stem)

    doc["total_wall_s"] = time.perf_counter() - wall_start
    save(doc, stem)
    print(f"[bench] done in {doc['total_wall_s']:.0f} s -> {RESULTS / stem}.{{json,md}}", file=sys.stderr)


def print_run(result: dict) -> None:
    if "error" in result:
        print(f"[bench]   {result['error']}", file=sys.stderr, flush=True)
        return
    print(
        f"[bench]   median {result['median_ms']:.1f} ms, growth {result['peak_growth_mb']:.1f} MB, "
        f"checks {'ok' if result['checks']['all_ok'] else result['checks']}, "
        f"other processes {result['foreign_cores']:.2f} cores",
        file=sys.stderr,
        flush=True,
    )


def is_contended(result: dict) -> bool:
    return "error" in result or result.get("foreign_cores", 0.0) > CONTENDED


def rerun_contended(args: argparse.Namespace) -> None:
    """Re-measure the grid cells of an existing result file that failed or ran while the machine was busy
    (and the cells named by ``--rerun-cells``).

    The replaced measurements are kept under ``superseded_runs``; a mined cell is re-run together with its
    exact/faiss partner so that their agreement can be recomputed. The mining section is left as it is.
    """
    wall_start = time.perf_counter()
    stem = args.stem or "samplers"
    doc = json.loads((RESULTS / f"{stem}.json").read_text())
    cfg = doc["config"]
    idle = IdleBudget(args.idle_wait, args.idle_wait_total)
    todo = {(r["sampler"], r["n"]) for r in doc["runs"] if is_contended(r)} | set(args.rerun_cells or [])
    todo |= {(other, n) for name, n in list(todo) if name.startswith("mined") for other in SAMPLERS[-2:]}
    doc.setdefault("superseded_runs", [])
    for index, old in enumerate(doc["runs"]):
        key = (old["sampler"], old["n"])
        if key not in todo:
            continue
        name, n = key
        reps = cfg["large_repeats"] if n >= 1_000_000 else cfg["repeats"]
        print(f"[bench] re-run {name} N={n} repeats={reps}", file=sys.stderr, flush=True)
        result = spawn(["sampler", name, str(n), str(reps)], timeout=args.timeout, idle=idle)
        result.setdefault("sampler", name)
        result.setdefault("n", n)
        result["rerun"] = True
        print_run(result)
        doc["superseded_runs"].append(old)
        doc["runs"][index] = result
    for n in {n for _, n in todo}:
        mined = {r["sampler"]: r for r in doc["runs"] if r["n"] == n and "indices" in r}
        if {"mined_exact", "mined_faiss"} <= mined.keys():
            doc["mined_agreement"][str(n)] = agreement(mined["mined_exact"]["indices"], mined["mined_faiss"]["indices"])
    doc["rerun_wall_s"] = doc.get("rerun_wall_s", 0.0) + time.perf_counter() - wall_start
    save(doc, stem)
    print(f"[bench] re-ran {len(todo)} cells in {time.perf_counter() - wall_start:.0f} s", file=sys.stderr)


def main_worker(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "info":
        result = run_info_worker()
    elif kind == "sampler":
        result = run_sampler_worker(argv[1], int(argv[2]), int(argv[3]))
    elif kind == "mine":
        backend, n_items, n_queries, block, full_limit, budget = argv[1:7]
        result = run_mine_worker(backend, int(n_items), int(n_queries), int(block), float(full_limit), float(budget))
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")
    print(json.dumps(result), flush=True)


def parse_cells(text: str) -> list[tuple[str, int]]:
    cells = []
    for item in text.split(","):
        name, _, n = item.strip().partition(":")
        if name not in SAMPLERS:
            raise argparse.ArgumentTypeError(f"unknown sampler {name!r}; choose from {SAMPLERS}")
        cells.append((name, int(float(n))))
    return cells


def parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        main_worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="comma-separated pool sizes, e.g. 1000,1e4")
    parser.add_argument("--quick", action="store_true", help="sizes 1e3,1e4, 2 repeats, small mining run")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per configuration")
    parser.add_argument("--large-repeats", type=int, default=3, help="timed calls for N >= 1e6")
    parser.add_argument("--mine-items", type=int, default=1_000_000)
    parser.add_argument("--mine-queries", type=int, default=100_000)
    parser.add_argument(
        "--mine-full-limit", type=float, default=600.0, help="run all mining blocks if projected total ≤ this (s)"
    )
    parser.add_argument(
        "--mine-subset-budget", type=float, default=150.0, help="otherwise measure blocks for this long and extrapolate"
    )
    parser.add_argument("--skip-mining", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0, help="per-configuration subprocess timeout (s)")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="wait up to this long (s) before each run for other processes to go idle",
    )
    parser.add_argument("--idle-wait-total", type=float, default=300.0, help="cap on all idle waits together (s)")
    parser.add_argument(
        "--rerun-contended",
        action="store_true",
        help="re-measure the failed or contended grid cells of an existing result file (see --stem)",
    )
    parser.add_argument(
        "--rerun-cells",
        type=parse_cells,
        default=None,
        help="with --rerun-contended, also re-measure these cells, e.g. hardness:10000,uniform:1e6",
    )
    parser.add_argument("--stem", default=None, help="output file stem under benchmarks/results/")
    args = parser.parse_args()
    if args.rerun_cells and not args.rerun_contended:
        parser.error("--rerun-cells needs --rerun-contended")
    if args.rerun_contended:
        rerun_contended(args)
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
