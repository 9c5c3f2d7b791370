"""CLI flags that no other test invoked: ``methods`` / ``metrics --markdown`` / ``--track``, ``schema --track``, plain
``report RUN_DIR``, ``report --neurips --max-time-fraction``, ``delete --no-wait / --idempotency-key / --timeout /
--token``, ``ledger verify --expected-head`` and ``serve --host``.

Each test checks what the flag changes (the rows listed, the request sent, the address bound, the verdict), not only
the exit code. ``delete`` talks to a stand-in HTTP service on 127.0.0.1 that records every request; ``serve`` runs with
the service build and uvicorn replaced, so nothing is trained or served.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.methods import METHODS
from unlearnkit.metrics import METRICS


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env={"COLUMNS": "250", **(env or {})}).invoke(app, list(args))


def _track_of(entry) -> str:
    return getattr(entry.obj, "track", "classifier")


def _md_names(text: str) -> list[str]:
    """The backticked names in the first column of a markdown table."""
    return re.findall(r"^\| `([^`]+)` \|", text, flags=re.M)


# -- methods / metrics ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command,registry", [("methods", METHODS), ("metrics", METRICS)])
def test_markdown_lists_every_registered_entry_once(command, registry):
    res = invoke(command, "--markdown")
    assert res.exit_code == 0, res.output
    names = _md_names(res.stdout)
    assert sorted(names) == sorted(registry.names()) and len(names) == len(set(names))
    assert res.stdout.splitlines()[1].startswith("| --- |")


@pytest.mark.parametrize("command,registry", [("methods", METHODS), ("metrics", METRICS)])
@pytest.mark.parametrize("track", ["classifier", "llm", "graph", "recsys"])
def test_track_filters_both_listings(command, registry, track):
    want = sorted(n for n, e in registry.items() if _track_of(e) == track)
    assert want, f"no {command} of track {track}"
    md = invoke(command, "--markdown", "--track", track)
    assert md.exit_code == 0, md.output
    assert sorted(_md_names(md.stdout)) == want  # the markdown honours --track too
    table = invoke(command, "--track", track)
    assert table.exit_code == 0, table.output
    shown = {n for n in registry.names() if re.search(rf"(^|\s){re.escape(n)}\s", table.stdout, flags=re.M)}
    assert set(want) <= shown
    others = {n for n, e in registry.items() if _track_of(e) != track and not any(n in w for w in want)}
    assert not shown & others, sorted(shown & others)


def test_methods_json_with_track():
    res = invoke("methods", "--json", "--track", "graph")
    data = json.loads(res.stdout)
    assert sorted(data) == sorted(n for n, e in METHODS.items() if _track_of(e) == "graph")
    assert all(v["track"] == "graph" for v in data.values())


@pytest.mark.parametrize("command", ["methods", "metrics"])
def test_unknown_track_is_a_named_error(command):
    res = invoke(command, "--track", "vision")
    assert res.exit_code == 2
    assert "vision" in res.output and "classifier" in res.output  # names what exists


# -- schema -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("track,field", [("graph", "deletion"), ("llm", "eval"), ("recsys", "data")])
def test_schema_track_prints_that_tracks_experiment_schema(track, field):
    """A track owns its experiment class: `schema --track T` prints it, with T's section and that section's fields."""
    from unlearnkit.bench.tracks import TRACKS

    res = invoke("schema", "--track", track)
    assert res.exit_code == 0, res.output
    schema = json.loads(res.stdout)
    assert schema == json.loads(json.dumps(TRACKS.entry(track).config.model_json_schema()))
    ref = schema["properties"][track]
    ref = ref.get("$ref") or next(a["$ref"] for a in ref.get("anyOf", ref.get("allOf", [])) if "$ref" in a)
    assert field in schema["$defs"][ref.rsplit("/", 1)[-1]]["properties"]
    other = next(t for t in ("graph", "llm", "recsys") if t != track)
    assert other not in schema["properties"]  # only this track's section
    full = json.loads(invoke("schema").stdout)
    assert schema != full


def test_schema_of_the_classifier_track_and_unknown_track():
    res = invoke("schema", "--track", "classifier")
    assert res.exit_code == 0, res.output
    props = json.loads(res.stdout)["properties"]
    assert {"data", "model", "scenario"} <= set(props) and "graph" not in props
    res = invoke("schema", "--track", "vision")
    assert res.exit_code == 2 and "vision" in res.output


# -- report -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_seed_run(tmp_path_factory):
    from unlearnkit.bench import run_experiment
    from unlearnkit.bench import load_config

    out = tmp_path_factory.mktemp("run")
    cfg = load_config("digits_random10", [
        "engine.progress=false", "engine.threads=1", f"output_dir={out}", "seeds=3", "data.train_subset=200",
        "data.test_subset=60", "train.epochs=3", "methods=[retrain, {name: finetune, epochs: 1}]",
    ])
    return run_experiment(cfg, write_report=False).run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


def test_plain_report_rebuilds_both_files_from_the_rows(three_seed_run, tmp_path):
    run = _copy(three_seed_run, tmp_path)
    assert not (run / "report.md").exists() and not (run / "report.html").exists()
    res = invoke("report", str(run))
    assert res.exit_code == 0, res.output
    assert (run / "report.md").is_file() and (run / "report.html").is_file()
    assert "finetune" in res.stdout and "wrote" in res.stdout
    assert not (run / "neurips.json").exists()  # only with --neurips
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines() if x.strip()]
    ta = [r["metrics"]["test_acc"] for r in rows if r["method"] == "finetune"]
    assert len(ta) == 3
    md = (run / "report.md").read_text()
    assert f"{sum(ta) / 3:.2f}" in md  # the table's TA is the mean of the three seeds' rows


def test_max_time_fraction_zeroes_scores_over_the_cap(three_seed_run, tmp_path):
    run = _copy(three_seed_run, tmp_path)
    res = invoke("report", str(run), "--neurips", "--max-time-fraction", "1e-9")
    assert res.exit_code == 0, res.output
    capped = json.loads((run / "neurips.json").read_text())
    assert capped["max_time_fraction"] == 1e-9
    ft = capped["methods"]["finetune"]
    assert ft["time_cap_exceeded"] is True and ft["neurips_score"] == 0.0
    res = invoke("report", str(run), "--neurips", "--max-time-fraction", "1e9")
    assert res.exit_code == 0, res.output
    loose = json.loads((run / "neurips.json").read_text())["methods"]["finetune"]
    assert loose["time_cap_exceeded"] is False
    assert loose["neurips_score"] == pytest.approx(loose["forget_quality"] * loose["retain_ratio"] * loose["test_ratio"])
    res = invoke("report", str(run), "--neurips")
    uncapped = json.loads((run / "neurips.json").read_text())
    assert uncapped["max_time_fraction"] is None and uncapped["methods"]["finetune"]["time_cap_exceeded"] is None
    bad = invoke("report", str(run), "--neurips", "--max-time-fraction", "0")
    assert bad.exit_code == 2 and "--max-time-fraction must be > 0" in bad.output


# -- delete over HTTP -------------------------------------------------------------------------------------------------
class FakeService:
    """A stand-in deletion API on 127.0.0.1: records requests; each GET advances the state along ``states``."""

    def __init__(self, states: list[str]) -> None:
        self.states, self.posts, self.gets = states, [], []
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                svc.posts.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                self._reply(202, {"request_id": "r-1", "state": "queued"})

            def do_GET(self):  # noqa: N802
                svc.gets.append({"path": self.path, "auth": self.headers.get("Authorization")})
                state = svc.states[min(len(svc.gets) - 1, len(svc.states) - 1)]
                self._reply(200, {"request_id": "r-1", "state": state, "deleted_ids": [4, 5] if state == "done" else [],
                                  "reason": "shard 1 diverged" if state == "failed" else None})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeService:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_delete_token_and_idempotency_key_reach_the_service_and_no_wait_polls_once():
    with FakeService(["queued", "processing", "done"]) as svc:
        res = invoke("delete", "--ids", "4,5", "--url", svc.url, "--token", "from-flag", "--idempotency-key", "k-42",
                     "--no-wait", env={"UNLEARNKIT_TOKEN": "from-env"})
    assert res.exit_code == 0, res.output
    assert svc.posts == [{"path": "/v1/deletions", "auth": "Bearer from-flag",
                          "body": {"sample_ids": [4, 5], "idempotency_key": "k-42"}}]
    assert [g["path"] for g in svc.gets] == ["/v1/deletions/r-1"] and svc.gets[0]["auth"] == "Bearer from-flag"
    assert json.loads(res.stdout)["state"] == "queued"  # returned at once, not polled to the end


def test_delete_waits_by_default_and_makes_a_fresh_key_each_time():
    with FakeService(["queued", "processing", "done"]) as svc:
        first = invoke("delete", "--ids", "4 5", "--url", svc.url, env={"UNLEARNKIT_TOKEN": "from-env"})
        assert first.exit_code == 0, first.output
        assert json.loads(first.stdout)["state"] == "done" and len(svc.gets) == 3
        svc.gets.clear()
        second = invoke("delete", "--ids", "4,5", "--url", svc.url, env={"UNLEARNKIT_TOKEN": "from-env"})
    assert second.exit_code == 0
    assert [p["auth"] for p in svc.posts] == ["Bearer from-env"] * 2
    keys = [p["body"]["idempotency_key"] for p in svc.posts]
    assert keys[0] != keys[1] and all(k.startswith("cli-") for k in keys)


def test_delete_timeout_stops_polling_and_reports_the_last_state():
    with FakeService(["processing"]) as svc:  # never finishes
        res = invoke("delete", "--ids", "1", "--url", svc.url, "--token", "t", "--timeout", "0.3")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["state"] == "processing"
    # polled every 0.2 s until 0.3 s had passed (about 3 polls), then gave up instead of the default 600 s
    assert 1 <= len(svc.gets) <= 8, len(svc.gets)


def test_delete_failed_request_exits_1():
    with FakeService(["failed"]) as svc:
        res = invoke("delete", "--ids", "1", "--url", svc.url, "--token", "t")
    assert res.exit_code == 1 and json.loads(res.stdout)["state"] == "failed"
    assert "shard 1 diverged" in res.output


# -- ledger verify --expected-head ------------------------------------------------------------------------------------
def test_ledger_verify_expected_head_detects_rows_cut_from_the_end(tmp_path):
    from unlearnkit.service.ledger import APPEND_ONLY_TRIGGERS, Ledger

    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        a, _ = ledger.receive([1, 2], "key-a")
        ledger.append(a.request_id, "planned", {"window": "w1"})
        _, head = ledger.head()
        b, _ = ledger.receive([7], "key-b")
        ledger.append(b.request_id, "planned", {"window": "w1"})
        _, last = ledger.head()
    assert head != last
    ok = invoke("ledger", "verify", str(path), "--expected-head", head)  # an older head is still in the chain
    assert ok.exit_code == 0, ok.output
    # someone with write access removes the last two rows: the shorter chain is consistent on its own ...
    db = sqlite3.connect(str(path))
    db.executescript("".join(f"DROP TRIGGER IF EXISTS {t};" for t in APPEND_ONLY_TRIGGERS)
                     + "DELETE FROM events WHERE seq > 2;")
    db.close()
    plain = invoke("ledger", "verify", str(path))
    assert plain.exit_code == 0 and "2 rows" in plain.stdout
    # ... but not with the head hash kept elsewhere
    cut = invoke("ledger", "verify", str(path), "--expected-head", last)
    assert cut.exit_code == 1
    assert "BROKEN at row seq 3" in cut.stdout and "expected head hash" in cut.stdout
    assert invoke("ledger", "verify", str(path), "--expected-head", head).exit_code == 0


# -- serve --host -----------------------------------------------------------------------------------------------------
def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_serve_host_is_the_address_bound(tmp_path, monkeypatch):
    import types

    import uvicorn

    from unlearnkit.service import http as service_http
    from unlearnkit.service.deletion import DeletionService

    bound = {}
    ledger = types.SimpleNamespace(record_head=lambda why: {"head_seq": 0, "head_hash": "cd" * 32})
    fake = types.SimpleNamespace(serving=lambda: types.SimpleNamespace(version=1, model_digest="ab" * 32),
                                 pending_count=0, ledger=ledger, close=lambda: None)
    monkeypatch.setattr(DeletionService, "from_config", classmethod(lambda cls, cfg, console=None: fake))
    monkeypatch.setattr(service_http, "create_app", lambda service, token, **kw: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: bound.update(app=app_, **kw))
    port = _free_port("127.0.0.2")
    res = invoke("serve", "service_digits", "--set", f"store={tmp_path / 'store'}", "--host", "127.0.0.2",
                 "--port", str(port), env={"UNLEARNKIT_TOKEN": "secret-token-for-tests-0123"})
    assert res.exit_code == 0, res.output
    assert (bound["host"], bound["port"], bound["app"]) == ("127.0.0.2", port, "app")
    assert f"http://127.0.0.2:{port}" in res.output
    # the flag goes through the config's checks: a name is refused, as `host:` in the file would be
    bad = invoke("serve", "service_digits", "--host", "example.com",
                 env={"UNLEARNKIT_TOKEN": "secret-token-for-tests-0123"})
    assert bad.exit_code == 2 and "host must be an IP address" in bad.output
    # and the busy-port check looks at that address
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.2", 0))
        busy.listen(1)
        p = busy.getsockname()[1]
        taken = invoke("serve", "service_digits", "--set", f"store={tmp_path / 'store'}", "--host", "127.0.0.2",
                       "--port", str(p), env={"UNLEARNKIT_TOKEN": "secret-token-for-tests-0123"})
    assert taken.exit_code == 2 and f"127.0.0.2:{p}" in taken.output
