"""The recsys track through the one runner: config validation, rows, caching, resume, the bundled configs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from unlearnkit.bench import Runner
from unlearnkit.bench import load_config
from unlearnkit.config.loader import deep_merge
from unlearnkit.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "unlearnkit" / "configs"


def tiny(out: Path, **over):
    base = {
        "name": "recsys_tiny",
        "track": "recsys",
        "recsys": {
            "data": {"synthetic": {"n_users": 40, "n_items": 30, "mean_interactions": 8, "seed": 0}},
            "scenario": {"kind": "users", "count": 3},
            "model": {"name": "mf", "dim": 8},
            "train": {"epochs": 5, "batch_size": 128, "lr": 0.01},
            "k": 5,
        },
        "methods": ["retrain", {"name": "reverse_bpr", "epochs": 2},
                    {"name": "receraser", "n_shards": 2, "partition_iters": 2, "agg_epochs": 1},
                    {"name": "rec_grad_ascent", "epochs": 1}],
        "seeds": [0],
        "engine": {"progress": False},
        "output_dir": str(out),
    }
    return load_config(data=deep_merge(base, over))


def run(cfg):
    runner = Runner(cfg, console=Console(file=io.StringIO()))
    return runner, runner.run()


def test_runner_rows_metrics_cache_and_resume(tmp_path):
    cfg = tiny(tmp_path)
    assert cfg.metrics == ["rec_rank", "rec_forget"]  # the track's defaults
    runner, out = run(cfg)
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {"retrain", "original", "reverse_bpr", "receraser", "rec_grad_ascent"}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    oracle = rows["retrain"]["metrics"]
    for key in ("recall@5", "ndcg@5", "forget_recall@5", "forget_ndcg@5", "forget_auc", "unlearn_seconds"):
        assert np.isfinite(oracle[key]), key
    assert oracle["avg_gap"] == 0.0
    gap_keys = ("recall@5", "ndcg@5", "forget_recall@5", "forget_ndcg@5")
    m = rows["reverse_bpr"]["metrics"]
    assert m["avg_gap"] == pytest.approx(np.mean([abs(m[k] - oracle[k]) for k in gap_keys]))
    assert rows["receraser"]["notes"]["n_shards"] == 2
    assert (out.run_dir / "per_sample" / "retrain-seed0.npz").is_file()
    assert runner.task.scenario["n_forget"] > 0 and runner.trained == ["original", "oracle"]
    # a rerun resumes (no new rows); a new run folder with the same data reuses θ_o and θ_r from the cache
    _, again = run(cfg)
    assert again.new_rows == 0
    other = tiny(tmp_path, methods=["retrain", {"name": "rec_grad_ascent", "epochs": 2}])
    r2, _ = run(other)
    assert r2.reused == ["original", "oracle"]


def test_config_errors_are_typed(tmp_path):
    with pytest.raises(ConfigError, match="classifier method"):
        tiny(tmp_path, methods=["retrain", "finetune"])
    with pytest.raises(ConfigError, match="unknown key"):
        tiny(tmp_path, recsys={"modle": {}})
    with pytest.raises(ConfigError, match="recsys metric|classifier metric"):
        tiny(tmp_path, metrics=["accuracy"])


def test_bundled_configs_validate():
    cfg = load_config(CONFIGS / "recsys_synthetic.yaml")
    assert cfg.track == "recsys" and cfg.recsys.model.name == "mf"
    ml = load_config(CONFIGS / "recsys_movielens.yaml", ["recsys.data.root=/nonexistent"])
    runner = Runner(ml, console=Console(file=io.StringIO()))
    from unlearnkit.errors import DataError

    with pytest.raises(DataError, match="grouplens"):
        runner.run()
