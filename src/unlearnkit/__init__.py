"""unlearnkit: make a trained model forget chosen data and prove how well it forgot, against the retrained oracle."""

from unlearnkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    LedgerError,
    MethodError,
    NotFittedError,
    UnlearnkitError,
)

from unlearnkit._version import __version__  # noqa: E402

from unlearnkit.api import compare, evaluate, make_task, unlearn  # noqa: E402
from unlearnkit.bench import load_config, resolve, run_experiment  # noqa: E402
from unlearnkit.bench.tracks.classifier import ClassifierExperiment  # noqa: E402
from unlearnkit.config.schema import EngineConfig, ExperimentConfig, ScenarioConfig, TrainConfig  # noqa: E402
from unlearnkit.data.base import SampleSet  # noqa: E402
from unlearnkit.data.scenarios import Task  # noqa: E402


def summarize(rows):  # noqa: ANN001, ANN201 - thin re-export, see unlearnkit.report.summarize
    """Mean ± std per method over seeds (oracle first); see :func:`unlearnkit.report.summarize`."""
    from unlearnkit.report import summarize as _summarize

    return _summarize(rows)

__all__ = [
    "ClassifierExperiment",
    "EngineConfig",
    "ExperimentConfig",
    "SampleSet",
    "ScenarioConfig",
    "Task",
    "TrainConfig",
    "compare",
    "evaluate",
    "load_config",
    "make_task",
    "resolve",
    "run_experiment",
    "summarize",
    "unlearn",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "LedgerError",
    "MethodError",
    "NotFittedError",
    "UnlearnkitError",
    "__version__",
]
