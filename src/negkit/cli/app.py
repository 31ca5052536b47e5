"""Entry point of the ``negkit`` command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="negkit: negatives for contrastive learning.", no_args_is_help=True, add_completion=False)
console = Console()


@app.callback()
def _root() -> None:
    """negkit: negatives for contrastive learning — how many, which ones, and how much each should count."""


@app.command()
def demo(
    steps: int = typer.Option(150, help="Training steps per loss."),
    batch_size: int = typer.Option(128, help="Pairs per batch."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train one small encoder with every loss on clustered data and compare kNN accuracy."""
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
