"""The GISTEmbed loss as a module: :class:`GIST` (see :func:`negkit.losses.functional.guided.gist`)."""

from __future__ import annotations

from torch import Tensor

from negkit._validation import check_finite_scalar, check_reduction
from negkit.losses.functional.guided import MARGIN_STRATEGIES, Keys, gist
from negkit.losses.modules import SkipCounting, module_temperature


class GIST(SkipCounting):
    """GISTEmbed's guided InfoNCE (Solatorio, 2024): in-batch candidates that a guide model scores above the positive
    (minus a margin) leave the denominator, and so do inputs equal to the anchor's or the positive's (keys).

    ``forward(anchor [B,d], positive [B,d], guide_anchor [B,d_g], guide_positive [B,d_g], negatives=None | [N,d],
    guide_negatives=None | [N,d_g], *, anchor_keys=None, positive_keys=None, negative_keys=None)``; the guide
    embeddings come from a frozen model (no gradient flows into them). A learnable ``temperature`` (an
    ``nn.Parameter``) is registered and saved in ``state_dict``.
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.01,
        *,
        margin: float = 0.0,
        margin_strategy: str = "absolute",
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.temperature = module_temperature(temperature)
        self.margin = check_finite_scalar("margin", margin)
        if margin_strategy not in MARGIN_STRATEGIES:
            raise ValueError(f"margin_strategy must be one of {MARGIN_STRATEGIES}, got {margin_strategy!r}")
        self.margin_strategy = margin_strategy
        self.contrast_anchors = bool(contrast_anchors)
        self.contrast_positives = bool(contrast_positives)
        check_reduction(reduction)
        self.reduction = reduction

    def forward(
        self,
        anchor: Tensor,
        positive: Tensor,
        guide_anchor: Tensor,
        guide_positive: Tensor,
        negatives: Tensor | None = None,
        guide_negatives: Tensor | None = None,
        *,
        anchor_keys: Keys | None = None,
        positive_keys: Keys | None = None,
        negative_keys: Keys | None = None,
    ) -> Tensor:
        return self.counted(
            gist,
            anchor,
            positive,
            guide_anchor,
            guide_positive,
            negatives,
            guide_negatives,
            temperature=self.temperature,
            margin=self.margin,
            margin_strategy=self.margin_strategy,
            contrast_anchors=self.contrast_anchors,
            contrast_positives=self.contrast_positives,
            anchor_keys=anchor_keys,
            positive_keys=positive_keys,
            negative_keys=negative_keys,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature!r}, margin={self.margin}, margin_strategy={self.margin_strategy!r}, "
            f"contrast_anchors={self.contrast_anchors}, contrast_positives={self.contrast_positives}, "
            f"reduction={self.reduction!r}"
        )
