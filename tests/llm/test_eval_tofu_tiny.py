"""The bundled ``configs/llm/tofu_tiny.yaml`` end to end (slow: about 5 minutes on 2 CPU cores): a row for every LLM
method, all ok; the oracle's forget quality 1.0 and θ_o's (the ``original`` row) low; every unlearning method moves θ_o
(lower probability and ROUGE of D_f's answers); model utility in [0, 1]; resume skips finished rows. The fast twin is
tests/llm/test_eval_track.py."""

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
    # every method ends ok with the bundled settings (a diverged run is a regression, not an accepted outcome)
    bad = {k: (r["status"], r.get("error")) for k, r in rows.items() if r["status"] != "ok"}
    assert not bad, bad
    oracle = rows["retrain"]["metrics"]
    assert oracle["forget_quality"] == 1.0
    assert 0.0 < oracle["model_utility"] <= 1.0
    assert "original" in rows  # the target row θ_o
    orig = rows["original"]["metrics"]
    assert orig["forget_quality"] < 1e-3
    assert orig["mia.min_k.auc"] > oracle["mia.min_k.auc"]
    assert orig["forget.prob"] > oracle["forget.prob"] + 0.5  # θ_o memorised D_f's answers, θ_r never saw them
    for label, r in rows.items():
        m = r["metrics"]
        assert 0.0 <= m["model_utility"] <= 1.0, label
        assert 0.0 <= m["forget_quality"] <= 1.0, label
        if label in ("retrain", "original"):
            continue
        # every unlearning method moved θ_o: a new model (an inference-time policy keeps θ_o's weights and acts on its
        # outputs) that is less sure of D_f's answers and recalls fewer of them
        policy = r.get("policy") or {}
        if not policy:
            assert r["checkpoint_sha256"] != rows["original"]["checkpoint_sha256"], label
        if not policy or "logits" in policy.get("affects", []):  # a generation-only policy leaves P(answer) alone
            assert m["forget.prob"] < orig["forget.prob"] - 0.05, (label, m["forget.prob"], orig["forget.prob"])
        assert m["forget.rouge"] < orig["forget.rouge"], (label, m["forget.rouge"], orig["forget.rouge"])
    again = run_experiment(cfg, write_report=False)
    assert again.new_rows == 0 and again.trained == []
    assert "original" in METHODS
