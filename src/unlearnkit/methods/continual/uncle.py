"""UnCLe — "An Unlearning Framework for Continual Learning" (Adhikari, Kumaravelu & Srijith, arXiv:2509.17530, 2025;
an earlier version was submitted to ICLR 2025, openreview pFjzF7dIgg): a hypernetwork learner and its data-free
unlearner.

Model (:class:`HyperNetModel`). A hypernetwork H(·; φ) generates the weights θ_t of a target MLP for every task t
from a learned task embedding e_t, in chunks (von Oswald et al., "Continual learning with hypernetworks", ICLR 2020,
arXiv:1906.00695): θ_t = s ⊙ concat_j H([e_t, c_j]; φ)[:P], with chunk embeddings c_j and a fixed per-layer output
scale s = 1/√fan_in (so a fresh H generates a fan-in-scaled initialisation). Task t's logits are the target net's
first |classes_t| outputs under θ_t, written into the columns of its classes; the forward pass evaluates every task,
so the model is an ordinary (n, C) classifier and the task-incremental evaluation (``head: task``) masks the logits to
each sample's task (the task id is known at test time, as in UnCLe).

Learning task t (Algorithm 1): min over φ and e_t of
    CE(f(x; θ_t)[:, task t], y) + β · (1/|R|) Σ_{r ∈ R} ‖H(e_r; φ) − H(e_r; φ*)‖²
with φ* the hypernetwork before this Learn and R the tasks learned and not forgotten (the hypernetwork regulariser
of von Oswald et al.; earlier task embeddings stay fixed).

Unlearning task f (Algorithm 2, data-free): min over φ of
    (1/n) Σ_{i=1..n} ‖H(e_f; φ) − ε_i‖² + β · (1/|R|) Σ_{r ∈ R} ‖H(e_r; φ) − H(e_r; φ*)‖²,   ε_i ~ N(0, σ²I)
which drives the generated weights of f to the noise mean (Theorem 3 of the paper: towards zero) while the same
regulariser holds the retained tasks; no sample of any task is read (only the request's class labels, to name the
task). The task's embedding is then marked forgotten and leaves the regulariser of later Learns.

Reference code: the authors' repository (config names ``<dataset>_<sequence>_<seed>.yaml``, ``instruction_str`` of
L/U operations) was not retrievable here; the losses follow the paper's equations as summarised in its reviews and
abstract, the hypernetwork and regulariser follow von Oswald et al.'s hypnettorch. Defaults: task embedding 32
(the paper), chunk embedding 32, chunk size 2,000, hypernetwork hidden [100, 100], β = 0.01 (hypnettorch's
permuted-MNIST default), unlearning 100 Adam steps at lr 1e-3 with n = 8 noise draws of σ = 0.1 (our choices: the
paper's values were not available; on split digits 100 steps shrink a task's weights 30× yet leave 70-90 %
task accuracy — scaling a ReLU net keeps its argmax — while 300 reach chance). The target network's hidden sizes are
the experiment's ``model.hidden`` (mlp).

Relapse: the unlearning regulariser holds every other task, forgotten ones included (their current, noise-aligned
weights), and by default (``hold_forgotten``) so does the learning regulariser of later Learns — without it a
forgotten task's embedding drifts with the shared hypernetwork and can come back (measured in BENCHMARKS.md). This is
our reading of the paper's "mindful of future learning"; its exact target set was not available.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from unlearnkit.config.schema import TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearned, Unlearner, derive_seed
from unlearnkit.methods.continual.base import (
    LEARNERS,
    Learner,
    LearnerConfig,
    LearnResult,
    LearnSpec,
    ModelInfo,
    train_steps,
)
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class HyperNetModel(nn.Module):
    """A chunked hypernetwork generating one target MLP per task (see the module docstring).

    Args:
        in_features: flattened input size d.  hidden: the target MLP's hidden widths.
        groups: the classes of every task (task t has ``len(groups[t])`` outputs).  num_classes: C.
        emb_dim, chunk_emb_dim, chunk_size, hnet_hidden: hypernetwork sizes.

    Buffers: ``task_classes`` int64 (T, K) (−1 padded), ``learned`` / ``forgotten`` bool (T,), ``out_scale`` (P,).
    """

    def __init__(self, in_features: int, hidden: list[int], groups: tuple[tuple[int, ...], ...], num_classes: int,
                 *, emb_dim: int = 32, chunk_emb_dim: int = 32, chunk_size: int = 2000,
                 hnet_hidden: list[int] | None = None) -> None:
        super().__init__()
        t = len(groups)
        k = max(len(g) for g in groups)
        dims = [in_features, *hidden, k]
        self.shapes: list[tuple[int, ...]] = []
        scales: list[torch.Tensor] = []
        for a, b in zip(dims, dims[1:]):
            self.shapes += [(b, a), (b,)]
            s = 1.0 / math.sqrt(a)
            scales += [torch.full((b * a,), s), torch.full((b,), s)]
        self.n_params = sum(math.prod(s) for s in self.shapes)
        self.chunk_size = int(chunk_size)
        n_chunks = math.ceil(self.n_params / self.chunk_size)
        self.task_emb = nn.ParameterList([nn.Parameter(torch.randn(emb_dim)) for _ in range(t)])
        self.chunk_emb = nn.Parameter(torch.randn(n_chunks, chunk_emb_dim))
        layers: list[nn.Module] = []
        d = emb_dim + chunk_emb_dim
        for h in (hnet_hidden if hnet_hidden is not None else [100, 100]):
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, self.chunk_size))
        self.hnet = nn.Sequential(*layers)
        self.register_buffer("out_scale", torch.cat(scales))
        tc = torch.full((t, k), -1, dtype=torch.long)
        for i, g in enumerate(groups):
            tc[i, : len(g)] = torch.as_tensor(list(g), dtype=torch.long)
        self.register_buffer("task_classes", tc)
        self.register_buffer("learned", torch.zeros(t, dtype=torch.bool))
        self.register_buffer("forgotten", torch.zeros(t, dtype=torch.bool))
        self.num_classes = int(num_classes)

    @property
    def n_tasks(self) -> int:
        return len(self.task_emb)

    def classes(self, t: int) -> list[int]:
        return [int(c) for c in self.task_classes[t].tolist() if c >= 0]

    def weights(self, t: int) -> torch.Tensor:
        """θ_t: float (P,) generated from task t's embedding."""
        e = self.task_emb[t].unsqueeze(0).expand(self.chunk_emb.shape[0], -1)
        out = self.hnet(torch.cat([e, self.chunk_emb], dim=1)).reshape(-1)[: self.n_params]
        return out * self.out_scale

    def target(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """The target MLP under weights ``flat``: float (b, K)."""
        h = x.reshape(len(x), -1)
        i = 0
        n_layers = len(self.shapes) // 2
        for layer in range(n_layers):
            ws, bs = self.shapes[2 * layer], self.shapes[2 * layer + 1]
            w = flat[i:i + math.prod(ws)].view(ws)
            i += math.prod(ws)
            b = flat[i:i + bs[0]]
            i += bs[0]
            h = F.linear(h, w, b)
            if layer < n_layers - 1:
                h = F.relu(h)
        return h

    def task_logits(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Task t's head: float (b, |classes_t|)."""
        return self.target(x, self.weights(t))[:, : len(self.classes(t))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(len(x), self.num_classes)
        for t in range(self.n_tasks):
            cls = self.task_classes[t][self.task_classes[t] >= 0]
            out[:, cls] = self.task_logits(x, t)
        return out


def _require(model: nn.Module, who: str) -> HyperNetModel:
    if not isinstance(model, HyperNetModel):
        raise MethodError(f"{who} needs the hypernetwork model of `scenario.learner: uncle` (a HyperNetModel), got "
                          f"{type(model).__name__}; set scenario.learner: {{name: uncle}} and head: task")
    return model


def regulariser(model: HyperNetModel, targets: dict[int, torch.Tensor]) -> torch.Tensor:
    """(1/|R|) Σ_r ‖H(e_r) − θ*_r‖² over the retained tasks' fixed targets (0 without any)."""
    if not targets:
        return torch.zeros((), device=model.chunk_emb.device)
    return sum((model.weights(r) - tgt).pow(2).sum() for r, tgt in targets.items()) / len(targets)  # type: ignore


def retained_targets(model: HyperNetModel, exclude: int | None = None, *,
                     forgotten: bool = False) -> dict[int, torch.Tensor]:
    """θ*_r = H(e_r; φ*) (detached) of every task learned and not forgotten — with ``forgotten``, of the forgotten
    ones too (their unlearned weights) — except ``exclude``."""
    with torch.no_grad():
        return {r: model.weights(r).detach().clone() for r in range(model.n_tasks)
                if bool(model.learned[r]) and (forgotten or not bool(model.forgotten[r])) and r != exclude}


class UncleLearnerConfig(LearnerConfig):
    """UnCLe's hypernetwork and its learning regulariser (defaults in the module docstring)."""

    beta: float = Field(0.01, ge=0, description="β: weight of the hypernetwork regulariser on retained tasks")
    emb_dim: int = Field(32, ge=1, description="task embedding size (the paper: 32)")
    chunk_emb_dim: int = Field(32, ge=1, description="chunk embedding size")
    chunk_size: int = Field(2000, ge=16, description="generated weights per hypernetwork pass")
    hnet_hidden: list[int] = Field(default_factory=lambda: [100, 100], description="hypernetwork hidden widths")
    hold_forgotten: bool = Field(True, description="keep forgotten tasks in the regulariser of later Learns, with "
                                 "their unlearned (noise-aligned) weights as targets, so later learning does not "
                                 "bring them back (our reading of 'mindful of future learning'; false: they leave "
                                 "it and may drift)")


@LEARNERS.register("uncle", config=UncleLearnerConfig)
class UncleLearner(Learner):
    """UnCLe's continual learner: a hypernetwork generating each task's target-network weights from a task embedding,
    trained with the task's cross-entropy plus a regulariser holding the retained tasks' generated weights."""

    source = "Adhikari et al., arXiv:2509.17530 (UnCLe); von Oswald et al., ICLR 2020, arXiv:1906.00695"
    whole_tasks_only = True
    head = "task"
    config: UncleLearnerConfig

    def build(self, base: Callable[[], nn.Module], info: ModelInfo) -> nn.Module:
        hidden = [100, 100]
        if info.model is not None:
            if info.model.name != "mlp":
                raise ConfigError(f"learner uncle generates an MLP target network; set model: {{name: mlp, hidden: "
                                  f"[...]}} (got model '{info.model.name}')")
            hidden = list(info.model.params.get("hidden", hidden))
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(info.init_seed)
            return HyperNetModel(math.prod(info.input_shape), hidden, info.groups, info.num_classes,
                                 emb_dim=cfg.emb_dim, chunk_emb_dim=cfg.chunk_emb_dim, chunk_size=cfg.chunk_size,
                                 hnet_hidden=list(cfg.hnet_hidden))

    def learn(self, model: nn.Module, spec: LearnSpec, engine: Any) -> LearnResult:
        hn = _require(model, "learner uncle")
        t = spec.task_index
        hn.to(engine.device)
        targets = retained_targets(hn, exclude=t, forgotten=self.config.hold_forgotten)
        local = {c: i for i, c in enumerate(hn.classes(t))}
        lut = torch.full((hn.num_classes,), -1, dtype=torch.long)
        for c, i in local.items():
            lut[c] = i
        lut = lut.to(engine.device)
        beta = self.config.beta

        def step_loss(x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
            loss = F.cross_entropy(hn.task_logits(x, t), lut[y])
            if targets and beta:
                loss = loss + beta * regulariser(hn, targets)
            return loss, np.zeros(0, dtype=np.int64)

        params = [*hn.hnet.parameters(), hn.chunk_emb, hn.task_emb[t]]
        res = train_steps(hn, spec.data, spec.recipe, engine, seed=spec.seed, desc=spec.desc, step_loss=step_loss,
                          params=params)
        hn.learned[t] = True
        hn.forgotten[t] = False
        return res


class UncleConfig(OptimConfig):
    """UnCLe's data-free unlearning (defaults in the module docstring: 300 Adam steps, lr 1e-3, n = 8, σ = 0.1,
    β = 0.01)."""

    epochs: int = Field(300, ge=1, description="optimizer steps of the unlearning objective")
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    beta: float = Field(0.01, ge=0, description="β: weight of the regulariser on the retained tasks")
    n_noise: int = Field(8, ge=1, description="n: noise draws averaged per step")
    sigma: float = Field(0.1, gt=0, description="σ: standard deviation of the noise targets")


@METHODS.register("uncle", config=UncleConfig)
class Uncle(Unlearner):
    """UnCLe's unlearning: for every task the request removes, train the hypernetwork so that the task's generated
    weights match Gaussian noise (mean over n draws), with the regulariser on the retained tasks — no data read.

    Needs ``scenario.learner: uncle`` (the hypernetwork) and requests that remove whole tasks; a partial request is a
    MethodError. Reads only the request's labels (to name its tasks): no input of D_f or D_r.
    """

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-4, 1e-2), "epochs": Int(50, 500), "beta": LogFloat(1e-3, 1.0)}
    source = "Adhikari et al., arXiv:2509.17530 (UnCLe), Algorithm 2"
    learner = "uncle"
    needs_retain = False
    needs_labels = True
    smoke_params = {"epochs": 5}
    conformance = {"scenario": {"kind": "continual", "fraction": None, "tasks": 2, "sequence": "L1 L2 U1",
                                "learner": {"name": "uncle", "hnet_hidden": [16], "chunk_size": 256},
                                "head": "task"},
                   "train": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0}}
    config: UncleConfig

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> Unlearned:
        hn = _require(model, "method uncle")
        groups = [tuple(hn.classes(t)) for t in range(hn.n_tasks)]
        owner = {c: t for t, g in enumerate(groups) for c in g}
        tasks = sorted({owner[int(c)] for c in np.unique(forget.labels)})
        partial = sorted({owner[int(c)] + 1 for c in np.unique(retain.labels) if owner.get(int(c)) in tasks})
        if partial:
            raise MethodError(f"uncle unlearns whole tasks, but the request leaves samples of task(s) {partial} in "
                              "D_r; use U<k> without a share")
        cfg = self.config
        hn.to(engine.device).train()
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "uncle-noise"))
        recipe = TrainConfig(epochs=1, lr=cfg.lr, optimizer=cfg.optimizer, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay, scheduler="none", grad_clip=cfg.grad_clip)
        from unlearnkit.engine.loop import make_optimizer

        notes: dict[str, Any] = {"tasks": [t + 1 for t in tasks]}
        steps = 0
        for f in tasks:
            targets = retained_targets(hn, exclude=f, forgotten=True)
            targets = {r: v for r, v in targets.items() if r not in tasks}
            opt = make_optimizer([*hn.hnet.parameters(), hn.chunk_emb], recipe)
            before = float(hn.weights(f).detach().norm())
            for step in range(cfg.epochs):
                theta = hn.weights(f)
                eps = cfg.sigma * torch.randn(cfg.n_noise, theta.numel(), generator=gen).to(theta)
                loss = (theta.unsqueeze(0) - eps).pow(2).sum(1).mean()
                if targets and cfg.beta:
                    loss = loss + cfg.beta * regulariser(hn, targets)
                lv = engine.check_finite(loss, step=step, desc="uncle")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(hn.parameters(), cfg.grad_clip)
                opt.step()
                steps += 1
                engine.after_optimizer_step(hn, loss=lv, lr=cfg.lr, epoch=0, desc="uncle")
            hn.forgotten[f] = True
            notes[f"task{f + 1}_weight_norm"] = [before, float(hn.weights(f).detach().norm())]
        hn.eval()
        return Unlearned(hn, steps=steps, notes=notes, seen_ids=np.zeros(0, dtype=np.int64))


__all__ = ["HyperNetModel", "Uncle", "UncleConfig", "UncleLearner", "UncleLearnerConfig", "regulariser",
           "retained_targets"]
