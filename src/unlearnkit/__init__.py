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

__version__ = "0.1.0"

__all__ = [
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
