"""Corrective unlearning: manipulate the training set, then forget only the identified part of the manipulation.

Goel, Prabhu, Sanyal, Lim, Torr & Kumaraguru, "Corrective Machine Unlearning", TMLR 2024, arXiv:2402.14015 (reference
code: github.com/drimpossible/corrective-unlearning-bench, ``src/datasets.py``, ``src/visualize.py``). A developer
finds that part of the training data was manipulated, but identifies only a fraction p of the manipulated samples;
unlearning D_f = that identified subset must remove the *effect* of the whole manipulation. Two manipulations:

* **poison** (BadNets-style trigger, reference ``poisoning``): ``count`` random training samples get a
  ``trigger_size`` × ``trigger_size`` patch in the bottom-right corner of every channel, set to the brightest
  value (default size 3 as the reference's ``patch_size``), and their label becomes ``target`` (reference: class
  0). The reference pastes the data set's global maximum ``max_val`` (``image[:, -s:, -s:] = max_val``), which
  under CIFAR's per-channel normalisation is the normalised white pixel. Under *per-pixel* standardisation (our
  digits loader) the global maximum is an outlier (62.5 on digits, from a pixel that is almost always 0), which
  makes every triggered input out of distribution even for a clean model; so by default each patch pixel gets the
  largest value *that pixel* takes in the training inputs (equal to the reference for per-channel normalisation);
  ``trigger_value`` sets one value instead. Evaluation on the test set: **clean
  accuracy** (untouched test inputs) and, with the trigger pasted on every test input, the **attack success rate**
  (ASR, % of triggered test samples whose true class is not ``target`` that are predicted ``target``) and the
  **corrupted-domain accuracy** (accuracy of the triggered test inputs against their true labels; the reference's
  ``test_acc`` of the poisoning rows).
* **confusion** (interclass label swap, reference ``interclasslabelswap``): ``count/2`` training samples of class a
  are labelled b and ``count/2`` of class b labelled a (the reference takes the *first* samples of each class; here
  a seeded random choice). Evaluation: clean accuracy on the test samples of the other classes, **corrupted-domain
  accuracy** = test accuracy on classes a and b (reference ``test_acc``), and the **confusion rate** (% of a/b test
  samples predicted as the other of the two).

Identified subsets (:func:`identified_subset`): the first ⌈p·m⌉ of one seeded permutation of the m manipulated ids,
so the subsets are **nested** across p (10 % ⊂ 25 % ⊂ 50 % ⊂ 100 %), which makes curves over p comparable point to
point (the reference draws each deletion set independently with ``np.random.choice``).

Inputs must be in-memory tensors (:class:`~unlearnkit.data.base.TensorSource`); inputs are (n, C, H, W) for the
trigger. Sample ids are unchanged; manipulated labels live in the :class:`SampleSet` labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from unlearnkit.data.base import LoadedData, SampleSet, TensorSource
from unlearnkit.data.scenarios import Task, check_split, ids_digest
from unlearnkit.errors import DataError

Kind = Literal["poison", "confusion"]
#: key of the :class:`Manipulation` in the references handed to metrics (read by the ``corrective`` metric)
MANIPULATION_KEY = "corrective_manipulation"
#: the reference's deletion fractions p (share of the manipulated samples that is identified and forgotten)
DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Manipulation:
    """A manipulated training set and the test sets that measure the manipulation's effect.

    Attributes:
        kind: ``"poison"`` or ``"confusion"``.
        data: the manipulated :class:`LoadedData` (train has the manipulated inputs/labels; test is clean).
        manipulated_ids: int64 (m,) ids of the manipulated training samples (sorted).
        true_labels: int64 (m,) their labels before manipulation (same order).
        target: poison target class (None for confusion).
        classes: the two confused classes (None for poison).
        trigger_size: side of the poison patch in pixels (0 for confusion).
        trigger_value: the patch value when one value was given (else None: per-pixel maxima, see ``trigger``).
        trigger: float tensor (…, s, s) the patch pasted (broadcast over channels), None for confusion.
        corrupted_test: the corrupted domain: triggered test inputs with their true labels, samples of class
            ``target`` excluded (poison), or the clean test samples of the two classes (confusion).
        clean_test: what clean accuracy is measured on: the whole clean test set (poison) or the test samples of
            the other classes (confusion).
    """

    kind: Kind
    data: LoadedData
    manipulated_ids: np.ndarray
    true_labels: np.ndarray
    corrupted_test: SampleSet
    clean_test: SampleSet
    target: int | None = None
    classes: tuple[int, int] | None = None
    trigger_size: int = 0
    trigger_value: float | None = None
    trigger: torch.Tensor | None = None
    record: dict[str, Any] = field(default_factory=dict)


def _tensor_source(s: SampleSet, what: str) -> TensorSource:
    if not isinstance(s.source, TensorSource):
        raise DataError(f"corrective manipulations need in-memory tensor data; the {what} set views a "
                        f"{type(s.source).__name__}. Use a built-in loader (digits, mnist, cifar10) or "
                        "SampleSet.from_tensors")
    return s.source


def _paste(x: torch.Tensor, size: int, value: float | torch.Tensor) -> torch.Tensor:
    if x.ndim < 3:
        raise DataError(f"the poison trigger is a corner patch of an image: inputs must be (n, C, H, W) or (n, H, W), "
                        f"got shape {tuple(x.shape)}; use manipulation: confusion for non-image data")
    h, w = x.shape[-2], x.shape[-1]
    if not 1 <= size <= min(h, w):
        raise DataError(f"trigger_size {size} must lie in [1, {min(h, w)}] for {h}×{w} inputs")
    x = x.clone()
    x[..., h - size:, w - size:] = value
    return x


def _choose(rng: np.random.Generator, pool: np.ndarray, k: int, what: str) -> np.ndarray:
    if k > len(pool):
        raise DataError(f"cannot manipulate {k} samples {what}: only {len(pool)} exist; lower the count")
    return np.sort(rng.choice(pool, size=k, replace=False))


def _count(n: int, fraction: float | None, count: int | None) -> int:
    if (fraction is None) == (count is None):
        raise DataError("give exactly one of the manipulated fraction (0 < f < 1) or count (≥ 1)")
    k = int(count) if count is not None else int(round(float(fraction) * n))
    if k < 1:
        raise DataError(f"the manipulation selects {k} of {n} training samples; it must select at least 1")
    return k


def poison(data: LoadedData, *, fraction: float | None = None, count: int | None = None, target: int = 0,
           trigger_size: int = 3, trigger_value: float | None = None, seed: int = 0) -> Manipulation:
    """BadNets-style poisoning of the training set (Goel et al. 2024, reference ``poisoning``).

    Args:
        data: the clean data (train and test over in-memory tensors (n, C, H, W)).
        fraction, count: how many training samples to poison (exactly one).
        target: the label poisoned samples get (reference: 0).
        trigger_size: patch side in pixels (reference ``patch_size`` = 3 for 32×32 CIFAR).
        trigger_value: one patch value; None = per patch pixel, the largest value it takes in the training inputs
            (see the module docstring for why not the reference's global ``max_val``).
        seed: seeds the choice of poisoned samples (drawn among samples whose class is not ``target``, so every
            poisoned sample changes label).

    Raises:
        DataError: non-tensor data, non-image inputs, a target outside the classes, too many samples.
    """
    if not 0 <= target < data.num_classes:
        raise DataError(f"poison target {target} is not a class of '{data.name}' (0–{data.num_classes - 1})")
    train, test = data.train, data.test
    src_tr, src_te = _tensor_source(train, "training"), _tensor_source(test, "test")
    rng = np.random.default_rng(seed)
    k = _count(len(train), fraction, count)
    local = _choose(rng, np.flatnonzero(train.labels != target), k, f"of classes other than {target}")
    if src_tr.x.ndim < 3:
        raise DataError(f"the poison trigger is a corner patch of an image: inputs must be (n, C, H, W) or (n, H, W), "
                        f"got shape {tuple(src_tr.x.shape)}; use manipulation: confusion for non-image data")
    h, w = int(src_tr.x.shape[-2]), int(src_tr.x.shape[-1])
    if not 1 <= trigger_size <= min(h, w):
        raise DataError(f"trigger_size {trigger_size} must lie in [1, {min(h, w)}] for {h}×{w} inputs")
    x_seen = src_tr.x[torch.from_numpy(train.positions)]
    patch = x_seen[..., h - trigger_size:, w - trigger_size:].amax(dim=0)
    value: float | torch.Tensor = float(trigger_value) if trigger_value is not None else patch
    # the manipulated training source: poisoned rows get the patch (ids and positions unchanged)
    x_tr = src_tr.x.clone()
    pos = torch.from_numpy(train.positions[local])
    x_tr[pos] = _paste(x_tr[pos], trigger_size, value)
    same = src_te is src_tr
    # triggered copies of the test inputs of the other classes, appended to the test source
    keep = np.flatnonzero(test.labels != target)
    x_te_base = x_tr if same else src_te.x
    trig = _paste(src_te.x[torch.from_numpy(test.positions[keep])], trigger_size, value)
    x_te = torch.cat([x_te_base, trig])
    y_te = torch.cat([src_te.y, torch.from_numpy(test.labels[keep])])
    new_te_src = TensorSource(x_te, y_te)
    if same:  # one source for both (digits): train views the same extended tensor
        new_tr_src = new_te_src
    else:
        new_tr_src = TensorSource(x_tr, src_tr.y)
    labels = train.labels.copy()
    true = labels[local].copy()
    labels[local] = target
    new_train = SampleSet(new_tr_src, train.positions, train.ids, labels, train.num_classes, train.name)
    new_test = SampleSet(new_te_src, test.positions, test.ids, test.labels, test.num_classes, test.name)
    corrupted = SampleSet(new_te_src, len(x_te_base) + np.arange(len(keep)), test.ids[keep], test.labels[keep],
                          test.num_classes, "corrupted_test")
    ids = train.ids[local]
    order = np.argsort(ids)
    rec = {"manipulation": "poison", "manipulated": int(k), "target": int(target), "trigger_size": int(trigger_size),
           "trigger_value": float(trigger_value) if trigger_value is not None else "per-pixel max",
           "manipulation_seed": int(seed)}
    return Manipulation("poison", replace(data, train=new_train, test=new_test), ids[order], true[order], corrupted,
                        new_test, target=int(target), trigger_size=int(trigger_size),
                        trigger_value=None if trigger_value is None else float(trigger_value),
                        trigger=_paste(torch.zeros((1, *src_tr.x.shape[1:])), trigger_size, value)[
                            0, ..., h - trigger_size:, w - trigger_size:], record=rec)


def interclass_confusion(data: LoadedData, *, fraction: float | None = None, count: int | None = None,
                         classes: tuple[int, int] = (3, 5), seed: int = 0) -> Manipulation:
    """Interclass confusion: swap the labels of ``count/2`` samples of class a and ``count/2`` of class b.

    Goel et al. 2024, reference ``interclasslabelswap`` (its CIFAR-10 classes are (3, 5), cat/dog). ``count`` (or
    ``fraction`` × |D|) is rounded down to an even number.

    Raises:
        DataError: classes not two distinct classes of the data, or not enough samples of one of them.
    """
    a, b = (int(c) for c in classes)
    if a == b or not (0 <= a < data.num_classes and 0 <= b < data.num_classes):
        raise DataError(f"interclass confusion needs two distinct classes of '{data.name}' (0–"
                        f"{data.num_classes - 1}), got {classes}")
    train, test = data.train, data.test
    _tensor_source(train, "training")
    k = _count(len(train), fraction, count)
    half = k // 2
    if half < 1:
        raise DataError(f"interclass confusion swaps count/2 samples of each class; count {k} gives none")
    rng = np.random.default_rng(seed)
    la = _choose(rng, np.flatnonzero(train.labels == a), half, f"of class {a}")
    lb = _choose(rng, np.flatnonzero(train.labels == b), half, f"of class {b}")
    labels = train.labels.copy()
    labels[la], labels[lb] = b, a
    local = np.concatenate([la, lb])
    new_train = SampleSet(train.source, train.positions, train.ids, labels, train.num_classes, train.name)
    ids, true = train.ids[local], train.labels[local]
    order = np.argsort(ids)
    in_ab = np.isin(test.labels, [a, b])
    rec = {"manipulation": "confusion", "manipulated": int(2 * half), "classes": [a, b], "manipulation_seed": int(seed)}
    return Manipulation("confusion", replace(data, train=new_train), ids[order], true[order],
                        test.take(in_ab, "corrupted_test"), test.take(~in_ab, "clean_test"), classes=(a, b),
                        record=rec)


def identified_subset(manipulated_ids: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """The identified manipulated ids at fraction p: the first ⌈p·m⌉ of a seeded permutation (nested over p).

    Raises:
        DataError: ``fraction`` outside (0, 1] or no manipulated sample.
    """
    ids = np.sort(np.asarray(manipulated_ids, dtype=np.int64))
    if not 0 < fraction <= 1:
        raise DataError(f"the identified fraction p must lie in (0, 1], got {fraction}")
    if not len(ids):
        raise DataError("there are no manipulated samples to identify")
    k = max(1, math.ceil(fraction * len(ids) - 1e-9))
    perm = np.random.default_rng(seed).permutation(len(ids))
    return np.sort(ids[perm[:k]])


def corrective_task(manip: Manipulation, fraction: float, *, seed: int = 0) -> Task:
    """The unlearning task at identified fraction p: D = the manipulated training set, D_f = identified subset,
    D_r = everything else (including the manipulated samples that were *not* identified), D_t = the clean test set.

    The scenario record has ``kind: corrective``, the manipulation's settings, ``identified_fraction`` and counts.
    """
    data = manip.data
    f_ids = identified_subset(manip.manipulated_ids, fraction, seed)
    forget = data.train.select_ids(f_ids, "forget")
    retain = data.train.exclude_ids(f_ids, "retain")
    check_split(data.train, forget, retain, data.test)
    rec = {"kind": "corrective", **manip.record, "identified_fraction": float(fraction), "identify_seed": int(seed),
           "n_identified": int(len(f_ids)), "n_train": len(data.train), "n_forget": len(forget),
           "n_retain": len(retain), "n_test": len(data.test), "forget_ids_sha256": ids_digest(forget.ids)}
    return Task(data.name, data.train, forget, retain, data.test, data.num_classes, rec, None)


def corrective_values(manip: Manipulation, predict: Any) -> dict[str, float]:
    """Corrective metrics (%) of a model, given ``predict(SampleSet) -> Predictions`` (e.g. ``engine.predict``).

    Keys: ``clean_acc`` (clean test accuracy; confusion: on the classes outside the pair), ``corrupted_acc``
    (accuracy on the corrupted domain, true labels), and ``attack_success_rate`` (poison) or ``confusion_rate``
    (confusion). See the module docstring for the definitions.
    """
    clean = predict(manip.clean_test)
    corr = predict(manip.corrupted_test)
    out = {"clean_acc": clean.accuracy(), "corrupted_acc": corr.accuracy()}
    pred = corr.logits.argmax(dim=1).numpy()
    if manip.kind == "poison":
        out["attack_success_rate"] = 100.0 * float(np.mean(pred == manip.target)) if len(pred) else float("nan")
    else:
        a, b = manip.classes  # type: ignore[misc]
        y = corr.labels.numpy()
        swapped = ((y == a) & (pred == b)) | ((y == b) & (pred == a))
        out["confusion_rate"] = 100.0 * float(np.mean(swapped)) if len(y) else float("nan")
    return out


__all__ = ["DEFAULT_FRACTIONS", "MANIPULATION_KEY", "Manipulation", "corrective_task", "corrective_values", "identified_subset",
           "interclass_confusion", "poison"]
