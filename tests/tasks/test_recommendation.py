"""The recommendation task: its loss equals InfoNCE with per-anchor negatives, its ranking metrics equal a loop,
and a run trains, reports and resumes like the image runner."""

import math

import pytest
import torch

from negkit.data.interactions import load_movielens100k
from negkit.io import read_json
from negkit.losses import info_nce
from negkit.losses.functional.ranking import catalogue_logits, info_nce_from_logits
from negkit.models.two_tower import TwoTower
from negkit.tasks.recommendation import leave_last_out_ranking, popularity_ranking
from negkit.train.config import ConfigError, build_config
from negkit.train.report import write_report
from negkit.train.runner import prepare_run_dir, run_experiment


@pytest.fixture(scope="module")
def data():
    return load_movielens100k(hide_fraction=0.8)  # few training interactions: fast runs


def rec_config(**train):
    return build_config(
        {
            "task": "recommendation",
            "dataset": "ml-100k",
            "dataset_options": {"hide_fraction": 0.8},
            "strategies": ["uniform-k:k=3", "ans:interval=2,k_max=16"],
            "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 512, "lr": 0.01, **train},
            "recommend": {"embedding_dim": 16},
        }
    )


def test_catalogue_logits_give_info_nce_with_per_anchor_negatives(data):
    torch.manual_seed(0)
    model = TwoTower(data, 8).double()
    users, items = data.train_users[:32], data.train_items[:32]
    negatives = torch.randint(data.num_items, (32, 5))
    positive, negative = catalogue_logits(model.users(users), model.items(), items, negatives, 0.2)
    ours = info_nce_from_logits(positive, negative)
    reference = info_nce(
        model.users(users), model.items(items), model.items(negatives), temperature=0.2, in_batch_negatives=False
    )
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    u, it = model.users(users).detach(), model.items().detach()
    loop = 0.0
    for row in range(32):
        logits = [cos(u[row], it[items[row]]) / 0.2] + [cos(u[row], it[j]) / 0.2 for j in negatives[row]]
        loop += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    assert math.isclose(float(ours.detach()), loop / 32, rel_tol=1e-10)


def test_leave_last_out_ranking_equals_a_loop(data):
    generator = torch.Generator().manual_seed(1)
    users, items = (
        torch.randn(data.num_users, 6, generator=generator),
        torch.randn(data.num_items, 6, generator=generator),
    )
    metrics = leave_last_out_ranking(users, items, data, k=10)
    hits, gains = 0, 0.0
    unit_items = items.double() / items.double().norm(dim=1, keepdim=True)
    for user in range(data.num_users):
        scores = unit_items @ (users[user].double() / users[user].double().norm())
        test = int(data.test_items[user])
        candidates = [j for j in range(data.num_items) if j == test or not data.known[user, j]]
        rank = sum(1 for j in candidates if j != test and scores[j] >= scores[test])
        if rank < 10:
            hits += 1
            gains += 1 / math.log2(rank + 2)
    assert math.isclose(metrics["hr@10"], hits / data.num_users, rel_tol=1e-12)
    assert math.isclose(metrics["ndcg@10"], gains / data.num_users, rel_tol=1e-12)


def test_a_model_that_scores_the_test_item_highest_is_perfect_and_popularity_is_between(data):
    users = torch.eye(data.num_items)[data.test_items]  # user u points exactly at its test item
    perfect = leave_last_out_ranking(users, torch.eye(data.num_items), data)
    assert perfect == {"hr@10": 1.0, "ndcg@10": 1.0}
    baseline = popularity_ranking(data)
    assert 0.0 < baseline["ndcg@10"] < baseline["hr@10"] < 1.0
    broken = users.clone()
    broken[0, 0] = float("nan")
    with pytest.raises(ValueError, match="user_vectors contains"):
        leave_last_out_ranking(broken, torch.eye(data.num_items), data)
    with pytest.raises(ValueError, match="item vectors"):
        leave_last_out_ranking(users, torch.eye(data.num_items)[:10], data)


def test_a_run_learns_logs_k_and_writes_a_report(tmp_path):
    paths, config = prepare_run_dir(tmp_path / "run", rec_config(epochs=4))
    metrics = run_experiment(paths, config)
    assert metrics["task"] == "recommendation"
    fixed, adaptive = metrics["strategies"]["uniform-k:k=3"], metrics["strategies"]["ans:interval=2,k_max=16"]
    assert fixed["mean_k"] == 3 and 1 <= adaptive["mean_k"] <= 16
    chance = 10 / 1682  # a random ranking's expected HR@10 (a little more: known items are removed)
    assert fixed["hr@10"] > 4 * chance and adaptive["hr@10"] > 4 * chance
    history = read_json(paths.result("ans:interval=2,k_max=16"))["history"]
    assert all({"k", "q", "noise_rate", "hr@10"} <= set(row) for row in history)
    assert history[0]["noise_rate"] == pytest.approx(metrics["known_false_negative_rate"])
    report = write_report(paths.root).read_text()
    assert "popularity" in report and "Adaptive K" in report and (paths.root / "plots" / "k_trajectory.png").exists()


def test_resume_after_a_kill_ends_with_the_same_metrics(tmp_path):
    paths, config = prepare_run_dir(tmp_path / "whole", rec_config())
    whole = run_experiment(paths, config)

    class KilledError(Exception):
        pass

    def kill(record):
        if record["strategy"].startswith("ans") and record["epoch"] == 2:
            raise KilledError

    paths, config = prepare_run_dir(tmp_path / "killed", rec_config())
    with pytest.raises(KilledError):
        run_experiment(paths, config, on_epoch_end=kill)
    paths, config = prepare_run_dir(tmp_path / "killed", None, resume=True)
    resumed = run_experiment(paths, config)
    for name, values in whole["strategies"].items():
        for key in ("hr@10", "ndcg@10", "mean_k", "final_loss", "false_negative_rate"):
            assert resumed["strategies"][name][key] == values[key], (name, key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategies": ["simclr"]}, "unknown strategy 'simclr' of the recommendation task"),
        (
            {"dataset": "mnist5000"},
            "dataset: unknown dataset 'mnist5000' of the recommendation task; choose one of: ml-100k",
        ),
        ({"strategies": ["uniform-k:k=4,in_batch=true"]}, "in_batch=True is not supported"),
        ({"strategies": ["ans:class_conditional=true"]}, "class_conditional=True is not supported"),
        ({"recommend": {"top_k": 0}}, "recommend.top_k"),
    ],
)
def test_invalid_recommendation_configs_are_named(change, message):
    data = {"task": "recommendation", "dataset": "ml-100k", "strategies": ["uniform-k"], **change}
    with pytest.raises(ConfigError, match=message):
        build_config(data)
