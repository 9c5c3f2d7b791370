"""Golden values of LiRA / U-LiRA (metrics ``lira``, ``ulira``; unlearnkit.metrics.lira).

Independent references: numpy means/stds and ``scipy.stats.norm`` for the per-example Gaussians and the likelihood
ratio; the closed-form AUC Φ(Δμ/√(σ_in² + σ_out²)) of two Gaussians for the leave-one-out attack; real shadow
training on a memorisation toy for U-LiRA (no-op "unlearning" → AUC ≈ 1, exact retraining → AUC ≈ 0.5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from unlearnkit.config.schema import EngineConfig, TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.data.scenarios import Task
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.methods import METHODS, Unlearner, UnlearnResult
from unlearnkit.metrics import METRICS, EvalContext
from unlearnkit.metrics.lira import (
    SHADOW_KEY, ShadowScores, balanced_membership, fit_gaussians, leave_one_out, likelihood_ratio, offline_score,
    train_shadows,
)
from unlearnkit.metrics.neurips import logit_confidence

ENGINE = Engine(EngineConfig(device="cpu", progress=False))


# -- per-example Gaussians and Λ against scipy ------------------------------------------------------------------------
def _constructed() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    conf = rng.normal(size=(6, 4)) * np.array([1.0, 0.5, 2.0, 0.1]) + np.array([3.0, -1.0, 0.0, 5.0])
    in_mask = np.zeros((6, 4), bool)
    in_mask[[0, 2, 4], :] = True
    in_mask[1, 3] = True  # example 3: IN for 4 models, OUT for 2
    out_mask = ~in_mask
    return conf, in_mask, out_mask


def test_per_example_likelihood_ratio_equals_scipy():
    conf, im, om = _constructed()
    fits = fit_gaussians(conf, im, om, fixed_variance="off")
    phi = np.array([2.5, -0.7, 1.0, 5.05])
    got = likelihood_ratio(phi, fits)
    for j in range(4):
        cin, cout = conf[im[:, j], j], conf[om[:, j], j]
        expect = (norm.logpdf(phi[j], loc=np.mean(cin), scale=np.std(cin))
                  - norm.logpdf(phi[j], loc=np.mean(cout), scale=np.std(cout)))
        assert got[j] == pytest.approx(expect, rel=1e-12, abs=1e-12)
        assert fits.n_in[j] == len(cin) and fits.n_out[j] == len(cout)
    # the offline one-sided score: ln Pr[Z ≤ φ], Z ~ N(μ_out, σ_out)
    off = offline_score(phi, fits)
    for j in range(4):
        cout = conf[om[:, j], j]
        assert off[j] == pytest.approx(norm.logcdf(phi[j], np.mean(cout), np.std(cout)), rel=1e-12)


def test_fixed_variance_pools_within_example_residuals():
    conf, im, om = _constructed()
    fits = fit_gaussians(conf, im, om, fixed_variance="on")
    res_in = np.concatenate([conf[im[:, j], j] - conf[im[:, j], j].mean() for j in range(4)])
    res_out = np.concatenate([conf[om[:, j], j] - conf[om[:, j], j].mean() for j in range(4)])
    s_in, s_out = math.sqrt(np.mean(res_in**2)), math.sqrt(np.mean(res_out**2))
    assert np.allclose(fits.sd_in, s_in) and np.allclose(fits.sd_out, s_out)
    phi = np.array([0.0, 0.0, 0.0, 0.0])
    exp = [norm.logpdf(0.0, conf[im[:, j], j].mean(), s_in) - norm.logpdf(0.0, conf[om[:, j], j].mean(), s_out)
           for j in range(4)]
    assert likelihood_ratio(phi, fits) == pytest.approx(exp, rel=1e-12)
    # "auto" = fixed below 64 models (the paper's rule)
    assert fit_gaussians(conf, im, om).fixed_variance is True
    big = np.zeros((64, 2))
    assert fit_gaussians(big, np.eye(64, 2, dtype=bool), ~np.eye(64, 2, dtype=bool)).fixed_variance is False


def test_too_few_samples_give_nan_not_a_number():
    conf = np.array([[1.0, 2.0], [1.5, 2.5], [0.0, 0.0]])
    im = np.array([[True, True], [False, True], [False, False]])
    om = np.array([[False, False], [True, False], [True, True]])
    lr = likelihood_ratio(np.array([1.0, 1.0]), fit_gaussians(conf, im, om, fixed_variance="off"))
    assert np.isnan(lr).all()  # each example has one sample on some side: σ cannot be estimated per example
    lr = likelihood_ratio(np.array([1.0, 1.0]), fit_gaussians(conf, im, om, fixed_variance="on"))
    assert np.isfinite(lr).all()


def test_leave_one_out_auc_matches_closed_form_on_gaussian_shadows():
    """IN ~ N(μ_j + 2, 1), OUT ~ N(μ_j, 1) per example: Λ is monotone in φ, so AUC = Φ(2/√2) = 0.9214."""
    rng = np.random.default_rng(0)
    k, n = 64, 300
    keep = balanced_membership(k, n, seed=1)
    assert (keep.sum(axis=0) == k // 2).all()  # every example IN for exactly K/2 models
    mu = rng.normal(scale=3.0, size=n)
    conf = mu[None, :] + rng.normal(size=(k, n)) + 2.0 * keep
    res = leave_one_out(ShadowScores(np.arange(n), np.zeros(n), conf, keep, ~keep), fixed_variance="on")
    assert res.n_in == res.n_out == k * n // 2
    assert res.auc == pytest.approx(norm.cdf(2.0 / math.sqrt(2.0)), abs=0.01)
    # balanced accuracy at the best threshold of two unit Gaussians 2 apart: Φ(1) = 0.8413
    assert res.accuracy == pytest.approx(norm.cdf(1.0), abs=0.01)
    # no signal → AUC 0.5
    flat = mu[None, :] + rng.normal(size=(k, n))
    assert leave_one_out(ShadowScores(np.arange(n), np.zeros(n), flat, keep, ~keep)).auc == pytest.approx(0.5,
                                                                                                           abs=0.02)


def test_shadow_scores_validation():
    with pytest.raises(DataError, match="both IN and OUT"):
        ShadowScores(np.arange(2), np.zeros(2), np.zeros((3, 2)), np.ones((3, 2), bool), np.ones((3, 2), bool))
    with pytest.raises(DataError, match="NaN"):
        ShadowScores(np.arange(2), np.zeros(2), np.full((3, 2), np.nan), np.zeros((3, 2), bool),
                     np.ones((3, 2), bool))
    with pytest.raises(ConfigError, match="at least 3"):
        leave_one_out(ShadowScores(np.arange(2), np.zeros(2), np.zeros((2, 2)), np.eye(2, dtype=bool),
                                   ~np.eye(2, dtype=bool)))


# -- U-LiRA with real shadow training on a memorisation toy ----------------------------------------------------------
class _NoOp(Unlearner):
    """'Unlearning' that changes nothing: the unlearned model is the trained one."""

    def _unlearn(self, model, forget, retain, engine, context):  # noqa: ANN001
        return UnlearnResult(model)


def _toy_pool(n: int = 32, dim: int = 64, seed: int = 0) -> SampleSet:
    """Random near-orthogonal inputs with random labels: members are memorised (high φ), non-members are coin flips."""
    g = np.random.default_rng(seed)
    x = torch.from_numpy(g.normal(size=(n, dim)).astype(np.float32))
    y = torch.from_numpy(g.integers(0, 2, size=n))
    return SampleSet.from_tensors(x, y, ids=np.arange(100, 100 + n), num_classes=2, name="pool")


def _factory(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))


RECIPE = TrainConfig(epochs=60, batch_size=8, lr=0.05, scheduler="none", weight_decay=0.0)


def test_ulira_separable_toy_gives_auc_near_one_and_retrain_near_half():
    pool = _toy_pool()
    targets = pool.ids[:24]
    noop = train_shadows(pool, model_factory=_factory, recipe=RECIPE, engine=ENGINE, n_shadow=8, seed=0,
                         unlearner=_NoOp(None), targets=targets)
    assert noop.kind == "ulira"
    assert not noop.in_mask[:, 24:].any() and not noop.out_mask[:, 24:].any()  # non-targets are never attacked
    assert (noop.in_mask.sum(axis=0)[:24] == 4).all() and (noop.out_mask.sum(axis=0)[:24] == 4).all()
    assert leave_one_out(noop).auc > 0.95
    # exact unlearning (retrain from scratch on in_k \ F_k): IN and OUT are the same distribution
    exact = train_shadows(pool, model_factory=_factory, recipe=RECIPE, engine=ENGINE, n_shadow=8, seed=0,
                          unlearner=METHODS.build("retrain", {}), targets=targets)
    assert 0.3 < leave_one_out(exact).auc < 0.7


def test_lira_shadows_record_membership_and_phi():
    pool = _toy_pool(n=16)
    sh = train_shadows(pool, model_factory=_factory, recipe=TrainConfig(epochs=2, batch_size=8, lr=0.05), engine=ENGINE,
                       n_shadow=4, seed=1)
    assert sh.kind == "lira" and sh.confidences.shape == (4, 16)
    assert (sh.in_mask == ~sh.out_mask).all() and (sh.in_mask.sum(axis=0) == 2).all()
    # φ of every shadow equals the logit confidence log p_y − log(1 − p_y) (numpy, float64) of a model retrained
    # here from the documented seeds on the shadow's IN examples
    from unlearnkit.methods.base import derive_seed

    assert np.isfinite(sh.confidences).all()
    x, y = pool.source.x[torch.from_numpy(pool.positions)], pool.labels
    for k in range(4):
        init = derive_seed(1, f"shadow-init-{k}")
        model = _factory(init)
        ENGINE.seed_everything(init)
        ENGINE.fit(model, pool.take(sh.in_mask[k], "shadow-train"), TrainConfig(epochs=2, batch_size=8, lr=0.05),
                   seed=derive_seed(1, f"shadow-order-{k}"))
        with torch.no_grad():
            z = model.eval()(x).double().numpy()
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        p_y = np.exp(logp[np.arange(len(y)), y])
        want = np.log(p_y) - np.log1p(-p_y)
        np.testing.assert_allclose(sh.confidences[k], want, rtol=1e-5, atol=1e-6)
    assert np.ptp(sh.confidences) > 0.1  # the shadows' φ are not all alike
    with pytest.raises(ConfigError, match="n_shadow"):
        train_shadows(pool, model_factory=_factory, recipe=RECIPE, engine=ENGINE, n_shadow=1)
    with pytest.raises(DataError, match="not in the shadow pool"):
        train_shadows(pool, model_factory=_factory, recipe=RECIPE, engine=ENGINE, n_shadow=2, unlearner=_NoOp(None),
                      targets=np.array([5]))


# -- the registered metrics --------------------------------------------------------------------------------------------
def _task_from_pool(pool: SampleSet, n_forget: int, n_test: int) -> Task:
    forget = pool.take(np.arange(n_forget), "forget")
    test = pool.take(np.arange(len(pool) - n_test, len(pool)), "test")
    retain = pool.take(np.arange(n_forget, len(pool) - n_test), "retain")
    return Task("toy", forget.concat(retain, "train"), forget, retain, test, 2, {"kind": "random"})


def test_ulira_metric_oracle_is_indistinguishable_from_itself():
    pool = _toy_pool()
    task = _task_from_pool(pool, 12, 8)
    sh = train_shadows(pool, model_factory=_factory, recipe=RECIPE, engine=ENGINE, n_shadow=6, seed=2,
                       unlearner=_NoOp(None), targets=task.forget.ids)
    oracle = _factory(7)
    ENGINE.fit(oracle, task.retain, RECIPE, seed=0)
    original = _factory(8)
    ENGINE.fit(original, task.train, RECIPE, seed=0)
    metric = METRICS.build("ulira")
    same = metric.compute(EvalContext(oracle, task, ENGINE, references={SHADOW_KEY: sh, "oracle_model": oracle}))
    assert same.values["ulira_auc"] == pytest.approx(0.5, abs=1e-12)  # identical scores: every pair ties
    leaky = metric.compute(EvalContext(original, task, ENGINE, references={SHADOW_KEY: sh, "oracle_model": oracle}))
    assert leaky.values["ulira_auc"] > 0.9  # θ_o never forgot D_f: U-LiRA sees it
    # Λ recomputed by hand for one forget sample
    fits = fit_gaussians(sh.confidences, sh.in_mask, sh.out_mask)
    pred = ENGINE.predict(original, task.forget)
    phi = logit_confidence(pred.logits.numpy(), pred.labels.numpy())
    j = int(sh.index_of(task.forget.ids[:1])[0])
    exp = norm.logpdf(phi[0], fits.mu_in[j], fits.sd_in[j]) - norm.logpdf(phi[0], fits.mu_out[j], fits.sd_out[j])
    assert leaky.per_sample["lr_unlearned"][0] == pytest.approx(exp, rel=1e-9)


def test_lira_metric_needs_shadows_and_flags_members():
    pool = _toy_pool()
    task = _task_from_pool(pool, 10, 10)
    with pytest.raises(ConfigError, match="lira_shadows"):
        METRICS.build("lira").compute(EvalContext(_factory(0), task, ENGINE))
    sh = train_shadows(pool, model_factory=_factory, recipe=RECIPE, engine=ENGINE, n_shadow=6, seed=3)
    with pytest.raises(ConfigError, match="kind 'ulira'"):
        METRICS.build("ulira").compute(EvalContext(_factory(0), task, ENGINE, references={SHADOW_KEY: sh}))
    original = _factory(9)
    ENGINE.fit(original, task.train, RECIPE, seed=0)
    out = METRICS.build("lira").compute(EvalContext(original, task, ENGINE, references={SHADOW_KEY: sh}))
    assert out.values["lira_auc_forget"] > 0.85  # memorised members vs unseen test samples
    assert out.values["lira_n_shadow"] == 6 and out.values["lira_fixed_variance"] == 1.0
    assert math.isnan(out.values["lira_tpr@1%fpr_forget"])  # 10 non-members cannot resolve 1 % FPR
