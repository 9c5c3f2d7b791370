"""Search spaces of unlearners: what ``unlearnkit tune`` may change, and over which range.

Every method declares ``search_space`` (a class attribute of :class:`~unlearnkit.methods.base.Unlearner`): a mapping
from a field of its config to a range. Keys are config fields; a dotted key reaches into a dict-valued field
(``base_params.lr`` of ``prune_ft``). An empty mapping means "nothing to tune" (exact methods: their output is a
retrain; methods without continuous settings)::

    search_space = {"lr": LogFloat(1e-4, 1e-1), "epochs": Int(1, 10), "mask_ratio": Float(0.1, 0.9)}

Ranges are the papers' (the learning rate log-uniform over the range the paper's sweeps cover, widened where a
method is known to need another scale on small models; the docstring of each method says which). The tuner
(:mod:`unlearnkit.bench.tune`) samples them with Optuna; nothing here imports Optuna.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unlearnkit.errors import ConfigError


@dataclass(frozen=True)
class Float:
    """A float in [low, high], uniform (``log=False``) or log-uniform (``log=True``, needs low > 0)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError(f"search range [{self.low}, {self.high}] is empty or not finite")
        if self.log and self.low <= 0:
            raise ConfigError(f"a log-uniform range needs low > 0, got {self.low}")

    def contains(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and self.low <= float(v) <= self.high

    def describe(self) -> str:
        return f"{'log-' if self.log else ''}uniform [{self.low:g}, {self.high:g}]"


def LogFloat(low: float, high: float) -> Float:  # noqa: N802 - reads like a type in declarations
    """A log-uniform float in [low, high] (low > 0): learning rates, coefficients spanning decades."""
    return Float(low, high, log=True)


@dataclass(frozen=True)
class Int:
    """An integer in [low, high] (inclusive), uniform or log-uniform."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if int(self.low) != self.low or int(self.high) != self.high or self.low > self.high:
            raise ConfigError(f"integer search range [{self.low}, {self.high}] is empty or not integral")
        if self.log and self.low < 1:
            raise ConfigError(f"a log-uniform integer range needs low ≥ 1, got {self.low}")

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high

    def describe(self) -> str:
        return f"{'log-' if self.log else ''}integer [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    """One of ``choices`` (strings, numbers, booleans)."""

    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ConfigError("a choice needs at least one option")

    def contains(self, v: Any) -> bool:
        return v in self.choices

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


Param = Float | Int | Choice


def get_path(params: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of ``params`` (``KeyError`` when absent)."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def with_params(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each (dotted) key of ``values`` set: the method's parameters of one trial."""
    out = copy.deepcopy(dict(base))
    for key, v in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = v
    return out


def check_space(space: Mapping[str, Param], config_cls: Any, where: str) -> None:
    """Refuse a search space whose keys are not fields of ``config_cls`` (dotted keys: their first part).

    Raises:
        ConfigError: an unknown field or a value that is not a range.
    """
    fields = set(getattr(config_cls, "model_fields", {}) or {})
    for key, p in space.items():
        if not isinstance(p, (Float, Int, Choice)):
            raise ConfigError(f"{where}: search_space['{key}'] must be Float, Int or Choice, got {p!r}")
        if key.split(".")[0] not in fields:
            raise ConfigError(f"{where}: search_space names '{key}', which is not a setting of the method "
                              f"({', '.join(sorted(fields)) or 'none'})")


__all__ = ["Choice", "Float", "Int", "LogFloat", "Param", "check_space", "get_path", "with_params"]
