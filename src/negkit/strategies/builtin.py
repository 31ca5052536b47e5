"""The built-in strategies: self-supervised (simclr, dcl, hucl) and supervised (supcon, scl, hscl).

Each one builds its loss by name from :mod:`negkit.losses.registry` and takes its default hyper-parameters
from that name's defaults, so ``create_strategy("hucl")`` and ``create_loss("hucl")`` are the same loss.
All see in-batch negatives only: for two views ``z1, z2 [B, d]`` each anchor sees (at most) the other views
of the batch, as each loss's docstring details.
"""

from __future__ import annotations

import torch
from torch import Tensor

from negkit.losses import get_loss, hard_nce
from negkit.negatives import HardnessSampler, NegativeSampler
from negkit.strategies.registry import StrategyLoss, register_strategy

_SIMCLR = get_loss("simclr")  # symmetric_info_nce
_DCL = get_loss("dcl")
_HUCL = get_loss("hucl")
_SUPCON = get_loss("sup_con")
_HSCL = get_loss("hscl")


@register_strategy("simclr", "InfoNCE with in-batch negatives, both directions (UCL)", uses_labels=False)
class SimCLR(StrategyLoss):
    """``symmetric_info_nce``: ``z1[i]`` sees the other ``B − 1`` rows of ``z2``, and ``z2[i]`` those of ``z1``."""

    def __init__(self, temperature: float = _SIMCLR.defaults["temperature"]) -> None:
        super().__init__()
        self.temperature = temperature
        self.loss = _SIMCLR.create(temperature=temperature)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return self.loss(z1, z2)


@register_strategy("scl", "InfoNCE whose same-class in-batch negatives are removed (SCL)", uses_labels=True)
class SCL(StrategyLoss):
    """``symmetric_info_nce`` with labels: as simclr, minus the rows that share the anchor's label."""

    masks_same_label_negatives = True

    def __init__(self, temperature: float = _SIMCLR.defaults["temperature"]) -> None:
        super().__init__()
        self.temperature = temperature
        self.loss = _SIMCLR.create(temperature=temperature)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return self.loss(z1, z2, labels=labels)


@register_strategy("dcl", "decoupled contrastive loss: the positive leaves the denominator", uses_labels=False)
class DCLStrategy(StrategyLoss):
    """``dcl`` (``sigma`` set: DCLW): each view sees the ``2B − 2`` other views of the batch."""

    def __init__(
        self, temperature: float = _DCL.defaults["temperature"], sigma: float | None = _DCL.defaults["sigma"]
    ) -> None:
        super().__init__()
        self.temperature, self.sigma = temperature, sigma
        self.loss = _DCL.create(temperature=temperature, sigma=sigma)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return self.loss(z1, z2)


@register_strategy("hucl", "hard negatives without labels: hardness tilt beta, debiasing tau_plus", uses_labels=False)
class HUCL(StrategyLoss):
    """``hucl``: each view sees the ``2B − 2`` other views, re-weighted ∝ ``e^{β·s/T}``."""

    def __init__(
        self,
        temperature: float = _HUCL.defaults["temperature"],
        beta: float = _HUCL.defaults["beta"],
        tau_plus: float = _HUCL.defaults["tau_plus"],
    ) -> None:
        super().__init__()
        self.temperature, self.beta, self.tau_plus = temperature, beta, tau_plus
        self.loss = _HUCL.create(temperature=temperature, beta=beta, tau_plus=tau_plus)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return self.loss(z1, z2)

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        # HCL weights negatives by exp(beta * s / T): the same tilt as sampling with beta / T on the cosine.
        return HardnessSampler(batch_size - 1, self.beta / self.temperature)

    @torch.no_grad()
    def diagnostics(self, z1: Tensor, z2: Tensor, labels: Tensor) -> dict[str, float]:
        """The four losses of Jiang et al.'s check of L_H-SCL <= L_H-UCL, as their verification script logs
        them while training with H-UCL: weights detached, the other view as the only positive."""
        common = dict(temperature=self.temperature, detach_weights=True)
        return {
            "ucl": float(hard_nce(z1, z2, beta=0.0, **common)),
            "hucl": float(hard_nce(z1, z2, beta=self.beta, **common)),
            "scl": float(hard_nce(z1, z2, labels, beta=0.0, positives="view", **common)),
            "hscl": float(hard_nce(z1, z2, labels, beta=self.beta, positives="view", **common)),
        }


@register_strategy("supcon", "supervised contrastive loss L_out over both views", uses_labels=True)
class SupConStrategy(StrategyLoss):
    """``sup_con`` over the ``2B`` views: same-label views are positives, every other view is in the denominator."""

    masks_same_label_negatives = True

    def __init__(self, temperature: float = _SUPCON.defaults["temperature"]) -> None:
        super().__init__()
        self.temperature = temperature
        self.loss = _SUPCON.create(temperature=temperature)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return self.loss(torch.cat([z1, z2]), torch.cat([labels, labels]))


@register_strategy("hscl", "hard negatives of other classes only: H-SCL with hardness beta", uses_labels=True)
class HSCL(StrategyLoss):
    """``hscl``: same-label views are positives; only views of other classes are negatives, tilted ∝ ``e^{β·s/T}``."""

    masks_same_label_negatives = True

    def __init__(
        self, temperature: float = _HSCL.defaults["temperature"], beta: float = _HSCL.defaults["beta"]
    ) -> None:
        super().__init__()
        self.temperature, self.beta = temperature, beta
        self.loss = _HSCL.create(temperature=temperature, beta=beta)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return self.loss(z1, z2, labels)

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        return HardnessSampler(batch_size - 1, self.beta / self.temperature, class_conditional=True)
