"""Every inference-time method through the runner on a tiny TOFU-style task: every TOFU / MIA metric is computed on
θ_u; a policy that changes only generations leaves every logit-based number exactly θ_o's (and the row lists those
metrics as unaffected), a policy that changes logits moves them; policies are saved with the weights and a resumed run
recomputes nothing; report.md shows what each policy can and cannot affect and its cost."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from unlearnkit.bench import experiment, run_experiment  # noqa: E402

TINY = {
    "data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
    "model": {"kind": "tiny", "vocab_size": 384, "hidden_size": 32, "layers": 2, "heads": 2, "max_len": 96},
    "train": {"epochs": 25, "batch_size": 16, "grad_accum": 1, "lr": 5e-3, "warmup_ratio": 0.05},
    "eval": {"max_items": 10, "max_new_tokens": 12, "batch_size": 32},
}
GENERATION_ONLY = ("guard", "alu", "key_space_detection")
LOGITS = ("uld", "eco", "icul", "neuron_adjust")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inference")
    methods = [{"name": "uld", "num_layers": 1, "epochs": 2, "batch_size": 8, "grad_accum": 1, "max_retain": 40},
               {"name": "eco", "gate_features": "lm", "search_steps": 2},
               {"name": "guard", "gate_features": "lm"}, {"name": "alu"}, {"name": "icul"},
               {"name": "key_space_detection"}, {"name": "neuron_adjust", "percent": 5.0}]
    cfg = experiment(name="inference", track="llm", llm=TINY, seeds=[0], methods=methods,
                     metrics=["tofu", "mia_text", "extraction", "abstention", "gate_accuracy", "fluency",
                              "skill_accuracy"],
                     engine={"progress": False, "threads": 1}, output_dir=str(tmp / "runs"))
    return cfg, run_experiment(cfg, write_report=True)


def _logit_keys(row):
    return [k for k in row["metrics"] if k.startswith("mia.") or k.endswith((".prob", ".truth_ratio", ".es", ".em"))
            or k in ("forget_quality", "forget_ks_stat")]


@pytest.mark.slow
def test_every_metric_on_every_inference_time_method(run):
    cfg, out = run
    rows = {r["method"]: r for r in out.rows}
    bad = {m: r.get("error") for m, r in rows.items() if r["status"] != "ok"}
    assert not bad, bad
    theta_o = rows["original"]
    for m in GENERATION_ONLY + LOGITS:
        r = rows[m]
        assert set(theta_o["metrics"]) <= set(r["metrics"])  # every metric, every key
        assert r["checkpoint_sha256"] == theta_o["checkpoint_sha256"]  # weights untouched
        assert r["cost"]["query_ms_per_token"] > 0
    keys = _logit_keys(theta_o)
    assert len(keys) >= 10
    for m in GENERATION_ONLY:
        r = rows[m]
        for k in keys:
            a, b = r["metrics"][k], theta_o["metrics"][k]
            assert a == b or (np.isnan(a) and np.isnan(b)), (m, k)
        assert r["policy"]["affects"] == ["generations"]
        assert {"mia_text", "extraction"} <= set(r["policy"]["metrics_unaffected"])
    for m in LOGITS:
        r = rows[m]
        assert "logits" in r["policy"]["affects"] and r["policy"]["metrics_unaffected"] == []
        assert any(r["metrics"][k] != theta_o["metrics"][k] for k in keys), m
    # the abstaining policies abstain on D_f, and the gate metric reads the gated ones
    assert rows["key_space_detection"]["metrics"]["abstain.forget"] == 1.0
    assert rows["alu"]["metrics"]["abstain.forget"] > 0.5
    assert rows["original"]["metrics"]["abstain.forget"] == 0.0
    for m in ("eco", "guard"):
        assert rows[m]["metrics"]["gate.tpr"] >= 0.8 and rows[m]["metrics"]["gate.fpr"] <= 0.2
        assert rows[m]["notes"]["gate_features"] == "lm"
    assert np.isnan(rows["uld"]["metrics"]["gate.tpr"])


@pytest.mark.slow
def test_resume_reloads_every_policy_and_the_report_shows_them(run):
    cfg, out = run
    again = run_experiment(cfg, write_report=True)
    assert again.new_rows == 0
    md = (out.run_dir / "report.md").read_text()
    assert "## Inference-time policies" in md
    section = md.split("## Inference-time policies", 1)[1].splitlines()
    for m in GENERATION_ONLY + LOGITS:
        line = next(x for x in section if x.startswith(f"| {m} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert (cells[2] == "generations") == (m in GENERATION_ONLY)
        assert ("mia_text" in cells[3]) == (m in GENERATION_ONLY)
        assert float(cells[4]) > 0 and float(cells[6]) > 0  # cost and the ratio to θ_o's
    assert 'id="policies"' in (out.run_dir / "report.html").read_text()
