"""Analytic (closed-form) head: exact removal of samples from a ridge-regression classification head on frozen
features, by recursive least squares (Woodbury downdates), without refitting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError, MethodError, NotFittedError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult
from unlearnkit.methods.classifier._common import head_features
from unlearnkit.models.parts import find_head, head_param_names, state_sha256_without
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import LogFloat

ArrayLike = torch.Tensor | np.ndarray


def _as_features(features: ArrayLike, what: str = "features") -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    x = x.detach().to("cpu", torch.float64)
    if x.ndim != 2:
        raise DataError(f"{what} must be a 2-D array (n_samples, n_features), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{what} contain NaN or inf values ({int((~torch.isfinite(x)).sum())} entries)")
    return x


def _as_labels(labels: ArrayLike, n: int, num_classes: int | None) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu()
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"labels must be a 1-D array of {n} class indices, got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise DataError("labels must be integer class indices, got non-integer floats")
    y = y.long()
    if n and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        allowed = f"[0, {num_classes})" if num_classes is not None else "[0, ∞)"
        raise DataError(f"labels must lie in {allowed}; got range [{int(y.min())}, {int(y.max())}]")
    return y


class RidgeHead:
    """A ridge-regression (regularised least-squares) classifier on fixed features, with exact sample deletion.

    Fit: Φ = [φ(X), 1] (n, p) with φ the identity (or a fixed random ReLU expansion, see ``buffer_size``), Y the
    one-hot labels (n, C), R = (ΦᵀΦ + γI)⁻¹ (the inverse regularised autocorrelation matrix, p×p) and
    W = R ΦᵀY (p, C). The bias column is regularised like every other column (as in analytic learning).
    Delete rows (Φ_f, Y_f), k of them, by the Woodbury identity, without the remaining data:

        S = I_k − Φ_f R Φ_fᵀ,   R' = R + R Φ_fᵀ S⁻¹ Φ_f R,   W' = W + R' Φ_fᵀ (Φ_f W − Y_f)

    which equals the ridge fit on the remaining rows exactly (up to float64 rounding; blocks of at most p rows).
    All arithmetic is float64 on CPU.

    Args:
        gamma: ridge coefficient γ > 0 (ACIL reference default 0.1). Larger γ is more stable, more biased.
        bias: append a constant-1 feature (the head's bias).
        buffer_size: 0 (default) fits on the given features; > 0 first maps them through a fixed random layer
            φ(x) = ReLU(x Bᵀ), B (buffer_size, d) drawn U(−1/√d, 1/√d) from ``buffer_seed`` — the "buffer layer"
            of analytic learning (ACIL, Zhuang et al., NeurIPS 2022; reference default 8192). It makes a linear
            least-squares head usable on raw low-dimensional inputs (a plain one-hot least-squares classifier on
            3 classes suffers from masking, e.g. ≈ 0.80 held-out accuracy on iris); a head with a buffer cannot be
            installed into an nn.Linear.
        buffer_seed: seed of B.

    Attributes (after ``fit``):
        R: float64 (p, p).  W: float64 (p, C).  n_samples: rows currently in the fit.  num_classes: C.
        in_features: d (before expansion).  ids: int64 sorted sample ids in the fit (when ids were given), else
        None.  key: free identifier of the feature extractor (e.g. a body state hash), set by the caller.

    Raises:
        ConfigError: γ ≤ 0 or buffer_size < 0.  NotFittedError: ``delete``/``predict`` before ``fit``.
        DataError: malformed features/labels/ids, deleting more rows than fitted or ids not in the fit.
        MethodError: a deletion leaves the autocorrelation numerically singular.
    """

    def __init__(self, gamma: float = 0.1, *, bias: bool = True, buffer_size: int = 0, buffer_seed: int = 0) -> None:
        if not (isinstance(gamma, (int, float)) and gamma > 0 and math.isfinite(gamma)):
            raise ConfigError(f"gamma must be a finite number > 0, got {gamma!r}")
        if buffer_size < 0:
            raise ConfigError(f"buffer_size must be ≥ 0, got {buffer_size}")
        self.gamma = float(gamma)
        self.bias = bool(bias)
        self.buffer_size = int(buffer_size)
        self.buffer_seed = int(buffer_seed)
        self.R: torch.Tensor | None = None
        self.W: torch.Tensor | None = None
        self.buffer: torch.Tensor | None = None
        self.n_samples = 0
        self.num_classes: int | None = None
        self.in_features: int | None = None
        self.ids: np.ndarray | None = None
        self.key: str | None = None

    # -- helpers ----------------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.W is not None

    def _require_fitted(self, what: str) -> None:
        if not self.fitted:
            raise NotFittedError(f"RidgeHead.{what} called before fit(); fit it on the training features first")

    def design(self, features: ArrayLike) -> torch.Tensor:
        """Φ: the (expanded) features with the bias column, float64 (n, p)."""
        x = _as_features(features)
        if self.in_features is not None and x.shape[1] != self.in_features:
            raise DataError(f"features have {x.shape[1]} columns but the head was fitted on {self.in_features}")
        if self.buffer is not None:
            x = torch.relu(x @ self.buffer.T)
        if self.bias:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        return x

    def _one_hot(self, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(y, int(self.num_classes or 0)).to(torch.float64)

    # -- fitting and deleting -------------------------------------------------------------------------------------
    def fit(self, features: ArrayLike, labels: ArrayLike, num_classes: int | None = None,
            ids: ArrayLike | None = None) -> RidgeHead:
        """Fit W = (ΦᵀΦ + γI)⁻¹ΦᵀY from scratch (replaces any previous fit); returns ``self``.

        Args:
            features: float (n, d).  labels: int (n,) in [0, C).  num_classes: C (default: max label + 1).
            ids: optional int (n,) unique sample ids; when given, ``delete`` must name ids that are in the fit.
        """
        x = _as_features(features)
        n, d = x.shape
        if n == 0:
            raise DataError("cannot fit a ridge head on 0 samples")
        if num_classes is not None and num_classes < 1:
            raise DataError(f"num_classes must be ≥ 1, got {num_classes}")
        y = _as_labels(labels, n, num_classes)
        self.num_classes = int(num_classes if num_classes is not None else int(y.max()) + 1)
        self.in_features = d
        if self.buffer_size:
            gen = torch.Generator().manual_seed(self.buffer_seed)
            bound = 1.0 / math.sqrt(d)
            self.buffer = (torch.rand(self.buffer_size, d, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        else:
            self.buffer = None
        phi = self.design(x)
        a = phi.T @ phi + self.gamma * torch.eye(phi.shape[1], dtype=torch.float64)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info):  # pragma: no cover - γ > 0 makes A positive definite
            raise MethodError("the regularised autocorrelation matrix is not positive definite; increase gamma")
        self.R = torch.cholesky_inverse(chol)
        self.W = self.R @ (phi.T @ self._one_hot(y))
        self.n_samples = n
        self.ids = None
        if ids is not None:
            arr = np.asarray(ids, dtype=np.int64).reshape(-1)
            if len(arr) != n or len(np.unique(arr)) != n:
                raise DataError(f"ids must be {n} unique integers, one per row")
            self.ids = np.sort(arr)
        return self

    def copy(self) -> RidgeHead:
        """An independent copy (tensors cloned)."""
        other = RidgeHead(self.gamma, bias=self.bias, buffer_size=self.buffer_size, buffer_seed=self.buffer_seed)
        for name in ("R", "W", "buffer"):
            t = getattr(self, name)
            setattr(other, name, None if t is None else t.clone())
        other.n_samples, other.num_classes, other.in_features = self.n_samples, self.num_classes, self.in_features
        other.ids = None if self.ids is None else self.ids.copy()
        other.key = self.key
        return other

    def delete(self, features: ArrayLike, labels: ArrayLike, ids: ArrayLike | None = None) -> RidgeHead:
        """Remove rows from the fit by Woodbury downdates; returns a new head (``self`` is unchanged).

        Args:
            features: float (k, d), the same features the rows were fitted with.  labels: int (k,).
            ids: int (k,) sample ids; required when the head was fitted with ids (each must be in the fit).

        Raises:
            NotFittedError: not fitted.  DataError: shapes, labels, k > n_samples, unknown/duplicate ids.
            MethodError: the downdate is numerically singular (increase gamma).
        """
        self._require_fitted("delete")
        x = _as_features(features)
        k = x.shape[0]
        y = _as_labels(labels, k, self.num_classes)
        if k == 0:
            return self.copy()
        if k > self.n_samples:
            raise DataError(f"cannot delete {k} rows from a head fitted on {self.n_samples}")
        new_ids = self.ids
        if self.ids is not None:
            if ids is None:
                raise DataError("this head was fitted with sample ids; pass the ids of the rows to delete")
            arr = np.asarray(ids, dtype=np.int64).reshape(-1)
            if len(arr) != k or len(np.unique(arr)) != k:
                raise DataError(f"ids must be {k} unique integers, one per deleted row")
            missing = np.setdiff1d(arr, self.ids)
            if len(missing):
                raise DataError(
                    f"{len(missing)} id(s) are not in the fit (never fitted or already deleted), e.g. "
                    f"{missing[:5].tolist()}"
                )
            new_ids = np.setdiff1d(self.ids, arr)
        phi = self.design(x)
        y1 = self._one_hot(y)
        r, w = self.R.clone(), self.W.clone()  # type: ignore[union-attr]
        block = phi.shape[1]
        for s in range(0, k, block):
            pb, yb = phi[s : s + block], y1[s : s + block]
            rp = r @ pb.T  # (p, b)
            smat = torch.eye(pb.shape[0], dtype=torch.float64) - pb @ rp
            smat = 0.5 * (smat + smat.T)
            chol, info = torch.linalg.cholesky_ex(smat)
            if int(info):
                raise MethodError(
                    "deleting these rows leaves the regularised autocorrelation numerically singular "
                    f"(Woodbury block {s // block}); increase gamma, or check that the rows were in the fit"
                )
            r = r + rp @ torch.cholesky_solve(rp.T, chol)
            r = 0.5 * (r + r.T)
            w = w + r @ (pb.T @ (pb @ w - yb))
        out = self.copy()
        out.R, out.W, out.n_samples, out.ids = r, w, self.n_samples - k, new_ids
        return out

    # -- using the head -------------------------------------------------------------------------------------------
    def predict(self, features: ArrayLike) -> torch.Tensor:
        """Scores Φ W, float64 (n, C) (argmax = predicted class)."""
        self._require_fitted("predict")
        return self.design(features) @ self.W  # type: ignore[operator]

    def linear_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight (C, d), bias (C,) or None)`` float64, for an ``nn.Linear(d, C)``.

        Raises:
            NotFittedError: not fitted.  MethodError: the head uses a random buffer (not an nn.Linear).
        """
        self._require_fitted("linear_parameters")
        if self.buffer is not None:
            raise MethodError("a RidgeHead with buffer_size > 0 is not a single nn.Linear; it cannot be installed")
        w = self.W  # type: ignore[assignment]
        if self.bias:
            return w[:-1].T.contiguous(), w[-1].clone()
        return w.T.contiguous(), None

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """``(tensors, metadata)`` to persist the head (e.g. with safetensors); see :meth:`from_state`."""
        self._require_fitted("to_state")
        tensors = {"R": self.R.clone(), "W": self.W.clone()}  # type: ignore[union-attr]
        if self.buffer is not None:
            tensors["buffer"] = self.buffer.clone()
        if self.ids is not None:
            tensors["ids"] = torch.from_numpy(self.ids)
        meta = {"gamma": repr(self.gamma), "bias": str(self.bias), "buffer_size": str(self.buffer_size),
                "buffer_seed": str(self.buffer_seed), "n_samples": str(self.n_samples),
                "num_classes": str(self.num_classes), "in_features": str(self.in_features), "key": self.key or ""}
        return {k: v.contiguous() for k, v in tensors.items()}, meta  # type: ignore[union-attr]

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> RidgeHead:
        """Rebuild a head saved with :meth:`to_state`.

        Raises:
            DataError: missing or inconsistent entries.
        """
        try:
            head = cls(float(meta["gamma"]), bias=meta["bias"] == "True", buffer_size=int(meta["buffer_size"]),
                       buffer_seed=int(meta["buffer_seed"]))
            head.R = tensors["R"].to("cpu", torch.float64).clone()
            head.W = tensors["W"].to("cpu", torch.float64).clone()
            head.buffer = tensors["buffer"].to("cpu", torch.float64).clone() if "buffer" in tensors else None
            head.ids = tensors["ids"].numpy().astype(np.int64) if "ids" in tensors else None
            head.n_samples, head.num_classes = int(meta["n_samples"]), int(meta["num_classes"])
            head.in_features, head.key = int(meta["in_features"]), meta.get("key") or None
        except (KeyError, ValueError) as err:
            raise DataError(f"incomplete RidgeHead state: {err}") from err
        p = head.W.shape[0]
        if head.R.shape != (p, p) or head.W.shape[1] != head.num_classes:
            raise DataError(f"inconsistent RidgeHead state: R {tuple(head.R.shape)}, W {tuple(head.W.shape)}")
        return head

    def __repr__(self) -> str:
        state = f"n={self.n_samples}, d={self.in_features}, C={self.num_classes}" if self.fitted else "unfitted"
        return f"RidgeHead(gamma={self.gamma}, bias={self.bias}, buffer_size={self.buffer_size}, {state})"


# -- model helpers -----------------------------------------------------------------------------------------------
def body_hash(model: nn.Module) -> str:
    """SHA-256 (hex) of everything but the head's (last nn.Linear's) weight and bias: keys a feature extractor.

    :func:`~unlearnkit.models.parts.state_sha256_without` the head's parameters (the format of
    :func:`~unlearnkit.engine.checkpoint.state_sha256`, buffers included).
    """
    return state_sha256_without(model, head_param_names(model))


def fit_ridge_head(model: nn.Module, data: SampleSet | Sequence[SampleSet], engine: Engine,
                   gamma: float = 0.1) -> RidgeHead:
    """Fit a :class:`RidgeHead` on the penultimate features of ``data`` (the inputs of the last nn.Linear).

    The head gets the head layer's bias setting, C = the layer's ``out_features``, the sample ids, and
    ``key = body_hash(model)``.

    Raises:
        MethodError: no nn.Linear head.  DataError: labels outside [0, C).
    """
    _, head = find_head(model, "analytic_head")
    feats, labels, ids = head_features(model, data, engine)
    ridge = RidgeHead(gamma, bias=head.bias is not None)
    ridge.fit(feats, labels, num_classes=head.out_features, ids=ids)
    ridge.key = body_hash(model)
    return ridge


@torch.no_grad()
def install_head(model: nn.Module, ridge: RidgeHead) -> None:
    """Copy the ridge head's weights into the model's last nn.Linear (cast to its dtype and device).

    Raises:
        MethodError: shapes or bias setting differ, or the ridge head uses a random buffer.
    """
    name, head = find_head(model, "analytic_head")
    weight, bias = ridge.linear_parameters()
    if tuple(weight.shape) != tuple(head.weight.shape):
        raise MethodError(
            f"the ridge head maps {weight.shape[1]} features to {weight.shape[0]} classes but the layer "
            f"'{name}' is {head.in_features}→{head.out_features}"
        )
    if (bias is None) != (head.bias is None):
        raise MethodError(
            f"bias mismatch: ridge head bias={bias is not None}, layer '{name}' bias={head.bias is not None}"
        )
    head.weight.copy_(weight.to(head.weight))
    if bias is not None:
        head.bias.copy_(bias.to(head.bias))


class AnalyticHeadConfig(Frozen):
    """Analytic-head settings.

    Fields:
        gamma: ridge coefficient γ > 0 of W = (ΦᵀΦ + γI)⁻¹ΦᵀY (units of squared feature scale). Default 0.1, the
            analytic-learning reference code's default (github.com/ZHUANGHP/Analytic-continual-learning,
            ``config.py --gamma 0.1``; ACU, arXiv:2505.12239, builds on it). Larger γ: better conditioned, more biased.
    """

    gamma: float = Field(0.1, gt=0, description="ridge coefficient γ (analytic-learning reference default 0.1)")


@METHODS.register("analytic_head", config=AnalyticHeadConfig)
class AnalyticHead(Unlearner):
    """Closed-form unlearning of a ridge-regression head on frozen features, by recursive least squares — the
    mechanism of ACU ("Analytic Continual Unlearning", Tang et al., 2025, arXiv:2505.12239) and of analytic learning
    (ACIL, Zhuang et al., NeurIPS 2022).

    With Φ the penultimate features of the frozen body (the inputs of the last nn.Linear) plus a bias column and
    Y one-hot labels: fit W = (ΦᵀΦ + γI)⁻¹ΦᵀY on D = D_r ∪ D_f (or use a fitted :class:`RidgeHead`), then
    delete D_f by the Woodbury identity on R = (ΦᵀΦ + γI)⁻¹ (see :class:`RidgeHead`) and install W in the last
    nn.Linear (weight = W[:-1]ᵀ, bias = W[-1]). The new head equals the ridge head refit on D_r (exact, float64).

    Kind "approximate": the deletion is exact *for the head given the frozen features*, but the body (every layer
    before the head) was trained on D and still carries D_f's influence; the original softmax head is also
    replaced by a least-squares one (its accuracy can differ from θ_o's). No gradient step is taken (``steps=0``).

    Reuse for sequential deletions: ``head = fit_ridge_head(model, D, engine)`` once, then per request
    ``head = head.delete(features_f, labels_f, ids=ids_f)`` and ``install_head(model, head)``; or
    ``AnalyticHead(cfg).with_state(head)``, which checks that ``head.key`` equals :func:`body_hash` of the model
    (``NotFittedError`` otherwise) and then reads only D_f.

    Raises (``unlearn``): MethodError (no nn.Linear head, or it is not the output layer; D_f or D_r missing; a
    numerically singular downdate; γ differs from the given state's), NotFittedError (state of another body),
    DataError (D_f samples not in the given state's fit).
    """

    kind = "approximate"
    needs_retain = True
    needs_full_train = True
    smoke_params: dict[str, Any] = {}
    source = "Tang et al., ACU, arXiv:2505.12239 (2025); Zhuang et al., ACIL, NeurIPS 2022"
    #: unlearnkit tune: the ridge coefficient γ (reference 0.1), up to where it matters against the feature Gram matrix
    #: of thousands of samples
    search_space = {"gamma": LogFloat(1e-3, 1e4)}

    def __init__(self, config: AnalyticHeadConfig, state: RidgeHead | None = None) -> None:
        super().__init__(config)
        if state is not None:
            if not isinstance(state, RidgeHead) or not state.fitted:
                raise MethodError("the state must be a fitted RidgeHead (see fit_ridge_head)")
            if state.gamma != config.gamma:
                raise MethodError(f"the given RidgeHead has gamma={state.gamma} but the config says {config.gamma}")
            self.needs_retain = False  # type: ignore[misc]  # the fit on D is given: D_r is not read
        self.state = state

    def with_state(self, state: RidgeHead) -> AnalyticHead:
        """A copy that deletes from the fitted ``state`` instead of fitting on D (key checked at ``unlearn``)."""
        return type(self)(self.config, state)

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        name, head = find_head(model, "analytic_head")
        model.to(engine.device)
        if self.state is not None:
            key = body_hash(model)
            if self.state.key != key:
                raise NotFittedError(
                    f"the given RidgeHead was fitted on features of another model body (key "
                    f"{(self.state.key or 'none')[:12]}…, this model {key[:12]}…); refit it with fit_ridge_head"
                )
            ridge = self.state
        else:
            ridge = fit_ridge_head(model, [retain, forget], engine, self.config.gamma)
        feats, labels, ids = head_features(model, forget, engine)
        updated = ridge.delete(feats, labels, ids=ids if ridge.ids is not None else None)
        install_head(model, updated)
        self._verify_output_layer(model, forget, engine, updated)
        model.eval()
        notes = {"fitted_samples": ridge.n_samples, "deleted": int(len(feats)), "remaining": updated.n_samples,
                 "feature_dim": int(feats.shape[1]), "head": name, "gamma": ridge.gamma,
                 "given_state": self.state is not None}
        return UnlearnResult(model, steps=0, notes=notes)

    @staticmethod
    @torch.no_grad()
    def _verify_output_layer(model: nn.Module, data: SampleSet, engine: Engine, ridge: RidgeHead) -> None:
        """Raise MethodError unless the model's logits equal the installed ridge head's scores (head is the output)."""
        part = data.take(np.arange(min(len(data), 32)))
        feats, _, _ = head_features(model, part, engine)
        x, _, _ = part.batch(np.arange(len(part)))
        was_training = model.training
        model.eval()
        try:
            out = model(x.to(engine.device)).detach().to("cpu", torch.float64)
        finally:
            model.train(was_training)
        want = ridge.predict(feats)
        tol = 1e-3 * (1 + float(want.abs().max())) if want.numel() else 0.0
        if out.shape != want.shape or not torch.allclose(out, want, rtol=1e-3, atol=tol):
            raise MethodError(
                f"the model's output is not its last nn.Linear's output (max difference "
                f"{float((out - want).abs().max()) if out.shape == want.shape else 'shape ' + str(tuple(out.shape))}); "
                "the analytic head needs the last nn.Linear to produce the logits directly"
            )
