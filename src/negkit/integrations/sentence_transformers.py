"""negkit's losses as a sentence-transformers loss: ``SentenceTransformerTrainer(..., loss=NegkitLoss(model))``.

The adapter follows the interface of sentence-transformers' own losses: ``NegkitLoss(model, ...)``,
``forward(sentence_features, labels) -> scalar``, ``get_config_dict()`` and ``citation``. The data layout is
that of ``MultipleNegativesRankingLoss``: columns ``(anchor, positive, negative_1, ..., negative_K)``.

sentence-transformers is only needed to run a model; importing this module does not import it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from negkit._optional import require
from negkit._validation import check_finite, check_similarity, check_tensor, count_skipped, fast_checks
from negkit.losses.functional import similarity_logits
from negkit.losses.modules import LogitScale, module_temperature, resolve_temperature
from negkit.losses.registry import LossSpec, get_loss, list_losses

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["NegkitLoss"]

#: The registered losses (:mod:`negkit.losses.registry`; any of their aliases works too) that fit the columns,
#: and the keyword arguments each accepts through ``**loss_kwargs`` (the rest is set by the adapter).
_LOSS_OPTIONS: dict[str, frozenset[str]] = {
    "info_nce": frozenset({"similarity", "reduction", "chunk_size", "in_batch_negatives"}),
    "symmetric_info_nce": frozenset({"similarity", "reduction", "chunk_size"}),
    "decoupled_softmax": frozenset({"similarity", "reduction"}),
    "mw_auc": frozenset({"similarity", "reduction"}),
}
#: The InfoNCE forms: one call of ``info_nce`` does both directions when symmetric.
_INFO_NCE_FORMS = ("info_nce", "symmetric_info_nce")
#: Arguments that the adapter fills in itself, so they cannot be given as ``**loss_kwargs``.
_RESERVED = frozenset(
    {"anchor", "positive", "negatives", "temperature", "symmetric", "labels", "negative_log_weights"}
    | {"query", "items", "relevance", "scores"}
)
#: The trainer backpropagates a scalar, so per-anchor losses (``reduction="none"``) are refused.
_REDUCTIONS = ("mean", "sum")

_INFO_NCE_BIBTEX = """@article{oord2018representation,
  title   = {Representation Learning with Contrastive Predictive Coding},
  author  = {van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol},
  journal = {arXiv preprint arXiv:1807.03748},
  year    = {2018},
  url     = {https://arxiv.org/abs/1807.03748}
}"""


class NegkitLoss(nn.Module):
    """A negkit loss on the columns of a sentence-transformers batch (anchor, positive, hard negatives...).

    Columns: ``sentence_features[0]`` are the anchors (queries) ``a``, ``[B,d]`` once embedded;
    ``sentence_features[1]`` their positives (documents) ``p``, ``[B,d]``, row ``i`` matching anchor ``i``;
    any further ``K ≥ 0`` columns are hard negatives, stacked to ``h`` ``[B,K,d]`` (``h[i]`` are row ``i``'s).
    Every column must embed to the same ``[B,d]``.

    Which candidates anchor ``i`` sees (default ``in_batch_negatives=True``, as in sentence-transformers'
    ``MultipleNegativesRankingLoss``: every document of the batch is a candidate for every query):

    * its positive ``p_i``,
    * the other rows' positives ``p_j``, ``j ≠ i`` (``B − 1``) — minus those with ``labels[j] == labels[i]``
      when ``use_labels=True`` (see below),
    * all ``B·K`` hard negatives of the batch, its own ``K`` and the other rows', passed to negkit as shared
      negatives ``h.reshape(B·K, d)`` (``[K',d]`` with ``K' = B·K``).

    That is ``1 + (B − 1) + B·K`` candidates, the ``B + B·K`` documents of the batch. With
    ``loss="info_nce", in_batch_negatives=False`` anchor ``i`` sees only ``p_i`` and its own ``K`` hard
    negatives (``h`` is passed per anchor, ``[B,K,d]``; needs ``K ≥ 1``).

    ``symmetric=True`` averages the loss above with the reverse direction, in which positive ``p_i`` is the
    query and the candidates are the ``B`` anchors (``a_i`` its positive, the other ``B − 1`` anchors its
    negatives; hard negatives are not used in this direction). This is sentence-transformers'
    ``MultipleNegativesSymmetricRankingLoss`` (= ``MultipleNegativesRankingLoss(directions=("query_to_doc",
    "doc_to_query"), partition_mode="per_direction")``), and negkit's ``info_nce(symmetric=True)``, which the
    adapter calls for ``loss="info_nce"`` (``loss="symmetric_info_nce"`` is the same with ``symmetric=True`` as
    its default).

    The losses are names of negkit's loss registry (:mod:`negkit.losses.registry`), so any alias works
    (``"infonce"``, ``"NT-Xent"``, ``"simclr"``, ``"dexml"``, ...) and an unset ``temperature`` or ``symmetric``
    takes the name's registry default — the same as ``create_loss(name)`` and every other surface. With
    ``s = sim / temperature`` (cosine similarity unless ``similarity="dot"``):

    * ``"info_nce"``: :func:`negkit.losses.info_nce`,
      ``ℓ_i = −log(e^{s(a_i,p_i)} / Σ_{c ∈ candidates(i)} e^{s(a_i,c)})``; with ``temperature = 1/scale``
      this is ``MultipleNegativesRankingLoss(model, scale)``. ``"symmetric_info_nce"``: the same, symmetric.
    * ``"decoupled_softmax"``: :func:`negkit.losses.decoupled_softmax` of the anchors against the items
      ``[p; h.reshape(B·K,d)]`` (``[B + B·K, d]``) with relevance ``[B, B + B·K]`` true only at ``(i, i)``.
      With the one positive per row that these columns carry, its value equals ``"info_nce"``'s (a positive
      only competes with non-relevant items, and there are no other relevant items).
    * ``"mw_auc"``: :func:`negkit.losses.mw_auc` of the scores ``s(a_i, ·)`` ``[B, B + B·K]`` with the same
      relevance: the mean over anchor ``i``'s ``B − 1 + B·K`` negatives ``n`` of ``softplus(s(a_i,n) − s(a_i,p_i))``.
    * a callable: called as ``loss(anchor [B,d], positive [B,d], negatives, temperature=T, **loss_kwargs)``,
      plus ``labels=labels`` (``[B]``) when ``use_labels=True``; ``negatives`` is ``h.reshape(B·K, d)``
      (shared candidates) or ``None`` without hard-negative columns — the contract of
      :func:`negkit.losses.info_nce`, so e.g. ``functools.partial(info_nce, similarity="dot")`` works. It must
      return a scalar tensor. With ``symmetric=True`` it is also called as
      ``loss(positive, anchor, None, temperature=T, ...)`` and the two values are averaged.

    Labels: sentence-transformers passes the dataset's ``label`` column (or ``None``) to every loss. They are
    ignored unless ``use_labels=True``; then they must be ``[B]`` integer class ids, and (the InfoNCE forms or
    a callable only) anchor ``i`` no longer sees the in-batch positives ``p_j`` with ``labels[j] == labels[i]``
    (in the symmetric direction: the anchors ``a_j`` of the same label). Hard negatives carry no label and are
    never masked.

    Degenerate batches: a batch of one row (a trailing batch, ``NO_DUPLICATES`` evaluation batches), or labels that
    leave an anchor no negative, give those anchors a loss of 0 (left out of the mean) and, if none is left, a loss
    of 0 with a zero gradient — as ``MultipleNegativesRankingLoss`` does — so ``trainer.train()`` goes on.
    :attr:`skipped_anchors` counts the anchors the last call skipped. ``negkit.losses.set_strict(True)`` (or
    ``with negkit.losses.strict(): trainer.train()``) makes them raise instead.

    Duplicates: a text that occurs twice in a batch (the same answer to two queries) is a false negative for
    in-batch losses. This adapter does not look for duplicates; build duplicate-free batches upstream
    (:func:`negkit.data.text.duplicate_free_batches`, or sentence-transformers' ``BatchSamplers.NO_DUPLICATES``).

    Args:
        model: the ``SentenceTransformer`` being trained (stored as ``self.model``, as the trainer expects).
        loss: ``"info_nce"`` | ``"symmetric_info_nce"`` | ``"decoupled_softmax"`` | ``"mw_auc"`` (or one of
            their registry aliases), or a callable (see above).
        temperature: T > 0; sentence-transformers' ``scale`` is ``1 / temperature`` (``scale=20`` ↔ ``0.05``,
            ``MultipleNegativesRankingLoss``'s default: pass ``temperature=0.05`` for parity). ``None``: the named
            loss's registry default (``info_nce`` 0.1, ``decoupled_softmax`` 0.05); for ``mw_auc`` and callables,
            which have no temperature of their own here, ``info_nce``'s. A learnable temperature (an
            ``nn.Parameter``, or a tensor with ``requires_grad``) is kept as given and receives a gradient, and so
            is a :class:`~negkit.losses.LogitScale` (registered: in ``parameters()`` and the ``state_dict``).
        symmetric: also average in the positive → anchors direction (see above). ``None``: the named loss's
            registry default (``True`` for ``symmetric_info_nce``, else ``False``).
        learnable_temperature: learn the temperature as CLIP does: the adapter owns a
            :class:`~negkit.losses.LogitScale` started at ``temperature`` (``log(1/T)``, scale clamped to ≤ 100),
            which the trainer's optimiser updates with the model (it is in ``parameters()``).
        use_labels: use the trainer's labels to mask same-label in-batch candidates (the InfoNCE forms or a
            callable; the callable receives ``labels=``).
        **loss_kwargs: further options of the loss. ``"info_nce"``: ``similarity`` (``"cosine"`` | ``"dot"``),
            ``reduction`` (``"mean"`` | ``"sum"``), ``chunk_size``, ``in_batch_negatives``; ``"symmetric_info_nce"``:
            the same but ``in_batch_negatives``;
            ``"decoupled_softmax"`` and ``"mw_auc"``: ``similarity``, ``reduction``. A callable gets them as is.

    Raises:
        ValueError: an unknown loss name, a temperature that is not a finite number > 0, an option the loss
            does not take (or one the adapter sets itself), ``reduction="none"``, ``use_labels`` with a loss
            that has no labels, ``symmetric`` with ``in_batch_negatives=False``; in ``forward``: fewer than two
            columns, columns of different shapes, ``use_labels=True`` without labels, or any error of the
            negkit loss (bad labels, shapes, non-finite embeddings, ...; degenerate batches in strict mode).
    """

    def __init__(
        self,
        model: SentenceTransformer | nn.Module,
        loss: str | Callable[..., Tensor] = "info_nce",
        *,
        temperature: float | Tensor | LogitScale | None = None,
        symmetric: bool | None = None,
        use_labels: bool = False,
        learnable_temperature: bool = False,
        **loss_kwargs: Any,
    ) -> None:
        super().__init__()
        self.model = model
        self.skipped_anchors = 0
        self.use_labels = bool(use_labels)
        self._spec: LossSpec | None = None
        self._loss_fn: Callable[..., Tensor] | None = None
        if callable(loss):
            self.loss_name = _callable_name(loss)
            self._loss_fn = loss
            _check_callable_kwargs(loss, loss_kwargs, self.use_labels)
            defaults = get_loss("info_nce").defaults  # a callable follows info_nce's contract
        elif isinstance(loss, str):
            self._spec = _resolve(loss)
            self.loss_name = self._spec.name
            defaults = self._spec.defaults
        else:
            raise ValueError(f"NegkitLoss: loss must be a loss name or a callable, got {type(loss).__name__}")
        if temperature is None:
            temperature = defaults.get("temperature", get_loss("info_nce").defaults["temperature"])
        try:
            self.temperature = module_temperature(temperature)
        except (TypeError, ValueError):
            raise ValueError(
                f"NegkitLoss: temperature must be a finite number > 0 (sentence-transformers' scale = "
                f"1 / temperature), got {temperature!r}"
            ) from None
        if learnable_temperature:  # a LogitScale of its own (its bounds raise their own errors)
            self.temperature = module_temperature(temperature, learnable=True)
        self.symmetric = bool(defaults.get("symmetric", False) if symmetric is None else symmetric)
        if self._spec is not None:
            name = self.loss_name
            _check_named_kwargs(name, loss_kwargs)
            if self.use_labels and name not in _INFO_NCE_FORMS:
                raise ValueError(f"NegkitLoss: use_labels=True needs a loss that takes labels; {name!r} does not")
            if self.symmetric and name in _INFO_NCE_FORMS and not loss_kwargs.get("in_batch_negatives", True):
                raise ValueError(
                    "NegkitLoss: symmetric=True needs in_batch_negatives=True (the reverse direction's only "
                    "negatives are the other anchors)"
                )
        self.loss_kwargs = dict(loss_kwargs)

    @property
    def scale(self) -> float:
        """sentence-transformers' ``scale``, ``1 / temperature``."""
        return 1.0 / _value(self.temperature)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """Embed the columns with ``self.model`` and return the scalar loss.

        Args:
            sentence_features: ``2 + K`` tokenised columns (anchor, positive, ``K`` hard negatives), each a
                dict of ``B`` rows as produced by the sentence-transformers data collator.
            labels: ``[B]`` class ids from the trainer, or ``None``; used only when ``use_labels=True``.
        """
        features = list(sentence_features)
        _check_columns(len(features))
        return self.compute_loss_from_embeddings(_embed_columns(self.model, features), labels)

    def compute_loss_from_embeddings(self, embeddings: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        """The loss from already embedded columns: ``embeddings[0]`` anchors ``[B,d]``, ``[1]`` positives
        ``[B,d]``, ``[2:]`` ``K`` hard-negative columns ``[B,d]`` each (stacked to ``[B,K,d]``). Sets
        :attr:`skipped_anchors`."""
        with count_skipped() as skipped:
            loss = self._loss_from_embeddings(embeddings, labels)
        self.skipped_anchors = skipped.anchors
        return loss

    def _loss_from_embeddings(self, embeddings: Sequence[Tensor], labels: Tensor | None) -> Tensor:
        _check_columns(len(embeddings))
        anchor, positive, *negative_columns = embeddings
        for index, column in enumerate(embeddings):
            check_tensor(f"column {index} embeddings", column, 2, finite=False)
            if column.shape != anchor.shape:
                raise ValueError(
                    f"NegkitLoss: every column must embed to the anchors' shape {tuple(anchor.shape)}, "
                    f"column {index} has {tuple(column.shape)}"
                )
        # every column's values in one pass and one host sync; the negkit loss below then skips its own scans
        check_finite(**{f"column {index} embeddings": column for index, column in enumerate(embeddings)})
        hard = torch.stack(negative_columns, dim=1) if negative_columns else None  # [B,K,d]
        if self.use_labels and labels is None:
            raise ValueError(
                "NegkitLoss: use_labels=True but the trainer passed no labels; add a 'label' column of integer "
                "class ids to the dataset, or set use_labels=False"
            )
        labels = labels if self.use_labels else None
        if self._loss_fn is not None:  # a user's callable keeps every check of its own
            loss = self._direction(anchor, positive, hard, labels)
            if self.symmetric:
                loss = 0.5 * (loss + self._direction(positive, anchor, None, labels))
            return loss
        with fast_checks():
            if self.loss_name in _INFO_NCE_FORMS:
                return self._direction(anchor, positive, hard, labels, symmetric=self.symmetric)  # both in one call
            loss = self._direction(anchor, positive, hard, labels)
            if self.symmetric:
                loss = 0.5 * (loss + self._direction(positive, anchor, None, labels))
            return loss

    def _direction(
        self, queries: Tensor, documents: Tensor, hard: Tensor | None, labels: Tensor | None, *, symmetric: bool = False
    ) -> Tensor:
        """One direction: query ``i`` [B,d] against documents [B,d] (row i its positive) and hard [B,K,d]
        (``symmetric``: info_nce adds the reverse direction itself)."""
        batch, dim = queries.shape
        shared = None if hard is None else hard.reshape(-1, dim)  # [B·K, d]: candidates of every query
        options = dict(self.loss_kwargs)
        if self._loss_fn is not None:
            if self.use_labels:
                options["labels"] = labels
            temperature = resolve_temperature(self.temperature)
            return self._loss_fn(queries, documents, shared, temperature=temperature, **options)
        function = self._spec.function
        if self.loss_name in _INFO_NCE_FORMS:
            in_batch = options.pop("in_batch_negatives", True)
            if not in_batch and hard is None:
                raise ValueError(
                    "NegkitLoss: in_batch_negatives=False needs hard-negative columns (a third column or more)"
                )
            return function(
                queries,
                documents,
                shared if in_batch else hard,
                temperature=resolve_temperature(self.temperature),
                labels=labels,
                in_batch_negatives=in_batch,
                symmetric=symmetric,
                **options,
            )
        items = documents if shared is None else torch.cat([documents, shared])  # [B + B·K, d]
        relevance = torch.eye(batch, items.shape[0], dtype=torch.bool, device=queries.device)
        if self.loss_name == "decoupled_softmax":
            return function(queries, items, relevance, temperature=resolve_temperature(self.temperature), **options)
        check_tensor("queries", queries, 2)
        check_tensor("items", items, 2)
        temperature = resolve_temperature(self.temperature)
        scores = similarity_logits(queries, items, temperature, options.pop("similarity", "cosine"))
        return function(scores, relevance, **options)  # mw_auc

    def get_config_dict(self) -> dict[str, Any]:
        """The hyper-parameters, for the model card."""
        return {
            "loss": self.loss_name,
            "temperature": _value(self.temperature),
            "symmetric": self.symmetric,
            "use_labels": self.use_labels,
            **self.loss_kwargs,
        }

    @property
    def citation(self) -> str:
        """BibTeX of InfoNCE (van den Oord et al., 2018)."""
        return _INFO_NCE_BIBTEX

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.get_config_dict().items())


def _value(temperature: float | Tensor | LogitScale) -> float:
    temperature = resolve_temperature(temperature)
    return float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)


def _check_columns(count: int) -> None:
    if count < 2:
        raise ValueError(
            f"NegkitLoss needs at least 2 columns (anchor, positive[, negative_1, ...]), got {count}; "
            "a dataset of single texts has no positive pairs"
        )


def _resolve(name: str) -> LossSpec:
    """The registry's spec of ``name`` (any alias), if it is one of the losses that fit the columns."""
    supported = sorted(_LOSS_OPTIONS)
    try:
        spec = get_loss(name)
    except ValueError:
        names = {alias: canonical for canonical in supported for alias in (canonical, *get_loss(canonical).aliases)}
        close = difflib.get_close_matches(name.strip().lower().replace("-", "_"), list(names), n=1)
        hint = f" (did you mean {names[close[0]]!r}?)" if close else ""
        raise ValueError(
            f"NegkitLoss: unknown loss {name!r}; choose one of {supported} or pass a callable{hint}"
        ) from None
    if spec.name not in _LOSS_OPTIONS:
        raise ValueError(
            f"NegkitLoss: loss {name!r} ({spec.name}) does not take (anchor, positive, hard negatives...) columns; "
            f"choose one of {supported} or pass a callable (registered losses: {', '.join(list_losses())})"
        )
    return spec


def _check_named_kwargs(name: str, loss_kwargs: dict[str, Any]) -> None:
    allowed = _LOSS_OPTIONS[name]
    for key, value in loss_kwargs.items():
        if key in _RESERVED:
            raise ValueError(f"NegkitLoss: {key!r} is set by the adapter, not through loss_kwargs")
        if key not in allowed:
            raise ValueError(f"NegkitLoss: loss {name!r} takes no option {key!r}; it takes {sorted(allowed)}")
        if key == "similarity":
            check_similarity(value)
        if key == "reduction" and value not in _REDUCTIONS:
            raise ValueError(
                f"NegkitLoss: reduction must be one of {_REDUCTIONS} (the trainer needs a scalar), got {value!r}"
            )


def _check_callable_kwargs(loss: Callable[..., Tensor], loss_kwargs: dict[str, Any], use_labels: bool) -> None:
    """Fail at construction if ``loss`` cannot be called the way the adapter will call it."""
    for key in ("temperature", "labels"):
        if key in loss_kwargs:
            raise ValueError(f"NegkitLoss: {key!r} is set by the adapter, not through loss_kwargs")
    try:
        signature = inspect.signature(loss)
    except (TypeError, ValueError):  # some builtins have no signature: nothing to check
        return
    extra = {"labels": None} if use_labels else {}
    try:
        signature.bind(None, None, None, temperature=1.0, **extra, **loss_kwargs)
    except TypeError as error:
        raise ValueError(
            f"NegkitLoss: the loss callable cannot be called as loss(anchor, positive, negatives, temperature=..."
            f"{', labels=...' if use_labels else ''}{''.join(f', {k}=...' for k in loss_kwargs)}): {error}"
        ) from None


def _callable_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a callable, ``partial(...)`` around a partial's function (for the model card)."""
    if isinstance(fn, functools.partial):
        return f"partial({_callable_name(fn.func)})"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{name}" if module else name


def _embed_columns(model: nn.Module, features: list[dict[str, Tensor]]) -> list[Tensor]:
    """``sentence_embedding`` ``[B,d]`` of each column.

    Uses sentence-transformers' own column embedding when it has one (6.x: the candidate columns share one
    forward pass, exactly as its losses do), else one forward per column.
    """
    try:  # a MissingDependencyError is an ImportError: older sentence-transformers have no such module
        merged_forward = require(
            "sentence_transformers.base.losses.merged_forward", "text", "sentence-transformers' column embedding"
        )
    except ImportError:
        return [model(column)["sentence_embedding"] for column in features]
    return merged_forward.embed_columns(model, features)
