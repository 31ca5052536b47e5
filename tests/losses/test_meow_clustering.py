"""MEOW's dataset-level clusterings (negkit.losses.meow_clustering.MEOWClusters): the refresh schedule, the state
round trip, the weights (number of clusterings that separate two samples) and the loss they feed."""

import pytest
import torch

from negkit.losses import meow
from negkit.losses import meow_clustering as mc
from negkit.losses.meow_clustering import MEOWClusters
from tests.losses.helpers import grads, randn
from tests.losses.test_meow import meow_loop


def blobs(per: int = 12, groups: int = 3, d: int = 6, seed: int = 0) -> torch.Tensor:
    """``groups`` well-separated directions, ``per`` noisy rows each (row n in group n // per)."""
    centres = torch.eye(groups, d) * 5
    return (centres.repeat_interleave(per, dim=0) + 0.1 * randn(seed, groups * per, d, dtype=torch.float32)).float()


def test_schedule_refreshes_every_k_epochs():
    x = blobs()
    clusters = MEOWClusters(len(x), x.shape[1], num_clusters=(2, 3), refresh_every=3, backend="torch")
    assert not clusters.fitted and clusters.due(0) and clusters.due(5)  # never clustered: due at any epoch
    ran = [clusters.step(x, epoch) for epoch in range(8)]
    assert ran == [True, False, False, True, False, False, True, False]
    assert int(clusters.refreshes) == 3 and int(clusters.last_refresh) == 6
    every = MEOWClusters(len(x), x.shape[1], refresh_every=1, backend="torch")
    assert [every.step(x, epoch) for epoch in range(3)] == [True, True, True]


def test_assignments_follow_the_dataset_clusters_per_index():
    x = blobs()
    clusters = MEOWClusters(len(x), x.shape[1], num_clusters=(3, 3), backend="torch", seed=4)
    clusters.refresh(x)
    for k in range(2):
        column = clusters.assignments[:, k]
        for g in range(3):  # each true group is one cluster, and the groups differ
            assert len(set(column[12 * g : 12 * g + 12].tolist())) == 1
        assert len(set(column.tolist())) == 3
    index = torch.tensor([30, 0, 13])
    torch.testing.assert_close(clusters.batch(index), clusters.assignments[index])
    assert [c.shape for c in clusters.centroids] == [(3, 6), (3, 6)]
    assert all(abs(float(c.mean()) - 0.9) < 1e-5 for c in clusters.concentrations)


def test_weights_count_the_clusterings_that_separate_two_samples():
    x = randn(3, 40, 5, dtype=torch.float32)
    clusters = MEOWClusters(40, 5, num_clusters=(2, 4, 7), backend="torch")
    clusters.refresh(x)
    index = torch.tensor([5, 17, 3, 39, 22, 8])
    weights = clusters.weights(index)
    a = clusters.assignments
    for r, i in enumerate(index.tolist()):
        for c, j in enumerate(index.tolist()):
            want = sum(int(a[i, k] != a[j, k]) for k in range(3))
            assert int(weights[r, c]) == want
    assert bool((weights.diagonal() == 0).all()) and int(weights.max()) <= 3


def test_loss_is_meow_with_the_dataset_assignments_and_prototypes():
    x = randn(0, 30, 4, dtype=torch.float32)
    clusters = MEOWClusters(30, 4, num_clusters=(3, 5), backend="torch")
    clusters.refresh(x)
    index = torch.tensor([2, 9, 14, 21, 28])
    anchor, positive = randn(1, 5, 4, requires_grad=True), randn(2, 5, 4)
    got = clusters.loss(anchor, positive, index, temperature=0.5, proto_weight=0.3)
    assignments = clusters.assignments[index]
    centroids = [c.double() for c in clusters.centroids]
    phi = [c.double() for c in clusters.concentrations]
    rows = meow_loop(
        anchor, positive, assignments, temperature=0.5, centroids=centroids, concentrations=phi, proto_weight=0.3
    )
    want = torch.stack([r for r in rows if r is not None]).mean()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grads(got, anchor)[0], grads(want, anchor)[0])
    plain = clusters.loss(anchor, positive, index, temperature=0.5, proto_weight=0.0)
    torch.testing.assert_close(plain, meow(anchor, positive, assignments, temperature=0.5))


def test_state_round_trip():
    x = blobs(seed=2)
    clusters = MEOWClusters(len(x), 6, num_clusters=(2, 5), refresh_every=2, backend="torch")
    clusters.step(x, 0)
    state = clusters.state_dict()
    assert set(state) == {
        "assignments",
        "centroids_0",
        "centroids_1",
        "concentrations_0",
        "concentrations_1",
        "last_refresh",
        "refreshes",
    }
    restored = MEOWClusters(len(x), 6, num_clusters=(2, 5), refresh_every=2, backend="torch")
    restored.load_state_dict(state)
    assert restored.fitted and not restored.due(1) and restored.due(2)
    for name, value in state.items():
        torch.testing.assert_close(restored.state_dict()[name], value)
    anchor, positive, index = randn(4, 6, 6), randn(5, 6, 6), torch.tensor([0, 7, 13, 20, 27, 35])
    torch.testing.assert_close(restored.loss(anchor, positive, index), clusters.loss(anchor, positive, index))


@pytest.mark.parametrize("backend", ["faiss", "sklearn", "torch"])
def test_every_backend_finds_separated_clusters(backend):
    x = blobs(per=20, groups=4, d=8, seed=1)
    clusters = MEOWClusters(len(x), 8, num_clusters=(4,), backend=backend, seed=0)
    clusters.refresh(x)
    column = clusters.assignments[:, 0]
    groups = [set(column[20 * g : 20 * g + 20].tolist()) for g in range(4)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 4
    norms = clusters.centroids[0].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(4))


def test_auto_prefers_faiss_then_sklearn(monkeypatch):
    clusters = MEOWClusters(10, 3)
    assert clusters.resolved_backend() == "faiss"  # faiss is a test dependency (negkit[dev])
    monkeypatch.setattr(mc, "available", lambda module: False)
    assert clusters.resolved_backend() == "sklearn"


def test_cluster_counts_are_capped_at_the_dataset_size():
    clusters = MEOWClusters(5, 2, num_clusters=(3, 50), backend="torch")
    assert clusters.num_clusters == (3, 5)
    clusters.refresh(randn(0, 5, 2, dtype=torch.float32))
    assert clusters.centroids[1].shape == (5, 2)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_clusters"):
        MEOWClusters(10, 3, num_clusters=())
    with pytest.raises(ValueError, match="num_clusters"):
        MEOWClusters(10, 3, num_clusters=(2, 0))
    with pytest.raises(ValueError, match="refresh_every"):
        MEOWClusters(10, 3, refresh_every=0)
    with pytest.raises(ValueError, match="backend"):
        MEOWClusters(10, 3, backend="cuml")
    with pytest.raises(ValueError, match="num_samples"):
        MEOWClusters(0, 3)
    clusters = MEOWClusters(10, 3, backend="torch")
    with pytest.raises(RuntimeError, match="refresh"):
        clusters.batch(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"embeddings must have shape \[10, 3\]"):
        clusters.refresh(torch.randn(9, 3))
    with pytest.raises(ValueError, match="embeddings"):
        clusters.refresh(torch.full((10, 3), float("nan")))
    clusters.refresh(torch.randn(10, 3))
    with pytest.raises(ValueError, match="index"):
        clusters.batch(torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="index"):
        clusters.batch(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="epoch"):
        clusters.due(-1)
