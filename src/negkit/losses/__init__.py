"""negkit losses: functions (``negkit.losses.info_nce``) and matching modules (``negkit.losses.InfoNCE``).

All are configurations of one log-sum-exp core (:mod:`negkit.losses.functional.core`). Every loss name, with
its defaults, is in :mod:`negkit.losses.registry` (``create_loss("hucl")``, ``get_loss("simclr")``).
"""

from negkit.losses import functional
from negkit.losses.functional import (
    dcl,
    decoupled_softmax,
    emc2,
    hard_nce,
    indexed_info_nce,
    info_nce,
    mw_auc,
    sup_con,
)
from negkit.losses.global_contrastive import GlobalContrastiveLoss
from negkit.losses.modules import DCL, DecoupledSoftmax, EMC2Loss, HardNCE, InfoNCE, MannWhitneyLoss, SupCon
from negkit.losses.registry import LossSpec, create_loss, get_loss, list_losses, register_loss, unregister_loss

__all__ = [
    "DCL",
    "DecoupledSoftmax",
    "EMC2Loss",
    "GlobalContrastiveLoss",
    "HardNCE",
    "InfoNCE",
    "LossSpec",
    "MannWhitneyLoss",
    "SupCon",
    "create_loss",
    "dcl",
    "decoupled_softmax",
    "emc2",
    "functional",
    "get_loss",
    "hard_nce",
    "indexed_info_nce",
    "info_nce",
    "list_losses",
    "mw_auc",
    "register_loss",
    "sup_con",
    "unregister_loss",
]
