"""Approximate unlearning methods for classifiers (one file per method)."""

from unlearnkit.methods.classifier import finetune, grad_ascent, random_label  # noqa: F401
