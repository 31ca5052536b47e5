import pytest

from negkit.train.config import ConfigError, RunConfig, build_config, load_config


def test_default_config_is_valid_and_complete():
    config = load_config()
    assert config.dataset == "mnist5000" and config.train.epochs == 30
    assert config.strategies == ["simclr", "dcl", "hucl", "scl", "supcon", "hscl", "ans:in_batch=true"]


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
            {"strategies": ["simclr", "moco"]},
            r"unknown strategy 'moco' of the contrastive task; choose from: (\S+, )+.*simclr",
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
    config = load_config(strategies=["dcl"])
    assert build_config(config.model_dump(mode="json")) == config
    assert isinstance(config, RunConfig)


def test_shipped_example_configs_validate_and_the_default_one_matches_the_builtin():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files
    for path in files:
        load_config(path)
    written = load_config(root / "mnist5000.toml")
    builtin = load_config()
    assert written.train == builtin.train and written.views == builtin.views and written.eval == builtin.eval
    assert written.strategies == builtin.strategies
    from negkit.strategies import get_strategy

    for name, params in written.strategy_params.items():
        assert params == {k: v for k, v in get_strategy(name).defaults().items() if k in params}
