"""negkit's contrastive losses against the peers users would otherwise pick, each row against the machine's limit.

First cell: the machine probe (``harness.probe_cell``: matmul GFLOP/s at this suite's shapes, exp/s, copy GB/s).
Then one forward + backward step of each method on B pairs (``--sizes``, default 256, 1024, 4096, 16384), d = 128,
float32, cosine similarity, T = 0.1, each (method, B) in a fresh process:

* ``plain`` — ``F.cross_entropy(normalize(q) @ normalize(k).T / T, arange(B))`` in plain torch;
* ``plain_symmetric`` — the same logits, ``(CE(L) + CE(Lᵀ)) / 2`` (CLIP's loss, written by hand);
* ``negkit`` / ``negkit_symmetric`` — ``info_nce(q, k)`` / ``info_nce(q, k, symmetric=True)`` as a user calls
  them (no ``chunk_size``: the path and tile negkit chooses);
* ``negkit_tiled`` / ``negkit_symmetric_tiled`` — the same with ``chunk_size=--chunk`` (column tiles recomputed in
  backward: memory O(B·chunk));
* ``open_clip_clip`` — open_clip's ``ClipLoss`` on the normalised rows, ``logit_scale = 1/T`` (symmetric);
* ``negkit_siglip`` / ``open_clip_siglip`` — negkit's ``siglip`` and open_clip's ``SigLipLoss`` (t = 10, b = −10;
  the sigmoid loss, a different objective: timed beside each other);
* ``pml_ntxent`` — pytorch-metric-learning's ``NTXentLoss`` over the 2B rows (labels = pair ids; its logits are
  2B × 2B and it enumerates pair tuples, time ~B³: run up to 256 pairs);
* ``st_mnrl`` / ``st_cached_mnrl`` — sentence-transformers' ``MultipleNegativesRankingLoss`` (``scale = 1/T``)
  and ``CachedMultipleNegativesRankingLoss`` (mini-batches of 32 rows) on the embeddings (the loss only: no model).

open_clip's ``loss.py`` is loaded without the package's ``__init__`` (which needs torchvision); a peer that is
not installed is a recorded error (``not installable: …``). ``--huge`` (default 65536) runs negkit's default path
only (tiled at that size), one step: plain torch would hold two B × B float32 matrices (logits and their gradient,
34 GB at 65,536), so it has no cell on the CPU.
``--busy`` sizes (default 4096) repeat the plain, default and tiled cells with a busy-loop process beside them.

Lower bound of a step: 3 matmuls of 2·B·N·d FLOPs (logits, and the gradients of both inputs) at the best measured
matmul rate, plus B·N exponentials at the measured exp rate; N = B (2B for NT-Xent over 2B rows, both sides).
Tiled paths recompute the logits in backward: their own floor is 4 matmuls, noted beside the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util

import harness
from harness import Cell, find, fmt, fmt_ms, mark, ok, probe_cell  # noqa: F401  (probe_cell: run by the worker)

TITLE = "negkit losses vs plain torch, open_clip, pytorch-metric-learning and sentence-transformers"
D, TEMPERATURE = 128, 0.1
SIGLIP_SCALE, SIGLIP_BIAS = 10.0, -10.0
INFONCE = ("plain", "negkit", "negkit_tiled", "st_mnrl", "st_cached_mnrl", "pml_ntxent")
SYMMETRIC = ("plain_symmetric", "negkit_symmetric", "negkit_symmetric_tiled", "open_clip_clip")
SIGLIP = ("negkit_siglip", "open_clip_siglip")
METHODS = INFONCE + SYMMETRIC + SIGLIP
#: the methods that run at every size (``--all-up-to`` leaves the others out above it)
CORE = ("plain", "negkit", "negkit_tiled", "plain_symmetric", "negkit_symmetric", "open_clip_clip", "st_mnrl")
BUSY = ("plain", "negkit", "negkit_tiled", "plain_symmetric", "negkit_symmetric")
TILED = ("negkit_tiled", "negkit_symmetric_tiled")
PML_MAX_PAIRS = 256  # measured: 128 pairs 0.55 s, 256 4.8 s, 512 44 s (1 thread): cubic
ST_MINI_BATCH = 32


def _ints(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def _names(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    return chosen


def add_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument("--sizes", type=_ints, default=None, help="B = N (default 256,1024,4096,16384; quick 256)")
    parser.add_argument("--methods", type=_names, default=list(METHODS), help="comma-separated subset")
    parser.add_argument("--huge", type=_ints, default=None, help="tiled-only sizes (default 65536; quick none)")
    parser.add_argument("--busy", type=_ints, default=None, help="sizes with a busy core beside (4096; quick none)")
    parser.add_argument(
        "--all-up-to",
        type=int,
        default=None,
        help="above this B only the core methods run (plain, negkit, open_clip ClipLoss...; default: all sizes)",
    )
    parser.add_argument("--chunk", type=int, default=128, help="negkit tile width for the *_tiled methods (128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per cell (3; quick 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU script passes cuda)")


def plan(args: argparse.Namespace) -> list[Cell]:
    sizes = args.sizes or ([256] if args.quick else [256, 1024, 4096, 16384])
    huge = args.huge if args.huge is not None else ([] if args.quick else [65536])
    busy = args.busy if args.busy is not None else ([] if args.quick else [4096])
    repeats = args.repeats or (1 if args.quick else 3)
    common = {"chunk": args.chunk, "device": args.device}
    cells = [harness.probe_plan(_probe_shapes(sizes, args.chunk), device=args.device)]
    for b in sizes:
        for m in args.methods:
            if args.all_up_to is not None and b > args.all_up_to and m not in CORE:
                continue
            skip = None
            if m == "pml_ntxent" and b > PML_MAX_PAIRS:
                skip = (
                    f"NTXentLoss enumerates pair tuples (time ~B³, 44 s at 512 pairs): run up to {PML_MAX_PAIRS} pairs"
                )
            params = {"method": m, "size": b, "repeats": repeats, "warmup": 1, "busy": False, **common}
            cells.append(Cell("loss_cell", params, f"{m} B={b:,}", skip=skip))
    for b in huge:
        gb = 2 * b * b * 4 / 1e9
        skip = f"plain torch would hold two {b:,}² float32 matrices ({gb:.0f} GB): no cell"
        if args.device.startswith("cuda") and gb < 100:  # an H200 holds them: measure plain torch too
            skip = None
        cells.append(
            Cell(
                "loss_cell",
                {"method": "plain", "size": b, "repeats": 1, "warmup": 0, "busy": False, **common},
                f"plain B={b:,}",
                skip=skip,
            )
        )
        # negkit as called: beyond 2^22 logits its default path is the tiled one (tile width chosen for the machine)
        params = {"method": "negkit", "size": b, "repeats": 1, "warmup": 0, "busy": False, **common}
        cells.append(Cell("loss_cell", params, f"negkit B={b:,}", timeout=1800.0))
    for b in busy:
        for m in BUSY:
            if m in args.methods:
                params = {"method": m, "size": b, "repeats": repeats, "warmup": 1, "busy": True, **common}
                cells.append(Cell("loss_cell", params, f"{m} B={b:,} busy core"))
    return cells


def _probe_shapes(sizes: list[int], chunk: int) -> list[tuple[int, int, int]]:
    b = min(max([*sizes, 1024]), 4096)  # never only tiny shapes: the peak rate is the bound's
    return [(b, D, b), (b, D, chunk), (b, b, D)]


def _open_clip_loss_module():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("not installable here: open_clip_torch is not installed (pip install --no-deps)")
    location = f"{spec.submodule_search_locations[0]}/loss.py"
    loader = importlib.util.spec_from_file_location("open_clip_loss_for_negkit_bench", location)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _no_model():
    """A stand-in for the model the sentence-transformers losses are built with (the loss stage never calls it)."""
    import torch

    return torch.nn.Sequential(torch.nn.Identity())


def _step_function(method: str, q, k, chunk: int):
    """The forward pass of ``method`` on ``q``, ``k`` (a callable returning the loss)."""
    import torch
    import torch.nn.functional as F

    from negkit.losses import info_nce

    size = q.shape[0]
    target = torch.arange(size, device=q.device)
    if method == "plain":
        return lambda: F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / TEMPERATURE, target)
    if method == "plain_symmetric":

        def symmetric():
            logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / TEMPERATURE
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

        return symmetric
    if method.startswith("negkit") and "siglip" not in method:
        options = {"symmetric": "symmetric" in method, "chunk_size": chunk if method in TILED else None}
        return lambda: info_nce(q, k, temperature=TEMPERATURE, **options)
    if method == "negkit_siglip":
        from negkit.losses import siglip

        return lambda: siglip(q, k, logit_scale=SIGLIP_SCALE, logit_bias=SIGLIP_BIAS)
    if method.startswith("open_clip"):
        module = _open_clip_loss_module()
        if method == "open_clip_clip":
            clip = module.ClipLoss()
            scale = torch.tensor(1 / TEMPERATURE, device=q.device)
            return lambda: clip(F.normalize(q, dim=1), F.normalize(k, dim=1), scale)
        sig = module.SigLipLoss()
        scale, bias = torch.tensor(SIGLIP_SCALE, device=q.device), torch.tensor(SIGLIP_BIAS, device=q.device)
        return lambda: sig(F.normalize(q, dim=1), F.normalize(k, dim=1), scale, bias)
    if method == "pml_ntxent":
        from pytorch_metric_learning import losses as pml

        ntxent = pml.NTXentLoss(temperature=TEMPERATURE)
        labels = torch.arange(size, device=q.device).repeat(2)
        return lambda: ntxent(torch.cat([q, k]), labels)
    if method == "st_mnrl":
        from sentence_transformers import losses as st

        mnrl = st.MultipleNegativesRankingLoss(_no_model(), scale=1 / TEMPERATURE)
        return lambda: mnrl.compute_loss_from_embeddings([q, k], None)
    if method == "st_cached_mnrl":
        from sentence_transformers import losses as st

        cached = st.CachedMultipleNegativesRankingLoss(
            _no_model(), scale=1 / TEMPERATURE, mini_batch_size=ST_MINI_BATCH
        )
        # the loss stage of GradCache on given embeddings: mini-batches of rows, backward inside each
        return lambda: cached.calculate_loss([[q], [k]], with_backward=True)
    raise ValueError(f"unknown method {method!r}")


def loss_cell(method: str, size: int, repeats: int, warmup: int, busy: bool, chunk: int, device: str = "cpu") -> dict:
    """Forward + backward of one loss on ``size`` pairs (timed with a busy core beside it when ``busy``)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # cells may share a process (--one-process): start each from a clean allocator
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(size, D, generator=generator).to(device).requires_grad_(True)
    k = torch.randn(size, D, generator=generator).to(device).requires_grad_(True)
    forward = _step_function(method, q, k, chunk)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    backward_inside = method == "st_cached_mnrl"

    def step() -> float:
        q.grad = k.grad = None
        loss = forward()
        if not backward_inside:
            loss.backward()
        synchronize()
        return float(loss.detach())

    cuda_peak = None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with harness.busy_core() if busy else contextlib.nullcontext():
        stats, value = harness.measure(step, repeats, warmup=warmup)
    if device.startswith("cuda"):
        cuda_peak = torch.cuda.max_memory_allocated() / harness.MB
    return {**stats, "loss": value, "cuda_peak_mb": cuda_peak, "grad_norm": float(q.grad.norm())}


# -- Markdown -------------------------------------------------------------------------------------------------


def _bound(doc: dict, method: str, size: int) -> float | None:
    n = 2 * size if method == "pml_ntxent" else size
    rows = 2 * size if method == "pml_ntxent" else size
    return harness.bound_s(doc, flops=3 * 2 * rows * n * D, exps=rows * n)


def _row(doc: dict, method: str, size: int, busy: bool, plain: dict | None) -> str | None:
    r = find(doc, "loss_cell", method=method, size=size, busy=busy)
    if r is None:
        return None
    if not ok(r):
        return f"| {method} | – | – | – | – | – | {harness.short_error(r)} |"
    bound = _bound(doc, method, size)
    ratio = f"{r['median_s'] / bound:.1f}×" if bound else "–"
    # negkit's default path tiles beyond 2^22 logits on the CPU (auto_chunk): its floor is 4 matmuls there too
    if method in TILED or (method.startswith("negkit") and size * size > 1 << 22 and "siglip" not in method):
        ratio += f" ({r['median_s'] / (bound * 4 / 3):.1f}× of 4)" if bound else ""
    vs_plain = "–" if not ok(plain) else "1" if plain is r else f"{r['median_s'] / plain['median_s']:.2f}×"
    memory = r["cuda_peak_mb"] if r.get("cuda_peak_mb") is not None else r["growth_mb"]
    return (
        f"| {method} | {fmt_ms(r['median_s'])}{mark(r)} | {fmt_ms(bound)} | {ratio} | {vs_plain} | {fmt(memory, 0)} "
        f"| {r['loss']:.4f} |"
    )


def render(doc: dict) -> list[str]:
    cells = [r for r in doc["cells"] if r["function"] == "loss_cell"]
    cfg = doc["config"]
    lines = harness.render_probe(doc)
    lines += [
        f"d = {D}, float32, cosine, T = {TEMPERATURE:g}; one forward + backward step; median of "
        f"{', '.join(map(str, sorted({r['params']['repeats'] for r in cells})))} timed steps after "
        f"{', '.join(map(str, sorted({r['params']['warmup'] for r in cells})))} warm-up; tiles of {cfg['chunk']} "
        f"columns for *_tiled; device {cfg.get('device', 'cpu')}. ms = median step; *bound* = 3 matmuls of "
        "2·B·N·d FLOPs + B·N exps at the measured limits (4 matmuls for recomputed tiles: '× of 4'); *vs plain* = "
        "time / the plain torch row of its group (one-direction rows against `plain`, symmetric and SigLIP rows "
        "against `plain_symmetric`); ΔMB = peak memory growth of the steps (RSS on CPU, allocator peak on CUDA).",
    ]
    sizes = sorted({r["params"]["size"] for r in cells if not r["params"]["busy"]})
    for b in sizes:
        plain = find(doc, "loss_cell", method="plain", size=b, busy=False)
        plain_sym = find(doc, "loss_cell", method="plain_symmetric", size=b, busy=False)
        lines += ["", f"## B = N = {b:,}", ""]
        lines += ["| method | ms | bound ms | × bound | vs plain | ΔMB | loss |", "|---|---|---|---|---|---|---|"]
        for method in METHODS:
            reference = plain if method in INFONCE else plain_sym
            row = _row(doc, method, b, False, reference)
            if row:
                lines.append(row)
    busy = sorted({r["params"]["size"] for r in cells if r["params"]["busy"]})
    for b in busy:
        plain = find(doc, "loss_cell", method="plain", size=b, busy=True)
        plain_sym = find(doc, "loss_cell", method="plain_symmetric", size=b, busy=True)
        lines += [
            "",
            f"## B = N = {b:,} with one core busy (a busy-loop process beside the cell)",
            "",
            "The issue's target: negkit's default path degrades no worse than plain torch when a core is busy.",
            "",
            "| method | ms | bound ms | × bound | vs plain (busy) | ΔMB | loss |",
            "|---|---|---|---|---|---|---|",
        ]
        for method in BUSY:
            reference = plain if method in INFONCE else plain_sym
            row = _row(doc, method, b, True, reference)
            if row:
                lines.append(row)
        for method in ("plain", "negkit", "negkit_tiled", "plain_symmetric", "negkit_symmetric"):
            quiet, loaded = (find(doc, "loss_cell", method=method, size=b, busy=x) for x in (False, True))
            if ok(quiet) and ok(loaded):
                lines.append(f"| ↳ {method}: busy / quiet | {loaded['median_s'] / quiet['median_s']:.2f}× | | | | | |")
    return lines
