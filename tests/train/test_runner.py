import pytest
import torch

from negkit import io
from negkit.io import read_json
from negkit.train.runner import RunDirError, prepare_run_dir, run_experiment

TIMING_KEYS = {"train_seconds"}


def comparable(metrics):
    """Metrics without wall-clock times, which differ between any two runs."""
    return {
        name: {k: v for k, v in values.items() if k not in TIMING_KEYS}
        for name, values in metrics["strategies"].items()
    }


class KilledError(Exception):
    pass


def test_resume_after_a_kill_ends_with_the_same_metrics(tmp_path, tiny_config):
    paths, config = prepare_run_dir(tmp_path / "whole", tiny_config)
    whole = run_experiment(paths, config)

    paths, config = prepare_run_dir(tmp_path / "killed", tiny_config)
    epochs_done = []

    def kill_after_second_epoch_of_hscl(record):
        epochs_done.append((record["strategy"], record["epoch"]))
        if (record["strategy"], record["epoch"]) == ("hscl", 2):
            raise KilledError  # as if the process died right after the epoch's checkpoint was written

    with pytest.raises(KilledError):
        run_experiment(paths, config, on_epoch_end=kill_after_second_epoch_of_hscl)
    assert not paths.metrics.exists() and paths.result("simclr").exists() and not paths.result("hscl").exists()

    resumed_epochs = []
    paths, config = prepare_run_dir(tmp_path / "killed", None, resume=True)
    resumed = run_experiment(paths, config, on_epoch_end=lambda r: resumed_epochs.append((r["strategy"], r["epoch"])))
    assert resumed_epochs == [("hscl", 3)]  # simclr was finished, hscl continues after its 2nd epoch
    assert comparable(resumed) == comparable(whole)
    history = paths.history.read_text().splitlines()
    assert len(history) == 1 + 2 * 3


def test_same_config_and_seed_give_the_same_metrics_and_seed_matters(tmp_path, tiny_config):
    first = run_experiment(*prepare_run_dir(tmp_path / "a", tiny_config))
    second = run_experiment(*prepare_run_dir(tmp_path / "b", tiny_config))
    assert comparable(first) == comparable(second)
    other_seed = tiny_config.model_copy(update={"seed": 1})
    third = run_experiment(*prepare_run_dir(tmp_path / "c", other_seed))
    assert comparable(third) != comparable(first)


def test_metrics_json_has_the_documented_shape(tmp_path, tiny_config):
    metrics = run_experiment(*prepare_run_dir(tmp_path / "run", tiny_config))
    assert metrics == read_json(tmp_path / "run" / "metrics.json")
    assert metrics["dataset"] == "digits" and metrics["config"]["strategies"] == ["simclr", "hscl"]
    assert {"knn_acc", "linear_acc"} <= set(metrics["baselines"]["raw"])
    for values in metrics["strategies"].values():
        for key in (
            "knn_acc",
            "linear_acc",
            "recall_at_1",
            "map_at_r",
            "alignment",
            "uniformity",
            "tolerance",
            "false_negative_rate",
            "train_seconds",
        ):
            assert isinstance(values[key], float), key
        assert 0.0 <= values["knn_acc"] <= 1.0
    # In-batch negatives of the unsupervised strategy collide with the anchor's class about 1/10 of the time.
    assert 0.05 < metrics["strategies"]["simclr"]["false_negative_rate"] < 0.15
    assert metrics["strategies"]["hscl"]["false_negative_rate"] == 0.0


def test_a_finished_or_unfinished_run_is_never_overwritten_without_force(tmp_path, tiny_config):
    paths, _ = prepare_run_dir(tmp_path / "run", tiny_config)
    (paths.root / "marker").write_text("x")
    with pytest.raises(RunDirError, match="unfinished run; continue it with `negkit run --resume"):
        prepare_run_dir(tmp_path / "run", tiny_config)
    paths.metrics.write_text("{}")
    with pytest.raises(RunDirError, match="holds a finished run, or pass --force"):
        prepare_run_dir(tmp_path / "run", tiny_config)
    prepare_run_dir(tmp_path / "run", tiny_config, force=True)
    assert not (paths.root / "marker").exists() and paths.config.exists()
    with pytest.raises(RunDirError, match="nothing to resume"):
        prepare_run_dir(tmp_path / "empty", None, resume=True)


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    io.save_torch(target, {"epoch": 1})

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_torch(target, {"epoch": 2})
    monkeypatch.undo()
    assert io.load_torch(target) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_beyond_batch_strategies_resume_to_the_same_metrics(tmp_path, tiny_config):
    """Caches, queues, SogCLR's u and EMC²'s chains live in the strategy's state_dict: a killed run resumes
    exactly."""
    config = tiny_config.model_copy(
        update={"strategies": ["uniform-k:k=8", "queue:size=64", "mined-k:k=4,window=16", "sogclr", "emc2:k=8"]}
    )
    whole = run_experiment(*prepare_run_dir(tmp_path / "whole", config))
    prepare_run_dir(tmp_path / "killed", config)

    def kill(record):
        if record["epoch"] == 2 and record["strategy"] in ("queue:size=64", "emc2:k=8"):
            raise KilledError

    for _ in range(2):  # killed in queue's, then in emc2's second epoch
        with pytest.raises(KilledError):
            run_experiment(*prepare_run_dir(tmp_path / "killed", None, resume=True), on_epoch_end=kill)
    resumed = run_experiment(*prepare_run_dir(tmp_path / "killed", None, resume=True))
    assert comparable(resumed) == comparable(whole)
    assert 0.0 < resumed["strategies"]["emc2:k=8"]["acceptance_rate"] < 1.0


def test_variants_negative_reports_and_diagnostics_reach_the_report(tmp_path, tiny_config):
    from negkit.train.report import write_report

    config = tiny_config.model_copy(update={"strategies": ["uniform-k:k=2", "uniform-k:k=8", "hucl", "ans:interval=2"]})
    paths, config = prepare_run_dir(tmp_path / "run", config)
    metrics = run_experiment(paths, config)
    report = metrics["strategies"]["uniform-k:k=8"]["negatives"]
    assert set(report) >= {"false_negative_rate", "rank_histogram", "above_positive", "sampler"}
    assert "UniformSampler" in report["sampler"]
    history = read_json(paths.result("hucl"))["history"]
    assert set(history[-1]["diagnostics"]) == {"ucl", "scl", "hucl", "hscl"}
    text = write_report(paths.root).read_text()
    for section in ("## Negatives", "plots/k_sweep.png", "plots/negative_ranks.png", "plots/diagnostics_hucl.png"):
        assert section in text
    assert (paths.root / "plots" / "k_sweep.png").exists()
    assert "plots/k_trajectory.png" in text
    header = paths.history.read_text().splitlines()[0].split(",")
    assert {"k", "q", "noise_rate"} <= set(header)
    from negkit.train.runner import read_logged_estimates

    noise, q = read_logged_estimates(paths.root)
    assert 0.05 < noise < 0.15 and 0.0 < q < 1.0  # digits: 10 balanced classes, so rho = sum p_c^2 ~ 0.1


def test_random_init_baseline_is_the_encoder_every_strategy_starts_from(tmp_path, tiny_config):
    from negkit.tasks import get_task
    from negkit.tasks.contrastive import embed
    from negkit.train.report import write_report

    metrics = run_experiment(*prepare_run_dir(tmp_path / "run", tiny_config))
    task = get_task("contrastive")(tiny_config)
    task.load()
    torch.manual_seed(tiny_config.seed)  # what negkit.train.loop.fit does before building each strategy
    start = task.build("simclr").model
    expected = task.evaluate(embed(start, task.data.train_x), embed(start, task.data.test_x))
    assert metrics["baselines"]["random-init"] == pytest.approx(expected)
    report = write_report(tmp_path / "run").read_text()
    learning = report.split("## Learning")[1].split("##")[0]
    for name, values in metrics["strategies"].items():
        gain = values["knn_acc"] - metrics["baselines"]["random-init"]["knn_acc"]
        assert f"| {name} |" in learning and f"{gain:+.4f} |" in learning


def test_train_threads_apply_during_the_run_and_are_restored(tmp_path, tiny_config):
    seen = []
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    config = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"threads": wanted})})
    run_experiment(
        *prepare_run_dir(tmp_path / "run", config), on_epoch_end=lambda r: seen.append(torch.get_num_threads())
    )
    assert seen and set(seen) == {wanted} and torch.get_num_threads() == before
