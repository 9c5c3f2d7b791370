"""Model builders (registered in ``MODELS``): ``mlp``, ``cnn``, ``resnet18`` (CIFAR stem), plus user modules.

A builder is ``f(config, input_shape, num_classes) -> nn.Module`` producing logits float (b, num_classes) for inputs
float (b, *input_shape). Initialisation is seeded by the caller (``torch.manual_seed`` before building).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.limits import WIDTH_MAX, Width
from unlearnkit.config.schema import Frozen, ModelSpec
from unlearnkit.errors import ConfigError
from unlearnkit.registry import MODELS


class MLPConfig(Frozen):
    """Multi-layer perceptron on flattened inputs."""

    hidden: list[Width] = Field(default_factory=lambda: [128, 64], max_length=64,
                               description="widths of hidden layers (1 to 65,536 each)")
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: str = Field("relu", pattern="^(relu|gelu|tanh)$")


class CNNConfig(Frozen):
    """Small conv net: ``len(channels)`` blocks of conv3×3-BN-ReLU(-maxpool), global average pool, linear head."""

    channels: list[Width] = Field(default_factory=lambda: [32, 64], max_length=64)
    pool: bool = Field(True, description="2×2 max-pool after each block while the map is ≥ 4×4")
    dropout: float = Field(0.0, ge=0, lt=1)


class ResNetConfig(Frozen):
    """torchvision ResNet-18 with the CIFAR stem (3×3 conv, stride 1, no max-pool), as in the SalUn/ℓ1-sparse code."""

    width: int = Field(64, ge=8, le=WIDTH_MAX, description="channels of the first stage (64 = standard ResNet-18)")


_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@MODELS.register("mlp", config=MLPConfig)
def build_mlp(cfg: MLPConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """``Flatten → [Linear → act → Dropout]* → Linear``; input any shape, flattened to prod(input_shape)."""
    d = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in cfg.hidden:
        layers += [nn.Linear(d, h), _ACT[cfg.activation]()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        d = h
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv blocks + global average pooling + linear head; ``features(x)`` returns the pooled (b, C) features."""

    def __init__(self, cfg: CNNConfig, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"cnn needs image inputs (C, H, W), got input shape {tuple(input_shape)}; use mlp")
        c, h, _ = input_shape
        blocks: list[nn.Module] = []
        for out in cfg.channels:
            blocks += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if cfg.pool and h >= 4:
                blocks.append(nn.MaxPool2d(2))
                h //= 2
            c = out
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.head = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x)))


@MODELS.register("cnn", config=CNNConfig)
def build_cnn(cfg: CNNConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return SmallCNN(cfg, input_shape, num_classes)


@MODELS.register("resnet18", config=ResNetConfig)
def build_resnet18(cfg: ResNetConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """torchvision ``resnet18(num_classes)`` with ``conv1`` = 3×3/stride 1/pad 1 and ``maxpool`` = Identity.

    Raises:
        ConfigError: torchvision is not installed (``pip install unlearnkit[vision]``).
    """
    try:
        from torchvision.models import ResNet
        from torchvision.models.resnet import BasicBlock
    except ImportError as err:
        raise ConfigError(
            "model 'resnet18' needs torchvision: pip install 'unlearnkit[vision]' (or use model: cnn)"
        ) from err
    in_ch = input_shape[0] if input_shape else 3

    class _ResNet(ResNet):
        def __init__(self) -> None:
            super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, width_per_group=64)

    net = _ResNet()
    if cfg.width != 64:
        raise ConfigError("resnet18 width other than 64 is not supported yet; use width: 64")
    net.conv1 = nn.Conv2d(in_ch, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_model(spec: ModelSpec | str, input_shape: Sequence[int], num_classes: int, *, seed: int | None = None) -> nn.Module:
    """Build a registered model; with ``seed`` the initialisation is reproducible (``torch.manual_seed(seed)``)."""
    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    cfg = MODELS.validate_config(spec.name, spec.params)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MODELS.get(spec.name)(cfg, tuple(input_shape), num_classes)
    return MODELS.get(spec.name)(cfg, tuple(input_shape), num_classes)


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """Reset every submodule that has ``reset_parameters`` under ``seed`` (fresh init of a user model, in place).

    Raises:
        ConfigError: a parameter belongs to no module with ``reset_parameters`` (cannot be re-initialised).
    """
    covered: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
                covered.update(id(p) for p in m.parameters(recurse=False))
            # buffers such as BatchNorm running stats are reset by BatchNorm.reset_parameters
    orphan = [n for n, p in model.named_parameters() if id(p) not in covered]
    if orphan:
        raise ConfigError(
            f"cannot re-initialise parameters {orphan[:5]}: their modules have no reset_parameters(); "
            "pass a model factory to retrain instead"
        )
    return model


__all__ = ["MODELS", "MLPConfig", "CNNConfig", "ResNetConfig", "SmallCNN", "build_model", "reinitialize"]
