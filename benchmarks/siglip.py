"""SigLIP's pairwise sigmoid loss: the plain path against the column-tiled one (and open_clip's ``SigLipLoss``).

For B pairs (default 16,384), d = 128, float32 inputs N(0, 1), learnable scale and bias (t = 10, b = −10, the
published initialisation), each cell times forward + backward of:

* ``plain``      — ``negkit.losses.siglip(a, p, ...)``: the ``[B, B]`` logits at once;
* ``tiled``      — ``siglip(..., chunk_size=--chunk)`` (default 1024): column tiles, recomputed in backward;
* ``open_clip``  — open_clip's ``SigLipLoss`` on the normalised rows (the peer; ``loss.py`` loaded without the
  package's ``__init__``, which needs torchvision). An error is recorded when open_clip_torch is not installed.

One cell (fresh process) per method and B: median of ``--repeats`` (2) steps after one warm-up, the peak RSS growth
of those steps over the inputs. ``--quick``: B = 2048, one repeat.
"""

from __future__ import annotations

import argparse
import importlib.util

import harness
from harness import Cell, find, fmt, fmt_ms, mark, ok

TITLE = "SigLIP: plain vs column-tiled (and open_clip's SigLipLoss)"
D, SCALE, BIAS = 128, 10.0, -10.0
METHODS = ("plain", "tiled", "open_clip")


def add_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(float(s)) for s in text.split(",") if s.strip()],
        default=None,
        help="numbers of pairs B (default 16384)",
    )
    parser.add_argument("--chunk", type=int, default=1024, help="tile width of the tiled path (default 1024)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per cell (2; quick 1)")


def plan(args: argparse.Namespace) -> list[Cell]:
    sizes = args.sizes or ([2048] if args.quick else [16384])
    repeats = args.repeats or (1 if args.quick else 2)
    return [
        Cell("siglip_cell", {"method": m, "size": b, "chunk": args.chunk, "repeats": repeats}, f"{m} B={b:,}")
        for b in sizes
        for m in METHODS
    ]


def _open_clip_loss():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip_torch is not installed (pip install --no-deps open_clip_torch==3.3.0)")
    loader = importlib.util.spec_from_file_location("open_clip_loss", f"{spec.submodule_search_locations[0]}/loss.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module.SigLipLoss()


def siglip_cell(method: str, size: int, chunk: int, repeats: int) -> dict:
    """``repeats`` forward + backward steps of one SigLIP implementation on ``size`` pairs."""
    import torch
    import torch.nn.functional as F

    from negkit.losses import siglip

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, D, generator=generator).requires_grad_(True)
    p = torch.randn(size, D, generator=generator).requires_grad_(True)
    log_scale = torch.tensor(float(torch.tensor(SCALE).log()), requires_grad=True)
    bias = torch.tensor(BIAS, requires_grad=True)
    reference = _open_clip_loss() if method == "open_clip" else None

    def step() -> float:
        for x in (a, p, log_scale, bias):
            x.grad = None
        if reference is not None:
            loss = reference(F.normalize(a, dim=1), F.normalize(p, dim=1), log_scale.exp(), bias)
        else:
            loss = siglip(
                a,
                p,
                logit_scale=log_scale.exp(),
                logit_bias=bias,
                chunk_size=chunk if method == "tiled" else None,
            )
        loss.backward()
        return float(loss.detach())

    stats, value = harness.measure(step, repeats)
    return {**stats, "loss": value, "grad_bias": float(bias.grad)}


def render(doc: dict) -> list[str]:
    sizes = sorted({r["params"]["size"] for r in doc["cells"]})
    chunks = sorted({r["params"]["chunk"] for r in doc["cells"]})
    lines = [
        f"d = {D}, float32, t = {SCALE:g}, b = {BIAS:g} (learnable); one forward + backward step per call; tiled "
        f"chunk = {', '.join(map(str, chunks))}; ΔMB = peak RSS growth of the steps over the inputs; one cell per "
        "method and B.",
        "",
        "| B | plain ms | plain ΔMB | tiled ms | tiled ΔMB | open_clip ms | open_clip ΔMB | plain / tiled ΔMB "
        "| loss plain / tiled / open_clip |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in sizes:
        cells = [find(doc, "siglip_cell", method=m, size=b) for m in METHODS]
        row = [f"{b:,}"]
        for r in cells:
            row += [fmt_ms(r["median_s"]) + mark(r), fmt(r["growth_mb"], 0)] if ok(r) else ["err", "err"]
        plain, tiled = cells[0], cells[1]
        ratio = (
            f"{plain['growth_mb'] / tiled['growth_mb']:.1f}×"
            if ok(plain) and ok(tiled) and tiled["growth_mb"] > 0
            else "–"
        )
        losses = " / ".join(f"{r['loss']:.6g}" if ok(r) else "err" for r in cells)
        lines.append("| " + " | ".join([*row, ratio, losses]) + " |")
    return lines
