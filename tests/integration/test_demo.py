"""The README's main job, as a new user runs it: the default experiment end to end through the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from unlearnkit.cli import app


def test_default_demo_oracle_forgets_like_unseen_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", "--set", "engine.progress=false", "--set", f"output_dir={tmp_path}/runs"])
    assert res.exit_code == 0, res.output
    assert "oracle" in res.output and "finetune" in res.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("digits_random10-")]
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    oracle = [r for r in rows if r["is_oracle"]]
    assert [r["seed"] for r in oracle] == [0, 1, 2]
    methods = {r["method"] for r in rows if not r["is_oracle"]}
    assert {"finetune", "grad_ascent", "random_label"} <= methods
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows if r["status"] != "ok"]
    # random forgetting: the oracle never saw D_f, so its forget accuracy is close to its test accuracy
    ua = sum(r["metrics"]["unlearn_acc"] for r in oracle) / 3
    test_err = sum(100 - r["metrics"]["test_acc"] for r in oracle) / 3
    assert abs(ua - test_err) <= 3.0, (ua, test_err)
    assert (run_dir / "report.html").is_file() and (run_dir / "report.md").is_file()
    # a second identical run resumes: nothing new, cached models untouched
    again = CliRunner().invoke(app, ["run", "--set", "engine.progress=false", "--set", f"output_dir={tmp_path}/runs"])
    assert again.exit_code == 0, again.output
    assert "nothing new to run" in again.output
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == len(rows)
