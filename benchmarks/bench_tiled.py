"""Tiled InfoNCE against the plain ``F.cross_entropy(q @ k.T / T)`` path: forward + backward time and peak memory.

Each (method, B) runs in a fresh process (this script re-invoked with ``--worker``); peak RSS growth over the
RSS after creating the inputs is read from ``resource.getrusage``; time is the median of ``--repeats`` calls after
one warm-up, torch with 2 threads. B = N (in-batch), d = 128, float32, cosine, T = 0.1.
Writes ``benchmarks/results/tiled.json`` and ``tiled.md``. Usage:
``python benchmarks/bench_tiled.py [--sizes 1024,4096,16384] [--chunk 1024] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, size: int, chunk: int, repeats: int) -> None:
    import torch
    import torch.nn.functional as F

    from negkit.losses import info_nce

    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(size, 128, generator=generator).requires_grad_(True)
    k = torch.randn(size, 128, generator=generator).requires_grad_(True)
    target = torch.arange(size)
    baseline = rss_mb()

    def step() -> float:
        if method == "plain":
            loss = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.1, target)
        else:
            loss = info_nce(q, k, temperature=0.1, chunk_size=chunk)
        loss.backward()
        q.grad = k.grad = None
        return float(loss)

    value = step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"loss": value, "seconds": statistics.median(times), "peak_mb": peak, "growth_mb": peak - baseline})
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,4096,16384")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = {"B": size}
        for method in ("plain", "tiled"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", method, str(size), str(args.chunk), str(args.repeats)],
                capture_output=True,
                text=True,
                check=True,
            )
            row[method] = json.loads(out.stdout.strip().splitlines()[-1])
            print(size, method, row[method], flush=True)
        rows.append(row)
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "chunk": args.chunk, "cpus": os.cpu_count()}
    lines = [
        "# Tiled InfoNCE vs plain cross_entropy(q @ k.T / T)",
        "",
        f"{info['date']} · chunk {args.chunk} · d = 128 · fp32 · forward + backward · median of {args.repeats}.",
        "",
        "| B = N | plain s | tiled s | time ratio | plain ΔMB | tiled ΔMB | memory ratio | same loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p, t = row["plain"], row["tiled"]
        same = abs(p["loss"] - t["loss"]) < 1e-4 * max(1.0, abs(p["loss"]))
        lines.append(
            f"| {row['B']:,} | {p['seconds']:.2f} | {t['seconds']:.2f} | {t['seconds'] / p['seconds']:.2f}× | "
            f"{p['growth_mb']:.0f} | {t['growth_mb']:.0f} | {t['growth_mb'] / max(p['growth_mb'], 1e-9):.3f}× | "
            f"{'yes' if same else 'no'} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("tiled.json", json.dumps({"info": info, "rows": rows}, indent=2) + "\n"),
        ("tiled.md", "\n".join(lines) + "\n"),
    ):
        fd, tmp = tempfile.mkstemp(dir=RESULTS, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, RESULTS / name)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
