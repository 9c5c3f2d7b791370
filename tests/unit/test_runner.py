"""Experiment runner: rows, caching of θ_o/θ_r, resume, failing and diverging methods, sweeps (unlearnkit.bench)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console

from unlearnkit.bench import Runner, read_results
from unlearnkit.bench import load_config
from unlearnkit.config.loader import config_hash, deep_merge
from unlearnkit.engine.checkpoint import MODEL_FILE, ModelCache, state_sha256
from unlearnkit.errors import CheckpointError
from unlearnkit.methods import METHODS, Unlearner
from unlearnkit.metrics import avg_gap
from unlearnkit.models import build_model

SCORES = ("forget_acc", "unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")


def tiny_cfg(out: Path, **over: Any):
    base = {
        "name": "tiny",
        "data": {"name": "digits", "train_subset": 200, "test_subset": 100},
        "model": {"name": "mlp", "hidden": [16]},
        "scenario": {"kind": "random", "fraction": 0.1, "seed": 0},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "methods": [{"name": "finetune", "epochs": 1}, {"name": "grad_ascent", "epochs": 1}],
        "seeds": [0, 1],
        "engine": {"progress": False},
        "output_dir": str(out),
    }
    return load_config(data=deep_merge(base, over))


def run(cfg) -> tuple[Runner, Any]:
    runner = Runner(cfg, console=Console(file=io.StringIO()))
    return runner, runner.run()


def by_key(rows):
    return {(r["method"], r["seed"]): r for r in rows}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    cfg = tiny_cfg(tmp_path_factory.mktemp("runs"))
    runner, outcome = run(cfg)
    return cfg, runner, outcome


# -- the rows of one run ----------------------------------------------------------------------------------------------
def test_one_oracle_row_per_seed_and_one_row_per_method_and_seed(base_run):
    cfg, runner, outcome = base_run
    rows = read_results(outcome.run_dir / "results.jsonl")
    assert rows == outcome.rows and outcome.new_rows == 8  # θ_r, θ_o and two methods, for 2 seeds
    keys = [(r["method"], r["seed"]) for r in rows]
    assert sorted(keys) == sorted((m, s) for m in ("retrain", "original", "finetune", "grad_ascent") for s in (0, 1))
    assert [r["role"] for r in rows if r["method"] == "original"] == ["original", "original"]
    assert len(set(keys)) == len(keys)
    oracle = [r for r in rows if r["is_oracle"]]
    assert [(r["method"], r["seed"]) for r in oracle] == [("retrain", 0), ("retrain", 1)]
    assert all(r["status"] == "ok" and r["error"] is None for r in rows)
    assert sorted(outcome.trained) == ["oracle", "oracle", "original", "original"] and outcome.reused == []


def test_rows_carry_scores_gaps_and_provenance(base_run):
    cfg, runner, outcome = base_run
    rows = by_key(outcome.rows)
    task = runner.task
    for seed in (0, 1):
        o = rows[("retrain", seed)]["metrics"]
        assert o["avg_gap"] == 0.0
        for m in ("finetune", "grad_ascent"):
            row = rows[(m, seed)]
            met = row["metrics"]
            assert set(SCORES) <= set(met)
            assert met["unlearn_acc"] == pytest.approx(100.0 - met["forget_acc"])
            assert met["avg_gap"] == pytest.approx(avg_gap(met, o))  # recomputed from the two rows
            assert met["unlearn_seconds"] >= 0
            assert row["config_sha256"] == config_hash(cfg)
            assert row["scenario"]["forget_ids_sha256"] == task.scenario["forget_ids_sha256"]
            assert row["scenario"]["n_forget"] == 20 and row["scenario"]["n_retain"] == 180
            assert row["params"]["epochs"] == 1
            assert row["versions"]["torch"]
    assert (outcome.run_dir / "config.sha256").read_text().strip() == config_hash(cfg)
    resolved = load_config(data=yaml.safe_load((outcome.run_dir / "config.resolved.yaml").read_text()))
    assert config_hash(resolved) == config_hash(cfg)


def test_per_sample_arrays_reproduce_the_row(base_run):
    cfg, runner, outcome = base_run
    row = by_key(outcome.rows)[("grad_ascent", 1)]
    z = np.load(outcome.run_dir / "per_sample" / "grad_ascent-seed1.npz")
    assert sorted(z["forget.ids"].tolist()) == sorted(runner.task.forget.ids.tolist())
    acc = 100.0 * (z["forget.logits"].argmax(1) == z["forget.labels"]).mean()
    assert row["metrics"]["forget_acc"] == pytest.approx(acc)
    acc_t = 100.0 * (z["test.logits"].argmax(1) == z["test.labels"]).mean()
    assert row["metrics"]["test_acc"] == pytest.approx(acc_t)


def test_oracle_row_identifies_the_cached_model(base_run):
    cfg, runner, outcome = base_run
    cache = ModelCache(Path(cfg.output_dir) / "cache")
    for seed in (0, 1):
        row = by_key(outcome.rows)[("retrain", seed)]
        model = build_model(cfg.model, (1, 8, 8), 10)
        manifest, extras = cache.load(row["lineage_key"], model)
        assert state_sha256(model) == row["checkpoint_sha256"]
        assert manifest["meta"]["role"] == "oracle"


def test_c17_reloaded_unlearned_checkpoint_reproduces_the_in_memory_evaluation(base_run):
    """The saved θ_u, reloaded, gives bit-identical logits to those the row's metrics were computed from."""
    from unlearnkit.engine.checkpoint import load_checkpoint
    from unlearnkit.engine.loop import Engine

    cfg, runner, outcome = base_run
    for label in ("finetune", "grad_ascent"):
        row = by_key(outcome.rows)[(label, 0)]
        model = build_model(cfg.model, (1, 8, 8), 10)
        _, manifest, _ = load_checkpoint(outcome.run_dir / "checkpoints" / f"{label}-seed0", model)
        assert state_sha256(model) == row["checkpoint_sha256"] == manifest["lineage_key"]
        z = np.load(outcome.run_dir / "per_sample" / f"{label}-seed0.npz")
        engine = Engine(cfg.engine)
        for split, data in (("forget", runner.task.forget), ("test", runner.task.test)):
            logits = engine.predict(model, data).logits.numpy()
            assert np.array_equal(logits, z[f"{split}.logits"])


# -- reuse and resume ---------------------------------------------------------------------------------------------------
def test_identical_rerun_adds_no_rows_and_trains_nothing(base_run):
    cfg, _, first = base_run
    before = (first.run_dir / "results.jsonl").read_bytes()
    runner, again = run(cfg)
    assert again.run_dir == first.run_dir
    assert again.new_rows == 0 and again.trained == [] and runner.trained == []
    assert (first.run_dir / "results.jsonl").read_bytes() == before


def test_runs_sharing_the_cache_reuse_theta_o_and_theta_r(base_run):
    """A config that changes only a method's setting (a new run folder) loads θ_o and θ_r instead of training."""
    cfg, _, first = base_run
    cfg2 = tiny_cfg(Path(cfg.output_dir), methods=[{"name": "finetune", "epochs": 1, "lr": 0.02}])
    runner, out = run(cfg2)
    assert out.run_dir != first.run_dir
    assert sorted(runner.reused) == ["oracle", "oracle", "original", "original"] and runner.trained == []
    old, new = by_key(first.rows), by_key(out.rows)
    for seed in (0, 1):
        assert new[("retrain", seed)]["lineage_key"] == old[("retrain", seed)]["lineage_key"]
        assert new[("retrain", seed)]["checkpoint_sha256"] == old[("retrain", seed)]["checkpoint_sha256"]
        assert new[("retrain", seed)]["cached_model"] is True
        for k in SCORES:  # the same oracle gives the same reference numbers
            assert new[("retrain", seed)]["metrics"][k] == old[("retrain", seed)]["metrics"][k]
        assert new[("finetune", seed)]["original_sha256"] == old[("finetune", seed)]["original_sha256"]


def test_resume_after_losing_the_last_row_reruns_only_that_row(tmp_path):
    cfg = tiny_cfg(tmp_path)
    _, first = run(cfg)
    path = first.run_dir / "results.jsonl"
    lines = path.read_text().splitlines()
    lost = json.loads(lines[-1])
    path.write_text("\n".join(lines[:-1]) + "\n")
    runner, again = run(cfg)
    assert again.new_rows == 1
    assert sorted(runner.reused) == ["oracle", "original"] and runner.trained == []  # only the lost row's seed
    rows = read_results(path)
    assert len(rows) == len(lines)
    redo = rows[-1]
    assert (redo["method"], redo["seed"]) == (lost["method"], lost["seed"])
    for k in SCORES:  # deterministic: the re-run row has the lost row's numbers
        assert redo["metrics"][k] == lost["metrics"][k]
    assert redo["checkpoint_sha256"] == lost["checkpoint_sha256"]
    assert [json.loads(x) for x in lines[:-1]] == rows[:-1]  # earlier rows untouched


def test_resume_after_a_crash_mid_line(tmp_path):
    cfg = tiny_cfg(tmp_path, seeds=[0])
    _, first = run(cfg)
    path = first.run_dir / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # torn write
    _, again = run(cfg)
    assert again.new_rows == 1
    rows = read_results(path)
    assert [(r["method"], r["seed"]) for r in rows] == [(json.loads(x)["method"], 0) for x in lines]


def test_tampered_cached_model_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path, seeds=[0])
    _, first = run(cfg)
    key = by_key(first.rows)[("retrain", 0)]["lineage_key"]
    f = ModelCache(tmp_path / "cache").path(key) / MODEL_FILE
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x01
    f.write_bytes(bytes(raw))
    (first.run_dir / "results.jsonl").unlink()
    with pytest.raises(CheckpointError, match="failed verification"):
        run(cfg)


# -- failing and diverging methods ---------------------------------------------------------------------------------------
@pytest.fixture
def boom_method():
    @METHODS.register("test_boom")
    class Boom(Unlearner):
        def __init__(self) -> None:
            super().__init__(None)  # type: ignore[arg-type]

        def _unlearn(self, model, forget, retain, engine, context):
            raise RuntimeError("kaboom: simulated failure")

    yield "test_boom"
    METHODS.unregister("test_boom")


def test_a_failing_method_gets_an_error_row_and_the_run_goes_on(tmp_path, boom_method):
    cfg = tiny_cfg(tmp_path, seeds=[0], methods=[boom_method, {"name": "finetune", "epochs": 1}])
    _, out = run(cfg)
    rows = by_key(out.rows)
    bad = rows[(boom_method, 0)]
    assert bad["status"] == "error" and "RuntimeError" in bad["error"] and "kaboom" in bad["error"]
    assert bad["metrics"] == {}
    assert rows[("finetune", 0)]["status"] == "ok" and rows[("retrain", 0)]["status"] == "ok"
    assert out.new_rows == 4  # θ_r, θ_o, the failed method and finetune


def test_c43_a_diverging_method_is_recorded_as_diverged_without_metrics(tmp_path):
    cfg = tiny_cfg(tmp_path, seeds=[0], methods=[
        {"name": "grad_ascent", "epochs": 5, "lr": 1.0e6, "batch_size": 8},
        {"name": "finetune", "epochs": 1},
    ])
    _, out = run(cfg)
    rows = by_key(out.rows)
    bad = rows[("grad_ascent", 0)]
    assert bad["status"] == "diverged"
    assert isinstance(bad["diverged_step"], int) and bad["diverged_step"] >= 0
    assert f"step {bad['diverged_step']}" in bad["error"] and "DivergenceError" in bad["error"]
    assert bad["metrics"] == {}
    assert rows[("finetune", 0)]["status"] == "ok"  # the run went on


# -- C05 / C06: output identity follows the inputs ---------------------------------------------------------------------
def test_c05_changed_training_recipe_gives_new_folder_and_new_models(tmp_path):
    a_cfg = tiny_cfg(tmp_path, seeds=[0])
    b_cfg = tiny_cfg(tmp_path, seeds=[0], train={"batch_size": 16})
    _, a = run(a_cfg)
    runner_b, b = run(b_cfg)
    assert a.run_dir != b.run_dir
    assert sorted(runner_b.trained) == ["oracle", "original"] and runner_b.reused == []  # nothing stale reused
    ra, rb = by_key(a.rows), by_key(b.rows)
    assert ra[("retrain", 0)]["lineage_key"] != rb[("retrain", 0)]["lineage_key"]
    assert ra[("retrain", 0)]["checkpoint_sha256"] != rb[("retrain", 0)]["checkpoint_sha256"]
    assert ra[("finetune", 0)]["original_sha256"] != rb[("finetune", 0)]["original_sha256"]
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 4  # θ_o, θ_r for each recipe
    assert yaml.safe_load((b.run_dir / "config.resolved.yaml").read_text())["train"]["batch_size"] == 16


def test_c06_a_fraction_sweep_gives_distinct_folders_and_forget_sets(tmp_path):
    outs = {}
    for frac in (0.05, 0.1, 0.2):
        cfg = tiny_cfg(tmp_path, seeds=[0], scenario={"fraction": frac})
        runner, out = run(cfg)
        outs[frac] = (runner, out)
        resolved = yaml.safe_load((out.run_dir / "config.resolved.yaml").read_text())
        assert resolved["scenario"]["fraction"] == frac
        assert all(r["scenario"]["fraction"] == frac for r in out.rows)
        assert by_key(out.rows)[("retrain", 0)]["scenario"]["n_forget"] == round(frac * 200)
    dirs = {o.run_dir for _, o in outs.values()}
    digests = {by_key(o.rows)[("retrain", 0)]["scenario"]["forget_ids_sha256"] for _, o in outs.values()}
    assert len(dirs) == 3 and len(digests) == 3
    oracle_keys = {by_key(o.rows)[("retrain", 0)]["lineage_key"] for _, o in outs.values()}
    assert len(oracle_keys) == 3  # one oracle per forget set
    unlearned = [r["checkpoint_sha256"] for _, o in outs.values() for r in o.rows if r["role"] == "method"]
    assert len(unlearned) == 6 and len(set(unlearned)) == 6
    # θ_o does not depend on D_f: trained once, then reused by the other fractions
    assert [r.trained.count("original") for r, _ in outs.values()] == [1, 0, 0]



@pytest.fixture
def keyerror_method():
    @METHODS.register("test_keyerror")
    class Broken(Unlearner):
        def __init__(self) -> None:
            super().__init__(None)  # type: ignore[arg-type]

        def _unlearn(self, model, forget, retain, engine, context):
            raise KeyError("missing_buffer")

    yield "test_keyerror"
    METHODS.unregister("test_keyerror")


def test_a_method_failing_with_any_exception_gets_an_error_row(tmp_path, keyerror_method):
    cfg = tiny_cfg(tmp_path, seeds=[0], methods=[keyerror_method, {"name": "finetune", "epochs": 1}])
    _, out = run(cfg)
    rows = by_key(out.rows)
    assert rows[(keyerror_method, 0)]["status"] == "error" and "missing_buffer" in rows[(keyerror_method, 0)]["error"]
    assert rows[("finetune", 0)]["status"] == "ok"


def test_runner_refuses_a_method_whose_needs_the_task_cannot_serve(tiny_task):
    """Declared needs (retain set, labels, the complete D) are checked before any training, with what is missing."""
    import dataclasses

    from unlearnkit.bench.runner import check_requirements
    from unlearnkit.errors import MethodError
    from unlearnkit.methods import METHODS

    no_retain = dataclasses.replace(tiny_task, retain=tiny_task.retain.take(np.zeros(0, dtype=np.int64)))
    with pytest.raises(MethodError, match="needs a retain set"):
        check_requirements(METHODS.get("finetune"), no_retain, label="finetune")
    check_requirements(METHODS.get("grad_ascent"), no_retain, label="grad_ascent")  # GA reads only D_f
    unlabeled = dataclasses.replace(tiny_task, scenario={**tiny_task.scenario, "labels_available": False})
    with pytest.raises(MethodError, match="needs labels"):
        check_requirements(METHODS.get("finetune"), unlabeled, label="finetune")
    check_requirements(METHODS.get("lfssd"), unlabeled, label="lfssd")  # label-free
    partial = dataclasses.replace(tiny_task, scenario={**tiny_task.scenario, "retain_is_complete": False})
    with pytest.raises(MethodError, match="whole original training set"):
        check_requirements(METHODS.get("ssd"), partial, label="ssd")


def test_oracle_evaluation_error_stops_with_reason_and_keeps_the_cache(tmp_path, monkeypatch):
    from unlearnkit.errors import MethodError

    cfg = tiny_cfg(tmp_path, seeds=[0], methods=[{"name": "finetune", "epochs": 1}])
    runner = Runner(cfg, console=Console(file=io.StringIO()))

    def boom(*a, **k):
        raise RuntimeError("metric exploded")

    monkeypatch.setattr(runner.track, "evaluate", boom)
    with pytest.raises(MethodError, match=r"evaluating the oracle θ_r for seed 0 failed \(RuntimeError: metric "
                                          r"exploded\).*θ_o and θ_r stay cached"):
        runner.run()
    assert read_results(runner.run_dir / "results.jsonl") == []
    again = Runner(cfg, console=Console(file=io.StringIO())).run()  # fixed: both models come from the cache
    assert sorted(again.reused) == ["oracle", "original"] and len(again.rows) == 3  # θ_r, θ_o, finetune


def test_engine_settings_are_applied_before_the_first_methods_timed_unlearning(tmp_path, monkeypatch):
    """torch.use_deterministic_algorithms imports torch._dynamo on its first call (about 1 s); with θ_o and θ_r
    from the cache, that first call used to fall inside the first method's timed unlearning and inflate its RTE
    (review 2026-12-08: grad_ascent 0.80 s first in the list, 0.007 s second)."""
    from unlearnkit.engine.loop import Engine
    from unlearnkit.methods.classifier.grad_ascent import GradAscent

    Runner(tiny_cfg(tmp_path, methods=[{"name": "finetune", "epochs": 1}], seeds=[0])).run()  # fills the cache
    events: list[str] = []
    real_setup, real_unlearn = Engine.setup, GradAscent._unlearn
    monkeypatch.setattr(Engine, "setup", lambda self: (events.append("setup"), real_setup(self))[1])
    monkeypatch.setattr(GradAscent, "_unlearn", lambda self, *a, **k: (events.append("unlearn"),
                                                                        real_unlearn(self, *a, **k))[1])
    Runner(tiny_cfg(tmp_path, methods=[{"name": "grad_ascent", "epochs": 1}], seeds=[0])).run()
    assert "unlearn" in events and "setup" in events[:events.index("unlearn")], events


def test_f_an_empty_methods_list_is_refused_before_anything_trains(tmp_path):
    """`unlearnkit run CONFIG --set methods=[]` used to train θ_o and θ_r for every seed and write reference rows only;
    it is a ConfigError before any folder is written (a reference-only run stays possible through Runner.run, as
    unlearnkit.testing.check_track does)."""
    from typer.testing import CliRunner

    from unlearnkit.bench import run_experiment
    from unlearnkit.cli import app
    from unlearnkit.errors import ConfigError

    cfg = tiny_cfg(tmp_path / "api", methods=[])
    assert cfg.methods == []
    with pytest.raises(ConfigError, match=r"no method to run: methods is empty.*retrain alone gives the oracle row"):
        run_experiment(cfg, console=Console(file=io.StringIO()))
    assert not (tmp_path / "api").exists()  # nothing trained, no run folder, no cache
    res = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(
        app, ["run", "--set", "methods=[]", "--set", f"output_dir={tmp_path / 'cli'}", "--set", "engine.threads=1"])
    assert res.exit_code == 2, res.output
    assert "no method to run" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "cli").exists()
