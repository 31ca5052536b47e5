"""GISTLoss, negkit's GISTEmbed for sentence-transformers: parity with sentence-transformers' ``GISTEmbedLoss`` on
the real MiniLM (value and gradient; both margin strategies; the guide the model itself, a perturbed copy, or a
copy that must re-tokenise), duplicates found from the tokens, and the errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from negkit.integrations.gist import GISTLoss, token_keys
from negkit.losses import gist
from negkit.models.text import load_sentence_encoder

torch.set_num_threads(1)

st = pytest.importorskip("sentence_transformers")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator  # noqa: E402

# Paraphrase-heavy rows: the guide finds several in-batch candidates about as similar as the positive.
ROWS = [
    ("How do I boil an egg?", "Boil the egg for nine minutes.", "Fry an egg in butter."),
    ("How long should I boil eggs?", "Eggs need about nine minutes in boiling water.", "Eggs keep for a week."),
    ("What is the capital of France?", "Paris is the capital of France.", "Lyon is a city in France."),
    ("Which city is the French capital?", "The capital of France is Paris.", "Marseille is a French port."),
    ("How many legs does a spider have?", "A spider has eight legs.", "An insect has six legs."),
    ("How many legs do spiders have?", "Spiders have eight legs.", "Ants are insects."),
]
COLUMNS = ("anchor", "positive", "negative")
T = 0.05
LAST_LAYER = "0.model.encoder.layer.5.output.dense.weight"


@pytest.fixture(scope="module")
def model():
    loaded = load_sentence_encoder(256)  # the shipped all-MiniLM-L6-v2, offline
    loaded.eval()  # no dropout: both losses must see the same embeddings
    return loaded


@pytest.fixture(scope="module")
def other_guide(model):
    guide = copy.deepcopy(model)  # a different guide: the model's weights, perturbed
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.2 * p.std() * torch.randn(p.shape, generator=generator))
    return guide


def features(model, rows, columns):
    """New per-column feature dicts for each call, built as ``SentenceTransformerTrainer`` builds them."""
    batch = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)(
        [{column: row[k] for k, column in enumerate(COLUMNS) if column in columns} for row in rows]
    )
    return [
        {key[len(column) + 1 :]: value for key, value in batch.items() if key.startswith(column + "_")}
        for column in columns
    ]


def value_and_grads(model, loss_fn, rows, columns):
    model.zero_grad(set_to_none=True)
    value = loss_fn(features(model, rows, columns), None)
    value.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return value.detach(), grads


def check_parity(model, ours, theirs, rows, columns):
    value_ours, grads_ours = value_and_grads(model, ours, rows, columns)
    value_theirs, grads_theirs = value_and_grads(model, theirs, rows, columns)
    assert grads_ours.keys() == grads_theirs.keys() and grads_ours
    value_diff = (value_ours - value_theirs).abs().item()
    grad_diff = max((grads_ours[k] - grads_theirs[k]).abs().max().item() for k in grads_ours)
    grad_scale = max(g.abs().max().item() for g in grads_theirs.values())
    print(f"loss {value_ours.item():.6f} |Δloss| {value_diff:.1e} max|Δgrad| {grad_diff:.1e} (of {grad_scale:.1e})")
    assert math.isfinite(value_ours.item()) and value_ours.item() > 0
    assert value_diff <= 1e-5
    torch.testing.assert_close(grads_ours[LAST_LAYER], grads_theirs[LAST_LAYER], rtol=1e-4, atol=1e-6)
    assert grad_diff <= 1e-4 * grad_scale + 1e-6
    return value_ours.item()


def embedded(model, guide, rows, columns):
    with torch.no_grad():
        z = [model(f)["sentence_embedding"] for f in features(model, rows, columns)]
        g = [guide(f)["sentence_embedding"] for f in features(guide, rows, columns)]
    return z, g


CASES = [("absolute", 0.0), ("absolute", 0.1), ("relative", 0.05), ("relative", 0.2)]


@pytest.mark.parametrize("strategy, margin", CASES)
@pytest.mark.parametrize("columns", [COLUMNS[:2], COLUMNS])
def test_equals_gist_embed_loss_with_the_model_as_guide(model, strategy, margin, columns):
    # T = 0.05: at GISTEmbedLoss's default 0.01 the loss left after filtering underflows float32 on these rows
    ours = GISTLoss(model, model, T, margin_strategy=strategy, margin=margin, deduplicate=False)
    theirs = st_losses.GISTEmbedLoss(model, model, T, margin_strategy=strategy, margin=margin)
    value = check_parity(model, ours, theirs, ROWS, columns)
    # the guide did remove candidates here: the loss differs from the unfiltered one
    z, g = embedded(model, model, ROWS, columns)
    unfiltered = gist(*z[:2], *g[:2], *z[2:], *g[2:], temperature=T, margin=-10.0)
    assert abs(unfiltered.item() - value) > 1e-3


@pytest.mark.parametrize("strategy, margin", [("absolute", 0.05), ("relative", 0.1)])
def test_equals_gist_embed_loss_with_another_guide(model, other_guide, strategy, margin):
    ours = GISTLoss(model, other_guide, temperature=0.05, margin_strategy=strategy, margin=margin, deduplicate=False)
    theirs = st_losses.GISTEmbedLoss(model, other_guide, temperature=0.05, margin_strategy=strategy, margin=margin)
    check_parity(model, ours, theirs, ROWS, COLUMNS)
    assert all(p.grad is None for p in other_guide.parameters())  # the guide stays untouched
    z, g_other = embedded(model, other_guide, ROWS, COLUMNS)
    _, g_self = embedded(model, model, ROWS, COLUMNS)
    kwargs = dict(temperature=0.05, margin_strategy=strategy, margin=margin)
    assert gist(*z[:2], *g_other[:2], z[2], g_other[2], **kwargs) != gist(
        *z[:2], *g_self[:2], z[2], g_self[2], **kwargs
    )


def test_equals_gist_embed_loss_when_the_guide_must_retokenise(model):
    guide = copy.deepcopy(model)
    guide.max_seq_length = 128  # shorter than the model's: both losses decode and re-tokenise for the guide
    ours = GISTLoss(model, guide, T, margin=0.1, deduplicate=False)
    theirs = st_losses.GISTEmbedLoss(model, guide, T, margin=0.1)
    assert ours.must_retokenize and theirs.must_retokenize
    check_parity(model, ours, theirs, ROWS, COLUMNS)


def test_duplicate_texts_are_removed_from_the_tokens(model):
    rows = [*ROWS, ("Is Paris the capital of France?", ROWS[2][1], "Rome is in Italy.")]  # a repeated positive
    texts = [[row[k] for row in rows] for k in range(3)]
    keys = dict(anchor_keys=texts[0], positive_keys=texts[1], negative_keys=texts[2])
    z, g = embedded(model, model, rows, COLUMNS)
    # margin 0: the copy of positive 2 scores exactly as high as the positive itself, so whether the guide's strict
    # "above the threshold" removes it is decided by rounding; the keys remove it whatever the rounding
    ours, _ = value_and_grads(model, GISTLoss(model, model, T), rows, COLUMNS)
    theirs, _ = value_and_grads(model, st_losses.GISTEmbedLoss(model, model, T), rows, COLUMNS)
    expected = gist(*z[:2], *g[:2], z[2], g[2], temperature=T, **keys)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    print(f"duplicate positive: deduplicated {ours.item():.4f}, GISTEmbedLoss {theirs.item():.4f}")
    # a guide that removes nothing (margin -10): the keys alone take the copies out
    ours, _ = value_and_grads(model, GISTLoss(model, model, T, margin=-10.0), rows, COLUMNS)
    expected = gist(*z[:2], *g[:2], z[2], g[2], temperature=T, margin=-10.0, **keys)
    with_copies = gist(*z[:2], *g[:2], z[2], g[2], temperature=T, margin=-10.0)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert ours.item() < with_copies.item() - 1e-2  # the copy was a hard false negative of rows 2 and 6


def test_token_keys_ignore_padding_and_read_packed_rows(model):
    anchor = features(model, [ROWS[0], ROWS[4], ROWS[0]], ("anchor",))[0]
    keys = token_keys(anchor)
    assert keys[0] == keys[2] != keys[1] and 0 not in keys[0]  # 0 is [PAD]
    packed = {"input_ids": torch.tensor([[101, 7, 102, 101, 8, 9, 102]]), "cu_seq_lens_q": torch.tensor([0, 3, 7])}
    assert token_keys(packed) == [(101, 7, 102), (101, 8, 9, 102)]
    assert token_keys({"input_ids": torch.tensor([[1, 2], [1, 2]])}) == [(1, 2), (1, 2)]
    with pytest.raises(ValueError, match="deduplicate=False"):
        token_keys({"pixel_values": torch.zeros(1)})


def test_errors_and_config(model):
    with pytest.raises(ValueError, match="margin_strategy must be one of"):
        GISTLoss(model, model, margin_strategy="percentage")
    with pytest.raises(ValueError, match="margin must be finite"):
        GISTLoss(model, model, margin=math.nan)
    loss = GISTLoss(model, model, margin=0.1)
    with pytest.raises(ValueError, match="2 or 3 columns"):
        loss(features(model, ROWS, ("anchor",)), None)
    config = loss.get_config_dict()
    assert config["margin"] == 0.1 and config["margin_strategy"] == "absolute" and config["deduplicate"]
    assert "2402.16829" in loss.citation
