"""Experiment configuration: pydantic schemas and the YAML loader (``extends:``, ``--set a.b=v``)."""

from unlearnkit.config.loader import apply_overrides, config_hash, dump_yaml, load_config, parse_overrides
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
    "config_hash",
    "dump_yaml",
    "load_config",
    "parse_overrides",
]
