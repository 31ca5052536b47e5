"""In-batch negatives in the recommendation task (in-batch-softmax, in-batch-logq): the step's loss is the logQ loss
of the batch with the right mask and the streamed frequencies, and a run trains and checkpoints the estimator."""

import copy
import math

import torch

from negkit.losses.functional.logq import logq_in_batch_nce
from negkit.strategies import create_strategy, get_strategy, list_strategies
from negkit.tasks import get_task
from negkit.train.config import build_config
from negkit.train.runner import prepare_run_dir, run_experiment


def config(strategies=("in-batch-softmax", "in-batch-logq"), epochs=2):
    return build_config(
        {
            "task": "recommendation",
            "dataset": "ml-100k",
            "dataset_options": {"hide_fraction": 0.8},
            "strategies": list(strategies),
            "train": {"epochs": epochs, "warmup_epochs": 1, "batch_size": 256, "lr": 0.01},
            "recommend": {"embedding_dim": 16},
        }
    )


def run_task(cfg):
    task = get_task("recommendation")(cfg)
    task.load()
    return task


def test_registered_for_the_recommendation_task_only():
    names = list_strategies(task="recommendation")
    assert {"in-batch-softmax", "in-batch-logq"} <= set(names)
    assert "in-batch-logq" not in list_strategies(task="contrastive")
    assert get_strategy("in-batch-logq").defaults()["alpha"] == 0.01


def test_the_step_is_the_logq_loss_of_the_batch_with_its_mask():
    task = get_task("recommendation")(config(epochs=1))
    task.load()
    torch.manual_seed(0)
    trainee = task.build("in-batch-logq")
    batch = next(iter(task.batches(trainee, torch.Generator().manual_seed(0))))
    before = copy.deepcopy(trainee.strategy.frequency)
    result = task.step(trainee, batch, torch.Generator())
    users, items = task.data.train_users[batch], task.data.train_items[batch]
    # the mask, written out: other rows whose item differs from the anchor's and that the user did not rate
    observed = task.data.train_matrix()
    mask = torch.tensor(
        [
            [items[j] != items[i] and not observed[users[i], items[j]] for j in range(len(items))]
            for i in range(len(items))
        ]
    )
    before.update(items)
    expected = logq_in_batch_nce(
        trainee.model.users(users),
        trainee.model.items(items),
        before.log_probability(items),
        temperature=trainee.strategy.temperature,
        negative_mask=mask,
    )
    torch.testing.assert_close(result.loss, expected, rtol=0, atol=0)
    assert result.logs["k_used"] == float(mask.sum()) / len(items)
    assert 0.0 <= result.logs["false_negative_rate"] <= 1.0 and 0.0 <= result.logs["batch_q"] <= 1.0
    assert int(trainee.strategy.frequency.step) == 1


def test_a_run_trains_both_and_checkpoints_the_estimator(tmp_path):
    paths, cfg = prepare_run_dir(tmp_path / "run", config())
    metrics = run_experiment(paths, cfg)
    for name in ("in-batch-softmax", "in-batch-logq"):
        result = metrics["strategies"][name]
        assert math.isfinite(result["hr@10"]) and 0.0 <= result["ndcg@10"] <= result["hr@10"] <= 1.0
        assert result["mean_k"] > 100  # about batch − 1 candidates per user
    state = torch.load(tmp_path / "run" / "checkpoints" / "in-batch-logq.pt", weights_only=False)["strategy"]
    assert int(state["frequency.step"]) == 2 * (len(run_task(cfg).data.train_users) // 256)  # one update a step
    assert bool((state["frequency.last_seen"] >= 0).any())


def test_state_dict_round_trip_of_the_strategy():
    strategy = create_strategy("in-batch-logq", num_buckets=1024)
    strategy.frequency.update(torch.tensor([3, 5, 5, 9]))
    strategy.frequency.update(torch.tensor([5, 7]))
    restored = create_strategy("in-batch-logq", num_buckets=1024)
    restored.load_state_dict(strategy.state_dict())
    ids = torch.tensor([3, 5, 7, 9, 11])
    torch.testing.assert_close(restored.frequency.log_probability(ids), strategy.frequency.log_probability(ids))
