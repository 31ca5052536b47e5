"""MEOW's dataset-level clusterings: ``K`` k-means clusterings of the whole dataset's embeddings, refreshed on a
schedule and kept per sample index (Yu, Ge, Li, Zhou, SDM 2023 / TKDE 2024, arXiv 2212.13847; §12a of negkit's
design notes).

The reference code clusters every node's embedding with faiss at each step; negkit clusters the whole dataset every
``refresh_every`` epochs and looks the assignments of a batch up by sample index, so that the weights
``w_ij = #{k : c_k(i) ≠ c_k(j)}`` of :func:`negkit.losses.functional.meow` come from dataset-wide clusters (not
from the batch alone), and the prototype (ProtoNCE) term uses the dataset's centroids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from negkit._optional import available, require
from negkit._validation import check_features, check_finite_scalar, check_ids, check_int, check_positive_scalar
from negkit.losses.functional.weighted import meow, pcl_concentrations, spherical_kmeans

BACKENDS = ("auto", "faiss", "sklearn", "torch")


def _kmeans(z: Tensor, clusters: int, *, backend: str, n_iter: int, seed: int) -> Tensor:
    """Centroids ``[clusters, d]`` (unit rows) of spherical k-means on the unit rows ``z [N, d]``."""
    if backend == "torch":
        return spherical_kmeans(z, clusters, n_iter=n_iter, seed=seed)[1]
    array = z.double().numpy() if backend == "sklearn" else z.float().contiguous().numpy()
    if backend == "faiss":
        faiss = require("faiss", "faiss", "MEOW's dataset clusterings (backend 'faiss')")
        kmeans = faiss.Kmeans(z.shape[1], clusters, niter=n_iter, seed=seed, spherical=True, verbose=False)
        kmeans.train(array)
        centres = torch.from_numpy(kmeans.centroids.copy())
    else:
        cluster = require("sklearn.cluster", "cli", "MEOW's dataset clusterings (backend 'sklearn')")
        kmeans = cluster.KMeans(n_clusters=clusters, n_init=1, max_iter=n_iter, random_state=seed)
        centres = torch.from_numpy(kmeans.fit(array).cluster_centers_)
    return torch.nn.functional.normalize(centres.float(), dim=1)


class MEOWClusters(nn.Module):
    """``K`` k-means clusterings of a dataset's embeddings, kept per sample index, for MEOW's weights and prototypes.

    ``refresh(embeddings [N, d])`` clusters the unit rows of the whole dataset once per entry of ``num_clusters``
    (capped at ``N``; clustering ``k`` seeded with ``seed + k``), on the unit sphere (inner-product assignment, as
    MEOW's faiss ``IndexFlatIP``), and stores each sample's cluster ids, the centroids and PCL's concentrations
    (scaled to mean ``temperature``). :meth:`due` says when the schedule wants a refresh (the first epoch, then
    every ``refresh_every`` epochs); :meth:`step` runs it when due. :meth:`loss` feeds :func:`negkit.losses.meow`
    with the batch's assignments looked up by sample index and the stored prototypes.

    Which negatives anchor ``i`` of a batch sees: every ``positive_j`` of the batch that some *dataset-level*
    clustering puts in another cluster than ``i``, weighted by how many do (``w_ij``); rows sharing all of ``i``'s
    clusters (likely false negatives) drop out.

    Backends: ``"faiss"`` (``faiss.Kmeans``, spherical), ``"sklearn"`` (``KMeans`` on the unit rows, centroids
    renormalised), ``"torch"`` (:func:`negkit.losses.functional.weighted.spherical_kmeans`, no dependency) or
    ``"auto"``: faiss if installed, else scikit-learn (an error naming the extra if neither is).

    State (``state_dict``, so checkpoints carry it): ``assignments [N, K]`` (``-1`` before the first refresh),
    ``centroids_k [M_k, d]``, ``concentrations_k [M_k]``, ``last_refresh`` (the epoch of the last refresh, ``-1``
    for none) and ``refreshes`` (how many ran).

    Args:
        num_samples: ``N``, the dataset size (sample indices are ``0 … N−1``).
        dim: ``d``, the embedding width.
        num_clusters: the cluster counts of the ``K`` clusterings (MEOW runs several, with different counts).
        refresh_every: epochs between two refreshes (≥ 1).
        temperature: the mean PCL concentration (MEOW's ProtoNCE temperature).
        n_iter: k-means iterations.
        seed: clustering ``k`` uses ``seed + k``.
        backend: ``"auto"`` | ``"faiss"`` | ``"sklearn"`` | ``"torch"``.
    """

    def __init__(
        self,
        num_samples: int,
        dim: int,
        *,
        num_clusters: Sequence[int] = (8, 32),
        refresh_every: int = 1,
        temperature: float = 0.9,
        n_iter: int = 20,
        seed: int = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.dim = check_int("dim", dim, low=1)
        counts = tuple(num_clusters) if isinstance(num_clusters, list | tuple) else ()
        if not counts:
            raise ValueError(f"num_clusters must be a non-empty sequence of ints >= 1, got {num_clusters!r}")
        self.num_clusters = tuple(min(check_int("num_clusters", c, low=1), self.num_samples) for c in counts)
        self.refresh_every = check_int("refresh_every", refresh_every, low=1)
        self.temperature = check_positive_scalar("temperature", temperature)
        self.n_iter = check_int("n_iter", n_iter, low=1)
        self.seed = check_int("seed", seed, low=0)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.register_buffer("assignments", torch.full((self.num_samples, len(counts)), -1, dtype=torch.long))
        for k, count in enumerate(self.num_clusters):
            self.register_buffer(f"centroids_{k}", torch.zeros(count, self.dim))
            self.register_buffer(f"concentrations_{k}", torch.ones(count))
        self.register_buffer("last_refresh", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("refreshes", torch.tensor(0, dtype=torch.long))

    @property
    def clusterings(self) -> int:
        return len(self.num_clusters)

    @property
    def fitted(self) -> bool:
        return int(self.refreshes) > 0

    @property
    def centroids(self) -> list[Tensor]:
        return [getattr(self, f"centroids_{k}") for k in range(self.clusterings)]

    @property
    def concentrations(self) -> list[Tensor]:
        return [getattr(self, f"concentrations_{k}") for k in range(self.clusterings)]

    def resolved_backend(self) -> str:
        """The backend ``"auto"`` stands for here: faiss if installed, else scikit-learn."""
        if self.backend != "auto":
            return self.backend
        return "faiss" if available("faiss") else "sklearn"

    def due(self, epoch: int) -> bool:
        """Whether the schedule refreshes at ``epoch``: never clustered yet, or ``refresh_every`` epochs since."""
        epoch = check_int("epoch", epoch, low=0)
        last = int(self.last_refresh)
        return last < 0 or not self.fitted or epoch - last >= self.refresh_every

    @torch.no_grad()
    def refresh(self, embeddings: Tensor, epoch: int = 0) -> None:
        """Cluster ``embeddings [N, d]`` (the whole dataset, row ``n`` = sample index ``n``) ``K`` times."""
        check_features("embeddings", embeddings, 2)
        if tuple(embeddings.shape) != (self.num_samples, self.dim):
            raise ValueError(
                f"embeddings must have shape [{self.num_samples}, {self.dim}] (the whole dataset), got "
                f"{tuple(embeddings.shape)}"
            )
        epoch = check_int("epoch", epoch, low=0)
        z = torch.nn.functional.normalize(embeddings.detach().float().cpu(), dim=1)
        backend = self.resolved_backend()
        for k, count in enumerate(self.num_clusters):
            centres = _kmeans(z, count, backend=backend, n_iter=self.n_iter, seed=self.seed + k)
            assign = (z @ centres.T).argmax(dim=1)
            self.assignments[:, k] = assign.to(self.assignments.device)
            getattr(self, f"centroids_{k}").copy_(centres)
            getattr(self, f"concentrations_{k}").copy_(pcl_concentrations(z, assign, centres, self.temperature))
        self.last_refresh.fill_(epoch)
        self.refreshes.add_(1)

    def step(self, embeddings: Tensor, epoch: int) -> bool:
        """Refresh with ``embeddings`` if :meth:`due` at ``epoch``; returns whether it did."""
        if not self.due(epoch):
            return False
        self.refresh(embeddings, epoch)
        return True

    def batch(self, index: Tensor) -> Tensor:
        """``[B, K]`` cluster ids of the samples ``index [B]``."""
        if not self.fitted:
            raise RuntimeError("MEOWClusters has no clustering yet: call refresh(embeddings) first")
        index = check_ids("index", index)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(f"index must hold sample indices in [0, {self.num_samples}), got {index.tolist()[:10]}")
        return self.assignments[index.to(self.assignments.device)]

    def weights(self, index: Tensor) -> Tensor:
        """``[B, B]`` MEOW weights of a batch: the number of clusterings that separate samples ``i`` and ``j``."""
        ids = self.batch(index)
        return (ids.unsqueeze(1) != ids.unsqueeze(0)).sum(dim=-1)

    def loss(
        self,
        anchor: Tensor,
        positive: Tensor,
        index: Tensor,
        *,
        temperature: float | Tensor = 0.9,
        proto_weight: float = 1.0,
        reduction: str = "mean",
    ) -> Tensor:
        """:func:`negkit.losses.meow` of a batch (``anchor, positive [B, d]``, dataset indices ``index [B]``) with
        the dataset-level assignments and prototypes (none when ``proto_weight`` is 0)."""
        weight = check_finite_scalar("proto_weight", proto_weight, low=0.0)
        assignments = self.batch(index).to(anchor.device)
        centroids = concentrations = None
        if weight > 0:
            centroids = [c.to(anchor.device) for c in self.centroids]
            concentrations = [c.to(anchor.device) for c in self.concentrations]
        return meow(
            anchor,
            positive,
            assignments,
            temperature=temperature,
            centroids=centroids,
            concentrations=concentrations,
            proto_weight=weight,
            reduction=reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, dim={self.dim}, num_clusters={self.num_clusters}, "
            f"refresh_every={self.refresh_every}, backend={self.backend!r}"
        )
