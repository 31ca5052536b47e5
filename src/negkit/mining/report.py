"""``report.md`` of a mining run: what was searched, what the filters removed, how hard and how clean the mined
negatives are, and how many negatives per query the collision rate suggests. Every number is also in
``stats.json``; the figures go to ``plots/``.

* **Index**: which one and why; for an approximate index, recall@10 and recall@depth against exact search on a
  sample of queries (the saved candidates vs a chunked exact search), and the time of that exact search.
* **Filters**: candidates removed per reason (:data:`negkit.mining.filters.REASONS`), candidates left per query,
  queries short of ``k`` and what was done with them.
* **Scores**: quantiles of the positives' and the mined negatives' scores (a figure of both distributions), and
  ``q``, the share of (hardest positive, window candidate) pairs, before the score filters, in which the positive
  scores higher (the ranking quality of :func:`negkit.negatives.ranking_quality` over the mined pool).
* **False negatives**: a negative is *known* false when it is a labelled positive of its query (or the same text).
  The identity filters drop those, so the written files contain none; the report gives the rate they had among
  the raw ranks of the window (``ρ``, the collision rate a miner without the filters would have had) and among
  the raw top-k. ``ρ`` is a lower bound of the true false-negative rate: unlabelled positives are unknown.
* **How many**: :func:`negkit.negatives.optimal_k` at ``(ρ, q)`` (negkit's model; see ``negkit.negatives.how_many``).
* :func:`negkit.negatives.negative_report` on up to 256 queries (rank percentile of the mined negatives among the
  whole corpus), when the corpus vectors fit in a quarter of ``max_memory``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from negkit.io import write_json, write_text
from negkit.mining.filters import REASONS
from negkit.mining.search import default_max_memory
from negkit.negatives import negative_report, optimal_k

if TYPE_CHECKING:
    from negkit.mining.encode import NpyRows
    from negkit.mining.inputs import MiningInput
    from negkit.mining.mine import MiningSettings, _Tally
    from negkit.mining.search import Corpus

__all__ = ["write_report"]

logger = logging.getLogger(__name__)

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    q = np.quantile(values.astype(np.float64), QUANTILES)
    return {
        "mean": float(values.mean()),
        **{f"q{int(p * 100):02d}": float(v) for p, v in zip(QUANTILES, q, strict=True)},
    }


def _plots(
    out: Path, positives: np.ndarray, negatives: np.ndarray, removed: dict[str, int], ranks: np.ndarray, window: int
) -> list[str]:
    """The figures, or nothing (with a log line) when matplotlib is missing."""
    try:
        from negkit.report.plots import _pyplot, save_figure

        plt = _pyplot()
    except ImportError as error:
        logger.warning("no plots: %s", error)
        return []
    names = []
    figure, axes = plt.subplots(figsize=(7, 4))
    low = float(min(positives.min(initial=0.0), negatives.min(initial=0.0)))
    high = float(max(positives.max(initial=1.0), negatives.max(initial=1.0)))
    bins = np.linspace(low, high, 41)
    axes.hist(positives, bins=bins, alpha=0.6, density=True, label=f"positives ({positives.size})")
    axes.hist(negatives, bins=bins, alpha=0.6, density=True, label=f"mined negatives ({negatives.size})")
    axes.set(xlabel="score", ylabel="density", title="scores of positives and mined negatives")
    axes.legend(fontsize=8)
    save_figure(figure, out / "plots" / "scores.png")
    names.append("plots/scores.png")

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    reasons = [r for r in REASONS if r in removed]
    left.barh(reasons[::-1], [removed[r] for r in reasons[::-1]])
    left.set(xlabel="candidates removed", title="what the filters removed")
    right.hist(ranks, bins=np.arange(window + 1) - 0.5 if window <= 100 else 50)
    right.set(xlabel="rank in the window (0 = hardest kept)", ylabel="negatives", title="ranks of the mined negatives")
    save_figure(figure, out / "plots" / "filters.png")
    names.append("plots/filters.png")
    return names


def _negative_report(
    settings: MiningSettings, data: MiningInput, tally: _Tally, queries: NpyRows, corpus: Corpus
) -> dict[str, Any] | None:
    budget = (settings.max_memory or default_max_memory()) // 4
    if not tally.sample_queries or corpus.size * corpus.dim * 4 > budget:
        return None
    rows = np.asarray(tally.sample_queries)
    anchors = queries.take(rows)
    positives = corpus.take(np.array([data.positive_docs[q][0] for q in rows]))
    pool = np.concatenate([corpus.read(start, start + corpus.chunk_size) for start in corpus.chunks()])
    report = negative_report(
        torch.from_numpy(anchors),
        torch.from_numpy(pool),
        torch.from_numpy(np.stack(tally.sample_negatives)),
        positives=torch.from_numpy(positives),
    )
    return {"queries": len(rows), **report.as_dict()}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_report(
    out: Path,
    *,
    settings: MiningSettings,
    data: MiningInput,
    search: dict[str, Any],
    manifest: dict[str, Any],
    tally: _Tally,
    queries: NpyRows,
    corpus: Corpus,
    timings: dict[str, float],
    world: int,
) -> dict[str, Any]:
    """Write ``report.md``, ``stats.json`` and ``plots/``; returns the stats."""
    positives = np.concatenate(tally.positive_scores) if tally.positive_scores else np.zeros(0, np.float32)
    negatives = np.concatenate(tally.negative_scores) if tally.negative_scores else np.zeros(0, np.float32)
    ranks = np.concatenate(tally.negative_ranks) if tally.negative_ranks else np.zeros(0, np.int64)
    left = np.concatenate(tally.left_counts) if tally.left_counts else np.zeros(0, np.int64)
    rho = tally.collisions / tally.collision_slots if tally.collision_slots else 0.0
    rho_top = tally.collisions_top_k / tally.top_k_slots if tally.top_k_slots else 0.0
    q = tally.pairs_won / tally.pairs if tally.pairs else None
    recommended = None
    if q is not None:
        recommended = optimal_k(min(rho, 0.99), min(max(q, 0.01), 0.99), k_max=max(settings.window, settings.k))
    stats: dict[str, Any] = {
        "input": {"description": data.description, "queries": data.num_queries, "documents": data.num_documents},
        "search": search,
        "filters": {
            "removed": {r: tally.removed.get(r, 0) for r in REASONS},
            "window": [settings.range_min, settings.window_max],
            "left_per_query": _quantiles(left),
        },
        "short": {
            "queries": tally.short,
            "policy": settings.on_short,
            "written_with_fewer": tally.short_written,
            "none_left": tally.empty,
            "not_tuples": manifest["queries_not_tuples"],
            "examples": tally.short_examples,
        },
        "scores": {
            "positives": _quantiles(positives),
            "negatives": _quantiles(negatives),
            "q": q,
        },
        "false_negatives": {
            "known_rate_in_window": rho,
            "known_rate_in_top_k": rho_top,
            "in_written_files": 0.0,
        },
        "optimal_k": {"noise_rate": rho, "q": q, "k": recommended, "k_used": settings.k},
        "written": {"queries": tally.written, "training_rows": manifest["training_rows"], "format": settings.format},
        "timings_s": timings,
        "processes": world,
    }
    try:
        stats["negative_report"] = _negative_report(settings, data, tally, queries, corpus)
    except (MemoryError, ValueError) as error:
        logger.warning("negative_report skipped: %s", error)
        stats["negative_report"] = None
    figures = _plots(out, positives, negatives, stats["filters"]["removed"], ranks, settings.window)
    write_json(out / "stats.json", stats)
    write_text(out / "report.md", _markdown(settings, stats, manifest, figures))
    return stats


def _markdown(settings: MiningSettings, stats: dict[str, Any], manifest: dict[str, Any], figures: list[str]) -> str:
    search, filters, short, scores = stats["search"], stats["filters"], stats["short"], stats["scores"]
    fn, best = stats["false_negatives"], stats["optimal_k"]
    named = (
        ("margin", settings.margin),
        ("relative margin", settings.relative_margin),
        ("max score", settings.max_score),
    )
    score_filters = [f"{name} = {value:g}" for name, value in named if value is not None]
    lines = [
        "# Mined hard negatives",
        "",
        f"Input: {stats['input']['description']}.",
        f"Written: {stats['written']['queries']:,} queries, {stats['written']['training_rows']:,} training rows "
        f"({settings.format}{', triplets' if settings.triplets else ''}), k = {settings.k}, sampling "
        f"`{settings.sampling}`" + (f" (β = {settings.beta:g})" if settings.sampling == "hardness" else "") + ".",
        f"Processes: {stats['processes']}; time: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stats["timings_s"].items())
        + ".",
        "",
        "## Index",
        "",
        f"`{search['index']}`: {search['why']}.",
    ]
    params = {k: v for k, v in search.get("params", {}).items() if k != "index"}
    if params:
        lines.append("Parameters: " + ", ".join(f"{k} = {v}" for k, v in params.items()) + ".")
    recall = search.get("recall")
    if recall:
        lines += [
            "",
            "| queries sampled | recall@10 | recall@depth | depth | exact search on the sample |",
            "|---|---|---|---|---|",
            f"| {recall['queries']} | {recall['recall_at_10']:.3f} | {recall['recall_at_depth']:.3f} | "
            f"{recall['depth']} | {recall['exact_seconds']:.1f} s |",
        ]
    elif search["index"] in ("exact", "flat"):
        lines.append("Exact search: recall 1 by construction.")
    lines += [
        "",
        "## Filters",
        "",
        f"Rank window [{filters['window'][0]}, {filters['window'][1]}) over each query's documents without its "
        "known positives and same-text documents; score filters against the query's hardest positive: "
        + (", ".join(score_filters) or "none")
        + (f"; rescored with the cross-encoder {Path(settings.cross_encoder).name}" if settings.cross_encoder else "")
        + ".",
        "",
        "| reason | candidates removed |",
        "|---|---|",
        *(f"| {reason} | {count:,} |" for reason, count in filters["removed"].items()),
        "",
    ]
    left = filters["left_per_query"]
    if left:
        lines.append(
            f"Candidates left per query: median {left['q50']:.0f}, 5 % quantile {left['q05']:.0f} (k = {settings.k})."
        )
    if short["queries"]:
        done = {
            "skip": "left out of the files",
            "keep": f"written with the negatives they have ({short['written_with_fewer']:,} written"
            + (f", {short['none_left']:,} with none left out" if short["none_left"] else "")
            + ")",
            "error": "an error",
        }[short["policy"]]
        lines.append(
            f"**{short['queries']:,} queries had fewer than k = {settings.k} negatives left** ({done}; "
            f"--on-short {short['policy']}); e.g. " + "; ".join(repr(t[:60]) for t in short["examples"]) + "."
        )
    else:
        lines.append(f"Every query kept k = {settings.k} negatives.")
    if short["not_tuples"]:
        lines.append(f"{short['not_tuples']:,} of them cannot be n-tuples and are not in the training file.")
    lines += ["", "## Scores", "", "| | mean | 5 % | 25 % | median | 75 % | 95 % |", "|---|---|---|---|---|---|---|"]
    for name in ("positives", "negatives"):
        values = scores[name]
        if values:
            lines.append(
                f"| {name} | {values['mean']:.3f} | {values['q05']:.3f} | {values['q25']:.3f} | {values['q50']:.3f} | "
                f"{values['q75']:.3f} | {values['q95']:.3f} |"
            )
    lines += [
        "",
        f"q (share of (hardest positive, window candidate) pairs, before the score filters, with the positive scored "
        f"higher): {_fmt(scores['q'])}.",
        "",
        "## False negatives",
        "",
        f"Known positives and same-text documents among the raw window ranks: **{fn['known_rate_in_window']:.3f}** "
        f"(ρ), among the raw top-{settings.k}: {fn['known_rate_in_top_k']:.3f}. The identity filters removed "
        "them: the written files hold no known positive as a negative. ρ is a lower bound: unlabelled positives "
        "are not known.",
    ]
    report = stats.get("negative_report")
    if report:
        hist = report["rank_histogram"]
        lines.append(
            f"negative_report on {report['queries']} queries: rank percentile among the whole corpus, median "
            f"{report['rank_percentile_median']:.4f}; {hist['0-0.01']:.1%} of the negatives in the top 1 %; "
            f"{_fmt(report['above_positive'])} score at least as high as the query's first positive."
        )
    lines += [
        "",
        "## How many negatives",
        "",
        f"optimal_k(ρ = {best['noise_rate']:.3f}, q = {_fmt(best['q'])}) = **{best['k']}** (k used: {settings.k}; "
        "negkit's model of the best K under false negatives, `negkit.negatives.how_many`).",
        "",
        "## Files",
        "",
    ]
    for kind, files in manifest["files"].items():
        for f in files:
            lines.append(f"* `{f['path']}` ({kind}, {f['rows']:,} rows)")
    lines.append("* `manifest.json`, `stats.json`")
    if figures:
        lines += ["", *(f"![{Path(name).stem}]({name})" for name in figures)]
    return "\n".join(lines) + "\n"
