"""Sequential deletion requests: request drawing (unlearnkit.data.sequential) and the runner's chained stages."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from unlearnkit.bench import Runner
from unlearnkit.bench import load_config
from unlearnkit.config.loader import to_plain
from unlearnkit.config.schema import RequestSpec, ScenarioConfig
from unlearnkit.data.sequential import draw_requests, request_tasks
from unlearnkit.engine.checkpoint import ModelCache, load_checkpoint
from unlearnkit.errors import ConfigError, DataError, DivergenceError
from unlearnkit.methods import METHODS, Unlearner, UnlearnResult, derive_seed

from testkit import make_blobs

SHIFT = 0.25  # what the test method adds to the last layer's bias per request


# -- drawing requests --------------------------------------------------------------------------------------------------
def test_requests_are_disjoint_and_tasks_cumulative():
    data = make_blobs()
    reqs = draw_requests(data.train, [RequestSpec(count=5)] * 3, seed=1)
    assert [len(r) for r in reqs] == [5, 5, 5]
    assert len(np.unique(np.concatenate(reqs))) == 15
    tasks = request_tasks(data, reqs)
    for i, (unl, ev) in enumerate(tasks):
        removed = np.concatenate(reqs[: i + 1])
        assert set(unl.forget.ids) == set(reqs[i])
        assert set(ev.forget.ids) == set(removed)  # evaluated on everything removed so far
        assert not set(unl.retain.ids) & set(removed)  # D_r^i excludes every earlier request too
        assert set(unl.retain.ids) == set(ev.retain.ids) == set(data.train.ids) - set(removed)
        assert set(unl.train.ids) == set(data.train.ids) - set(np.concatenate(reqs[:i]) if i else [])
        assert ev.scenario["n_removed"] == ev.scenario["n_forget"] == 5 * (i + 1) and unl.scenario["n_forget"] == 5
    with pytest.raises(DataError, match="repeats"):
        request_tasks(data, [reqs[0], reqs[0]])


def test_class_requests_switch_ta_to_the_remaining_classes():
    data = make_blobs()  # 3 classes
    specs = [RequestSpec(count=5), RequestSpec(classes=[1]), RequestSpec(count=5)]
    reqs = draw_requests(data.train, specs, seed=0)
    tasks = request_tasks(data, reqs, classes=[sp.classes for sp in specs])
    assert tasks[0][1].test_forgotten is None and len(tasks[0][1].eval_test) == len(data.test)
    for unl, ev in tasks[1:]:  # from the class request on: TA on classes 0 and 2, class 1's test samples apart
        for t in (unl, ev):
            assert set(t.test_forgotten.labels.tolist()) == {1}
            assert set(t.eval_test.labels.tolist()) == {0, 2}
            assert len(t.test_forgotten) + len(t.eval_test) == len(data.test)
            assert t.scenario["classes_removed"] == [1]


def test_mixed_requests_classes_ids_and_random_draws_avoid_named_ids():
    data = make_blobs()  # 90 training samples, 30 per class
    named = data.train.ids[:4].tolist()
    specs = [RequestSpec(fraction=0.5), RequestSpec(classes=[2]), RequestSpec(ids=named)]
    reqs = draw_requests(data.train, specs, seed=0)
    assert len(reqs[0]) == 45 and not set(reqs[0]) & set(named)  # the random draw leaves the named ids alone
    labels = dict(zip(data.train.ids.tolist(), data.train.labels.tolist()))
    assert {labels[i] for i in reqs[1]} == {2}
    assert set(reqs[1]) == {i for i, c in labels.items() if c == 2} - set(reqs[0])  # what was left of class 2
    assert reqs[2].tolist() == sorted(named)
    with pytest.raises(DataError, match="already removed"):
        draw_requests(data.train, [RequestSpec(classes=[0]), RequestSpec(ids=named)])  # ids 0.. are class 0
    with pytest.raises(DataError, match="not in the training data"):
        draw_requests(data.train, [RequestSpec(classes=[7])])
    with pytest.raises(DataError, match="left to draw from"):
        draw_requests(data.train, [RequestSpec(count=60), RequestSpec(count=40)])
    with pytest.raises(DataError, match="remove all"):
        draw_requests(data.train, [RequestSpec(classes=[0, 1, 2])])


# -- the runner ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shift_method():
    """A deterministic method: adds SHIFT to the last layer's bias, so θ_u after request i = θ_o + (i + 1)·SHIFT."""

    @METHODS.register("test_seq_shift")
    class Shift(Unlearner):
        def __init__(self) -> None:
            super().__init__(None)  # type: ignore[arg-type]

        def _unlearn(self, model, forget, retain, engine, context):
            with torch.no_grad():
                [p for p in model.parameters()][-1].add_(SHIFT)
            return UnlearnResult(model)

    @METHODS.register("test_seq_boom1")
    class Boom1(Shift):
        def _unlearn(self, model, forget, retain, engine, context):
            if context.seed == derive_seed(0, "req1"):
                raise RuntimeError("kaboom at request 1")
            return super()._unlearn(model, forget, retain, engine, context)

    @METHODS.register("test_seq_nan1")
    class Nan1(Shift):
        def _unlearn(self, model, forget, retain, engine, context):
            if context.seed == derive_seed(0, "req1"):
                raise DivergenceError("loss became nan at step 3", step=3, loss=float("nan"))
            return super()._unlearn(model, forget, retain, engine, context)

    yield "test_seq_shift"
    METHODS.unregister("test_seq_shift")
    METHODS.unregister("test_seq_boom1")
    METHODS.unregister("test_seq_nan1")


def seq_cfg(out: Path, **over):
    base = {"name": "tiny_seq", "data": {"name": "digits", "train_subset": 200, "test_subset": 100},
            "model": {"name": "mlp", "hidden": [16]},
            "scenario": {"kind": "sequential", "requests": 3, "count": 10, "seed": 0},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
            "methods": ["retrain", "test_seq_shift", {"name": "finetune", "epochs": 1}],
            "metrics": ["accuracy"], "seeds": [0], "engine": {"progress": False}, "output_dir": str(out)}
    base.update(over)
    return load_config(data=base)


def run(cfg):
    log = io.StringIO()
    runner = Runner(cfg, console=Console(file=log, width=300))
    return runner, runner.run(), log.getvalue()


def last_bias(path: Path, runner: Runner) -> torch.Tensor:
    model = runner.new_model(0)
    load_checkpoint(path, model)
    return [p for p in model.parameters()][-1].detach().clone()


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory, shift_method):
    cfg = seq_cfg(tmp_path_factory.mktemp("seq"))
    runner, out, _ = run(cfg)
    return cfg, runner, out


def test_runner_sequential_rows_per_request_and_one_oracle_each(seq_run):
    cfg, runner, out = seq_run
    keys = sorted((r["method"], r["request"]) for r in out.rows)
    assert keys == sorted((m, i) for m in ("retrain", "original", "test_seq_shift", "finetune") for i in range(3))
    assert all(r["status"] == "ok" for r in out.rows)
    assert runner.trained == ["original", "oracle", "oracle", "oracle"]  # θ_o once, an oracle per request
    ft = sorted((r for r in out.rows if r["method"] == "finetune"), key=lambda r: r["request"])
    assert [r["scenario"]["n_removed"] for r in ft] == [10, 20, 30]
    assert [r["scenario"]["n_forget"] for r in ft] == [10, 20, 30]  # metrics on the cumulative forget set
    assert len({r["original_sha256"] for r in ft}) == 1
    points = [runner.plan[0].ops[pos] for pos in runner.plan[0].points]
    for i, ev in enumerate(points):
        z = np.load(out.run_dir / "per_sample" / f"finetune-seed0-req{i}.npz")
        assert np.array_equal(np.sort(z["forget.ids"]), np.sort(ev.task.forget_ids))
        assert (out.run_dir / "checkpoints" / f"finetune-seed0-req{i}").is_dir()


def test_runner_sequential_oracle_i_never_saw_anything_removed_so_far(seq_run):
    cfg, runner, out = seq_run
    cache = ModelCache(Path(cfg.output_dir) / "cache")
    removed = np.zeros(0, dtype=np.int64)
    requests = [op for op in runner.plan[0].ops if type(op).__name__ == "Forget"]
    for i, request in enumerate(requests):
        removed = np.union1d(removed, request.task.forget_ids)
        row = next(r for r in out.rows if r["is_oracle"] and r["request"] == i)
        _, extras = cache.load(row["lineage_key"], runner.new_model(0))
        trained = extras["trained_ids"].numpy()
        assert len(np.intersect1d(trained, removed)) == 0
        assert np.array_equal(np.sort(trained), np.setdiff1d(runner.task.train_ids, removed))


def test_runner_sequential_chains_each_request_on_the_previous_output(seq_run):
    cfg, runner, out = seq_run
    theta_o = runner.original(0).model
    b0 = [p for p in theta_o.parameters()][-1].detach()
    for i in range(3):
        b = last_bias(out.run_dir / "checkpoints" / f"test_seq_shift-seed0-req{i}", runner)
        assert torch.allclose(b, b0 + (i + 1) * SHIFT, atol=1e-6)


def test_runner_sequential_resume_loads_the_previous_checkpoint_or_recomputes(tmp_path, shift_method):
    cfg = seq_cfg(tmp_path)
    _, first, _ = run(cfg)
    path = first.run_dir / "results.jsonl"
    lines = path.read_text().splitlines()

    def drop(method: str, request: int) -> dict:
        kept = [x for x in path.read_text().splitlines()
                if (json.loads(x)["method"], json.loads(x)["request"]) != (method, request)]
        lost = next(json.loads(x) for x in path.read_text().splitlines() if x not in kept)
        path.write_text("\n".join(kept) + "\n")
        return lost

    # 1. request 2's row lost: rerun from request 1's checkpoint; nothing else reruns, nothing retrains
    lost = drop("test_seq_shift", 2)
    runner, again, log = run(cfg)
    assert again.new_rows == 1 and runner.trained == [] and sorted(runner.reused) == ["oracle", "original"]
    redo = again.rows[-1]
    assert (redo["method"], redo["request"]) == ("test_seq_shift", 2)
    assert redo["checkpoint_sha256"] == lost["checkpoint_sha256"] and "recomputing" not in log
    # 2. request 2's row and request 1's checkpoint lost: recomputed from θ_o, and said so
    lost = drop("test_seq_shift", 2)
    shutil.rmtree(first.run_dir / "checkpoints" / "test_seq_shift-seed0-req1")
    runner, again, log = run(cfg)
    assert again.new_rows == 1 and "recomputing from θ_o through request 1" in log.replace("\n", " ")
    assert again.rows[-1]["checkpoint_sha256"] == lost["checkpoint_sha256"]
    # 3. a middle request's row lost: only that request reruns (request 2 is done)
    drop("finetune", 1)
    runner, again, _ = run(cfg)
    assert again.new_rows == 1 and (again.rows[-1]["method"], again.rows[-1]["request"]) == ("finetune", 1)
    assert len(read_rows(path)) == len(lines)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_runner_sequential_a_failed_request_stops_the_chain_of_that_method_only(tmp_path, shift_method):
    cfg = seq_cfg(tmp_path, methods=["retrain", "test_seq_boom1", "test_seq_shift"])
    _, out, _ = run(cfg)
    st = {(r["method"], r["request"]): r for r in out.rows}
    assert st[("test_seq_boom1", 0)]["status"] == "ok"
    assert st[("test_seq_boom1", 1)]["status"] == "error" and "kaboom" in st[("test_seq_boom1", 1)]["error"]
    assert st[("test_seq_boom1", 2)]["status"] == "error" and "request 1" in st[("test_seq_boom1", 2)]["error"]
    assert all(st[("test_seq_shift", i)]["status"] == "ok" for i in range(3))


def test_runner_sequential_a_diverged_request_ends_the_chain_once(tmp_path, shift_method):
    cfg = seq_cfg(tmp_path, methods=["retrain", "test_seq_nan1"])
    _, out, _ = run(cfg)
    st = {(r["method"], r["request"]): r for r in out.rows}
    assert st[("test_seq_nan1", 0)]["status"] == "ok"
    assert st[("test_seq_nan1", 1)]["status"] == "diverged" and st[("test_seq_nan1", 1)]["diverged_step"] == 3
    assert st[("test_seq_nan1", 2)]["status"] == "diverged" and "request 2" in st[("test_seq_nan1", 2)]["error"]
    n = len(out.rows)
    _, again, _ = run(cfg)  # final outcomes: a rerun adds no row (it used to append a new error row each time)
    assert again.new_rows == 0 and len(again.rows) == n


def test_runner_sequential_report_draws_curves_over_requests(seq_run):
    from unlearnkit.report import write_reports

    import json

    from plotread import assert_plots_rows

    _, _, out = seq_run
    write_reports(out.run_dir)
    html = (out.run_dir / "report.html").read_text()
    assert 'id="sequential"' in html
    rows = [json.loads(x) for x in (out.run_dir / "results.jsonl").read_text().splitlines() if x.strip()]
    # every plotted point is the rows' value after that request (θ_r, θ_o and 2 methods × 3 requests per metric)
    for key in ("unlearn_acc", "test_acc"):
        assert assert_plots_rows(html, f"sequential-{key}", rows, "request", key) == 12, key
    assert any(r["metrics"]["test_acc"] > 0 for r in rows)  # a flat-at-0 curve cannot match


# -- configuration -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario, match", [
    ({"kind": "sequential"}, "needs 'requests'"),
    ({"kind": "sequential", "requests": 3}, "exactly one of 'fraction'"),
    ({"kind": "sequential", "requests": 0, "count": 2}, "must be ≥ 1"),
    ({"kind": "sequential", "requests": 4, "fraction": 0.3}, "remove everything"),
    ({"kind": "sequential", "requests": 2, "count": 2, "classes": [1]}, "give a list of requests"),
    ({"kind": "sequential", "requests": []}, "empty"),
    ({"kind": "sequential", "requests": [{"count": 2}], "fraction": 0.1}, "set them per request"),
    ({"kind": "sequential", "requests": [{"count": 2, "classes": [1]}]}, r"request 0 .*exactly one of"),
    ({"kind": "sequential", "requests": [{"fractoin": 0.1}]}, "unknown key 'fractoin'"),
    ({"kind": "sequential", "requests": [{"ids": [1, 2]}, {"ids": [2, 3]}]}, "request 1 repeats ids"),
    ({"kind": "sequential", "requests": [{"classes": [1]}, {"classes": [1]}]}, r"repeats class\(es\) \[1\]"),
    ({"kind": "sequential", "requests": [0.6, 0.5]}, "sum to 1.1"),
    ({"kind": "sequential", "requests": 2, "count": 3, "manipulation": "poison"}, r"does not use \['manipulation'\]"),
    ({"kind": "ids", "ids": [1], "requests": 2}, r"ids does not use \['requests'\]"),
])
def test_sequential_config_errors_say_what_and_how_to_fix(scenario, match):
    with pytest.raises(ConfigError, match=match):
        load_config(data={"scenario": scenario})


def test_sequential_request_shorthands():
    sc = load_config(data={"scenario": {"kind": "sequential", "requests": [0.03, 5, {"classes": [3]}]}}).scenario
    assert sc.requests == [RequestSpec(fraction=0.03), RequestSpec(count=5), RequestSpec(classes=[3])]


def test_plain_scenarios_serialise_as_before_so_old_config_hashes_hold():
    """The corrective/sequential fields are left out of a plain scenario's resolved config (and so its hash)."""
    for sc in (ScenarioConfig(kind="random", fraction=0.1), ScenarioConfig(kind="class", classes=[3]),
               ScenarioConfig(kind="ids", ids=[4])):
        assert list(to_plain(sc)) == ["kind", "fraction", "count", "classes", "ids", "seed"]
    seq = to_plain(ScenarioConfig(kind="sequential", requests=2, count=3))
    assert seq["requests"] == 2 and "manipulation" not in seq


def test_bundled_sequential_config_loads():
    cfg = load_config("digits_sequential")
    assert cfg.scenario.kind == "sequential" and cfg.scenario.requests == 3 and cfg.scenario.fraction == 0.03


def test_neurips_score_of_a_sequential_run_uses_the_final_request(tmp_path, shift_method):
    from unlearnkit.metrics.neurips import neurips_score_from_run
    from unlearnkit.report import compute_neurips

    cfg = seq_cfg(tmp_path, methods=["retrain", "test_seq_shift"], seeds=[0, 1, 2],
                  scenario={"kind": "sequential", "requests": 2, "count": 10, "seed": 0})
    _, out, _ = run(cfg)
    data = compute_neurips(out.run_dir)  # was: "missing per-sample file …/test_seq_shift-seed0.npz"
    s = data["methods"]["test_seq_shift"]
    assert "error" not in s, s
    assert s["n_forget"] == 20 and s["n_models"] == 3  # D_f of the last request = both requests (cumulative)
    res = neurips_score_from_run(out.run_dir, "test_seq_shift")
    last = [r for r in out.rows if r["method"] == "test_seq_shift" and r["request"] == 1]
    assert res.retain_ratio == pytest.approx(
        np.mean([r["metrics"]["retain_acc"] for r in last]) /
        np.mean([r["metrics"]["retain_acc"] for r in out.rows if r["is_oracle"] and r["request"] == 1]))
