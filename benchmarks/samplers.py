"""Speed and memory of the negkit negative samplers as the pool grows.

Grid: for each sampler and each pool size N (default 1e3, 1e4, 1e5, 1e6), one ``sampler.sample`` call on B = 256
anchors against N items with d = 128 features, K = 64 negatives per anchor:

* ``uniform``               — ``UniformSampler(K)``
* ``class_conditional``     — ``ClassConditionalSampler(K)`` (labels ``arange(N) % 10``)
* ``hardness``              — ``HardnessSampler(K, beta=5)``, without replacement (Gumbel-top-k)
* ``hardness_replacement``  — ``HardnessSampler(K, beta=5, replacement=True)`` (two-pass inverse CDF)
* ``mined_exact``           — ``MinedSampler(K, rank_window=(10, 10 + K), backend="exact")`` (chunked top-k)
* ``mined_faiss``           — the same with ``backend="faiss"`` (``IndexFlatIP``, built inside every call)

Data: float32 N(0, 1) pool (seed 0); the anchors are the first B pool rows with ``anchor_ids = pool_ids[:B]``, so
every sampler must exclude each anchor's own row. Labels go to the class-conditional sampler only. Repeats: 5
(``--large-repeats``, 3, for N ≥ 1e6). The outputs are checked (shape, range, own id excluded, other label for
class-conditional, no duplicates without replacement); the ``mined_faiss`` cell also runs the exact backend after
its peak was recorded and reports the agreement (mean fraction of identical negatives per anchor).

Mining at scale: ``--mine-queries`` (1e5) queries against ``--mine-items`` (1e6) items with ``MinedSampler``,
queries fed in blocks of 1024 rows, one cell per backend (faiss, exact). If a backend's projected total exceeds
``--mine-full-limit`` s, only the blocks that fit in ``--mine-subset-budget`` s run and the total is extrapolated
(labelled as such). Then the fixed work ``MinedSampler`` repeats on every call (normalising the pool, building the
faiss index) is timed, after the peak was recorded.

``--quick``: N = 1e3, 1e4, two repeats, 4,096 queries against 1e4 items.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import harness
from harness import Cell, find, fmt, fmt_ms, fmt_n, mark, ok, probe_cell  # noqa: F401  (probe_cell: the worker's)

TITLE = "negkit sampler benchmark"
D, B, K = 128, 256, 64
BETA = 5.0
WINDOW = (10, 10 + K)
SEED = 0
MINE_BLOCK = 1024
SAMPLERS = ("uniform", "class_conditional", "hardness", "hardness_replacement", "mined_exact", "mined_faiss")
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)


def sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def names(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SAMPLERS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown samplers {unknown}; choose from {', '.join(SAMPLERS)}")
    return chosen


def add_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument("--sizes", type=sizes, default=None, help="pool sizes, e.g. 1000,1e4 (default 1e3…1e6)")
    parser.add_argument("--samplers", type=names, default=list(SAMPLERS), help="comma-separated subset")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per cell (5; quick 2)")
    parser.add_argument("--large-repeats", type=int, default=None, help="timed calls for N >= 1e6 (3; quick 2)")
    parser.add_argument("--mine-items", type=int, default=None, help="mining: items (1e6; quick 1e4)")
    parser.add_argument("--mine-queries", type=int, default=None, help="mining: queries (1e5; quick 4096)")
    parser.add_argument("--mine-full-limit", type=float, default=600.0, help="mine all blocks if projected ≤ this s")
    parser.add_argument("--mine-subset-budget", type=float, default=150.0, help="else measure this long, extrapolate")
    parser.add_argument("--skip-mining", action="store_true")


def plan(args: argparse.Namespace) -> list[Cell]:
    quick = args.quick
    grid = args.sizes or list(QUICK_SIZES if quick else DEFAULT_SIZES)
    repeats = args.repeats or (2 if quick else 5)
    large_repeats = args.large_repeats or (2 if quick else 3)
    cells = [harness.probe_plan([(B, D, 8192), (1024, D, 1024)])]
    cells += [
        Cell(
            "sampler_cell",
            {"sampler": name, "n": n, "repeats": large_repeats if n >= 1_000_000 else repeats},
            f"grid {name} N={fmt_n(n)}",
        )
        for n in grid
        for name in args.samplers
    ]
    if not args.skip_mining:
        items = args.mine_items or (10_000 if quick else 1_000_000)
        queries = args.mine_queries or (4_096 if quick else 100_000)
        for backend in ("faiss", "exact"):
            params = {
                "backend": backend,
                "n_items": items,
                "n_queries": queries,
                "block": MINE_BLOCK,
                "full_limit_s": args.mine_full_limit,
                "subset_budget_s": args.mine_subset_budget,
            }
            timeout = args.mine_full_limit + args.mine_subset_budget + 600
            cells.append(Cell("mining_cell", params, f"mining {backend} {fmt_n(queries)}x{fmt_n(items)}", timeout))
    return cells


# -- cells (fresh process each) -----------------------------------------------------------------------------------


def _imports() -> None:
    """torch, and faiss where installed (imported by every cell, so that all baselines hold the same libraries)."""
    import torch  # noqa: F401

    with contextlib.suppress(ImportError):
        import faiss  # noqa: F401


def _make_sampler(name: str) -> Any:
    from negkit.negatives import ClassConditionalSampler, HardnessSampler, MinedSampler, UniformSampler

    return {
        "uniform": lambda: UniformSampler(K),
        "class_conditional": lambda: ClassConditionalSampler(K),
        "hardness": lambda: HardnessSampler(K, beta=BETA, replacement=False),
        "hardness_replacement": lambda: HardnessSampler(K, beta=BETA, replacement=True),
        "mined_exact": lambda: MinedSampler(K, rank_window=WINDOW, backend="exact"),
        "mined_faiss": lambda: MinedSampler(K, rank_window=WINDOW, backend="faiss"),
    }[name]()


def _checks(name: str, indices: Any, n: int, anchor_ids: Any, anchor_labels: Any, pool_labels: Any) -> dict:
    checks = {
        "shape": tuple(indices.shape) == (B, K),
        "in_range": bool(((indices >= 0) & (indices < n)).all()),
        "own_id_excluded": bool((indices != anchor_ids.unsqueeze(1)).all()),
    }
    if name == "class_conditional":
        checks["other_label"] = bool((pool_labels[indices] != anchor_labels.unsqueeze(1)).all())
    if name != "hardness_replacement":
        rows = indices.sort(dim=1).values
        checks["no_duplicates"] = bool((rows[:, 1:] != rows[:, :-1]).all())
    checks["all_ok"] = all(checks.values())
    return checks


def sampler_cell(sampler: str, n: int, repeats: int) -> dict:
    """One ``sample`` call of ``sampler`` on B anchors against a pool of ``n`` rows."""
    _imports()
    import torch

    pool = torch.randn(n, D, generator=torch.Generator().manual_seed(SEED), dtype=torch.float32)
    anchors = pool[:B].clone()
    pool_ids = torch.arange(n)
    anchor_ids = pool_ids[:B].clone()
    pool_labels = pool_ids % 10
    anchor_labels = pool_labels[:B].clone()
    chosen = _make_sampler(sampler)
    kwargs: dict[str, Any] = {"anchor_ids": anchor_ids, "pool_ids": pool_ids}
    if sampler == "class_conditional":
        kwargs.update(anchor_labels=anchor_labels, pool_labels=pool_labels)
    generator = torch.Generator().manual_seed(SEED + 1)
    stats, out = harness.measure(lambda: chosen.sample(anchors, pool, generator=generator, **kwargs), repeats)
    result = {
        **stats,
        "sampler_repr": repr(chosen),
        "checks": _checks(sampler, out.indices, n, anchor_ids, anchor_labels, pool_labels),
    }
    if sampler == "mined_faiss":  # after the peak: the exact backend's negatives, for the agreement
        exact = _make_sampler("mined_exact").sample(anchors, pool, **kwargs).indices.tolist()
        shared = [len(set(x) & set(y)) / K for x, y in zip(out.indices.tolist(), exact, strict=True)]
        result["agreement_with_exact"] = sum(shared) / len(shared)
    return result


def mining_cell(
    backend: str, n_items: int, n_queries: int, block: int, full_limit_s: float, subset_budget_s: float
) -> dict:
    """Mine ``n_queries`` queries (the first pool rows) against ``n_items`` items in blocks of ``block`` rows."""
    _imports()
    import torch
    import torch.nn.functional as F

    from negkit.negatives import MinedSampler

    pool = torch.randn(n_items, D, generator=torch.Generator().manual_seed(SEED), dtype=torch.float32)
    pool_ids = torch.arange(n_items)
    sampler = MinedSampler(K, rank_window=WINDOW, backend=backend)
    baseline = harness.current_rss_bytes()
    harness.reset_peak_rss()

    n_blocks = -(-n_queries // block)
    block_times: list[float] = []
    done, checks_ok, stopped_early = 0, True, False
    start_all = time.perf_counter()
    for b in range(n_blocks):
        lo, hi = b * block, min((b + 1) * block, n_queries)
        start = time.perf_counter()
        out = sampler.sample(pool[lo:hi], pool, anchor_ids=pool_ids[lo:hi], pool_ids=pool_ids)
        block_times.append(time.perf_counter() - start)
        done = hi
        idx = out.indices
        checks_ok &= tuple(idx.shape) == (hi - lo, K) and bool((idx != pool_ids[lo:hi].unsqueeze(1)).all())
        elapsed = time.perf_counter() - start_all
        projected = elapsed / done * n_queries
        harness.progress(
            f"  [mine {backend}] block {b + 1}/{n_blocks}: {block_times[-1]:.2f} s, total ~{projected:.0f} s"
        )
        if hi < n_queries and projected > full_limit_s and elapsed >= subset_budget_s and len(block_times) >= 2:
            stopped_early = True
            break
    measured_s = time.perf_counter() - start_all
    peak = harness.peak_rss_bytes()

    # After the peak was recorded: the fixed work MinedSampler repeats on every call.
    t0 = time.perf_counter()
    normalized = F.normalize(pool, dim=1)
    normalize_s = time.perf_counter() - t0
    index_build_s = None
    if backend == "faiss":
        import faiss

        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(D)
        index.add(normalized.contiguous().numpy())
        index_build_s = time.perf_counter() - t0
        del index
    return {
        "n_blocks_total": n_blocks,
        "n_blocks_measured": len(block_times),
        "queries_measured": done,
        "complete": not stopped_early,
        "block_times_s": block_times,
        "median_block_s": statistics.median(block_times),
        "measured_total_s": measured_s,
        "total_s": measured_s if not stopped_early else measured_s / done * n_queries,
        "total_is_extrapolated": stopped_early,
        "baseline_rss_mb": baseline / harness.MB,
        "peak_rss_mb": peak / harness.MB,
        "growth_mb": (peak - baseline) / harness.MB,
        "pool_mb": n_items * D * 4 / harness.MB,
        "per_call_normalize_pool_s": normalize_s,
        "per_call_faiss_index_build_s": index_build_s,
        "checks_ok": checks_ok,
    }


# -- Markdown -------------------------------------------------------------------------------------------------


def bound(doc: dict, sampler: str, n: int) -> float | None:
    """Lower bound of one call: samplers that read the pool's values pass over it once (N·d float32 read) and
    compute the B×N×d similarity (2·B·N·d FLOPs); the uniform ones need neither (no bound given)."""
    if sampler in ("uniform", "class_conditional"):
        return None
    return harness.bound_s(doc, flops=2 * B * n * D, bytes_moved=n * D * 4)


def render(doc: dict) -> list[str]:
    grid = [r for r in doc["cells"] if r["function"] == "sampler_cell"]
    names_run = list(dict.fromkeys(r["params"]["sampler"] for r in grid))
    grid_sizes = sorted({r["params"]["n"] for r in grid})
    small = sorted({r["params"]["repeats"] for r in grid if r["params"]["n"] < 1_000_000})
    large = sorted({r["params"]["repeats"] for r in grid if r["params"]["n"] >= 1_000_000})
    repeats = ", ".join(map(str, small or large)) + (
        f" ({', '.join(map(str, large))} for N ≥ 1e6)" if small and large else ""
    )
    lines = harness.render_probe(doc)
    lines += [
        f"B = {B} anchors, d = {D}, K = {K}, float32 N(0, 1) pool, own ids excluded. Median ms per `sample` call "
        f"(after 1 warm-up) and ΔMB = peak RSS growth over the post-data baseline. Repeats: {repeats or '–'}.",
        "",
    ]
    if grid:
        header = ["sampler"] + [f"{fmt_n(n)} {unit}" for n in grid_sizes for unit in ("ms", "ΔMB")]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name in names_run:
            row = [f"`{name}`"]
            for n in grid_sizes:
                r = find(doc, "sampler_cell", sampler=name, n=n)
                row += [fmt_ms(r["median_s"]) + mark(r), fmt(r["growth_mb"])] if ok(r) else ["err", "err"]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "Absolute peak RSS (MB) / post-data baseline RSS (MB):", ""]
        header = ["sampler", *[fmt_n(n) for n in grid_sizes]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name in names_run:
            row = [f"`{name}`"]
            for n in grid_sizes:
                r = find(doc, "sampler_cell", sampler=name, n=n)
                row.append(f"{r['peak_rss_mb']:,.0f} / {r['baseline_rss_mb']:,.0f}" if ok(r) else "err")
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "Against the bound (one pass over the pool + the B×N×d similarity at the measured limits; the uniform "
            "samplers read no values): × bound = time / bound; / mined = time / `mined_exact`'s at the same N.",
            "",
        ]
        header = ["sampler"] + [f"{fmt_n(n)} {unit}" for n in grid_sizes for unit in ("bound ms", "× bound", "/ mined")]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name in names_run:
            row = [f"`{name}`"]
            for n in grid_sizes:
                r, mined = (
                    find(doc, "sampler_cell", sampler=name, n=n),
                    find(doc, "sampler_cell", sampler="mined_exact", n=n),
                )
                low = bound(doc, name, n)
                row += [
                    fmt_ms(low),
                    f"{r['median_s'] / low:.1f}×" if ok(r) and low else "–",
                    f"{r['median_s'] / mined['median_s']:.2f}×" if ok(r) and ok(mined) else "–",
                ]
            lines.append("| " + " | ".join(row) + " |")
        bad = [r for r in grid if ok(r) and not r["checks"]["all_ok"]]
        if bad:
            lines += ["", "**Failed output checks:**", ""]
            lines += [f"- {r['label']}: {r['checks']}" for r in bad]
    if {"mined_exact", "mined_faiss"} <= set(names_run):
        lines += [
            "",
            "Mined negatives, faiss vs exact backend (ratio < 1: faiss faster; agreement = mean fraction of identical "
            "negatives per anchor):",
            "",
            "| N | exact ms | faiss ms | faiss / exact | agreement |",
            "|---|---|---|---|---|",
        ]
        for n in grid_sizes:
            e = find(doc, "sampler_cell", sampler="mined_exact", n=n)
            f = find(doc, "sampler_cell", sampler="mined_faiss", n=n)
            ratio = f["median_s"] / e["median_s"] if ok(e) and ok(f) else None
            lines.append(
                f"| {fmt_n(n)} | {fmt_ms(e['median_s']) if ok(e) else '–'} | {fmt_ms(f['median_s']) if ok(f) else '–'} "
                f"| {fmt(ratio, 2)} | {fmt(f.get('agreement_with_exact') if ok(f) else None, 3)} |"
            )
    mining = [r for r in doc["cells"] if r["function"] == "mining_cell"]
    if mining:
        p = mining[0]["params"]
        q, n = p["n_queries"], p["n_items"]
        lines += [
            "",
            f"## Mining {fmt_n(q)} queries against {fmt_n(n)} items",
            "",
            f"`MinedSampler(K={K}, rank_window={WINDOW})`, queries fed in blocks of {p['block']} rows (the queries "
            "are the first pool rows, own ids excluded), one process per backend. The full "
            f"[{fmt_n(q)}, {fmt_n(n)}] float32 similarity matrix would need **{q * n * 4 / 1e9:,.2f} GB**; the pool "
            f"itself is {n * D * 4 / 1e9:.2f} GB.",
            "",
            "| backend | blocks measured | total time | median s / block | peak RSS MB | growth MB | checks "
            "| other procs (cores) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in mining:
            backend = m["params"]["backend"]
            if not ok(m):
                lines.append(f"| {backend} | error: {harness.short_error(m)} | | | | | | |")
                continue
            total = f"{m['total_s']:,.1f} s"
            if m["total_is_extrapolated"]:
                total = f"**{total} (extrapolated** from {m['measured_total_s']:,.0f} s measured)"
            lines.append(
                f"| {backend} | {m['n_blocks_measured']} / {m['n_blocks_total']} | {total} | {m['median_block_s']:.2f} "
                f"| {m['peak_rss_mb']:,.0f} | {m['growth_mb']:,.0f} | {'ok' if m['checks_ok'] else 'FAILED'} "
                f"| {m['foreign_cores']:.2f}{mark(m)} |"
            )
        lines += ["", "Fixed work `MinedSampler` repeats on every call (timed once, after the peak was recorded):", ""]
        for m in filter(ok, mining):
            extra = ""
            if m["per_call_faiss_index_build_s"] is not None:
                extra = f", building the faiss `IndexFlatIP` {m['per_call_faiss_index_build_s']:.2f} s"
            normalise = m["per_call_normalize_pool_s"]
            lines.append(f"- {m['params']['backend']}: normalising the pool {normalise:.2f} s{extra}")
    return lines
