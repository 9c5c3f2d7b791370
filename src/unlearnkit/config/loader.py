"""YAML loading with ``extends:`` composition and ``--set a.b=v`` overrides.

Only a ``yaml.SafeLoader`` is used: no YAML tag can import or run code. Hostile input gets a :class:`ConfigError`,
never a traceback or a hang: a file must be UTF-8 and at most 1 MiB, a mapping may not repeat a key, YAML aliases may
not expand beyond 200,000 values (an "alias bomb"), nesting is limited to 50 levels, and an error message quotes at
most ~120 characters of the input (limits in :mod:`unlearnkit.config.limits`).
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

from unlearnkit.config.limits import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_NODES, clip
from unlearnkit.config.schema import FieldValueError
from unlearnkit.errors import ConfigError
from unlearnkit.persist import stable_hash

PACKAGE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-4``, ``5E+3``) as floats.

    PyYAML follows YAML 1.1, where ``1e-4`` is the *string* "1e-4"; users (and YAML 1.2) mean the number.

    A key repeated in one mapping is an error (PyYAML would keep the last silently); keys brought in by a merge key
    (``<<: *base``) may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if dup:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {clip(key, 60)}; each key may appear once per mapping",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def check_size(data: Any, where: str = "config") -> None:
    """Refuse a parsed value that expands (aliases counted at every use) beyond :data:`MAX_NODES` values, nests
    deeper than :data:`MAX_DEPTH`, or refers to itself (a recursive alias). Linear in the number of *distinct*
    objects: an alias bomb is measured without being expanded.

    Raises:
        ConfigError: too large, too deep, or recursive.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        obj, done = stack.pop()
        if not isinstance(obj, (dict, list)):
            continue
        key = id(obj)
        children = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        if done:
            active.discard(key)
            sub = [c for c in children if isinstance(c, (dict, list))]
            size[key] = 1 + len(children) - len(sub) + sum(size[id(c)] for c in sub)
            depth[key] = 1 + max((depth[id(c)] for c in sub), default=0)
            if size[key] > MAX_NODES:
                raise ConfigError(f"{where} expands to more than {MAX_NODES:,} values (YAML aliases are counted at "
                                  "every use: an alias bomb?); write the values out, or reuse fewer aliases")
            if depth[key] > MAX_DEPTH:
                raise ConfigError(f"{where} is nested more than {MAX_DEPTH} levels deep; no unlearnkit setting "
                                  "needs that: flatten it")
            continue
        if key in size:
            continue
        if key in active:
            raise ConfigError(f"{where} refers to itself (a recursive YAML alias); write the values out")
        active.add(key)
        stack.append((obj, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in size)


def _yaml_load(text: str, where: str = "config") -> Any:
    """Parse YAML with :class:`_SafeLoader` and :func:`check_size`.

    Raises:
        yaml.YAMLError: invalid YAML (callers add the source).  ConfigError: too large, too deep, recursive.
    """
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to parse (limit {MAX_DEPTH} levels); flatten it") from None
    check_size(data, where)
    return data


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
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path} ({err.strerror or err}); check its permissions") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a config file is a few KiB of YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (undecodable byte at offset {err.start}); save it as UTF-8"
                          ) from None
    try:
        data = _yaml_load(text, str(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {clip_text(str(err))}") from err
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
        raise ConfigError(f"{path}: 'extends' must be a path or a list of paths, got {clip(parents)}")
    if len(_stack) >= MAX_DEPTH:
        raise ConfigError(f"{path}: 'extends' chain longer than {MAX_DEPTH} files; shorten it")
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
        shown = clip(raw)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"--set {shown}: longer than {MAX_CONFIG_BYTES >> 20} MiB")
        if "=" not in raw:
            raise ConfigError(f"--set {shown}: expected KEY=VALUE, e.g. --set train.lr=0.05")
        key, value = raw.split("=", 1)
        parts = [p.strip() for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in parts):
            raise ConfigError(f"--set {shown}: the key has an empty part; write e.g. data.root=/path")
        if len(parts) > MAX_DEPTH:
            raise ConfigError(f"--set {shown}: the key has more than {MAX_DEPTH} parts")
        try:
            parsed = _yaml_load(value.strip(), f"--set {clip(raw, 60)}") if value.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {shown}: value is not valid YAML ({clip_text(str(err), 300)})") from err
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
                        f"--set {clip('.'.join(parts))}: {clip(p)} is not a valid index of a list of {len(node)} items"
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
                raise ConfigError(f"--set {clip('.'.join(parts))}: {clip('.'.join(parts[:i]))} is a value, not a "
                                  "section")
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
            lines.append(f"unknown key '{clip_text(dotted, 200)}'.{hint} Allowed keys here: {', '.join(allowed)}")
        elif e["type"] == "value_error":
            msg = clip_text(str(e["msg"]).removeprefix("Value error, "))
            cause = (e.get("ctx") or {}).get("error")
            if isinstance(cause, FieldValueError):  # a model-level guard: name the field in the location
                dotted, msg = ".".join(p for p in (dotted, cause.field) if p), clip_text(cause.message)
            lines.append(f"{clip_text(dotted, 200) or '<top>'}: {msg}")
        else:
            lines.append(f"{clip_text(dotted, 200)}: {clip_text(str(e['msg']))} (got {clip(e.get('input'))})")
    return f"invalid config {source}:\n  - " + "\n  - ".join(lines)


def clip_text(text: str, limit: int = 600) -> str:
    """A message cut to ``limit`` characters (messages built from input must stay bounded)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or else a bundled config of that name (``digits_random10`` or ``configs/x.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    # bundled configs, also in sub-folders: "llm/tofu_tiny", "configs/llm/tofu_tiny.yaml"
    # (not by the file name alone: a missing 'myexps/x.yaml' must not silently run the bundled x.yaml)
    rel = Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == "configs" else p
    if not rel.is_absolute():
        for cand in (PACKAGE_CONFIGS / rel, PACKAGE_CONFIGS / f"{rel}.yaml"):
            if cand.is_file():
                return cand
    names = _bundled_names()
    key = rel.with_suffix("").as_posix() if rel.suffix in (".yaml", ".yml") else rel.as_posix()
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"config file not found: {clip(str(path), 300)}.{hint} Give a path to a YAML file, or a bundled config name "
        f"({', '.join(names)})"
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
        check_size(raw, source)
    elif path is not None:
        p = resolve_config_path(path)
        raw, source = load_raw(p), str(p)
    else:
        raw, source = {}, "<defaults>"
    return apply_overrides(raw, parse_overrides(overrides)), source


def validate_raw(model: type[BaseModel], raw: Any, source: str) -> Any:
    """``model.model_validate(raw)`` after :func:`check_size`, with every failure a :class:`ConfigError`.

    Raises:
        ConfigError: invalid values (one line per problem, see :func:`validation_message`), a value too large or
            too deeply nested.
    """
    check_size(raw, source)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(validation_message(err, model, source)) from err
    except RecursionError:
        raise ConfigError(f"invalid config {source}: nested too deeply to validate; flatten it") from None


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
