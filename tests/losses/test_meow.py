import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.losses import MEOW, DegenerateBatchError, count_skipped, create_loss, get_loss, meow, strict
from negkit.losses.functional.weighted import pcl_concentrations, spherical_kmeans
from tests.losses.helpers import grads, randn


def cos(u, v):
    return (u * v).sum() / (u.norm() * v.norm())


def meow_loop(anchor, positive, assignments, *, temperature, centroids=None, concentrations=None, proto_weight=1.0):
    """MEOW's L_info = −log(d_ii / (N · mean_j w_ij d_ij)) + λ·ProtoNCE, one row at a time; None = no negative."""
    B, K = assignments.shape
    out = []
    for i in range(B):
        d = [torch.exp(cos(anchor[i], positive[j]) / temperature) for j in range(B)]
        w = [sum(int(assignments[i, k] != assignments[j, k]) for k in range(K)) for j in range(B)]
        if sum(w) == 0:
            out.append(None)
            continue
        loss = -torch.log(d[i] / (B * (sum(wj * dj for wj, dj in zip(w, d, strict=True)) / B)))
        if centroids is not None:
            proto = 0.0
            for k in range(K):
                scores = [cos(anchor[i], centroids[k][m]) / concentrations[k][m] for m in range(centroids[k].shape[0])]
                own = scores[int(assignments[i, k])]
                proto = proto - torch.log(torch.exp(own) / sum(torch.exp(s) for s in scores))
            loss = loss + proto_weight * proto / K
        out.append(loss)
    return out


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 7),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 4),
    st.floats(0.1, 1.5),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_matches_the_loop_reference(B, d, K, M, temperature, with_proto, seed):
    a, p = randn(seed, B, d, requires_grad=True), randn(seed + 1, B, d, requires_grad=True)
    assignments = torch.randint(0, M, (B, K), generator=torch.Generator().manual_seed(seed + 2))
    extra = {}
    if with_proto:
        extra["centroids"] = [randn(seed + 3 + k, M, d) for k in range(K)]
        extra["concentrations"] = [0.1 + randn(seed + 9 + k, M).abs() for k in range(K)]
    want = meow_loop(a, p, assignments, temperature=temperature, proto_weight=0.7, **extra)
    got = meow(a, p, assignments, temperature=temperature, proto_weight=0.7, reduction="none", **extra)
    keep = torch.tensor([w is not None for w in want])
    for i, w in enumerate(want):
        if w is None:
            assert got[i] == 0
        else:
            torch.testing.assert_close(got[i], w)
    if keep.any():
        reference = torch.stack([w for w in want if w is not None]).mean()
        mean = meow(a, p, assignments, temperature=temperature, proto_weight=0.7, **extra)
        torch.testing.assert_close(mean, reference)
        for g_got, g_want in zip(grads(mean, a, p), grads(reference, a, p), strict=True):
            torch.testing.assert_close(g_got, g_want)


def test_all_separated_is_info_nce_without_the_positive():
    # every clustering puts every row alone: w_ij = K for j ≠ i, w_ii = 0: DCL's denominator + log K
    a, p = randn(0, 5, 3), randn(1, 5, 3)
    assignments = torch.arange(5).unsqueeze(1).repeat(1, 2)
    got = meow(a, p, assignments, temperature=0.5, reduction="none")
    logits = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(p, dim=1).T / 0.5
    off = logits.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
    torch.testing.assert_close(got, torch.logsumexp(off, dim=1) + math.log(2) - logits.diagonal())


def test_gradcheck():
    a, p = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3, requires_grad=True)
    assignments = torch.tensor([[0, 1], [0, 0], [1, 1], [1, 0]])
    centroids = [randn(2, 2, 3), randn(3, 2, 3)]
    phi = [torch.tensor([0.3, 0.5], dtype=torch.float64), torch.tensor([0.2, 0.4], dtype=torch.float64)]
    assert torch.autograd.gradcheck(
        lambda x, y: meow(x, y, assignments, temperature=0.5, centroids=centroids, concentrations=phi), (a, p)
    )


def test_kmeans_and_concentrations():
    centres = torch.eye(3, 6, dtype=torch.float64) * 5
    x = centres.repeat_interleave(10, dim=0) + 0.1 * randn(0, 30, 6)
    assign, found = spherical_kmeans(x, 3, seed=1)
    assert len(set(assign.tolist())) == 3
    for c in range(3):  # each true cluster is one found cluster
        assert len(set(assign[10 * c : 10 * c + 10].tolist())) == 1
    phi = pcl_concentrations(x, assign, found, 0.9)
    assert phi.shape == (3,) and bool((phi > 0).all()) and abs(phi.mean().item() - 0.9) < 1e-6


def test_module_clusters_the_batch_and_counts_separations():
    torch.manual_seed(0)
    a, p = randn(0, 24, 5, dtype=torch.float32, requires_grad=True), randn(1, 24, 5, dtype=torch.float32)
    module = create_loss("meow", num_clusters=(3, 6), proto_weight=0.5)
    assert isinstance(module, MEOW) and module.temperature == 0.9 and module.num_clusters == (3, 6)
    loss = module(a, p)
    assignments = torch.stack([spherical_kmeans(a, k, seed=s)[0] for s, k in enumerate((3, 6))], dim=1)
    centres = [spherical_kmeans(a, k, seed=s)[1] for s, k in enumerate((3, 6))]
    phi = [pcl_concentrations(a, assignments[:, s], centres[s], 0.9) for s in range(2)]
    want = meow(a, p, assignments, temperature=0.9, centroids=centres, concentrations=phi, proto_weight=0.5)
    torch.testing.assert_close(loss, want)
    assert bool(torch.isfinite(grads(loss, a)[0]).all())
    spec = get_loss("meow")
    assert spec.function is None and spec.defaults == {"temperature": 0.9, "proto_weight": 1.0}
    assert dict(module.state_dict()) == {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_temperature_001(dtype):
    a, p = randn(0, 32, 8, dtype=dtype, requires_grad=True), randn(1, 32, 8, dtype=dtype, requires_grad=True)
    loss = MEOW(0.01, num_clusters=(4, 8))(a, p)
    assert torch.isfinite(loss)
    for g in grads(loss, a, p):
        assert bool(torch.isfinite(g).all())


def test_rows_sharing_every_cluster_are_skipped_or_strict_error():
    a, p = randn(0, 3, 3, requires_grad=True), randn(1, 3, 3)
    together = torch.zeros(3, 2, dtype=torch.long)
    with count_skipped() as skipped:
        loss = meow(a, p, together)
    assert loss.item() == 0.0 and loss.requires_grad and skipped.anchors == 3
    assert bool((grads(loss, a)[0] == 0).all())
    with strict(), pytest.raises(DegenerateBatchError, match="shares all of their clusters"):
        meow(a, p, together)
    assert MEOW()(a[:1], p[:1]).item() == 0.0  # one row: its own cluster, no negative
    empty = MEOW()(a[:0], p[:0])
    assert empty.item() == 0.0
    with strict(), pytest.raises(DegenerateBatchError, match="empty"):
        MEOW()(a[:0], p[:0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"proto_weight": -1.0}, "proto_weight"),
        ({"num_clusters": ()}, "num_clusters"),
        ({"num_clusters": (4, 0)}, "num_clusters"),
        ({"n_iter": -1}, "n_iter"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MEOW(**kwargs)


def test_bad_inputs_name_the_argument():
    a, p = randn(0, 4, 3), randn(1, 4, 3)
    ok = torch.tensor([[0], [1], [0], [1]])
    with pytest.raises(ValueError, match="anchor"):
        meow(a[0], p, ok)
    with pytest.raises(ValueError, match="positive"):
        meow(a, p[:3], ok)
    with pytest.raises(ValueError, match="assignments"):
        meow(a, p, ok[:3])
    with pytest.raises(ValueError, match="assignments"):
        meow(a, p, ok.double())
    with pytest.raises(ValueError, match="assignments"):
        meow(a, p, -ok)
    with pytest.raises(ValueError, match="proto_weight"):
        meow(a, p, ok, proto_weight=math.nan)
    with pytest.raises(ValueError, match="concentrations"):
        meow(a, p, ok, centroids=[randn(2, 2, 3)])
    with pytest.raises(ValueError, match="centroids"):
        meow(a, p, ok, centroids=[randn(2, 1, 3)], concentrations=[torch.ones(1, dtype=torch.float64)])
    with pytest.raises(ValueError, match="concentrations"):
        meow(a, p, ok, centroids=[randn(2, 2, 3)], concentrations=[-torch.ones(2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="anchor"):
        MEOW()(a[0], p)
