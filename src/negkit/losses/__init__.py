"""negkit losses: functions (``negkit.losses.info_nce``) and matching modules (``negkit.losses.InfoNCE``).

All are configurations of one log-sum-exp core (:mod:`negkit.losses.functional.core`). Every loss name, with
its defaults, is in :mod:`negkit.losses.registry` (``create_loss("hucl")``, ``get_loss("simclr")``).

Degenerate batches (empty, one row, no positive pair, no negative left) give a loss of 0 with a zero gradient
by default, and count their skipped anchors (:func:`count_skipped`, ``module.skipped_anchors``);
:func:`set_strict` / ``with strict():`` make them raise :class:`DegenerateBatchError` instead (the same switch
governs the samplers of :mod:`negkit.negatives` and the sentence-transformers adapter).
"""

from negkit._validation import (
    DegenerateBatchError,
    SkipCounter,
    count_skipped,
    fast_checks,
    is_strict,
    set_fast_checks,
    set_strict,
    strict,
)
from negkit.losses import functional
from negkit.losses.functional import (
    adameow,
    amcl,
    dcl,
    decoupled_softmax,
    emc2,
    gist,
    hard_nce,
    indexed_info_nce,
    info_nce,
    logq_in_batch_nce,
    meow,
    metrix,
    mw_auc,
    siglip,
    siglip_distributed,
    soft_top_k,
    sup_con,
    tcm,
)
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
    LogitScale,
    MannWhitneyLoss,
    SoftTopK,
    SupCon,
)
from negkit.losses.registry import LossSpec, create_loss, get_loss, list_losses, register_loss, unregister_loss
from negkit.losses.sigmoid import SigLIP

__all__ = [
    "AMCL",
    "DCL",
    "GIST",
    "MEOW",
    "TCM",
    "AdaMEOW",
    "DecoupledSoftmax",
    "DegenerateBatchError",
    "EMC2Loss",
    "GlobalContrastiveLoss",
    "HardNCE",
    "InfoNCE",
    "LogitScale",
    "LossSpec",
    "MannWhitneyLoss",
    "SigLIP",
    "SkipCounter",
    "SoftTopK",
    "SupCon",
    "adameow",
    "amcl",
    "count_skipped",
    "create_loss",
    "dcl",
    "decoupled_softmax",
    "emc2",
    "fast_checks",
    "functional",
    "get_loss",
    "gist",
    "hard_nce",
    "indexed_info_nce",
    "info_nce",
    "is_strict",
    "list_losses",
    "logq_in_batch_nce",
    "meow",
    "metrix",
    "mw_auc",
    "register_loss",
    "set_fast_checks",
    "set_strict",
    "siglip",
    "siglip_distributed",
    "soft_top_k",
    "strict",
    "sup_con",
    "tcm",
    "unregister_loss",
]
