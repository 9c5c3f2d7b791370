"""YAML loading with ``extends:`` composition and ``--set a.b=v`` overrides.

Only a ``yaml.SafeLoader`` is used: no YAML tag can import or run code.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from unlearnkit.errors import ConfigError
from unlearnkit.persist import stable_hash

PACKAGE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-4``, ``5E+3``) as floats.

    PyYAML follows YAML 1.1, where ``1e-4`` is the *string* "1e-4"; users (and YAML 1.2) mean the number.
    """


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``over`` into a copy of ``base``: mappings merge, everything else (lists too) replaces."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}; check the path (relative paths are from the current folder)")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at top level (key: value), got {type(data).__name__}")
    return data


def load_raw(path: str | Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML file and resolve its ``extends:`` chain (paths relative to the file). Cycles are errors."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"'extends' cycle: {chain}; remove one of the links")
    data = _read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: 'extends' must be a path or a list of paths, got {parents!r}")
    merged: dict[str, Any] = {}
    for p in parents:
        merged = deep_merge(merged, load_raw(_resolve_parent(path, p), (*_stack, path)))
    return deep_merge(merged, data)


def _resolve_parent(child: Path, parent: str) -> Path:
    """An ``extends:`` entry: a path relative to the extending file, or else a bundled config name.

    Raises:
        ConfigError: neither exists (names both places it looked).
    """
    local = child.parent / parent
    if local.is_file():
        return local
    try:
        bundled = resolve_config_path(parent)
    except ConfigError:
        bundled = None
    if bundled is not None and bundled.resolve().is_relative_to(PACKAGE_CONFIGS.resolve()):
        return bundled
    raise ConfigError(
        f"{child}: extends {parent!r}: not found as {local} (paths are relative to the extending file) "
        f"nor as a bundled config name; fix the path or use a bundled name ({', '.join(_bundled_names())})"
    )


def _bundled_names() -> list[str]:
    return sorted(x.relative_to(PACKAGE_CONFIGS).with_suffix("").as_posix() for x in PACKAGE_CONFIGS.rglob("*.yaml"))


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """Parse ``["data.root=/x", "methods.0.lr=1e-4"]`` into ``[(["data","root"], "/x"), ...]``.

    Values are parsed as YAML scalars/lists (``1e-4`` → float, ``[1,2]`` → list, ``null`` → None).
    Whitespace around key and value is ignored; an empty key, an empty path part or a missing ``=`` is an error.
    """
    out = []
    for raw in items:
        if "=" not in raw:
            raise ConfigError(f"--set {raw!r}: expected KEY=VALUE, e.g. --set train.lr=0.05")
        key, value = raw.split("=", 1)
        parts = [p.strip() for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in parts):
            raise ConfigError(f"--set {raw!r}: the key has an empty part; write e.g. data.root=/path")
        try:
            parsed = _yaml_load(value.strip()) if value.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {raw!r}: value is not valid YAML ({err})") from err
        out.append((parts, parsed))
    return out


def apply_overrides(data: dict[str, Any], overrides: Iterable[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set each dotted path in a copy of ``data``; integer parts index lists (``methods.1.lr``)."""
    data = copy.deepcopy(data)
    for parts, value in overrides:
        node: Any = data
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                try:
                    idx = int(p)
                    node[idx]  # noqa: B018 - bounds check
                except (ValueError, IndexError):
                    raise ConfigError(
                        f"--set {'.'.join(parts)}: '{p}' is not a valid index of a list of {len(node)} items"
                    ) from None
                if last:
                    node[idx] = value
                else:
                    if isinstance(node[idx], str):  # methods: [finetune] -> {name: finetune}
                        node[idx] = {"name": node[idx]}
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[p] = value
                else:
                    if node.get(p) is None:
                        node[p] = {}
                    node = node[p]
            else:
                raise ConfigError(f"--set {'.'.join(parts)}: '{'.'.join(parts[:i])}' is a value, not a section")
    return data


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class found at ``loc`` inside ``model`` (through Optional/list), or None."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        cur = None
        for cand in (ann, *typing.get_args(ann)):
            for c in (cand, *typing.get_args(cand)):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    cur = c
        if cur is None:
            return None
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def validation_message(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem: unknown keys with the allowed keys and closest match; bad values with what was given."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = [k for k in parent.model_fields if not k.startswith("_")] if parent else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"unknown key '{dotted}'.{hint} Allowed keys here: {', '.join(allowed)}")
        elif e["type"] == "value_error":
            lines.append(f"{dotted or '<top>'}: {str(e['msg']).removeprefix('Value error, ')}")
        else:
            lines.append(f"{dotted}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid config {source}:\n  - " + "\n  - ".join(lines)


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or else a bundled config of that name (``digits_random10`` or ``configs/x.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    # bundled configs, also in sub-folders: "llm/tofu_tiny", "configs/llm/tofu_tiny.yaml"
    rel = Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == "configs" else p
    for base in dict.fromkeys((rel, Path(p.name))):
        for cand in (PACKAGE_CONFIGS / base, PACKAGE_CONFIGS / f"{base}.yaml"):
            if cand.is_file():
                return cand
    raise ConfigError(
        f"config file not found: {path}. Give a path to a YAML file, or a bundled config name "
        f"({', '.join(_bundled_names())})"
    )


def compose(path: str | Path | None = None, overrides: Iterable[str] = (), *,
            data: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Read and compose an experiment config without validating it: ``(mapping, source)``.

    Validation needs the registered tracks, methods and metrics, so it happens one layer up, in
    :func:`unlearnkit.bench.load_config` / :func:`unlearnkit.bench.resolve`.

    Args:
        path: YAML file (its ``extends:`` chain is resolved), or a bundled config name; None = defaults only.
        overrides: ``["a.b=v", ...]`` applied after composition (``--set``).
        data: an already-parsed mapping used instead of ``path``.

    Raises:
        ConfigError: missing file, bad YAML, bad override.
    """
    if data is not None:
        raw, source = dict(data), "<mapping>"
    elif path is not None:
        p = resolve_config_path(path)
        raw, source = load_raw(p), str(p)
    else:
        raw, source = {}, "<defaults>"
    return apply_overrides(raw, parse_overrides(overrides)), source


def to_plain(cfg: BaseModel) -> dict[str, Any]:
    """JSON-compatible dict of a config (what is hashed and written to config.resolved.yaml)."""
    return json.loads(cfg.model_dump_json())


def dump_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_plain(cfg), sort_keys=False)


def config_hash(cfg: BaseModel) -> str:
    """SHA-256 of the resolved config, ignoring fields that cannot change results: progress display, event writers
    (``engine.progress``, ``progress_interval``, ``trackers``) and where files go (``output_dir``, ``cache_dir``)."""
    plain = to_plain(cfg)
    for presentational in ("progress", "progress_interval", "trackers"):
        plain.get("engine", {}).pop(presentational, None)
    plain.pop("output_dir", None)
    plain.pop("cache_dir", None)
    return stable_hash(plain)
