"""Slow, obviously-correct references: explicit loops over anchors, positives and negatives, straight from
each paper's formula. They use torch scalar ops (so gradients can be compared) on float64 inputs and share
no code with negkit. Each returns a ``[B]`` per-anchor tensor and, where anchors can be left out, a mask.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sim(u: Tensor, v: Tensor, similarity: str = "cosine") -> Tensor:
    dot = (u * v).sum()
    if similarity == "dot":
        return dot
    return dot / (u.norm() * v.norm())


def neg_log_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """−log(numerator / denominator) for positive scalars."""
    return -torch.log(numerator / denominator)


def info_nce(
    anchor,
    positive,
    negatives=None,
    *,
    temperature=0.1,
    labels=None,
    in_batch_negatives=True,
    negative_log_weights=None,
    similarity="cosine",
):
    B = anchor.shape[0]
    out = []
    for i in range(B):
        pos = torch.exp(sim(anchor[i], positive[i], similarity) / temperature)
        denominator = pos
        if in_batch_negatives:
            for j in range(B):
                if j == i or (labels is not None and int(labels[j]) == int(labels[i])):
                    continue
                denominator = denominator + torch.exp(sim(anchor[i], positive[j], similarity) / temperature)
        if negatives is not None:
            K = negatives.shape[-2]
            for k in range(K):
                neg = negatives[k] if negatives.dim() == 2 else negatives[i, k]
                weight = 1.0
                if negative_log_weights is not None:
                    lw = negative_log_weights[k] if negative_log_weights.dim() == 1 else negative_log_weights[i, k]
                    weight = torch.exp(lw)
                denominator = denominator + weight * torch.exp(sim(anchor[i], neg, similarity) / temperature)
        out.append(neg_log_ratio(pos, denominator))
    return torch.stack(out)


def nt_xent_views(z1, z2, *, temperature):
    """NT-Xent (SimCLR) over the 2B views: positive = other view, denominator = all other 2B−1 rows. [2B]."""
    Z = torch.cat([z1, z2])
    M = Z.shape[0]
    B = M // 2
    out = []
    for i in range(M):
        partner = (i + B) % M
        pos = torch.exp(sim(Z[i], Z[partner]) / temperature)
        denominator = sum(torch.exp(sim(Z[i], Z[j]) / temperature) for j in range(M) if j != i)
        out.append(neg_log_ratio(pos, denominator))
    return torch.stack(out)


def sup_con(embeddings, labels, *, temperature):
    """Khosla et al. L_out. Returns ([N] losses, [N] bool has-positive)."""
    N = embeddings.shape[0]
    out, keep = [], []
    for i in range(N):
        positives = [p for p in range(N) if p != i and int(labels[p]) == int(labels[i])]
        if not positives:
            out.append(torch.zeros((), dtype=embeddings.dtype))
            keep.append(False)
            continue
        denominator = sum(torch.exp(sim(embeddings[i], embeddings[a]) / temperature) for a in range(N) if a != i)
        terms = [
            neg_log_ratio(torch.exp(sim(embeddings[i], embeddings[p]) / temperature), denominator) for p in positives
        ]
        out.append(sum(terms) / len(positives))
        keep.append(True)
    return torch.stack(out), torch.tensor(keep)


def dcl(z1, z2, *, temperature, sigma=None, detach_weights=False):
    """Yeh et al. Eq. 6 (DCLW with sigma); per-sample mean of the two views' losses. [B]."""
    B = z1.shape[0]
    Z = torch.cat([z1, z2])
    weights = [1.0] * B
    if sigma is not None:
        pair_sims = [sim(z1[b], z2[b]) for b in range(B)]
        if detach_weights:
            pair_sims = [s.detach() for s in pair_sims]
        normaliser = sum(torch.exp(s / sigma) for s in pair_sims) / B
        weights = [2.0 - torch.exp(s / sigma) / normaliser for s in pair_sims]
    per_view = []
    for i in range(2 * B):
        partner = (i + B) % (2 * B)
        positive_term = -weights[i % B] * sim(Z[i], Z[partner]) / temperature
        denominator = sum(torch.exp(sim(Z[i], Z[j]) / temperature) for j in range(2 * B) if j not in (i, partner))
        per_view.append(positive_term + torch.log(denominator))
    return torch.stack([(per_view[b] + per_view[b + B]) / 2 for b in range(B)])


def hucl(z1, z2, *, temperature, beta, tau_plus, detach_weights=False):
    """Robinson et al.'s HCL estimator as their code computes it (with the clamp). [B]."""
    B = z1.shape[0]
    Z = torch.cat([z1, z2])
    N = 2 * B - 2
    per_view = []
    for i in range(2 * B):
        partner = (i + B) % (2 * B)
        pos = torch.exp(sim(Z[i], Z[partner]) / temperature)
        negs = [torch.exp(sim(Z[i], Z[j]) / temperature) for j in range(2 * B) if j not in (i, partner)]
        imps = [torch.exp(beta * sim(Z[i], Z[j]) / temperature) for j in range(2 * B) if j not in (i, partner)]
        if detach_weights:
            imps = [w.detach() for w in imps]
        reweight_neg = sum(w * n for w, n in zip(imps, negs, strict=True)) / (sum(imps) / N)
        Ng = (-tau_plus * N * pos + reweight_neg) / (1 - tau_plus)
        Ng = torch.clamp(Ng, min=N * math.exp(-1 / temperature))
        per_view.append(neg_log_ratio(pos, pos + Ng))
    return torch.stack([(per_view[b] + per_view[b + B]) / 2 for b in range(B)])


def hscl(z1, z2, labels, *, temperature, beta, detach_weights=False):
    """Jiang et al.'s H-SCL with the negative term n_i × tilted mean. Returns ([B] per-sample mean over
    both views' pairs, [B] number of pairs of each view, scalar mean over all pairs)."""
    B = z1.shape[0]
    Z = torch.cat([z1, z2])
    y = [int(v) for v in labels] * 2
    pair_losses_by_view = []
    for i in range(2 * B):
        c = [torch.exp(sim(Z[i], Z[j]) / temperature) for j in range(2 * B)]
        negatives = [j for j in range(2 * B) if y[j] != y[i]]
        positives = [p for p in range(2 * B) if p != i and y[p] == y[i]]
        weights = {j: torch.exp(beta * sim(Z[i], Z[j]) / temperature) for j in negatives}
        if detach_weights:
            weights = {j: w.detach() for j, w in weights.items()}
        tilted_mean = sum(weights[j] * c[j] for j in negatives) / sum(weights[j] for j in negatives)
        pair_losses_by_view.append([neg_log_ratio(c[p], c[p] + len(negatives) * tilted_mean) for p in positives])
    per_view = [sum(ls) / len(ls) for ls in pair_losses_by_view]
    per_sample = torch.stack([(per_view[b] + per_view[b + B]) / 2 for b in range(B)])
    counts = torch.tensor([len(pair_losses_by_view[b]) for b in range(B)])
    all_pairs = [loss for ls in pair_losses_by_view for loss in ls]
    return per_sample, counts, sum(all_pairs) / len(all_pairs)


def decoupled_softmax(query, items, relevance, *, temperature, similarity="cosine"):
    """DEXML decoupled softmax. Returns ([B] losses, [B] bool has-positive)."""
    out, keep = [], []
    for i in range(query.shape[0]):
        positives = [p for p in range(items.shape[0]) if relevance[i, p]]
        negatives = [n for n in range(items.shape[0]) if not relevance[i, n]]
        if not positives:
            out.append(torch.zeros((), dtype=query.dtype))
            keep.append(False)
            continue
        neg_mass = sum(torch.exp(sim(query[i], items[n], similarity) / temperature) for n in negatives)
        terms = []
        for p in positives:
            pos = torch.exp(sim(query[i], items[p], similarity) / temperature)
            terms.append(neg_log_ratio(pos, pos + neg_mass))
        out.append(sum(terms) / len(terms))
        keep.append(True)
    return torch.stack(out), torch.tensor(keep)


def mw_auc(scores, relevance):
    """Mann–Whitney loss: per query, mean over (pos, neg) pairs of log(1 + exp(−(s_p − s_n)))."""
    out, keep = [], []
    for i in range(scores.shape[0]):
        positives = [p for p in range(scores.shape[1]) if relevance[i, p]]
        negatives = [n for n in range(scores.shape[1]) if not relevance[i, n]]
        if not positives:
            out.append(torch.zeros((), dtype=scores.dtype))
            keep.append(False)
            continue
        terms = [torch.log(1 + torch.exp(-(scores[i, p] - scores[i, n]))) for p in positives for n in negatives]
        out.append(sum(terms) / len(terms))
        keep.append(True)
    return torch.stack(out), torch.tensor(keep)


def masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    return values[keep].mean()
