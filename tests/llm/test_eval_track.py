"""The LLM track (bench/tracks/llm.py) and the LLM metrics on real (tiny) models: end to end through
``unlearnkit.bench.run_experiment``, the oracle row's forget quality (1.0 by construction), the target's (low),
resume, C05 (reference statistics keyed by weight hash), C07 (missing oracle), C46 (generation logs), bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnkit.bench import run_experiment
from unlearnkit.bench.tracks import TRACKS
from unlearnkit.bench import experiment as ExperimentConfig
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.llm_context import LLMEvalContext, LLMEvalSettings
from unlearnkit.metrics.tofu import GENERATION_LOG_KEYS, split_stats

pytest.importorskip("transformers")


TINY = {
    "data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
    "model": {"kind": "tiny", "vocab_size": 384, "hidden_size": 32, "layers": 2, "heads": 2, "max_len": 96},
    "train": {"epochs": 25, "batch_size": 16, "grad_accum": 1, "lr": 5e-3, "warmup_ratio": 0.05},
    "eval": {"max_items": 10, "max_new_tokens": 12, "batch_size": 32},
}


def _cfg(tmp_path, **over) -> ExperimentConfig:
    llm = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for k, v in over.items():
        llm[k] = {**llm.get(k, {}), **v}
    return ExperimentConfig(name="llm_fast", track="llm", llm=llm, seeds=[0],
                            methods=[{"name": "original"}],
                            engine={"progress": False, "threads": 1}, output_dir=str(tmp_path / "runs"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llm")
    cfg = _cfg(tmp)
    return cfg, run_experiment(cfg, write_report=True)


def test_run_rows_oracle_and_target(run):
    cfg, out = run
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {"retrain", "original"}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    oracle, target = rows["retrain"]["metrics"], rows["original"]["metrics"]
    # θ_r's forget-set truth ratios against themselves: KS of identical samples, p = 1 by construction
    assert oracle["forget_quality"] == 1.0 and oracle["forget_ks_stat"] == 0.0
    # θ_o memorised D_f: its truth ratios differ from θ_r's → low forget quality
    assert target["forget_quality"] < 0.05
    for r in (oracle, target):
        assert 0.0 < r["model_utility"] <= 1.0
        assert 0.0 <= r["mia.loss.auc"] <= 1.0
    # θ_o separates D_f (members) from the holdout better than θ_r (which saw neither)
    assert target["mia.loss.auc"] > oracle["mia.loss.auc"]
    assert target["forget.es"] > oracle["forget.es"]
    # the evaluation settings (truth-ratio variant, ROUGE profile) are recorded in every row (C03, C22)
    assert rows["original"]["scenario"]["eval"]["truth_ratio_variant"] == "tofu"
    assert "stemmed" in rows["original"]["scenario"]["eval"]["tofu_rouge"]
    # per-sample arrays let figures be recomputed: the KS test from the saved truth ratios
    from scipy.stats import ks_2samp

    z = np.load(out.run_dir / "per_sample" / "original-seed0.npz")
    got = ks_2samp(z["tofu.forget.truth_ratio"], z["tofu.forget.oracle_truth_ratio"]).pvalue
    assert got == pytest.approx(target["forget_quality"], rel=1e-12)
    assert (out.run_dir / "report.md").is_file()


def test_resume_skips_finished_rows(run):
    cfg, first = run
    again = run_experiment(cfg, write_report=False)
    assert again.new_rows == 0 and again.trained == []
    assert len(again.rows) == len(first.rows)


def test_c46_generation_logs_are_named_mappings(run):
    cfg, out = run
    z = np.load(out.run_dir / "per_sample" / "original-seed0.npz")
    n = len(z["tofu.forget.ids"])
    assert {f"tofu.forget.{k}" for k in ("question", "generation", "reference")} <= set(z.files)
    assert len(z["tofu.forget.generation"]) == n and z["tofu.forget.generation"].dtype.kind == "U"


# -- direct track / context tests (untrained models: seconds) ------------------------------------------------------
@pytest.fixture(scope="module")
def track(tmp_path_factory):
    cfg = _cfg(tmp_path_factory.mktemp("t"))
    tr = TRACKS.get("llm")(cfg, Engine(cfg.engine))
    task = tr.build_task()
    return tr, task, tr.new_model(task, 0), tr.new_model(task, 1)


def test_holdout_is_out_of_training_and_disjoint(track):
    tr, task, *_ = track
    hold = task.eval_sets["holdout"].ids
    assert len(hold) == len(task.forget)  # auto: as many persons as the forget split
    assert not np.intersect1d(hold, task.train_ids).size
    assert not np.intersect1d(hold, task.retain_ids).size
    assert task.scenario["n_test"] == len(hold)


def test_c07_missing_oracle_is_an_error(track):
    tr, task, m0, _ = track
    with pytest.raises(ConfigError, match="oracle"):
        tr.evaluate(task, m0, 0, {"original_model": m0}, ["tofu"])


def test_c05_reference_cache_keyed_by_weights(track):
    tr, task, m0, m1 = track
    ctx = tr.eval_context(task, m0, 0, {"oracle_model": m1, "original_model": m0})
    first = ctx.for_reference(m1, "tofu.forget", lambda c: split_stats(c, "forget"))
    m1b = type(m1)(m1.config)
    m1b.load_state_dict(m1.state_dict())
    with torch.no_grad():  # a different checkpoint under the same Python object name / role
        for p in m1b.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx2 = tr.eval_context(task, m0, 0, {"oracle_model": m1b, "original_model": m0})
    second = ctx2.for_reference(m1b, "tofu.forget", lambda c: split_stats(c, "forget"))
    assert not np.allclose(first.ratios(), second.ratios())  # recomputed, never the stale entry
    assert ctx2.for_reference(m1b, "tofu.forget", lambda c: 1 / 0) is second  # same weights → cached


def test_c46_stub_generator_log(track):
    tr, task, m0, m1 = track

    class StubCtx(LLMEvalContext):
        def generations(self, prompts, tag, **kw):
            return ["xyz"] * len(prompts)

    ctx = StubCtx(m0, tr.tokenizer, task, tr.engine, settings=LLMEvalSettings(max_items=2))
    st = split_stats(ctx, "retain")
    assert len(st.log) == 2
    for item in st.log:
        assert tuple(item) == GENERATION_LOG_KEYS
        assert item["generation"] == "xyz" and item["reference"] != "xyz" and item["question"].endswith("?")
    json.loads(json.dumps(st.log))  # a schema a reader can load back


def test_metrics_refuse_wrong_task(track):
    tr, task, m0, m1 = track
    ctx = tr.eval_context(task, m0, 0, {"oracle_model": m1, "original_model": m0})
    with pytest.raises(DataError, match="MUSE task"):
        METRICS.build("muse").compute(ctx)


def test_bad_input_errors(tmp_path):
    with pytest.raises((ConfigError, ValueError), match="holdout_persons"):
        _cfg(tmp_path, data={"holdout_persons": -1})
    cfg = _cfg(tmp_path, data={"holdout_persons": 9})
    tr = TRACKS.get("llm")(cfg, Engine(cfg.engine))
    with pytest.raises(DataError, match="holdout_persons"):
        tr.build_task()
    with pytest.raises((ConfigError, ValueError), match="llm.train"):
        _cfg(tmp_path, train={"epochs": 0})
    with pytest.raises((ConfigError, ValueError), match="hf"):
        _cfg(tmp_path, model={"kind": "hf"})
    cfg = _cfg(tmp_path, model={"kind": "hf", "path": str(tmp_path / "no_such_model")},
               data={"source": "synthetic"})
    tr = TRACKS.get("llm")(cfg, Engine(cfg.engine))
    with pytest.raises(ConfigError, match="does not exist"):
        tr.new_model(tr.build_task(), 0)


def test_mia_text_needs_a_holdout(tmp_path):
    cfg = _cfg(tmp_path, data={"holdout_persons": 0})
    tr = TRACKS.get("llm")(cfg, Engine(cfg.engine))
    task = tr.build_task()
    m = tr.new_model(task, 0)
    with pytest.raises(DataError, match="holdout"):
        tr.evaluate(task, m, 0, {"oracle_model": m, "original_model": m}, ["mia_text"])


def test_c21_metrics_score_in_eval_mode_and_restore_the_flag(track):
    from unlearnkit.models.llm import build_tiny_llama

    tr, task, m0, m1 = track
    drop = build_tiny_llama(tr.tokenizer, hidden_size=32, layers=2, heads=2, max_len=96, seed=3, dropout=0.5)
    drop.train()  # as a method leaves it: dropout active
    vals = []
    for _ in range(2):
        ctx = tr.eval_context(task, drop, 0, {"oracle_model": m1, "original_model": m0})
        vals.append(METRICS.build("extraction").compute(ctx).values | {
            "tr": float(split_stats(ctx, "forget").ratios().sum())})
    assert vals[0] == vals[1]  # deterministic: dropout off while scoring
    assert drop.training  # the caller's mode is restored
