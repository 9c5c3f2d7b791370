"""The NeurIPS-2023 score in reports: computed on request from a real run, cached, invalidated by new results."""

from __future__ import annotations

import json

from unlearnkit.bench import run_experiment
from unlearnkit.bench import load_config
from unlearnkit.report import compute_neurips, load_neurips, write_reports


def test_neurips_section_from_a_three_seed_run(tmp_path):
    cfg = load_config("digits_random10", [
        "engine.progress=false", f"output_dir={tmp_path}", "seeds=3", "data.train_subset=200", "data.test_subset=60",
        "train.epochs=3", "methods=[retrain, {name: finetune, epochs: 1}, {name: grad_ascent, epochs: 1}]",
    ])
    out = run_experiment(cfg, write_report=False)
    data = compute_neurips(out.run_dir)
    assert set(data["methods"]) == {"finetune", "grad_ascent", "original"}  # θ_o: the do-nothing score
    for s in data["methods"].values():
        assert 0.0 <= s["forget_quality"] <= 1.0
        assert abs(s["neurips_score"] - s["forget_quality"] * s["retain_ratio"] * s["test_ratio"]) < 1e-12
        assert s["n_models"] == 3 and s["n_forget"] == 20
    md, html = write_reports(out.run_dir)
    assert "## NeurIPS-2023 unlearning score" in md.read_text() and 'id="neurips"' in html.read_text()
    # new results invalidate the cache: the section disappears until recomputed
    with open(out.run_dir / "results.jsonl", "a") as f:
        f.write(json.dumps({"method": "x", "seed": 9, "status": "error", "metrics": {}}) + "\n")
    assert load_neurips(out.run_dir) is None
    md, _ = write_reports(out.run_dir)
    assert "NeurIPS-2023" not in md.read_text()


def test_neurips_with_too_few_seeds_reports_why(tmp_path):
    cfg = load_config("digits_random10", [
        "engine.progress=false", f"output_dir={tmp_path}", "seeds=1", "data.train_subset=100", "data.test_subset=40",
        "train.epochs=8", "methods=[retrain, {name: finetune, epochs: 1}]",
    ])
    out = run_experiment(cfg, write_report=False)
    data = compute_neurips(out.run_dir)
    assert "seeds: N" in data["methods"]["finetune"]["error"]
