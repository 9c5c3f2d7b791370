"""One generic registry class; one instance per kind of component (methods, metrics, datasets, models).

Example::

    METHODS = Registry("method")

    @METHODS.register("ssd", config=SSDConfig)
    class SSD(Unlearner): ...

    METHODS.build("ssd", {"alpha": 10})   # -> SSD(SSDConfig(alpha=10))

Plug-ins: a separately installed package registers methods, metrics, data sets, models and tracks through the entry-point
group ``unlearnkit.plugins`` (in its ``pyproject.toml``)::

    [project.entry-points."unlearnkit.plugins"]
    my_track = "my_package.unlearnkit_plugin"          # a module imported for its registrations
    my_methods = "my_package.plugin:register"          # or a callable run once with no arguments

Every registry loads the installed plug-ins once, on its first lookup, so ``unlearnkit run``, ``unlearnkit methods``
and the Python API see them without any import by the user. A plug-in that fails to load is reported (a
:class:`PluginWarning`, and in the error of a lookup that misses), never silently ignored.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from unlearnkit.errors import ConfigError

T = TypeVar("T")

#: the entry-point group of plug-ins
PLUGIN_GROUP = "unlearnkit.plugins"


class PluginWarning(UserWarning):
    """An installed unlearnkit plug-in could not be loaded."""


class _Plugins:
    """The plug-ins of this process: loaded once, on the first registry lookup (entry points are installed
    metadata, so this is not configuration but the installation)."""

    def __init__(self) -> None:
        self.loaded = False
        self.failed: dict[str, str] = {}
        self.names: list[str] = []

    def ensure(self) -> None:
        if self.loaded:
            return
        self.loaded = True  # before importing: a plug-in that looks a name up does not recurse
        self.load()

    def load(self) -> None:
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
            if ep.name in self.names:
                continue
            try:
                if ":" in ep.value:
                    target = ep.load()
                    if callable(target):
                        target()
                else:
                    importlib.import_module(ep.value)
            except Exception as err:  # noqa: BLE001 - a broken plug-in must not stop unlearnkit; it is reported
                self.failed[ep.name] = f"{type(err).__name__}: {err}"
                warnings.warn(f"unlearnkit plug-in '{ep.name}' ({ep.value}) failed to load: {type(err).__name__}: "
                              f"{err}; its components are not available (fix or uninstall it)", PluginWarning,
                              stacklevel=3)
            else:
                self.names.append(ep.name)

    def reload(self) -> None:
        """Load entry points installed since the first lookup (plug-ins already loaded are not imported twice)."""
        self.loaded = True
        self.load()

    def hint(self) -> str:
        return (f" (plug-ins that failed to load: {', '.join(f'{k} — {v}' for k, v in sorted(self.failed.items()))})"
                if self.failed else "")


PLUGINS = _Plugins()


def load_plugins() -> dict[str, str]:
    """Load the installed plug-ins now (normally they load on the first registry lookup); returns ``{name: error}``
    of those that failed."""
    PLUGINS.reload()
    return dict(PLUGINS.failed)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: its name, the object (class or factory) and its pydantic config class (or None)."""

    name: str
    obj: T
    config: type[BaseModel] | None


def format_validation_error(err: ValidationError, where: str) -> str:
    """Turn a pydantic ``ValidationError`` into one actionable sentence per problem.

    Unknown keys (``extra_forbidden``) list the allowed keys and the closest match.
    """
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}' in {where}")
        else:
            lines.append(f"{where}.{loc}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the (nested) pydantic model at ``loc`` below ``model``; None when it is not a model."""
    import typing

    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        stack, nested = [field.annotation], None
        while stack:  # Optional[X], X | None, Annotated[...]: the first BaseModel among the arguments
            t = stack.pop(0)
            if isinstance(t, type) and issubclass(t, BaseModel):
                nested = t
                break
            stack.extend(typing.get_args(t))
        if nested is None:
            return None
        model = nested
    return list(model.model_fields)


def _allowed_keys_hint(err: ValidationError, config: type[BaseModel], kind: str, name: str) -> str:
    """". Allowed keys[ under a.b]: ..." for each place that got an unknown key (nothing for bad values only)."""
    hints = []
    for loc in dict.fromkeys(tuple(e["loc"][:-1]) for e in err.errors() if e["type"] == "extra_forbidden"):
        keys = _fields_at(config, loc)
        where = ".".join(map(str, loc))
        if keys is None:
            continue
        if not keys:
            hints.append(f"{kind} '{name}' takes no parameters; remove them" if not where
                         else f"'{where}' takes no keys; remove them")
        else:
            hints.append(f"Allowed keys{f' under {where}' if where else ''}: {', '.join(keys)}")
    return "".join(f". {h}" for h in hints)


def suggest(name: str, choices: list[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Name → component mapping with typed, helpful errors.

    Args:
        kind: what the registry holds, used in messages ("method", "metric", ...).

    Raises:
        ConfigError: on duplicate registration, or lookup of an unknown name (message lists valid names and the
            closest match).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, config: type[BaseModel] | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` together with its config class."""
        if not name or name != name.strip() or " " in name:
            raise ConfigError(f"{self.kind} name {name!r} is invalid: use a non-empty name without spaces")

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ConfigError(
                    f"{self.kind} '{name}' is already registered (by {self._entries[name].obj!r}); "
                    f"choose another name or unregister the first"
                )
            self._entries[name] = Entry(name, obj, config)
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plug-ins that replace a component)."""
        self.entry(name)
        del self._entries[name]

    def entry(self, name: str) -> Entry[T]:
        """Look ``name`` up; raises ``ConfigError`` naming valid names and the closest match."""
        PLUGINS.ensure()
        try:
            return self._entries[name]
        except KeyError:
            valid = sorted(self._entries)
            shown = str(name) if len(str(name)) <= 200 else str(name)[:199] + "…"  # messages built from input stay short
            raise ConfigError(
                f"unknown {self.kind} '{shown}'.{suggest(str(name)[:200], valid)} Valid {self.kind}s: "
                f"{', '.join(valid) or '(none)'}{PLUGINS.hint()}"
            ) from None

    def get(self, name: str) -> T:
        """The registered object (class or factory) for ``name``."""
        return self.entry(name).obj

    def validate_config(self, name: str, params: Mapping[str, Any] | BaseModel | None = None) -> BaseModel | None:
        """Validate ``params`` against the config class of ``name``; returns the config object.

        Raises:
            ConfigError: unknown name, unknown key (with the allowed keys) or invalid value.
        """
        entry = self.entry(name)
        if entry.config is None:
            if params:
                raise ConfigError(f"{self.kind} '{name}' takes no parameters, got {sorted(dict(params))}")
            return None
        if isinstance(params, entry.config):
            return params
        try:
            return entry.config.model_validate(dict(params or {}))
        except ValidationError as err:
            hint = _allowed_keys_hint(err, entry.config, self.kind, name)
            raise ConfigError(format_validation_error(err, f"{self.kind} {name}") + hint) from err

    def build(self, name: str, params: Mapping[str, Any] | BaseModel | None = None) -> Any:
        """Instantiate ``name`` with its validated config: ``obj(config)`` (or ``obj()`` without a config)."""
        cfg = self.validate_config(name, params)
        obj = self.get(name)
        return obj(cfg) if cfg is not None else obj()  # type: ignore[operator]

    def names(self) -> list[str]:
        """Sorted registered names (installed plug-ins' included)."""
        PLUGINS.ensure()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, Entry[T]]]:
        PLUGINS.ensure()
        yield from sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        PLUGINS.ensure()
        return name in self._entries

    def __len__(self) -> int:
        PLUGINS.ensure()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


METHODS: Registry[Any] = Registry("method")
METRICS: Registry[Any] = Registry("metric")
DATASETS: Registry[Any] = Registry("dataset")
MODELS: Registry[Any] = Registry("model")
