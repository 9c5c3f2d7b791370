"""Experiment configuration: pydantic schemas and the YAML loader (``extends:``, ``--set a.b=v``).

This package is a leaf: it imports nothing from the rest of unlearnkit but ``errors`` and ``persist``. Loading a
config with its names checked against the registries is :func:`unlearnkit.bench.load_config`.
"""

from unlearnkit.config.loader import apply_overrides, compose, config_hash, dump_yaml, parse_overrides
from unlearnkit.config.schema import (
    DataConfig,
    EngineConfig,
    ExperimentConfig,
    Frozen,
    MethodSpec,
    ModelSpec,
    ScenarioConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "EngineConfig",
    "ExperimentConfig",
    "Frozen",
    "MethodSpec",
    "ModelSpec",
    "ScenarioConfig",
    "TrainConfig",
    "apply_overrides",
    "compose",
    "config_hash",
    "dump_yaml",
    "parse_overrides",
]
