"""Batch samplers for ``torch.utils.data.DataLoader(dataset, batch_sampler=...)``: seeded, length-correct and
resumable mid-epoch.

* :class:`MPerClassSampler` — every batch holds ``m`` examples of each of ``batch_size / m`` distinct classes
  (the batch layout of pytorch-metric-learning's ``MPerClassSampler``, but an epoch covers every example).
* :class:`NoDuplicatesBatchSampler` — no two examples of a batch share a key (a text, an id, any value of the
  given columns), so in-batch negatives hold no copy of an anchor's positive (sentence-transformers'
  ``NO_DUPLICATES``). The packing is :func:`negkit.data.text.duplicate_free_batches`.

Both follow the same epoch protocol. An epoch's batches are a pure function of ``(seed, epoch)``: they are drawn
with ``torch.Generator().manual_seed(seed + epoch)`` (the convention of ``DistributedSampler``). Iterating yields
the current epoch's batches from the current position; when the epoch is exhausted the sampler moves on to the
next epoch by itself (so a loop that never calls :meth:`set_epoch` still sees a new order each epoch), and
``set_epoch(e)`` chooses the epoch explicitly. ``state_dict()`` is ``{"seed", "epoch", "position"}``, where
``position`` counts the batches of the epoch already handed out; ``load_state_dict`` restores it, so a run
resumed from a checkpoint continues mid-epoch with exactly the batches an uninterrupted run would have seen.
``set_epoch`` with the epoch already current keeps the position (a resumed loop that calls ``set_epoch`` at the
top of the epoch does not restart it); another epoch starts at position 0.

A ``DataLoader`` with worker processes fetches batches from the sampler ahead of the training loop
(``prefetch_factor × num_workers`` of them), so the sampler's own position can be ahead of the steps taken. To
checkpoint such a loop, store the number of steps taken in the epoch and restore with
``load_state_dict({"epoch": epoch, "position": steps})``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Sampler

from negkit._validation import check_int
from negkit.data.text import duplicate_free_batches

__all__ = ["MPerClassSampler", "NoDuplicatesBatchSampler"]


class _EpochBatchSampler(Sampler[list[int]], ABC):
    """The epoch/position protocol shared by the batch samplers; subclasses implement :meth:`_make_batches`."""

    def __init__(self, seed: int) -> None:
        self.seed = check_int("seed", seed, low=0)
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    @abstractmethod
    def _make_batches(self, generator: torch.Generator) -> list[list[int]]:
        """Every batch of one epoch, drawn with ``generator``."""

    def epoch_generator(self, epoch: int | None = None) -> torch.Generator:
        """The generator that draws epoch ``epoch``'s batches (default: the current epoch)."""
        return torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else epoch))

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of epoch ``epoch`` (default: the current one), in order, as lists of dataset indices."""
        epoch = self.epoch if epoch is None else check_int("epoch", epoch, low=0)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._make_batches(self.epoch_generator(epoch)))
        return self._cache[1]

    def epoch_batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch by the same rule, drawn with ``generator`` instead of the seeded one (for a training loop that
        owns the randomness, such as negkit's runner): int64 index tensors. Leaves the epoch and position alone."""
        return [torch.tensor(batch, dtype=torch.int64) for batch in self._make_batches(generator)]

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the current epoch; the position is kept if it already was, else reset to 0."""
        epoch = check_int("epoch", epoch, low=0)
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __len__(self) -> int:
        """The number of batches of the current epoch (all of them, also mid-epoch)."""
        return len(self.batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield list(batch)
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch", "position"}``: enough to continue the same sequence of batches."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`; ``seed`` optional, it must match if given)."""
        if "seed" in state and state["seed"] != self.seed:
            raise ValueError(f"state_dict was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        epoch = check_int("state_dict epoch", state["epoch"], low=0)
        position = check_int("state_dict position", state.get("position", 0), low=0)
        count = len(self.batches(epoch))
        if position > count:
            raise ValueError(f"state_dict position {position} is past the {count} batches of epoch {epoch}")
        self.epoch, self.position = epoch, position


class MPerClassSampler(_EpochBatchSampler):
    """Batches of ``batch_size / m`` distinct classes with ``m`` examples each.

    The rule of one epoch (drawn with the epoch's generator):

    1. Each class's examples are shuffled and cut into ``ceil(n_c / m)`` groups of ``m``. A last group that comes
       up short is completed with other examples of the same class, without replacement (the first examples of
       the shuffled order, which sit in other groups). A class with fewer than ``m`` examples repeats its
       shuffled examples cyclically (``m = 4`` and examples ``a, b, c`` give ``a, b, c, a``): with replacement,
       so its examples appear more than once in a batch.
    2. Groups are dealt into batches of ``P = batch_size / m`` groups from distinct classes, most-remaining class
       first (ties broken at random), which uses the fewest batches possible:
       ``max(ceil(G / P), max_c ceil(n_c / m))`` for ``G`` groups in all. ``__len__`` is that number, the same
       every epoch.
    3. A batch that runs out of classes with groups left (the last one, or every batch when one class holds more
       than a ``1/P`` share of the groups) is completed with fresh groups of random other classes (``m`` of their
       examples drawn without replacement, cyclically if the class is smaller than ``m``).
    4. The batches are shuffled.

    So every batch has exactly the promised structure, every example appears at least once per epoch, and exactly
    once when every class size is a multiple of ``m``, and no class holds more than ``G / P`` groups, and ``G``
    is a multiple of ``P`` (balanced data such as MNIST with ``m`` dividing the class sizes).

    Args:
        labels: ``[N]`` class ids (a tensor or a sequence of hashables), one per dataset index.
        m: examples per class in a batch, ``>= 1``.
        batch_size: a multiple of ``m``; ``batch_size / m`` classes per batch, at most the number of classes.
        seed: seeds every epoch (``seed + epoch``).

    Raises:
        ValueError: ``batch_size`` not a multiple of ``m``, fewer classes than ``batch_size / m``, empty labels.
    """

    def __init__(self, labels: Tensor | Sequence[Hashable], m: int, batch_size: int, *, seed: int = 0) -> None:
        super().__init__(seed)
        self.m = check_int("m", m, low=1)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        if batch_size % m:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of m ({m}): each batch holds m per class")
        if isinstance(labels, Tensor):
            if labels.dim() != 1 or labels.is_floating_point():
                raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
            labels = labels.tolist()
        classes: dict[Hashable, list[int]] = {}
        for index, label in enumerate(labels):
            classes.setdefault(label, []).append(index)
        if not classes:
            raise ValueError("labels is empty: nothing to sample")
        self.classes_per_batch = batch_size // m
        if len(classes) < self.classes_per_batch:
            raise ValueError(
                f"batch_size / m = {self.classes_per_batch} classes per batch, but labels hold only {len(classes)} "
                f"classes; lower batch_size or raise m"
            )
        self.members = [torch.tensor(members, dtype=torch.int64) for members in classes.values()]
        self.class_labels = list(classes)
        sizes = torch.tensor([len(members) for members in self.members])
        self.groups_per_class = (sizes + m - 1) // m
        groups = int(self.groups_per_class.sum())
        self.num_batches = max(-(-groups // self.classes_per_batch), int(self.groups_per_class.max()))

    def __len__(self) -> int:
        return self.num_batches

    def _group(self, members: Tensor, generator: torch.Generator) -> list[int]:
        """``m`` examples of one class, without replacement (cyclic when the class has fewer than ``m``)."""
        order = members[torch.randperm(len(members), generator=generator)]
        return order.repeat(-(-self.m // len(order)))[: self.m].tolist()

    def _make_batches(self, generator: torch.Generator) -> list[list[int]]:
        m, per_batch = self.m, self.classes_per_batch
        pending: list[list[list[int]]] = []  # per class, its groups still to place
        for members in self.members:
            order = members[torch.randperm(len(members), generator=generator)]
            short = (-len(order)) % m
            padded = torch.cat([order, order[:short]]) if len(order) >= m else order.repeat(-(-m // len(order)))[:m]
            pending.append(padded.view(-1, m).tolist())
        remaining = torch.tensor([len(groups) for groups in pending], dtype=torch.float64)
        num_classes = len(pending)
        batches: list[list[int]] = []
        for _ in range(self.num_batches):
            # most groups left first, ties at random (the random part is < 1, the counts differ by >= 1)
            priority = remaining + torch.rand(num_classes, generator=generator, dtype=torch.float64) * 0.5
            priority[remaining == 0] = -1.0
            chosen = torch.topk(priority, per_batch).indices.tolist()
            batch: list[int] = []
            used = set()
            for c in chosen:
                if remaining[c] > 0:
                    batch += pending[c].pop()
                    remaining[c] -= 1
                    used.add(c)
            if len(used) < per_batch:  # complete with fresh groups of other classes
                others = torch.tensor([c for c in range(num_classes) if c not in used])
                extra = others[torch.randperm(len(others), generator=generator)[: per_batch - len(used)]]
                for c in extra.tolist():
                    batch += self._group(self.members[c], generator)
            batches.append(batch)
        order = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in order]


class NoDuplicatesBatchSampler(_EpochBatchSampler):
    """Batches in which no two examples share a key: a text, an id, or any value of the given columns.

    Keys are given per dataset index, in one of two forms:

    * a sequence with one entry per example: a string (the example's single key, e.g. its text), or an iterable
      of hashable keys (texts, ids, tuples such as ``("document", 17)``);
    * a mapping ``{column: values}`` of equal-length columns (e.g. ``{"anchor": [...], "positive": [...]}``):
      an example's keys are its values in every column, compared across columns as sentence-transformers'
      ``NO_DUPLICATES`` compares them — one example's positive text equal to another's anchor text is a
      duplicate too. Pass ids instead of texts to compare by id.

    Each epoch is :func:`negkit.data.text.duplicate_free_batches` with the epoch's generator: the examples are
    shuffled and packed first-fit, every example appears in exactly one batch, and a batch holds at most
    ``batch_size`` examples — fewer when conflicts force it (a key shared by ``k`` examples needs ``k``
    batches). The number of batches can therefore differ a little between epochs; ``__len__`` is the current
    epoch's. With ``drop_last`` the batches that hold fewer than ``batch_size`` examples are left out (their
    examples are not seen that epoch).

    Args:
        keys: per-example keys (a sequence) or columns (a mapping), see above.
        batch_size: the largest batch, ``>= 1``.
        indices: the dataset indices to batch (e.g. a training split); default all.
        seed: seeds every epoch (``seed + epoch``).
        drop_last: leave out batches smaller than ``batch_size``.
    """

    def __init__(
        self,
        keys: Sequence[str | Iterable[Hashable]] | Mapping[str, Sequence[Hashable]],
        batch_size: int,
        *,
        indices: Tensor | Sequence[int] | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(seed)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        if isinstance(keys, Mapping):
            columns = [list(values) for values in keys.values()]
            if not columns:
                raise ValueError("keys is an empty mapping: give at least one column")
            lengths = {len(column) for column in columns}
            if len(lengths) != 1:
                raise ValueError(f"the columns of keys must have the same length, got lengths {sorted(lengths)}")
            keys = [frozenset(row) for row in zip(*columns, strict=True)]
        self.keys = keys
        self.indices = torch.arange(len(keys)) if indices is None else torch.as_tensor(indices)
        self.drop_last = bool(drop_last)
        self.batches()  # validates the indices against the keys now, not at the first iteration

    def _make_batches(self, generator: torch.Generator) -> list[list[int]]:
        packed = duplicate_free_batches(self.indices, self.keys, self.batch_size, generator)
        return [batch.tolist() for batch in packed if not self.drop_last or len(batch) == self.batch_size]
