"""Tracks: the config refuses mismatched sections, methods and metrics; the runner drives any registered track."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from unlearnkit.bench import Runner
from unlearnkit.bench.tracks import TRACKS, Track
from unlearnkit.bench import load_config
from typing import ClassVar, Literal

from pydantic import Field

from unlearnkit.config.schema import ExperimentConfig, Frozen
from unlearnkit.errors import ConfigError
from unlearnkit.methods import METHODS, Unlearner, UnlearnResult
from unlearnkit.metrics import METRICS, Metric


class ToyConfig(Frozen):
    n: int = 12
    n_forget: int = 3


class ToyExperiment(ExperimentConfig):
    """The toy track's experiment: its one section, ``toy:``."""

    default_metrics: ClassVar[tuple[str, ...]] = ("toy_w",)
    track: Literal["toy"] = "toy"
    toy: ToyConfig = Field(default_factory=ToyConfig)


class ToyTask:
    """D = ids 0..n-1, D_f = the first n_forget."""

    def __init__(self, n: int, n_forget: int) -> None:
        self.name = "toy"
        self.train_ids = np.arange(n, dtype=np.int64)
        self.forget_ids = self.train_ids[:n_forget]
        self.retain_ids = self.train_ids[n_forget:]
        self.scenario = {"kind": "toy", "n_forget": n_forget, "n_retain": n - n_forget, "n_test": 0}


class ToyTrack(Track):
    """A model = one scalar parameter w; training sets w = mean of the training ids (a closed form)."""

    name = "toy"

    def build_task(self) -> ToyTask:
        return ToyTask(self.section.n, self.section.n_forget)

    def new_model(self, task: ToyTask, init_seed: int) -> nn.Module:
        m = nn.Module()
        m.w = nn.Parameter(torch.zeros(()))
        return m

    def train(self, task: ToyTask, role: str, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        ids = task.train_ids if role == "original" else task.retain_ids
        m = self.new_model(task, seed)
        with torch.no_grad():
            m.w.fill_(float(ids.mean()))
        return m, 0.5, ids

    def unlearn(self, task, method, model, ctx):
        return method.unlearn(model, task.forget_ids, task.retain_ids, self.engine, ctx)

    def evaluate(self, task, model, seed, references, metrics, **kw):
        values = {}
        for name in metrics:
            values.update(METRICS.build(name).compute_toy(model, references))
        return values, {"toy.w": np.array([float(model.w.detach())])}


class NoParams(Frozen):
    pass


class ToyForget(Unlearner):
    """Sets w to the mean of the retain ids (exact for this model)."""

    track = "toy"

    def unlearn(self, model, forget, retain, engine, context=None):  # ids arrays instead of SampleSets
        with torch.no_grad():
            model.w.fill_(float(np.mean(retain)))
        return UnlearnResult(model, seconds=0.01, steps=0)

    def _unlearn(self, *a: Any) -> UnlearnResult:  # pragma: no cover - unlearn is overridden
        raise NotImplementedError


class ToyW(Metric):
    track = "toy"

    def compute(self, ctx):  # pragma: no cover - the toy track calls compute_toy
        raise NotImplementedError

    def compute_toy(self, model, references) -> dict[str, float]:
        w, w_r = float(model.w.detach()), float(references["oracle_model"].w.detach())
        return {"w": w, "w_gap_to_oracle": abs(w - w_r)}


@pytest.fixture
def toy_track():
    TRACKS.register("toy", config=ToyExperiment)(ToyTrack)
    METHODS.register("toy_forget", config=NoParams)(ToyForget)
    METRICS.register("toy_w")(ToyW)
    yield
    TRACKS.unregister("toy")
    METHODS.unregister("toy_forget")
    METRICS.unregister("toy_w")


def test_unknown_track_suggests():
    with pytest.raises(ConfigError, match=r"unknown track 'clasifier'.*Did you mean 'classifier'"):
        load_config(data={"track": "clasifier"})


def test_section_of_another_track_is_refused():
    with pytest.raises(ConfigError, match=r"section 'graph' is only used with track: graph"):
        load_config(data={"graph": {}})


def test_classifier_fields_refused_on_other_tracks(toy_track):
    with pytest.raises(ConfigError, match=r"\['data', 'train'\] belong to the classifier track"):
        load_config(data={"track": "toy", "methods": ["toy_forget"], "data": {"name": "digits"}, "train": {}})


def test_method_and_metric_of_another_track_are_refused(toy_track):
    with pytest.raises(ConfigError, match=r"method 'finetune' is a classifier method.*its methods: toy_forget"):
        load_config(data={"track": "toy", "methods": ["finetune"]})
    with pytest.raises(ConfigError, match=r"method 'toy_forget' is a toy method; this experiment's track is "
                                          r"'classifier'"):
        load_config(data={"methods": ["toy_forget"]})
    with pytest.raises(ConfigError, match=r"metric 'accuracy' is a classifier metric.*its metrics: toy_w"):
        load_config(data={"track": "toy", "methods": ["toy_forget"], "metrics": ["accuracy"]})


def test_a_track_without_a_section_field_uses_its_defaults(toy_track):
    cfg = load_config(data={"track": "toy", "methods": ["toy_forget"]})
    assert cfg.metrics == ["toy_w"] and cfg.toy == ToyConfig()
    assert not {"llm", "graph", "recsys", "data"} & set(type(cfg).model_fields)


def test_runner_drives_a_registered_track(toy_track, tmp_path):
    cfg = load_config(data={"track": "toy", "methods": ["toy_forget"], "seeds": [0, 1],
                            "output_dir": str(tmp_path / "runs")})
    assert cfg.metrics == ["toy_w"]
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    rows = {(r["method"], r["seed"]): r for r in out.rows}
    assert set(rows) == {(m, s) for m in ("retrain", "original", "toy_forget") for s in (0, 1)}
    assert rows[("original", 0)]["metrics"]["w"] == pytest.approx(5.5)  # θ_o's row
    # D = 0..11 (θ_o: w = 5.5), D_r = 3..11 (θ_r: w = 7.0); the exact toy unlearner lands on the oracle
    assert rows[("retrain", 0)]["metrics"]["w"] == pytest.approx(7.0)
    assert rows[("toy_forget", 0)]["metrics"]["w"] == pytest.approx(7.0)
    assert rows[("toy_forget", 0)]["metrics"]["w_gap_to_oracle"] == pytest.approx(0.0)
    assert "avg_gap" not in rows[("toy_forget", 0)]["metrics"]  # the toy track declares no gap keys
    again = Runner(cfg, console=Console(file=io.StringIO())).run()
    assert again.new_rows == 0 and sorted(again.reused) == [] and again.trained == []


# -- metric settings from the config --------------------------------------------------------------------------------
def test_metric_params_are_validated_against_the_metric_config():
    cfg = load_config(data={"metrics": ["accuracy", "mia"], "metric_params": {"mia": {"attacks": ["loss"]}}})
    assert cfg.metric_params["mia"]["attacks"] == ["loss"]
    assert cfg.metric_params["mia"]["nonmembers"] == "matched"  # defaults filled in: the resolved config is complete
    with pytest.raises(ConfigError, match=r"unknown key.*atacks.*Allowed keys: attacks"):
        load_config(data={"metrics": ["mia"], "metric_params": {"mia": {"atacks": ["loss"]}}})
    with pytest.raises(ConfigError, match=r"metric_params has settings for 'mia', which is not in metrics"):
        load_config(data={"metrics": ["accuracy"], "metric_params": {"mia": {}}})


def test_metric_params_reach_the_metric_and_the_config_hash(tmp_path):
    from unlearnkit.bench.tracks.classifier import ClassifierTrack
    from unlearnkit.config.loader import config_hash
    from unlearnkit.engine.loop import Engine

    base = {"metrics": ["mia"], "output_dir": str(tmp_path)}
    a = load_config(data=base)
    b = load_config(data=base | {"metric_params": {"mia": {"attacks": ["entropy"]}}})
    assert config_hash(a) != config_hash(b)  # a different evaluation is a different run folder, never stale rows
    metric = ClassifierTrack(b, Engine(b.engine)).build_metric("mia")
    assert tuple(metric.config.attacks) == ("entropy",)


def test_resolved_config_shows_only_what_the_track_reads():
    from unlearnkit.config.loader import dump_yaml, to_plain

    clf = to_plain(load_config(data={"methods": ["finetune"]}))
    # a classifier run serialises (and hashes) as before tracks existed: no track keys
    assert not {"track", "llm", "graph", "recsys", "metric_params"} & set(clf)
    rec = load_config(data={"track": "recsys", "methods": ["reverse_bpr"]})
    plain = to_plain(rec)
    assert plain["track"] == "recsys" and "recsys" in plain
    assert not {"data", "model", "scenario", "train", "oracle", "llm", "graph"} & set(plain)
    assert load_config(data=plain) == rec  # the resolved config loads back to the same config
    assert "digits" not in dump_yaml(rec)


def test_report_header_names_the_track_data_and_model():
    from unlearnkit.report import build_meta
    from unlearnkit.report._common import meta_lines

    cfg = load_config(data={"track": "recsys", "methods": ["reverse_bpr"]})
    from unlearnkit.config.loader import to_plain

    lines = dict(meta_lines(build_meta("x", [], config=to_plain(cfg))))
    assert lines["track"] == "recsys" and lines["data"].startswith("synthetic") and lines["model"] == "mf"
