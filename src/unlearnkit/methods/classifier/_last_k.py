"""Helpers of EU-k and CF-k: "the last k layers" of an arbitrary classifier, freezing the rest exactly.

A *parametrised module* is a module that owns parameters directly (``module.parameters(recurse=False)`` non-empty):
``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.LayerNorm``, a user module with its own ``nn.Parameter`` ...
They are ordered by **forward order**: the order of their first call in one forward pass on a real input (modules not
called in that pass are ignored: they do not affect the output). Two ways to count layers:

* ``"weight_layer"`` (Goel et al.'s reference code): only convolutions and ``nn.Linear`` count; every other
  parametrised module (BatchNorm, LayerNorm, ...) that comes after the k-th-from-last counted layer goes with it.
  For ``conv → bn → relu → ... → fc``, k = 1 selects ``fc``; k = 2 selects ``conv, bn, fc`` of the last block.
* ``"module"``: every parametrised module counts (a BatchNorm is a layer of its own).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError

LayerUnit = Literal["weight_layer", "module"]
_WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def owns_parameters(module: nn.Module) -> bool:
    """True if ``module`` has parameters of its own (not counting its children's)."""
    return any(True for _ in module.parameters(recurse=False))


@torch.no_grad()
def forward_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Parametrised modules of ``model`` in the order of their first call on ``example`` (a batch, float (b, ...)).

    Runs one forward pass in eval mode (the training flag and all weights/buffers are left unchanged).

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
    """The modules of the last ``k`` layers, in forward order (see the module docstring for ``unit``).

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


def select_last_k(model: nn.Module, data: SampleSet, engine: Engine, k: int, unit: LayerUnit
                  ) -> tuple[list[tuple[str, nn.Module]], list[nn.Module]]:
    """``(selected, frozen)``: the last-k modules (forward order) and every other parametrised module.

    The forward order is traced on the first two samples of ``data``, on the engine's device.
    """
    model.to(engine.device)
    x, _, _ = next(engine.batches(data.take(list(range(min(2, len(data))))), 2, shuffle=False))
    order = forward_order(model, x)
    selected = last_k_modules(order, k, unit)
    chosen = {id(m) for _, m in selected}
    frozen = [m for m in model.modules() if id(m) not in chosen and owns_parameters(m)]
    return selected, frozen


def reinitialise(modules: list[tuple[str, nn.Module]], seed: int) -> None:
    """Call ``reset_parameters()`` on each module, in the given order, under ``torch.manual_seed(seed)``.

    The global RNG state is restored afterwards. BatchNorm's ``reset_parameters`` also resets its running statistics.

    Raises:
        MethodError: a module has no ``reset_parameters`` (cannot be re-initialised).
    """
    bad = [n for n, m in modules if not callable(getattr(m, "reset_parameters", None))]
    if bad:
        raise MethodError(f"cannot re-initialise {bad[:5]}: no reset_parameters(); use cf_k (fine-tune without "
                          "re-initialisation) or a smaller k")
    devices = [p.device for _, m in modules for p in m.parameters(recurse=False)]
    with torch.random.fork_rng(devices=[d for d in {*devices} if d.type == "cuda"]):
        torch.manual_seed(seed)
        for _, m in modules:
            m.reset_parameters()


class FrozenPart:
    """Freeze every parameter and buffer outside the selected modules, for the duration of a ``with`` block.

    Parameters of the frozen modules get ``requires_grad=False`` (restored on exit); frozen modules that hold buffers
    (BatchNorm running statistics) are switched to eval mode before every forward by :meth:`loss_fn`, so their
    statistics do not move either. Together the frozen part stays bit-identical.
    """

    def __init__(self, model: nn.Module, selected: list[tuple[str, nn.Module]], frozen: list[nn.Module]) -> None:
        self.model = model
        chosen = {id(m) for _, m in selected}
        self.selected_params = [p for _, m in selected for p in m.parameters(recurse=False)]
        self.frozen_params = [p for m in frozen for p in m.parameters(recurse=False)]
        self.buffer_modules = [m for m in model.modules()
                               if id(m) not in chosen and any(True for _ in m.buffers(recurse=False))]
        self._flags: list[bool] = []

    def __enter__(self) -> FrozenPart:
        self._flags = [p.requires_grad for p in self.frozen_params]
        for p in self.frozen_params:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc: object) -> None:
        for p, flag in zip(self.frozen_params, self._flags):
            p.requires_grad_(flag)

    def loss_fn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with the frozen buffer-holding modules in eval mode."""
        for m in self.buffer_modules:
            m.training = False  # this module only: a frozen parent must not switch selected children to eval
        return nn.functional.cross_entropy(model(x), y)
