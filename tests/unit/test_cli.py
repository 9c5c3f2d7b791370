"""Command line (unlearnkit.cli) through typer's CliRunner: methods, schema, run errors, a tiny run."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
HAS_REPORT = importlib.util.find_spec("unlearnkit.report") is not None
needs_report = pytest.mark.skipif(not HAS_REPORT, reason="unlearnkit.report is not there yet; `run` imports it")


def invoke(*args: str):
    return CliRunner(env=ENV).invoke(app, list(args))


def test_methods_lists_the_registered_methods():
    res = invoke("methods")
    assert res.exit_code == 0, res.output
    for name in ("finetune", "grad_ascent", "retrain"):
        assert name in res.output
    res = invoke("methods", "--json")
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["finetune"]["defaults"]["epochs"] == 10 and data["retrain"]["kind"] == "exact"


def test_metrics_lists_keys():
    res = invoke("metrics")
    assert res.exit_code == 0
    assert "mia_efficacy" in res.output and "unlearn_acc" in res.output


def test_schema_is_json_schema_with_the_top_level_keys():
    res = invoke("schema")
    assert res.exit_code == 0
    schema = json.loads(res.output)
    # a discriminated union over the registered tracks, one experiment class each
    assert schema["discriminator"]["propertyName"] == "track"
    assert set(schema["discriminator"]["mapping"]) >= {"classifier", "llm", "graph", "recsys"}
    clf = schema["$defs"]["ClassifierExperiment"]
    assert clf["type"] == "object" and clf["additionalProperties"] is False
    assert {"data", "model", "scenario", "train", "methods", "metrics", "seeds", "engine"} <= set(clf["properties"])
    assert "TrainConfig" in schema["$defs"]
    assert "llm" in schema["$defs"]["LLMExperiment"]["properties"]


@needs_report
def test_run_with_an_unknown_method_exits_2_with_a_suggestion():
    res = invoke("run", "--set", "methods=[finetun]", "--no-report")
    assert res.exit_code == 2
    assert "Did you mean 'finetune'?" in res.output
    assert "Traceback" not in res.output


@needs_report
def test_run_with_a_bad_override_exits_2(tmp_path):
    res = invoke("run", "--set", "train..lr=1", "--no-report")
    assert res.exit_code == 2 and "empty part" in res.output
    res = invoke("run", str(tmp_path / "missing.yaml"), "--no-report")
    assert res.exit_code == 2 and "config file not found" in res.output


@needs_report
def test_run_a_tiny_config_writes_results(tmp_path):
    cfg = {
        "name": "cli_tiny",
        "data": {"name": "digits", "train_subset": 200, "test_subset": 100},
        "model": {"name": "mlp", "hidden": [16]},
        "scenario": {"kind": "random", "fraction": 0.1},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "methods": [{"name": "finetune", "epochs": 1}],
        "seeds": [0],
        "engine": {"progress": False},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = invoke("run", str(path), "--no-report", "--set", "train.lr=5e-2")
    assert res.exit_code == 0, res.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("cli_tiny-")]
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == ["finetune", "original", "retrain"]
    assert all(r["status"] == "ok" for r in rows)
    assert yaml.safe_load((run_dir / "config.resolved.yaml").read_text())["train"]["lr"] == 0.05
    assert not (run_dir / "report.html").exists()  # --no-report


def test_cli_errors_keep_bracketed_text_and_fail_before_creating_a_run_folder(tmp_path):
    """Rich markup must not eat '[vision]' from install hints; bad input leaves no empty run folder behind."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    res = CliRunner().invoke(app, ["run", "cifar10_random10", "--set", f"data.root={tmp_path}/none",
                                   "--set", f"output_dir={tmp_path}/runs"])
    assert res.exit_code == 2 and "unlearnkit[vision]" in res.output
    assert not (tmp_path / "runs").exists()
    res = CliRunner().invoke(app, ["run", "--set", "engine.device=gpu", "--set", f"output_dir={tmp_path}/r2"])
    assert res.exit_code == 2 and "engine.device must be" in res.output
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    res = CliRunner().invoke(app, ["run", "--set", "seeds=1", "--set", "methods=[retrain]",
                                   "--set", f"output_dir={blocker}"])
    assert res.exit_code == 2 and "cannot write the run folder" in res.output
