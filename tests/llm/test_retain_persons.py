"""``llm.data.retain_persons``: a CPU-sized TOFU keeps only the first N persons of D_r (the retain evaluation set's
persons first) in D and D_r, cuts the retain evaluation set to them and leaves D_f and the MIA holdout untouched.
Golden values: TOFU's retain_perturbed.json holds authors 0–19 in order and forget01 is authors 198–199 (20 QA each),
so 2 kept persons = authors 0 and 1 = full.json rows 0–39; the holdout = authors 196–197 (rows 3920–3959)."""

from __future__ import annotations


import numpy as np
import pytest

from testkit import shared_path
from unlearnkit.bench.tracks import TRACKS
from unlearnkit.bench import load_config
from unlearnkit.bench import experiment as ExperimentConfig
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import DataError

pytest.importorskip("transformers")

TOFU = shared_path("tofu")


def _track(cfg):
    return TRACKS.get("llm")(cfg, Engine(cfg.engine))


def _synthetic(tmp_path, **data) -> ExperimentConfig:
    llm = {"data": {"source": "synthetic", "n_persons": 20, "qa_per_person": 10, "forget_split": "forget10", **data},
           "model": {"kind": "tiny", "vocab_size": 384, "hidden_size": 32, "layers": 2, "heads": 2, "max_len": 96}}
    return ExperimentConfig(name="rp", track="llm", llm=llm, seeds=[0], methods=[{"name": "original"}],
                            engine={"progress": False, "threads": 1}, output_dir=str(tmp_path))


@pytest.mark.skipif(not (TOFU / "full.json").is_file(), reason="TOFU data not in ../shared/data/tofu")
def test_smollm2_config_tofu_slice_golden():
    cfg = load_config("configs/llm/smollm2_lora.yaml", [f"llm.data.root={TOFU}"])
    task = _track(cfg).build_task()
    assert task.forget.ids.tolist() == list(range(3960, 4000))  # forget01 = authors 198, 199
    assert task.retain.ids.tolist() == list(range(0, 40))  # authors 0, 1 (first in retain_perturbed)
    assert task.full.ids.tolist() == list(range(0, 40)) + list(range(3960, 4000))
    assert task.eval_sets["holdout"].ids.tolist() == list(range(3920, 3960))  # authors 196, 197
    ev = task.eval_sets["retain"]
    assert len(ev) == 40 and set(ev.ids.tolist()) == set(range(40))
    assert len(task.eval_sets["forget"]) == 40
    assert task.scenario["n_retain"] == 40 and task.scenario["retain_subjects"] == ["author_0", "author_1"]


def test_retain_persons_keeps_whole_persons_and_the_holdout(tmp_path):
    full_task = _track(_synthetic(tmp_path)).build_task()
    task = _track(_synthetic(tmp_path, retain_persons=3)).build_task()
    subj = [it.subject for it in task.retain if it.subject is not None]
    assert len(set(subj)) == 3
    # whole persons: every QA of a kept person of the unrestricted D_r is kept
    assert len(subj) == sum(1 for it in full_task.retain if it.subject in set(subj))
    # the utility QA the synthetic default trains on are not persons: all of them stay in D and D_r
    util = sorted(it.id for it in full_task.retain if it.subject is None)
    assert util and sorted(it.id for it in task.retain if it.subject is None) == util
    assert set(util) <= set(task.full.ids.tolist())
    # the retain evaluation set's persons come first
    ev_subj = {it.subject for it in full_task.eval_sets["retain"]}
    assert set(subj) <= ev_subj or ev_subj <= set(subj)
    assert set(it.subject for it in task.eval_sets["retain"]) <= set(subj)
    assert np.array_equal(task.forget.ids, full_task.forget.ids)
    assert np.array_equal(task.eval_sets["holdout"].ids, full_task.eval_sets["holdout"].ids)
    assert sorted(task.full.ids.tolist()) == sorted(task.forget.ids.tolist() + task.retain.ids.tolist())
    assert not np.intersect1d(task.full.ids, task.eval_sets["holdout"].ids).size


def test_retain_persons_too_many_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="retain_persons"):
        _track(_synthetic(tmp_path, retain_persons=500)).build_task()
    with pytest.raises(ValueError, match="retain_persons"):
        _synthetic(tmp_path, retain_persons=0)


@pytest.mark.skipif(not (TOFU / "full.json").is_file(), reason="TOFU data not in ../shared/data/tofu")
def test_tofu_utility_in_train_adds_the_utility_qa_to_d_and_d_r_only():
    from unlearnkit.data.text.tofu import load_tofu

    plain, util = load_tofu(TOFU, "forget01"), load_tofu(TOFU, "forget01", utility_in_train=True)
    ra, wf = util.eval_sets["real_authors"].ids.tolist(), util.eval_sets["world_facts"].ids.tolist()
    assert (len(ra), len(wf)) == (100, 117)  # TOFU's real_authors_perturbed / world_facts_perturbed
    assert len(util.full) == 4000 + 217 and len(util.retain) == 3960 + 217
    assert np.array_equal(util.forget.ids, plain.forget.ids)
    assert set(ra + wf) <= set(util.retain.ids.tolist()) and not set(ra + wf) & set(plain.full.ids.tolist())
    assert util.scenario["utility_in_train"] is True and plain.scenario["utility_in_train"] is False
    # through the track (retain_persons keeps them: they are not persons)
    cfg = load_config("configs/llm/smollm2_lora.yaml", [f"llm.data.root={TOFU}", "llm.data.utility_in_train=true"])
    task = _track(cfg).build_task()
    assert len(task.retain) == 40 + 217 and set(ra + wf) <= set(task.full.ids.tolist())
