"""ACU — "Analytic Continual Unlearning" (Tang et al., 2025, arXiv:2505.12239), on analytic class-incremental
learning (ACIL, Zhuang et al., NeurIPS 2022, arXiv:2205.14922; reference code
github.com/ZHUANGHP/Analytic-continual-learning): a frozen feature extractor, a fixed random "buffer layer" and a
ridge-regression head learned and unlearned in closed form.

Model (:class:`AnalyticModel`): features φ(x) = [ReLU(B · body(x)), 1] (float64, p = buffer_size + 1; B drawn
U(−1/√d, 1/√d) from ``buffer_seed`` exactly as :class:`~unlearnkit.methods.classifier.analytic_head.RidgeHead`),
logits φ(x) W. The head's state is R = (ΦᵀΦ + γI)⁻¹ (p × p) and W = R ΦᵀY (p × C) over everything learned and not
forgotten — held as float64 buffers of the model, so the runner's cache and checkpoints carry them.

Learning a task (recursive least squares, ACIL): with the task's rows Φ, Y (in blocks of ≤ p rows)
    R ← R − R Φᵀ (I + Φ R Φᵀ)⁻¹ Φ R,    W ← W + R Φᵀ (Y − Φ W)            (R already updated)
Unlearning a request (the Woodbury downdate, ACU; :meth:`RidgeHead.delete` is reused):
    R ← R + R Φ_fᵀ (I − Φ_f R Φ_fᵀ)⁻¹ Φ_f R,    W ← W + R Φ_fᵀ (Φ_f W − Y_f)
Both keep W equal to the ridge fit on what remains (up to float64 rounding), whatever the order of operations; a
request costs O(k p²) for k forgotten rows, independent of how much was learned (no retain data is read).

Features: ``features: random`` (default) — the experiment's model body (every layer before its last nn.Linear) with
its own fixed seed ``feature_seed``, frozen and never trained, so θ_o, the oracle and ACU share one feature map and
ACU's model *is* the oracle's (the head refit on D_r) after every request. ``features: first_task`` — the body is
trained with the ``train`` recipe on the first Learn (ACIL's base training, the paper's protocol with a backbone
trained on the base task) and then frozen; ACU stays exact for the head, but the body still carries the first task.
Defaults: γ = 0.1 (the analytic-learning reference's ``--gamma``), buffer 1,024 (ACIL uses 8,192 on ImageNet-scale
backbones; scaled down for CPU-sized runs: R is p² float64 values in every checkpoint).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearned, Unlearner
from unlearnkit.methods.classifier.analytic_head import RidgeHead
from unlearnkit.methods.continual.base import LEARNERS, Learner, LearnerConfig, LearnResult, LearnSpec, ModelInfo
from unlearnkit.registry import METHODS


def _expansion(buffer_size: int, d: int, seed: int) -> torch.Tensor:
    """B (buffer_size, d) float64, U(−1/√d, 1/√d) from ``seed`` — RidgeHead's buffer layer, draw for draw."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(buffer_size, d, generator=gen, dtype=torch.float64) * 2 - 1) / math.sqrt(d)


class AnalyticModel(nn.Module):
    """Frozen ``body`` + random ReLU expansion + ridge head (see the module docstring).

    Buffers: ``expand`` float64 (buffer_size, d) (absent with buffer_size 0), ``R`` float64 (p, p), ``W`` float64
    (p, C), ``n_fit`` (rows in the fit), ``based`` (the body was base-trained). ``forward(x)`` → float32 (b, C).
    """

    def __init__(self, body: nn.Module, in_features: int, num_classes: int, *, gamma: float, buffer_size: int,
                 buffer_seed: int) -> None:
        super().__init__()
        self.body = body
        self.gamma = float(gamma)
        self.buffer_size = int(buffer_size)
        self.buffer_seed = int(buffer_seed)
        self.in_features = int(in_features)
        if buffer_size:
            self.register_buffer("expand", _expansion(buffer_size, in_features, buffer_seed))
        else:
            self.expand = None
        p = (buffer_size or in_features) + 1
        self.register_buffer("R", torch.eye(p, dtype=torch.float64) / self.gamma)
        self.register_buffer("W", torch.zeros(p, num_classes, dtype=torch.float64))
        self.register_buffer("n_fit", torch.zeros((), dtype=torch.long))
        self.register_buffer("based", torch.zeros((), dtype=torch.bool))
        self.freeze_body()

    def freeze_body(self) -> None:
        for q in self.body.parameters():
            q.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        return int(self.W.shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """body(x) flattened, float64 (b, d)."""
        return self.body(x).reshape(len(x), -1).double()

    def design(self, f: torch.Tensor) -> torch.Tensor:
        """Φ = [ReLU(f Bᵀ), 1], float64 (b, p)."""
        if self.expand is not None:
            f = torch.relu(f @ self.expand.T)
        return torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype, device=f.device)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.design(self.features(x)) @ self.W).float()

    @torch.no_grad()
    def collect(self, data: SampleSet, engine: Engine) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """body features of ``data`` (float64 CPU (n, d)), labels and ids, body in eval mode."""
        was = self.training
        self.to(engine.device).eval()
        fs, ys, ids = [], [], []
        try:
            for x, y, i in engine.batches(data, engine.config.eval_batch_size, shuffle=False):
                fs.append(self.features(x).cpu())
                ys.append(y.cpu().numpy())
                ids.append(i.numpy())
        finally:
            self.train(was)
        if not fs:
            return torch.zeros(0, self.in_features, dtype=torch.float64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return torch.cat(fs), np.concatenate(ys), np.concatenate(ids)

    def ridge(self) -> RidgeHead:
        """The head as a :class:`RidgeHead` (float64 CPU copies of R, W and the buffer layer)."""
        h = RidgeHead(self.gamma, bias=True, buffer_size=self.buffer_size, buffer_seed=self.buffer_seed)
        h.R, h.W = self.R.detach().cpu().clone(), self.W.detach().cpu().clone()
        h.buffer = None if self.expand is None else self.expand.detach().cpu().clone()
        h.n_samples, h.num_classes, h.in_features = int(self.n_fit), self.num_classes, self.in_features
        return h

    @torch.no_grad()
    def set_ridge(self, head: RidgeHead) -> None:
        """Install ``head``'s R, W and row count."""
        self.R.copy_(head.R.to(self.R))  # type: ignore[union-attr]
        self.W.copy_(head.W.to(self.W))  # type: ignore[union-attr]
        self.n_fit.fill_(int(head.n_samples))


def rls_add(head: RidgeHead, features: torch.Tensor, labels: np.ndarray) -> RidgeHead:
    """``head`` with rows added by recursive least squares (the inverse of :meth:`RidgeHead.delete`); a new head.

    Args:
        features: float64 (k, d) body features.  labels: int (k,) in [0, C).

    Raises:
        MethodError: the update is numerically singular (it cannot be: I + Φ R Φᵀ is positive definite).
    """
    from unlearnkit.methods.classifier.analytic_head import _as_labels

    phi = head.design(features)
    k = phi.shape[0]
    y = nn.functional.one_hot(_as_labels(labels, k, head.num_classes), int(head.num_classes or 0)).to(torch.float64)
    r, w = head.R.clone(), head.W.clone()  # type: ignore[union-attr]
    block = phi.shape[1]
    for s in range(0, k, block):
        pb, yb = phi[s:s + block], y[s:s + block]
        rp = r @ pb.T
        kmat = torch.eye(pb.shape[0], dtype=torch.float64) + pb @ rp
        kmat = 0.5 * (kmat + kmat.T)
        chol, info = torch.linalg.cholesky_ex(kmat)
        if int(info):  # pragma: no cover - positive definite by construction
            raise MethodError("the recursive least-squares update is numerically singular; increase gamma")
        r = r - rp @ torch.cholesky_solve(rp.T, chol)
        r = 0.5 * (r + r.T)
        w = w + r @ (pb.T @ (yb - pb @ w))
    out = head.copy()
    out.R, out.W, out.n_samples = r, w, head.n_samples + k
    return out


def _require(model: nn.Module, who: str) -> AnalyticModel:
    if not isinstance(model, AnalyticModel):
        raise MethodError(f"{who} needs the analytic model of `scenario.learner: acu` (an AnalyticModel), got "
                          f"{type(model).__name__}; set scenario.learner: {{name: acu}}")
    return model


class AcuLearnerConfig(LearnerConfig):
    """ACIL/ACU head settings (defaults in the module docstring)."""

    gamma: float = Field(0.1, gt=0, description="ridge coefficient γ (analytic-learning reference default 0.1)")
    buffer_size: int = Field(1024, ge=0, description="width of the random ReLU buffer layer (0: the body features)")
    buffer_seed: int = Field(0, description="seed of the buffer layer B")
    features: Literal["random", "first_task"] = Field(
        "random", description="random: a frozen, never-trained body with seed feature_seed (θ_o, θ_r and ACU share "
        "it); first_task: the body is trained on the first Learn, then frozen (ACIL's base training)")
    feature_seed: int = Field(0, description="seed of the body with features: random")


@LEARNERS.register("acu", config=AcuLearnerConfig)
class AcuLearner(Learner):
    """Analytic continual learning (ACIL): a frozen body and a ridge head updated in closed form by recursive least
    squares for every Learn; its unlearner is the ``acu`` method (the Woodbury downdate)."""

    source = "Zhuang et al., ACIL, NeurIPS 2022, arXiv:2205.14922; Tang et al., ACU, arXiv:2505.12239"
    methods = ("acu",)
    config: AcuLearnerConfig

    def build(self, base: Callable[[], nn.Module], info: ModelInfo) -> nn.Module:
        cfg = self.config
        if cfg.features == "random":
            if info.model is None:
                raise ConfigError("learner acu with features: random needs the experiment's model spec")
            from unlearnkit.models import build_model

            net = build_model(info.model, info.input_shape, info.num_classes, seed=cfg.feature_seed)
        else:
            net = base()
        if not isinstance(net, nn.Sequential) or not isinstance(net[-1], nn.Linear):
            raise ConfigError("learner acu needs a model whose last layer is an nn.Linear in an nn.Sequential (the "
                              "mlp builder); its body is every layer before it")
        body = nn.Sequential(*list(net)[:-1])
        return AnalyticModel(body, net[-1].in_features, info.num_classes, gamma=cfg.gamma,
                             buffer_size=cfg.buffer_size, buffer_seed=cfg.buffer_seed)

    def learn(self, model: nn.Module, spec: LearnSpec, engine: Any) -> LearnResult:
        am = _require(model, "learner acu")
        t0 = time.perf_counter()
        steps = 0
        if self.config.features == "first_task" and not bool(am.based):
            head = nn.Linear(am.in_features, am.num_classes)
            net = nn.Sequential(am.body, nn.Flatten(), head)
            for q in am.body.parameters():
                q.requires_grad_(True)
            fit = engine.fit(net, spec.data, spec.recipe, seed=spec.seed, desc=f"{spec.desc} (base training)")
            steps = fit.steps
            am.freeze_body()
            am.based.fill_(True)
        feats, labels, ids = am.collect(spec.data, engine)
        am.set_ridge(rls_add(am.ridge(), feats, labels))
        am.eval()
        return LearnResult(time.perf_counter() - t0, steps, np.unique(ids))


class AcuConfig(LearnerConfig):
    """ACU's unlearning has no settings of its own: γ and the buffer layer are the learner's (``scenario.learner``)."""


@METHODS.register("acu", config=AcuConfig)
class Acu(Unlearner):
    """Analytic continual unlearning: remove the request's rows from the ridge head of ``scenario.learner: acu`` by
    the Woodbury downdate (reusing :meth:`RidgeHead.delete`) — reads only D_f (its features and labels), no retain
    data, no gradient step; the head then equals the ridge fit on what remains.

    Kind "approximate" in the runner's sense: exact for the head given the frozen features (up to float64
    rounding, not bit for bit); with ``features: first_task`` the body still carries the first task.
    """

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {}  # closed form: no settings
    source = "Tang et al., ACU, arXiv:2505.12239 (2025); Zhuang et al., ACIL, NeurIPS 2022"
    learner = "acu"
    needs_retain = False
    needs_labels = True
    smoke_params: dict[str, Any] = {}
    conformance = {"scenario": {"kind": "continual", "fraction": None, "tasks": 2, "sequence": "L1 L2 U1",
                                "learner": {"name": "acu", "buffer_size": 64}}}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> Unlearned:
        am = _require(model, "method acu")
        feats, labels, _ = am.collect(forget, engine)
        head = am.ridge()
        new = head.delete(feats, labels)
        am.set_ridge(new)
        am.eval()
        return Unlearned(am, steps=0, notes={"deleted": int(len(labels)), "remaining": int(new.n_samples),
                                             "p": int(head.W.shape[0]), "gamma": am.gamma},  # type: ignore[union-attr]
                         seen_ids=np.zeros(0, dtype=np.int64))


__all__ = ["Acu", "AcuConfig", "AcuLearner", "AcuLearnerConfig", "AnalyticModel", "rls_add"]
