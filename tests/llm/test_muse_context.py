"""Issue 13 item 11: MUSE data in the authors' layouts loads (what is missing is derived and said so), and inputs
longer than the model's context are cut by documented rules and counted, never fed whole."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from unlearnkit.data.text.muse import load_muse

AUTHORS = Path(__file__).resolve().parents[1] / "fixtures" / "muse_authors"


# -- data layouts ------------------------------------------------------------------------------------------------------
def test_authors_layout_without_retain1_loads_with_d_r_derived_from_retain2():
    assert not (AUTHORS / "raw" / "retain1.txt").exists() and not (AUTHORS / "raw" / "retain1.json").exists()
    t = load_muse(AUTHORS, chunk_chars=150)
    retain2_docs = json.loads((AUTHORS / "raw" / "retain2.json").read_text())
    assert [it.answer for it in t.retain] == retain2_docs  # D_r = raw/retain2 (each document ≤ 150 characters)
    assert [it.answer for it in t.eval_sets["retain2"]] == retain2_docs
    assert len(t.forget) == 3 and not set(t.forget_ids) & set(t.retain_ids)
    assert any("raw/retain1 missing" in d for d in t.scenario["derived"])
    assert t.eval_sets["knowmem_retain"][0].answer == "plum trees"  # knowmem/retain2_qa.json
    assert t.extras["knowmem_retain_icl"][0].answer == "along the northern road"  # retain2_qa_icl.json
    assert t.extras["privleak"]["retain"] == retain2_docs[:1]  # privleak/retain2.json
    assert t.scenario["corpus"] == "muse_authors"


def test_hub_file_layout_parquet_and_hyphenated_names_load_the_same(tmp_path):
    """The hub repository's files: raw/<split>-00000-of-00001.parquet, knowmem/forget-qa.json, ..."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    root = tmp_path / "MUSE-News"
    shutil.copytree(AUTHORS, root)
    for stem in ("forget", "retain2", "holdout"):
        docs = json.loads((root / "raw" / f"{stem}.json").read_text())
        pd.DataFrame({"text": docs}).to_parquet(root / "raw" / f"{stem}-00000-of-00001.parquet")
        (root / "raw" / f"{stem}.json").unlink()
        (root / "raw" / f"{stem}.txt").unlink()
    km = root / "knowmem"
    for a, b in (("forget_qa", "forget-qa"), ("forget_qa_icl", "forget-qa-icl"), ("retain2_qa", "retain2-qa"),
                 ("retain2_qa_icl", "retain2-qa-icl")):
        (km / f"{a}.json").rename(km / f"{b}.json")
    hub, local = load_muse(root, chunk_chars=150), load_muse(AUTHORS, chunk_chars=150)
    assert [(i.id, i.answer) for i in hub.full] == [(i.id, i.answer) for i in local.full]
    for k in ("knowmem_forget", "knowmem_retain"):
        assert [i.answer for i in hub.eval_sets[k]] == [i.answer for i in local.eval_sets[k]]


def test_missing_optional_parts_are_derived_and_required_ones_named(tmp_path):
    from unlearnkit.errors import DataError

    root = tmp_path / "m"
    shutil.copytree(AUTHORS, root)
    (root / "privleak" / "retain2.json").unlink()
    (root / "knowmem" / "retain2_qa_icl.json").unlink()
    t = load_muse(root)
    assert t.extras["privleak"]["retain"] == [] and len(t.scenario["derived"]) == 3
    for f in ("retain2.json", "retain2.txt"):
        (root / "raw" / f).unlink()
    with pytest.raises(DataError, match="neither raw/retain1 nor raw/retain2"):
        load_muse(root)


# -- truncation rules --------------------------------------------------------------------------------------------------
def test_keep_tail_keeps_bos_and_counts():
    from unlearnkit.errors import ConfigError
    from unlearnkit.llm.tokenize import keep_tail

    assert keep_tail([1, 5, 6, 7, 8, 9], 4, bos_id=1) == ([1, 7, 8, 9], 2)
    assert keep_tail([5, 6, 7, 8, 9], 3, bos_id=1) == ([7, 8, 9], 2)
    assert keep_tail([1, 5, 6], 4, bos_id=1) == ([1, 5, 6], 0)
    with pytest.raises(ConfigError, match="budget"):
        keep_tail([1, 5, 6], 1, bos_id=1)


def test_context_length_reads_the_model_config():
    from types import SimpleNamespace

    from unlearnkit.llm.tokenize import context_length

    assert context_length(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=128))) == 128
    assert context_length(SimpleNamespace(config=SimpleNamespace(n_positions=1024))) == 1024
    assert context_length(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=int(1e30)))) is None
    assert context_length(object()) is None


def _long_muse(tmp_path):
    root = tmp_path / "long"
    shutil.copytree(AUTHORS, root)
    forget = json.loads((root / "raw" / "forget.json").read_text())
    long_prompt = " ".join(forget * 6)
    vm = json.loads((root / "verbmem" / "forget.json").read_text())
    vm[0]["prompt"] = long_prompt  # far beyond a 48-token context; vm[1] stays short
    (root / "verbmem" / "forget.json").write_text(json.dumps(vm))
    icl = [{"question": f"Question number {i} about the Caldwick bridge and its long history?",
            "answer": f"answer {i}"} for i in range(6)]
    (root / "knowmem" / "forget_qa_icl.json").write_text(json.dumps(icl))
    (root / "privleak" / "forget.json").write_text(json.dumps([long_prompt, forget[0]]))
    return load_muse(root, chunk_chars=150)


@pytest.fixture(scope="module")
def tiny_lm():
    pytest.importorskip("transformers")
    from unlearnkit.models.llm import build_tiny_llama, train_tokenizer

    texts = [p.read_text() for p in sorted(AUTHORS.rglob("*.txt"))] + ["Question: Answer: answer number about"]
    tok = train_tokenizer(texts, vocab_size=400)
    model = build_tiny_llama(tok, hidden_size=16, layers=1, heads=2, max_len=48, seed=0)
    return model, tok


def test_overlong_muse_inputs_are_cut_and_counted(tmp_path, tiny_lm):
    """A 48-position model: the long VerbMem prompt keeps its last tokens, generation is shortened to 24 new tokens
    (128 do not fit), KnowMem prompts lose in-context examples, long PrivLeak texts keep their first 48 tokens; the
    counts are in the metric's values (before: fed whole, no count)."""
    from unlearnkit.config.schema import EngineConfig
    from unlearnkit.engine.loop import Engine
    from unlearnkit.llm.tokenize import encode_prompt, keep_tail
    from unlearnkit.metrics import METRICS
    from unlearnkit.metrics.llm_context import LLMEvalContext, LLMEvalSettings

    model, tok = tiny_lm
    task = _long_muse(tmp_path)
    ctx = LLMEvalContext(model, tok, task, Engine(EngineConfig(progress=False)),
                         references={"oracle_model": model}, settings=LLMEvalSettings(fmt="raw"))
    assert ctx.max_context == 48 and ctx.generation_budget(128) == (24, 24) and ctx.generation_budget(16) == (16, 32)
    v = METRICS.build("muse").compute(ctx).values
    assert v["context_length"] == 48.0 and v["verbmem.max_new_tokens"] == 24.0
    long_len = len(encode_prompt(tok, task.extras["verbmem"][0]["prompt"], "raw"))
    assert long_len > 48
    assert v["verbmem.truncated"] == 1.0  # the long prompt; the short one fits
    from unlearnkit.metrics.muse import knowmem_prompt

    qs = task.eval_sets["knowmem_forget"].questions
    too_long = sum(len(encode_prompt(tok, knowmem_prompt(q), "raw")) > 24 for q in qs)  # even without examples
    assert v["knowmem_f.icl_dropped"] == 2.0 and v["knowmem_f.truncated"] == float(too_long)
    assert v["privleak.truncated"] == 1.0
    assert ctx.truncation[("gen", "verbmem")]["budget"] == 24
    # the rule, checked independently: the generation is HF greedy decoding of BOS + the prompt's last 23 tokens
    import torch

    full = encode_prompt(tok, task.extras["verbmem"][0]["prompt"], "raw")
    ids, dropped = keep_tail(full, 24, tok.bos_token_id)
    assert dropped == long_len - 24 and ids == [tok.bos_token_id, *full[-23:]]
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, 24, dtype=torch.long),
                             max_new_tokens=24, do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)[0, 24:].tolist()
    if tok.eos_token_id in out:
        out = out[:out.index(tok.eos_token_id)]
    got = ctx.generations([d["prompt"] for d in task.extras["verbmem"]], ("verbmem",), fmt="raw",
                          max_new_tokens=128)[0]
    assert got == tok.decode(out, skip_special_tokens=True).strip()


def test_training_encode_counts_cut_examples(tiny_lm):
    """45 % of training chunks cut silently (issue 13): encode_pairs now warns with the count."""
    from unlearnkit.llm.lm import encode_pairs
    from unlearnkit.llm.tokenize import TruncationWarning

    _, tok = tiny_lm
    pairs = [("", "short text"), ("", " ".join(["Caldwick bridge repairs"] * 40)), ("", "another short one")]
    with pytest.warns(TruncationWarning, match=r"1 of 3 inputs \(33 %\) exceed 16 tokens"):
        enc = encode_pairs(tok, pairs, "raw", 16)
    assert [e.truncated > 0 for e in enc] == [False, True, False]
    assert all(len(e) <= 16 for e in enc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_pairs(tok, pairs[:1], "raw", 16)  # nothing cut: no warning
    assert np.all([e.truncated == 0 for e in encode_pairs(tok, pairs, "raw", None)])
