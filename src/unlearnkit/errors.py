"""Typed errors of unlearnkit.

Every error that a user can cause is one of these, with a message that says *what* went wrong, *why*, and
*how to fix it*. They subclass the matching builtin where one fits, so ``except ValueError`` still works.
"""

from __future__ import annotations


class UnlearnkitError(Exception):
    """Base class of every error raised on purpose by unlearnkit."""


class ConfigError(UnlearnkitError, ValueError):
    """A configuration value, key or name is invalid (unknown method, typo in a key, out-of-range value)."""


class DataError(UnlearnkitError, ValueError):
    """Data is missing, malformed, or a split/scenario cannot be built from it."""


class NotFittedError(UnlearnkitError, RuntimeError):
    """An object was used before the step that prepares it (e.g. a cached importance not yet computed)."""


class CheckpointError(UnlearnkitError, OSError):
    """A checkpoint is missing, incomplete, or its SHA-256 does not match its manifest (tampered or corrupt)."""


class LedgerError(UnlearnkitError, RuntimeError):
    """The deletion ledger is inconsistent (broken hash chain, refused mutation)."""


class DivergenceError(UnlearnkitError, FloatingPointError):
    """Training produced a NaN or infinite loss; carries the optimizer step where it happened.

    Attributes:
        step: 0-based index of the optimizer step whose loss was not finite.
        loss: the offending loss value (``nan`` or ``±inf``).
    """

    def __init__(self, message: str, *, step: int, loss: float) -> None:
        super().__init__(message)
        self.step = step
        self.loss = loss


class MethodError(UnlearnkitError, RuntimeError):
    """An unlearning method cannot serve the requested scenario (e.g. it needs a retain set and none exists)."""


__all__ = [
    "UnlearnkitError",
    "ConfigError",
    "DataError",
    "NotFittedError",
    "CheckpointError",
    "LedgerError",
    "DivergenceError",
    "MethodError",
]
