"""Mechanism tests of the recsys models and unlearners on a small synthetic task (seconds on one core)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearnkit.data.recsys import RecsysScenarioConfig, RecsysSplitConfig, SyntheticConfig, build_recsys_task, \
    generate_synthetic
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods import METHODS, UnlearnContext, derive_seed
from unlearnkit.methods.recsys.receraser import RecEraserConfig, delete_from_sharded, fit_sharded, \
    partition_interactions, shard_of
from unlearnkit.metrics.recsys import RecsysEvalContext, RecForget, RecRank, pairwise_auc
from unlearnkit.models.recsys import LightGCN, RecModelConfig, RecTrainConfig, build_rec_model, train_bpr

RECSYS_METHODS = [n for n in METHODS.names() if getattr(METHODS.get(n), "track", "") == "recsys"]
RECIPE = RecTrainConfig(epochs=40, batch_size=256, lr=0.01, reg=1e-4)


def factory(task, name="mf"):
    tr = task.train
    cfg = RecModelConfig(name=name, dim=16)
    return lambda s: build_rec_model(cfg, task.n_users, task.n_items, tr.ids, tr.users, tr.items, s)


@pytest.fixture(scope="module")
def original(task, engine):
    m = factory(task)(0)
    m.set_graph(task.train.ids)
    train_bpr(m, task.train, RECIPE, engine, seed=1)
    return m


def ctx(task, seed=0):
    return UnlearnContext(seed=seed, train_recipe=RECIPE, init_seed=derive_seed(seed, "oracle-init"),
                          model_factory=factory(task))


def metrics(model, task, engine):
    c = RecsysEvalContext(model, task, engine, k=10)
    return {**RecRank().compute(c).values, **RecForget().compute(c).values}


def test_reverse_bpr_lowers_forget_scores_and_keeps_retain_quality(task, original, engine):
    m0 = metrics(original, task, engine)
    oracle = METHODS.build("rec_retrain").unlearn(copy.deepcopy(original), task.forget, task.retain, engine,
                                                  ctx(task)).model
    mo = metrics(oracle, task, engine)
    res = METHODS.build("reverse_bpr", {"lr": 5.0}).unlearn(copy.deepcopy(original), task.forget, task.retain,
                                                          engine, ctx(task))
    mu = metrics(res.model, task, engine)
    f = task.forget
    s0 = original(torch.as_tensor(f.users), torch.as_tensor(f.items))
    su = res.model(torch.as_tensor(f.users), torch.as_tensor(f.items))
    assert (su < s0).float().mean() > 0.9  # forget interactions' scores fall
    assert m0["forget_auc"] > 0.9 and mo["forget_auc"] < 0.75  # θ_o memorised D_f; the oracle did not
    assert mu["forget_auc"] < mo["forget_auc"] + 0.1  # reverse BPR removes (at least) as much as the oracle lacks
    assert mu["forget_recall@10"] < 0.5 * m0["forget_recall@10"]
    assert mu["recall@10"] > 0.9 * m0["recall@10"]  # retained test quality within tolerance
    assert mu["ndcg@10"] > 0.9 * m0["ndcg@10"]


def test_grad_ascent_lowers_forget_auc(task, original, engine):
    res = METHODS.build("rec_grad_ascent", {"epochs": 100}).unlearn(copy.deepcopy(original), task.forget,
                                                                    task.retain, engine, ctx(task))
    f, a = task.forget, task.data
    before = np.nanmean(pairwise_auc(original.full_scores(), f.users, f.items, a.users, a.items))
    after = np.nanmean(pairwise_auc(res.model.full_scores(), f.users, f.items, a.users, a.items))
    assert after < before - 0.2


def test_retrain_sees_only_retain_and_graph_is_retain(task, original, engine):
    res = METHODS.build("rec_retrain").unlearn(copy.deepcopy(original), task.forget, task.retain, engine, ctx(task))
    assert np.array_equal(res.seen_ids, np.sort(task.retain_ids))
    assert np.array_equal(res.model.graph_ids(), np.sort(task.retain_ids))


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_receraser_deletion_is_exact_and_retrains_only_affected_shards(engine):
    d = generate_synthetic(SyntheticConfig(n_users=60, n_items=40, mean_interactions=10, seed=5))
    t = build_recsys_task(d, RecsysSplitConfig(), RecsysScenarioConfig(kind="users", count=1, seed=3))
    fac = factory(t)
    cfg = RecEraserConfig(n_shards=4, partition="user", partition_iters=5, agg_epochs=3)
    recipe = RecTrainConfig(epochs=5, batch_size=128, lr=0.01)
    full = t.train.subset(np.argsort(t.train.ids))
    rng = np.random.default_rng(0)
    ue, ie = rng.standard_normal((d.n_users, 8)), rng.standard_normal((d.n_items, 8))
    assign = partition_interactions(full, "user", 4, user_emb=ue, item_emb=ie, iters=5, seed=0)
    ens = fit_sharded(full, assign, fac, cfg, recipe, engine, seed=7)
    before = [_params(s) for s in ens.shards]
    f_shards = shard_of(t.forget_ids, full.ids, assign)
    affected = delete_from_sharded(ens, t.retain, shard_of(t.retain_ids, full.ids, assign), f_shards, fac, cfg,
                                   recipe, engine, seed=7)
    assert affected == sorted(set(f_shards.tolist())) and len(affected) == 1  # one user lives in one shard
    for k, s in enumerate(ens.shards):
        same = all(torch.equal(v, before[k][n]) for n, v in _params(s).items())
        assert same == (k not in affected), f"shard {k}"
    # equals a from-scratch sharded training on D_r with the same partition, bit for bit
    keep = ~np.isin(full.ids, t.forget_ids)
    scratch = fit_sharded(full.subset(np.flatnonzero(keep)), assign[keep], fac, cfg, recipe, engine, seed=7)
    a, b = _params(ens), _params(scratch)
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n


def test_receraser_method_reports_deletion_time_and_shards(task, original, engine):
    res = METHODS.build("receraser", {"n_shards": 3, "partition": "random", "agg_epochs": 2,
                                      "shard_recipe": {"epochs": 3, "batch_size": 256, "lr": 0.01}}).unlearn(
        copy.deepcopy(original), task.forget, task.retain, engine, ctx(task))
    n = res.notes
    assert n["total_seconds"] == pytest.approx(res.seconds + n["setup_seconds"])
    assert sum(n["shard_sizes"]) == len(task.train)
    assert np.array_equal(res.model.graph_ids(), np.sort(task.retain_ids))
    assert np.isfinite(metrics(res.model, task, engine)["recall@10"])


def test_lightgcn_propagation_matches_dense_formula_on_both_backends(task):
    tr = task.train
    keep = tr.ids[::2]
    outs = []
    for backend in ("sparse", "pyg"):
        m = LightGCN(task.n_users, task.n_items, tr.ids, tr.users, tr.items, dim=4, init_std=0.1, seed=0,
                     layers=2, backend=backend)
        m.set_graph(keep)
        outs.append(torch.cat(m.propagate()).detach())
    # independent dense computation: A = [[0, R], [Rᵀ, 0]], Â = D^-1/2 A D^-1/2, e = mean(e0, Âe0, Â²e0)
    n = task.n_users + task.n_items
    sel = np.isin(tr.ids, keep)
    a = np.zeros((n, n))
    a[tr.users[sel], task.n_users + tr.items[sel]] = 1
    a = a + a.T
    deg = a.sum(1)
    dinv = np.where(deg > 0, deg ** -0.5, 0)
    ahat = dinv[:, None] * a * dinv[None, :]
    e0 = torch.cat([m.user_emb, m.item_emb]).detach().double().numpy()
    want = (e0 + ahat @ e0 + ahat @ ahat @ e0) / 3
    for out in outs:
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6)


def test_lightgcn_auto_backend_is_torch_sparse_on_cpu(task):
    """Issue 13 item 10: `auto` picked PyG LGConv, 8–10× slower on CPU (benchmarks/lightgcn_backend.py); it now
    resolves per device, torch.sparse on CPU, and gives the same embeddings as an explicit sparse model."""
    from unlearnkit.errors import ConfigError
    from unlearnkit.models.recsys import RecModelConfig

    tr = task.train
    auto = LightGCN(task.n_users, task.n_items, tr.ids, tr.users, tr.items, dim=4, init_std=0.1, seed=0, layers=2)
    assert RecModelConfig().backend == "auto" and auto.backend == "auto"
    assert auto.resolved_backend() == "sparse" and auto.resolved_backend("cpu") == "sparse"
    sparse = LightGCN(task.n_users, task.n_items, tr.ids, tr.users, tr.items, dim=4, init_std=0.1, seed=0, layers=2,
                      backend="sparse")
    assert torch.equal(torch.cat(auto.propagate()), torch.cat(sparse.propagate()))
    assert LightGCN(task.n_users, task.n_items, tr.ids, tr.users, tr.items, dim=4, init_std=0.1, seed=0,
                    backend="pyg").resolved_backend("cpu") == "pyg"  # an explicit choice is kept
    with pytest.raises(ConfigError, match="backend"):
        LightGCN(task.n_users, task.n_items, tr.ids, tr.users, tr.items, dim=4, init_std=0.1, seed=0,
                 backend="dense")


@pytest.mark.parametrize("name", RECSYS_METHODS)
def test_recsys_method_conformance(name, task, original, engine):
    entry = METHODS.entry(name)
    cfg = entry.config()
    assert entry.config.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        METHODS.validate_config(name, {"not_a_field": 1})
    assert entry.obj.source and len(entry.obj.__doc__) > 80
    params = dict(entry.obj.smoke_params)
    a = METHODS.build(name, params).unlearn(copy.deepcopy(original), task.forget, task.retain, engine, ctx(task))
    b = METHODS.build(name, params).unlearn(copy.deepcopy(original), task.forget, task.retain, engine, ctx(task))
    sa, sb = _params(a.model), _params(b.model)
    for k in sa:
        assert torch.isfinite(sa[k].float()).all() and torch.equal(sa[k], sb[k]), f"{name}: {k}"
    if a.seen_ids is not None and entry.obj.kind == "exact":
        assert not np.isin(a.seen_ids, task.forget_ids).any()
    with pytest.raises(MethodError, match="Recommender"):
        METHODS.build(name, params).unlearn(torch.nn.Linear(2, 2), task.forget, task.retain, engine, ctx(task))
    with pytest.raises(MethodError, match="empty"):
        METHODS.build(name, params).unlearn(copy.deepcopy(original), task.forget.subset(np.zeros(0, np.int64)),
                                            task.retain, engine, ctx(task))
