"""``report.md`` of a finished run, rebuilt from the files the run saved (never typed by hand).

Every report has the same frame — title, dataset, the task's setup paragraph, one results table (the task's
columns, baselines first), the best strategy against the best baseline — and the task adds its own sections
(plots, negatives, K sweeps) through :meth:`negkit.tasks.Task.report`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from negkit.io import read_json, write_text
from negkit.tasks import Column, get_task
from negkit.train.checkpoint import read_saved


def read_history(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def results_table(metrics: dict[str, Any], columns: tuple[Column, ...]) -> str:
    """Baselines, then every strategy: one row each, the task's columns."""
    lines = [
        "| strategy | labels | " + " | ".join(column.title for column in columns) + " |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for name, values in metrics["baselines"].items():
        lines.append(f"| {name} | – | " + " | ".join(column.cell(values) for column in columns) + " |")
    for name, values in metrics["strategies"].items():
        uses = "yes" if values.get("uses_labels") else "no"
        lines.append(f"| {name} | {uses} | " + " | ".join(column.cell(values) for column in columns) + " |")
    return "\n".join(lines)


def best_strategy(metrics: dict[str, Any], headline: Column) -> tuple[str, float, str, float]:
    """``(best strategy, its headline metric, best baseline, its headline metric)``."""
    strategies, baselines = metrics["strategies"], metrics["baselines"]
    best = max(strategies, key=lambda name: strategies[name][headline.key])
    baseline = max(baselines, key=lambda name: baselines[name].get(headline.key, float("-inf")))
    return best, strategies[best][headline.key], baseline, baselines[baseline][headline.key]


def write_report(run_dir: str | Path) -> Path:
    """Build ``DIR/report.md`` and ``DIR/plots/*.png`` from ``metrics.json``, ``history.csv`` and the results."""
    root = Path(run_dir)
    if not (root / "metrics.json").exists():
        raise FileNotFoundError(f"{root / 'metrics.json'} not found: the run has not finished (resume it first)")
    metrics = read_saved(root / "metrics.json", read_json, "resume the run (`negkit run --resume DIR`) to rewrite it")
    task = get_task(metrics.get("task", "contrastive"))
    setup, sections = task.report(root, metrics, read_history(root / "history.csv"))
    columns = task.summary_columns(metrics["config"])
    best, value, baseline, base_value = best_strategy(metrics, columns[0])
    verdict = "beats" if value > base_value else "does not beat"
    params = "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in values["params"].items())
        for name, values in metrics["strategies"].items()
        if values.get("params")
    )
    title = columns[0].title
    text = f"""# negkit run: {metrics["dataset"]} ({metrics["task"]})

{metrics["dataset_description"]}.

{setup}

## Results

{results_table(metrics, columns)}

Best: **{best}**, {title} {value:.4f}, which {verdict} the best baseline ({baseline}, {base_value:.4f}) by
{value - base_value:+.4f}. Wall time of the last session: {metrics["wall_seconds"]:.1f} s.

Strategy parameters: {params}.
"""
    if sections:
        text += "\n" + "\n\n".join(sections) + "\n"
    return write_text(root / "report.md", text)
