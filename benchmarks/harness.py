"""The one benchmark harness: each cell in a fresh process, its peak RSS, an idle wait, medians, JSON + Markdown.

Run a suite with ``python benchmarks/run.py SUITE [--quick] [options]``; ``run.py SUITE --help`` lists the
options. A *suite* is a module next to this file (``losses.py``, ``samplers.py``, ``mcmc.py``) with:

* ``TITLE`` and a module docstring (what is measured; shown by ``--help``);
* ``add_arguments(parser)``: its own options (sizes, repeats...); ``args.quick`` is set when it plans;
* ``plan(args) -> list[Cell]``: the cells to measure, in order;
* ``render(doc) -> list[str]``: its Markdown from the result document (the harness adds the header and footer);
* optionally ``write_extra(doc, out_dir, stem) -> list[str]`` (a figure, say; returns Markdown lines);
* the cell functions the cells name: ``def cell_function(**params) -> dict``, run in the fresh process.

How a cell is measured
----------------------
1. **Idle wait.** The parent samples ``/proc/stat`` for one second at a time until the other processes keep fewer
   than ``--idle-threshold`` cores busy, for at most ``--idle-wait`` s per cell and ``--idle-wait-total`` s in all.
   The 1-minute load average is recorded too, but not waited on: it still counts the previous cell for a minute.
2. **Fresh process.** ``python benchmarks/harness.py --worker SUITE_FILE CELLS RESULT_FILE`` with
   ``OMP_NUM_THREADS = MKL_NUM_THREADS = --threads``. The parent never imports torch. (``--one-process`` runs all
   cells in a single process instead: one torch import for a fast smoke run, but memory carries over.)
3. **In the cell.** The cell function imports what it needs and builds its inputs, then :func:`measure` times the
   measured call: warm-up call(s), then ``repeats`` timed calls (``time.perf_counter``; median, min and all
   times are recorded). Peak memory is the process's ``VmHWM``, reset to the current RSS with
   ``/proc/self/clear_refs`` just before the warm-up, so the peak is that of the measured calls only; growth =
   peak − RSS after the inputs exist. The process's overall peak (imports and data included) is recorded too.
4. **Contention.** Around each cell function the process reads its own CPU time and the machine's busy time
   (``/proc/stat``): ``foreign_cores`` = (busy − own) / wall is what other processes used meanwhile. Cells above
   ``--idle-threshold`` are flagged † in the Markdown and can be re-measured with ``--rerun``. The parent records
   the process's wall and CPU time (``wait4``).
5. **Output.** After every cell the JSON (``<out>/<stem>.json``: every number, the machine, the configuration)
   and the Markdown (``<stem>.md``) are rewritten atomically, so a long run that is stopped keeps what it measured.

Errors inside a cell (out of memory, a missing optional package) are recorded with the cell; a crash, a kill or a
timeout likewise. The harness uses the standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
MB = 2.0**20
FORMAT_VERSION = 1
#: packages whose versions a cell reports when it imported them
VERSIONED = ("torch", "numpy", "faiss", "pytorch_metric_learning", "negkit", "matplotlib")


@dataclass(frozen=True)
class Cell:
    """One measurement: ``function(**params)`` of the suite, run in its own process."""

    function: str
    params: dict[str, Any]
    label: str
    #: seconds before the process is killed; ``None``: ``--timeout``
    timeout: float | None = None
    #: a reason not to run it (recorded as the cell's error, no process started)
    skip: str | None = None


# -- memory and time, inside the cell process ------------------------------------------------------------------

_peak_before_reset = 0


def _status_kib(key: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def current_rss_bytes() -> int:
    """Resident set size of this process now (``VmRSS``)."""
    kib = _status_kib("VmRSS")
    return 0 if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """Peak RSS since the last :func:`reset_peak_rss` (``VmHWM``; ``ru_maxrss`` where ``/proc`` has none)."""
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs``); False where that is not possible."""
    global _peak_before_reset
    _peak_before_reset = max(_peak_before_reset, peak_rss_bytes())
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def process_peak_rss_bytes() -> int:
    """Peak RSS over the whole life of this process, resets included."""
    return max(_peak_before_reset, peak_rss_bytes())


def measure(step: Callable[[], Any], repeats: int, *, warmup: int = 1) -> tuple[dict[str, Any], Any]:
    """Time ``step()``: ``warmup`` untimed calls, then ``repeats`` timed ones; the peak RSS of those calls.

    Call it once the inputs exist: the RSS at that moment is the baseline of ``growth_mb``. Returns the numbers
    (seconds, MB) and what the last call returned.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    baseline = current_rss_bytes()
    exact_peak = reset_peak_rss()
    out = None
    start = time.perf_counter()
    for _ in range(warmup):
        out = step()
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - start)
    peak = peak_rss_bytes()
    stats = {
        "repeats": repeats,
        "warmup_s": warmup_s,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "baseline_rss_mb": baseline / MB,
        "peak_rss_mb": peak / MB,
        "growth_mb": (peak - baseline) / MB,
        "peak_of": "measured calls" if exact_peak else "whole process (clear_refs unavailable)",
    }
    return stats, out


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """A busy-loop process beside the block (one core kept busy, as another job on a shared machine would)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        yield
    finally:
        spinner.kill()
        spinner.wait()


def progress(message: str) -> None:
    """A progress line on stderr (cells may print; stdout and stderr pass through)."""
    print(message, file=sys.stderr, flush=True)


# -- the machine's limits, measured first --------------------------------------------------------------------------

#: ``[m, k] @ [k, n]`` shapes the probe times unless a suite names its own
DEFAULT_MATMUL_SHAPES = ((4096, 128, 4096), (4096, 128, 128), (4096, 4096, 128))


def probe_cell(
    matmul_shapes: Sequence[Sequence[int]] = DEFAULT_MATMUL_SHAPES, repeats: int = 5, device: str = "cpu"
) -> dict:
    """The machine's limits in this process (its thread count), measured before a suite's cells.

    * ``matmul``: float32 GFLOP/s of ``torch.mm`` at each ``[m, k] @ [k, n]`` shape (2·m·k·n FLOPs, into a
      preallocated output), from the fastest of ``repeats`` or more calls (up to 1 s of them: on a shared machine
      the best call is the machine's limit, the median its load); ``matmul_peak_gflops`` the best shape;
    * ``exp_per_s``: float32 ``exp`` of 2²² values into a preallocated output, per second;
    * ``bandwidth_gbs``: ``copy_`` of 512 MB float32 into another buffer: (read + write) bytes per second.

    A suite's lower bounds divide its work by these (:func:`bound_s`): what the machine could do at best, measured
    in the same conditions as the cells (same threads, same load). On ``device="cuda"`` every call is followed by
    a synchronisation, and the copy is 2 GB (HBM, not a cache).
    """
    import torch

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def best_time(call: Callable[[], Any]) -> float:
        """The fastest of at least ``repeats`` calls (and up to 1 s of them): a limit is the best the machine did."""
        call()
        sync()
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < repeats or (time.perf_counter() - started < 1.0 and len(times) < 50):
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
        return min(times)

    generator = torch.Generator().manual_seed(0)
    matmul = []
    for m, k, n in matmul_shapes:
        a = torch.randn(m, k, generator=generator).to(device)
        b = torch.randn(k, n, generator=generator).to(device)
        out = torch.empty(m, n, device=device)
        seconds = best_time(lambda a=a, b=b, out=out: torch.mm(a, b, out=out))
        matmul.append({"shape": [m, k, n], "seconds": seconds, "gflops": 2 * m * k * n / seconds / 1e9})
    values = torch.randn(1 << (26 if cuda else 22), generator=generator).to(device)
    exps = torch.empty_like(values)
    exp_s = best_time(lambda: torch.exp(values, out=exps))
    source = torch.ones(1 << (29 if cuda else 27), device=device)
    target = torch.empty_like(source)
    copy_s = best_time(lambda: target.copy_(source))
    return {
        "matmul": matmul,
        "matmul_peak_gflops": max(x["gflops"] for x in matmul),
        "exp_per_s": values.numel() / exp_s,
        "bandwidth_gbs": 2 * source.numel() * 4 / copy_s / 1e9,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
    }


def probe_plan(shapes: Sequence[Sequence[int]] = DEFAULT_MATMUL_SHAPES, repeats: int = 5, device: str = "cpu") -> Cell:
    """The probe cell a suite puts first in its plan (and imports ``probe_cell`` so the worker finds it)."""
    params = {"matmul_shapes": [list(x) for x in shapes], "repeats": repeats, "device": device}
    return Cell("probe_cell", params, "machine probe")


def probe(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The probe record of ``doc`` (``None`` when it was not run or failed)."""
    record = find(doc, "probe_cell")
    return record if ok(record) else None


def bound_s(doc: dict[str, Any], *, flops: float = 0.0, exps: float = 0.0, bytes_moved: float = 0.0) -> float | None:
    """Lower bound in seconds of work made of ``flops`` (at the best measured matmul rate), ``exps`` exponentials
    and ``bytes_moved`` bytes of memory traffic (at the measured copy bandwidth): the three added, as if nothing
    overlapped except what could not be avoided. ``None`` without a probe."""
    limits = probe(doc)
    if limits is None:
        return None
    return (
        flops / (limits["matmul_peak_gflops"] * 1e9)
        + exps / limits["exp_per_s"]
        + bytes_moved / (limits["bandwidth_gbs"] * 1e9)
    )


def render_probe(doc: dict[str, Any]) -> list[str]:
    """Markdown lines stating the measured limits (or why there are none)."""
    record = find(doc, "probe_cell")
    if record is None:
        return []
    if not ok(record):
        return [f"Machine probe failed: {short_error(record)}; no lower bounds.", ""]
    shapes = ", ".join(f"[{m},{k}]@[{k},{n}] {x['gflops']:.0f}" for x in record["matmul"] for m, k, n in [x["shape"]])
    return [
        f"**Machine limits, measured first** ({record.get('device', 'cpu')}, fresh process, {record['threads']} "
        "threads, same load as the cells"
        f"{mark(record) and ', † busy'}): float32 matmul GFLOP/s {shapes} (best "
        f"{record['matmul_peak_gflops']:.0f}); exp {record['exp_per_s'] / 1e9:.2f} G/s; memory copy "
        f"{record['bandwidth_gbs']:.1f} GB/s (read + write). *bound* = work at these rates; *× bound* = time / bound.",
        "",
    ]


# -- the cell process ------------------------------------------------------------------------------------------


def load_suite(name_or_path: str | Path) -> ModuleType:
    """A suite module by name (``benchmarks/NAME.py``) or file path, under a private module name."""
    path = Path(name_or_path)
    if path.suffix != ".py":
        path = BENCH_DIR / f"{name_or_path}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark suite at {path}")
    sys.modules.setdefault("harness", sys.modules[__name__])  # suites `import harness`: one module, not two
    name = f"negkit_bench_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _versions() -> dict[str, Any]:
    versions = {name: getattr(sys.modules[name], "__version__", "?") for name in VERSIONED if name in sys.modules}
    if "torch" in sys.modules:
        versions["torch_threads"] = sys.modules["torch"].get_num_threads()
    return versions


def _negkit_fingerprint() -> dict[str, Any]:
    """A hash of the negkit sources this process imported (the library can change during a long run)."""
    modules = sorted(
        (name, module) for name, module in list(sys.modules.items()) if name == "negkit" or name.startswith("negkit.")
    )
    package = sys.modules.get("negkit")
    if package is None or not modules:  # not imported, or its import failed
        return {}
    digest = hashlib.sha256()
    for name, module in modules:
        source = getattr(module, "__file__", None)
        if source and source.endswith(".py") and os.path.isfile(source):
            digest.update(name.encode())
            digest.update(Path(source).read_bytes())
    return {"code_hash": digest.hexdigest()[:12], "negkit_path": str(Path(package.__file__).parent)}


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(argv: Sequence[str]) -> int:
    """The cell process: run the cells ``[{"function", "params"}, ...]`` (one, unless ``--one-process``) of a
    suite and rewrite the list of their results after each one."""
    suite_file, cells, result_file = argv
    results: list[dict[str, Any]] = []
    module = None
    for cell in json.loads(cells):
        busy0, cpu0, start = busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        try:
            module = module or load_suite(suite_file)
            result = dict(getattr(module, cell["function"])(**cell["params"]))
        except Exception as error:  # a cell's failure is a result (MemoryError, a missing package...)
            traceback.print_exc()
            first_line = (str(error).strip().splitlines() or [""])[0]
            result = {"error": f"{type(error).__name__}: {first_line}".rstrip(": ")}
        wall, cpu = time.perf_counter() - start, _own_cpu_seconds() - cpu0
        result.update(
            cell_wall_s=wall,
            cell_cpu_s=cpu,
            foreign_cores=max(0.0, (busy_cpu_seconds() - busy0 - cpu) / wall),
            process_peak_rss_mb=process_peak_rss_bytes() / MB,
        )
        try:
            result["versions"] = _versions()
            result.update(_negkit_fingerprint())
        except Exception as error:  # the result matters more than its fingerprint
            result["fingerprint_error"] = repr(error)
        results.append(result)
        atomic_write(Path(result_file), json.dumps(results))
    return 0


# -- the parent: idle wait, contention ---------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds spent busy (all cores, all processes) since boot, from ``/proc/stat``; 0 without it."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def busy_cores(interval: float = 1.0) -> float:
    """Cores kept busy by all processes over the next ``interval`` seconds."""
    before, start = busy_cpu_seconds(), time.monotonic()
    time.sleep(interval)
    return (busy_cpu_seconds() - before) / (time.monotonic() - start)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def wait_for_idle(max_wait: float, threshold: float, interval: float = 1.0) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) until other processes keep fewer than ``threshold`` cores busy.

    Returns what was seen: ``waited_s``, ``busy_cores`` (last reading; ``None`` when ``max_wait`` ≤ 0, nothing
    is sampled), ``idle`` (whether the last reading was below the threshold) and ``loadavg`` (1, 5, 15 min).
    """
    start = time.monotonic()
    busy = None
    if max_wait > 0:
        deadline = start + max_wait
        while True:
            busy = busy_cores(min(interval, max(deadline - time.monotonic(), 0.05)))
            if busy < threshold or time.monotonic() >= deadline:
                break
            progress(f"[bench]   machine busy ({busy:.2f} cores used by others), waiting")
    return {
        "waited_s": time.monotonic() - start,
        "busy_cores": busy,
        "idle": None if busy is None else busy < threshold,
        "loadavg": loadavg(),
    }


class IdleBudget:
    """The idle wait before each cell, capped per cell and in total."""

    def __init__(self, per_cell: float, total: float, threshold: float) -> None:
        self.per_cell, self.remaining, self.threshold, self.waited = per_cell, total, threshold, 0.0

    def wait(self) -> dict[str, Any]:
        seen = wait_for_idle(min(self.per_cell, max(self.remaining, 0.0)), self.threshold)
        self.remaining -= seen["waited_s"]
        self.waited += seen["waited_s"]
        return seen


def run_cells(
    suite_file: Path, cells: Sequence[Cell], *, timeout: float, threads: int, idle: IdleBudget
) -> list[dict[str, Any]]:
    """Measure ``cells`` in one fresh process (a single cell, except with ``--one-process``); their records.

    ``foreign_cores`` is measured by the process around each cell function (imports and inputs included); where
    the process died first, over the whole process, from the parent.
    """
    records = [{"label": c.label, "function": c.function, "params": c.params} for c in cells]
    for record, cell in zip(records, cells, strict=True):
        if cell.timeout is not None:
            record["timeout_s"] = cell.timeout
    records[0]["idle_wait"] = idle.wait()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    fd, result_file = tempfile.mkstemp(prefix="negkit-bench-", suffix=".json")
    os.close(fd)
    os.unlink(result_file)
    specs = json.dumps([{"function": c.function, "params": c.params} for c in cells])
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(suite_file), specs, result_file]
    limit = sum(c.timeout if c.timeout is not None else timeout for c in cells)
    busy0, start = busy_cpu_seconds(), time.perf_counter()
    process = subprocess.Popen(command, env=env)
    status, usage, timed_out = _wait(process, limit)
    wall = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime
    foreign = max(0.0, (busy_cpu_seconds() - busy0 - cpu) / wall)
    try:
        results = json.loads(Path(result_file).read_text())
        os.unlink(result_file)
    except (OSError, ValueError):
        results = []
    code = os.waitstatus_to_exitcode(status)
    ended = f"killed by signal {-code}" if code < 0 else f"exit code {code} without a result"
    process_info = {"process_wall_s": wall, "process_cpu_s": cpu, "process_cells": len(cells)}
    for i, record in enumerate(records):
        record.update(process_info)
        if i < len(results):
            record.update(results[i])
        elif i == len(results):
            record.update(error=f"timeout after {limit:g} s" if timed_out else ended, foreign_cores=foreign)
        else:
            record.update(error="not run: its process ended earlier", foreign_cores=foreign)
        record["contended"] = record["foreign_cores"] > idle.threshold
        record["loadavg_after"] = loadavg()
    return records


def _wait(process: subprocess.Popen, limit: float) -> tuple[int, resource.struct_rusage, bool]:
    """Reap ``process`` with ``wait4`` (its own CPU time), killing it after ``limit`` seconds."""
    deadline, timed_out, pause = time.monotonic() + limit, False, 0.005
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, usage, timed_out
        if not timed_out and time.monotonic() > deadline:
            process.kill()
            timed_out = True
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


# -- the result document ---------------------------------------------------------------------------------------


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD")
    changes = _git("status", "--porcelain", "--", "src") if commit else None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_total_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "git_commit": commit,
        "src_changed": bool(changes) if changes is not None else None,
        "loadavg_at_start": loadavg(),
    }


def find(doc: dict[str, Any], function: str | None = None, **params: Any) -> dict[str, Any] | None:
    """The first cell record of ``doc`` run by ``function`` with these parameter values (``None`` if none)."""
    for record in doc["cells"]:
        if function is not None and record["function"] != function:
            continue
        if all(record["params"].get(k) == v for k, v in params.items()):
            return record
    return None


def ok(record: dict[str, Any] | None) -> bool:
    return record is not None and "error" not in record


def mark(record: dict[str, Any] | None) -> str:
    """``†`` for a cell measured while other processes were busy."""
    return "†" if record is not None and record.get("contended") else ""


def fmt_n(n: int) -> str:
    """1000 → ``1e3``; other numbers with thousands separators."""
    exponent = len(str(n)) - 1
    return f"1e{exponent}" if n >= 1000 and n == 10**exponent else f"{n:,}"


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def fmt_ms(seconds: float | None) -> str:
    """Milliseconds: one decimal below a second, none above."""
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:,.1f}" if ms < 1000 else f"{ms:,.0f}"


def short_error(record: dict[str, Any], width: int = 160) -> str:
    text = str(record.get("error", "")).replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def render(suite: ModuleType, doc: dict[str, Any]) -> str:
    info, cfg = doc["machine"], doc["harness"]
    versions = next((r["versions"] for r in doc["cells"] if ok(r) and r.get("versions")), {})
    stamp = [info["date"]]
    if info.get("git_commit"):
        stamp.append(f"negkit {info['git_commit']}" + (" + local changes in src/" if info.get("src_changed") else ""))
    stamp += [f"{name} {versions[name]}" for name in ("torch", "faiss", "pytorch_metric_learning") if name in versions]
    stamp += [
        f"python {info['python']}",
        f"{info['cpu_affinity']} CPUs, {cfg['threads']} threads",
        f"{info['mem_total_gb']:.0f} GiB RAM",
    ]
    lines = [f"# {suite.TITLE}", "", " · ".join(stamp), ""]
    if cfg.get("quick"):
        lines += [
            "**Quick run** (`--quick`: small sizes, few repeats): a smoke check of the harness, not a measurement.",
            "",
        ]
    lines += suite.render(doc)
    lines += doc.get("extra_markdown", [])
    cells = doc["cells"]
    measured = [r for r in cells if not r.get("skipped")]
    command = " ".join(["python benchmarks/run.py", doc["suite"], *cfg.get("argv", [])])
    process = (
        "all cells in one process (`--one-process`: memory figures carry allocator state from cell to cell)"
        if cfg.get("one_process")
        else "every cell in a fresh process"
    )
    lines += [
        "",
        "## How this was measured",
        "",
        f"Harness `benchmarks/harness.py` (`{command}`): {process}; time = median of the timed calls after a "
        "warm-up; ΔMB = peak RSS of the measured calls (`VmHWM`, reset before the warm-up) minus the RSS once the "
        f"inputs exist. Before each {'run' if cfg.get('one_process') else 'cell'} the harness waited up to "
        f"{cfg['idle_wait_s']:g} s for other processes to use fewer than {cfg['idle_threshold']} cores "
        f"({doc.get('idle_waited_s', 0.0):.0f} s waited in all).",
    ]
    loads = [r["idle_wait"]["loadavg"][0] for r in measured if r.get("idle_wait", {}).get("loadavg")]
    foreign = [r["foreign_cores"] for r in measured if "foreign_cores" in r]
    if loads and foreign:
        lines += [
            "",
            f"Load average (1 min) before the cells: {min(loads):.2f}–{max(loads):.2f}; cores used by other "
            f"processes during the cells: median {statistics.median(foreign):.2f}, max {max(foreign):.2f}.",
        ]
        if statistics.median(foreign) > cfg["idle_threshold"]:
            lines += [
                "",
                f"**A shared machine:** other jobs kept a median {statistics.median(foreign):.2f} of the "
                f"{info['cpu_affinity']} cores busy during this run (load average up to {max(loads):.1f}), so the "
                "times are inflated and noisy; the machine probe measured its limits under the same load, and the "
                "ratios within one table (same run, same load) are the figures to read.",
            ]
    if any(r.get("contended") for r in cells):
        lines += [
            "",
            f"† other processes kept more than {cfg['idle_threshold']} cores busy during that cell "
            "(`foreign_cores` in the JSON): its time is likely inflated (`--rerun` re-measures such cells).",
        ]
    failed = [r for r in cells if "error" in r and not r.get("skipped")]
    if failed:
        lines += ["", "Failed cells:", ""]
        lines += [f"- {r['label']}: {short_error(r, 300)}" for r in failed]
    hashes = sorted({r["code_hash"] for r in cells if r.get("code_hash")})
    if len(hashes) > 1:
        lines += ["", f"**Warning:** the cells measured {len(hashes)} different versions of negkit: {hashes}."]
    if doc.get("superseded"):
        lines += [
            "",
            f"{len(doc['superseded'])} earlier measurements (failed, contended or chosen with --only) were replaced "
            "by re-measurements (`--rerun`); the originals are under `superseded` in the JSON.",
        ]
    lines += ["", f"Total wall time: {doc.get('total_wall_s', 0.0):,.0f} s.", ""]
    return "\n".join(lines)


def save(suite: ModuleType, doc: dict[str, Any], out: Path, stem: str) -> None:
    atomic_write(out / f"{stem}.json", json.dumps(doc, indent=2) + "\n")
    atomic_write(out / f"{stem}.md", render(suite, doc))


# -- the command line ------------------------------------------------------------------------------------------


def build_parser(suite: ModuleType, name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"run.py {name}",
        description=suite.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = parser.add_argument_group("harness")
    common.add_argument("--quick", action="store_true", help="smoke run: small sizes, few repeats, no idle wait")
    common.add_argument("--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    common.add_argument("--stem", default=None, help="output file stem (default SUITE, or SUITE_quick)")
    common.add_argument("--only", default=None, help="run only the cells whose label matches this regex")
    common.add_argument("--list", action="store_true", help="print the cells and exit")
    common.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads per cell (default 2)")
    common.add_argument("--timeout", type=float, default=900.0, help="seconds per cell (default 900)")
    common.add_argument("--idle-wait", type=float, default=None, help="max idle wait per cell, s (60; quick 0)")
    common.add_argument("--idle-wait-total", type=float, default=600.0, help="cap on all idle waits, s")
    common.add_argument(
        "--idle-threshold", type=float, default=0.25, help="cores used by others that count as busy (0.25)"
    )
    common.add_argument(
        "--one-process",
        action="store_true",
        help="all cells in one fresh process (fast smoke runs; memory then carries over from cell to cell)",
    )
    common.add_argument(
        "--rerun",
        action="store_true",
        help="re-measure the failed or contended cells of the existing result file (and those matching --only)",
    )
    suite.add_arguments(parser.add_argument_group(name))
    return parser


def main(suite: ModuleType, argv: Sequence[str], name: str | None = None) -> Path:
    """Run ``suite`` with command-line options ``argv``; returns the Markdown file written."""
    name = name or Path(suite.__file__).stem
    args = build_parser(suite, name).parse_args(list(argv))
    if args.idle_wait is None:
        args.idle_wait = 0.0 if args.quick else 60.0
    stem = args.stem or (f"{name}_quick" if args.quick else name)
    only = re.compile(args.only) if args.only else None
    if args.list:
        for cell in suite.plan(args):
            if only is None or only.search(cell.label):
                print(cell.label + (f"  (skipped: {cell.skip})" if cell.skip else ""))
        return args.out / f"{stem}.md"
    idle = IdleBudget(args.idle_wait, args.idle_wait_total, args.idle_threshold)
    run_options = {"timeout": args.timeout, "threads": args.threads, "idle": idle}
    suite_file = Path(suite.__file__).resolve()
    wall_start = time.perf_counter()

    if args.rerun:
        doc = json.loads((args.out / f"{stem}.json").read_text())
        todo = [
            (i, r)
            for i, r in enumerate(doc["cells"])
            if (("error" in r and not r.get("skipped")) or r.get("contended")) or (only and only.search(r["label"]))
        ]
        jobs = [(i, Cell(r["function"], r["params"], r["label"], r.get("timeout_s"), _skip(r))) for i, r in todo]
        previous_wall = doc.get("total_wall_s", 0.0)
    else:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        doc = {
            "suite": name,
            "format": FORMAT_VERSION,
            "machine": machine_info(),
            "harness": {
                "quick": args.quick,
                "threads": args.threads,
                "timeout_s": args.timeout,
                "idle_wait_s": args.idle_wait,
                "idle_wait_total_s": args.idle_wait_total,
                "idle_threshold": args.idle_threshold,
                "one_process": args.one_process,
                "argv": list(argv),
            },
            "config": config,
            "cells": [],
        }
        planned = [c for c in suite.plan(args) if only is None or only.search(c.label)]
        jobs = list(enumerate(planned))
        previous_wall = 0.0
    slots: list[dict[str, Any] | None] = [None] * len(jobs)

    def place(slot: int, record: dict[str, Any]) -> None:
        index = jobs[slot][0]
        if args.rerun:
            record["rerun"] = True
            doc.setdefault("superseded", []).append(doc["cells"][index])
            doc["cells"][index] = record
        else:
            slots[slot] = record
            doc["cells"] = [r for r in slots if r is not None]
        doc["idle_waited_s"] = doc.get("idle_waited_s", 0.0) + record.get("idle_wait", {}).get("waited_s", 0.0)

    to_run = []
    for slot, (_, cell) in enumerate(jobs):
        if cell.skip:
            skipped = {"error": f"skipped: {cell.skip}", "skipped": True}
            place(slot, {"label": cell.label, "function": cell.function, "params": cell.params, **skipped})
        else:
            to_run.append(slot)
    batches = [to_run] if args.one_process and to_run else [[slot] for slot in to_run]
    done = 0
    for batch in batches:
        cells = [jobs[slot][1] for slot in batch]
        what = cells[0].label if len(cells) == 1 else f"{len(cells)} cells in one process"
        progress(f"[bench] ({done + 1}/{len(to_run)}) {name}: {what}")
        for slot, record in zip(batch, run_cells(suite_file, cells, **run_options), strict=True):
            progress(f"[bench]   {record['label']}: {_summary(record)}")
            place(slot, record)
        done += len(batch)
        doc["total_wall_s"] = previous_wall + time.perf_counter() - wall_start
        save(suite, doc, args.out, stem)

    if hasattr(suite, "write_extra"):
        doc["extra_markdown"] = suite.write_extra(doc, args.out, stem)
    doc["total_wall_s"] = previous_wall + time.perf_counter() - wall_start
    save(suite, doc, args.out, stem)
    progress(f"[bench] {name}: {len(jobs)} cells in {doc['total_wall_s']:.0f} s -> {args.out / stem}.{{json,md}}")
    return args.out / f"{stem}.md"


def _skip(record: dict[str, Any]) -> str | None:
    return str(record["error"]).removeprefix("skipped: ") if record.get("skipped") else None


def _summary(record: dict[str, Any]) -> str:
    if "error" in record:
        return record["error"]
    parts = []
    if "median_s" in record:
        parts.append(f"median {record['median_s'] * 1e3:,.1f} ms")
    if "growth_mb" in record:
        parts.append(f"growth {record['growth_mb']:,.1f} MB")
    parts.append(f"other processes {record.get('foreign_cores', 0.0):.2f} cores" + (" †" if mark(record) else ""))
    return ", ".join(parts)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.modules["harness"] = sys.modules[__name__]
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: python benchmarks/run.py SUITE [--quick] [options]  (this file is the harness)")
