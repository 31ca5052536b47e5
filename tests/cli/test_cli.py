import json

import pytest
from typer.testing import CliRunner

from negkit.cli import app

runner = CliRunner()


def text(result):
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


TINY = """
dataset = "digits"
strategies = ["scl"]
[train]
epochs = 2
batch_size = 128
hidden_dim = 32
feature_dim = 16
projection_dim = 8
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "report", "strategies", "datasets", "demo"):
        assert command in result.output


def test_run_writes_metrics_history_and_a_report_then_refuses_to_overwrite(tmp_path, config_file):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config_file), "--out", str(out), "--seed", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["seed"] == 2 and list(metrics["strategies"]) == ["scl"]
    assert 0 <= metrics["strategies"]["scl"]["opis"] <= 0.5 and 0 <= metrics["baselines"]["raw"]["opis"] <= 0.5
    report = (out / "report.md").read_text()
    knn = metrics["strategies"]["scl"]["knn_acc"]
    assert f"| scl | yes | {knn:.4f} |" in report  # the table is generated from metrics.json
    for plot in ("curves", "accuracy", "alignment_uniformity", "projection"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
        assert f"plots/{plot}.png" in report
    assert len((out / "history.csv").read_text().splitlines()) == 3

    again = runner.invoke(app, ["run", str(config_file), "--out", str(out)])
    assert again.exit_code == 2 and "holds a finished run" in text(again)
    (out / "report.md").unlink()
    rebuilt = runner.invoke(app, ["report", str(out)])
    assert rebuilt.exit_code == 0 and (out / "report.md").read_text() == report  # rebuilt from saved files


def test_bad_config_and_resume_misuse_exit_with_a_message(tmp_path, config_file):
    bad = tmp_path / "bad.toml"
    bad.write_text('strategies = ["nope"]\n')
    result = runner.invoke(app, ["run", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown strategy 'nope'" in text(result)
    result = runner.invoke(app, ["run", str(config_file), "--resume", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--resume continues a run with its saved config" in text(result)
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "metrics.json not found" in text(result)


def test_listing_commands():
    assert "hscl" in runner.invoke(app, ["strategies"]).output
    listing = runner.invoke(app, ["datasets"]).output
    assert "mnist5000" in listing and "recommendation: ml-100k" in listing and "chatterbot" in listing


def test_optimal_k_prints_k_star_and_writes_the_plot(tmp_path):
    plot = tmp_path / "e.png"
    result = runner.invoke(app, ["optimal-k", "--noise", "0.1", "--q", "0.7", "--plot", str(plot)])
    assert result.exit_code == 0 and "K* = 4" in text(result) and plot.stat().st_size > 1000
    result = runner.invoke(app, ["optimal-k", "--noise", "0.1"])
    assert result.exit_code == 2 and "pass --noise and --q, or --from-run DIR" in text(result)
    result = runner.invoke(app, ["optimal-k", "--from-run", str(tmp_path)])
    assert result.exit_code == 2 and "no strategy" in text(result)
