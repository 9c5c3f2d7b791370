"""The removal-vs-suppression verdict on hand-made rows (goldens for each outcome)."""

from __future__ import annotations

import pytest

from unlearnkit.metrics.audit import audit_verdict, battery_keys, uninformative

R = {"forms.forget.qa.prob": 0.10, "relearn.prob@0": 0.1, "relearn.prob@10": 0.20, "icl.prob": 0.80,
     "quant.prob@4bit": 0.10, "quant.prob@16bit": 0.10, "forms.forget.fill_blank.prob": 0.05,
     "hidden.answer_acc": 0.25, "cv.jaccard": 0.05}
ORIG = {"forms.forget.qa.prob": 0.90, "relearn.prob@0": 0.9, "relearn.prob@10": 0.95, "icl.prob": 0.82,
     "quant.prob@4bit": 0.85, "quant.prob@16bit": 0.90, "forms.forget.fill_blank.prob": 0.70,
     "hidden.answer_acc": 0.95, "cv.jaccard": 1.0}


def test_battery_keys_order_and_choices():
    keys = [p for p, _, _ in battery_keys(ORIG)]
    assert keys == ["plain", "relearn", "in_context", "quant4", "form:fill_blank", "hidden_answer",
                    "concept_vectors"]  # 16 bits is the control, not a probe


def test_suppression_is_named_by_the_probes_that_bring_knowledge_back():
    u = {**R, "relearn.prob@10": 0.90, "hidden.answer_acc": 0.90, "cv.jaccard": 0.98, "icl.prob": 0.81}
    v = audit_verdict(u, R, ORIG)
    assert v.verdict == "suppression"
    exposed = {p.probe for p in v.probes if p.exposes}
    assert exposed == {"relearn", "hidden_answer"}  # concept vectors are a trace: reported, not deciding
    assert len(v.traces) == 1 and v.traces[0].startswith("concept vectors (Jaccard): 0.98")
    assert v.plain_residual == pytest.approx(0.0)
    assert [p.probe for p in uninformative(v.probes)] == ["in_context"]  # θ_r uses the context too


def test_removal_when_no_probe_recovers():
    u = {**R, "forms.forget.qa.prob": 0.15, "relearn.prob@10": 0.30, "cv.jaccard": 0.9}  # an intact trace alone
    v = audit_verdict(u, R, ORIG)
    assert v.verdict == "removal" and v.plain_residual == pytest.approx(0.0625)
    relearn = next(p for p in v.probes if p.probe == "relearn")
    assert relearn.residual == pytest.approx((0.30 - 0.20) / (0.95 - 0.20))


def test_not_forgotten_and_inconclusive():
    assert audit_verdict(ORIG, R, ORIG).verdict == "not-forgotten"
    assert audit_verdict(R, R, R).verdict == "inconclusive"  # θ_o = θ_r: nothing to unlearn
    assert audit_verdict({"icl.prob": 0.1}, R, ORIG).verdict == "inconclusive"  # no plain score
    only_plain = {"forms.forget.qa.prob": 0.1}
    assert audit_verdict(only_plain, only_plain, {"forms.forget.qa.prob": 0.9}).verdict == "inconclusive"
    # θ_r against itself: removal by construction
    assert audit_verdict(R, R, ORIG).verdict == "removal"
