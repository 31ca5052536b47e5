"""GISTEmbed as a sentence-transformers loss: ``SentenceTransformerTrainer(..., loss=GISTLoss(model, guide))``.

The interface of sentence-transformers' ``GISTEmbedLoss`` (same arguments and defaults, columns ``(anchor,
positive[, negative])``), with negkit's :func:`negkit.losses.gist` as the math and one addition: duplicate inputs
are found from the tokens, before anything is embedded (``deduplicate=True``). Two rows whose texts tokenise to
the same ids are the same input; a copy of an anchor's text or of its positive's text elsewhere in the batch then
leaves that anchor's denominator, whatever the guide scores it (under dropout, or with a margin of 0, the guide
alone does not remove an exact copy: sentence-transformers #2756 and PR #3260).

sentence-transformers is only needed to run a model; importing this module does not import it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from negkit._validation import check_finite_scalar, count_skipped
from negkit.integrations.sentence_transformers import _embed_columns
from negkit.losses.functional.guided import MARGIN_STRATEGIES, gist
from negkit.losses.modules import module_temperature

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["GISTLoss", "token_keys"]

_GIST_BIBTEX = """@misc{solatorio2024gistembed,
  title         = {GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding Fine-tuning},
  author        = {Solatorio, Aivin V.},
  year          = {2024},
  eprint        = {2402.16829},
  archivePrefix = {arXiv}
}"""


def token_keys(features: dict[str, Tensor]) -> list[tuple[int, ...]]:
    """One key per row of a tokenised column: its token ids without padding (``attention_mask`` = 1), or the
    rows of a packed column (``cu_seq_lens_q`` boundaries). Equal texts give equal keys."""
    if "input_ids" not in features:
        raise ValueError(
            "GISTLoss(deduplicate=True) needs token ids ('input_ids') in every column to find duplicate inputs; "
            "this model's features have none: pass deduplicate=False"
        )
    ids = features["input_ids"]
    if "cu_seq_lens_q" in features:  # packed rows: one flat sequence with boundaries
        flat = ids[0].tolist()
        bounds = features["cu_seq_lens_q"].tolist()
        return [tuple(flat[start:end]) for start, end in itertools.pairwise(bounds)]
    mask = features.get("attention_mask")
    if mask is None:
        return [tuple(row) for row in ids.tolist()]
    rows = zip(ids.tolist(), mask.tolist(), strict=True)
    return [tuple(i for i, m in zip(row, keep, strict=True) if m) for row, keep in rows]


class GISTLoss(nn.Module):
    """GISTEmbed (Solatorio, 2024) on the columns of a sentence-transformers batch, guided by a frozen model.

    Columns: ``(anchor, positive)`` or ``(anchor, positive, negative)``, ``B`` rows each. Anchor ``i`` sees the
    candidates of :func:`negkit.losses.gist`: the other positives, the other anchors (``contrast_anchors``), the
    other positives as seen from its positive (``contrast_positives``) and every row's negative — minus those the
    guide scores above ``t_i`` (``g_i − margin``, absolute; ``g_i − |g_i|·margin``, relative; ``g_i`` the guide's
    anchor–positive cosine) and, with ``deduplicate``, those whose input equals anchor ``i``'s or positive
    ``i``'s (equal token ids, any column).

    With ``deduplicate=False`` the value and gradient are those of sentence-transformers' ``GISTEmbedLoss``
    (same model, guide and arguments), except for an anchor left with no candidate, which negkit skips (loss 0,
    out of the mean; :attr:`skipped_anchors` counts it) where sentence-transformers averages its zero in.

    The guide embeds under ``torch.no_grad()``; it receives the model's tokens when both share a vocabulary and
    the guide's ``max_seq_length`` is not shorter, else the texts decoded from the model's tokens, re-tokenised
    by the guide (as sentence-transformers does).

    Args:
        model: the ``SentenceTransformer`` being trained.
        guide: a ``SentenceTransformer`` whose cosine scores filter the candidates (may be ``model`` itself).
        temperature: T > 0 (default 0.01, ``GISTEmbedLoss``'s); an ``nn.Parameter`` is learned.
        margin_strategy: ``"absolute"`` | ``"relative"``.
        margin: finite, default 0.
        contrast_anchors: include the anchor–anchor candidates.
        contrast_positives: include the positive–positive candidates.
        deduplicate: remove candidates whose input equals the anchor's or the positive's.
    """

    def __init__(
        self,
        model: SentenceTransformer | nn.Module,
        guide: SentenceTransformer | nn.Module,
        temperature: float | Tensor = 0.01,
        margin_strategy: str = "absolute",
        margin: float = 0.0,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        *,
        deduplicate: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.guide = guide
        self.temperature = module_temperature(temperature)
        if margin_strategy not in MARGIN_STRATEGIES:
            raise ValueError(f"GISTLoss: margin_strategy must be one of {MARGIN_STRATEGIES}, got {margin_strategy!r}")
        self.margin_strategy = margin_strategy
        self.margin = check_finite_scalar("margin", margin)
        self.contrast_anchors = bool(contrast_anchors)
        self.contrast_positives = bool(contrast_positives)
        self.deduplicate = bool(deduplicate)
        self.skipped_anchors = 0
        self.must_retokenize = _must_retokenize(model, guide)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """The scalar loss of a batch of 2 or 3 tokenised columns (``labels`` are ignored)."""
        features = list(sentence_features)
        if len(features) not in (2, 3):
            raise ValueError(f"GISTLoss takes 2 or 3 columns (anchor, positive[, negative]), got {len(features)}")
        keys = [token_keys(column) for column in features] if self.deduplicate else [None] * len(features)
        guide_features = [dict(column) for column in features]  # the guide may write into its features
        embeddings = _embed_columns(self.model, features)
        with torch.no_grad():
            if self.must_retokenize:
                guide_features = [self._retokenized(column) for column in features]
            guide_embeddings = _embed_columns(self.guide, guide_features)
        anchor, positive, *negative = embeddings
        guide_anchor, guide_positive, *guide_negative = (g.to(anchor.device) for g in guide_embeddings)
        with count_skipped() as skipped:
            loss = gist(
                anchor,
                positive,
                guide_anchor,
                guide_positive,
                negative[0] if negative else None,
                guide_negative[0] if guide_negative else None,
                temperature=self.temperature,
                margin=self.margin,
                margin_strategy=self.margin_strategy,
                contrast_anchors=self.contrast_anchors,
                contrast_positives=self.contrast_positives,
                anchor_keys=keys[0],
                positive_keys=keys[1],
                negative_keys=keys[2] if negative else None,
            )
        self.skipped_anchors = skipped.anchors
        return loss

    def _retokenized(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        texts = self.model.tokenizer.batch_decode(list(token_keys(features)), skip_special_tokens=True)
        tokenise = getattr(self.guide, "preprocess", None) or self.guide.tokenize
        device = next(self.guide.parameters()).device
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in tokenise(texts).items()}

    def get_config_dict(self) -> dict[str, Any]:
        """The hyper-parameters, for the model card."""
        temperature = self.temperature
        return {
            "guide": type(self.guide).__name__,
            "temperature": float(temperature.detach()) if isinstance(temperature, Tensor) else temperature,
            "margin_strategy": self.margin_strategy,
            "margin": self.margin,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
            "deduplicate": self.deduplicate,
        }

    @property
    def citation(self) -> str:
        """BibTeX of GISTEmbed (Solatorio, 2024)."""
        return _GIST_BIBTEX


def _must_retokenize(model: nn.Module, guide: nn.Module) -> bool:
    """Whether the guide needs its own tokens: a different vocabulary or a shorter ``max_seq_length``."""
    if guide is model:
        return False
    model_tokenizer, guide_tokenizer = getattr(model, "tokenizer", None), getattr(guide, "tokenizer", None)
    if model_tokenizer is None or guide_tokenizer is None:
        return False
    if model_tokenizer.get_vocab() != guide_tokenizer.get_vocab():
        return True
    return getattr(guide, "max_seq_length", 0) < getattr(model, "max_seq_length", 0)
