"""negkit's losses against plain torch and pytorch-metric-learning: forward + backward time and peak memory.

Part 1, cross-view InfoNCE with B = N (in-batch): ``F.cross_entropy(q @ k.T / T)`` (plain torch) against negkit's
tiled ``info_nce(chunk_size=...)``, B ∈ ``--sizes``.
Part 2, SupCon / NT-Xent over 2B embeddings of B pairs (labels = pair ids, so every anchor has one positive and
the loss is NT-Xent): pytorch-metric-learning ``SupConLoss`` and ``NTXentLoss`` (where they fit in memory) against
negkit ``sup_con`` plain and tiled, B ∈ ``--pairs``.

Each (method, size) runs in a fresh process (this script re-invoked with ``--worker``); peak RSS growth over the
RSS after creating the inputs is read from ``resource.getrusage``; time is the median of ``--repeats`` calls after
one warm-up, torch with 2 threads. d = 128, float32, cosine, T = 0.1. Ratios are negkit tiled / the other.
Writes ``tiled.json``, ``tiled.md`` and ``tiled.png`` under ``--out`` (default ``benchmarks/results``). Usage:
``negkit bench`` or ``python -m negkit.bench [--sizes 1024,4096,16384] [--pairs 1024,4096] [--chunk 128]``.
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


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, size: int, chunk: int, repeats: int) -> None:
    import torch
    import torch.nn.functional as F

    from negkit.losses import info_nce, sup_con

    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(size, 128, generator=generator).requires_grad_(True)
    k = torch.randn(size, 128, generator=generator).requires_grad_(True)
    target = torch.arange(size)
    pair_labels = torch.arange(size).repeat(2)
    if method.startswith("pml"):
        from pytorch_metric_learning import losses as pml

        pml_loss = pml.SupConLoss(temperature=0.1) if method == "pml_supcon" else pml.NTXentLoss(temperature=0.1)
    baseline = rss_mb()

    def step() -> float:
        if method == "plain":
            loss = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.1, target)
        elif method == "tiled":
            loss = info_nce(q, k, temperature=0.1, chunk_size=chunk)
        elif method.startswith("pml"):
            loss = pml_loss(torch.cat([q, k]), pair_labels)
        elif method == "supcon_plain":
            loss = sup_con(torch.cat([q, k]), pair_labels, temperature=0.1)
        else:
            loss = sup_con(torch.cat([q, k]), pair_labels, temperature=0.1, chunk_size=chunk)
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


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
        return Path()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--sizes", default="1024,4096,16384")
    parser.add_argument("--pairs", default="1024,4096")
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    def run(method: str, size: int) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "negkit.bench", "--worker", method, str(size), str(args.chunk), str(args.repeats)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(method, size, result, flush=True)
        return result

    rows = [
        {"B": size, "plain": run("plain", size), "tiled": run("tiled", size)}
        for size in (int(s) for s in args.sizes.split(","))
    ]
    pair_rows = []
    for size in (int(s) for s in args.pairs.split(",")):
        row = {"pairs": size}
        for method in ("pml_supcon", "pml_ntxent", "supcon_plain", "supcon_tiled"):
            # PML's NTXentLoss enumerates pair tuples (memory ~ 8B^3): only the smallest size fits.
            row[method] = run(method, size) if method != "pml_ntxent" or size <= 1024 else {"error": "skipped: ~8B^3"}
        pair_rows.append(row)
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "chunk": args.chunk, "cpus": os.cpu_count()}
    lines = [
        "# negkit losses vs plain torch and pytorch-metric-learning",
        "",
        f"{info['date']} · chunk {args.chunk} · d = 128 · fp32 · forward + backward · median of {args.repeats} · "
        "ΔMB = peak RSS growth over the inputs.",
        "",
        "## InfoNCE, B = N in-batch: tiled `info_nce` vs `F.cross_entropy(q @ k.T / T)`",
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
    lines += [
        "",
        "## NT-Xent / SupCon over 2B embeddings of B pairs",
        "",
        "| pairs | method | loss | s | ΔMB | negkit tiled memory ratio |",
        "|---|---|---|---|---|---|",
    ]
    for row in pair_rows:
        tiled = row["supcon_tiled"]
        for method in ("pml_supcon", "pml_ntxent", "supcon_plain", "supcon_tiled"):
            r = row[method]
            if "error" in r:
                lines.append(f"| {row['pairs']:,} | {method} | – | – | – | {r['error']} |")
                continue
            ratio = tiled["growth_mb"] / max(r["growth_mb"], 1e-9) if "growth_mb" in tiled else float("nan")
            lines.append(
                f"| {row['pairs']:,} | {method} | {r['loss']:.4f} | {r['seconds']:.2f} | "
                f"{r['growth_mb']:.0f} | {ratio:.3f}× |"
            )
    rows = {"infonce": rows, "pairs": pair_rows}
    results = args.out
    results.mkdir(parents=True, exist_ok=True)
    _plot(rows, results / "tiled.png")
    lines += ["", "![memory](tiled.png)"]
    for name, text in (
        ("tiled.json", json.dumps({"info": info, "rows": rows}, indent=2) + "\n"),
        ("tiled.md", "\n".join(lines) + "\n"),
    ):
        fd, tmp = tempfile.mkstemp(dir=results, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, results / name)
    print("\n".join(lines))
    return results / "tiled.md"


def _plot(rows: dict, path: Path) -> None:
    """Peak-memory growth per method and size (log scale)."""
    from negkit.report.plots import plt, save_figure

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in ("plain", "tiled"):
        points = [(r["B"], r[method]["growth_mb"]) for r in rows["infonce"] if "growth_mb" in r[method]]
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    for method in ("pml_supcon", "supcon_plain", "supcon_tiled"):
        points = [(r["pairs"], r[method]["growth_mb"]) for r in rows["pairs"] if "growth_mb" in r[method]]
        right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    for axes, title, xlabel in ((left, "InfoNCE, B = N", "B"), (right, "SupCon / NT-Xent over 2B", "pairs B")):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set(xlabel=xlabel, ylabel="peak memory growth (MB)", title=title)
        axes.legend(fontsize=8)
    save_figure(figure, path)


if __name__ == "__main__":
    main()
