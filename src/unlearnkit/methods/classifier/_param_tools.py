"""Helpers shared by the parameter-importance and closed-form-head methods (SSD, LFSSD, Fisher forgetting,
analytic head): a content hash of a model's state, the classification head, and penultimate features.

These work on arbitrary ``nn.Module`` classifiers that map inputs to logits ``(b, C)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import DataError, MethodError


def state_hash(model: nn.Module, exclude: Collection[str] = ()) -> str:
    """SHA-256 (hex) of the model's ``state_dict`` (names, dtypes, shapes and bytes of every tensor, buffers included).

    Two models share the hash exactly when their states are bit-identical, wherever they live (tensors are read on
    CPU). ``exclude``: state-dict keys left out (e.g. the head's weight and bias, to key the frozen body only).
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if name in exclude:
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs of the parameters with ``requires_grad``, in ``named_parameters`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classification head: the last ``nn.Linear`` in module registration order, with its qualified name.

    Raises:
        MethodError: the model has no ``nn.Linear``.
    """
    found: tuple[str, nn.Linear] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            found = (name, mod)
    if found is None:
        raise MethodError(
            f"{type(model).__name__} has no nn.Linear layer; this method needs a model whose output layer is an "
            "nn.Linear classification head (features -> logits)"
        )
    return found


def head_param_names(model: nn.Module) -> set[str]:
    """Qualified names of the head's weight and bias (empty when the model has no nn.Linear)."""
    try:
        name, head = find_head(model)
    except MethodError:
        return set()
    prefix = f"{name}." if name else ""
    return {prefix + n for n, _ in head.named_parameters(recurse=False)}


def iter_sets(
    engine: Engine, sets: Sequence[SampleSet], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Unshuffled batches ``(x, y, ids)`` over the concatenation of ``sets`` (in order), on the engine's device.

    Sets that view the same source are concatenated (batches cross the boundary, as a ``ConcatDataset`` would);
    otherwise each set is batched on its own, one after the other.
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

    Args:
        data: one set or several (taken in order).  batch_size: rows per forward (default: the engine's
            ``eval_batch_size``).

    Returns:
        ``features`` float64 CPU tensor (n, d), ``labels`` int64 (n,), ``ids`` int64 (n,).

    Raises:
        MethodError: no nn.Linear head, or its input is not a 2-D (batch, features) tensor.
    """
    sets = [data] if isinstance(data, SampleSet) else list(data)
    _, head = find_head(model)
    captured: list[torch.Tensor] = []

    def hook(_mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].detach())

    was_training = model.training
    model.to(engine.device).eval()
    handle = head.register_forward_pre_hook(hook)
    feats, labels, ids = [], [], []
    try:
        for x, y, i in iter_sets(engine, sets, batch_size or engine.config.eval_batch_size):
            captured.clear()
            model(x)
            if len(captured) != 1:
                raise MethodError(
                    f"the head (last nn.Linear) ran {len(captured)} times in one forward pass; the analytic head "
                    "needs a model whose last nn.Linear is applied exactly once, as its output layer"
                )
            f = captured[0]
            if f.ndim != 2 or f.shape[0] != x.shape[0]:
                raise MethodError(
                    f"the head's input has shape {tuple(f.shape)} for a batch of {x.shape[0]}; expected "
                    "(batch, features): the last nn.Linear must map pooled features to logits"
                )
            feats.append(f.to("cpu", torch.float64))
            labels.append(y.cpu().numpy())
            ids.append(i.numpy())
    finally:
        handle.remove()
        model.train(was_training)
    if not feats:
        return torch.zeros(0, head.in_features, dtype=torch.float64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(feats), np.concatenate(labels).astype(np.int64), np.concatenate(ids).astype(np.int64)
