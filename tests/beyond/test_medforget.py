"""Hierarchical records (issue 18): a target of level k selects exactly its subtree, the relatives partition the
data, unknown levels are refused, the reconstruction attack's prompts add ancestors from the root down."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.data.text.medforget import (
    LEVELS,
    MedForgetSpec,
    build_medforget_tasks,
    generate_records,
    relatives,
    subtree_ids,
    target_nodes,
)
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.hierarchy import context_prompt

SPEC = MedForgetSpec(institutions=3, patients=3, studies=2, targets=2)
#: own QA items per node of each level (institution 2, patient 3, study 2, section 1)
OWN = {"institution": 2, "patient": 3, "study": 2, "section": 1}


def _expected_subtree_size(level: str, spec: MedForgetSpec = SPEC) -> int:
    below = {"section": 0, "study": 2 * OWN["section"]}
    below["patient"] = spec.studies * (OWN["study"] + below["study"])
    below["institution"] = spec.patients * (OWN["patient"] + below["patient"])
    return OWN[level] + below[level]


@pytest.mark.parametrize("level", LEVELS)
def test_a_target_of_level_k_selects_exactly_its_descendants(level):
    items = generate_records(SPEC, seed=0)
    for node in sorted({it.node for it in items if it.level == level}):
        ids = set(subtree_ids(items, node).tolist())
        depth = LEVELS.index(level)
        # independent rule: an item is in the subtree iff its path's first depth+1 parts are the node's
        want = {it.id for it in items if it.node.split("/")[:depth + 1] == node.split("/")}
        assert ids == want
        assert len(ids) == _expected_subtree_size(level)


@pytest.mark.parametrize("level", LEVELS)
def test_relatives_partition_the_records(level):
    items = generate_records(SPEC, seed=0)
    targets = target_nodes(items, level, SPEC.targets)
    groups = relatives(items, targets)
    allids = np.concatenate(list(groups.values()))
    assert sorted(allids.tolist()) == sorted(it.id for it in items), "groups must partition the data"
    forget = set(subtree_ids(items, targets).tolist())
    assert forget == set(groups["target"].tolist()) | set(groups["descendants"].tolist())
    by_id = {it.id: it for it in items}
    for i in groups["siblings"]:
        assert by_id[int(i)].level == level and by_id[int(i)].node not in targets
    for i in groups["ancestors"]:
        assert any(t.startswith(by_id[int(i)].node + "/") for t in targets)


def test_the_levels_tasks_and_targets():
    _, tasks = build_medforget_tasks(SPEC, seed=0)
    assert [lev for lev, _ in tasks] == list(SPEC.forget_levels)
    sizes = {lev: len(t.forget) for lev, t in tasks}
    assert sizes["institution"] == _expected_subtree_size("institution")  # one hospital
    assert sizes["section"] == 2 * _expected_subtree_size("section")  # targets = 2 (distinct parents)
    for _lev, t in tasks:
        assert not set(t.forget.ids) & set(t.retain.ids)
        reph = t.eval_sets["forget.rephrased"]
        assert np.array_equal(reph.ids, t.forget.ids)
        assert all(a.question != b.question and a.answer == b.answer for a, b in zip(t.forget, reph))


def test_unknown_hierarchy_level_is_refused():
    with pytest.raises(ValueError, match="level\\(s\\) \\['ward'\\] do not exist"):
        MedForgetSpec(forget_levels=["ward"])
    with pytest.raises(ValueError, match="\\['ward'\\] that do not exist"):
        MedForgetSpec(targets={"ward": 2})
    with pytest.raises(DataError, match="'ward' does not exist"):
        target_nodes(generate_records(SPEC, seed=0), "ward")
    from unlearnkit.bench.resolve import resolve

    with pytest.raises(ConfigError, match="Did you mean 'study'"):
        resolve({"track": "llm", "llm": {"data": {"source": "medforget", "medforget": {"forget_levels": ["studdy"]}}},
                 "methods": ["ga"], "metrics": ["hierarchy"]})


def test_context_prompt_adds_ancestors_from_the_root():
    items = generate_records(SPEC, seed=0)
    sec = next(it for it in items if it.level == "section")
    assert context_prompt(sec, 0) == sec.question
    assert len(sec.context) == 3
    assert context_prompt(sec, 1) == f"{sec.context[0]} {sec.question}"
    assert context_prompt(sec, 3) == " ".join([*sec.context, sec.question])
    inst = next(it for it in items if it.level == "institution")
    assert context_prompt(inst, 3) == inst.question  # no ancestors: no context
    patient = next(it for it in items if it.level == "patient")
    assert "hospital in" in patient.context[0] and len(patient.context) == 1


class _StubContext:
    """An evaluation context whose 'model' answers correctly only when the hospital sentence is in the prompt."""

    def __init__(self, task):
        self.task = task

    def eval_set(self, name):
        return self.task.eval_sets[name]

    def mean_logprobs(self, pairs, tag):
        return np.array([np.log(0.9) if "is a hospital in" in q else np.log(0.1) for q, _ in pairs])

    def generations(self, prompts, tag):
        answers = {it.question: it.answer for s in self.task.eval_sets.values() for it in s}
        out = []
        for p in prompts:
            hit = next((a for k, a in answers.items() if p.endswith(k)), None)
            out.append(hit if "is a hospital in" in p and hit else "I do not know.")
        return out


def test_hierarchy_metric_reads_the_attack_gain_golden():
    from unlearnkit.metrics.hierarchy import HierarchyMetric

    _, tasks = build_medforget_tasks(SPEC, seed=0)
    task = dict(tasks)["section"]
    out = HierarchyMetric().compute(_StubContext(task))
    v = out.values
    # without context the stub never answers: ROUGE-L recall of "I do not know." against the answers is 0
    assert v["med.attack.d0.rouge"] == pytest.approx(0.0)
    assert v["med.attack.d1.rouge"] == pytest.approx(1.0) and v["med.attack.d3.rouge"] == pytest.approx(1.0)
    assert v["med.attack_gain"] == pytest.approx(1.0)
    assert v["med.attack_gain_prob"] == pytest.approx(0.8)  # best depth (all ≥ 1 here) minus the bare question
    assert v["med.forget.prob"] == pytest.approx(0.1) and v["med.siblings.rouge"] == pytest.approx(0.0)


def test_qa_item_scores_exact_match_normalises_case_space_and_period():
    from unlearnkit.metrics.stages import qa_item_scores

    class Ctx:
        def mean_logprobs(self, pairs, tag):
            return np.zeros(len(pairs))

        def generations(self, prompts, tag):
            return ["the  ANSWER", "other"]

    sc = qa_item_scores(Ctx(), [("q1", "The answer."), ("q2", "x y")], ("t",))
    np.testing.assert_allclose(sc["em"], [1.0, 0.0])
    np.testing.assert_allclose(sc["prob"], [1.0, 1.0])
    assert sc["rouge"][0] == pytest.approx(1.0) and sc["rouge"][1] == pytest.approx(0.0)
