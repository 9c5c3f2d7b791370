"""The retrain oracle provably never saw D_f: the ids recorded in its cached checkpoint are exactly D_r."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from rich.console import Console

from unlearnkit.bench import Runner
from unlearnkit.bench import load_config
from unlearnkit.data import build_task, load_data
from unlearnkit.engine.checkpoint import ModelCache
from unlearnkit.models import build_model


def test_oracle_trained_ids_equal_the_retain_set_and_miss_the_forget_set(tmp_path):
    cfg = load_config(data={
        "name": "oracle_ids",
        "data": {"name": "digits", "train_subset": 200, "test_subset": 100},
        "model": {"name": "mlp", "hidden": [16]},
        "scenario": {"kind": "class", "classes": [3]},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "methods": [{"name": "finetune", "epochs": 1}],
        "seeds": [0],
        "engine": {"progress": False},
        "output_dir": str(tmp_path),
    })
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    rows = {r["method"]: r for r in out.rows}
    task = build_task(load_data(cfg.data), cfg.scenario)  # rebuilt here, independently of the runner
    assert len(task.forget) > 0 and np.all(task.forget.labels == 3)
    cache = ModelCache(Path(cfg.output_dir) / "cache")

    _, extras = cache.load(rows["retrain"]["lineage_key"], build_model(cfg.model, (1, 8, 8), 10))
    oracle_ids = extras["trained_ids"].numpy()
    assert np.array_equal(np.sort(oracle_ids), np.sort(task.retain.ids))  # trained on D_r ...
    assert len(np.intersect1d(oracle_ids, task.forget.ids)) == 0  # ... and never on D_f

    # the original model, by contrast, saw all of D (find it among the cache entries by its recorded role)
    roles = {}
    for d in (Path(cfg.output_dir) / "cache").iterdir():
        manifest, ex = cache.load(d.name, build_model(cfg.model, (1, 8, 8), 10))
        roles[manifest["meta"]["role"]] = ex["trained_ids"].numpy()
    assert set(roles) == {"original", "oracle"}
    assert np.array_equal(np.sort(roles["original"]), np.sort(task.train.ids))
    assert set(task.forget.ids.tolist()) <= set(roles["original"].tolist())

    # C57: the class scenario is recorded as such; TA excludes class 3, which is scored separately
    for label in ("retrain", "finetune"):
        row = rows[label]
        assert row["scenario"]["kind"] == "class" and row["scenario"]["classes"] == [3]
        z = np.load(out.run_dir / "per_sample" / f"{label}-seed0.npz")
        assert not np.any(z["test.labels"] == 3) and np.all(z["test_forgotten.labels"] == 3)
        assert len(z["test.labels"]) + len(z["test_forgotten.labels"]) == len(task.test)
        ta = 100.0 * int((z["test.logits"].argmax(1) == z["test.labels"]).sum()) / len(z["test.labels"])
        n_f = len(z["test_forgotten.labels"])
        fta = 100.0 * int((z["test_forgotten.logits"].argmax(1) == z["test_forgotten.labels"]).sum()) / n_f
        assert row["metrics"]["test_acc"] == ta and row["metrics"]["forgotten_test_acc"] == fta
