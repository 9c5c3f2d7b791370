"""The continual schedule with learners: at every point (``evaluate: every``) the oracle of each learner was trained
on exactly what was kept, in order, and θ_o on everything learned; a method's replay buffer loses the request while
θ_o's keeps it; the new scenario options are refused with clear errors (positions named)."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from cl_helpers import BASE
from unlearnkit.bench import Runner, load_config
from unlearnkit.data.schedule import Evaluate, Forget, Learn
from unlearnkit.engine.checkpoint import load_checkpoint
from unlearnkit.errors import ConfigError, DataError

LEARNER_SETTINGS = {
    "finetune": ({}, {}),
    "der++": ({"buffer_size": 40, "minibatch_size": 16}, {}),
    "refresh": ({"buffer_size": 40, "minibatch_size": 16}, {}),
    "uncle": ({"hnet_hidden": [16], "chunk_size": 256}, {"head": "task"}),
    "acu": ({"buffer_size": 32}, {}),
}


@pytest.mark.parametrize("name", sorted(LEARNER_SETTINGS))
def test_every_point_oracle_is_trained_on_exactly_what_is_kept(tmp_path, name):
    params, extra = LEARNER_SETTINGS[name]
    seq = "L1 L2 U1 L3" if name == "uncle" else "L1 L2 U1:0.5 L3 U1"
    cfg = load_config(data={**BASE, "output_dir": str(tmp_path), "methods": [],
                            "train": {**BASE["train"], "epochs": 1},
                            "scenario": {"kind": "continual", "tasks": 3, "sequence": seq, "evaluate": "every",
                                         "learner": {"name": name, **params}, **extra}})
    runner = Runner(cfg)
    branch = runner.plan[0]
    assert len(branch.points) == len(seq.split())  # evaluate: every — a point after every operation
    learned: list[np.ndarray] = []
    removed = np.zeros(0, dtype=np.int64)
    for pos, op in enumerate(branch.ops):
        if isinstance(op, Learn):
            learned.append(op.ids)
        elif isinstance(op, Forget):
            removed = np.union1d(removed, op.ids)
        elif isinstance(op, Evaluate):
            kept = np.setdiff1d(np.concatenate(learned), removed)
            oracle = runner.oracle(0, branch, pos)
            assert np.array_equal(np.sort(oracle.trained_ids), kept), f"{name} at {op.label}"
            orig = runner.original(0, branch, pos)
            assert np.array_equal(np.sort(orig.trained_ids), np.sort(np.concatenate(learned))), op.label
            # both are models of this learner
            assert type(oracle.model) is type(orig.model) is type(runner.new_model(0))


def test_method_buffer_is_purged_while_theta_o_keeps_it(tmp_path):
    cfg = load_config(data={**BASE, "output_dir": str(tmp_path), "methods": [{"name": "finetune", "epochs": 1}],
                            "scenario": {"kind": "continual", "tasks": 3, "sequence": "L1 L2 U1 L3",
                                         "learner": {"name": "der++", "buffer_size": 60, "minibatch_size": 16}}})
    runner = Runner(cfg)
    out = runner.run()
    assert all(r["status"] == "ok" for r in out.rows), [r.get("error") for r in out.rows]
    branch = runner.plan[0]
    t1 = branch.ops[0].ids
    u1, l3 = branch.points
    theta_o = runner.original(0, branch, l3).model
    held = theta_o.buf_ids[: theta_o.filled].numpy()
    assert np.isin(held, t1).any()  # θ_o never unlearns: its buffer still replays task 1
    for tag in ("step2", "step3"):
        (ck,) = glob.glob(str(out.run_dir / "checkpoints" / f"finetune-seed0-{tag}"))
        model = runner.new_model(0)
        load_checkpoint(Path(ck), model)
        assert model.filled > 0 and not np.isin(model.buf_ids[: model.filled].numpy(), t1).any(), tag
    oracle = runner.oracle(0, branch, l3).model
    assert not np.isin(oracle.buf_ids[: oracle.filled].numpy(), t1).any()
    # the cost of each operation is in the rows: the Learn after a request has the method's learning seconds
    row = {(r["method"], r["step"]): r for r in out.rows}
    assert row[("finetune", 3)]["metrics"]["learn_seconds"] > 0
    assert "learn_seconds" not in row[("finetune", 2)]["metrics"]


@pytest.mark.parametrize("scenario, match", [
    ({"tasks": [[0, 1], [2, 3]], "sequence": "L1 L2 U1", "permute": True}, "permute makes every task a permuted copy"),
    ({"tasks": 3, "sequence": "L1 L2 U1", "learner": "nope"}, "unknown continual learner 'nope'"),
    ({"tasks": 3, "sequence": "L1 L2 U1", "learner": {"name": "der++", "bufer_size": 3}}, "bufer_size"),
    ({"tasks": 3, "sequence": "L1 L2 U1", "learner": {"buffer_size": 3}}, "learner needs a 'name'"),
    ({"tasks": 3, "sequence": "L1 L2 U1", "head": "tasks"}, "head"),
    ({"tasks": 3, "sequence": "L1 L2 U1 L2", "learner": "der++"}, r"operation 3 \(L2\) learns task 2 a second time"),
    ({"tasks": 3, "sequence": "L1 U2 L2", "permute": True}, r"operation 1 \(U2\) forgets task 2, which was not"),
    ({"tasks": [[0, 1], [], [2]], "sequence": "L1 L3 L2 U1"},
     r"task 2 has no classes \(used first by operation 2 \(L2\)\)"),
    ({"tasks": [[0, 1], [2], []], "sequence": "L1 L2 U1"}, r"task 3 has no classes \(used first by no operation"),
])
def test_bad_continual_options_are_config_errors(tmp_path, scenario, match):
    with pytest.raises(ConfigError, match=match):
        load_config(data={**BASE, "output_dir": str(tmp_path), "scenario": {"kind": "continual", **scenario}})


@pytest.mark.parametrize("tasks, sequence, match", [
    ([[0, 1], [2, 3], [12]], "L1 L2 U1 L3",
     r"task class\(es\) \[12\] of task 3 \(used first by operation 3 \(L3\)\) are not in the training data"),
    ([[0, 1], [12, 2]], "L2 L1 U2", r"\[12\] of task 2 \(used first by operation 0 \(L2\)\)"),
])
def test_a_task_without_training_data_is_a_data_error_naming_the_position(tmp_path, tasks, sequence, match):
    cfg = load_config(data={**BASE, "output_dir": str(tmp_path), "methods": ["finetune"],
                            "scenario": {"kind": "continual", "tasks": tasks, "sequence": sequence}})
    with pytest.raises(DataError, match=match):
        _ = Runner(cfg).plan


@pytest.mark.parametrize("kind, extra", [("random", {"fraction": 0.1}), ("sequential", {"requests": 2,
                                                                                       "fraction": 0.1})])
def test_continual_options_belong_to_the_continual_kind(tmp_path, kind, extra):
    for field, value in (("learner", "der++"), ("permute", True), ("head", "task"), ("evaluate", "every")):
        with pytest.raises(ConfigError, match=f"does not use \\['{field}'\\]"):
            load_config(data={**BASE, "output_dir": str(tmp_path),
                              "scenario": {"kind": kind, **extra, field: value}})


def test_evaluate_every_gives_reference_rows_before_the_first_request(tmp_path):
    cfg = load_config(data={**BASE, "output_dir": str(tmp_path), "methods": [{"name": "finetune", "epochs": 1}],
                            "scenario": {"kind": "continual", "tasks": 3, "sequence": "L1 L2 U1 L3",
                                         "evaluate": "every"}})
    out = Runner(cfg).run()
    steps = {(r["method"], r["step"]) for r in out.rows if r["status"] == "ok"}
    assert {("original", 0), ("retrain", 0), ("original", 1), ("retrain", 1)} <= steps
    assert not {("finetune", 0), ("finetune", 1)} & steps
    r0 = next(r for r in out.rows if r["method"] == "retrain" and r["step"] == 0)
    assert r0["scenario"]["n_forget"] == 0 and np.isnan(r0["metrics"]["acc_forgotten"])
    assert r0["metrics"]["acc_task1"] > 80 and np.isnan(r0["metrics"]["acc_task2"])  # task 2 not learned yet


def test_resume_restores_the_learner_state_from_checkpoints(tmp_path, monkeypatch):
    """A method resumed at a later point continues from its checkpoint, replay buffer included: the recomputed row is
    bit for bit the first run's (a lost buffer would change what L3 learns)."""
    import json

    from unlearnkit.bench import run_experiment

    cfg = load_config(data={**BASE, "output_dir": str(tmp_path), "methods": [{"name": "finetune", "epochs": 1}],
                            "scenario": {"kind": "continual", "tasks": 3, "sequence": "L1 L2 U1 L3",
                                         "learner": {"name": "der++", "buffer_size": 60, "minibatch_size": 16}}})
    first = run_experiment(cfg, write_report=False)
    again = run_experiment(cfg, write_report=False)
    assert again.new_rows == 0 and again.trained == []
    results = first.run_dir / "results.jsonl"
    lines = results.read_text().splitlines()
    kept = [ln for ln in lines if not (json.loads(ln)["method"] == "finetune" and json.loads(ln)["step"] == 3)]
    results.write_text("\n".join(kept) + "\n")
    from unlearnkit.methods.continual.replay import Derpp

    def no_forget(*a, **k):
        raise AssertionError("U1 was recomputed: the checkpoint of step 2 was not used")

    monkeypatch.setattr(Derpp, "forget", no_forget)  # resuming from step 2's checkpoint never forgets again
    redo = run_experiment(cfg, write_report=False)
    assert redo.new_rows == 1
    old = next(json.loads(ln) for ln in lines if json.loads(ln)["method"] == "finetune" and json.loads(ln)["step"] == 3)
    new = next(r for r in redo.rows if r["method"] == "finetune" and r["step"] == 3)
    assert new["checkpoint_sha256"] == old["checkpoint_sha256"]
