"""User–item interaction data for recommendation unlearning: loaders, a synthetic generator, splits and scenarios.

Sources:

- **MovieLens-100k layout** from a local ``root`` (``u.data``: tab-separated ``user  item  rating  timestamp``, one
  interaction per line; Harper & Konstan, ACM TiiS 2015). unlearnkit does not ship or download it: its licence forbids
  redistribution; download ``ml-100k.zip`` from https://grouplens.org/datasets/movielens/100k/ and unzip it.
- **Synthetic** interactions (the built-in default): a seeded generator with Zipf-like item popularity, log-normal
  user activity and a low-rank latent preference structure, so that a recommender has something to learn.

Interaction ids are stable: the 0-based line index in ``u.data`` (unchanged by filtering), or the position in the
generator's output (user-major, then time). Users and items are re-indexed 0..n-1 (sorted raw ids); the raw ids
stay in :attr:`Interactions.user_raw` / :attr:`Interactions.item_raw`, and scenarios name users and items by raw id.

Split: per user, a fraction of the interactions goes to the test set D_t (the latest ones by timestamp, or a seeded
random choice); every user with ≥ 2 interactions keeps ≥ 1 in training and gets ≥ 1 in test.

Forget scenarios (D_f ⊂ D, the training interactions):

- ``users``: every training interaction of the chosen users (a user's right to be forgotten);
- ``items``: every training interaction of the chosen items (revoked licences, legally requested removals);
- ``random``: a uniformly random subset of training interactions;
- ``ids``: the given interaction ids (a deletion request).

In the ``users`` / ``items`` scenarios the test interactions of forgotten users / items leave the evaluation too
(the *retained* test set): the user or item no longer exists for the service.

Invariants (checked by :func:`check_recsys_task`, violations raise ``DataError``): D_f ∩ D_r = ∅, D_f ∪ D_r = D,
D ∩ D_t = ∅ (by id and by (user, item) pair), D_f and D_r non-empty, ids unique, the retained test set contains no
forgotten user (``users``) or item (``items``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import DataError

MOVIELENS_URL = "https://grouplens.org/datasets/movielens/100k/"
MOVIELENS_COLUMNS = ("user", "item", "rating", "timestamp")


# ---------------------------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------------------------
class SyntheticConfig(Frozen):
    """Seeded synthetic interactions with popularity skew and latent structure (see :func:`generate_synthetic`)."""

    n_users: int = Field(600, ge=2, description="number of users")
    n_items: int = Field(400, ge=4, description="number of items")
    mean_interactions: float = Field(25.0, gt=0, description="mean interactions per user (log-normal)")
    min_interactions: int = Field(5, ge=2, description="fewest interactions of a user")
    activity_sigma: float = Field(0.7, ge=0, description="σ of log(interactions per user): user activity skew")
    popularity_exponent: float = Field(0.8, ge=0, description="Zipf exponent a: item popularity ∝ rank^-a")
    dim: int = Field(8, ge=1, description="rank of the latent preference structure")
    affinity: float = Field(2.5, ge=0, description="weight β of the latent affinity u·v/√dim against log-popularity")
    seed: int = Field(0, description="generator seed")

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        cap = self.n_items // 2
        if self.min_interactions > cap:
            raise ValueError(f"min_interactions={self.min_interactions} exceeds n_items // 2 = {cap} (users need "
                             "unobserved items for negative sampling); raise n_items or lower min_interactions")
        if self.mean_interactions > cap:
            raise ValueError(f"mean_interactions={self.mean_interactions} exceeds n_items // 2 = {cap}")
        return self


class RecsysSplitConfig(Frozen):
    """Per-user train/test split: ``time`` (latest interactions to test) or ``random`` (seeded)."""

    kind: Literal["time", "random"] = "random"
    test_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of each user's interactions in D_t")
    seed: int = Field(0, description="seed of the random split (ties in time are broken by interaction id)")


class RecsysDataConfig(Frozen):
    """Where interactions come from: ``synthetic`` (default) or ``movielens`` (``root`` with ``u.data``)."""

    source: Literal["synthetic", "movielens"] = "synthetic"
    root: str | None = Field(None, description="folder with u.data (or ml-100k/u.data); needed for movielens")
    min_rating: float | None = Field(None, description="keep interactions with rating ≥ this; None = all (implicit)")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    split: RecsysSplitConfig = Field(default_factory=RecsysSplitConfig)

    @model_validator(mode="after")
    def _check(self) -> RecsysDataConfig:
        if self.source == "movielens" and not self.root:
            raise ValueError(f"data.source movielens needs data.root: a folder with u.data (download ml-100k.zip "
                             f"from {MOVIELENS_URL} yourself; its licence forbids redistribution)")
        return self


class RecsysScenarioConfig(Frozen):
    """How D_f is chosen: all training interactions of chosen ``users`` / ``items``, ``random`` ones, or ``ids``.

    ``users`` / ``items``: exactly one of ``fraction`` (of users/items that have training interactions), ``count``,
    or ``ids`` (raw user/item ids as in the source). ``selection`` picks ``random`` ones (seeded) or the most
    ``popular`` (most training interactions). ``random``: ``fraction`` or ``count`` of training interactions.
    ``ids``: ``ids`` are interaction ids.
    """

    kind: Literal["users", "items", "random", "ids"] = "users"
    fraction: float | None = None
    count: int | None = None
    ids: list[int] | None = None
    selection: Literal["random", "popular"] = "random"
    seed: int = Field(0, description="seed of the forget-set draw")

    @model_validator(mode="after")
    def _check(self) -> RecsysScenarioConfig:
        given = [n for n in ("fraction", "count", "ids") if getattr(self, n) is not None]
        if self.kind == "ids":
            if not self.ids:
                raise ValueError("scenario ids needs 'ids': a non-empty list of interaction ids")
            if given != ["ids"]:
                extra = [n for n in given if n != "ids"]
                raise ValueError(f"scenario ids takes only 'ids', but {', '.join(extra)} is also set; remove it "
                                 f"(inherited through extends: set {extra[0]}: null)")
        elif self.kind == "random":
            if sorted(given) not in (["fraction"], ["count"]):
                raise ValueError("scenario random needs exactly one of 'fraction' (0 < f < 1) or 'count' (n ≥ 1)")
        elif len(given) != 1:
            raise ValueError(f"scenario {self.kind} needs exactly one of 'fraction', 'count' or 'ids' "
                             f"(raw {self.kind[:-1]} ids); got {given or 'none'}")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise ValueError(f"scenario.fraction must be strictly between 0 and 1, got {self.fraction}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"scenario.count must be ≥ 1, got {self.count}")
        if self.ids is not None and len(set(self.ids)) != len(self.ids):
            raise ValueError("scenario.ids has duplicates")
        if self.selection == "popular" and self.kind not in ("users", "items"):
            raise ValueError("selection 'popular' applies to scenarios users and items only")
        return self


# ---------------------------------------------------------------------------------------------------------------------
# interactions
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interactions:
    """A set of user–item interactions (implicit feedback), as parallel arrays.

    Attributes:
        name: data set name.
        users, items: int64 (n,) 0-based user / item indices (< n_users / n_items).
        ratings: float32 (n,) explicit ratings (unused by BPR models; kept for filters).
        timestamps: int64 (n,) seconds since the epoch (synthetic: arbitrary increasing).
        ids: int64 (n,) stable interaction ids (unique).
        n_users, n_items: sizes of the whole catalogue (not only those present in this subset).
        user_raw, item_raw: int64 (n_users,) / (n_items,) raw id of each index (as in the source file).
        info: provenance (path, duplicates dropped, ...).
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    ids: np.ndarray
    n_users: int
    n_items: int
    user_raw: np.ndarray
    item_raw: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.ids))

    def subset(self, positions: np.ndarray, name: str | None = None) -> Interactions:
        """The interactions at ``positions`` (int64 indices into this set), same catalogue."""
        p = np.asarray(positions, dtype=np.int64)
        return Interactions(name or self.name, self.users[p], self.items[p], self.ratings[p], self.timestamps[p],
                            self.ids[p], self.n_users, self.n_items, self.user_raw, self.item_raw, self.info)

    def pair_keys(self) -> np.ndarray:
        """int64 (n,) key ``user * n_items + item`` of each interaction (identifies the (user, item) pair)."""
        return self.users * np.int64(self.n_items) + self.items

    @staticmethod
    def concat(parts: list[Interactions], name: str | None = None) -> Interactions:
        """Concatenation of interaction sets of the same catalogue (ids must stay unique)."""
        if not parts:
            raise DataError("cannot concatenate zero interaction sets")
        a = parts[0]
        return Interactions(name or a.name, np.concatenate([p.users for p in parts]),
                            np.concatenate([p.items for p in parts]), np.concatenate([p.ratings for p in parts]),
                            np.concatenate([p.timestamps for p in parts]), np.concatenate([p.ids for p in parts]),
                            a.n_users, a.n_items, a.user_raw, a.item_raw, a.info)


def _from_raw(name: str, users_raw: np.ndarray, items_raw: np.ndarray, ratings: np.ndarray, ts: np.ndarray,
              ids: np.ndarray, info: dict[str, Any]) -> Interactions:
    user_raw, users = np.unique(users_raw, return_inverse=True)
    item_raw, items = np.unique(items_raw, return_inverse=True)
    return Interactions(name, users.astype(np.int64), items.astype(np.int64), ratings.astype(np.float32),
                        ts.astype(np.int64), ids.astype(np.int64), int(len(user_raw)), int(len(item_raw)),
                        user_raw.astype(np.int64), item_raw.astype(np.int64), info)


# ---------------------------------------------------------------------------------------------------------------------
# MovieLens-100k layout
# ---------------------------------------------------------------------------------------------------------------------
def find_movielens_file(root: str | Path) -> Path:
    """``root/u.data`` or ``root/ml-100k/u.data``.

    Raises:
        DataError: neither exists (the message says where to download the data set).
    """
    root = Path(root).expanduser()
    for cand in (root / "u.data", root / "ml-100k" / "u.data"):
        if cand.is_file():
            return cand
    raise DataError(f"no MovieLens u.data under {root} (looked for {root / 'u.data'} and {root / 'ml-100k' / 'u.data'}); "
                    f"download ml-100k.zip from {MOVIELENS_URL} and unzip it there — its licence forbids "
                    "redistribution, so unlearnkit cannot ship or fetch it")


def load_movielens(root: str | Path, *, min_rating: float | None = None) -> Interactions:
    """Interactions from a MovieLens-100k layout ``u.data`` (tab-separated user, item, rating, timestamp).

    Interaction id = 0-based line index in the file (stable under ``min_rating`` filtering). A repeated
    (user, item) pair keeps its first line (``info["duplicates_dropped"]`` counts the others).

    Args:
        root: folder holding ``u.data`` (or ``ml-100k/u.data``).
        min_rating: keep lines with rating ≥ this (e.g. 4 for "liked"); None keeps all (implicit feedback).

    Raises:
        DataError: file missing; a line without exactly 4 tab-separated columns; a user, item or timestamp that is
            not an integer; a rating that is not a finite number; no interaction left after filtering. The message
            names the file and the 1-based line number.
    """
    path = find_movielens_file(root)
    u_l: list[int] = []
    i_l: list[int] = []
    r_l: list[float] = []
    t_l: list[int] = []
    id_l: list[int] = []
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue  # blank lines (e.g. a trailing one) carry nothing; ids stay line indices
            parts = text.split("\t")
            if len(parts) != 4:
                raise DataError(f"{path}, line {lineno}: expected 4 tab-separated columns (user, item, rating, "
                                f"timestamp), got {len(parts)}: {text[:80]!r}; fix or remove the line")
            vals: list[Any] = []
            for col, raw in zip(MOVIELENS_COLUMNS, parts):
                raw = raw.strip()
                try:
                    v: Any = float(raw) if col == "rating" else int(raw)
                except ValueError:
                    kind = "a number" if col == "rating" else "an integer"
                    raise DataError(f"{path}, line {lineno}: column '{col}' must be {kind}, got {raw!r}; "
                                    "fix or remove the line") from None
                if col == "rating" and not math.isfinite(v):
                    raise DataError(f"{path}, line {lineno}: rating {raw!r} is not finite")
                vals.append(v)
            u_l.append(vals[0])
            i_l.append(vals[1])
            r_l.append(vals[2])
            t_l.append(vals[3])
            id_l.append(lineno - 1)
    users = np.asarray(u_l, dtype=np.int64)
    items = np.asarray(i_l, dtype=np.int64)
    ratings = np.asarray(r_l, dtype=np.float64)
    ts = np.asarray(t_l, dtype=np.int64)
    ids = np.asarray(id_l, dtype=np.int64)
    keep = np.ones(len(ids), dtype=bool) if min_rating is None else ratings >= min_rating
    # first occurrence of each (user, item) pair
    pairs = np.stack([users, items], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    is_first = np.zeros(len(ids), dtype=bool)
    is_first[first] = True
    dup = int((~is_first).sum())
    keep &= is_first
    if not keep.any():
        raise DataError(f"{path}: no interaction left (lines {len(ids)}, min_rating={min_rating}); lower min_rating")
    info = {"path": str(path), "lines": int(len(ids)), "duplicates_dropped": dup, "min_rating": min_rating}
    return _from_raw("movielens", users[keep], items[keep], ratings[keep], ts[keep], ids[keep], info)


# ---------------------------------------------------------------------------------------------------------------------
# synthetic generator
# ---------------------------------------------------------------------------------------------------------------------
def generate_synthetic(cfg: SyntheticConfig | None = None) -> Interactions:
    """Seeded synthetic implicit feedback with popularity skew and latent structure.

    Model: user factors p_u, item factors q_i ~ N(0, I_dim); item popularity π_i ∝ r_i^(-a) with r a random
    permutation of 1..n_items (Zipf-like, a = ``popularity_exponent``); user activity n_u ~ round(LogNormal(μ, σ))
    with mean ``mean_interactions``, clipped to [min_interactions, n_items // 2]. User u picks n_u distinct items
    without replacement with probabilities ∝ exp(β p_u·q_i/√dim + log π_i) (Gumbel top-k). Timestamps are sorted
    uniform draws per user; ratings 1–5 follow the affinity p_u·q_i. Ids are positions in (user, time) order.

    Returns:
        :class:`Interactions` named ``synthetic`` (raw ids = indices; ``info`` holds the config).
    """
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    nu, ni, d = cfg.n_users, cfg.n_items, cfg.dim
    p = rng.standard_normal((nu, d))
    q = rng.standard_normal((ni, d))
    log_pop = -cfg.popularity_exponent * np.log(rng.permutation(ni) + 1.0)
    sigma = cfg.activity_sigma
    mu = math.log(cfg.mean_interactions) - sigma * sigma / 2
    counts = np.clip(np.rint(rng.lognormal(mu, sigma, size=nu)), cfg.min_interactions, ni // 2).astype(np.int64)
    users_l, items_l, aff_l = [], [], []
    for start in range(0, nu, 1024):  # chunks bound the memory of the (users × items) logits
        stop = min(nu, start + 1024)
        aff = p[start:stop] @ q.T / math.sqrt(d)
        keys = cfg.affinity * aff + log_pop + rng.gumbel(size=aff.shape)
        order = np.argsort(-keys, axis=1, kind="stable")
        take = np.arange(ni)[None, :] < counts[start:stop, None]
        rows = np.repeat(np.arange(start, stop), counts[start:stop])
        cols = order[take]  # row-major: each user's picks, best key first
        users_l.append(rows)
        items_l.append(cols)
        aff_l.append(aff[rows - start, cols])
    users = np.concatenate(users_l).astype(np.int64)
    items = np.concatenate(items_l).astype(np.int64)
    aff = np.concatenate(aff_l)
    ts = 880_000_000 + rng.integers(0, 10_000_000, size=len(users), dtype=np.int64)
    order = np.lexsort((items, ts, users))  # (user, time, item) order defines the ids
    users, items, ts, aff = users[order], items[order], ts[order], aff[order]
    ratings = np.clip(np.rint(3.0 + aff), 1, 5).astype(np.float32)
    ids = np.arange(len(users), dtype=np.int64)
    return Interactions("synthetic", users, items, ratings, ts, ids, nu, ni, np.arange(nu, dtype=np.int64),
                        np.arange(ni, dtype=np.int64), {"synthetic": cfg.model_dump()})


def load_interactions(cfg: RecsysDataConfig) -> Interactions:
    """Interactions from ``cfg.source`` (synthetic generator or MovieLens layout at ``cfg.root``).

    Raises:
        DataError: missing/malformed MovieLens file (see :func:`load_movielens`).
    """
    if cfg.source == "movielens":
        data = load_movielens(cfg.root or "", min_rating=cfg.min_rating)
    else:
        data = generate_synthetic(cfg.synthetic)
        if cfg.min_rating is not None:
            data = data.subset(np.flatnonzero(data.ratings >= cfg.min_rating))
            if len(data) == 0:
                raise DataError(f"no synthetic interaction has rating ≥ {cfg.min_rating}; lower min_rating")
    return data


# ---------------------------------------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------------------------------------
def split_per_user(data: Interactions, cfg: RecsysSplitConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-user train/test split.

    Each user with n_u ≥ 2 interactions puts clip(round(f·n_u), 1, n_u − 1) of them in D_t: the latest by timestamp
    (``time``; ties broken by id) or a seeded random choice (``random``); users with one interaction keep it in D.

    Returns:
        (train positions, test positions): sorted int64 indices into ``data``.
    """
    cfg = cfg or RecsysSplitConfig()
    n = len(data)
    if cfg.kind == "time":
        key = data.timestamps.astype(np.float64)
        order = np.lexsort((data.ids, key, data.users))
    else:
        rng = np.random.default_rng(cfg.seed)
        order = np.lexsort((rng.random(n), data.users))
    users_sorted = data.users[order]
    counts = np.bincount(data.users, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[users_sorted]
    n_test = np.where(counts >= 2, np.clip(np.rint(cfg.test_fraction * counts), 1, np.maximum(counts - 1, 1)), 0)
    is_test = rank >= (counts - n_test)[users_sorted]
    return np.sort(order[~is_test]), np.sort(order[is_test])


# ---------------------------------------------------------------------------------------------------------------------
# task and scenarios
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class RecsysTask:
    """One recommendation-unlearning problem: interactions, the split and the forget set.

    Attributes:
        name: data set name.
        data: all interactions (D ∪ D_t).
        train_pos, test_pos, forget_pos, retain_pos, test_retained_pos: sorted int64 positions into ``data`` of D,
            D_t, D_f, D_r and the retained test set (D_t without forgotten users / items).
        forgotten_users, forgotten_items: int64 indices of users / items removed by the scenario (empty otherwise).
        scenario: JSON-serialisable record (kind, n_forget, n_retain, n_test, ...).
    """

    name: str
    data: Interactions
    train_pos: np.ndarray
    test_pos: np.ndarray
    forget_pos: np.ndarray
    retain_pos: np.ndarray
    test_retained_pos: np.ndarray
    forgotten_users: np.ndarray
    forgotten_items: np.ndarray
    scenario: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def train(self) -> Interactions:
        """D: the original model's training interactions."""
        return self.data.subset(self.train_pos, f"{self.name}/train")

    @cached_property
    def forget(self) -> Interactions:
        """D_f ⊂ D."""
        return self.data.subset(self.forget_pos, f"{self.name}/forget")

    @cached_property
    def retain(self) -> Interactions:
        """D_r = D \\ D_f."""
        return self.data.subset(self.retain_pos, f"{self.name}/retain")

    @cached_property
    def test(self) -> Interactions:
        """Retained test interactions (Recall/NDCG are measured here)."""
        return self.data.subset(self.test_retained_pos, f"{self.name}/test")

    @cached_property
    def test_all(self) -> Interactions:
        """All of D_t."""
        return self.data.subset(self.test_pos, f"{self.name}/test_all")

    @property
    def train_ids(self) -> np.ndarray:
        return self.data.ids[self.train_pos]

    @property
    def forget_ids(self) -> np.ndarray:
        return self.data.ids[self.forget_pos]

    @property
    def retain_ids(self) -> np.ndarray:
        return self.data.ids[self.retain_pos]

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def n_items(self) -> int:
        return self.data.n_items


def _pick(cands: np.ndarray, counts: np.ndarray, cfg: RecsysScenarioConfig, raw: np.ndarray, what: str,
          rng: np.random.Generator) -> np.ndarray:
    """Chosen indices among ``cands`` (indices with ≥ 1 training interaction; ``counts`` their training counts)."""
    if cfg.ids is not None:
        lookup = {int(r): i for i, r in enumerate(raw)}
        unknown = [x for x in cfg.ids if x not in lookup]
        if unknown:
            raise DataError(f"scenario {cfg.kind}: unknown {what} ids {unknown[:5]} (raw ids as in the source; "
                            f"valid range {int(raw.min())}–{int(raw.max())})")
        chosen = np.asarray([lookup[x] for x in cfg.ids], dtype=np.int64)
        absent = chosen[~np.isin(chosen, cands)]
        if len(absent):
            raise DataError(f"scenario {cfg.kind}: {what}s {raw[absent][:5].tolist()} have no training interaction; "
                            "nothing of theirs to forget")
        return np.sort(chosen)
    n = cfg.count if cfg.count is not None else max(1, int(round(cfg.fraction * len(cands))))  # type: ignore[operator]
    if n >= len(cands):
        raise DataError(f"scenario {cfg.kind}: asked to forget {n} {what}s but only {len(cands)} have training "
                        f"interactions; forget fewer so that a retain set remains")
    if cfg.selection == "popular":
        order = np.lexsort((cands, -counts))  # most interactions first, ties by index
        return np.sort(cands[order[:n]])
    return np.sort(rng.choice(cands, size=n, replace=False))


def build_recsys_task(data: Interactions, split: RecsysSplitConfig | None = None,
                      scenario: RecsysScenarioConfig | None = None) -> RecsysTask:
    """Split ``data`` per user and draw D_f by ``scenario``; invariants are checked.

    Raises:
        DataError: unknown user/item/interaction ids, a forget set that would be empty or leave no retain set, or a
            violated invariant (see :func:`check_recsys_task`).
    """
    split = split or RecsysSplitConfig()
    scenario = scenario or RecsysScenarioConfig(kind="users", fraction=0.05)
    train_pos, test_pos = split_per_user(data, split)
    rng = np.random.default_rng(scenario.seed)
    tu, ti = data.users[train_pos], data.items[train_pos]
    f_users = np.zeros(0, dtype=np.int64)
    f_items = np.zeros(0, dtype=np.int64)
    test_keep = np.ones(len(test_pos), dtype=bool)
    if scenario.kind == "users":
        cnt = np.bincount(tu, minlength=data.n_users)
        cands = np.flatnonzero(cnt)
        f_users = _pick(cands, cnt[cands], scenario, data.user_raw, "user", rng)
        fmask = np.isin(tu, f_users)
        test_keep = ~np.isin(data.users[test_pos], f_users)
    elif scenario.kind == "items":
        cnt = np.bincount(ti, minlength=data.n_items)
        cands = np.flatnonzero(cnt)
        f_items = _pick(cands, cnt[cands], scenario, data.item_raw, "item", rng)
        fmask = np.isin(ti, f_items)
        test_keep = ~np.isin(data.items[test_pos], f_items)
    elif scenario.kind == "random":
        n_tr = len(train_pos)
        n = scenario.count if scenario.count is not None else max(1, int(round(scenario.fraction * n_tr)))  # type: ignore[operator]
        if n >= n_tr:
            raise DataError(f"scenario random: count {n} ≥ |D| = {n_tr}; forget fewer interactions")
        fmask = np.zeros(n_tr, dtype=bool)
        fmask[rng.choice(n_tr, size=n, replace=False)] = True
    else:  # ids
        want = np.asarray(scenario.ids, dtype=np.int64)
        tr_ids = data.ids[train_pos]
        fmask = np.isin(tr_ids, want)
        missing = want[~np.isin(want, tr_ids)]
        if len(missing):
            in_test = missing[np.isin(missing, data.ids[test_pos])]
            hint = f" ({in_test[:5].tolist()} are test interactions, never trained on)" if len(in_test) else ""
            raise DataError(f"scenario ids: {len(missing)} ids are not training interactions, e.g. "
                            f"{missing[:5].tolist()}{hint}; name ids of D")
    forget_pos = train_pos[fmask]
    retain_pos = train_pos[~fmask]
    task = RecsysTask(data.name, data, train_pos, test_pos, forget_pos, retain_pos, test_pos[test_keep],
                      f_users, f_items)
    task.scenario = {
        "kind": scenario.kind, "selection": scenario.selection, "seed": scenario.seed,
        "fraction": scenario.fraction, "count": scenario.count,
        "n_forget": int(len(forget_pos)), "n_retain": int(len(retain_pos)), "n_test": int(test_keep.sum()),
        "n_test_all": int(len(test_pos)), "n_train": int(len(train_pos)), "n_users": data.n_users,
        "n_items": data.n_items, "forgotten_users": int(len(f_users)), "forgotten_items": int(len(f_items)),
        "split": split.kind, "labels_available": False,
    }
    check_recsys_task(task)
    return task


def check_recsys_task(task: RecsysTask) -> None:
    """Check the split invariants (module docstring); raise ``DataError`` naming the first violation."""
    d = task.data
    if len(np.unique(d.ids)) != len(d.ids):
        raise DataError(f"{task.name}: interaction ids are not unique")
    if len(task.forget_pos) == 0:
        raise DataError(f"{task.name}: the forget set D_f is empty; choose users/items/ids that have training "
                        "interactions")
    if len(task.retain_pos) == 0:
        raise DataError(f"{task.name}: the retain set D_r is empty; forget fewer interactions")
    if len(np.intersect1d(task.forget_pos, task.retain_pos)):
        raise DataError(f"{task.name}: D_f and D_r overlap")
    if not np.array_equal(np.union1d(task.forget_pos, task.retain_pos), np.sort(task.train_pos)):
        raise DataError(f"{task.name}: D_f ∪ D_r ≠ D")
    if len(np.intersect1d(task.train_pos, task.test_pos)):
        raise DataError(f"{task.name}: train and test share interactions")
    tr_keys = d.pair_keys()[task.train_pos]
    te_keys = d.pair_keys()[task.test_pos]
    if len(np.intersect1d(tr_keys, te_keys)):
        raise DataError(f"{task.name}: a (user, item) pair is both in D and in D_t")
    if not np.all(np.isin(task.test_retained_pos, task.test_pos)):
        raise DataError(f"{task.name}: the retained test set is not a subset of D_t")
    if len(task.forgotten_users) and np.isin(d.users[task.test_retained_pos], task.forgotten_users).any():
        raise DataError(f"{task.name}: the retained test set contains forgotten users")
    if len(task.forgotten_items) and np.isin(d.items[task.test_retained_pos], task.forgotten_items).any():
        raise DataError(f"{task.name}: the retained test set contains forgotten items")


def load_recsys_task(data_cfg: RecsysDataConfig, scenario: RecsysScenarioConfig) -> RecsysTask:
    """Load interactions by ``data_cfg`` and build the task (split + forget set)."""
    return build_recsys_task(load_interactions(data_cfg), data_cfg.split, scenario)


__all__ = [
    "Interactions", "RecsysDataConfig", "RecsysScenarioConfig", "RecsysSplitConfig", "RecsysTask", "SyntheticConfig",
    "build_recsys_task", "check_recsys_task", "find_movielens_file", "generate_synthetic", "load_interactions",
    "load_movielens", "load_recsys_task", "split_per_user",
]
