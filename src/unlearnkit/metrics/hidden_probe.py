"""Hidden-state linear probes: can a linear read-out of the evaluated model's hidden states still recover D_f?

Two probes per chosen layer (the output of transformer block l, i.e. ``hidden_states[l + 1]`` of a Hugging Face
causal LM), features = the hidden states averaged over the answer tokens of a (question, answer) input:

* **answer recovery** — a logistic-regression probe is trained on the *retain* evaluation items to tell the true
  answer (the paraphrased one, as in TOFU's truth ratio) from the perturbed answers, then asked, for every forget item,
  which of its candidate answers is true (accuracy; chance = 1 / candidates). θ_o and θ_u that merely suppress the
  output keep the distinction in their representations; θ_r, which never saw D_f, is at chance.
* **membership** — D_f items (members of θ_o's training set) against the holdout items (never trained on),
  cross-validated ROC AUC with folds grouped by subject (a probe must generalise to unseen persons rather than
  recognise them). θ_r: ≈ 0.5.

The probe is read, as in representation-level audits (e.g. Lynch et al. 2024, arXiv:2402.16835 §3.6; Xu et al.,
"Unlearning Isn't Deletion", 2025), against θ_r's row: knowledge above θ_r's level that a linear probe finds but the
output no longer shows is suppressed, not removed.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.registry import METRICS


def n_blocks(model: nn.Module) -> int:
    """Number of transformer blocks (``config.num_hidden_layers``), or ConfigError when the model does not say."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"the hidden-state probe needs a transformer whose config gives num_hidden_layers; "
                          f"{type(model).__name__} does not")
    return n


def resolve_layers(model: nn.Module, layers: list[int] | None, depths: list[float]) -> list[int]:
    """Block indices to probe: ``layers`` (negative = from the end) or, when None, ``round(d · n) − 1`` for each
    relative depth d of ``depths``.

    Raises:
        ConfigError: a layer outside the model's blocks.
    """
    n = n_blocks(model)
    if layers is None:
        idx = sorted({min(n - 1, max(0, int(round(d * n)) - 1)) for d in depths})
    else:
        idx = [i + n if i < 0 else i for i in layers]
        bad = [i for i, j in zip(layers, idx) if not 0 <= j < n]
        if bad:
            raise ConfigError(f"hidden-state probe layers {bad} are outside the model's blocks 0..{n - 1} "
                              f"(negative counts from the end)")
    return sorted(set(idx))


def answer_features(model: nn.Module, ctx: Any, pairs: list[tuple[str, str]], layers: list[int]) -> np.ndarray:
    """Mean hidden state over the answer tokens of each pair at each layer: float64 (len(layers), n, d).

    Raises:
        ConfigError: the model returns no hidden states (``output_hidden_states=True`` gives none).
    """
    from unlearnkit.llm.lm import _batches_by_length, _to, encode_pairs, eval_mode
    from unlearnkit.llm.tokenize import collate, pad_id_of
    from unlearnkit.metrics.llm_context import _quiet

    with _quiet():
        enc = encode_pairs(ctx.tokenizer, pairs, ctx.settings.fmt, ctx.max_context, what="hidden probe")
    pad = pad_id_of(ctx.tokenizer)
    dev = ctx.engine.device if ctx.engine is not None else torch.device("cpu")
    out: np.ndarray | None = None
    with eval_mode(model):
        for idx in _batches_by_length([len(e) for e in enc], ctx.settings.batch_size):
            b = _to(collate([enc[i] for i in idx], pad), dev)
            res = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
            hs = getattr(res, "hidden_states", None)
            if hs is None:
                raise ConfigError(f"the hidden-state probe needs a model that returns hidden states "
                                  f"(output_hidden_states=True); {type(model).__name__} returned none")
            if max(layers) + 1 >= len(hs):
                raise ConfigError(f"the model returned {len(hs)} hidden states; layer {max(layers)} needs "
                                  f"{max(layers) + 2}")
            mask = (b["labels"] != -100).float()  # answer positions (labels): features read the answer tokens
            denom = mask.sum(1, keepdim=True).clamp_min(1)
            if out is None:
                out = np.zeros((len(layers), len(enc), hs[0].shape[-1]), dtype=np.float64)
            for k, layer in enumerate(layers):
                h = hs[layer + 1].float()
                feat = (h * mask[..., None]).sum(1) / denom
                out[k, idx] = feat.double().cpu().numpy()
    assert out is not None
    return out


def _logreg(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


def answer_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, groups: list[int],
                 answer_index: list[int], c: float = 1.0, seed: int = 0) -> float:
    """Train a logistic-regression probe on (train_x, train_y: 1 = true answer) and return the fraction of test
    groups (one forget item's candidates: consecutive rows of ``test_x``, ``groups[i]`` of them) whose highest-scored
    row is the true one (``answer_index[i]``). Ties are shared: a group whose top score is held by t rows, the true
    one among them, counts 1/t (the expected hit of a random tie-break), so features that do not tell the candidates
    apart score chance, not the position of the true answer."""
    clf = _logreg(c, seed).fit(train_x, train_y)
    s = clf.decision_function(test_x)
    hits, i = [], 0
    for g, a in zip(groups, answer_index):
        row = s[i:i + g]
        top = np.flatnonzero(row == row.max())
        hits.append(1.0 / len(top) if a in top else 0.0)
        i += g
    return float(np.mean(hits))


def membership_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int = 4, c: float = 1.0,
                   seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic-regression probe (members y = 1): out-of-fold scores over
    ``GroupKFold`` folds by ``groups`` (subjects) when each class has ≥ 2 groups, else stratified folds.

    Raises:
        DataError: fewer than 2 items of a class.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if min(int((y == 1).sum()), int((y == 0).sum())) < 2:
        raise DataError("the membership probe needs at least 2 members and 2 non-members")
    g1, g0 = len(set(groups[y == 1])), len(set(groups[y == 0]))
    scores = np.zeros(len(y))
    if min(g1, g0) >= 2:
        k = min(folds, len(set(groups)))
        splits = GroupKFold(n_splits=k).split(x, y, groups)
    else:
        k = min(folds, int((y == 1).sum()), int((y == 0).sum()))
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y)
    for tr, te in splits:
        if len(set(y[tr])) < 2:
            scores[te] = 0.5
            continue
        scores[te] = _logreg(c, seed).fit(x[tr], y[tr]).decision_function(x[te])
    return float(roc_auc_score(y, scores))


class HiddenProbeConfig(Frozen):
    """Layers and probes."""

    layers: list[int] | None = Field(None, description="block indices (negative from the end); None = the blocks at "
                                     "relative depths `depths`")
    depths: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    probes: list[Literal["answer", "membership"]] = Field(default_factory=lambda: ["answer", "membership"])
    c: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic regression")
    folds: int = Field(4, ge=2)
    max_train: int = Field(200, ge=2, description="retain items the answer probe trains on (first ones)")
    seed: int = 0


@METRICS.register("hidden_probe", config=HiddenProbeConfig)
class HiddenProbe(Metric):
    """Linear probes on hidden states (see the module docstring): answer recovery on D_f (probe trained on D_r) and
    membership of D_f vs the holdout (grouped cross-validation)."""

    track = "llm"
    reads = frozenset({"hidden_states"})
    source = ("linear probing of representations for residual knowledge (Lynch et al. 2024, arXiv:2402.16835 "
              "§3.6; Belinkov 2022, 'Probing classifiers'); answer candidates as TOFU's truth ratio")
    keys = {"hidden.answer_acc@L{l}": "forget items whose true answer the retain-trained probe ranks first (block l)",
            "hidden.answer_acc": "max over layers (θ_r ≈ hidden.answer_chance; higher = D_f readable)",
            "hidden.answer_chance": "1 / candidates, averaged over forget items",
            "hidden.member_auc@L{l}": "cross-validated AUC of D_f vs holdout (block l)",
            "hidden.member_auc": "max over layers (θ_r ≈ 0.5)"}
    smoke_params: ClassVar[dict[str, Any]] = {"folds": 2}

    def __init__(self, config: HiddenProbeConfig | None = None) -> None:
        self.config = config or HiddenProbeConfig()

    def compute(self, ctx: Any) -> MetricOutput:
        cfg = self.config
        layers = resolve_layers(ctx.model, cfg.layers, list(cfg.depths))
        values: dict[str, float] = {}
        per: dict[str, np.ndarray] = {}
        if "answer" in cfg.probes:
            values.update(self._answer(ctx, layers))
        if "membership" in cfg.probes:
            values.update(self._membership(ctx, layers))
        per["hidden.layers"] = np.asarray(layers, dtype=np.int64)
        return MetricOutput(values, per)

    @staticmethod
    def _candidates(qs: Any) -> tuple[list[tuple[str, str]], list[int], list[int], list[int]]:
        pairs, labels, groups, answer_index = [], [], [], []
        for it in qs:
            if not it.perturbed_answers:
                continue
            true = it.paraphrased_answer or it.answer
            cands = [true, *it.perturbed_answers]
            pairs.extend((it.question, a) for a in cands)
            labels.extend([1] + [0] * len(it.perturbed_answers))
            groups.append(len(cands))
            answer_index.append(0)
        return pairs, labels, groups, answer_index

    def _answer(self, ctx: Any, layers: list[int]) -> dict[str, float]:
        cfg = self.config
        forget, retain = ctx.eval_set("forget"), ctx.eval_set("retain")
        tr_pairs, tr_y, _, _ = self._candidates(list(retain)[:cfg.max_train])
        te_pairs, _, groups, ans = self._candidates(forget)
        if not tr_pairs or not te_pairs:
            raise DataError("the hidden-state answer probe needs perturbed answers on the forget and retain "
                            "evaluation items (TOFU-style data); use probes: [membership]")
        xtr = answer_features(ctx.model, ctx, tr_pairs, layers)
        xte = answer_features(ctx.model, ctx, te_pairs, layers)
        out = {"hidden.answer_chance": float(np.mean([1.0 / g for g in groups]))}
        accs = []
        for k, layer in enumerate(layers):
            acc = answer_probe(xtr[k], np.asarray(tr_y), xte[k], groups, ans, cfg.c, cfg.seed)
            out[f"hidden.answer_acc@L{layer}"] = acc
            accs.append(acc)
        out["hidden.answer_acc"] = float(max(accs))
        return out

    def _membership(self, ctx: Any, layers: list[int]) -> dict[str, float]:
        cfg = self.config
        sets = getattr(ctx.task, "eval_sets", {})
        if "holdout" not in sets or len(sets["holdout"]) == 0:
            raise DataError("the hidden-state membership probe needs a holdout set of never-trained items; set "
                            "llm.data.holdout_persons > 0, or use probes: [answer]")
        mem, non = ctx.eval_set("forget"), ctx.eval_set("holdout")
        pairs = mem.pairs("answer") + non.pairs("answer")
        y = np.array([1] * len(mem) + [0] * len(non))
        subj = [str(it.subject) for it in mem] + [str(it.subject) for it in non]
        codes = {s: i for i, s in enumerate(dict.fromkeys(subj))}
        g = np.array([codes[s] for s in subj])
        x = answer_features(ctx.model, ctx, pairs, layers)
        out, aucs = {}, []
        for k, layer in enumerate(layers):
            auc = membership_auc(x[k], y, g, folds=cfg.folds, c=cfg.c, seed=cfg.seed)
            out[f"hidden.member_auc@L{layer}"] = auc
            aucs.append(auc)
        out["hidden.member_auc"] = float(max(aucs))
        return out


__all__ = ["HiddenProbe", "HiddenProbeConfig", "answer_features", "answer_probe", "membership_auc",
           "resolve_layers"]
