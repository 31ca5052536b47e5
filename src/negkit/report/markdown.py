"""``report.md``: a table of every strategy beside the raw-input baseline, and the plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from negkit.io import load_torch, read_json, write_text
from negkit.report import plots

PROBE = 512  # anchors in the negative probe (negkit.train.runner.PROBE_SIZE)

COLUMNS = (
    ("knn_acc", "kNN acc", "{:.4f}"),
    ("linear_acc", "linear acc", "{:.4f}"),
    ("recall_at_1", "R@1", "{:.4f}"),
    ("map_at_r", "MAP@R", "{:.4f}"),
    ("alignment", "align ↓", "{:.3f}"),
    ("uniformity", "unif ↓", "{:.3f}"),
    ("tolerance", "tolerance", "{:.3f}"),
    ("false_negative_rate", "FN rate", "{:.3f}"),
    ("train_seconds", "train s", "{:.1f}"),
)


def _cell(metrics: dict[str, Any], key: str, fmt: str) -> str:
    value = metrics.get(key)
    return "–" if value is None else fmt.format(value)


def results_table(metrics: dict[str, Any]) -> str:
    header = "| strategy | labels | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    raw = metrics["baselines"]["raw"]
    lines.append("| raw input | – | " + " | ".join(_cell(raw, k, f) for k, _, f in COLUMNS) + " |")
    for name, values in metrics["strategies"].items():
        uses = "yes" if values.get("uses_labels") else "no"
        lines.append(f"| {name} | {uses} | " + " | ".join(_cell(values, k, f) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


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


def _read_history(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_report(run_dir: str | Path) -> Path:
    """Build ``DIR/report.md`` and ``DIR/plots/*.png`` from ``metrics.json``, ``history.csv`` and embeddings."""
    root = Path(run_dir)
    if not (root / "metrics.json").exists():
        raise FileNotFoundError(f"{root / 'metrics.json'} not found: the run has not finished (resume it first)")
    metrics = read_json(root / "metrics.json")
    if metrics.get("task") == "recommendation":
        return write_recommendation_report(root, metrics)
    if metrics.get("task") == "retrieval":
        return write_retrieval_report(root, metrics)
    strategies = metrics["strategies"]
    raw = metrics["baselines"]["raw"]
    config = metrics["config"]
    best = max(strategies, key=lambda name: strategies[name]["knn_acc"])
    plot_dir = root / "plots"
    plots.training_curves(_read_history(root / "history.csv"), plot_dir / "curves.png")
    plots.accuracy_bars(strategies, raw, plot_dir / "accuracy.png")
    plots.alignment_uniformity(strategies, plot_dir / "alignment_uniformity.png")
    extra_sections = []
    reports = {name: v["negatives"] for name, v in strategies.items() if v.get("negatives")}
    if reports:
        plots.rank_histograms(reports, plot_dir / "negative_ranks.png")
        extra_sections.append(
            "## Negatives\n\nWhat each strategy's negative distribution returns at the end of training, measured on "
            f"{PROBE} training anchors against the projections of the whole training set: the false-negative rate "
            "(share of negatives with the anchor's label), the similarity of negatives and of the positive, the "
            "share of negatives at least as similar as the positive, and how hard they are (rank percentile among "
            "the anchor's eligible rows; top-1 % = share among the 1 % most similar).\n\n"
            f"{negatives_table(strategies)}\n\n![hardness of the negatives](plots/negative_ranks.png)"
        )
    sweep = k_sweep_points(strategies)
    if sweep:
        plots.k_sweep(sweep, plot_dir / "k_sweep.png")
        extra_sections.append("## Accuracy vs the number of negatives K\n\n![accuracy vs K](plots/k_sweep.png)")
    history = _read_history(root / "history.csv")
    if any(row.get("k") for row in history):
        plots.k_trajectory(history, plot_dir / "k_trajectory.png")
        extra_sections.append("## Adaptive K\n\n![K and q during training](plots/k_trajectory.png)")
    saved = {name: read_json(root / "results" / f"{name}.json") for name in strategies}
    for name, result in saved.items():
        if any(row.get("diagnostics") for row in result["history"]):
            figure = plot_dir / f"diagnostics_{name}.png"
            plots.diagnostic_curves(result["history"], name, figure)
            extra_sections.append(f"## Diagnostics of {name}\n\n![diagnostics of {name}](plots/{figure.name})")
    embedding = load_torch(root / "embeddings" / f"{best}.pt")
    plots.projection(
        embedding["features"], embedding["labels"], f"{best}: test features (PCA)", plot_dir / "projection.png"
    )

    train = config["train"]
    margin = strategies[best]["knn_acc"] - raw["knn_acc"]
    verdict = "beats" if margin > 0 else "does not beat"
    params = "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in values["params"].items())
        for name, values in strategies.items()
        if values.get("params")
    )
    text = f"""# negkit run: {metrics["dataset"]}

{metrics["dataset_description"]}.

Encoder `{train["encoder"]}` (features {train["feature_dim"]}, projection {train["projection_dim"]}), {train["epochs"]}
epochs, batch {train["batch_size"]}, AdamW lr {train["lr"]} (warm-up {train["warmup_epochs"]} epochs, cosine),
weight decay {train["weight_decay"]}, views {config["views"]}, seed {config["seed"]}. Metrics on the test split, on
backbone features: weighted kNN (k = {config["eval"]["knn_k"]}), linear probe (logistic regression), retrieval of
test queries against the train set (R@1, MAP@R), alignment and uniformity (Wang & Isola), tolerance (Wang & Liu),
and the false-negative rate of the in-batch negatives each strategy used (share with the anchor's label).

## Results

{results_table(metrics)}

Best learned embedding: **{best}**, kNN accuracy {strategies[best]["knn_acc"]:.4f}, which {verdict} the raw-input
kNN baseline ({raw["knn_acc"]:.4f}) by {margin:+.4f}. Wall time of the last session: {metrics["wall_seconds"]:.1f} s.

Strategy parameters: {params}.

## Plots

![training curves](plots/curves.png)

![accuracy per strategy](plots/accuracy.png)

![alignment vs uniformity](plots/alignment_uniformity.png)

![projection of the best embedding](plots/projection.png)
"""
    if extra_sections:
        text += "\n" + "\n\n".join(extra_sections) + "\n"
    return write_text(root / "report.md", text)


def write_recommendation_report(root: Path, metrics: dict[str, Any]) -> Path:
    """``report.md`` of a recommendation run: ranking metrics per strategy beside the popularity baseline."""
    strategies, config = metrics["strategies"], metrics["config"]
    top_k = config["recommend"]["top_k"]
    hr, ndcg = f"hr@{top_k}", f"ndcg@{top_k}"
    history = _read_history(root / "history.csv")
    plot_dir = root / "plots"
    plots.training_curves(history, plot_dir / "curves.png", metric=hr, metric_title=f"HR@{top_k}")
    popularity = metrics["baselines"]["popularity"]
    lines = [
        f"| strategy | HR@{top_k} | nDCG@{top_k} | mean K | FN rate of negatives | train s |",
        "|---|---|---|---|---|---|",
        f"| popularity | {popularity[hr]:.4f} | {popularity[ndcg]:.4f} | – | – | – |",
    ]
    for name, m in strategies.items():
        lines.append(
            f"| {name} | {m[hr]:.4f} | {m[ndcg]:.4f} | {m['mean_k']:.1f} | {m['false_negative_rate']:.4f} | "
            f"{m['train_seconds']:.1f} |"
        )
    best = max(strategies, key=lambda name: strategies[name][hr])
    sections = []
    sweep = k_sweep_points(strategies, (hr, ndcg))
    if sweep:
        plots.k_sweep(sweep, plot_dir / "k_sweep.png", titles=(f"HR@{top_k}", f"nDCG@{top_k}"))
        sections.append("## Ranking quality vs the number of negatives K\n\n![HR and nDCG vs K](plots/k_sweep.png)")
    if any(row.get("k") for row in history):
        plots.k_trajectory(history, plot_dir / "k_trajectory.png")
        sections.append("## Adaptive K\n\n![K and q during training](plots/k_trajectory.png)")
    train, task = config["train"], config["recommend"]
    text = f"""# negkit run: {metrics["dataset"]} (recommendation)

{metrics["dataset_description"]}.

Two-tower model (dimension {task["embedding_dim"]}, {"with" if task["features"] else "without"} user/item
features), InfoNCE over each interaction's item and K sampled unrated items (cosine / temperature),
{train["epochs"]} epochs, batch {train["batch_size"]}, AdamW lr {train["lr"]} (warm-up {train["warmup_epochs"]}
epochs, cosine), weight decay {train["weight_decay"]}, seed {config["seed"]}. Evaluation: each user's held-out
last item ranked against every item except the user's other known positives. FN rate = share of sampled
negatives that are known positives of the user (hidden or test items); the data's rate for one uniform
negative is {metrics["known_false_negative_rate"]:.4f} (a lower bound: unrecorded likes are not known).

## Results

{chr(10).join(lines)}

Best: **{best}**, HR@{top_k} {strategies[best][hr]:.4f} (popularity {popularity[hr]:.4f}).
Wall time of the last session: {metrics["wall_seconds"]:.1f} s.

![training curves](plots/curves.png)
"""
    if sections:
        text += "\n" + "\n\n".join(sections) + "\n"
    return write_text(root / "report.md", text)


RETRIEVAL_COLUMNS = (
    ("recall@1", "R@1"),
    ("recall@10", "R@10"),
    ("mrr@10", "MRR@10"),
    ("ndcg@10", "nDCG@10"),
)


def retrieval_table(metrics: dict[str, Any]) -> str:
    """Zero-shot and every strategy: ranking metrics, the false-negative rate of sampled negatives, time."""
    header = (
        "| strategy | " + " | ".join(title for _, title in RETRIEVAL_COLUMNS) + " | FN rate of negatives | train s |"
    )
    lines = [header, "|" + "---|" * (len(RETRIEVAL_COLUMNS) + 3)]
    zero_shot = metrics["baselines"]["zero-shot"]
    lines.append("| zero-shot | " + " | ".join(f"{zero_shot[k]:.4f}" for k, _ in RETRIEVAL_COLUMNS) + " | – | – |")
    for name, m in metrics["strategies"].items():
        cells = " | ".join(f"{m[k]:.4f}" for k, _ in RETRIEVAL_COLUMNS)
        lines.append(f"| {name} | {cells} | {m['false_negative_rate']:.4f} | {m['train_seconds']:.1f} |")
    return "\n".join(lines)


def write_retrieval_report(root: Path, metrics: dict[str, Any]) -> Path:
    """``report.md`` of a retrieval run: every (negatives × loss) strategy beside zero-shot retrieval."""
    strategies, config = metrics["strategies"], metrics["config"]
    settings, train = config["retrieval"], config["train"]
    history = [row for row in _read_history(root / "history.csv") if row.get("recall@1")]
    curves = ""
    if history:
        plots.training_curves(history, root / "plots" / "curves.png", metric="recall@1", metric_title="R@1")
        curves = "\n![training curves](plots/curves.png)\n"
    best = max(strategies, key=lambda name: strategies[name]["recall@1"])
    zero_shot = metrics["baselines"]["zero-shot"]["recall@1"]
    text = f"""# negkit run: {metrics["dataset"]} (retrieval)

{metrics["dataset_description"]}.

Dual encoder on all-MiniLM-L6-v2, mode `{settings["mode"]}` ({"shared" if settings["shared_towers"] else "separate"}
towers, max {settings["max_seq_length"]} tokens), {train["epochs"]} epochs, batch {train["batch_size"]} (no two
queries of a batch share a text or a relevant document), AdamW lr {train["lr"]} (warm-up {train["warmup_epochs"]}
epochs, cosine), seed {config["seed"]}. Test queries (split by distinct text) are ranked against the whole corpus:
R@k = share of queries with a relevant document in the top k. FN rate = share of mined / MCMC negatives that are
in fact relevant to their query (known from the pairs).

## Results

{retrieval_table(metrics)}

Best: **{best}**, R@1 {strategies[best]["recall@1"]:.4f} vs zero-shot {zero_shot:.4f}.
Wall time of the last session: {metrics["wall_seconds"]:.1f} s.
{curves}"""
    return write_text(root / "report.md", text)
