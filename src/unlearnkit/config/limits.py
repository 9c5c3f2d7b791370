"""Bounds on config values: what a run can actually execute, checked before anything is trained.

Every config class derives from :class:`unlearnkit.config.schema.Frozen`, whose field guard
(:func:`guard_field_value`) applies the rules that hold for every field of every config:

* a number field (``int``/``float``, optional or in a list) refuses booleans (``epochs: true`` is not 1);
* integers fit int64 (numpy/torch would raise ``OverflowError`` mid-run otherwise);
* floats are finite (``allow_inf_nan=False``) and at most :data:`FLOAT_MAX` in magnitude; fields named ``lr`` or
  ``*_lr`` (learning rates) at most :data:`LR_MAX`;
* strings hold no NUL byte and no lone surrogate (neither can be written to a file name nor encoded as UTF-8).

Fields with tighter meaning use the annotated types below (:data:`Seed`, :data:`Width`, :data:`Name` ...).

The YAML loader's limits (:data:`MAX_CONFIG_BYTES`, :data:`MAX_NODES`, :data:`MAX_DEPTH`) and :func:`clip` (bounded
``repr`` for error messages: a message never holds an unbounded piece of the input) live here too.
"""

from __future__ import annotations

import math
import reprlib
import types
import typing
from typing import Annotated, Any

from pydantic import AfterValidator, Field

#: largest integer numpy / torch index and id arithmetic accepts (int64)
INT64_MAX = 2**63 - 1
#: seeds: numpy's legacy RandomState, sklearn's random_state and torch all accept 0 ≤ seed < 2**32
SEED_MAX = 2**32 - 1
#: most seeds in one experiment (``seeds: k`` or a list)
MAX_SEEDS = 1000
#: hidden widths / channels of a layer
WIDTH_MAX = 65_536
#: CPU threads of torch
THREADS_MAX = 1024
#: learning rates (fields named ``lr`` or ``*_lr``)
LR_MAX = 1e6
#: any other float field, in magnitude
FLOAT_MAX = 1e12
#: run names and method labels (they become file and folder names)
NAME_MAX = 100
#: paths given in a config
PATH_MAX = 4096
#: bytes of one config file
MAX_CONFIG_BYTES = 1 << 20
#: values of one config after YAML aliases are expanded (an "alias bomb" of 450 bytes expands to billions)
MAX_NODES = 200_000
#: nesting depth of a config (mappings and lists)
MAX_DEPTH = 50
#: characters of a piece of input quoted in an error message
CLIP = 120

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = 6
_repr.maxstring = _repr.maxother = _repr.maxlong = CLIP
_repr.fillvalue = "…"


def clip(obj: Any, limit: int = CLIP) -> str:
    """``repr(obj)`` bounded to about ``limit`` characters, without walking more of ``obj`` than it prints (safe on
    huge or self-referencing values)."""
    try:
        text = _repr.repr(obj)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_problem(v: str, *, newlines: bool = True) -> str | None:
    """Why ``v`` cannot be a config string (NUL byte, lone surrogate, or a line break when ``newlines`` is False),
    or None."""
    if "\x00" in v:
        return "contains a NUL byte"
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not encodable as UTF-8)"
    if not newlines and ("\n" in v or "\r" in v):
        return "contains a line break"
    return None


def _one_line(v: str) -> str:
    why = text_problem(v, newlines=False)
    if why:
        raise ValueError(f"{clip(v)} {why}; use printable characters on one line")
    return v


#: a run name or method label: 1–100 characters on one line (also a file-name component)
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(_one_line)]
#: a path in a config: ≤ 4096 characters on one line
PathText = Annotated[str, Field(min_length=1, max_length=PATH_MAX), AfterValidator(_one_line)]
#: a seed: 0 ≤ seed ≤ 2**32 − 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
#: a sample id or class index: 0 ≤ i ≤ int64 max
Index = Annotated[int, Field(ge=0, le=INT64_MAX)]
#: a layer width / channel count: 1 ≤ w ≤ 65,536
Width = Annotated[int, Field(ge=1, le=WIDTH_MAX)]
#: torch CPU threads: 1 ≤ n ≤ 1024
Threads = Annotated[int, Field(ge=1, le=THREADS_MAX)]


def _kinds(ann: Any) -> tuple[set[type], set[type]]:
    """(scalar types, list element types) named by an annotation: ``int | None`` → ({int}, {}),
    ``list[float]`` → ({}, {float})."""
    scalars: set[type] = set()
    elems: set[type] = set()
    stack = [ann]
    while stack:
        a = stack.pop()
        origin = typing.get_origin(a)
        if origin is Annotated:
            stack.append(typing.get_args(a)[0])
        elif origin in (typing.Union, types.UnionType):
            stack.extend(typing.get_args(a))
        elif origin in (list, tuple, set, frozenset):
            for e in typing.get_args(a):
                e = typing.get_args(e)[0] if typing.get_origin(e) is Annotated else e
                if isinstance(e, type):
                    elems.add(e)
        elif isinstance(a, type):
            scalars.add(a)
    return scalars, elems


def _number_problem(v: Any, kinds: set[type], name: str) -> str | None:
    if isinstance(v, bool):
        return "is a boolean where a number is expected (write the number, e.g. 1)" if kinds & {int, float} and \
            bool not in kinds else None
    if isinstance(v, int) and kinds & {int, float} and abs(v) > INT64_MAX:
        return f"is out of range (|value| ≤ {INT64_MAX}, int64)"
    as_float = isinstance(v, float) or (isinstance(v, int) and int not in kinds)  # an int given for a float field
    if as_float and float in kinds and math.isfinite(v):
        is_lr = name == "lr" or name.endswith("_lr")
        bound = LR_MAX if is_lr else FLOAT_MAX
        if abs(v) > bound:
            return f"is out of range (|value| ≤ {bound:g}{' for a learning rate' if is_lr else ''})"
    return None


def guard_field_value(v: Any, annotation: Any, name: str) -> Any:
    """The checks every config field gets (see the module docstring); returns ``v`` or raises ``ValueError``."""
    if isinstance(v, str):
        why = text_problem(v)
        if why:
            raise ValueError(f"{clip(v)} {why}")
        return v
    if not isinstance(v, (bool, int, float, list, tuple)):
        return v
    scalars, elems = _kinds(annotation)
    if isinstance(v, (list, tuple)):
        for x in v:
            if isinstance(x, str) and str in elems and (why := text_problem(x)):
                raise ValueError(f"item {clip(x)} {why}")
            why = _number_problem(x, elems, name)
            if why:
                raise ValueError(f"item {clip(x)} {why}")
        return v
    why = _number_problem(v, scalars, name)
    if why:
        raise ValueError(f"{clip(v)} {why}")
    return v


__all__ = ["CLIP", "FLOAT_MAX", "INT64_MAX", "Index", "LR_MAX", "MAX_CONFIG_BYTES", "MAX_DEPTH", "MAX_NODES",
           "MAX_SEEDS", "NAME_MAX", "Name", "PATH_MAX", "PathText", "SEED_MAX", "Seed", "THREADS_MAX", "Threads",
           "WIDTH_MAX", "Width", "clip", "guard_field_value", "text_problem"]
