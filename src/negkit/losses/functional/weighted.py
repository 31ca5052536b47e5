"""Weighted negatives of MEOW (hard weights from clusterings) and AdaMEOW (learned soft weights); Yu, Ge, Li,
Zhou, SDM 2023 / TKDE 2024, arXiv 2212.13847."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from negkit._validation import (
    check_finite_scalar,
    check_pair,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    check_tensor,
    normalize_rows,
)
from negkit.losses.functional.core import nce_rows, reduce_loss, similarity_logits, skip_anchors


def adameow(
    anchor: Tensor,
    positive: Tensor,
    weight_logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    """AdaMEOW's weighted InfoNCE with soft weights ``w_ij = σ(weight_logits_ij)``.

    With ``l_ij = sim(anchor_i, positive_j) / T``::

        ℓ_i = −l_ii + log Σ_j w_ij e^{l_ij}

    Which negatives anchor ``i`` sees: every ``positive_j``, *including its own positive* ``j = i``, each
    weighted by ``w_ij`` (the reference ``weight_InfoNce`` sums over all ``j`` and weights ``j = i`` too; the
    numerator is unweighted). The weights enter the core as log-weights ``log σ(weight_logits)``. In AdaMEOW
    ``weight_logits_ij = MLP(z_i + z_j)`` (:class:`negkit.losses.AdaMEOW` holds that MLP). Note that this loss
    alone rewards smaller weights (``ℓ_i`` falls as every ``w_ij`` falls), as in the reference code, which has
    no term against it; the weights stay in (0, 1).

    Args:
        anchor: ``[B,d]`` (AdaMEOW's fine-grained view).
        positive: ``[B,d]`` (the coarse view).
        weight_logits: ``[B,B]`` pre-sigmoid weights of every (anchor, positive) pair.
        temperature: T > 0 (AdaMEOW: 1.0 on ACM, 0.9 on DBLP / AMiner / IMDB).
        similarity: ``"cosine"`` (the reference L2-normalises its projections) or ``"dot"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_similarity(similarity)
    check_pair(anchor, positive)
    rows = anchor.shape[0]
    check_tensor("weight_logits", weight_logits, 2)
    if tuple(weight_logits.shape) != (rows, rows):
        raise ValueError(f"weight_logits must have shape [{rows}, {rows}], got {tuple(weight_logits.shape)}")
    logits = similarity_logits(anchor, positive, temperature, similarity, names="anchor, positive")
    log_weights = F.logsigmoid(weight_logits.to(logits.dtype))
    row = logits.diagonal().unsqueeze(1)
    result = nce_rows(row, logits, negative_log_weights=log_weights, include_positive=False)
    skipped = skip_anchors(rows, empty="anchor")
    return reduce_loss(result.loss, reduction, skipped=skipped)


def meow(
    anchor: Tensor,
    positive: Tensor,
    assignments: Tensor,
    *,
    temperature: float | Tensor = 0.9,
    centroids: Sequence[Tensor] | None = None,
    concentrations: Sequence[Tensor] | None = None,
    proto_weight: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """MEOW's weighted InfoNCE with hard weights from ``K`` clusterings, plus its prototype (ProtoNCE) term.

    With ``l_ij = cos(anchor_i, positive_j) / T`` and ``c_k(i) = assignments[i, k]`` the cluster of row ``i`` in
    clustering ``k``::

        w_ij     = #{k : c_k(i) ≠ c_k(j)}                    (the clusterings that separate i and j)
        info_i   = −l_ii + log Σ_j w_ij e^{l_ij}              (MEOW: −log(d_ii / (N · mean_j w_ij d_ij)))
        proto_i  = (1/K) Σ_k −log softmax_m( cos(anchor_i, C_k,m) / φ_k,m )[c_k(i)]
        loss_i   = info_i + proto_weight · proto_i

    Which negatives anchor ``i`` sees: every ``positive_j`` that some clustering puts in another cluster, weighted
    by how many do; ``j = i`` (``w_ii = 0``) and rows that share all of ``i``'s clusters drop out — the likely
    false negatives. The weights enter the core as log-weights ``log w_ij``. The prototype term (``centroids``
    ``C_k [M_k, d]`` and their concentrations ``φ_k [M_k]``, as Prototypical Contrastive Learning, which MEOW
    uses) is skipped when ``centroids`` is ``None``; :class:`negkit.losses.MEOW` clusters each batch and supplies
    both. An anchor with no negative left (every row shares all its clusters) is skipped: 0, left out of the
    mean; strict mode raises.

    Args:
        anchor: ``[B,d]``.
        positive: ``[B,d]``.
        assignments: ``[B,K]`` integer cluster ids of each row in ``K ≥ 1`` clusterings.
        temperature: T > 0 (MEOW: 0.4 on ACM, 0.9 on DBLP / AMiner / IMDB).
        centroids: ``K`` tensors ``[M_k, d]`` (the clusterings' centroids), or ``None``.
        concentrations: ``K`` tensors ``[M_k]`` of positive concentrations φ (needed with ``centroids``).
        proto_weight: weight ≥ 0 of the prototype term (MEOW's ``lam_proto``, 1.0).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).
    """
    check_positive_scalar("temperature", temperature)
    weight = check_finite_scalar("proto_weight", proto_weight, low=0.0)
    check_reduction(reduction)
    check_pair(anchor, positive)
    rows = anchor.shape[0]
    if not isinstance(assignments, Tensor) or assignments.dim() != 2 or assignments.shape[0] != rows:
        shape = tuple(assignments.shape) if isinstance(assignments, Tensor) else type(assignments).__name__
        raise ValueError(f"assignments must be a [{rows}, K] tensor of cluster ids, got {shape}")
    if assignments.is_floating_point() or assignments.is_complex() or assignments.dtype == torch.bool:
        raise ValueError(f"assignments must hold integer cluster ids, got dtype {assignments.dtype}")
    clusterings = assignments.shape[1]
    if clusterings < 1:
        raise ValueError("assignments must have at least one clustering (column)")
    if assignments.numel() and int(assignments.min()) < 0:
        raise ValueError("assignments must hold non-negative cluster ids")
    assignments = assignments.to(anchor.device)
    logits = similarity_logits(anchor, positive, temperature, names="anchor, positive")
    same = (assignments.unsqueeze(1) == assignments.unsqueeze(0)).sum(dim=-1)  # [B,B] clusterings that agree
    separating = (clusterings - same).to(logits.dtype)
    result = nce_rows(
        logits.diagonal().unsqueeze(1),
        logits,
        negative_mask=separating > 0,
        negative_log_weights=torch.log(separating.clamp(min=1)),
        include_positive=False,
    )
    skipped = skip_anchors(
        rows,
        no_negative=result.no_negative,
        context="every other row shares all of their clusters",
        empty="anchor",
    )
    loss = result.loss
    if centroids is not None:
        loss = loss + weight * _proto_nce(anchor, assignments, centroids, concentrations, logits.dtype)
    return reduce_loss(loss, reduction, skipped=skipped)


def _proto_nce(
    anchor: Tensor,
    assignments: Tensor,
    centroids: Sequence[Tensor],
    concentrations: Sequence[Tensor] | None,
    dtype: torch.dtype,
) -> Tensor:
    """``[B]`` ProtoNCE: mean over clusterings of the cross-entropy of each row's own prototype."""
    clusterings = assignments.shape[1]
    if isinstance(centroids, Tensor) or len(centroids) != clusterings:
        raise ValueError(f"centroids must be a sequence of {clusterings} tensors [M_k, d], one per clustering")
    if concentrations is None or isinstance(concentrations, Tensor) or len(concentrations) != clusterings:
        raise ValueError(f"concentrations must be a sequence of {clusterings} tensors [M_k] with centroids")
    z = normalize_rows(anchor.to(dtype))
    total = torch.zeros(anchor.shape[0], dtype=dtype, device=anchor.device)
    for k, (centres, phi) in enumerate(zip(centroids, concentrations, strict=True)):
        check_tensor(f"centroids[{k}]", centres, 2)
        check_tensor(f"concentrations[{k}]", phi, 1)
        if centres.shape[1] != anchor.shape[1] or phi.shape[0] != centres.shape[0]:
            raise ValueError(
                f"centroids[{k}] must be [M, {anchor.shape[1]}] and concentrations[{k}] [M], got "
                f"{tuple(centres.shape)} and {tuple(phi.shape)}"
            )
        if not bool((phi > 0).all()):
            raise ValueError(f"concentrations[{k}] must be > 0")
        if assignments.numel() and int(assignments[:, k].max()) >= centres.shape[0]:
            raise ValueError(f"assignments[:, {k}] must be below the {centres.shape[0]} rows of centroids[{k}]")
        scores = z @ normalize_rows(centres.to(dtype)).T / phi.to(dtype)
        own = scores.gather(1, assignments[:, k : k + 1]).squeeze(1)
        total = total + torch.logsumexp(scores, dim=1) - own
    return total / clusterings


def spherical_kmeans(x: Tensor, clusters: int, *, n_iter: int = 20, seed: int = 0) -> tuple[Tensor, Tensor]:
    """k-means on the unit sphere (inner-product assignment, as MEOW's faiss ``IndexFlatIP``), no gradient.

    Returns ``(assignments [N], centroids [clusters, d])``; centroids start at ``clusters`` distinct rows drawn
    with ``seed``; an emptied cluster keeps its centroid.
    """
    with torch.no_grad():
        z = normalize_rows(x.detach().float())
        generator = torch.Generator().manual_seed(seed)
        start = torch.randperm(z.shape[0], generator=generator)[:clusters].to(z.device)
        centres = z[start].clone()
        assign = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        for _ in range(n_iter):
            assign = (z @ centres.T).argmax(dim=1)
            sums = torch.zeros_like(centres).index_add_(0, assign, z)
            counts = torch.bincount(assign, minlength=clusters)
            moved = counts > 0
            centres = torch.where(moved.unsqueeze(1), normalize_rows(sums), centres)
        assign = (z @ centres.T).argmax(dim=1)
        return assign, centres


def pcl_concentrations(x: Tensor, assignments: Tensor, centroids: Tensor, temperature: float) -> Tensor:
    """Prototypical Contrastive Learning's concentration of each cluster: ``φ_m = mean‖z − c_m‖ / log(n_m + 10)``
    (clusters of one row take the largest φ), clipped to the 10th–90th percentiles and scaled to mean
    ``temperature``. No gradient."""
    with torch.no_grad():
        z = normalize_rows(x.detach().float())
        clusters = centroids.shape[0]
        distance = (z - centroids[assignments]).norm(dim=1)
        counts = torch.bincount(assignments, minlength=clusters).float()
        sums = torch.zeros(clusters, device=z.device).index_add_(0, assignments, distance)
        phi = sums / counts.clamp(min=1) / torch.log(counts + 10)
        lonely = counts <= 1
        largest = phi[~lonely].max() if bool((~lonely).any()) else torch.tensor(1.0, device=z.device)
        phi = torch.where(lonely, largest, phi)
        low, high = torch.quantile(phi, 0.1), torch.quantile(phi, 0.9)
        phi = phi.clamp(min=float(low), max=float(high)).clamp(min=1e-6)
        return temperature * phi / phi.mean()
