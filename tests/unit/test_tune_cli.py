"""`unlearnkit tune` on the command line: a tiny search, the printed fragment, the report section, clear errors."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def invoke(*args: str):
    return CliRunner(env=ENV).invoke(app, list(args))


def tiny_yaml(tmp_path) -> str:
    cfg = {
        "name": "cli_tune",
        "data": {"name": "digits", "train_subset": 200, "test_subset": 100},
        "model": {"name": "mlp", "hidden": [16]},
        "scenario": {"kind": "random", "fraction": 0.1},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "methods": ["retrain", {"name": "grad_ascent", "epochs": 1}, {"name": "finetune", "epochs": 1}],
        "seeds": [0],
        "engine": {"progress": False},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_tune_cli_writes_the_fragment_that_run_accepts_and_the_report_shows_the_search(tmp_path):
    pytest.importorskip("optuna")
    path = tiny_yaml(tmp_path)
    res = invoke("tune", path, "--method", "grad_ascent", "--trials", "2", "--set", "engine.threads=1")
    assert res.exit_code == 0, res.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("cli_tune-")]
    frag = run_dir / "tune" / "tuned.yaml"
    assert frag.is_file() and "extends:" in frag.read_text()
    assert frag.read_text() in res.stdout  # printed
    best = json.loads((run_dir / "tune" / "grad_ascent.json").read_text())["best"]["searched"]
    res = invoke("run", str(frag), "--no-report")
    assert res.exit_code == 0, res.output
    (tuned_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("cli_tune-") and p != run_dir]
    rows = [json.loads(x) for x in (tuned_dir / "results.jsonl").read_text().splitlines()]
    ga = next(r for r in rows if r["method"] == "grad_ascent")
    assert ga["params"]["lr"] == pytest.approx(best["lr"], rel=1e-3) and ga["params"]["epochs"] == best["epochs"]
    res = invoke("run", path, "--set", "engine.threads=1")  # the tuned-for run folder: its report shows the search
    assert res.exit_code == 0, res.output
    md = (run_dir / "report.md").read_text()
    assert "## Hyperparameter search" in md and "grad_ascent" in md.split("## Hyperparameter search")[1]
    assert 'id="tune"' in (run_dir / "report.html").read_text()


def test_tune_without_optuna_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    res = invoke("tune", tiny_yaml(tmp_path), "--trials", "1")
    assert res.exit_code == 2
    assert "pip install 'unlearnkit[tune]'" in res.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_tune_refuses_a_staged_scenario_before_training(tmp_path):
    pytest.importorskip("optuna")
    res = invoke("tune", tiny_yaml(tmp_path), "--trials", "1", "--set", "scenario.kind=sequential",
                 "--set", "scenario.requests=2")
    assert res.exit_code == 2, res.output
    assert "plain scenario" in res.output or "several forget requests" in res.output
