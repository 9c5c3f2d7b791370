"""Generic access to the parts of a classifier that several unlearners need: the head, the penultimate features.

A model is any ``nn.Module`` mapping inputs to logits float (b, C). The *head* is the last ``nn.Linear`` in module
registration order (``model.named_modules()``); the *features* are the input of the head, captured by a forward
pre-hook and flattened to (b, d). Both are checked on a real forward pass: the head must produce the model's output
dimension, and it must actually run. Models that do not fit raise :class:`~unlearnkit.errors.MethodError` with a
message saying why.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.errors import MethodError


def find_head(model: nn.Module, who: str = "this method") -> tuple[str, nn.Linear]:
    """The classification head: ``(qualified name, module)`` of the last ``nn.Linear`` of ``model``.

    Raises:
        MethodError: the model has no ``nn.Linear`` module.
    """
    found: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise MethodError(
            f"{who} needs a classification head (an nn.Linear producing the logits), but {type(model).__name__} has "
            "no nn.Linear module; wrap the model so its last layer is an nn.Linear"
        )
    return found


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``new`` (in place).

    Raises:
        MethodError: ``name`` is empty (the model itself is the head and cannot be replaced in place).
    """
    if not name:
        raise MethodError("the model itself is an nn.Linear; wrap it in nn.Sequential so its head can be replaced")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def forward_with_features(model: nn.Module, head: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(x)`` and capture the input of ``head``.

    Returns:
        ``(logits, features)``: logits float (b, C); features float (b, d) = the head's input flattened per sample
        (gradients flow through both).

    Raises:
        MethodError: the head did not run during the forward pass, ran more than once, or its output width differs
            from the model's output width (so it is not the layer that produces the logits).
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])

    handle = head.register_forward_pre_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise MethodError(
            f"the head (last nn.Linear, out_features={head.out_features}) ran {len(captured)} times in one forward "
            "pass; the penultimate features are undefined for this model"
        )
    if logits.ndim != 2 or logits.shape[1] != head.out_features:
        raise MethodError(
            f"the last nn.Linear has out_features={head.out_features} but the model outputs shape "
            f"{tuple(logits.shape)}; the last nn.Linear must be the layer that produces the logits (b, C)"
        )
    feats = captured[0]
    return logits, feats.reshape(feats.shape[0], -1)
