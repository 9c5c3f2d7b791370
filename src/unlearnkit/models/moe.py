"""Mixture-of-experts causal LMs: a tiny Mixtral / Qwen2-MoE trained from scratch (CPU), and the introspection that
MoE unlearning and its metrics need — the routed blocks of any transformers MoE (``gate`` router + ``experts``), the
parameters of one expert, and the router distributions of a forward pass.

Real checkpoints (Mixtral-8x7B, Qwen1.5-MoE-A2.7B, DeepSeek-V2-Lite, ...) load through the LLM track's
``model: {kind: hf, path: ...}`` like any causal LM; everything here works on them as long as their sparse blocks
follow transformers' layout:

- ``block.gate``: the router; a module with ``weight`` (E, H) whose forward returns the router logits (T, E) — as its
  first output (transformers ≥ 5: ``MixtralTopKRouter`` returns ``(logits, scores, indices)``) or alone (an
  ``nn.Linear`` router, transformers < 5);
- ``block.experts``: either one module holding fused 3-D expert weights (``gate_up_proj`` (E, 2I, H), ``down_proj``
  (E, H, I); transformers ≥ 5) or an ``nn.ModuleList`` of E expert MLPs (older versions);
- ``block.top_k`` / ``gate.top_k`` (or ``num_experts_per_tok``): experts per token. Shared experts (Qwen2-MoE's
  ``shared_expert``) are always active and are not "experts" in this sense.

Sources: Mixtral (Jiang et al. 2024, arXiv:2401.04088), Qwen1.5-MoE; the transformers model classes are used as they
are (``MixtralForCausalLM``, ``Qwen2MoeForCausalLM``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, MethodError

MoEArch = Literal["mixtral", "qwen2_moe"]


class MoESpec(Frozen):
    """The routed blocks of the LLM track's ``model: {kind: tiny_moe, moe: {...}}`` (tiny MoE from scratch)."""

    arch: MoEArch = Field("mixtral", description="mixtral (every MLP routed) | qwen2_moe (routed + shared expert)")
    experts: int = Field(4, ge=2, le=64, description="routed experts per block (UOE's setting: 4-8)")
    top_k: int = Field(2, ge=1, description="experts per token (Mixtral: 2)")

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) must be ≤ experts ({self.experts})")
        return self


def build_tiny_moe(
    tokenizer: Any,
    *,
    arch: MoEArch = "mixtral",
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    experts: int = 4,
    top_k: int = 2,
    intermediate_size: int | None = None,
    max_len: int = 256,
    seed: int = 0,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> nn.Module:
    """A freshly initialised MoE causal LM (transformers' own classes) sized for a CPU.

    Args:
        tokenizer: gives the vocabulary size and the bos / eos / pad ids.
        arch: ``mixtral`` (every MLP a routed block, ``MixtralForCausalLM``) or ``qwen2_moe`` (routed experts plus an
            always-on shared expert, ``Qwen2MoeForCausalLM``).
        hidden_size, layers, heads: width, depth, attention heads (``hidden_size % heads == 0``).
        experts, top_k: routed experts per block and experts per token (``1 ≤ top_k ≤ experts``, ``experts ≥ 2``).
        intermediate_size: width of each expert MLP (default ``2 * hidden_size``).
        max_len: maximum positions.  seed: initialisation seed (the global RNG is left untouched).
        dtype: weight dtype (initialised in float32, then cast).

    Returns:
        the model in eval mode, ``tie_word_embeddings=False``, router jitter 0, no auxiliary loss in the forward.

    Raises:
        ConfigError: inconsistent sizes or an unknown architecture.
    """
    if min(hidden_size, layers, heads, max_len) < 1 or hidden_size % heads:
        raise ConfigError(f"tiny MoE: hidden_size ({hidden_size}) must be a positive multiple of heads ({heads}), "
                          "layers ≥ 1, max_len ≥ 1")
    if experts < 2 or not 1 <= top_k <= experts:
        raise ConfigError(f"tiny MoE: need experts ≥ 2 and 1 ≤ top_k ≤ experts, got experts={experts}, "
                          f"top_k={top_k}")
    import transformers as tf

    inter = intermediate_size or 2 * hidden_size
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_len,
                  tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, initializer_range=0.02, rms_norm_eps=1e-6,
                  num_experts_per_tok=top_k, output_router_logits=False)
    if arch == "mixtral":
        cfg = tf.MixtralConfig(intermediate_size=inter, num_local_experts=experts, router_jitter_noise=0.0,
                               sliding_window=None, **common)
        cls = tf.MixtralForCausalLM
    elif arch == "qwen2_moe":
        cfg = tf.Qwen2MoeConfig(intermediate_size=inter, moe_intermediate_size=inter, num_experts=experts,
                                shared_expert_intermediate_size=inter, decoder_sparse_step=1, mlp_only_layers=[],
                                norm_topk_prob=True, use_sliding_window=False, **common)
        cls = tf.Qwen2MoeForCausalLM
    else:
        raise ConfigError(f"unknown MoE architecture {arch!r}; use mixtral or qwen2_moe")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(getattr(torch, dtype)).eval()


# -- introspection ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MoELayer:
    """One routed block of an MoE model.

    Attributes:
        index: position among the model's routed blocks (0-based; the decoder layer when every layer is routed).
        name: qualified module name of the block (``model.layers.1.mlp``).
        router: the router module (``block.gate``).  experts: the experts module (fused or a ModuleList).
        n_experts: routed experts E.  top_k: experts per token.
    """

    index: int
    name: str
    router: nn.Module
    experts: nn.Module
    n_experts: int
    top_k: int

    @property
    def fused(self) -> bool:
        """True when the experts are stored as 3-D tensors (one slice per expert on dim 0)."""
        return not isinstance(self.experts, nn.ModuleList)


def _router_weight(router: nn.Module) -> torch.Tensor | None:
    w = getattr(router, "weight", None)
    return w if isinstance(w, torch.Tensor) and w.dim() == 2 else None


def moe_layers(model: nn.Module) -> list[MoELayer]:
    """The routed blocks of ``model`` (with or without peft adapters), in module order; [] for a dense model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") and hasattr(model, "peft_config") else model
    out: list[MoELayer] = []
    for name, mod in base.named_modules():
        router, experts = getattr(mod, "gate", None), getattr(mod, "experts", None)
        if not isinstance(router, nn.Module) or not isinstance(experts, nn.Module):
            continue
        w = _router_weight(router)
        if w is None:
            continue
        n = int(w.shape[0])
        if isinstance(experts, nn.ModuleList):
            if len(experts) != n:
                continue
        elif not all(isinstance(getattr(experts, a, None), torch.Tensor) and getattr(experts, a).dim() == 3
                     and getattr(experts, a).shape[0] == n for a in ("gate_up_proj", "down_proj")):
            continue
        k = getattr(mod, "top_k", None) or getattr(router, "top_k", None) or getattr(
            getattr(base, "config", None), "num_experts_per_tok", None) or 1
        out.append(MoELayer(len(out), name, router, experts, n, int(k)))
    return out


def is_moe(model: nn.Module) -> bool:
    """True if ``model`` has at least one routed block (:func:`moe_layers`)."""
    return bool(moe_layers(model))


def require_moe(model: nn.Module, who: str) -> list[MoELayer]:
    """:func:`moe_layers`, or a MethodError naming ``who`` when the model is dense.

    Raises:
        MethodError: no routed block (a dense model).
    """
    layers = moe_layers(model)
    if not layers:
        raise MethodError(f"{who} needs a mixture-of-experts model (routed blocks with a `gate` router and "
                          f"`experts`, as Mixtral / Qwen2-MoE); {type(model).__name__} has none. Use llm.model.kind: "
                          "tiny_moe, or an MoE checkpoint with kind: hf")
    return layers


def expert_parameters(model: nn.Module, layer: MoELayer, expert: int) -> list[tuple[str, nn.Parameter, int | None]]:
    """The parameters of routed expert ``expert`` of ``layer``: ``(qualified name, parameter, slice)`` where
    ``slice`` is the index on dim 0 of a fused 3-D tensor (the expert owns that slice only) or None (the whole
    parameter belongs to the expert).

    Raises:
        MethodError: ``expert`` out of range.
    """
    if not 0 <= expert < layer.n_experts:
        raise MethodError(f"expert {expert} does not exist in routed block {layer.index} ({layer.n_experts} experts)")
    names = {id(p): n for n, p in model.named_parameters()}
    if layer.fused:
        return [(names[id(p)], p, expert) for p in (layer.experts.gate_up_proj, layer.experts.down_proj)
                if id(p) in names]
    return [(names[id(p)], p, None) for p in layer.experts[expert].parameters() if id(p) in names]


def router_parameters(model: nn.Module, layer: MoELayer) -> list[tuple[str, nn.Parameter]]:
    """The router's own parameters of ``layer`` (qualified name, parameter)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [(names[id(p)], p) for p in layer.router.parameters() if id(p) in names]


class RouterRecorder:
    """Records the router logits of routed blocks during forward passes (forward hooks; removed on exit).

    ``logits[i]`` is the list of (T_flat, E) logit tensors of routed block i, one per forward call, where T_flat
    runs over batch × sequence positions in row-major order (how transformers' routers flatten their input).

    Args:
        model: the MoE model.  layers: indices of the routed blocks to record (None = all).
        detach: store detached tensors (evaluation); False keeps the graph (training losses on the router).
    """

    def __init__(self, model: nn.Module, layers: Sequence[int] | None = None, *, detach: bool = True) -> None:
        self.layers = moe_layers(model)
        self.want = set(range(len(self.layers))) if layers is None else set(layers)
        self.detach = detach
        self.logits: dict[int, list[torch.Tensor]] = {i: [] for i in self.want}
        self._handles: list[Any] = []

    def __enter__(self) -> RouterRecorder:
        for layer in self.layers:
            if layer.index not in self.want:
                continue

            def hook(_m: nn.Module, _inp: Any, out: Any, i: int = layer.index) -> None:
                t = out[0] if isinstance(out, (tuple, list)) else out
                self.logits[i].append(t.detach() if self.detach else t)

            self._handles.append(layer.router.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextmanager
def record_routers(model: nn.Module, layers: Sequence[int] | None = None, *, detach: bool = True
                   ) -> Iterator[RouterRecorder]:
    """``with record_routers(model) as rec: model(...)`` — see :class:`RouterRecorder`."""
    rec = RouterRecorder(model, layers, detach=detach)
    with rec:
        yield rec


__all__ = ["MoELayer", "MoESpec", "RouterRecorder", "build_tiny_moe", "expert_parameters", "is_moe", "moe_layers",
           "record_routers", "require_moe", "router_parameters"]
