"""negkit's losses against plain torch and pytorch-metric-learning: forward + backward time and peak memory.

Part 1, cross-view InfoNCE with B = N (in-batch negatives), B ∈ ``--sizes`` (default 1024, 4096, 16384):

* ``plain`` — ``F.cross_entropy(normalize(q) @ normalize(k).T / T, arange(B))`` in plain torch;
* ``tiled`` — negkit ``info_nce(q, k, chunk_size=--chunk)`` (the denominator over column tiles).

Part 2, SupCon / NT-Xent over the 2B embeddings of B pairs (labels = pair ids, so every anchor has one positive and
the loss is NT-Xent), B ∈ ``--pairs`` (default 1024, 4096):

* ``pml_supcon`` / ``pml_ntxent`` — pytorch-metric-learning's ``SupConLoss`` / ``NTXentLoss`` (the latter
  enumerates pair tuples, memory ~8B³: run up to 1,024 pairs only);
* ``supcon_plain`` / ``supcon_tiled`` — negkit ``sup_con`` without and with ``chunk_size`` (without it, negkit
  tiles by itself above 2²⁶ logits, i.e. beyond 4,096 pairs).

d = 128, float32, cosine, T = 0.1; each cell is one (method, size) in a fresh process: median of ``--repeats`` (3)
forward + backward steps after one warm-up, and the peak RSS growth over the inputs. Ratios are negkit tiled / the
other. A figure of the memory growth (``<stem>.png``) is written when matplotlib is installed. ``--quick``: B =
256, 1024 and 256 pairs, two repeats.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness
from harness import Cell, find, fmt, mark, ok

TITLE = "negkit losses vs plain torch and pytorch-metric-learning"
D, TEMPERATURE = 128, 0.1
INFONCE = ("plain", "tiled")
PAIRS = ("pml_supcon", "pml_ntxent", "supcon_plain", "supcon_tiled")
PML_NTXENT_MAX_PAIRS = 1024


def _ints(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def add_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument("--sizes", type=_ints, default=None, help="InfoNCE B = N (default 1024,4096,16384)")
    parser.add_argument("--pairs", type=_ints, default=None, help="SupCon / NT-Xent pairs (default 1024,4096)")
    parser.add_argument("--chunk", type=int, default=128, help="negkit tile width (default 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per cell (3; quick 2)")


def plan(args: argparse.Namespace) -> list[Cell]:
    sizes = args.sizes or ([256, 1024] if args.quick else [1024, 4096, 16384])
    pairs = args.pairs or ([256] if args.quick else [1024, 4096])
    repeats = args.repeats or (2 if args.quick else 3)
    cells = [
        Cell("loss_cell", {"method": m, "size": b, "chunk": args.chunk, "repeats": repeats}, f"infonce {m} B={b:,}")
        for b in sizes
        for m in INFONCE
    ]
    for b in pairs:
        for m in PAIRS:
            skip = "~8B³ memory" if m == "pml_ntxent" and b > PML_NTXENT_MAX_PAIRS else None
            params = {"method": m, "size": b, "chunk": args.chunk, "repeats": repeats}
            cells.append(Cell("loss_cell", params, f"pairs {m} B={b:,}", skip=skip))
    return cells


def loss_cell(method: str, size: int, chunk: int, repeats: int) -> dict:
    """Forward + backward of one loss on ``size`` rows (InfoNCE) or ``size`` pairs (SupCon / NT-Xent)."""
    import torch
    import torch.nn.functional as F

    from negkit.losses import info_nce, sup_con

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(size, D, generator=generator).requires_grad_(True)
    k = torch.randn(size, D, generator=generator).requires_grad_(True)
    target = torch.arange(size)
    pair_labels = torch.arange(size).repeat(2)
    if method.startswith("pml"):
        from pytorch_metric_learning import losses as pml

        pml_class = pml.SupConLoss if method == "pml_supcon" else pml.NTXentLoss
        pml_loss = pml_class(temperature=TEMPERATURE)

    def step() -> float:
        if method == "plain":
            loss = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / TEMPERATURE, target)
        elif method == "tiled":
            loss = info_nce(q, k, temperature=TEMPERATURE, chunk_size=chunk)
        elif method.startswith("pml"):
            loss = pml_loss(torch.cat([q, k]), pair_labels)
        elif method == "supcon_plain":
            loss = sup_con(torch.cat([q, k]), pair_labels, temperature=TEMPERATURE)
        elif method == "supcon_tiled":
            loss = sup_con(torch.cat([q, k]), pair_labels, temperature=TEMPERATURE, chunk_size=chunk)
        else:
            raise ValueError(f"unknown method {method!r}")
        loss.backward()
        q.grad = k.grad = None
        return float(loss)

    stats, value = harness.measure(step, repeats)
    return {**stats, "loss": value}


def _s(record: dict) -> str:
    seconds = record["median_s"]
    return (f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}") + mark(record)


def render(doc: dict) -> list[str]:
    cfg = doc["config"]
    infonce = sorted({r["params"]["size"] for r in doc["cells"] if r["params"]["method"] in INFONCE})
    pairs = sorted({r["params"]["size"] for r in doc["cells"] if r["params"]["method"] in PAIRS})
    repeats = sorted({r["params"]["repeats"] for r in doc["cells"]})
    lines = [
        f"chunk {cfg['chunk']} · d = {D} · fp32 · forward + backward · median of {', '.join(map(str, repeats))} "
        "· s = seconds per step · ΔMB = peak RSS growth over the inputs.",
    ]
    if infonce:
        lines += [
            "",
            "## InfoNCE, B = N in-batch: tiled `info_nce` vs `F.cross_entropy(q @ k.T / T)`",
            "",
            "| B = N | plain s | tiled s | time ratio | plain ΔMB | tiled ΔMB | memory ratio | same loss |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in infonce:
            p, t = find(doc, "loss_cell", method="plain", size=b), find(doc, "loss_cell", method="tiled", size=b)
            if not (ok(p) and ok(t)):
                errors = "; ".join(f"{r['label']}: {harness.short_error(r)}" for r in (p, t) if r and not ok(r))
                lines.append(f"| {b:,} | – | – | – | – | – | – | {errors or 'not run'} |")
                continue
            same = "yes" if abs(p["loss"] - t["loss"]) < 1e-4 * max(1.0, abs(p["loss"])) else "no"
            memory = t["growth_mb"] / max(p["growth_mb"], 1e-9)
            lines.append(
                f"| {b:,} | {_s(p)} | {_s(t)} | {t['median_s'] / p['median_s']:.2f}× | {p['growth_mb']:.0f} "
                f"| {t['growth_mb']:.0f} | {memory:.3f}× | {same} |"
            )
    if pairs:
        lines += [
            "",
            "## NT-Xent / SupCon over 2B embeddings of B pairs",
            "",
            "| pairs | method | loss | s | ΔMB | negkit tiled memory ratio |",
            "|---|---|---|---|---|---|",
        ]
        for b in pairs:
            tiled = find(doc, "loss_cell", method="supcon_tiled", size=b)
            for method in PAIRS:
                r = find(doc, "loss_cell", method=method, size=b)
                if r is None:
                    continue
                if not ok(r):
                    lines.append(f"| {b:,} | {method} | – | – | – | {harness.short_error(r)} |")
                    continue
                ratio = fmt(tiled["growth_mb"] / max(r["growth_mb"], 1e-9), 3) + "×" if ok(tiled) else "–"
                lines.append(f"| {b:,} | {method} | {r['loss']:.4f} | {_s(r)} | {r['growth_mb']:.0f} | {ratio} |")
    return lines


def write_extra(doc: dict, out: Path, stem: str) -> list[str]:
    """Peak-memory growth per method and size (log scale), when matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, methods in ((left, INFONCE), (right, ("pml_supcon", "supcon_plain", "supcon_tiled"))):
        for method in methods:
            points = sorted(
                (r["params"]["size"], max(r["growth_mb"], 1e-3))
                for r in doc["cells"]
                if r["params"]["method"] == method and ok(r)
            )
            if points:
                axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=method)
    for axes, title, xlabel in ((left, "InfoNCE, B = N", "B"), (right, "SupCon / NT-Xent over 2B", "pairs B")):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set(xlabel=xlabel, ylabel="peak memory growth (MB)", title=title)
        if axes.lines:
            axes.legend(fontsize=8)
    figure.tight_layout()
    path = out / f"{stem}.png"
    tmp = out / f".{stem}.png.tmp"
    figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    tmp.replace(path)
    return ["", f"![peak memory growth]({path.name})"]
