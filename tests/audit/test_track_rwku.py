"""The LLM track with ``source: rwku`` (offline fictitious targets) and the ``target_only`` scenario: methods are
handed the model's own answers about the target, not D_f; metrics that do not fit an RWKU task are refused before
anything trains."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("transformers")

from unlearnkit.errors import ConfigError  # noqa: E402
from unlearnkit.methods import METHODS, derive_seed  # noqa: E402
from unlearnkit.methods.base import UnlearnContext  # noqa: E402
from unlearnkit.testing import setup_for  # noqa: E402

RWKU = {"llm": {"data": {"source": "rwku", "n_targets": 3}, "scenario": {"kind": "target_only",
                                                                          "target_max_new_tokens": 4}},
        "metrics": ["rwku"]}


def test_target_only_hands_methods_the_models_own_corpus(monkeypatch):
    runner = setup_for("llm", RWKU)
    task = runner.task
    assert task.scenario["kind"] == "target_only" and task.scenario["subjects_forget"]
    branch = runner.plan[0]
    pos = branch.points[0]
    op = next(o for o in branch.ops if type(o).__name__ == "Forget")
    theta_o = runner.original(0, branch, pos)
    seen_prompts = []

    def fake_generate(model, tok, prompts, **kw):
        seen_prompts.extend(prompts)
        return [f"answer {i}" for i in range(len(prompts))]

    monkeypatch.setattr("unlearnkit.llm.lm.generate", fake_generate)
    ctx = UnlearnContext(seed=0, train_recipe=runner.track.recipe("original"), init_seed=derive_seed(0, "x"))
    res = runner.track.unlearn(op.task, METHODS.build("ga", {"epochs": 1, "batch_size": 4, "grad_accum": 1}),
                               copy.deepcopy(theta_o.model), ctx)
    target = task.scenario["subjects_forget"][0]
    assert seen_prompts and all(target in p for p in seen_prompts)
    assert res.notes["target_only"]["targets"] == [target]
    assert res.notes["target_only"]["corpus_items"] == len(seen_prompts)
    assert res.seen_ids is not None and (np.asarray(res.seen_ids) >= 9_000_000).all()  # never D_f's own items


def test_tofu_metric_is_refused_on_an_rwku_task():
    with pytest.raises(ConfigError, match="do not apply to llm.data.source 'rwku'"):
        _ = setup_for("llm", {"llm": {"data": {"source": "rwku", "n_targets": 3}}, "metrics": ["tofu"]}).task
