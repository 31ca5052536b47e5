"""negkit losses: functions (``negkit.losses.info_nce``) and matching modules (``negkit.losses.InfoNCE``).

All are configurations of one log-sum-exp core (:mod:`negkit.losses.functional.core`).
"""

from negkit.losses import functional
from negkit.losses.functional import dcl, decoupled_softmax, hard_nce, info_nce, mw_auc, sup_con
from negkit.losses.global_contrastive import GlobalContrastiveLoss
from negkit.losses.modules import DCL, DecoupledSoftmax, HardNCE, InfoNCE, MannWhitneyLoss, SupCon
from negkit.losses.registry import create_loss, list_losses, register_loss

__all__ = [
    "DCL",
    "DecoupledSoftmax",
    "GlobalContrastiveLoss",
    "HardNCE",
    "InfoNCE",
    "MannWhitneyLoss",
    "SupCon",
    "create_loss",
    "dcl",
    "decoupled_softmax",
    "functional",
    "hard_nce",
    "info_nce",
    "list_losses",
    "mw_auc",
    "register_loss",
    "sup_con",
]
