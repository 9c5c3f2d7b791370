"""ULD: unlearning from logit difference (Ji et al., "Reversing the Forget-Retain Objectives: An Efficient LLM
Unlearning Framework from Logit Difference", NeurIPS 2024, arXiv:2406.08607; reference code UCSB-NLP-Chang/ULD).

An *assistant* LLM is built from the target's first K transformer blocks (plus its embeddings, final norm and
LM head) with LoRA adapters, and trained with the objectives reversed: it *remembers* D_f (next-token NLL on the
forget answers and their paraphrases) and *forgets* D_r (its next-token distribution pushed to uniform:
KL(U ‖ p) on retain answers and on D_f's perturbed — wrong — answers), ``loss = NLL_f + 5 · KL_r``. At inference the
target's logits are corrected by the assistant's::

    z = z_target − w · z̃_assistant,   z̃_assistant[v] = 0 where log p_target(v) < θ,  θ = min(max_v log p_target(v)
        + log τ, the ⌊τ·V⌋-th largest log p_target)

(reference ``uld/model/contrastllm.py``: ``logits = base + weight · assist`` with ``weight = −0.8`` and the
``relative_top_filter`` of ``gen_util.py``, which zeroes the assistant's logits where the target's probability is
below τ times its maximum but always keeps at least ⌊τ·V⌋ tokens). The weights of θ_o are untouched; the merged
assistant travels in ``policy.tensors()``.

Reference defaults (``configs/model_mode/uld.yaml``, ``bashes/tofu/uld_train.sh``, ``configs/tune_config.yaml``,
``configs/unlearn_loss/remember+uniform.yaml``, ``configs/data_mode/forget_more_retain_perturb.yaml``): K = 8 blocks,
LoRA r = 16, α = 32, dropout 0.05 on all linear layers, lr 1e-3, batch 8 × 2 accumulation, 10 epochs, weight decay
0.01, retain weight 5, 400 retain items, forget set expanded with paraphrases, perturbed answers on the uniform side;
evaluation w = 0.8, τ = 0.01.

Deviations (stated): the paraphrase expansion uses the one ``paraphrased_answer`` each TOFU item has (the reference
generates two per item with GPT); the uniform loss averages over answer tokens only (the reference averages over every
position of the sequence, prompt and padding included); the assistant is the copy of θ_o's blocks 0..K−1 (the
reference re-initialises a K-layer model from the same config and copies those weights — the same function); the
LoRA adapters are merged into the assistant's weights after training.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.errors import CheckpointError, MethodError
from unlearnkit.llm.lm import encode_pairs, forward_logits, optimize
from unlearnkit.llm.tokenize import IGNORE_INDEX, collate, pad_id_of
from unlearnkit.methods.base import Unlearned, Unlearner
from unlearnkit.methods.llm.base import LLMOptimConfig, LLMUnlearner, decoder_layers, retain_pairing
from unlearnkit.models.policy import POLICIES, InferencePolicy
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat


def logit_difference(z_target: torch.Tensor, z_assist: torch.Tensor, weight: float, tau: float) -> torch.Tensor:
    """ULD's combined logits (..., V): ``z_target − weight · z_assist`` on the tokens the target keeps, ``z_target``
    elsewhere (see the module docstring for the keep rule); computed in float32, returned in ``z_target``'s dtype."""
    zt = z_target.float()
    logp = torch.log_softmax(zt, dim=-1)
    v = zt.shape[-1]
    k = max(int(tau * v), 1)
    kth = logp.topk(k, dim=-1).values[..., -1:]
    thresh = torch.minimum(kth, logp.max(dim=-1, keepdim=True).values + float(np.log(tau)))
    za = z_assist.float().masked_fill(logp < thresh, 0.0)
    return (zt - weight * za).to(z_target.dtype)


def _cache_arg(model: nn.Module) -> str:
    """The name of the KV-cache argument of ``model.forward`` (``cache`` from transformers 5.25, else
    ``past_key_values``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _config_dict(model: nn.Module) -> dict[str, Any]:
    """JSON-safe HF config of ``model`` (``model_type`` included), round-tripping through JSON."""
    import json

    d = model.config.to_dict()
    d.pop("transformers_version", None)
    d.pop("_name_or_path", None)
    d.pop("quantization_config", None)
    return json.loads(json.dumps(d, default=str))


def _build_from_config(cfg: dict[str, Any]) -> nn.Module:
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as err:  # pragma: no cover - llm extra missing
        raise CheckpointError("ULD's assistant needs transformers: pip install 'unlearnkit[llm]'") from err
    c = dict(cfg)
    kind = c.pop("model_type", None)
    if kind is None:
        raise CheckpointError("saved ULD assistant config has no model_type")
    conf = AutoConfig.for_model(kind, **c)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(conf)


@POLICIES.register("uld")
class ULDPolicy(InferencePolicy):
    """Logit difference with a small assistant model (scoring and decoding).

    Args:
        assistant_config: the assistant's HF config as a JSON dict (with ``model_type``).
        weight: w ≥ 0, the assistant's weight (reference 0.8).  tau: τ ∈ (0, 1], the relative-probability filter.
        assistant: a built assistant module (at fit time), or None to build it from ``assistant_config`` and
            ``state``.  state: the assistant's weights (``tensors()`` of a saved policy).

    Raises:
        CheckpointError: the saved weights do not fit the saved config.
    """

    kind = "uld"
    affects = frozenset({"logits", "generations"})

    def __init__(self, assistant_config: dict[str, Any], weight: float = 0.8, tau: float = 0.01,
                 assistant: nn.Module | None = None, state: dict[str, torch.Tensor] | None = None) -> None:
        if weight < 0 or not 0 < tau <= 1:
            raise MethodError(f"ULD needs weight ≥ 0 and tau in (0, 1], got weight={weight}, tau={tau}")
        self.assistant_config, self.weight, self.tau = dict(assistant_config), float(weight), float(tau)
        if assistant is None:
            assistant = _build_from_config(self.assistant_config)
            if state is not None:
                missing, unexpected = assistant.load_state_dict(state, strict=False)
                missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied heads are saved once
                if missing or unexpected:
                    raise CheckpointError(f"saved ULD assistant weights do not fit its config (missing {missing[:3]},"
                                          f" unexpected {unexpected[:3]})")
                if getattr(assistant.config, "tie_word_embeddings", False):
                    assistant.tie_weights()
        self.assistant = assistant.eval().requires_grad_(False)
        self._gen: dict[str, Any] | None = None

    def _on(self, device: torch.device) -> nn.Module:
        p = next(self.assistant.parameters())
        if p.device != device:
            self.assistant.to(device)
        return self.assistant

    def assistant_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The assistant's teacher-forced logits (b, T, V) on ``batch``."""
        a = self._on(batch["input_ids"].device)
        with torch.no_grad():
            return forward_logits(a, batch)

    def score_logits(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        return logit_difference(logits, self.assistant_logits(batch).to(logits.dtype), self.weight, self.tau)

    @contextmanager
    def forward_hooks(self, model: Any, tokenizer: Any, batch: dict[str, torch.Tensor]):  # type: ignore[override]
        """Keeps the batch's prompt mask for the decoding step (left padding), and the assistant's KV cache."""
        self._gen = {"mask0": batch["attention_mask"], "cache": None, "len": 0}
        try:
            yield
        finally:
            self._gen = None

    def logits_processor(self, tokenizer: Any) -> Any:
        def uld(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            a = self._on(input_ids.device)
            b, t = input_ids.shape
            st = self._gen
            if st is None or st["mask0"].shape[0] != b:  # outside the generate path: every position is real
                st = self._gen = {"mask0": torch.ones((b, t), dtype=torch.long, device=input_ids.device),
                                  "cache": None, "len": 0}
            mask0 = st["mask0"].to(input_ids.device)
            mask = torch.cat([mask0, mask0.new_ones((b, t - mask0.shape[1]))], dim=1)
            pos = (mask.cumsum(1) - 1).clamp_min(0)
            with torch.no_grad():
                if st["cache"] is not None and st["len"] == t - 1:
                    out = a(input_ids=input_ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:],
                            use_cache=True, **{_cache_arg(a): st["cache"]})
                else:
                    out = a(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True)
            st["cache"] = getattr(out, "cache", None) if hasattr(out, "cache") else out.past_key_values
            st["len"] = t
            za = out.logits[:, -1, :].to(scores.device)
            return logit_difference(scores, za.to(scores.dtype), self.weight, self.tau)

        return uld

    def config(self) -> dict[str, Any]:
        return {"assistant_config": self.assistant_config, "weight": self.weight, "tau": self.tau}

    def tensors(self) -> dict[str, torch.Tensor]:
        out, seen = {}, set()
        for k, v in self.assistant.state_dict().items():
            if v.data_ptr() in seen:  # tied LM head: saved once (safetensors refuses shared tensors)
                continue
            seen.add(v.data_ptr())
            out[f"assistant.{k}"] = v.detach().cpu().clone()
        return out

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InferencePolicy:
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("assistant.")}
        try:
            return cls(config["assistant_config"], config.get("weight", 0.8), config.get("tau", 0.01), state=state)
        except KeyError as err:
            raise CheckpointError(f"saved ULD policy lacks {err}") from err


class ULDConfig(LLMOptimConfig):
    """ULD (arXiv:2406.08607); defaults of the reference code (see the module docstring)."""

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, ge=1, description="forget (remember) examples per micro-batch")
    grad_accum: int = Field(2, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    num_layers: int = Field(8, ge=1, description="K: blocks of the target the assistant keeps (reference 8)")
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    weight: float = Field(0.8, ge=0, description="w: z_target − w · z_assistant (reference 0.8)")
    tau: float = Field(0.01, gt=0, le=1, description="τ: the assistant's logits count only where p_target ≥ τ·max "
                       "(reference evaluation 0.01)")
    retain_weight: float = Field(5.0, ge=0, description="weight of the uniform (forget-D_r) loss (reference 5)")
    max_retain: int | None = Field(400, ge=1, description="D_r items on the uniform side (reference 400); None = all")
    augment: bool = Field(True, description="paraphrased D_f answers on the remember side, perturbed D_f answers on "
                          "the uniform side (reference data mode forget_more_retain_perturb)")


def build_assistant(model: nn.Module, num_layers: int) -> nn.Module:
    """A copy of ``model`` (adapters merged) keeping only its first ``num_layers`` blocks.

    Raises:
        MethodError: ``num_layers`` exceeds the model's depth.
    """
    from unlearnkit.models.llm import is_peft_model

    base = copy.deepcopy(model)
    if is_peft_model(base):
        base = base.merge_and_unload()
    layers = decoder_layers(base)
    if num_layers > len(layers):
        raise MethodError(f"ULD: assistant depth num_layers={num_layers} exceeds the model's {len(layers)} blocks; "
                          f"use 1..{len(layers)} (the reference keeps 8 of Llama-2-7B's 32)")
    del layers[num_layers:]
    base.config.num_hidden_layers = num_layers
    lt = getattr(base.config, "layer_types", None)
    if isinstance(lt, list):
        base.config.layer_types = lt[:num_layers]
    return base.eval()


@METHODS.register("uld", config=ULDConfig)
class ULD(Unlearner):
    """ULD: an assistant (θ_o's first K blocks + LoRA) trained to remember D_f and forget D_r; at inference
    z = z_target − w·z_assistant on the target's likely tokens (Ji et al. 2024, arXiv:2406.08607)."""

    kind = "inference"
    intent = "suppression"  # the weights are left alone: an inference-time policy keeps D_f from being expressed
    track = "llm"
    needs_labels = False
    needs_retain = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-4, 1e-2),
                    "epochs": Int(1, 20),
                    "weight": Float(0.2, 1.5),
                    "tau": LogFloat(1e-3, 0.5)}
    source = ("Ji et al., Reversing the Forget-Retain Objectives: An Efficient LLM Unlearning Framework from Logit "
              "Difference, NeurIPS 2024, arXiv:2406.08607; code github.com/UCSB-NLP-Chang/ULD")
    smoke_params: ClassVar[dict[str, Any]] = {"num_layers": 1, "epochs": 1, "batch_size": 4, "grad_accum": 1,
                                              "max_retain": 8}

    def requirements(self) -> dict[str, bool]:
        return {**super().requirements(), "retain": self.config.retain_weight > 0}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> Unlearned:
        from unlearnkit.models.llm import LoraSpec, apply_lora

        ctx = LLMUnlearner.context_of(context)
        c: ULDConfig = self.config  # type: ignore[assignment]
        tok, fmt = ctx.tokenizer, ctx.fmt
        assistant = build_assistant(model, c.num_layers)
        names = {n.rsplit(".", 1)[-1] for n, m in assistant.named_modules() if isinstance(m, nn.Linear)}
        targets = [n for n in sorted(names) if n not in ("lm_head",)]
        assistant = apply_lora(assistant, LoraSpec(r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout,
                                                   target_modules=targets))
        remember = list(forget.pairs())
        uniform = []
        if c.augment:
            remember += [(it.question, it.paraphrased_answer) for it in forget if it.paraphrased_answer]
            uniform += [(it.question, a) for it in forget for a in it.perturbed_answers]
        r_items = list(retain or [])
        if c.max_retain is not None and len(r_items) > c.max_retain:
            keep = np.sort(np.random.default_rng([context.seed, 0x1D]).permutation(len(r_items))[:c.max_retain])
            r_items = [r_items[i] for i in keep]
        uniform += [(it.question, it.answer) for it in r_items]
        if c.retain_weight > 0 and not uniform:
            raise MethodError("ULD's uniform (forget-D_r) side is empty: give a retain set or retain_weight: 0")
        f_enc = encode_pairs(tok, remember, fmt, ctx.max_len)
        u_enc = encode_pairs(tok, uniform, fmt, ctx.max_len) if uniform else []
        pad = pad_id_of(tok)
        dev = engine.device

        def micro(module: nn.Module, pos: np.ndarray, gpos: np.ndarray, epoch: int) -> torch.Tensor:
            fb = {k: v.to(dev) for k, v in collate([f_enc[i] for i in pos], pad).items()}
            logits = forward_logits(module, fb)[:, :-1].float()
            tgt = fb["labels"][:, 1:]
            b, t, v = logits.shape
            nll = torch.nn.functional.cross_entropy(logits.reshape(b * t, v), tgt.reshape(b * t),
                                                    ignore_index=IGNORE_INDEX, reduction="none").view(b, t)
            m = (tgt != IGNORE_INDEX).float()
            loss = ((nll * m).sum(1) / m.sum(1).clamp_min(1)).sum()
            if c.retain_weight > 0 and u_enc:
                ridx = retain_pairing(len(u_enc), context.seed, epoch, gpos)
                ub = {k: v.to(dev) for k, v in collate([u_enc[i] for i in ridx], pad).items()}
                ul = torch.log_softmax(forward_logits(module, ub)[:, :-1].float(), -1)
                um = (ub["labels"][:, 1:] != IGNORE_INDEX).float()
                kl = -float(np.log(ul.shape[-1])) - ul.mean(-1)  # KL(U ‖ p) per position
                loss = loss + c.retain_weight * ((kl * um).sum(1) / um.sum(1).clamp_min(1)).sum()
            return loss

        fit = optimize(assistant, n_items=len(f_enc), micro_loss=micro, recipe=c.recipe(ctx.max_len), engine=engine,
                       seed=context.seed, lengths=[len(e) for e in f_enc], desc="ULD assistant")
        merged = assistant.merge_and_unload().eval().requires_grad_(False)
        policy = ULDPolicy(_config_dict(merged), c.weight, c.tau, assistant=merged)
        n_params = sum(p.numel() for p in merged.parameters())
        return Unlearned(model, steps=fit.steps, policy=policy,
                         notes={"assistant_layers": c.num_layers, "assistant_parameters": int(n_params),
                                "remember_items": len(f_enc), "uniform_items": len(u_enc), "losses": fit.losses,
                                "epochs": fit.epochs})
