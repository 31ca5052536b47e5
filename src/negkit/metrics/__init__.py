"""negkit metrics: evaluate frozen embeddings and the negatives a loss sees.

All functions are pure, take torch tensors (embeddings ``float [N,d]``, labels ``int [N]``), return Python floats
(or a dict of floats; :func:`knn_predict` returns a tensor), use cosine similarity (rows are L2-normalised
inside) and never hold an ``N×N`` similarity matrix: pairwise work is done ``chunk_size`` rows at a time.
Bad input raises ``ValueError`` naming the argument.

* :func:`knn_predict`, :func:`knn_accuracy` — weighted cosine kNN (Wu et al., CVPR 2018).
* :func:`linear_probe_accuracy` — standardised features + L-BFGS logistic regression (needs scikit-learn).
* :func:`retrieval_metrics` — Recall@k, Precision@1, R-Precision, MAP@R (Musgrave et al., ECCV 2020).
* :func:`alignment`, :func:`uniformity` — Wang & Isola (ICML 2020); :func:`tolerance` — Wang & Liu (CVPR 2021).
* :func:`false_negative_rate`, :func:`in_batch_false_negative_rate` — class collisions among negatives.
* :func:`opis` — variance across classes of the operating characteristics over a range of thresholds (negkit's
  definition after Zhang et al., ICLR 2024; what the TCM regulariser targets).
"""

from negkit.metrics.geometry import alignment, tolerance, uniformity
from negkit.metrics.knn import knn_accuracy, knn_predict
from negkit.metrics.negatives import false_negative_rate, in_batch_false_negative_rate
from negkit.metrics.opis import opis
from negkit.metrics.probe import linear_probe_accuracy
from negkit.metrics.ranking import query_document_metrics
from negkit.metrics.retrieval import retrieval_metrics

__all__ = [
    "alignment",
    "false_negative_rate",
    "in_batch_false_negative_rate",
    "knn_accuracy",
    "knn_predict",
    "linear_probe_accuracy",
    "opis",
    "query_document_metrics",
    "retrieval_metrics",
    "tolerance",
    "uniformity",
]
