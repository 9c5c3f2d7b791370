"""Sample sets with stable ids, and the train/test bundle a loader returns.

A :class:`SampleSet` is a view on a source data set: positions into the source, the stable integer sample id of each
position (the id a deletion request names), and the label of each position. Items are ``(x, y, sample_id)``.
Sources are either a pair of tensors (fast path: batches are gathered by indexing) or any ``torch.utils.data.Dataset``
returning ``(x, y)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from unlearnkit.errors import DataError


@dataclass(frozen=True)
class TensorSource:
    """In-memory source: ``x`` float tensor (n, *input_shape), ``y`` int64 tensor (n,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _as_ids(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise DataError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class SampleSet(Dataset):
    """A labelled view on a source data set; items are ``(x, y, sample_id)``.

    Args:
        source: :class:`TensorSource` or a ``Dataset`` whose items are ``(x, y)``.
        positions: int64 array (n,), indices into ``source``.
        ids: int64 array (n,), stable sample ids (unique within the set).
        labels: int64 array (n,), class labels in ``[0, num_classes)``; these override the source's ``y``
            (this is how random-label methods relabel a set without copying data).
        num_classes: number of classes of the task.
        name: what the set is (``"forget"``, ``"retain"``, ...), used in messages.

    Raises:
        DataError: mismatched lengths, duplicate ids, labels out of range.
    """

    def __init__(
        self,
        source: TensorSource | Dataset,
        positions: Sequence[int] | np.ndarray,
        ids: Sequence[int] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        num_classes: int,
        name: str = "data",
    ) -> None:
        self.source = source
        self.positions = _as_ids(positions, f"{name} positions")
        self.ids = _as_ids(ids, f"{name} sample ids")
        self.labels = _as_ids(labels, f"{name} labels")
        self.num_classes = int(num_classes)
        self.name = name
        n = len(self.positions)
        if len(self.ids) != n or len(self.labels) != n:
            raise DataError(
                f"{name}: positions, ids and labels must have equal length, got {n}, {len(self.ids)}, {len(self.labels)}"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise DataError(
                f"{name}: labels must lie in [0, {self.num_classes}), got range [{self.labels.min()}, {self.labels.max()}]"
            )
        if len(np.unique(self.ids)) != n:
            raise DataError(f"{name}: sample ids must be unique; found {n - len(np.unique(self.ids))} duplicates")

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_tensors(
        cls,
        x: torch.Tensor,
        y: torch.Tensor,
        ids: Sequence[int] | np.ndarray | None = None,
        num_classes: int | None = None,
        name: str = "data",
    ) -> SampleSet:
        """A set over in-memory tensors ``x`` (n, ...) float and ``y`` (n,) int; ids default to ``0..n-1``."""
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{name}: x has {x.shape[0]} rows but y has {y.shape[0]}")
        y = y.long()
        n = int(x.shape[0])
        k = int(num_classes if num_classes is not None else (int(y.max()) + 1 if n else 0))
        src = TensorSource(x, y)
        return cls(src, np.arange(n), np.arange(n) if ids is None else ids, y.numpy(), k, name)

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        ids: Sequence[int] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        num_classes: int | None = None,
        name: str = "data",
    ) -> SampleSet:
        """Wrap a user ``Dataset`` of ``(x, y)`` items.

        ``labels`` avoids one pass over the data to read them; ``ids`` default to ``0..len-1`` (positions).

        Raises:
            DataError: the dataset's items are not ``(x, y)`` pairs, or lengths disagree.
        """
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError as err:
            raise DataError(f"{name}: the dataset must define __len__ (a map-style torch Dataset)") from err
        if labels is None:
            ys = []
            for i in range(n):
                item = dataset[i]
                if not (isinstance(item, (tuple, list)) and len(item) >= 2):
                    raise DataError(
                        f"{name}: items must be (x, y) pairs; item {i} is {type(item).__name__}. "
                        "Wrap your data so __getitem__ returns (input, label)."
                    )
                ys.append(int(item[1]))
            labels = np.asarray(ys, dtype=np.int64)
        labels = _as_ids(labels, f"{name} labels")
        k = int(num_classes if num_classes is not None else (labels.max() + 1 if n else 0))
        return cls(dataset, np.arange(n), np.arange(n) if ids is None else ids, labels, k, name)

    # -- access ----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        p = int(self.positions[i])
        if isinstance(self.source, TensorSource):
            x = self.source.x[p]
        else:
            x = self.source[p][0]
        return x, int(self.labels[i]), int(self.ids[i])

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather local rows ``idx``: ``x`` (b, ...) float, ``y`` (b,) int64, ``ids`` (b,) int64 (CPU tensors)."""
        pos = self.positions[idx]
        if isinstance(self.source, TensorSource):
            x = self.source.x[torch.from_numpy(pos)]
        else:
            x = default_collate([self.source[int(p)][0] for p in pos])
        return x, torch.from_numpy(self.labels[idx]), torch.from_numpy(self.ids[idx])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (without the batch dimension)."""
        if isinstance(self.source, TensorSource):
            return tuple(self.source.x.shape[1:])
        return tuple(torch.as_tensor(self[0][0]).shape) if len(self) else ()

    # -- derived sets ---------------------------------------------------------------------------------------------
    def take(self, idx: np.ndarray | Sequence[int], name: str | None = None) -> SampleSet:
        """The rows ``idx`` (local indices, or a boolean mask) as a new set."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return SampleSet(
            self.source, self.positions[idx], self.ids[idx], self.labels[idx], self.num_classes, name or self.name
        )

    def select_ids(self, ids: Sequence[int] | np.ndarray, name: str | None = None) -> SampleSet:
        """The rows whose sample id is in ``ids`` (in the order of ``ids``).

        Raises:
            DataError: an id is duplicated or not in this set (message names up to 5 of them and the valid range).
        """
        ids = _as_ids(ids, "forget ids")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"ids are duplicated: {uniq[counts > 1][:5].tolist()}; list each sample id once")
        lookup = {int(s): i for i, s in enumerate(self.ids)}
        missing = [int(s) for s in ids if int(s) not in lookup]
        if missing:
            lo, hi = (int(self.ids.min()), int(self.ids.max())) if len(self.ids) else (0, -1)
            raise DataError(
                f"{len(missing)} id(s) are not in the {self.name} set (e.g. {missing[:5]}); "
                f"valid ids are {len(self.ids)} values in [{lo}, {hi}]"
            )
        return self.take(np.asarray([lookup[int(s)] for s in ids], dtype=np.int64), name)

    def exclude_ids(self, ids: Sequence[int] | np.ndarray, name: str | None = None) -> SampleSet:
        """The rows whose sample id is not in ``ids``."""
        return self.take(~np.isin(self.ids, _as_ids(ids, "ids")), name)

    def relabel(self, labels: np.ndarray | Sequence[int], name: str | None = None) -> SampleSet:
        """Same rows with new labels (random-label methods). ``labels``: int array (n,)."""
        return SampleSet(self.source, self.positions, self.ids, labels, self.num_classes, name or self.name)

    def concat(self, other: SampleSet, name: str | None = None) -> SampleSet:
        """Rows of ``self`` then ``other``; both must view the same source. Ids must stay unique."""
        if other.source is not self.source:
            raise DataError(f"cannot concatenate {self.name} and {other.name}: they view different source data sets")
        return SampleSet(
            self.source,
            np.concatenate([self.positions, other.positions]),
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.labels, other.labels]),
            max(self.num_classes, other.num_classes),
            name or f"{self.name}+{other.name}",
        )

    def __repr__(self) -> str:
        return f"SampleSet({self.name!r}, n={len(self)}, num_classes={self.num_classes})"


@dataclass(frozen=True)
class LoadedData:
    """What a dataset loader returns: train and test sets over the source, plus metadata.

    ``superclasses`` maps each fine class to its super-class where the data set has a hierarchy (CIFAR-100), else None.
    """

    name: str
    train: SampleSet
    test: SampleSet
    num_classes: int
    class_names: tuple[str, ...]
    superclasses: tuple[int, ...] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded subset of size ``n`` with class proportions preserved (largest remainder).

    Raises:
        DataError: ``n`` larger than the number of samples.
    """
    total = len(labels)
    if n > total:
        raise DataError(f"subset of {n} requested but only {total} samples exist; choose n ≤ {total}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / total
    take = np.floor(quota).astype(int)
    rest = n - take.sum()
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:rest]] += 1
    out = []
    for c, k in zip(classes, take):
        pos = np.flatnonzero(labels == c)
        out.append(rng.choice(pos, size=k, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


class SplitIds:
    """``forget_ids`` / ``retain_ids`` of a task holding ``forget`` and ``retain`` sets with ``.ids`` (the classifier
    :class:`~unlearnkit.data.scenarios.Task` and the text :class:`~unlearnkit.data.text.qa.TextTask`)."""

    forget: Any
    retain: Any

    @property
    def forget_ids(self) -> np.ndarray:
        """int64 ids of D_f."""
        return self.forget.ids

    @property
    def retain_ids(self) -> np.ndarray:
        """int64 ids of D_r."""
        return self.retain.ids


def check_id_split(d: np.ndarray, f: np.ndarray, r: np.ndarray, *, where: str, empty_forget: str,
                   empty_retain: str | None = None) -> None:
    """Raise :class:`DataError` unless D_f is non-empty (and D_r, when ``empty_retain`` says why it must be),
    D_f ∩ D_r = ∅ and D_f ∪ D_r = D, exactly. ``where`` prefixes the messages; ``empty_*`` say how to fix an empty set.
    """
    pre = f"{where}: " if where else ""
    if len(f) == 0:
        raise DataError(pre + empty_forget)
    if empty_retain is not None and len(r) == 0:
        raise DataError(pre + empty_retain)
    both = np.intersect1d(f, r)
    if len(both):
        raise DataError(f"{pre}forget and retain sets overlap in {len(both)} ids (e.g. {both[:5].tolist()})")
    union = np.union1d(f, r)
    missing, extra = np.setdiff1d(d, union), np.setdiff1d(union, d)
    if len(missing) or len(extra) or len(f) + len(r) != len(d):
        raise DataError(f"{pre}forget ∪ retain ({len(f)} + {len(r)}) is not the full training set ({len(d)}): "
                        f"{len(missing)} ids missing, {len(extra)} extra")
