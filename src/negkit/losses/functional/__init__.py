"""Pure, shape-documented math of negkit's losses. Every loss is a configuration of :mod:`.core`."""

from negkit.losses.functional.adaptive import amcl
from negkit.losses.functional.auc import mw_auc
from negkit.losses.functional.candidates import indexed_info_nce
from negkit.losses.functional.core import (
    RowLoss,
    masked_logsumexp,
    nce_rows,
    positive_nll,
    reduce_loss,
    similarity_logits,
)
from negkit.losses.functional.decoupled import dcl, decoupled_softmax
from negkit.losses.functional.guided import gist
from negkit.losses.functional.hard import debiased_log_mass, hard_nce, hardness_log_weights
from negkit.losses.functional.logq import logq_in_batch_nce
from negkit.losses.functional.mixing import metrix
from negkit.losses.functional.nce import info_nce
from negkit.losses.functional.sampled import emc2
from negkit.losses.functional.siglip import siglip, siglip_distributed
from negkit.losses.functional.soft_topk import soft_top_k, soft_top_k_threshold
from negkit.losses.functional.supervised import sup_con
from negkit.losses.functional.tcm import tcm
from negkit.losses.functional.weighted import adameow, meow

__all__ = [
    "RowLoss",
    "adameow",
    "amcl",
    "dcl",
    "debiased_log_mass",
    "decoupled_softmax",
    "emc2",
    "gist",
    "hard_nce",
    "hardness_log_weights",
    "indexed_info_nce",
    "info_nce",
    "logq_in_batch_nce",
    "masked_logsumexp",
    "meow",
    "metrix",
    "mw_auc",
    "nce_rows",
    "positive_nll",
    "reduce_loss",
    "siglip",
    "siglip_distributed",
    "similarity_logits",
    "soft_top_k",
    "soft_top_k_threshold",
    "sup_con",
    "tcm",
]
