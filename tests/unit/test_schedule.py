"""The typed schedule (data/schedule.py) and continual schedules on digits: learning after forgetting, the oracle of
every point trained on exactly what was learned and not forgotten, in order, and bad sequences refused with the
position named."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.bench import Runner, load_config, run_experiment
from unlearnkit.data.schedule import Branch, Evaluate, Forget, Learn
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.results import final_stage_rows, latest_rows


class _T:
    """A minimal task: ids only."""

    def __init__(self, train=(), forget=()):
        self.train_ids = np.asarray(train, dtype=np.int64)
        self.forget_ids = np.asarray(forget, dtype=np.int64)
        self.retain_ids = np.setdiff1d(self.train_ids, self.forget_ids)
        self.scenario = {}


def test_branch_oracle_learning_and_theta_o_lineage():
    b = Branch((Learn(_T([1, 2, 3]), "L1"), Learn(_T([4, 5]), "L2"), Forget(_T([1, 2, 3, 4, 5], [1, 2, 3]), "U1"),
                Evaluate(_T(), {"step": 2}), Learn(_T([6, 7]), "L3"), Evaluate(_T(), {"step": 3})))
    assert b.points == [3, 5] and b.first_forget == 2
    # θ_o at the last point learned all three tasks, in order; the oracle only what was kept: task 1 is gone
    assert [op.name for op in b.learned_before(5)] == ["L1", "L2", "L3"]
    steps = b.oracle_learning(5)
    assert [op.name for op, _ in steps] == ["L2", "L3"]
    assert [ids.tolist() for _, ids in steps] == [[4, 5], [6, 7]]
    assert b.removed_before(5).tolist() == [1, 2, 3]
    # a partial forget keeps the rest of the task, in its place in the order
    b2 = Branch((Learn(_T([1, 2, 3]), "L1"), Forget(_T([1, 2, 3], [2]), "U"), Evaluate(_T())))
    assert [ids.tolist() for _, ids in b2.oracle_learning(2)] == [[1, 3]]


@pytest.mark.parametrize("ops, match", [
    ((Learn(_T([1, 2]), "L1"), Forget(_T([1, 2], [3]), "U2"), Evaluate(_T())), "operation 1 .*never learned"),
    ((Learn(_T([1, 2]), "L1"), Learn(_T([2, 3]), "L2")), "operation 1 .*already learned"),
    ((Learn(_T([]), "L1"),), "operation 0 .*no samples"),
    ((Evaluate(_T()),), "operation 0 .*before anything"),
    ((Learn(_T([1, 2]), "L1"), Forget(_T([1, 2], [1]), "U"), Forget(_T([2], [1]), "U")), "operation 2 .*already"),
])
def test_bad_branches_name_the_position(ops, match):
    with pytest.raises(DataError, match=match):
        Branch(tuple(ops))


BASE = {
    "name": "cont", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "scheduler": "none"},
    "metrics": ["accuracy"], "seeds": [0], "engine": {"progress": False, "threads": 1},
}


@pytest.mark.parametrize("sequence, match", [
    ("L1 U2 L2", "operation 1 \\(U2\\) forgets task 2, which was not learned"),
    ("L1 L2 L1 U1", "operation 2 \\(L1\\) learns task 1 a second time"),
    ("L1 L2 L3", "never forgets"),
    ("L1 L4 U1", "operation 1 \\(L4\\) names task 4"),
    ("L1 X2 U1", "operation 1 \\('X2'\\) is not"),
    ("L1 U1 U1:0.5", "operation 2 .* already forgot"),
    ("L1 U1:0 L2", "operation 1 \\(U1:0\\): the share must be in \\(0, 1\\]"),
    ("L1 U1:1.5 L2", "operation 1 \\(U1:1.5\\): the share must be in \\(0, 1\\]"),
    ("L1 U1:2 L2", "operation 1 \\(U1:2\\): the share must be in \\(0, 1\\]"),
])
def test_bad_sequences_are_config_errors_naming_the_position(tmp_path, sequence, match):
    with pytest.raises(ConfigError, match=match):
        load_config(data={**BASE, "output_dir": str(tmp_path),
                          "scenario": {"kind": "continual", "tasks": 3, "sequence": sequence}})


def test_empty_task_is_a_data_error(tmp_path):
    cfg = load_config(data={**BASE, "output_dir": str(tmp_path), "methods": ["finetune"],
                            "scenario": {"kind": "continual", "tasks": [[0, 1], [11]], "sequence": "L1 L2 U1"}})
    with pytest.raises(DataError, match=r"task class\(es\) \[11\]"):
        _ = Runner(cfg).plan


@pytest.fixture(scope="module")
def continual_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cont")
    cfg = load_config(data={**BASE, "output_dir": str(tmp),
                            "scenario": {"kind": "continual", "tasks": 3, "sequence": "L1 L2 U1 L3"},
                            "methods": ["retrain", {"name": "finetune", "epochs": 2},
                                        {"name": "grad_ascent", "epochs": 1, "lr": 0.01}]})
    runner = Runner(cfg)
    outcome = runner.run()
    return cfg, runner, outcome


def test_continual_schedule_oracle_trained_on_exactly_what_is_kept(continual_run):
    cfg, runner, outcome = continual_run
    branch = runner.plan[0]
    learns = [op for op in branch.ops if isinstance(op, Learn)]
    t1, t2, t3 = (op.ids for op in learns)
    classes = [sorted(set(op.task.train.labels.tolist())) for op in learns]
    assert classes == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    pos_u1, pos_l3 = branch.points  # evaluation after U1 (step 2) and after L3 (step 3)
    # oracle after U1: task 2 only; after L3: tasks 2 and 3 — never a sample of task 1
    o2 = runner.oracle(0, branch, pos_u1)
    o3 = runner.oracle(0, branch, pos_l3)
    assert np.array_equal(o2.trained_ids, np.sort(t2))
    assert np.array_equal(o3.trained_ids, np.union1d(t2, t3))
    assert not np.intersect1d(o3.trained_ids, t1).size
    # θ_o learned all three tasks in order (and forgot nothing)
    th = runner.original(0, branch, pos_l3)
    assert np.array_equal(th.trained_ids, np.union1d(np.union1d(t1, t2), t3))
    # rows: one per (role/method, point); the method rows carry the step dimension
    rows = latest_rows(outcome.rows)
    by = {(r["method"], r["step"]): r for r in rows}
    assert set(by) == {(m, s) for m in ("retrain", "original", "finetune", "grad_ascent") for s in (2, 3)}
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert all(r["dimensions"] == ["step"] for r in rows)
    # after U1 the oracle has never seen classes 0-3: its forget accuracy is 0 (single head, those outputs untrained)
    assert by[("retrain", 2)]["metrics"]["forget_acc"] < 5.0
    # both learned task 2 (the retain set at step 2); naive sequential training forgets task 1 catastrophically, so
    # θ_o's forget accuracy is no evidence of memorisation here (the pre-flight check of a run says so)
    assert by[("original", 2)]["metrics"]["retain_acc"] > 80 and by[("retrain", 2)]["metrics"]["retain_acc"] > 80
    # after L3 the forgotten task is still evaluated (relapse is visible) and the test set holds the learned,
    # not wholly forgotten classes
    sc = by[("finetune", 3)]["scenario"]
    assert sc["classes_removed"] == [0, 1, 2, 3] and sc["classes_learned"] == list(range(10))
    # the summary shows the last point
    assert {r["step"] for r in final_stage_rows(rows)} == {3}


def test_continual_resume_and_method_learns_from_its_own_model(continual_run):
    cfg, runner, outcome = continual_run
    again = run_experiment(cfg, write_report=False)
    assert again.new_rows == 0 and again.trained == []
    rows = {(r["method"], r["step"]): r for r in latest_rows(again.rows)}
    # the method's model after L3 continues from its own U1 output, not from θ_o after L3
    assert rows[("finetune", 3)]["checkpoint_sha256"] != rows[("original", 3)]["checkpoint_sha256"]
    assert rows[("finetune", 3)]["original_sha256"] == rows[("original", 3)]["checkpoint_sha256"]
