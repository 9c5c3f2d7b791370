"""Training and unlearning events, written as they happen: one stream, several writers.

The engine's loops emit an event per optimizer step (``step``, the loss and each loss term separately, the learning
rate, seconds since the start) and, when a method runs with ``eval_every: N``, an evaluation event every N steps
(the track's curve metrics on the current model, with the oracle's numbers of the same point beside them). Every
event carries the scope the runner sets (run, method label, seed, evaluation point, phase).

Writers (``engine.trackers``):

- ``jsonl`` (always on in runs): ``<run>/events.jsonl``, one JSON object per line — the report draws its curves from
  it (results rows stay in ``results.jsonl``; events are telemetry, flushed per line without fsync);
- ``mlflow`` (``pip install 'unlearnkit[track]'``): an MLflow tracking store in SQLite, ``<run>/mlflow.db``, one MLflow
  run per (method, seed, point), metrics logged with their step;
- ``tensorboard`` (``pip install tensorboard``): ``<run>/tensorboard/<method>-seed<s>[-<point>]/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unlearnkit.errors import ConfigError
from unlearnkit.persist import refuse_symlink

TRACKERS: tuple[str, ...] = ("jsonl", "mlflow", "tensorboard")


class EventWriter:
    """A destination of events: ``write`` each event (a flat JSON-serialisable dict), ``close`` at the end."""

    def write(self, event: Mapping[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release (default: nothing)."""


class JsonlWriter(EventWriter):
    """``path``: one JSON line per event (a symlink at ``path`` is refused)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        refuse_symlink(self.path, "events file")
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, event: Mapping[str, Any]) -> None:
        self._f.write(json.dumps(event, sort_keys=True, allow_nan=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _scope_name(scope: Mapping[str, Any]) -> str:
    parts = [str(scope.get("method", "run")), f"seed{scope.get('seed', 0)}"]
    if scope.get("point"):
        parts.append(str(scope["point"]))
    return "-".join(parts)


def _numbers(event: Mapping[str, Any]) -> dict[str, float]:
    skip = {"step", "seed", "epoch", "time"}
    return {k: float(v) for k, v in event.items() if k not in skip and isinstance(v, (int, float))
            and not isinstance(v, bool)}


class MLflowWriter(EventWriter):
    """An MLflow tracking store ``sqlite:///<folder>/mlflow.db``: one MLflow run per scope, metrics with steps.

    Raises:
        ConfigError: mlflow is not installed.
    """

    def __init__(self, folder: str | Path, experiment: str) -> None:
        try:
            import mlflow
        except ImportError as err:
            raise ConfigError("engine.trackers lists mlflow, which is not installed: pip install 'unlearnkit[track]'"
                              ) from err
        self._mlflow = mlflow
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlflow.db').resolve()}")
        exp = self._client.get_experiment_by_name(experiment)
        self._exp = exp.experiment_id if exp is not None else self._client.create_experiment(
            experiment, artifact_location=(folder / "mlruns").resolve().as_uri())
        self._runs: dict[str, str] = {}

    def write(self, event: Mapping[str, Any]) -> None:
        name = _scope_name(event)
        run_id = self._runs.get(name)
        if run_id is None:
            run = self._client.create_run(self._exp, run_name=name,
                                          tags={k: str(event[k]) for k in ("method", "seed", "point") if k in event})
            run_id = self._runs[name] = run.info.run_id
        step = int(event.get("step", 0))
        ts = int(1000 * float(event.get("time", time.time())))
        for k, v in _numbers(event).items():
            self._client.log_metric(run_id, f"{event.get('kind', 'event')}.{k}", v, timestamp=ts, step=step)

    def close(self) -> None:
        for run_id in self._runs.values():
            self._client.set_terminated(run_id)


class TensorBoardWriter(EventWriter):
    """TensorBoard event files under ``<folder>/tensorboard/<scope>/``.

    Raises:
        ConfigError: tensorboard is not installed.
    """

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError("engine.trackers lists tensorboard, which is not installed: pip install tensorboard"
                              ) from err
        self._cls = SummaryWriter
        self._root = Path(folder) / "tensorboard"
        self._writers: dict[str, Any] = {}

    def write(self, event: Mapping[str, Any]) -> None:
        name = _scope_name(event)
        w = self._writers.get(name)
        if w is None:
            w = self._writers[name] = self._cls(log_dir=str(self._root / name))
        for k, v in _numbers(event).items():
            w.add_scalar(f"{event.get('kind', 'event')}/{k}", v, int(event.get("step", 0)))

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


class Events:
    """The event stream of an engine: writers, the current scope, and the per-step loss terms.

    Without writers every call is a no-op (the default outside a run).
    """

    def __init__(self) -> None:
        self.writers: list[EventWriter] = []
        self.scope: dict[str, Any] = {}
        self._terms: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return bool(self.writers)

    def open(self, trackers: tuple[str, ...] | list[str], folder: str | Path, experiment: str) -> None:
        """Open the writers named in ``trackers`` (``jsonl``, ``mlflow``, ``tensorboard``) in ``folder``.

        Raises:
            ConfigError: an unknown tracker, or one whose package is missing.
        """
        self.close()
        for t in dict.fromkeys(trackers):
            if t == "jsonl":
                self.writers.append(JsonlWriter(Path(folder) / "events.jsonl"))
            elif t == "mlflow":
                self.writers.append(MLflowWriter(folder, experiment))
            elif t == "tensorboard":
                self.writers.append(TensorBoardWriter(folder))
            else:
                raise ConfigError(f"unknown tracker {t!r}; use {', '.join(TRACKERS)}")

    def close(self) -> None:
        for w in self.writers:
            w.close()
        self.writers = []

    @contextmanager
    def scoped(self, **fields: Any) -> Iterator[None]:
        """Events emitted inside carry ``fields`` (method, seed, point, phase …) on top of the outer scope."""
        old = dict(self.scope)
        self.scope.update(fields)
        try:
            yield
        finally:
            self.scope = old

    def record_terms(self, **terms: float) -> None:
        """Loss terms of the current step (e.g. ``forget=…, retain=…``), added to the next ``step`` event."""
        if self.active:
            for k, v in terms.items():
                self._terms[k] = float(v.detach()) if hasattr(v, "detach") else float(v)

    def emit(self, kind: str, **fields: Any) -> None:
        """Write one event (``kind``: ``step``, ``eval``, …) to every writer, with the scope and a timestamp."""
        if not self.writers:
            return
        event = {"kind": kind, "time": time.time(), **self.scope, **fields}
        if kind == "step" and self._terms:
            event.update({f"term.{k}": v for k, v in self._terms.items()})
            self._terms = {}
        for w in self.writers:
            w.write(event)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events of an ``events.jsonl`` (``[]`` if absent); damaged lines are skipped."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


__all__ = ["EventWriter", "Events", "JsonlWriter", "MLflowWriter", "TRACKERS", "TensorBoardWriter", "read_events"]
