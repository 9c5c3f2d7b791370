"""Model builders: output shapes, seeded initialisation, the CIFAR-stem ResNet-18, re-initialisation."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from unlearnkit.config.schema import ModelSpec
from unlearnkit.errors import ConfigError
from unlearnkit.models import build_model, reinitialize

HAS_TV = importlib.util.find_spec("torchvision") is not None


@pytest.mark.parametrize("name,shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("cnn", (3, 32, 32))])
def test_builders_give_logits_and_seeded_init(name, shape):
    a = build_model(ModelSpec(name=name), shape, 7, seed=3)
    b = build_model(ModelSpec(name=name), shape, 7, seed=3)
    c = build_model(ModelSpec(name=name), shape, 7, seed=4)
    a.eval()
    assert a(torch.zeros(2, *shape)).shape == (2, 7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_mlp_layer_widths_follow_the_config():
    m = build_model(ModelSpec(name="mlp", hidden=[5, 4]), (6,), 3)
    widths = [(layer.in_features, layer.out_features) for layer in m if isinstance(layer, nn.Linear)]
    assert widths == [(6, 5), (5, 4), (4, 3)]


def test_cnn_refuses_flat_inputs():
    with pytest.raises(ConfigError, match="image inputs"):
        build_model(ModelSpec(name="cnn"), (64,), 10)


@pytest.mark.skipif(HAS_TV, reason="torchvision is installed: the missing-extra message cannot be shown")
def test_resnet18_without_torchvision_names_the_extra():
    with pytest.raises(ConfigError, match=r"unlearnkit\[vision\]"):
        build_model(ModelSpec(name="resnet18"), (3, 32, 32), 10)


@pytest.mark.torchvision
@pytest.mark.skipif(not HAS_TV, reason="needs torchvision (pip install 'unlearnkit[vision]'; CI: make test-vision)")
def test_resnet18_has_the_cifar_stem():
    m = build_model(ModelSpec(name="resnet18"), (3, 32, 32), 10, seed=0).eval()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, nn.Identity)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in m.parameters()) == 11_173_962  # ResNet-18, CIFAR stem, 10 classes


def test_reinitialize_is_seeded_and_complete():
    m = build_model(ModelSpec(name="cnn"), (1, 8, 8), 10, seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    reinitialize(m, 11)
    again = build_model(ModelSpec(name="cnn"), (1, 8, 8), 10, seed=0)
    reinitialize(again, 11)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in m.state_dict().items())
    assert not torch.equal(before["head.weight"], m.state_dict()["head.weight"])


def test_reinitialize_refuses_parameters_it_cannot_reset():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

    with pytest.raises(ConfigError, match="reset_parameters"):
        reinitialize(Odd(), 0)
