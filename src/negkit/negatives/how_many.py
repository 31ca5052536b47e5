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

from negkit._validation import check_finite_scalar, check_int, check_mask, check_tensor, count_non_finite


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
        if k.is_complex() or k.dtype == torch.bool or (k.is_floating_point() and count_non_finite(k)):
            raise ValueError(f"k must hold finite real numbers, got a {k.dtype} tensor")
        k = k.double()
    else:
        k = check_finite_scalar("k", k)
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
    k_min, k_max = _check_k_range(k_min, k_max)
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
        log_lam = math.log1p(-rho)  # exact for tiny ρ, where 1 − ρ rounds to 1
        k_star = math.log(log_lam / (log_lam + math.log(q))) / math.log(q)
    k_star = min(max(k_star, k_min), k_max)
    candidates = {min(k_max, max(k_min, c)) for c in (math.floor(k_star), math.ceil(k_star))}
    return max(sorted(candidates), key=lambda k: effectiveness(k, rho, q, harm, model=model))


def _check_k_range(k_min: object, k_max: object) -> tuple[int, int]:
    k_min = check_int("k_min", k_min, low=1)
    k_max = check_int("k_max", k_max, low=1)
    if k_min > k_max:
        raise ValueError(f"need k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    return k_min, k_max


def collision_rate(labels: Tensor, *, label_noise: float = 0.0, class_conditional: bool = False) -> float:
    """Estimate ``ρ`` from labels: ``Σ_c p_c²`` (the chance a uniform negative shares the anchor's class) plus the
    label-noise rate; with class-conditional negatives only the label noise makes false negatives."""
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.numel() == 0 or labels.is_floating_point():
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a non-empty 1-D integer tensor, got {got}")
    label_noise = check_finite_scalar("label_noise", label_noise, low=0.0, high=1.0, high_inclusive=False)
    shares = torch.unique(labels, return_counts=True)[1].double() / labels.numel()
    base = 0.0 if class_conditional else float((shares**2).sum())
    return min(base + label_noise, 0.999)


def ranking_quality(positive_scores: Tensor, negative_scores: Tensor, mask: Tensor | None = None) -> float:
    """``q``: share of (positive, true negative) pairs with the positive scored strictly higher.

    ``positive_scores [B]``, ``negative_scores [B, K]``, ``mask [B, K]`` marks the true negatives (``None``: all).

    Raises:
        ValueError: bad shapes, dtypes or non-finite scores, or no (positive, negative) pair to compare (``B = 0``,
            ``K = 0`` or a mask that selects nothing): ``q`` is undefined there, never NaN.
    """
    check_tensor("positive_scores", positive_scores, 1)
    check_tensor("negative_scores", negative_scores, 2)
    if negative_scores.shape[0] != positive_scores.shape[0]:
        raise ValueError(
            f"negative_scores must have shape [{positive_scores.shape[0]}, K] (B from positive_scores), "
            f"got {tuple(negative_scores.shape)}"
        )
    wins = (positive_scores.unsqueeze(1) > negative_scores).double()
    if mask is not None:
        mask = check_mask("mask", mask, tuple(negative_scores.shape), negative_scores.device)
        wins = wins[mask]
    if wins.numel() == 0:
        raise ValueError(
            "no (positive, negative) pair to compare: positive_scores/negative_scores are empty or mask selects no "
            "negative"
        )
    return float(wins.mean())


class AdaptiveK(nn.Module):
    """Adaptive negative sampling (ANS): K follows the model's ranking quality during training.

    Every step :meth:`update` folds the batch's ``q`` into an exponential moving average; every ``interval``
    steps it recomputes ``K* = optimal_k(noise_rate, q_ema)`` and moves K there geometrically
    (``log K ← smoothing · log K + (1 − smoothing) · log K*``), clipped to ``[k_min, k_max]``. State (q, K, step
    and ``noise_rate``, which a strategy may re-estimate during training) lives in buffers, so it survives
    checkpoints.
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
        self.register_buffer("rho", torch.zeros((), dtype=torch.float64))
        self.noise_rate = noise_rate
        self.interval = check_int("interval", interval, low=1)
        self.momentum = check_finite_scalar("momentum", momentum, low=0.0, high=1.0, high_inclusive=False)
        self.smoothing = check_finite_scalar("smoothing", smoothing, low=0.0, high=1.0, high_inclusive=False)
        k_min, k_max = _check_k_range(k_min, k_max)
        self.k_min, self.k_max, self.harm = k_min, k_max, check_finite_scalar("harm", harm, low=0.0)
        start = check_int("initial_k", initial_k if initial_k is not None else k_min, low=1)
        if not k_min <= start <= k_max:
            raise ValueError(f"initial_k must lie in [{k_min}, {k_max}], got {start}")
        self.register_buffer("q", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("log_k", torch.tensor(math.log(start), dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def noise_rate(self) -> float:
        """``ρ``, the false-negative rate K is optimised for; a buffer (``rho``), so it is checkpointed."""
        return float(self.rho)

    @noise_rate.setter
    def noise_rate(self, value: float) -> None:
        self.rho.fill_(check_finite_scalar("noise_rate", value, low=0.0, high=1.0, high_inclusive=False))

    @property
    def k(self) -> int:
        return int(min(self.k_max, max(self.k_min, round(math.exp(float(self.log_k))))))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # checkpoints written before noise_rate was a buffer lack "rho": keep the constructor's value for them
        missing_keys = args[2]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "rho" in missing_keys and prefix + "rho" not in state_dict:
            missing_keys.remove(prefix + "rho")

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
