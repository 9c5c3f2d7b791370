"""Causal-LM operations on QA data: per-sample answer log-probabilities, per-token scores, greedy generation, and the
training loop (gradient accumulation, effective batch, divergence check; mixed precision and sharding on Hugging Face
accelerate) used for θ_o / θ_r and by LLM methods.

Conventions:
    - the model is called as ``model(input_ids=..., attention_mask=...)`` and returns an object with ``.logits``
      float (b, T, V); any HF causal LM (with or without peft adapters) qualifies;
    - log-probabilities are natural-log, summed over answer tokens (labels != -100) after the causal shift;
    - evaluation functions run in eval mode under ``torch.no_grad`` and restore the model's training flag
      (KNOWN_FAULTS C21); batches are formed after sorting by length (less padding) and results are returned in
      input order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.engine.distributed import DistState, MixedPrecision, load_sharding, make_accelerator
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.llm.tokenize import (
    IGNORE_INDEX,
    Encoded,
    TruncationWarning,
    collate,
    encode_prompt,
    encode_qa,
    keep_tail,
    pad_id_of,
    truncation_count,
    truncation_message,
)
from unlearnkit.models.llm import parameter_bytes

log = logging.getLogger("unlearnkit")

# ---------------------------------------------------------------------------------------------------------------------
# helpers


def model_device(model: nn.Module, engine: Any = None) -> torch.device:
    """The engine's device if given, else the device of the model's first parameter."""
    if engine is not None:
        return engine.device
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode + no grad inside; the training flag is restored afterwards (C21)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()} if device.type != "cpu" else batch


def forward_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``model(input_ids, attention_mask[, position_ids]).logits`` → float (b, T, V)."""
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "position_ids" in batch:
        kw["position_ids"] = batch["position_ids"]
    return model(**kw).logits


def token_logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log p(label) after the causal shift.

    Args:
        logits: float (b, T, V).  labels: int64 (b, T), ``-100`` where ignored.

    Returns:
        ``(logp, mask)``: float32 (b, T−1) with exactly 0 (and zero gradient) at ignored positions, and bool (b, T−1).
        Ignored labels are never used as indices (``cross_entropy(ignore_index=-100)``; KNOWN_FAULTS C19).
    """
    lg = logits[:, :-1].float()
    tgt = labels[:, 1:]
    b, t, v = lg.shape
    logp = -F.cross_entropy(lg.reshape(b * t, v), tgt.reshape(b * t), ignore_index=IGNORE_INDEX,
                            reduction="none").view(b, t)
    return logp, tgt != IGNORE_INDEX


def sequence_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable per-sample answer log-probability.

    Returns:
        ``(sum_logprob, n_tokens)``: float32 (b,) = Σ_t log p(y_t | x, y_<t) over labelled tokens, int64 (b,).
    """
    logp, mask = token_logprobs_from_logits(forward_logits(model, batch), batch["labels"])
    return logp.sum(1), mask.sum(1)


def encode_pairs(tokenizer: Any, pairs: Iterable[tuple[str, str]], fmt: str = "qa", max_len: int | None = None,
                 *, add_eos: bool = True, what: str = "encode") -> list[Encoded]:
    """:func:`encode_qa` over ``pairs``; when ``max_len`` cuts any of them, one
    :class:`~unlearnkit.llm.tokenize.TruncationWarning` says how many (never a silent cut)."""
    enc = [encode_qa(tokenizer, q, a, fmt, max_len, add_eos=add_eos) for q, a in pairs]
    n_cut, dropped = truncation_count(enc)
    if n_cut and max_len is not None:
        warnings.warn(TruncationWarning(truncation_message(
            what, n_cut, len(enc), max_len, dropped,
            "their tails are not read; raise max_len (training: llm.train.max_len) or use shorter texts (MUSE: "
            "llm.data.chunk_chars)")), stacklevel=2)
    return enc


# ---------------------------------------------------------------------------------------------------------------------
# scoring


@dataclass
class TokenScores:
    """Per-token scores of one sequence's labelled positions (k tokens).

    Attributes:
        target: int64 (k,) the labelled token ids.
        logp: float64 (k,) log p(target_t | prefix).
        argmax: int64 (k,) teacher-forced greedy prediction at each position.
        mu, sigma: float64 (k,) mean and standard deviation of log p(v) under the model's own distribution at each
            position (Min-K%++, Zhang et al. 2024, arXiv:2404.02936): μ = Σ_v p_v log p_v, σ² = Σ_v p_v (log p_v)² − μ²;
            None unless requested.
    """

    target: np.ndarray
    logp: np.ndarray
    argmax: np.ndarray
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None


def _policy_logits(model: nn.Module, batch: dict[str, torch.Tensor], policy: Any, tokenizer: Any = None
                   ) -> torch.Tensor:
    """Teacher-forced logits (b, T, V) of ``model``, changed by an inference-time ``policy`` that affects logits
    (its ``forward_hooks`` around the forward pass, then its ``score_logits``)."""
    if policy is None:
        return forward_logits(model, batch)
    hooks = getattr(policy, "forward_hooks", None)
    with hooks(model, tokenizer, batch) if hooks is not None else contextlib.nullcontext():
        logits = forward_logits(model, batch)
    return policy.score_logits(batch, logits)


def policy_questions(policy: Any, questions: Sequence[str], fmt: str) -> list[str]:
    """``questions`` as a prompt-side policy rewrites them (``policy.rewrite_questions``); unchanged without one."""
    rw = getattr(policy, "rewrite_questions", None) if policy is not None else None
    return list(rw(list(questions), fmt)) if rw is not None else list(questions)


def score_encoded(model: nn.Module, encoded: Sequence[Encoded], *, pad_id: int, batch_size: int = 16,
                  engine: Any = None, stats: bool = False, policy: Any = None,
                  tokenizer: Any = None) -> list[TokenScores]:
    """Per-token scores of pre-encoded examples (see :class:`TokenScores`), in input order.

    ``policy``: an inference-time policy whose ``forward_hooks`` / ``score_logits`` change the logits (pass it only
    when it affects logits; see :mod:`unlearnkit.models.policy`); ``tokenizer`` is handed to its hooks."""
    out: list[TokenScores | None] = [None] * len(encoded)
    dev = model_device(model, engine)
    with eval_mode(model):
        for idx in _batches_by_length([len(e) for e in encoded], batch_size):
            batch = _to(collate([encoded[i] for i in idx], pad_id), dev)
            logits = _policy_logits(model, batch, policy, tokenizer)[:, :-1].float()
            tgt = batch["labels"][:, 1:]
            lsm = torch.log_softmax(logits, dim=-1)
            mask = tgt != IGNORE_INDEX
            safe = tgt.masked_fill(~mask, 0)
            lp = lsm.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
            am = lsm.argmax(-1)
            if stats:
                p = lsm.exp()
                mu = (p * lsm).sum(-1)
                var = ((p * lsm * lsm).sum(-1) - mu * mu).clamp_min(0)
                sd = var.sqrt()
            for r, i in enumerate(idx):
                m = mask[r]
                out[i] = TokenScores(
                    target=tgt[r][m].cpu().numpy().astype(np.int64),
                    logp=lp[r][m].double().cpu().numpy(),
                    argmax=am[r][m].cpu().numpy().astype(np.int64),
                    mu=mu[r][m].double().cpu().numpy() if stats else None,
                    sigma=sd[r][m].double().cpu().numpy() if stats else None,
                )
    return out  # type: ignore[return-value]


def score_tokens(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], fmt: str = "qa",
                 batch_size: int = 16, engine: Any = None, stats: bool = False,
                 max_len: int | None = None, policy: Any = None) -> list[TokenScores]:
    """Per-token scores of the answer tokens (+ EOS) of each ``(question, answer)`` pair."""
    if policy is not None:
        pairs = list(zip(policy_questions(policy, [q for q, _ in pairs], fmt), [a for _, a in pairs]))
    enc = encode_pairs(tokenizer, pairs, fmt, max_len)
    return score_encoded(model, enc, pad_id=pad_id_of(tokenizer), batch_size=batch_size, engine=engine, stats=stats,
                         policy=policy, tokenizer=tokenizer)


def answer_logprobs(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], fmt: str = "qa",
                    batch_size: int = 16, engine: Any = None,
                    max_len: int | None = None, policy: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Σ log p(answer | prompt) per pair and its token count (answer tokens + EOS).

    Returns:
        ``(sum_logprob float64 (n,), n_tokens int64 (n,))``; the length-normalised probability of TOFU is
        ``exp(sum / n_tokens)``. Values do not depend on the batch composition (right padding, length masks).
    """
    if policy is not None:
        pairs = list(zip(policy_questions(policy, [q for q, _ in pairs], fmt), [a for _, a in pairs]))
    enc = encode_pairs(tokenizer, pairs, fmt, max_len)
    s = np.zeros(len(enc), dtype=np.float64)
    n = np.zeros(len(enc), dtype=np.int64)
    dev = model_device(model, engine)
    pad = pad_id_of(tokenizer)
    with eval_mode(model):
        for idx in _batches_by_length([len(e) for e in enc], batch_size):
            batch = _to(collate([enc[i] for i in idx], pad), dev)
            if policy is None:
                lp, cnt = sequence_logprobs(model, batch)
            else:
                tok, mask = token_logprobs_from_logits(_policy_logits(model, batch, policy, tokenizer),
                                                       batch["labels"])
                lp, cnt = tok.sum(1), mask.sum(1)
            s[idx] = lp.double().cpu().numpy()
            n[idx] = cnt.cpu().numpy()
    return s, n


def token_scores(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 16, engine: Any = None,
                 max_len: int | None = None, policy: Any = None) -> list[TokenScores]:
    """Per-token scores (with μ, σ) of every token of each text after BOS (no EOS appended): MIA inputs."""
    heads = policy_questions(policy, [""] * len(texts), "raw") if policy is not None else [""] * len(texts)
    enc = [encode_qa(tokenizer, h, t, "raw", max_len, add_eos=False) for h, t in zip(heads, texts)]
    return score_encoded(model, enc, pad_id=pad_id_of(tokenizer), batch_size=batch_size, engine=engine, stats=True,
                         policy=policy, tokenizer=tokenizer)


def token_logprobs(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 16, engine: Any = None,
                   max_len: int | None = None) -> list[np.ndarray]:
    """log p of every token of each text given its prefix (float64 arrays; the first token is scored given BOS when
    the tokenizer adds one, else it is the context and not scored)."""
    enc = [encode_qa(tokenizer, "", t, "raw", max_len, add_eos=False) for t in texts]
    return [s.logp for s in score_encoded(model, enc, pad_id=pad_id_of(tokenizer), batch_size=batch_size,
                                          engine=engine)]


def generate(model: nn.Module, tokenizer: Any, prompts: Sequence[str], fmt: str = "qa", max_new_tokens: int = 32,
             batch_size: int = 16, engine: Any = None, policy: Any = None, count_tokens: bool = False,
             max_prompt_tokens: int | None = None) -> list[str] | tuple[list[str], int]:
    """Greedy continuations of ``prompts`` (each formatted by ``fmt``; ``raw`` = verbatim).

    Batches are left-padded with attention masks and position ids from lengths; every row's new tokens start right
    after its own prompt (the same column for all rows under left padding), and are cut at the first EOS
    (KNOWN_FAULTS C58). Returns decoded strings without special tokens, stripped of surrounding whitespace.

    ``policy``: an inference-time policy (:mod:`unlearnkit.models.policy`), attached to the model for the whole call
    (``attach``): its guard answers some prompts itself (the model is not run on them), the other prompts are
    rewritten (``rewrite_questions``), its forward hooks and logits processor act on every batch and decoding step,
    and ``revise`` may replace the model's answers. ``count_tokens``: also return the number of tokens generated by
    the model (for per-token cost). ``max_prompt_tokens``: prompts longer than this keep their last tokens (and
    BOS), see :func:`~unlearnkit.llm.tokenize.keep_tail`; None = fed whole.
    """
    attach = getattr(policy, "attach", None) if policy is not None else None
    with attach(model, tokenizer, fmt) if attach is not None else contextlib.nullcontext():
        answers: list[str | None] = list(policy.guard(list(prompts))) if policy is not None else [None] * len(prompts)
        ask = [i for i, a in enumerate(answers) if a is None]
        asked = policy_questions(policy, [prompts[i] for i in ask], fmt)
        ids = generate_ids(model, tokenizer, asked, fmt, max_new_tokens, batch_size, engine,
                           max_prompt_tokens, policy=policy) if ask else []
        texts = [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
        revise = getattr(policy, "revise", None) if policy is not None else None
        if revise is not None and ask:
            texts = [str(t) for t in revise([prompts[i] for i in ask], texts)]
        for i, t in zip(ask, texts):
            answers[i] = t
    out = [str(a) for a in answers]
    return (out, sum(len(x) for x in ids)) if count_tokens else out


def generate_ids(model: nn.Module, tokenizer: Any, prompts: Sequence[str], fmt: str = "qa", max_new_tokens: int = 32,
                 batch_size: int = 16, engine: Any = None, max_prompt_tokens: int | None = None,
                 policy: Any = None) -> list[list[int]]:
    """Token ids of greedy continuations (EOS and what follows removed); see :func:`generate` (``policy``: its
    logits processor acts at every step; its guard is :func:`generate`'s)."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    processor = policy.logits_processor(tokenizer) if policy is not None else None
    extra: dict[str, Any] = {}
    if processor is not None:
        from transformers import LogitsProcessorList

        extra["logits_processor"] = LogitsProcessorList([processor])
    enc = [encode_prompt(tokenizer, p, fmt) for p in prompts]
    if max_prompt_tokens is not None:
        bos = getattr(tokenizer, "bos_token_id", None)
        enc = [keep_tail(e, max_prompt_tokens, bos)[0] for e in enc]
    enc = [Encoded(tuple(e), (IGNORE_INDEX,) * len(e), len(e)) for e in enc]
    pad, eos = pad_id_of(tokenizer), tokenizer.eos_token_id
    dev = model_device(model, engine)
    out: list[list[int] | None] = [None] * len(enc)
    with eval_mode(model):
        for idx in _batches_by_length([len(e) for e in enc], batch_size):
            batch = _to(collate([enc[i] for i in idx], pad, padding_side="left"), dev)
            t0 = batch["input_ids"].shape[1]
            hooks = getattr(policy, "forward_hooks", None) if policy is not None else None
            with hooks(model, tokenizer, batch) if hooks is not None else contextlib.nullcontext():
                gen = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                     pad_token_id=pad, eos_token_id=eos, **extra)
            for r, i in enumerate(idx):
                new = gen[r, t0:].tolist()
                if eos is not None and eos in new:
                    new = new[:new.index(eos)]
                out[i] = new
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------------
# training


class SmoothingConfig(Frozen):
    """Smoothness-enhanced optimisation of the *forget* loss (Fan et al. 2025, "Towards LLM Unlearning Resilient to
    Relearning Attacks: A Sharpness-Aware Minimization Perspective and Beyond", arXiv:2502.05374; reference code
    OPTML-Group/Unlearn-Smooth ``sam_iterative.py``). Each optimizer step of :func:`optimize` then computes:

    * ``sam`` — g₀ = ∇ℓ_f(θ) over the window; ε = ρ·g₀/‖g₀‖; the forget gradient is taken at θ + ε (the
      worst case in a ρ-ball, Foret et al. 2021), the retain gradient at θ.
    * ``rs`` — randomized smoothing: the forget gradient is the mean of ∇ℓ_f(θ + δ_s) over ``samples`` draws
      δ_s ~ N(0, σ²I) (seeded by the run seed, the step and s; the same on every process).
    * ``gnp`` — gradient-norm penalty ℓ_f + λ‖∇ℓ_f‖ by its finite-difference gradient (Zhao et al. 2022,
      arXiv:2202.03599): (1 − α)·g₀ + α·∇ℓ_f(θ + ρ·g₀/‖g₀‖) with α = λ / ρ (requires λ ≤ ρ).
    * ``averaging`` (with any of the above or alone) — weight averaging of the iterates: ``ema`` θ̄ ← d·θ̄ +
      (1 − d)·θ after every step, ``uniform`` the running mean of the iterates from step ⌈``average_from``·T⌉ on; the
      model ends with θ̄.

    "Forget loss" is the part a method marks as such (the ``micro_parts`` of :func:`optimize`); a method that does not
    split its loss (RMU) is smoothed as a whole. Every pass sums gradients over the global window as a plain step does
    (one all-reduce per pass with several processes), so the equivalence of process counts at equal effective batch
    (KNOWN_FAULTS C15) holds. Cost per step: ``sam`` / ``gnp`` 2 forget passes, ``rs`` ``samples`` passes, plus
    the retain pass; memory: one copy of the trainable tensors (the weights are restored exactly after a perturbed
    pass) and, with averaging, their running mean. Not supported with ``sharding`` or fp16 (ConfigError).
    """

    kind: Literal["none", "sam", "rs", "gnp"] = Field("none", description="forget-loss smoothing")
    rho: float = Field(0.01, gt=0, description="SAM radius ρ / GNP finite-difference step (parameter units)")
    sigma: float = Field(1e-3, gt=0, description="RS noise standard deviation")
    samples: int = Field(1, ge=1, le=64, description="RS noise draws per step")
    lam: float = Field(0.005, gt=0, description="GNP penalty weight λ (α = λ / ρ ≤ 1)")
    averaging: Literal["none", "ema", "uniform"] = Field("none", description="weight averaging of the iterates")
    ema_decay: float = Field(0.9, gt=0, lt=1)
    average_from: float = Field(0.0, ge=0, lt=1, description="uniform: fraction of the steps after which the "
                                "iterates are averaged")

    @model_validator(mode="after")
    def _check(self) -> SmoothingConfig:
        if self.kind == "gnp" and self.lam > self.rho:
            raise ValueError(f"gnp needs lam ≤ rho (α = lam / rho ≤ 1), got lam {self.lam} > rho {self.rho}")
        return self

    @property
    def active(self) -> bool:
        return self.kind != "none" or self.averaging != "none"


class LMTrainConfig(Frozen):
    """A causal-LM training recipe (θ_o, θ_r, and the optimisation part of LLM unlearners).

    Defaults follow open-unlearning's ``configs/trainer/finetune.yaml`` (AdamW, lr 1e-5, 10 epochs, 8 per device × 4
    accumulation, weight decay 0); tiny from-scratch models need a larger lr (≈1e-3) and more epochs.

    The loss of a window of ``batch_size · grad_accum`` examples is the mean over its examples of each example's
    mean NLL per answer token; a trailing partial window is stepped and normalised by its own example count
    (KNOWN_FAULTS C17). ``effective_batch``, if declared, must equal ``batch_size · grad_accum · world_size`` (C16),
    where the world size is the number of processes the run was launched with (``accelerate launch`` / ``torchrun``;
    :mod:`unlearnkit.engine.distributed`); a declared ``world_size`` must equal it too.

    Precision and sharding run on Hugging Face accelerate (:func:`unlearnkit.engine.distributed.make_accelerator`):
    ``mixed_precision`` ``bf16`` autocasts the training forwards to bfloat16 (CPU or GPU; weights, gradients and
    optimizer state stay in the model's dtype), ``fp16`` to float16 with dynamic loss scaling (GPU only: a
    ConfigError on a CPU). ``sharding`` passes FSDP2 or DeepSpeed ZeRO settings to accelerate's plugins (GPUs, ≥ 2
    processes; refused elsewhere with a ConfigError).
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1, description="examples per micro-batch (per device)")
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step")
    world_size: int | None = Field(None, ge=1, description="processes the run must be launched with (checked); "
                                   "None = as launched")
    effective_batch: int | None = Field(None, ge=1, description="declared examples per optimizer step (checked)")
    lr: float = Field(1e-5, gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of all steps with linear warm-up")
    grad_clip: float | None = Field(None, gt=0, description="max global L2 norm of gradients")
    max_len: int | None = Field(512, ge=2, description="tokens per example (truncation)")
    gradient_checkpointing: bool = Field(False, description="HF activation checkpointing (re-entrant) during training")
    mixed_precision: MixedPrecision = Field("no", description="autocast of training forwards through accelerate: "
                                            "no (the model's dtype) | bf16 | fp16 (GPU only, with loss scaling)")
    sharding: dict[str, Any] | str | None = Field(
        None, description="FSDP2 / DeepSpeed ZeRO through accelerate's plugins: {fsdp: {fsdp_version: 2, ...}}, "
        "{deepspeed: {zero_stage: 2, ...}} or the path of an accelerate config YAML; GPUs and ≥ 2 processes only")
    smoothing: SmoothingConfig | None = Field(None, description="SAM / randomized smoothing / gradient-norm penalty / "
                                              "weight averaging of the forget loss (SmoothingConfig)")

    @field_validator("sharding")
    @classmethod
    def _sharding(cls, v: Any) -> Any:
        load_sharding(v)  # ConfigError (a ValueError) on an unreadable file or unknown plugin fields
        return v

    @model_validator(mode="after")
    def _check_smoothing(self) -> LMTrainConfig:
        if self.smoothing is not None and self.smoothing.active:
            if self.sharding is not None:
                raise ValueError("smoothing (SAM / RS / GNP / weight averaging) is not supported with sharding")
            if self.mixed_precision == "fp16":
                raise ValueError("smoothing is not supported with fp16 loss scaling; use mixed_precision bf16 or no")
        return self

    @model_validator(mode="after")
    def _check_batch(self) -> LMTrainConfig:
        if self.world_size is None:
            return self  # checked against the launch's world size when training starts
        eff = self.batch_size * self.grad_accum * self.world_size
        if self.effective_batch is not None and self.effective_batch != eff:
            raise ValueError(
                f"declared effective_batch {self.effective_batch} ≠ batch_size × grad_accum × world_size = "
                f"{self.batch_size} × {self.grad_accum} × {self.world_size} = {eff}; fix one of them")
        return self

    @property
    def window(self) -> int:
        """Examples per optimizer step in one process (``batch_size · grad_accum``)."""
        return self.batch_size * self.grad_accum

    def global_window(self, world_size: int) -> int:
        """Examples per optimizer step over all processes, checked against the declared values.

        Raises:
            ConfigError: a declared ``world_size`` or ``effective_batch`` differs from what the launch executes.
        """
        if self.world_size is not None and self.world_size != world_size:
            raise ConfigError(f"the recipe declares world_size {self.world_size} but the run was launched with "
                              f"{world_size} process(es); launch with {self.world_size} or change world_size")
        eff = self.window * world_size
        if self.effective_batch is not None and self.effective_batch != eff:
            raise ConfigError(
                f"declared effective_batch {self.effective_batch} ≠ batch_size × grad_accum × processes = "
                f"{self.batch_size} × {self.grad_accum} × {world_size} = {eff}; fix batch_size / grad_accum for this "
                "number of processes")
        return eff

    def steps_per_epoch(self, n: int, world_size: int = 1) -> int:
        return math.ceil(n / (self.window * world_size))


@dataclass
class LMFitResult:
    """Outcome of :func:`train_lm` / :func:`optimize`.

    Attributes:
        seconds: wall-clock time (seconds).  steps: optimizer steps.  seen_ids: sorted int64 ids that contributed.
        losses: mean per-example loss of each epoch.  samples: example-gradients computed.
        effective_batch: examples per optimizer step actually executed (``batch_size · grad_accum · world_size``).
        epochs: epochs completed as a float (steps / steps per epoch).
        mixed_precision: the autocast precision the run used (``no`` | ``bf16`` | ``fp16``).
        skipped_steps: fp16 steps skipped by the loss scaler (gradient overflow; 0 otherwise).
    """

    seconds: float
    steps: int
    seen_ids: np.ndarray
    losses: list[float] = field(default_factory=list)
    samples: int = 0
    effective_batch: int = 0
    epochs: float = 0.0
    step_losses: list[float] = field(default_factory=list)
    memory_estimate: dict[str, int] = field(default_factory=dict)
    mixed_precision: str = "no"
    skipped_steps: int = 0


def memory_estimate(model: nn.Module, trainable: Sequence[nn.Parameter], recipe: LMTrainConfig,
                    reference_bytes: int = 0) -> dict[str, int]:
    """Bytes that training will hold besides activations (KNOWN_FAULTS C53: printed before training).

    ``weights`` = unique parameter and buffer storage of ``model``; ``gradients`` = one gradient per trainable
    tensor; ``optimizer`` = Adam/AdamW's two moment tensors per trainable value (SGD without momentum: 0);
    ``reference`` = a frozen reference copy on the same device (0 when none, or offloaded); ``total`` their sum.
    Activations depend on batch × sequence length and are not included.
    """
    grads = sum(p.numel() * p.element_size() for p in trainable)
    opt = 2 * grads if recipe.optimizer in ("adam", "adamw") else 0
    est = {"weights": parameter_bytes(model), "gradients": grads, "optimizer": opt, "reference": int(reference_bytes)}
    est["total"] = sum(est.values())
    return est


def _optimizer(params: list[nn.Parameter], recipe: LMTrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ConfigError("no trainable parameters: every parameter has requires_grad=False")
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, recipe: LMTrainConfig, total: int):
    if recipe.scheduler == "none" and recipe.warmup_ratio == 0:
        return None
    warm = int(recipe.warmup_ratio * total)

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if recipe.scheduler == "none":
            return 1.0
        frac = (s - warm) / max(1, total - warm)
        return max(0.0, 1 - frac) if recipe.scheduler == "linear" else 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def check_gradients(named_params: Sequence[tuple[str, nn.Parameter]], where: str = "training") -> None:
    """Raise if a trainable tensor got no gradient after the first backward pass (KNOWN_FAULTS C09).

    A tensor whose ``.grad`` is None, or exactly zero everywhere, means the gradient path to it is cut (e.g.
    re-entrant activation checkpointing with inputs that do not require grad: adapters silently never train).
    Exception: a LoRA ``lora_A`` matrix gets an exactly zero gradient while its ``lora_B`` partner is still zero
    (their product's gradient w.r.t. A is Bᵀ·g = 0 at initialisation); its B must then have a non-zero gradient.
    Sharded (FSDP2 DTensor) gradients and weights are gathered first (every rank calls this together).

    Raises:
        MethodError: naming the tensors and the usual cause.
    """
    def full(t: torch.Tensor) -> torch.Tensor:
        return t.full_tensor() if hasattr(t, "full_tensor") else t

    by_name = dict(named_params)
    bad = []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        g = p.grad
        if g is None:
            bad.append(f"{name} (no gradient)")
        elif not bool(torch.any(full(g) != 0)):
            if "lora_A" in name:
                partner = by_name.get(name.replace("lora_A", "lora_B"))
                if partner is not None and not bool(torch.any(full(partner.detach()) != 0)):
                    continue
            bad.append(f"{name} (gradient exactly zero)")
    if bad:
        raise MethodError(
            f"{where}: {len(bad)} trainable tensors got no gradient in the first step, e.g. {bad[:4]}; the gradient "
            "path is cut (with re-entrant gradient checkpointing call model.enable_input_require_grads(), or use "
            "use_reentrant=False) or these parameters do not take part in the loss")


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` unless Hugging Face dispatched it over several devices (``device_map``: its
    ``hf_device_map`` names more than one device; accelerate's hooks then move activations between them)."""
    dm = getattr(model, "hf_device_map", None)
    if isinstance(dm, dict) and len({str(v) for v in dm.values()}) > 1:
        return model
    return model.to(device)


MicroLoss = Callable[[nn.Module, np.ndarray, np.ndarray, int], torch.Tensor]
"""``micro_loss(module, item_positions, global_positions, epoch) -> sum over the micro-batch of per-example losses``
(scalar). ``module`` is the model being trained: the caller's model itself, or under ``sharding`` its sharded
working copy (so a micro-loss must run its forwards on ``module``, never on a model captured elsewhere)."""


MicroParts = Callable[[nn.Module, np.ndarray, np.ndarray, int, str], "torch.Tensor | None"]
"""``micro_parts(module, item_positions, global_positions, epoch, part)``: the ``"forget"`` or ``"retain"`` addend of
a method's micro-loss (sums over the micro-batch); ``"retain"`` may be None (no retain term)."""


def rank_micro_batches(gpos: np.ndarray, rank: int, world: int, batch_size: int, *,
                       pad: bool = False) -> list[np.ndarray]:
    """This rank's micro-batches of a window's (length-sorted) global positions: positions ``rank, rank + W, …``
    in chunks of ``batch_size``.

    ``pad``: every rank returns as many micro-batches as rank 0 (the rank with the most examples), the missing ones
    empty — sharded engines (FSDP2, DeepSpeed) need every rank in every forward/backward collective.

    Returns:
        list of int64 arrays (global positions); with ``pad`` its length is ``ceil(ceil(len(gpos) / world) /
        batch_size)`` on every rank.
    """
    mine = np.asarray(gpos)[rank::world]
    out = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if pad:
        n0 = math.ceil(math.ceil(len(gpos) / world) / batch_size)
        out += [mine[:0]] * (n0 - len(out))
    return out


def optimize(
    model: nn.Module,
    *,
    n_items: int,
    micro_loss: MicroLoss,
    recipe: LMTrainConfig,
    engine: Any,
    seed: int,
    ids: np.ndarray | None = None,
    lengths: Sequence[int] | None = None,
    params: Sequence[tuple[str, nn.Parameter]] | None = None,
    desc: str = "train",
    check_grads: bool = True,
    reference_bytes: int = 0,
    micro_parts: MicroParts | None = None,
) -> LMFitResult:
    """The optimisation loop shared by :func:`train_lm` and the LLM unlearners, on a Hugging Face
    :class:`accelerate.Accelerator` (precision, loss scaling, sharding;
    :func:`~unlearnkit.engine.distributed.make_accelerator`).

    Each epoch visits the ``n_items`` examples in the order ``permutation(seed, epoch)`` (a function of the seed and
    the epoch only, so retain pairings derived from (seed, epoch, global index) do not depend on the number of
    processes; KNOWN_FAULTS C02/C15), in windows of ``batch_size · grad_accum · world_size`` examples, sorted by
    ``lengths`` inside the window to cut padding. The window's loss is ``Σ micro_loss / |window|``; a trailing
    partial window is stepped with its own count (C17). Forwards run under ``accelerator.autocast()``
    (``recipe.mixed_precision``), backwards through ``accelerator.backward`` (fp16 loss scaling), clipping through
    ``accelerator.clip_grad_norm_`` (unscaled first); an fp16 step skipped for overflow does not advance the lr
    schedule.

    Several processes (``accelerate launch`` / ``torchrun``; ``engine.dist``): rank r takes positions r, r + W, …
    of the sorted window, in micro-batches of ``batch_size``; each rank's loss is divided by the *global* window
    size and the window's gradients are summed over ranks before the step (:meth:`DistState.sum_gradients`, on
    ``accelerate.utils.reduce``), so every rank takes the step a one-process run with the same effective batch takes
    (C15). Ranks must hold the same initial parameters (same seeds) and call ``optimize`` together.

    Sharded (``recipe.sharding``: FSDP2 / DeepSpeed ZeRO; GPUs only, not yet run on hardware by this project): a
    working copy of ``model`` goes through ``accelerator.prepare`` with the optimizer; the engine averages gradients
    over ranks, so each micro-batch's loss is multiplied by ``world / |window|`` (the average is again the global
    window mean), every rank runs as many micro-batches as rank 0 (a rank without examples runs a zero-weighted
    one), gradient synchronisation waits for a window's last micro-batch (FSDP2 ``no_sync``, DeepSpeed's
    accumulation boundary), a failure or NaN on one rank is shared before each backward, and the trained weights are
    gathered back into ``model`` at the end (DeepSpeed ZeRO-3 needs ``zero3_save_16bit_model: true``; DeepSpeed keeps
    16-bit weights in bf16/fp16 runs). Extra memory: one unsharded copy of the model until it is sharded.

    Args:
        micro_loss: ``micro_loss(module, positions, global_positions, epoch)`` returns the *sum* over the
            micro-batch of per-example losses (differentiable scalar) computed with ``module``.
        ids: int64 (n_items,) sample ids for ``seen_ids`` (default positions).
        params: named trainable parameters of ``model`` (default: all with requires_grad).
        check_grads: run :func:`check_gradients` after the first backward pass (not under DeepSpeed, whose engine
            owns the gradients).
        reference_bytes: bytes of a frozen reference model held on the training device (for the memory estimate,
            logged before the first step and returned in ``LMFitResult.memory_estimate``).
        micro_parts: ``micro_parts(module, positions, global_positions, epoch, part)`` with ``part`` ``"forget"`` or
            ``"retain"``: the two addends of ``micro_loss`` (``"retain"`` may return None), for ``recipe.smoothing``
            (:class:`SmoothingConfig`), which smooths the forget part only; without it the whole loss is smoothed.

    Raises:
        DivergenceError: a NaN / inf loss (before it updates the weights).  MethodError: C09 gradient check; a
            failure on another rank.
        ConfigError: no trainable parameters; a declared ``world_size`` / ``effective_batch`` that the launch does
            not execute (C16); a precision or sharding the device cannot run (fp16 on a CPU, sharding on a CPU or
            in one process).
    """
    if n_items == 0:
        raise ConfigError(f"{desc}: nothing to train on (0 examples)")
    dist = getattr(engine, "dist", None) or DistState()
    world, rank = dist.world_size, dist.rank
    window = recipe.global_window(world)
    engine.setup()
    acc = make_accelerator(recipe.mixed_precision, recipe.sharding, device=engine.device, world_size=world,
                           batch_size=recipe.batch_size, grad_clip=recipe.grad_clip)
    shard_kind = load_sharding(recipe.sharding)
    sharded = shard_kind[0] if shard_kind else None
    place_model(model, engine.device)
    named = list(params) if params is not None else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    est = memory_estimate(model, [p for _, p in named], recipe, reference_bytes)
    mb = {k: v / 2**20 for k, v in est.items()}
    log.info("%s: memory estimate %.1f MB = weights %.1f + gradients %.1f + optimizer %.1f + reference %.1f "
             "(activations not included)%s", desc, mb["total"], mb["weights"], mb["gradients"], mb["optimizer"],
             mb["reference"], f"; mixed precision {recipe.mixed_precision}" if recipe.mixed_precision != "no" else "")
    work = model
    if sharded:  # train a copy that accelerate shards; ``model`` stays a plain module and gets the result
        import copy

        work = copy.deepcopy(model)
        by_name = dict(work.named_parameters())
        named = [(n, by_name[n]) for n, _ in named]
    trainable = [p for _, p in named]
    smooth = recipe.smoothing if recipe.smoothing is not None and recipe.smoothing.active else None
    if smooth is not None and sharded:  # pragma: no cover - refused by LMTrainConfig
        raise ConfigError("smoothing is not supported with sharding")
    opt = _optimizer(trainable, recipe)
    spe = recipe.steps_per_epoch(n_items, world)
    sched = _scheduler(opt, recipe, spe * recipe.epochs)
    if sharded:
        prepared, opt = acc.prepare(work, opt)
        if sharded == "fsdp":  # FSDP2 replaced the parameters by sharded ones (and in the optimizer)
            by_name = dict(work.named_parameters())
            named = [(n, by_name[n]) for n, _ in named]
            trainable = [p for _, p in named]
    else:
        prepared = work
        opt = acc.prepare_optimizer(opt, device_placement=False)
    ids = np.arange(n_items, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    lens = np.asarray(lengths) if lengths is not None else None
    gc_on = False
    if recipe.gradient_checkpointing and hasattr(work, "activation_checkpointing_enable"):  # transformers ≥ 5.x
        work.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    elif recipe.gradient_checkpointing and hasattr(work, "gradient_checkpointing_enable"):
        work.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    if recipe.gradient_checkpointing:
        if hasattr(work, "enable_input_require_grads"):
            work.enable_input_require_grads()  # the C09 fix: re-entrant checkpointing needs inputs with grad
        gc_on = True
    work.train()
    rng_ctx: Any = contextlib.nullcontext()
    if world > 1:  # each rank its own dropout stream (the same stream would give every rank the same masks)
        devs = [engine.device] if engine.device.type == "cuda" else []
        rng_ctx = torch.random.fork_rng(devices=devs)
    seen = np.zeros(n_items, dtype=bool)
    averager = _WeightAverage(smooth) if smooth is not None and smooth.averaging != "none" else None
    losses: list[float] = []
    step_losses: list[float] = []
    step, samples, skipped = 0, 0, 0
    t0 = time.perf_counter()
    try:
        with rng_ctx, engine.progress(recipe.epochs * spe, desc) as advance:
            if world > 1:
                torch.manual_seed((seed * 1_000_003 + rank) % 2**63)
            for epoch in range(recipe.epochs):
                order = np.random.default_rng([seed, epoch]).permutation(n_items)
                ep_total = 0.0
                for w0 in range(0, n_items, window):
                    gpos = np.arange(w0, min(w0 + window, n_items))
                    if lens is not None:
                        gpos = gpos[np.argsort(lens[order[gpos]], kind="stable")]
                    count = len(gpos)
                    where = f"{desc} (epoch {epoch})"
                    opt.zero_grad(set_to_none=True)
                    if sharded:
                        wl = _sharded_window(acc, prepared, work, micro_loss, order, gpos, epoch, rank, world,
                                             recipe.batch_size, engine, step, where, sharded)
                    elif smooth is not None and smooth.kind != "none":
                        wl = _smoothed_window(acc, work, micro_loss, micro_parts, order, gpos, epoch, rank, world,
                                              recipe.batch_size, engine, step, where, dist, trainable, smooth, seed)
                    else:
                        wl = _window(acc, work, micro_loss, order, gpos, epoch, rank, world, recipe.batch_size,
                                     engine, step, where, dist, trainable)
                    if step == 0 and check_grads and sharded != "deepspeed":
                        check_gradients(named, desc)
                    if recipe.grad_clip is not None and sharded != "deepspeed":  # DeepSpeed clips in its step
                        acc.clip_grad_norm_(trainable, recipe.grad_clip)
                    opt.step()  # DeepSpeed: a no-op, its engine stepped at the window's last backward
                    if acc.optimizer_step_was_skipped:  # fp16 overflow: no update, the lr schedule waits
                        skipped += 1
                    elif sched is not None:
                        sched.step()
                    if smooth is not None and smooth.averaging != "none":
                        averager.update(trainable, step, recipe.epochs * spe)
                    seen[order[gpos]] = True
                    samples += count
                    ep_total += wl
                    step_losses.append(wl / count)
                    step += 1
                    advance(1, info=lambda: f"loss {step_losses[-1]:.4f}")
                    if engine is not None and hasattr(engine, "after_optimizer_step") and rank == 0:
                        # the step event (and, while a method unlearns, its curve hook) — on the model being trained
                        engine.after_optimizer_step(work, loss=wl / count, lr=float(opt.param_groups[0]["lr"]),
                                                    epoch=epoch, desc=desc, examples=count)
                losses.append(ep_total / n_items)
        if averager is not None:
            averager.apply(trainable)
        if sharded:
            _gather_into(acc, prepared, model, rank)
    finally:
        opt.zero_grad(set_to_none=True)
        if gc_on:
            off = getattr(work, "activation_checkpointing_disable", None) or getattr(
                work, "gradient_checkpointing_disable", None)
            if off is not None:
                off()
            if hasattr(work, "disable_input_require_grads"):
                work.disable_input_require_grads()
        work.eval()
        model.eval()
    if skipped:
        log.warning("%s: %d of %d fp16 steps skipped by the loss scaler (gradient overflow)", desc, skipped, step)
    return LMFitResult(time.perf_counter() - t0, step, np.sort(ids[seen]), losses, samples,
                       window, step / spe, step_losses, est, recipe.mixed_precision, skipped)


def _window(acc: Any, work: nn.Module, micro_loss: MicroLoss, order: np.ndarray, gpos: np.ndarray, epoch: int,
            rank: int, world: int, batch_size: int, engine: Any, step: int, where: str, dist: Any,
            trainable: list[nn.Parameter]) -> float:
    """One window of data-parallel training (the model is not wrapped): gradients of ``Σ loss / |window|`` summed
    over ranks. Returns the window's loss sum over all ranks."""
    count = len(gpos)
    wl = 0.0
    failure: BaseException | None = None
    for g in rank_micro_batches(gpos, rank, world, batch_size):
        if world == 1:  # one process: check before backward, so a NaN never updates the weights
            with acc.autocast():
                loss = micro_loss(work, order[g], g, epoch)
            lv = engine.check_finite(loss, step=step, desc=where)
            acc.backward(loss / count)
            wl += lv
            continue
        try:  # several: a rank's failure is shared with the others in the next all-reduce
            with acc.autocast():
                loss = micro_loss(work, order[g], g, epoch)
            acc.backward(loss / count)
            wl += float(loss.detach())
        except Exception as err:  # noqa: BLE001 - re-raised on this rank by sum_gradients
            failure = err
            break
    if world > 1:
        wl = dist.sum_gradients(trainable, wl, failure)
        engine.check_finite(torch.tensor(wl), step=step, desc=where)
    return wl


def _grads(trainable: list[nn.Parameter]) -> list[torch.Tensor]:
    """Copies of the current gradients (zeros where a tensor has none)."""
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in trainable]


def _set_grads(trainable: list[nn.Parameter], grads: list[torch.Tensor] | None) -> None:
    for p, g in zip(trainable, grads or [None] * len(trainable)):
        p.grad = None if g is None else g.clone()


def _smoothed_window(acc: Any, work: nn.Module, micro_loss: MicroLoss, micro_parts: MicroParts | None,
                     order: np.ndarray, gpos: np.ndarray, epoch: int, rank: int, world: int, batch_size: int,
                     engine: Any, step: int, where: str, dist: Any, trainable: list[nn.Parameter],
                     smooth: SmoothingConfig, seed: int) -> float:
    """One window with a smoothed forget gradient (:class:`SmoothingConfig`): every pass is a plain :func:`_window`
    (global-window normalisation, summed over ranks), so perturbations computed from summed gradients are the same
    on every rank. Leaves the combined gradient in ``.grad``; returns the window's loss sum (forget loss at the
    perturbed point for SAM, the mean over draws for RS, plus the retain loss)."""
    if micro_parts is None:
        forget, retain = micro_loss, None
    else:
        def forget(m: nn.Module, p: np.ndarray, g: np.ndarray, e: int) -> torch.Tensor:
            return micro_parts(m, p, g, e, "forget")

        def retain(m: nn.Module, p: np.ndarray, g: np.ndarray, e: int) -> torch.Tensor:
            out = micro_parts(m, p, g, e, "retain")
            return out if out is not None else torch.zeros((), device=next(m.parameters()).device)

    def run(fn: MicroLoss) -> float:
        return _window(acc, work, fn, order, gpos, epoch, rank, world, batch_size, engine, step, where, dist,
                       trainable)

    wl = 0.0
    if smooth.kind in ("sam", "gnp"):
        run(forget)
        g0 = _grads(trainable)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in g0))
        eps = [g * (smooth.rho / float(norm.clamp_min(1e-12))) for g in g0]
        _set_grads(trainable, None)
        saved = [p.detach().clone() for p in trainable]  # restored exactly (θ + ε − ε is not θ in floating point)
        with torch.no_grad():
            for p, e in zip(trainable, eps):
                p.add_(e.to(p.dtype))
        try:
            wl += run(forget)
        finally:
            with torch.no_grad():
                for p, v in zip(trainable, saved):
                    p.copy_(v)
        g1 = _grads(trainable)
        if smooth.kind == "gnp":
            a = smooth.lam / smooth.rho
            g1 = [(1 - a) * x + a * y for x, y in zip(g0, g1)]
    else:  # randomized smoothing
        acc_g = [torch.zeros_like(p) for p in trainable]
        for s in range(smooth.samples):
            gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, s, 0x525]).integers(2**62)))
            noise = [(torch.randn(p.shape, generator=gen, dtype=torch.float32) * smooth.sigma).to(p.device, p.dtype)
                     for p in trainable]
            _set_grads(trainable, None)
            saved = [p.detach().clone() for p in trainable]
            with torch.no_grad():
                for p, d in zip(trainable, noise):
                    p.add_(d)
            try:
                wl += run(forget) / smooth.samples
            finally:
                with torch.no_grad():
                    for p, v in zip(trainable, saved):
                        p.copy_(v)
            for a_, g in zip(acc_g, _grads(trainable)):
                a_.add_(g / smooth.samples)
        g1 = acc_g
    _set_grads(trainable, None)
    if retain is not None:
        wl += run(retain)
    for p, g in zip(trainable, g1):
        p.grad = g if p.grad is None else p.grad + g
    return wl


class _WeightAverage:
    """Running average of the trainable tensors (:class:`SmoothingConfig` ``averaging``), kept in float32."""

    def __init__(self, cfg: SmoothingConfig) -> None:
        self.cfg = cfg
        self.avg: list[torch.Tensor] | None = None
        self.n = 0

    @torch.no_grad()
    def update(self, params: list[nn.Parameter], step: int, total: int) -> None:
        cur = [p.detach().float().clone() for p in params]
        if self.cfg.averaging == "ema":
            if self.avg is None:
                self.avg = cur
            else:
                d = self.cfg.ema_decay
                for a, c in zip(self.avg, cur):
                    a.mul_(d).add_(c, alpha=1 - d)
            self.n += 1
            return
        if step < math.ceil(self.cfg.average_from * total):
            return
        self.n += 1
        if self.avg is None:
            self.avg = cur
        else:
            for a, c in zip(self.avg, cur):
                a.add_(c - a, alpha=1.0 / self.n)

    @torch.no_grad()
    def apply(self, params: list[nn.Parameter]) -> None:
        if self.avg is None:
            return
        for p, a in zip(params, self.avg):
            p.copy_(a.to(p.dtype))


def _sharded_window(acc: Any, prepared: Any, work: nn.Module, micro_loss: MicroLoss, order: np.ndarray,
                    gpos: np.ndarray, epoch: int, rank: int, world: int, batch_size: int, engine: Any, step: int,
                    where: str, kind: str) -> float:
    """One window under FSDP2 / DeepSpeed (the engine averages over ranks): see :func:`optimize`. Returns the
    window's loss sum over all ranks."""
    from accelerate.utils import reduce

    from unlearnkit.engine.distributed import raise_if_failed

    count = len(gpos)
    wl = 0.0
    slots = rank_micro_batches(gpos, rank, world, batch_size, pad=True)
    for k, g in enumerate(slots):
        last = k == len(slots) - 1
        acc.gradient_state._set_sync_gradients(last)  # DeepSpeed's accumulation boundary: the window's last backward
        sync = contextlib.nullcontext() if last or kind != "fsdp" else acc.no_sync(prepared)
        use = g if len(g) else gpos[:1]  # a rank without examples runs rank 0's first one with weight 0
        with sync:
            failure: BaseException | None = None
            loss: Any = None
            lv = 0.0
            try:
                with acc.autocast():
                    loss = micro_loss(work, order[use], use, epoch)
                lv = float(loss.detach()) if len(g) else 0.0
            except Exception as err:  # noqa: BLE001 - re-raised below on this rank
                failure = err
            dev = next(work.parameters()).device
            head = reduce(torch.tensor([0.0 if failure else lv, float(2 ** rank) if failure else 0.0],
                                       dtype=torch.float64, device=dev), "sum")
            raise_if_failed(int(head[1].item()), world, failure)
            engine.check_finite(head[0], step=step, desc=where)  # every rank sees the same sum: all stop together
            acc.backward(loss * (world / count) if len(g) else loss * 0.0)
            wl += float(head[0].item())
    acc.gradient_state._set_sync_gradients(True)
    return wl


def _gather_into(acc: Any, prepared: Any, model: nn.Module, rank: int) -> None:
    """Copy the trained weights of a sharded working copy into the plain ``model`` on every rank (accelerate's
    full state dict lands on rank 0; each tensor is then broadcast from it)."""
    from accelerate.utils import broadcast

    full = acc.get_state_dict(prepared)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            buf = full[name].to(t.device, t.dtype) if rank == 0 else torch.empty_like(t)
            t.copy_(broadcast(buf.contiguous(), from_process=0))


def mean_token_nll(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example mean NLL over labelled tokens, float32 (b,) (0 for an example without labelled tokens)."""
    lp, n = sequence_logprobs(model, batch)
    return -lp / n.clamp_min(1)


def train_lm(model: nn.Module, tokenizer: Any, data: Any, recipe: LMTrainConfig, engine: Any, seed: int,
             fmt: str = "qa", desc: str = "train") -> LMFitResult:
    """Train ``model`` in place on ``data`` (a QASet: (question, answer) pairs) with answer-only NLL.

    Returns:
        :class:`LMFitResult` (``seen_ids`` = the QASet ids that contributed a gradient).

    Raises:
        ConfigError: empty data, bad recipe, a precision the device cannot run.  DivergenceError: NaN / inf loss.
    """
    enc = encode_pairs(tokenizer, data.pairs(), fmt, recipe.max_len)
    pad = pad_id_of(tokenizer)
    dev = engine.device

    def micro(module: nn.Module, pos: np.ndarray, gpos: np.ndarray, epoch: int) -> torch.Tensor:
        batch = _to(collate([enc[i] for i in pos], pad), dev)
        return mean_token_nll(module, batch).sum()

    return optimize(model, n_items=len(enc), micro_loss=micro, recipe=recipe, engine=engine, seed=seed,
                    ids=data.ids, lengths=[len(e) for e in enc], desc=desc)
