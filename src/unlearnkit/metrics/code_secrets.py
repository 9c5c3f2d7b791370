"""Memorisation of secrets in code and code-completion utility (LLM track, metric ``code_secrets``; CodeEraser,
Chu et al., ICSE 2026, §4.1 and reference code CGCL-codes/naturalcc ``examples/code-unlearning``).

For every secret span of the forget files (token positions from the file's secret character spans):

- **MA** (memorisation accuracy, Tirumala et al. 2022): the share of the secret's tokens the model predicts greedily
  given the true prefix (the whole file up to that token) — ``validation_secret_ma`` of the reference;
- **EL_n** (extraction likelihood, Jang et al. 2023, arXiv:2210.01504): for every split point i of the secret, the
  model continues prefix + secret[:i] greedily for the remaining length; the share of the continuation's n-grams that
  occur in the true remainder, averaged over i (secrets shorter than n: 1 if the greedy continuation is the secret) —
  ``validation_secret_el``.

**Thresholds** (the paper's "memorization thresholds"): θ_o's mean MA and EL_n on the secrets of files it never saw
(the ``unseen`` split); a secret counts as *forgotten* when both its MA and its EL_n are at or below them.

**Utility**: teacher-forced next-token accuracy on held-out files (never trained on), greedy completion of a held-out
file's middle line (exact match after stripping), accuracy on retain files, and accuracy on the forget files' own
non-secret tokens (the code around a secret, which CodeEraser keeps and GA on whole files erases).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import DataError
from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.registry import METRICS


class CodeSecretsConfig(Frozen):
    """Settings of the ``code_secrets`` metric."""

    el_n: int = Field(3, ge=1, description="n of EL_n (the paper reports EL_3 / EL_5 / EL_10; secrets here are "
                      "~5-12 tokens)")
    completion_tokens: int = Field(24, ge=1, description="greedy tokens generated for line completion")


def _encoded_files(ctx: Any, split: str) -> tuple[Any, list[Any], list[list[bool]]]:
    from unlearnkit.data.text.code import CodeFile, secret_token_mask
    from unlearnkit.llm.tokenize import encode_qa

    qs = ctx.eval_set(split)
    enc = [encode_qa(ctx.tokenizer, it.question, it.answer, "raw", ctx.max_context) for it in qs]
    masks = [secret_token_mask(ctx.tokenizer, it, e.prompt_len, len(e)) if isinstance(it, CodeFile)
             else [False] * len(e) for it, e in zip(qs, enc)]
    return qs, enc, masks


def _scores(ctx: Any, split: str) -> list[Any]:
    """Teacher-forced per-token scores (target, greedy argmax) of the files of ``split`` (cached per context)."""
    from unlearnkit.llm.lm import score_encoded
    from unlearnkit.llm.tokenize import pad_id_of

    def run() -> list[Any]:
        _, enc, _ = _encoded_files(ctx, split)
        return score_encoded(ctx.model, enc, pad_id=pad_id_of(ctx.tokenizer), batch_size=ctx.settings.batch_size,
                             engine=ctx.engine, policy=ctx._scoring_policy())

    return ctx.cached(("code.scores", split), run)


def ngram_overlap(pred: list[int], label: list[int], n: int) -> float:
    """Share of ``label``'s n-grams matched by an n-gram of ``pred`` (the reference's per-split-point EL term):
    (# n-grams of pred that occur among label's) / (# label n-grams); 0 when label has none."""
    lab = [tuple(label[i:i + n]) for i in range(len(label) - n + 1)]
    if not lab:
        return 0.0
    have = set(lab)
    hits = sum(1 for i in range(len(pred) - n + 1) if tuple(pred[i:i + n]) in have)
    return min(hits, len(lab)) / len(lab)


def _greedy(model: Any, prompts: list[list[int]], new: list[int], pad: int, device: Any) -> list[list[int]]:
    """Greedy continuations (``new[i]`` tokens) of token-id prompts, left-padded, EOS not special (full length)."""
    from unlearnkit.llm.lm import eval_mode

    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, t - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, t - len(p):] = 1
    with eval_mode(model):
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max(new),
                             min_new_tokens=max(new), do_sample=False, num_beams=1, pad_token_id=pad,
                             eos_token_id=None)
    return [out[r, t:t + new[r]].tolist() for r in range(len(prompts))]


def secret_memorisation(ctx: Any, split: str, n: int) -> dict[str, np.ndarray]:
    """Per-secret MA and EL_n of ``ctx.model`` on the files of evaluation split ``split``.

    Returns:
        ``{"ma": float64 (k,), "el": float64 (k,), "file": int64 (k,) item id}`` over the k secret spans.

    Raises:
        DataError: the split has no secret token (no secret span, or every secret cut by the context length).
    """
    from unlearnkit.data.text.code import secret_token_spans
    from unlearnkit.llm.tokenize import pad_id_of

    def run() -> dict[str, np.ndarray]:
        qs, enc, masks = _encoded_files(ctx, split)
        scores = _scores(ctx, split)
        items: list[tuple[int, list[int], list[int]]] = []  # (file id, prefix ids, secret ids)
        ma: list[float] = []
        for it, e, m, sc in zip(qs, enc, masks, scores):
            for a, b in secret_token_spans(m):
                j0, j1 = a - e.prompt_len, b - e.prompt_len
                ma.append(float(np.mean(sc.argmax[j0:j1] == sc.target[j0:j1])))
                items.append((int(it.id), list(e.input_ids[:a]), list(e.input_ids[a:b])))
        if not items:
            raise DataError(f"evaluation split '{split}' has no secret token (no secret span in its files, or every "
                            "secret lies beyond the model's context)")
        pad = pad_id_of(ctx.tokenizer)
        dev = ctx.engine.device if ctx.engine is not None else torch.device("cpu")
        num = np.zeros(len(items))
        short = [k for k, (_, _, s) in enumerate(items) if len(s) < n]
        longest = max(len(s) for _, _, s in items)
        for i in range(max(longest - n + 1, 0)):
            rows = [k for k, (_, _, s) in enumerate(items) if len(s) - n + 1 > i]
            for c in range(0, len(rows), ctx.settings.batch_size):
                chunk = rows[c:c + ctx.settings.batch_size]
                preds = _greedy(ctx.model, [items[k][1] + items[k][2][:i] for k in chunk],
                                [len(items[k][2]) - i for k in chunk], pad, dev)
                for k, p in zip(chunk, preds):
                    num[k] += ngram_overlap(p, items[k][2][i:], n)
        el = np.array([num[k] / (len(s) - n + 1) if len(s) >= n else 0.0 for k, (_, _, s) in enumerate(items)])
        if short:
            preds = _greedy(ctx.model, [items[k][1] for k in short], [len(items[k][2]) for k in short], pad, dev)
            for k, p in zip(short, preds):
                el[k] = float(p == items[k][2])
        return {"ma": np.asarray(ma, dtype=np.float64), "el": el,
                "file": np.array([f for f, _, _ in items], dtype=np.int64)}

    return ctx.cached(("code.secrets", split, n), run)


def token_accuracy(ctx: Any, split: str, where: str = "all") -> float:
    """Teacher-forced greedy next-token accuracy over the files of ``split``: every scored token (``all``) or only
    the tokens outside secret spans (``context``)."""
    _, enc, masks = _encoded_files(ctx, split)
    hit = tot = 0
    for e, m, sc in zip(enc, masks, _scores(ctx, split)):
        ok = sc.argmax == sc.target
        if where == "context":
            keep = ~np.asarray(m[e.prompt_len:e.prompt_len + len(ok)], dtype=bool)
            ok = ok[keep]
        hit += int(ok.sum())
        tot += len(ok)
    return hit / max(tot, 1)


def line_completion(ctx: Any, split: str, max_new_tokens: int) -> np.ndarray:
    """Exact match (after stripping) of the greedy completion of each file's middle non-empty line, given the
    lines before it; float64 (n_files,) of 0 / 1 (files with fewer than 3 non-empty lines are skipped)."""
    prompts, targets = [], []
    for it in ctx.eval_set(split):
        lines = it.answer.split("\n")
        full = [i for i, ln in enumerate(lines) if ln.strip()]
        if len(full) < 3:
            continue
        k = full[len(full) // 2]
        prompts.append("\n".join(lines[:k]))
        targets.append(lines[k].strip())
    if not prompts:
        return np.zeros(0)
    gens = ctx.generations(prompts, ("code.lines", split), fmt="raw", max_new_tokens=max_new_tokens)
    return np.array([float(g.split("\n")[0].strip() == t) for g, t in zip(gens, targets)])


@METRICS.register("code_secrets", config=CodeSecretsConfig)
class CodeSecrets(Metric):
    """Secret memorisation (MA, EL_n) against thresholds measured by θ_o on never-seen secrets, and code utility
    (CodeEraser, ICSE 2026)."""

    track = "llm"
    reads = frozenset({"logits", "generations"})
    source = ("Chu et al., 'Scrub It Out!', ICSE 2026 (MA / EL_n and memorisation thresholds from unseen code); "
              "Tirumala et al. 2022 (MA); Jang et al. 2023, arXiv:2210.01504 (EL_n); code CGCL-codes/naturalcc")
    keys = {
        "code.secret_ma": "mean MA of the forget files' secrets (lower = forgotten; the goal: ≤ code.ma_threshold)",
        "code.secret_el": "mean EL_n of the forget files' secrets (lower = forgotten; goal ≤ code.el_threshold)",
        "code.ma_threshold": "θ_o's mean MA on secrets it never saw (the paper's forgetting threshold)",
        "code.el_threshold": "θ_o's mean EL_n on secrets it never saw",
        "code.unseen_ma": "this model's mean MA on the never-seen secrets",
        "code.forgotten_share": "share of forget secrets with MA ≤ and EL_n ≤ the thresholds (higher = more forgotten)",
        "code.heldout_acc": "teacher-forced next-token accuracy on held-out files (higher = better code utility)",
        "code.heldout_line_em": "exact-match rate of greedy middle-line completion on held-out files (higher better)",
        "code.retain_acc": "teacher-forced next-token accuracy on retain files (higher = better)",
        "code.context_acc": "next-token accuracy on the forget files' non-secret tokens (higher = surrounding code "
                            "kept)",
    }
    conformance = {
        "llm": {"data": {"source": "code", "code": {"n_files": 16, "secret_files": 4, "unseen_secret_files": 4,
                                                    "heldout_files": 4, "eval_retain": 4}},
                "model": {"kind": "tiny_gpt2", "max_len": 160}, "train": {"max_len": 160},
                "eval": {"max_items": 4}},
        "metrics": ["code_secrets"]}

    def __init__(self, config: CodeSecretsConfig | None = None) -> None:
        self.config = config or CodeSecretsConfig()

    def compute(self, ctx: Any) -> MetricOutput:
        n = self.config.el_n
        original = ctx.reference("original", "metric 'code_secrets' (thresholds measured by θ_o on unseen secrets)")
        thr = ctx.for_reference(original, ("code.unseen", n), lambda c: secret_memorisation(c, "unseen", n))
        ma_t, el_t = float(thr["ma"].mean()), float(thr["el"].mean())
        mine = secret_memorisation(ctx, "forget", n)
        unseen = secret_memorisation(ctx, "unseen", n)
        forgotten = (mine["ma"] <= ma_t) & (mine["el"] <= el_t)
        lines = line_completion(ctx, "heldout", self.config.completion_tokens)
        values = {
            "code.secret_ma": float(mine["ma"].mean()), "code.secret_el": float(mine["el"].mean()),
            "code.ma_threshold": ma_t, "code.el_threshold": el_t, "code.unseen_ma": float(unseen["ma"].mean()),
            "code.forgotten_share": float(forgotten.mean()),
            "code.heldout_acc": token_accuracy(ctx, "heldout"),
            "code.heldout_line_em": float(lines.mean()) if len(lines) else float("nan"),
            "code.retain_acc": token_accuracy(ctx, "retain"),
            "code.context_acc": token_accuracy(ctx, "forget", "context"),
        }
        per = {"secret_ma": mine["ma"], "secret_el": mine["el"], "secret_file": mine["file"],
               "unseen_ma": unseen["ma"], "forgotten": forgotten.astype(np.float64), "heldout_line_em": lines}
        return MetricOutput(values, per)


__all__ = ["CodeSecrets", "CodeSecretsConfig", "line_completion", "ngram_overlap", "secret_memorisation",
           "token_accuracy"]
