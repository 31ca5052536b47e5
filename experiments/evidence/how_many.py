"""How many negatives: fixed-K sweeps against negkit's predicted K* and ANS, on two tasks.

1. **Recommendation** (the setting of Wu, Wu & Huang): MovieLens-100k, two-tower model, InfoNCE over K uniformly
   sampled unrated items (``uniform-k``), HR@10 / nDCG@10 by leave-last-out ranking. False negatives are unrated
   items the user likes; ``hide_fraction`` hides a share of each user's interactions from training so that the
   false-negative rate ρ is known and can be raised.
2. **Images with label noise**: MNIST-5000 with symmetric label noise; the noisy labels drive class-conditional
   negatives (``class-k``), so noise makes false negatives.

Per setting: sweep K, find the measured best K (mean over seeds), and compare with ``optimal_k(ρ, q, harm)``,
where ρ is the measured false-negative rate of the sampler and q the ranking quality the ANS run logged at the
end of warm-up (before any test result is seen). ``harm`` is calibrated on scikit-learn digits only (the same
image protocol), never on the data reported; the uncalibrated model (harm = 0) is shown beside it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from evidence.document import run_or_reuse
from negkit.data import load_dataset
from negkit.io import read_json
from negkit.negatives import optimal_k
from negkit.report.plots import save_figure

K_VALUES = (1, 2, 4, 8, 16, 32, 64, 128)
HARM_GRID = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MODELS = ("all_clean", "per_negative")


def class_conditional_false_negative_rate(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Exact ρ of uniform class-conditional sampling under noisy labels: the share of (anchor, candidate) pairs
    with different noisy labels whose true labels agree."""
    classes = int(max(clean.max(), noisy.max())) + 1
    table = torch.zeros(classes, classes, dtype=torch.float64)
    table.index_put_((clean, noisy), torch.ones(len(clean), dtype=torch.float64), accumulate=True)
    true_counts, noisy_counts = table.sum(dim=1), table.sum(dim=0)
    same_true_other_label = true_counts[clean] - table[clean, noisy]
    other_label = len(clean) - noisy_counts[noisy]
    return float(same_true_other_label.sum() / other_label.sum())


@dataclass
class Sweep:
    """One setting (task × noise level): scores per K and of ANS over seeds, and the model's inputs."""

    setting: str
    rho: float
    q: float  # mean over seeds of the ANS run's q at the end of warm-up
    scores: dict[int, list[float]]
    ans_scores: list[float]
    ans_final_k: list[float]
    extra: dict[int | str, list[float]]  # a second metric (nDCG@10 for recommendation), keyed like scores

    def means(self) -> dict[int, float]:
        return {k: statistics.mean(v) for k, v in self.scores.items()}

    @property
    def best_k(self) -> int:
        means = self.means()
        return max(means, key=means.get)

    def predicted(self, harm: float, model: str = "all_clean") -> int:
        q = min(max(self.q, 1e-6), 1 - 1e-6)
        return optimal_k(self.rho, q, k_max=max(self.scores), harm=harm, model=model)

    def error(self, harm: float, model: str = "all_clean") -> float:
        """|log2(K*/best K)|: 0 when the prediction is exact, 1 when it is off by a factor of 2."""
        return abs(math.log2(self.predicted(harm, model) / self.best_k))


def _sweep(
    runs: Path,
    setting: str,
    base: dict[str, Any],
    entries: dict[int, str],
    ans: str,
    seeds: tuple[int, ...],
    warmup: int,
    score: str,
    extra: str | None,
    rho: Callable[[dict[str, Any]], float],
    progress: Callable[[str], None],
) -> Sweep:
    scores: dict[int, list[float]] = {k: [] for k in entries}
    extras: dict[int | str, list[float]] = {k: [] for k in (*entries, "ans")}
    ans_scores, final_k, q_values, rhos = [], [], [], []
    for seed in seeds:
        out = runs / f"howmany-{setting}-s{seed}"
        metrics = run_or_reuse(out, {**base, "seed": seed, "strategies": [*entries.values(), ans]}, progress)
        for k, entry in entries.items():
            scores[k].append(metrics["strategies"][entry][score])
            if extra:
                extras[k].append(metrics["strategies"][entry][extra])
        ans_scores.append(metrics["strategies"][ans][score])
        if extra:
            extras["ans"].append(metrics["strategies"][ans][extra])
        history = read_json(out / "results" / f"{ans}.json")["history"]
        q_values.append(history[warmup - 1]["q"])
        final_k.append(history[-1]["k"])
        rhos.append(rho(metrics))
    return Sweep(setting, statistics.mean(rhos), statistics.mean(q_values), scores, ans_scores, final_k, extras)


def _image_sweeps(
    runs: Path,
    dataset: str,
    noise_levels: tuple[float, ...],
    k_values: tuple[int, ...],
    seeds: tuple[int, ...],
    epochs: int,
    warmup: int,
    progress: Callable[[str], None],
) -> list[Sweep]:
    sweeps = []
    for noise in noise_levels:
        data = load_dataset(dataset, seed=0, label_noise=noise)
        rho = class_conditional_false_negative_rate(data.clean_train_y, data.train_y) if noise else 0.0
        ans = f"ans:class_conditional=true,in_batch=true,noise_rate={rho:.4f},k_max={max(k_values)},initial_k=4"
        base = {
            "dataset": dataset,
            "dataset_options": {"label_noise": noise},
            "train": {"epochs": epochs, "warmup_epochs": warmup, "batch_size": 64},
        }
        entries = {k: f"class-k:k={k},in_batch=true" for k in k_values}
        sweeps.append(
            _sweep(
                runs,
                f"{dataset}-noise{round(noise * 100)}",
                base,
                entries,
                ans,
                seeds,
                warmup,
                "knn_acc",
                None,
                lambda _, value=rho: value,
                progress,
            )
        )
    return sweeps


def _recommendation_sweeps(
    runs: Path,
    hide_levels: tuple[float, ...],
    k_values: tuple[int, ...],
    seeds: tuple[int, ...],
    epochs: int,
    progress: Callable[[str], None],
) -> list[Sweep]:
    sweeps = []
    for hide in hide_levels:
        base = {
            "task": "recommendation",
            "dataset": "ml-100k",
            "dataset_options": {"hide_fraction": hide},
            "train": {"epochs": epochs, "warmup_epochs": 1, "batch_size": 1024, "lr": 1e-2, "weight_decay": 0.0},
        }
        entries = {k: f"uniform-k:k={k}" for k in k_values}
        ans = f"ans:k_max={max(k_values)},initial_k=4"
        sweeps.append(
            _sweep(
                runs,
                f"ml100k-hide{round(hide * 100)}",
                base,
                entries,
                ans,
                seeds,
                1,
                "hr@10",
                "ndcg@10",
                lambda m: m["known_false_negative_rate"],
                progress,
            )
        )
    return sweeps


def calibrate_harm(
    sweeps: list[Sweep], grid: tuple[float, ...] = HARM_GRID, model: str = "all_clean"
) -> tuple[float, float]:
    """The ``harm`` in ``grid`` with the smallest mean |log2(K*/best K)| over ``sweeps``, and that error."""
    errors = {h: statistics.mean(s.error(h, model) for s in sweeps) for h in grid}
    harm = min(errors, key=lambda h: (errors[h], h))
    return harm, errors[harm]


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def _tables(sweeps: list[Sweep], harms: dict[str, float], label: str, metric: str) -> list[str]:
    lines = [
        f"| {label} | ρ | q (warm-up) | K* all_clean, harm 0 | K* all_clean, harm {harms['all_clean']:g} "
        f"| K* per_negative, harm {harms['per_negative']:g} | measured best K | {metric} at best K "
        f"| {metric} at median K | ANS | ANS − best | ANS final K |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sweeps:
        means = s.means()
        median = statistics.median(means.values())
        ans = statistics.mean(s.ans_scores)
        lines.append(
            f"| {s.setting} | {s.rho:.4f} | {s.q:.3f} | {s.predicted(0.0)} | {s.predicted(harms['all_clean'])} | "
            f"{s.predicted(harms['per_negative'], 'per_negative')} | {s.best_k} | {means[s.best_k]:.4f} | "
            f"{median:.4f} | {ans:.4f} | {ans - means[s.best_k]:+.4f} | {statistics.mean(s.ans_final_k):.0f} |"
        )
    k_values = list(sweeps[0].scores)
    header = [
        f"| {label} | " + " | ".join(f"K={k}" for k in k_values) + " | ANS |",
        "|---|" + "---|" * (len(k_values) + 1),
    ]
    lines += ["", f"{metric} per K (mean ± sd over seeds):", "", *header]
    for s in sweeps:
        lines.append(
            f"| {s.setting} | " + " | ".join(_spread(s.scores[k]) for k in k_values) + f" | {_spread(s.ans_scores)} |"
        )
    if all(s.extra.get("ans") for s in sweeps):
        lines += ["", "nDCG@10 per K:", "", *header]
        for s in sweeps:
            cells = " | ".join(_spread(s.extra[k]) for k in k_values)
            lines.append(f"| {s.setting} | {cells} | {_spread(s.extra['ans'])} |")
    return lines


def _plot(sweeps: list[Sweep], harms: dict[str, float], ylabel: str, title: str, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, s in enumerate(sweeps):
        means = s.means()
        color = f"C{index}"
        axes.plot(list(means), list(means.values()), marker="o", color=color, label=f"{s.setting} (ρ={s.rho:.3f})")
        axes.axhline(statistics.mean(s.ans_scores), color=color, linestyle="--", linewidth=1)
        axes.axvline(s.predicted(harms["all_clean"]), color=color, linestyle=":", linewidth=1)
        axes.axvline(s.predicted(harms["per_negative"], "per_negative"), color=color, linestyle="-.", linewidth=1)
    axes.set_xscale("log", base=2)
    axes.set(xlabel="negatives per anchor K", ylabel=ylabel, title=title)
    legend_title = "solid: fixed K · dashed: ANS · K* dotted: all_clean, dash-dot: per_negative"
    axes.legend(fontsize=7, title=legend_title, title_fontsize=7)
    save_figure(figure, path)


def how_many_evidence(
    runs: Path, figures: Path, *, quick: bool = False, progress: Callable[[str], None] = print
) -> str:
    started = time.perf_counter()
    seeds = (0,) if quick else (0, 1)
    k_values = (1, 8) if quick else K_VALUES
    image_epochs, image_warmup = (2, 1) if quick else (10, 1)
    noise_levels = (0.0, 0.3) if quick else (0.0, 0.1, 0.3)
    recommendation = _recommendation_sweeps(
        runs, (0.0, 0.5) if quick else (0.0, 0.5, 0.8), k_values, seeds, 2 if quick else 15, progress
    )
    images = _image_sweeps(runs, "mnist5000", noise_levels, k_values, seeds, image_epochs, image_warmup, progress)
    calibration_epochs, calibration_warmup = (2, 1) if quick else (40, 4)
    calibration = _image_sweeps(
        runs, "digits", noise_levels, k_values, seeds, calibration_epochs, calibration_warmup, progress
    )
    calibrated = {model: calibrate_harm(calibration, model=model) for model in MODELS}
    harms = {model: harm for model, (harm, _) in calibrated.items()}

    figures.mkdir(parents=True, exist_ok=True)
    _plot(recommendation, harms, "HR@10 (test)", "MovieLens-100k: HR@10 vs K", figures / "how_many_recommendation.png")
    _plot(images, harms, "kNN accuracy (test)", "MNIST-5000 with label noise: kNN vs K", figures / "how_many_k.png")
    _plot(calibration, harms, "kNN accuracy (test)", "digits (calibration): kNN vs K", figures / "how_many_digits.png")

    def error(sweeps: list[Sweep], harm: float, model: str = "all_clean") -> str:
        return f"{statistics.mean(s.error(harm, model) for s in sweeps):.2f}"

    lines = [
        "## How many negatives: predicted K* vs measured best K, and ANS",
        "",
        f"Generated by `python experiments/run.py how-many{' --quick' if quick else ''}` in "
        f"{time.perf_counter() - started:.0f} s "
        f"(finished runs with an identical config are reused). Seeds {list(seeds)}; K ∈ {list(k_values)}. "
        "ρ = measured false-negative rate of the sampler; q = ranking quality the ANS run logged at the end of "
        "warm-up (before any test result). K* = `optimal_k(ρ, q, k_max=128, harm, model)` for negkit's two models "
        "(`all_clean`: a sample with any false negative is lost; `per_negative`: each false negative costs `harm`, "
        "see `negkit.negatives.how_many`). `harm` is calibrated per model on scikit-learn digits only: "
        f"**all_clean harm = {harms['all_clean']:g}** (digits error {calibrated['all_clean'][1]:.2f}), "
        f"**per_negative harm = {harms['per_negative']:g}** (digits error {calibrated['per_negative'][1]:.2f}). "
        "ANS starts at K = 4 and follows K* of its running q.",
        "",
        "Prediction error, mean |log2(K*/best K)| (0 = exact; 1 = off by a factor 2): "
        + "; ".join(
            f"{name}: all_clean {error(sweeps, 0.0)} (harm 0) / {error(sweeps, harms['all_clean'])} (calibrated), "
            f"per_negative {error(sweeps, harms['per_negative'], 'per_negative')} (calibrated)"
            for name, sweeps in (("recommendation", recommendation), ("images", images), ("digits", calibration))
        )
        + ".",
        "",
        "### Recommendation: MovieLens-100k (two-tower, InfoNCE over K uniformly sampled unrated items)",
        "",
        "Implicit feedback, leave-last-out by timestamp, HR@10 / nDCG@10 of the held-out item against all "
        "items but the user's other known positives. `hide` = share of each user's training interactions "
        "hidden from training (known false negatives the sampler can draw); ρ counts only *known* false "
        "negatives (hidden and test items), a lower bound. 15 epochs, batch 1,024, AdamW lr 0.01, dim 64, "
        "T = 0.1, user and item features.",
        "",
        *_tables(recommendation, harms, "setting", "HR@10"),
        "",
        "![HR@10 vs K](figures/how_many_recommendation.png)",
        "",
        "### Images with label noise: MNIST-5000",
        "",
        "`class-k` with in-batch negatives (batch 64; the *noisy* training labels decide the classes and mask "
        f"same-label batch rows), {image_epochs} epochs, warm-up {image_warmup}; kNN accuracy on the clean test "
        "set. ρ is the exact false-negative rate of class-conditional sampling under the noisy labels.",
        "",
        *_tables(images, harms, "setting", "kNN"),
        "",
        "![kNN vs K under label noise](figures/how_many_k.png)",
        "",
        f"### Calibration set: scikit-learn digits (same image protocol, {calibration_epochs} epochs)",
        "",
        *_tables(calibration, harms, "setting", "kNN"),
        "",
        "![digits kNN vs K](figures/how_many_digits.png)",
    ]
    return "\n".join(lines)
