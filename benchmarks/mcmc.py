"""Cost of one EMC² (Metropolis–Hastings) sampling step against exact sampling from softmax(β·s).

For a dataset-wide ``EmbeddingCache`` of N rows (d = 128, N(0, 1) rows), B = 256 anchors (cached rows plus 0.1 ×
noise) ask for K = 64 negatives, β = 1 / 0.07:

* ``mcmc``         — ``MCMCSampler(N, k=64, beta, burn_in=0.5).sample(anchors, cache, anchor_ids)``: 128
  proposals per anchor, each one dot product; the chains persist between calls (as in training);
* ``exact``        — ``HardnessSampler(64, beta, replacement=True)``: 64 independent draws from softmax(β·s) over
  all N rows (two chunked passes: log-partition, then inverse CDF);
* ``exact_gumbel`` — ``HardnessSampler(64, beta)``: 64 distinct rows by Gumbel-top-k (one chunked pass).

One cell (fresh process) per method and N (default 1e3, 1e4, 6e4, 1e5, 1e6): median of ``--repeats`` (5; half,
at least 2, for N ≥ 1e6) timed calls after one warm-up, and the peak RSS growth of those calls. ``--quick``: N =
1e3, 1e4, two repeats.
"""

from __future__ import annotations

import argparse

import harness
from harness import Cell, find, fmt, fmt_ms, mark, ok, probe_cell  # noqa: F401  (probe_cell: the worker's)

TITLE = "MCMC (EMC²) step vs exact sampling from softmax(β·s)"
B, D, K, BETA = 256, 128, 64, 1 / 0.07
METHODS = ("mcmc", "exact", "exact_gumbel")
DEFAULT_SIZES = (1_000, 10_000, 60_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)


def add_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(float(s)) for s in text.split(",") if s.strip()],
        default=None,
        help="cache sizes N (default 1e3,1e4,6e4,1e5,1e6)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per cell (5; quick 2)")


def plan(args: argparse.Namespace) -> list[Cell]:
    sizes = args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    repeats = args.repeats or (2 if args.quick else 5)
    return [harness.probe_plan([(B, D, 8192), (1024, D, 1024)])] + [
        Cell(
            "mcmc_cell",
            {"method": method, "n": n, "repeats": repeats if n < 1_000_000 else max(2, repeats // 2)},
            f"{method} N={n:,}",
        )
        for n in sizes
        for method in METHODS
    ]


def mcmc_cell(method: str, n: int, repeats: int) -> dict:
    """``repeats`` calls of one sampler asking K negatives for B anchors out of an N-row cache."""
    import torch

    from negkit.negatives import EmbeddingCache, HardnessSampler, MCMCSampler

    generator = torch.Generator().manual_seed(0)
    cache = EmbeddingCache(n, D)
    cache.update(torch.arange(n), torch.randn(n, D, generator=generator))
    anchor_ids = torch.arange(B) % n
    anchors = cache.table[anchor_ids] + 0.1 * torch.randn(B, D, generator=generator)
    pool_ids = torch.arange(n)
    if method == "mcmc":
        sampler = MCMCSampler(n, k=K, beta=BETA, burn_in=0.5)
        stats, _ = harness.measure(
            lambda: sampler.sample(anchors, cache.table, anchor_ids=anchor_ids, generator=generator), repeats
        )
        return {**stats, "acceptance_rate": sampler.acceptance_rate}
    sampler = HardnessSampler(K, BETA, replacement=method == "exact")
    stats, _ = harness.measure(
        lambda: sampler.sample(anchors, cache.table, anchor_ids=anchor_ids, pool_ids=pool_ids, generator=generator),
        repeats,
    )
    return stats


def render(doc: dict) -> list[str]:
    sizes = sorted({r["params"]["n"] for r in doc["cells"] if r["function"] == "mcmc_cell"})
    steps = 2 * K  # burn_in = 0.5
    # the step's floor: gather B·T proposed rows (read B·T·d floats) and one dot product each
    mcmc_bound = harness.bound_s(doc, flops=2 * B * steps * D, bytes_moved=B * steps * D * 4)
    lines = harness.render_probe(doc)
    if mcmc_bound:
        lines += [
            f"EMC² step bound: gather the B·T = {B * steps:,} proposed rows and one dot product each = "
            f"{fmt_ms(mcmc_bound)} ms at the measured limits (× bound below). The exact samplers' bound is one pass "
            "over the cache + the B×N×d similarity (see the samplers benchmark).",
            "",
        ]
    lines += [
        f"B = {B}, d = {D}, K = {K}, β = {BETA:.2f}; median ms per call (after 1 warm-up), ΔMB = peak RSS growth of "
        "the calls over the inputs; one cell per method and N.",
        "",
        "| N | mcmc ms | mcmc × bound | exact (with replacement) ms | exact / mcmc | exact Gumbel-top-k ms "
        "| gumbel / mcmc | mcmc acceptance | ΔMB mcmc / exact / gumbel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        m, e, g = (find(doc, "mcmc_cell", method=method, n=n) for method in METHODS)

        ms = [fmt_ms(r["median_s"]) + mark(r) if ok(r) else "err" for r in (m, e, g)]
        ratio = [f"{r['median_s'] / m['median_s']:.1f}×" if ok(r) and ok(m) else "–" for r in (e, g)]
        growth = " / ".join(fmt(r["growth_mb"], 0) if ok(r) else "err" for r in (m, e, g))
        acceptance = fmt(m["acceptance_rate"], 3) if ok(m) else "–"
        times_bound = f"{m['median_s'] / mcmc_bound:.1f}×" if ok(m) and mcmc_bound else "–"
        lines.append(
            f"| {n:,} | {ms[0]} | {times_bound} | {ms[1]} | {ratio[0]} | {ms[2]} | {ratio[1]} | {acceptance} "
            f"| {growth} |"
        )
    return lines
