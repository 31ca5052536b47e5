"""Markdown tables and plot data shared by the task reports."""

from __future__ import annotations

from typing import Any


def negatives_table(strategies: dict[str, dict[str, Any]]) -> str:
    """One row per strategy: the negative report of its negative distribution at the end of training."""
    lines = [
        "| strategy | FN rate | neg. sim median | pos. sim | neg ≥ pos | rank pct median | top-1 % | top-5 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, values in strategies.items():
        r = values.get("negatives")
        if not r:
            continue
        hist = r["rank_histogram"]
        lines.append(
            f"| {name} | {r['false_negative_rate']:.3f} | {r['negative_similarity']['median']:.3f} | "
            f"{r['positive_similarity']:.3f} | {r['above_positive']:.3f} | {r['rank_percentile_median']:.3f} | "
            f"{hist['0-0.01']:.3f} | {hist['0-0.01'] + hist['0.01-0.05']:.3f} |"
        )
    return "\n".join(lines)


def k_sweep_points(
    strategies: dict[str, dict[str, Any]], keys: tuple[str, str] = ("knn_acc", "linear_acc")
) -> dict[str, list[tuple[float, float, float]]]:
    """Strategies run at two or more values of ``k``, as ``{name: [(k, metric_1, metric_2), ...]}``."""
    points: dict[str, list[tuple[float, float, float]]] = {}
    for values in strategies.values():
        k = values.get("params", {}).get("k")
        if k is not None:
            points.setdefault(values.get("strategy", "?"), []).append((k, values[keys[0]], values[keys[1]]))
    return {name: p for name, p in points.items() if len({k for k, _, _ in p}) > 1}
