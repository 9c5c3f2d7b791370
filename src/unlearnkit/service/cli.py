"""Command line of the deletion service: ``unlearnkit serve``, ``unlearnkit delete``, ``unlearnkit ledger verify``.

Registered on the main Typer app by :func:`register` (src/unlearnkit/cli.py). Nothing heavy is imported until a
command runs. The bearer token is read here, and only here, from the environment (``UNLEARNKIT_TOKEN`` or the
config's ``token_env``) or ``--token``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from unlearnkit.errors import ConfigError, UnlearnkitError

err_console = Console(stderr=True)
DEFAULT_URL = "http://127.0.0.1:8765"

ledger_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Inspect the deletion ledger (hash-chained, append-only).")


def _fail(err: Exception | str, code: int = 2) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(code)


def parse_ids(text: str) -> list[int]:
    """``"1,2, 3"`` or ``"1 2 3"`` → ``[1, 2, 3]``.

    Raises:
        ConfigError: an item that is not an integer in [0, 2**63 − 1] (int64), or no item.
    """
    from unlearnkit.service.ledger import MAX_SAMPLE_ID

    items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    bad = [t for t in items if not re.fullmatch(r"[0-9]{1,19}", t) or int(t) > MAX_SAMPLE_ID]
    if not items or bad:
        shown = ", ".join(repr(t[:25]) for t in bad[:5])
        raise ConfigError(f"--ids must be integers in [0, {MAX_SAMPLE_ID}] (int64) separated by commas, e.g. "
                          "--ids 12,40,977"
                          f"{f'; not valid: {shown}' if bad else ''}")
    return [int(t) for t in items]


def _log_to_stderr() -> None:
    logger = logging.getLogger("unlearnkit.service")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)


def serve(
    config: str = typer.Argument(..., help="service YAML (e.g. the bundled service_digits)"),
    set_: list[str] = typer.Option([], "--set", help="override a config value, e.g. --set port=9000"),
    host: Optional[str] = typer.Option(None, help="address to bind (default: the config's, 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="port (default: the config's, 8765)"),
) -> None:
    """Run the deletion service: HTTP API + worker; resumes unfinished requests from the ledger first.

    The bearer token comes from the environment variable named by the config's token_env (UNLEARNKIT_TOKEN).
    """
    from unlearnkit.service.config import load_service_config

    overrides = list(set_) + ([f"host={host}"] if host else []) + ([f"port={port}"] if port is not None else [])
    try:
        cfg = load_service_config(config, overrides)
        from unlearnkit.service.config import check_token

        token = check_token(os.environ.get(cfg.token_env, ""), cfg.token_env)
        _check_port_free(cfg.host, cfg.port)
        from unlearnkit.service.deletion import DeletionService
        from unlearnkit.service.http import create_app

        _log_to_stderr()
        service = DeletionService.from_config(cfg, console=err_console)
        try:
            app = create_app(service, token, bind_host=cfg.host, allowed_hosts=cfg.allowed_hosts,
                             max_body_bytes=cfg.max_body_bytes)
            head = service.ledger.record_head("start")
        except BaseException:
            service.close()
            raise
    except UnlearnkitError as err:
        _fail(err)
        return
    if not cfg.is_loopback:
        err_console.print(f"[bold yellow]warning:[/] binding {cfg.host}: the API is reachable from other machines; "
                          "put it behind TLS")
    s = service.serving()
    err_console.print(f"serving '{cfg.name}' model v{s.version} ({s.model_digest[:12]}…) on "
                      f"http://{cfg.host}:{cfg.port}  ledger: {cfg.ledger_path}  pending: {service.pending_count}")
    from unlearnkit.service.ledger import heads_path

    err_console.print(f"ledger head: seq {head['head_seq']} hash {head['head_hash']} (recorded in "
                      f"{heads_path(cfg.ledger_path)}; keep a copy elsewhere and check it later with "
                      "`unlearnkit ledger verify --expected-head HASH`)")
    import uvicorn

    # the worker thread (planning, ledger rows, audit) shares the GIL with the event loop: hand it over every 1 ms
    # instead of Python's default 5 ms, so an accept never waits long behind a window's bookkeeping
    sys.setswitchinterval(0.001)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)


def _check_port_free(host: str, port: int) -> None:
    """Fail before the (minutes-long) first fit when ``host:port`` cannot be bound, instead of uvicorn exiting 3.

    Binds with SO_REUSEADDR, as uvicorn does, so a port in TIME_WAIT is not reported; a race with another process
    binding in between is still possible (uvicorn then reports it).

    Raises:
        ConfigError: the address is in use or cannot be bound here.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ConfigError(f"cannot resolve host {host!r} ({err}); set host: to a local address, e.g. 127.0.0.1"
                          ) from err
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}); another process (another "
                              "unlearnkit serve?) holds it: stop it or pick a free port with --port") from None


def delete(
    ids: str = typer.Option(..., "--ids", help="sample ids to delete, e.g. 12,40,977"),
    url: str = typer.Option(DEFAULT_URL, "--url", help="base URL of a running service"),
    token: Optional[str] = typer.Option(None, "--token", envvar="UNLEARNKIT_TOKEN",
                                        help="bearer token (default: $UNLEARNKIT_TOKEN)", show_default=False),
    idempotency_key: Optional[str] = typer.Option(None, "--idempotency-key",
                                                  help="reuse to retry safely (default: a fresh one)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="poll until the request is done or failed"),
    timeout: float = typer.Option(600.0, help="seconds to wait for completion"),
    local: Optional[str] = typer.Option(None, "--local", help="service CONFIG: submit directly to its store and "
                                        "ledger and process it here (no server may be running on that store)"),
    set_: list[str] = typer.Option([], "--set", help="with --local: override a config value"),
) -> None:
    """Submit a deletion request (over HTTP, or --local) and print its status as JSON (exit 1 if it failed)."""
    try:
        sample_ids = parse_ids(ids)
        status = _delete_local(local, set_, sample_ids, idempotency_key) if local else \
            _delete_http(url, token, sample_ids, idempotency_key or f"cli-{uuid.uuid4().hex}", wait, timeout)
    except UnlearnkitError as err:
        _fail(err)
        return
    sys.stdout.write(json.dumps(status, indent=2) + "\n")
    state = status.get("state")
    err_console.print(f"request {status.get('request_id')}: {state}"
                      + (f", deleted {len(status.get('deleted_ids') or [])} id(s)" if state == "done" else "")
                      + (f", unknown {status.get('unknown_ids')}" if status.get("unknown_ids") else "")
                      + (f", already deleted {status.get('already_deleted_ids')}"
                         if status.get("already_deleted_ids") else "")
                      + (f": {status.get('reason')}" if state == "failed" else ""))
    if state == "failed":
        raise typer.Exit(1)


def _delete_local(config: str, overrides: list[str], ids: list[int], key: str | None) -> dict[str, Any]:
    from unlearnkit.service.config import load_service_config
    from unlearnkit.service.deletion import DeletionService

    cfg = load_service_config(config, overrides)
    service = DeletionService.from_config(cfg, console=err_console)
    try:
        receipt = service.submit(ids, key)
        service.run_pending()
        return service.status(receipt.request_id) or {}
    finally:
        service.close()


def _delete_http(url: str, token: str | None, ids: list[int], key: str, wait: bool, timeout: float) -> dict[str, Any]:
    import httpx

    if not token:
        raise ConfigError("no bearer token: set UNLEARNKIT_TOKEN or pass --token")
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=30.0) as client:
        for attempt in range(3):  # the idempotency key makes a retry after a lost connection safe
            try:
                r = client.post("/v1/deletions", json={"sample_ids": ids, "idempotency_key": key}, headers=headers)
                break
            except httpx.TransportError as err:
                if attempt == 2:
                    raise ConfigError(f"cannot reach the service at {base} ({err}); is `unlearnkit serve` "
                                      "running there?") from err
                time.sleep(1.0)
        if r.status_code != 202:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise ConfigError(f"the service refused the request (HTTP {r.status_code}): {detail}")
        rid = r.json()["request_id"]
        deadline = time.monotonic() + timeout
        while True:
            status = client.get(f"/v1/deletions/{rid}", headers=headers).json()
            if not wait or status["state"] in ("done", "failed") or time.monotonic() > deadline:
                return status
            time.sleep(0.2)


@ledger_app.command("verify")
def verify(
    target: str = typer.Argument(..., help="the ledger file (ledger.sqlite3) or a service CONFIG naming it"),
    expected_head: Optional[str] = typer.Option(None, "--expected-head",
                                                help="a row hash kept elsewhere that the chain must contain"),
    set_: list[str] = typer.Option([], "--set", help="with a CONFIG: override a config value"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Recompute the ledger's hash chain and SQLite's integrity check; name the first broken row (exit 1 when
    broken). The last head that `serve` recorded beside the ledger (<ledger>.heads.jsonl) must still be in the chain."""
    from unlearnkit.service.ledger import heads_path, read_recorded_head, verify_ledger

    try:
        path = Path(target)
        if path.suffix in (".yaml", ".yml") or (not path.exists() and not path.suffix):
            from unlearnkit.service.config import load_service_config

            path = load_service_config(target, set_).ledger_path
        report = verify_ledger(path, expected_head=expected_head)
        recorded = read_recorded_head(path)
        if report.ok and recorded is not None and recorded["head_seq"] > 0:
            anchored = verify_ledger(path, expected_head=recorded["head_hash"])
            if not anchored.ok:
                report = anchored
                report.reason = (f"the head recorded at {str(recorded.get('time'))[:40]} in {heads_path(path)} "
                                 f"(seq {recorded['head_seq']}) is not in the chain: rows were removed from the end "
                                 "or the chain was rewritten")
    except UnlearnkitError as err:
        _fail(err)
        return
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    elif report.ok:
        sys.stdout.write(f"ledger OK: {report.rows} rows, chain intact; head seq {report.head_seq} "
                         f"hash {report.head_hash}\n")
    elif report.first_broken_seq is None:
        sys.stdout.write(f"ledger BROKEN: {report.reason} ({report.rows} rows read)\n")
    else:
        sys.stdout.write(f"ledger BROKEN at row seq {report.first_broken_seq}: {report.reason} "
                         f"({report.rows} rows read)\n")
    for w in report.warnings:
        err_console.print(f"[bold yellow]warning:[/] {w}")
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``delete`` and the ``ledger`` group to the main CLI."""
    app.command("serve")(serve)
    app.command("delete")(delete)
    app.add_typer(ledger_app, name="ledger")


__all__ = ["ledger_app", "parse_ids", "register"]
