"""The report's summary table takes its columns from the keys each track's rows carry."""

from __future__ import annotations

from unlearnkit.report import summarize
from unlearnkit.report._common import cell, columns_for


def rows(metrics_oracle: dict, metrics_method: dict) -> list[dict]:
    base = {"schema": "unlearnkit.result/1", "status": "ok", "error": None}
    return [base | {"method": "retrain", "method_name": "retrain", "seed": s, "is_oracle": True,
                    "metrics": metrics_oracle} for s in (0, 1)] + \
           [base | {"method": "m", "method_name": "m", "seed": s, "is_oracle": False,
                    "metrics": {k: v + s for k, v in metrics_method.items()}} for s in (0, 1)]


def headers(summary) -> list[str]:
    return [c.header for c in columns_for(summary)]


def test_classifier_columns_unchanged():
    m = {"unlearn_acc": 3.0, "retain_acc": 99.0, "test_acc": 97.0, "mia_efficacy": 10.0, "unlearn_seconds": 1.0}
    assert headers(summarize(rows(m, m))) == ["UA", "RA", "TA", "MIA-Eff.", "Avg. Gap", "RTE (s)"]


def test_graph_columns():
    m = {"test_auroc": 77.0, "forget_auroc": 59.5, "mi_member_prob": 49.0, "oracle_tv": 0.0, "avg_gap": 0.0,
         "unlearn_seconds": 2.0}
    s = summarize(rows(m, m | {"avg_gap": 3.0}))
    assert headers(s) == ["Test AUROC", "Forget AUROC", "MI member prob.", "TV to oracle", "Avg. Gap", "RTE (s)"]
    method = next(x for x in s if x.method == "m")
    gap_col = columns_for(s)[4]
    assert cell(method, gap_col) == "3.50 ± 0.71"  # seeds 0 and 1: 3.0 and 4.0 → mean 3.5, sample std 0.707


def test_recsys_columns_follow_k():
    m = {"recall@10": 0.2, "ndcg@10": 0.1, "forget_recall@10": 0.05, "forget_ndcg@10": 0.03, "forget_auc": 0.5,
         "unlearn_seconds": 1.0}
    assert headers(summarize(rows(m, m))) == ["Recall@10", "NDCG@10", "Forget Recall@10", "Forget NDCG@10",
                                              "Forget AUC", "RTE (s)"]


def test_llm_columns():
    m = {"forget_quality": 1.0, "model_utility": 0.5, "forget.rouge": 0.3, "mia.min_k.auc": 0.5,
         "unlearn_seconds": 1.0}
    assert headers(summarize(rows(m, m))) == ["Forget quality", "Model utility", "Forget ROUGE-L",
                                              "MIA AUC (Min-K%)", "RTE (s)"]


def _track_row(method: str, track: str, oracle: bool) -> dict:
    return {"cached_model": False, "checkpoint_sha256": None, "config_sha256": "0" * 64, "error": None,
            "finished_at": "2026-01-01T00:00:00Z", "is_oracle": oracle, "lineage_key": "x", "method": method,
            "method_name": method, "metrics": {"forget_quality": 1.0, "model_utility": 0.5, "unlearn_seconds": 1.0},
            "params": {}, "run": "r", "scenario": "forget10", "schema": "unlearnkit.result/1", "seed": 0, "started_at":
            "2026-01-01T00:00:00Z", "status": "ok", "track": track, "versions": {}}


def test_neurips_on_a_non_classifier_run_is_a_clear_error(tmp_path):
    """`unlearnkit report RUN --neurips` on an LLM run: exit 2 with a one-line reason, no neurips.json written."""
    import json

    from typer.testing import CliRunner

    from unlearnkit.cli import app

    rows = [_track_row("retrain", "llm", True), _track_row("ga", "llm", False)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    r = CliRunner().invoke(app, ["report", str(tmp_path), "--neurips"])
    assert r.exit_code == 2, r.output
    assert "classifier" in r.output and "llm" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "neurips.json").exists()
