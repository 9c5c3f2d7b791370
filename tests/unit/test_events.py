"""Events: a step event per optimizer step with the loss, its terms and the lr; with ``eval_every`` the track's
curve metrics during unlearning beside θ_r's and θ_o's, drawn in the report; evaluation time is not unlearning
time; MLflow (SQLite) and TensorBoard writers when installed; the final numbers do not depend on any of it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from unlearnkit.bench import Runner, load_config
from unlearnkit.engine.events import Events, read_events
from unlearnkit.results import latest_rows


def _cfg(tmp_path, methods, **engine):
    return load_config(data={
        "name": "events", "data": {"name": "digits", "train_subset": 300, "test_subset": 100},
        "model": {"name": "mlp", "hidden": [32]}, "scenario": {"kind": "random", "fraction": 0.1},
        "train": {"epochs": 4, "batch_size": 32, "lr": 0.1, "scheduler": "none"}, "metrics": ["accuracy"],
        "seeds": [0], "methods": methods, "engine": {"progress": False, "threads": 1, **engine},
        "output_dir": str(tmp_path)})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ev")
    cfg = _cfg(tmp, [{"name": "grad_ascent", "epochs": 3, "lr": 0.05, "batch_size": 8, "eval_every": 2}])
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    return cfg, out


def test_step_events_for_training_and_unlearning(run):
    cfg, out = run
    ev = read_events(out.run_dir / "events.jsonl")
    train = [e for e in ev if e["kind"] == "step" and e.get("phase") == "train" and e["method"] == "original"]
    # θ_o: 300 training samples in batches of 32 → 10 steps per epoch × 4 epochs
    assert [e["step"] for e in train] == list(range(1, 41))
    assert all(np.isfinite(e["loss"]) and e["lr"] == pytest.approx(0.1) for e in train)
    unl = [e for e in ev if e["kind"] == "step" and e.get("phase") == "unlearn"]
    row = next(r for r in out.rows if r["method"] == "grad_ascent")
    assert len(unl) == row["steps"] and {e["method"] for e in unl} == {"grad_ascent"} and unl[0]["seed"] == 0


def test_eval_every_n_steps_with_the_oracle_beside(run):
    cfg, out = run
    evals = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "eval"]
    row = next(r for r in out.rows if r["method"] == "grad_ascent")
    assert [e["step"] for e in evals] == list(range(2, row["steps"] + 1, 2))
    oracle = next(r for r in out.rows if r["method"] == "retrain")["metrics"]
    theta_o = next(r for r in out.rows if r["method"] == "original")["metrics"]
    for e in evals:
        assert e["oracle.unlearn_acc"] == oracle["unlearn_acc"] and e["original.test_acc"] == theta_o["test_acc"]
    # gradient ascent raises UA as it goes: the last curve point is the row's own UA when it ends on an eval step
    if row["steps"] % 2 == 0:
        assert evals[-1]["unlearn_acc"] == row["metrics"]["unlearn_acc"]
    from unlearnkit.report import write_reports

    _, html = write_reports(out.run_dir)
    text = html.read_text()
    assert 'id="curves"' in text and 'id="curve-unlearn_acc"' in text


def test_curves_change_no_result_and_are_not_timed(tmp_path, run):
    cfg, out = run
    plain = _cfg(tmp_path, [{"name": "grad_ascent", "epochs": 3, "lr": 0.05, "batch_size": 8}])
    again = Runner(plain, console=Console(file=io.StringIO())).run()
    a = next(r for r in latest_rows(out.rows) if r["method"] == "grad_ascent")
    b = next(r for r in latest_rows(again.rows) if r["method"] == "grad_ascent")
    assert a["checkpoint_sha256"] == b["checkpoint_sha256"]  # evaluating mid-way consumes no randomness
    timing = ("unlearn_seconds", "rte_ratio")
    assert {k: v for k, v in a["metrics"].items() if k not in timing} == \
        {k: v for k, v in b["metrics"].items() if k not in timing}


def test_step_hook_time_is_left_out_of_unlearning_time():
    import time

    from torch import nn

    from unlearnkit.config.schema import EngineConfig
    from unlearnkit.engine.loop import Engine
    from unlearnkit.methods.base import Unlearned, Unlearner

    class Sleepy(Unlearner):
        def _unlearn(self, model, forget, retain, engine, context):
            for _ in range(3):
                engine.after_optimizer_step(model, loss=0.0)
            return Unlearned(model)

    eng = Engine(EngineConfig(progress=False))
    eng.step_hook = (1, lambda m, s: time.sleep(0.2))
    from testkit import make_blobs

    from unlearnkit.config.schema import ScenarioConfig
    from unlearnkit.data.scenarios import build_task

    task = build_task(make_blobs(), ScenarioConfig(kind="random", fraction=0.1))
    res = Sleepy(None).unlearn(nn.Linear(8, 3), task.forget, task.retain, eng)
    assert eng.hook_seconds >= 0.6 and res.seconds < 0.2


def test_terms_are_attached_to_the_next_step_event(tmp_path):
    ev = Events()
    ev.open(["jsonl"], tmp_path, "x")
    with ev.scoped(method="m", seed=1):
        ev.record_terms(forget=1.5, retain=0.25)
        ev.emit("step", step=1, loss=1.75)
        ev.emit("step", step=2, loss=1.0)
    ev.close()
    got = read_events(tmp_path / "events.jsonl")
    assert got[0]["term.forget"] == 1.5 and got[0]["term.retain"] == 0.25 and got[0]["method"] == "m"
    assert "term.forget" not in got[1]


def test_mlflow_writer_logs_metrics_in_sqlite(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    ev = Events()
    ev.open(["mlflow"], tmp_path, "exp")
    with ev.scoped(method="ga", seed=0):
        for s in range(1, 4):
            ev.emit("step", step=s, loss=1.0 / s)
    ev.close()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("exp")
    (run,) = client.search_runs([exp.experiment_id])
    hist = client.get_metric_history(run.info.run_id, "step.loss")
    assert [(m.step, m.value) for m in hist] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]


def test_unknown_tracker_is_refused_at_load(tmp_path):
    from unlearnkit.errors import ConfigError

    with pytest.raises(ConfigError, match="trackers"):
        _cfg(tmp_path, ["finetune"], trackers=["wandb"])
