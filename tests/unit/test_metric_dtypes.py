"""Issue 13 item 9: metrics accept float16 / bfloat16 inputs (models run in half precision) by upcasting to float64.

Each metric is given the same values once as a low-precision tensor and once as the float32 tensor holding exactly
those (rounded) values: the results must agree to float64 rounding (no TypeError, no precision lost on the way).
Before the fix ``np.asarray(bf16_tensor)`` raised ``TypeError: Got unsupported ScalarType BFloat16``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnkit.metrics import distance, extraction, graph, lira, mia, mia_family, mia_text, neurips, representation, tofu

torch.manual_seed(0)
LOGITS = torch.randn(24, 5) * 4
LABELS = torch.randint(0, 5, (24,))
TOKEN_LOGITS = torch.randn(12, 9) * 3
TOKEN_LP = torch.log_softmax(TOKEN_LOGITS, 1)[torch.arange(12), torch.randint(0, 9, (12,))]
FEATS = torch.randn(24, 6)
PROBS = torch.softmax(torch.randn(24, 5), 1)
ANSWER_LABELS = torch.randint(0, 9, (1, 12))


def _cases():
    lg, y, tl, lp, ft = LOGITS, LABELS, TOKEN_LOGITS, TOKEN_LP, FEATS
    return {
        "kl_from_logits": lambda c: distance.kl_from_logits(c(lg), c(lg.flip(0))),
        "js_from_logits": lambda c: distance.js_from_logits(c(lg), c(lg.flip(0))),
        "true_label_confidence": lambda c: mia.true_label_confidence(c(lg), y),
        "svc_mia_efficacy": lambda c: mia.svc_mia_efficacy(c(lg[:10, :1]), c(lg[10:20, :1]), c(lg[20:, :1]))[0],
        "attack_scores": lambda c: mia_family.attack_scores(c(lg), y),
        "entropy": lambda c: mia_family.entropy(c(PROBS)),
        "roc_auc": lambda c: mia_family.roc_auc(c(lp[:6]), c(lp[6:])),
        "tpr_at_fpr": lambda c: mia_family.tpr_at_fpr(c(lp[:6]), c(lp[6:]), 0.2),
        "loss_score": lambda c: mia_text.loss_score(c(lp)),
        "zlib_score": lambda c: mia_text.zlib_score(c(lp), "some text"),
        "min_k_score": lambda c: mia_text.min_k_score(c(lp)),
        "next_token_stats": lambda c: mia_text.next_token_stats(c(tl)),
        "min_k_pp_score": lambda c: mia_text.min_k_pp_score(c(lp), c(tl[:, 0]), c(tl[:, 1].abs())),
        "ref_score": lambda c: mia_text.ref_score(c(lp), c(lp - 1)),
        "text_scores": lambda c: mia_text.text_scores([c(lp), c(lp[:5])], ["a b", "c"]),
        "mean_logprob": lambda c: tofu.mean_logprob(c(lp), torch.full((12,), 3)),
        "conditional_probability": lambda c: tofu.conditional_probability(c(lp)),
        "normalised_probability": lambda c: tofu.normalised_probability(c(lp[:4]), c(lp.reshape(4, 3))),
        "truth_ratio": lambda c: tofu.truth_ratio(c(lp[:4]), c(lp.reshape(4, 3))),
        "forget_quality": lambda c: tofu.forget_quality(c(lp[:6]), c(lp[6:])).pvalue,
        "fit_gaussians": lambda c: lira.fit_gaussians(c(tl), tl > 0, tl <= 0).mu_in,
        "best_balanced_accuracy": lambda c: lira.best_balanced_accuracy(c(lp[:6]), c(lp[6:])),
        "linear_cka": lambda c: representation.linear_cka(c(ft), c(ft * 2 + 1)),
        "logit_confidence": lambda c: neurips.logit_confidence(c(lg), y),
        "example_epsilon": lambda c: neurips.example_epsilon(c(lp[:6]), c(lp[6:])),
        "graph_auroc": lambda c: graph.auroc(c(lp[:6]), c(lp[6:])),
        "answer_predictions": lambda c: extraction.answer_predictions(c(tl[None]), ANSWER_LABELS)[0],
    }


def _flat(x):
    if isinstance(x, dict):
        return np.concatenate([_flat(v) for _, v in sorted(x.items())])
    if isinstance(x, (tuple, list)):
        return np.concatenate([_flat(v) for v in x]) if len(x) else np.zeros(0)
    return np.asarray(x, dtype=np.float64).reshape(-1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(_cases()))
def test_low_precision_inputs_give_the_float32_result(name, dtype):
    fn = _cases()[name]
    low = fn(lambda t: t.to(dtype))
    ref = fn(lambda t: t.to(dtype).float())  # the same rounded values, in float32
    np.testing.assert_allclose(_flat(low), _flat(ref), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_probability_rows_are_accepted_and_renormalised(dtype):
    """Probabilities rounded to bf16 / fp16 sum to 1 only within C·eps: accepted, renormalised in float64."""
    p = torch.softmax(LOGITS, 1)
    q = torch.softmax(LOGITS.flip(0), 1)
    got = distance.kl_divergence(p.to(dtype), q.to(dtype))
    pd, qd = (t.to(dtype).double() for t in (p, q))
    pd, qd = pd / pd.sum(1, keepdim=True), qd / qd.sum(1, keepdim=True)
    want = (pd * (pd.log() - qd.log())).sum(1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    js = distance.js_divergence(p.to(dtype), q.to(dtype))
    assert np.all((js >= 0) & (js <= np.log(2) + 1e-12))
    np.testing.assert_allclose(mia_family.modified_entropy(p.to(dtype), LABELS),
                               mia_family.modified_entropy(p.to(dtype).float(), LABELS), rtol=1e-12)
