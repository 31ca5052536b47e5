"""One table of named losses. Every surface resolves a loss name here (the strategies, the sentence-transformers
adapter, ``negkit demo``), so a name means one loss with one set of defaults everywhere.

::

    spec = get_loss("hucl")        # LossSpec: .function (hard_nce), .module (HardNCE), .defaults, .description
    loss = create_loss("NT-Xent", temperature=0.07)     # the module, built with the name's defaults + overrides
    value = spec.bind()(z1, z2)    # the function with the same defaults
    list_losses()                  # the canonical names

Names are matched case-insensitively, with ``-`` and ``_`` equivalent (``"NT-Xent"`` is ``"nt_xent"``). An
unknown name is a ``ValueError`` that lists the registered names and suggests the closest one.

A new loss is its function plus one registration, and it is then available to every surface::

    register_loss("my_loss", function=my_loss, defaults={"temperature": 0.1}, description="one line")

(without ``module=`` the name gets a generic ``nn.Module`` that calls the function with its parameters).

The built-in names, and where each default comes from. Where a loss trains a built-in run through a
strategy, the strategy's default is the loss's, so ``make run`` is unchanged:

================== ============================= ================================= ===============================
name               aliases                       defaults                          why these
================== ============================= ================================= ===============================
info_nce           infonce, nt_xent, ntxent      T=0.1                             function, module and every
                                                                                   InfoNCE strategy (uniform-k,
                                                                                   class-k, hard-k, mined-k,
                                                                                   queue, ans)
symmetric_info_nce simclr, clip, symmetric       T=0.1, symmetric=True             the simclr and scl strategies,
                                                                                   which were always symmetric
sup_con            supcon                        T=0.1                             function, module, strategy
dcl                —                             T=0.1, sigma=None                 function, module, strategy
dclw               —                             T=0.1, sigma=0.5                  DCLW's σ = 0.5 (Yeh et al.)
hard_nce           hardnce                       T=0.5, beta=1.0, tau_plus=0.0     the function's and module's
                                                                                   (Robinson et al.'s T, β)
hucl               —                             T=0.1, beta=0.5, tau_plus=0.0     the hucl strategy's
hscl               —                             T=0.1, beta=0.5                   the hscl strategy's
decoupled_softmax  dexml                         T=0.05                            function, module, retrieval
mw_auc             mw, mannwhitney, mann_whitney (none: it takes scores)           —
global_contrastive sogclr, gcl                   T=0.1, gamma=0.9 (+ num_samples)  module, sogclr strategy
emc2               mcmc_global_contrastive       T=0.1                             the emc2 strategy
meow               —                             T=0.9, clusters (8, 32), λ=1      MEOW's T and lam_proto; the
                                                                                   cluster counts are negkit's
metrix             —                             T=0.1, alpha=2, top_k=3           Metrix's α = 2; InfoNCE's T
amcl               —                             3 heads, τ∈(1e-5, 2), β=0.1       the official AMCL code's
adameow            —                             T=1.0, hidden=16                  AdaMEOW's ACM T and MLP width
soft_top_k         —                             T=0.05, k=5, alpha=2, n_iter=32   DEXML's defaults
tcm                —                             m⁺=0.9, m⁻=0.5, λ⁺=λ⁻=1           Zhang et al.; PML's defaults
gist               —                             T=0.01, margin=0, absolute        sentence-transformers'
                                                                                   GISTEmbedLoss
siglip             —                             t=10, b=−10 (module: learnable,   SigLIP's published
                                                 t ≤ 100)                          initialisation (Zhai et al.)
================== ============================= ================================= ===============================

Changed meanings (before this table, ``create_loss`` had its own): ``create_loss("hucl")`` and ``"hscl"`` gave
T=0.5, β=1 (now the strategies' T=0.1, β=0.5); ``"simclr"`` was the one-directional InfoNCE (now symmetric,
as the strategy); ``"dclw"`` built an unweighted DCL (now σ=0.5). ``"hard_nce"``/``"hardnce"`` keep T=0.5, β=1.
The sentence-transformers adapter's unset temperature is now the name's (``info_nce``: 0.1, was 0.05).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from negkit.losses import functional as F
from negkit.losses.global_contrastive import GlobalContrastiveLoss
from negkit.losses.guided import GIST
from negkit.losses.modules import (
    AMCL,
    DCL,
    MEOW,
    TCM,
    AdaMEOW,
    DecoupledSoftmax,
    EMC2Loss,
    HardNCE,
    InfoNCE,
    MannWhitneyLoss,
    SkipCounting,
    SoftTopK,
    SupCon,
)
from negkit.losses.sigmoid import SigLIP

__all__ = [
    "FunctionLoss",
    "LossSpec",
    "create_loss",
    "get_loss",
    "list_losses",
    "register_loss",
    "unregister_loss",
]


class FunctionLoss(SkipCounting):
    """A registered loss function as a module: ``forward(*inputs, **kwargs)`` returns
    ``function(*inputs, **params, **kwargs)`` (and sets ``skipped_anchors``). :func:`register_loss` makes one
    subclass per function-only loss."""

    function: Callable[..., Tensor]

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = dict(params)

    def forward(self, *inputs: Any, **kwargs: Any) -> Tensor:
        return self.counted(type(self).function, *inputs, **{**self.params, **kwargs})

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.params.items())


@dataclass(frozen=True)
class LossSpec:
    """One named loss: its functional form, its module, and the defaults both are called with under this name.

    Attributes:
        name: canonical snake_case name.
        function: the functional form, called as ``function(*inputs, **defaults, **overrides)``; ``None`` for a
            loss that keeps state between calls (``global_contrastive``: per-sample estimates), which only has
            a module.
        module: the ``nn.Module`` class; :meth:`create` builds it with ``**defaults, **overrides``.
        defaults: the name's hyper-parameters (read-only); anything else takes the function's or module's own
            default (``reduction="mean"``, ``similarity="cosine"``, ...).
        description: one line: what it is, its inputs and which negatives each anchor sees.
        aliases: other names that resolve to this spec.
    """

    name: str
    function: Callable[..., Tensor] | None
    module: type[nn.Module]
    defaults: Mapping[str, Any]
    description: str
    aliases: tuple[str, ...] = ()

    def parameters(self) -> frozenset[str] | None:
        """Keyword parameters :meth:`create` accepts (``None``: any, the module takes ``**kwargs``)."""
        if issubclass(self.module, FunctionLoss):
            return _keywords(self.function)
        return _keywords(self.module)

    def required(self) -> tuple[str, ...]:
        """Parameters of the module that have no default and that :attr:`defaults` does not set (SogCLR's
        ``num_samples``)."""
        if issubclass(self.module, FunctionLoss):
            return ()
        signature = inspect.signature(self.module)
        return tuple(
            name
            for name, p in signature.parameters.items()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and name not in self.defaults
        )

    def options(self, **overrides: Any) -> dict[str, Any]:
        """``defaults`` updated with ``overrides``, after checking that the loss takes every key."""
        accepted = self.parameters()
        if accepted is not None:
            unknown = sorted(set(overrides) - accepted)
            if unknown:
                raise ValueError(
                    f"loss {self.name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                    f"it takes {', '.join(sorted(accepted)) or 'none'}"
                )
        return {**self.defaults, **overrides}

    def create(self, **overrides: Any) -> nn.Module:
        """The module with this name's defaults and ``overrides`` (hyper-parameters checked now)."""
        params = self.options(**overrides)
        missing = [name for name in self.required() if name not in params]
        if missing:
            raise ValueError(
                f"loss {self.name!r} needs {', '.join(missing)}: create_loss({self.name!r}, {missing[0]}=...)"
            )
        return self.module(**params)

    def bind(self, **overrides: Any) -> Callable[..., Tensor]:
        """The function with this name's defaults and ``overrides`` bound: ``bind()(inputs...)``."""
        if self.function is None:
            raise ValueError(f"loss {self.name!r} keeps state between calls and has no functional form; use create()")
        accepted = _keywords(self.function)
        unknown = sorted(set(overrides) - accepted) if accepted is not None else []
        if unknown:
            raise ValueError(
                f"loss {self.name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(sorted(accepted))}"
            )
        return functools.partial(self.function, **{**self.defaults, **overrides})


_SPECS: dict[str, LossSpec] = {}  # canonical name -> spec
_NAMES: dict[str, str] = {}  # every normalised name and alias -> canonical name


def _normalise(name: str) -> str:
    """``name`` stripped, lower-case, ``-`` as ``_``: the form names and aliases are stored and matched in."""
    return name.strip().lower().replace("-", "_")


def register_loss(
    name: str,
    *,
    function: Callable[..., Tensor] | None = None,
    module: type[nn.Module] | None = None,
    defaults: Mapping[str, Any] | None = None,
    aliases: Iterable[str] = (),
    description: str = "",
) -> LossSpec:
    """Register a loss under ``name`` (and ``aliases``); every surface can then use it by name.

    Args:
        name: canonical name (normalised: lower-case, ``_`` for ``-``).
        function: the functional form. Needed unless ``module`` is given.
        module: the ``nn.Module`` class; without it, a :class:`FunctionLoss` subclass that calls ``function``.
        defaults: the hyper-parameters this name means; each must be a parameter of the module and of the
            function.
        aliases: other names for the same spec.
        description: one line for listings.

    Returns:
        The new :class:`LossSpec`.

    Raises:
        ValueError: a name or alias already taken, neither function nor module, or a default that the
            function or module does not take.
    """
    if function is None and module is None:
        raise ValueError(f"loss {name!r}: give its function, its module class, or both")
    key = _normalise(name)
    keys = list(dict.fromkeys([key, *(_normalise(alias) for alias in aliases)]))
    for alias in keys:
        if alias in _NAMES:
            raise ValueError(f"loss name {alias!r} is already registered to {_NAMES[alias]!r}")
    if module is None:
        camel = "".join(part.title() for part in key.split("_"))
        module = type(
            f"{camel}Loss", (FunctionLoss,), {"function": staticmethod(function), "__doc__": description or None}
        )
    spec = LossSpec(key, function, module, MappingProxyType(dict(defaults or {})), description, tuple(keys[1:]))
    checks = [("module", spec.parameters())] + ([("function", _keywords(function))] if function else [])
    for part, accepted in checks:
        unknown = sorted(set(spec.defaults) - accepted) if accepted is not None else []
        if unknown:
            raise ValueError(f"loss {name!r}: its {part} takes no parameter {', '.join(map(repr, unknown))}")
    _SPECS[key] = spec
    for alias in keys:
        _NAMES[alias] = key
    return spec


def unregister_loss(name: str) -> LossSpec:
    """Remove the loss ``name`` (any of its names) and all its aliases; return its spec."""
    spec = get_loss(name)
    del _SPECS[spec.name]
    for alias in (spec.name, *spec.aliases):
        _NAMES.pop(alias, None)
    return spec


def get_loss(name: str) -> LossSpec:
    """The :class:`LossSpec` registered as ``name`` or as one of its aliases.

    Raises:
        ValueError: unknown name; the message lists the registered names and the closest match.
    """
    if not isinstance(name, str):
        raise ValueError(f"a loss name must be a string, got {type(name).__name__}")
    key = _normalise(name)
    if key not in _NAMES:
        close = difflib.get_close_matches(key, list(_NAMES), n=1, cutoff=0.6)
        hint = f"; did you mean {_NAMES[close[0]]!r}?" if close else ""
        raise ValueError(f"unknown loss {name!r}; registered: {', '.join(list_losses())}{hint}")
    return _SPECS[_NAMES[key]]


def list_losses(pattern: str = "*", *, aliases: bool = False) -> list[str]:
    """Canonical loss names matching the shell-style ``pattern`` (normalised as names are), sorted; with
    ``aliases=True`` the aliases that match are listed too."""
    names = _NAMES if aliases else _SPECS
    return sorted(name for name in names if fnmatch.fnmatch(name, _normalise(pattern)))


def create_loss(name: str, **overrides: Any) -> nn.Module:
    """The module registered as ``name``, built with the name's defaults updated by ``overrides``."""
    return get_loss(name).create(**overrides)


def _keywords(fn: Callable[..., Any]) -> frozenset[str] | None:
    """Parameters of ``fn`` that can be passed by keyword (``None``: ``fn`` takes ``**kwargs``). For a
    function, a positional parameter without a default is an input (``anchor``), not a parameter."""
    parameters = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    is_class = isinstance(fn, type)
    return frozenset(
        p.name
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        or (
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and (is_class or p.default is not inspect.Parameter.empty)
        )
    )


# ------------------------------------------------------------------------------------------------- built-ins

register_loss(
    "info_nce",
    function=F.info_nce,
    module=InfoNCE,
    defaults={"temperature": 0.1},
    aliases=("infonce", "nt_xent", "ntxent"),
    description="InfoNCE, one direction: (anchor [B,d], positive [B,d], negatives=None|[K,d]|[B,K,d]); anchor i "
    "sees the other B−1 positives (minus same-label ones with labels=) and any explicit negatives",
)
register_loss(
    "symmetric_info_nce",
    function=F.info_nce,
    module=InfoNCE,
    defaults={"temperature": 0.1, "symmetric": True},
    aliases=("simclr", "clip", "symmetric"),
    description="InfoNCE averaged over both directions (SimCLR/CLIP): (anchor [B,d], positive [B,d]); anchor i "
    "sees the other B−1 positives, positive i the other B−1 anchors",
)
register_loss(
    "sup_con",
    function=F.sup_con,
    module=SupCon,
    defaults={"temperature": 0.1},
    aliases=("supcon",),
    description="supervised contrastive L_out: (embeddings [N,d], labels [N]); every same-label row is a "
    "positive, every other row is in the denominator",
)
register_loss(
    "dcl",
    function=F.dcl,
    module=DCL,
    defaults={"temperature": 0.1, "sigma": None},
    description="decoupled contrastive loss: (z1 [B,d], z2 [B,d]); each view sees the 2B−2 other views, the "
    "positive leaves the denominator",
)
register_loss(
    "dclw",
    function=F.dcl,
    module=DCL,
    defaults={"temperature": 0.1, "sigma": 0.5},
    description="DCL with DCLW's von Mises–Fisher positive weight (sigma): (z1 [B,d], z2 [B,d]); negatives as dcl",
)
register_loss(
    "hard_nce",
    function=F.hard_nce,
    module=HardNCE,
    defaults={"temperature": 0.5, "beta": 1.0, "tau_plus": 0.0},
    aliases=("hardnce",),
    description="hard negatives, the papers' T and β: (z1 [B,d], z2 [B,d], labels=None); H-UCL without labels "
    "(2B−2 other views, tilted ∝ e^{β·l}), H-SCL with labels (other classes only)",
)
register_loss(
    "hucl",
    function=F.hard_nce,
    module=HardNCE,
    defaults={"temperature": 0.1, "beta": 0.5, "tau_plus": 0.0},
    description="H-UCL as negkit trains it: (z1 [B,d], z2 [B,d]); each view sees the 2B−2 other views, "
    "re-weighted ∝ e^{β·l}, debiased by tau_plus",
)
register_loss(
    "hscl",
    function=F.hard_nce,
    module=HardNCE,
    defaults={"temperature": 0.1, "beta": 0.5},
    description="H-SCL as negkit trains it: (z1 [B,d], z2 [B,d], labels [B]); same-label views are positives, "
    "only other classes are negatives, re-weighted ∝ e^{β·l}",
)
register_loss(
    "decoupled_softmax",
    function=F.decoupled_softmax,
    module=DecoupledSoftmax,
    defaults={"temperature": 0.05},
    aliases=("dexml",),
    description="multi-label decoupled softmax (DEXML): (query [B,d], items [N,d], relevance [B,N]); each "
    "relevant item competes with the query's non-relevant items only",
)
register_loss(
    "mw_auc",
    function=F.mw_auc,
    module=MannWhitneyLoss,
    defaults={},
    aliases=("mw", "mannwhitney", "mann_whitney"),
    description="Mann–Whitney AUC loss on scores: (scores [B,N], relevance [B,N]); every (relevant, "
    "non-relevant) pair of a row",
)
register_loss(
    "global_contrastive",
    module=GlobalContrastiveLoss,
    defaults={"temperature": 0.1, "gamma": 0.9},
    aliases=("sogclr", "gcl"),
    description="SogCLR's global contrastive loss (stateful; needs num_samples): (z1 [B,d], z2 [B,d], index "
    "[B]); the 2B−2 other views estimate each anchor's dataset-wide partition, averaged over visits",
)
register_loss(
    "emc2",
    function=F.emc2,
    module=EMC2Loss,
    defaults={"temperature": 0.1},
    aliases=("mcmc_global_contrastive",),
    description="EMC²'s surrogate of the global contrastive loss: (anchor [B,d], positive [B,d], negatives "
    "[B,K,d], negative_mask=None); anchor i sees its K negatives sampled ∝ e^{s/T}",
)
register_loss(
    "tcm",
    function=F.tcm,
    module=TCM,
    defaults={"pos_margin": 0.9, "neg_margin": 0.5, "pos_weight": 1.0, "neg_weight": 1.0},
    description="threshold-consistent margin regulariser (add to any base loss): (embeddings [B,d], labels [B]); "
    "same-label pairs below pos_margin and other-label pairs above neg_margin, each term a mean over violators",
)
register_loss(
    "soft_top_k",
    function=F.soft_top_k,
    module=SoftTopK,
    defaults={"temperature": 0.05, "k": 5, "alpha": 2.0, "n_iter": 32},
    description="DEXML's soft top-k loss: (query [B,d], items [N,d], relevance [B,N]); each relevant item is "
    "pushed above the query's soft top-k threshold over all N items",
)
register_loss(
    "adameow",
    module=AdaMEOW,
    defaults={"temperature": 1.0, "hidden": 16},
    description="AdaMEOW's weighted InfoNCE (learned weights, module only: it holds the weight MLP): (anchor [B,d], "
    "positive [B,d]); anchor i sees every positive_j, j = i included, weighted by σ(MLP(z_i + z_j))",
)
register_loss(
    "amcl",
    module=AMCL,
    defaults={"heads": 3, "tau_lo": 1e-5, "tau_hi": 2.0, "beta": 0.1},
    description="AMCL's pair-adaptive head-wise temperatures (module only: it holds the temperature MLPs): (z1 "
    "[B,C,d] or [B,d], z2 likewise); in each head every view sees the 2B−2 other views, NT-Xent averaged over heads",
)
register_loss(
    "metrix",
    function=F.metrix,
    defaults={"temperature": 0.1, "alpha": 2.0, "top_k": 3},
    description="InfoNCE + Metrix's mixes of each positive with the anchor's top_k hardest negatives, mixed labels "
    "λ/(1−λ): (anchor [B,d], positive [B,d]); anchor i sees the other B−1 positives and its mixes",
)
register_loss(
    "meow",
    module=MEOW,
    defaults={"temperature": 0.9, "proto_weight": 1.0},
    description="MEOW's hard-weighted InfoNCE + ProtoNCE (module only: it clusters each batch; the function "
    "losses.meow takes assignments [B,K]): (anchor [B,d], positive [B,d]); anchor i sees each positive_j weighted "
    "by the number of clusterings that separate i and j",
)
register_loss(
    "siglip",
    function=F.siglip,
    module=SigLIP,
    defaults={"logit_scale": 10.0, "logit_bias": -10.0},
    description="SigLIP's pairwise sigmoid loss: (anchor [B,d], positive [B,d], labels=None); anchor i sees each of "
    "the B positives as one logistic term, a positive for j = i (or equal labels), a negative otherwise",
)
register_loss(
    "gist",
    function=F.gist,
    module=GIST,
    defaults={"temperature": 0.01, "margin": 0.0, "margin_strategy": "absolute"},
    description="GISTEmbed's guided InfoNCE: (anchor [B,d], positive [B,d], guide_anchor [B,d_g], guide_positive "
    "[B,d_g], negatives=None|[N,d], guide_negatives); anchor i sees the other p_j, a_j, p_i–p_j pairs and the "
    "negatives minus those the guide scores above its positive − margin (and inputs equal by key)",
)
