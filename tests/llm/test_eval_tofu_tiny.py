"""The bundled ``configs/llm/tofu_tiny.yaml`` end to end (slow: minutes on 2 CPU cores): a row for every LLM method,
the oracle's forget quality 1.0, θ_o's (the ``original`` row, when that method is registered) low, model utility in
(0, 1], resume skips finished rows. The fast twin is tests/llm/test_eval_track.py."""

from __future__ import annotations

import pytest

from unlearnkit.bench import run_experiment
from unlearnkit.bench import load_config
from unlearnkit.methods import METHODS

pytest.importorskip("transformers")


@pytest.mark.slow
def test_tofu_tiny_end_to_end(tmp_path):
    cfg = load_config("configs/llm/tofu_tiny.yaml", [f"output_dir={tmp_path}"])
    out = run_experiment(cfg, write_report=True)
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {m.label for m in cfg.methods}
    bad = {k: r.get("error") for k, r in rows.items() if r["status"] not in ("ok", "diverged")}
    assert not bad, bad
    oracle = rows["retrain"]["metrics"]
    assert oracle["forget_quality"] == 1.0
    if "original" in rows:
        assert rows["original"]["metrics"]["forget_quality"] < 1e-3
        assert rows["original"]["metrics"]["mia.min_k.auc"] > oracle["mia.min_k.auc"]
    for label, r in rows.items():
        if r["status"] == "ok":
            assert 0.0 <= r["metrics"]["model_utility"] <= 1.0, label
            assert 0.0 <= r["metrics"]["forget_quality"] <= 1.0, label
    assert 0.0 < oracle["model_utility"] <= 1.0
    again = run_experiment(cfg, write_report=False)
    assert again.new_rows == 0 and again.trained == []
    assert "original" not in METHODS or "original" in rows
