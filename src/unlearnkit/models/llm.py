"""Causal language models for the LLM track: a tiny Llama trained from scratch (the CPU default), any Hugging Face
causal LM by path / hub id / GGUF file, and LoRA adapters via ``peft``.

Heavy libraries (transformers, tokenizers, peft) are imported inside the functions; a missing one raises
``ConfigError("... pip install 'unlearnkit[llm]'")``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConfigError(f"the LLM track needs {module.split('.')[0]}: pip install 'unlearnkit[llm]'") from err


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, seed: int = 0):
    """Train a byte-level BPE tokenizer on ``texts`` offline (``tokenizers`` library) and wrap it for transformers.

    Args:
        texts: training texts (questions, answers, paraphrased / perturbed answers: everything a model will read).
        vocab_size: target size including the 256 byte symbols and 4 special tokens (≥ 300).
        seed: accepted for symmetry; BPE training is deterministic for a given text order.

    Returns:
        ``PreTrainedTokenizerFast`` with ``bos_token`` ``<s>`` (prepended when ``add_special_tokens=True``),
        ``eos_token`` ``</s>``, ``pad_token`` ``<pad>`` (distinct from EOS), ``unk_token`` ``<unk>``; byte-level, so
        every string is encodable and ``decode(encode(s)) == s``.

    Raises:
        ConfigError: ``vocab_size`` < 300.
    """
    if vocab_size < 300:
        raise ConfigError(f"vocab_size must be ≥ 300 (256 bytes + specials + merges), got {vocab_size}")
    tk = _need("tokenizers")
    tf = _need("transformers")
    tok = tk.Tokenizer(tk.models.BPE(unk_token=None))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, UNK], show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = tk.processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                      unk_token=UNK)
    fast.padding_side = "right"
    return fast


def build_tiny_llama(
    tokenizer: Any,
    *,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int = 4,
    intermediate_size: int | None = None,
    max_len: int = 512,
    seed: int = 0,
    dropout: float = 0.0,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
):
    """A freshly initialised ``LlamaForCausalLM`` sized for CPU (defaults ≈ 1.3 M params with a 1k vocabulary).

    Args:
        tokenizer: gives the vocabulary size and the bos / eos / pad ids.
        hidden_size, layers, heads: width, depth and attention heads (``hidden_size % heads == 0``).
        intermediate_size: MLP width (default ``4 * hidden_size``).
        max_len: maximum positions (tokens).
        seed: initialisation seed (global RNG state is left untouched).
        dropout: attention dropout probability.
        dtype: weight dtype; the weights are initialised in float32 (so every dtype starts from the same values,
            rounded) and then cast.

    Returns:
        the model in eval mode, in ``dtype``, ``tie_word_embeddings=False`` (safetensors refuses shared tensors).

    Raises:
        ConfigError: ``hidden_size`` not divisible by ``heads`` or sizes < 1.
    """
    if min(hidden_size, layers, heads, max_len) < 1 or hidden_size % heads:
        raise ConfigError(f"tiny llama: hidden_size ({hidden_size}) must be a positive multiple of heads ({heads}), "
                          f"layers ≥ 1, max_len ≥ 1")
    tf = _need("transformers")
    cfg = tf.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_len, attention_dropout=dropout, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02, rms_norm_eps=1e-6,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(getattr(torch, dtype)).eval()


class LoraSpec(Frozen):
    """LoRA adapters (Hu et al. 2021, arXiv:2106.09685) via ``peft``; defaults of the TOFU paper's LoRA runs
    (r = 8, α = 32, dropout 0.05) on all attention and MLP projections of a Llama block."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(32, gt=0, description="scaling numerator: update = (alpha / r) · B A")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names (exact suffixes) that get adapters; a list that matches nothing is an error")


def apply_lora(model: Any, spec: LoraSpec):
    """Wrap ``model`` with LoRA adapters; only adapter weights are trainable (B = 0 at init: output unchanged).

    Raises:
        ConfigError: ``target_modules`` match no module of the model (the message lists candidate names).
    """
    peft = _need("peft")
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in spec.target_modules if t not in names]
    if len(missing) == len(spec.target_modules):
        raise ConfigError(f"LoRA target_modules {spec.target_modules} match no Linear module of the model; "
                          f"its Linear modules are named {sorted(names)}")
    cfg = peft.LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                          target_modules=[t for t in spec.target_modules if t in names], bias="none",
                          task_type="CAUSAL_LM")
    return peft.get_peft_model(model, cfg)


def is_peft_model(model: Any) -> bool:
    """True for a ``peft`` model with adapters (reference = adapter-disabled base)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def lora_is_identity(model: Any) -> bool:
    """True when ``model`` is a peft model whose adapters add nothing yet (every ``lora_B`` weight is zero, as at
    initialisation), so the adapter-disabled base computes the same function as the model itself.

    The adapter-disabled base is θ_o only in that case: when θ_o *is* base + trained adapters (the LLM track's
    ``model: {lora: ...}`` fine-tunes adapters for θ_o and unlearning continues them), disabling the adapters gives
    the pretrained model before fine-tuning, not θ_o.
    """
    if not is_peft_model(model):
        return False
    bs = [p for n, p in model.named_parameters() if "lora_B" in n or "lora_embedding_B" in n]
    return bool(bs) and all(not torch.any(p.detach() != 0) for p in bs)


def _looks_local(p: str) -> bool:
    return p.startswith((".", "/", "~")) or os.sep in p.strip("/") and p.count("/") > 1 or Path(p).suffix in (
        ".gguf", ".bin", ".safetensors")


@contextmanager
def _loading_bars(enabled: bool):
    """Inside: transformers' progress bars on or off (restored after). The GGUF reader uses a plain tqdm, silenced
    through its module's name for the duration."""
    if enabled:
        yield
        return
    from transformers.utils import logging as tf_logging

    was = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    gguf = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf is None:
        try:
            import transformers.modeling_gguf_pytorch_utils as gguf
        except Exception:  # noqa: BLE001 - an older or partial transformers: nothing to silence there, load anyway
            gguf = None
    bar = getattr(gguf, "tqdm", None)
    if bar is not None:
        gguf.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf.tqdm = bar
        if was:
            tf_logging.enable_progress_bar()


def load_causal_lm(
    path_or_id: str,
    *,
    gguf_file: str | None = None,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
    lora: LoraSpec | None = None,
    pad_token: Literal["eos"] | None = None,
    local_files_only: bool = True,
    device_map: str | dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[Any, Any]:
    """Load a Hugging Face causal LM and its tokenizer.

    Args:
        path_or_id: a local folder or a hub id (``"HuggingFaceTB/SmolLM2-135M-Instruct"``).
        gguf_file: a GGUF file name inside ``path_or_id`` (dequantised to ``dtype`` by transformers).
        dtype: weight dtype.
        lora: wrap the model with adapters (:func:`apply_lora`).
        pad_token: ``"eos"`` sets ``pad_token = eos_token`` when the tokenizer has none — safe here because
            unlearnkit builds attention masks from sequence lengths, never from token identity (KNOWN_FAULTS C01).
        local_files_only: refuse network access (set False to download from the hub).
        device_map: transformers' ``device_map`` (``"auto"``, ``"cpu"``, ``"cuda"``, or ``{module name: device}``;
            accelerate places the weights, over several GPUs when they do not fit one); None = load on the CPU.
        progress: False silences transformers' loading bars ("Loading weights", GGUF de-quantization), as the
            engine's ``progress: false`` silences unlearnkit's.

    Returns:
        ``(model, tokenizer)``; the model in eval mode.

    Raises:
        ConfigError: a local path that does not exist, a model that cannot be loaded, a tokenizer without a pad
            token and ``pad_token=None``.
    """
    tf = _need("transformers")
    p = os.path.expanduser(path_or_id)
    if os.path.exists(p):
        if gguf_file is not None and not (Path(p) / gguf_file).is_file():
            raise ConfigError(f"GGUF file {gguf_file!r} not found in {p}")
    elif _looks_local(path_or_id) or local_files_only:
        hint = "" if _looks_local(path_or_id) else (" (or, for a hub id, set local_files_only=false to download)")
        raise ConfigError(f"model path {path_or_id!r} does not exist; give an existing folder with config.json and "
                          f"weights, or a GGUF folder with gguf_file{hint}")
    kw: dict[str, Any] = {"local_files_only": local_files_only}
    if gguf_file is not None:
        kw["gguf_file"] = gguf_file
    try:
        with _loading_bars(progress):
            tok = tf.AutoTokenizer.from_pretrained(p, **kw)
            if device_map is not None:
                kw["device_map"] = device_map
            model = tf.AutoModelForCausalLM.from_pretrained(p, dtype=getattr(torch, dtype), **kw)
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not load a causal LM from {path_or_id!r}: {err}") from err
    if tok.pad_token is None:
        if pad_token == "eos":
            if tok.eos_token is None:
                raise ConfigError(f"tokenizer of {path_or_id!r} has neither a pad nor an eos token; add a pad token")
            tok.pad_token = tok.eos_token
        else:
            raise ConfigError(
                f"the tokenizer of {path_or_id!r} has no pad token; set pad_token: eos (unlearnkit masks padding by "
                "sequence length, so pad = eos is safe) or add a pad token to the tokenizer")
    model.generation_config.pad_token_id = tok.pad_token_id
    if lora is not None:
        model = apply_lora(model, lora)
    return model.eval(), tok


def check_dtype_on_device(dtype: str, device: torch.device | str) -> None:
    """Refuse a weight dtype that cannot train on ``device``.

    Raises:
        ConfigError: ``float16`` on a CPU (no fp16 kernels for training there, and no loss scaling for fp16
            weights); ``bfloat16`` on a GPU without bfloat16 support.
    """
    dev = torch.device(device)
    if dtype == "float16" and dev.type == "cpu":
        raise ConfigError("model dtype float16 cannot train on a CPU: use bfloat16 or float32 there (float16 "
                          "weights are for GPUs)")
    if dtype == "bfloat16" and dev.type == "cuda" and torch.cuda.is_available() and \
            not torch.cuda.is_bf16_supported():
        raise ConfigError("model dtype bfloat16 needs a GPU with bfloat16 support (Ampere or newer); use float16 "
                          "or float32")


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (unique storages counted once)."""
    seen, n = set(), 0
    for prm in model.parameters():
        if trainable_only and not prm.requires_grad:
            continue
        if prm.data_ptr() not in seen:
            seen.add(prm.data_ptr())
            n += prm.numel()
    return n


def parameter_bytes(*models: torch.nn.Module) -> int:
    """Bytes of unique parameter and buffer storage across ``models`` (shared storage counted once; KNOWN_FAULTS C53)."""
    seen, n = set(), 0
    for m in models:
        for t in list(m.parameters()) + list(m.buffers()):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                n += t.untyped_storage().nbytes()
    return n
