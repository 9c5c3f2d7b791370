"""Inference-time methods through the runner: ``Unlearned(model, policy)``. A token-suppression policy (a logits
processor) changes TOFU's generation metrics while every logit-based number equals θ_o's exactly; the policy is saved
with the weights and loads back; the row records what the policy can and cannot affect and the per-query cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnkit.bench import experiment, run_experiment
from unlearnkit.engine.checkpoint import load_checkpoint, read_policy
from unlearnkit.errors import CheckpointError
from unlearnkit.models.policy import ComposedPolicy, compose, policy_from_saved

pytest.importorskip("transformers")

TINY = {
    "data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
    "model": {"kind": "tiny", "vocab_size": 384, "hidden_size": 32, "layers": 2, "heads": 2, "max_len": 96},
    "train": {"epochs": 25, "batch_size": 16, "grad_accum": 1, "lr": 5e-3, "warmup_ratio": 0.05},
    "eval": {"max_items": 10, "max_new_tokens": 12, "batch_size": 32},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy")
    cfg = experiment(name="policy", track="llm", llm=TINY, seeds=[0], metrics=["tofu", "mia_text"],
                     methods=[{"name": "suppress_tokens", "top_k": 64}],
                     engine={"progress": False, "threads": 1}, output_dir=str(tmp / "runs"))
    return cfg, run_experiment(cfg, write_report=True)


def test_policy_changes_generations_but_no_logit_metric(run):
    cfg, out = run
    rows = {r["method"]: r for r in out.rows}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    theta_o, sup = rows["original"], rows["suppress_tokens"]
    # the weights are θ_o's: every number read from logits is θ_o's, bit for bit
    logit_keys = [k for k in sup["metrics"] if k.startswith("mia.") or k.endswith((".prob", ".truth_ratio"))
                  or k in ("forget_quality", "forget_ks_stat")]
    assert len(logit_keys) >= 10
    for k in logit_keys:
        a, b = sup["metrics"][k], theta_o["metrics"][k]
        assert a == b or (np.isnan(a) and np.isnan(b)), k
    assert sup["checkpoint_sha256"] == theta_o["checkpoint_sha256"]
    # ... while the generations lose the banned tokens: forget-set ROUGE falls
    assert sup["metrics"]["forget.rouge"] < theta_o["metrics"]["forget.rouge"] - 0.05
    z_o = np.load(out.run_dir / "per_sample" / "original-seed0.npz")
    z_s = np.load(out.run_dir / "per_sample" / "suppress_tokens-seed0.npz")
    assert (z_o["tofu.forget.generation"] != z_s["tofu.forget.generation"]).any()
    # the row says what the policy is, what it changes and which configured metrics it cannot change
    pol = sup["policy"]
    assert pol["kind"] == "suppress_tokens" and pol["affects"] == ["generations"]
    assert pol["metrics_unaffected"] == ["mia_text"]
    assert sup["cost"]["query_ms_per_token"] > 0 and theta_o["cost"]["query_ms_per_token"] > 0


def test_policy_is_saved_with_the_weights_and_loads_back(run):
    cfg, out = run
    ck = out.run_dir / "checkpoints" / "suppress_tokens-seed0"
    _, manifest, _ = load_checkpoint(ck)
    assert "policy.json" in manifest["files"]  # digested like the weights
    saved = read_policy(ck, manifest)
    policy = policy_from_saved(saved["kind"], saved["config"], saved["tensors"])
    row = next(r for r in out.rows if r["method"] == "suppress_tokens")
    assert policy.config() == row["policy"]["config"]
    # the rebuilt processor bans exactly those ids
    proc = policy.logits_processor(None)
    scores = proc(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 400))
    banned = set(np.flatnonzero(np.isinf(scores[0].numpy())).tolist())
    assert banned == set(policy.token_ids)
    # a tampered policy file is refused by the checkpoint check
    (ck / "policy.json").write_text('{"kind": "suppress_tokens", "config": {"token_ids": [1]}}')
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(ck)


def test_resume_reloads_the_policy_for_a_chained_request(tmp_path):
    """Sequential requests: request 1 starts from request 0's output *with its policy*; the composed policy holds
    both requests' tokens; a rerun after losing request 1's row reloads the policy from request 0's checkpoint."""
    small = {**TINY, "train": {**TINY["train"], "epochs": 2}, "scenario": {"kind": "sequential", "requests": 2}}
    cfg = experiment(name="policy_seq", track="llm", llm=small, seeds=[0], metrics=["tofu"],
                     methods=[{"name": "suppress_tokens", "top_k": 3}],
                     engine={"progress": False, "threads": 1}, output_dir=str(tmp_path / "runs"))
    out = run_experiment(cfg, write_report=False)
    rows = {(r["method"], r["request"]): r for r in out.rows}
    assert rows[("suppress_tokens", 1)]["status"] == "ok"
    first = rows[("suppress_tokens", 0)]["policy"]
    second = rows[("suppress_tokens", 1)]["policy"]
    assert first["kind"] == "suppress_tokens" and second["kind"] == "composed"
    assert second["config"]["policies"][0]["config"] == first["config"]
    results = out.run_dir / "results.jsonl"
    lines = results.read_text().splitlines()
    import json

    keep = [x for x in lines if not (json.loads(x)["method"] == "suppress_tokens" and json.loads(x)["request"] == 1)]
    results.write_text("\n".join(keep) + "\n")
    again = run_experiment(cfg, write_report=False)
    redo = [r for r in again.rows if r["method"] == "suppress_tokens" and r["request"] == 1][-1]
    assert again.new_rows == 1 and redo["policy"] == second


def test_compose_flattens_and_applies_in_order():
    from unlearnkit.methods.llm.suppress_tokens import TokenSuppression

    a, b = TokenSuppression([1, 2]), TokenSuppression([5])
    assert compose(None, a) is a and compose(a, None) is a
    c = compose(compose(a, b), TokenSuppression([7]))
    assert isinstance(c, ComposedPolicy) and len(c.policies) == 3
    scores = c.logits_processor(None)(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 10))
    assert set(np.flatnonzero(np.isinf(scores[0].numpy())).tolist()) == {1, 2, 5, 7}
    back = policy_from_saved("composed", c.config(), c.tensors())
    assert back.config() == c.config()
    with pytest.raises(CheckpointError, match="not registered"):
        policy_from_saved("no_such_policy", {}, {})
