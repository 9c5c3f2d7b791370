"""Shared builders for golden metric tests: stub tasks whose inputs are the logits an identity model returns."""

from __future__ import annotations

import numpy as np
import torch

from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.data.scenarios import Task


def confidence_logits(labels: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Two-class logits (float32) whose softmax gives probability ``conf`` to the true label: log p vs log(1 − p)."""
    out = np.zeros((len(labels), 2), dtype=np.float64)
    out[np.arange(len(labels)), labels] = np.log(conf)
    out[np.arange(len(labels)), 1 - labels] = np.log1p(-conf)
    return out.astype(np.float32)


def stub_task(parts: dict[str, tuple[np.ndarray, np.ndarray]], k: int = 2, kind: str = "random",
              forgotten_classes: list[int] | None = None) -> Task:
    """A task over one in-memory source; ``parts[name] = (logits (n, k), labels (n,))`` for forget/retain/test."""
    xs, ys, sets, start = [], [], {}, 0
    for name in ("forget", "retain", "test"):
        x, y = parts[name]
        sets[name] = (np.arange(start, start + len(y)), y)
        xs.append(x)
        ys.append(y)
        start += len(y)
    src = TensorSource(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys).astype(np.int64)))

    def mk(name: str) -> SampleSet:
        pos, y = sets[name]
        return SampleSet(src, pos, pos, y, k, name)

    forget, retain, test = mk("forget"), mk("retain"), mk("test")
    test_forgotten = None
    if forgotten_classes is not None:
        test_forgotten = test.take(np.isin(test.labels, forgotten_classes), "test_forgotten")
    return Task("stub", forget.concat(retain, "train"), forget, retain, test, k, {"kind": kind}, test_forgotten)
