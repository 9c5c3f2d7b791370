"""Selective Synaptic Dampening (SSD): dampen the parameters far more important to D_f than to D."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.checkpoint import state_sha256
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, MethodError, NotFittedError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult
from unlearnkit.methods.classifier._common import iter_sets, require_trainable
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import LogFloat

ImportanceKind = Literal["fisher", "output_norm"]
Estimator = Literal["per_sample", "batch_mean"]

#: Largest number of per-sample gradient entries held at once by the ``per_sample`` estimator (float32: 256 MiB);
#: a batch is split into chunks of ``max(1, _PER_SAMPLE_BUDGET // n_trainable)`` samples.
_PER_SAMPLE_BUDGET = 2**26


@dataclass(frozen=True)
class Importances:
    """Per-parameter importances of one model on one data set.

    Attributes:
        values: parameter name -> float32 CPU tensor of the parameter's shape (≥ 0). Parameters without
            ``requires_grad`` are absent (importance 0: never selected).
        kind: ``"fisher"`` (SSD: squared gradient of the cross-entropy) or ``"output_norm"`` (LFSSD: |∇ ‖f(x)‖₂²|).
        batch_size: samples per batch used; with ``estimator="batch_mean"`` the values depend on it, with
            ``"per_sample"`` they do not (see :func:`compute_importances`).
        n_samples: samples read.  n_batches: batches read.
        estimator: ``"per_sample"`` (mean over samples of the per-sample quantity) or ``"batch_mean"`` (mean over
            batches of the quantity of the batch-mean loss, the reference code's).
        model_hash: :func:`~unlearnkit.engine.checkpoint.state_sha256` of the model they were computed on; a method
            given cached importances refuses a model with another hash.
    """

    values: dict[str, torch.Tensor]
    kind: ImportanceKind
    batch_size: int
    n_samples: int
    n_batches: int
    model_hash: str
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    estimator: Estimator = "per_sample"


def compute_importances(
    model: nn.Module,
    data: SampleSet | Sequence[SampleSet],
    engine: Engine,
    *,
    batch_size: int = 128,
    kind: ImportanceKind = "fisher",
    estimator: Estimator = "per_sample",
) -> Importances:
    """Diagonal importances of every trainable parameter on ``data`` (model in eval mode, weights unchanged).

    Two estimators (``estimator``):

    * ``"per_sample"`` (default): the mean over the N samples of a per-sample quantity, ``fisher``:
      I = (1/N) Σ_i (∂ CE(f(x_i), y_i)/∂θ)², the empirical diagonal Fisher the SSD paper writes (arXiv:2308.07707,
      Sec. 3, "the diagonal of the Fisher information matrix", computed from per-sample gradients); ``output_norm``:
      I = (1/N) Σ_i |∂ ‖f(x_i)‖₂²/∂θ| (LFSSD, arXiv:2402.19308, the Memory-Aware-Synapses sensitivity). The
      values do not depend on ``batch_size`` (it only sets how many samples are processed together), so I_D and I_f,
      and cached importances, are comparable whatever the batch size.
    * ``"batch_mean"``: the reference code's estimator (github.com/if-loops/selective-synaptic-dampening,
      ``ssd.py::ParameterPerturber.calc_importance``): I = (1/B) Σ_batches (∂ CE_batch/∂θ)², where CE_batch is
      the *mean* cross-entropy of a batch — the square of a batch-mean gradient, so the value depends on the batch
      size (≈ ‖E g‖² + Var(g)/b: smaller batches give larger importances, and a small last batch, e.g. 7 leftover
      samples of D_f, weighs as much as a full one); ``output_norm``: (1/B) Σ_batches |∂ (mean_b ‖f(x)‖₂²)/∂θ|.
      At ``batch_size=1`` it equals ``per_sample``.

    Per-sample gradients are taken with ``torch.func`` (``vmap`` of ``grad`` over a functional call of the model,
    in chunks of at most ``_PER_SAMPLE_BUDGET`` gradient entries); a model that ``vmap`` cannot trace (e.g. a
    data-dependent control flow) falls back to one backward pass per sample, with the same values.

    Batches are taken in the order of ``data`` (several sets are concatenated), unshuffled; the last batch may be
    smaller. Cost: ``batch_mean`` one forward and one backward pass per batch; ``per_sample`` the same arithmetic
    per sample (vectorised), and memory for ``chunk × n_trainable`` float32 gradient entries.

    Args:
        model: classifier producing logits (b, C); moved to the engine's device.
        data: D_f, or the sets making up D (e.g. ``[retain, forget]``, the reference code's order).
        batch_size: samples per batch (the reference code uses 128).
        kind: ``"fisher"`` or ``"output_norm"``.
        estimator: ``"per_sample"`` (default, batch-size independent) or ``"batch_mean"`` (reference code).

    Returns:
        :class:`Importances` (float32 CPU tensors, keyed by parameter name) with the model's state hash.

    Raises:
        ConfigError: ``batch_size`` < 1, an unknown ``kind`` or ``estimator``.  MethodError: ``data`` is empty or the
        model has no trainable parameters.  DivergenceError: a loss is NaN/inf.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    if kind not in ("fisher", "output_norm"):
        raise ConfigError(f"unknown importance kind {kind!r}; use 'fisher' (SSD) or 'output_norm' (LFSSD)")
    if estimator not in ("per_sample", "batch_mean"):
        raise ConfigError(
            f"unknown importance estimator {estimator!r}; use 'per_sample' (mean of per-sample quantities, batch-size "
            "independent) or 'batch_mean' (the SSD reference code's squared batch-mean gradient)"
        )
    sets = [data] if isinstance(data, SampleSet) else list(data)
    if sum(len(s) for s in sets) == 0:
        raise MethodError("cannot compute importances on an empty set")
    was_training = model.training
    model.to(engine.device).eval()
    named = require_trainable(model)
    params = [p for _, p in named]
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    n_batches, n_samples, seen = 0, 0, []
    per_sample = _PerSampleGrads(model, named, kind) if estimator == "per_sample" else None
    try:
        for step, (x, y, ids) in enumerate(iter_sets(engine, sets, batch_size)):
            if per_sample is not None:
                per_sample.accumulate(acc, x, y, engine, step)
            else:
                out = model(x)
                if kind == "fisher":
                    loss = nn.functional.cross_entropy(out, y)
                else:
                    loss = out.float().pow(2).sum(dim=1).mean()
                engine.check_finite(loss, step=step, desc=f"{kind} importances")
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for a, g in zip(acc, grads):
                    if g is not None:
                        a += g.detach().float().pow(2) if kind == "fisher" else g.detach().float().abs()
            n_batches += 1
            n_samples += len(y)
            seen.append(ids.numpy())
    finally:
        model.train(was_training)
    denom = n_samples if estimator == "per_sample" else n_batches
    values = {name: (a / denom).cpu() for (name, _), a in zip(named, acc)}
    return Importances(values, kind, batch_size, n_samples, n_batches, state_sha256(model),
                       np.unique(np.concatenate(seen)), estimator)


class _PerSampleGrads:
    """Sums of per-sample squared (``fisher``) or absolute (``output_norm``) gradients, vectorised with
    ``torch.func.vmap`` where the model allows it, else one backward pass per sample."""

    def __init__(self, model: nn.Module, named: list[tuple[str, nn.Parameter]], kind: ImportanceKind) -> None:
        self.model, self.named, self.kind = model, named, kind
        self.params = [p for _, p in named]
        n_trainable = sum(p.numel() for p in self.params)
        self.chunk = max(1, _PER_SAMPLE_BUDGET // max(n_trainable, 1))
        self.vectorised = True

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "fisher":
            return nn.functional.cross_entropy(out, y, reduction="sum")
        return out.float().pow(2).sum()

    def _fold(self, acc: list[torch.Tensor], g: torch.Tensor, a_idx: int, batched: bool) -> None:
        g = g.detach().float()
        g = g.pow(2) if self.kind == "fisher" else g.abs()
        acc[a_idx] += g.sum(dim=0) if batched else g

    def accumulate(self, acc: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, engine: Engine,
                   step: int) -> None:
        for lo in range(0, len(y), self.chunk):
            xc, yc = x[lo : lo + self.chunk], y[lo : lo + self.chunk]
            if self.vectorised:
                try:
                    grads, losses = self._vmap(xc, yc)
                except Exception:  # noqa: BLE001 — vmap cannot trace this model: per-sample loop, same values
                    self.vectorised = False
                else:
                    engine.check_finite(losses.sum(), step=step, desc=f"{self.kind} importances")
                    for i, g in enumerate(grads):
                        self._fold(acc, g, i, batched=True)
                    continue
            for j in range(len(yc)):
                loss = self._loss(self.model(xc[j : j + 1]), yc[j : j + 1])
                engine.check_finite(loss, step=step, desc=f"{self.kind} importances")
                for i, g in enumerate(torch.autograd.grad(loss, self.params, allow_unused=True)):
                    if g is not None:
                        self._fold(acc, g, i, batched=False)

    def _vmap(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        from torch.func import functional_call, grad_and_value, vmap

        names = [n for n, _ in self.named]
        train = {n: p.detach() for n, p in self.named}
        rest = {n: t.detach() for n, t in self.model.named_parameters() if n not in train}
        rest.update(dict(self.model.named_buffers()))

        def one(tp: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            out = functional_call(self.model, (tp, rest), (xi.unsqueeze(0),))
            return self._loss(out, yi.unsqueeze(0))

        g, losses = vmap(grad_and_value(one), in_dims=(None, 0, 0))(train, x, y)
        return [g[n] for n in names], losses


@torch.no_grad()
def dampen(
    model: nn.Module,
    train_importance: Importances,
    forget_importance: Importances,
    *,
    alpha: float,
    lam: float,
    exponent: float = 1.0,
) -> dict[str, Any]:
    """Apply SSD's selection and dampening in place.

    For every parameter entry with I_f > α·I_D: θ ← β·θ, β = min((λ·I_D / I_f)^exponent, 1). Other entries are
    untouched (bit-identical).

    Returns:
        ``{"selected": int, "total": int, "selected_fraction": float, "per_parameter": {name: int}}``.

    Raises:
        MethodError: the two importances cover different parameters or shapes.
    """
    selected, total, per_param = 0, 0, {}
    for name, p in model.named_parameters():
        if name not in forget_importance.values:
            continue
        if name not in train_importance.values:
            raise MethodError(f"the training-set importances have no entry for parameter '{name}'")
        i_f = forget_importance.values[name].to(p.device)
        i_d = train_importance.values[name].to(p.device)
        if i_f.shape != p.shape or i_d.shape != p.shape:
            raise MethodError(
                f"importance shapes {tuple(i_d.shape)} / {tuple(i_f.shape)} do not match parameter '{name}' "
                f"{tuple(p.shape)}"
            )
        mask = i_f > alpha * i_d
        k = int(mask.sum())
        if k:
            beta = ((lam * i_d[mask]) / i_f[mask]).pow(exponent).clamp(max=1.0)
            p[mask] = p[mask] * beta.to(p.dtype)
        per_param[name] = k
        selected += k
        total += p.numel()
    return {"selected": selected, "total": total, "selected_fraction": selected / max(total, 1),
            "per_parameter": per_param}


class SSDConfig(Frozen):
    """SSD settings. Defaults from the reference code (github.com/if-loops/selective-synaptic-dampening,
    ``forget_*_main.py`` and ``ssd.py``) for ResNet-18: α = ``selection_weighting`` = 10,
    λ = ``dampening_constant`` = 1, exponent 1, batch size 128 (``-b`` default; the forget loader also uses 128).
    One deliberate change: the importance ``estimator`` defaults to ``per_sample`` (the paper's diagonal Fisher,
    batch-size independent), where the reference code squares batch-mean gradients (``batch_mean``, kept by name).

    Fields:
        selection_weighting: α > 0 (dimensionless); an entry is selected when I_f > α·I_D. Larger α selects fewer
            parameters (the paper tunes it per model size; 10 for ResNet-18, also used for ViT in the code).
        dampening_constant: λ > 0 (dimensionless); β = min((λ·I_D/I_f)^exponent, 1).
        exponent: > 0, the power applied to λ·I_D/I_f (reference ``exponent`` = 1).
        batch_size: samples per importance batch (≥ 1). With ``estimator="per_sample"`` it only sets how many samples
            are processed together; with ``"batch_mean"`` importances scale with 1/batch size for noisy gradients, so
            it must be equal for I_D and I_f (it is) and for cached importances (checked).
        estimator: ``"per_sample"`` (default; mean over samples of the per-sample squared gradient) or
            ``"batch_mean"`` (reference code: mean over batches of the squared batch-mean gradient). See
            :func:`compute_importances`.
    """

    selection_weighting: float = Field(10.0, gt=0, description="α: select where I_f > α·I_D (reference: 10)")
    dampening_constant: float = Field(1.0, gt=0, description="λ: β = min(λ·I_D/I_f, 1) (reference: 1)")
    exponent: float = Field(1.0, gt=0, description="β = min((λ·I_D/I_f)^exponent, 1) (reference: 1)")
    batch_size: int = Field(128, ge=1, description="samples per importance batch (reference: 128)")
    estimator: Estimator = Field(
        "per_sample",
        description="importance estimator: per_sample (per-sample Fisher, batch-size independent) or batch_mean "
                    "(the reference code's squared batch-mean gradient)",
    )


@METHODS.register("ssd", config=SSDConfig)
class SSD(Unlearner):
    """Selective Synaptic Dampening (Foster, Schoepf, Brintrup, AAAI 2024, arXiv:2308.07707).

    Retraining-free: importances are diagonal Fisher estimates
    I_D = E_samples[(∂CE_i/∂θ)²] on the full training set D = D_r ∪ D_f and I_f on D_f (``estimator="per_sample"``,
    the default; ``"batch_mean"`` squares batch-mean gradients as the reference code does); every
    parameter entry with I_f > α·I_D is dampened, θ ← β·θ with β = min(λ·I_D/I_f, 1); all others are unchanged.
    No optimiser step is taken (``steps = 0``).

    Hyper-parameters: α (``selection_weighting``, 10), λ (``dampening_constant``, 1), batch size 128 — the reference
    code's ResNet-18 defaults. With the default per-sample estimator the importances do not depend on the batch
    size; with ``batch_mean`` they do (see :func:`compute_importances`).

    A bound to know: since D contains D_f, the forget samples alone contribute |D_f|/|D| of I_D, so
    I_f/I_D ≤ |D|/|D_f| = 1/forget fraction (``batch_mean``: |batches(D)|/|batches(D_f)|). With α = 10 nothing can be selected once D_f is
    ~10 % of D (one CIFAR-10 class; measured in BENCHMARKS.md: 0 parameters selected); the paper's class experiments
    forget ≤ 5 % (CIFAR-100 / CIFAR-20 classes). Lower α for larger forget fractions; ``notes["selected"]`` reports
    how many entries were dampened.

    Caching I_D: I_D depends only on θ_o and D, not on the request. Compute it once with
    ``compute_importances(model, [retain, forget], engine, batch_size=cfg.batch_size, estimator=cfg.estimator)``
    and use
    ``SSD(cfg).with_train_importance(imp)``; the copy refuses (``NotFittedError``) a model whose state hash differs
    from the one stored in ``imp``, and (``MethodError``) importances of another kind or estimator (or, for
    ``batch_mean``, another batch size). Such a copy does not read D_r.

    As in the reference code, the model is put in eval mode while importances are computed (BatchNorm uses its
    running statistics, dropout is off), D is batched in the order D_r then D_f, parameters without gradient get
    importance 0 and are never selected. Deviations: the per-sample estimator (above); gradients are taken with ``torch.autograd.grad`` (the model's
    ``.grad`` fields are left untouched); the reference code accumulates ``.grad`` through an optimiser.

    Raises (``unlearn``): MethodError (empty D_f; no retain set and no cached I_D; mismatched cached importances),
    NotFittedError (cached I_D from another model), DivergenceError (a NaN/inf loss while computing importances).
    """

    kind = "approximate"
    needs_retain = True
    needs_full_train = True
    importance_kind: ClassVar[ImportanceKind] = "fisher"
    # α = 2: the conformance task forgets 10 %, where I_f/I_D ≤ |D|/|D_f| = 10 lets α = 10 select nothing
    smoke_params: ClassVar[dict[str, Any]] = {"batch_size": 32, "selection_weighting": 2.0}
    source = "Foster, Schoepf, Brintrup, AAAI 2024, arXiv:2308.07707"
    #: unlearnkit tune: α (selection) and λ (dampening); with a forget share p of D, I_D ≥ p·I_f, so α ≥ 1/p never selects a weight: the range reaches below it
    search_space = {"selection_weighting": LogFloat(0.5, 50.0), "dampening_constant": LogFloat(0.1, 10.0)}

    def __init__(self, config: SSDConfig, train_importance: Importances | None = None) -> None:
        super().__init__(config)
        self.train_importance = train_importance
        if train_importance is not None:
            self._check_importance(train_importance)
            self.needs_retain = False  # type: ignore[misc]  # I_D is given: D_r is not read

    def _check_importance(self, imp: Importances) -> None:
        if not isinstance(imp, Importances):
            raise MethodError(f"train importances must be an Importances object, got {type(imp).__name__}")
        if imp.kind != self.importance_kind:
            raise MethodError(
                f"{type(self).__name__} needs '{self.importance_kind}' importances, got '{imp.kind}' "
                f"(compute them with compute_importances(..., kind='{self.importance_kind}'))"
            )
        if imp.estimator != self.config.estimator:
            raise MethodError(
                f"cached importances use the '{imp.estimator}' estimator but this {type(self).__name__} uses "
                f"'{self.config.estimator}'; recompute them with compute_importances(..., "
                f"estimator='{self.config.estimator}') or set estimator to match"
            )
        if imp.estimator == "batch_mean" and imp.batch_size != self.config.batch_size:
            raise MethodError(
                f"cached importances were computed with batch_size={imp.batch_size} but this {type(self).__name__} "
                f"uses batch_size={self.config.batch_size}; importances depend on the batch size, so recompute them "
                "or set batch_size to match"
            )

    def with_train_importance(self, importance: Importances) -> SSD:
        """A copy of this method that uses the precomputed I_D ``importance`` instead of computing it from D.

        Raises:
            MethodError: wrong kind, estimator or (``batch_mean``) batch size (checked now); the model hash is
                checked at ``unlearn``.
        """
        return type(self)(self.config, importance)

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        model.to(engine.device)
        if self.train_importance is not None:
            current = state_sha256(model)
            if current != self.train_importance.model_hash:
                raise NotFittedError(
                    f"the cached training-set importances belong to another model (hash "
                    f"{self.train_importance.model_hash[:12]}…, this model {current[:12]}…); recompute them with "
                    "compute_importances on this model"
                )
            i_d = self.train_importance
        else:
            i_d = compute_importances(model, [retain, forget], engine, batch_size=cfg.batch_size,
                                      kind=self.importance_kind, estimator=cfg.estimator)
        i_f = compute_importances(model, forget, engine, batch_size=cfg.batch_size, kind=self.importance_kind,
                                  estimator=cfg.estimator)
        stats = dampen(model, i_d, i_f, alpha=cfg.selection_weighting, lam=cfg.dampening_constant,
                       exponent=cfg.exponent)
        model.eval()
        seen = np.union1d(i_f.ids, i_d.ids) if self.train_importance is None else i_f.ids
        notes = {"selected": stats["selected"], "selected_fraction": stats["selected_fraction"],
                 "per_parameter": stats["per_parameter"], "importance_batches_D": i_d.n_batches,
                 "importance_batches_forget": i_f.n_batches, "importance_estimator": cfg.estimator,
                 "cached_train_importance": self.train_importance is not None}
        return UnlearnResult(model, steps=0, notes=notes, seen_ids=seen.astype(np.int64))
