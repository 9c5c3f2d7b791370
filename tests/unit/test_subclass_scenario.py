"""The ``subclass`` scenario's success path on a small data set with a class hierarchy built here (no bundled data set
has one): 6 fine classes in 3 super-classes, siblings close together. D_f = every training sample of one fine class;
the record names its super-class; the runner trains θ_o / θ_r and unlearns it end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data import DATASETS, build_task
from unlearnkit.data.base import LoadedData, SampleSet, TensorSource
from unlearnkit.errors import DataError

SUPER = (0, 0, 1, 1, 2, 2)  # fine class → super-class
NAME = "test_hierarchy_blobs"


def hierarchy_blobs(n_per_class: int = 30, seed: int = 0) -> LoadedData:
    """12-D Gaussian blobs: fine class c sits at 4·e_{super(c)} + 1.5·e_{3+c} (siblings 2.1 apart, cousins 6.2),
    unit noise; every 4th sample is a test sample; ids 0..n−1."""
    g = np.random.default_rng(seed)
    xs, ys = [], []
    for c, s in enumerate(SUPER):
        mean = np.zeros(12, np.float32)
        mean[s] = 4.0
        mean[3 + c] = 1.5
        xs.append(mean + g.normal(size=(n_per_class, 12)).astype(np.float32))
        ys.append(np.full(n_per_class, c))
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys).astype(np.int64))
    n = len(y)
    test = np.arange(0, n, 4)
    train = np.setdiff1d(np.arange(n), test)
    src = TensorSource(x, y)
    return LoadedData(NAME, SampleSet(src, train, train, y.numpy()[train], 6, "train"),
                      SampleSet(src, test, test, y.numpy()[test], 6, "test"), 6, tuple(f"fine{c}" for c in range(6)),
                      superclasses=SUPER)


@pytest.fixture
def registered():
    DATASETS.register(NAME)(lambda cfg: hierarchy_blobs())
    yield NAME
    DATASETS.unregister(NAME)


def test_subclass_forgets_exactly_one_fine_class_and_records_its_superclass():
    data = hierarchy_blobs()
    t = build_task(data, ScenarioConfig(kind="subclass", classes=[2]))
    want = np.sort(data.train.ids[data.train.labels == 2])
    assert len(want) == 22  # 30 per class, every 4th of the 180 samples held out
    assert np.array_equal(np.sort(t.forget.ids), want)
    assert set(t.forget.labels.tolist()) == {2}
    assert 2 not in set(t.retain.labels.tolist()) and 3 in set(t.retain.labels.tolist())  # the sibling stays
    assert len(t.retain) + len(t.forget) == len(data.train) and not np.intersect1d(t.retain.ids, t.forget.ids).size
    sc = t.scenario
    assert (sc["kind"], sc["classes"], sc["superclasses"]) == ("subclass", [2], [1])
    assert (sc["n_forget"], sc["n_retain"]) == (22, len(data.train) - 22)
    two = build_task(data, ScenarioConfig(kind="subclass", classes=[1, 4]))
    assert two.scenario["superclasses"] == [0, 2] and set(two.forget.labels.tolist()) == {1, 4}
    with pytest.raises(DataError, match=r"out of range \[0, 6\)"):
        build_task(data, ScenarioConfig(kind="subclass", classes=[6]))


def test_subclass_runs_end_to_end(registered, tmp_path):
    from unlearnkit.bench import run_experiment
    from unlearnkit.bench import load_config
    from unlearnkit.report import write_reports

    cfg = load_config(data={
        "name": "subclass", "output_dir": str(tmp_path), "seeds": [0], "engine": {"progress": False},
        "data": {"name": registered}, "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 30, "batch_size": 16, "lr": 0.05},
        "scenario": {"kind": "subclass", "classes": [2]},
        "methods": ["retrain", {"name": "finetune", "epochs": 5}], "metrics": ["accuracy"]})
    out = run_experiment(cfg, write_report=False)
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {"retrain", "original", "finetune"} and all(r["status"] == "ok" for r in rows.values()), \
        {k: r.get("error") for k, r in rows.items()}
    assert rows["retrain"]["scenario"]["superclasses"] == [1] and rows["retrain"]["scenario"]["n_forget"] == 22
    oracle = rows["retrain"]["metrics"]
    # θ_r never saw fine class 2: it calls those samples something else (its sibling, mostly); it still learns the rest
    assert oracle["forget_acc"] < 10.0 and oracle["retain_acc"] > 80.0
    assert oracle["unlearn_acc"] == pytest.approx(100.0 - oracle["forget_acc"])
    md, _ = write_reports(out.run_dir)
    assert "subclass: forget class 2 (n_forget = 22)" in md.read_text()
    with open(out.run_dir / "results.jsonl") as fh:
        assert all(json.loads(line)["scenario"]["kind"] == "subclass" for line in fh if line.strip())
