"""``benchmarks/gpu.sh``, the one command a task lent a GPU runs: its CUDA tests are selected by marker only, and
its Python parts run end to end on the CPU (``--device cpu --quick``), writing what it promises under ``$OUT``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _collect(*options: str) -> str:
    command = [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:randomly", *options, "tests/cuda"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False).stdout


def test_cuda_tests_are_deselected_unless_selected_by_marker():
    assert "deselected" in _collect() and "test_cuda.py::" not in _collect()
    selected = _collect("-m", "cuda")
    assert "test_cuda.py::test_gather_through_nccl_keeps_values_and_gradients" in selected
    assert "test_cuda.py::test_bf16_at_temperature_0_01_is_finite_and_close[64]" in selected


def test_the_script_dry_runs_on_the_cpu_and_writes_its_results(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--quick"], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in tmp_path.iterdir()} >= {
        "environment.txt",
        "cuda_tests.txt",
        "losses_cpu.json",
        "losses_cpu.md",
        "losses_log.txt",
    }
    assert " passed" in (tmp_path / "cuda_tests.txt").read_text()
    doc = json.loads((tmp_path / "losses_cpu.json").read_text())
    assert doc["cells"][0]["label"] == "machine probe" and doc["cells"][0]["device"] == "cpu"
    plain = next(r for r in doc["cells"] if r["label"] == "plain B=64")
    assert plain["params"]["device"] == "cpu" and "error" not in plain
