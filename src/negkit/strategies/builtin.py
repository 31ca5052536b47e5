"""The built-in strategies: self-supervised (simclr, dcl, hucl) and supervised (supcon, scl, hscl)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit.losses import dcl, hard_nce, info_nce, sup_con
from negkit.negatives import HardnessSampler, NegativeSampler
from negkit.strategies.registry import StrategyLoss, register_strategy


@register_strategy("simclr", "InfoNCE with in-batch negatives, both directions (UCL)", uses_labels=False)
class SimCLR(StrategyLoss):
    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return info_nce(z1, z2, temperature=self.temperature, symmetric=True)


@register_strategy("scl", "InfoNCE whose same-class in-batch negatives are removed (SCL)", uses_labels=True)
class SCL(StrategyLoss):
    masks_same_label_negatives = True

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return info_nce(z1, z2, temperature=self.temperature, labels=labels, symmetric=True)


@register_strategy("dcl", "decoupled contrastive loss: the positive leaves the denominator", uses_labels=False)
class DCLStrategy(StrategyLoss):
    def __init__(self, temperature: float = 0.1, sigma: float | None = None) -> None:
        super().__init__()
        self.temperature, self.sigma = temperature, sigma

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return dcl(z1, z2, temperature=self.temperature, sigma=self.sigma)


@register_strategy("hucl", "hard negatives without labels: hardness tilt beta, debiasing tau_plus", uses_labels=False)
class HUCL(StrategyLoss):
    def __init__(self, temperature: float = 0.1, beta: float = 0.5, tau_plus: float = 0.0) -> None:
        super().__init__()
        self.temperature, self.beta, self.tau_plus = temperature, beta, tau_plus

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return hard_nce(z1, z2, temperature=self.temperature, beta=self.beta, tau_plus=self.tau_plus)

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
    masks_same_label_negatives = True

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return sup_con(torch.cat([z1, z2]), torch.cat([labels, labels]), temperature=self.temperature)


@register_strategy("hscl", "hard negatives of other classes only: H-SCL with hardness beta", uses_labels=True)
class HSCL(StrategyLoss):
    masks_same_label_negatives = True

    def __init__(self, temperature: float = 0.1, beta: float = 0.5) -> None:
        super().__init__()
        self.temperature, self.beta = temperature, beta

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return hard_nce(z1, z2, labels, temperature=self.temperature, beta=self.beta)

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        return HardnessSampler(batch_size - 1, self.beta / self.temperature, class_conditional=True)
