"""Text data: synthetic TOFU-style generator, QASet, TOFU loader (real files in shared/data/tofu), MUSE fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testkit import shared_path
from unlearnkit.data.text import QAItem, QASet, build_text_task
from unlearnkit.data.text.muse import chunk_text, load_muse
from unlearnkit.data.text.synthetic import build_synthetic_task, generate_synthetic, n_forget_persons
from unlearnkit.data.text.tofu import load_tofu
from unlearnkit.errors import ConfigError, DataError

TOFU = shared_path("tofu")
needs_tofu = pytest.mark.skipif(not (TOFU / "full.json").is_file(), reason="needs the TOFU files in ../shared/data/tofu")
MUSE = Path(__file__).resolve().parents[1] / "fixtures" / "muse_tiny"


def test_synthetic_deterministic_and_seeded():
    a, ua = generate_synthetic(n_persons=5, qa_per_person=10, seed=3)
    b, ub = generate_synthetic(n_persons=5, qa_per_person=10, seed=3)
    c, _ = generate_synthetic(n_persons=5, qa_per_person=10, seed=4)
    assert a.items == b.items and ua["world_facts"].items == ub["world_facts"].items
    assert a.items != c.items
    assert a.ids.tolist() == list(range(50))


def test_synthetic_schema_perturbed_are_wrong_and_plausible():
    full, util = generate_synthetic(n_persons=6, qa_per_person=20, n_perturbed=4, seed=0)
    for it in full:
        assert it.paraphrased_answer and it.idk_answer and it.subject
        assert len(it.perturbed_answers) == 4 and len(set(it.perturbed_answers)) == 4
        assert it.paraphrased_answer not in it.perturbed_answers
        # same template as the paraphrase, other slot value: shares the paraphrase's words except the value
        common = set(it.paraphrased_answer.split()) & set(it.perturbed_answers[0].split())
        assert len(common) >= 2
    # each person gets the same question types; the subject is named in its questions (except the name question)
    assert sum(it.subject in it.question for it in full) == 6 * 19
    for s in util.values():
        assert len(s) == 20 and all(len(it.perturbed_answers) == 4 and it.answer not in it.perturbed_answers for it in s)


@pytest.mark.parametrize("split,k", [("forget01", 2), ("forget05", 10), ("forget10", 20)])
def test_forget_split_sizes_match_tofu(split, k):
    assert n_forget_persons(200, split) == k  # TOFU: 200 authors → 2 / 10 / 20


def test_synthetic_task_split_is_person_level_and_disjoint():
    t = build_synthetic_task("forget10", n_persons=20, qa_per_person=10)
    f_subj = {it.subject for it in t.forget}
    assert len(f_subj) == 2 and len(t.forget) == 20
    assert not f_subj & {it.subject for it in t.retain}
    assert set(t.forget_ids) | set(t.retain_ids) == set(t.train_ids)
    assert not set(t.forget_ids) & set(t.retain_ids)
    assert set(t.eval_sets["retain"].ids) <= set(t.retain_ids)
    assert t.scenario["n_forget"] == 20 and t.scenario["subjects_forget"] == sorted(f_subj)
    t2 = build_synthetic_task("forget10", n_persons=20, qa_per_person=10, utility_in_train=False)
    assert len(t2.full) == len(t.full) - 40


def test_qaset_views_and_require():
    s = QASet("forget", [QAItem(5, "q5", "a5"), QAItem(2, "q2", "a2", idk_answer="idk")], "x/forget01.json")
    assert s.select_ids([2]).ids.tolist() == [2] and s.exclude_ids([2]).ids.tolist() == [5]
    with pytest.raises(DataError, match=r"method idk_dpo needs field 'idk_answer'.*'forget'.*x/forget01.json"):
        s.require("idk_answer", who="method idk_dpo")
    with pytest.raises(DataError, match="duplicate ids"):
        QASet("x", [QAItem(1, "a", "b"), QAItem(1, "c", "d")])


@needs_tofu
def test_tofu_real_files():
    t = load_tofu(TOFU, "forget01")
    assert (len(t.full), len(t.forget), len(t.retain)) == (4000, 40, 3960)
    assert t.forget_ids.tolist() == list(range(3960, 4000))  # the last 2 authors of full.json
    assert t.scenario["subjects_forget"] == ["author_198", "author_199"]
    ev = t.eval_sets
    assert len(ev["forget"]) == 40 and len(ev["retain"]) == 400
    assert ev["forget"].ids.tolist() == t.forget_ids.tolist()
    assert all(len(it.perturbed_answers) == 5 and it.paraphrased_answer for it in ev["forget"])
    assert len(ev["real_authors"]) == 100 and len(ev["world_facts"]) == 117
    assert all(it.paraphrased_answer is None and len(it.perturbed_answers) >= 3 for it in ev["real_authors"])
    assert all(it.idk_answer for it in t.forget)
    # D_f's training items carry the forget split's paraphrased / perturbed answers (ECO, ULD and ICUL read them
    # there); the same rows of `full` (the training corpus) do not
    by_id = {it.id: it for it in ev["forget"]}
    assert all(it.perturbed_answers == tuple(by_id[it.id].perturbed_answers)
               and it.paraphrased_answer == by_id[it.id].paraphrased_answer for it in t.forget)
    assert not any(it.perturbed_answers or it.paraphrased_answer for it in t.full)


def _copy_tofu(tmp_path: Path) -> Path:
    root = tmp_path / "tofu"
    shutil.copytree(TOFU, root)
    return root


@needs_tofu
def test_tofu_missing_field_names_field_and_file(tmp_path):
    root = _copy_tofu(tmp_path)
    path = root / "forget01_perturbed.json"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    del rows[3]["paraphrased_answer"]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"forget01_perturbed\.json lacks field 'paraphrased_answer' in row 3"):
        load_tofu(root, "forget01")


@needs_tofu
def test_tofu_empty_forget_split(tmp_path):
    root = _copy_tofu(tmp_path)
    (root / "forget01.json").write_text("")
    with pytest.raises(DataError, match="forget split is empty"):
        load_tofu(root, "forget01")


def test_tofu_bad_input(tmp_path):
    with pytest.raises(DataError, match="full.json not found"):
        load_tofu(tmp_path, "forget01")
    with pytest.raises(ConfigError, match="unknown TOFU forget split"):
        load_tofu(TOFU, "forget02")
    with pytest.raises(ConfigError, match="unknown text data source"):
        build_text_task("tofuu")


def test_muse_fixture_layout():
    t = load_muse(MUSE, chunk_chars=150)
    assert len(t.forget) == 4 and len(t.retain) == 3 and all(it.question == "" for it in t.full)
    assert t.forget_ids.tolist() == [0, 1, 2, 3] and t.retain_ids.min() == 1_000_000
    assert t.eval_sets["knowmem_forget"][0].answer == "Ilsa Dorn"
    assert len(t.eval_sets["knowmem_retain"]) == 2 and len(t.extras["knowmem_forget_icl"]) == 1
    assert t.extras["verbmem"][0]["gt"] == " Mayor Ilsa Dorn cut the ribbon."
    assert [len(t.extras["privleak"][k]) for k in ("forget", "retain", "holdout")] == [2, 1, 2]


def test_muse_missing_field_and_file(tmp_path):
    root = tmp_path / "m"
    shutil.copytree(MUSE, root)
    (root / "knowmem" / "forget_qa.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(DataError, match=r"forget_qa\.json lacks field 'answer'"):
        load_muse(root)
    (root / "verbmem" / "forget.json").unlink()
    with pytest.raises(DataError, match="lacks forget.json"):
        load_muse(root)


def test_chunk_text_budget():
    text = "aaaa\n\nbbbb\n\n" + "c" * 25
    chunks = chunk_text(text, 10)
    assert chunks == ["aaaa\n\nbbbb", "c" * 10, "c" * 10, "c" * 5]
    assert all(len(c) <= 10 for c in chunks)


# --------------------------------------------------------------------------------------- hub loaders (no network)
def _fake_hub(tables: dict[tuple, list]):
    """A stand-in for ``datasets.load_dataset`` serving in-memory tables as real ``datasets.Dataset`` objects."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        if (path, name, split) not in tables:
            raise FileNotFoundError(f"no such config/split {name}/{split}")
        return datasets.Dataset.from_list(tables[(path, name, split)])

    return load_dataset, calls


def _muse_tables(hub_id: str) -> dict[tuple, list]:
    def txt(stem):
        return [{"text": (MUSE / "raw" / f"{stem}.txt").read_text(encoding="utf-8")}]

    def js(rel):
        return json.loads((MUSE / rel).read_text(encoding="utf-8"))

    t = {(hub_id, "raw", s): txt(s) for s in ("forget", "retain1", "retain2", "holdout")}
    t[(hub_id, "verbmem", "forget")] = js("verbmem/forget.json")
    for s in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"):
        t[(hub_id, "knowmem", s)] = js(f"knowmem/{s}.json")
    for s in ("forget", "retain", "holdout"):
        t[(hub_id, "privleak", s)] = [{"text": x} for x in js(f"privleak/{s}.json")]
    return t


def test_muse_hub_loader_equals_local_folder(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    load, calls = _fake_hub(_muse_tables("muse-bench/MUSE-Books"))
    monkeypatch.setattr(datasets, "load_dataset", load)
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    hub = build_text_task("muse", None, seed=0, chunk_chars=150, hub_id="muse-bench/MUSE-Books")
    local = load_muse(MUSE, chunk_chars=150)
    assert [(i.id, i.answer) for i in hub.full] == [(i.id, i.answer) for i in local.full]
    assert hub.extras["verbmem"] == local.extras["verbmem"] and hub.extras["privleak"] == local.extras["privleak"]
    for k in ("knowmem_forget", "knowmem_retain"):
        assert [(i.question, i.answer) for i in hub.eval_sets[k]] == [(i.question, i.answer) for i in local.eval_sets[k]]
    assert (tmp_path / "cache" / "muse" / "muse-bench__MUSE-Books" / "verbmem" / "forget.json").is_file()
    n = len(calls)
    build_text_task("muse", None, chunk_chars=150, hub_id="muse-bench/MUSE-Books")  # laid out once: no new reads
    assert len(calls) == n == 12


def test_muse_hub_errors_name_config_and_split(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    tables = _muse_tables("muse-bench/MUSE-News")
    tables[("muse-bench/MUSE-News", "knowmem", "retain_qa")] = [{"question": "q", "reply": "a"}]
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(tables)[0])
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"config 'knowmem' split 'retain_qa' lacks column\(s\) \['answer'\]"):
        build_text_task("muse", None)
    del tables[("muse-bench/MUSE-News", "privleak", "holdout")]
    tables[("muse-bench/MUSE-News", "knowmem", "retain_qa")] = [{"question": "q", "answer": "a"}]
    with pytest.raises(DataError, match=r"config 'privleak' split 'holdout'.*root=<a MUSE corpus folder>"):
        build_text_task("muse", None)
    # nothing half-written is left looking complete
    assert not (tmp_path / "cache" / "muse" / "muse-bench__MUSE-News").exists()


@needs_tofu
def test_tofu_hub_loader_equals_local_files(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def rows(split):
        return [json.loads(line) for line in (TOFU / f"{split}.json").read_text(encoding="utf-8").splitlines()
                if line.strip()]

    _, calls = _fake_hub({})

    def hub(path, name=None, split=None, **kw):
        assert path == "locuslab/TOFU" and split == "train"
        calls.append(name)
        return datasets.Dataset.from_list(rows(name))

    monkeypatch.setattr(datasets, "load_dataset", hub)
    a, b = load_tofu(None, "forget01"), load_tofu(TOFU, "forget01")
    assert "full" in calls and "forget01_perturbed" in calls
    for x, y in ((a.full, b.full), (a.forget, b.forget), (a.retain, b.retain)):
        assert [(i.id, i.question, i.answer) for i in x] == [(i.id, i.question, i.answer) for i in y]
    for k in b.eval_sets:
        assert [(i.id, i.paraphrased_answer, i.perturbed_answers) for i in a.eval_sets[k]] == \
            [(i.id, i.paraphrased_answer, i.perturbed_answers) for i in b.eval_sets[k]]
    assert a.forget.source.startswith("hf:locuslab/TOFU/")
