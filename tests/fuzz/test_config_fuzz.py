"""Config fuzzer: mutate the bundled configs and check that the loader either accepts a correct config or refuses it
with a typed error — never a traceback, never a hang (issue 14).

Every case runs in a forked child with a time limit (:data:`TIMEOUT_S`) and an address-space limit, so a hang or a
memory blow-up is caught and reported as such instead of stalling the suite. Outcomes:

* ``accepted``: the loader returned a config, and it is correct: it validates again from its own JSON form to the
  same config hash, and holds no NUL byte, lone surrogate or non-finite number;
* ``refused``: a :class:`~unlearnkit.errors.UnlearnkitError` (what ``unlearnkit run`` prints as one line, exit 2)
  whose message is bounded (< 5,000 characters);
* ``crash`` (any other exception: a traceback), ``hang`` (time limit), ``died`` (killed, e.g. out of memory): failures.

The quick test runs :data:`QUICK_CASES` cases from a fixed seed; the slow one :data:`FULL_CASES` (``pytest -m slow
tests/fuzz``). Measured outcome (2 cores, 2026-12): see BENCHMARKS.md, "Config fuzzer".
"""

from __future__ import annotations

import math
import multiprocessing as mp
import random
import resource
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import text_problem

from unlearnkit.config.loader import PACKAGE_CONFIGS

QUICK_CASES = 150
FULL_CASES = 3000
SEED = 14
TIMEOUT_S = 30.0
MEMORY_LIMIT = 6 << 30  # bytes of address space per case

HOSTILE_VALUES: list[Any] = [
    True, False, None, 0, -1, 1, 2**31, 2**32, 2**63, 2**64 + 1, -(2**63) - 1, 10**100, 1e308, -1e308, 1e-320,
    float("inf"), float("-inf"), float("nan"), 0.5, -0.5, "", " ", "a\x00b", "\ud800", "x" * 5000, "line\nbreak",
    "../../etc", "/dev/null", "$(id)", "1e-4", "null", "~", [], {}, [[[]]], {"a": {"b": {}}}, [0] * 2000,
    list(range(-3, 3)), {"name": "x"}, ["finetune"], "finetune", "mlp", "digits",
]


def _configs() -> list[Path]:
    return sorted(p for p in PACKAGE_CONFIGS.rglob("*.yaml"))


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple, value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    node = obj
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


def _structural(rng: random.Random, data: Any) -> Any:
    paths = _paths(data)
    path = rng.choice(paths)
    kind = rng.randrange(6)
    if kind == 0 and path:
        return _set(data, path, None, delete=True)
    if kind == 1:
        parents = [p for p in paths if isinstance(_get(data, p), dict)]
        target = rng.choice(parents) if parents else ()
        node = _get(data, target) if parents else data
        if isinstance(node, dict):
            node[rng.choice(["extra", "nam", "seed", "epochs", "\x00", "a" * 300])] = rng.choice(HOSTILE_VALUES)
        return data
    if kind == 2:
        return _set(data, path, [_get(data, path)])
    if kind == 3:
        return _set(data, path, {"value": _get(data, path)})
    value = rng.choice(HOSTILE_VALUES)
    return _set(data, path, value if not isinstance(value, (list, dict)) else yaml.safe_load(yaml.safe_dump(value)))


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _textual(rng: random.Random, text: str) -> bytes:
    raw = text.encode("utf-8")
    kind = rng.randrange(9)
    lines = text.splitlines(keepends=True)
    if kind == 0 and lines:  # a duplicated line: duplicate keys
        i = rng.randrange(len(lines))
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
        return "".join(lines).encode()
    if kind == 1 and raw:  # flip bytes
        b = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:  # truncate
        return raw[: rng.randrange(len(raw) + 1)]
    if kind == 3:  # an alias bomb in a real field (no bundled config sets cache_dir)
        depth = rng.randint(3, 12)
        bomb = "cache_dir:\n  - &z0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
            f"  - &z{i} [{', '.join(['*z' + str(i - 1)] * 9)}]\n" for i in range(1, depth))
        return raw + b"\n" + bomb.encode()
    if kind == 4:  # deep nesting
        n = rng.choice([40, 60, 200, 3000])
        return raw + b"\nzz: " + b"[" * n + b"]" * n + b"\n"
    if kind == 5:  # a huge number
        return raw.replace(b"0", b"9" * rng.randint(20, 5000), 1)
    if kind == 6:  # a recursive alias
        return raw + b"\nrec: &rec [*rec]\n"
    if kind == 7:  # invalid UTF-8 / control bytes
        pos = rng.randrange(len(raw) + 1)
        return raw[:pos] + rng.choice([b"\xff\xfe", b"\x00", b"\xed\xa0\x80", b"\t\x0b"]) + raw[pos:]
    if lines:  # re-indent a line
        i = rng.randrange(len(lines))
        lines[i] = " " * rng.randint(1, 6) + lines[i]
    return "".join(lines).encode()


def make_case(rng: random.Random, source: Path) -> bytes:
    """One mutated config file (bytes) from a bundled ``source``."""
    text = source.read_text(encoding="utf-8")
    if rng.random() < 0.55:
        data = yaml.safe_load(text) or {}
        for _ in range(rng.randint(1, 3)):
            data = _structural(rng, data)
        try:
            return yaml.safe_dump(data, allow_unicode=False, sort_keys=False).encode()
        except Exception:  # noqa: BLE001 - an unrepresentable mutation: fall back to a textual one
            pass
    return _textual(rng, text)


def _strings_and_numbers(obj: Any):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings_and_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings_and_numbers(v)
    else:
        yield obj


def _load(path: str, service: bool) -> str:
    """Load one case; returns 'accepted' or 'refused:<Error>' or raises on a wrong accept."""
    from unlearnkit.bench import load_config
    from unlearnkit.config.loader import config_hash, to_plain
    from unlearnkit.errors import UnlearnkitError

    try:
        if service:
            from unlearnkit.service.config import ServiceConfig, load_service_config

            cfg = load_service_config(path)
            again = ServiceConfig.model_validate(to_plain(cfg))
        else:
            cfg = load_config(path)
            again = load_config(data=to_plain(cfg))
    except UnlearnkitError as err:
        msg = str(err)
        assert len(msg) < 5000, f"unbounded error message ({len(msg)} characters)"
        return f"refused:{type(err).__name__}"
    assert config_hash(again) == config_hash(cfg), "an accepted config does not validate to itself"
    for x in _strings_and_numbers(to_plain(cfg)):
        if isinstance(x, str):
            assert text_problem(x) is None, f"accepted a bad string {x[:40]!r}"
        if isinstance(x, float):
            assert math.isfinite(x), f"accepted a non-finite number {x}"
    return "accepted"


def _child(conn: Any, path: str, service: bool) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    try:
        conn.send(("ok", _load(path, service)))
    except BaseException:  # noqa: BLE001 - reported to the parent as the failure it is
        conn.send(("crash", traceback.format_exc()[-3000:]))
    conn.close()


def run_case(path: Path, service: bool) -> tuple[str, str]:
    """(outcome, detail) of one case in a forked child: ok/refused, crash, hang or died."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, str(path), service))
    proc.start()
    child.close()
    got = parent.poll(TIMEOUT_S)
    if not got:
        proc.kill()
        proc.join()
        return "hang", f"no answer within {TIMEOUT_S} s"
    try:
        status, detail = parent.recv()
    except EOFError:
        status, detail = "died", "the child exited without an answer"
    proc.join(30)
    if proc.exitcode not in (0, None) and status == "ok":
        status = "died"
    return status, detail


def fuzz(n: int, tmp: Path, seed: int = SEED) -> tuple[Counter, list[str]]:
    rng = random.Random(seed)
    sources = _configs()
    outcomes: Counter = Counter()
    failures: list[str] = []
    for i in range(n):
        source = sources[i % len(sources)]
        case = tmp / f"case{i}.yaml"
        case.write_bytes(make_case(rng, source))
        status, detail = run_case(case, service=source.stem.startswith("service"))
        key = detail if status == "ok" else status
        outcomes[key.split(":")[0]] += 1
        if status != "ok":
            failures.append(f"case {i} (from {source.name}, file {case}): {status}\n{detail}")
        else:
            case.unlink()
    return outcomes, failures


def _check(n: int, tmp: Path) -> Counter:
    outcomes, failures = fuzz(n, tmp)
    print(f"config fuzzer: {n} cases, seed {SEED}: {dict(outcomes)}")
    assert not failures, f"{len(failures)} of {n} cases crashed, hung or died:\n\n" + "\n\n".join(failures[:5])
    assert outcomes["accepted"] + outcomes["refused"] == n
    assert outcomes["refused"] > n // 4 and outcomes["accepted"] > 0  # the mutations do reach both outcomes
    return outcomes


def test_fuzz_bundled_configs_quick(tmp_path):
    _check(QUICK_CASES, tmp_path)


@pytest.mark.slow
def test_fuzz_bundled_configs_full(tmp_path):
    _check(FULL_CASES, tmp_path)


def test_the_fuzzer_catches_a_crash_and_a_hang(tmp_path, monkeypatch):
    """The harness itself can fail: a loader that raises a plain exception or never returns is reported."""
    import sys

    mod = sys.modules[__name__]
    case = tmp_path / "c.yaml"
    case.write_text("name: x\n")

    def crash(path, service):
        raise KeyError("boom")

    monkeypatch.setattr(mod, "_load", crash)
    assert run_case(case, False)[0] == "crash"

    def hang(path, service):
        import time

        time.sleep(3600)

    monkeypatch.setattr(mod, "_load", hang)
    monkeypatch.setattr(mod, "TIMEOUT_S", 2.0)
    assert run_case(case, False)[0] == "hang"
