"""The recsys track: recommendation unlearning (MF-BPR, LightGCN) on user–item interactions.

Experiment section ``recsys:`` (:class:`RecsysTrackConfig`)::

    track: recsys
    recsys:
      data: {source: synthetic | movielens, root: ..., synthetic: {n_users: 600, ...}, split: {kind: random}}
      scenario: {kind: users | items | random | ids, fraction: 0.05, selection: random}
      model: {name: mf | lightgcn, dim: 64, layers: 3}
      train: {epochs: 100, lr: 1e-3, batch_size: 2048, reg: 1e-4}     # θ_o (and θ_r unless oracle: is set)
      k: 20
    methods: [retrain, reverse_bpr, receraser, rec_grad_ascent]

θ_o is trained with BPR on D (graph = D), the oracle θ_r from a fresh init on D_r (graph = D_r). Metrics default
to ``rec_rank`` (Recall@K, NDCG@K on the retained test set) and ``rec_forget`` (D_f rank metrics and AUC); the
Avg. Gap averages |θ_u − θ_r| over recall@K, ndcg@K, forget_recall@K and forget_ndcg@K (fractions, not %).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field
from torch import nn

from unlearnkit.bench.tracks.base import TRACKS, Role, Track
from unlearnkit.config.schema import ExperimentConfig, Frozen
from unlearnkit.data.recsys import RecsysDataConfig, RecsysScenarioConfig, RecsysTask, load_recsys_task
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.models.recsys import RecModelConfig, RecTrainConfig


class RecsysTrackConfig(Frozen):
    """The ``recsys:`` section: data source, split, forget scenario, model, BPR recipes and the cutoff K."""

    data: RecsysDataConfig = Field(default_factory=RecsysDataConfig)
    scenario: RecsysScenarioConfig = Field(default_factory=lambda: RecsysScenarioConfig(kind="users", fraction=0.05))
    model: RecModelConfig = Field(default_factory=RecModelConfig)
    train: RecTrainConfig = Field(default_factory=RecTrainConfig, description="BPR recipe of θ_o")
    oracle: RecTrainConfig | None = Field(None, description="recipe of θ_r; None = the same as train")
    k: int = Field(20, ge=1, description="cutoff K of Recall@K / NDCG@K (paper standard: 20)")


class RecsysExperiment(ExperimentConfig):
    """A recommender experiment: ``track: recsys`` and its ``recsys:`` section (:class:`RecsysTrackConfig`)."""

    default_metrics: ClassVar[tuple[str, ...]] = ("rec_rank", "rec_forget")

    track: Literal["recsys"] = "recsys"
    recsys: RecsysTrackConfig = Field(default_factory=RecsysTrackConfig, description="data, scenario, model, "
                                      "recipes and K of the recsys track")


@TRACKS.register("recsys", config=RecsysExperiment)
class RecsysTrack(Track):
    """Recommenders trained with BPR; unlearners from ``methods/recsys``; metrics ``rec_rank`` and ``rec_forget``."""

    name = "recsys"
    extra = None  # LightGCN uses PyG's LGConv when [graph] is installed, torch.sparse otherwise

    @classmethod
    def conformance_config(cls) -> dict[str, Any]:
        return {"recsys": {"data": {"source": "synthetic", "synthetic": {"n_users": 60, "n_items": 80,
                                                                         "mean_interactions": 8.0}},
                           "scenario": {"kind": "users", "fraction": 0.1}, "model": {"name": "mf", "dim": 8},
                           "train": {"epochs": 3, "batch_size": 256, "lr": 0.01}, "k": 5}}

    @property
    def cfg_section(self) -> RecsysTrackConfig:
        return self.section

    def lineage(self) -> dict[str, Any]:
        from unlearnkit.config.loader import to_plain

        s = self.cfg_section
        # the scenario and K do not change θ_o (the trained ids are part of the key anyway)
        return {"track": self.name, "data": to_plain(s.data), "model": to_plain(s.model)}

    def recipe(self, role: Role) -> RecTrainConfig:
        s = self.cfg_section
        return s.train if role == "original" else (s.oracle or s.train)

    def build_task(self) -> RecsysTask:
        s = self.cfg_section
        return load_recsys_task(s.data, s.scenario)

    def new_model(self, task: RecsysTask, init_seed: int) -> nn.Module:
        from unlearnkit.models.recsys import build_rec_model

        tr = task.train
        return build_rec_model(self.cfg_section.model, task.n_users, task.n_items, tr.ids, tr.users, tr.items,
                               init_seed)

    def train(self, task: RecsysTask, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        from unlearnkit.methods import derive_seed
        from unlearnkit.models.recsys import train_bpr

        if role == "original":
            model = self.new_model(task, seed)
            model.set_graph(task.train.ids)
            self.engine.seed_everything(seed)
            fit = train_bpr(model, task.train, self.recipe("original"), self.engine,
                            seed=derive_seed(seed, "original-order"), desc=f"original seed {seed}")
            return model, fit.seconds, fit.seen_ids
        return self.retrain_oracle("rec_retrain", task, seed, self.recipe("oracle"))

    def check_method(self, method: Any, label: str, task: RecsysTask) -> None:
        if getattr(method, "track", "classifier") != "recsys":
            raise ConfigError(f"method '{label}' is not a recsys method; see `unlearnkit methods`")
        if method.requirements()["retain"] and len(task.retain_pos) == 0:
            raise MethodError(f"method '{label}' needs a retain set (D_r) but this scenario leaves none")

    def unlearn(self, task: RecsysTask, method: Any, model: nn.Module, ctx: Any) -> Any:
        return method.unlearn(model, task.forget, task.retain, self.engine, ctx)

    def eval_context(self, task: RecsysTask, model: nn.Module, seed: int, references: dict[str, Any],
                     shared: dict[Any, Any] | None = None, policy: Any = None) -> Any:
        from unlearnkit.metrics.recsys import RecsysEvalContext

        return RecsysEvalContext(model, task, self.engine, k=self.cfg_section.k, seed=seed, references=references,
                                 shared=shared, policy=policy)

    def verdict_spec(self, task: Any) -> Any:
        """Forget side (fractions): D_f's Recall@K / NDCG@K and ranking AUC (lower = more forgotten); utility:
        Recall@K / NDCG@K on the retained test set (chance ≈ 0)."""
        from unlearnkit.verdict import VerdictSpec

        k = self.cfg_section.k
        return VerdictSpec(forget={f"forget_recall@{k}": -1, f"forget_ndcg@{k}": -1, "forget_auc": -1},
                           utility={f"recall@{k}": 0.0, f"ndcg@{k}": 0.0}, default_floor=0.005, percent=False,
                           refuse_untrained=False,
                           advice="delete more interactions (a larger forget set) or train θ_o until it fits them "
                                  "(more epochs)")

    def gap_keys(self) -> tuple[str, ...]:
        k = self.cfg_section.k
        return (f"recall@{k}", f"ndcg@{k}", f"forget_recall@{k}", f"forget_ndcg@{k}")

    def tuning_task(self, task: RecsysTask, seed: int) -> RecsysTask:
        """Other users / items / interactions (:func:`unlearnkit.bench.tune_tasks.recsys_tuning_task`)."""
        from unlearnkit.bench.tune_tasks import recsys_tuning_task

        return recsys_tuning_task(task, seed)
