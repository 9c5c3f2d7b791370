"""Data: sample sets with stable ids, dataset loaders (registered in ``DATASETS``), scenarios and splits."""

from unlearnkit.data.base import LoadedData, SampleSet, TensorSource, stratified_subset
from unlearnkit.registry import DATASETS

# Registration side effects: each module registers its loaders.
from unlearnkit.data import tabular as _tabular  # noqa: E402,F401
from unlearnkit.data import vision as _vision  # noqa: E402,F401
from unlearnkit.data import mnist1d as _mnist1d  # noqa: E402,F401
from unlearnkit.data.scenarios import Task, build_task, check_split, load_data  # noqa: E402

__all__ = [
    "DATASETS",
    "LoadedData",
    "SampleSet",
    "Task",
    "TensorSource",
    "build_task",
    "check_split",
    "load_data",
    "stratified_subset",
]
