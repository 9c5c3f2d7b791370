"""Helpers shared by several classifier unlearners: the optimizer step of hand-written loops, frozen teachers,
the trainable-parameter check, and data-set level wrappers of :mod:`unlearnkit.models.parts` (unshuffled batches over
several sets, penultimate features of a whole set).

Model-structure utilities (head, features of one batch, layers in forward order, state hash) live in
:mod:`unlearnkit.models.parts`; this module only holds what is specific to methods (it takes an engine or sets).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import DataError, MethodError
from unlearnkit.models.parts import find_head, forward_with_features, trainable_parameters

M = TypeVar("M", bound=nn.Module)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, engine: Engine, *, step: int, desc: str,
                   clip: nn.Module | None = None, grad_clip: float | None = None) -> float:
    """One step of a hand-written training loop, in the order :meth:`Engine.fit` uses.

    ``engine.check_finite(loss)`` (before any update), ``opt.zero_grad(set_to_none=True)``, ``loss.backward()``,
    optionally ``clip_grad_norm_(clip.parameters(), grad_clip)`` (only when both are given), ``opt.step()``.

    Args:
        loss: scalar float tensor with a graph.  step: step index for the error message.  desc: what is trained.

    Returns:
        ``float(loss)``.

    Raises:
        DivergenceError: the loss is NaN/inf (the weights are not touched).
    """
    value = engine.check_finite(loss, step=step, desc=desc)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None and grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(clip.parameters(), grad_clip)
    opt.step()
    return value


def freeze(module: M) -> M:
    """Put ``module`` in eval mode and set ``requires_grad=False`` on all its parameters (in place); returns it.

    For teachers and other fixed networks that a method evaluates but never trains.
    """
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def require_trainable(model: nn.Module, who: str = "") -> list[tuple[str, nn.Parameter]]:
    """:func:`~unlearnkit.models.parts.trainable_parameters` of ``model``, refusing a model with none.

    Raises:
        MethodError: no parameter has ``requires_grad`` (message prefixed by ``who``, when given).
    """
    named = trainable_parameters(model)
    if not named:
        prefix = f"{who}: " if who else ""
        raise MethodError(f"{prefix}the model has no trainable parameters (every requires_grad is False)")
    return named


def iter_sets(
    engine: Engine, sets: Sequence[SampleSet], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Unshuffled batches ``(x, y, ids)`` over the concatenation of ``sets`` (in order), on the engine's device.

    Sets that view the same source are concatenated (batches cross the boundary, as a ``ConcatDataset`` would);
    otherwise each set is batched on its own, one after the other. Empty sets are skipped.
    """
    sets = [s for s in sets if len(s)]
    if not sets:
        return
    joined: SampleSet | None = sets[0]
    for s in sets[1:]:
        try:
            joined = joined.concat(s)  # type: ignore[union-attr]
        except DataError:
            joined = None
            break
    for s in [joined] if joined is not None else sets:
        yield from engine.batches(s, batch_size, shuffle=False)


@torch.no_grad()
def head_features(
    model: nn.Module, data: SampleSet | Sequence[SampleSet], engine: Engine, batch_size: int | None = None
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Penultimate features: the inputs of the head (last ``nn.Linear``) on ``data``, model in eval mode.

    Uses :func:`~unlearnkit.models.parts.forward_with_features` on every batch; the training flag is restored.

    Args:
        data: one set or several (taken in order, see :func:`iter_sets`).  batch_size: rows per forward (default:
            the engine's ``eval_batch_size``).

    Returns:
        ``features`` float64 CPU tensor (n, d), ``labels`` int64 (n,), ``ids`` int64 (n,); with no rows,
        (0, head.in_features) and empty arrays.

    Raises:
        MethodError: no nn.Linear head; it does not run exactly once or does not produce the logits; or its input is
            not a 2-D (batch, features) tensor.
    """
    sets = [data] if isinstance(data, SampleSet) else list(data)
    _, head = find_head(model)
    was_training = model.training
    model.to(engine.device).eval()
    feats, labels, ids = [], [], []
    try:
        for x, y, i in iter_sets(engine, sets, batch_size or engine.config.eval_batch_size):
            f = forward_with_features(model, head, x, flatten=False)[1]
            if f.ndim != 2 or f.shape[0] != x.shape[0]:
                raise MethodError(
                    f"the head's input has shape {tuple(f.shape)} for a batch of {x.shape[0]}; expected "
                    "(batch, features): the last nn.Linear must map pooled features to logits"
                )
            feats.append(f.to("cpu", torch.float64))
            labels.append(y.cpu().numpy())
            ids.append(i.numpy())
    finally:
        model.train(was_training)
    if not feats:
        return torch.zeros(0, head.in_features, dtype=torch.float64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(feats), np.concatenate(labels).astype(np.int64), np.concatenate(ids).astype(np.int64)
