"""Results a user can trust (issue 13): every method row carries a verdict against θ_r and θ_o; θ_o is checked
before its unlearning is measured (an untrained target is refused, a target that memorised nothing is reported);
a method's declared needs follow its settings. The verdict rules are checked on hand-made values, then end to end."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from unlearnkit.bench import Runner, load_config
from unlearnkit.bench.tracks.classifier import check_requirements, classifier_verdict_spec
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS
from unlearnkit.report.summary import summarize
from unlearnkit.verdict import VerdictSpec, judge, preflight

SPEC = VerdictSpec(forget={"unlearn_acc": 1, "mia_efficacy": 1}, utility={"retain_acc": 10.0, "test_acc": 10.0},
                   n={"unlearn_acc": 135, "mia_efficacy": 135, "retain_acc": 1213, "test_acc": 449})
ORACLE = {"unlearn_acc": 4.0, "mia_efficacy": 10.0, "retain_acc": 100.0, "test_acc": 98.0}
THETA_O = {"unlearn_acc": 0.0, "mia_efficacy": 0.0, "retain_acc": 100.0, "test_acc": 97.8}


def test_tolerance_is_twice_the_binomial_standard_error_with_a_floor():
    # p = 4 % on 135 samples: 2·100·sqrt(0.04·0.96/135) = 3.373 percentage points
    assert SPEC.tolerance("unlearn_acc", 4.0) == pytest.approx(2 * 100 * math.sqrt(0.04 * 0.96 / 135), rel=1e-12)
    # p = 100 % is noisy too (rule of succession): 2·100·sqrt(p(1−p)/n) with p = 1 − 1/(n+2)
    p = 1 - 1 / 1215
    assert SPEC.tolerance("retain_acc", 100.0) == pytest.approx(max(0.5, 200 * math.sqrt(p * (1 - p) / 1213)))
    assert SPEC.tolerance("no_n_key", 50.0) == 0.5  # the floor


@pytest.mark.parametrize("metrics, verdict", [
    ({**THETA_O}, "inert"),                                                       # θ_o's numbers
    ({"unlearn_acc": 3.0, "mia_efficacy": 9.0, "retain_acc": 99.8, "test_acc": 97.5}, "ok"),
    ({"unlearn_acc": 30.0, "mia_efficacy": 60.0, "retain_acc": 99.0, "test_acc": 95.0}, "over-unlearned"),
    ({"unlearn_acc": 0.5, "mia_efficacy": 1.0, "retain_acc": 100.0, "test_acc": 97.8}, "inert"),  # within noise of θ_o
    ({"unlearn_acc": 1.0, "mia_efficacy": 7.0, "retain_acc": 100.0, "test_acc": 97.8}, "under-unlearned"),
    ({"unlearn_acc": 88.0, "mia_efficacy": 10.0, "retain_acc": 12.0, "test_acc": 11.0}, "utility-collapse"),
])
def test_judge_on_hand_made_values(metrics, verdict):
    got, why = judge(metrics, ORACLE, THETA_O, SPEC)
    assert got == verdict, why


def test_judge_special_cases():
    # bit-identical weights are inert, unless an inference-time policy changes the outputs
    assert judge(ORACLE, ORACLE, THETA_O, SPEC, same_weights_as_original=True)[0] == "inert"
    assert judge(ORACLE, ORACLE, THETA_O, SPEC, same_weights_as_original=True, has_policy=True)[0] == "ok"
    # an unconverged solver is flagged whatever the numbers
    notes = {"solver": {"name": "lissa", "converged": False, "residual": 0.2, "tolerance": 0.01, "iterations": 5}}
    assert judge(ORACLE, ORACLE, THETA_O, SPEC, notes=notes)[0] == "unconverged"
    # nothing to do (θ_o already at θ_r within noise): doing little is ok, not inert
    assert judge(ORACLE, ORACLE, ORACLE, SPEC)[0] == "ok"
    # a larger tolerance from the seed spread turns "past the oracle" into noise
    over = {**ORACLE, "unlearn_acc": 9.0}
    assert judge(over, ORACLE, THETA_O, SPEC)[0] == "over-unlearned"
    assert judge(over, ORACLE, THETA_O, SPEC, tolerance={"unlearn_acc": 6.0})[0] == "ok"
    # past θ_r by less than the noise, away from θ_o: the distance is closed (not "under-unlearned": before this
    # fix 1 − |u − r| / |o − r| counted the overshoot as distance left, e.g. a generator's target share 1.0 % with
    # θ_r at 2.5 % and θ_o at 5.0 % read "closed 40 %")
    spec = VerdictSpec(forget={"target_share": -1}, n={"target_share": 400})
    assert judge({"target_share": 1.0}, {"target_share": 2.5}, {"target_share": 5.0}, spec)[0] == "ok"
    assert judge({"target_share": 4.5}, {"target_share": 2.5}, {"target_share": 5.0}, spec)[0] != "ok"


def test_preflight_refuses_a_chance_level_target_and_warns_when_nothing_is_memorised():
    _, refusal = preflight(SPEC, {"retain_acc": 11.0, "test_acc": 10.5, **{k: 0.0 for k in SPEC.forget}}, ORACLE)
    assert refusal and "chance level" in refusal
    # θ_o fits like θ_r on D_f: nothing measurable to unlearn; θ_o's forget accuracy no higher than its test accuracy
    warnings, refusal = preflight(SPEC, {**ORACLE, "forget_acc": 96.0}, ORACLE, ("forget_acc", "test_acc"))
    assert refusal is None and len(warnings) == 2
    assert "nothing measurable to unlearn" in warnings[0] and "not memorised" in warnings[1]
    warnings, refusal = preflight(SPEC, {**THETA_O, "forget_acc": 100.0}, ORACLE, ("forget_acc", "test_acc"))
    assert warnings == [] and refusal is None


def test_preflight_gives_each_track_its_own_remedy():
    """The "nothing measurable" warning suggests what fits the track (a class scenario means nothing to an LLM run
    on RWKU targets the base model already knew); the advice survives the spec's JSON round trip."""
    from unlearnkit.bench.tracks.llm import LLMTrack

    same = {**ORACLE, "forget_acc": 96.0}
    assert "class scenario" in preflight(SPEC, same, ORACLE)[0][0]
    llm_spec = LLMTrack.verdict_spec(None, None)
    vals = {"rwku.forget.fb": 0.67, "rwku.forget.qa": 0.67}
    warning = preflight(llm_spec, vals, vals)[0][0]
    assert "class scenario" not in warning and "θ_r keeps it too" in warning
    assert VerdictSpec.from_json(llm_spec.to_json()).advice == llm_spec.advice


# -- end to end ----------------------------------------------------------------------------------------------------
def _cfg(tmp_path, **over):
    data = {"name": "trust", "data": {"name": "digits", "train_subset": 300, "test_subset": 100},
            "model": {"name": "mlp", "hidden": [32]}, "scenario": {"kind": "random", "fraction": 0.1},
            "train": {"epochs": 12, "batch_size": 32, "lr": 0.1, "scheduler": "none"},
            "metrics": ["accuracy", "mia_efficacy"], "seeds": [0], "engine": {"progress": False, "threads": 1},
            "output_dir": str(tmp_path)}
    data.update(over)
    return load_config(data=data)


def test_rows_carry_verdicts_and_the_report_shows_them(tmp_path):
    cfg = _cfg(tmp_path, methods=[{"name": "grad_ascent", "epochs": 1, "lr": 1e-9, "label": "ga_noop"},
                                  {"name": "grad_ascent", "epochs": 10, "lr": 0.5, "label": "ga_hard"}])
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    rows = {r["method"]: r for r in out.rows}
    assert rows["retrain"]["verdict"] == "reference" and rows["original"]["verdict"] == "inert"
    assert rows["ga_noop"]["verdict"] == "inert"  # lr 1e-9: θ_o's numbers
    assert rows["ga_hard"]["verdict"] in ("over-unlearned", "utility-collapse")
    assert all(r["verdict_spec"]["forget"] == {"unlearn_acc": 1, "mia_efficacy": 1} for r in out.rows)
    summary = {s.method: s for s in summarize(out.rows)}
    assert summary["ga_noop"].verdict == "inert" and summary["retrain"].verdict == "reference"
    from unlearnkit.report import write_reports

    md, html = write_reports(out.run_dir)
    text = md.read_text()
    assert "| verdict |" in text.replace("| seeds | verdict |", "| verdict |") and "inert" in text
    assert 'class="verdict v-inert"' in html.read_text()


def test_an_untrained_target_is_refused_before_any_method_runs(tmp_path):
    """θ_o from a factory whose last layer is zero and frozen: every logit is 0, it predicts class 0 everywhere."""
    def factory(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        nn.init.zeros_(m[3].weight)
        nn.init.zeros_(m[3].bias)
        m[3].requires_grad_(False)
        return m

    from unlearnkit.data import load_data
    from unlearnkit.data.scenarios import build_task

    cfg = _cfg(tmp_path, train={"epochs": 1, "lr": 0.1, "scheduler": "none"}, methods=["finetune"])
    task = build_task(load_data(cfg.data), cfg.scenario)
    runner = Runner(cfg, console=Console(file=io.StringIO()), task=task, model_factory=factory)
    with pytest.raises(MethodError, match="pre-flight check.*chance level"):
        runner.run()
    assert not (runner.run_dir / "results.jsonl").exists()  # refused before any row (and before any method ran)
    # the Python API refuses it too
    import unlearnkit as uk

    with pytest.raises(MethodError, match="chance level"):
        uk.unlearn(factory(0), task, "finetune")


def test_declared_needs_follow_the_settings(tiny_task):
    import dataclasses

    no_retain = dataclasses.replace(tiny_task, retain=tiny_task.retain.take(np.zeros(0, dtype=np.int64)))
    for name in ("random_label", "salun", "salun_soft"):
        with pytest.raises(MethodError, match="needs a retain set"):
            check_requirements(METHODS.build(name, {}), no_retain, label=name)
        check_requirements(METHODS.build(name, {"use_retain": False}), no_retain, label=name)  # forget-only: ok


def test_classifier_spec_uses_the_sizes_of_the_point(tiny_task):
    spec = classifier_verdict_spec(tiny_task)
    assert spec.n["unlearn_acc"] == len(tiny_task.forget) and spec.n["test_acc"] == len(tiny_task.eval_test)
    assert spec.utility["test_acc"] == pytest.approx(100 / tiny_task.num_classes)


def test_exact_methods_report_exactness_beside_the_gap_to_the_oracle(tmp_path):
    """SISA equals its own retrain on D_r bit for bit (exactness gap 0) while its gap to the standard oracle (one
    model on all of D_r) is the price of sharding; a SISA whose deletion is broken is flagged inexact."""
    cfg = _cfg(tmp_path, methods=[{"name": "sisa", "shards": 2, "slices": 2}])
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    row = next(r for r in out.rows if r["method"] == "sisa")
    assert row["exactness"] == {"seen_forgotten_ids": 0, "max_abs_diff": 0.0, "exact": True}
    assert row["metrics"]["exactness_gap"] == 0.0 and row["verdict"] != "inexact"
    from unlearnkit.report import write_reports

    md, _ = write_reports(out.run_dir)
    assert "Exactness gap" in md.read_text()


def test_a_broken_exact_method_is_inexact(tmp_path, monkeypatch):
    """Its own retrain differs from its model (here: the reference is perturbed by 1e-3): flagged inexact."""
    from unlearnkit.methods.exact import sisa as sisa_mod

    orig = sisa_mod.SISAMethod.own_retrain

    def differs(self, result, forget, retain, engine, context):
        m = orig(self, result, forget, retain, engine, context)
        with torch.no_grad():
            next(m.parameters()).add_(1e-3)
        return m

    monkeypatch.setattr(sisa_mod.SISAMethod, "own_retrain", differs)
    cfg = _cfg(tmp_path, methods=[{"name": "sisa", "shards": 2, "slices": 2}])
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    row = next(r for r in out.rows if r["method"] == "sisa")
    assert row["status"] == "ok", row.get("error")
    assert row["exactness"]["exact"] is False and row["exactness"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert row["verdict"] == "inexact"


@pytest.mark.parametrize("config, expected", [("digits_random10", ("forget_acc", "test_acc")),
                                              ("digits_corrective", None), ("continual_digits", None)])
def test_memorisation_check_only_where_forget_and_test_accuracy_compare(config, expected):
    """Corrective D_f carries poisoned labels and a continual D_f is forgotten by later tasks: comparing its accuracy
    with clean test accuracy would warn "not memorised" on a model that did memorise it."""
    from unlearnkit.bench import load_config
    from unlearnkit.bench.runner import Runner

    runner = Runner(load_config(config))
    assert runner.track.memorisation_keys(runner.task) == expected


def test_means_that_look_ok_do_not_hide_seeds_that_are_not():
    """Two seeds over-unlearn and one does nothing: the means land near θ_r (the seed spread widens the tolerance),
    yet the summary row must not read ``ok`` — it takes the most frequent seed verdict and says why."""
    spec = SPEC.to_json()

    def row(method, role, seed, metrics, verdict=None):
        return {"method": method, "role": role, "is_oracle": role == "oracle", "seed": seed, "status": "ok",
                "metrics": metrics, "verdict_spec": spec, **({"verdict": verdict} if verdict else {})}

    rows = []
    for seed in (0, 1, 2):
        rows += [row("retrain", "oracle", seed, {**ORACLE, "unlearn_acc": 4.0 + seed}),
                 row("original", "original", seed, THETA_O, "inert")]
    over = {"unlearn_acc": 9.0, "mia_efficacy": 16.0, "retain_acc": 100.0, "test_acc": 97.8}
    rows += [row("ga", "method", 0, over, "over-unlearned"), row("ga", "method", 1, over, "over-unlearned"),
             row("ga", "method", 2, THETA_O, "inert")]
    by = {s.method: s for s in summarize(rows)}
    ga = by["ga"]
    assert judge(ga.mean, by["retrain"].mean, by["original"].mean, SPEC,
                 tolerance={"unlearn_acc": 10.0, "mia_efficacy": 20.0})[0] == "ok"  # what the means alone say
    assert ga.verdict == "over-unlearned" and "2 of 3 seeds are not ok" not in ga.verdict_reasons[0]
    assert "3 of 3 seeds are not ok" in ga.verdict_reasons[0]
    from unlearnkit.report._common import verdict_cell

    assert verdict_cell(ga) == "over-unlearned (2/3 seeds)"
