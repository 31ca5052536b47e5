"""Pair-adaptive, head-wise temperatures: AMCL (Wang, Koniusz, Gedeon, Zheng; ECCV 2024, arXiv 2310.05615)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import check_compatible, check_features, check_finite_scalar, check_reduction, check_tensor
from negkit.losses.functional.core import (
    fold_skipped_views,
    nce_rows,
    reduce_loss,
    similarity_logits,
    skip_anchors,
)


def _heads(name: str, z: Tensor) -> Tensor:
    """``[B,d]`` (one head) or ``[B,C,d]`` as ``[B,C,d]``."""
    check_features(name, z, (2, 3))
    return z.unsqueeze(1) if z.dim() == 2 else z


def amcl(
    z1: Tensor,
    z2: Tensor,
    temperatures: Tensor,
    *,
    beta: float = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """AMCL as negkit implements it: NT-Xent in each projection head with a temperature per pair, averaged over
    heads, plus AMCL's temperature regulariser.

    Views are stacked as ``Z = [z1; z2]`` (``2B`` rows). In head ``c``, with ``τ_c,ij = temperatures[c, i, j]``::

        l_c,ij = cos(Z_c,i, Z_c,j) / τ_c,ij
        ℓ_c,i  = −l_c,ii' + log Σ_{j ≠ i} e^{l_c,ij}                     (i' the other view of i)
        R_c,i  = mean_{j ≠ i} [ (D/2) log τ_c,ij + 1/τ_c,ij ],  D = 2B (the columns of the head's matrix)
        loss_i = mean_c ℓ_c,i + β · mean_c R_c,i                           (each sample: mean of its two views)

    Which negatives each view sees: the ``2B − 2`` other views, in every head. What comes from AMCL: the
    pair-adaptive, head-wise temperature (:class:`negkit.losses.AMCL` makes ``τ = τ_lo + (τ_hi − τ_lo)·
    σ(MLP_c([z_i; z_j]))``, the official code's form) and the regulariser ``β·mean((D/2) log τ + 1/τ)`` with
    β = 0.1 (the official code takes ``D`` as the number of columns of its similarity matrix). What is negkit's
    own: the paper's loss (its Table 2, an MLE over head-wise posteriors) was only available as an image and was
    not read, and the official SimCLR demo loss does not match it, so negkit uses each head's NT-Xent with the
    adaptive logits, averaged over the heads.

    A batch of one sample has no negative: 0 with a zero gradient (both views counted as skipped); strict
    mode raises.

    Args:
        z1, z2: ``[B,C,d]`` the two views' projections in ``C`` heads, or ``[B,d]`` (one head).
        temperatures: ``[C, 2B, 2B]`` positive temperatures of every ordered pair of views in each head (the
            diagonal is not used).
        beta: β ≥ 0, the regulariser's weight (0.1).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).
    """
    beta_value = check_finite_scalar("beta", beta, low=0.0)
    check_reduction(reduction)
    z1, z2 = _heads("z1", z1), _heads("z2", z2)
    if z1.shape != z2.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got {tuple(z2.shape)}")
    check_compatible("z1", z1, z2=z2)
    batch, heads = z1.shape[0], z1.shape[1]
    if heads < 1:
        raise ValueError(f"z1 must have at least one head (dimension 1 of [B,C,d]), got shape {tuple(z1.shape)}")
    views = 2 * batch
    check_tensor("temperatures", temperatures, 3)
    if tuple(temperatures.shape) != (heads, views, views):
        raise ValueError(f"temperatures must have shape [{heads}, {views}, {views}], got {tuple(temperatures.shape)}")
    if not bool((temperatures > 0).all()):
        raise ValueError("temperatures must be > 0")
    stacked = torch.cat([z1, z2], dim=0).transpose(0, 1)  # [C, 2B, d]
    cosine = torch.stack([similarity_logits(head, head, 1.0) for head in stacked.unbind(0)])  # [C, 2B, 2B]
    tau = temperatures.to(cosine.dtype)
    logits = cosine / tau
    index = torch.arange(views, device=z1.device)
    partner = (index + batch) % max(views, 1)
    not_self = index.unsqueeze(0) != index.unsqueeze(1)
    negative = not_self.clone()
    negative[index, partner] = False
    per_head = []
    no_negative = None
    for c in range(heads):
        positive = logits[c, index, partner].unsqueeze(1)
        rows = nce_rows(positive, logits[c], negative_mask=negative, include_positive=True)
        per_head.append(rows.loss)
        no_negative = rows.no_negative
    view_loss = torch.stack(per_head).mean(dim=0)
    regulariser = (0.5 * views) * torch.log(tau) + 1.0 / tau  # [C, 2B, 2B]
    pairs = max(views - 1, 1)
    view_reg = torch.where(not_self, regulariser, torch.zeros_like(regulariser)).sum(dim=2).mean(dim=0) / pairs
    view_loss = view_loss + beta_value * view_reg
    skipped = skip_anchors(
        views, no_negative=no_negative, context="a batch of one sample has no other views", empty="z1"
    )
    per_sample, skipped = fold_skipped_views(view_loss, skipped)
    return reduce_loss(per_sample, reduction, skipped=skipped)
