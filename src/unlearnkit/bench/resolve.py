"""From a YAML file or a mapping to a checked experiment: the one step that knows the registries.

``config/`` is a leaf (it imports no method, metric, model or track). This module turns a composed mapping into the
experiment class of its track — a pydantic discriminated union on ``track`` over every registered track (plug-ins
included) — and checks every name against the registries before anything trains:

- methods exist, serve the experiment's track, and their parameters validate (filled with their defaults);
- metrics exist and serve the track; ``metric_params`` validate against each metric's config;
- the track's own names (data sets, model builders) through :meth:`Track.resolve`.

Usage::

    cfg = load_config("configs/digits_random10.yaml", ["train.epochs=5"])
    cfg = resolve({"track": "llm", "llm": {...}, "methods": ["npo"]})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from unlearnkit.config.loader import check_size, compose, validation_message
from unlearnkit.config.schema import ORACLE_LABEL, ORIGINAL_LABEL, ExperimentConfig
from unlearnkit.errors import ConfigError
from unlearnkit.registry import suggest


def _tracks() -> Any:
    from unlearnkit.bench.tracks import TRACKS

    return TRACKS


def experiment_classes() -> dict[str, type[ExperimentConfig]]:
    """Track name → its experiment class, for every registered track."""
    tracks = _tracks()
    out = {}
    for name in tracks.names():
        cls = tracks.entry(name).config
        if cls is None or not issubclass(cls, ExperimentConfig):
            raise ConfigError(f"track '{name}' is registered without an experiment class; register it with "
                              "@TRACKS.register(name, config=<ExperimentConfig subclass with track: Literal[name]>)")
        out[name] = cls
    return out


def experiment_adapter() -> TypeAdapter:
    """The discriminated union (on ``track``) of every registered track's experiment class."""
    classes = tuple(experiment_classes().values())
    if len(classes) == 1:
        return TypeAdapter(classes[0])
    return TypeAdapter(Annotated[Union[classes], Field(discriminator="track")])  # noqa: UP007


def experiment_schema() -> dict[str, Any]:
    """JSON Schema of an experiment config (``unlearnkit schema``): one branch per track."""
    return experiment_adapter().json_schema()


def parse(raw: Mapping[str, Any], source: str = "<mapping>") -> ExperimentConfig:
    """Validate a composed mapping as the experiment class of its ``track`` (default ``classifier``).

    Raises:
        ConfigError: unknown track (with the closest name), unknown keys (with the allowed keys), bad values.
    """
    check_size(raw, source)  # bounded size and nesting before anything walks it
    data = dict(raw)
    track = data.setdefault("track", "classifier")
    classes = experiment_classes()
    if not isinstance(track, str) or track not in classes:
        raise ConfigError(f"invalid config {source}: unknown track {str(track)[:40]!r}.{suggest(str(track), list(classes))} "
                          f"Tracks: {', '.join(sorted(classes))}")
    cls = classes[track]
    foreign = [k for k in data if k not in cls.model_fields]
    owners = {k: sorted(t for t, c in classes.items() if k in c.model_fields) for k in foreign}
    sections = [k for k in foreign if k in classes]
    if sections:
        k = sections[0]
        raise ConfigError(f"invalid config {source}: section '{k}' is only used with track: {k} (this experiment's "
                          f"track is '{track}'); remove it or set track: {k}")
    misplaced = sorted(k for k in foreign if owners[k])
    if misplaced:
        where = sorted({t for k in misplaced for t in owners[k]})
        raise ConfigError(f"invalid config {source}: {misplaced} belong to the {' / '.join(where)} track; track "
                          f"'{track}' takes its data, model, split and training settings from "
                          f"{'its own section' if track not in cls.model_fields else repr(track + ':')} "
                          f"(`unlearnkit schema --track {track}`)")
    try:
        adapter = experiment_adapter()
        cfg = adapter.validate_python(data)
    except ValidationError as err:
        raise ConfigError(validation_message(_strip_tag(err, track), cls, source)) from err
    except RecursionError:
        raise ConfigError(f"invalid config {source}: nested too deeply to validate; flatten it") from None
    return cfg


class _Stripped:
    """A ValidationError view without the union's tag as the first location part."""

    def __init__(self, err: ValidationError, tag: str) -> None:
        self._errors = []
        for e in err.errors():
            loc = tuple(e["loc"])
            if loc and loc[0] == tag:
                loc = loc[1:]
            self._errors.append({**e, "loc": loc})

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


def _strip_tag(err: ValidationError, tag: str) -> Any:
    return _Stripped(err, tag)


def resolve(cfg: ExperimentConfig | Mapping[str, Any], *, source: str = "<mapping>") -> ExperimentConfig:
    """The experiment with every name checked against the registries and every component's parameters filled in.

    Args:
        cfg: a mapping (validated here as its track's experiment class) or an experiment instance.

    Raises:
        ConfigError: an unknown method / metric / data set / model (with the closest name), a method or metric of
            another track (listing this track's), bad component parameters.
    """
    if not isinstance(cfg, ExperimentConfig):
        cfg = parse(cfg, source)
    from unlearnkit.methods import METHODS
    from unlearnkit.metrics import METRICS

    track = cfg.track
    track_cls = _tracks().get(track)
    specs = []
    for m in cfg.methods:
        METHODS.entry(m.name)
        served = getattr(METHODS.get(m.name), "track", "classifier")
        reference_row = m.label in (ORACLE_LABEL, ORIGINAL_LABEL) and m.name in ("retrain", "original")
        if served != track and not reference_row:  # the oracle row / θ_o row: every track trains its own
            ok = sorted(n for n in METHODS.names() if getattr(METHODS.get(n), "track", "classifier") == track)
            raise ConfigError(f"invalid config {source}: method '{m.name}' is a {served} method; this experiment's "
                              f"track is '{track}' (its methods: {', '.join(ok) or 'none'})")
        params = METHODS.validate_config(m.name, m.params)
        specs.append(m.model_copy(update={"params": params.model_dump(mode="json") if params is not None else {}}))
    metric_params = {}
    for name in cfg.metrics:
        METRICS.entry(name)
        served = getattr(METRICS.get(name), "track", "classifier")
        if served != track:
            ok = sorted(n for n in METRICS.names() if getattr(METRICS.get(n), "track", "classifier") == track)
            raise ConfigError(f"invalid config {source}: metric '{name}' is a {served} metric; this experiment's "
                              f"track is '{track}' (its metrics: {', '.join(ok) or 'none'})")
    for name, params in cfg.metric_params.items():
        checked = METRICS.validate_config(name, params or {})
        metric_params[name] = checked.model_dump(mode="json") if checked is not None else {}
    cfg = cfg.model_copy(update={"methods": specs, "metric_params": metric_params})
    return track_cls.resolve(cfg)


def experiment(**fields: Any) -> ExperimentConfig:
    """An experiment of any track from keyword fields, resolved: ``experiment(track="llm", llm={...},
    methods=["npo"])``.

    Raises:
        ConfigError: as :func:`resolve`.
    """
    return resolve(fields, source="<keywords>")


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *,
                data: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Load, compose, validate and resolve an experiment config.

    Args:
        path: YAML file (its ``extends:`` chain is resolved), or a bundled config name; None = defaults only.
        overrides: ``["a.b=v", ...]`` applied after composition (``--set``).
        data: an already-parsed mapping used instead of ``path``.

    Returns:
        The track's experiment class instance (frozen), names checked (:func:`resolve`).

    Raises:
        ConfigError: missing file, bad YAML, unknown key (names the allowed keys), bad value, unknown method / metric /
            track, a component of another track.
    """
    raw, source = compose(path, overrides, data=data)
    return resolve(raw, source=source)


__all__ = ["experiment", "experiment_adapter", "experiment_classes", "experiment_schema", "load_config", "parse", "resolve"]
