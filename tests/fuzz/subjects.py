"""What the fuzz suite calls: one :class:`Subject` per public loss, sampler, pool, metric and estimator.

A subject draws a *valid* call (:class:`Case`): its named inputs and what each input is (batch-aligned, float
embeddings or scores, integer ids or labels with their range, 0/1 masks, scalar hyper-parameters and their bad
values). The mutations in ``test_fuzz.py`` work only from that description, so a new subject gets every kind of
hostile input for free. ``EXPECTED`` lists what must have a subject: the loss registry, the ``__all__`` of
``negkit.losses``, ``negkit.negatives`` and ``negkit.metrics`` (checked by ``test_every_public_entry_point_is_fuzzed``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

import negkit.losses
import negkit.metrics
import negkit.negatives
from negkit._optional import available
from negkit.distributed import global_info_nce
from negkit.integrations.sentence_transformers import NegkitLoss
from negkit.losses import functional as F
from negkit.losses import get_loss, list_losses

BAD_TEMPERATURES = [0.0, -0.5, math.nan, math.inf, "0.1"]


@dataclass
class Case:
    """One valid call of a subject and the description of its inputs that the mutations use.

    Attributes:
        args: named inputs (the names the subject's errors use).
        call: ``call(args) -> output``.
        batch: inputs whose first dimension is the batch (sliced together for empty / one-row batches).
        floats: floating inputs (embeddings, scores): NaN/inf, dtype and magnitude mutations.
        ints: integer inputs (ids, labels, indices) and their valid range ``(low, high)`` (``None``: unbounded).
        masks: 0/1 inputs (relevance, masks).
        scalars: scalar hyper-parameters and bad values for each.
        scale_invariant: ``floats × 1e30`` (or ``× 1e-30``) must give the unscaled result.
        kind: ``"loss"`` (a differentiable tensor), ``"sampler"``, ``"pool"``, ``"metric"`` or ``"estimator"``.
        degenerate: what an empty batch gives: ``"zero"`` (loss 0, zero connected gradient), ``"empty"`` (an empty
            result) or ``"error"`` (a clear error: metrics need data).
        check: ``check(output, args)`` asserts the subject's contract on a valid output (samplers: eligibility).
        aliases: other words an error may use for an input (``{"column 0": ("anchor",)}``).
        atol: tolerance of the float32 ↔ float64 comparison.
    """

    args: dict[str, Any]
    call: Callable[[dict[str, Any]], Any]
    batch: tuple[str, ...] = ()
    floats: tuple[str, ...] = ()
    ints: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    masks: tuple[str, ...] = ()
    scalars: dict[str, list[Any]] = field(default_factory=dict)
    scale_invariant: bool = True
    kind: str = "loss"
    degenerate: str = "zero"
    check: Callable[[Any, dict[str, Any]], None] | None = None
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    atol: float = 2e-4


@dataclass(frozen=True)
class Subject:
    name: str
    build: Callable[[Callable[..., Any]], Case]  # build(draw) -> Case


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _randint(seed: int, high: int, *shape: int) -> Tensor:
    return torch.randint(0, high, shape, generator=_gen(seed))


def _draw_common(draw: Callable[..., Any], min_batch: int = 2, max_batch: int = 6) -> tuple[int, int, int]:
    return draw(st.integers(min_batch, max_batch)), draw(st.integers(1, 5)), draw(st.integers(0, 2**16))


# ---------------------------------------------------------------------------------------------------------- losses


def _info_nce_case(name: str) -> Callable[[Callable[..., Any]], Case]:
    spec = get_loss(name)

    def build(draw: Callable[..., Any]) -> Case:
        batch, dim, seed = _draw_common(draw)
        negatives = draw(st.sampled_from(["none", "shared", "per_anchor"]))
        similarity = draw(st.sampled_from(["cosine", "cosine", "dot"]))
        args: dict[str, Any] = {"anchor": _randn(seed, batch, dim), "positive": _randn(seed + 1, batch, dim)}
        batch_args, floats = ["anchor", "positive"], ["anchor", "positive"]
        if negatives == "shared":
            args["negatives"] = _randn(seed + 2, 3, dim)
            floats.append("negatives")
        elif negatives == "per_anchor":
            args["negatives"] = _randn(seed + 2, batch, 3, dim)
            floats.append("negatives")
            batch_args.append("negatives")
        ints: dict[str, tuple[int | None, int | None]] = {}
        if draw(st.booleans()):
            args["labels"] = _randint(seed + 3, 3, batch)
            batch_args.append("labels")
            ints["labels"] = (None, None)
        args["temperature"] = spec.defaults["temperature"]

        def call(a: dict[str, Any]) -> Any:
            rest = {k: v for k, v in a.items() if k not in ("anchor", "positive", "negatives")}
            return spec.bind(similarity=similarity)(a["anchor"], a["positive"], a.get("negatives"), **rest)

        return Case(
            args,
            call,
            tuple(batch_args),
            tuple(floats),
            ints,
            scalars={"temperature": BAD_TEMPERATURES},
            scale_invariant=similarity == "cosine",
        )

    return build


def _sup_con_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 2, 8)
    args = {"embeddings": _randn(seed, batch, dim), "labels": _randint(seed + 1, 3, batch), "temperature": 0.1}
    return Case(
        args,
        lambda a: F.sup_con(a["embeddings"], a["labels"], temperature=a["temperature"]),
        ("embeddings", "labels"),
        ("embeddings",),
        {"labels": (None, None)},
        scalars={"temperature": BAD_TEMPERATURES},
    )


def _two_view_case(name: str, with_labels: bool | None) -> Callable[[Callable[..., Any]], Case]:
    spec = get_loss(name)

    def build(draw: Callable[..., Any]) -> Case:
        batch, dim, seed = _draw_common(draw)
        args: dict[str, Any] = {"z1": _randn(seed, batch, dim), "z2": _randn(seed + 1, batch, dim)}
        batch_args, ints = ["z1", "z2"], {}
        labelled = draw(st.booleans()) if with_labels is None else with_labels
        if labelled:
            args["labels"] = _randint(seed + 2, 3, batch)
            batch_args.append("labels")
            ints["labels"] = (None, None)
        args["temperature"] = spec.defaults["temperature"]
        scalars: dict[str, list[Any]] = {"temperature": BAD_TEMPERATURES}
        if "beta" in spec.defaults:
            args["beta"] = spec.defaults["beta"]
            scalars["beta"] = [-1.0, math.nan, math.inf]
        if spec.defaults.get("sigma") is not None:
            args["sigma"] = spec.defaults["sigma"]
            scalars["sigma"] = [0.0, -1.0, math.nan]

        def call(a: dict[str, Any]) -> Any:
            rest = {k: v for k, v in a.items() if k not in ("z1", "z2", "labels")}
            if "labels" in a:
                return spec.bind(**rest)(a["z1"], a["z2"], a["labels"])
            return spec.bind(**rest)(a["z1"], a["z2"])

        return Case(args, call, tuple(batch_args), ("z1", "z2"), ints, scalars=scalars)

    return build


def _relevance(seed: int, rows: int, cols: int) -> Tensor:
    relevance = (torch.rand(rows, cols, generator=_gen(seed)) < 0.3).float()
    relevance[:, 0] = 1.0
    relevance[:, -1] = 0.0
    return relevance


def _decoupled_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    items = draw(st.integers(2, 6))
    similarity = draw(st.sampled_from(["cosine", "cosine", "dot"]))
    args = {
        "query": _randn(seed, batch, dim),
        "items": _randn(seed + 1, items, dim),
        "relevance": _relevance(seed + 2, batch, items),
        "temperature": 0.05,
    }
    return Case(
        args,
        lambda a: F.decoupled_softmax(
            a["query"], a["items"], a["relevance"], temperature=a["temperature"], similarity=similarity
        ),
        ("query", "relevance"),
        ("query", "items"),
        masks=("relevance",),
        scalars={"temperature": BAD_TEMPERATURES},
        scale_invariant=similarity == "cosine",
    )


def _soft_top_k_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    items = draw(st.integers(2, 7))
    similarity = draw(st.sampled_from(["cosine", "cosine", "dot"]))
    args = {
        "query": _randn(seed, batch, dim),
        "items": _randn(seed + 1, items, dim),
        "relevance": _relevance(seed + 2, batch, items),
        "temperature": 0.05,
        "k": draw(st.sampled_from([1, 0.5 * items, items - 0.5])),
        "alpha": 2.0,
    }
    return Case(
        args,
        lambda a: F.soft_top_k(
            a["query"],
            a["items"],
            a["relevance"],
            k=a["k"],
            alpha=a["alpha"],
            temperature=a["temperature"],
            similarity=similarity,
        ),
        ("query", "relevance"),
        ("query", "items"),
        masks=("relevance",),
        scalars={"temperature": BAD_TEMPERATURES, "k": [0, items, math.nan, "1"], "alpha": [0.0, -1.0, math.inf]},
        scale_invariant=similarity == "cosine",
    )


def _adameow_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    similarity = draw(st.sampled_from(["cosine", "cosine", "dot"]))
    args = {"anchor": _randn(seed, batch, dim), "positive": _randn(seed + 1, batch, dim), "temperature": 1.0}

    def call(a: dict[str, Any]) -> Any:
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the same weight MLP for every mutation of this case
            loss = get_loss("adameow").create(temperature=a["temperature"], similarity=similarity)
            return loss(a["anchor"], a["positive"])

    return Case(
        args,
        call,
        ("anchor", "positive"),
        ("anchor", "positive"),
        scalars={"temperature": BAD_TEMPERATURES},
        scale_invariant=similarity == "cosine",
    )


def _amcl_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    heads = draw(st.integers(1, 3))
    shape = (batch, heads, dim) if draw(st.booleans()) else (batch, dim)
    args = {"z1": _randn(seed, *shape), "z2": _randn(seed + 1, *shape), "beta": 0.1}

    def call(a: dict[str, Any]) -> Any:
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the same temperature networks for every mutation of this case
            loss = get_loss("amcl").create(heads=heads, beta=a["beta"], hidden=8)
            return loss(a["z1"], a["z2"])

    return Case(
        args,
        call,
        ("z1", "z2"),
        ("z1", "z2"),
        scalars={"beta": [-1.0, math.nan, math.inf, "0.1"]},
    )


def _metrix_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    similarity = draw(st.sampled_from(["cosine", "cosine", "dot"]))
    args = {
        "anchor": _randn(seed, batch, dim),
        "positive": _randn(seed + 1, batch, dim),
        "temperature": 0.1,
        "top_k": draw(st.integers(1, 3)),
        "alpha": 2.0,
    }

    def call(a: dict[str, Any]) -> Any:
        rest = {k: v for k, v in a.items() if k not in ("anchor", "positive")}
        return F.metrix(a["anchor"], a["positive"], generator=_gen(seed + 2), similarity=similarity, **rest)

    return Case(
        args,
        call,
        ("anchor", "positive"),
        ("anchor", "positive"),
        scalars={"temperature": BAD_TEMPERATURES, "top_k": [0, -1, 1.5], "alpha": [0.0, math.nan]},
        scale_invariant=similarity == "cosine",
    )


def _meow_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    clusters = draw(st.integers(1, 3))
    args: dict[str, Any] = {"anchor": _randn(seed, batch, dim), "positive": _randn(seed + 1, batch, dim)}
    args["temperature"] = 0.9
    if draw(st.booleans()):  # the module: k-means of the batch, prototypes and concentrations
        counts = (clusters, clusters + 2)

        def call(a: dict[str, Any]) -> Any:
            loss = get_loss("meow").create(temperature=a["temperature"], num_clusters=counts)
            return loss(a["anchor"], a["positive"])

        views = ("anchor", "positive")
        return Case(args, call, views, views, scalars={"temperature": BAD_TEMPERATURES})
    args["assignments"] = _randint(seed + 2, clusters, batch, 2)
    centroids = [_randn(seed + 3, clusters, dim), _randn(seed + 4, clusters, dim)]
    phi = [torch.full((clusters,), 0.5), torch.full((clusters,), 0.3)]

    def call_function(a: dict[str, Any]) -> Any:
        return F.meow(
            a["anchor"],
            a["positive"],
            a["assignments"],
            temperature=a["temperature"],
            centroids=centroids,
            concentrations=phi,
        )

    return Case(
        args,
        call_function,
        ("anchor", "positive", "assignments"),
        ("anchor", "positive"),
        {"assignments": (0, clusters)},
        scalars={"temperature": BAD_TEMPERATURES},
    )


def _tcm_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 2, 8)
    args = {
        "embeddings": _randn(seed, batch, dim),
        "labels": _randint(seed + 1, 3, batch),
        "pos_margin": 0.9,
        "neg_margin": draw(st.sampled_from([0.5, 0.0])),
    }
    return Case(
        args,
        lambda a: F.tcm(a["embeddings"], a["labels"], pos_margin=a["pos_margin"], neg_margin=a["neg_margin"]),
        ("embeddings", "labels"),
        ("embeddings",),
        {"labels": (None, None)},
        scalars={"pos_margin": [1.5, math.nan, "0.9"], "neg_margin": [-2.0, math.inf]},
    )


def _mw_auc_case(draw: Callable[..., Any]) -> Case:
    batch, _, seed = _draw_common(draw)
    items = draw(st.integers(2, 6))
    args = {"scores": _randn(seed, batch, items) * 3, "relevance": _relevance(seed + 1, batch, items)}
    return Case(
        args,
        lambda a: F.mw_auc(a["scores"], a["relevance"]),
        ("scores", "relevance"),
        ("scores",),
        masks=("relevance",),
        scale_invariant=False,
    )


def _global_contrastive_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    size = batch + draw(st.integers(0, 4))
    index = torch.randperm(size, generator=_gen(seed + 2))[:batch]
    args = {"z1": _randn(seed, batch, dim), "z2": _randn(seed + 1, batch, dim), "index": index, "num_samples": size}

    def call(a: dict[str, Any]) -> Any:
        loss = get_loss("global_contrastive").create(num_samples=a["num_samples"])
        return loss(a["z1"], a["z2"], a["index"])

    return Case(
        args,
        call,
        ("z1", "z2", "index"),
        ("z1", "z2"),
        {"index": (0, size)},
        scalars={"num_samples": [0, -3, 2.5]},
    )


def _emc2_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    k = draw(st.integers(1, 4))
    similarity = draw(st.sampled_from(["cosine", "cosine", "dot"]))
    args: dict[str, Any] = {
        "anchor": _randn(seed, batch, dim),
        "positive": _randn(seed + 1, batch, dim),
        "negatives": _randn(seed + 2, batch, k, dim),
        "temperature": 0.1,
    }
    batch_args, masks = ["anchor", "positive", "negatives"], []
    if draw(st.booleans()):
        mask = torch.rand(batch, k, generator=_gen(seed + 3)) < 0.7
        mask[:, 0] = True
        args["negative_mask"] = mask
        batch_args.append("negative_mask")
        masks.append("negative_mask")

    def call(a: dict[str, Any]) -> Any:
        return F.emc2(
            a["anchor"],
            a["positive"],
            a["negatives"],
            negative_mask=a.get("negative_mask"),
            temperature=a["temperature"],
            similarity=similarity,
        )

    return Case(
        args,
        call,
        tuple(batch_args),
        ("anchor", "positive", "negatives"),
        masks=tuple(masks),
        scalars={"temperature": BAD_TEMPERATURES},
        scale_invariant=similarity == "cosine",
    )


def _indexed_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    size = batch + draw(st.integers(0, 3))
    args: dict[str, Any] = {
        "anchor": _randn(seed, batch, dim),
        "candidates": _randn(seed + 1, size, dim),
        "positive_index": torch.randperm(size, generator=_gen(seed + 2))[:batch],
        "temperature": 0.1,
    }
    return Case(
        args,
        lambda a: F.indexed_info_nce(a["anchor"], a["candidates"], a["positive_index"], temperature=a["temperature"]),
        ("anchor", "positive_index"),
        ("anchor", "candidates"),
        {"positive_index": (0, size)},
        scalars={"temperature": BAD_TEMPERATURES},
    )


def _global_info_nce_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    args: dict[str, Any] = {"anchor": _randn(seed, batch, dim), "positive": _randn(seed + 1, batch, dim)}
    batch_args, floats = ["anchor", "positive"], ["anchor", "positive"]
    if draw(st.booleans()):  # hard-negative columns [b, m, d], each anchor's own or shared over the batch
        args["negatives"] = _randn(seed + 2, batch, draw(st.integers(1, 3)), dim)
        batch_args.append("negatives")
        floats.append("negatives")
    ints: dict[str, tuple[int | None, int | None]] = {}
    if draw(st.booleans()):
        args["labels"] = _randint(seed + 3, 3, batch)
        batch_args.append("labels")
        ints["labels"] = (None, None)
    options = {"symmetric": draw(st.booleans()), "share_negatives": draw(st.booleans())}
    args |= {"temperature": 0.1, "chunk_size": draw(st.sampled_from([None, 1, 2, 64]))}

    def call(a: dict[str, Any]) -> Any:
        rest = {k: v for k, v in a.items() if k not in ("anchor", "positive", "negatives")}
        return global_info_nce(a["anchor"], a["positive"], a.get("negatives"), **options, **rest)

    return Case(
        args,
        call,
        tuple(batch_args),
        tuple(floats),
        ints,
        scalars={"temperature": BAD_TEMPERATURES, "chunk_size": [0, -2, 1.5, "4"]},
    )


def _siglip_case(distributed: bool) -> Callable[[Callable[..., Any]], Case]:
    function = F.siglip_distributed if distributed else F.siglip  # one process: the same loss

    def build(draw: Callable[..., Any]) -> Case:
        batch, dim, seed = _draw_common(draw)
        args: dict[str, Any] = {"anchor": _randn(seed, batch, dim), "positive": _randn(seed + 1, batch, dim)}
        args |= {"logit_scale": draw(st.sampled_from([10.0, 100.0])), "logit_bias": -10.0}
        batch_args, ints = ["anchor", "positive"], {}
        if draw(st.booleans()):
            args["labels"] = _randint(seed + 2, 3, batch)
            batch_args.append("labels")
            ints["labels"] = (None, None)
        chunk_size = draw(st.sampled_from([None, 2]))

        def call(a: dict[str, Any]) -> Any:
            rest = {k: v for k, v in a.items() if k not in ("anchor", "positive")}
            return function(a["anchor"], a["positive"], chunk_size=chunk_size, **rest)

        return Case(
            args,
            call,
            tuple(batch_args),
            ("anchor", "positive"),
            ints,
            scalars={"logit_scale": BAD_TEMPERATURES, "logit_bias": [math.nan, math.inf, "0"]},
        )

    return build


def _gist_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    names = ("anchor", "positive", "guide_anchor", "guide_positive")
    args: dict[str, Any] = {name: _randn(seed + i, batch, dim) for i, name in enumerate(names)}
    args |= {"temperature": 0.05, "margin": draw(st.sampled_from([0.0, 0.1]))}
    strategy = draw(st.sampled_from(["absolute", "relative"]))

    def call(a: dict[str, Any]) -> Any:
        rest = {k: v for k, v in a.items() if k not in names}
        return F.gist(*(a[name] for name in names), margin_strategy=strategy, **rest)

    return Case(
        args,
        call,
        names,
        names,
        scalars={"temperature": BAD_TEMPERATURES, "margin": [math.nan, math.inf, "0"]},
    )


class _Identity(nn.Module):
    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover - never called
        return {"sentence_embedding": features["x"]}


def _negkit_loss_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    loss = draw(st.sampled_from(["info_nce", "symmetric_info_nce", "decoupled_softmax", "mw_auc"]))
    hard = draw(st.integers(0, 2))
    args = {f"column {c}": _randn(seed + c, batch, dim) for c in range(2 + hard)}
    columns = tuple(args)

    def call(a: dict[str, Any]) -> Any:
        return NegkitLoss(_Identity(), loss, temperature=a["temperature"]).compute_loss_from_embeddings(
            [a[c] for c in columns]
        )

    return Case(
        args | {"temperature": 0.05},
        call,
        columns,
        columns,
        scalars={"temperature": BAD_TEMPERATURES},
        aliases={
            "column 0": ("anchor", "queries", "query", "scores"),
            "column 1": ("positive", "documents", "items", "scores"),
            **{f"column {c}": ("negatives", "items", "scores") for c in range(2, 2 + hard)},
        },
    )


LOSS_BUILDERS: dict[str, Callable[[Callable[..., Any]], Case]] = {
    "info_nce": _info_nce_case("info_nce"),
    "symmetric_info_nce": _info_nce_case("symmetric_info_nce"),
    "sup_con": _sup_con_case,
    "dcl": _two_view_case("dcl", False),
    "dclw": _two_view_case("dclw", False),
    "hard_nce": _two_view_case("hard_nce", None),
    "hucl": _two_view_case("hucl", False),
    "hscl": _two_view_case("hscl", True),
    "decoupled_softmax": _decoupled_case,
    "mw_auc": _mw_auc_case,
    "global_contrastive": _global_contrastive_case,
    "emc2": _emc2_case,
    "tcm": _tcm_case,
    "soft_top_k": _soft_top_k_case,
    "adameow": _adameow_case,
    "amcl": _amcl_case,
    "metrix": _metrix_case,
    "meow": _meow_case,
    "siglip": _siglip_case(False),
    "gist": _gist_case,
}


def _logq_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw)
    args: dict[str, Any] = {"queries": _randn(seed, batch, dim), "items": _randn(seed + 1, batch, dim)}
    batch_args, floats = ["queries", "items"], ["queries", "items"]
    corrected = draw(st.booleans())
    if corrected:  # log probabilities of the items, as StreamingFrequency.log_probability gives them
        args["log_q"] = torch.rand(batch, generator=_gen(seed + 2)).clamp(min=1e-3).log()
        batch_args.append("log_q")
        floats.append("log_q")
    if draw(st.booleans()):
        args["negative_mask"] = torch.rand(batch, batch, generator=_gen(seed + 3)) < 0.7
    args["temperature"] = 0.1
    correct_positive = draw(st.booleans())

    def call(a: dict[str, Any]) -> Any:
        rest = {k: v for k, v in a.items() if k not in ("queries", "items", "log_q")}
        mask = rest.get("negative_mask")
        if isinstance(mask, Tensor) and mask.dim() == 2 and isinstance(a["queries"], Tensor):
            rows = a["queries"].shape[0]  # the [B, B] mask follows the (possibly sliced) batch
            rest["negative_mask"] = rest["negative_mask"][:rows, :rows]
        return F.logq_in_batch_nce(a["queries"], a["items"], a.get("log_q"), correct_positive=correct_positive, **rest)

    return Case(
        args,
        call,
        tuple(batch_args),
        tuple(floats),
        masks=("negative_mask",) if "negative_mask" in args else (),
        scalars={"temperature": BAD_TEMPERATURES},
        scale_invariant=not corrected,  # embeddings are normalised; log_q is not a scale-free input
    )


EXTRA_LOSSES: dict[str, Callable[[Callable[..., Any]], Case]] = {
    "indexed_info_nce": _indexed_case,
    "global_info_nce": _global_info_nce_case,
    "logq_in_batch_nce": _logq_case,
    "NegkitLoss": _negkit_loss_case,
    "siglip_distributed": _siglip_case(True),
}


# -------------------------------------------------------------------------------------------------------- samplers


def _sampler_case(make: Callable[[], Any], *, labelled: bool = False) -> Callable[[Callable[..., Any]], Case]:
    def build(draw: Callable[..., Any]) -> Case:
        batch, dim, seed = _draw_common(draw, 1, 5)
        size = draw(st.integers(12, 24))
        args: dict[str, Any] = {"anchors": _randn(seed, batch, dim), "pool": _randn(seed + 1, size, dim)}
        batch_args, ints = ["anchors"], {}
        if labelled or draw(st.booleans()):
            args["anchor_labels"] = _randint(seed + 2, 3, batch)
            args["pool_labels"] = torch.arange(size) % 3
            batch_args.append("anchor_labels")
            ints |= {"anchor_labels": (None, None), "pool_labels": (None, None)}
        if draw(st.booleans()):
            args["anchor_ids"] = torch.randperm(size, generator=_gen(seed + 3))[:batch]
            args["pool_ids"] = torch.arange(size)
            batch_args.append("anchor_ids")
            ints |= {"anchor_ids": (None, None), "pool_ids": (None, None)}
        sampler = make()

        def call(a: dict[str, Any]) -> Any:
            rest = {k: v for k, v in a.items() if k not in ("anchors", "pool")}
            return make().sample(a["anchors"], a["pool"], generator=_gen(seed + 4), **rest)

        def check(out: Any, a: dict[str, Any]) -> None:
            indices = out.indices
            assert indices.shape == (a["anchors"].shape[0], sampler.k) and indices.dtype == torch.long
            assert bool(((indices >= 0) & (indices < a["pool"].shape[0])).all())
            if "anchor_ids" in a:
                assert not bool((a["pool_ids"][indices] == a["anchor_ids"].unsqueeze(1)).any())
            if sampler.class_conditional:
                assert not bool((a["pool_labels"][indices] == a["anchor_labels"].unsqueeze(1)).any())
            if out.log_weights is not None:
                assert bool(torch.isfinite(out.log_weights).all())

        return Case(
            args,
            call,
            tuple(batch_args),
            ("anchors", "pool"),
            ints,
            kind="sampler",
            degenerate="empty",
            check=check,
        )

    return build


def _mcmc_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 1, 5)
    size = batch + draw(st.integers(0, 12))
    args: dict[str, Any] = {
        "anchors": _randn(seed, batch, dim),
        "pool": _randn(seed + 1, size, dim),
        "anchor_ids": torch.randperm(size, generator=_gen(seed + 2))[:batch],
        "num_samples": size,
    }

    def call(a: dict[str, Any]) -> Any:
        sampler = negkit.negatives.MCMCSampler(a["num_samples"], 3, 5.0)
        return sampler.sample(a["anchors"], a["pool"], anchor_ids=a["anchor_ids"], generator=_gen(seed + 3))

    def check(out: Any, a: dict[str, Any]) -> None:
        assert out.indices.shape == (a["anchors"].shape[0], 3)
        assert bool(((out.indices >= -1) & (out.indices < a["pool"].shape[0])).all())
        assert not bool((out.indices == a["anchor_ids"].unsqueeze(1)).any())

    return Case(
        args,
        call,
        ("anchors", "anchor_ids"),
        ("anchors", "pool"),
        {"anchor_ids": (0, size)},
        scalars={"num_samples": [0, -1, 1.5]},
        kind="sampler",
        degenerate="empty",
        check=check,
    )


SAMPLER_BUILDERS: dict[str, Callable[[Callable[..., Any]], Case]] = {
    "UniformSampler": _sampler_case(lambda: negkit.negatives.UniformSampler(3)),
    "ClassConditionalSampler": _sampler_case(lambda: negkit.negatives.ClassConditionalSampler(3), labelled=True),
    "HardnessSampler": _sampler_case(lambda: negkit.negatives.HardnessSampler(3, 4.0)),
    "MinedSampler": _sampler_case(lambda: negkit.negatives.MinedSampler(3, (1, 6), backend="exact")),
    "MCMCSampler": _mcmc_case,
}
if available("faiss"):
    SAMPLER_BUILDERS["MinedSampler[faiss]"] = _sampler_case(
        lambda: negkit.negatives.MinedSampler(3, (1, 6), backend="faiss")
    )


# ----------------------------------------------------------------------------------------------------------- pools


def _queue_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 1, 6)
    size = draw(st.integers(1, 8))
    args: dict[str, Any] = {"embeddings": _randn(seed, batch, dim), "size": size}
    batch_args, ints, masks = ["embeddings"], {}, []
    if draw(st.booleans()):
        args["labels"] = _randint(seed + 1, 4, batch)
        batch_args.append("labels")
        ints["labels"] = (None, None)
    if draw(st.booleans()):
        args["ids"] = torch.arange(batch)
        batch_args.append("ids")
        ints["ids"] = (None, None)
    if draw(st.booleans()):
        args["mask"] = torch.arange(batch) % 2 == 0
        batch_args.append("mask")
        masks.append("mask")

    def call(a: dict[str, Any]) -> Any:
        queue = negkit.negatives.Queue(a["size"], dim)
        queue.enqueue(a["embeddings"], a.get("labels"), a.get("ids"), mask=a.get("mask"))
        return queue.embeddings, queue.labels, queue.ids

    return Case(
        args,
        call,
        tuple(batch_args),
        ("embeddings",),
        ints,
        masks=tuple(masks),
        scalars={"size": [0, -2, 1.5]},
        scale_invariant=False,
        kind="pool",
        degenerate="empty",
    )


def _cache_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 1, 6)
    size = batch + draw(st.integers(0, 4))
    args: dict[str, Any] = {
        "index": torch.randperm(size, generator=_gen(seed))[:batch],
        "embeddings": _randn(seed + 1, batch, dim),
        "num_samples": size,
    }
    batch_args, ints = ["index", "embeddings"], {"index": (0, size)}
    if draw(st.booleans()):
        args["labels"] = _randint(seed + 2, 4, batch)
        batch_args.append("labels")
        ints["labels"] = (None, None)

    def call(a: dict[str, Any]) -> Any:
        cache = negkit.negatives.EmbeddingCache(a["num_samples"], dim)
        cache.update(a["index"], a["embeddings"], a.get("labels"))
        return cache.table, cache.labels, cache.age()

    return Case(
        args,
        call,
        tuple(batch_args),
        ("embeddings",),
        ints,
        scalars={"num_samples": [0, -1, 2.5]},
        scale_invariant=False,
        kind="pool",
        degenerate="empty",
    )


POOL_BUILDERS = {"Queue": _queue_case, "EmbeddingCache": _cache_case}


# ------------------------------------------------------------------------------------------------------ estimators


def _optimal_k_case(draw: Callable[..., Any]) -> Case:
    args = {
        "noise_rate": draw(st.floats(0.0, 0.9)),
        "q": draw(st.floats(0.05, 0.95)),
        "k_min": 1,
        "k_max": draw(st.integers(1, 64)),
        "harm": draw(st.sampled_from([0.0, 0.1])),
        "model": draw(st.sampled_from(["all_clean", "per_negative"])),
    }

    def check(out: Any, a: dict[str, Any]) -> None:
        assert isinstance(out, int) and a["k_min"] <= out <= a["k_max"]

    return Case(
        args,
        lambda a: negkit.negatives.optimal_k(
            a["noise_rate"], a["q"], **{k: a[k] for k in ("k_min", "k_max", "harm", "model")}
        ),
        scalars={
            "noise_rate": [-0.1, 1.0, math.nan],
            "q": [0.0, 1.0, 1.5, math.nan],
            "k_min": [0, -1, 1.5],
            "k_max": [0, 2.5],
            "harm": [-1.0, math.inf],
            "model": ["best"],
        },
        kind="estimator",
        check=check,
    )


def _effectiveness_case(draw: Callable[..., Any]) -> Case:
    seed = draw(st.integers(0, 2**16))
    args = {"k": _randint(seed, 50, 6).float() + 1, "noise_rate": draw(st.floats(0.0, 0.9)), "q": 0.5, "harm": 0.0}
    return Case(
        args,
        lambda a: negkit.negatives.effectiveness(a["k"], a["noise_rate"], a["q"], a["harm"]),
        scalars={"noise_rate": [1.0, -0.5], "q": [0.0, 2.0], "harm": [-1.0, math.nan]},
        scale_invariant=False,
        kind="estimator",
        atol=1e-6,
    )


def _collision_rate_case(draw: Callable[..., Any]) -> Case:
    batch, _, seed = _draw_common(draw, 1, 10)
    args = {"labels": _randint(seed, 4, batch), "label_noise": draw(st.floats(0.0, 0.5))}

    def check(out: Any, a: dict[str, Any]) -> None:
        assert 0.0 <= out <= 0.999

    return Case(
        args,
        lambda a: negkit.negatives.collision_rate(a["labels"], label_noise=a["label_noise"]),
        ("labels",),
        ints={"labels": (None, None)},
        scalars={"label_noise": [-0.1, 1.0, math.nan]},
        kind="estimator",
        degenerate="error",
        check=check,
    )


def _ranking_quality_case(draw: Callable[..., Any]) -> Case:
    batch, _, seed = _draw_common(draw, 1, 6)
    k = draw(st.integers(1, 5))
    args: dict[str, Any] = {"positive_scores": _randn(seed, batch), "negative_scores": _randn(seed + 1, batch, k)}
    batch_args, masks = ["positive_scores", "negative_scores"], []
    if draw(st.booleans()):
        mask = torch.rand(batch, k, generator=_gen(seed + 2)) < 0.6
        mask[0, 0] = True
        args["mask"] = mask
        batch_args.append("mask")
        masks.append("mask")
    return Case(
        args,
        lambda a: negkit.negatives.ranking_quality(a["positive_scores"], a["negative_scores"], a.get("mask")),
        tuple(batch_args),
        ("positive_scores", "negative_scores"),
        masks=tuple(masks),
        kind="estimator",
        degenerate="error",
    )


def _adaptive_k_case(draw: Callable[..., Any]) -> Case:
    args = {
        "noise_rate": draw(st.floats(0.0, 0.5)),
        "interval": draw(st.integers(1, 3)),
        "k_min": 1,
        "k_max": draw(st.integers(4, 64)),
        "initial_k": 2,
        "batch_q": draw(st.floats(0.0, 1.0)),
    }

    def call(a: dict[str, Any]) -> Any:
        schedule = negkit.negatives.AdaptiveK(
            a["noise_rate"], interval=a["interval"], k_min=a["k_min"], k_max=a["k_max"], initial_k=a["initial_k"]
        )
        return [schedule.update(a["batch_q"]) for _ in range(4)]

    def check(out: Any, a: dict[str, Any]) -> None:
        assert all(a["k_min"] <= k <= a["k_max"] for k in out)

    return Case(
        args,
        call,
        scalars={
            "noise_rate": [1.0, -0.1, math.nan],
            "interval": [0, 1.5],
            "k_min": [0, -1, 2.5],
            "k_max": [0, 1.5],
            "initial_k": [0, 100],
            "batch_q": [1.5, -0.1, math.nan],
        },
        kind="estimator",
        check=check,
    )


def _report_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 1, 5)
    size = draw(st.integers(5, 12))
    args: dict[str, Any] = {
        "anchors": _randn(seed, batch, dim),
        "pool": _randn(seed + 1, size, dim),
        "negatives": _randint(seed + 2, size, batch, 3),
    }
    batch_args, floats, ints = ["anchors", "negatives"], ["anchors", "pool"], {"negatives": (0, size)}
    if draw(st.booleans()):
        args["anchor_labels"], args["pool_labels"] = _randint(seed + 3, 3, batch), torch.arange(size) % 3
        batch_args.append("anchor_labels")
        ints |= {"anchor_labels": (None, None), "pool_labels": (None, None)}
    if draw(st.booleans()):
        args["positives"] = _randn(seed + 4, batch, dim)
        batch_args.append("positives")
        floats.append("positives")

    def call(a: dict[str, Any]) -> Any:
        rest = {k: v for k, v in a.items() if k not in ("anchors", "pool", "negatives")}
        return negkit.negatives.negative_report(a["anchors"], a["pool"], a["negatives"], **rest).as_dict()

    return Case(args, call, tuple(batch_args), tuple(floats), ints, kind="estimator", degenerate="error", atol=1e-3)


def _unobserved_case(draw: Callable[..., Any]) -> Case:
    batch, _, seed = _draw_common(draw, 1, 6)
    users, items = draw(st.integers(1, 5)), draw(st.integers(3, 10))
    observed = torch.rand(users, items, generator=_gen(seed)) < 0.4
    observed[:, 0] = False
    args = {"rows": _randint(seed + 1, users, batch), "observed": observed, "k": draw(st.integers(1, 4))}

    def call(a: dict[str, Any]) -> Any:
        return negkit.negatives.sample_unobserved(a["rows"], a["observed"], a["k"], _gen(seed + 2))

    def check(out: Any, a: dict[str, Any]) -> None:
        assert out.shape == (a["rows"].shape[0], a["k"])
        assert not bool(a["observed"][a["rows"].unsqueeze(1), out].any())

    return Case(
        args,
        call,
        ("rows",),
        ints={"rows": (0, users)},
        scalars={"k": [0, -1, 1.5]},
        kind="estimator",
        degenerate="empty",
        check=check,
    )


def _frequency_case(draw: Callable[..., Any]) -> Case:
    batch, _, seed = _draw_common(draw, 1, 8)
    hashed = draw(st.booleans())
    buckets = draw(st.integers(4, 16))
    args = {"ids": _randint(seed, buckets, batch), "num_buckets": buckets, "alpha": draw(st.sampled_from([0.01, 1.0]))}

    def call(a: dict[str, Any]) -> Any:
        estimator = negkit.negatives.StreamingFrequency(a["num_buckets"], alpha=a["alpha"], hashed=hashed)
        for _ in range(3):  # three steps of the same ids: every id seen, gaps of one step
            estimator.update(a["ids"])
        return estimator.log_probability(a["ids"])

    def check(out: Any, a: dict[str, Any]) -> None:
        assert out.shape == a["ids"].shape
        if not hashed:  # an id seen once in every step has gaps of exactly one step: p̂ = 1
            ids, counts = torch.unique(a["ids"], return_counts=True)
            once = torch.isin(a["ids"], ids[counts == 1])
            assert torch.equal(out[once], torch.zeros_like(out[once]))

    return Case(
        args,
        call,
        ("ids",),
        ints={"ids": (0, buckets if not hashed else None)},
        scalars={"num_buckets": [0, -1, 1.5], "alpha": [0.0, -0.1, 1.5, math.nan]},
        kind="estimator",
        degenerate="empty",
        check=check,
    )


ESTIMATOR_BUILDERS = {
    "optimal_k": _optimal_k_case,
    "effectiveness": _effectiveness_case,
    "collision_rate": _collision_rate_case,
    "ranking_quality": _ranking_quality_case,
    "AdaptiveK": _adaptive_k_case,
    "negative_report": _report_case,
    "sample_unobserved": _unobserved_case,
    "StreamingFrequency": _frequency_case,
}


# --------------------------------------------------------------------------------------------------------- metrics


def _metric(
    args: dict[str, Any], fn: Callable[[dict[str, Any]], Any], batch: tuple[str, ...], floats: tuple[str, ...], **kw
) -> Case:
    return Case(args, fn, batch, floats, kind="metric", degenerate="error", **kw)


def _alignment_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 1, 8)
    args = {"z1": _randn(seed, batch, dim), "z2": _randn(seed + 1, batch, dim), "alpha": 2.0}
    return _metric(
        args,
        lambda a: negkit.metrics.alignment(a["z1"], a["z2"], alpha=a["alpha"]),
        ("z1", "z2"),
        ("z1", "z2"),
        scalars={"alpha": [0.0, -1.0, math.nan]},
    )


def _uniformity_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 2, 8)
    args = {"z": _randn(seed, batch, dim), "t": 2.0}
    return _metric(
        args,
        lambda a: negkit.metrics.uniformity(a["z"], t=a["t"]),
        ("z",),
        ("z",),
        scalars={"t": [0.0, math.inf]},
    )


def _tolerance_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 3, 8)
    labels = _randint(seed + 1, 2, batch)
    labels[:2] = 0
    args = {"z": _randn(seed, batch, dim), "labels": labels}
    return _metric(
        args,
        lambda a: negkit.metrics.tolerance(a["z"], a["labels"]),
        ("z", "labels"),
        ("z",),
        ints={"labels": (0, None)},
    )


def _opis_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 4, 10)
    labels = _randint(seed + 1, 3, batch)
    labels[:4] = torch.tensor([0, 0, 1, 1])  # two classes with a same-class and an other-class pair
    args = {"embeddings": _randn(seed, batch, dim), "labels": labels, "chunk_size": draw(st.integers(1, 4))}
    return _metric(
        args,
        lambda a: negkit.metrics.opis(a["embeddings"], a["labels"], chunk_size=a["chunk_size"]),
        ("embeddings", "labels"),
        ("embeddings",),
        ints={"labels": (0, None)},
        scalars={"chunk_size": [0, -1, 1.5]},
    )


def _knn_args(draw: Callable[..., Any]) -> tuple[dict[str, Any], int]:
    batch, dim, seed = _draw_common(draw, 3, 10)
    tests = draw(st.integers(1, 5))
    args = {
        "train_emb": _randn(seed, batch, dim),
        "train_labels": _randint(seed + 1, 3, batch),
        "test_emb": _randn(seed + 2, tests, dim),
        "test_labels": _randint(seed + 3, 3, tests),
        "k": draw(st.integers(1, batch)),
        "temperature": 0.07,
    }
    return args, batch


def _knn_predict_case(draw: Callable[..., Any]) -> Case:
    args, batch = _knn_args(draw)
    del args["test_labels"]
    return _metric(
        args,
        lambda a: negkit.metrics.knn_predict(
            a["train_emb"], a["train_labels"], a["test_emb"], k=a["k"], temperature=a["temperature"]
        ),
        ("train_emb", "train_labels"),
        ("train_emb", "test_emb"),
        ints={"train_labels": (0, None)},
        scalars={"k": [0, batch + 1, 1.5], "temperature": BAD_TEMPERATURES},
    )


def _knn_accuracy_case(draw: Callable[..., Any]) -> Case:
    args, batch = _knn_args(draw)
    return _metric(
        args,
        lambda a: negkit.metrics.knn_accuracy(
            a["train_emb"], a["train_labels"], a["test_emb"], a["test_labels"], k=a["k"], temperature=a["temperature"]
        ),
        ("test_emb", "test_labels"),
        ("train_emb", "test_emb"),
        ints={"train_labels": (0, None), "test_labels": (0, None)},
        scalars={"k": [0, batch + 1], "temperature": BAD_TEMPERATURES},
    )


def _probe_case(draw: Callable[..., Any]) -> Case:
    args, _ = _knn_args(draw)
    args["train_labels"] = torch.arange(args["train_emb"].shape[0]) % 2
    del args["k"], args["temperature"]
    args["C"] = 1.0
    return _metric(
        args,
        lambda a: negkit.metrics.linear_probe_accuracy(
            a["train_emb"], a["train_labels"], a["test_emb"], a["test_labels"], C=a["C"], max_iter=50
        ),
        ("test_emb", "test_labels"),
        ("train_emb", "test_emb"),
        ints={"train_labels": (0, None), "test_labels": (0, None)},
        scalars={"C": [0.0, -1.0, math.nan]},
        scale_invariant=False,
        atol=1.0,  # L-BFGS on float32 vs float64 features may stop elsewhere: only finiteness and range matter
    )


def _retrieval_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 2, 8)
    labels = _randint(seed + 1, 3, batch)
    labels[1] = labels[0]  # some query has a same-label reference (else R = 0 everywhere: a clear error)
    args: dict[str, Any] = {"query_emb": _randn(seed, batch, dim), "query_labels": labels}
    batch_args, floats, ints = ["query_emb", "query_labels"], ["query_emb"], {"query_labels": (0, None)}
    if draw(st.booleans()):
        refs = draw(st.integers(1, 6))
        reference_labels = _randint(seed + 3, 3, refs)
        reference_labels[0] = labels[0]
        args["reference_emb"], args["reference_labels"] = _randn(seed + 2, refs, dim), reference_labels
        floats.append("reference_emb")
        ints["reference_labels"] = (0, None)
    return _metric(
        args | {"ks": (1,)},
        lambda a: negkit.metrics.retrieval_metrics(
            a["query_emb"], a["query_labels"], a.get("reference_emb"), a.get("reference_labels"), ks=a["ks"]
        ),
        tuple(batch_args),
        tuple(floats),
        ints=ints,
        scalars={"ks": [(0,), (), (1.5,), "1"]},
    )


def _query_document_case(draw: Callable[..., Any]) -> Case:
    batch, dim, seed = _draw_common(draw, 1, 6)
    docs = draw(st.integers(2, 8))
    relevant = [[int(i % docs)] for i in range(batch)]
    similarity = draw(st.sampled_from(["cosine", "dot"]))
    args = {
        "query_embeddings": _randn(seed, batch, dim),
        "document_embeddings": _randn(seed + 1, docs, dim),
        "relevant": relevant,
        "cutoff": 3,
    }
    return _metric(
        args,
        lambda a: negkit.metrics.query_document_metrics(
            a["query_embeddings"],
            a["document_embeddings"],
            a["relevant"],
            ks=(1, 3),
            cutoff=a["cutoff"],
            similarity=similarity,
        ),
        ("query_embeddings", "relevant"),
        ("query_embeddings", "document_embeddings"),
        scalars={"cutoff": [0, -1, 2.5]},
        scale_invariant=similarity == "cosine",
        aliases={"relevant": ("relevance",)},
    )


def _fnr_case(draw: Callable[..., Any]) -> Case:
    batch, _, seed = _draw_common(draw, 1, 6)
    k = draw(st.integers(1, 4))
    args: dict[str, Any] = {
        "anchor_labels": _randint(seed, 3, batch),
        "negative_labels": _randint(seed + 1, 3, batch, k),
    }
    return _metric(
        args,
        lambda a: negkit.metrics.false_negative_rate(a["anchor_labels"], a["negative_labels"], a.get("mask")),
        ("anchor_labels", "negative_labels"),
        (),
        ints={"anchor_labels": (0, None), "negative_labels": (0, None)},
    )


def _in_batch_fnr_case(draw: Callable[..., Any]) -> Case:
    batch, _, seed = _draw_common(draw, 2, 8)
    return _metric(
        {"labels": _randint(seed, 3, batch)},
        lambda a: negkit.metrics.in_batch_false_negative_rate(a["labels"]),
        ("labels",),
        (),
        ints={"labels": (0, None)},
    )


METRIC_BUILDERS = {
    "alignment": _alignment_case,
    "uniformity": _uniformity_case,
    "tolerance": _tolerance_case,
    "knn_predict": _knn_predict_case,
    "knn_accuracy": _knn_accuracy_case,
    "linear_probe_accuracy": _probe_case,
    "retrieval_metrics": _retrieval_case,
    "query_document_metrics": _query_document_case,
    "false_negative_rate": _fnr_case,
    "in_batch_false_negative_rate": _in_batch_fnr_case,
    "opis": _opis_case,
}


SUBJECTS: dict[str, Subject] = {
    name: Subject(name, build)
    for builders in (LOSS_BUILDERS, EXTRA_LOSSES, SAMPLER_BUILDERS, POOL_BUILDERS, ESTIMATOR_BUILDERS, METRIC_BUILDERS)
    for name, build in builders.items()
}

#: Public names that are types or helpers, not something to call with data.
NOT_CALLED = {
    "negkit.losses": {
        "DCL",
        "DecoupledSoftmax",
        "EMC2Loss",
        "HardNCE",
        "InfoNCE",
        "MEOW",
        "MannWhitneyLoss",
        "AMCL",
        "AdaMEOW",
        "SoftTopK",
        "SupCon",
        "TCM",
        "SigLIP",
        "GIST",  # registry modules
        "GlobalContrastiveLoss",  # the registry's global_contrastive
        "DegenerateBatchError",
        "LossSpec",
        "SkipCounter",
        "count_skipped",
        "create_loss",
        "functional",
        "get_loss",
        "is_strict",
        "list_losses",
        "register_loss",
        "set_strict",
        "strict",
        "unregister_loss",
        "LogitScale",  # a parameter holder: the losses' temperature tests cover it
        "fast_checks",
        "set_fast_checks",
        "dcl",
        "decoupled_softmax",
        "emc2",
        "hard_nce",
        "info_nce",
        "meow",
        "metrix",
        "mw_auc",
        "adameow",
        "amcl",
        "soft_top_k",
        "sup_con",
        "tcm",  # registry functions
    },
    "negkit.negatives": {"GatheredNegatives", "NegativeReport", "NegativeSampler", "Negatives"},
    "negkit.metrics": set(),
}


def expected_subjects() -> set[str]:
    """Every name the suite must fuzz: the loss registry, plus each module's ``__all__`` minus ``NOT_CALLED``."""
    names = set(list_losses())
    for module in (negkit.losses, negkit.negatives, negkit.metrics):
        names |= set(module.__all__) - NOT_CALLED[module.__name__]
    return names
