"""SSD and LFSSD: importances against an independent computation (per-sample default and the reference's batch-mean
estimator), batch-size independence, exact selection and dampening, cached I_D."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.errors import MethodError, NotFittedError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.lfssd import LFSSD
from unlearnkit.methods.classifier.ssd import SSD, SSDConfig, compute_importances

CTX = UnlearnContext(seed=0)


def independent_importances(model, sets, batch_size, kind):
    """Reference-style: .backward() into .grad per batch, accumulate grad² (or |grad|), divide by #batches.

    With ``batch_size=1`` this is the per-sample estimator (mean over samples of the per-sample quantity)."""
    model = copy.deepcopy(model).eval()
    xs = torch.cat([s.batch(np.arange(len(s)))[0] for s in sets])
    ys = torch.cat([s.batch(np.arange(len(s)))[1] for s in sets])
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    n_batches = 0
    for start in range(0, len(ys), batch_size):
        x, y = xs[start : start + batch_size], ys[start : start + batch_size]
        model.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y) if kind == "fisher" else (out**2).sum(1).mean()
        loss.backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad.pow(2) if kind == "fisher" else p.grad.abs()
        n_batches += 1
    return {n: a / n_batches for n, a in acc.items()}


@pytest.mark.parametrize("kind", ["fisher", "output_norm"])
def test_importances_match_independent_computation(kind, trained_model, tiny_task, engine):
    sets = [tiny_task.retain, tiny_task.forget]
    grads_before = [None if p.grad is None else p.grad.clone() for p in trained_model.parameters()]
    state_before = copy.deepcopy(trained_model.state_dict())
    got = compute_importances(trained_model, sets, engine, batch_size=16, kind=kind, estimator="batch_mean")
    want = independent_importances(trained_model, sets, 16, kind)
    assert got.n_batches == int(np.ceil(len(tiny_task.train) / 16))
    assert got.n_samples == len(tiny_task.train)
    for n, w in want.items():
        torch.testing.assert_close(got.values[n], w, rtol=1e-5, atol=1e-10)
    # model weights and .grad fields untouched
    for g0, p in zip(grads_before, trained_model.parameters()):
        assert (g0 is None and p.grad is None) or torch.equal(g0, p.grad)
    for k, v in trained_model.state_dict().items():
        assert torch.equal(v, state_before[k])


def test_importance_single_batch_is_squared_mean_gradient(trained_model, tiny_task, engine):
    """With one batch holding all of D_f, I_f = (∇ mean CE)² exactly; smaller batches give other values."""
    forget = tiny_task.forget
    imp = compute_importances(trained_model, forget, engine, batch_size=len(forget), estimator="batch_mean")
    model = copy.deepcopy(trained_model)
    x, y, _ = forget.batch(np.arange(len(forget)))
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    for (n, _), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(imp.values[n], g.pow(2), rtol=1e-5, atol=1e-12)
    small = compute_importances(trained_model, forget, engine, batch_size=2, estimator="batch_mean")
    assert small.batch_size == 2
    assert any(not torch.allclose(small.values[n], imp.values[n]) for n in imp.values)


def _check_dampening(before, after, i_d, i_f, alpha, lam):
    """Unselected entries bit-identical; selected entries multiplied by exactly β = min(λ I_D / I_f, 1)."""
    n_selected = 0
    for n, p0 in before.named_parameters():
        p1 = dict(after.named_parameters())[n].detach()
        p0 = p0.detach()
        mask = i_f[n] > alpha * i_d[n]
        # avoid entries within float rounding of the threshold (independent importances differ in the last bits)
        near = (i_f[n] - alpha * i_d[n]).abs() <= 1e-4 * (i_f[n] + alpha * i_d[n])
        keep = ~mask & ~near
        assert torch.equal(p1[keep], p0[keep]), f"{n}: an unselected entry changed"
        sel = mask & ~near
        beta = torch.clamp(lam * i_d[n][sel] / i_f[n][sel], max=1.0)
        torch.testing.assert_close(p1[sel], p0[sel] * beta, rtol=1e-5, atol=1e-9)
        n_selected += int(sel.sum())
    return n_selected


@pytest.mark.parametrize("alpha,lam", [(2.0, 1.0), (1.0, 0.5)])
def test_ssd_dampens_exactly_the_selected_entries(alpha, lam, trained_model, tiny_task, engine):
    cfg = {"selection_weighting": alpha, "dampening_constant": lam, "batch_size": 16}
    res = METHODS.build("ssd", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                            engine, CTX)
    i_d = independent_importances(trained_model, [tiny_task.retain, tiny_task.forget], 1, "fisher")
    i_f = independent_importances(trained_model, [tiny_task.forget], 1, "fisher")
    n_sel = _check_dampening(trained_model, res.model, i_d, i_f, alpha, lam)
    assert n_sel > 0, "the test setting must select some parameters"
    assert abs(res.notes["selected"] - n_sel) <= 3  # up to a few entries at the threshold
    assert res.steps == 0
    assert set(res.seen_ids.tolist()) == set(tiny_task.train.ids.tolist())
    # some parameters really shrank
    after = dict(res.model.named_parameters())
    diffs = [(after[n] - p).detach().abs().max() for n, p in trained_model.named_parameters()]
    assert max(float(d) for d in diffs) > 0


def test_cached_train_importance_gives_the_same_model(trained_model, tiny_task, engine):
    cfg = SSDConfig(batch_size=16, selection_weighting=2.0)
    plain = SSD(cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine, CTX)
    imp = compute_importances(trained_model, [tiny_task.retain, tiny_task.forget], engine, batch_size=16)
    cached = SSD(cfg).with_train_importance(imp)
    empty_retain = tiny_task.retain.take(np.zeros(0, dtype=np.int64))
    res = cached.unlearn(copy.deepcopy(trained_model), tiny_task.forget, empty_retain, engine, CTX)
    for (n, a), (_, b) in zip(plain.model.state_dict().items(), res.model.state_dict().items()):
        assert torch.equal(a, b), n
    assert res.notes["cached_train_importance"] is True


def test_cached_importance_refuses_another_model(trained_model, tiny_task, engine):
    imp = compute_importances(trained_model, [tiny_task.retain, tiny_task.forget], engine, batch_size=16)
    other = copy.deepcopy(trained_model)
    with torch.no_grad():
        next(other.parameters())[0, 0] += 1e-3
    method = SSD(SSDConfig(batch_size=16)).with_train_importance(imp)
    with pytest.raises(NotFittedError, match="another model"):
        method.unlearn(other, tiny_task.forget, tiny_task.retain, engine, CTX)
    # per-sample importances do not depend on the batch size: another batch size is accepted
    SSD(SSDConfig(batch_size=32)).with_train_importance(imp)
    with pytest.raises(MethodError, match="'per_sample' estimator"):
        SSD(SSDConfig(batch_size=16, estimator="batch_mean")).with_train_importance(imp)
    bm = compute_importances(trained_model, [tiny_task.retain, tiny_task.forget], engine, batch_size=16,
                             estimator="batch_mean")
    with pytest.raises(MethodError, match="batch_size=16"):
        SSD(SSDConfig(batch_size=32, estimator="batch_mean")).with_train_importance(bm)
    with pytest.raises(MethodError, match="output_norm"):
        LFSSD(METHODS.validate_config("lfssd", {"batch_size": 16})).with_train_importance(imp)


def test_lfssd_is_label_free_and_dampens_by_output_norm_importance(trained_model, tiny_task, engine):
    assert LFSSD.needs_labels is False and SSD.needs_labels is True
    cfg = {"selection_weighting": 2.0, "batch_size": 16}
    res = METHODS.build("lfssd", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                              engine, CTX)
    i_d = independent_importances(trained_model, [tiny_task.retain, tiny_task.forget], 1, "output_norm")
    i_f = independent_importances(trained_model, [tiny_task.forget], 1, "output_norm")
    assert _check_dampening(trained_model, res.model, i_d, i_f, 2.0, 1.0) > 0
    # labels do not matter: shuffled labels give the bit-identical model
    rng = np.random.default_rng(0)
    f2 = tiny_task.forget.relabel(rng.integers(0, 3, len(tiny_task.forget)))
    r2 = tiny_task.retain.relabel(rng.integers(0, 3, len(tiny_task.retain)))
    res2 = METHODS.build("lfssd", cfg).unlearn(copy.deepcopy(trained_model), f2, r2, engine, CTX)
    for (n, a), (_, b) in zip(res.model.state_dict().items(), res2.model.state_dict().items()):
        assert torch.equal(a, b), n


def test_frozen_parameters_are_never_dampened(trained_model, tiny_task, engine):
    model = copy.deepcopy(trained_model)
    model[0].weight.requires_grad_(False)
    before = model[0].weight.detach().clone()
    res = METHODS.build("ssd", {"selection_weighting": 0.5, "batch_size": 16}).unlearn(
        model, tiny_task.forget, tiny_task.retain, engine, CTX)
    assert torch.equal(res.model[0].weight, before)
    assert res.notes["selected"] > 0


@pytest.mark.parametrize("kind", ["fisher", "output_norm"])
def test_default_importances_do_not_depend_on_the_batch_size(kind, trained_model, tiny_task, engine):
    """Issue 13 item 3: the default estimator is per-sample, so batch 1, 5 (ragged last batch) and 8 agree, and
    equal an independent per-sample computation; the reference's batch-mean estimator does not agree."""
    sets = [tiny_task.retain, tiny_task.forget]
    one = compute_importances(trained_model, sets, engine, batch_size=1, kind=kind)
    want = independent_importances(trained_model, sets, 1, kind)
    for b in (5, 8):
        got = compute_importances(trained_model, sets, engine, batch_size=b, kind=kind)
        assert got.estimator == "per_sample" and got.n_samples == len(tiny_task.train)
        for n, w in want.items():
            torch.testing.assert_close(got.values[n], one.values[n], rtol=1e-5, atol=1e-10)
            torch.testing.assert_close(got.values[n], w, rtol=1e-5, atol=1e-10)
    bm = compute_importances(trained_model, sets, engine, batch_size=8, kind=kind, estimator="batch_mean")
    assert any(not torch.allclose(bm.values[n], one.values[n], rtol=1e-3) for n in one.values)


class _NotVmappable(nn.Module):
    """The tiny model with a data-dependent Python branch (``.item()``), which ``torch.func.vmap`` cannot trace."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if float(x.abs().sum().item()) >= 0.0:
            return self.inner(x)
        return -self.inner(x)  # pragma: no cover


def test_per_sample_loop_fallback_gives_the_same_importances(trained_model, tiny_task, engine):
    wrapped = _NotVmappable(copy.deepcopy(trained_model))
    got = compute_importances(wrapped, tiny_task.forget, engine, batch_size=4)
    want = compute_importances(trained_model, tiny_task.forget, engine, batch_size=4)
    for n, w in want.values.items():
        torch.testing.assert_close(got.values["inner." + n], w, rtol=1e-5, atol=1e-10)


def test_ssd_model_is_the_same_at_any_batch_size(trained_model, tiny_task, engine):
    cfg = {"selection_weighting": 2.0}
    a = METHODS.build("ssd", {**cfg, "batch_size": 1}).unlearn(copy.deepcopy(trained_model), tiny_task.forget,
                                                               tiny_task.retain, engine, CTX)
    b = METHODS.build("ssd", {**cfg, "batch_size": 8}).unlearn(copy.deepcopy(trained_model), tiny_task.forget,
                                                               tiny_task.retain, engine, CTX)
    assert a.notes["importance_estimator"] == "per_sample"
    assert abs(a.notes["selected"] - b.notes["selected"]) <= 3  # entries within float rounding of the threshold
    for (n, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=n)


def test_unknown_estimator_is_a_config_error(trained_model, tiny_task, engine):
    from unlearnkit.errors import ConfigError

    with pytest.raises(ConfigError, match="estimator"):
        compute_importances(trained_model, tiny_task.forget, engine, estimator="batch")
