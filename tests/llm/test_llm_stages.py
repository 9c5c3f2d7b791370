"""MUSE scalability / sustainability scenarios of the LLM track (issue 6; Shi et al. 2024, arXiv:2407.06460 §5).

Split invariants (no training), then tiny end-to-end runs through the runner: one row per request, request i starts
from the method's output of request i − 1, the oracle of request i never saw ids removed so far, resume from
checkpoints; scalability rows per forget-set size; the report's curves over requests / sizes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from unlearnkit.bench import run_experiment
from unlearnkit.bench.tracks import TRACKS
from unlearnkit.bench.tracks.llm import LLMTrack
from unlearnkit.bench import experiment as ExperimentConfig
from unlearnkit.engine.checkpoint import ModelCache, state_sha256
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.report.figures import scalability_section, sequential_section
from unlearnkit.report.summary import final_stage_rows

pytest.importorskip("transformers")

TINY = {
    "data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
    "model": {"kind": "tiny", "vocab_size": 320, "hidden_size": 16, "layers": 1, "heads": 2, "max_len": 64},
    "train": {"epochs": 2, "batch_size": 32, "grad_accum": 1, "lr": 5e-3, "max_len": 64},
    "eval": {"max_items": 6, "max_new_tokens": 4, "batch_size": 64},
}
GA = {"name": "ga", "epochs": 1, "lr": 1e-3, "batch_size": 4, "grad_accum": 1}


def _cfg(tmp_path, scenario: dict, methods=None, **over) -> ExperimentConfig:
    llm = {**{k: dict(v) for k, v in TINY.items()}, "scenario": scenario, **over}
    return ExperimentConfig(name="llm_stages", track="llm", llm=llm, seeds=[0], metrics=["tofu"],
                            methods=methods if methods is not None else [{"name": "original"}, GA],
                            engine={"progress": False, "threads": 1}, output_dir=str(tmp_path / "runs"),
                            cache_dir=str(tmp_path / "cache"))


def _track(cfg):
    return TRACKS.get("llm")(cfg, Engine(cfg.engine))


# -- splits (no training) ------------------------------------------------------------------------------------------
def test_sequential_stages_partition_the_forget_set(tmp_path):
    tr = _track(_cfg(tmp_path, {"kind": "sequential", "requests": 3}))
    task = tr.build_task()
    stages = tr.stages(task)
    assert [dict(s.key) for s in stages] == [{"request": 0}, {"request": 1}, {"request": 2}]
    assert all(s.chained for s in stages)
    folds = [s.task.forget_ids for s in stages]
    assert sorted(len(f) for f in folds) == [3, 3, 4]  # 10 forget items → array_split sizes 4, 3, 3
    assert np.array_equal(np.sort(np.concatenate(folds)), np.sort(task.forget_ids))  # disjoint, cover D_f
    removed = np.zeros(0, dtype=np.int64)
    for i, s in enumerate(stages):
        cum = np.union1d(removed, folds[i])
        # request i's input data: D minus everything removed before; its D_r (= the oracle's data): D minus R_0..R_i
        assert np.array_equal(np.sort(s.task.train_ids), np.setdiff1d(task.train_ids, removed))
        assert np.array_equal(np.sort(s.task.retain_ids), np.setdiff1d(task.train_ids, cum))
        assert not np.intersect1d(s.task.retain_ids, cum).size
        # metrics see the cumulative forget set, also in the TOFU forget evaluation set
        assert np.array_equal(np.sort(s.evaluation.forget_ids), cum)
        assert np.array_equal(np.sort(s.evaluation.eval_sets["forget"].ids), cum)
        assert s.evaluation.eval_sets["holdout"] is task.eval_sets["holdout"]
        assert s.evaluation.scenario["n_removed"] == len(cum) and s.evaluation.scenario["kind"] == "sequential"
        assert s.evaluation.scenario["protocol"] == "tofu" and s.evaluation.scenario["n_requests"] == 3
        removed = cum
    assert task.scenario["kind"] == "sequential" and task.scenario["protocol"] == "tofu"


def test_scalability_stages_are_nested_and_independent(tmp_path):
    tr = _track(_cfg(tmp_path, {"kind": "scalability", "forget_fractions": [0.25, 0.5, 1.0]}))
    task = tr.build_task()
    stages = tr.stages(task)
    assert [dict(s.key) for s in stages] == [{"forget_size": 3}, {"forget_size": 5}, {"forget_size": 10}]
    assert not any(s.chained for s in stages)
    prev = np.zeros(0, dtype=np.int64)
    for s in stages:
        f = s.task.forget_ids
        assert np.isin(prev, f).all()  # nested
        assert np.array_equal(s.task.train_ids, task.train_ids)  # each from θ_o's D
        assert np.array_equal(np.sort(s.task.retain_ids), np.setdiff1d(task.train_ids, f))
        assert np.array_equal(np.sort(s.task.eval_sets["forget"].ids), np.sort(f))
        assert s.task.scenario["protocol"] == "tofu" and s.task.scenario["forget_size"] == len(f)
        prev = f


@pytest.mark.parametrize("scenario, match", [
    ({"kind": "sequential"}, "requests"),
    ({"kind": "sequential", "requests": 1}, "greater than or equal to 2"),
    ({"kind": "scalability", "forget_fractions": [0.5, 0.5]}, "strictly increasing"),
    ({"kind": "scalability", "forget_fractions": [0.0, 1.0]}, "strictly increasing"),
    ({"kind": "single", "requests": 3}, "kind sequential"),
])
def test_bad_scenario_config(tmp_path, scenario, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        _track(_cfg(tmp_path, scenario))


def test_too_many_requests_or_repeated_sizes_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="into 11 requests"):
        _track(_cfg(tmp_path, {"kind": "sequential", "requests": 11})).build_task()
    with pytest.raises(DataError, match="repeated sizes"):
        _track(_cfg(tmp_path, {"kind": "scalability", "forget_fractions": [0.91, 0.95]})).build_task()


def test_muse_sequential_keeps_whole_eval_material():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "fixtures" / "muse_tiny"
    cfg = ExperimentConfig(name="m", track="llm", metrics=["muse"], methods=[{"name": "original"}],
                           llm={"data": {"source": "muse", "root": str(root), "chunk_chars": 160},
                                "model": TINY["model"], "scenario": {"kind": "sequential", "requests": 2}})
    tr = _track(cfg)
    task = tr.build_task()
    stages = tr.stages(task)
    assert len(stages) == 2
    a, b = (s.task.forget_ids for s in stages)
    assert not np.intersect1d(a, b).size and np.array_equal(np.sort(np.concatenate([a, b])), np.sort(task.forget_ids))
    assert a.max() < b.min() or np.all(np.isin(task.forget_ids[: len(a)], a))  # contiguous corpus folds, in order
    for s in stages:  # VerbMem / KnowMem / PrivLeak are not aligned with chunks: kept whole (MUSE's plots)
        assert s.evaluation.scenario["forget_eval"] == "full"
        assert s.evaluation.eval_sets == task.eval_sets and s.evaluation.extras is task.extras


def test_bundled_sequential_config():
    from unlearnkit.bench import load_config

    cfg = load_config("configs/llm/tofu_tiny_sequential.yaml")
    assert cfg.track == "llm" and cfg.methods[0].name == "retrain"
    tr = _track(cfg)
    task = tr.build_task()
    stages = tr.stages(task)
    assert [dict(s.key) for s in stages] == [{"request": i} for i in range(4)]
    # one whole person per request (forget10 of 40 persons = 4 persons, person-major order)
    for s in stages:
        assert len({it.subject for it in s.task.forget}) == 1 and len(s.task.forget) == 10


# -- end to end: sequential ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seq_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seq")
    cfg = _cfg(tmp, {"kind": "sequential", "requests": 2})
    inputs: list[tuple[int, str, str]] = []  # (request, method, SHA-256 of the input model)
    orig = LLMTrack.unlearn

    def spy(self, task, method, model, ctx):
        inputs.append((task.scenario["request"], type(method).__name__, state_sha256(model)))
        return orig(self, task, method, model, ctx)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LLMTrack, "unlearn", spy)
        out = run_experiment(cfg, write_report=True)
    return cfg, out, inputs, tmp


def test_sequential_rows_per_request(seq_run):
    cfg, out, _, _ = seq_run
    assert all(r["status"] == "ok" for r in out.rows), [r.get("error") for r in out.rows]
    got = sorted((r["method"], r["request"]) for r in out.rows)
    assert got == [(m, i) for m in ("ga", "original", "retrain") for i in (0, 1)]
    for r in out.rows:
        assert r["scenario"]["request"] == r["request"] and r["scenario"]["n_removed"] == 5 * (r["request"] + 1)
        assert r["scenario"]["forget_eval"] == "stage"
    # the oracle's forget-set truth ratios against themselves: p = 1 at every request
    assert all(r["metrics"]["forget_quality"] == 1.0 for r in out.rows if r["is_oracle"])


def test_sequential_chains_previous_output(seq_run):
    _, out, inputs, _ = seq_run
    rows = {(r["method"], r["request"]): r for r in out.rows}
    ga_inputs = {req: sha for req, name, sha in inputs if name == "GradientAscent"}
    assert set(ga_inputs) == {0, 1} and len(inputs) == 2  # θ_o's own row ("original") runs no method
    assert rows[("original", 0)]["role"] == "original"
    assert rows[("original", 0)]["checkpoint_sha256"] == rows[("original", 1)]["checkpoint_sha256"]
    assert ga_inputs[0] == rows[("ga", 0)]["original_sha256"]  # request 0 starts from θ_o
    assert ga_inputs[1] == rows[("ga", 0)]["checkpoint_sha256"]  # request 1 from request 0's output
    assert ga_inputs[1] != ga_inputs[0]


def test_sequential_oracles_never_saw_removed_ids(seq_run):
    cfg, out, _, tmp = seq_run
    tr = _track(cfg)
    task = tr.build_task()
    stages = tr.stages(task)
    cache = ModelCache(tmp / "cache")
    oracles = {r["request"]: r for r in out.rows if r["is_oracle"]}
    assert oracles[0]["lineage_key"] != oracles[1]["lineage_key"]  # one oracle per request
    removed = np.zeros(0, dtype=np.int64)
    for i, st in enumerate(stages):
        removed = np.union1d(removed, st.task.forget_ids)
        model = tr.new_model(task, 0)
        _, extras = cache.load(oracles[i]["lineage_key"], model)
        seen = extras["trained_ids"].numpy()
        assert not np.intersect1d(seen, removed).size
        assert np.array_equal(np.sort(seen), np.setdiff1d(task.train_ids, removed))
        assert state_sha256(model) == oracles[i]["checkpoint_sha256"]


def test_sequential_resume_from_checkpoint(seq_run):
    cfg, out, _, _ = seq_run
    again = run_experiment(cfg, write_report=False)
    assert again.new_rows == 0 and again.trained == []
    # drop ga's request-1 row: the rerun continues from request 0's checkpoint (not from θ_o)
    results = out.run_dir / "results.jsonl"
    lines = results.read_text().splitlines()
    keep = [ln for ln in lines if not (json.loads(ln)["method"] == "ga" and json.loads(ln)["request"] == 1)]
    assert len(keep) == len(lines) - 1
    results.write_text("\n".join(keep) + "\n")
    first = {(r["method"], r["request"]): r for r in out.rows}
    inputs = []
    orig = LLMTrack.unlearn

    def spy(self, task, method, model, ctx):
        inputs.append((task.scenario["request"], state_sha256(model)))
        return orig(self, task, method, model, ctx)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LLMTrack, "unlearn", spy)
        third = run_experiment(cfg, write_report=False)
    assert third.new_rows == 1 and third.trained == []
    assert inputs == [(1, first[("ga", 0)]["checkpoint_sha256"])]
    redo = [r for r in third.rows if r["method"] == "ga" and r["request"] == 1]
    assert redo[-1]["status"] == "ok"
    # deterministic on CPU: the same request-1 model as the first run
    assert redo[-1]["checkpoint_sha256"] == first[("ga", 1)]["checkpoint_sha256"]


def test_sequential_report_has_curves(seq_run):
    import json

    from plotread import assert_plots_rows

    _, out, _, _ = seq_run
    html = (out.run_dir / "report.html").read_text()
    rows = [json.loads(x) for x in (out.run_dir / "results.jsonl").read_text().splitlines() if x.strip()]
    for key in ("forget_quality", "model_utility"):  # 3 methods × 2 requests
        assert assert_plots_rows(html, f"sequential-{key}", rows, "request", key) == 6, key
    assert any(r["metrics"]["forget_quality"] > 0 for r in rows)  # a flat-at-0 curve cannot match


# -- end to end: scalability ---------------------------------------------------------------------------------------
def test_scalability_run_rows_and_oracles(tmp_path):
    cfg = _cfg(tmp_path, {"kind": "scalability", "forget_fractions": [0.5, 1.0]}, methods=[{"name": "original"}])
    out = run_experiment(cfg, write_report=False)
    assert all(r["status"] == "ok" for r in out.rows), [r.get("error") for r in out.rows]
    assert sorted((r["method"], r["forget_size"]) for r in out.rows) == [
        ("original", 5), ("original", 10), ("retrain", 5), ("retrain", 10)]
    assert out.trained.count("oracle") == 2 and out.trained.count("original") == 1
    rows = {(r["method"], r["forget_size"]): r for r in out.rows}
    # every stage unlearns from θ_o (the no-op "original" returns it unchanged)
    assert rows[("original", 5)]["checkpoint_sha256"] == rows[("original", 10)]["checkpoint_sha256"] \
        == rows[("original", 5)]["original_sha256"]
    assert rows[("retrain", 5)]["lineage_key"] != rows[("retrain", 10)]["lineage_key"]
    assert [r["forget_size"] for r in final_stage_rows(out.rows)] == [10, 10]


# -- report helpers on hand-made rows --------------------------------------------------------------------------------
def _row(method, dim, x, fq, oracle=False):
    return {"method": method, "seed": 0, "is_oracle": oracle, "status": "ok", dim: x,
            "metrics": {"forget_quality": fq, "model_utility": 0.5}}


def test_report_curves_over_sizes_and_requests():
    rows = [_row("ga", "forget_size", 5, 0.2), _row("ga", "forget_size", 10, 0.1),
            _row("retrain", "forget_size", 5, 1.0, True), _row("retrain", "forget_size", 10, 1.0, True)]
    from plotread import assert_plots_rows, plotted_series, figure_svg

    html = scalability_section(rows, {"ga": "#123456"})
    assert "forget-set size" in html
    # the values drawn are the rows' values: ga 0.2 → 0.1, the oracle at 1.0 (hand-made rows above)
    assert assert_plots_rows(html, "scalability-forget_quality", rows, "forget_size", "forget_quality") == 4
    got = plotted_series(figure_svg(html, "scalability-forget_quality"))
    assert [round(y, 3) for _, y in sorted(got["ga"])] == [0.2, 0.1]
    assert [round(y, 3) for _, y in sorted(got["retrain (oracle)"])] == [1.0, 1.0]
    assert 'id="scalability-verbmem_f"' not in html  # metrics absent from the rows are not drawn
    assert sequential_section(rows, {}) == ""  # no request rows
    assert [r["forget_size"] for r in final_stage_rows(rows)] == [10, 10]
    seq = [_row("ga", "request", 0, 0.3), _row("ga", "request", 1, 0.2)]
    got = plotted_series(figure_svg(sequential_section(seq, {}), "sequential-forget_quality"))
    assert [(round(x, 3), round(y, 3)) for x, y in sorted(got["ga"])] == [(0.0, 0.3), (1.0, 0.2)]
