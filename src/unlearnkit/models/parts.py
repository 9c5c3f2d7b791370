"""Model-structure utilities: the classification head, penultimate features, parametrised layers in forward order,
trainable parameters and a content hash of part of a model's state.

They work on any ``nn.Module`` classifier that maps inputs to logits float (b, C), not only on the registered
builders. The *head* is the last ``nn.Linear`` in module registration order (``model.named_modules()``); the
*penultimate features* are the head's input, captured by a forward pre-hook on a real forward pass, which also checks
that the head runs exactly once and produces the logits. A *parametrised module* owns parameters directly
(``module.parameters(recurse=False)`` non-empty: ``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm2d``, a user module with
its own ``nn.Parameter`` ...). Models that do not fit raise :class:`~unlearnkit.errors.MethodError` saying why.

Everything here is plain PyTorch on modules and tensors (no data sets, no engine): the data-set level wrappers live
with the methods that use them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

import torch
from torch import nn

from unlearnkit.engine.checkpoint import state_sha256
from unlearnkit.errors import MethodError

#: what counts as one layer in :func:`last_k_modules`
LayerUnit = Literal["weight_layer", "module"]
_WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


# -- the head and the penultimate features -------------------------------------------------------------------------
def find_head(model: nn.Module, who: str = "this method") -> tuple[str, nn.Linear]:
    """The classification head: ``(qualified name, module)`` of the last ``nn.Linear`` of ``model``.

    Args:
        model: any module.  who: the caller's name, used in the error message (e.g. ``"laf"``).

    Returns:
        ``(name, head)``: the dotted name as in ``model.named_modules()`` (``""`` when ``model`` itself is the
        ``nn.Linear``) and the module.

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


def head_param_names(model: nn.Module) -> set[str]:
    """Qualified ``state_dict`` / ``named_parameters`` names of the head's weight and bias.

    Returns:
        e.g. ``{"2.weight", "2.bias"}``; an empty set when the model has no ``nn.Linear`` (never raises).
    """
    try:
        name, head = find_head(model)
    except MethodError:
        return set()
    prefix = f"{name}." if name else ""
    return {prefix + n for n, _ in head.named_parameters(recurse=False)}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (as given by :func:`find_head`) by ``new``, in place.

    Raises:
        MethodError: ``name`` is empty (the model itself is the head and cannot be replaced in place).
    """
    if not name:
        raise MethodError("the model itself is an nn.Linear; wrap it in nn.Sequential so its head can be replaced")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def forward_with_features(
    model: nn.Module, head: nn.Linear, x: torch.Tensor, *, flatten: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(x)`` once and capture the input of ``head`` (a forward pre-hook, removed afterwards).

    The caller chooses mode (train/eval) and gradient tracking; gradients flow through both outputs.

    Args:
        model: classifier; ``head``: its head (see :func:`find_head`); ``x``: a batch of inputs, b rows.
        flatten: reshape the captured input to (b, d) (default); ``False`` returns it as the head received it,
            (b, ..., in_features).

    Returns:
        ``(logits, features)``: logits float (b, C), features float (b, d) = the head's input (flattened per sample
        when ``flatten``), in the model's dtype and on its device.

    Raises:
        MethodError: the head did not run during the forward pass or ran more than once, or the model's output is not
            (b, head.out_features) (so the head is not the layer that produces the logits).
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
    return logits, feats.reshape(feats.shape[0], -1) if flatten else feats


# -- parameters and state ----------------------------------------------------------------------------------------
def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs of the parameters with ``requires_grad``, in ``named_parameters`` order
    (shared parameters once)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class _StateView(nn.Module):
    """A module without parameters whose ``state_dict()`` is a given mapping (so a part of a state can be hashed)."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self._view = dict(state)

    def state_dict(self, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._view


def state_sha256_without(model: nn.Module, exclude: Collection[str]) -> str:
    """:func:`~unlearnkit.engine.checkpoint.state_sha256` of ``model``'s state dict without the keys in ``exclude``.

    The same digest format (names, dtypes, shapes and bytes of every tensor, buffers included, read on CPU): with an
    empty ``exclude`` it equals ``state_sha256(model)``. Two models share it exactly when their states outside
    ``exclude`` are bit-identical, wherever they live.

    Args:
        model: any module.  exclude: ``state_dict`` keys left out (e.g. :func:`head_param_names`, to key the
            frozen body only); unknown keys are ignored.

    Returns:
        64 lowercase hex characters.
    """
    if not exclude:
        return state_sha256(model)
    return state_sha256(_StateView({k: v for k, v in model.state_dict().items() if k not in exclude}))


# -- parametrised layers in forward order ------------------------------------------------------------------------
def owns_parameters(module: nn.Module) -> bool:
    """True if ``module`` has parameters of its own (not counting its children's)."""
    return any(True for _ in module.parameters(recurse=False))


@torch.no_grad()
def forward_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Parametrised modules of ``model`` in the order of their first call on ``example``.

    Runs one forward pass without gradients in eval mode (the training flag and all weights/buffers are left
    unchanged). Parametrised modules not called in that pass are left out: they do not affect the output.

    Args:
        model: any module.  example: a batch of inputs (b, ...) on the model's device and in its dtype.

    Returns:
        ``(qualified name, module)`` pairs, each module once.

    Raises:
        MethodError: no parametrised module is called in the forward pass.
    """
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, _inputs) -> None:
            if id(module) not in seen:
                seen.add(id(module))
                order.append((name, module))
        return hook

    for name, module in model.named_modules():
        if owns_parameters(module):
            handles.append(module.register_forward_pre_hook(make_hook(name)))
    was_training = model.training
    try:
        model.eval()
        model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not order:
        raise MethodError(f"{type(model).__name__} calls no module with parameters in its forward pass; "
                          "EU-k/CF-k need a model built from parametrised layers")
    return order


def last_k_modules(order: list[tuple[str, nn.Module]], k: int, unit: LayerUnit = "weight_layer"
                   ) -> list[tuple[str, nn.Module]]:
    """The modules of the last ``k`` layers of ``order`` (from :func:`forward_order`), in forward order.

    Two ways to count layers (``unit``):

    * ``"weight_layer"`` (Goel et al.'s reference code): only convolutions and ``nn.Linear`` count; every other
      parametrised module (BatchNorm, LayerNorm, ...) that comes after the k-th-from-last counted layer goes with it.
      For ``conv → bn → relu → ... → fc``, k = 1 selects ``fc``; k = 2 selects ``conv, bn, fc`` of the last block.
    * ``"module"``: every parametrised module counts (a BatchNorm is a layer of its own).

    Raises:
        MethodError: k < 1, or the model has fewer than ``k`` layers of that unit (message gives the count).
    """
    if k < 1:
        raise MethodError(f"k must be ≥ 1, got {k}")
    counts = (lambda m: isinstance(m, _WEIGHT_LAYERS)) if unit == "weight_layer" else (lambda m: True)
    available = sum(1 for _, m in order if counts(m))
    if available < k:
        what = "convolution/linear layers" if unit == "weight_layer" else "parametrised modules"
        raise MethodError(f"k={k} but the model has only {available} {what} in its forward pass; choose k ≤ "
                          f"{available}" + (" or layer_unit: module" if unit == "weight_layer" else ""))
    picked: list[tuple[str, nn.Module]] = []
    counted = 0
    for name, module in reversed(order):
        picked.append((name, module))
        if counts(module):
            counted += 1
            if counted == k:
                break
    picked.reverse()
    return picked


__all__ = [
    "LayerUnit", "find_head", "forward_order", "forward_with_features", "head_param_names", "last_k_modules",
    "owns_parameters", "replace_module", "state_sha256_without", "trainable_parameters",
]
