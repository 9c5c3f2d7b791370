"""Continual learning and unlearning: the learners of ``scenario.learner`` (:data:`LEARNERS`) and the methods that
unlearn their models (``uncle``, ``acu``) plus O3 for the LLM track (``o3``)."""

from unlearnkit.methods.continual.base import LEARNERS, Learner, LearnResult, LearnSpec, ModelInfo, build_learner

# Registration side effects.
from unlearnkit.methods.continual import replay as _replay  # noqa: E402,F401
from unlearnkit.methods.continual import refresh as _refresh  # noqa: E402,F401
from unlearnkit.methods.continual import uncle as _uncle  # noqa: E402,F401
from unlearnkit.methods.continual import acu as _acu  # noqa: E402,F401
from unlearnkit.methods.continual import o3 as _o3  # noqa: E402,F401

__all__ = ["LEARNERS", "LearnResult", "LearnSpec", "Learner", "ModelInfo", "build_learner"]
