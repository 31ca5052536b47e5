"""``nn.Module`` wrappers of the functional losses: they hold hyper-parameters, the math stays functional.

Hyper-parameters are checked when the module is built, so a bad configuration fails before training starts.
The names these modules are built by, and each name's defaults, are in :mod:`negkit.losses.registry`.

A learnable temperature is kept, not copied to a float: pass an ``nn.Parameter`` (registered: it is in
``parameters()`` and the ``state_dict``) or any tensor with ``requires_grad=True`` (kept as given: its
``.grad`` fills in; the module does not own it). A float, or a tensor without gradient, is stored as a float.
``learnable_temperature=True`` (or ``temperature=LogitScale(...)``) learns it the way CLIP does: the module owns
a :class:`LogitScale` (``log(1/T)``, its scale clamped to at most 100) under ``module.temperature``, in
``parameters()`` and the ``state_dict``; :meth:`SkipCounting.current_temperature` is the value a call uses.

After every ``forward``, ``module.skipped_anchors`` is the number of anchors that call skipped (degenerate
batches: no positive, or no negative left; see :func:`negkit.losses.count_skipped`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from negkit._validation import (
    check_finite_scalar,
    check_pair,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    count_skipped,
    normalize_rows,
)
from negkit.losses import functional as F


class LogitScale(nn.Module):
    """A learnable temperature, CLIP's way: the parameter is ``log_scale = log(1/T)`` and the scale used is
    ``exp(min(log_scale, log(max_scale)))`` (Radford et al. 2021 initialise ``T = 0.07`` and clamp the scale to
    100, openai/CLIP#46; open_clip clamps the parameter after each step). Learning the logarithm keeps ``T > 0``
    and makes steps relative; the clamp keeps the logits ``≤ max_scale`` in magnitude for cosine similarity. The
    clamp in ``forward`` passes no gradient once the scale is at its bound (as a clamp of the parameter would
    leave it there); :meth:`clamp_` projects the parameter itself, for a training loop that wants CLIP's form.

    ``scale()`` is the multiplier ``1/T`` (a 0-dim tensor with gradient); ``temperature()`` (also ``forward()``)
    is ``T = 1/scale`` for the ``temperature=`` argument of every negkit loss.

    Args:
        temperature: the initial ``T > 0`` (``1/T`` must not exceed ``max_scale``).
        max_scale: the largest scale ``1/T`` (CLIP: 100, i.e. ``T ≥ 0.01``).
        min_scale: an optional smallest scale (CLIP's parameter clamp at 0 is ``min_scale=1``, ``T ≤ 1``).
    """

    def __init__(self, temperature: float = 0.07, *, max_scale: float = 100.0, min_scale: float | None = None) -> None:
        super().__init__()
        temperature = check_positive_scalar("temperature", temperature)
        self.max_scale = check_positive_scalar("max_scale", max_scale)
        self.min_scale = None if min_scale is None else check_positive_scalar("min_scale", min_scale)
        if self.min_scale is not None and self.min_scale > self.max_scale:
            raise ValueError(f"min_scale must be <= max_scale ({self.max_scale}), got {self.min_scale}")
        scale = 1.0 / temperature
        if scale > self.max_scale * (1 + 1e-12) or (self.min_scale is not None and scale < self.min_scale):
            bounds = f"[{1 / self.max_scale:g}, {'inf' if self.min_scale is None else f'{1 / self.min_scale:g}'}]"
            raise ValueError(f"temperature must be in {bounds} (1/max_scale .. 1/min_scale), got {temperature:g}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def _bounded(self) -> Tensor:
        low = None if self.min_scale is None else math.log(self.min_scale)
        return self.log_scale.clamp(min=low, max=math.log(self.max_scale))

    def scale(self) -> Tensor:
        """``1/T``, clamped to ``[min_scale, max_scale]`` (0-dim, with gradient inside the bounds)."""
        return self._bounded().exp()

    def temperature(self) -> Tensor:
        """``T = 1/scale`` (0-dim, with gradient inside the bounds)."""
        return (-self._bounded()).exp()

    def forward(self) -> Tensor:
        return self.temperature()

    @torch.no_grad()
    def clamp_(self) -> LogitScale:
        """Clamp the parameter itself into the bounds (CLIP's step after ``optimizer.step()``); returns self."""
        self.log_scale.copy_(self._bounded())
        return self

    def extra_repr(self) -> str:
        bounds = f"max_scale={self.max_scale:g}" + ("" if self.min_scale is None else f", min_scale={self.min_scale:g}")
        return f"temperature={float(self.temperature().detach()):.4g}, {bounds}"


def resolve_temperature(temperature: float | Tensor | LogitScale) -> float | Tensor:
    """The temperature a loss call uses: a :class:`LogitScale`'s current ``T`` (with gradient), else as given."""
    return temperature.temperature() if isinstance(temperature, LogitScale) else temperature


def module_temperature(value: float | Tensor | LogitScale, *, learnable: bool = False) -> float | Tensor | LogitScale:
    """A module's temperature: a :class:`LogitScale` as given (or a new one from ``value`` when ``learnable``),
    the tensor itself when it is learnable (``nn.Parameter`` or ``requires_grad``), else a float; checked to be
    finite and > 0 either way."""
    if isinstance(value, LogitScale):
        return value
    checked = check_positive_scalar("temperature", value)
    if learnable:
        if isinstance(value, Tensor) and value.requires_grad:
            raise ValueError(
                "learnable_temperature=True makes the module's own LogitScale; pass a float, or pass the learnable "
                "tensor without learnable_temperature"
            )
        return LogitScale(checked)
    if isinstance(value, Tensor) and (isinstance(value, nn.Parameter) or value.requires_grad):
        return value
    return checked


class SkipCounting(nn.Module):
    """Base of the loss modules: ``skipped_anchors`` holds the anchors skipped by the last ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped_anchors = 0

    def counted(self, function: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        """``function(*args, **kwargs)``, recording the anchors it skipped in :attr:`skipped_anchors`."""
        with count_skipped() as skipped:
            out = function(*args, **kwargs)
        self.skipped_anchors = skipped.anchors
        return out

    def current_temperature(self) -> float | Tensor:
        """The temperature of the next call: ``self.temperature``, or its :class:`LogitScale`'s current value."""
        return resolve_temperature(self.temperature)


class _Loss(SkipCounting):
    def __init__(
        self, temperature: float | Tensor | LogitScale, reduction: str, learnable_temperature: bool = False
    ) -> None:
        super().__init__()
        self.temperature = module_temperature(temperature, learnable=learnable_temperature)
        check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        fields = {
            k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("training", "skipped_anchors")
        }
        if not isinstance(self.temperature, LogitScale):  # a LogitScale is shown as a child module
            fields = {"temperature": self.temperature, **fields}
        return ", ".join(f"{k}={v!r}" for k, v in fields.items())


class InfoNCE(_Loss):
    """InfoNCE / NT-Xent with one positive per anchor; see :func:`negkit.losses.functional.info_nce`.

    ``forward(anchor [B,d], positive [B,d], negatives=None | [K,d] | [B,K,d], *, labels=None,
    negative_log_weights=None)``.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.1,
        *,
        in_batch_negatives: bool = True,
        symmetric: bool = False,
        similarity: str = "cosine",
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        check_similarity(similarity)
        self.in_batch_negatives = in_batch_negatives
        self.symmetric = symmetric
        self.similarity = similarity

    def forward(
        self,
        anchor: Tensor,
        positive: Tensor,
        negatives: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        negative_log_weights: Tensor | None = None,
    ) -> Tensor:
        return self.counted(
            F.info_nce,
            anchor,
            positive,
            negatives,
            temperature=self.current_temperature(),
            labels=labels,
            in_batch_negatives=self.in_batch_negatives,
            negative_log_weights=negative_log_weights,
            symmetric=self.symmetric,
            similarity=self.similarity,
            reduction=self.reduction,
        )


class SupCon(_Loss):
    """Supervised contrastive loss L_out; ``forward(embeddings [N,d], labels [N])``.

    See :func:`negkit.losses.functional.sup_con`.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.1,
        *,
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.counted(
            F.sup_con, embeddings, labels, temperature=self.current_temperature(), reduction=self.reduction
        )


class DCL(_Loss):
    """Decoupled contrastive loss (DCLW when ``sigma`` is set); ``forward(z1 [B,d], z2 [B,d])``.

    See :func:`negkit.losses.functional.dcl`.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.1,
        *,
        sigma: float | None = None,
        detach_weights: bool = False,
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        self.sigma = None if sigma is None else check_positive_scalar("sigma", sigma)
        self.detach_weights = detach_weights

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return self.counted(
            F.dcl,
            z1,
            z2,
            temperature=self.current_temperature(),
            sigma=self.sigma,
            detach_weights=self.detach_weights,
            reduction=self.reduction,
        )


class HardNCE(_Loss):
    """H-UCL (no labels) / H-SCL (labels); ``forward(z1 [B,d], z2 [B,d], labels=None)``.

    See :func:`negkit.losses.functional.hard_nce`.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.5,
        *,
        beta: float = 1.0,
        tau_plus: float = 0.0,
        detach_weights: bool = False,
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        self.beta = check_finite_scalar("beta", beta, low=0.0)
        self.tau_plus = check_finite_scalar("tau_plus", tau_plus, low=0.0, high=1.0, high_inclusive=False)
        self.detach_weights = detach_weights

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.counted(
            F.hard_nce,
            z1,
            z2,
            labels,
            temperature=self.current_temperature(),
            beta=self.beta,
            tau_plus=self.tau_plus,
            detach_weights=self.detach_weights,
            reduction=self.reduction,
        )


class DecoupledSoftmax(_Loss):
    """Multi-label decoupled softmax; ``forward(query [B,d], items [N,d], relevance [B,N])``.

    See :func:`negkit.losses.functional.decoupled_softmax`.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.05,
        *,
        similarity: str = "cosine",
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        check_similarity(similarity)
        self.similarity = similarity

    def forward(self, query: Tensor, items: Tensor, relevance: Tensor) -> Tensor:
        return self.counted(
            F.decoupled_softmax,
            query,
            items,
            relevance,
            temperature=self.current_temperature(),
            similarity=self.similarity,
            reduction=self.reduction,
        )


class MannWhitneyLoss(SkipCounting):
    """Mann–Whitney AUC loss; ``forward(scores [B,N], relevance [B,N])``.

    See :func:`negkit.losses.functional.mw_auc`.
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return self.counted(F.mw_auc, scores, relevance, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class EMC2Loss(_Loss):
    """EMC²'s sampled-negative surrogate of the global contrastive loss; ``forward(anchor [B,d], positive [B,d],
    negatives [B,K,d], *, negative_mask=None [B,K])``. See :func:`negkit.losses.functional.emc2`.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.1,
        *,
        similarity: str = "cosine",
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        check_similarity(similarity)
        self.similarity = similarity

    def forward(
        self, anchor: Tensor, positive: Tensor, negatives: Tensor, *, negative_mask: Tensor | None = None
    ) -> Tensor:
        return self.counted(
            F.emc2,
            anchor,
            positive,
            negatives,
            negative_mask=negative_mask,
            temperature=self.current_temperature(),
            similarity=self.similarity,
            reduction=self.reduction,
        )


class TCM(SkipCounting):
    """The threshold-consistent margin regulariser; ``forward(embeddings [B,d], labels [B])``. Add it to any base
    loss: ``loss = base(...) + tcm(embeddings, labels)``. See :func:`negkit.losses.functional.tcm`.
    """

    def __init__(
        self, *, pos_margin: float = 0.9, neg_margin: float = 0.5, pos_weight: float = 1.0, neg_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.pos_margin = check_finite_scalar("pos_margin", pos_margin, low=-1.0, high=1.0)
        self.neg_margin = check_finite_scalar("neg_margin", neg_margin, low=-1.0, high=1.0)
        self.pos_weight = check_finite_scalar("pos_weight", pos_weight, low=0.0)
        self.neg_weight = check_finite_scalar("neg_weight", neg_weight, low=0.0)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.counted(
            F.tcm,
            embeddings,
            labels,
            pos_margin=self.pos_margin,
            neg_margin=self.neg_margin,
            pos_weight=self.pos_weight,
            neg_weight=self.neg_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, pos_weight={self.pos_weight}, "
            f"neg_weight={self.neg_weight}"
        )


class SoftTopK(_Loss):
    """Soft top-k loss (DEXML); ``forward(query [B,d], items [N,d], relevance [B,N])``.

    See :func:`negkit.losses.functional.soft_top_k`.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.05,
        *,
        k: float = 5,
        alpha: float = 2.0,
        n_iter: int = 32,
        similarity: str = "cosine",
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        check_positive_scalar("k", k)
        check_positive_scalar("alpha", alpha)
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"n_iter must be an int >= 1, got {n_iter!r}")
        check_similarity(similarity)
        self.k, self.alpha, self.n_iter, self.similarity = k, alpha, n_iter, similarity

    def forward(self, query: Tensor, items: Tensor, relevance: Tensor) -> Tensor:
        return self.counted(
            F.soft_top_k,
            query,
            items,
            relevance,
            k=self.k,
            alpha=self.alpha,
            temperature=self.current_temperature(),
            n_iter=self.n_iter,
            similarity=self.similarity,
            reduction=self.reduction,
        )


class AdaMEOW(_Loss):
    """AdaMEOW's weighted InfoNCE with learned soft negative weights ``w_ij = σ(MLP(z_i + z_j))``;
    ``forward(anchor [B,d], positive [B,d])``. See :func:`negkit.losses.functional.adameow`.

    The MLP is AdaMEOW's ``Linear(d, hidden) → tanh → Linear(hidden, 1)`` (then the sigmoid), its input the sum of
    the two rows (L2-normalised first with ``similarity="cosine"``, as the reference's projections are). ``d`` is
    read from the first batch (``nn.LazyLinear``); the MLP's parameters are this module's, train them with the
    encoder's. It computes in its parameters' dtype (``module.double()`` for float64).
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 1.0,
        *,
        hidden: int = 16,
        similarity: str = "cosine",
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be an int >= 1, got {hidden!r}")
        check_similarity(similarity)
        self.hidden, self.similarity = hidden, similarity
        self.weight_net = nn.Sequential(nn.LazyLinear(hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def weight_logits(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """``[B,B]`` pre-sigmoid weights ``MLP(z_i + z_j)``."""
        dtype = self.weight_net[2].weight.dtype
        a, p = anchor.to(dtype), positive.to(dtype)
        if self.similarity == "cosine":
            a, p = normalize_rows(a), normalize_rows(p)
        return self.weight_net(a.unsqueeze(1) + p.unsqueeze(0)).squeeze(-1)

    def forward(self, anchor: Tensor, positive: Tensor) -> Tensor:
        if isinstance(anchor, Tensor) and isinstance(positive, Tensor) and anchor.dim() == positive.dim() == 2:
            logits = self.weight_logits(anchor, positive) if anchor.shape == positive.shape else None
        else:
            logits = None
        if logits is None:  # let the function report what is wrong with the inputs
            rows = anchor.shape[0] if isinstance(anchor, Tensor) and anchor.dim() >= 1 else 0
            logits = torch.zeros(rows, rows)
        return self.counted(
            F.adameow,
            anchor,
            positive,
            logits,
            temperature=self.current_temperature(),
            similarity=self.similarity,
            reduction=self.reduction,
        )


class AMCL(SkipCounting):
    """AMCL's pair-adaptive, head-wise temperatures; ``forward(z1, z2)`` with ``[B,C,d]`` projections in ``C =
    heads`` heads (or ``[B,d]``, shared by every head). See :func:`negkit.losses.functional.amcl`.

    Head ``c`` has its own temperature network, the official code's ``Linear(2d, hidden) → ReLU →
    Linear(hidden, 1)`` on the concatenated L2-normalised pair ``[z_i; z_j]``, squashed into ``(tau_lo, tau_hi)``:
    ``τ = tau_lo + (tau_hi − tau_lo)·σ(·)``. ``d`` is read from the first batch (``nn.LazyLinear``); train the
    networks with the encoder. Memory: ``C·(2B)²·2d`` for the pair inputs.
    """

    def __init__(
        self,
        *,
        heads: int = 3,
        tau_lo: float = 1e-5,
        tau_hi: float = 2.0,
        beta: float = 0.1,
        hidden: int = 128,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        for name, value in (("heads", heads), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.tau_lo = check_positive_scalar("tau_lo", tau_lo)
        self.tau_hi = check_positive_scalar("tau_hi", tau_hi)
        if not self.tau_hi > self.tau_lo:
            raise ValueError(f"tau_hi must be > tau_lo ({self.tau_lo}), got {self.tau_hi}")
        self.beta = check_finite_scalar("beta", beta, low=0.0)
        check_reduction(reduction)
        self.heads, self.hidden, self.reduction = heads, hidden, reduction
        self.temperature_nets = nn.ModuleList(
            nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 1)) for _ in range(heads)
        )

    def temperatures(self, z1: Tensor, z2: Tensor) -> Tensor:
        """``[C, 2B, 2B]`` temperatures of every ordered pair of the stacked views in each head."""
        z1 = z1.unsqueeze(1).expand(-1, self.heads, -1) if z1.dim() == 2 else z1
        z2 = z2.unsqueeze(1).expand(-1, self.heads, -1) if z2.dim() == 2 else z2
        dtype = self.temperature_nets[0][2].weight.dtype
        views = normalize_rows(torch.cat([z1, z2], dim=0).to(dtype))  # [2B, C, d]
        rows = views.shape[0]
        out = []
        for c, net in enumerate(self.temperature_nets):
            head = views[:, c]
            pairs = torch.cat([head.unsqueeze(1).expand(-1, rows, -1), head.unsqueeze(0).expand(rows, -1, -1)], -1)
            out.append(self.tau_lo + (self.tau_hi - self.tau_lo) * torch.sigmoid(net(pairs).squeeze(-1)))
        return torch.stack(out)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        shapes_ok = (
            isinstance(z1, Tensor)
            and isinstance(z2, Tensor)
            and z1.shape == z2.shape
            and (z1.dim() == 2 or (z1.dim() == 3 and z1.shape[1] == self.heads))
        )
        if shapes_ok:
            temperatures = self.temperatures(z1, z2)
        else:  # let the function report what is wrong with the inputs
            rows = 2 * z1.shape[0] if isinstance(z1, Tensor) and z1.dim() >= 1 else 0
            temperatures = torch.ones(self.heads, rows, rows)
        if isinstance(z1, Tensor) and isinstance(z2, Tensor) and z1.dim() == 2 and z1.shape == z2.shape:
            z1 = z1.unsqueeze(1).expand(-1, self.heads, -1)
            z2 = z2.unsqueeze(1).expand(-1, self.heads, -1)
        return self.counted(F.amcl, z1, z2, temperatures, beta=self.beta, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, tau_lo={self.tau_lo}, tau_hi={self.tau_hi}, beta={self.beta}, hidden={self.hidden}"


class MEOW(_Loss):
    """MEOW's weighted InfoNCE with hard weights from k-means clusterings of the batch, plus ProtoNCE;
    ``forward(anchor [B,d], positive [B,d])``. See :func:`negkit.losses.functional.meow`.

    Every ``forward`` clusters the batch's ``anchor`` rows (detached) once per entry of ``num_clusters`` (capped at
    ``B``), by spherical k-means (:func:`negkit.losses.functional.weighted.spherical_kmeans`, seed ``seed + k``),
    as the reference re-clusters at every step; the prototype term uses those centroids with PCL's
    concentrations scaled to ``temperature``. The module keeps no state between calls.
    """

    def __init__(
        self,
        temperature: float | Tensor | LogitScale = 0.9,
        *,
        num_clusters: tuple[int, ...] = (8, 32),
        proto_weight: float = 1.0,
        n_iter: int = 20,
        seed: int = 0,
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(temperature, reduction, learnable_temperature)
        counts = tuple(num_clusters) if isinstance(num_clusters, list | tuple) else None
        if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
            raise ValueError(f"num_clusters must be a non-empty sequence of ints >= 1, got {num_clusters!r}")
        for name, value in (("n_iter", n_iter), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.num_clusters, self.n_iter, self.seed = counts, n_iter, seed
        self.proto_weight = check_finite_scalar("proto_weight", proto_weight, low=0.0)

    def forward(self, anchor: Tensor, positive: Tensor) -> Tensor:
        from negkit.losses.functional.weighted import pcl_concentrations, spherical_kmeans

        check_pair(anchor, positive)
        rows = anchor.shape[0]
        assignments, centroids, concentrations = [], [], []
        current = self.current_temperature()
        tau = float(current.detach()) if isinstance(current, Tensor) else current
        for k, count in enumerate(self.num_clusters):
            if rows == 0:
                assignments.append(torch.zeros(0, dtype=torch.long, device=anchor.device))
                continue
            assign, centres = spherical_kmeans(anchor, min(count, rows), n_iter=self.n_iter, seed=self.seed + k)
            assignments.append(assign)
            centroids.append(centres)
            concentrations.append(pcl_concentrations(anchor, assign, centres, tau))
        return self.counted(
            F.meow,
            anchor,
            positive,
            torch.stack(assignments, dim=1),
            temperature=self.current_temperature(),
            centroids=centroids if rows else None,
            concentrations=concentrations if rows else None,
            proto_weight=self.proto_weight,
            reduction=self.reduction,
        )
