"""The benchmark harness (``benchmarks/harness.py``) and a smoke run of each suite through ``benchmarks/run.py``.

The harness is not part of the installed package: it is loaded from its file. Its mechanics are tested on a toy
suite whose cells import nothing heavy (a fresh process each costs ~0.1 s); each real suite then runs a few
``--quick`` cells of tiny sizes (each cell process imports torch, ~2 s) into a temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_harness():
    module = sys.modules.get("harness")
    if module is not None and Path(module.__file__).resolve() == BENCH / "harness.py":
        return module
    spec = importlib.util.spec_from_file_location("harness", BENCH / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module  # the suites `import harness`
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

TOY = '''"""A toy suite: one cell that allocates, one that fails, one that hangs, one skipped."""

import time

import harness
from harness import Cell

TITLE = "Toy suite"


def add_arguments(parser):
    parser.add_argument("--mb", type=int, default=32)


def plan(args):
    return [
        Cell("grow", {"mb": args.mb}, f"grow {args.mb} MB"),
        Cell("fail", {}, "fail"),
        Cell("hang", {}, "hang", timeout=0.5),
        Cell("grow", {"mb": 1}, "never", skip="not today"),
    ]


def grow(mb):
    stats, size = harness.measure(lambda: len(b"x" * (mb << 20)), repeats=3)
    return {**stats, "size": size}


def fail():
    raise ValueError("boom\\nsecond line")


def hang():
    time.sleep(60)


def render(doc):
    record = harness.find(doc, "grow", mb=40)
    return ["## Toy", "", "grow: " + (harness.fmt(record["growth_mb"], 0) if harness.ok(record) else "err")]
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    (folder / "toy.py").write_text(TOY)
    suite = harness.load_suite(folder / "toy.py")
    out = folder / "results"
    args = ["--mb", "40", "--out", str(out), "--idle-wait", "0.2", "--idle-threshold", "1000"]
    markdown = harness.main(suite, args)
    return suite, out, markdown


def test_each_cell_runs_in_its_own_process_and_is_recorded(toy):
    _, out, markdown = toy
    assert markdown == out / "toy.md"
    doc = json.loads((out / "toy.json").read_text())
    assert doc["suite"] == "toy" and doc["harness"]["threads"] == 2 and doc["config"]["mb"] == 40
    grow, fail, hang, never = doc["cells"]

    assert grow["size"] == 40 << 20 and grow["repeats"] == 3 and len(grow["times_s"]) == 3
    assert grow["median_s"] == sorted(grow["times_s"])[1] and grow["min_s"] == min(grow["times_s"])
    assert 38 < grow["growth_mb"] < 200  # the 40 MB buffer, measured from the cell's own peak
    assert grow["peak_of"] == "measured calls" and grow["process_peak_rss_mb"] >= grow["peak_rss_mb"]
    assert grow["cell_cpu_s"] > 0 and grow["process_wall_s"] > grow["cell_wall_s"] > 0 and grow["foreign_cores"] >= 0
    assert grow["process_cells"] == 1
    assert grow["idle_wait"]["busy_cores"] is not None and grow["idle_wait"]["idle"] is True
    assert len(grow["idle_wait"]["loadavg"]) == 3 and not grow["contended"]

    assert fail["error"] == "ValueError: boom"
    assert hang["error"] == "timeout after 0.5 s" and hang["timeout_s"] == 0.5
    assert never["skipped"] and never["error"] == "skipped: not today" and "process_wall_s" not in never


def test_markdown_has_the_suite_tables_and_the_harness_notes(toy):
    _, out, _ = toy
    text = (out / "toy.md").read_text()
    assert text.startswith("# Toy suite\n") and "## Toy" in text and "grow: 4" in text
    assert "## How this was measured" in text and "fresh process" in text and "Load average" in text
    assert "- fail: ValueError: boom" in text and "- hang: timeout" in text and "never" not in text
    assert "Total wall time" in text


def test_rerun_replaces_failed_cells_and_those_chosen_with_only(toy, tmp_path):
    suite, out, _ = toy
    (tmp_path / "toy.json").write_text((out / "toy.json").read_text())
    harness.main(suite, ["--rerun", "--only", "^grow", "--out", str(tmp_path), "--idle-wait", "0"])
    doc = json.loads((tmp_path / "toy.json").read_text())
    assert [r["label"] for r in doc["cells"]] == ["grow 40 MB", "fail", "hang", "never"]
    assert [r["label"] for r in doc["superseded"]] == ["grow 40 MB", "fail", "hang"]
    assert all(r.get("rerun") for r in doc["cells"][:3]) and "rerun" not in doc["cells"][3]
    assert "were replaced by re-measurements" in (tmp_path / "toy.md").read_text()


def test_list_prints_the_cells_without_running_them(toy, tmp_path, capsys):
    suite, _, _ = toy
    harness.main(suite, ["--list", "--only", "g", "--out", str(tmp_path)])
    assert capsys.readouterr().out.splitlines() == ["grow 32 MB", "hang"]
    assert not list(tmp_path.iterdir())


def test_idle_wait_gives_up_after_its_budget_and_reports_the_load():
    busy = harness.wait_for_idle(max_wait=0.3, threshold=-1.0, interval=0.1)  # never idle
    assert busy["waited_s"] >= 0.3 and busy["idle"] is False and busy["busy_cores"] >= 0
    quiet = harness.wait_for_idle(max_wait=5.0, threshold=1e9, interval=0.1)
    assert quiet["waited_s"] < 1.0 and quiet["idle"] is True
    assert harness.wait_for_idle(max_wait=0, threshold=0.25)["busy_cores"] is None


def test_measure_times_the_calls_and_their_peak():
    calls = []
    stats, last = harness.measure(lambda: calls.append(1) or len(calls), repeats=4, warmup=2)
    assert last == 6 and stats["repeats"] == 4 and len(stats["times_s"]) == 4 and stats["growth_mb"] >= 0
    with pytest.raises(ValueError, match="repeats"):
        harness.measure(lambda: None, repeats=0)


def _faiss() -> bool:
    return importlib.util.find_spec("faiss") is not None


def test_one_process_runs_all_cells_in_one_and_keeps_the_results_of_a_process_that_hangs(toy, tmp_path):
    suite, _, _ = toy
    args = ["--one-process", "--only", "grow|fail|hang", "--timeout", "1", "--out", str(tmp_path), "--idle-wait", "0"]
    harness.main(suite, [*args, "--stem", "toy"])
    grow, fail, hang = json.loads((tmp_path / "toy.json").read_text())["cells"]
    assert grow["process_cells"] == fail["process_cells"] == hang["process_cells"] == 3
    assert grow["growth_mb"] > 20 and fail["error"] == "ValueError: boom"
    assert hang["error"] == "timeout after 2.5 s"


def _faiss() -> bool:
    return importlib.util.find_spec("faiss") is not None


# Tiny sizes; --one-process: each suite imports torch once (per-cell processes are tested on the toy suite).
SUITES = {
    "losses": ["--sizes", "32", "--repeats", "1"],
    "samplers": ["--sizes", "500", "--repeats", "1", "--mine-items", "2000", "--mine-queries", "300"],
    "mcmc": ["--sizes", "500", "--repeats", "1"],
}
ONE_DIRECTION = ("plain", "negkit", "negkit_tiled", "st_mnrl", "st_cached_mnrl")
SYMMETRIC = ("plain_symmetric", "negkit_symmetric", "negkit_symmetric_tiled", "open_clip_clip")


def _open_clip() -> bool:
    return importlib.util.find_spec("open_clip") is not None


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_each_suite_runs_quick_through_the_entry_point(suite, tmp_path):
    command = [sys.executable, str(BENCH / "run.py"), suite, "--quick", "--one-process", "--out", str(tmp_path)]
    done = subprocess.run([*command, *SUITES[suite]], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / f"{suite}_quick.json").read_text())
    text = (tmp_path / f"{suite}_quick.md").read_text()
    assert doc["suite"] == suite and doc["harness"]["quick"] and "**Quick run**" in text
    expected_errors = set() if _faiss() else {"grid mined_faiss N=500", "mining faiss 300x2,000"}
    if not _open_clip():
        expected_errors |= {"open_clip_clip B=32", "open_clip_siglip B=32"}
    errors = {r["label"]: r["error"] for r in doc["cells"] if "error" in r}
    assert set(errors) <= expected_errors, errors
    for record in doc["cells"]:
        if "error" not in record and record["function"] != "probe_cell":
            assert record["versions"]["torch"] and record["versions"]["torch_threads"] == 2
            assert record["code_hash"] and record["cell_cpu_s"] > 0 and record["growth_mb"] > -50
            assert record["process_cells"] == len(doc["cells"])
    # the machine's limits come first, and every table states time against them
    limits = doc["cells"][0]
    assert limits["label"] == "machine probe" and limits["matmul_peak_gflops"] > 0 and limits["exp_per_s"] > 0
    assert limits["bandwidth_gbs"] > 0 and "**Machine limits, measured first**" in text
    assert harness.bound_s(doc, flops=limits["matmul_peak_gflops"] * 1e9) == pytest.approx(1.0)
    if suite == "losses":
        loss = {r["params"]["method"]: r.get("loss") for r in doc["cells"] if r["function"] == "loss_cell"}
        assert len(loss) == 12 and "× bound" in text and "## B = N = 32" in text
        for group in (ONE_DIRECTION, SYMMETRIC, ("negkit_siglip", "open_clip_siglip")):
            values = [loss[m] for m in group if loss[m] is not None]
            assert max(values) - min(values) < 1e-4, group
        assert abs(loss["plain"] - loss["plain_symmetric"]) > 1e-6 and loss["pml_ntxent"] > loss["plain"]
    elif suite == "samplers":
        grid = [r for r in doc["cells"] if r["function"] == "sampler_cell"]
        assert len(grid) == 6 and "| `hardness_replacement` | " in text and "× bound" in text
        assert all(r["checks"]["all_ok"] for r in grid if "error" not in r)
        assert "## Mining 300 queries against 2,000 items" in text and "faiss vs exact backend" in text
        if _faiss():
            assert grid[5]["agreement_with_exact"] == 1.0 and doc["cells"][7]["checks_ok"]
    else:
        labels = [r["label"] for r in doc["cells"]]
        assert labels == ["machine probe", "mcmc N=500", "exact N=500", "exact_gumbel N=500"]
        assert 0 < doc["cells"][1]["acceptance_rate"] < 1 and "| 500 | " in text and "×" in text


def test_a_busy_core_runs_beside_the_block_and_stops_after_it():
    before = harness.busy_cpu_seconds()
    start = time.monotonic()
    with harness.busy_core():
        time.sleep(0.5)
    busy = (harness.busy_cpu_seconds() - before) / (time.monotonic() - start)
    assert busy > 0.4  # one core spinning for most of the block (more if the machine is shared)
