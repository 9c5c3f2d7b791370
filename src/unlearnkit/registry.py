"""One generic registry class; one instance per kind of component (methods, metrics, datasets, models).

Example::

    METHODS = Registry("method")

    @METHODS.register("ssd", config=SSDConfig)
    class SSD(Unlearner): ...

    METHODS.build("ssd", {"alpha": 10})   # -> SSD(SSDConfig(alpha=10))
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from unlearnkit.errors import ConfigError

T = TypeVar("T")


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
        try:
            return self._entries[name]
        except KeyError:
            valid = sorted(self._entries)
            raise ConfigError(
                f"unknown {self.kind} '{name}'.{suggest(name, valid)} Valid {self.kind}s: {', '.join(valid) or '(none)'}"
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
        """Sorted registered names."""
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, Entry[T]]]:
        yield from sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


METHODS: Registry[Any] = Registry("method")
METRICS: Registry[Any] = Registry("metric")
DATASETS: Registry[Any] = Registry("dataset")
MODELS: Registry[Any] = Registry("model")
