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
    """Train every strategy of CONFIG (a built-in dataset or your own files); write metrics.json, history.csv
    and report.md."""
    from negkit.data import DataFileError, DatasetUnavailableError
    from negkit.tasks import get_task
    from negkit.train.config import ConfigError, load_config
    from negkit.train.report import best_strategy, write_report
    from negkit.train.runner import RunDirError, prepare_run_dir, run_experiment

    try:
        if resume is not None:
            if config is not None or strategies or epochs or seed is not None or dataset:
                _fail("--resume continues a run with its saved config; do not pass a config or overrides")
            paths, settings = prepare_run_dir(resume, None, resume=True)
        else:
            names = split_strategies(strategies) if strategies else None
            settings = load_config(config, strategies=names, seed=seed, dataset=dataset, **{"train.epochs": epochs})
            paths, settings = prepare_run_dir(out, settings, force=force)
    except (ConfigError, RunDirError, FileNotFoundError) as error:
        _fail(str(error))

    source = settings.dataset or Path(settings.data.train).name
    listed = ", ".join(settings.strategies)
    console.print(f"negkit run → [bold]{paths.root}[/] ({settings.task} on {source}, strategies: {listed})")
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[metric]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    task = get_task(settings.task)
    summary = task.summary_columns(settings.model_dump(mode="json"))
    with Progress(*columns, console=console) as progress:
        bars: dict[str, Any] = {}

        def on_start(name: str, total: int) -> None:
            bars[name] = progress.add_task(name, total=total, loss="–", metric="")

        def on_epoch(record: dict[str, Any]) -> None:
            bar = bars.get(record["strategy"])
            if bar is None:  # resumed mid-strategy
                on_start(record["strategy"], settings.train.epochs)
                bar = bars[record["strategy"]]
            key = next((c.key for c in (*summary, *task.columns) if c.key in record), None)
            score = "" if key is None else f"{key} {record[key]:.3f}"
            progress.update(bar, completed=record["epoch"], loss=f"{record['loss']:.3f}", metric=score)

        try:
            metrics = run_experiment(paths, settings, on_epoch_end=on_epoch, on_strategy_start=on_start)
        except (DatasetUnavailableError, DataFileError, RunDirError, ImportError, FileNotFoundError) as error:
            _fail(str(error))
    from negkit.distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 writes the report and prints the summary
        return
    try:
        report = write_report(paths.root)
    except RunDirError as error:
        _fail(str(error))
    _print_summary(metrics, summary)
    best, value, baseline, base_value = best_strategy(metrics, summary[0])
    console.print(
        f"report: [bold]{report}[/]  ({time.perf_counter() - started:.1f} s) — best: [bold]{best}[/] "
        f"{summary[0].title} {value:.4f} ({value - base_value:+.4f} over {baseline})"
    )


def split_strategies(text: str) -> list[str]:
    """``"simclr,mined-k:k=8,lo=2,hscl"`` → ``["simclr", "mined-k:k=8,lo=2", "hscl"]``: a ``key=value`` piece
    without a ``:`` continues the variant before it."""
    entries: list[str] = []
    for piece in (part.strip() for part in text.split(",")):
        if not piece:
            continue
        if entries and "=" in piece and ":" not in piece:
            entries[-1] = f"{entries[-1]},{piece}"
        else:
            entries.append(piece)
    return entries


def _print_summary(metrics: dict[str, Any], columns: tuple[Any, ...]) -> None:
    table = Table(title=f"{metrics['dataset']} ({metrics['task']})")
    table.add_column("strategy")
    for column in columns:
        table.add_column(column.title, justify="right")
    for name, values in {**metrics["baselines"], **metrics["strategies"]}.items():
        table.add_row(name, *(column.cell(values) for column in columns))
    # a log file (no terminal, 80 columns by default) gets whole names and numbers, not "0.9…"
    (console if console.is_terminal else Console(width=200)).print(table)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")]) -> None:
    """Rebuild DIR/report.md and its plots from the run's saved results."""
    from negkit.train.checkpoint import RunDirError
    from negkit.train.report import write_report

    try:
        console.print(f"report: [bold]{write_report(run_dir)}[/]")
    except (FileNotFoundError, RunDirError) as error:
        _fail(str(error))


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


@app.command()
def strategies(
    task: Annotated[str | None, typer.Option(help="Only the strategies of this task (see `negkit tasks`).")] = None,
) -> None:
    """List the registered strategies: the tasks that train them, their parameters and defaults."""
    from negkit.strategies import get_strategy, list_strategies
    from negkit.tasks import get_task

    if task is not None:
        try:
            names = get_task(task).strategy_names()
        except ValueError as error:
            _fail(str(error))
    else:
        names = list_strategies()
    table = Table(title="strategies" + (f" of the {task} task" if task else ""))
    for column in ("name", "tasks", "labels", "parameters", "description"):
        table.add_column(column)
    for name in names:
        spec = get_strategy(name)
        params = ", ".join(f"{k}={v}" for k, v in spec.defaults().items())
        table.add_row(name, ", ".join(spec.tasks), "yes" if spec.uses_labels else "no", params, spec.description)
    console.print(table)


@app.command()
def tasks() -> None:
    """List the registered tasks (the ``task`` key of a config)."""
    from negkit.tasks import get_task, list_tasks

    for name in list_tasks():
        console.print(f"[bold]{name}[/]: {get_task(name).description}")


@app.command()
def datasets() -> None:
    """List the built-in datasets of each task (or give your own files in a config's [data] section)."""
    from negkit.tasks import get_task, list_tasks

    for name in list_tasks():
        console.print(f"{name}: {', '.join(get_task(name).datasets())}")


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


from negkit.cli.mine import mine_command  # noqa: E402

app.command("mine")(mine_command)
