"""Issue 16's strategies (negkit.strategies.seed_methods): meow, adameow, amcl, metrix, tcm."""

import pytest
import torch
from torch import nn

from negkit.losses import amcl, create_loss, metrix, tcm
from negkit.losses.functional.mixing import metrix_plan, mix_rows
from negkit.strategies import create_strategy, get_strategy
from negkit.train.config import build_config
from negkit.train.runner import prepare_run_dir, run_experiment

NAMES = ("meow", "adameow", "amcl", "metrix", "tcm")


def bound(name, num_samples=64, dim=8, **params):
    strategy = create_strategy(name, **params)
    strategy.bind(num_samples, dim)
    strategy.generator = torch.Generator().manual_seed(0)
    return strategy


def clustered(n=64, d=16, classes=4, seed=0):
    """Inputs of ``classes`` separated groups (row n in class n % classes)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=generator) * 3
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, d, generator=generator), labels


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    x, labels = clustered()
    index = torch.arange(len(x))
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    strategy = bound(name, num_samples=len(x), dim=8, **({"num_clusters": (2, 4)} if name == "meow" else {}))
    noise = torch.Generator().manual_seed(1)
    fixed = (x + 0.3 * torch.randn(x.shape, generator=noise), x + 0.3 * torch.randn(x.shape, generator=noise))
    optimiser = torch.optim.Adam(list(model.parameters()) + list(strategy.parameters()), lr=1e-2)

    def fixed_loss():
        with torch.no_grad():
            strategy.generator = torch.Generator().manual_seed(5)
            return float(strategy(model(fixed[0]), model(fixed[1]), labels, index))

    if strategy.needs_refresh:
        with torch.no_grad():
            strategy.refresh(model(x), labels)
    before = fixed_loss()
    for step in range(40):
        if strategy.needs_refresh and step % 10 == 0:
            with torch.no_grad():
                strategy.refresh(model(x), labels)
        v1 = x + 0.3 * torch.randn(x.shape, generator=noise)
        v2 = x + 0.3 * torch.randn(x.shape, generator=noise)
        loss = strategy(model(v1), model(v2), labels, index)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = fixed_loss()
    assert after < before, (name, before, after)


def test_meow_refreshes_on_its_schedule_and_checkpoints_its_clusters():
    strategy = bound("meow", num_clusters=(2, 5), refresh_every=2, backend="torch")
    projections = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    refreshes = []
    for _ in range(5):
        strategy.refresh(projections, torch.zeros(64, dtype=torch.long))
        refreshes.append(int(strategy.clusters.refreshes))
    assert refreshes == [1, 1, 2, 2, 3]
    state = strategy.state_dict()
    assert {"epoch", "clusters.assignments", "clusters.centroids_1", "clusters.last_refresh"} <= set(state)
    restored = bound("meow", num_clusters=(2, 5), refresh_every=2, backend="torch")
    restored.load_state_dict(state)
    z1, z2, index = torch.randn(6, 8), torch.randn(6, 8), torch.tensor([1, 9, 17, 30, 41, 63])
    labels = torch.zeros(6, dtype=torch.long)
    torch.testing.assert_close(restored(z1, z2, labels, index), strategy(z1, z2, labels, index))
    # the weights are the dataset-level clusterings', looked up by index: both directions of losses.meow
    want = 0.5 * (strategy.clusters.loss(z1, z2, index) + strategy.clusters.loss(z2, z1, index))
    torch.testing.assert_close(strategy(z1, z2, labels, index), want)
    restored.refresh(projections, labels)  # epoch 5 continues the schedule: no refresh due at odd epochs
    assert int(restored.clusters.refreshes) == 3
    with pytest.raises(RuntimeError, match="no clustering"):
        bound("meow")(z1, z2, labels, index)


def test_adameow_is_the_registry_loss_in_both_directions():
    strategy = bound("adameow")
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    want = 0.5 * (strategy.loss(z1, z2) + strategy.loss(z2, z1))
    torch.testing.assert_close(strategy(z1, z2, torch.zeros(6), torch.arange(6)), want)
    assert all(not isinstance(p, nn.parameter.UninitializedParameter) for p in strategy.parameters())
    assert get_strategy("adameow").defaults()["temperature"] == 1.0
    again = bound("adameow")  # parameters come from the seed: the same strategy twice
    for (name, p), q in zip(strategy.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_amcl_heads_and_fixed_temperature_baseline():
    adaptive, fixed = bound("amcl"), bound("amcl", fixed_temperature=0.2)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    h1, h2 = adaptive.project(z1), adaptive.project(z2)
    assert h1.shape == (5, 3, 8)
    torch.testing.assert_close(adaptive(z1, z2, None, None), adaptive.loss(h1, h2))
    constant = torch.full((3, 10, 10), 0.2)
    torch.testing.assert_close(
        fixed(z1, z2, None, None), amcl(fixed.project(z1), fixed.project(z2), constant, beta=0.0)
    )
    # the same seed gives the same heads, so the two differ only by their temperatures
    torch.testing.assert_close(fixed.project(z1), h1)
    stats = adaptive.diagnostics(z1, z2, None)
    assert 1e-5 < stats["tau_mean"] < 2.0 and stats["tau_std"] >= 0
    with pytest.raises(ValueError, match="fixed_temperature"):
        create_strategy("amcl", fixed_temperature=0.0)


def test_metrix_without_mixing_is_simclr_and_with_mixing_is_metrix_both_ways():
    z1, z2 = torch.randn(8, 8), torch.randn(8, 8)
    labels, index = torch.zeros(8), torch.arange(8)
    plain = bound("metrix", weight=0.0)(z1, z2, labels, index)
    torch.testing.assert_close(plain, create_strategy("simclr")(z1, z2, labels, index))
    mixed = bound("metrix")(z1, z2, labels, index)
    generator = torch.Generator().manual_seed(0)
    want = 0.5 * (metrix(z1, z2, generator=generator) + metrix(z2, z1, generator=generator))
    torch.testing.assert_close(mixed, want)
    assert mixed.item() > plain.item()
    with pytest.raises(ValueError, match="space"):
        create_strategy("metrix", space="pixels")


@pytest.mark.parametrize("space", ["input", "feature"])
def test_metrix_in_input_and_feature_space_encodes_the_mixes(space):
    class Model(nn.Module):  # ContrastiveModel's interface: features (backbone) and head
        def __init__(self):
            super().__init__()
            self.backbone, self.head = nn.Linear(6, 5), nn.Sequential(nn.Tanh(), nn.Linear(5, 4))

        def features(self, x):
            return self.backbone(x)

        def forward(self, x):
            return self.head(self.backbone(x))

    torch.manual_seed(0)
    model, x1, x2 = Model(), torch.randn(7, 6), torch.randn(7, 6)
    strategy = bound("metrix", space=space, top_k=2)
    with pytest.raises(RuntimeError, match="attach_encoder"):
        strategy(model(x1), model(x2), None, None)
    strategy.attach_encoder(model)
    strategy.encode_keys(x1, x2)
    z1, z2 = model(x1), model(x2)
    got = strategy(z1, z2, None, None)
    got.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    generator = torch.Generator().manual_seed(0)

    def encoded(anchor, positive, views):
        plan = metrix_plan(anchor, positive, top_k=2, generator=generator)
        if space == "input":
            mixes = model(mix_rows(views, plan.hardest, plan.lam).flatten(0, 1))
        else:
            mixes = model.head(mix_rows(model.features(views), plan.hardest, plan.lam).flatten(0, 1))
        return metrix(anchor, positive, top_k=2, lam=plan.lam, mixed=mixes.unflatten(0, (7, 2)))

    with torch.no_grad():
        want = 0.5 * (encoded(z1, z2, x2) + encoded(z2, z1, x1))
    torch.testing.assert_close(got.detach(), want)
    with pytest.raises(RuntimeError, match="encode_keys"):  # the views are used for one batch only
        strategy(z1, z2, None, None)


def test_tcm_adds_the_regulariser_to_its_base():
    z1, z2, labels, index = torch.randn(8, 8), torch.randn(8, 8), torch.arange(8) % 3, torch.arange(8)
    strategy = bound("tcm")
    both, twice = torch.cat([z1, z2]), torch.cat([labels, labels])
    want = create_strategy("supcon")(z1, z2, labels, index) + tcm(both, twice)
    torch.testing.assert_close(strategy(z1, z2, labels, index), want)
    other = bound("tcm", base="simclr", temperature=0.2, neg_margin=0.1)
    want = create_strategy("simclr", temperature=0.2)(z1, z2, labels, index) + tcm(both, twice, neg_margin=0.1)
    torch.testing.assert_close(other(z1, z2, labels, index), want)
    assert other.false_negative_rate(labels) == create_strategy("simclr").false_negative_rate(labels)
    assert strategy.masks_same_label_negatives and not other.masks_same_label_negatives
    # a stateful base keeps its state and hooks inside tcm
    queued = bound("tcm", base="uniform-k")
    assert queued.needs_refresh and any(key.startswith("base.") for key in queued.state_dict())
    assert queued.base.generator is queued.generator
    assert "tcm" in bound("tcm").diagnostics(z1, z2, labels)
    for bad in ("tcm", "in-batch", "nope"):
        with pytest.raises(ValueError, match=r"base|strategy"):
            create_strategy("tcm", base=bad)
    assert create_loss("tcm").pos_margin == get_strategy("tcm").defaults()["pos_margin"]


def test_every_seed_strategy_trains_in_the_runner_and_resumes_exactly(tmp_path):
    """One epoch of each strategy on digits, then a run killed after epoch 1 and resumed: the same metrics (the
    clusterings, MLPs and heads are checkpointed with the strategy)."""
    strategies = [
        "meow:backend=torch",
        "adameow",
        "amcl:hidden=16",
        "metrix:space=feature,top_k=1",
        "metrix:space=input,top_k=1",
        "tcm",
    ]
    config = build_config(
        {
            "dataset": "digits",
            "strategies": strategies,
            "strategy_params": {"meow": {"num_clusters": "4,10"}},
            "train": {"epochs": 2, "batch_size": 128, "hidden_dim": 32, "feature_dim": 16, "projection_dim": 8},
            "views": {"shift": 1},
            "eval": {"knn_k": 5},
        }
    )

    class KilledError(Exception):
        pass

    whole = run_experiment(*prepare_run_dir(tmp_path / "whole", config))
    for entry in strategies:
        metrics = whole["strategies"][entry]
        assert torch.isfinite(torch.tensor(metrics["final_loss"])), entry
        assert metrics["knn_acc"] > 0.3, entry  # 10 classes: chance is 0.1
    assert whole["strategies"]["meow:backend=torch"]["meow_refreshes"] == 2.0

    def kill(record):
        if record["epoch"] == 1:
            raise KilledError

    prepare_run_dir(tmp_path / "killed", config)
    for _ in strategies:
        with pytest.raises(KilledError):
            run_experiment(*prepare_run_dir(tmp_path / "killed", None, resume=True), on_epoch_end=kill)
    resumed = run_experiment(*prepare_run_dir(tmp_path / "killed", None, resume=True))

    def comparable(metrics):
        return {
            name: {k: v for k, v in values.items() if k != "train_seconds"}
            for name, values in metrics["strategies"].items()
        }

    assert comparable(resumed) == comparable(whole)
