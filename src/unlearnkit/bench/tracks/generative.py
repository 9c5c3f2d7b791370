"""The generative track: unlearning image generators (a DCGAN, a DDPM) at digits / MNIST scale.

Experiment section ``generative:`` (:class:`GenerativeTrackConfig`)::

    track: generative
    generative:
      data: {source: digits | mnist, root: ..., size: 16, train_subset: ...}
      target: {kind: class, classes: [3]}          # or {kind: attribute, attribute: thick}; text: "..." optional
      model: {kind: gan | ddpm, ...}
      train: {epochs: 40, lr: 2e-4}                # θ_o (and θ_r unless oracle: is set)
      guide: {text_encoder: auto | minilm | bow}   # the judge classifier and the CLIP-style model
      eval: {samples: 400, seed: 2024}
    methods: [retrain, gen_finetune, gen_grad_ascent, text_to_unlearn]   # forgetme for ddpm
    metrics: [gen_target, gen_fid, gen_clip, entangled]

θ_o is trained on D (every training image), the oracle θ_r from a fresh initialisation on D_r (D without the
target's images). The models are trained from scratch (nothing can be downloaded here); loaders for real checkpoints
(diffusers pipelines, TorchScript-exported StyleGAN-style generators) are in :mod:`unlearnkit.models.generative`.
The judge classifier and the CLIP-style model (the task's *guide*) are trained once per task on D with their own
seed and are never unlearned; they are the instruments of the metrics and of text-guided methods.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field
from torch import nn

from unlearnkit.bench.tracks.base import TRACKS, Role, Track
from unlearnkit.config.schema import ExperimentConfig, Frozen
from unlearnkit.data.generative import GenDataConfig, GenerativeTask, GenTargetConfig, build_generative_task
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.models.generative import GenModelConfig, GenTrainConfig, GuideConfig


class GenEvalConfig(Frozen):
    """How generators are evaluated: ``samples`` generations from latents seeded by ``seed``; ``grid`` kept for the
    report."""

    samples: int = Field(400, ge=16, description="generations per model (the same latents for every model)")
    seed: int = Field(2024, description="seed of the evaluation latents")
    grid: int = Field(64, ge=1, description="generations kept as the report's sample grid")


class GenerativeTrackConfig(Frozen):
    """The ``generative:`` section: images, forget target, generator, recipes, instruments and evaluation."""

    data: GenDataConfig = Field(default_factory=GenDataConfig)
    target: GenTargetConfig = Field(default_factory=lambda: GenTargetConfig(kind="class", classes=[3]))
    model: GenModelConfig = Field(default_factory=GenModelConfig)
    train: GenTrainConfig = Field(default_factory=GenTrainConfig, description="recipe of θ_o")
    oracle: GenTrainConfig | None = Field(None, description="recipe of θ_r; None = the same as train")
    guide: GuideConfig = Field(default_factory=GuideConfig)
    eval: GenEvalConfig = Field(default_factory=GenEvalConfig)


class GenerativeExperiment(ExperimentConfig):
    """A generative experiment: ``track: generative`` and its ``generative:`` section."""

    default_metrics: ClassVar[tuple[str, ...]] = ("gen_target", "gen_fid", "gen_clip")

    track: Literal["generative"] = "generative"
    generative: GenerativeTrackConfig = Field(default_factory=GenerativeTrackConfig,
                                              description="data, target, generator, recipes, instruments of the "
                                              "generative track")


@TRACKS.register("generative", config=GenerativeExperiment)
class GenerativeTrack(Track):
    """Image generators trained from scratch; unlearners from ``methods/generative``; metrics from
    ``metrics/generative`` on a :class:`~unlearnkit.metrics.generative.GenerativeEvalContext`."""

    name = "generative"
    extra = "generative"

    def __init__(self, cfg: GenerativeExperiment, engine: Any) -> None:
        super().__init__(cfg, engine)
        self._task: GenerativeTask | None = None

    @property
    def s(self) -> GenerativeTrackConfig:
        return self.section

    @classmethod
    def conformance_config(cls) -> dict[str, Any]:
        return {"generative": {"data": {"source": "digits", "train_subset": 300},
                               "target": {"kind": "class", "classes": [3]},
                               "model": {"kind": "gan", "z_dim": 8, "channels": [8, 16]},
                               "train": {"epochs": 2, "batch_size": 64, "lr": 2e-3},
                               "guide": {"text_encoder": "bow", "judge_epochs": 2, "clip_epochs": 2},
                               "eval": {"samples": 64, "grid": 16}}}

    @classmethod
    def conformance_overrides(cls, component: type) -> dict[str, Any]:
        out = dict(super().conformance_overrides(component))
        if tuple(getattr(component, "models", ("gan",))) == ("ddpm",):
            out.setdefault("generative", {})["model"] = {"kind": "ddpm", "channels": [8, 16], "timesteps": 20,
                                                         "sample_steps": 3}
            out["generative"]["train"] = {"epochs": 1, "batch_size": 64, "lr": 2e-3}
        return out

    def lineage(self) -> dict[str, Any]:
        from unlearnkit.config.loader import to_plain

        # the target only chooses D_f; θ_o / θ_r are identified by the ids they were trained on (part of the key)
        return {"track": self.name, "data": to_plain(self.s.data), "model": to_plain(self.s.model)}

    def recipe(self, role: Role) -> GenTrainConfig:
        return self.s.train if role == "original" else (self.s.oracle or self.s.train)

    def build_task(self) -> GenerativeTask:
        """Images, split and guide; a target text the CLIP model's text encoder cannot embed is refused here
        (:class:`ConfigError`), before anything trains."""
        if self._task is None:
            from dataclasses import replace

            from unlearnkit.models.generative import Guide

            task = build_generative_task(self.s.data, self.s.target)
            guide = Guide(task, self.s.guide, self.engine)
            task = replace(task, guide=guide)
            guide.task = task
            self._task = task
        return self._task

    def new_model(self, task: GenerativeTask, init_seed: int) -> nn.Module:
        from unlearnkit.models.generative import build_generator

        return build_generator(self.s.model, task.image_shape, init_seed)

    def train(self, task: GenerativeTask, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        from unlearnkit.methods import derive_seed
        from unlearnkit.models.generative import train_generative

        if role == "original":
            model = self.new_model(task, seed)
            self.engine.seed_everything(seed)
            fit = train_generative(model, task.train, self.recipe("original"), self.engine,
                                   seed=derive_seed(seed, "original-order"), desc=f"original seed {seed}")
            return model, fit.seconds, fit.seen_ids
        return self.retrain_oracle("gen_retrain", task, seed, self.recipe("oracle"))

    def check_method(self, method: Any, label: str, task: GenerativeTask) -> None:
        if getattr(method, "track", "classifier") != "generative":
            raise ConfigError(f"method '{label}' is not a generative method; see `unlearnkit methods`")
        kinds = tuple(getattr(method, "models", ("gan", "ddpm")))
        if self.s.model.kind not in kinds:
            raise ConfigError(f"method '{label}' serves {' / '.join(kinds)} generators, but generative.model.kind is "
                              f"{self.s.model.kind}; remove it or change the model")
        if method.requirements()["retain"] and len(task.retain) == 0:
            raise MethodError(f"method '{label}' needs a retain set (D_r) but this target leaves none")

    def unlearn(self, task: GenerativeTask, method: Any, model: nn.Module, ctx: Any) -> Any:
        return method.unlearn(model, task.forget, task.retain, self.engine, ctx, guide=task.guide)

    def eval_context(self, task: GenerativeTask, model: nn.Module, seed: int, references: dict[str, Any],
                     shared: dict[Any, Any] | None = None, policy: Any = None) -> Any:
        from unlearnkit.metrics.generative import GenerativeEvalContext

        e = self.s.eval
        return GenerativeEvalContext(model, task, self.engine, samples=e.samples, sample_seed=e.seed, grid=e.grid,
                                     seed=seed, references=references, shared=shared, policy=policy)

    def verdict_spec(self, task: Any) -> Any:
        """Forget side: the target share (%, lower = more forgotten; binomial noise over the evaluation samples).
        Utility: the non-target class coverage (%), whose chance level — a generator collapsed onto one class — is
        100/K' (K' = the classes that are not the target)."""
        from unlearnkit.verdict import VerdictSpec

        t = self.s.target
        kept = 10 - (len(t.classes or []) if t.kind == "class" else 0)
        n = self.s.eval.samples
        return VerdictSpec(forget={"target_share": -1}, utility={"nontarget_coverage": 100.0 / max(kept, 1)},
                           n={"target_share": n, "nontarget_coverage": n}, default_floor=1.0, percent=True,
                           refuse_untrained=False,
                           advice="train θ_o until it generates the target (more epochs), pick a target θ_o "
                                  "generates, or judge more samples (generative.eval.samples)")

    def gap_keys(self) -> tuple[str, ...]:
        return ("target_share",)


__all__ = ["GenEvalConfig", "GenerativeExperiment", "GenerativeTrack", "GenerativeTrackConfig"]
