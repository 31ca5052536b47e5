"""Hostile configs and damaged run folders: every config key with a value out of its range or of the wrong type,
and every kind of damaged file in a run folder, gives exit status 2 and one line naming the key or the file —
never a traceback. Keys are enumerated from the tasks' config models, so a new key is covered when it is added."""

import subprocess
import sys
import typing

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from negkit.cli import app
from negkit.io import read_json
from negkit.tasks import get_task, list_tasks
from negkit.train.config import ConfigError, build_config, config_model
from negkit.train.runner import prepare_run_dir, run_experiment

runner = CliRunner()
BUILT_IN_TASKS = ("contrastive", "recommendation", "retrieval")


def leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, field info)`` of every scalar setting of a config model, sections included."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(leaves(annotation, f"{prefix}{name}."))
        elif name not in ("task", "strategies", "strategy_params", "dataset_options", "data"):
            found.append((f"{prefix}{name}", field))
    return found


def out_of_range(field) -> list[object]:
    """Values that break a field's numeric bounds (none if it has no bound)."""
    values = []
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            values.append(bound.ge - 1)
        elif isinstance(bound, annotated_types.Gt):
            values.append(bound.gt)
        elif isinstance(bound, annotated_types.Le):
            values.append(bound.le + 1)
        elif isinstance(bound, annotated_types.Lt):
            values.append(bound.lt)
    if float in typing.get_args(field.annotation) or field.annotation is float:
        values += [float("inf"), float("nan")]
    return values


def wrong_type(field) -> object:
    """A value no field accepts: a nested table where a scalar or a list is expected."""
    return {"nested": [1, 2]}


def nest(key: str, value: object) -> dict:
    data: dict = {}
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


CASES = [
    (task, key, value)
    for task in BUILT_IN_TASKS
    for key, field in leaves(config_model(task))
    for value in [*out_of_range(field), wrong_type(field)]
]


@pytest.mark.parametrize(("task", "key", "value"), CASES, ids=[f"{t}-{k}-{v!r}"[:60] for t, k, v in CASES])
def test_every_key_out_of_range_or_of_the_wrong_type_is_named(task, key, value):
    data = {"task": task, **nest(key, value)}
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    message = str(caught.value)
    assert key in message and "\n" not in message, message


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    task=st.sampled_from(BUILT_IN_TASKS),
    junk=st.one_of(st.text(max_size=8), st.floats(allow_nan=True), st.lists(st.integers(), max_size=3), st.none()),
    data=st.data(),
)
def test_junk_values_are_accepted_only_when_valid(task, junk, data):
    """Any value for any key: either a valid config or a ConfigError naming that key — nothing else."""
    key, _ = data.draw(st.sampled_from(leaves(config_model(task))))
    try:
        config = build_config({"task": task, **nest(key, junk)})
    except ConfigError as error:
        assert key in str(error) and "\n" not in str(error)
    else:
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        assert node is not None or junk is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"strategies": ["uniform-k:k=0"]}, "uniform-k:k=0"),
        ({"strategies": ["simclr:temperature=0"]}, "simclr:temperature=0"),
        ({"strategy_params": {"hucl": {"temperature": -1.0}}}, "hucl"),
        ({"dataset_options": {"bogus": 1}}, "dataset_options.bogus"),
        ({"dataset_options": {"label_noise": 1.5}}, "dataset_options.label_noise"),
        ({"task": "recommendation", "dataset_options": {"hide_fraction": -0.1}}, "dataset_options.hide_fraction"),
        ({"task": "retrieval", "dataset_options": {"unique_queries": False}}, "dataset_options.unique_queries"),
        ({"task": "retrieval", "strategies": ["mined:k=0"]}, "mined:k=0"),
        ({"task": "nope"}, "task"),
        ({"dataset": "digits", "data": {"train": "x.csv"}}, "dataset"),
    ],
)
def test_values_that_would_fail_later_fail_when_the_config_is_read(change, named):
    with pytest.raises(ConfigError, match=named):
        build_config({"dataset": "digits", **change} if "task" not in change else change)


def negkit(*args: str) -> subprocess.CompletedProcess:
    """The real ``negkit`` process."""
    code = "from negkit.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_the_real_process_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    for body, named in (
        ('dataset = "digits"\n[train]\nepochs = 0\n', "train.epochs"),
        ('dataset = "digits"\n[dataset_options]\nlabel_noise = 1.5\n', "dataset_options.label_noise"),
        ('task = "retrieval"\n[retrieval]\nmode = "lora"\n', "retrieval.mode"),
        ("dataset = [\n", "not valid TOML"),
    ):
        bad.write_text(body)
        done = negkit("run", str(bad), "--out", str(tmp_path / "run"))
        lines = done.stderr.strip().splitlines() + done.stdout.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and named in lines[0], done
        assert "Traceback" not in done.stderr
    done = negkit("run", str(tmp_path), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "is a folder" in done.stdout + done.stderr


TINY = {
    "dataset": "digits",
    "strategies": ["scl", "simclr"],
    "train": {"epochs": 2, "batch_size": 128, "hidden_dim": 32, "feature_dim": 16, "projection_dim": 8},
}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A run killed after the first epoch of its second strategy: results of one, a checkpoint of the other."""
    root = tmp_path_factory.mktemp("killed") / "run"

    class KilledError(Exception):
        pass

    def kill(record):
        if record["strategy"] == "simclr" and record["epoch"] == 1:
            raise KilledError

    paths, config = prepare_run_dir(root, build_config(TINY))
    with pytest.raises(KilledError):
        run_experiment(paths, config, on_epoch_end=kill)
    return root


DAMAGE = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: b"\x00\xffnot a negkit file\x13" * 3,
}
FILES = ("config.json", "checkpoints/simclr.pt", "results/scl.json", "results/_baselines.json")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_a_damaged_run_folder_is_named_with_what_to_do(tmp_path, killed_run, name, damage):
    import shutil

    root = tmp_path / "run"
    shutil.copytree(killed_run, root)
    path = root / name
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    result = runner.invoke(app, ["run", "--resume", str(root)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert name.split("/")[-1] in text and ("--force" in text or "delete it" in text), text
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_wrong_result_shape_and_a_damaged_metrics_file_are_named(tmp_path, killed_run):
    import shutil

    root = tmp_path / "run"
    shutil.copytree(killed_run, root)
    (root / "results" / "scl.json").write_text('{"metrics": {}}')
    result = runner.invoke(app, ["run", "--resume", str(root)])
    assert result.exit_code == 2 and "scl.json is damaged" in " ".join(result.output.split())
    shutil.rmtree(root)
    shutil.copytree(killed_run, root)
    assert runner.invoke(app, ["run", "--resume", str(root)]).exit_code == 0
    assert read_json(root / "metrics.json")["strategies"]
    (root / "metrics.json").write_text("{")
    result = runner.invoke(app, ["report", str(root)])
    assert result.exit_code == 2 and "metrics.json is damaged" in " ".join(result.output.split())


def test_an_out_folder_that_is_a_file(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('dataset = "digits"\n')
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output


def test_every_registered_task_is_covered():
    assert set(BUILT_IN_TASKS) <= set(list_tasks())
    for task in BUILT_IN_TASKS:
        assert leaves(config_model(task)), get_task(task)
    assert typing.get_type_hints(build_config)
