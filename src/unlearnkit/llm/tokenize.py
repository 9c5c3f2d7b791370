"""Encode question–answer pairs for causal LMs with the loss on answer tokens only, and collate them with masks built
from sequence lengths.

Why lengths, not token identity: when the pad token equals the EOS token, a mask computed as ``token != pad`` hides real
EOS tokens inside multi-turn inputs (KNOWN_FAULTS C01, locuslab/open-unlearning#128). Here the attention mask of a row
is ``1`` for its first ``len(row)`` positions and ``0`` after (right padding) or before (left padding), whatever the
token ids are; padded label positions are ``-100`` (ignored by ``cross_entropy``).

Prompt formats:
    ``qa``    ``"Question: {q}\\nAnswer:"`` followed by ``" {a}"`` (the TOFU question–answer layout);
    ``chat``  the tokenizer's chat template with one user turn and the generation prompt, then ``{a}``;
    ``raw``   ``{q}`` verbatim (may be empty: the whole text is the answer, e.g. MUSE corpora), then ``{a}`` verbatim.
Prompt and answer are tokenised separately and concatenated, so the answer boundary is exact; the answer ends with
EOS (labelled) unless ``add_eos=False``.

Inputs longer than the model's context are never fed whole (issue 13). The rules, by use:
    scoring / training (:func:`encode_qa` with ``max_len``): keep the prompt, cut the answer's tail; a prompt longer
        than ``max_len − 1`` loses its head (one answer token remains). For a raw text (empty prompt) this keeps its
        first ``max_len`` tokens, as MUSE's JSON training data (``pad_or_trim``) and open-unlearning's
        ``preprocess_pretraining_instance`` (content cut to ``max_length``) do.
    generation (:func:`keep_tail`): keep the prompt's last tokens (and its BOS), the text right before the
        continuation — MUSE's reference feeds whole prompts to a 4,096-position LLaMA, so it has no rule; for its
        VerbMem prompts (a prefix whose verbatim continuation is scored) the tail is what the continuation depends on.
Each cut is counted (``Encoded.truncated``, :class:`TruncationWarning`) and reported by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unlearnkit.errors import ConfigError

PROMPT_FORMATS = ("qa", "chat", "raw")
IGNORE_INDEX = -100
#: model-config attributes that hold the context length (positions), in the order they are tried
CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")


class TruncationWarning(UserWarning):
    """Inputs were cut to fit a token budget (the message says how many, of how many, and the budget)."""


def context_length(model: Any) -> int | None:
    """The number of positions ``model`` can attend to: the first of :data:`CONTEXT_ATTRS` set on ``model.config``
    (a positive int below 10⁷); None when the model does not say (then nothing is truncated for it)."""
    cfg = getattr(model, "config", None)
    for attr in CONTEXT_ATTRS:
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10_000_000:
            return v
    return None


def keep_tail(ids: Sequence[int], budget: int, bos_id: int | None = None) -> tuple[list[int], int]:
    """``ids`` cut to at most ``budget`` tokens by dropping tokens from the front; a leading ``bos_id`` is kept.

    Returns:
        ``(ids, dropped)``: the kept ids and how many were dropped (0 when ``ids`` already fit).

    Raises:
        ConfigError: ``budget`` < 1 (or < 2 when a BOS must be kept with at least one token).
    """
    ids = [int(t) for t in ids]
    if len(ids) <= budget:
        return ids, 0
    keep_bos = bos_id is not None and bool(ids) and ids[0] == bos_id
    if budget < (2 if keep_bos else 1):
        raise ConfigError(f"a token budget of {budget} cannot hold a prompt; give the model a longer context or "
                          "generate fewer tokens")
    tail = ids[len(ids) - (budget - 1):] if keep_bos else ids[len(ids) - budget:]
    out = [ids[0], *tail] if keep_bos else tail
    return out, len(ids) - len(out)


@dataclass(frozen=True)
class Encoded:
    """One tokenised example.

    Attributes:
        input_ids: token ids, prompt then answer (then EOS).
        labels: same length; ``-100`` on prompt positions, the token id on answer positions (HF convention: the
            model at position t predicts ``labels[t]`` from ``input_ids[:t]``; the shift happens in the loss).
        prompt_len: number of prompt tokens (the answer starts at this index).
        truncated: tokens dropped to fit ``max_len`` (0 when the example fit).
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    prompt_len: int
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_answer_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_len


def _check_fmt(fmt: str) -> None:
    if fmt not in PROMPT_FORMATS:
        raise ConfigError(f"unknown prompt format {fmt!r}; use one of {PROMPT_FORMATS}")


def format_prompt(tokenizer: Any, question: str, fmt: str = "qa") -> str:
    """The prompt text for ``question`` in format ``fmt`` (chat: the tokenizer's template with generation prompt).

    Raises:
        ConfigError: unknown format, or ``chat`` with a tokenizer that has no chat template.
    """
    _check_fmt(fmt)
    if fmt == "qa":
        return f"Question: {question}\nAnswer:"
    if fmt == "raw":
        return question
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("prompt format 'chat' needs a tokenizer with a chat template; use fmt 'qa' for this model")
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


def encode_prompt(tokenizer: Any, question: str, fmt: str = "qa") -> list[int]:
    """Token ids of the prompt (with BOS where the tokenizer adds one; chat templates carry their own)."""
    text = format_prompt(tokenizer, question, fmt)
    return list(tokenizer(text, add_special_tokens=(fmt != "chat"))["input_ids"])


def encode_qa(
    tokenizer: Any,
    question: str,
    answer: str,
    fmt: str = "qa",
    max_len: int | None = None,
    *,
    add_eos: bool = True,
) -> Encoded:
    """Tokenise one pair with labels on the answer (and EOS) only.

    Args:
        tokenizer: a transformers tokenizer.
        question, answer: the texts (``raw``: ``question`` is a prefix, possibly empty).
        fmt: ``qa`` | ``chat`` | ``raw``.
        max_len: truncate to this many tokens: the answer loses its tail first; if the prompt alone is too long its
            head is dropped so that one answer token remains. ``Encoded.truncated`` counts the dropped tokens.
        add_eos: end the answer with EOS (labelled).

    Returns:
        :class:`Encoded`.

    Raises:
        ConfigError: unknown format; ``max_len`` < 2.
    """
    prompt = encode_prompt(tokenizer, question, fmt)
    ans_text = f" {answer}" if fmt == "qa" else answer
    ans = list(tokenizer(ans_text, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        ans.append(int(tokenizer.eos_token_id))
    full_len = len(prompt) + len(ans)
    if max_len is not None:
        if max_len < 2:
            raise ConfigError(f"max_len must be ≥ 2, got {max_len}")
        if len(prompt) + len(ans) > max_len:
            keep = max_len - len(prompt)
            if keep < 1:
                prompt = prompt[len(prompt) - (max_len - 1):]
                keep = 1
            ans = ans[:keep]
    ids = tuple(int(t) for t in prompt + ans)
    labels = (IGNORE_INDEX,) * len(prompt) + tuple(int(t) for t in ans)
    return Encoded(ids, labels, len(prompt), full_len - len(ids))


def truncation_count(encoded: Sequence[Encoded]) -> tuple[int, int]:
    """``(examples cut, tokens dropped)`` over ``encoded`` (see ``Encoded.truncated``)."""
    cut = [e.truncated for e in encoded if e.truncated > 0]
    return len(cut), int(sum(cut))


def truncation_message(what: str, n_cut: int, n: int, budget: int, dropped: int, fix: str = "") -> str:
    """One sentence for a :class:`TruncationWarning` / a report: ``"train: 45 of 100 examples (45 %) ..."``."""
    pct = 100.0 * n_cut / max(n, 1)
    return (f"{what}: {n_cut} of {n} inputs ({pct:.0f} %) exceed {budget} tokens and were cut ({dropped} tokens "
            f"dropped in all)" + (f"; {fix}" if fix else ""))


def collate(encoded: Sequence[Encoded], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad a list of examples into a batch.

    Args:
        encoded: the examples.
        pad_id: token id written at padding positions (its identity never matters: masks come from lengths).
        padding_side: ``"right"`` (scoring, training) or ``"left"`` (generation).

    Returns:
        ``input_ids`` int64 (b, T), ``attention_mask`` int64 (b, T) with 1 on each row's first/last ``len`` positions,
        ``labels`` int64 (b, T) with ``-100`` at padding, and for left padding ``position_ids`` int64 (b, T)
        (0 at the first real token).

    Raises:
        ConfigError: empty input or unknown ``padding_side``.
    """
    if not encoded:
        raise ConfigError("collate needs at least one example")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    lens = [len(e) for e in encoded]
    b, t = len(encoded), max(lens)
    ids = torch.full((b, t), int(pad_id), dtype=torch.long)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    for i, (e, n) in enumerate(zip(encoded, lens)):
        sl = slice(0, n) if padding_side == "right" else slice(t - n, t)
        ids[i, sl] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, sl] = torch.tensor(e.labels, dtype=torch.long)
        mask[i, sl] = 1
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if padding_side == "left":
        out["position_ids"] = (mask.cumsum(1) - 1).clamp_min(0)
    return out


def pad_id_of(tokenizer: Any) -> int:
    """The id written at padding positions: pad, else eos, else 0 (masks never depend on it)."""
    for v in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if v is not None:
            return int(v)
    return 0


def corpus_texts(sets: Any, fmt: str = "qa") -> list[str]:
    """Every text a model will read from QA sets (prompts in ``fmt``, answers, paraphrases, perturbed and IdK
    answers): the corpus for :func:`unlearnkit.models.llm.train_tokenizer`. ``fmt`` must not be ``chat``."""
    out: list[str] = []
    for s in sets:
        for it in s:
            out.append(format_prompt(None, it.question, fmt) if fmt != "chat" else it.question)
            out.append(it.answer)
            out.extend(x for x in (it.paraphrased_answer, it.idk_answer) if x)
            out.extend(it.perturbed_answers)
    return out
