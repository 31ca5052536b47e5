"""Cost of one EMC² (Metropolis–Hastings) sampling step against exact sampling from softmax(β·s).

For a dataset-wide ``EmbeddingCache`` of N rows (d = 128), a batch of B = 256 anchors asks for K = 64 negatives:

* ``mcmc``  — ``MCMCSampler(N, k=64, beta, burn_in=0.5).sample(anchors, cache, anchor_ids)``: 128 proposals
  per anchor, each one dot product; the chains persist between calls (as in training);
* ``exact`` — ``HardnessSampler(64, beta, replacement=True)``: 64 independent draws from softmax(β·s) over all
  N rows (two chunked passes: log-partition, then inverse CDF);
* ``exact_gumbel`` — ``HardnessSampler(64, beta)``: 64 distinct rows by Gumbel-top-k (one chunked pass).

Median of ``--repeats`` timed calls after one warm-up, all in one process, torch with 2 threads.
Writes ``benchmarks/results/mcmc.json`` and ``mcmc.md`` (atomically) with the per-N times and the ratio
exact / mcmc. Usage: ``python benchmarks/bench_mcmc.py [--sizes 1000,10000,60000,100000,1000000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from negkit.negatives import EmbeddingCache, HardnessSampler, MCMCSampler

B, D, K, BETA = 256, 128, 64, 1 / 0.07
RESULTS = Path(__file__).resolve().parent / "results"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(size: int, repeats: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    cache = EmbeddingCache(size, D)
    cache.update(torch.arange(size), torch.randn(size, D, generator=generator))
    anchor_ids = torch.arange(B) % size
    anchors = cache.table[anchor_ids] + 0.1 * torch.randn(B, D, generator=generator)
    mcmc = MCMCSampler(size, k=K, beta=BETA, burn_in=0.5)
    exact = HardnessSampler(K, BETA, replacement=True)
    gumbel = HardnessSampler(K, BETA)
    pool_ids = torch.arange(size)
    return {
        "mcmc_ms": median_ms(
            lambda: mcmc.sample(anchors, cache.table, anchor_ids=anchor_ids, generator=generator), repeats
        ),
        "exact_ms": median_ms(
            lambda: exact.sample(anchors, cache.table, anchor_ids=anchor_ids, pool_ids=pool_ids, generator=generator),
            repeats,
        ),
        "exact_gumbel_ms": median_ms(
            lambda: gumbel.sample(anchors, cache.table, anchor_ids=anchor_ids, pool_ids=pool_ids, generator=generator),
            repeats,
        ),
        "mcmc_acceptance_rate": mcmc.acceptance_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,60000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = {}
    for size in (int(float(s)) for s in args.sizes.split(",")):
        rows[size] = measure(size, args.repeats if size < 1_000_000 else max(2, args.repeats // 2))
        print(size, rows[size], flush=True)
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "B": B,
        "d": D,
        "K": K,
        "beta": BETA,
    }
    atomic_write(RESULTS / "mcmc.json", json.dumps({"info": info, "results": rows}, indent=2) + "\n")
    lines = [
        "# MCMC (EMC²) step vs exact sampling from softmax(β·s)",
        "",
        f"{info['date']} · torch {info['torch']} · {info['cpus']} CPUs · B = {B}, d = {D}, K = {K}, β = {BETA:.2f}; "
        "median ms per call.",
        "",
        "| N | mcmc ms | exact (with replacement) ms | exact / mcmc | exact Gumbel-top-k ms | gumbel / mcmc |",
        "|---|---|---|---|---|---|",
    ]
    for size, r in rows.items():
        lines.append(
            f"| {size:,} | {r['mcmc_ms']:.1f} | {r['exact_ms']:.1f} | {r['exact_ms'] / r['mcmc_ms']:.1f}× | "
            f"{r['exact_gumbel_ms']:.1f} | {r['exact_gumbel_ms'] / r['mcmc_ms']:.1f}× |"
        )
    atomic_write(RESULTS / "mcmc.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
