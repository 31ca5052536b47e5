"""The moco strategy: keys from a momentum encoder, InfoNCE against the other keys and a queue; its state and its
hooks in the contrastive task."""

import copy
import math

import pytest
import torch

from negkit.models import build_model
from negkit.strategies import create_strategy
from negkit.train.config import build_config

T = 0.1


def cosine(u, v):
    return (u * v).sum() / (u.norm() * v.norm())


def reference_direction(queries, keys, queued, temperature, in_batch, queued_ids=None, index=None):
    """−log(e^{s(q_i,k_i)/T} / (e^{s(q_i,k_i)/T} + Σ_{j≠i} e^{s(q_i,k_j)/T} + Σ_m e^{s(q_i,u_m)/T})), mean over i;
    an explicit float64 loop (MoCo eq. 1 with the batch's other keys)."""
    total = 0.0
    for i in range(len(queries)):
        positive = cosine(queries[i], keys[i]) / temperature
        terms = [positive]
        if in_batch:
            terms += [cosine(queries[i], keys[j]) / temperature for j in range(len(keys)) if j != i]
        terms += [
            cosine(queries[i], row.double()) / temperature
            for m, row in enumerate(queued)
            if queued_ids is None or int(queued_ids[m]) != int(index[i])  # exclude_own: not the sample's own key
        ]
        top = max(float(t.detach()) for t in terms)
        denominator = sum(torch.exp(t - top) for t in terms)
        total = total + (-(positive - top) + torch.log(denominator))
    return total / len(queries)


def attached(seed: int = 0, **params):
    torch.manual_seed(seed)
    model = build_model("mlp", (1, 8, 8), feature_dim=16, hidden_dim=32, projection_dim=8).double()
    strategy = create_strategy("moco", size=params.pop("size", 12), **params)
    strategy.bind(100, 8)
    strategy.attach_encoder(model, total_steps=10)
    return model, strategy


def batch(seed: int, size: int = 6):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(size, 1, 8, 8, generator=generator, dtype=torch.float64)
    noise = 0.1 * torch.randn(2, size, 1, 8, 8, generator=generator, dtype=torch.float64)
    return x + noise[0], x + noise[1], torch.arange(size) % 3, torch.arange(size) + 10 * seed


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("in_batch", [True, False])
def test_the_loss_is_infonce_of_queries_against_momentum_keys_and_the_queue(symmetric, in_batch):
    model, strategy = attached(symmetric=symmetric, in_batch=in_batch, momentum=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for step in range(3):  # the queue fills with past keys; the key encoder drifts behind the online one
        view1, view2, labels, index = batch(step)
        queued = strategy.queue.embeddings.clone()
        k1, k2 = strategy.encode_keys(view1, view2)
        z1, z2 = model(torch.cat([view1, view2])).chunk(2)
        loss = strategy(z1, z2, labels, index)
        if step == 0 and not in_batch:  # nothing to contrast yet
            assert loss.item() == 0.0
        else:
            expected = reference_direction(z1, k2, queued, T, in_batch)
            if symmetric:
                expected = 0.5 * (expected + reference_direction(z2, k1, queued, T, in_batch))
            torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
            grads = torch.autograd.grad(loss, (z1, z2), retain_graph=True, allow_unused=True)
            ref_grads = torch.autograd.grad(expected, (z1, z2), allow_unused=True)
            for grad, ref in zip(grads, ref_grads, strict=True):
                if ref is None:  # one direction only: z2 is not a query
                    assert grad is None or (grad == 0).all()
                else:
                    torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-12)
        assert not k1.requires_grad and not k2.requires_grad
        torch.testing.assert_close(strategy.queue.embeddings[-len(k2) :], k2.float())
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in strategy.key_encoder.parameters())
        optimizer.step()
    assert int(strategy.key_encoder.steps) == 3 and strategy.epoch_metrics() == {"momentum": 0.9}


@pytest.mark.parametrize("in_batch", [True, False])
def test_exclude_own_removes_the_queued_keys_of_the_anchors_own_samples(in_batch):
    model, strategy = attached(momentum=0.9, exclude_own=True, in_batch=in_batch, size=8)
    model.train()
    index_of = {
        0: torch.tensor([1, 2, 3, 4, 5, 6]),
        1: torch.tensor([7, 8, 9, 1, 2, 10]),
        2: torch.tensor([3, 7, 11, 12, 1, 13]),
    }
    for step in range(3):
        view1, view2, labels, _ = batch(step)
        index = index_of[step]
        queued, queued_ids = strategy.queue.embeddings.clone(), strategy.queue.ids.clone()
        k1, k2 = strategy.encode_keys(view1, view2)
        z1, z2 = model(torch.cat([view1, view2])).chunk(2)
        loss = strategy(z1, z2, labels, index)
        if step == 0:
            continue
        expected = 0.5 * (
            reference_direction(z1, k2, queued, T, in_batch, queued_ids, index)
            + reference_direction(z2, k1, queued, T, in_batch, queued_ids, index)
        )
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        with_own = 0.5 * (
            reference_direction(z1, k2, queued, T, in_batch) + reference_direction(z2, k1, queued, T, in_batch)
        )
        assert not torch.isclose(loss, with_own)  # MoCo's own loss keeps the sample's old key: a different value
        assert bool((queued_ids.unsqueeze(0) == index.unsqueeze(1)).any())  # there was an own key to remove


def test_keys_come_from_the_ema_of_the_online_encoder():
    model, strategy = attached(momentum=0.75)
    view1, view2, _labels, _index = batch(0)
    model.train()
    before = [p.detach().clone() for p in strategy.key_encoder.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    k1, k2 = strategy.encode_keys(view1, view2)
    for old, new, online in zip(before, strategy.key_encoder.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * online.detach())
    with torch.no_grad():
        expected = copy.deepcopy(strategy.key_encoder.encoder).train()(torch.cat([view1, view2]))
    torch.testing.assert_close(torch.cat([k1, k2]), expected)


def test_momentum_one_freezes_and_zero_copies_the_key_encoder():
    model, frozen = attached(momentum=1.0)
    _, copying = attached(momentum=0.0)
    initial = [p.detach().clone() for p in frozen.key_encoder.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    copying._online = [model]
    for strategy in (frozen, copying):
        strategy.encode_keys(*batch(1)[:2])
    assert all(torch.equal(a, b) for a, b in zip(initial, frozen.key_encoder.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), copying.key_encoder.parameters(), strict=True))


def test_state_dict_resumes_the_same_trajectory():
    model, strategy = attached(momentum=0.9, momentum_schedule="cosine")
    model.train()
    for step in range(2):
        view1, view2, labels, index = batch(step)
        strategy.encode_keys(view1, view2)
        strategy(*model(torch.cat([view1, view2])).chunk(2), labels, index)
    state = copy.deepcopy(strategy.state_dict())
    assert any(key.startswith("key_encoder.encoder.") for key in state)
    assert {"queue.queue_embeddings", "queue.pointer", "key_encoder.steps"} <= set(state)
    resumed_model = copy.deepcopy(model)
    _, resumed = attached(seed=7, momentum=0.9, momentum_schedule="cosine")
    resumed._online = [resumed_model]
    resumed.load_state_dict(state)
    view1, view2, labels, index = batch(5)
    outputs = []
    for online, strat in ((model, strategy), (resumed_model, resumed)):
        strat.encode_keys(view1, view2)
        outputs.append(strat(*online(torch.cat([view1, view2])).chunk(2), labels, index))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    assert resumed.epoch_metrics() == strategy.epoch_metrics()


def test_without_an_encoder_the_keys_are_the_detached_views():
    strategy = create_strategy("moco", size=8, symmetric=False)
    strategy.bind(50, 4)
    z1, z2 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True), torch.randn(5, 4, dtype=torch.float64)
    loss = strategy(z1, z2, torch.arange(5), torch.arange(5))
    torch.testing.assert_close(loss, reference_direction(z1, z2, [], T, True))
    with pytest.raises(RuntimeError, match="attach_encoder"):
        strategy.encode_keys(torch.rand(2, 4), torch.rand(2, 4))


def test_false_negative_rate_counts_the_batch_keys_and_the_queue():
    strategy = create_strategy("moco", size=4)
    strategy.bind(50, 3)
    labels = torch.tensor([0, 0, 1, 1])
    z = torch.randn(4, 3)
    strategy(z, z, labels, torch.arange(4))
    assert strategy.false_negative_rate(labels) == pytest.approx(1 / 3)  # one same-label key of three
    strategy(z, z, torch.tensor([0, 1, 2, 3]), torch.arange(4))
    # 3 batch keys of other labels + 4 queued keys, labels 0, 0, 1, 1: each anchor 0..1 meets 2 (or 0) of them
    rows = [2, 2, 0, 0]
    assert strategy.false_negative_rate(labels) == pytest.approx(sum(rows) / 4 / 7)


def test_parameters_are_checked():
    for bad, match in (
        ({"bn": "shuffle"}, "bn must be one of"),
        ({"momentum_schedule": "step"}, "momentum_schedule must be one of"),
        ({"momentum": 1.5}, r"momentum must lie in \[0, 1\]"),
        ({"size": 0}, "size must be >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            create_strategy("moco", **bad)


def test_the_contrastive_task_trains_moco_with_a_momentum_encoder_and_resumes(tmp_path):
    from negkit.train.runner import prepare_run_dir, run_experiment

    config = build_config(
        {
            "dataset": "digits",
            "seed": 0,
            "strategies": ["moco:size=64,momentum_schedule=cosine"],
            "train": {"epochs": 2, "batch_size": 128, "hidden_dim": 32, "feature_dim": 16, "projection_dim": 8},
        }
    )
    paths, config = prepare_run_dir(tmp_path / "run", config)
    metrics = run_experiment(paths, config)
    result = metrics["strategies"]["moco:size=64,momentum_schedule=cosine"]
    assert math.isfinite(result["knn_acc"]) and result["knn_acc"] > 0.3
    assert 0.99 <= result["momentum"] <= 1.0  # the cosine schedule ends near 1

    from negkit.tasks import get_task

    task = get_task("contrastive")(config)
    task.load()
    trainee = task.build(config.strategies[0])
    strategy = trainee.strategy
    assert strategy.key_encoder is not None and strategy._online == [trainee.model]
    assert strategy.key_encoder.total_steps == 2 * (len(task.data.train_x) // 128)
    trained = {id(p) for p in trainee.parameters}
    assert not any(id(p) in trained for p in strategy.key_encoder.parameters())
    assert {id(p) for p in trainee.model.parameters()} <= trained


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("exclude_own", [False, True])
def test_finite_at_a_small_temperature_in_low_precision(dtype, exclude_own):
    strategy = create_strategy("moco", size=16, temperature=0.01, exclude_own=exclude_own)
    strategy.bind(50, 8)
    generator = torch.Generator().manual_seed(0)
    for step in range(3):
        z1 = torch.randn(8, 8, generator=generator).to(dtype).requires_grad_()
        z2 = torch.randn(8, 8, generator=generator).to(dtype).requires_grad_()
        loss = strategy(z1, z2, torch.arange(8) % 2, torch.arange(8) + 4 * step)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
