"""Unlearning methods, registered in ``METHODS`` (one file per method)."""

from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearned, Unlearner, UnlearnResult, derive_seed
from unlearnkit.registry import METHODS

# Registration side effects.
from unlearnkit.methods import exact as _exact  # noqa: E402,F401
from unlearnkit.methods import classifier as _classifier  # noqa: E402,F401
from unlearnkit.methods import graph as _graph  # noqa: E402,F401
from unlearnkit.methods import recsys as _recsys  # noqa: E402,F401
from unlearnkit.methods import continual as _continual  # noqa: E402,F401
from unlearnkit.methods import generative as _generative  # noqa: E402,F401

from unlearnkit.methods import llm as _llm  # noqa: E402,F401  (imports transformers/peft lazily, when used)

__all__ = ["METHODS", "OptimConfig", "UnlearnContext", "Unlearned", "Unlearner", "UnlearnResult", "derive_seed"]
