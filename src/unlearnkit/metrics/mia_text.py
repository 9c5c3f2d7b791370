"""Membership-inference attacks on text (language models): LOSS, zlib, Min-K%, Min-K%++, reference-model ratio.

Every score is oriented **higher = more member-like** (the model behaves as if it trained on the text), so the AUC of
"members vs non-members" is above 0.5 when membership leaks; AUC and TPR at low FPR reuse
:func:`unlearnkit.metrics.mia_family.roc_auc` / :func:`~unlearnkit.metrics.mia_family.tpr_at_fpr`.

Inputs are per-token log-probabilities ln p(x_t | x_<t) (natural log, float64, one array per text, the first token
excluded because it has no context) and, for Min-K%++, the mean μ_t and standard deviation σ_t of ln p(z | x_<t) under
the model's own next-token distribution.

* ``loss`` (Yeom et al. 2018): mean token log-prob = −(average NLL) [nats/token].
* ``zlib`` (Carlini et al., USENIX Security 2021, arXiv:2012.07805): −NLL / zlib-compressed length in bytes of the
  UTF-8 text (the reference code of Min-K% and MUSE: ``PPL/zlib = loss / len(zlib.compress(text))``) [nats/token/byte].
* ``min_k`` (Shi et al., "Detecting Pretraining Data from LLMs", ICLR 2024, arXiv:2310.16789): mean of the k % lowest
  token log-probs; at least one token is used (the reference code's ``int(T·k)`` is 0 for short texts and averages an
  empty selection to NaN: KNOWN_FAULTS C23 (a), golden −2.0).
* ``min_k_pp`` (Zhang et al., "Min-K%++", arXiv:2404.02936, Eq. 4): per position z_t = (ln p(x_t) − μ_t) / σ_t, then
  the mean of the k % lowest z_t (at least one). Golden (C23 (b)): p = [0.5, 0.25, 0.25] → μ = −1.0397, σ = 0.3466,
  token 0 → +1.000, token 1 → −1.000. Where σ_t = 0 (all tokens equally likely) z_t = 0 (the numerator is 0 too).
* ``ref`` (Carlini et al. 2021, "comparing to other language models"; MUSE's ``PPL/ref``): −NLL_target / NLL_ref,
  the ratio of average NLLs of the target and a reference model [unitless].
* ``grad_norm`` (Wang et al. 2024, "Pandora's White-Box", arXiv:2402.17012; MIMIR, Duan et al. 2024; open-unlearning's
  ``GradNormAttack``): −(mean over parameter tensors of ‖∇_θ mean NLL(x)‖_p), one backward pass per text; a
  member sits nearer a minimum, so its gradient is smaller [gradient units]. White-box and costly (n backward
  passes); enabled by the ``mia_text`` option ``grad_norm: true``. The evaluated weights are never changed: gradients
  are taken with ``torch.autograd.grad`` (no ``.grad`` is written) in eval mode.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from unlearnkit.errors import DataError
from unlearnkit.metrics._dtype import to_numpy64, to_tensor64
from unlearnkit.metrics.mia_family import roc_auc, tpr_at_fpr

TEXT_ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_pp", "ref")
#: white-box attacks computed from the model itself (not from token log-probabilities)
GRAD_ATTACKS: tuple[str, ...] = ("grad_norm",)
SIGMA_EPS = 1e-12


def _tokens(lp: Any, what: str = "token log-probs") -> np.ndarray:
    a = to_numpy64(lp).reshape(-1)
    if a.size == 0:
        raise DataError(f"{what} are empty: a text needs at least 2 tokens (the first token has no prediction)")
    if not np.isfinite(a).all():
        raise DataError(f"{what} contain NaN/inf; the model's outputs are not finite (diverged?)")
    return a


def n_lowest(n_tokens: int, k: float) -> int:
    """How many tokens Min-K% averages: max(1, ⌊n·k⌋) (never an empty selection, C23)."""
    if not 0.0 < k <= 1.0:
        raise DataError(f"Min-K% fraction k must be in (0, 1], got {k}")
    return max(1, int(n_tokens * k))


def loss_score(token_lp: Any) -> float:
    """LOSS attack: mean token log-prob (= −average NLL, nats/token); higher = member."""
    return float(_tokens(token_lp).mean())


def zlib_score(token_lp: Any, text: str) -> float:
    """zlib attack: −NLL / len(zlib.compress(text.encode("utf-8"))); higher = member."""
    nll = -float(_tokens(token_lp).mean())
    return -nll / len(zlib.compress(text.encode("utf-8")))


def min_k_score(token_lp: Any, k: float = 0.2) -> float:
    """Min-K%: mean of the max(1, ⌊T·k⌋) lowest token log-probs; higher = member. C23 (a): [−0.1, −2.0, −0.5], k = 0.2
    → −2.0."""
    a = _tokens(token_lp)
    return float(np.sort(a)[: n_lowest(len(a), k)].mean())


def next_token_stats(logits: Any) -> tuple[np.ndarray, np.ndarray]:
    """μ_t = Σ_z p(z) ln p(z) and σ_t = sqrt(Σ_z p(z) (ln p(z))² − μ_t²) of each row's softmax (float64 (T,) each).

    Args:
        logits: float (T, V) next-token logits (any scale; log_softmax is applied in float64).
    """
    import torch

    lg = to_tensor64(logits)
    if lg.ndim != 2:
        raise DataError(f"logits must be (T, V), got shape {tuple(lg.shape)}")
    logp = torch.log_softmax(lg, dim=-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    mu = plogp.sum(-1)
    second = torch.where(p > 0, p * logp * logp, torch.zeros_like(p)).sum(-1)
    sigma = (second - mu * mu).clamp_min(0.0).sqrt()
    return mu.numpy(), sigma.numpy()


def min_k_pp_tokens(token_lp: Any, mu: Any, sigma: Any) -> np.ndarray:
    """Per-token Min-K%++ z_t = (ln p(x_t) − μ_t) / σ_t, float64 (T,); 0 where σ_t ≈ 0."""
    a = _tokens(token_lp)
    m = to_numpy64(mu).reshape(-1)
    s = to_numpy64(sigma).reshape(-1)
    if not (len(m) == len(s) == len(a)):
        raise DataError(f"Min-K%++ needs μ and σ per token: {len(a)} tokens, {len(m)} μ, {len(s)} σ")
    ok = s > SIGMA_EPS
    return np.where(ok, (a - m) / np.where(ok, s, 1.0), 0.0)


def min_k_pp_score(token_lp: Any, mu: Any, sigma: Any, k: float = 0.2) -> float:
    """Min-K%++: mean of the max(1, ⌊T·k⌋) lowest z_t; higher = member."""
    z = min_k_pp_tokens(token_lp, mu, sigma)
    return float(np.sort(z)[: n_lowest(len(z), k)].mean())


def ref_score(token_lp: Any, ref_token_lp: Any) -> float:
    """Reference-model attack: −NLL_target / NLL_ref (MUSE ``PPL/ref``); higher = member.

    Raises:
        DataError: the reference's NLL is 0 (a reference that predicts the text perfectly calibrates nothing).
    """
    nll = -float(_tokens(token_lp).mean())
    nll_ref = -float(_tokens(ref_token_lp, "reference token log-probs").mean())
    if nll_ref <= 0:
        raise DataError("the reference model's NLL on a text is 0; the ratio attack is undefined for it")
    return -nll / nll_ref


def text_scores(token_lps: Sequence[np.ndarray], texts: Sequence[str], *, k: float = 0.2,
                mus: Sequence[np.ndarray] | None = None, sigmas: Sequence[np.ndarray] | None = None,
                ref_token_lps: Sequence[np.ndarray] | None = None, attacks: Sequence[str] = TEXT_ATTACKS
                ) -> dict[str, np.ndarray]:
    """All requested attacks on each text, ``{attack: float64 (n,)}``; attacks whose inputs are absent (μ/σ for
    ``min_k_pp``, reference log-probs for ``ref``) are skipped.

    Raises:
        DataError: unknown attack, or lists of different lengths.
    """
    bad = [a for a in attacks if a not in TEXT_ATTACKS]
    if bad:
        raise DataError(f"unknown text MIA attack(s) {bad}; valid: {', '.join(TEXT_ATTACKS)}")
    n = len(token_lps)
    if len(texts) != n:
        raise DataError(f"{n} token log-prob arrays but {len(texts)} texts")
    out: dict[str, np.ndarray] = {}
    for a in attacks:
        if a == "loss":
            out[a] = np.array([loss_score(x) for x in token_lps])
        elif a == "zlib":
            out[a] = np.array([zlib_score(x, t) for x, t in zip(token_lps, texts)])
        elif a == "min_k":
            out[a] = np.array([min_k_score(x, k) for x in token_lps])
        elif a == "min_k_pp" and mus is not None and sigmas is not None:
            out[a] = np.array([min_k_pp_score(x, m, s, k) for x, m, s in zip(token_lps, mus, sigmas)])
        elif a == "ref" and ref_token_lps is not None:
            out[a] = np.array([ref_score(x, r) for x, r in zip(token_lps, ref_token_lps)])
    return {a: v.astype(np.float64) for a, v in out.items()}


def mia_summary(member: dict[str, np.ndarray], nonmember: dict[str, np.ndarray], prefix: str = "mia"
                ) -> dict[str, float]:
    """AUC and TPR at 1 % / 0.1 % FPR of each attack present in both pools.

    Keys ``{prefix}.{attack}.auc`` and ``{prefix}.{attack}.tpr@1%`` / ``tpr@0.1%``; a TPR at an FPR below 1/n_nonmember
    is not resolvable and is NaN (as in :class:`unlearnkit.metrics.mia_family.MIAFamily`). AUC 0.5 = no leak.
    """
    out: dict[str, float] = {}
    for a in member:
        if a not in nonmember:
            continue
        m, n = member[a], nonmember[a]
        out[f"{prefix}.{a}.auc"] = roc_auc(m, n)
        for label, inv in (("1%", 100), ("0.1%", 1000)):
            out[f"{prefix}.{a}.tpr@{label}"] = tpr_at_fpr(m, n, 1.0 / inv) if len(n) >= inv else math.nan
    return out


def grad_norm_scores(model: Any, encoded: Sequence[Any], pad_id: int, *, p: float = 2.0,
                     engine: Any = None) -> np.ndarray:
    """GradNorm attack scores of pre-encoded examples, float64 (n,): −mean_θ ‖∇_θ L(x)‖_p over every parameter
    tensor that takes part in the loss, with L(x) = mean NLL of x's labelled tokens (higher = member).

    The model is left as it was: gradients come from ``torch.autograd.grad`` (no ``.grad`` attribute is written),
    parameters that did not require gradients are switched back, and the forward runs in eval mode (no dropout).

    Raises:
        DataError: ``p`` not in {1, 2, inf}, or an example without labelled tokens.
    """
    import torch

    from unlearnkit.llm.lm import _to, mean_token_nll, model_device
    from unlearnkit.llm.tokenize import collate

    if p not in (1, 2, float("inf")):
        raise DataError(f"grad_norm p must be 1, 2 or inf, got {p}")
    params = [q for q in model.parameters() if q.is_floating_point()]
    flags = [q.requires_grad for q in params]
    was = model.training
    dev = model_device(model, engine)
    out = np.zeros(len(encoded), dtype=np.float64)
    try:
        model.eval()
        for q in params:
            q.requires_grad_(True)
        for i, e in enumerate(encoded):
            if e.n_answer_tokens < 1:
                raise DataError(f"grad_norm: example {i} has no labelled token")
            batch = _to(collate([e], pad_id), dev)
            with torch.enable_grad():
                loss = mean_token_nll(model, batch).sum()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms = [g.detach().double().norm(p=p) for g in grads if g is not None]
            out[i] = -float(torch.stack(norms).mean()) if norms else 0.0
    finally:
        for q, f in zip(params, flags):
            q.requires_grad_(f)
        model.train(was)
    return out


# -- the registered metric ---------------------------------------------------------------------------------------------
def _pool_scores(ctx: Any, split: str, ref_model: Any | None) -> dict[str, np.ndarray]:
    qs = ctx.eval_set(split)
    pairs = qs.pairs("answer")
    toks = ctx.token_scores(pairs, (split, "answer"))
    ref = None
    if ref_model is not None:
        ref_toks = ctx.for_reference(ref_model, f"mia_text.{split}.{len(qs)}",
                                     lambda c: c.token_scores(pairs, (split, "answer")))
        ref = [t.logp for t in ref_toks]
    return text_scores([t.logp for t in toks], list(qs.answers), k=ctx.settings.mink_k,
                       mus=[t.mu for t in toks], sigmas=[t.sigma for t in toks], ref_token_lps=ref)


def _grad_pool(ctx: Any, split: str, p: float) -> np.ndarray:
    from unlearnkit.llm.tokenize import encode_qa, pad_id_of

    qs = ctx.eval_set(split)
    enc = [encode_qa(ctx.tokenizer, q, a, ctx.settings.fmt, ctx.max_context) for q, a in qs.pairs("answer")]
    return ctx.cached(("grad_norm", split, p), lambda: grad_norm_scores(ctx.model, enc, pad_id_of(ctx.tokenizer),
                                                                        p=p, engine=ctx.engine))


def _register() -> None:
    from pydantic import Field, field_validator

    from unlearnkit.config.schema import Frozen
    from unlearnkit.metrics.base import Metric, MetricOutput
    from unlearnkit.registry import METRICS

    class TextMIAConfig(Frozen):
        """Options of ``mia_text``: the white-box GradNorm attack (one backward pass per item) is off by default."""

        grad_norm: bool = Field(False, description="add the GradNorm attack (arXiv:2402.17012; white-box, costly)")
        grad_norm_p: float = Field(2.0, description="the gradient norm: 1, 2 or inf")

        @field_validator("grad_norm_p")
        @classmethod
        def _p(cls, v: float) -> float:
            if v not in (1.0, 2.0, float("inf")):
                raise ValueError(f"grad_norm_p must be 1, 2 or inf, got {v}")
            return v

    @METRICS.register("mia_text", config=TextMIAConfig)
    class TextMIA(Metric):
        """Text MIAs on answer tokens: D_f (members of θ_o) vs the holdout (never trained on); AUC 0.5 = no leak.

        Scores each QA item's answer tokens given the question. ``ref`` uses the model named by the track's
        ``eval.mia_reference`` (θ_r by default: the ratio calibrates away what a model that never saw D_f knows).
        """

        track = "llm"
        source = ("Yeom 2018; Carlini et al. 2021 (zlib, ref); Shi et al. 2024 (Min-K%); Zhang et al. 2024 (Min-K%++); "
                  "Wang et al. 2024, arXiv:2402.17012 (GradNorm, with grad_norm: true)")
        keys = {
            "mia.<attack>.auc": "ROC AUC forget (member) vs holdout (non-member); θ_r ≈ 0.5, higher = leaks D_f",
            "mia.<attack>.tpr@1%": "TPR at 1 % FPR (NaN when the holdout has < 100 items)",
            "mia.<attack>.tpr@0.1%": "TPR at 0.1 % FPR (NaN when the holdout has < 1000 items)",
        }

        def __init__(self, config: TextMIAConfig | None = None) -> None:
            self.config = config or TextMIAConfig()

        def compute(self, ctx: Any) -> MetricOutput:
            sets = getattr(ctx.task, "eval_sets", {})
            if "holdout" not in sets or len(sets["holdout"]) == 0:
                raise DataError("mia_text needs a holdout set of never-trained items (non-members); set "
                                "llm.data.holdout_persons > 0 (the track then keeps those persons out of D)")
            which = ctx.settings.mia_reference
            ref_model = None
            if which != "none":
                ref_model = ctx.reference(f"{which}_model", "the 'ref' text MIA")
            member = _pool_scores(ctx, "forget", ref_model)
            non = _pool_scores(ctx, "holdout", ref_model)
            if self.config.grad_norm:
                member["grad_norm"] = _grad_pool(ctx, "forget", self.config.grad_norm_p)
                non["grad_norm"] = _grad_pool(ctx, "holdout", self.config.grad_norm_p)
            per = {f"mia.{a}.forget": v for a, v in member.items()}
            per.update({f"mia.{a}.holdout": v for a, v in non.items()})
            return MetricOutput(mia_summary(member, non, prefix="mia"), per)


_register()
