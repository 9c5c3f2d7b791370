"""KNOWN_FAULTS of graph unlearning code bases, kept as tests: C39 (every method runs with its defaults on the
karate-club graph; an omitted deletion set is a named error), C41 (split and model caches keyed by every field that
changes them; a hand-edited cache file is refused), C48 (GraphEraser with either partition, from a fresh folder)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.graph import build_graph_task, from_pyg
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import CheckpointError, ConfigError, MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.graph._common import GraphTrainConfig, fit_graph
from unlearnkit.models.graph import build_gnn

pytest.importorskip("torch_geometric")

ENGINE = Engine(EngineConfig(progress=False))
GRAPH_METHODS = [n for n in METHODS.names() if METHODS.get(n).track == "graph"]


def karate(norm: str = "l1"):
    from torch_geometric.datasets import KarateClub  # bundled with PyG: no download

    return from_pyg(KarateClub()[0], "karate", normalize_features=norm)


#: (method, target) pairs that may refuse a karate deletion with a MethodError, and the words the message must hold.
#: Empty: every graph method serves edge, node and feature deletions of a node-classification task. A method that
#: starts refusing one must be listed here on purpose (with the reason in its error), never slip through.
MAY_REFUSE: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("target", ["edge", "node", "feature"])
def test_c39_every_graph_method_runs_with_its_defaults_on_karate(target):
    """34 nodes, 78 edges; delete 3 edges (or 1 of the 4 labelled nodes / their features); θ_o: 20 epochs. Every
    method returns a finite model on the retain graph that differs from θ_o (a no-op is not unlearning). Timing of
    these runs: benchmarks/timing_checks.py (BENCHMARKS.md), not here."""
    g = karate()
    assert (g.num_nodes, g.num_edges) == (34, 78)
    t = build_graph_task(g, task="node", target=target, count=3 if target == "edge" else 1, seed=0)
    gcn = lambda s: build_gnn("gcn", g.x.shape[1], g.num_classes, hidden=16, seed=s)  # noqa: E731
    sgc = lambda s: build_gnn("sgc", g.x.shape[1], g.num_classes, bias=False, seed=s)  # noqa: E731
    rv = t.view("retain")
    assert GRAPH_METHODS, "no graph method registered"
    for name in GRAPH_METHODS:
        cert = name == "certified_sgc"
        recipe = GraphTrainConfig(loss="ovr_logistic", lbfgs_steps=20) if cert else GraphTrainConfig(epochs=20)
        factory = sgc if cert else gcn
        model = factory(0)
        fit_graph(model, t, "original", recipe, seed=0)
        ctx = UnlearnContext(seed=0, train_recipe=recipe, init_seed=1, model_factory=factory)
        try:
            res = METHODS.build(name, {}).unlearn_graph(copy.deepcopy(model), t, ENGINE, ctx)
        except MethodError as err:
            words = MAY_REFUSE.get((name, target))
            if words is None or words not in str(err):
                raise AssertionError(f"{name} refused a {target} deletion on karate: {err}") from err
            continue
        model.eval()
        res.model.eval()
        with torch.no_grad():
            before, after = model(rv.x, rv.edge_index), res.model(rv.x, rv.edge_index)
        assert after.shape == (g.num_nodes, g.num_classes), name
        assert torch.isfinite(after).all(), name
        assert not torch.allclose(before, after), f"{name} left θ_o's outputs unchanged on a {target} deletion"


def test_c39_an_omitted_deletion_set_is_a_named_error():
    with pytest.raises(ConfigError, match="exactly one of 'fraction'.*or 'count'"):
        build_graph_task(karate(), task="node", target="edge")


def _sbm_cfg(out, fraction: float, method: str = "graph_grad_ascent"):
    from unlearnkit.bench import load_config

    return load_config(data={
        "name": "c41", "track": "graph", "output_dir": str(out), "seeds": [0], "engine": {"progress": False},
        "metrics": ["graph_utility"], "methods": ["retrain", {"name": method, "epochs": 2}],
        "graph": {"data": {"name": "synthetic", "num_nodes": 100, "num_features": 8}, "task": "node",
                  "model": {"arch": "gcn", "hidden": 8}, "train": {"epochs": 60, "lr": 0.05},
                  "deletion": {"target": "node", "fraction": fraction, "seed": 0}}})


def test_c41_cache_keys_follow_the_deletion_ratio_and_edited_caches_are_refused(tmp_path):
    from unlearnkit.bench import Runner, run_experiment

    cache = tmp_path / "runs"
    r1 = run_experiment(_sbm_cfg(cache, 0.1), write_report=False)
    r2 = run_experiment(_sbm_cfg(cache, 0.2), write_report=False)
    s1, s2 = r1.rows[0]["scenario"], r2.rows[0]["scenario"]
    d = s1["n_forget"] + s1["n_retain"]  # the labelled training nodes of the 100-node graph
    assert (s1["n_forget"], s2["n_forget"]) == (round(0.1 * d), round(0.2 * d))
    assert all(r["scenario"]["n_forget"] == s2["n_forget"] for r in r2.rows)
    o1 = next(r for r in r1.rows if r["is_oracle"])
    o2 = next(r for r in r2.rows if r["is_oracle"])
    assert o1["lineage_key"] != o2["lineage_key"] and "oracle" in r2.trained  # θ_r never reused across ratios
    # two different methods on the same ratio: different parameter hashes
    r3 = run_experiment(_sbm_cfg(cache, 0.2, "gnndelete"), write_report=False)
    ga = next(r for r in r2.rows if r["method"] == "graph_grad_ascent")
    gd = next(r for r in r3.rows if r["method"] == "gnndelete")
    assert ga["status"] == gd["status"] == "ok" and ga["checkpoint_sha256"] != gd["checkpoint_sha256"]
    # a hand-edited cache file is detected by its hash and refused
    runner = Runner(_sbm_cfg(cache, 0.2))
    path = runner.cache.path(o2["lineage_key"])
    weights = next(p for p in path.iterdir() if p.suffix == ".safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    k = next(iter(state))
    state[k] = state[k] + 1.0
    save_file(state, str(weights))
    fresh = tmp_path / "other_out"
    cfg = _sbm_cfg(fresh, 0.2).model_copy(update={"cache_dir": str(runner.cache.root)})
    with pytest.raises(CheckpointError, match="failed verification"):
        run_experiment(cfg, write_report=False)


def _eraser(partition: str):
    """GraphEraser (3 shards) on a 100-node two-block graph, deleting 5 training nodes: (task, result)."""
    from unlearnkit.data.graph import synthetic_graph

    g = synthetic_graph(num_nodes=100, num_classes=3, num_features=8, p_in=0.15, p_out=0.02, seed=0)
    t = build_graph_task(g, task="node", target="node", count=5, seed=0)
    factory = lambda s: build_gnn("gcn", 8, 3, hidden=8, seed=s)  # noqa: E731
    recipe = GraphTrainConfig(epochs=10)
    model = factory(0)
    fit_graph(model, t, "original", recipe, seed=0)
    ctx = UnlearnContext(seed=0, train_recipe=recipe, init_seed=1, model_factory=factory)
    res = METHODS.build("graph_eraser", {"num_shards": 3, "partition": partition, "aggregator_epochs": 5}) \
        .unlearn_graph(copy.deepcopy(model), t, ENGINE, ctx)
    return t, res


def _propagated(t) -> np.ndarray:
    """Â²X with Â = D̃^{-1/2}(A + I)D̃^{-1/2} on the original graph, dense numpy (independent of PyG)."""
    n = t.data.num_nodes
    a = np.eye(n)
    e = t.data.edges[t.view("original").edge_ids]
    a[e[:, 0], e[:, 1]] = a[e[:, 1], e[:, 0]] = 1.0
    d = 1.0 / np.sqrt(a.sum(1))
    a_hat = d[:, None] * a * d[None, :]
    return a_hat @ a_hat @ t.data.x.double().numpy()


def _within_shard_sse(z: np.ndarray, shard: np.ndarray) -> float:
    return float(sum(((z[shard == s] - z[shard == s].mean(0)) ** 2).sum() for s in np.unique(shard)))


@pytest.mark.parametrize("partition", ["random", "bekm"])
def test_c48_graph_eraser_either_partition_from_a_fresh_folder(partition, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty working folder: every output folder must be created on demand
    t, res = _eraser(partition)
    rv = t.view("retain")
    assert torch.isfinite(res.model(rv.x, rv.edge_index)).all()
    assert res.notes["partition"] == partition
    shard = res.model.shard_of_node
    assert shard.shape == (100,) and set(np.unique(shard).tolist()) == {0, 1, 2}
    sizes = np.bincount(shard, minlength=3)
    assert res.notes["shard_sizes"] == sizes.tolist() and sizes.sum() == 100  # the partition covers every node
    assert sizes.max() <= int(np.ceil(100 / 3 * 1.005))  # BEKM's capacity ⌈n/S⌉(1 + δ); random: balanced
    if partition == "random":
        assert sorted(sizes.tolist()) == [33, 33, 34]
    # exactly the shards that held a deleted node were retrained
    assert res.notes["shards_retrained"] == len(np.unique(shard[t.forget]))


def test_c48_the_partition_setting_decides_the_partition():
    """BEKM clusters the propagated features: its within-shard sum of squares is well below the random partition's,
    and the two partitions differ (a GraphEraser that ignored ``partition`` would give the same one twice)."""
    t, bekm = _eraser("bekm")
    _, rand = _eraser("random")
    z = _propagated(t)
    a, b = bekm.model.shard_of_node, rand.model.shard_of_node
    assert not np.array_equal(a, b)
    sse_bekm, sse_rand = _within_shard_sse(z, a), _within_shard_sse(z, b)
    assert sse_bekm < 0.8 * sse_rand, (sse_bekm, sse_rand)
