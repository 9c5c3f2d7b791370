"""CLI of the service: ledger verify (clean and tampered), delete over HTTP and --local, serve without a token,
and the service config (loopback default, typed errors)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service_fakes import TOKEN
from test_service_ledger import _attacker, _fill
from unlearnkit.cli import app
from unlearnkit.errors import ConfigError
from unlearnkit.service.cli import parse_ids
from unlearnkit.service.config import ServiceConfig, load_service_config
from unlearnkit.service.ledger import Ledger

runner = CliRunner()

FAST = ["--set", "sisa.shards=2", "--set", "sisa.slices=2", "--set", "sisa.train.epochs=2",
        "--set", "model.hidden=[16]", "--set", "executor=sequential", "--set", "executor_params={}"]


def test_ledger_verify_names_the_first_broken_row(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        _fill(ledger)
    ok = runner.invoke(app, ["ledger", "verify", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "ledger OK: 8 rows" in ok.output
    _attacker(path, "UPDATE events SET payload = '{\"v\":99}' WHERE seq = 7")
    bad = runner.invoke(app, ["ledger", "verify", str(path)])
    assert bad.exit_code == 1
    assert "BROKEN at row seq 7" in bad.output and "edited" in bad.output
    rep = json.loads(runner.invoke(app, ["ledger", "verify", str(path), "--json"]).stdout)
    assert (rep["ok"], rep["first_broken_seq"]) == (False, 7)
    missing = runner.invoke(app, ["ledger", "verify", str(tmp_path / "nope.sqlite3")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_ledger_verify_accepts_a_service_config(tmp_path):
    store = tmp_path / "store"
    with Ledger(store / "ledger.sqlite3") as ledger:
        _fill(ledger)
    r = runner.invoke(app, ["ledger", "verify", "service_digits", "--set", f"store={store}"])
    assert r.exit_code == 0 and "8 rows" in r.output


def test_parse_ids():
    assert parse_ids("1,2, 3") == [1, 2, 3]
    assert parse_ids("7 8") == [7, 8]
    for bad in ("", "1,-2", "a,b", "1.5"):
        with pytest.raises(ConfigError, match="--ids"):
            parse_ids(bad)


def test_delete_over_http(live_server, monkeypatch):
    url, svc = live_server
    monkeypatch.setenv("UNLEARNKIT_TOKEN", TOKEN)
    r = runner.invoke(app, ["delete", "--ids", "1,2,7000", "--url", url])
    assert r.exit_code == 0, r.output
    status = json.loads(r.stdout)
    assert (status["state"], status["deleted_ids"], status["unknown_ids"]) == ("done", [1, 2], [7000])
    monkeypatch.setenv("UNLEARNKIT_TOKEN", "wrong")
    denied = runner.invoke(app, ["delete", "--ids", "3", "--url", url])
    assert denied.exit_code == 2 and "HTTP 401" in denied.output
    monkeypatch.delenv("UNLEARNKIT_TOKEN")
    none = runner.invoke(app, ["delete", "--ids", "3", "--url", url])
    assert none.exit_code == 2 and "UNLEARNKIT_TOKEN" in none.output
    assert svc.ledger.counts()["received"] == 1


def test_delete_local_and_serve_needs_a_token(tmp_path, monkeypatch):
    store = tmp_path / "store"
    r = runner.invoke(app, ["delete", "--ids", "0,1,2", "--local", "service_digits", "--set", f"store={store}", *FAST])
    assert r.exit_code == 0, r.output
    status = json.loads(r.stdout)
    assert status["state"] == "done" and status["audit"]["model_version"] == 2
    # ids of the test split are not training samples: reported as unknown, not deleted
    from unlearnkit.config.schema import DataConfig
    from unlearnkit.data import load_data

    test_ids = set(load_data(DataConfig()).test.ids.tolist())
    assert status["deleted_ids"] == [i for i in (0, 1, 2) if i not in test_ids]
    assert status["unknown_ids"] == [i for i in (0, 1, 2) if i in test_ids] != []
    assert runner.invoke(app, ["ledger", "verify", str(store / "ledger.sqlite3")]).exit_code == 0
    monkeypatch.delenv("UNLEARNKIT_TOKEN", raising=False)
    s = runner.invoke(app, ["serve", "service_digits", "--set", f"store={store}"])
    assert s.exit_code == 2 and "UNLEARNKIT_TOKEN" in s.output


def test_service_config_defaults_and_errors(tmp_path):
    cfg = load_service_config("service_digits")
    assert cfg.host == "127.0.0.1" and cfg.is_loopback and cfg.sisa["shards"] == 4
    assert ServiceConfig().host == "127.0.0.1"
    assert str(load_service_config("service_digits", [f"store={tmp_path}"]).ledger_path) == \
        str(tmp_path / "ledger.sqlite3")
    with pytest.raises(ConfigError, match="unknown key 'prot'"):
        load_service_config("service_digits", ["prot=1"])
    with pytest.raises(ConfigError, match="host must be an IP address"):
        load_service_config("service_digits", ["host=example.com"])
    with pytest.raises(ConfigError, match="sisa.shardz"):
        load_service_config("service_digits", ["sisa.shardz=3"])
    assert not load_service_config("service_digits", ["host=0.0.0.0"]).is_loopback


def test_serve_refuses_a_busy_port_before_fitting(tmp_path, monkeypatch):
    """A port already listened on is a one-line config error (exit 2) before the store is created or fitted, not
    uvicorn's 'address already in use' (exit 3) after the first fit."""
    import socket

    monkeypatch.setenv("UNLEARNKIT_TOKEN", TOKEN)
    store = tmp_path / "store"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = runner.invoke(app, ["serve", "service_digits", "--set", f"store={store}", "--port", str(port), *FAST])
    assert r.exit_code == 2, r.output
    assert f"127.0.0.1:{port}" in r.output and "--port" in r.output
    assert not (store / "state.json").exists()


def test_switching_the_executor_drops_the_old_executors_params():
    base = load_service_config("service_digits")
    assert base.executor == "process" and base.executor_params == {"max_workers": 2}
    seq = load_service_config("service_digits", ["executor=sequential"])  # was: unknown key max_workers
    assert seq.executor == "sequential" and seq.executor_params == {}
    same = load_service_config("service_digits", ["executor=process"])  # not a switch: the file's params stay
    assert same.executor_params == {"max_workers": 2}
    both = load_service_config("service_digits", ["executor=process", "executor_params={max_workers: 1}"])
    assert both.executor_params == {"max_workers": 1}
    with pytest.raises(ConfigError, match="executor"):  # params given for the wrong executor are still refused
        load_service_config("service_digits", ["executor=sequential", "executor_params={max_workers: 1}"])
