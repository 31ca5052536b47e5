"""Which path and tile width ``info_nce`` should take by itself, and what the loss costs inside a trainer (issue 18).

Part 1, **paths**: exact InfoNCE with B = N in-batch candidates, d = ``--dim`` (128), fp32, cosine, T = 0.1, forward +
backward, for B in ``--sizes`` and ``torch.set_num_threads`` in ``--threads``:

* ``plain`` — ``F.cross_entropy(normalize(q) @ normalize(k).T / T, arange(B))``; ``plain_sym`` the two directions
  from one logits matrix (its transpose);
* ``clip`` — open_clip's ``ClipLoss`` (``--open-clip-loss PATH`` loads its ``loss.py`` when open_clip is not
  installed; without either, the same formula written out: two products, ``cross_entropy`` on each);
* ``negkit`` / ``negkit_sym`` — ``info_nce(q, k[, symmetric=True])`` without ``chunk_size``: the default users get;
* ``untiled`` / ``untiled_sym`` — negkit's plain path forced; ``tiled{c}`` / ``tiled_sym{c}`` — ``chunk_size=c``.

Every method of one (B, threads) cell runs in the same fresh process, **interleaved** (method 1, 2, …, then again),
so that a load that comes and goes on a shared machine hits them all alike; the cell reports the median of
``--repeats`` steps after a warm-up, and the load average before and after. ``--busy`` adds the same cells with a
busy-loop process beside them (one core taken).

Part 2, **sentence-transformers**: ``NegkitLoss.compute_loss_from_embeddings`` + backward against
``MultipleNegativesRankingLoss`` (scale 20 = T 0.05) on the same embeddings (d = 384), at B = 8, 64 (with one
hard-negative column) and 512, medians of many interleaved steps, 1 and 2 threads; ``negkit_fast`` is the same call
inside ``negkit.fast_checks()``.

Run: ``python benchmarks/tiles.py`` (about 10 minutes on 2 cores), ``--quick`` for a smoke run. Writes
``benchmarks/results/tiles.{json,md}`` (``--out`` for another stem).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHUNKS = (512, 1024, 2048, 4096)
TEMPERATURE = 0.1


# --------------------------------------------------------------------------------------------------- the worker


def _clip_loss(path: str | None) -> tuple[str, Any]:
    """open_clip's ``ClipLoss`` (installed, or its ``loss.py`` from ``path``), else ``None``."""
    try:
        from open_clip.loss import ClipLoss  # type: ignore[import-not-found]

        return "open_clip", ClipLoss()
    except ImportError:
        pass
    if path:
        spec = importlib.util.spec_from_file_location("open_clip_loss", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return f"open_clip loss.py ({Path(path).name})", module.ClipLoss()
    return "formula", None


def paths_worker(size: int, dim: int, threads: int, repeats: int, methods: list[str], clip_path: str | None) -> dict:
    import torch
    import torch.nn.functional as F

    import negkit.losses.functional.nce as nce
    from negkit.losses import info_nce

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(size)
    q = torch.randn(size, dim, generator=generator).requires_grad_(True)
    k = torch.randn(size, dim, generator=generator).requires_grad_(True)
    target = torch.arange(size)
    clip_kind, clip = _clip_loss(clip_path)
    scale = torch.tensor(1.0 / TEMPERATURE)

    def plain(symmetric: bool):
        def step():
            logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / TEMPERATURE
            loss = F.cross_entropy(logits, target)
            return 0.5 * (loss + F.cross_entropy(logits.T, target)) if symmetric else loss

        return step

    def clip_step():
        a, b = F.normalize(q, dim=1), F.normalize(k, dim=1)
        if clip is not None:
            return clip(a, b, scale)
        return 0.5 * (F.cross_entropy(scale * a @ b.T, target) + F.cross_entropy(scale * b @ a.T, target))

    def negkit(symmetric: bool, chunk: int | None = None, untiled: bool = False):
        def step():
            if not untiled:
                return info_nce(q, k, temperature=TEMPERATURE, symmetric=symmetric, chunk_size=chunk)
            saved, nce.AUTO_TILE_LOGITS = nce.AUTO_TILE_LOGITS, 1 << 62
            try:
                return info_nce(q, k, temperature=TEMPERATURE, symmetric=symmetric)
            finally:
                nce.AUTO_TILE_LOGITS = saved

        return step

    table = {
        "plain": plain(False),
        "plain_sym": plain(True),
        "clip": clip_step,
        "negkit": negkit(False),
        "negkit_sym": negkit(True),
        "untiled": negkit(False, untiled=True),
        "untiled_sym": negkit(True, untiled=True),
    }
    for chunk in CHUNKS:
        table[f"tiled{chunk}"] = negkit(False, chunk)
        table[f"tiled_sym{chunk}"] = negkit(True, chunk)
    steps = {name: table[name] for name in methods}
    values: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name in steps}
    load_before = os.getloadavg()[0]
    for rep in range(repeats + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            loss = step()
            loss.backward()
            elapsed = time.perf_counter() - start
            q.grad = k.grad = None
            if rep:
                times[name].append(elapsed)
            else:
                values[name] = float(loss)
    chunk = nce.auto_chunk(size, size, dim)
    return {
        "size": size,
        "dim": dim,
        "threads": threads,
        "clip": clip_kind,
        "auto_chunk": chunk,
        "median_s": {name: statistics.median(ts) for name, ts in times.items()},
        "min_s": {name: min(ts) for name, ts in times.items()},
        "loss": values,
        "loadavg": [load_before, os.getloadavg()[0]],
    }


def st_worker(threads: int, repeats: int) -> dict:
    import warnings

    import torch
    from torch import nn

    warnings.filterwarnings("ignore")
    import negkit
    from negkit.integrations.sentence_transformers import NegkitLoss

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.set_num_threads(threads)
    model = nn.Linear(2, 2)  # never called: both losses get embeddings
    mnrl = MultipleNegativesRankingLoss(model, scale=20.0)
    ours = NegkitLoss(model, temperature=0.05)
    rows = []
    for batch, hard in ((8, 0), (64, 1), (512, 0)):
        generator = torch.Generator().manual_seed(batch)
        base = [torch.randn(batch, 384, generator=generator) for _ in range(2 + hard)]

        def run(loss, fast: bool = False, base=base):
            columns = [x.clone().requires_grad_(True) for x in base]
            if fast:
                with negkit.fast_checks():
                    value = loss.compute_loss_from_embeddings(columns, None)
            else:
                value = loss.compute_loss_from_embeddings(columns, None)
            value.backward()
            return float(value)

        values = {"mnrl": run(mnrl), "negkit": run(ours), "negkit_fast": run(ours, True)}
        reps = repeats if batch < 512 else max(repeats // 8, 20)
        times: dict[str, list[float]] = {name: [] for name in values}
        for _ in range(reps):
            for name in values:
                start = time.perf_counter()
                run(mnrl if name == "mnrl" else ours, name == "negkit_fast")
                times[name].append(time.perf_counter() - start)
        rows.append(
            {
                "batch": batch,
                "hard": hard,
                "threads": threads,
                "repeats": reps,
                "median_ms": {name: 1e3 * statistics.median(ts) for name, ts in times.items()},
                "loss": values,
                "loadavg": os.getloadavg()[0],
            }
        )
    return {"rows": rows}


# ---------------------------------------------------------------------------------------------------- the driver


def _spawn(kind: str, params: dict, busy: bool, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    spinner = None
    if busy:  # one core taken by another process, as on any shared machine
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", kind, json.dumps(params)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", **params}
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _methods(size: int) -> list[str]:
    base = ["plain", "plain_sym", "clip", "negkit", "negkit_sym", "untiled", "untiled_sym"]
    chunks = [c for c in CHUNKS if c <= max(size, CHUNKS[0])]
    return base + [f"tiled{c}" for c in chunks] + [f"tiled_sym{c}" for c in chunks]


def render(doc: dict) -> str:
    lines = [
        "# info_nce paths and tiles, and NegkitLoss inside sentence-transformers",
        "",
        f"{doc['date']} · {doc['machine']} · torch {doc['torch']} · load average at start {doc['loadavg']:.1f} · "
        f"ClipLoss: {doc.get('clip', '?')}. Times are medians of interleaved forward + backward steps (seconds; "
        "ratio = time / plain torch's same direction count).",
        "",
        "The machine is shared: the load average (runnable processes, 2 cores) is given per cell. A quiet machine "
        "has a load below 2; above it the absolute times grow and only the ratios within a cell compare.",
        "",
    ]
    for busy in (False, True):
        cells = [c for c in doc["paths"] if c.get("busy") == busy and "median_s" in c]
        if not cells:
            continue
        lines += [f"## {'With one core busy (a busy-loop process beside)' if busy else 'Paths'}", ""]
        header = [
            "B",
            "d",
            "threads",
            "load",
            "auto chunk",
            "plain",
            "negkit",
            "ratio",
            "plain sym",
            "clip",
            "negkit sym",
            "vs plain sym",
            "vs clip",
            "best tiled (one way)",
            "best tiled sym",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for c in cells:
            m = c["median_s"]
            tiled = {k: v for k, v in m.items() if k.startswith("tiled") and not k.startswith("tiled_sym")}
            tiled_sym = {k: v for k, v in m.items() if k.startswith("tiled_sym")}
            best = min(tiled, key=tiled.get) if tiled else None
            best_sym = min(tiled_sym, key=tiled_sym.get) if tiled_sym else None
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{c['size']:,}",
                        str(c["dim"]),
                        str(c["threads"]),
                        f"{c['loadavg'][0]:.1f}–{c['loadavg'][1]:.1f}",
                        str(c["auto_chunk"]),
                        f"{m['plain']:.3f}",
                        f"{m['negkit']:.3f}",
                        f"{m['negkit'] / m['plain']:.2f}×",
                        f"{m['plain_sym']:.3f}",
                        f"{m['clip']:.3f}",
                        f"{m['negkit_sym']:.3f}",
                        f"{m['negkit_sym'] / m['plain_sym']:.2f}×",
                        f"{m['negkit_sym'] / m['clip']:.2f}×",
                        f"{best[5:]}: {tiled[best]:.3f}" if best else "–",
                        f"{best_sym[9:]}: {tiled_sym[best_sym]:.3f}" if best_sym else "–",
                    ]
                )
                + " |"
            )
        lines.append("")
        lines.append("<details><summary>every method</summary>")
        lines.append("")
        for c in cells:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in c["median_s"].items())
            lines.append(f"- B = {c['size']:,}, d = {c['dim']}, {c['threads']} thread(s): {shown}")
        lines += ["", "</details>", ""]
    failed = [c for c in doc["paths"] if "error" in c]
    for c in failed:
        lines.append(f"- failed cell {c}")
    if doc.get("st"):
        lines += [
            "## NegkitLoss vs sentence-transformers' MultipleNegativesRankingLoss (loss + backward on embeddings)",
            "",
            "| B | hard columns | threads | steps | MNRL ms | NegkitLoss ms | ratio | fast_checks ms | ratio | load |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for block in doc["st"]:
            for r in block.get("rows", []):
                m = r["median_ms"]
                lines.append(
                    f"| {r['batch']} | {r['hard']} | {r['threads']} | {r['repeats']} | {m['mnrl']:.3f} | "
                    f"{m['negkit']:.3f} | {m['negkit'] / m['mnrl']:.2f}× | {m['negkit_fast']:.3f} | "
                    f"{m['negkit_fast'] / m['mnrl']:.2f}× | {r['loadavg']:.1f} |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--worker"]:
        kind, params = argv[1], json.loads(argv[2])
        result = paths_worker(**params) if kind == "paths" else st_worker(**params)
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096,8192")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", action="store_true", help="also the cells with one core busy (B = 4096)")
    parser.add_argument("--no-st", action="store_true", help="skip the sentence-transformers part")
    parser.add_argument("--st-repeats", type=int, default=400)
    parser.add_argument("--open-clip-loss", default=None, help="path to open_clip's loss.py (if not installed)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "tiles"))
    args = parser.parse_args(argv)
    sizes = [256, 1024] if args.quick else [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    repeats = 2 if args.quick else args.repeats
    import torch

    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "loadavg": os.getloadavg()[0],
        "paths": [],
        "st": [],
    }
    out = Path(args.out)
    cells = [(size, t, False) for size in sizes for t in threads]
    if args.busy:
        cells += [(4096 if not args.quick else 1024, t, True) for t in threads]
    for size, t, busy in cells:
        params = {
            "size": size,
            "dim": args.dim,
            "threads": t,
            "repeats": repeats if size <= 4096 else max(2, repeats // 2),
            "methods": [m for m in _methods(size) if not args.methods or m in args.methods.split(",")],
            "clip_path": args.open_clip_loss,
        }
        print(f"paths B={size} threads={t} busy={busy}", flush=True)
        result = _spawn("paths", params, busy, timeout=1800)
        result["busy"] = busy
        doc["clip"] = result.get("clip", doc.get("clip"))
        doc["paths"].append(result)
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    if not args.no_st:
        for t in threads:
            print(f"sentence-transformers threads={t}", flush=True)
            repeats_st = 20 if args.quick else args.st_repeats
            doc["st"].append(_spawn("st", {"threads": t, "repeats": repeats_st}, False, timeout=1800))
            out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(render(doc))
    print(render(doc))


if __name__ == "__main__":
    main(sys.argv[1:])
