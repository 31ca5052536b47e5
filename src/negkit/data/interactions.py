"""Implicit-feedback recommendation data: MovieLens-100k, read from the files shipped in the ``recbole`` wheel.

``load_movielens100k`` turns the 100,000 ratings (943 users, 1,682 items; Harper & Konstan, 2015) into implicit
feedback — every rating is a positive — with a **leave-last-out** split by timestamp: each user's most recent
interaction (ties broken by the file's row order) is the test item, all earlier ones are for training.

False negatives, the reason "how many negatives" is a question in recommendation, are the unrated items a user
would like. They are not observable in the data, so ``hide_fraction`` makes some of them known: a seeded share of
each user's training interactions is removed from training (the model never sees them, and samplers may draw
them as negatives) but kept as the user's known positives, so the false-negative rate of any negative sampler
can be measured exactly (:meth:`InteractionData.known_false_negative_rate`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from negkit._validation import check_finite_scalar
from negkit.data.registry import DatasetUnavailableError
from negkit.data.sources import package_dir

AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # the MovieLens-1M age groups, applied to ML-100k's exact ages


@dataclass(frozen=True)
class InteractionData:
    """Users, items, their features and a leave-last-out split of implicit feedback.

    * ``train_users``, ``train_items`` — ``[N]`` the training interactions (user id, item id), in time order.
    * ``test_items`` — ``[U]`` each user's held-out last item.
    * ``hidden_users``, ``hidden_items`` — ``[H]`` training interactions removed by ``hide_fraction``.
    * ``known`` — ``[U, I]`` bool, every known positive of each user (train, hidden and test): what evaluation
      filters out of the ranking except the test item itself.
    * ``user_features`` — ``[U, 3]`` long: age bucket, gender, occupation ids; ``item_features`` — ``[I, G]``
      float multi-hot genres.
    """

    name: str
    num_users: int
    num_items: int
    train_users: Tensor
    train_items: Tensor
    test_items: Tensor
    hidden_users: Tensor
    hidden_items: Tensor
    known: Tensor
    user_features: Tensor
    user_feature_sizes: tuple[int, ...]
    item_features: Tensor
    description: str

    def train_matrix(self) -> Tensor:
        """``[U, I]`` bool: the interactions the model trains on (what a sampler must never draw as negative)."""
        matrix = torch.zeros(self.num_users, self.num_items, dtype=torch.bool)
        matrix[self.train_users, self.train_items] = True
        return matrix

    def known_false_negative_rate(self) -> float:
        """ρ of uniform sampling over each user's *unrated* (non-training) items, averaged over the training
        interactions (each is one anchor per epoch): the chance that one negative is a known positive of the
        user (a hidden interaction or the test item). A lower bound of the true rate: likes the data never
        recorded are false negatives too."""
        train_counts = torch.bincount(self.train_users, minlength=self.num_users).double()
        known_counts = self.known.sum(dim=1).double()
        unrated = self.num_items - train_counts
        per_user = (known_counts - train_counts) / unrated
        return float((train_counts * per_user).sum() / train_counts.sum())


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        raise DatasetUnavailableError(
            f"{path} not found: install recbole's data files with: pip install --no-deps recbole==1.2.1"
        )
    with path.open(encoding="latin-1", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [column.split(":")[0] for column in rows[0]], rows[1:]


def _index(values: list[str], *, numeric: bool = False) -> dict[str, int]:
    """Dense ids ``0..n-1`` for the distinct values, in sorted (numeric for MovieLens ids) order."""
    return {value: index for index, value in enumerate(sorted(set(values), key=int if numeric else None))}


def load_movielens100k(*, hide_fraction: float = 0.0, seed: int = 0) -> InteractionData:
    """MovieLens-100k as implicit feedback with a leave-last-out split (see the module docstring).

    ``hide_fraction`` ∈ [0, 1): share of each user's training interactions removed from training and kept as
    known false negatives (seeded by ``seed``; at least one training interaction always stays).
    """
    hide_fraction = check_finite_scalar("hide_fraction", hide_fraction, low=0.0, high=1.0, high_inclusive=False)
    root = package_dir("recbole") / "dataset_example" / "ml-100k"
    columns, rows = _read_table(root / "ml-100k.inter")
    user_col, item_col, time_col = columns.index("user_id"), columns.index("item_id"), columns.index("timestamp")
    _, user_rows = _read_table(root / "ml-100k.user")
    _, item_rows = _read_table(root / "ml-100k.item")
    users, items = _index([r[0] for r in user_rows], numeric=True), _index([r[0] for r in item_rows], numeric=True)
    user_ids = torch.tensor([users[r[user_col]] for r in rows])
    item_ids = torch.tensor([items[r[item_col]] for r in rows])
    times = torch.tensor([float(r[time_col]) for r in rows], dtype=torch.float64)
    num_users, num_items = len(users), len(items)

    # time order within each user (stable: ties keep the file's row order), then the last one is the test item
    order = torch.argsort(times, stable=True)
    order = order[torch.argsort(user_ids[order], stable=True)]
    user_sorted, item_sorted = user_ids[order], item_ids[order]
    counts = torch.bincount(user_sorted, minlength=num_users)
    last = torch.cumsum(counts, 0) - 1
    test_items = item_sorted[last]
    is_train = torch.ones(len(order), dtype=torch.bool)
    is_train[last] = False

    hidden = torch.zeros(len(order), dtype=torch.bool)
    if hide_fraction > 0:
        generator = torch.Generator().manual_seed(seed)
        starts = last - counts + 1
        for user in range(num_users):
            n_train = int(counts[user]) - 1
            n_hide = min(round(hide_fraction * n_train), n_train - 1)
            if n_hide > 0:
                chosen = torch.randperm(n_train, generator=generator)[:n_hide]
                hidden[int(starts[user]) + chosen] = True
    keep = is_train & ~hidden
    time_order = torch.argsort(times[order][keep], stable=True)

    known = torch.zeros(num_users, num_items, dtype=torch.bool)
    known[user_sorted, item_sorted] = True

    ages = torch.tensor([int(r[1]) for r in user_rows])
    age_bucket = torch.bucketize(ages, torch.tensor(AGE_BUCKETS), right=True)
    genders, occupations = _index([r[2] for r in user_rows]), _index([r[3] for r in user_rows])
    user_features = torch.stack(
        [
            age_bucket,
            torch.tensor([genders[r[2]] for r in user_rows]),
            torch.tensor([occupations[r[3]] for r in user_rows]),
        ],
        dim=1,
    )
    genre_lists = [r[3].split() for r in item_rows]
    genre_ids = _index([g for genres in genre_lists for g in genres])
    item_features = torch.zeros(num_items, len(genre_ids))
    for row, genres in enumerate(genre_lists):
        item_features[row, [genre_ids[g] for g in genres]] = 1.0

    train_users, train_items = user_sorted[keep][time_order], item_sorted[keep][time_order]
    description = (
        f"MovieLens-100k (recbole wheel), implicit feedback: {num_users} users, {num_items} items, "
        f"{len(rows)} interactions; leave-last-out by timestamp: {len(train_users)} train, {num_users} test"
        + (
            f", {int(hidden.sum())} hidden as known false negatives ({hide_fraction:.0%}, seed {seed})"
            if hide_fraction
            else ""
        )
    )
    return InteractionData(
        name="ml-100k",
        num_users=num_users,
        num_items=num_items,
        train_users=train_users,
        train_items=train_items,
        test_items=test_items,
        hidden_users=user_sorted[hidden],
        hidden_items=item_sorted[hidden],
        known=known,
        user_features=user_features,
        user_feature_sizes=(len(AGE_BUCKETS) + 1, len(genders), len(occupations)),
        item_features=item_features,
        description=description,
    )


INTERACTION_DATASETS = {"ml-100k": load_movielens100k}


def load_interactions(name: str, **options: object) -> InteractionData:
    """A registered interaction dataset by name (``ml-100k``), with its options (``hide_fraction``, ``seed``)."""
    if name not in INTERACTION_DATASETS:
        raise ValueError(f"unknown interaction dataset {name!r}; choose one of: {', '.join(INTERACTION_DATASETS)}")
    return INTERACTION_DATASETS[name](**options)
