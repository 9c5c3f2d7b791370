"""Relearning attack: fine-tune the unlearned model briefly and watch how fast forget accuracy comes back.

An unlearner that only *hides* D_f (suppressed logits, a perturbed head) leaves the knowledge in the weights: a few
gradient steps on a handful of forget samples (or on related data) restore accuracy on the *rest* of D_f far faster
than for the oracle θ_r, which never learned it. This is the relearning / "jogging the memory" probe of
Lynch et al., "Eight Methods to Evaluate Robust Unlearning in LLMs", 2024, arXiv:2402.16835 §3.5, and
Hu et al., "Jogging the Memory of Unlearned LLMs Through Targeted Relearning Attacks", 2024, arXiv:2406.13356,
applied here to classifiers, with the oracle under the *same* attack (same samples, same batch order, same
optimiser) as the reference.

Procedure (:func:`relearn_curve`): a deep copy of the model (the evaluated model and the oracle are never
modified) is trained for ``steps`` optimiser steps on the relearn set R with mini-batches drawn from a seeded
generator (reshuffled each pass over R); accuracy (%) on the held-out set H is measured before the first step and
after each step in ``eval_at``. R = a seeded random ``fraction`` (or ``count``) of D_f and H = D_f \\ R
(``source: forget``), or R = the test samples of the forgotten classes and H = D_f (``source: test_forgotten``,
"related data"; class scenarios only).

Summary: the area under the recovery curve, normalised to a mean accuracy (%), ``relearn_auc`` = trapezoid area of
accuracy over steps / ``steps``; the same for the oracle, and the gap ``relearn_auc_gap`` = θ_u − θ_r (percentage
points; > 0 = θ_u relearns D_f faster than a model that never saw it, i.e. residual knowledge).

Metrics never train — except attacks, which are evaluation: this one fine-tunes *copies*, with the engine
(device, seeding, finite-loss check), and never touches the evaluated weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from unlearnkit.config.schema import Frozen, TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine, cross_entropy_loss, make_optimizer
from unlearnkit.errors import DataError
from unlearnkit.metrics._refs import ORACLE_KEY, require_reference
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS

DEFAULT_EVAL_AT: tuple[int, ...] = (1, 2, 5, 10, 20, 50)


@dataclass(frozen=True)
class RelearnCurve:
    """Accuracy (%) on the held-out set after each evaluated step: ``steps`` int64 (m,) starting at 0,
    ``accuracy`` float64 (m,), and ``auc`` = trapezoid area / last step (a mean accuracy, %)."""

    steps: np.ndarray
    accuracy: np.ndarray

    @property
    def auc(self) -> float:
        s, a = self.steps.astype(np.float64), self.accuracy
        if len(s) < 2 or s[-1] <= 0:
            return float(a[0]) if len(a) else float("nan")
        return float(np.sum((a[1:] + a[:-1]) * np.diff(s)) / 2.0 / s[-1])


def relearn_curve(model: nn.Module, relearn: SampleSet, heldout: SampleSet, engine: Engine, recipe: TrainConfig,
                  *, steps: int, eval_at: tuple[int, ...], seed: int) -> RelearnCurve:
    """Fine-tune a deep copy of ``model`` on ``relearn`` for ``steps`` steps; accuracy on ``heldout`` along the way.

    Args:
        model: the model to attack (not modified: a deep copy is trained).
        relearn: R, the samples the attacker fine-tunes on (≥ 1).
        heldout: H, the samples whose accuracy is tracked (≥ 1).
        engine: device, seeding, batching, finite-loss check.
        recipe: optimiser settings (``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
            ``grad_clip``); ``epochs`` and ``scheduler`` are ignored (constant lr for ``steps`` steps).
        steps: optimiser steps (≥ 1).  eval_at: steps after which H is evaluated (step 0 is always evaluated).
        seed: seeds the batch order (same seed ⇒ same batches for every attacked model).

    Returns:
        :class:`RelearnCurve` (steps 0 and every ``eval_at`` ≤ ``steps``, sorted).

    Raises:
        DataError: R or H is empty.  DivergenceError: a loss became NaN/inf.
    """
    if len(relearn) == 0 or len(heldout) == 0:
        raise DataError(f"the relearning attack needs a non-empty relearn set and held-out set, got |R| = "
                        f"{len(relearn)}, |H| = {len(heldout)}; raise relearn.fraction or use a larger forget set")
    marks = sorted({0, *(s for s in eval_at if 0 < s <= steps)})
    attacked = copy.deepcopy(model)
    acc = {0: engine.predict(attacked, heldout).accuracy()}
    engine.setup()
    attacked.to(engine.device).train()
    opt = make_optimizer(attacked.parameters(), recipe)
    params = [p for g in opt.param_groups for p in g["params"]]
    gen = torch.Generator().manual_seed(seed)
    step = 0
    while step < steps:
        for x, y, _ in engine.batches(relearn, recipe.batch_size, shuffle=True, generator=gen):
            loss = cross_entropy_loss(attacked, x, y)
            engine.check_finite(loss, step=step, desc="relearning attack")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            opt.step()
            step += 1
            if step in marks:
                acc[step] = engine.predict(attacked, heldout).accuracy()
                attacked.train()
            if step >= steps:
                break
    return RelearnCurve(np.asarray(marks, dtype=np.int64), np.asarray([acc[s] for s in marks], dtype=np.float64))


class RelearnConfig(Frozen):
    """Settings of the relearning attack (defaults: a few SGD steps on 10 % of D_f)."""

    source: Literal["forget", "test_forgotten"] = Field(
        "forget", description="relearn on a fraction of D_f (held-out = the rest of D_f), or on the test samples of "
                              "the forgotten classes (related data; class scenarios; held-out = all of D_f)")
    fraction: float | None = Field(0.1, gt=0, lt=1, description="share of D_f used for relearning (source: forget)")
    count: int | None = Field(None, ge=1, description="number of D_f samples used for relearning (instead of "
                                                      "fraction)")
    steps: int = Field(50, ge=1, description="optimiser steps of the attack")
    eval_at: tuple[int, ...] = Field(DEFAULT_EVAL_AT, description="steps after which forget accuracy is measured "
                                                                  "(0 is always included; values > steps dropped)")
    lr: float = Field(0.01, gt=0, description="learning rate (constant)")
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)
    compare_oracle: bool = Field(True, description="run the same attack on θ_r (references['oracle_model'])")
    seed: int = Field(0, description="seed of the relearn-set draw and batch order (combined with the run seed)")

    @model_validator(mode="before")
    @classmethod
    def _count_overrides_fraction(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("count") is not None and "fraction" not in data:
            data = {**data, "fraction": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> RelearnConfig:
        if self.source == "forget" and (self.fraction is None) == (self.count is None):
            raise ValueError("relearn with source 'forget' needs exactly one of 'fraction' (0 < f < 1) or 'count'")
        return self

    @field_validator("eval_at")
    @classmethod
    def _eval_at(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 0 for s in v):
            raise ValueError(f"eval_at steps must be ≥ 0, got {list(v)}")
        return tuple(sorted(set(v)))

    def recipe(self) -> TrainConfig:
        return TrainConfig(epochs=1, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           momentum=self.momentum, weight_decay=self.weight_decay, scheduler="none")


def split_relearn(ctx: EvalContext, cfg: RelearnConfig) -> tuple[SampleSet, SampleSet]:
    """(R, H) of the attack for the task in ``ctx`` (seeded by ``cfg.seed`` and the run seed).

    Raises:
        DataError: ``source: test_forgotten`` outside a class scenario, or R / H would be empty.
    """
    forget = ctx.task.forget
    if cfg.source == "test_forgotten":
        related = ctx.task.test_forgotten
        if related is None or len(related) == 0:
            raise DataError("relearn.source 'test_forgotten' needs a class scenario with test samples of the "
                            "forgotten classes; use source: forget")
        return related, forget
    n = len(forget)
    k = cfg.count if cfg.count is not None else int(round(cfg.fraction * n))  # type: ignore[operator]
    if k < 1 or k >= n:
        raise DataError(f"the relearning attack would use {k} of |D_f| = {n} forget samples; it needs between 1 "
                        f"and {n - 1} so that a held-out part of D_f remains; change relearn.fraction/count")
    rng = np.random.default_rng([cfg.seed, ctx.seed])
    pick = np.zeros(n, dtype=bool)
    pick[rng.choice(n, size=k, replace=False)] = True
    return forget.take(pick, "relearn"), forget.take(~pick, "forget_heldout")


@METRICS.register("relearn", config=RelearnConfig)
class Relearn(Metric):
    """Relearning attack (an evaluation that fine-tunes copies; see the module docstring).

    Keys (accuracies in %, on the held-out forget samples H): ``relearn_forget_acc@{s}`` for s = 0 and each step
    of ``eval_at`` ≤ ``steps`` (θ_u), ``relearn_oracle_forget_acc@{s}`` (θ_r under the same attack),
    ``relearn_auc`` / ``relearn_auc_oracle`` (mean accuracy over the attack, trapezoid), ``relearn_auc_gap``
    (θ_u − θ_r, pp; > 0 = D_f comes back faster than for a model that never saw it). Per-sample arrays:
    ``steps`` int64, ``curve`` and ``oracle_curve`` float64 (accuracy per evaluated step), ``relearn_ids``.

    Raises:
        ConfigError: ``compare_oracle`` without ``references["oracle_model"]``.
        DataError: R or H empty (see :func:`split_relearn`).  DivergenceError: the attack's loss diverged.
    """

    keys = {"relearn_auc": "mean held-out forget accuracy (%) of θ_u over the relearning attack (trapezoid)",
            "relearn_auc_oracle": "the same for θ_r under the same attack (%)",
            "relearn_auc_gap": "relearn_auc − relearn_auc_oracle, pp (> 0 = residual knowledge of D_f)",
            "relearn_forget_acc@{s}": "held-out forget accuracy (%) of θ_u after s attack steps",
            "relearn_oracle_forget_acc@{s}": "the same for θ_r",
            "relearn_n_relearn": "samples the attack fine-tunes on", "relearn_n_heldout": "held-out samples tracked"}
    source = ("Lynch et al., 2024, arXiv:2402.16835 §3.5; Hu et al., 2024, arXiv:2406.13356 (relearning attacks), "
              "applied to classifiers with the oracle under the same attack")

    def __init__(self, config: RelearnConfig | None = None) -> None:
        self.config = config or RelearnConfig()

    def compute(self, ctx: EvalContext) -> MetricOutput:
        cfg = self.config
        oracle = require_reference(ctx, ORACLE_KEY, "relearn") if cfg.compare_oracle else None
        relearn, heldout = split_relearn(ctx, cfg)
        seed = int(np.random.default_rng([cfg.seed, ctx.seed, 1]).integers(2**31 - 1))
        kw = dict(steps=cfg.steps, eval_at=cfg.eval_at, seed=seed)
        cu = relearn_curve(ctx.model, relearn, heldout, ctx.engine, cfg.recipe(), **kw)
        values = {f"relearn_forget_acc@{s}": float(a) for s, a in zip(cu.steps, cu.accuracy)}
        values.update(relearn_auc=cu.auc, relearn_n_relearn=float(len(relearn)), relearn_n_heldout=float(len(heldout)))
        per = {"steps": cu.steps, "curve": cu.accuracy, "relearn_ids": relearn.ids.copy()}
        if oracle is not None:
            co = relearn_curve(oracle, relearn, heldout, ctx.engine, cfg.recipe(), **kw)
            values.update({f"relearn_oracle_forget_acc@{s}": float(a) for s, a in zip(co.steps, co.accuracy)})
            values.update(relearn_auc_oracle=co.auc, relearn_auc_gap=cu.auc - co.auc)
            per["oracle_curve"] = co.accuracy
        return MetricOutput(values, per)


__all__ = ["DEFAULT_EVAL_AT", "Relearn", "RelearnConfig", "RelearnCurve", "relearn_curve", "split_relearn"]
