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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unlearnkit.errors import ConfigError

PROMPT_FORMATS = ("qa", "chat", "raw")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenised example.

    Attributes:
        input_ids: token ids, prompt then answer (then EOS).
        labels: same length; ``-100`` on prompt positions, the token id on answer positions (HF convention: the
            model at position t predicts ``labels[t]`` from ``input_ids[:t]``; the shift happens in the loss).
        prompt_len: number of prompt tokens (the answer starts at this index).
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    prompt_len: int

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
            head is dropped so that one answer token remains.
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
    return Encoded(ids, labels, len(prompt))


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
