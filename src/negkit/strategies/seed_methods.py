"""Issue 16's methods as contrastive strategies: ``meow``, ``adameow``, ``amcl``, ``metrix`` and ``tcm``.

Each builds on the registry's loss of the same name and takes its default hyper-parameters from that name's
defaults (``tcm``: the base strategy's temperature). For two views ``z1, z2 [B, d]`` of a batch, every method but
``tcm`` is applied in both directions (``z1`` as anchors against ``z2``, then ``z2`` against ``z1``) and the two
losses are averaged, as ``simclr`` is; the negatives each anchor sees are those of the loss (its docstring):

* ``meow``: the batch's other positives, weighted by the number of *dataset-level* k-means clusterings that
  separate them from the anchor (:class:`negkit.losses.meow_clustering.MEOWClusters`, refreshed every
  ``refresh_every`` epochs on the projections of the whole training set), plus the ProtoNCE term;
* ``adameow``: every positive of the batch, weighted by a learned ``σ(MLP(z_i + z_j))``;
* ``amcl``: the ``2B − 2`` other views, in each of ``heads`` linear projection heads, with a pair-adaptive
  temperature per head (``fixed_temperature`` set: one temperature for every pair, the baseline);
* ``metrix``: InfoNCE's ``B − 1`` in-batch negatives plus mixes of the positive with the ``top_k`` hardest ones
  (``space``: ``embedding``, or ``input`` / ``feature`` when the task hands over the model and the views);
* ``tcm``: the ``base`` strategy's negatives, plus the TCM regulariser over every pair of the ``2B`` views.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from negkit.losses import amcl as amcl_loss
from negkit.losses import get_loss, metrix, tcm
from negkit.losses.functional.mixing import metrix_plan, mix_rows
from negkit.losses.meow_clustering import MEOWClusters
from negkit.negatives import NegativeSampler
from negkit.strategies.registry import StrategyLoss, get_strategy, register_strategy

_MEOW = get_loss("meow")
_ADAMEOW = get_loss("adameow")
_AMCL = get_loss("amcl")
_METRIX = get_loss("metrix")
_TCM = get_loss("tcm")
_SUPCON = get_loss("sup_con")
SPACES = ("embedding", "input", "feature")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Initialise parameters from ``seed`` without touching the global random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _both_directions(loss: Callable[[Tensor, Tensor], Tensor], z1: Tensor, z2: Tensor) -> Tensor:
    return 0.5 * (loss(z1, z2) + loss(z2, z1))


@register_strategy(
    "meow",
    "InfoNCE weighted by how many dataset-level k-means clusterings separate a pair, + ProtoNCE (MEOW)",
    uses_labels=False,
)
class MEOWStrategy(StrategyLoss):
    """MEOW with dataset-level clusterings: ``refresh`` (every epoch, with the projections of the whole training
    set) re-clusters every ``refresh_every`` epochs; ``forward`` looks the batch's clusters up by ``index``.

    The clusterings (assignments per sample, centroids, concentrations, the epoch counter) are buffers of this
    module, so checkpoints carry them. ``num_clusters``: one k-means per entry (``"8,32"`` in a config);
    ``backend``: ``auto`` (faiss,
    else scikit-learn), ``faiss``, ``sklearn`` or ``torch``.
    """

    needs_refresh = True

    def __init__(
        self,
        temperature: float = _MEOW.defaults["temperature"],
        proto_weight: float = _MEOW.defaults["proto_weight"],
        num_clusters: str | tuple[int, ...] = "8,32",
        refresh_every: int = 1,
        backend: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.temperature, self.proto_weight = temperature, proto_weight
        if isinstance(num_clusters, str):  # configs give "8,32" (strategy parameters are scalars)
            try:
                num_clusters = tuple(int(part) for part in num_clusters.split(",") if part.strip())
            except ValueError:
                raise ValueError(
                    f"num_clusters must be comma-separated ints, e.g. '8,32', got {num_clusters!r}"
                ) from None
        self.num_clusters, self.refresh_every, self.backend, self.seed = num_clusters, refresh_every, backend, seed
        # checked now (a bad value fails at config time, not after the first epoch)
        MEOWClusters(1, 1, num_clusters=num_clusters, refresh_every=refresh_every, temperature=temperature,
                     seed=seed, backend=backend)  # fmt: skip
        _MEOW.create(temperature=temperature, proto_weight=proto_weight)
        self.clusters: MEOWClusters | None = None
        self.register_buffer("epoch", torch.tensor(0, dtype=torch.long))

    def bind(self, num_samples: int, dim: int) -> None:
        self.clusters = MEOWClusters(
            num_samples,
            dim,
            num_clusters=self.num_clusters,
            refresh_every=self.refresh_every,
            temperature=self.temperature,
            seed=self.seed,
            backend=self.backend,
        )

    @torch.no_grad()
    def refresh(self, projections: Tensor, labels: Tensor) -> None:
        if self.clusters is None:
            self.bind(*projections.shape)
        self.clusters.step(projections, int(self.epoch))
        self.epoch.add_(1)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        if self.clusters is None or not self.clusters.fitted:
            raise RuntimeError("meow: no clustering yet; the task calls bind() and refresh() before training")
        return _both_directions(
            lambda a, p: self.clusters.loss(a, p, index, temperature=self.temperature, proto_weight=self.proto_weight),
            z1,
            z2,
        )

    def epoch_metrics(self) -> dict[str, float]:
        return {} if self.clusters is None else {"meow_refreshes": float(self.clusters.refreshes)}


@register_strategy(
    "adameow", "InfoNCE with learned soft negative weights sigma(MLP(z_i + z_j)) (AdaMEOW)", uses_labels=False
)
class AdaMEOWStrategy(StrategyLoss):
    """AdaMEOW: the weight MLP (``Linear(d, hidden) → tanh → Linear(hidden, 1)``) is this module's and is
    trained with the encoder; its initial weights come from ``seed``."""

    def __init__(
        self,
        temperature: float = _ADAMEOW.defaults["temperature"],
        hidden: int = _ADAMEOW.defaults["hidden"],
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.temperature, self.hidden, self.seed = temperature, hidden, seed
        with _seeded(seed):
            self.loss = _ADAMEOW.create(temperature=temperature, hidden=hidden)

    def bind(self, num_samples: int, dim: int) -> None:
        with _seeded(self.seed + 1), torch.no_grad():  # materialise the lazy MLP before the optimiser sees it
            self.loss.weight_net(torch.zeros(1, dim))

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in self.loss.parameters()):
            self.bind(0, z1.shape[-1])
        return _both_directions(self.loss, z1, z2)


@register_strategy(
    "amcl", "NT-Xent in several projection heads with pair-adaptive temperatures (AMCL)", uses_labels=False
)
class AMCLStrategy(StrategyLoss):
    """AMCL on ``heads`` linear projection heads (``Linear(d, d)`` each, on top of the model's projection) with a
    temperature network per head (:class:`negkit.losses.AMCL`); ``fixed_temperature`` set: the same heads and
    loss with one fixed temperature for every pair and no regulariser (the baseline AMCL is compared with).
    Parameters are initialised from ``seed``."""

    def __init__(
        self,
        heads: int = _AMCL.defaults["heads"],
        tau_lo: float = _AMCL.defaults["tau_lo"],
        tau_hi: float = _AMCL.defaults["tau_hi"],
        beta: float = _AMCL.defaults["beta"],
        hidden: int = 128,
        fixed_temperature: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if fixed_temperature is not None and not (isinstance(fixed_temperature, int | float) and fixed_temperature > 0):
            raise ValueError(f"fixed_temperature must be None or > 0, got {fixed_temperature!r}")
        self.heads, self.tau_lo, self.tau_hi, self.beta, self.hidden = heads, tau_lo, tau_hi, beta, hidden
        self.fixed_temperature, self.seed = fixed_temperature, seed
        with _seeded(seed):
            self.loss = _AMCL.create(heads=heads, tau_lo=tau_lo, tau_hi=tau_hi, beta=beta, hidden=hidden)
        self.projections: nn.ModuleList | None = None

    def bind(self, num_samples: int, dim: int) -> None:
        with _seeded(self.seed + 1), torch.no_grad():
            self.projections = nn.ModuleList(nn.Linear(dim, dim) for _ in range(self.heads))
            for net in self.loss.temperature_nets:  # materialise the lazy networks (input: a pair [z_i; z_j])
                net(torch.zeros(1, 2 * dim))

    def project(self, z: Tensor) -> Tensor:
        """``[B, heads, d]``: each head's projection of ``z [B, d]``."""
        if self.projections is None:
            self.bind(0, z.shape[-1])
        return torch.stack([head(z) for head in self.projections], dim=1)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        h1, h2 = self.project(z1), self.project(z2)
        if self.fixed_temperature is None:
            return self.loss(h1, h2)
        rows = 2 * z1.shape[0]
        temperatures = torch.full((self.heads, rows, rows), float(self.fixed_temperature), device=z1.device)
        return amcl_loss(h1, h2, temperatures.to(h1.dtype), beta=0.0)

    @torch.no_grad()
    def diagnostics(self, z1: Tensor, z2: Tensor, labels: Tensor) -> dict[str, float]:
        """The mean and spread of the learned temperatures on the probe batch (off-diagonal pairs)."""
        if self.fixed_temperature is not None:
            return {}
        tau = self.loss.temperatures(self.project(z1), self.project(z2))
        off = ~torch.eye(tau.shape[1], dtype=torch.bool, device=tau.device)
        values = tau[:, off]
        return {"tau_mean": float(values.mean()), "tau_std": float(values.std())}


@register_strategy(
    "metrix",
    "InfoNCE plus mixes of each positive with its hardest negatives, mixed labels (Metrix)",
    uses_labels=False,
)
class MetrixStrategy(StrategyLoss):
    """Metrix (:func:`negkit.losses.metrix`): λ ~ Beta(α, α) from the runner's generator; ``weight = 0`` is
    plain InfoNCE (no mixing), the baseline.

    ``space``: ``"embedding"`` mixes the projections (needs nothing else); ``"input"`` mixes the positives' input
    views and encodes the mixes with the model; ``"feature"`` mixes the positives' backbone features
    (``model.features``) and passes them through ``model.head``. The last two need the task to hand over the
    model (:meth:`attach_encoder`, when the strategy is built) and each batch's two views (:meth:`encode_keys`,
    before :meth:`forward`); the contrastive task does both.
    """

    def __init__(
        self,
        temperature: float = _METRIX.defaults["temperature"],
        alpha: float = _METRIX.defaults["alpha"],
        top_k: int = _METRIX.defaults["top_k"],
        weight: float = 1.0,
        space: str = "embedding",
    ) -> None:
        super().__init__()
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        self.temperature, self.alpha, self.top_k, self.weight, self.space = temperature, alpha, top_k, weight, space
        metrix(torch.zeros(2, 1), torch.ones(2, 1), temperature=temperature, alpha=alpha, top_k=top_k, weight=weight)
        self.__dict__["_model"] = None  # not a submodule: the model is trained and saved by the task
        self.__dict__["_views"] = None

    def attach_encoder(self, model: nn.Module, total_steps: int | None = None) -> None:
        """Keep a reference to the task's model (input / feature space encode the mixes with it)."""
        self.__dict__["_model"] = model

    def encode_keys(self, view1: Tensor, view2: Tensor) -> None:
        """Keep this batch's two input views (input / feature space mix them)."""
        self.__dict__["_views"] = (view1, view2)

    def _encode_mixes(self, views: Tensor, plan_anchor: Tensor, plan_positive: Tensor) -> tuple[Tensor, Tensor]:
        """``(lam [B,k], mixed [B,k,d])``: the plan of these embeddings, its mixes of ``views`` encoded."""
        model = self.__dict__["_model"]
        plan = metrix_plan(plan_anchor, plan_positive, top_k=self.top_k, alpha=self.alpha, generator=self.generator)
        if plan.lam.shape[1] == 0:
            return plan.lam, plan_positive.new_zeros(plan_positive.shape[0], 0, plan_positive.shape[1])
        if self.space == "input":
            mixed = model(mix_rows(views, plan.hardest, plan.lam).flatten(0, 1))
        else:
            mixed = model.head(mix_rows(model.features(views), plan.hardest, plan.lam).flatten(0, 1))
        return plan.lam, mixed.unflatten(0, tuple(plan.lam.shape))

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        common = dict(temperature=self.temperature, alpha=self.alpha, top_k=self.top_k, weight=self.weight)
        if self.space == "embedding" or self.weight == 0:
            return _both_directions(lambda a, p: metrix(a, p, generator=self.generator, **common), z1, z2)
        views = self.__dict__["_views"]
        if self.__dict__["_model"] is None or views is None or len(views[0]) != len(z1):
            raise RuntimeError(
                f"metrix: space={self.space!r} needs the model (attach_encoder) and this batch's views (encode_keys) "
                "from the task; use space='embedding' otherwise"
            )
        self.__dict__["_views"] = None  # one batch only
        lam2, mixed2 = self._encode_mixes(views[1], z1, z2)  # anchors z1: mixes of the view-2 positives
        lam1, mixed1 = self._encode_mixes(views[0], z2, z1)
        return 0.5 * (
            metrix(z1, z2, lam=lam2, mixed=mixed2, **common) + metrix(z2, z1, lam=lam1, mixed=mixed1, **common)
        )


@register_strategy(
    "tcm",
    "a base strategy plus the threshold-consistent margin regulariser over every pair of views (TCM)",
    uses_labels=True,
)
class TCMStrategy(StrategyLoss):
    """``base`` (a contrastive strategy, ``supcon`` by default, built with ``temperature``) plus
    :func:`negkit.losses.tcm` over the ``2B`` views (``cat(z1, z2)`` with labels ``cat(labels, labels)``): same-label
    pairs below ``pos_margin`` and other-label pairs above ``neg_margin`` are pulled back. The base strategy is a
    submodule (its state is checkpointed); its refresh, negatives and diagnostics are this strategy's."""

    def __init__(
        self,
        base: str = "supcon",
        temperature: float = _SUPCON.defaults["temperature"],
        pos_margin: float = _TCM.defaults["pos_margin"],
        neg_margin: float = _TCM.defaults["neg_margin"],
        pos_weight: float = _TCM.defaults["pos_weight"],
        neg_weight: float = _TCM.defaults["neg_weight"],
    ) -> None:
        super().__init__()
        spec = get_strategy(base, task="contrastive")
        if spec.name == "tcm" or not issubclass(spec.factory, StrategyLoss):
            raise ValueError(f"base must be another contrastive strategy, got {base!r}")
        self.base_name = spec.name
        self.base = spec.build(**({"temperature": temperature} if "temperature" in spec.defaults() else {}))
        self.regulariser = _TCM.create(
            pos_margin=pos_margin, neg_margin=neg_margin, pos_weight=pos_weight, neg_weight=neg_weight
        )
        self.needs_refresh = self.base.needs_refresh
        self.masks_same_label_negatives = self.base.masks_same_label_negatives

    @property
    def generator(self) -> torch.Generator | None:  # the runner sets it on this strategy: share it with the base
        return self.__dict__.get("_generator")

    @generator.setter
    def generator(self, value: torch.Generator | None) -> None:
        self.__dict__["_generator"] = value
        if "base" in self._modules:
            self.base.generator = value

    def bind(self, num_samples: int, dim: int) -> None:
        self.base.bind(num_samples, dim)

    @torch.no_grad()
    def refresh(self, projections: Tensor, labels: Tensor) -> None:
        self.base.refresh(projections, labels)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        both = torch.cat([z1, z2])
        return self.base(z1, z2, labels, index) + self.regulariser(both, torch.cat([labels, labels]))

    def false_negative_rate(self, labels: Tensor) -> float:
        return self.base.false_negative_rate(labels)

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        return self.base.negative_sampler(batch_size)

    def diagnostics(self, z1: Tensor, z2: Tensor, labels: Tensor) -> dict[str, float]:
        found = dict(self.base.diagnostics(z1, z2, labels))
        found["tcm"] = float(tcm(torch.cat([z1, z2]), torch.cat([labels, labels])))
        return found

    def epoch_metrics(self) -> dict[str, float]:
        return self.base.epoch_metrics()
