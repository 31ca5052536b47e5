"""Momentum (EMA) key encoders: the key encoder of MoCo (He et al., "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020; MoCo v2: Chen et al., 2020) and the target network of BYOL (Grill et al.,
NeurIPS 2020).

The key encoder is a copy of the online encoder that is never trained by gradient: after every optimiser step of
the online encoder ``θ_q`` it moves towards it, ``θ_k ← m·θ_k + (1 − m)·θ_q`` (MoCo eq. 2). A large ``m`` (0.99,
0.999) makes the keys change slowly, so keys computed at different steps (a queue of past batches) stay
consistent with each other. The momentum may stay constant (MoCo) or rise from ``m0`` to 1 along a cosine over
training (BYOL eq. in §3.2, also used by MoCo v3): ``m_t = 1 − (1 − m0)·(cos(π t / T) + 1) / 2``.

**Batch normalisation.** MoCo shuffles the key batch across GPUs ("shuffle BN") so that a query and its positive
key are not normalised with the statistics of the same samples (a shortcut the model can learn). negkit trains on
one process and has no shuffle. :class:`MomentumEncoder` offers two modes:

* ``bn="batch"`` (the default): the key encoder runs in train mode and normalises each key batch with that
  batch's own statistics (its running statistics update but are not used);
* ``bn="running"``: the key encoder runs in eval mode with running statistics that follow the online encoder's
  by the same EMA as the weights (``update_momentum(..., buffers=True)``).

``docs/results.md`` (section *momentum*) measures both on MNIST-5000 and digits.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from negkit._validation import check_finite_scalar, check_int

MOMENTUM_SCHEDULES = ("constant", "cosine")
BN_MODES = ("batch", "running")


@torch.no_grad()
def update_momentum(model: nn.Module, ema_model: nn.Module, m: float, *, buffers: bool = False) -> None:
    """``ema ← m·ema + (1 − m)·model`` for every parameter of ``ema_model`` (in place, no gradient).

    ``model`` and ``ema_model`` must have the same architecture (parameters matched in order, same shapes).
    ``m = 1`` leaves ``ema_model`` unchanged, ``m = 0`` copies ``model``. With ``buffers``, floating-point
    buffers (batch-norm running statistics) follow the same EMA and the other buffers (``num_batches_tracked``)
    are copied; by default buffers are left alone (as lightly's ``update_momentum``).

    Raises:
        ValueError: ``m`` outside ``[0, 1]`` or the two modules do not match.
    """
    m = check_finite_scalar("m", m, low=0.0, high=1.0)
    pairs = [(list(model.parameters()), list(ema_model.parameters()), "parameters")]
    if buffers:
        pairs.append((list(model.buffers()), list(ema_model.buffers()), "buffers"))
    for source, target, kind in pairs:
        if len(source) != len(target) or any(s.shape != t.shape for s, t in zip(source, target, strict=True)):
            raise ValueError(f"model and ema_model must have the same {kind} (same architecture)")
    for source, target, _ in pairs:
        for online, ema in zip(source, target, strict=True):
            if ema.is_floating_point():
                ema.mul_(m).add_(online.detach().to(ema.dtype), alpha=1.0 - m)
            else:
                ema.copy_(online)


def momentum_at(step: int, total_steps: int | None, base: float, schedule: str = "constant") -> float:
    """The momentum at ``step`` (0-based) of ``total_steps``: ``base`` (``"constant"``), or the cosine rise
    ``1 − (1 − base)·(cos(π·step/total_steps) + 1)/2`` from ``base`` at step 0 to 1 at the last step
    (``"cosine"``, BYOL); past ``total_steps`` it stays at 1."""
    if schedule not in MOMENTUM_SCHEDULES:
        raise ValueError(f"momentum schedule must be one of {MOMENTUM_SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return base
    if not total_steps:
        raise ValueError("the cosine momentum schedule needs total_steps >= 1")
    progress = min(1.0, step / total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class MomentumEncoder(nn.Module):
    """A key encoder that follows ``model`` by EMA (MoCo's momentum encoder); no parameter takes a gradient.

    Args:
        model: the online encoder; it is deep-copied now (call this right after initialising it, so that both
            start from the same weights).
        momentum: ``m`` of the EMA (the starting value ``m0`` with the cosine schedule), in ``[0, 1]``.
        schedule: ``"constant"`` or ``"cosine"`` (from ``momentum`` to 1 over ``total_steps`` updates).
        total_steps: updates in the whole training (needed by ``"cosine"``).
        bn: ``"batch"`` (train mode, each key batch's own statistics) or ``"running"`` (eval mode, running
            statistics EMA'd from the online encoder's); see the module docstring.

    State (in ``state_dict``): the copied encoder's weights and buffers, and ``steps`` (updates done, for the
    schedule), so that a checkpoint resumes the same trajectory.
    """

    def __init__(
        self,
        model: nn.Module,
        momentum: float = 0.99,
        *,
        schedule: str = "constant",
        total_steps: int | None = None,
        bn: str = "batch",
    ) -> None:
        super().__init__()
        self.momentum = check_finite_scalar("momentum", momentum, low=0.0, high=1.0)
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, low=1)
        momentum_at(0, self.total_steps, self.momentum, schedule)  # validates the schedule now
        self.schedule, self.bn = schedule, bn
        self.encoder = copy.deepcopy(model)
        self.encoder.requires_grad_(False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def current_momentum(self) -> float:
        """The momentum the next :meth:`update` applies."""
        return momentum_at(int(self.steps), self.total_steps, self.momentum, self.schedule)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Move the key encoder towards ``model`` by one EMA step; returns the momentum used."""
        m = self.current_momentum()
        update_momentum(model, self.encoder, m, buffers=self.bn == "running")
        self.steps.add_(1)
        return m

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Keys of ``x`` (no gradient), in train mode (``bn="batch"``) or eval mode (``bn="running"``)."""
        self.encoder.train(self.bn == "batch")
        return self.encoder(x)
