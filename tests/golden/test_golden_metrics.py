"""Golden values of the classifier metrics, computed independently (by hand) on stub models whose logits we set.

The stub model is the identity: each input row *is* the logits row, so every prediction and confidence is known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.scenarios import Task
from unlearnkit.engine.loop import Engine
from unlearnkit.metrics import AVG_GAP_KEYS, METRICS, EvalContext, avg_gap
from unlearnkit.metrics.mia import MIAEfficacy, MIAEfficacyConfig, svc_mia_efficacy, true_label_confidence

from golden_stubs import confidence_logits, stub_task

ENGINE = Engine(EngineConfig(device="cpu", progress=False))


def hit_logits(labels: np.ndarray, n_correct: int, k: int) -> np.ndarray:
    """Logits (n, k): the first ``n_correct`` rows predict their label, the rest predict (label + 1) mod k."""
    out = np.zeros((len(labels), k), dtype=np.float32)
    for i, y in enumerate(labels):
        out[i, y if i < n_correct else (y + 1) % k] = 2.0
    return out






IDENTITY = nn.Identity()


# -- Avg. Gap (SalUn Table 1) ---------------------------------------------------------------------------------------
def test_avg_gap_hand_values():
    m = {"unlearn_acc": 10.0, "retain_acc": 90.0, "test_acc": 80.0, "mia_efficacy": 20.0}
    o = {"unlearn_acc": 12.0, "retain_acc": 95.0, "test_acc": 81.0, "mia_efficacy": 30.0}
    assert avg_gap(m, o) == pytest.approx((2 + 5 + 1 + 10) / 4)  # 4.5
    assert avg_gap(o, m) == pytest.approx(4.5)  # symmetric
    assert avg_gap(o, o) == 0.0
    assert AVG_GAP_KEYS == ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")
    # a worked SalUn-style row: UA 7.81/5.24, RA 98.10/100.00, TA 92.01/94.26, MIA 13.58/12.88 vs oracle
    row = {"unlearn_acc": 7.81, "retain_acc": 98.10, "test_acc": 92.01, "mia_efficacy": 13.58}
    oracle = {"unlearn_acc": 5.24, "retain_acc": 100.00, "test_acc": 94.26, "mia_efficacy": 12.88}
    assert avg_gap(row, oracle) == pytest.approx((2.57 + 1.90 + 2.25 + 0.70) / 4)  # 1.855


def test_avg_gap_skips_missing_and_nan_keys():
    m = {"unlearn_acc": 10.0, "retain_acc": float("nan"), "test_acc": 80.0}
    o = {"unlearn_acc": 16.0, "retain_acc": 95.0, "test_acc": 84.0, "mia_efficacy": 30.0}
    assert avg_gap(m, o) == pytest.approx((6 + 4) / 2)
    assert math.isnan(avg_gap({}, o))
    assert avg_gap({"forget_acc": 95.0}, {"forget_acc": 94.0}, keys=("forget_acc",)) == 1.0


# -- accuracy keys (C26) --------------------------------------------------------------------------------------------
def test_c26_forget_acc_and_unlearn_acc_are_distinct_complements():
    k = 10
    rng = np.random.default_rng(0)
    yf, yr, yt = (rng.integers(0, k, n) for n in (100, 1000, 1000))
    task = stub_task({"forget": (hit_logits(yf, 95, k), yf), "retain": (hit_logits(yr, 980, k), yr),
                      "test": (hit_logits(yt, 930, k), yt)}, k)
    out = METRICS.build("accuracy").compute(EvalContext(IDENTITY, task, ENGINE))
    v = out.values
    assert v["forget_acc"] == 95.0 and v["unlearn_acc"] == 5.0
    assert v["retain_acc"] == 98.0 and v["test_acc"] == 93.0
    assert "forgotten_test_acc" not in v
    assert not {"UA", "FA", "ua", "fa"} & set(v)  # no bare, direction-less key
    assert int(out.per_sample["forget_correct"].sum()) == 95
    assert out.per_sample["forget_ids"].tolist() == task.forget.ids.tolist()
    # gap to a retrain reference with forget accuracy 94: |95 − 94| = 1, in either key
    oracle = {"forget_acc": 94.0, "unlearn_acc": 6.0}
    assert avg_gap(v, oracle, keys=("forget_acc",)) == 1.0
    assert avg_gap(v, oracle, keys=("unlearn_acc",)) == 1.0


def test_accuracy_is_exact_for_non_terminating_fractions():
    y = np.array([0, 1, 0])
    task = stub_task({"forget": (hit_logits(y, 1, 2), y), "retain": (hit_logits(y, 2, 2), y),
                      "test": (hit_logits(y, 3, 2), y)}, 2)
    v = METRICS.build("accuracy").compute(EvalContext(IDENTITY, task, ENGINE)).values
    assert v["forget_acc"] == 100 / 3 and v["unlearn_acc"] == 100 - 100 / 3
    assert v["retain_acc"] == 200 / 3 and v["test_acc"] == 100.0


def test_c57_class_scenario_reports_ta_on_remaining_classes_and_forgotten_class_separately():
    k = 10
    yt = np.repeat(np.arange(k), 10)  # 10 test samples per class
    lt = hit_logits(yt, len(yt), k)  # all correct ...
    lt[yt == 3] = hit_logits(yt[yt == 3], 2, k)  # ... except class 3: 2 of 10 correct
    lt[np.flatnonzero(yt == 5)[:1]] = hit_logits(np.array([5]), 0, k)  # and one class-5 sample wrong
    yf = np.full(20, 3)
    yr = np.repeat(np.array([0, 1, 2, 4, 5, 6, 7, 8, 9]), 5)
    task = stub_task({"forget": (hit_logits(yf, 4, k), yf), "retain": (hit_logits(yr, len(yr), k), yr),
                      "test": (lt, yt)}, k, kind="class", forgotten_classes=[3])
    v = METRICS.build("accuracy").compute(EvalContext(IDENTITY, task, ENGINE)).values
    assert v["test_acc"] == 100.0 * 89 / 90  # remaining 9 classes: 90 samples, 1 wrong
    assert v["forgotten_test_acc"] == 20.0  # class 3 alone: 2 of 10
    assert v["forget_acc"] == 20.0 and v["unlearn_acc"] == 80.0 and v["retain_acc"] == 100.0


# -- MIA-efficacy (SVC confidence attack) --------------------------------------------------------------------------
MEMBERS = np.linspace(0.95, 0.999, 60)
NONMEMBERS = np.linspace(0.05, 0.15, 60)


@pytest.mark.parametrize(("target", "want"), [
    (np.linspace(0.96, 0.998, 40), 0.0),  # looks like training data: nothing forgotten
    (np.linspace(0.06, 0.14, 40), 100.0),  # looks like unseen data: all forgotten
    (np.concatenate([np.full(10, 0.98), np.full(30, 0.1)]), 75.0),  # 30 of 40 called non-member
])
def test_svc_mia_efficacy_on_separable_pools(target, want):
    eff, pred = svc_mia_efficacy(MEMBERS, NONMEMBERS, target)
    assert eff == pytest.approx(want)
    assert pred.dtype == np.int64 and pred.shape == (len(target),)
    assert pred.sum() == round(len(target) * (100 - want) / 100)


def test_svc_mia_refuses_empty_pools():
    from unlearnkit.errors import DataError

    with pytest.raises(DataError, match="non-empty"):
        svc_mia_efficacy(MEMBERS, np.zeros(0), NONMEMBERS)


def test_true_label_confidence_matches_softmax_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0]])
    conf = true_label_confidence(logits, torch.tensor([1, 1]))
    assert conf == pytest.approx([0.75, 1 / (1 + math.e**2)])


def _mia_task(forget_conf: np.ndarray) -> Task:
    rng = np.random.default_rng(1)
    yr, yt, yf = rng.integers(0, 2, 80), rng.integers(0, 2, 50), rng.integers(0, 2, len(forget_conf))
    return stub_task({
        "retain": (confidence_logits(yr, np.linspace(0.95, 0.999, 80)), yr),
        "test": (confidence_logits(yt, np.linspace(0.05, 0.15, 50)), yt),
        "forget": (confidence_logits(yf, forget_conf), yf),
    }, 2)


@pytest.mark.parametrize(("forget_conf", "want"), [
    (np.full(30, 0.99), 0.0),
    (np.full(30, 0.1), 100.0),
    (np.concatenate([np.full(12, 0.99), np.full(18, 0.1)]), 60.0),
])
def test_registered_mia_efficacy_on_a_stub_model(forget_conf, want):
    task = _mia_task(forget_conf)
    out = METRICS.build("mia_efficacy").compute(EvalContext(IDENTITY, task, ENGINE))
    assert out.values["mia_efficacy"] == pytest.approx(want)
    assert out.per_sample["forget_confidence"] == pytest.approx(forget_conf, abs=1e-5)
    assert int(out.per_sample["forget_mia_member_pred"].sum()) == round(30 * (100 - want) / 100)


def test_mia_random_member_sampling_gives_the_same_answer_on_a_clean_case():
    task = _mia_task(np.full(30, 0.1))
    m = MIAEfficacy(MIAEfficacyConfig(member_sampling="random"))
    assert m.compute(EvalContext(IDENTITY, task, ENGINE, seed=3)).values["mia_efficacy"] == 100.0
