"""The report's figures (matplotlib, Agg backend, PNG written atomically).

matplotlib is imported on the first figure, not with this module: it comes with ``pip install 'negkit[cli]'``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from negkit._optional import require
from negkit.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot``; the Agg backend is selected when nothing imported pyplot before (a user's own
    pyplot session keeps its backend and its figures)."""
    matplotlib = require("matplotlib", "cli", "the report's plots")
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return require("matplotlib.pyplot", "cli", "the report's plots")


def save_figure(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def training_curves(
    history: list[dict[str, Any]], path: Path, metric: str = "knn_acc", metric_title: str = "kNN accuracy"
) -> Path:
    """Loss and a per-epoch test metric (``metric``, a history column) of every strategy."""
    plt = _pyplot()
    figure, (loss_axes, knn_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(row["strategy"] for row in history):
        rows = [row for row in history if row["strategy"] == name]
        epochs = [int(row["epoch"]) for row in rows]
        loss_axes.plot(epochs, [float(row["loss"]) for row in rows], label=name)
        knn_axes.plot(epochs, [float(row[metric]) for row in rows], label=name)
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss (each strategy's own objective)")
    knn_axes.set(xlabel="epoch", ylabel=f"{metric_title} (test)", title=f"{metric_title} during training")
    knn_axes.legend(fontsize=8)
    return save_figure(figure, path)


def accuracy_bars(strategies: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]], path: Path) -> Path:
    """kNN and linear-probe accuracy per strategy, with each baseline's (raw input, random-init encoder) as lines."""
    names = list(strategies)
    positions = torch.arange(len(names), dtype=torch.float64)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4))
    axes.bar(positions - 0.2, [strategies[n]["knn_acc"] for n in names], width=0.4, label="kNN")
    axes.bar(positions + 0.2, [strategies[n]["linear_acc"] for n in names], width=0.4, label="linear probe")
    lowest = [min(s["knn_acc"], s["linear_acc"]) for s in strategies.values()]
    for (name, values), style in zip(baselines.items(), ("--", ":", "-.", (0, (1, 3))), strict=False):
        axes.axhline(values["knn_acc"], color="C0", linestyle=style, linewidth=1, label=f"{name}, kNN")
        axes.axhline(values["linear_acc"], color="C1", linestyle=style, linewidth=1, label=f"{name}, linear")
        lowest += [values["knn_acc"], values["linear_acc"]]
    axes.set_ylim(max(0.0, min(lowest) - 0.05), 1.0)
    axes.set_xticks(positions.tolist(), names, rotation=20)
    axes.set(ylabel="test accuracy", title="accuracy per strategy")
    axes.legend(fontsize=7, loc="lower right", ncol=2)
    return save_figure(figure, path)


def retrieval_costs(
    strategies: dict[str, dict[str, Any]], baseline: dict[str, float], path: Path, metric: str = "recall@1"
) -> Path:
    """Which negatives, and what each cost: ``metric`` per strategy (bars, the zero-shot baseline as a line), each
    bar labelled with the false-negative rate of the negatives it trained on and its training seconds."""
    names = list(strategies)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 0.55 * len(names) + 1.6))
    values = [strategies[n][metric] for n in names]
    positions = list(range(len(names)))[::-1]
    axes.barh(positions, values, color="C0")
    axes.axvline(baseline[metric], color="C3", linestyle="--", linewidth=1, label=f"zero-shot {baseline[metric]:.3f}")
    for position, name, value in zip(positions, names, values, strict=True):
        fn = strategies[name].get("false_negative_rate") or 0.0
        seconds = strategies[name].get("train_seconds", 0.0)
        axes.text(value, position, f" {value:.3f}  (FN {fn:.1%}, {seconds:.0f} s)", va="center", fontsize=8)
    axes.set_yticks(positions, names, fontsize=8)
    axes.set_xlim(0, max(*values, baseline[metric], 0.01) * 1.45)  # all-zero scores still get an axis
    axes.set(xlabel=f"{metric} (test queries against the whole corpus)", title="which negatives, and what each cost")
    axes.legend(fontsize=8, loc="lower right")
    return save_figure(figure, path)


def alignment_uniformity(strategies: dict[str, dict[str, Any]], path: Path) -> Path:
    """Wang & Isola's two properties, one point per strategy (lower is better on both axes)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    for name, metrics in strategies.items():
        axes.scatter(metrics["alignment"], metrics["uniformity"], s=40)
        axes.annotate(
            name, (metrics["alignment"], metrics["uniformity"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    axes.set(
        xlabel="alignment (lower: positives closer)",
        ylabel="uniformity (lower: more uniform)",
        title="alignment vs uniformity (test set)",
    )
    return save_figure(figure, path)


def projection(features: torch.Tensor, labels: torch.Tensor, title: str, path: Path) -> Path:
    """First two principal components of the L2-normalised features, coloured by class."""
    normalised = torch.nn.functional.normalize(features.double(), dim=1)
    centred = normalised - normalised.mean(dim=0)
    _, _, vectors = torch.linalg.svd(centred, full_matrices=False)
    points = centred @ vectors[:2].T
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 5))
    scatter = axes.scatter(points[:, 0], points[:, 1], c=labels.numpy(), cmap="tab10", s=6)
    axes.legend(*scatter.legend_elements(), fontsize=7, title="class", loc="best", markerscale=0.8)
    axes.set(title=title, xlabel="PC 1", ylabel="PC 2")
    return save_figure(figure, path)


def k_sweep(
    points: dict[str, list[tuple[float, float, float]]],
    path: Path,
    titles: tuple[str, str] = ("kNN accuracy", "linear probe accuracy"),
) -> Path:
    """Two test metrics against the number of negatives K: ``points[strategy] = [(k, first, second), ...]``."""
    plt = _pyplot()
    figure, (knn_axes, linear_axes) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for name, values in points.items():
        values = sorted(values)
        ks = [v[0] for v in values]
        knn_axes.plot(ks, [v[1] for v in values], marker="o", label=name)
        linear_axes.plot(ks, [v[2] for v in values], marker="o", label=name)
    for axes, what in zip((knn_axes, linear_axes), titles, strict=True):
        axes.set_xscale("log", base=2)
        axes.set(xlabel="negatives per anchor K", ylabel=f"{what} (test)", title=f"{what} vs K")
    knn_axes.legend(fontsize=8)
    return save_figure(figure, path)


def rank_histograms(reports: dict[str, dict[str, Any]], path: Path) -> Path:
    """Share of sampled negatives per hardness-rank bin (rank percentile among the eligible pool)."""
    names = list(reports)
    bins = list(next(iter(reports.values()))["rank_histogram"])
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(bins) + 3), 4))
    width = 0.8 / max(1, len(names))
    for offset, name in enumerate(names):
        shares = [reports[name]["rank_histogram"][b] for b in bins]
        axes.bar([i + offset * width for i in range(len(bins))], shares, width=width, label=name)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(bins))], bins, rotation=20)
    axes.set(
        xlabel="rank percentile among the anchor's eligible pool (0 = most similar)",
        ylabel="share of negatives",
        title="how hard are the sampled negatives",
    )
    axes.legend(fontsize=7)
    return save_figure(figure, path)


def diagnostic_curves(history: list[dict[str, Any]], strategy: str, path: Path) -> Path:
    """Per-epoch diagnostics of one strategy (e.g. the four losses logged during an H-UCL run)."""
    rows = [row for row in history if row.get("diagnostics")]
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for key in rows[0]["diagnostics"]:
        axes.plot([row["epoch"] for row in rows], [row["diagnostics"][key] for row in rows], label=key)
    axes.set(xlabel="epoch", ylabel="loss on the probe batch", title=f"losses measured while training {strategy}")
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def k_trajectory(history: list[dict[str, Any]], path: Path) -> Path:
    """K (and the ranking quality q) per epoch for the strategies that adapt K."""
    plt = _pyplot()
    figure, (k_axes, q_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(row["strategy"] for row in history if row.get("k") not in (None, "")):
        rows = [row for row in history if row["strategy"] == name]
        epochs = [int(row["epoch"]) for row in rows]
        k_axes.plot(epochs, [float(row["k"]) for row in rows], marker="o", label=name)
        q_axes.plot(epochs, [float(row["q"]) for row in rows], marker="o", label=name)
    k_axes.set(xlabel="epoch", ylabel="negatives per anchor K", title="adaptive K (end of each epoch)")
    q_axes.set(xlabel="epoch", ylabel="ranking quality q", title="q: positive above a true negative")
    k_axes.legend(fontsize=8)
    return save_figure(figure, path)


def effectiveness_curve(
    noise: float, q: float, harm: float, best: int, k_min: int, k_max: int, path: Path, model: str = "all_clean"
) -> Path:
    """E(K) of one of negkit's how-many-negatives models with K* marked."""
    from negkit.negatives import effectiveness

    ks = torch.unique(torch.logspace(0, torch.log10(torch.tensor(float(k_max))), 400).round().clamp(min=k_min))
    values = effectiveness(ks, noise, q, harm, model=model)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(ks.numpy(), values.numpy())
    axes.axvline(best, color="C3", linestyle="--", label=f"K* = {best}")
    axes.set_xscale("log", base=2)
    axes.set(
        xlabel="negatives per anchor K",
        ylabel="training effectiveness E(K)",
        title=f"{model}: ρ = {noise:.3g}, q = {q:.3g}, harm = {harm:g}",
    )
    axes.legend()
    return save_figure(figure, path)
