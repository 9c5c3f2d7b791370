"""Corrective unlearning: data and metric (unlearnkit.data.corrective) and the runner's corrective scenario."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import DataConfig, EngineConfig, TrainConfig
from unlearnkit.data.base import LoadedData, SampleSet, TensorSource
from unlearnkit.data.corrective import (
    corrective_task, corrective_values, identified_subset, interclass_confusion, poison,
)
from unlearnkit.data.scenarios import load_data
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics import METRICS, EvalContext

ENGINE = Engine(EngineConfig(device="cpu", progress=False))


def _images(n_train: int = 40, n_test: int = 20, k: int = 4, same_source: bool = True) -> LoadedData:
    """(n, 1, 4, 4) images whose top-left pixel is the class index; other pixels in [0, 1)."""
    g = np.random.default_rng(0)
    n = n_train + n_test
    y = np.arange(n) % k
    x = g.uniform(size=(n, 1, 4, 4)).astype(np.float32)
    x[:, 0, 0, 0] = y
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    if same_source:
        src = TensorSource(xt, yt)
        tr = SampleSet(src, np.arange(n_train), np.arange(n_train), y[:n_train], k, "train")
        te = SampleSet(src, np.arange(n_train, n), np.arange(n_train, n), y[n_train:], k, "test")
    else:
        tr = SampleSet(TensorSource(xt[:n_train], yt[:n_train]), np.arange(n_train), np.arange(n_train), y[:n_train],
                       k, "train")
        te = SampleSet(TensorSource(xt[n_train:], yt[n_train:]), np.arange(n_test), np.arange(n_train, n), y[n_train:],
                       k, "test")
    return LoadedData("img", tr, te, k, tuple("abcd"))


class _Reader(nn.Module):
    """Logits one-hot of the class written in the top-left pixel; if ``obey_trigger``, the target when the 2×2
    bottom-right corner equals the trigger value."""

    def __init__(self, k: int, target: int, value: float, obey_trigger: bool) -> None:
        super().__init__()
        self.k, self.target, self.value, self.obey = k, target, value, obey_trigger
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = x[:, 0, 0, 0].round().long()
        if self.obey:
            trig = (x[:, :, -2:, -2:] == self.value).flatten(1).all(dim=1)
            cls = torch.where(trig, torch.full_like(cls, self.target), cls)
        return nn.functional.one_hot(cls, self.k).float() * 10 + self.dummy


@pytest.mark.parametrize("same_source", [True, False])
def test_poison_pastes_trigger_and_relabels(same_source):
    data = _images(same_source=same_source)
    m = poison(data, count=8, target=1, trigger_size=2, seed=0)
    assert m.trigger_value is None and m.trigger.shape == (1, 2, 2)  # per-pixel maxima of the training inputs
    x_all, _, _ = data.train.batch(np.arange(len(data.train)))
    assert torch.equal(m.trigger, x_all[:, :, -2:, -2:].amax(dim=0))
    tr = m.data.train
    assert np.array_equal(tr.ids, data.train.ids)
    man = np.isin(tr.ids, m.manipulated_ids)
    assert man.sum() == 8 and (tr.labels[man] == 1).all()
    assert (m.true_labels != 1).all()  # only non-target samples are poisoned: every one changes label
    assert np.array_equal(tr.labels[~man], data.train.labels[~man])
    x, _, _ = tr.batch(np.arange(len(tr)))
    x0, _, _ = data.train.batch(np.arange(len(tr)))
    assert (x[man][:, :, -2:, -2:] == m.trigger).all()
    assert torch.equal(x[man][:, :, :2, :], x0[man][:, :, :2, :])  # the rest of the image is untouched
    assert torch.equal(x[~man], x0[~man])
    xt, _, _ = m.data.test.batch(np.arange(len(m.data.test)))
    xt0, _, _ = data.test.batch(np.arange(len(data.test)))
    assert torch.equal(xt, xt0)  # clean test set unchanged
    c = m.corrupted_test
    assert (c.labels != 1).all() and len(c) == int((data.test.labels != 1).sum())
    xc, _, _ = c.batch(np.arange(len(c)))
    assert (xc[:, :, -2:, -2:] == m.trigger).all()
    assert m.data.train.source is m.data.test.source if same_source else True


def test_corrective_values_golden_on_reader_models():
    data = _images()
    m = poison(data, count=6, target=2, trigger_size=2, trigger_value=3.0, seed=1)
    assert m.trigger_value == 3.0 and (m.trigger == 3.0).all()
    obey = _Reader(4, 2, m.trigger_value, True)
    v = corrective_values(m, lambda s: ENGINE.predict(obey, s))
    assert v == {"clean_acc": 100.0, "corrupted_acc": 0.0, "attack_success_rate": 100.0}
    ignore = _Reader(4, 2, m.trigger_value, False)
    v = corrective_values(m, lambda s: ENGINE.predict(ignore, s))
    assert v == {"clean_acc": 100.0, "corrupted_acc": 100.0, "attack_success_rate": 0.0}


def test_interclass_confusion_swaps_half_each_way_and_metrics():
    data = _images(n_train=80)
    m = interclass_confusion(data, count=9, classes=(0, 3), seed=0)
    assert len(m.manipulated_ids) == 8  # rounded down to even: 4 + 4
    lab = m.data.train.labels
    man = np.isin(m.data.train.ids, m.manipulated_ids)
    assert ((data.train.labels[man] == 0) & (lab[man] == 3)).sum() == 4
    assert ((data.train.labels[man] == 3) & (lab[man] == 0)).sum() == 4
    assert set(np.unique(m.corrupted_test.labels)) == {0, 3}
    assert not set(np.unique(m.clean_test.labels)) & {0, 3}
    # a model that swaps 0 ↔ 3 everywhere: confusion 100 %, corrupted accuracy 0, clean accuracy 100

    class Swap(_Reader):
        def forward(self, x):  # noqa: ANN001
            out = super().forward(x)
            return out[:, [3, 1, 2, 0]]

    v = corrective_values(m, lambda s: ENGINE.predict(Swap(4, 0, 0.0, False), s))
    assert v == {"clean_acc": 100.0, "corrupted_acc": 0.0, "confusion_rate": 100.0}
    with pytest.raises(DataError, match="distinct classes"):
        interclass_confusion(data, count=4, classes=(1, 1))


def test_identified_subsets_are_nested_and_sized():
    ids = np.arange(100, 140)
    subs = [identified_subset(ids, p, seed=3) for p in (0.1, 0.25, 0.5, 1.0)]
    assert [len(s) for s in subs] == [4, 10, 20, 40]
    for a, b in zip(subs, subs[1:]):
        assert set(a) <= set(b)
    assert np.array_equal(subs[-1], ids)
    assert len(identified_subset(np.arange(7), 0.1)) == 1  # ⌈0.7⌉
    with pytest.raises(DataError):
        identified_subset(ids, 0.0)


def test_corrective_task_forgets_only_identified_and_metric_needs_manipulation():
    data = _images()
    m = poison(data, count=8, target=1, trigger_size=2, trigger_value=3.0, seed=0)
    task = corrective_task(m, 0.25, seed=0)
    assert len(task.forget) == 2 and set(task.forget.ids) <= set(m.manipulated_ids)
    unidentified = np.setdiff1d(m.manipulated_ids, task.forget.ids)
    assert set(unidentified) <= set(task.retain.ids)  # the rest of the poison stays in D_r
    assert task.scenario["kind"] == "corrective" and task.scenario["identified_fraction"] == 0.25
    model = _Reader(4, 1, m.trigger_value, True)
    with pytest.raises(ConfigError, match="corrective_manipulation"):
        METRICS.build("corrective").compute(EvalContext(model, task, ENGINE))
    out = METRICS.build("corrective").compute(
        EvalContext(model, task, ENGINE, references={"corrective_manipulation": m}))
    assert out.values["attack_success_rate"] == 100.0


def test_poison_errors():
    data = _images()
    with pytest.raises(DataError, match="not a class"):
        poison(data, count=2, target=9)
    with pytest.raises(DataError, match="trigger_size"):
        poison(data, count=2, trigger_size=5)
    with pytest.raises(DataError, match="only"):
        poison(data, count=1000)
    with pytest.raises(DataError, match="exactly one"):
        poison(data)


def test_poisoned_digits_model_learns_the_trigger_and_retraining_removes_it():
    """On real digits: θ_o trained on 5 % poison obeys the trigger; retraining without all of it does not."""
    data = load_data(DataConfig(name="digits"))
    m = poison(data, fraction=0.05, target=0, trigger_size=1, seed=0)  # 1 px of 8×8 ≈ the reference 3×3 of 32×32
    recipe = TrainConfig(epochs=8, batch_size=64, lr=0.05)

    def fit(train: SampleSet) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        ENGINE.fit(model, train, recipe, seed=0)
        return model

    theta_o = fit(m.data.train)
    v_o = corrective_values(m, lambda s: ENGINE.predict(theta_o, s))
    assert v_o["attack_success_rate"] > 80.0 and v_o["clean_acc"] > 90.0
    theta_r = fit(corrective_task(m, 1.0).retain)
    v_r = corrective_values(m, lambda s: ENGINE.predict(theta_r, s))
    assert v_r["attack_success_rate"] < 20.0 and v_r["corrupted_acc"] > v_o["corrupted_acc"] + 50


# -- the corrective scenario through the runner ------------------------------------------------------------------------
def _corrective_cfg(out, **scenario):
    from unlearnkit.bench import load_config

    sc = {"kind": "corrective", "manipulation": "poison", "count": 12, "target": 0, "trigger_size": 1,
          "identified_fractions": [0.5, 1.0], "seed": 0, **scenario}
    return load_config(data={
        "name": "tiny_corrective", "data": {"name": "digits", "train_subset": 200, "test_subset": 100},
        "model": {"name": "mlp", "hidden": [16]}, "scenario": sc,
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "methods": ["retrain", {"name": "finetune", "epochs": 1}], "metrics": ["corrective", "accuracy"],
        "seeds": [0], "engine": {"progress": False}, "output_dir": str(out)})


def _run(cfg):
    import io

    from rich.console import Console

    from unlearnkit.bench import Runner

    log = io.StringIO()
    runner = Runner(cfg, console=Console(file=log, width=200))
    return runner, runner.run(), log


@pytest.fixture(scope="module")
def corrective_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("corrective")
    cfg = _corrective_cfg(out)
    runner, outcome, _ = _run(cfg)
    return cfg, runner, outcome


def test_runner_corrective_one_row_per_p_and_theta_o_trained_once(corrective_run):
    cfg, runner, out = corrective_run
    rows = {(r["method"], r["identified_fraction"]): r for r in out.rows}
    assert set(rows) == {(m, p) for m in ("retrain", "original", "finetune") for p in (0.5, 1.0)}
    assert all(r["status"] == "ok" and r["seed"] == 0 for r in out.rows)
    # θ_o once per seed (on the poisoned D), one oracle per p
    assert runner.trained == ["original", "oracle", "oracle"] and runner.reused == []
    assert rows[("finetune", 0.5)]["original_sha256"] == rows[("finetune", 1.0)]["original_sha256"]
    assert rows[("retrain", 0.5)]["lineage_key"] != rows[("retrain", 1.0)]["lineage_key"]
    for p, n in ((0.5, 6), (1.0, 12)):
        assert rows[("finetune", p)]["scenario"]["n_forget"] == n == rows[("finetune", p)]["scenario"]["n_identified"]
        assert {"clean_acc", "corrupted_acc", "attack_success_rate", "unlearn_acc"} <= set(rows[("finetune", p)]["metrics"])
        tag = f"p{100 * p:g}"
        assert (out.run_dir / "per_sample" / f"finetune-seed0-{tag}.npz").is_file()
        assert (out.run_dir / "per_sample" / f"retrain-seed0-{tag}.npz").is_file()
        assert (out.run_dir / "checkpoints" / f"finetune-seed0-{tag}").is_dir()


def test_runner_corrective_oracle_of_each_p_never_saw_its_identified_ids(corrective_run):
    from unlearnkit.engine.checkpoint import ModelCache

    cfg, runner, out = corrective_run
    cache = ModelCache(Path(cfg.output_dir) / "cache")
    manipulated = None
    for branch in runner.plan:  # one branch per identified fraction p: learn D̃, forget D_f(p), evaluate
        learn, request, ev = branch.ops
        p = ev.dims["identified_fraction"]
        row = next(r for r in out.rows if r["is_oracle"] and r["identified_fraction"] == p)
        model = runner.new_model(0)
        _, extras = cache.load(row["lineage_key"], model)
        trained = extras["trained_ids"].numpy()
        forget = request.task.forget_ids
        manip = ev.references["corrective_manipulation"]
        manipulated = manip.manipulated_ids
        assert len(np.intersect1d(trained, forget)) == 0
        assert np.array_equal(np.sort(trained), np.setdiff1d(learn.task.train_ids, forget))
        # D_f is the identified part of the manipulation; the unidentified rest stays in the oracle's data
        assert set(forget) <= set(manipulated)
        assert set(np.setdiff1d(manipulated, forget)) <= set(trained)
        z = np.load(out.run_dir / "per_sample" / f"finetune-seed0-{ev.tag}.npz")
        assert np.array_equal(np.sort(z["forget.ids"]), np.sort(forget))
    assert len(manipulated) == 12


def test_runner_corrective_theta_o_is_not_shared_with_the_clean_data_model(corrective_run):
    """θ_o of the poisoned D has the same sample ids as θ_o of the clean D: the manipulation is part of its key."""
    cfg, _, _ = corrective_run
    clean = cfg.model_copy(update={"scenario": type(cfg.scenario)(kind="random", fraction=0.1),
                                   "metrics": ["accuracy"], "name": "tiny_clean"})
    runner, out, _ = _run(clean)
    assert "original" in runner.trained  # trained on clean data, not loaded from the poisoned run's cache


def test_runner_corrective_resume_reruns_only_the_deleted_stage(tmp_path):
    import json

    cfg = _corrective_cfg(tmp_path)
    _, first, _ = _run(cfg)
    path = first.run_dir / "results.jsonl"
    lines = path.read_text().splitlines()
    keep = [x for x in lines if not (json.loads(x)["method"] == "finetune" and json.loads(x)["identified_fraction"] == 0.5)]
    lost = next(json.loads(x) for x in lines if x not in keep)
    path.write_text("\n".join(keep) + "\n")
    runner, again, _ = _run(cfg)
    assert again.new_rows == 1 and runner.trained == []
    assert sorted(runner.reused) == ["oracle", "original"]  # θ_o and the p = 50 % oracle only
    redo = again.rows[-1]
    assert (redo["method"], redo["identified_fraction"]) == ("finetune", 0.5)
    assert redo["checkpoint_sha256"] == lost["checkpoint_sha256"]  # deterministic: the same θ_u and numbers
    timing = ("unlearn_seconds", "rte_ratio")  # timings; the per-query cost is in the row's "cost"
    assert {k: v for k, v in redo["metrics"].items() if k not in timing} == \
        {k: v for k, v in lost["metrics"].items() if k not in timing}
    runner, third, _ = _run(cfg)
    assert third.new_rows == 0 and runner.reused == [] and runner.trained == []


def test_runner_corrective_report_draws_curves_over_p(corrective_run):
    from unlearnkit.report import write_reports
    from unlearnkit.report.summary import summarize

    import json

    from plotread import assert_plots_rows

    _, _, out = corrective_run
    write_reports(out.run_dir)
    html = (out.run_dir / "report.html").read_text()
    assert 'id="corrective"' in html
    rows = [json.loads(x) for x in (out.run_dir / "results.jsonl").read_text().splitlines() if x.strip()]
    # x is the identified fraction in %; θ_r, θ_o and the method × p ∈ {50, 100}
    for key in ("attack_success_rate", "corrupted_acc", "clean_acc"):
        assert assert_plots_rows(html, f"corrective-{key}", rows, "identified_fraction", key, scale_x=100.0) == 6
    assert any(r["metrics"]["clean_acc"] > 0 for r in rows)
    summary = {s.method: s for s in summarize(out.rows)}  # the table: the last stage (p = 100 %) only
    assert summary["finetune"].n_seeds == 1
    p100 = next(r for r in out.rows if r["method"] == "finetune" and r["identified_fraction"] == 1.0)
    assert summary["finetune"].mean["clean_acc"] == p100["metrics"]["clean_acc"]


@pytest.mark.parametrize("scenario, match", [
    ({"kind": "corrective", "fraction": 0.05}, "needs 'manipulation'"),
    ({"kind": "corrective", "manipulation": "poison"}, "exactly one of 'fraction'"),
    ({"kind": "corrective", "manipulation": "poison", "count": 5, "classes": [1, 2]}, r"does not use \['classes'\]"),
    ({"kind": "corrective", "manipulation": "confusion", "count": 6, "classes": [2, 2]}, "two distinct classes"),
    ({"kind": "corrective", "manipulation": "confusion", "count": 6, "target": 1}, r"does not use \['target'\]"),
    ({"kind": "corrective", "manipulation": "poison", "count": 5, "identified_fractions": [0.5, 1.5]}, r"\(0, 1\]"),
    ({"kind": "corrective", "manipulation": "poison", "count": 5, "identified_fractions": []}, "empty"),
    ({"kind": "corrective", "manipulation": "poison", "count": 5, "requests": 2}, r"does not use \['requests'\]"),
    ({"kind": "random", "fraction": 0.1, "trigger_size": 2}, r"random does not use \['trigger_size'\]"),
])
def test_corrective_config_errors_say_what_and_how_to_fix(scenario, match):
    from unlearnkit.bench import load_config

    with pytest.raises(ConfigError, match=match):
        load_config(data={"scenario": scenario})


def test_corrective_config_defaults_and_metric_needs_the_scenario():
    from unlearnkit.bench import load_config

    sc = load_config(data={"scenario": {"kind": "corrective", "manipulation": "poison", "fraction": 0.05}}).scenario
    assert (sc.target, sc.trigger_size, sc.identified_fractions) == (0, 3, [0.1, 0.25, 0.5, 1.0])  # the reference's
    sc = load_config(data={"scenario": {"kind": "corrective", "manipulation": "confusion", "count": 8,
                                        "identified_fractions": [1.0, 0.25]}}).scenario
    assert sc.classes == [3, 5] and sc.identified_fractions == [0.25, 1.0]
    with pytest.raises(ConfigError, match="needs scenario kind: corrective"):
        load_config(data={"metrics": ["accuracy", "corrective"]})


def test_bundled_corrective_config_loads():
    from unlearnkit.bench import load_config

    cfg = load_config("digits_corrective")
    assert cfg.scenario.kind == "corrective" and "corrective" in cfg.metrics
    assert {m.name for m in cfg.methods} == {"retrain", "ssd", "scrub", "finetune"}


def test_runner_corrective_on_user_data_manipulates_the_given_train_set(tmp_path):
    """A prebuilt task (user data + model) with a corrective scenario: the confusion is applied to its D."""
    import io

    from rich.console import Console

    from testkit import make_blobs, tiny_model
    from unlearnkit.bench import Runner
    from unlearnkit.config.schema import ScenarioConfig
    from unlearnkit.data.scenarios import build_task

    data = make_blobs(n_per_class=40)
    task = build_task(data, ScenarioConfig(kind="random", fraction=0.1))
    cfg = _corrective_cfg(tmp_path, manipulation="confusion", count=10, classes=[0, 1], target=None,
                          trigger_size=None)
    runner = Runner(cfg, console=Console(file=io.StringIO()), task=task, model_factory=tiny_model)
    out = runner.run()
    assert all(r["status"] == "ok" for r in out.rows) and len(out.rows) == 6  # θ_r, θ_o, the method × 2 p
    manip = runner.plan[0].ops[-1].references["corrective_manipulation"]
    assert set(manip.manipulated_ids) <= set(task.train_ids) and len(manip.manipulated_ids) == 10
    swapped = runner.task.train.labels[np.isin(runner.task.train_ids, manip.manipulated_ids)]
    assert np.array_equal(np.sort(swapped), np.sort(1 - manip.true_labels))  # 0 ↔ 1
    assert {"confusion_rate", "corrupted_acc"} <= set(out.rows[-1]["metrics"])
