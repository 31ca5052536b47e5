"""Every evidence, full and quick, against the current runner without training: each config it asks for must
validate with its task's config model, and the section must render from metrics shaped like the runner's."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch

import evidence
from evidence import EVIDENCE
from negkit.train.config import build_config

RUN = Path(__file__).resolve().parents[2] / "experiments" / "run.py"
TASKS = {
    "negatives": {"contrastive"},
    "global": {"contrastive"},
    "how-many": {"contrastive", "recommendation"},
    "retrieval": {"retrieval"},
    "momentum": {"contrastive"},
    "logq": {"recommendation"},
    "seed-methods": {"contrastive"},
}
REPORT = {
    "false_negative_rate": 0.1,
    "negative_similarity": {"median": 0.2},
    "above_positive": 0.05,
    "rank_percentile_median": 0.5,
    "rank_histogram": {"0-0.01": 0.01},
}
#: the final metrics a strategy of any task reports (contrastive, recommendation, retrieval keys together)
STRATEGY_METRICS = {
    "knn_acc": 0.9,
    "linear_acc": 0.9,
    "train_seconds": 1.0,
    "false_negative_rate": 0.01,
    "acceptance_rate": 0.5,
    "hr@10": 0.3,
    "ndcg@10": 0.2,
    "recall@1": 0.4,
    "recall@10": 0.8,
    "mrr@10": 0.5,
}


def fake_run_or_reuse(configs: list):
    """Stands in for ``run_or_reuse``: validates the config as the runner does, writes each strategy's result
    file (the evidence reads their histories) and returns a ``metrics.json``-like dictionary."""

    def run(out: Path, data: dict, progress) -> dict:
        config = build_config(data)
        assert build_config(json.loads(json.dumps(config.model_dump(mode="json")))) == config  # reusable
        configs.append(config)
        progress(f"{out.name}: validated")
        history = [
            {"epoch": e, "q": 0.8, "k": 4.0, "diagnostics": {"ucl": 2.0, "scl": 1.9, "hucl": 1.8, "hscl": 1.7}}
            for e in range(1, config.train.epochs + 1)
        ]
        strategies = {entry: {**STRATEGY_METRICS, "negatives": REPORT} for entry in config.strategies}
        (out / "results").mkdir(parents=True)
        for entry, metrics in strategies.items():
            (out / "results" / f"{entry}.json").write_text(json.dumps({"metrics": metrics, "history": history}))
        return {
            "task": config.task,
            "dataset": config.dataset,
            "config": config.model_dump(mode="json"),
            "baselines": {"zero-shot": STRATEGY_METRICS} if config.task == "retrieval" else {},
            "known_false_negative_rate": 0.02,
            "strategies": strategies,
        }

    return run


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("name", list(EVIDENCE))
def test_every_config_validates_and_the_section_renders(name, quick, tmp_path, monkeypatch):
    configs: list = []
    for module in ("negatives", "global_negatives", "how_many", "retrieval", "momentum", "seed_methods", "logq"):
        monkeypatch.setattr(getattr(evidence, module), "run_or_reuse", fake_run_or_reuse(configs))
    # seed-methods' own small multi-label experiment: a tiny stand-in for the cached sentence embeddings
    tiny = (torch.randn(40, 8), torch.randn(100, 8), [[i, i + 40] for i in range(40)], "tiny")
    monkeypatch.setattr(evidence.seed_methods, "plots_to_reviews", lambda: tiny)
    monkeypatch.setattr(evidence.negatives, "plots", MagicMock())
    monkeypatch.setattr(evidence.global_negatives, "plt", MagicMock(**{"subplots.return_value": (None, MagicMock())}))
    monkeypatch.setattr(evidence.global_negatives, "save_figure", MagicMock())
    monkeypatch.setattr(evidence.how_many, "_plot", MagicMock())
    labels = torch.arange(20) % 4
    monkeypatch.setattr(
        evidence.how_many, "load_dataset", lambda *_, **__: SimpleNamespace(clean_train_y=labels, train_y=labels)
    )
    messages: list[str] = []
    body = EVIDENCE[name](tmp_path / "runs", tmp_path / "figures", quick=quick, progress=messages.append)
    assert configs and len(messages) == len(configs)
    assert {c.task for c in configs} == TASKS[name]
    assert f"`python experiments/run.py {name}{' --quick' if quick else ''}`" in body
    assert body.startswith("## ") and "nan" not in body


def test_run_py_rejects_an_unknown_evidence():
    result = subprocess.run([sys.executable, str(RUN), "nope"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr
    assert "how-many" in result.stderr
