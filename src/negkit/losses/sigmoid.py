"""The SigLIP loss as a module: its learnable scale and bias live here (the math is
:func:`negkit.losses.functional.siglip`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from negkit._validation import check_finite_scalar, check_int, check_positive_scalar, check_reduction
from negkit.losses.functional.siglip import siglip, siglip_distributed
from negkit.losses.modules import SkipCounting

__all__ = ["SigLIP"]


class SigLIP(SkipCounting):
    """SigLIP's pairwise sigmoid loss with a learnable scale and bias (Zhai et al., ICCV 2023, arXiv 2303.15343).

    ``forward(anchor [B,d], positive [B,d], labels=None)`` is :func:`negkit.losses.siglip` with this module's
    ``t = exp(log_logit_scale)`` (clamped to ``max_logit_scale``) and ``b = logit_bias``: anchor ``i`` sees every
    positive ``p_j`` as one logistic term, a positive pair for ``j = i`` (or equal ``labels``), a negative otherwise.

    The published initialisation is the default: ``t = 10`` (the paper's ``t' = log 10``) and ``b = −10``, so
    that at the start every pair, the ``B − 1`` negatives of a row included, is predicted negative and the loss
    is small. The scale is stored as its log (``log_logit_scale``, a parameter like CLIP's ``logit_scale``), so
    gradient steps keep it positive; with ``max_logit_scale`` the forward uses ``min(t, max)`` (CLIP's clamp at
    100, openai/CLIP#46), with a zero gradient on the scale while it is clamped. Both are in ``state_dict``; with
    ``learnable=False`` they are buffers (saved, not trained).

    Args:
        logit_scale: the initial multiplier ``t > 0`` (10).
        logit_bias: the initial bias ``b`` (−10).
        max_logit_scale: the clamp of ``t`` (100); ``None`` for none.
        learnable: ``nn.Parameter`` (``True``) or buffers.
        chunk_size: column tiles (``None``: the ``[B,B]`` logits at once); see :func:`negkit.losses.siglip`.
        distributed: exchange candidate blocks with the other ranks (:func:`negkit.losses.siglip_distributed`);
            with one process it changes nothing.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(
        self,
        logit_scale: float = 10.0,
        logit_bias: float = -10.0,
        *,
        max_logit_scale: float | None = 100.0,
        learnable: bool = True,
        chunk_size: int | None = None,
        distributed: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        scale = check_positive_scalar("logit_scale", logit_scale)
        bias = check_finite_scalar("logit_bias", logit_bias)
        if max_logit_scale is not None:
            max_logit_scale = check_positive_scalar("max_logit_scale", max_logit_scale)
        if chunk_size is not None:
            chunk_size = check_int("chunk_size", chunk_size, low=1)
        check_reduction(reduction)
        log_scale = torch.tensor(math.log(scale))
        bias_tensor = torch.tensor(bias)
        if learnable:
            self.log_logit_scale = nn.Parameter(log_scale)
            self.logit_bias = nn.Parameter(bias_tensor)
        else:
            self.register_buffer("log_logit_scale", log_scale)
            self.register_buffer("logit_bias", bias_tensor)
        self.max_logit_scale = max_logit_scale
        self.learnable = bool(learnable)
        self.chunk_size = chunk_size
        self.distributed = bool(distributed)
        self.reduction = reduction

    @property
    def logit_scale(self) -> Tensor:
        """The multiplier ``t`` the loss uses now: ``exp(log_logit_scale)``, clamped to ``max_logit_scale``."""
        log_scale = self.log_logit_scale
        if self.max_logit_scale is not None:
            log_scale = log_scale.clamp(max=math.log(self.max_logit_scale))
        return log_scale.exp()

    def forward(self, anchor: Tensor, positive: Tensor, labels: Tensor | None = None) -> Tensor:
        function = siglip_distributed if self.distributed else siglip
        return self.counted(
            function,
            anchor,
            positive,
            logit_scale=self.logit_scale,
            logit_bias=self.logit_bias,
            labels=labels,
            chunk_size=self.chunk_size,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"logit_scale={float(self.logit_scale.detach()):.4g}, logit_bias={float(self.logit_bias.detach()):.4g}, "
            f"max_logit_scale={self.max_logit_scale}, learnable={self.learnable}, chunk_size={self.chunk_size}, "
            f"distributed={self.distributed}, reduction={self.reduction!r}"
        )
