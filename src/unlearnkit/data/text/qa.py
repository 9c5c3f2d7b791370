"""Question–answer data in the TOFU schema (Maini et al. 2024, arXiv:2401.06121) and the LLM unlearning task.

A :class:`QAItem` is one question with its answer and, where the data set has them, a paraphrased answer, perturbed
(wrong but plausible) answers, an "I don't know" alternative and the subject (person) it is about. A :class:`QASet` is an
immutable, ordered collection of items with stable integer ids (the ids a deletion request names). A
:class:`TextTask` bundles D, D_f, D_r and the evaluation sets of one unlearning problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from unlearnkit.data.base import SplitIds, check_id_split
from unlearnkit.errors import DataError

#: the optional fields a method or metric may require (see :meth:`QASet.require`)
OPTIONAL_FIELDS = ("paraphrased_answer", "perturbed_answers", "subject", "idk_answer")


@dataclass(frozen=True)
class QAItem:
    """One TOFU-schema item.

    Attributes:
        id: stable sample id (row index in the source file for TOFU, generation index for the synthetic set).
        question, answer: the pair a model is trained on.
        paraphrased_answer: the answer reworded (truth ratio's "true" side); None where absent.
        perturbed_answers: wrong but plausible answers (same slot type, other values); empty where absent.
        subject: the person / entity the item is about (forget splits remove whole subjects).
        idk_answer: an "I don't know" style alternative (IdkPO / IdkDPO chosen answer); None where absent.
    """

    id: int
    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    subject: str | None = None
    idk_answer: str | None = None

    def has(self, name: str) -> bool:
        """True if field ``name`` is present (not None, and non-empty for ``perturbed_answers``)."""
        v = getattr(self, name)
        return bool(v) if name == "perturbed_answers" else v is not None


class QASet:
    """An immutable, ordered set of :class:`QAItem` with unique ids.

    Args:
        name: what the set is ("forget", "retain", "real_authors" ...), used in messages.
        items: the items (any iterable; stored as a tuple).
        source: where the items came from (file path, ``"synthetic(seed=0)"``), used in error messages.

    Raises:
        DataError: duplicate ids.
    """

    __slots__ = ("name", "items", "source", "_ids", "_pos")

    def __init__(self, name: str, items: Iterable[QAItem], source: str | None = None) -> None:
        self.name = name
        self.items: tuple[QAItem, ...] = tuple(items)
        self.source = source
        self._ids = np.fromiter((it.id for it in self.items), dtype=np.int64, count=len(self.items))
        if len(np.unique(self._ids)) != len(self._ids):
            u, c = np.unique(self._ids, return_counts=True)
            raise DataError(f"QA set '{name}' ({source or 'in memory'}) has duplicate ids, e.g. {u[c > 1][:5].tolist()}")
        self._pos: dict[int, int] | None = None

    # -- container ----------------------------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """int64 (n,) stable ids, in set order (a copy)."""
        return self._ids.copy()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> QAItem:
        return self.items[i]

    def __iter__(self) -> Iterator[QAItem]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"QASet({self.name!r}, n={len(self)}, source={self.source!r})"

    def position(self, sample_id: int) -> int:
        """Index of the item with id ``sample_id``; DataError if absent."""
        if self._pos is None:
            self._pos = {int(i): k for k, i in enumerate(self._ids)}
        try:
            return self._pos[int(sample_id)]
        except KeyError:
            raise DataError(f"id {sample_id} is not in QA set '{self.name}'") from None

    # -- views --------------------------------------------------------------------------------------------------
    def select_ids(self, ids: Iterable[int], name: str | None = None) -> QASet:
        """The items whose id is in ``ids``, in this set's order. Unknown ids raise DataError."""
        want = np.asarray(list(ids), dtype=np.int64)
        missing = np.setdiff1d(want, self._ids)
        if len(missing):
            raise DataError(f"{len(missing)} requested ids are not in QA set '{self.name}', e.g. {missing[:5].tolist()}")
        keep = np.isin(self._ids, want)
        return QASet(name or self.name, (it for it, k in zip(self.items, keep) if k), self.source)

    def exclude_ids(self, ids: Iterable[int], name: str | None = None) -> QASet:
        """The items whose id is not in ``ids``, in this set's order."""
        drop = np.isin(self._ids, np.asarray(list(ids), dtype=np.int64))
        return QASet(name or self.name, (it for it, d in zip(self.items, drop) if not d), self.source)

    def renamed(self, name: str) -> QASet:
        """The same items under another name."""
        return QASet(name, self.items, self.source)

    # -- access helpers -----------------------------------------------------------------------------------------
    @property
    def questions(self) -> list[str]:
        return [it.question for it in self.items]

    @property
    def answers(self) -> list[str]:
        return [it.answer for it in self.items]

    def pairs(self, field_name: str = "answer") -> list[tuple[str, str]]:
        """``(question, item.<field_name>)`` for every item (``field_name`` a str field; see :meth:`require`)."""
        if field_name != "answer":
            self.require(field_name)
        return [(it.question, getattr(it, field_name)) for it in self.items]

    @property
    def subjects(self) -> list[str | None]:
        return [it.subject for it in self.items]

    def require(self, field_name: str, who: str | None = None) -> None:
        """Raise DataError unless every item has ``field_name``.

        The message names the field, the set, its source file and ``who`` needs it (a method or metric), e.g.
        ``"method idk_dpo needs field 'idk_answer' on every item of QA set 'forget' (tofu/forget01.json); 40 of 40
        items lack it ..."``.
        """
        valid = {f.name for f in fields(QAItem)}
        if field_name not in valid:
            raise DataError(f"unknown QA field {field_name!r}; fields are {sorted(valid)}")
        lacking = [it.id for it in self.items if not it.has(field_name)]
        if lacking:
            need = f"{who} needs" if who else "needs"
            raise DataError(
                f"{need} field '{field_name}' on every item of QA set '{self.name}' "
                f"({self.source or 'in memory'}); {len(lacking)} of {len(self)} items lack it (ids {lacking[:5]}). "
                f"Use a data set that provides '{field_name}' (e.g. build_text_task(..., with_idk=True) for idk_answer)"
            )


@dataclass(frozen=True)
class TextTask(SplitIds):
    """The data of one LLM unlearning problem (satisfies ``bench.tracks.base.TrackTask``).

    Attributes:
        name: data set name ("synthetic_tofu", "tofu", "muse_news" ...).
        full: D (θ_o is trained on it).  forget: D_f ⊂ D.  retain: D_r = D \\ D_f (θ_r is trained on it).
        eval_sets: evaluation sets by role: "forget" and "retain" (with paraphrased / perturbed answers),
            "real_authors", "world_facts" (answer + perturbed answers); MUSE: "knowmem_forget", "knowmem_retain".
        scenario: JSON-serialisable record: kind, split, n_forget, n_retain, n_test, subjects_forget, source.
        extras: loader-specific data (MUSE: verbmem, privleak, icl sets).
    """

    name: str
    full: QASet
    forget: QASet
    retain: QASet
    eval_sets: dict[str, QASet] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def train_ids(self) -> np.ndarray:
        """int64 ids of D."""
        return self.full.ids


def check_split(full: QASet, forget: QASet, retain: QASet, where: str) -> None:
    """Validate D_f ∪ D_r = D, disjoint, D_f non-empty; DataError naming ``where`` otherwise."""
    check_id_split(full.ids, forget.ids, retain.ids, where=where,
                   empty_forget="the forget split is empty; choose a split with at least one item "
                                "(forget01/forget05/forget10) or more persons")
