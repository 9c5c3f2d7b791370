"""The runner and the config loader under hostile input (issue 14, items 7–13): every bad input is a typed error
before training (``unlearnkit run`` exits 2 with one message, never a traceback or a hang), damaged result rows and
edited manifests are caught, links planted in run and cache folders are refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.bench import load_config
from unlearnkit.config.loader import deep_merge
from unlearnkit.errors import CheckpointError, ConfigError, UnlearnkitError

cli = CliRunner()

# an alias bomb of ~450 bytes in a real field: 9**9 ≈ 387 million strings once expanded (the old loader formatted
# repr() of the whole input into the "name: Input should be a valid string (got ...)" message: it never returned)
BOMB = ("name:\n  - &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
        + "".join(f"  - &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))

# (what, YAML text) → each must be refused with a ConfigError naming the problem
HOSTILE = [
    ("deep nesting in the file", "model: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("deep mapping nesting", "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n",
     "nested"),
    ("NUL in name", 'name: "a\\0b"\n', "NUL"),
    ("NUL in output_dir", 'output_dir: "runs\\0x"\n', "NUL"),
    ("NUL in cache_dir", 'cache_dir: "c\\0"\n', "NUL"),
    ("lone surrogate in name", 'name: "a\\ud800"\n', "surrogate"),
    ("lone surrogate in output_dir", 'output_dir: "\\udfff"\n', "surrogate"),
    ("lone surrogate in cache_dir", 'cache_dir: "\\ud800x"\n', "surrogate"),
    ("negative scenario.seed", "scenario: {kind: random, fraction: 0.1, seed: -1}\n", "scenario.seed"),
    ("negative data.split_seed", "data: {split_seed: -3}\n", "data.split_seed"),
    ("seed beyond int64", "seeds: [9223372036854775808]\n", "seeds"),
    ("a huge seed count", "seeds: 1000000000000\n", "seeds as a count"),
    ("negative hidden size", "model: {name: mlp, hidden: [-4]}\n", "hidden"),
    ("huge hidden size", "model: {name: mlp, hidden: [10000000000]}\n", "hidden"),
    ("lr 1e308", "train: {lr: 1e308}\n", "train.lr"),
    ("huge engine.threads", "engine: {threads: 1000000000}\n", "engine.threads"),
    ("a seed that torch refuses", "seeds: [4294967296]\n", "seeds"),
    # item 8–10 (the alias bomb: see test_the_alias_bomb_is_refused_quickly_in_a_fresh_process)
    ("recursive alias", "methods: &m [*m]\n", "refers to itself"),
    ("duplicate key", "name: a\nseeds: [0]\nname: b\n", "duplicate key 'name'"),
    ("nested duplicate key", "train: {epochs: 2, lr: 0.1, epochs: 3}\n", "duplicate key 'epochs'"),
    ("epochs: true", "train: {epochs: true}\n", "boolean"),
    ("a boolean lr", "train: {lr: true}\n", "boolean"),
    ("hidden size 0", "model: {name: mlp, hidden: [0]}\n", "hidden"),
    ("run name with a newline", 'name: "run\\nx"\n', "line break"),
    ("method lr .inf", "methods: [{name: finetune, lr: .inf}]\n", "finite"),
    ("method lr .nan", "methods: [{name: finetune, lr: .nan}]\n", "finite"),
    ("5000-character label", "methods: [{name: finetune, label: " + "x" * 5000 + "}]\n", "at most 100"),
    ("sisa shards 100000", "methods: [{name: sisa, shards: 100000}]\n", "shards"),
]


def _write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
    return p


@pytest.mark.parametrize("what, text, fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_config_is_a_typed_error(tmp_path, what, text, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        load_config(_write(tmp_path, text))
    assert len(str(err.value)) < 3000  # never the whole input in the message


@pytest.mark.parametrize("what, text, fragment", HOSTILE[:8] + HOSTILE[17:19], ids=[h[0] for h in HOSTILE[:8] +
                                                                                       HOSTILE[17:19]])
def test_cli_run_exits_2_without_a_traceback(tmp_path, monkeypatch, what, text, fragment):
    monkeypatch.chdir(tmp_path)  # the default output_dir "runs" would be here
    r = cli.invoke(app, ["run", str(_write(tmp_path, text))])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "error:" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "runs").exists()  # refused before the run folder exists


def test_a_config_that_is_not_utf8_is_a_typed_error(tmp_path):
    p = _write(tmp_path, b"name: caf\xe9\nseeds: [0]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    assert cli.invoke(app, ["run", str(p)]).exit_code == 2


@pytest.mark.parametrize("override, fragment", [
    ("model.hidden=" + "[" * 3000 + "]" * 3000, "nested too deeply"),
    ("a" + ".a" * 5000 + "=1", "more than 50 parts"),
    ("name=" + "x" * 200, "at most 100"),
    ("seeds=" + "[" * 60 + "0" + "]" * 60, "nested more than 50"),
])
def test_hostile_overrides_are_typed_errors(override, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        load_config("digits_random10", [override])
    assert len(str(err.value)) < 3000


def test_the_alias_bomb_is_refused_quickly_in_a_fresh_process(tmp_path):
    """``unlearnkit run BOMB`` exits 2 with one message. The old loader formatted repr() of the expanded input into
    its message and never returned: run in a child process with a time limit, so a regression fails instead of
    hanging the suite."""
    p = _write(tmp_path, BOMB)
    assert len(p.read_bytes()) < 450
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        out = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "run", str(p)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("`unlearnkit run` on a 339-byte alias bomb did not return within 120 s")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "alias" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(p)


def test_anchors_and_merge_keys_still_work(tmp_path):
    p = _write(tmp_path, "base: &t {epochs: 2, lr: 0.05}\n")
    text = ("train: &t {epochs: 2, lr: 0.05, batch_size: 32}\noracle: {<<: *t, epochs: 3}\nseeds: [0]\n")
    cfg = load_config(_write(tmp_path, text))
    assert cfg.oracle.epochs == 3 and cfg.oracle.lr == 0.05 and cfg.train.epochs == 2
    assert p.exists()


def test_valid_edge_values_are_still_accepted():
    cfg = load_config("digits_random10", ["seeds=[0, 4294967295]", "engine.threads=1", "train.lr=1e-4",
                                          "model.hidden=[65536]", "name=ok-name_1.x"])
    assert cfg.seeds == [0, 4294967295] and cfg.model.params["hidden"] == [65536]


# -- runner: folders checked before training; damaged rows; manifest meta; links -----------------------------------
def _tiny(out: Path, **over):
    base = {"name": "tiny", "data": {"name": "digits", "train_subset": 200, "test_subset": 100},
            "model": {"name": "mlp", "hidden": [16]}, "scenario": {"kind": "random", "fraction": 0.1, "seed": 0},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.05}, "methods": [{"name": "finetune", "epochs": 1}],
            "seeds": [0], "engine": {"progress": False, "threads": 1}, "output_dir": str(out)}
    return load_config(data=deep_merge(base, over))


def _run(cfg):
    from unlearnkit.bench import Runner

    runner = Runner(cfg, console=Console(file=io.StringIO()))
    return runner, runner.run()


def _no_training(monkeypatch):
    from unlearnkit.bench import Runner

    def refuse(*a, **k):
        raise AssertionError("trained before the folder checks")
    monkeypatch.setattr(Runner, "_cached_or_trained", refuse)


def test_an_unwritable_cache_dir_is_refused_before_training(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for cache in (blocker, blocker / "sub"):
        cfg = _tiny(tmp_path / "runs", cache_dir=str(cache))
        with pytest.raises(ConfigError, match="model cache folder"):
            _run(cfg)


def test_a_linked_subfolder_of_the_run_is_refused_before_training(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    cfg = _tiny(tmp_path / "runs")
    from unlearnkit.bench.runner import run_dir_for

    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "per_sample").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link"):
        _run(cfg)


def test_a_damaged_row_without_seed_is_skipped_and_the_run_resumes(tmp_path):
    from unlearnkit.report.summary import ReportWarning, read_results

    cfg = _tiny(tmp_path / "runs")
    _, first = _run(cfg)
    results = first.run_dir / "results.jsonl"
    with open(results, "a") as f:
        f.write(json.dumps({"method": "finetune", "status": "ok"}) + "\n")   # valid JSON, no seed
        f.write(json.dumps({"method": "finetune", "seed": "0", "status": "ok"}) + "\n")  # seed not an integer
    with pytest.warns(ReportWarning) as caught:
        rows, skipped = read_results(results)
    said = [str(w.message) for w in caught]
    assert any("no 'seed'" in m for m in said) and any("'seed' is str, not an integer" in m for m in said)
    assert skipped == 2 and all(isinstance(r["seed"], int) for r in rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, again = _run(cfg)  # the old runner raised KeyError('seed') here
    assert again.new_rows == 0 and len(again.rows) == len(first.rows)


def test_an_edited_manifest_meta_is_refused(tmp_path):
    cfg = _tiny(tmp_path / "runs")
    runner, _ = _run(cfg)
    manifests = sorted(runner.cache.root.glob("*/manifest.json"))
    assert manifests
    man = json.loads(manifests[0].read_text())
    man["meta"]["seconds"] = man["meta"]["seconds"] * 100  # inflate θ_o's training time: every RTE ratio changes
    manifests[0].write_text(json.dumps(man, indent=2, sort_keys=True))
    from unlearnkit.engine.checkpoint import read_manifest

    with pytest.raises(CheckpointError, match="manifest digest mismatch"):
        read_manifest(manifests[0].parent)
    with pytest.raises(CheckpointError, match="manifest digest mismatch"):
        _run(_tiny(tmp_path / "runs2", cache_dir=str(runner.cache.root)))


@pytest.mark.parametrize("name", ["config.sha256", "config.resolved.yaml", "results.jsonl"])
def test_links_in_the_run_folder_are_refused_and_their_targets_untouched(tmp_path, name):
    cfg = _tiny(tmp_path / "runs")
    _, first = _run(cfg)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (first.run_dir / name).unlink()
    (first.run_dir / name).symlink_to(victim)
    with pytest.raises(UnlearnkitError, match="symbolic link"):
        _run(cfg)
    assert victim.read_text() == "precious\n"


def test_a_linked_cache_entry_is_refused(tmp_path):
    from unlearnkit.engine.checkpoint import ModelCache

    cfg = _tiny(tmp_path / "runs")
    runner, _ = _run(cfg)
    entry = sorted(p for p in runner.cache.root.iterdir() if p.is_dir())[0]
    moved = tmp_path / "moved"
    entry.rename(moved)
    entry.symlink_to(moved)
    with pytest.raises(CheckpointError, match="symbolic link"):
        ModelCache(runner.cache.root).load(entry.name, runner.new_model(0))
