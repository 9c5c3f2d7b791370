"""The public conformance kit: check that a method, a metric or a track keeps unlearnkit's contracts.

Use it in a plug-in's tests (and unlearnkit uses it over every registered component of every track)::

    from unlearnkit.testing import check_metric, check_track, check_unlearner

    def test_my_method():
        check_unlearner("my_method")          # on the tiny task of the method's track

Each check builds the tiny task of the component's track (:meth:`Track.conformance_config`: seconds on a CPU),
trains θ_o and θ_r through the runner's cache in a temporary folder, and raises ``AssertionError`` naming the
broken contract:

- :func:`check_unlearner`: a config class that round-trips, refuses unknown keys and is frozen; a source and a
  docstring; runs through the track on a copy of θ_o and returns :class:`~unlearnkit.methods.base.Unlearned` with
  finite weights of the same architecture; bit-identical under the same seed; a policy that survives its saved form;
  declared needs that the track refuses to serve with a typed error (an empty retain set for a method that needs
  one); a typed error for an empty forget set.
- :func:`check_metric`: documented keys, a source, a ``reads`` declaration; float values, per-sample arrays; the same
  numbers twice; on the oracle itself, the metric's oracle-relative keys are those of a perfect method.
- :func:`check_track`: an experiment class with ``track`` as its Literal; a plan whose every point has the oracle
  trained on exactly what is kept; rows for θ_o and θ_r; a resume that trains and writes nothing.

``requires_gpu``: a pytest marker that skips a test when no CUDA device is present (never a failure).
"""

from __future__ import annotations

import copy
import functools
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnkit.bench.resolve import resolve
from unlearnkit.bench.runner import Runner
from unlearnkit.bench.tracks import TRACKS
from unlearnkit.data.schedule import Evaluate, Forget
from unlearnkit.errors import DataError, MethodError, UnlearnkitError
from unlearnkit.methods import METHODS, UnlearnContext, Unlearned, derive_seed
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.base import READS

try:  # the marker is only meaningful under pytest
    import pytest

    requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
except ImportError:  # pragma: no cover - pytest not installed
    requires_gpu = None  # type: ignore[assignment]


class ConformanceError(AssertionError):
    """A component breaks one of unlearnkit's contracts (the message names it)."""


def _fail(what: str, why: str) -> None:
    raise ConformanceError(f"{what}: {why}")


@functools.lru_cache(maxsize=None)
def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="unlearnkit-conformance-"))


def setup_for(track: str, overrides: dict[str, Any] | None = None) -> Runner:
    """A runner on ``track``'s tiny conformance task (θ_o / θ_r cached in a temporary folder shared by all checks).

    Raises:
        ConformanceError: the track provides no conformance configuration.
    """
    import json

    return _setup(track, json.dumps(overrides or {}, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _setup(track: str, overrides_json: str) -> Runner:
    import json

    cls = TRACKS.get(track)
    base = cls.conformance_config()
    if base is None:
        _fail(f"track '{track}'", "provides no conformance_config() (a tiny experiment that runs in seconds)")
    data = _merge(dict(base), json.loads(overrides_json))
    data["track"] = track
    data.setdefault("seeds", [0])
    data.setdefault("methods", [])
    data["engine"] = {**data.get("engine", {}), "progress": False, "threads": 1}
    data["output_dir"] = str(_root() / "runs")
    data["name"] = f"conformance-{track}"
    return Runner(resolve(data), console=_quiet())


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _quiet() -> Any:
    from rich.console import Console

    return Console(file=io.StringIO())


def _first_request(runner: Runner) -> tuple[Any, Forget, int]:
    for branch in runner.plan:
        for pos, op in enumerate(branch.ops):
            if isinstance(op, Forget):
                return branch, op, pos
    _fail(f"track '{runner.cfg.track}'", "its conformance plan has no Forget operation")
    raise AssertionError  # pragma: no cover


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_unlearner(name: str, params: dict[str, Any] | None = None) -> Unlearned:
    """Check the method ``name`` (with ``params``, default its ``smoke_params``) on its track's tiny task.

    Returns:
        The :class:`Unlearned` of the first run (for further checks by the caller).

    Raises:
        ConformanceError: a broken contract (named).
    """
    what = f"method '{name}'"
    entry = METHODS.entry(name)
    cls = entry.obj
    if entry.config is None:
        _fail(what, "must register a config class (@METHODS.register(name, config=...))")
    cfg = entry.config()
    if entry.config.model_validate_json(cfg.model_dump_json()) != cfg:
        _fail(what, "its config does not round-trip through JSON")
    try:
        METHODS.validate_config(name, {"definitely_not_a_field": 1})
        _fail(what, "its config accepts unknown keys (use extra='forbid': derive from unlearnkit's Frozen)")
    except UnlearnkitError:
        pass
    if not getattr(cls, "source", ""):
        _fail(what, "must name its source (paper, arXiv id, reference code) in `source`")
    if not cls.__doc__ or len(cls.__doc__.strip()) < 30:
        _fail(what, "needs a docstring (what it does, the update rule, the source)")
    track = getattr(cls, "track", "classifier")
    conf = getattr(TRACKS.get(track), "conformance_overrides", lambda m: {})(cls)
    runner = setup_for(track, conf)
    params = dict(getattr(cls, "smoke_params", {}) if params is None else params)
    method = METHODS.build(name, params)
    branch, op, pos = _first_request(runner)
    runner.track.check_method(method, name, op.task)
    theta_o = runner.original(0, branch, pos)

    def once() -> Unlearned:
        ctx = UnlearnContext(seed=0, train_recipe=runner.track.recipe("original"),
                             init_seed=derive_seed(0, "oracle-init"),
                             model_factory=lambda s: runner.track.new_model(op.task, s))
        return runner.track.unlearn(op.task, METHODS.build(name, params), copy.deepcopy(theta_o.model), ctx)

    a, b = once(), once()
    if not isinstance(a, Unlearned):
        _fail(what, f"unlearn() must return Unlearned(model, ...), got {type(a).__name__}")
    sa, sb = _state(a.model), _state(b.model)
    for k, v in sa.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            _fail(what, f"parameter {k} is not finite after unlearning")
        if not torch.equal(v, sb[k]):
            _fail(what, f"not deterministic under a fixed seed ({k} differs between two runs)")
    other = getattr(cls, "returns_ensemble", False) or getattr(cls, "changes_architecture", False)
    if not other and set(sa) != set(_state(theta_o.model)):
        _fail(what, "the unlearned model's state dict has other keys than θ_o's (another architecture); declare "
                    "`returns_ensemble` or `changes_architecture` if that is the method")
    if a.seconds <= 0:
        _fail(what, "Unlearned.seconds must be the measured wall-clock time (> 0)")
    if a.policy is not None:
        from unlearnkit.models.policy import policy_from_saved

        back = policy_from_saved(a.policy.kind, a.policy.config(), a.policy.tensors())
        if back.config() != a.policy.config():
            _fail(what, "its policy does not survive config()/from_saved()")
        if not set(a.policy.affects) <= set(READS):
            _fail(what, f"its policy declares unknown outputs in `affects`: {sorted(a.policy.affects)}")
    # declared needs: a method that needs D_r is refused (typed) on a request that leaves none
    needs = method.requirements()
    if needs["retain"]:
        empty = _without_retain(op.task)
        if empty is not None:
            try:
                runner.track.check_method(method, name, empty)
                _fail(what, "needs a retain set with these settings, but the track accepts a request without one")
            except (MethodError, DataError):
                pass
    return a


def _without_retain(task: Any) -> Any:
    """``task`` with an empty retain set, where the task type allows building one (classifier tasks)."""
    from dataclasses import is_dataclass, replace

    retain = getattr(task, "retain", None)
    if is_dataclass(task) and hasattr(retain, "take"):
        try:
            return replace(task, retain=retain.take(np.zeros(0, dtype=np.int64), "retain"))
        except TypeError:
            return None
    return None


def check_metric(name: str, params: dict[str, Any] | None = None) -> dict[str, float]:
    """Check the metric ``name`` on its track's tiny task (θ_o evaluated twice, and θ_r).

    Returns:
        The metric's values on θ_o.

    Raises:
        ConformanceError: a broken contract (named).
    """
    what = f"metric '{name}'"
    entry = METRICS.entry(name)
    cls = entry.obj
    if not getattr(cls, "keys", None):
        _fail(what, "must document its keys (`keys = {key: meaning and direction}`)")
    if not getattr(cls, "source", ""):
        _fail(what, "must name its source (paper, arXiv id) in `source`")
    reads = set(getattr(cls, "reads", ()))
    if not reads or not reads <= set(READS):
        _fail(what, f"must declare the outputs it reads (`reads` ⊆ {READS}), got {sorted(reads)}")
    track = getattr(cls, "track", "classifier")
    conf = getattr(TRACKS.get(track), "conformance_overrides", lambda m: {})(cls)
    runner = setup_for(track, conf)
    branch = runner.plan[0]
    pos = branch.points[0]
    ev: Evaluate = branch.ops[pos]
    theta_o, theta_r = runner.original(0, branch, pos), runner.oracle(0, branch, pos)
    refs = {"original_model": theta_o.model, "oracle_model": theta_r.model, **ev.references}
    metric_params = dict(getattr(cls, "smoke_params", {}) if params is None else params)

    def once(model: torch.nn.Module) -> Any:
        ctx = runner.track.eval_context(ev.task, model, 0, refs, {})
        return METRICS.build(name, metric_params).compute(ctx)

    first, again = once(theta_o.model), once(theta_o.model)
    for k, v in first.values.items():
        if not isinstance(v, float) and not isinstance(v, int):
            _fail(what, f"value {k!r} is a {type(v).__name__}, not a float")
        w = again.values.get(k)
        if not (v == w or (np.isnan(v) and np.isnan(w))):
            _fail(what, f"value {k!r} differs between two evaluations of the same model ({v} vs {w})")
    for k, arr in first.per_sample.items():
        if not isinstance(arr, np.ndarray):
            _fail(what, f"per-sample output {k!r} must be a numpy array, got {type(arr).__name__}")
    once(theta_r.model)  # the oracle evaluates too (its references: itself)
    return dict(first.values)


def check_track(name: str) -> None:
    """Check the track ``name`` end to end on its tiny conformance experiment.

    Raises:
        ConformanceError: a broken contract (named).
    """
    what = f"track '{name}'"
    entry = TRACKS.entry(name)
    exp = entry.config
    field = getattr(exp, "model_fields", {}).get("track")
    if field is None or field.default != name:
        _fail(what, "its experiment class needs `track: Literal[name] = name`")
    runner = setup_for(name)
    for branch in runner.plan:
        for pos in branch.points:
            tm = runner.oracle(0, branch, pos)
            kept = np.unique(np.concatenate([ids for _, ids in branch.oracle_learning(pos)]))
            if not np.array_equal(np.sort(tm.trained_ids), kept):
                _fail(what, f"the oracle at point {pos} was not trained on exactly the kept ids")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = runner.cfg.model_copy(update={"output_dir": tmp, "cache_dir": str(_root() / "runs" / "cache")})
        out = Runner(cfg, console=_quiet()).run()
        roles = {r.get("role") for r in out.rows if r.get("status") == "ok"}
        if not {"oracle", "original"} <= roles:
            _fail(what, f"a run must write ok rows for θ_r and θ_o, got roles {sorted(roles)}: "
                        f"{[r.get('error') for r in out.rows if r.get('status') != 'ok']}")
        again = Runner(cfg, console=_quiet()).run()
        if again.new_rows or again.trained:
            _fail(what, f"a resumed run wrote {again.new_rows} row(s) and trained {again.trained}; it must do nothing")


__all__ = ["ConformanceError", "check_metric", "check_track", "check_unlearner", "requires_gpu", "setup_for"]
