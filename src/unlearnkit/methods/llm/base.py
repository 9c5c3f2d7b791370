"""Shared machinery of the LLM unlearners: the context that carries the tokenizer and prompt format, the optimisation
config, the reference model policy, forget/retain pairing and the retain regularisers (NLL, KL).

How a method gets what it needs:
    ``method.unlearn(model, forget: QASet, retain: QASet, engine, LLMContext(seed=..., tokenizer=tok, fmt="qa"))``.

Reference model θ_ref = θ_o (NPO, DPO, KL-on-retain, RMU's frozen activations):
    - methods that only need sequence log-probs of fixed data (NPO, DPO, IdkDPO) compute them once before the first
      step with the model itself (= θ_o at that time): no copy, with or without adapters;
    - KL-on-retain with LoRA adapters that are still at their initialisation (every lora_B = 0: the adapters are
      added for unlearning only) uses the adapter-disabled base, computed under ``model.disable_adapter()``: no second
      copy (KNOWN_FAULTS C10 / C53). When θ_o itself is base + *trained* adapters (the LLM track's LoRA fine-tune),
      the adapter-disabled base is the pretrained model, not θ_o, so it is not used
      (:func:`unlearnkit.models.llm.lora_is_identity`);
    - otherwise KL-on-retain needs θ_o's full next-token distributions on freshly drawn retain batches and keeps a
      frozen copy (eval mode, requires_grad False): extra memory = 1 × the model's parameter bytes, recorded in
      ``notes["reference_extra_bytes"]`` and logged before training; ``reference_offload: true`` keeps that copy on
      the CPU (no accelerator memory; each retain batch's reference forward then runs on the host).

Every run logs a memory estimate before its first step (weights, gradients, optimizer state, reference; logger
``unlearnkit``, shown by the CLI) and records it in ``notes["memory_estimate"]`` (bytes).

Training runs in :func:`unlearnkit.llm.lm.optimize` on Hugging Face accelerate: ``mixed_precision`` (bf16 / fp16
autocast, recorded in ``notes["mixed_precision"]``) and ``sharding`` (FSDP2 / DeepSpeed ZeRO, GPUs only) are fields
of :class:`LLMOptimConfig`. A method's micro-loss runs its forwards on the module it is handed (the model, or its
sharded working copy), never on a model captured elsewhere.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.text.qa import QASet
from unlearnkit.engine.distributed import MixedPrecision, load_sharding
from unlearnkit.errors import DataError, MethodError
from unlearnkit.llm.lm import (
    LMFitResult,
    LMTrainConfig,
    SmoothingConfig,
    _to,
    encode_pairs,
    eval_mode,
    forward_logits,
    mean_token_nll,
    optimize,
    place_model,
    sequence_logprobs,
    token_logprobs_from_logits,
)
from unlearnkit.llm.tokenize import IGNORE_INDEX, Encoded, collate, pad_id_of
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult
from unlearnkit.models.llm import is_peft_model, lora_is_identity, parameter_bytes

log = logging.getLogger("unlearnkit")


@dataclass(frozen=True)
class LLMContext(UnlearnContext):
    """:class:`UnlearnContext` plus what LLM methods need.

    Attributes:
        tokenizer: the model's tokenizer (pad id, EOS).
        fmt: prompt format of the QA items (``qa`` | ``chat`` | ``raw``; see ``unlearnkit.llm.tokenize``).
        max_len: tokens per example (truncation), None = no limit.
    """

    tokenizer: Any = None
    fmt: str = "qa"
    max_len: int | None = 512


class LLMOptimConfig(Frozen):
    """Optimisation fields shared by LLM unlearners (units: lr per step, epochs = passes over D_f).

    Defaults follow open-unlearning's TOFU unlearning setup (``configs/trainer/finetune.yaml``: AdamW, lr 1e-5,
    10 epochs, 8 per device × 4 accumulation, weight decay 0; linear decay) with a 10 % warm-up (TOFU warms up for
    one of its epochs). ``effective_batch`` if declared must equal batch_size × grad_accum × the number of processes
    the run was launched with (KNOWN_FAULTS C16; ``batch_size`` is per process).
    Each forget example is paired with one retain example drawn as a function of (seed, epoch, global index).
    ``mixed_precision`` and ``sharding`` run on Hugging Face accelerate as for θ_o's recipe
    (:class:`~unlearnkit.llm.lm.LMTrainConfig`): bf16 works on a CPU, fp16 and sharding need GPUs (ConfigError
    elsewhere). Reference quantities computed before training (NPO / DPO reference log-probs) use the model's own
    dtype, outside autocast.
    """

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(8, ge=1, description="forget examples per micro-batch")
    grad_accum: int = Field(4, ge=1)
    effective_batch: int | None = Field(None, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    gradient_checkpointing: bool = False
    mixed_precision: MixedPrecision = Field("no", description="autocast of the unlearning forwards through "
                                            "accelerate: no | bf16 | fp16 (GPU only)")
    sharding: dict[str, Any] | str | None = Field(None, description="FSDP2 / DeepSpeed ZeRO (accelerate plugins; "
                                                  "see unlearnkit.llm.lm.LMTrainConfig.sharding); GPUs only")
    smoothing: SmoothingConfig | None = Field(None, description="SAM / randomized smoothing / gradient-norm penalty "
                                              "/ weight averaging of the forget loss (arXiv:2502.05374; "
                                              "unlearnkit.llm.lm.SmoothingConfig), e.g. {kind: sam, rho: 0.01}")

    @field_validator("sharding")
    @classmethod
    def _sharding(cls, v: Any) -> Any:
        load_sharding(v)
        return v

    def recipe(self, max_len: int | None) -> LMTrainConfig:
        """This config as an :class:`LMTrainConfig` (validates effective_batch)."""
        return LMTrainConfig(epochs=self.epochs, batch_size=self.batch_size, grad_accum=self.grad_accum,
                             effective_batch=self.effective_batch, lr=self.lr, optimizer=self.optimizer,
                             weight_decay=self.weight_decay, scheduler=self.scheduler, warmup_ratio=self.warmup_ratio,
                             grad_clip=self.grad_clip, max_len=max_len,
                             gradient_checkpointing=self.gradient_checkpointing,
                             mixed_precision=self.mixed_precision, sharding=self.sharding, smoothing=self.smoothing)


class RetainRegConfig(LLMOptimConfig):
    """Forget loss weight γ and a retain regulariser: ``retain_loss`` none | nll (NLL on D_r answers, "GradDiff") |
    kl (KL(θ_o ‖ θ) of next-token distributions on D_r answer tokens), weighted by α = ``retain_weight``."""

    retain_loss: Literal["none", "nll", "kl"] = "none"
    retain_weight: float = Field(1.0, ge=0, description="α, weight of the retain term")
    forget_weight: float = Field(1.0, gt=0, description="γ, weight of the forget term")
    reference_offload: bool = Field(False, description="KL without untouched adapters: keep the frozen θ_o copy on "
                                    "the CPU (saves its bytes of accelerator memory; slower reference passes)")


def retain_pairing(n_retain: int, seed: int, epoch: int, global_positions: np.ndarray) -> np.ndarray:
    """Retain index paired with each forget example, a pure function of (seed, epoch, global position in the epoch).

    Independent of the process rank and of how the epoch is split into micro-batches, so two ranks never draw the same
    sequence by accident and results do not change with the number of processes at equal effective batch
    (KNOWN_FAULTS C02, C15). Within an epoch the first ``n_retain`` positions get distinct retain items.

    Returns:
        int64 array like ``global_positions`` with values in ``[0, n_retain)``.
    """
    perm = np.random.default_rng([seed, epoch, 0x5E7A1]).permutation(n_retain)
    return perm[np.asarray(global_positions) % n_retain].astype(np.int64)


def shard_positions(n: int, rank: int, world_size: int) -> np.ndarray:
    """Global positions handled by ``rank`` of ``world_size`` (strided: disjoint, covering ``range(n)``)."""
    return np.arange(rank, n, world_size, dtype=np.int64)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of an HF decoder-only LM (with or without peft adapters).

    Raises:
        MethodError: the model has no ``.model.layers``-style block list.
    """
    m = model.get_base_model() if is_peft_model(model) else model
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj: Any = m
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return obj
    raise MethodError(f"cannot find the transformer blocks of {type(m).__name__} (looked for model.layers, ...)")


def down_projection(blocks: nn.ModuleList, block: int, who: str) -> tuple[nn.Module, nn.Linear]:
    """``(module, linear)`` of ``blocks[block].mlp.down_proj``: the module the forward pass calls and the
    ``nn.Linear`` that holds the weight W — the module itself, or under a peft LoRA wrapper its frozen ``base_layer``
    (the wrapper adds s·B·A; :func:`lora_delta` gives it). Methods that edit W in closed form write the merged
    model's edit there.

    Raises:
        MethodError: not a Llama-style MLP down-projection (``who`` names the method in the message).
    """
    module = getattr(getattr(blocks[block], "mlp", None), "down_proj", None)
    if isinstance(module, nn.Linear):
        return module, module
    base = getattr(module, "base_layer", None)
    if isinstance(base, nn.Linear):
        return module, base
    raise MethodError(f"{who} needs Llama-style MLPs (blocks[{block}].mlp.down_proj an nn.Linear, or a LoRA wrapper "
                      f"of one); got {type(module).__name__}")


def lora_delta(module: nn.Module) -> torch.Tensor | None:
    """Σ s·B·A (float32, the shape of W) over the active LoRA adapters of a wrapped linear layer; None for a plain
    ``nn.Linear`` (no adapters)."""
    if isinstance(module, nn.Linear) or not hasattr(module, "get_delta_weight"):
        return None
    names = [a for a in (getattr(module, "active_adapters", None) or []) if a in getattr(module, "lora_A", {})]
    base = module.base_layer.weight
    return sum((module.get_delta_weight(a).detach().float() for a in names),
               torch.zeros_like(base, dtype=torch.float32))


@contextmanager
def reference_mode(model: nn.Module):
    """Inside: ``model`` computes θ_ref = the adapter-disabled base (peft models), under eval mode and no grad."""
    ctx = model.disable_adapter() if is_peft_model(model) else nullcontext()
    with ctx, eval_mode(model):
        yield


class LLMUnlearner(Unlearner):
    """Base of LLM unlearners: validation, encoding, reference handling and the shared loop.

    Subclasses implement :meth:`forget_loss` (sum over a micro-batch of per-example forget losses) and may set
    ``required_fields`` (QA fields every forget item must have; checked before any forward pass, C13).
    """

    track: ClassVar[str] = "llm"
    needs_labels: ClassVar[bool] = False
    required_fields: ClassVar[tuple[str, ...]] = ()
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 2, "grad_accum": 1, "lr": 1e-3}

    def __init__(self, config: Frozen) -> None:
        super().__init__(config)
        rl = getattr(config, "retain_loss", "none")
        self.needs_retain = rl != "none"  # instance-level: depends on the config

    # -- validation -------------------------------------------------------------------------------------------------
    def fields_needed(self) -> tuple[str, ...]:
        """QA fields every forget item must carry for this configuration."""
        return self.required_fields

    def check_data(self, forget: QASet, retain: QASet | None = None) -> None:
        """Schema check before any forward pass (KNOWN_FAULTS C13).

        Raises:
            DataError: a required field is missing (names the method, the field and the data set / file).
            MethodError: a retain regulariser is configured and D_r is empty.
        """
        name = type(self).__name__
        if not isinstance(forget, QASet):
            raise DataError(f"{name} needs the forget set as a QASet (unlearnkit.data.text), got {type(forget).__name__}")
        for f in self.fields_needed():
            forget.require(f, who=f"method {name}")
        if self.needs_retain and (retain is None or len(retain) == 0):
            raise MethodError(f"{name} with retain_loss={self.config.retain_loss!r} needs a non-empty retain set")

    @staticmethod
    def context_of(context: UnlearnContext) -> LLMContext:
        if not isinstance(context, LLMContext) or context.tokenizer is None:
            raise MethodError("LLM methods need an LLMContext with the tokenizer "
                              "(unlearnkit.methods.llm.LLMContext(seed=..., tokenizer=tok, fmt='qa'))")
        return context

    # -- hooks for subclasses ---------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, forget: QASet, ctx: LLMContext, engine: Any) -> dict[str, Any]:
        """Encode D_f and compute fixed reference quantities; returns a state dict for :meth:`forget_loss`
        (``forget``: the encoded D_f; ``pad``: the tokenizer's pad id)."""
        return {"forget": encode_pairs(ctx.tokenizer, forget.pairs(), ctx.fmt, ctx.max_len),
                "pad": pad_id_of(ctx.tokenizer)}

    @staticmethod
    def batch(state: dict[str, Any], key: str, pos: np.ndarray, engine: Any) -> dict[str, torch.Tensor]:
        """The micro-batch of encoded examples ``state[key][pos]``, padded and on the engine's device."""
        return _to(collate([state[key][i] for i in pos], state["pad"]), engine.device)

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _unlearn(self, model: nn.Module, forget: QASet, retain: QASet, engine: Any,
                 context: UnlearnContext) -> UnlearnResult:
        ctx = self.context_of(context)
        self.check_data(forget, retain)
        cfg = self.config
        recipe = cfg.recipe(ctx.max_len)  # type: ignore[attr-defined]
        place_model(model, engine.device)
        pad = pad_id_of(ctx.tokenizer)
        state = self.prepare(model, forget, ctx, engine)
        notes: dict[str, Any] = {"reference": "none", "reference_extra_bytes": 0}
        rl = getattr(cfg, "retain_loss", "none")
        alpha = float(getattr(cfg, "retain_weight", 0.0))
        gamma = float(getattr(cfg, "forget_weight", 1.0))
        r_enc: list[Encoded] = []
        ref_model: nn.Module | None = None
        if rl != "none":
            r_enc = encode_pairs(ctx.tokenizer, retain.pairs(), ctx.fmt, ctx.max_len)
            if rl == "kl":
                if lora_is_identity(model):
                    notes["reference"] = "adapter-disabled base (no copy)"
                else:
                    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
                    offload = bool(getattr(cfg, "reference_offload", False))
                    if offload:
                        ref_model.to("cpu")
                    notes["reference"] = "frozen copy of θ_o" + (" (offloaded to the CPU)" if offload else "")
                    notes["reference_extra_bytes"] = parameter_bytes(ref_model)
                    notes["reference_device"] = str(next(ref_model.parameters()).device)
                    log.info("KL reference: frozen copy of θ_o on %s, +%.1f MB", notes["reference_device"],
                             notes["reference_extra_bytes"] / 2**20)
        notes.update(state.pop("_notes", {}))
        ref_bytes_on_device = 0
        if ref_model is not None and next(ref_model.parameters()).device.type == engine.device.type:
            ref_bytes_on_device = notes["reference_extra_bytes"]
        used_retain: set[int] = set()
        seed = context.seed
        n_r = len(retain)
        dev = engine.device

        def part(module: nn.Module, pos: np.ndarray, gpos: np.ndarray, epoch: int, which: str) -> torch.Tensor | None:
            if which == "forget":
                return gamma * self.forget_loss(module, state, pos, engine)
            if rl == "none":
                return None
            ridx = retain_pairing(n_r, seed, epoch, gpos)
            used_retain.update(ridx.tolist())
            rb = _to(collate([r_enc[i] for i in ridx], pad), dev)
            if rl == "nll":
                return alpha * mean_token_nll(module, rb).sum()
            return alpha * kl_on_retain(module, ref_model, rb).sum()

        def micro(module: nn.Module, pos: np.ndarray, gpos: np.ndarray, epoch: int) -> torch.Tensor:
            loss = part(module, pos, gpos, epoch, "forget")
            r = part(module, pos, gpos, epoch, "retain")
            return loss if r is None else loss + r

        fit: LMFitResult = optimize(model, n_items=len(forget), micro_loss=micro, recipe=recipe, engine=engine,
                                    seed=seed, ids=forget.ids, lengths=[len(e) for e in state["forget"]],
                                    params=self.trainable(model), desc=type(self).__name__,
                                    reference_bytes=ref_bytes_on_device, micro_parts=part)
        self.finish(model, state)
        seen = with_retain_seen(fit.seen_ids, used_retain, retain, engine)
        notes.update({"effective_batch": fit.effective_batch, "epochs": fit.epochs, "losses": fit.losses,
                      "memory_estimate": fit.memory_estimate,
                      "step_losses": fit.step_losses,
                      "retain_loss": rl, "mixed_precision": fit.mixed_precision})
        if getattr(cfg, "smoothing", None) is not None:
            notes["smoothing"] = cfg.smoothing.model_dump(mode="json")
        return UnlearnResult(model, steps=fit.steps, notes=notes, seen_ids=seen)

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]] | None:
        """Named parameters to optimise (default: all with requires_grad)."""
        return None

    def finish(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Undo temporary changes to the model (hooks, requires_grad flags)."""


def with_retain_seen(seen: np.ndarray, used_retain: set[int], retain: QASet, engine: Any) -> np.ndarray:
    """``seen`` (sorted int64 ids) plus the ids of the retain items drawn by any rank (positions in ``retain``)."""
    dist = getattr(engine, "dist", None)
    if dist is not None and dist.distributed:  # each rank drew the retain items of its own positions
        used_retain = set().union(*dist.gather(used_retain))
    if used_retain:
        seen = np.union1d(seen, retain.ids[sorted(used_retain)])
    return seen


def kl_on_retain(model: nn.Module, ref_model: nn.Module | None, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example mean over labelled positions of KL(p_ref ‖ p_θ) of next-token distributions, float32 (b,).

    ``ref_model`` None: the reference is ``model`` with adapters disabled (peft). The direction and the log-space
    computation follow open-unlearning's ``compute_kl_divergence`` (KL(ref ‖ current)); unlike it, the average runs
    over answer tokens only, never over prompt or padding positions.
    """
    with torch.no_grad():
        if ref_model is None:
            with reference_mode(model):
                ref = forward_logits(model, batch)
        else:
            ref_dev = next(ref_model.parameters()).device
            dev = batch["input_ids"].device
            if ref_dev != dev:  # offloaded reference: its forward runs where it lives
                ref = forward_logits(ref_model, {k: v.to(ref_dev) for k, v in batch.items()}).to(dev)
            else:
                ref = forward_logits(ref_model, batch)
    cur = forward_logits(model, batch)
    mask = (batch["labels"][:, 1:] != IGNORE_INDEX).float()
    lp_c = torch.log_softmax(cur[:, :-1].float(), -1)
    lp_r = torch.log_softmax(ref[:, :-1].float(), -1)
    kl = (lp_r.exp() * (lp_r - lp_c)).sum(-1)
    return (kl * mask).sum(1) / mask.sum(1).clamp_min(1)


def reference_logprobs(model: nn.Module, enc: list[Encoded], pad: int, engine: Any,
                       batch_size: int = 16) -> torch.Tensor:
    """Σ log π_ref(answer | prompt) for each encoded example, float32 (n,), computed once with θ_ref = the model as
    it is now (θ_o, adapters included: with a LoRA-fine-tuned θ_o the adapter-disabled base would be the pretrained
    model, not θ_o), in eval mode without gradients."""
    out = torch.zeros(len(enc))
    order = np.argsort([len(e) for e in enc], kind="stable")
    with eval_mode(model):
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            b = _to(collate([enc[j] for j in idx], pad), engine.device)
            lp, _ = sequence_logprobs(model, b)
            out[torch.as_tensor(idx)] = lp.float().cpu()
    return out


__all__ = ["LLMContext", "LLMOptimConfig", "RetainRegConfig", "LLMUnlearner", "retain_pairing", "shard_positions",
           "decoder_layers", "reference_mode", "kl_on_retain", "with_retain_seen", "reference_logprobs", "token_logprobs_from_logits",
           "Callable"]
