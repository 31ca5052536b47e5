"""Guided in-batch false-negative filtering: GISTEmbed (Solatorio, 2024, arXiv 2402.16829), with the margins of
sentence-transformers' ``GISTEmbedLoss`` (``margin_strategy``, PR #3299; sign-independent relative margin, #3821).

A frozen *guide* model scores the same batch. For anchor ``i`` the guide's anchor–positive cosine
``g_i = cos_g(a_i, p_i)`` sets a threshold ``t_i``; every in-batch candidate ``c`` that the guide scores above it,
``cos_g(x_i, c) > t_i``, is treated as a likely false negative and leaves anchor ``i``'s denominator:

* ``margin_strategy="absolute"``: ``t_i = g_i − margin``;
* ``margin_strategy="relative"``: ``t_i = g_i − |g_i| · margin`` (``= g_i (1 − margin)`` when ``g_i ≥ 0``; the
  absolute value keeps the threshold below ``g_i`` when the guide's positive score is negative).

Candidates whose *input* equals the anchor's or its positive's input (equal ids or texts, ``*_keys``) leave too:
two copies of a text embed differently under dropout, so equal embeddings cannot detect duplicates
(sentence-transformers #2756, PR #3260).

The loss is InfoNCE through the core (:func:`~negkit.losses.functional.core.nce_rows`): no softmax arithmetic here.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_features,
    check_finite_scalar,
    check_pair,
    check_positive_scalar,
    check_reduction,
    normalize_rows,
)
from negkit.losses.functional.core import compute_dtype, nce_rows, reduce_loss, similarity_logits, skip_anchors

MARGIN_STRATEGIES = ("absolute", "relative")

Keys = Tensor | Sequence[Hashable]


def guide_threshold(guide_positive_scores: Tensor, margin: float, margin_strategy: str) -> Tensor:
    """The threshold ``t_i`` above which the guide removes a candidate: ``g − margin`` (absolute) or
    ``g − |g| · margin`` (relative), elementwise on the guide's anchor–positive cosines ``g``."""
    if margin_strategy == "absolute":
        return guide_positive_scores - margin
    if margin_strategy == "relative":
        return guide_positive_scores - guide_positive_scores.abs() * margin
    raise ValueError(f"margin_strategy must be one of {MARGIN_STRATEGIES}, got {margin_strategy!r}")


def _guide_cosine(x: Tensor, y: Tensor) -> Tensor:
    dtype = compute_dtype(x.dtype)
    with torch.no_grad():
        return normalize_rows(x.detach().to(dtype)) @ normalize_rows(y.detach().to(dtype)).T


def _key_codes(columns: list[tuple[str, Keys | None, int]]) -> list[Tensor] | None:
    """Integer codes of the key columns, equal codes for equal values across all columns; ``None`` if no keys."""
    given = [name for name, keys, _ in columns if keys is not None]
    if not given:
        return None
    missing = [name for name, keys, _ in columns if keys is None]
    if missing:
        raise ValueError(
            f"duplicate detection needs keys for every input: {', '.join(given)} given but not {', '.join(missing)}"
        )
    table: dict[Hashable, int] = {}
    codes = []
    for name, keys, length in columns:
        if isinstance(keys, Tensor):
            if keys.dim() != 1 or keys.is_floating_point() or keys.is_complex():
                raise ValueError(f"{name} must be a 1-D tensor of integer ids, got {keys.dtype} {tuple(keys.shape)}")
            values = keys.tolist()
        elif isinstance(keys, str | bytes):
            raise ValueError(f"{name} must be a sequence of keys (one per row), got a single {type(keys).__name__}")
        else:
            values = list(keys)
        if len(values) != length:
            raise ValueError(f"{name} must have one key per row ({length}), got {len(values)}")
        try:
            codes.append(torch.tensor([table.setdefault(value, len(table)) for value in values], dtype=torch.int64))
        except TypeError as error:
            raise ValueError(f"{name} must hold hashable keys (ids or texts): {error}") from None
    return codes


def gist(
    anchor: Tensor,
    positive: Tensor,
    guide_anchor: Tensor,
    guide_positive: Tensor,
    negatives: Tensor | None = None,
    guide_negatives: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.01,
    margin: float = 0.0,
    margin_strategy: str = "absolute",
    contrast_anchors: bool = True,
    contrast_positives: bool = True,
    anchor_keys: Keys | None = None,
    positive_keys: Keys | None = None,
    negative_keys: Keys | None = None,
    reduction: str = "mean",
) -> Tensor:
    """GISTEmbed's guided InfoNCE (Solatorio, 2024): in-batch negatives filtered by a guide model's scores.

    For anchor ``i`` with positive ``p_i``, cosine logits ``l(x, y) = cos(x, y) / T`` of the trained embeddings::

        ℓ_i = −log( e^{l(a_i, p_i)} / ( e^{l(a_i, p_i)} + Σ_{(x, c) ∈ C(i)} e^{l(x, c)} ) )

    Which negatives anchor ``i`` sees, ``C(i)`` (the blocks of sentence-transformers' ``GISTEmbedLoss``):

    * ``(a_i, p_j)`` for every ``j ≠ i`` (anchor–positive);
    * ``(a_i, a_j)`` for ``j ≠ i`` when ``contrast_anchors`` (anchor–anchor);
    * ``(p_i, p_j)`` for ``j ≠ i`` when ``contrast_positives`` (positive–positive);
    * ``(a_i, n_k)`` for every row of ``negatives`` (shared by all anchors, as the third column of a batch of
      triplets is in sentence-transformers);

    minus every candidate the guide scores above the threshold, ``cos_g(x, c) > t_i`` with
    ``t_i = g_i − margin`` (absolute) or ``g_i − |g_i|·margin`` (relative), ``g_i = cos_g(a_i, p_i)`` the guide's
    score of the positive pair, computed on the guide embeddings (no gradient); minus, when keys are given, every
    candidate whose key equals ``anchor_keys[i]`` or ``positive_keys[i]`` (a duplicate input: the same text or
    id). The positive ``p_i`` itself always stays.

    ``margin = 0`` (absolute) removes the candidates the guide finds *more* similar than the positive; a larger
    margin removes more. The mean equals ``GISTEmbedLoss`` on the same embeddings, except that an anchor with no
    candidate left is skipped (left out of the mean, loss 0; :func:`negkit.losses.strict` raises), where
    sentence-transformers counts its zero loss in the mean.

    Args:
        anchor: ``[B,d]`` trained embeddings of the anchors.
        positive: ``[B,d]``; row i is anchor i's positive.
        guide_anchor: ``[B,d_g]`` the guide model's embeddings of the same anchors (any ``d_g``, any float dtype).
        guide_positive: ``[B,d_g]`` the guide's embeddings of the positives.
        negatives: optional ``[N,d]`` extra candidates for every anchor (e.g. the batch's hard negatives,
            flattened).
        guide_negatives: ``[N,d_g]``, needed exactly when ``negatives`` is given.
        temperature: T > 0 (sentence-transformers' default 0.01); a float or a scalar tensor, may be learnable.
        margin: finite; see the thresholds above.
        margin_strategy: ``"absolute"`` or ``"relative"``.
        contrast_anchors: include the anchor–anchor block.
        contrast_positives: include the positive–positive block.
        anchor_keys, positive_keys, negative_keys: optional ids or texts of the inputs (``[B]``, ``[B]``, ``[N]``:
            an int tensor or a sequence of hashables; values are compared across the three), for duplicate
            removal. Give all that apply or none.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``, 0 for a skipped anchor).

    Raises:
        ValueError: shape, dtype or device mismatches, non-finite inputs, a temperature ≤ 0, a non-finite margin, an
            unknown margin strategy or reduction, negatives without guide negatives (or the reverse), keys of the
            wrong length or given for only some inputs; in strict mode an empty batch or an anchor with no
            candidate left.
    """
    check_positive_scalar("temperature", temperature)
    margin = check_finite_scalar("margin", margin)
    if margin_strategy not in MARGIN_STRATEGIES:
        raise ValueError(f"margin_strategy must be one of {MARGIN_STRATEGIES}, got {margin_strategy!r}")
    check_reduction(reduction)
    check_pair(anchor, positive)
    check_pair(guide_anchor, guide_positive, ("guide_anchor", "guide_positive"))
    batch, dim = anchor.shape
    if guide_anchor.shape[0] != batch:
        raise ValueError(f"guide_anchor must have {batch} rows (those of anchor), got {guide_anchor.shape[0]}")
    if (negatives is None) != (guide_negatives is None):
        raise ValueError("negatives and guide_negatives go together: give both or neither")
    if negatives is not None:
        check_features("negatives", negatives, 2)
        check_compatible("anchor", anchor, negatives=negatives)
        if negatives.shape[1] != dim:
            raise ValueError(f"negatives must have {dim} features (those of anchor), got {negatives.shape[1]}")
        check_features("guide_negatives", guide_negatives, 2)
        if tuple(guide_negatives.shape) != (negatives.shape[0], guide_anchor.shape[1]):
            raise ValueError(
                f"guide_negatives must have shape [{negatives.shape[0]}, {guide_anchor.shape[1]}] (rows of negatives, "
                f"features of guide_anchor), got {tuple(guide_negatives.shape)}"
            )
    for name, guide in (("guide_anchor", guide_anchor), ("guide_negatives", guide_negatives)):
        if guide is not None and guide.device != anchor.device:
            raise ValueError(f"{name} is on {guide.device} but anchor is on {anchor.device}; move them together")
    num_negatives = 0 if negatives is None else negatives.shape[0]
    columns: list[tuple[str, Keys | None, int]] = [
        ("anchor_keys", anchor_keys, batch),
        ("positive_keys", positive_keys, batch),
    ]
    if negatives is not None:
        columns.append(("negative_keys", negative_keys, num_negatives))
    elif negative_keys is not None:
        raise ValueError("negative_keys was given but negatives is None")
    codes = _key_codes(columns)

    rows = torch.arange(batch, device=anchor.device)
    not_self = rows.unsqueeze(0) != rows.unsqueeze(1)
    guide_ap = _guide_cosine(guide_anchor, guide_positive)
    threshold = guide_threshold(guide_ap.diagonal().unsqueeze(1), margin, margin_strategy)
    if codes is not None:
        anchor_code, positive_code = (code.to(anchor.device) for code in codes[:2])

    def kept(guide_scores: Tensor, candidate_code: Tensor | None) -> Tensor:
        keep = ~(guide_scores > threshold)
        if candidate_code is not None:
            same = (candidate_code.unsqueeze(0) == anchor_code.unsqueeze(1)) | (
                candidate_code.unsqueeze(0) == positive_code.unsqueeze(1)
            )
            keep = keep & ~same
        return keep.to(anchor.device)

    ap = similarity_logits(anchor, positive, temperature, names="anchor, positive")
    logits = [ap]
    masks = [kept(guide_ap, None if codes is None else positive_code) & not_self]  # p_i enters as the positive
    if contrast_anchors:
        logits.append(similarity_logits(anchor, anchor, temperature, names="anchor, anchor"))
        masks.append(kept(_guide_cosine(guide_anchor, guide_anchor), None if codes is None else anchor_code) & not_self)
    if contrast_positives:
        logits.append(similarity_logits(positive, positive, temperature, names="positive, positive"))
        guide_pp = _guide_cosine(guide_positive, guide_positive)
        masks.append(kept(guide_pp, None if codes is None else positive_code) & not_self)
    if negatives is not None:
        logits.append(similarity_logits(anchor, negatives, temperature, names="anchor, negatives"))
        negative_code = None if codes is None else codes[2].to(anchor.device)
        masks.append(kept(_guide_cosine(guide_anchor, guide_negatives), negative_code))

    out = nce_rows(ap.diagonal().unsqueeze(1), torch.cat(logits, dim=1), negative_mask=torch.cat(masks, dim=1))
    skipped = skip_anchors(
        batch,
        no_negative=out.no_negative,
        context="the guide or duplicate keys removed every in-batch candidate",
        empty="anchor",
    )
    return reduce_loss(out.loss, reduction, skipped=skipped)
