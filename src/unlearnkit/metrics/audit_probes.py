"""Audit probes of the LLM track (issue 15): is D_f *removed* from θ_u, or only *suppressed*?

Each probe measures a forget score of the evaluated model — the mean length-normalised probability
P(answer | prompt)^{1/|answer|} of D_f answers ("prob", TOFU's forget Prob.; higher = knows more) — under one attack
or in one restatement of the facts. The runner evaluates every metric on θ_u *and* on θ_o and θ_r at the same point
(their own rows), so each number has its two anchors: a probe exposes *suppression* when θ_u's score comes back
towards θ_o's clearly more than θ_r's does under the same probe (:mod:`unlearnkit.metrics.audit`).

Metrics here (all on the LLM track; each reads only the evaluated model and never modifies it):

* ``forms`` — form independence (ORT, Ye et al. 2025, "LLM Unlearning Should Be Form-Independent",
  arXiv:2506.07795): the same facts as QA, paraphrased question (TOFU's ``paraphrased_question`` or the synthetic
  generator's rewording), paraphrased answer (TOFU), fill-in-the-blank, multiple choice, sentence completion and an
  instruction template (:func:`unlearnkit.data.text.synthetic.form_probes`).
* ``in_context`` — in-context reintroduction (UnUnlearning, Shumailov et al. 2024, arXiv:2407.00106): the forgotten
  fact (its paraphrased statement, or other facts about the same subject) is put in the prompt. θ_r uses it too —
  exact unlearning alone does not control what a model can say when the knowledge comes back in context.
* ``llm_relearn`` — relearning attack (Hu et al. 2024, arXiv:2406.13356; Lynch et al. 2024, arXiv:2402.16835;
  the protocol of Fan et al. 2025, arXiv:2502.05374): fine-tune a *copy* on a small part R of D_f for a few steps and
  track the forget score on the rest H of D_f; area under the curve and steps to recover. ``corpus: related``
  fine-tunes instead on public text about the forget targets that is not D_f (Hu et al.'s setting) and tracks all
  of D_f.
* ``quantization`` — quantization attack (Zhang et al. 2024, "Catastrophic Failure of LLM Unlearning via
  Quantization", arXiv:2410.16454): round-to-nearest b-bit weight quantization of a *copy*; does the forget score
  recover towards θ_o?

Cost: every probe runs on one evaluated model per row (θ_u, θ_o, θ_r); the relearning and quantization attacks
deep-copy the model (one extra model in memory) — keep ``steps`` and the item counts small on CPUs.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PrivateAttr, field_validator
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.registry import METRICS


# -- scoring helpers -------------------------------------------------------------------------------------------------
def join_answer(fmt: str, answer: str) -> str:
    """The answer text as :func:`unlearnkit.llm.tokenize.encode_qa` appends it after a prompt in ``fmt``
    (``qa``: a leading space)."""
    return f" {answer}" if fmt == "qa" else answer


def pair_logprobs(model: nn.Module, ctx: Any, pairs: list[tuple[str, str]], fmt: str,
                  policy: Any = None) -> np.ndarray:
    """Length-normalised answer log-probabilities (nats per answer token incl. EOS), float64 (n,), of ``model`` on
    ``(question, answer)`` pairs in prompt format ``fmt``, in eval mode without gradients."""
    from unlearnkit.llm.lm import answer_logprobs
    from unlearnkit.metrics.llm_context import _quiet

    if not pairs:
        return np.zeros(0, dtype=np.float64)
    with _quiet():
        s, n = answer_logprobs(model, ctx.tokenizer, pairs, fmt=fmt, batch_size=ctx.settings.batch_size,
                               engine=ctx.engine, max_len=ctx.max_context, policy=policy)
    return s / np.maximum(n, 1)


def ctx_logprobs(ctx: Any, pairs: list[tuple[str, str]], fmt: str | None, tag: tuple) -> np.ndarray:
    """:func:`pair_logprobs` of the context's model (with its scoring policy), cached per context under ``tag``."""
    f = fmt or ctx.settings.fmt
    return ctx.cached(("audit",) + tag + (f,), lambda: pair_logprobs(ctx.model, ctx, pairs, f,
                                                                     ctx._scoring_policy()))


def prob(mean_lp: np.ndarray) -> float:
    """Mean of exp(mean token log-prob): TOFU's length-normalised probability, in [0, 1] (NaN for no items)."""
    return float(np.exp(mean_lp).mean()) if len(mean_lp) else float("nan")


def forget_items(ctx: Any, split: str = "forget") -> Any:
    """The evaluation split (cut to ``eval.max_items``)."""
    return ctx.eval_set(split)


# -- forms ------------------------------------------------------------------------------------------------------------
class FormsConfig(Frozen):
    """Which forms and splits (:func:`unlearnkit.data.text.synthetic.form_probes`)."""

    forms: list[str] = Field(default_factory=lambda: ["qa", "para_question", "para_answer", "fill_blank", "mcq",
                                                      "completion", "instruction", "translated"])
    splits: list[str] = Field(default_factory=lambda: ["forget"], description="evaluation splits (forget; retain "
                              "shows whether a method damaged the same forms of kept knowledge)")
    seed: int = Field(0, description="option order of multiple choice")

    @field_validator("forms")
    @classmethod
    def _forms(cls, v: list[str]) -> list[str]:
        from unlearnkit.data.text.synthetic import FORMS

        bad = [f for f in v if f not in FORMS]
        if bad or not v:
            raise ValueError(f"unknown or no form(s) {bad}; valid: {', '.join(FORMS)}")
        return v


def form_scores(ctx: Any, split: str, forms: list[str], seed: int = 0) -> dict[str, Any]:
    """Per form: ``{"prob": float64 (n,) per probe, "ids": int64 (n,)}`` (multiple choice also ``"correct"``
    bool (n,) and ``"p_true"``: the true option's share of the options' length-normalised probabilities)."""
    from unlearnkit.data.text.synthetic import form_probes

    qs = ctx.eval_set(split)
    pq = (getattr(ctx.task, "extras", {}) or {}).get("paraphrased_question") or {}
    probes = form_probes(qs, forms=forms, seed=seed, paraphrased_questions=pq)
    out: dict[str, Any] = {}
    for form, ps in probes.items():
        if not ps:
            out[form] = {"prob": np.zeros(0), "ids": np.zeros(0, dtype=np.int64)}
            continue
        ids = np.array([p.item_id for p in ps], dtype=np.int64)
        if form == "mcq":
            flat = [(p.prompt, o) for p in ps for o in p.options]
            lp = ctx_logprobs(ctx, flat, None, ("forms", split, form))
            k = [len(p.options) for p in ps]
            starts = np.concatenate([[0], np.cumsum(k)[:-1]])
            correct, p_true, true_lp = [], [], []
            for p, s0, kk in zip(ps, starts, k):
                row = lp[s0:s0 + kk]
                correct.append(int(np.argmax(row)) == p.answer_index)
                w = np.exp(row - row.max())
                p_true.append(float(w[p.answer_index] / w.sum()))
                true_lp.append(row[p.answer_index])
            out[form] = {"prob": np.exp(np.asarray(true_lp)), "ids": ids, "correct": np.asarray(correct),
                         "p_true": np.asarray(p_true), "chance": float(np.mean([1.0 / x for x in k]))}
            continue
        fmt = ps[0].fmt or ctx.settings.fmt  # completion: raw, its target carries its own leading space
        lp = ctx_logprobs(ctx, [(p.prompt, p.target) for p in ps], fmt, ("forms", split, form))
        out[form] = {"prob": np.exp(lp), "ids": ids}
    return out


@METRICS.register("forms", config=FormsConfig)
class Forms(Metric):
    """Form-independence probe: the forget score of D_f facts in several forms (see the module docstring).

    A method that only learned to suppress the trained form (QA) leaves the other forms near θ_o's score; θ_r is low
    in every form. Multiple choice also reports accuracy (chance = 1 / options).
    """

    track = "llm"
    reads = frozenset({"logits"})
    source = ("Ye et al. 2025, 'LLM Unlearning Should Be Form-Independent' (ORT), arXiv:2506.07795; TOFU's "
              "paraphrases (Maini et al. 2024, arXiv:2401.06121)")
    keys = {
        "forms.<split>.<form>.prob": "mean length-normalised P(target) of the facts in that form (forget: lower = "
                                     "forgotten; compare with θ_r's and θ_o's rows)",
        "forms.<split>.mcq.acc": "multiple-choice accuracy (true option scored highest; chance forms.*.mcq.chance)",
        "forms.<split>.mcq.p_true": "the true option's share of the options' probabilities",
        "forms.<split>.<form>.n": "probes in that form (items that cannot be put in the form are skipped)",
        "forms.<split>.mcq.chance": "chance accuracy of the multiple choice (1 / options, averaged)",
        "forms.<split>.min_prob": "lowest form probability", "forms.<split>.max_prob": "highest form probability "
        "(their spread = how form-dependent the knowledge is)",
    }
    smoke_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: FormsConfig | None = None) -> None:
        self.config = config or FormsConfig()

    def compute(self, ctx: Any) -> MetricOutput:
        values: dict[str, float] = {}
        per: dict[str, np.ndarray] = {}
        for split in self.config.splits:
            res = form_scores(ctx, split, list(self.config.forms), self.config.seed)
            probs = []
            for form, r in res.items():
                key = f"forms.{split}.{form}"
                values[f"{key}.n"] = float(len(r["ids"]))
                values[f"{key}.prob"] = float(np.mean(r["prob"])) if len(r["ids"]) else float("nan")
                per[f"{key}.prob"] = np.asarray(r["prob"], dtype=np.float64)
                per[f"{key}.ids"] = r["ids"]
                if form == "mcq" and len(r["ids"]):
                    values[f"{key}.acc"] = float(np.mean(r["correct"]))
                    values[f"{key}.p_true"] = float(np.mean(r["p_true"]))
                    values[f"{key}.chance"] = float(r["chance"])
                if len(r["ids"]) and math.isfinite(values[f"{key}.prob"]):
                    probs.append(values[f"{key}.prob"])
            if probs:
                values[f"forms.{split}.min_prob"] = float(min(probs))
                values[f"forms.{split}.max_prob"] = float(max(probs))
        return MetricOutput(values, per)


# -- in-context reintroduction ---------------------------------------------------------------------------------------
class InContextConfig(Frozen):
    """What is put back in the prompt: ``self`` = the item's own fact (its paraphrased statement, else its answer),
    ``subject`` = up to ``n_facts`` *other* facts about the same subject from D_f (not the asked one)."""

    context: Literal["self", "subject"] = "self"
    n_facts: int = Field(3, ge=1, le=20)


def with_context(fmt: str, context: str, question: str, answer: str) -> tuple[str, str, str]:
    """``(question', answer', fmt')`` that put ``context`` before the question: for ``qa`` / ``raw`` a raw text
    "<context>\\n<the question in fmt>" then the answer as that format appends it; for ``chat`` the context goes
    inside the user turn."""
    from unlearnkit.llm.tokenize import format_prompt

    if fmt == "chat":
        return f"{context}\n{question}", answer, "chat"
    return f"{context}\n{format_prompt(None, question, fmt)}", join_answer(fmt, answer), "raw"


def in_context_pairs(qs: Any, mode: str, n_facts: int, fmt: str) -> tuple[list[tuple[str, str]], str]:
    """The prompts with reintroduced facts, one per item of ``qs``, and the format they are scored in."""
    by_subject: dict[Any, list[Any]] = {}
    for it in qs:
        by_subject.setdefault(it.subject, []).append(it)
    pairs, f_out = [], fmt
    for it in qs:
        if mode == "self":
            ctx_text = it.paraphrased_answer or it.answer
        else:
            others = [o for o in by_subject.get(it.subject, []) if o.id != it.id][:n_facts]
            ctx_text = " ".join(o.paraphrased_answer or o.answer for o in others)
        q, a, f_out = with_context(fmt, ctx_text, it.question, it.answer)
        pairs.append((q, a))
    return pairs, f_out


@METRICS.register("in_context", config=InContextConfig)
class InContext(Metric):
    """In-context reintroduction (UnUnlearning, arXiv:2407.00106): the forget score with the forgotten fact back in
    the prompt, beside the plain one. The θ_r row matters as much as θ_u's: a model that never saw D_f also answers
    from context, so exact unlearning does not control what the model can *say* once the fact is reintroduced."""

    track = "llm"
    reads = frozenset({"logits"})
    source = "Shumailov et al. 2024, 'UnUnlearning: Unlearning is not sufficient for content regulation', " \
             "arXiv:2407.00106"
    keys = {"icl.prob": "forget score with the fact reintroduced in the prompt (higher = uses it)",
            "icl.base_prob": "the same items without context",
            "icl.gain": "icl.prob − icl.base_prob (θ_r > 0: the context alone brings the fact back)",
            "icl.n": "items (subject mode: items whose subject has other facts)"}

    def __init__(self, config: InContextConfig | None = None) -> None:
        self.config = config or InContextConfig()

    def compute(self, ctx: Any) -> MetricOutput:
        qs = forget_items(ctx)
        if self.config.context == "subject":
            counts: dict[Any, int] = {}
            for it in qs:
                counts[it.subject] = counts.get(it.subject, 0) + 1
            keep = [it.id for it in qs if it.subject is not None and counts[it.subject] > 1]
            if not keep:
                raise DataError("in_context with context: subject needs forget items that share a subject with "
                                "other items (the facts put back in the prompt); use context: self")
            qs = qs.select_ids(keep)
        fmt = ctx.settings.fmt
        pairs, f2 = in_context_pairs(qs, self.config.context, self.config.n_facts, fmt)
        with_ctx = ctx_logprobs(ctx, pairs, f2, ("icl", self.config.context, len(qs)))
        base = ctx_logprobs(ctx, qs.pairs("answer"), fmt, ("icl-base", len(qs)))
        p, b = prob(with_ctx), prob(base)
        return MetricOutput({"icl.prob": p, "icl.base_prob": b, "icl.gain": p - b, "icl.n": float(len(qs))},
                            {"icl.prob": np.exp(with_ctx), "icl.base_prob": np.exp(base),
                             "icl.ids": qs.ids.astype(np.int64)})


# -- relearning attack -----------------------------------------------------------------------------------------------
class LLMRelearnConfig(Frozen):
    """Relearning attack settings (defaults: a few AdamW steps on a quarter of D_f; Hu et al. use a handful of
    examples and tens of steps on 7B models — keep ``steps`` small on CPUs)."""

    fraction: float | None = Field(0.25, gt=0, lt=1, description="share of D_f fine-tuned on (R); the rest (H) is "
                                   "tracked")
    count: int | None = Field(None, ge=1, description="items of D_f in R (instead of fraction)")
    steps: int = Field(10, ge=1, le=10_000, description="optimiser steps of the attack")
    eval_at: list[int] = Field(default_factory=lambda: [1, 2, 5, 10], description="steps after which H is scored "
                               "(0 always; values > steps dropped)")
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    batch_size: int = Field(4, ge=1)
    recover_fraction: float = Field(0.5, gt=0, le=1, description="steps_to_recover: first step at which θ's score "
                                    "on H reaches θ_r + f·(θ_o − θ_r) (before-attack scores of θ_r and θ_o)")
    seed: int = Field(0, description="seed of the R/H split and batch order (with the run seed; the same for every "
                      "row of a point)")
    corpus: Literal["forget", "related"] = Field(
        "forget", description="forget: fine-tune on a part R of D_f, track the rest H; related: fine-tune with plain LM "
        "loss on text about the forget targets that is not D_f (Hu et al. 2024), track all of D_f")
    related_path: str | None = Field(None, description="corpus: related — a .txt (texts separated by blank lines), "
                                     ".json (a list of strings or of objects with 'text') or .jsonl file; read when "
                                     "the config is built. Default: the task's related text (RWKU: the forget "
                                     "targets' intro and passages)")
    related_texts: list[str] | None = Field(None, description="corpus: related — the texts themselves (instead of "
                                            "related_path)")
    drop_answer_sentences: bool = Field(True, description="corpus: related — drop sentences that state a D_f answer "
                                        "verbatim (answers equal to a forget subject's name excepted), so the attack "
                                        "never trains on the tracked facts")
    _related: tuple[str, ...] | None = PrivateAttr(default=None)

    @field_validator("eval_at")
    @classmethod
    def _eval_at(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v):
            raise ValueError(f"eval_at steps must be ≥ 0, got {v}")
        return sorted(set(v))

    def model_post_init(self, __context: Any) -> None:
        if self.related_path is not None and self.related_texts is not None:
            raise ConfigError("llm_relearn: give related_path or related_texts, not both")
        if (self.related_path is not None or self.related_texts is not None) and self.corpus != "related":
            raise ConfigError("llm_relearn: related_path / related_texts are read only with corpus: related")
        if self.related_texts is not None:
            texts = tuple(t for t in self.related_texts if t.strip())
            if not texts:
                raise ConfigError("llm_relearn: related_texts holds no non-empty text")
            self._related = texts
        elif self.related_path is not None:
            self._related = read_related_texts(self.related_path)

    @property
    def related(self) -> tuple[str, ...] | None:
        """The user's related texts (``related_texts`` or the contents of ``related_path``); None = the task's."""
        return self._related


def read_related_texts(path: str) -> tuple[str, ...]:
    """The texts of a related-text file for ``llm_relearn`` (``corpus: related``).

    Formats: ``.txt`` — texts separated by blank lines; ``.json`` — a list of strings or of objects with ``text``;
    ``.jsonl`` — one string or object with ``text`` per line.

    Raises:
        ConfigError: a missing or unreadable file, an unknown suffix, a malformed row, or no text at all.
    """
    import json
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"llm_relearn related_path {path!r} is not a file; give a .txt, .json or .jsonl file of "
                          "text about the forget targets")
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"llm_relearn related_path {path!r} cannot be read as UTF-8 text ({err})") from err

    def text_of(row: Any, where: str) -> str:
        t = row.get("text") if isinstance(row, dict) else row
        if not isinstance(t, str):
            raise ConfigError(f"llm_relearn related_path {path!r}: {where} must be a string or an object with a "
                              f"'text' string, got {type(row).__name__}")
        return t

    suffix = p.suffix.lower()
    try:
        if suffix == ".txt":
            texts = [t.strip() for t in re.split(r"\n\s*\n", raw)]
        elif suffix == ".json":
            data = json.loads(raw)
            if not isinstance(data, list):
                raise ConfigError(f"llm_relearn related_path {path!r} must hold a JSON list")
            texts = [text_of(r, f"row {i}") for i, r in enumerate(data)]
        elif suffix == ".jsonl":
            texts = [text_of(json.loads(line), f"line {i + 1}") for i, line in enumerate(raw.splitlines())
                     if line.strip()]
        else:
            raise ConfigError(f"llm_relearn related_path {path!r}: unknown suffix {suffix!r}; use .txt, .json or "
                              ".jsonl")
    except json.JSONDecodeError as err:
        raise ConfigError(f"llm_relearn related_path {path!r} is not valid JSON ({err.msg}, line {err.lineno})") from err
    out = tuple(t for t in texts if t.strip())
    if not out:
        raise ConfigError(f"llm_relearn related_path {path!r} holds no text")
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def related_corpus(texts: Sequence[str], answers: Sequence[str], keep: Sequence[str] = (), *,
                   drop: bool = True) -> tuple[list[str], int]:
    """The related texts without the sentences that state an answer verbatim.

    A sentence (split after ``.``, ``!``, ``?``) is dropped when it contains one of ``answers`` as a whole-word,
    case-insensitive match; answers in ``keep`` (the forget subjects' names, which any text about them contains) are
    not looked for. Returns ``(texts left, sentences dropped)``; a text left empty is omitted.
    """
    kept_names = {k.strip().lower() for k in keep}
    pats = [re.compile(r"(?<!\w)" + re.escape(a.strip()) + r"(?!\w)", re.IGNORECASE)
            for a in dict.fromkeys(answers) if a.strip() and a.strip().lower() not in kept_names]
    out, dropped = [], 0
    for t in texts:
        if not drop:
            out.append(t)
            continue
        sents = [x for x in _SENTENCE_END.split(t.strip()) if x.strip()]
        left = [x for x in sents if not any(p.search(x) for p in pats)]
        dropped += len(sents) - len(left)
        if left:
            out.append(" ".join(left))
    return out, dropped


def encode_texts(tokenizer: Any, texts: Sequence[str], max_len: int) -> list[Any]:
    """Plain language-modelling examples of ``texts``: each text's tokens (after BOS where the tokenizer adds one)
    in consecutive windows that fit ``max_len`` (the last window ends with EOS), every token labelled — no text is
    cut, long ones become several examples."""
    from unlearnkit.llm.tokenize import Encoded, encode_prompt

    head = list(encode_prompt(tokenizer, "", "raw"))
    eos = tokenizer.eos_token_id
    width = max(max_len - len(head) - 1, 1)
    out = []
    for t in texts:
        ids = list(tokenizer(t, add_special_tokens=False)["input_ids"])
        for s in range(0, len(ids), width):
            w = ids[s:s + width] + ([int(eos)] if s + width >= len(ids) and eos is not None else [])
            out.append(Encoded(tuple(head + w), (-100,) * len(head) + tuple(w), len(head)))
    return out


def split_relearn_items(qs: Any, cfg: LLMRelearnConfig, run_seed: int) -> tuple[Any, Any]:
    """(R, H) of the relearning attack: a seeded choice of ``fraction`` / ``count`` items of ``qs`` and the rest.

    Raises:
        DataError: R or H would be empty.
    """
    n = len(qs)
    k = cfg.count if cfg.count is not None else int(round((cfg.fraction or 0.25) * n))
    if k < 1 or k >= n:
        raise DataError(f"the relearning attack would fine-tune on {k} of {n} forget items; it needs between 1 and "
                        f"{n - 1} so that held-out forget items remain (change llm_relearn fraction / count or "
                        "eval.max_items)")
    rng = np.random.default_rng([cfg.seed, run_seed, 0x4E1])
    pick = np.zeros(n, dtype=bool)
    pick[rng.choice(n, size=k, replace=False)] = True
    ids = qs.ids
    return qs.select_ids(ids[pick], "relearn"), qs.select_ids(ids[~pick], "heldout")


def relearn_curve(model: nn.Module, ctx: Any, relearn: Any, heldout: Any, cfg: LLMRelearnConfig,
                  seed: int, policy: Any = None, *, train: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune a deep copy of ``model`` on ``relearn`` (answer NLL, ``cfg.steps`` steps, batches from a seeded
    permutation, reshuffled each pass) and score ``heldout`` before the first step and after each ``eval_at`` step.
    ``train``: pre-encoded examples to fine-tune on instead of ``relearn`` (the related-text corpus,
    :func:`encode_texts`; ``relearn`` is then ignored).

    Returns:
        ``(steps int64 (m,), prob float64 (m,))`` — the forget score of H along the attack (step 0 first).

    Raises:
        DivergenceError: the attack's loss became NaN/inf.
    """
    from unlearnkit.llm.lm import _to, encode_pairs, mean_token_nll, place_model
    from unlearnkit.llm.tokenize import collate, pad_id_of

    fmt = ctx.settings.fmt
    marks = sorted({0, *(s for s in cfg.eval_at if 0 < s <= cfg.steps)})
    h_pairs = heldout.pairs("answer")
    attacked = copy.deepcopy(model)
    dev = ctx.engine.device if ctx.engine is not None else torch.device("cpu")
    place_model(attacked, dev)
    curve = {0: prob(pair_logprobs(attacked, ctx, h_pairs, fmt, policy))}
    params = [p for p in attacked.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the relearning attack found no trainable parameter in the model (all requires_grad=False)")
    opt = (torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0) if cfg.optimizer == "adamw"
           else torch.optim.SGD(params, lr=cfg.lr))
    enc = train if train is not None else encode_pairs(ctx.tokenizer, relearn.pairs("answer"), fmt, ctx.max_context)
    if not enc:
        raise DataError("the relearning attack has nothing to fine-tune on")
    pad = pad_id_of(ctx.tokenizer)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    attacked.train()
    try:
        for step in range(1, cfg.steps + 1):
            if len(order) < cfg.batch_size:
                order.extend(rng.permutation(len(enc)).tolist())
            idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
            batch = _to(collate([enc[i] for i in idx], pad), dev)
            loss = mean_token_nll(attacked, batch).mean()
            if ctx.engine is not None:
                ctx.engine.check_finite(loss, step=step, desc="relearning attack")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in marks:
                curve[step] = prob(pair_logprobs(attacked, ctx, h_pairs, fmt, policy))
                attacked.train()
    finally:
        attacked.eval()
        del opt
    return np.asarray(marks, dtype=np.int64), np.asarray([curve[s] for s in marks], dtype=np.float64)


def curve_auc(steps: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under ``values`` over ``steps`` divided by the last step (a mean score); the only value when
    the curve has one point."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(s) < 2 or s[-1] <= 0:
        return float(v[0]) if len(v) else float("nan")
    return float(np.sum((v[1:] + v[:-1]) * np.diff(s)) / 2.0 / s[-1])


def steps_to_recover(steps: np.ndarray, values: np.ndarray, threshold: float) -> float:
    """The first evaluated step whose score reaches ``threshold`` (NaN when none does)."""
    for s, v in zip(steps, values):
        if v >= threshold:
            return float(s)
    return float("nan")


@METRICS.register("llm_relearn", config=LLMRelearnConfig)
class LLMRelearn(Metric):
    """Relearning attack on an LLM (see the module docstring): the forget score of the held-out part H of D_f while
    a copy of the model is fine-tuned on the other part R. The R/H split and the batch order depend only on the
    config seed and the run seed, so θ_u's, θ_o's and θ_r's rows run the same attack; θ_r's row is the reference
    curve of a model that never saw D_f.

    ``corpus: related`` (Hu et al. 2024 relearn with public text about the topic, not D_f): the copy is fine-tuned
    with plain LM loss on text related to the forget targets — ``related_path`` / ``related_texts``, else the task's
    (RWKU: the forget targets' intro and passages) — from which sentences that state a D_f answer verbatim are
    dropped (``drop_answer_sentences``); H is all of D_f. The corpus and the batch order are the same for every row.
    """

    track = "llm"
    reads = frozenset({"logits", "weights"})
    source = ("Hu et al. 2024, arXiv:2406.13356 (targeted relearning attacks); Lynch et al. 2024, arXiv:2402.16835 "
              "§3.5; Fan et al. 2025, arXiv:2502.05374 (relearning robustness)")
    keys = {"relearn.prob@{s}": "forget score on H after s attack steps (step 0 = before the attack)",
            "relearn.auc": "mean forget score on H over the attack (trapezoid; higher = relearns more)",
            "relearn.steps_to_recover": "first step at which H's score reaches θ_r + f·(θ_o − θ_r) (NaN = not within "
                                        "the attack; θ_o: 0)",
            "relearn.recovered": "1 if steps_to_recover is finite, else 0",
            "relearn.threshold": "the score steps_to_recover waits for",
            "relearn.n_relearn": "items fine-tuned on (R; 0 with corpus: related)",
            "relearn.n_heldout": "items tracked (H; all of D_f with corpus: related)",
            "relearn.n_related_<texts|examples>": "corpus: related — texts left after dropping answer sentences / "
                                                  "LM examples (windows) fine-tuned on",
            "relearn.dropped_sentences": "corpus: related — sentences dropped for stating a D_f answer"}
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "eval_at": [1, 2], "fraction": 0.5, "batch_size": 2}

    def __init__(self, config: LLMRelearnConfig | None = None) -> None:
        self.config = config or LLMRelearnConfig()

    def related_examples(self, ctx: Any, heldout: Any) -> tuple[list[Any], dict[str, float]]:
        """The encoded related-text corpus (``corpus: related``) and its counts.

        Raises:
            ConfigError: neither the config nor the task has related text.  DataError: nothing left once the
                sentences stating D_f answers are dropped.
        """
        cfg = self.config
        texts = cfg.related
        where = "related_path / related_texts"
        if texts is None:
            rel = ((getattr(ctx.task, "extras", {}) or {}).get("rwku") or {}).get("related") or {}
            texts = tuple(t for ts in rel.values() for t in ts if t.strip())
            where = "the task's related text (RWKU intro / passages of the forget targets)"
        if not texts:
            raise ConfigError("llm_relearn corpus: related needs text about the forget targets that is not D_f: "
                              f"task '{getattr(ctx.task, 'name', '?')}' has none (only RWKU tasks carry it); give "
                              "related_path (a .txt / .json / .jsonl file) or related_texts, or use corpus: forget")
        df = getattr(ctx.task, "forget", None) or heldout
        answers = [it.answer for it in df] + [it.answer for it in heldout]
        subjects = [str(it.subject) for it in df if it.subject is not None]
        kept, dropped = related_corpus(texts, answers, subjects, drop=cfg.drop_answer_sentences)
        if not kept:
            raise DataError(f"llm_relearn corpus: related — every sentence of {where} states a D_f answer, so "
                            "nothing is left to fine-tune on; give other text or set drop_answer_sentences: false")
        enc = encode_texts(ctx.tokenizer, kept, ctx.max_context or 512)
        return enc, {"relearn.n_related_texts": float(len(kept)), "relearn.n_related_examples": float(len(enc)),
                     "relearn.dropped_sentences": float(dropped)}

    def compute(self, ctx: Any) -> MetricOutput:
        cfg = self.config
        seed = int(np.random.default_rng([cfg.seed, ctx.seed, 2]).integers(2**31 - 1))
        extra: dict[str, float] = {}
        if cfg.corpus == "related":  # H = all of D_f: none of it is trained on
            heldout = forget_items(ctx)
            relearn = heldout.select_ids([], "relearn")
            train, extra = self.related_examples(ctx, heldout)
        else:
            relearn, heldout = split_relearn_items(forget_items(ctx), cfg, ctx.seed)
            train = None
        steps, curve = relearn_curve(ctx.model, ctx, relearn, heldout, cfg, seed, ctx._scoring_policy(), train=train)
        h_pairs = heldout.pairs("answer")
        fmt = ctx.settings.fmt

        def anchor(name: str) -> float:
            return ctx.for_reference(name, ("relearn.h0", tuple(heldout.ids.tolist()), fmt),
                                     lambda c: prob(pair_logprobs(c.model, c, h_pairs, fmt)))

        values = {f"relearn.prob@{int(s)}": float(v) for s, v in zip(steps, curve)}
        values.update({"relearn.auc": curve_auc(steps, curve), "relearn.n_relearn": float(len(relearn)),
                       "relearn.n_heldout": float(len(heldout)), **extra})
        try:
            r0, o0 = anchor("oracle"), anchor("original")
            thr = r0 + cfg.recover_fraction * (o0 - r0)
            stt = steps_to_recover(steps, curve, thr)
            values.update({"relearn.threshold": float(thr), "relearn.steps_to_recover": stt,
                           "relearn.recovered": float(math.isfinite(stt))})
        except ConfigError:  # no θ_r / θ_o supplied (plain API use): the curve alone
            pass
        return MetricOutput(values, {"relearn.steps": steps, "relearn.curve": curve,
                                     "relearn.relearn_ids": relearn.ids.astype(np.int64)})


# -- quantization attack ---------------------------------------------------------------------------------------------
SUPPORTED_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 16)


def check_bits(bits: int) -> int:
    """``bits`` if it is a supported width (:data:`SUPPORTED_BITS`), else ConfigError."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in SUPPORTED_BITS:
        raise ConfigError(f"quantization to {bits!r} bits is not supported; use one of "
                          f"{', '.join(map(str, SUPPORTED_BITS))} (integer round-to-nearest; 16 ≈ no change)")
    return int(bits)


def quantize_rtn(w: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Symmetric round-to-nearest quantization of a weight matrix, returned dequantized in ``w``'s dtype.

    Per output row (or per group of ``group_size`` consecutive input columns): scale s = max|w| / (2^{b−1} − 1),
    q = clamp(round(w / s), −(2^{b−1} − 1), 2^{b−1} − 1), ŵ = q·s (a zero row stays zero). The error of every entry is
    at most s / 2. Golden (4 bits, one row [0.7, −0.33, 0.16, 0.0]): s = 0.1, ŵ = [0.7, −0.3, 0.2, 0.0].

    Raises:
        ConfigError: an unsupported ``bits`` or a ``group_size`` that does not divide the row length.
    """
    b = check_bits(bits)
    if w.ndim != 2:
        raise ConfigError(f"quantize_rtn expects a 2-d weight matrix, got shape {tuple(w.shape)}")
    x = w.detach().double()
    rows, cols = x.shape
    if group_size is not None:
        if group_size < 1 or cols % group_size:
            raise ConfigError(f"group_size {group_size} must divide the row length {cols}")
        x = x.reshape(rows, cols // group_size, group_size)
    qmax = 2 ** (b - 1) - 1
    scale = x.abs().amax(dim=-1, keepdim=True) / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x / safe), -qmax, qmax) * scale
    return q.reshape(rows, cols).to(w.dtype)


def quantized_copy(model: nn.Module, bits: int, group_size: int | None = None,
                   include_lm_head: bool = False) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` (LoRA adapters merged first) whose ``nn.Linear`` weights are
    :func:`quantize_rtn`-ed (the output head only with ``include_lm_head``; embeddings and norms stay). Returns the
    copy and the number of quantized matrices.

    Raises:
        ConfigError: unsupported ``bits``, or no linear layer to quantize.
    """
    from unlearnkit.models.llm import is_peft_model

    check_bits(bits)
    q = copy.deepcopy(model)
    if is_peft_model(q):
        q = q.merge_and_unload()
    head = q.get_output_embeddings() if hasattr(q, "get_output_embeddings") else None
    n = 0
    with torch.no_grad():
        for mod in q.modules():
            if isinstance(mod, nn.Linear) and (include_lm_head or mod is not head):
                mod.weight.copy_(quantize_rtn(mod.weight, bits, group_size))
                n += 1
    if n == 0:
        raise ConfigError("the quantization attack found no nn.Linear layer to quantize in this model")
    return q.eval(), n


class QuantizationConfig(Frozen):
    """Bit widths (round-to-nearest; 16 is the no-change control), grouping and what else to score."""

    bits: list[int] = Field(default_factory=lambda: [8, 4], description="weight bit widths (2–8 or 16)")
    group_size: int | None = Field(None, ge=1, description="input columns per quantization group; None = per row")
    include_lm_head: bool = False
    retain: bool = Field(True, description="also score the retain split (utility under quantization)")

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one bit width")
        for b in v:
            try:
                check_bits(b)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return list(v)


@METRICS.register("quantization", config=QuantizationConfig)
class Quantization(Metric):
    """Quantization attack (arXiv:2410.16454): forget (and retain) scores of round-to-nearest quantized copies.
    Unlearning by small weight updates can fall inside one quantization step, so the quantized θ_u returns towards
    the quantized θ_o; compare with θ_o's and θ_r's rows under the same quantization."""

    track = "llm"
    reads = frozenset({"logits", "weights"})
    source = "Zhang et al. 2024, 'Catastrophic Failure of LLM Unlearning via Quantization', arXiv:2410.16454 (RTN)"
    keys = {"quant.prob@{b}bit": "forget score of the b-bit copy (higher = knows more)",
            "quant.base_prob": "forget score of the unquantized model",
            "quant.shift@{b}bit": "quant.prob@b − quant.base_prob (> 0: quantization brings D_f back)",
            "quant.retain_prob@{b}bit": "retain score of the b-bit copy (utility under quantization)"}
    smoke_params: ClassVar[dict[str, Any]] = {"bits": [8]}

    def __init__(self, config: QuantizationConfig | None = None) -> None:
        self.config = config or QuantizationConfig()

    def compute(self, ctx: Any) -> MetricOutput:
        cfg = self.config
        fmt = ctx.settings.fmt
        f_pairs = forget_items(ctx).pairs("answer")
        r_pairs = ctx.eval_set("retain").pairs("answer") if cfg.retain else []
        pol = ctx._scoring_policy()
        base = prob(ctx_logprobs(ctx, f_pairs, fmt, ("quant-base", len(f_pairs))))
        values = {"quant.base_prob": base}
        per: dict[str, np.ndarray] = {}
        for b in cfg.bits:
            qm, n = quantized_copy(ctx.model, b, cfg.group_size, cfg.include_lm_head)
            lp = pair_logprobs(qm, ctx, f_pairs, fmt, pol)
            values[f"quant.prob@{b}bit"] = prob(lp)
            values[f"quant.shift@{b}bit"] = prob(lp) - base
            values[f"quant.layers@{b}bit"] = float(n)
            per[f"quant.prob@{b}bit"] = np.exp(lp)
            if r_pairs:
                values[f"quant.retain_prob@{b}bit"] = prob(pair_logprobs(qm, ctx, r_pairs, fmt, pol))
            del qm
        return MetricOutput(values, per)


__all__ = ["Forms", "FormsConfig", "InContext", "InContextConfig", "LLMRelearn", "LLMRelearnConfig", "Quantization",
           "QuantizationConfig", "SUPPORTED_BITS", "check_bits", "curve_auc", "encode_texts", "form_scores",
           "in_context_pairs", "join_answer", "pair_logprobs", "prob", "quantize_rtn", "quantized_copy",
           "read_related_texts", "related_corpus", "relearn_curve", "split_relearn_items", "steps_to_recover",
           "with_context"]
