"""The benchmark suite ``benchmarks/mining.py`` plans its cells and renders results (the cells themselves run in
``python benchmarks/mining.py --quick``, minutes, not here)."""

import argparse
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name):
    if "harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("harness", BENCH / "harness.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["harness"] = module
        spec.loader.exec_module(module)
    return sys.modules["harness"].load_suite(BENCH / f"{name}.py")


def test_plan_and_render():
    suite = load("mining")
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    suite.add_arguments(parser)
    quick = suite.plan(parser.parse_args(["--quick"]))
    assert [c.label for c in quick][:2] == ["compare chatterbot negkit", "compare chatterbot sentence-transformers"]
    full = suite.plan(parser.parse_args(["--sizes", "1e6,1e7"]))
    skipped = {c.label: c.skip for c in full if c.skip}
    assert set(skipped) == {"scale flat 1e5x1e7", "scale ivf 1e5x1e7", "scale hnsw 1e5x1e7"}
    compare = {"dataset": "chatterbot", "tool": "negkit", "limit": 0}
    scale = {"n": 1000, "queries": 10, "index": "ivf", "centres": 5, "budget_s": 1, "recall_sample": 5, "data_dir": "x"}
    common = {"foreign_cores": 0.0, "peak_rss_mb": 100.0}
    doc = {
        "cells": [
            {"function": "compare_cell", "params": compare, "label": "c", "median_s": 1.0, "queries": 3,
             "queries_written": 3, "overlap_with_exact": 1.0, "known_fn_rate": 0.0, "same_text_rate": 0.0, **common},
            {"function": "scale_cell", "params": {**scale, "index": "exact"}, "label": "e", "build_s": 0.0,
             "total_s": 10.0, "total_is_extrapolated": True, "blocks_measured": 2, "blocks_total": 9,
             "recall_at_10": 1.0, "index_params": {"index": "exact"}, **common},
            {"function": "scale_cell", "params": scale, "label": "i", "build_s": 1.0, "total_s": 2.0,
             "total_is_extrapolated": False, "recall_at_10": 0.95, "index_params": {"index": "ivf", "nlist": 8},
             **common},
        ]
    }  # fmt: skip
    sweep = {"index": "ivfpq", "pq_m": 192, "nlist": 64, "nprobe": 16, "refine": 32, "build_s": 2.0}
    doc["cells"].append(
        {"function": "sweep_cell", "params": {"n": 1000, "centres": 10}, "label": "s", "recall_queries": 20,
         "rows": [{**sweep, "recall_at_10": 0.9, "search_ms_per_query": 1.5}], **common}
    )  # fmt: skip
    assert [c.label for c in suite.plan(parser.parse_args(["--skip-compare", "--skip-scale", "--sweep"]))] == [
        "sweep ivfpq 1e6"
    ]
    text = "\n".join(suite.render(doc))
    assert "| ivfpq | 192 | 64 | 16 | 32 | 2.0 | 0.900 | 1.50 |" in text and "100 per cluster" in text
    assert "| chatterbot | negkit | 3 | 3 | 1.0 | 100 | 1.000 |" in text
    assert "**10** (2/9 blocks)" in text and "| 5.0 | 0.950 |" in text and "nlist=8" in text
