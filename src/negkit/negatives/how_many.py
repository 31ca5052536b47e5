"""How many negatives: negkit's model of the optimal K under false negatives, its estimators, and ANS.

The idea is Wu, Wu & Huang's ("Rethinking InfoNCE: How Many Negative Samples Do You Need?", IJCAI 2022): with
noisy negatives, more is not always better, and the best K changes during training, so adapt it (ANS). Their
equations were not available to us; **the model below is negkit's own**, built on the same principles:

* ``ρ`` (``noise_rate``): probability that one sampled negative is a false negative; ``λ = 1 − ρ``.
* ``q``: probability that the current model scores the positive above one random *true* negative.
* A sample with K i.i.d. negatives teaches only if all K are true negatives (``λ^K``) and at least one of them
  is scored above the positive (``1 − q^K``); contaminated samples cost ``harm`` each::

      E(K) = λ^K · (1 − q^K) − harm · (1 − λ^K)

* For ``harm = 0``, ``dE/dK = 0`` gives ``q^K = ln λ / ln(λq)``: ``K* = ln(ln λ / ln(λq)) / ln q``, taken at the
  better neighbouring integer and clipped to ``[k_min, k_max]``. Clean labels (ρ → 0) give ``k_max``; K*
  falls as ρ grows and rises as q grows. Example: ρ = 0.1, q = 0.7 gives K* = 4.

That model (``model="all_clean"``, the default) treats one false negative as spoiling the whole sample. Measured
on real data (``python experiments/run.py how-many``) it predicts far too few negatives, so negkit also offers
``model="per_negative"``: a sample teaches if at least one of its *true* negatives is scored above the positive,
and each false negative costs ``harm`` on its own. With ``m ~ Binomial(K, ρ)`` false negatives,
``E[q^{K−m}] = (ρ + λq)^K``, so::

      E(K) = 1 − (ρ + λq)^K − harm · ρ · K

Without harm more negatives always help (``k_max``); with ``harm > 0`` the optimum is
``K* = ln(harm·ρ / −ln r) / ln r`` with ``r = ρ + λq`` (``k_min`` when even the first negative costs more than
it brings).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from negkit._validation import check_finite_scalar


def _check(noise_rate: float, q: float, harm: float) -> tuple[float, float, float]:
    rho = check_finite_scalar("noise_rate", noise_rate, low=0.0, high=1.0, high_inclusive=False)
    q = check_finite_scalar("q", q, low=0.0, high=1.0)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie strictly between 0 and 1 (the share of correctly ranked pairs), got {q}")
    harm = check_finite_scalar("harm", harm, low=0.0)
    return rho, q, harm


MODELS = ("all_clean", "per_negative")


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    return model


def effectiveness(
    k: float | Tensor, noise_rate: float, q: float, harm: float = 0.0, *, model: str = "all_clean"
) -> float | Tensor:
    """Training effectiveness of K negatives (negkit's models, see the module docstring):
    ``all_clean``: ``λ^K (1 − q^K) − harm (1 − λ^K)``; ``per_negative``: ``1 − (ρ + λq)^K − harm·ρ·K``."""
    rho, q, harm = _check(noise_rate, q, harm)
    lam = 1.0 - rho
    if isinstance(k, Tensor):
        k = k.double()
    if _check_model(model) == "per_negative":
        return 1 - (rho + lam * q) ** k - harm * rho * k
    return lam**k * (1 - q**k) - harm * (1 - lam**k)


def optimal_k(
    noise_rate: float,
    q: float,
    *,
    k_min: int = 1,
    k_max: int = 4096,
    harm: float = 0.0,
    model: str = "all_clean",
) -> int:
    """The K in ``[k_min, k_max]`` that maximises :func:`effectiveness` (closed form where there is one)."""
    rho, q, harm = _check(noise_rate, q, harm)
    if not 1 <= k_min <= k_max:
        raise ValueError(f"need 1 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    lam = 1.0 - rho
    if _check_model(model) == "per_negative":
        if harm == 0.0 or rho == 0.0:
            return k_max  # no cost per negative: E(K) grows with K
        r = rho + lam * q
        k_star = math.log(harm * rho / -math.log(r)) / math.log(r)
    elif harm > 0:
        ks = torch.arange(k_min, k_max + 1, dtype=torch.float64)
        return int(ks[int(torch.argmax(effectiveness(ks, rho, q, harm)))])
    elif rho == 0.0:
        return k_max  # clean labels: E(K) = 1 − q^K grows with K
    else:
        k_star = math.log(math.log(lam) / math.log(lam * q)) / math.log(q)
    k_star = min(max(k_star, k_min), k_max)
    candidates = {min(k_max, max(k_min, c)) for c in (math.floor(k_star), math.ceil(k_star))}
    return max(sorted(candidates), key=lambda k: effectiveness(k, rho, q, harm, model=model))


def collision_rate(labels: Tensor, *, label_noise: float = 0.0, class_conditional: bool = False) -> float:
    """Estimate ``ρ`` from labels: ``Σ_c p_c²`` (the chance a uniform negative shares the anchor's class) plus the
    label-noise rate; with class-conditional negatives only the label noise makes false negatives."""
    if labels.dim() != 1 or labels.numel() == 0 or labels.is_floating_point():
        raise ValueError(f"labels must be a non-empty 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    label_noise = check_finite_scalar("label_noise", label_noise, low=0.0, high=1.0, high_inclusive=False)
    shares = torch.unique(labels, return_counts=True)[1].double() / labels.numel()
    base = 0.0 if class_conditional else float((shares**2).sum())
    return min(base + label_noise, 0.999)


def ranking_quality(positive_scores: Tensor, negative_scores: Tensor, mask: Tensor | None = None) -> float:
    """``q``: share of (positive, true negative) pairs with the positive scored strictly higher.

    ``positive_scores [B]``, ``negative_scores [B, K]``, ``mask [B, K]`` marks the true negatives (``None``: all).
    """
    if positive_scores.dim() != 1 or negative_scores.dim() != 2 or negative_scores.shape[0] != positive_scores.shape[0]:
        raise ValueError("positive_scores must be [B] and negative_scores [B, K]")
    wins = (positive_scores.unsqueeze(1) > negative_scores).double()
    if mask is None:
        return float(wins.mean())
    if not bool(mask.any()):
        raise ValueError("mask selects no negative")
    return float(wins[mask].mean())


class AdaptiveK(nn.Module):
    """Adaptive negative sampling (ANS): K follows the model's ranking quality during training.

    Every step :meth:`update` folds the batch's ``q`` into an exponential moving average; every ``interval``
    steps it recomputes ``K* = optimal_k(noise_rate, q_ema)`` and moves K there geometrically
    (``log K ← smoothing · log K + (1 − smoothing) · log K*``), clipped to ``[k_min, k_max]``. State (q, K, step)
    lives in buffers, so it survives checkpoints.
    """

    def __init__(
        self,
        noise_rate: float,
        *,
        interval: int = 20,
        momentum: float = 0.9,
        smoothing: float = 0.5,
        k_min: int = 1,
        k_max: int = 256,
        harm: float = 0.0,
        initial_k: int | None = None,
        model: str = "all_clean",
    ) -> None:
        super().__init__()
        self.model = _check_model(model)
        self.noise_rate = check_finite_scalar("noise_rate", noise_rate, low=0.0, high=1.0, high_inclusive=False)
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = interval
        self.momentum = check_finite_scalar("momentum", momentum, low=0.0, high=1.0, high_inclusive=False)
        self.smoothing = check_finite_scalar("smoothing", smoothing, low=0.0, high=1.0, high_inclusive=False)
        self.k_min, self.k_max, self.harm = k_min, k_max, check_finite_scalar("harm", harm, low=0.0)
        start = initial_k if initial_k is not None else k_min
        if not k_min <= start <= k_max:
            raise ValueError(f"initial_k must lie in [{k_min}, {k_max}], got {start}")
        self.register_buffer("q", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("log_k", torch.tensor(math.log(start), dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def k(self) -> int:
        return int(min(self.k_max, max(self.k_min, round(math.exp(float(self.log_k))))))

    def update(self, batch_q: float) -> int:
        """Record this step's ``q``; return the K to use for the next step."""
        batch_q = check_finite_scalar("batch_q", batch_q, low=0.0, high=1.0)
        self.q.fill_(
            batch_q if math.isnan(float(self.q)) else self.momentum * float(self.q) + (1 - self.momentum) * batch_q
        )
        self.step += 1
        if int(self.step) % self.interval == 0:
            q = min(max(float(self.q), 1e-6), 1 - 1e-6)
            target = optimal_k(self.noise_rate, q, k_min=self.k_min, k_max=self.k_max, harm=self.harm, model=self.model)
            self.log_k.fill_(self.smoothing * float(self.log_k) + (1 - self.smoothing) * math.log(target))
        return self.k

    def extra_repr(self) -> str:
        return f"noise_rate={self.noise_rate}, interval={self.interval}, k={self.k}, q={float(self.q):.3f}"
