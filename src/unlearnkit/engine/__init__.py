"""The engine: one training/evaluation loop, seeding, determinism, progress, and checkpoint I/O."""

from unlearnkit.engine.checkpoint import ModelCache, file_sha256, load_checkpoint, save_checkpoint
from unlearnkit.engine.loop import (
    Engine,
    FitResult,
    Predictions,
    cross_entropy_loss,
    make_optimizer,
    make_scheduler,
)

__all__ = [
    "Engine",
    "FitResult",
    "ModelCache",
    "Predictions",
    "cross_entropy_loss",
    "file_sha256",
    "load_checkpoint",
    "make_optimizer",
    "make_scheduler",
    "save_checkpoint",
]
