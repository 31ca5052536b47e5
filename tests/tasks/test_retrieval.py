"""The retrieval task: strategies parse and validate, the losses equal float64 loops with relevance masking,
frozen towers start at zero-shot, and a run trains, reports and resumes."""

import math

import pytest
import torch

from negkit.data.text import RetrievalData
from negkit.io import read_json
from negkit.models.text import FrozenTowers
from negkit.negatives import optimal_k
from negkit.strategies import create_strategy, parse_strategy_entry
from negkit.tasks.retrieval import evaluate, relevance_matrix
from negkit.train.config import ConfigError, build_config
from negkit.train.report import write_report
from negkit.train.runner import prepare_run_dir, run_experiment


def strategy(entry, **params):
    """A retrieval strategy built the way a config builds it."""
    name, inline = parse_strategy_entry(entry, task="retrieval")
    return create_strategy(name, **{**inline, **params})


def retrieval_loss(built, queries, candidates, positive_column, relevant):
    return built.loss_value(queries, candidates, positive_column, relevant)


def cosine_logits(q, c, temperature):
    return [[float(qi @ cj / (qi.norm() * cj.norm())) / temperature for cj in c] for qi in q]


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(4, 6, dtype=torch.float64, generator=generator)
    candidates = torch.randn(7, 6, dtype=torch.float64, generator=generator)
    positive_column = torch.tensor([0, 1, 2, 3])
    relevant = torch.zeros(4, 7, dtype=torch.bool)
    relevant[torch.arange(4), positive_column] = True
    relevant[0, 5] = relevant[2, 6] = True  # two queries have a second relevant candidate
    return queries, candidates, positive_column, relevant


def test_info_nce_and_symmetric_equal_loops_that_skip_relevant_candidates(batch):
    queries, candidates, positive_column, relevant = batch
    logits = cosine_logits(queries, candidates, 0.1)
    forward = []
    for i, row in enumerate(logits):
        negatives = [v for j, v in enumerate(row) if not relevant[i, j]]
        positive = row[int(positive_column[i])]
        forward.append(-positive + math.log(math.exp(positive) + sum(math.exp(v) for v in negatives)))
    backward = []
    for j in range(4):  # batch document j (candidate positive_column[j]) against the batch queries
        column = int(positive_column[j])
        positive = logits[j][column]
        negatives = [logits[i][column] for i in range(4) if not relevant[i, column]]
        backward.append(-positive + math.log(math.exp(positive) + sum(math.exp(v) for v in negatives)))
    info_nce = retrieval_loss(strategy("in-batch", temperature=0.1), queries, candidates, positive_column, relevant)
    symmetric = retrieval_loss(
        strategy("in-batch", loss="symmetric", temperature=0.1), queries, candidates, positive_column, relevant
    )
    assert math.isclose(float(info_nce), sum(forward) / 4, rel_tol=1e-12)
    assert math.isclose(float(symmetric), 0.5 * (sum(forward) + sum(backward)) / 4, rel_tol=1e-12)


def test_multi_positive_losses_count_every_relevant_candidate(batch):
    queries, candidates, positive_column, relevant = batch
    logits = cosine_logits(queries, candidates, 0.1)
    decoupled, pairs = [], []
    for i, row in enumerate(logits):
        positives = [v for j, v in enumerate(row) if relevant[i, j]]
        negatives = [v for j, v in enumerate(row) if not relevant[i, j]]
        mass = sum(math.exp(v) for v in negatives)
        decoupled.append(sum(-p + math.log(math.exp(p) + mass) for p in positives) / len(positives))
        pairs.append(
            sum(math.log1p(math.exp(n - p)) for p in positives for n in negatives) / (len(positives) * len(negatives))
        )
    for loss, expected in (("decoupled_softmax", decoupled), ("mw_auc", pairs)):
        value = retrieval_loss(
            strategy("in-batch", loss=loss, temperature=0.1), queries, candidates, positive_column, relevant
        )
        assert math.isclose(float(value), sum(expected) / 4, rel_tol=1e-12), loss


def test_soft_top_k_strategy_treats_every_relevant_candidate_as_a_positive(batch):
    from negkit.losses import soft_top_k

    queries, candidates, positive_column, relevant = batch
    value = retrieval_loss(
        strategy("in-batch", loss="soft_top_k", temperature=0.1), queries, candidates, positive_column, relevant
    )
    expected = soft_top_k(queries.double(), candidates.double(), relevant, temperature=0.1)
    assert math.isclose(float(value), float(expected), rel_tol=1e-6)
    only_drawn = torch.zeros_like(relevant)
    only_drawn[torch.arange(len(positive_column)), positive_column] = True
    assert not torch.equal(only_drawn, relevant)  # the fixture has second relevant candidates: they count too
    assert not math.isclose(float(value), float(soft_top_k(queries, candidates, only_drawn, temperature=0.1)))


def test_gradients_of_every_loss_pass_gradcheck(batch):
    queries, candidates, positive_column, relevant = batch
    for loss in ("info_nce", "symmetric", "decoupled_softmax", "mw_auc"):
        built = strategy("in-batch", loss=loss, temperature=0.5)
        assert torch.autograd.gradcheck(
            lambda q, c, s=built: retrieval_loss(s, q, c, positive_column, relevant),
            (queries.clone().requires_grad_(), candidates.clone().requires_grad_()),
        ), loss


def test_frozen_towers_start_at_the_zero_shot_embeddings():
    generator = torch.Generator().manual_seed(3)
    data = RetrievalData(
        "toy", [f"q{i}" for i in range(5)], [f"d{i}" for i in range(4)], [(i % 4,) for i in range(5)], ["g"] * 5
    )
    base_q, base_d = torch.randn(5, 8, generator=generator), torch.randn(4, 8, generator=generator)
    towers = FrozenTowers(base_q, base_d, shared=False)
    torch.testing.assert_close(towers.queries(torch.arange(5)), base_q)
    torch.testing.assert_close(towers.documents(torch.arange(4)), base_d)
    assert towers.query_head is not towers.document_head
    assert relevance_matrix(data).sum() == 5 and relevance_matrix(data)[4, 0]
    metrics = evaluate(towers, data, torch.arange(5))
    assert 0 <= metrics["recall@1"] <= metrics["recall@10"] == 1.0  # 4 documents: all in the top 10


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("random", "unknown strategy 'random' of the retrieval task"),
        ("mined:loss=triplet", "unknown loss 'triplet'"),
        ("mined:loss=sup_con", "cannot train the retrieval task"),
        ("mined:temperature=0", "temperature must be > 0"),
        ("mined:k=8,lo=0,hi=4", "rank window"),
        ("mcmc:gamma=1", "unknown parameter gamma"),
    ],
)
def test_bad_strategies_are_named(entry, message):
    with pytest.raises(ValueError, match=message):
        strategy(entry)
    with pytest.raises(ConfigError, match=message):
        build_config({"task": "retrieval", "dataset": "chatterbot", "strategies": [entry]})


def test_retrieval_configs_validate_dataset_and_defaults():
    config = build_config({"task": "retrieval", "dataset": "rotten-tomatoes"})
    assert config.strategies == ["in-batch", "mined"] and config.retrieval.mode == "frozen"
    with pytest.raises(ConfigError, match="dataset: unknown dataset 'mnist5000'"):
        build_config({"task": "retrieval", "dataset": "mnist5000"})
    with pytest.raises(ConfigError, match=r"retrieval\.mode"):
        build_config({"task": "retrieval", "dataset": "chatterbot", "retrieval": {"mode": "lora"}})


def chatterbot_config(epochs=3):
    return build_config(
        {
            "task": "retrieval",
            "dataset": "chatterbot",
            "strategies": ["mined:k=2", "mcmc:k=2", "in-batch:loss=decoupled_softmax"],
            "train": {"epochs": epochs, "batch_size": 64, "lr": 1e-3, "warmup_epochs": 1},
        }
    )


def test_a_frozen_run_reports_and_resumes_to_the_same_metrics(tmp_path):
    paths, config = prepare_run_dir(tmp_path / "whole", chatterbot_config())
    whole = run_experiment(paths, config)
    assert whole["task"] == "retrieval" and set(whole["baselines"]["zero-shot"]) >= {"recall@1", "mrr@10", "ndcg@10"}
    for name, values in whole["strategies"].items():
        assert 0 <= values["false_negative_rate"] <= 1 and values["recall@1"] <= values["recall@10"], name
    history = read_json(paths.result("mcmc:k=2"))["history"]
    assert all(0 < row["acceptance_rate"] <= 1 for row in history)
    report = write_report(paths.root).read_text()
    assert "zero-shot" in report and "mined:k=2" in report
    # the report leads with the results table and the cost plot, then sizes the mined column from the FN rate
    assert report.index("## Results") < report.index("plots/costs.png") < report.index("## How many negatives")
    assert (paths.root / "plots" / "costs.png").stat().st_size > 0
    q = whole["baselines"]["zero-shot"]["q"]
    assert 0.5 < q < 1  # MiniLM ranks a query's plot above most random plots from the start
    rho = whole["strategies"]["mined:k=2"]["false_negative_rate"]
    assert f"| mined:k=2 | 2 | {rho:.4f} | {optimal_k(min(rho, 0.999), q, k_max=256)} |" in report
    assert "| in-batch:loss=decoupled_softmax |" not in report.split("## How many negatives")[1]

    class KilledError(Exception):
        pass

    def kill(record):
        if record["strategy"] == "mcmc:k=2" and record["epoch"] == 2:
            raise KilledError

    paths, config = prepare_run_dir(tmp_path / "killed", chatterbot_config())
    with pytest.raises(KilledError):
        run_experiment(paths, config, on_epoch_end=kill)
    paths, config = prepare_run_dir(tmp_path / "killed", None, resume=True)
    resumed = run_experiment(paths, config)
    for name, values in whole["strategies"].items():
        for key in ("recall@1", "mrr@10", "ndcg@10", "final_loss", "false_negative_rate"):
            assert resumed["strategies"][name][key] == values[key], (name, key)
