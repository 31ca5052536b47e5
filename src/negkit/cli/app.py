"""Entry point of the ``negkit`` command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="negkit: negatives for contrastive learning.", no_args_is_help=True, add_completion=False)
console = Console()


@app.callback()
def _root() -> None:
    """negkit: negatives for contrastive learning — how many, which ones, and how much each should count."""


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML config; the built-in default when omitted.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder (results, checkpoints, report).")] = Path("runs/default"),
    strategies: Annotated[str | None, typer.Option(help="Comma-separated strategies, e.g. simclr,hscl.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Override the dataset (see `negkit datasets`).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the killed run in this folder.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a run already in --out.")] = False,
) -> None:
    """Train every strategy of CONFIG on real data; write metrics.json, history.csv and report.md."""
    from negkit.data import DatasetUnavailableError
    from negkit.report import write_report
    from negkit.train.config import ConfigError, load_config
    from negkit.train.runner import RunDirError, prepare_run_dir, run_experiment

    try:
        if resume is not None:
            if config is not None or strategies or epochs or seed is not None or dataset:
                _fail("--resume continues a run with its saved config; do not pass a config or overrides")
            paths, settings = prepare_run_dir(resume, None, resume=True)
        else:
            names = [s.strip() for s in strategies.split(",") if s.strip()] if strategies else None
            settings = load_config(config, strategies=names, seed=seed, dataset=dataset, **{"train.epochs": epochs})
            paths, settings = prepare_run_dir(out, settings, force=force)
    except (ConfigError, RunDirError, FileNotFoundError) as error:
        _fail(str(error))

    console.print(
        f"negkit run → [bold]{paths.root}[/] ({settings.dataset}, strategies: {', '.join(settings.strategies)})"
    )
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[metric]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, Any] = {}

        def on_start(name: str, total: int) -> None:
            tasks[name] = progress.add_task(name, total=total, loss="–", metric="")

        def on_epoch(record: dict[str, Any]) -> None:
            task = tasks.get(record["strategy"])
            if task is None:  # resumed mid-strategy
                on_start(record["strategy"], settings.train.epochs)
                task = tasks[record["strategy"]]
            score = next((f"{key} {record[key]:.3f}" for key in ("knn_acc", "hr@10", "recall@1") if key in record), "")
            progress.update(task, completed=record["epoch"], loss=f"{record['loss']:.3f}", metric=score)

        try:
            metrics = run_experiment(paths, settings, on_epoch_end=on_epoch, on_strategy_start=on_start)
        except DatasetUnavailableError as error:
            _fail(str(error))
    report = write_report(paths.root)
    _print_summary(metrics)
    console.print(f"report: [bold]{report}[/]  ({time.perf_counter() - started:.1f} s)")


def _print_summary(metrics: dict[str, Any]) -> None:
    if metrics.get("task") == "recommendation":
        top_k = metrics["config"]["recommend"]["top_k"]
        table = Table(title=f"{metrics['dataset']}: leave-last-out ranking")
        for column in ("strategy", f"HR@{top_k}", f"nDCG@{top_k}", "mean K", "train s"):
            table.add_column(column, justify="left" if column == "strategy" else "right")
        rows = {"popularity": metrics["baselines"]["popularity"], **metrics["strategies"]}
        for name, m in rows.items():
            k, seconds = m.get("mean_k"), m.get("train_seconds")
            table.add_row(
                name,
                f"{m[f'hr@{top_k}']:.4f}",
                f"{m[f'ndcg@{top_k}']:.4f}",
                "–" if k is None else f"{k:.1f}",
                "–" if seconds is None else f"{seconds:.1f}",
            )
        console.print(table)
        return
    if metrics.get("task") == "retrieval":
        table = Table(title=f"{metrics['dataset']}: retrieval of test queries against the corpus")
        for column in ("strategy", "R@1", "R@10", "MRR@10", "nDCG@10", "train s"):
            table.add_column(column, justify="left" if column == "strategy" else "right")
        rows = {"zero-shot": metrics["baselines"]["zero-shot"], **metrics["strategies"]}
        for name, m in rows.items():
            seconds = m.get("train_seconds")
            cells = [f"{m[key]:.4f}" for key in ("recall@1", "recall@10", "mrr@10", "ndcg@10")]
            table.add_row(name, *cells, "–" if seconds is None else f"{seconds:.1f}")
        console.print(table)
        return
    table = Table(title=f"{metrics['dataset']}: test accuracy of the learned features")
    for column in ("strategy", "kNN", "linear", "R@1", "MAP@R", "FN rate", "train s"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    raw = metrics["baselines"]["raw"]
    table.add_row(
        "raw input",
        f"{raw['knn_acc']:.4f}",
        f"{raw['linear_acc']:.4f}",
        f"{raw['recall_at_1']:.4f}",
        f"{raw['map_at_r']:.4f}",
        "–",
        "–",
    )
    for name, m in metrics["strategies"].items():
        table.add_row(
            name,
            f"{m['knn_acc']:.4f}",
            f"{m['linear_acc']:.4f}",
            f"{m['recall_at_1']:.4f}",
            f"{m['map_at_r']:.4f}",
            f"{m['false_negative_rate']:.3f}",
            f"{m['train_seconds']:.1f}",
        )
    console.print(table)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")]) -> None:
    """Rebuild DIR/report.md and its plots from the run's saved results."""
    from negkit.report import write_report

    try:
        console.print(f"report: [bold]{write_report(run_dir)}[/]")
    except FileNotFoundError as error:
        _fail(str(error))


@app.command()
def evidence(
    name: Annotated[str, typer.Argument(help="Which evidence: negatives, global, how-many, retrieval.")],
    document: Annotated[Path, typer.Option(help="The results document to update.")] = Path("docs/results.md"),
    runs: Annotated[Path, typer.Option(help="Folder for the runs behind it.")] = Path("runs/evidence"),
    quick: Annotated[bool, typer.Option("--quick", help="A few epochs and one seed: a smoke test.")] = False,
) -> None:
    """Run the experiments behind a section of docs/results.md and rewrite that section."""
    from negkit.evidence import EVIDENCE, update_section

    if name not in EVIDENCE:
        _fail(f"unknown evidence {name!r}; choose from: {', '.join(sorted(EVIDENCE))}")
    body = EVIDENCE[name](runs, document.parent / "figures", quick=quick, progress=console.print)
    console.print(f"updated [bold]{update_section(document, name, body)}[/]")


@app.command("optimal-k")
def optimal_k_command(
    noise: Annotated[float | None, typer.Option(help="False-negative rate ρ of one sampled negative.")] = None,
    q: Annotated[float | None, typer.Option(help="Share of (positive, true negative) pairs ranked correctly.")] = None,
    harm: Annotated[
        float, typer.Option(help="Cost of a contaminated sample (all_clean) or of one false negative.")
    ] = 0.0,
    model: Annotated[
        str, typer.Option(help="all_clean (default) or per_negative; see negkit.negatives.how_many.")
    ] = "all_clean",
    k_min: Annotated[int, typer.Option(help="Smallest K.")] = 1,
    k_max: Annotated[int, typer.Option(help="Largest K.")] = 4096,
    from_run: Annotated[Path | None, typer.Option(help="Take ρ and q from the last epoch of a run's ANS.")] = None,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG of E(K).")] = Path("optimal_k.png"),
) -> None:
    """Predict the best number of negatives K* from the noise rate and the ranking quality (negkit's model)."""
    from negkit.negatives import effectiveness, optimal_k
    from negkit.report.plots import effectiveness_curve

    if from_run is not None:
        from negkit.train.runner import read_logged_estimates

        try:
            noise, q = read_logged_estimates(from_run)
        except (FileNotFoundError, ValueError) as error:
            _fail(str(error))
    if noise is None or q is None:
        _fail("pass --noise and --q, or --from-run DIR")
    try:
        best = optimal_k(noise, q, k_min=k_min, k_max=k_max, harm=harm, model=model)
    except ValueError as error:
        _fail(str(error))
    console.print(
        f"K* = [bold]{best}[/] for noise rate ρ = {noise:.4g}, q = {q:.4g}, harm = {harm:g}, model {model} "
        f"(E(K*) = {effectiveness(best, noise, q, harm, model=model):.4f})"
    )
    console.print(f"plot: {effectiveness_curve(noise, q, harm, best, k_min, k_max, plot, model)}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Loss benchmark: negkit (plain, tiled) vs plain torch and pytorch-metric-learning, time and peak memory.

    Options are passed to ``python -m negkit.bench`` (--sizes, --pairs, --chunk, --repeats, --out).
    """
    from negkit.bench import main as run_bench

    console.print(f"report: [bold]{run_bench(list(ctx.args))}[/]")


@app.command()
def strategies() -> None:
    """List the registered strategies and their parameters."""
    from negkit.strategies import get_strategy, list_strategies

    table = Table(title="strategies")
    for column in ("name", "labels", "parameters", "description"):
        table.add_column(column)
    for name in list_strategies():
        spec = get_strategy(name)
        params = ", ".join(f"{k}={v}" for k, v in spec.defaults().items())
        table.add_row(name, "yes" if spec.uses_labels else "no", params, spec.description)
    console.print(table)


@app.command()
def datasets() -> None:
    """List the registered datasets of each task (the ``task`` key of a config)."""
    from negkit.data import list_datasets
    from negkit.data.interactions import INTERACTION_DATASETS
    from negkit.data.text import list_retrieval_datasets

    tasks = {
        "contrastive": list_datasets(),
        "recommendation": list(INTERACTION_DATASETS),
        "retrieval": list_retrieval_datasets(),
    }
    for task, names in tasks.items():
        console.print(f"{task}: {', '.join(names)}")


@app.command()
def demo(
    steps: int = typer.Option(150, help="Training steps per loss."),
    batch_size: int = typer.Option(128, help="Pairs per batch."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train one small encoder with every loss on synthetic clusters and compare kNN accuracy (seconds)."""
    from negkit.cli.demo import run_demo

    table = Table(title=f"negkit losses: {steps} steps, batch {batch_size}, linear encoder 32→16, 5-NN accuracy")
    for column in ("loss", "first loss", "last loss", "kNN before", "kNN after", "seconds"):
        table.add_column(column, justify="left" if column == "loss" else "right")
    with console.status("training..."):
        results = run_demo(steps=steps, batch_size=batch_size, seed=seed)
    for r in results:
        table.add_row(
            r.loss,
            f"{r.first_loss:.3f}",
            f"{r.last_loss:.3f}",
            f"{r.knn_before:.3f}",
            f"{r.knn_after:.3f}",
            f"{r.seconds:.2f}",
        )
    console.print(table)


def main() -> None:
    app()
