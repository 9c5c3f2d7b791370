"""The evaluation-context protocol: references by name with a clear error when missing, and reference outputs
computed once per evaluation point, not once per method row."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from unlearnkit.bench import Runner, load_config
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import EvalContext


def test_reference_by_name_and_missing_reference_error(tiny_task, trained_model, engine):
    ctx = EvalContext(trained_model, tiny_task, engine, references={"oracle_model": trained_model})
    assert ctx.reference("oracle") is trained_model and ctx.reference("oracle_model") is trained_model
    with pytest.raises(ConfigError, match=r"needs the original model θ_o .*references given: oracle_model"):
        ctx.reference("original", "my metric")


def test_oracle_outputs_are_computed_once_per_point(tmp_path, monkeypatch):
    cfg = load_config(data={
        "name": "refs", "data": {"name": "digits", "train_subset": 200, "test_subset": 60},
        "model": {"name": "mlp", "hidden": [16]}, "scenario": {"kind": "random", "fraction": 0.1},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.1, "scheduler": "none"},
        "metrics": ["accuracy", "retrain_distance"], "seeds": [0], "engine": {"progress": False, "threads": 1},
        "methods": [{"name": "finetune", "epochs": 1}, {"name": "grad_ascent", "epochs": 1},
                    {"name": "cf_k", "epochs": 1}], "output_dir": str(tmp_path)})
    runner = Runner(cfg, console=Console(file=io.StringIO()))
    oracle = runner.oracle(0)
    calls = []
    real = Engine.predict

    from unlearnkit.engine.checkpoint import state_sha256

    def counting(self, model, data):
        if state_sha256(model) == oracle.sha256:
            calls.append(data.name)
        return real(self, model, data)

    monkeypatch.setattr(Engine, "predict", counting)
    out = runner.run()
    assert all(r["status"] == "ok" for r in out.rows)
    # θ_r is predicted on each split its own row needs, plus D_f and D_t for retrain_distance: once each, although
    # five rows (θ_r, θ_o and three methods) read them
    assert sorted(calls) == sorted(set(calls)) and {"forget", "test"} <= set(calls), calls
