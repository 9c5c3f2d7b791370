"""Exact unlearning: the result is distributed as a model trained without the forget set."""

from unlearnkit.methods.exact import retrain  # noqa: F401
from unlearnkit.methods.exact import sisa  # noqa: F401
from unlearnkit.methods.exact import s3t  # noqa: F401
