import pytest

from negkit.train.config import ConfigError, RunConfig, build_config, load_config


def test_default_config_is_the_retrieval_study():
    config = load_config()
    assert (config.task, config.dataset, config.retrieval.mode) == ("retrieval", "rotten-tomatoes", "frozen")
    assert config.strategies[0] == "in-batch" and any(s.startswith("mcmc") for s in config.strategies)
    assert any("decoupled_softmax" in s for s in config.strategies)


def test_default_with_a_dataset_of_another_task_takes_that_tasks_defaults():
    assert load_config(dataset="chatterbot").task == "retrieval"
    digits = load_config(dataset="digits")
    assert (digits.task, digits.dataset) == ("contrastive", "digits")
    assert digits.strategies == ["simclr", "dcl", "hucl", "scl", "supcon", "hscl", "ans:in_batch=true"]
    assert load_config(dataset="ml-100k").task == "recommendation"


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'dataset = "digits"\nstrategies = ["hucl"]\n[train]\nepochs = 4\nencoder = "cnn"\n'
        "[strategy_params.hucl]\nbeta = 2.0\n"
    )
    config = load_config(path, seed=3, **{"train.epochs": 7})
    assert (config.dataset, config.seed, config.train.epochs, config.train.encoder) == ("digits", 3, 7, "cnn")
    assert config.params_for("hucl") == {"beta": 2.0} and config.params_for("simclr") == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epochs": 3}, "epochs: unknown key"),
        ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
        ({"train": {"encoder": "vit"}}, "train.encoder: unknown encoder 'vit'; choose one of: mlp, cnn"),
        (
            {"strategies": ["simclr", "byol"]},
            r"unknown strategy 'byol' of the contrastive task; choose from: (\S+, )+.*simclr",
        ),
        ({"strategies": []}, "strategies: name at least one strategy"),
        (
            {"dataset": "cifar10"},
            "unknown dataset 'cifar10' of the contrastive task; choose one of: animal-mnist, digits",
        ),
        ({"strategy_params": {"hucl": {"gamma": 1}}}, "strategy_params.hucl: unknown parameter gamma; valid: beta"),
        ({"views": {"erase": 2.0}}, "views.erase: Input should be less than or equal to 1"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config(data)


def test_bad_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("dataset = ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path)


def test_config_round_trips_through_json():
    config = load_config(dataset="digits", strategies=["dcl"])
    assert build_config(config.model_dump(mode="json")) == config
    assert isinstance(config, RunConfig)


def test_shipped_example_configs_validate_and_the_default_one_matches_the_builtin():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files
    for path in files:
        load_config(path)
    written, builtin = load_config(root / "default.toml"), load_config()
    assert written.model_dump() == builtin.model_dump()
    from negkit.strategies import get_strategy

    for name, params in written.strategy_params.items():
        assert params == {k: v for k, v in get_strategy(name).defaults().items() if k in params}
