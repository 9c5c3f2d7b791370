"""The README's Python API on a user's own model and data (a plain torch Dataset, a custom nn.Module)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import unlearnkit as uk
from unlearnkit.errors import ConfigError, DataError


class PairDataset(Dataset):
    """A user dataset that is NOT in-memory tensors: items built on access."""

    def __init__(self, n: int, seed: int) -> None:
        g = np.random.default_rng(seed)
        self.y = g.integers(0, 3, size=n)
        self.x = (g.normal(size=(n, 6)) + 2.5 * np.eye(6)[self.y]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i]), int(self.y[i])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture
def task():
    return uk.make_task(PairDataset(120, 0), PairDataset(40, 1), forget_ids=[3, 17, 42, 99])


def test_make_task_uses_the_requested_ids(task):
    assert sorted(task.forget.ids.tolist()) == [3, 17, 42, 99]
    assert len(task.retain) == 116 and not set(task.retain.ids) & {3, 17, 42, 99}
    x, y, ids = task.forget[0]
    assert x.shape == (6,) and ids == 3


def test_make_task_errors():
    with pytest.raises(DataError, match="not in the train set"):
        uk.make_task(PairDataset(10, 0), PairDataset(5, 1), forget_ids=[10])
    with pytest.raises(DataError, match="duplicated"):
        uk.make_task(PairDataset(10, 0), PairDataset(5, 1), forget_ids=[1, 1])
    with pytest.raises(ConfigError, match="exactly one"):
        uk.make_task(PairDataset(10, 0), PairDataset(5, 1))


def test_unlearn_and_evaluate_a_trained_user_model(task):
    model = Net()
    from unlearnkit.engine import Engine

    Engine(uk.EngineConfig(progress=False)).fit(model, task.train, uk.TrainConfig(epochs=10, batch_size=16), seed=0)
    before = uk.evaluate(model, task)
    res = uk.unlearn(copy.deepcopy(model), task, "grad_ascent", lr=0.05, epochs=5, batch_size=4)
    after = uk.evaluate(res.model, task)
    assert set(before) >= {"forget_acc", "unlearn_acc", "retain_acc", "test_acc", "mia_efficacy"}
    assert before["forget_acc"] == 100.0  # θ_o fits its 4 forget samples
    # gradient ascent at lr 0.05 must un-fit some of them (a no-op, or an lr that does not reach the method, fails)
    assert after["forget_acc"] < before["forget_acc"], (before, after)  # here 75 %: one of the four is lost
    assert after["unlearn_acc"] == 100.0 - after["forget_acc"]
    assert res.steps == 5 and set(res.seen_ids.tolist()) == {3, 17, 42, 99}
    moved = sum(float((a - b).detach().abs().sum()) for a, b in zip(res.model.parameters(), model.parameters()))
    assert moved > 0.1


def test_compare_runs_the_whole_pipeline_on_user_data(task, tmp_path):
    out = uk.compare(lambda seed: Net(), task, methods=["finetune", {"name": "grad_ascent", "lr": 1e-3}],
                     train=uk.TrainConfig(epochs=3, batch_size=16), seeds=[0], output_dir=str(tmp_path))
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {"retrain", "original", "finetune", "grad_ascent"}
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["retrain"]["is_oracle"] and rows["retrain"]["scenario"]["n_forget"] == 4
    summary = uk.summarize(out.rows)
    assert summary[0].is_oracle and summary[0].mean["avg_gap"] == 0.0
    assert (out.run_dir / "report.html").is_file()
    # different user data -> a different run folder (never resumes into another data set's results, C05)
    other = uk.make_task(PairDataset(120, 5), PairDataset(40, 1), forget_ids=[3, 17, 42, 99])
    out2 = uk.compare(lambda seed: Net(), other, methods=["finetune", {"name": "grad_ascent", "lr": 1e-3}],
                      train=uk.TrainConfig(epochs=3, batch_size=16), seeds=[0], output_dir=str(tmp_path),
                      write_report=False)
    assert out2.run_dir != out.run_dir and out2.new_rows == 4


def test_compare_with_a_new_forget_request_never_resumes_the_old_run(task, tmp_path):
    """A second deletion request on the same data and model is a new run (it was silently served stale rows once)."""
    kw = dict(methods=["finetune"], train=uk.TrainConfig(epochs=1, batch_size=16), seeds=[0],
              output_dir=str(tmp_path), write_report=False)
    first = uk.compare(lambda seed: Net(), task, **kw)
    other = uk.make_task(PairDataset(120, 0), PairDataset(40, 1), forget_ids=[5, 6, 7, 8, 9, 10])
    second = uk.compare(lambda seed: Net(), other, **kw)
    assert second.run_dir != first.run_dir and second.new_rows == 3
    assert {r["scenario"]["n_forget"] for r in second.rows} == {6}
    import yaml

    resolved = yaml.safe_load((second.run_dir / "config.resolved.yaml").read_text())
    assert resolved["scenario"]["ids"] == [5, 6, 7, 8, 9, 10]
