"""Continual data: permuted tasks (ids, labels, permutations), MNIST-1D's official pickle through a restricted
unpickler (a foreign pickle is refused, never executed), and split MNIST-1D / permuted digits schedules."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import DataConfig, ScenarioConfig
from unlearnkit.data import load_data
from unlearnkit.data.continual import continual_branch, permuted_tasks
from unlearnkit.data.mnist1d import MNIST1D_SHA256, read_mnist1d
from unlearnkit.data.schedule import Evaluate, Learn
from unlearnkit.errors import DataError

#: the read-only shared data next to the checkout (../shared from the repository, wherever the checkout lives)
MNIST1D = next((p / "shared" / "data" / "mnist1d" for p in Path(__file__).resolve().parents
                if (p / "shared" / "data" / "mnist1d").is_dir()), Path("shared/data/mnist1d"))
needs_mnist1d = pytest.mark.skipif(not (MNIST1D / "mnist1d_data.pkl").is_file(), reason="shared MNIST-1D not present")


def test_permuted_tasks_are_disjoint_permuted_copies(digits):
    p = permuted_tasks(digits, 3, seed=7)
    n, c = len(digits.train), digits.num_classes
    assert len(p.train) == 3 * n and p.num_classes == 3 * c and len(p.test) == 3 * len(digits.test)
    assert len(np.unique(p.train.ids)) == 3 * n
    stride = 10_000  # digits ids < 1797
    x0, _, _ = digits.train.batch(np.arange(n))
    flat = x0.reshape(n, -1)
    for t in range(3):
        rows = np.flatnonzero((p.train.ids // stride) == t)
        assert np.array_equal(p.train.labels[rows], digits.train.labels + t * c)
        assert np.array_equal(p.train.ids[rows] - t * stride, digits.train.ids)
        xt, _, _ = p.train.batch(rows)
        perm = np.random.default_rng([7, 0x9E3, t]).permutation(flat.shape[1])
        assert torch.equal(xt.reshape(n, -1), flat[:, perm])
    # different tasks use different permutations (task 1 is permuted too)
    a, _, _ = p.train.batch(np.arange(1))
    assert not torch.equal(a.reshape(-1), flat[0])
    with pytest.raises(DataError, match="at least 2 tasks"):
        permuted_tasks(digits, 1, 0)


def test_permuted_schedule_splits_back_into_the_copies(digits):
    sc = ScenarioConfig(kind="continual", tasks=3, sequence="L1 L2 U1 L3", permute=True, head="task")
    task, branch = continual_branch(digits, sc)
    learns = [op for op in branch.ops if isinstance(op, Learn)]
    assert [sorted(set(op.task.train.labels.tolist())) for op in learns] == [list(range(10)),
                                                                             list(range(10, 20)),
                                                                             list(range(20, 30))]
    assert task.scenario["permute"] and task.scenario["head"] == "task" and task.num_classes == 30
    ev = [op for op in branch.ops if isinstance(op, Evaluate)]
    assert [e.dims["step"] for e in ev] == [2, 3]


@needs_mnist1d
def test_mnist1d_loader_reads_the_official_pickle():
    d = load_data(DataConfig(name="mnist1d", root=str(MNIST1D), normalize=False))
    raw = read_mnist1d(MNIST1D)
    assert raw["sha256"] == MNIST1D_SHA256 and not d.notes
    assert len(d.train) == 4000 and len(d.test) == 1000 and d.train.input_shape == (40,)
    x, y, ids = d.train.batch(np.arange(5))
    assert np.allclose(x.numpy(), raw["x"][:5]) and y.tolist() == raw["y"][:5].tolist() and ids.tolist() == [0, 1, 2,
                                                                                                          3, 4]
    sub = load_data(DataConfig(name="mnist1d", root=str(MNIST1D), train_subset=500, test_subset=100))
    assert len(sub.train) == 500 and set(sub.train.ids) <= set(range(4000))
    assert np.bincount(sub.train.labels).min() >= 45  # stratified


@needs_mnist1d
def test_split_mnist1d_schedule(tmp_path):
    d = load_data(DataConfig(name="mnist1d", root=str(MNIST1D)))
    sc = ScenarioConfig(kind="continual", tasks=5, sequence="L1 L2 U1 L3 U2 L4", evaluate="every")
    task, branch = continual_branch(d, sc)
    assert len(branch.points) == 6 and task.scenario["tasks"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert task.scenario["classes_removed"] == [0, 1, 2, 3]


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_a_foreign_pickle_is_refused_not_executed(tmp_path, capsys):
    bad = tmp_path / "mnist1d_data.pkl"
    bad.write_bytes(pickle.dumps({"x": np.zeros((2, 40)), "y": _Evil()}))
    with pytest.raises(DataError, match="refusing to load it"):
        read_mnist1d(tmp_path)
    assert "executed" not in capsys.readouterr().out
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"x": np.zeros((3, 40)), "y": np.zeros(2, dtype=np.int64),
                                    "x_test": np.zeros((1, 40)), "y_test": np.zeros(1, dtype=np.int64)}))
    with pytest.raises(DataError, match="must be"):
        read_mnist1d(other)
    with pytest.raises(DataError, match="does not exist"):
        read_mnist1d(tmp_path / "missing")
    with pytest.raises(DataError, match="data.root is not set"):
        load_data(DataConfig(name="mnist1d"))
    ok = tmp_path / "ok.pkl"
    buf = io.BytesIO()
    pickle.dump({"x": np.ones((4, 40)), "y": np.array([0, 1, 0, 1]), "x_test": np.ones((2, 40)),
                 "y_test": np.array([0, 1])}, buf)
    ok.write_bytes(buf.getvalue())
    d = load_data(DataConfig(name="mnist1d", root=str(ok), normalize=False))
    assert len(d.train) == 4 and d.notes and "not the official" in d.notes[0]
