"""Plug-ins: a separate package (tests/fixtures/plugin_pkg, installed here by putting its folder — package plus
``.dist-info`` with an ``unlearnkit.plugins`` entry point — on ``sys.path``) registers a track, a method, a metric, a
data set and a model; the registries, the CLI, the config resolver and the runner see them without any import by
the user, and a new track needs nothing but its own files and that one registration."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import unlearnkit.registry as registry
from unlearnkit.bench import Runner, load_config
from unlearnkit.bench.tracks import TRACKS
from unlearnkit.errors import ConfigError
from unlearnkit.registry import DATASETS, METHODS, METRICS, MODELS

PKG = Path(__file__).resolve().parents[1] / "fixtures" / "plugin_pkg"
PLUGIN_COMPONENTS = ((TRACKS, "plugtoy"), (METHODS, "plugtoy_exact"), (METRICS, "plugtoy_w"),
                     (DATASETS, "toy_blobs"), (MODELS, "toy_linear"))


def _unload() -> None:
    for reg, name in PLUGIN_COMPONENTS:
        if name in reg._entries:
            del reg._entries[name]
    sys.modules.pop("unlearnkit_toy_plugin", None)


@pytest.fixture
def plugin(monkeypatch):
    """The plug-in installed (its folder on sys.path) and the registries' plug-in loader reset."""
    _unload()
    monkeypatch.syspath_prepend(str(PKG))
    monkeypatch.setattr(registry, "PLUGINS", registry._Plugins())
    yield
    _unload()


def test_registries_see_every_component_of_the_plugin(plugin):
    assert "plugtoy" in TRACKS.names()  # the first lookup loads the installed plug-ins
    assert {"plugtoy_exact"} <= set(METHODS.names()) and "plugtoy_w" in METRICS
    assert "toy_blobs" in DATASETS and "toy_linear" in MODELS
    assert registry.PLUGINS.names == ["toy"] and registry.PLUGINS.failed == {}


def test_cli_lists_the_plugins_methods_and_schema(plugin):
    from unlearnkit.cli import app

    res = CliRunner().invoke(app, ["methods", "--track", "plugtoy"])
    assert res.exit_code == 0 and "plugtoy_exact" in res.output and "finetune" not in res.output
    res = CliRunner().invoke(app, ["schema", "--track", "plugtoy"])
    assert res.exit_code == 0 and '"plugtoy"' in res.output


def test_a_new_track_runs_end_to_end(plugin, tmp_path):
    cfg = load_config(data={"track": "plugtoy", "methods": ["plugtoy_exact"], "seeds": [0],
                            "plugtoy": {"n": 12, "n_forget": 3}, "output_dir": str(tmp_path)})
    assert type(cfg).__name__ == "ToyExperiment" and cfg.metrics == ["plugtoy_w"]
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    rows = {r["method"]: r["metrics"] for r in out.rows}
    # D = 0..11 (θ_o: w = 5.5), D_r = 3..11 (θ_r: w = 7.0); the exact toy method lands on the oracle
    assert rows["original"]["w"] == pytest.approx(5.5) and rows["retrain"]["w"] == pytest.approx(7.0)
    assert rows["plugtoy_exact"]["w"] == pytest.approx(7.0) and rows["plugtoy_exact"]["w_gap_to_oracle"] == 0.0
    with pytest.raises(ConfigError, match="method 'finetune' is a classifier method.*its methods: plugtoy_exact"):
        load_config(data={"track": "plugtoy", "methods": ["finetune"]})


def test_the_plugins_data_set_and_model_serve_the_classifier_track(plugin, tmp_path):
    cfg = load_config(data={"data": {"name": "toy_blobs"}, "model": {"name": "toy_linear"},
                            "scenario": {"kind": "random", "fraction": 0.1}, "metrics": ["accuracy"],
                            "train": {"epochs": 5, "batch_size": 20, "lr": 0.1}, "seeds": [0],
                            "methods": [{"name": "finetune", "epochs": 1}], "output_dir": str(tmp_path),
                            "engine": {"progress": False}})
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    by = {r["method"]: r for r in out.rows}
    assert by["finetune"]["status"] == "ok" and by["original"]["metrics"]["test_acc"] > 90  # separable blobs


def test_a_broken_plugin_is_reported_not_hidden(monkeypatch, tmp_path):
    bad = tmp_path / "broken-0.1.dist-info"
    bad.mkdir()
    (bad / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (bad / "entry_points.txt").write_text("[unlearnkit.plugins]\nbroken = no_such_module_for_unlearnkit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "PLUGINS", registry._Plugins())
    with pytest.warns(registry.PluginWarning, match="plug-in 'broken'.*failed to load"):
        METHODS.names()
    with pytest.raises(ConfigError, match="plug-ins that failed to load: broken"):
        METHODS.entry("no_such_method")
