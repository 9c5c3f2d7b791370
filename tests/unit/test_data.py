"""Data: sample sets with stable ids, the digits loader, scenarios and split invariants (unlearnkit.data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import DataConfig, ScenarioConfig
from unlearnkit.data import DATASETS, SampleSet, build_task, check_split, load_data, stratified_subset
from unlearnkit.data.base import LoadedData, TensorSource
from unlearnkit.data.scenarios import ids_digest
from unlearnkit.errors import DataError


def ten_class_data(n_per_class: int = 100, n_test_per_class: int = 20, seed: int = 0) -> LoadedData:
    """10 classes × ``n_per_class`` train samples (ids 0..), plus a test split on the same source (C25/C57 input)."""
    g = np.random.default_rng(seed)
    k = 10
    n_train, n_test = k * n_per_class, k * n_test_per_class
    y = np.concatenate([np.repeat(np.arange(k), n_per_class), np.repeat(np.arange(k), n_test_per_class)])
    x = torch.from_numpy(g.normal(size=(len(y), 4)).astype(np.float32))
    src = TensorSource(x, torch.from_numpy(y))
    tr, te = np.arange(n_train), np.arange(n_train, n_train + n_test)
    return LoadedData("ten", SampleSet(src, tr, tr, y[tr], k, "train"), SampleSet(src, te, te, y[te], k, "test"),
                      k, tuple(map(str, range(k))))


@pytest.fixture(scope="module")
def digits() -> LoadedData:
    return load_data(DataConfig(name="digits", train_subset=300, test_subset=100))


# -- SampleSet ------------------------------------------------------------------------------------------------------
def test_sample_set_items_and_batches_carry_stable_ids():
    x = torch.arange(12, dtype=torch.float32).view(6, 2)
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    s = SampleSet.from_tensors(x, y, ids=[10, 11, 12, 13, 14, 15])
    assert s.num_classes == 3 and len(s) == 6 and s.input_shape == (2,)
    xi, yi, idi = s[4]
    assert torch.equal(xi, x[4]) and (yi, idi) == (2, 14)
    sub = s.select_ids([13, 10])
    assert sub.ids.tolist() == [13, 10] and sub.labels.tolist() == [1, 0]
    bx, by, bid = sub.batch(np.array([0, 1]))
    assert torch.equal(bx, x[[3, 0]]) and by.tolist() == [1, 0] and bid.tolist() == [13, 10]
    rest = s.exclude_ids([13, 10])
    assert rest.ids.tolist() == [11, 12, 14, 15]
    assert s.relabel([1, 0, 1, 0, 0, 0]).labels.tolist() == [1, 0, 1, 0, 0, 0]
    assert s.relabel([1, 0, 1, 0, 0, 0]).ids.tolist() == s.ids.tolist()


def test_sample_set_rejects_duplicate_ids_and_bad_labels():
    x, y = torch.zeros(3, 2), torch.tensor([0, 1, 1])
    with pytest.raises(DataError, match="unique"):
        SampleSet.from_tensors(x, y, ids=[1, 1, 2])
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        SampleSet(TensorSource(x, y), [0, 1, 2], [0, 1, 2], [0, 1, 5], 2)
    with pytest.raises(DataError, match="equal length"):
        SampleSet(TensorSource(x, y), [0, 1], [0, 1, 2], [0, 1, 1], 2)
    with pytest.raises(DataError, match="rows"):
        SampleSet.from_tensors(torch.zeros(2, 2), torch.tensor([0, 1, 1]))


def test_from_dataset_reads_labels_and_refuses_non_pairs():
    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((2,), float(i)), i % 2

    s = SampleSet.from_dataset(Pairs())
    assert s.labels.tolist() == [0, 1, 0, 1] and s.ids.tolist() == [0, 1, 2, 3]
    bx, by, _ = s.batch(np.array([3, 1]))
    assert bx[:, 0].tolist() == [3.0, 1.0] and by.tolist() == [1, 1]

    class Bare(Pairs):
        def __getitem__(self, i):
            return torch.zeros(2)

    with pytest.raises(DataError, match=r"\(x, y\) pairs"):
        SampleSet.from_dataset(Bare())


def test_stratified_subset_preserves_class_proportions_and_is_seeded():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    pos = stratified_subset(labels, 20, seed=3)
    assert len(pos) == 20 and len(np.unique(pos)) == 20 and np.all(np.diff(pos) > 0)
    assert np.bincount(labels[pos]).tolist() == [12, 6, 2]
    assert np.array_equal(pos, stratified_subset(labels, 20, seed=3))
    assert not np.array_equal(pos, stratified_subset(labels, 20, seed=4))
    with pytest.raises(DataError, match="only 100 samples"):
        stratified_subset(labels, 101, seed=0)


# -- digits loader --------------------------------------------------------------------------------------------------
def test_digits_split_sizes_ids_and_determinism():
    full = load_data(DataConfig(name="digits"))
    assert (len(full.train), len(full.test), full.num_classes) == (1348, 449, 10)  # 449 = round(0.25 · 1797)
    assert len(np.intersect1d(full.train.ids, full.test.ids)) == 0
    assert sorted(np.concatenate([full.train.ids, full.test.ids]).tolist()) == list(range(1797))
    assert full.train.input_shape == (1, 8, 8)
    again = load_data(DataConfig(name="digits"))
    assert np.array_equal(full.train.ids, again.train.ids)
    sub = load_data(DataConfig(name="digits", train_subset=300, test_subset=100))
    assert (len(sub.train), len(sub.test)) == (300, 100)
    assert set(sub.train.ids) <= set(full.train.ids) and set(sub.test.ids) <= set(full.test.ids)
    assert np.bincount(sub.train.labels, minlength=10).min() >= 28  # stratified: ~30 per class
    other = load_data(DataConfig(name="digits", split_seed=1))
    assert not np.array_equal(full.test.ids, other.test.ids)


def test_dataset_registry_lists_digits():
    assert "digits" in DATASETS.names()


# -- scenarios: typed errors ----------------------------------------------------------------------------------------
def test_class_absent_from_data_lists_present_classes(blobs):
    with pytest.raises(DataError) as exc:
        build_task(blobs, ScenarioConfig(kind="class", classes=[5]))
    msg = str(exc.value)
    assert "[5]" in msg and "classes present: [0, 1, 2]" in msg


def test_random_selection_of_nothing_or_everything_is_an_error(digits):
    with pytest.raises(DataError, match="selects 0 of 300"):
        build_task(digits, ScenarioConfig(kind="random", fraction=0.001))
    with pytest.raises(DataError, match="between 1 and 299"):
        build_task(digits, ScenarioConfig(kind="random", count=300))


def test_forget_ids_out_of_range_or_duplicated(digits):
    bad = int(digits.train.ids.max()) + 1000
    with pytest.raises(DataError) as exc:
        build_task(digits, ScenarioConfig(kind="ids", ids=[int(digits.train.ids[0]), bad]))
    assert str(bad) in str(exc.value) and "valid ids" in str(exc.value)
    test_id = int(digits.test.ids[0])  # a test sample is not a training sample
    with pytest.raises(DataError, match="not in the train set"):
        build_task(digits, ScenarioConfig(kind="ids", ids=[test_id]))
    i = int(digits.train.ids[3])
    with pytest.raises(DataError, match=rf"duplicated: \[{i}\]"):
        build_task(digits, ScenarioConfig(kind="ids", ids=[i, i]))


def test_ids_scenario_forgets_exactly_the_named_ids(digits):
    want = digits.train.ids[[5, 1, 7]].tolist()
    task = build_task(digits, ScenarioConfig(kind="ids", ids=want))
    assert sorted(task.forget.ids.tolist()) == sorted(want)
    assert task.scenario["kind"] == "ids" and task.scenario["n_forget"] == 3
    assert task.scenario["forget_ids_sha256"] == ids_digest(np.array(want))


def test_subclass_needs_a_hierarchy(digits):
    with pytest.raises(DataError, match="hierarchy"):
        build_task(digits, ScenarioConfig(kind="subclass", classes=[1]))


def test_check_split_detects_broken_splits(blobs):
    tr = blobs.train
    f, r = tr.take(np.arange(5), "forget"), tr.take(np.arange(5, len(tr)), "retain")
    check_split(tr, f, r, blobs.test)  # valid
    with pytest.raises(DataError, match="overlap"):
        check_split(tr, f, tr.take(np.arange(4, len(tr)), "retain"))
    with pytest.raises(DataError, match="missing"):
        check_split(tr, f, tr.take(np.arange(6, len(tr)), "retain"))
    with pytest.raises(DataError, match="empty"):
        check_split(tr, tr.take(np.zeros(0, dtype=np.int64)), tr)
    leaky_test = SampleSet(tr.source, tr.positions[:3], np.array([900, 901, 902]), tr.labels[:3], 3, "test")
    with pytest.raises(DataError, match="held out"):
        check_split(tr, f, r, leaky_test)


# -- C25 / C57 ------------------------------------------------------------------------------------------------------
def test_c25_random_forgetting_draws_from_many_classes():
    data = ten_class_data()
    for seed in range(5):
        task = build_task(data, ScenarioConfig(kind="random", count=100, seed=seed))
        assert len(task.forget) == 100
        assert len(np.unique(task.forget.labels)) >= 8
        assert task.scenario["kind"] == "random" and task.test_forgotten is None


def test_c25_class_forgetting_yields_exactly_the_class():
    data = ten_class_data()
    task = build_task(data, ScenarioConfig(kind="class", classes=[3]))
    assert task.forget.ids.tolist() == list(range(300, 400))
    assert np.all(task.retain.labels != 3) and len(task.retain) == 900


def test_c57_class_scenario_is_recorded_and_test_split_follows_the_kind():
    data = ten_class_data()
    cls = build_task(data, ScenarioConfig(kind="class", classes=[3]))
    assert cls.scenario["kind"] == "class" and cls.scenario["classes"] == [3]
    assert len(cls.test_forgotten) == 20 and np.all(cls.test_forgotten.labels == 3)
    assert len(cls.eval_test) == 180 and not np.any(cls.eval_test.labels == 3)
    # a count of 100 equal to the class size never turns a random scenario into a class one
    rnd = build_task(data, ScenarioConfig(kind="random", count=100))
    assert rnd.scenario["kind"] == "random" and rnd.test_forgotten is None
    assert len(rnd.eval_test) == 200
    # forgetting the same 100 ids by id is recorded as "ids", not "class"
    by_ids = build_task(data, ScenarioConfig(kind="ids", ids=list(range(300, 400))))
    assert by_ids.scenario["kind"] == "ids" and by_ids.test_forgotten is None and len(by_ids.eval_test) == 200


# -- missing data root ----------------------------------------------------------------------------------------------
def _vision_loaders_present() -> bool:
    return "cifar10" in DATASETS and "mnist" in DATASETS


@pytest.mark.skipif(not _vision_loaders_present(), reason="vision loaders (cifar10, mnist) not registered yet")
@pytest.mark.parametrize(("name", "layout_hint"), [
    ("cifar10", "cifar-10-batches-py"),
    ("mnist", "t10k-images-idx3-ubyte"),
])
def test_missing_data_root_names_the_expected_layout(tmp_path, name, layout_hint):
    root = tmp_path / "does-not-exist"
    with pytest.raises(DataError) as exc:
        load_data(DataConfig(name=name, root=str(root)))
    msg = str(exc.value)
    assert str(root) in msg and "Expected" in msg and layout_hint in msg
    assert "download" in msg  # says how to fix it
    assert not root.exists()  # nothing was created (no download without the flag)
