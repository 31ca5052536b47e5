"""Issue 16's methods against their base losses, same seeds and budget (``python experiments/run.py seed-methods``).

* Contrastive task on scikit-learn digits (the runner, every strategy of one seed in one run): MEOW / AdaMEOW vs
  InfoNCE (``simclr``), AMCL vs the same heads at a fixed temperature, Metrix (embedding and feature space) vs
  no mixing (``simclr``), TCM (on SupCon) vs SupCon; kNN and linear accuracy, R@1, MAP@R and OPIS.
* Soft top-k vs decoupled softmax (DEXML) on a multi-label setting built from Rotten Tomatoes: a movie's plot
  is the query and *all* of its reviews are relevant (4.5 on average); frozen all-MiniLM-L6-v2 embeddings with a
  trained linear head (identity-initialised, shared by both sides); P@1, P@5, R@10, R@50 of test plots against
  every review.
* The value of each method on one fixed seeded input beside its float64 loop reference (from the test suite)
  and, for TCM, pytorch-metric-learning's ``ThresholdConsistentMarginLoss``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evidence.document import run_or_reuse
from negkit.io import read_json

ROOT = Path(__file__).resolve().parents[2]
#: one run per seed trains every entry; the baselines first
CONTRASTIVE = (
    "simclr",
    "meow:temperature=0.1",
    "adameow:temperature=0.1",
    "amcl:fixed_temperature=0.1",
    "amcl:hidden=32",  # AMCL below
    "metrix",
    "metrix:space=feature",
    "supcon",
    "tcm",
)
AMCL = "amcl:hidden=32"
#: (comparison, baseline entry, method entries)
COMPARISONS = (
    ("MEOW / AdaMEOW vs InfoNCE", "simclr", ("meow:temperature=0.1", "adameow:temperature=0.1")),
    ("AMCL vs a fixed temperature", "amcl:fixed_temperature=0.1", (AMCL,)),
    ("Metrix vs no mixing", "simclr", ("metrix", "metrix:space=feature")),
    ("TCM vs no TCM", "supcon", ("tcm",)),
)
METRICS = (
    ("knn_acc", "kNN acc"),
    ("linear_acc", "linear acc"),
    ("recall_at_1", "R@1"),
    ("map_at_r", "MAP@R"),
    ("opis", "OPIS ↓"),
)
SOFT_KS = (5, 30)  # DEXML's default, and about the number of relevant reviews per plot
RANKING = (("p@1", "P@1"), ("p@5", "P@5"), ("r@10", "R@10"), ("r@50", "R@50"))


def _cell(values: list[float | None], digits: int = 4) -> str:
    """Mean ± sd over seeds; "–" when a metric was not measured (e.g. OPIS without two classes)."""
    if any(value is None for value in values):
        return "–"
    mean = statistics.mean(values)
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{spread}"


def _delta(method: list[float | None], base: list[float | None], digits: int = 4) -> str:
    """Mean ± sd over seeds of the paired difference method − baseline."""
    if any(value is None for value in (*method, *base)):
        return "–"
    return _cell([m - b for m, b in zip(method, base, strict=True)], digits)


# ------------------------------------------------------------------------------------------ contrastive task


def contrastive_comparison(
    runs: Path, seeds: tuple[int, ...], epochs: int, progress: Callable[[str], None]
) -> dict[str, dict[str, list[float | None]]]:
    """``{entry: {metric: [one value per seed]}}`` of the runner's contrastive task on digits."""
    results: dict[str, dict[str, list[float | None]]] = {}
    for seed in seeds:
        metrics = run_or_reuse(
            runs / f"seed-methods-digits-s{seed}",
            {
                "dataset": "digits",
                "seed": seed,
                "strategies": list(CONTRASTIVE),
                "train": {"epochs": epochs, "batch_size": 128},
            },
            progress,
        )
        history = read_json(runs / f"seed-methods-digits-s{seed}" / "results" / f"{AMCL}.json")["history"]
        last = (history[-1].get("diagnostics") or {}) if history else {}
        for key in ("tau_mean", "tau_std"):
            results.setdefault("amcl-temperatures", {}).setdefault(key, []).append(last.get(key))
        for entry in CONTRASTIVE:
            found = metrics["strategies"][entry]
            cell = results.setdefault(entry, {})
            for key, _ in (*METRICS, ("train_seconds", "")):
                cell.setdefault(key, []).append(found.get(key))
    return results


# ------------------------------------------------------------------------------ soft top-k vs decoupled softmax


def plots_to_reviews() -> tuple[torch.Tensor, torch.Tensor, list[list[int]], str]:
    """The multi-label setting: query = a movie's plot, relevant = every review of that movie.

    Returns plot embeddings ``[P, d]``, review embeddings ``[R, d]`` (frozen all-MiniLM-L6-v2, cached), the
    relevant review ids of each plot, and a description."""
    from negkit.data.text import load_retrieval_dataset
    from negkit.models.text import cached_base_embeddings

    data = load_retrieval_dataset("rotten-tomatoes", unique_queries=True)
    reviews, plots = cached_base_embeddings(data, 128)
    relevant: list[list[int]] = [[] for _ in range(data.num_documents)]
    for review, ids in enumerate(data.relevant):
        for plot in ids:
            relevant[plot].append(review)
    keep = [i for i, ids in enumerate(relevant) if ids]
    counts = [len(relevant[i]) for i in keep]
    description = (
        f"Rotten Tomatoes reversed: {len(keep)} plots as queries, {data.num_queries} reviews as items, "
        f"{statistics.mean(counts):.1f} relevant reviews per plot (median {statistics.median(counts):.0f}, "
        f"max {max(counts)})"
    )
    return plots[keep], reviews, [relevant[i] for i in keep], description


def ranking_metrics(queries: torch.Tensor, items: torch.Tensor, relevant: list[list[int]]) -> dict[str, float]:
    """P@1, P@5 (share of the top k that is relevant) and R@10, R@50 (share of the relevant items in the top k)."""
    scores = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(items, dim=1).T
    top = scores.topk(50, dim=1).indices
    out = {key: 0.0 for key, _ in RANKING}
    for row, ids in zip(top.tolist(), relevant, strict=True):
        wanted = set(ids)
        hits = [item in wanted for item in row]
        out["p@1"] += hits[0]
        out["p@5"] += sum(hits[:5]) / 5
        out["r@10"] += sum(hits[:10]) / len(wanted)
        out["r@50"] += sum(hits[:50]) / len(wanted)
    return {key: value / len(relevant) for key, value in out.items()}


def train_multilabel(
    loss_name: str,
    plots: torch.Tensor,
    reviews: torch.Tensor,
    relevant: list[list[int]],
    *,
    seed: int,
    epochs: int,
    k: int = 5,
    batch: int = 16,
    extra: int = 64,
    lr: float = 1e-3,
) -> dict[str, float]:
    """Train a shared linear head with ``decoupled_softmax`` or ``soft_top_k`` (temperature 0.05, DEXML's; soft
    top-k with ``k``, α = 2) and return the test plots' ranking metrics. A batch of ``batch`` train plots sees as
    items every review of its plots plus ``extra`` random reviews; relevance is the [B, C] 0/1 matrix."""
    from negkit.losses import decoupled_softmax, soft_top_k

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(plots), generator=generator)
    test_count = len(plots) // 5
    test, train = order[:test_count], order[test_count:]
    torch.manual_seed(seed)
    head = torch.nn.Linear(plots.shape[1], plots.shape[1])
    with torch.no_grad():
        head.weight.copy_(torch.eye(plots.shape[1]))
        head.bias.zero_()
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(epochs):
        shuffled = train[torch.randperm(len(train), generator=generator)]
        for start in range(0, len(shuffled) - batch + 1, batch):
            ids = shuffled[start : start + batch].tolist()
            positives = sorted({r for i in ids for r in relevant[i]})
            sampled = torch.randint(0, len(reviews), (extra,), generator=generator).tolist()
            columns = sorted(set(positives) | set(sampled))
            position = {r: c for c, r in enumerate(columns)}
            relevance = torch.zeros(len(ids), len(columns))
            for row, i in enumerate(ids):
                relevance[row, [position[r] for r in relevant[i]]] = 1.0
            query, items = head(plots[ids]), head(reviews[columns])
            if loss_name == "decoupled_softmax":
                loss = decoupled_softmax(query, items, relevance, temperature=0.05)
            else:
                loss = soft_top_k(query, items, relevance, k=k, alpha=2.0, temperature=0.05)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return ranking_metrics(head(plots[test]), head(reviews), [relevant[i] for i in test.tolist()])


def zero_shot(plots: torch.Tensor, reviews: torch.Tensor, relevant: list[list[int]], seed: int) -> dict[str, float]:
    order = torch.randperm(len(plots), generator=torch.Generator().manual_seed(seed))
    test = order[: len(plots) // 5]
    return ranking_metrics(plots[test], reviews, [relevant[i] for i in test.tolist()])


# ------------------------------------------------------------------------------------ fixed-input reference table


def fixed_input_table() -> list[tuple[str, float, float, str]]:
    """``(method, negkit value, reference value, reference)`` on one fixed seeded float64 input per method."""
    sys.path.insert(0, str(ROOT))  # the float64 loop references live in the test suite
    from tests.losses.test_adameow import adameow_loop
    from tests.losses.test_amcl import amcl_loop
    from tests.losses.test_meow import meow_loop
    from tests.losses.test_metrix import metrix_loop
    from tests.losses.test_soft_topk import soft_top_k_loop
    from tests.losses.test_tcm import pml_tcm, tcm_loop
    from tests.metrics.test_opis import opis_loop

    from negkit.losses import adameow, amcl, meow, metrix, soft_top_k, tcm
    from negkit.metrics import opis

    def randn(seed: int, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    a, p = randn(0, 6, 4), randn(1, 6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    rows: list[tuple[str, float, float, str]] = []

    relevance = (torch.rand(6, 10, generator=torch.Generator().manual_seed(2)) < 0.3).double()
    relevance[:, 0], relevance[:, -1] = 1.0, 0.0
    items = randn(3, 10, 4)
    got = soft_top_k(a, items, relevance, k=3, alpha=2.0, temperature=0.5)
    values, keep = soft_top_k_loop(a, items, relevance, k=3, alpha=2.0, temperature=0.5)
    want = values[keep].mean()
    rows.append(("soft_top_k (k=3, α=2, T=0.5)", float(got), float(want), "loop (bisection in float64)"))

    assignments = torch.tensor([[0, 1], [1, 2], [0, 0], [1, 1], [0, 2], [1, 0]])
    centroids, phi = (
        [randn(4, 2, 4), randn(5, 3, 4)],
        [torch.tensor([0.3, 0.5]).double(), torch.tensor([0.2, 0.4, 0.6]).double()],
    )
    got = meow(a, p, assignments, temperature=0.5, centroids=centroids, concentrations=phi, proto_weight=0.5)
    loop = meow_loop(a, p, assignments, temperature=0.5, centroids=centroids, concentrations=phi, proto_weight=0.5)
    want = torch.stack([row for row in loop if row is not None]).mean()
    rows.append(
        ("meow (2 clusterings, T=0.5, λ=0.5)", float(got), float(want), "loop (MEOW's −log(d_ii/(N·mean w d)))")
    )

    logits = randn(6, 6, 6)
    got = adameow(a, p, logits, temperature=0.7)
    want = adameow_loop(a, p, logits, temperature=0.7).mean()
    rows.append(("adameow (T=0.7)", float(got), float(want), "loop"))

    temperatures = 0.05 + randn(7, 2, 12, 12).abs()
    h1, h2 = randn(8, 6, 2, 4), randn(9, 6, 2, 4)
    got = amcl(h1, h2, temperatures, beta=0.1)
    want = amcl_loop(h1, h2, temperatures, beta=0.1).mean()
    rows.append(("amcl (2 heads, β=0.1)", float(got), float(want), "loop"))

    lam = torch.rand(6, 3, generator=torch.Generator().manual_seed(10)).double()
    got = metrix(a, p, lam=lam, top_k=3, temperature=0.5)
    want = metrix_loop(a, p, lam, temperature=0.5, weight=1.0, similarity="cosine").mean()
    rows.append(("metrix (top_k=3, T=0.5, fixed λ)", float(got), float(want), "loop"))

    both, twice = torch.cat([a, p]), torch.cat([labels, labels])
    got = tcm(both, twice, pos_margin=0.3, neg_margin=0.0)
    rows.append(
        ("tcm (m⁺=0.3, m⁻=0)", float(got), float(tcm_loop(both, twice, pos_margin=0.3, neg_margin=0.0)), "loop")
    )
    rows.append(("tcm (m⁺=0.3, m⁻=0)", float(got), float(pml_tcm(both, twice, pos_margin=0.3, neg_margin=0.0)),
                 "pytorch-metric-learning ThresholdConsistentMarginLoss"))  # fmt: skip
    thresholds = [i / 100 for i in range(100)]
    rows.append(("opis (negkit's definition; thresholds 0–0.99)", float(opis(both, twice, thresholds=thresholds)),
                 float(opis_loop(both, twice, thresholds)), "loop (the paper's formula was not found)"))  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------------- section


def seed_methods_evidence(
    runs: Path, figures: Path, *, quick: bool = False, progress: Callable[[str], None] = print
) -> str:
    started = time.perf_counter()
    seeds = (0,) if quick else (0, 1, 2)
    retrieval_seeds = (0,) if quick else (0, 1, 2, 3, 4)  # cheap, and only 31 test plots per split
    epochs = 2 if quick else 10
    retrieval_epochs = 2 if quick else 20

    # progress() reports the runs only (one message per config, as every evidence does)
    fixed = fixed_input_table()
    torch.set_num_threads(1)
    plots, reviews, relevant, description = plots_to_reviews()
    ranked: dict[str, dict[str, list[float]]] = {}
    for seed in retrieval_seeds:
        scores = {"zero-shot": zero_shot(plots, reviews, relevant, seed)}
        scores["decoupled_softmax"] = train_multilabel(
            "decoupled_softmax", plots, reviews, relevant, seed=seed, epochs=retrieval_epochs
        )
        for k in SOFT_KS:
            scores[f"soft_top_k (k={k})"] = train_multilabel(
                "soft_top_k", plots, reviews, relevant, seed=seed, epochs=retrieval_epochs, k=k
            )
        for name, values in scores.items():
            for key, value in values.items():
                ranked.setdefault(name, {}).setdefault(key, []).append(value)

    results = contrastive_comparison(runs, seeds, epochs, progress)

    lines = [
        "## Issue 16's methods against their base losses",
        "",
        f"Generated by `python experiments/run.py seed-methods{' --quick' if quick else ''}` in "
        f"{time.perf_counter() - started:.0f} s (runs reused where finished) on a shared 2-core machine. "
        f"Seeds {list(seeds)}; every cell is mean ± sd over the seeds, Δ the mean ± sd of the per-seed difference "
        "to the comparison's baseline (same seed, data split, views, epochs and optimiser).",
        "",
        "### Contrastive task (digits)",
        "",
        f"`negkit run` on scikit-learn digits (1,437 train / 360 test 8×8 images), MLP encoder (features 128, "
        f"projection 64), {epochs} epochs, batch 128, AdamW lr 2e-3, views ±2 px shifts. Temperatures: 0.1 for "
        "`simclr`, `supcon`, `metrix`, and for `meow` / `adameow` (set in the entry: MEOW's own 0.4–0.9 and "
        "AdaMEOW's 1.0 were tuned for graphs); `amcl` learns a temperature in (1e-5, 2) per pair and head over "
        "3 linear heads (temperature MLPs of width 32, not the official 128, to fit the budget), its "
        "baseline uses the same heads at a fixed 0.1 without the regulariser. `meow`: k-means "
        "with 8 and 32 clusters of the whole training set, refreshed every epoch, + ProtoNCE (weight 1). "
        "`metrix`: 3 hardest negatives per anchor, λ ~ Beta(2, 2), mixes of projections; `metrix:space=feature` "
        "mixes backbone features and passes them through the head. `tcm`: SupCon + TCM (m⁺ = 0.9, m⁻ = 0.5). "
        "Metrics on backbone features of the test split (R@1, MAP@R: test queries against the train set; OPIS: "
        "negkit's definition, lower = one threshold serves every class).",
        "",
        "| comparison | strategy | " + " | ".join(title for _, title in METRICS) + " | train s |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for title, baseline, methods in COMPARISONS:
        for entry in (baseline, *methods):
            cells = [_cell(results[entry][key]) for key, _ in METRICS]
            lines.append(
                f"| {title} | `{entry}`{' (baseline)' if entry == baseline else ''} | "
                + " | ".join(cells)
                + f" | {_cell(results[entry]['train_seconds'], 1)} |"
            )
        for entry in methods:
            deltas = [_delta(results[entry][key], results[baseline][key]) for key, _ in METRICS]
            lines.append(f"| {title} | Δ `{entry}` − baseline | " + " | ".join(deltas) + " | |")
    taus = results["amcl-temperatures"]
    lines += [
        "",
        f"AMCL's learned temperatures at the last epoch (probe batch, mean over pairs and heads): "
        f"{_cell(taus['tau_mean'], 5)} (spread across pairs {_cell(taus['tau_std'], 5)}). The regulariser "
        "(D/2)·log τ + 1/τ is smallest at τ = 2/D, here D = 2B = 256 columns: 2/256 = 0.0078, so with β = 0.1 it "
        "sets the temperature from the batch size more than from the pair.",
    ]
    lines += [
        "",
        "### Soft top-k vs decoupled softmax (multi-label retrieval)",
        "",
        f"{description}. A linear head (identity-initialised, shared by plots and reviews) over frozen "
        f"all-MiniLM-L6-v2 embeddings, {retrieval_epochs} epochs of batches of 16 train plots (80 % of the plots, "
        f"split per seed; seeds {list(retrieval_seeds)}), AdamW lr 1e-3; a batch's items are every review of its "
        "plots plus 64 random reviews. Both losses at DEXML's temperature 0.05; soft top-k with α = 2, 32 bisection "
        "steps, k = 5 (DEXML's default) and k = 30 (about the number of relevant reviews). Test plots "
        "rank all reviews: P@k = share of the top k that is relevant, R@k = share of the plot's relevant reviews "
        "in the top k.",
        "",
        "| loss | " + " | ".join(title for _, title in RANKING) + " |",
        "|---|" + "---|" * len(RANKING),
    ]
    for name in ranked:
        lines.append(f"| {name} | " + " | ".join(_cell(ranked[name][key]) for key, _ in RANKING) + " |")
    for k in SOFT_KS:
        name = f"soft_top_k (k={k})"
        deltas = [_delta(ranked[name][key], ranked["decoupled_softmax"][key]) for key, _ in RANKING]
        lines.append(f"| Δ {name} − decoupled_softmax | " + " | ".join(deltas) + " |")
    lines += [
        "",
        "### Each method on one fixed input beside its reference",
        "",
        "float64, seeded inputs (6 anchors, d = 4); the references are the float64 explicit-loop implementations of "
        "the test suite (`tests/losses/test_*.py`) and, for TCM, pytorch-metric-learning.",
        "",
        "| method | negkit | reference | |diff| | reference |",
        "|---|---|---|---|---|",
    ]
    for name, got, want, source in fixed:
        if want != want:  # nan: no reference
            lines.append(f"| {name} | {got:.10f} | – | – | {source} |")
        else:
            lines.append(f"| {name} | {got:.10f} | {want:.10f} | {abs(got - want):.1e} | {source} |")
    return "\n".join(lines)


def main() -> dict[str, Any]:  # pragma: no cover - a convenience for printing the fixed-input table
    for row in fixed_input_table():
        print(row)
    return {}


if __name__ == "__main__":  # pragma: no cover
    main()
