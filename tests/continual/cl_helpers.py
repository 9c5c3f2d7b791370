"""Constants and helpers shared by the continual tests (split digits: 5 tasks of 2 classes)."""

from __future__ import annotations

import numpy as np

from unlearnkit.config.schema import ModelSpec, TrainConfig

GROUPS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
MLP = ModelSpec(name="mlp", params={"hidden": [32]})
ADAM = TrainConfig(epochs=15, batch_size=32, lr=1e-3, optimizer="adam", weight_decay=0.0, scheduler="none")
SGD = TrainConfig(epochs=2, batch_size=32, lr=0.05, scheduler="none")

#: a small continual experiment (digits subset, tiny MLP): seconds per run
BASE = {
    "data": {"name": "digits", "train_subset": 400, "test_subset": 200},
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "scheduler": "none"},
    "metrics": ["continual", "accuracy"], "seeds": [0], "engine": {"progress": False, "threads": 1},
}


def task_part(ds, t, groups=GROUPS):
    """The samples of task t (0-based) of ``ds``."""
    return ds.take(np.isin(ds.labels, groups[t]), f"task{t + 1}")
