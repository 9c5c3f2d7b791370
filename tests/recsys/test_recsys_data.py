"""Interaction data: MovieLens-layout loader (fixture, bad input), synthetic generator, split, scenarios, invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unlearnkit.data.recsys import (
    RecsysDataConfig,
    RecsysScenarioConfig,
    RecsysSplitConfig,
    SyntheticConfig,
    build_recsys_task,
    generate_synthetic,
    load_interactions,
    load_movielens,
    split_per_user,
)
from unlearnkit.errors import DataError

# user item rating timestamp (tab-separated, MovieLens-100k u.data layout)
FIXTURE = [  # invented values (not MovieLens data): raw ids start at 1 and have gaps
    (196, 240, 3, 881000100), (186, 300, 3, 891000200), (22, 377, 1, 878000300), (244, 51, 2, 880000400),
    (166, 340, 1, 886000500), (298, 470, 4, 884000600), (115, 260, 2, 881000700), (253, 460, 5, 891000800),
    (305, 450, 3, 886000900), (6, 80, 3, 883001000), (196, 51, 5, 881000101), (196, 377, 4, 881000102),
    (22, 240, 5, 878000301), (22, 51, 4, 878000302), (186, 240, 4, 891000201), (186, 51, 5, 891000202),
    (244, 240, 4, 880000401), (244, 377, 3, 880000402), (6, 240, 5, 883001001), (6, 51, 2, 883001002),
]


def write_udata(folder, rows=FIXTURE, extra: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows) + extra
    (folder / "u.data").write_text(text, encoding="latin-1")


def test_movielens_fixture_loads_with_stable_ids(tmp_path):
    write_udata(tmp_path / "ml-100k")
    d = load_movielens(tmp_path)  # finds root/ml-100k/u.data
    assert len(d) == len(FIXTURE)
    assert d.ids.tolist() == list(range(len(FIXTURE)))  # 0-based line index
    assert d.n_users == len({r[0] for r in FIXTURE}) and d.n_items == len({r[1] for r in FIXTURE})
    # raw ids are kept; indices follow sorted raw ids
    assert d.user_raw[d.users[0]] == 196 and d.item_raw[d.items[0]] == 240
    assert d.user_raw.tolist() == sorted({r[0] for r in FIXTURE})
    # filtering keeps ids of the surviving lines
    liked = load_movielens(tmp_path, min_rating=4)
    assert liked.ids.tolist() == [i for i, r in enumerate(FIXTURE) if r[2] >= 4]


def test_bundled_fixture_file_matches_rows():
    root = Path(__file__).parent / "fixtures"  # fixtures/ml-100k/u.data (read-only: the loader never writes)
    d = load_movielens(root)
    assert len(d) == len(FIXTURE) and d.ids.tolist() == list(range(len(FIXTURE)))
    assert [(int(d.user_raw[u]), int(d.item_raw[i])) for u, i in zip(d.users, d.items)] == [r[:2] for r in FIXTURE]
    assert d.timestamps.tolist() == [r[3] for r in FIXTURE]


def test_movielens_duplicate_pair_keeps_first_line(tmp_path):
    write_udata(tmp_path, FIXTURE + [(196, 240, 1, 999999999)])
    d = load_movielens(tmp_path)
    assert len(d) == len(FIXTURE) and d.info["duplicates_dropped"] == 1
    assert len(FIXTURE) not in d.ids.tolist()


@pytest.mark.parametrize("line, col", [
    ("196\t240\t3\n", "4 tab-separated columns"),
    ("196\tabc\t3\t881250949\n", "column 'item' must be an integer"),
    ("1.5\t242\t3\t881250949\n", "column 'user' must be an integer"),
    ("196\t242\tx\t881250949\n", "column 'rating' must be a number"),
    ("196\t242\t3\t88125x949\n", "column 'timestamp' must be an integer"),
])
def test_movielens_bad_line_names_file_and_line(tmp_path, line, col):
    write_udata(tmp_path, FIXTURE[:3], extra=line)
    with pytest.raises(DataError) as err:
        load_movielens(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "u.data") in msg and "line 4" in msg and col in msg


def test_movielens_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="grouplens.org.*redistribution"):
        load_movielens(tmp_path)
    with pytest.raises(ValueError, match="needs data.root"):
        RecsysDataConfig(source="movielens")


def test_movielens_task_through_config(tmp_path):
    write_udata(tmp_path)
    cfg = RecsysDataConfig(source="movielens", root=str(tmp_path), split=RecsysSplitConfig(kind="time"))
    task = build_recsys_task(load_interactions(cfg), cfg.split, RecsysScenarioConfig(kind="users", ids=[196]))
    # user 196 has 3 lines (timestamps ...100, ...101, ...102): the latest is the test item, two are forgotten
    assert sorted(task.forget_ids.tolist()) == [0, 10]
    assert task.scenario["n_forget"] == 2 and task.scenario["forgotten_users"] == 1
    assert 11 in task.data.ids[task.test_pos] and 11 not in task.data.ids[task.test_retained_pos]


def test_synthetic_is_seeded_and_skewed():
    a = generate_synthetic(SyntheticConfig(seed=3))
    b = generate_synthetic(SyntheticConfig(seed=3))
    c = generate_synthetic(SyntheticConfig(seed=4))
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items) and np.array_equal(a.ids, b.ids)
    assert not np.array_equal(a.items, c.items)
    assert a.ids.tolist() == list(range(len(a)))
    pop = np.sort(np.bincount(a.items, minlength=a.n_items))[::-1]
    assert pop[:40].sum() > 3 * pop[-40:].sum() * 1.0  # head items far more popular than tail items (Zipf)
    act = np.bincount(a.users)
    assert act.min() >= 5 and act.max() > 3 * np.median(act)  # user activity skew
    keys = a.users * a.n_items + a.items
    assert len(np.unique(keys)) == len(keys)  # no repeated (user, item) pair


def test_split_per_user_time_and_counts():
    d = generate_synthetic(SyntheticConfig(n_users=50, n_items=60, mean_interactions=10, seed=1))
    tr, te = split_per_user(d, RecsysSplitConfig(kind="time", test_fraction=0.2))
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(d)
    for u in range(d.n_users):
        tu, eu = tr[d.users[tr] == u], te[d.users[te] == u]
        n = len(tu) + len(eu)
        assert len(eu) == max(1, min(n - 1, round(0.2 * n)))
        assert d.timestamps[tu].max() <= d.timestamps[eu].min()  # the latest interactions are the test ones


@pytest.mark.parametrize("scenario", [
    RecsysScenarioConfig(kind="users", fraction=0.1),
    RecsysScenarioConfig(kind="users", count=3, selection="popular"),
    RecsysScenarioConfig(kind="items", count=4),
    RecsysScenarioConfig(kind="items", fraction=0.1, selection="popular"),
    RecsysScenarioConfig(kind="random", fraction=0.05),
    RecsysScenarioConfig(kind="ids", ids=[0, 1, 2, 5]),
])
def test_scenarios_keep_invariants(scenario):
    d = generate_synthetic(SyntheticConfig(n_users=60, n_items=50, mean_interactions=10, seed=2))
    split = RecsysSplitConfig()
    if scenario.kind == "ids":
        tr, _ = split_per_user(d, split)
        scenario = RecsysScenarioConfig(kind="ids", ids=d.ids[tr][:4].tolist())
    t = build_recsys_task(d, split, scenario)
    assert len(np.intersect1d(t.forget_ids, t.retain_ids)) == 0
    assert np.array_equal(np.sort(np.concatenate([t.forget_ids, t.retain_ids])), np.sort(t.train_ids))
    if scenario.kind == "users":
        assert np.isin(t.forget.users, t.forgotten_users).all()
        assert not np.isin(t.retain.users, t.forgotten_users).any()
        assert not np.isin(t.test.users, t.forgotten_users).any()
    if scenario.kind == "items":
        assert not np.isin(t.retain.items, t.forgotten_items).any()
        assert not np.isin(t.test.items, t.forgotten_items).any()
    if scenario.selection == "popular":
        which = t.forgotten_users if scenario.kind == "users" else t.forgotten_items
        col = t.train.users if scenario.kind == "users" else t.train.items
        cnt = np.bincount(col)
        assert cnt[which].min() >= np.delete(cnt, which).max()


@pytest.mark.parametrize("seed, frac", [(s, f) for s, f in zip(range(12), np.random.default_rng(0).uniform(0.01, 0.5, 12))])
def test_random_scenario_property(seed, frac):
    d = generate_synthetic(SyntheticConfig(n_users=30, n_items=40, mean_interactions=8, seed=seed % 7))
    t = build_recsys_task(d, RecsysSplitConfig(seed=seed), RecsysScenarioConfig(kind="random", fraction=frac,
                                                                                seed=seed))
    assert t.scenario["n_forget"] == max(1, round(frac * t.scenario["n_train"]))
    assert len(np.intersect1d(t.data.pair_keys()[t.train_pos], t.data.pair_keys()[t.test_pos])) == 0


def test_bad_scenarios_raise_data_errors():
    d = generate_synthetic(SyntheticConfig(n_users=20, n_items=30, mean_interactions=8))
    with pytest.raises(DataError, match="unknown user ids"):
        build_recsys_task(d, None, RecsysScenarioConfig(kind="users", ids=[999]))
    with pytest.raises(DataError, match="retain set"):
        build_recsys_task(d, None, RecsysScenarioConfig(kind="users", count=20))
    tr, te = split_per_user(d)
    with pytest.raises(DataError, match="test interactions"):
        build_recsys_task(d, None, RecsysScenarioConfig(kind="ids", ids=[int(d.ids[te[0]])]))
    with pytest.raises(ValueError, match="exactly one"):
        RecsysScenarioConfig(kind="users", fraction=0.1, count=2)


def test_ids_scenario_names_the_extra_key_and_the_extends_fix():
    """`kind: ids` under a parent that sets fraction (extends merges it in): the error names the key and `null`."""
    with pytest.raises(ValueError, match=r"only 'ids', but fraction is also set.*fraction: null"):
        RecsysScenarioConfig(kind="ids", ids=[1, 2], fraction=0.05)
    with pytest.raises(ValueError, match="non-empty list"):
        RecsysScenarioConfig(kind="ids", ids=[])
    assert RecsysScenarioConfig(kind="ids", ids=[1, 2]).ids == [1, 2]
