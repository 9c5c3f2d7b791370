"""SalUn: the saliency gradient, the global top-fraction mask, and the exact hard mask (KNOWN_FAULTS C24)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.salun import HardMask, forget_gradients, salun_training_set, top_fraction_mask


# -- C24: the mask holds bit-exactly under weight decay and momentum --------------------------------------------------
def _c24_setup():
    torch.manual_seed(0)
    layer = nn.Linear(10, 10)
    mask = torch.rand(10, 10, generator=torch.Generator().manual_seed(1)) < 0.5  # ~50 % trainable entries
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 16, 10, generator=g)
    y = torch.randint(0, 10, (5, 16), generator=g)  # random labels
    return layer, mask, x, y


def _five_steps(layer, opt, x, y, hm=None, restore=True):
    for t in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(layer(x[t]), y[t]).backward()
        opt.step()
        if hm is not None and restore:
            hm.restore(t)


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_c24_masked_entries_bit_identical(opt_name, resumed):
    layer, mask, x, y = _c24_setup()
    w0 = layer.weight.detach().clone()
    opt = OPTIMIZERS[opt_name]([layer.weight])
    if resumed:  # a run resumed from non-zero optimizer state
        g = torch.Generator().manual_seed(3)
        if opt_name == "sgd":
            opt.state[layer.weight]["momentum_buffer"] = torch.randn(10, 10, generator=g)
        else:
            opt.state[layer.weight] = {"step": torch.tensor(7.0), "exp_avg": torch.randn(10, 10, generator=g),
                                       "exp_avg_sq": torch.rand(10, 10, generator=g)}
    with HardMask([layer.weight], [mask]) as hm:
        _five_steps(layer, opt, x, y, hm)
    w = layer.weight.detach()
    assert torch.equal(w[~mask], w0[~mask]), "masked-out entries moved"
    assert bool((w[mask] != w0[mask]).all()), "every trainable entry should have been updated"


def test_c24_gradient_masking_alone_leaks():
    """The reference bug: zeroing gradients only, weight decay + momentum still move the frozen entries."""
    layer, mask, x, y = _c24_setup()
    w0 = layer.weight.detach().clone()
    opt = OPTIMIZERS["sgd"]([layer.weight])
    with HardMask([layer.weight], [mask]) as hm:
        _five_steps(layer, opt, x, y, hm, restore=False)
    assert not torch.equal(layer.weight.detach()[~mask], w0[~mask])


def test_hard_mask_zeroes_frozen_gradients():
    layer, mask, x, y = _c24_setup()
    with HardMask([layer.weight], [mask]):
        nn.functional.cross_entropy(layer(x[0]), y[0]).backward()
    assert bool((layer.weight.grad[~mask] == 0).all()) and bool((layer.weight.grad[mask] != 0).all())


def test_hard_mask_rejects_shape_mismatch():
    layer = nn.Linear(3, 2)
    with pytest.raises(MethodError, match="shape"):
        HardMask([layer.weight], [torch.ones(3, 2, dtype=torch.bool)])


# -- the saliency mask ------------------------------------------------------------------------------------------------
def test_top_fraction_is_global_and_exact():
    big = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    small = torch.tensor([0.1, 0.2, 0.3, 0.4])
    m_big, m_small = top_fraction_mask([big, small], 0.5)
    assert bool(m_big.all()) and not bool(m_small.any())  # a per-layer threshold would keep half of each

    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(7, 3, generator=g), torch.rand(11, generator=g), torch.rand(2, 2, 2, generator=g)]
    n = sum(s.numel() for s in scores)
    for ratio in (0.1, 0.37, 0.5, 1.0):
        masks = top_fraction_mask(scores, ratio)
        flat_s = torch.cat([s.reshape(-1) for s in scores])
        flat_m = torch.cat([m.reshape(-1) for m in masks])
        assert int(flat_m.sum()) == int(ratio * n)
        if ratio < 1:
            assert flat_s[flat_m].min() >= flat_s[~flat_m].max()


def test_top_fraction_rejects_empty_selection():
    with pytest.raises(MethodError, match="selects 0"):
        top_fraction_mask([torch.ones(3)], 0.2)


def test_forget_gradient_matches_closed_form(tiny_task, engine):
    """Linear softmax model: ∇_W mean CE = (softmax(XWᵀ+b) − onehot(y))ᵀ X / n, computed with numpy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 3))
    x, y, _ = tiny_task.forget.batch(np.arange(len(tiny_task.forget)))
    W, b = model[0].weight.detach().numpy().astype(np.float64), model[0].bias.detach().numpy().astype(np.float64)
    X = x.numpy().astype(np.float64)
    z = X @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = p - np.eye(3)[y.numpy()]
    gw, gb = forget_gradients(model, tiny_task.forget, engine, batch_size=4)
    np.testing.assert_allclose(gw.numpy(), r.T @ X / len(X), atol=1e-6)
    np.testing.assert_allclose(gb.numpy(), r.mean(0), atol=1e-6)
    assert model.training  # mode restored


def test_random_labels_are_wrong_and_retain_appended(tiny_task):
    data = salun_training_set(tiny_task.forget, tiny_task.retain, labels="wrong", use_retain=True, seed=0)
    nf = len(tiny_task.forget)
    assert bool((data.labels[:nf] != tiny_task.forget.labels).all())
    np.testing.assert_array_equal(data.labels[nf:], tiny_task.retain.labels)
    only = salun_training_set(tiny_task.forget, tiny_task.retain, labels="wrong", use_retain=False, seed=0)
    assert len(only) == nf


# -- end to end -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adamw", 1e-2)])
def test_salun_updates_exactly_the_salient_half(trained_model, tiny_task, engine, optimizer, lr):
    theta_o = copy.deepcopy(trained_model)
    params = list(theta_o.parameters())
    # independent saliency: one full-batch backward of the mean forget CE at θ_o, in eval mode
    x, y, _ = tiny_task.forget.batch(np.arange(len(tiny_task.forget)))
    grads = torch.autograd.grad(nn.functional.cross_entropy(theta_o.eval()(x), y), params)
    flat = torch.cat([g.abs().reshape(-1) for g in grads])
    k = int(0.5 * flat.numel())
    expected = torch.zeros(flat.numel(), dtype=torch.bool)
    expected[torch.argsort(flat, descending=True, stable=True)[:k]] = True

    cfg = {"epochs": 2, "batch_size": 32, "optimizer": optimizer, "lr": lr, "weight_decay": 5e-4}
    res = METHODS.build("salun", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                              engine, UnlearnContext(seed=0))
    before = torch.cat([p.detach().reshape(-1) for p in params])
    after = torch.cat([p.detach().reshape(-1) for p in res.model.parameters()])
    assert torch.equal(after[~expected], before[~expected]), "entries outside the saliency mask moved"
    assert bool((after[expected] != before[expected]).all())  # weight decay moves every trainable entry
    assert res.notes["trainable_entries"] == k and res.notes["total_entries"] == flat.numel()
    ids = set(tiny_task.forget.ids.tolist()) | set(tiny_task.retain.ids.tolist())
    assert set(res.seen_ids.tolist()) == ids
