"""The base class of generative unlearners and helpers shared by them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult
from unlearnkit.models.generative import require_kind


class GenerativeUnlearner(Unlearner):
    """Base of generative unlearners (``track = "generative"``).

    ``unlearn(model, forget, retain, engine, context, guide=...)`` takes a generator (θ_o, modified in place) and D_f,
    D_r as image sets; ``guide`` is the task's :class:`~unlearnkit.models.generative.Guide` (the CLIP-style model,
    the judge and the target's description), which the track passes; text-guided methods need it.

    Class attributes: ``models`` — the generator kinds served (``gan``, ``ddpm``); ``needs_guide`` — reads the guide.

    Raises:
        MethodError: a generator kind the method does not serve, or no guide for a method that needs one.
    """

    track: ClassVar[str] = "generative"
    needs_labels: ClassVar[bool] = False
    models: ClassVar[tuple[str, ...]] = ("gan", "ddpm")
    needs_guide: ClassVar[bool] = False

    def unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                context: UnlearnContext | None = None, *, guide: Any = None) -> UnlearnResult:
        require_kind(model, self.models, f"method {type(self).__name__}")
        if self.needs_guide and guide is None:
            raise MethodError(f"{type(self).__name__} needs the task's guide (CLIP-style model and target text); run "
                              "it through the generative track, which passes it")
        self.guide = guide
        try:
            return super().unlearn(model, forget, retain, engine, context)
        finally:
            self.guide = None


def cycle_batches(engine: Engine, data: SampleSet, batch_size: int, gen: torch.Generator
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches ``(x, ids)`` of ``data`` (reshuffled every pass, order from ``gen``)."""
    while True:
        for x, _, ids in engine.batches(data, min(batch_size, len(data)), shuffle=True, generator=gen):
            yield x, ids


def unique_ids(parts: list[np.ndarray]) -> np.ndarray:
    """Sorted unique int64 ids of the id arrays in ``parts`` (empty: an empty array)."""
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
