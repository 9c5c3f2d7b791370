"""Fisher forgetting: the Fisher diagonal against a closed form, the noise-variance formula, the exact noise drawn."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext, derive_seed
from unlearnkit.methods.classifier.fisher_forgetting import FisherForgettingConfig, fisher_diagonal, noise_variance


def _linear_task(n=20, d=5, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(d, c))
    return model, SampleSet.from_tensors(x, y, num_classes=c, name="retain")


def closed_form_fisher(model, data):
    """Softmax regression: ∂(−log p_c)/∂W = (p − e_c) xᵀ, ∂/∂b = p − e_c; F = mean_x Σ_c p_c (·)²  (numpy, float64)."""
    w = model[0].weight.detach().double().numpy()
    b = model[0].bias.detach().double().numpy()
    x = data.source.x.double().numpy()
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n, c = p.shape
    fw, fb = np.zeros_like(w), np.zeros_like(b)
    for i in range(n):
        for k in range(c):
            r = p[i] - np.eye(c)[k]
            fw += p[i, k] * np.outer(r, x[i]) ** 2
            fb += p[i, k] * r**2
    return {"0.weight": fw / n, "0.bias": fb / n}


@pytest.mark.parametrize("vectorize", [True, False])
def test_fisher_matches_closed_form_for_softmax_regression(vectorize, engine):
    model, data = _linear_task()
    fisher, path = fisher_diagonal(model, data, engine, batch_size=7, vectorize=vectorize)
    assert path == ("vmap" if vectorize else "loop")
    for name, want in closed_form_fisher(model, data).items():
        np.testing.assert_allclose(fisher[name].double().numpy(), want, rtol=1e-4, atol=1e-9)


def test_fisher_vmap_equals_reference_loop_on_mlp(trained_model, tiny_task, engine):
    a, _ = fisher_diagonal(trained_model, tiny_task.retain, engine, batch_size=16, vectorize=True)
    b, _ = fisher_diagonal(trained_model, tiny_task.retain, engine, batch_size=1, vectorize=False)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-9)
    # labels are not read: the true Fisher is an expectation over the model's own predictions
    relabelled = tiny_task.retain.relabel(np.zeros(len(tiny_task.retain), dtype=np.int64))
    c, _ = fisher_diagonal(trained_model, relabelled, engine, batch_size=16)
    assert all(torch.equal(a[n], c[n]) for n in a)


def numpy_variance(fisher, head, cfg):
    """The reference code's get_mean_var, rewritten in numpy (head = the last nn.Linear's weight and bias)."""
    out = {}
    for name, f in fisher.items():
        f = f.double().numpy()
        inv = np.minimum(1.0 / (f + 1e-8), cfg.max_inv_fisher)
        if name in head:
            inv = np.minimum(inv, cfg.head_max_inv_fisher)
        if cfg.scale_rule == "paper":
            out[name] = np.sqrt(cfg.alpha * inv)
            continue
        var = cfg.alpha * inv
        if var.ndim > 1:
            var = np.broadcast_to(var.mean(axis=1, keepdims=True), var.shape)
        if name in head:
            var = var * cfg.head_scale
        elif var.ndim == 1:
            var = var * cfg.vector_scale
        out[name] = var
    return out


@pytest.mark.parametrize("rule", ["reference", "paper"])
def test_noise_variance_formula(rule, trained_model, tiny_task, engine):
    cfg = FisherForgettingConfig(scale_rule=rule, alpha=1e-4)
    fisher, _ = fisher_diagonal(trained_model, tiny_task.retain, engine)
    got = noise_variance(trained_model, fisher, cfg)
    want = numpy_variance(fisher, {"2.weight", "2.bias"}, cfg)
    for n in want:
        np.testing.assert_allclose(got[n].double().numpy(), want[n], rtol=1e-6)
    if rule == "reference":
        # hand check of the clamps: a parameter entry with F = 0 gets α·1e3 (body, ×10 if 1-D) or α·1e2·10 (head)
        zero = {n: torch.zeros_like(f) for n, f in fisher.items()}
        v = noise_variance(trained_model, zero, cfg)
        assert torch.allclose(v["0.weight"], torch.full_like(v["0.weight"], 1e-4 * 1e3))
        assert torch.allclose(v["0.bias"], torch.full_like(v["0.bias"], 1e-4 * 1e3 * 10))
        assert torch.allclose(v["2.weight"], torch.full_like(v["2.weight"], 1e-4 * 1e2 * 10))
    else:
        # paper: σ = (α/F)^{1/4} where the clamp is inactive
        big = {n: torch.full_like(f, 4.0) for n, f in fisher.items()}
        v = noise_variance(trained_model, big, cfg)
        assert torch.allclose(v["0.weight"].sqrt(), torch.full_like(v["0.weight"], (1e-4 / (4.0 + 1e-8)) ** 0.25))


def test_unlearn_adds_exactly_sigma_times_the_seeded_normal_draw(trained_model, tiny_task, engine):
    cfg = {"alpha": 1e-5, "batch_size": 32}
    ctx = UnlearnContext(seed=3)
    res = METHODS.build("fisher_forgetting", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget,
                                                          tiny_task.retain, engine, ctx)
    fisher, _ = fisher_diagonal(trained_model, tiny_task.retain, engine)
    var = noise_variance(trained_model, fisher, FisherForgettingConfig(**cfg))
    gen = torch.Generator().manual_seed(derive_seed(3, "fisher_forgetting"))
    after = dict(res.model.named_parameters())
    for n, p in trained_model.named_parameters():
        z = torch.randn(p.shape, generator=gen)
        torch.testing.assert_close(after[n].detach() - p.detach(), var[n].sqrt() * z, rtol=1e-4, atol=1e-7)
    assert res.steps == 0 and res.notes["fisher_path"] == "vmap"
    assert res.notes["per_sample_backward_passes"] == len(tiny_task.retain) * 3
    assert np.array_equal(res.seen_ids, np.sort(tiny_task.retain.ids))


def test_noise_statistics_over_many_draws(trained_model, tiny_task, engine):
    """The method itself, run with 300 seeds: per entry, the sample mean of θ_u − θ_o is ≈ 0 and its sample variance
    matches the formula's σ² (χ² bounds), for every parameter tensor; noise 0 or a wrong scale fails."""
    cfg = {"alpha": 1e-5, "batch_size": 32}
    method = METHODS.build("fisher_forgetting", cfg)
    fisher, _ = fisher_diagonal(trained_model, tiny_task.retain, engine)
    var = {n: v.double() for n, v in noise_variance(trained_model, fisher, FisherForgettingConfig(**cfg)).items()}
    before = {n: p.detach().double().clone() for n, p in trained_model.named_parameters()}
    n_draws = 300
    diffs = {n: [] for n in before}
    for s in range(n_draws):
        res = method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine,
                             UnlearnContext(seed=s))
        for n, p in res.model.named_parameters():
            diffs[n].append(p.detach().double() - before[n])
    for n, d in diffs.items():
        d = torch.stack(d)  # (draws, *shape)
        assert (var[n] > 0).all(), n
        ratio = d.var(dim=0) / var[n]  # sd of the ratio ≈ √(2/299) ≈ 0.08: 0.6–1.4 is > 4.5 sd either side
        assert ((ratio > 0.6) & (ratio < 1.4)).all(), (n, ratio.min().item(), ratio.max().item())
        tol = 4.5 * (2 / ((n_draws - 1) * ratio.numel())) ** 0.5  # pooled over the tensor's entries
        assert abs(float(ratio.mean()) - 1.0) < tol, (n, float(ratio.mean()), tol)
        z = d.mean(dim=0) / (var[n] / n_draws).sqrt()  # standardised mean: N(0, 1) per entry
        assert z.abs().max() < 5.0, (n, z.abs().max().item())


def test_max_params_guard_names_the_count(trained_model, tiny_task, engine):
    n = sum(p.numel() for p in trained_model.parameters())
    method = METHODS.build("fisher_forgetting", {"max_params": 100})
    with pytest.raises(MethodError, match=f"{n:,} trainable parameters"):
        method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine, UnlearnContext())


def test_frozen_parameters_get_no_noise(trained_model, tiny_task, engine):
    model = copy.deepcopy(trained_model)
    model[0].weight.requires_grad_(False)
    before = model[0].weight.detach().clone()
    res = METHODS.build("fisher_forgetting", {"alpha": 1e-4}).unlearn(model, tiny_task.forget, tiny_task.retain,
                                                                     engine, UnlearnContext())
    assert torch.equal(res.model[0].weight, before)
    assert not torch.equal(res.model[2].weight, trained_model[2].weight)
