"""The graph track: GNN unlearning of edges, nodes and node features (node classification, link prediction).

Experiment section ``graph:`` (:class:`GraphTrackConfig`)::

    track: graph
    graph:
      data: {name: cora, root: ../shared/data/planetoid}
      deletion: {target: edge, scenario: random, fraction: 0.05, seed: 0}
      task: link
      model: {arch: gcn, hidden: 64}
      train: {epochs: 200, lr: 0.01}
    methods: [retrain, gnndelete, gif, graph_grad_ascent, d2dgn]

θ_o is trained on the original graph D, θ_r on the retain graph D_r (fresh initialisation); methods get a copy of
θ_o and the :class:`~unlearnkit.data.graph.GraphTask`; every model is evaluated on the retain graph.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.bench.tracks.base import TRACKS, Role, Track
from unlearnkit.config.schema import ExperimentConfig, Frozen
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods.graph._common import GraphTrainConfig


class GraphDataConfig(Frozen):
    """Which graph: a Planetoid data set from ``root`` (``<root>/Cora/raw/ind.cora.*``; copied to a temp folder
    before PyG processes it) or ``synthetic`` (a seeded stochastic block model, no files)."""

    name: Literal["cora", "citeseer", "pubmed", "synthetic"] = "cora"
    root: str | None = Field(None, description="local Planetoid root (the folder holding Cora/raw)")
    download: bool = Field(False, description="let PyG download into root (needs network)")
    split: Literal["full", "public"] = Field("full", description="Planetoid split: full = all nodes outside val/"
                                                                 "test train (1,208 on Cora), public = 140")
    normalize_features: Literal["l1", "standard_maxnorm", "none"] = Field(
        "l1", description="l1: rows sum to 1 (PyG NormalizeFeatures); standard_maxnorm: standardise, then max row "
                          "norm 1 (Chien et al.'s certified setting)")
    test_edge_fraction: float = Field(0.1, gt=0, lt=1, description="link task: held-out test edges")
    split_seed: int = 0
    num_nodes: int = Field(120, ge=10, description="synthetic: nodes")
    num_classes: int = Field(3, ge=2, description="synthetic: classes (blocks)")
    num_features: int = Field(16, ge=2, description="synthetic: feature width")
    p_in: float = Field(0.12, ge=0, le=1, description="synthetic: edge probability inside a class")
    p_out: float = Field(0.01, ge=0, le=1, description="synthetic: edge probability across classes")


class GraphDeletionConfig(Frozen):
    """What is deleted: ``target`` edge / node / feature; ``scenario`` random or targeted (the edges of the
    highest-degree nodes, or those nodes); exactly one of ``fraction`` (of D's elements) or ``count``."""

    target: Literal["edge", "node", "feature"] = "edge"
    scenario: Literal["random", "targeted"] = "random"
    fraction: float | None = Field(None, gt=0, lt=1)
    count: int | None = Field(None, ge=1)
    seed: int = Field(0, description="seed of the D_f draw (independent of training seeds)")

    @model_validator(mode="after")
    def _one(self) -> GraphDeletionConfig:
        if (self.fraction is None) == (self.count is None):
            raise ValueError("graph.deletion needs exactly one of 'fraction' (0 < f < 1) or 'count' (k ≥ 1)")
        return self


class GraphModelConfig(Frozen):
    """The GNN (PyG layers): gcn, sage, gat, sgc. Link task: the last layer outputs ``out_dim``-wide embeddings."""

    arch: Literal["gcn", "sage", "gat", "sgc"] = "gcn"
    hidden: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    heads: int = Field(8, ge=1, description="gat: attention heads of hidden layers")
    K: int = Field(2, ge=1, description="sgc: propagation hops")
    bias: bool = Field(True, description="false for certified_sgc")
    out_dim: int = Field(64, ge=1, description="link task: embedding width (GNNDelete: 64)")


class GraphTrackConfig(Frozen):
    """The ``graph:`` section of a graph experiment."""

    data: GraphDataConfig = Field(default_factory=GraphDataConfig)
    deletion: GraphDeletionConfig = Field(default_factory=lambda: GraphDeletionConfig(fraction=0.05))
    task: Literal["node", "link"] = "node"
    model: GraphModelConfig = Field(default_factory=GraphModelConfig)
    train: GraphTrainConfig = Field(default_factory=GraphTrainConfig)
    oracle: GraphTrainConfig | None = Field(None, description="θ_r's recipe; None = train's")

    @model_validator(mode="after")
    def _check(self) -> GraphTrackConfig:
        if self.train.loss == "ovr_logistic" and (self.model.arch != "sgc" or self.model.bias or self.task != "node"):
            raise ValueError("graph.train.loss ovr_logistic needs model {arch: sgc, bias: false} and task: node")
        return self


class GraphExperiment(ExperimentConfig):
    """A graph experiment: ``track: graph`` and its ``graph:`` section (:class:`GraphTrackConfig`)."""

    default_metrics: ClassVar[tuple[str, ...]] = ("graph_utility", "graph_forget_auroc", "graph_mia",
                                                  "graph_oracle_distance")

    track: Literal["graph"] = "graph"
    graph: GraphTrackConfig = Field(default_factory=GraphTrackConfig, description="data, deletion, task, model "
                                    "and recipes of the graph track")


@TRACKS.register("graph", config=GraphExperiment)
class GraphTrack(Track):
    """Graph unlearning through the one runner: GraphTask ids are edge ids (edge deletion) or node ids."""

    name = "graph"
    extra = "graph"

    @classmethod
    def conformance_config(cls) -> dict[str, Any]:
        return {"graph": {"data": {"name": "synthetic", "num_nodes": 60, "num_features": 8}, "task": "node",
                          "deletion": {"target": "edge", "count": 4, "seed": 0},
                          "model": {"arch": "gcn", "hidden": 8}, "train": {"epochs": 60, "lr": 0.05}},
                "metrics": ["graph_utility"]}

    @classmethod
    def conformance_overrides(cls, component: type) -> dict[str, Any]:
        """A deletion target and task the method serves; certified SGC's model and loss."""
        sec: dict[str, Any] = {}
        targets, tasks = getattr(component, "targets", None), getattr(component, "tasks", None)
        if targets and "edge" not in targets:
            sec["deletion"] = {"target": targets[0], "count": 2}
        if tasks and "node" not in tasks:
            sec["task"] = tasks[0]
        if component.__name__ == "CertifiedSGC":
            sec["model"] = {"arch": "sgc", "bias": False}
            sec["train"] = {"loss": "ovr_logistic", "lbfgs_steps": 20}
        metric_task = getattr(component, "conformance", None)
        return {"graph": sec, **(metric_task or {})} if sec or metric_task else {}

    @property
    def gcfg(self) -> GraphTrackConfig:
        return self.section  # type: ignore[return-value]

    def recipe(self, role: Role) -> Any:
        return self.gcfg.train if role == "original" else (self.gcfg.oracle or self.gcfg.train)

    def build_task(self) -> Any:
        from unlearnkit.data.graph import build_graph_task, load_planetoid, synthetic_graph

        c = self.gcfg
        dc = c.data
        if dc.name == "synthetic":
            data = synthetic_graph(dc.num_nodes, dc.num_classes, dc.num_features, dc.p_in, dc.p_out,
                                   seed=dc.split_seed, normalize_features=dc.normalize_features)
        else:
            data = load_planetoid(dc.name, dc.root, download=dc.download, split=dc.split,
                                  normalize_features=dc.normalize_features)
        dl = c.deletion
        return build_graph_task(data, task=c.task, target=dl.target, scenario=dl.scenario, fraction=dl.fraction,
                                count=dl.count, seed=dl.seed, test_edge_fraction=dc.test_edge_fraction,
                                split_seed=dc.split_seed)

    def new_model(self, task: Any, init_seed: int) -> nn.Module:
        from unlearnkit.models.graph import build_gnn

        m = self.gcfg.model
        out = task.data.num_classes if task.task == "node" else m.out_dim
        return build_gnn(m.arch, task.data.x.shape[1], out, hidden=m.hidden, num_layers=m.num_layers,
                         dropout=m.dropout, heads=m.heads, K=m.K, bias=m.bias, seed=init_seed)

    def train(self, task: Any, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        from unlearnkit.methods import derive_seed
        from unlearnkit.methods.graph._common import fit_graph

        which = "original" if role == "original" else "retain"
        init = seed if role == "original" else derive_seed(seed, "oracle-init")
        model = self.new_model(task, init)
        self.engine.seed_everything(seed)
        seconds = fit_graph(model, task, which, self.recipe(role), seed=derive_seed(seed, f"{role}-fit"),
                            desc=f"{role} seed {seed}")
        return model, seconds, task.view(which).ids

    def check_method(self, method: Any, label: str, task: Any) -> None:
        targets = getattr(method, "targets", None)
        tasks = getattr(method, "tasks", None)
        if targets is None:
            raise ConfigError(f"method '{label}' is not a graph method")
        if task.target not in targets:
            raise MethodError(f"method '{label}' does not unlearn {task.target}s (it serves {', '.join(targets)})")
        if task.task not in tasks:
            raise MethodError(f"method '{label}' does not serve the {task.task} task (it serves {', '.join(tasks)})")
        if label and type(method).__name__ == "CertifiedSGC" and self.gcfg.train.loss != "ovr_logistic":
            raise MethodError(f"method '{label}' (certified_sgc) needs graph.model {{arch: sgc, bias: false}} and "
                              "graph.train.loss: ovr_logistic")

    def unlearn(self, task: Any, method: Any, model: nn.Module, ctx: Any) -> Any:
        return method.unlearn_graph(model, task, self.engine, ctx)

    def eval_context(self, task: Any, model: nn.Module, seed: int, references: dict[str, Any],
                     shared: dict[Any, Any] | None = None, policy: Any = None) -> Any:
        from unlearnkit.metrics.graph import GraphEvalContext

        return GraphEvalContext(model, task, self.engine, seed=seed, references=references, shared=shared,
                                policy=policy)

    def verdict_spec(self, task: Any) -> Any:
        """Forget side (%): accuracy on deleted nodes and the MI member probability (lower = more forgotten), the
        retained-vs-deleted AUROC (higher); utility: test accuracy (chance 100/K) or test AUROC (chance 50)."""
        from unlearnkit.verdict import VerdictSpec

        k = max(int(task.data.num_classes), 1)
        return VerdictSpec(forget={"forget_acc": -1, "mi_member_prob": -1, "forget_auroc": 1},
                           utility={"test_acc": 100.0 / k, "test_auroc": 50.0}, default_floor=1.0, percent=True,
                           advice="delete more nodes or edges (a larger forget fraction) or train θ_o until it fits "
                                  "its training graph (more epochs)")

    def gap_keys(self) -> tuple[str, ...]:
        return ("test_acc", "test_auroc", "forget_acc", "forget_auroc", "mi_member_prob")

    def tuning_task(self, task: Any, seed: int) -> Any:
        """|D_f| other edges / nodes of D (:func:`unlearnkit.bench.tune_tasks.graph_tuning_task`)."""
        from unlearnkit.bench.tune_tasks import graph_tuning_task

        return graph_tuning_task(task, seed)
