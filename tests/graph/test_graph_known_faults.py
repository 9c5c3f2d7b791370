"""KNOWN_FAULTS of graph unlearning code bases, kept as tests: C39 (every method runs with its defaults on the
karate-club graph; an omitted deletion set is a named error), C41 (split and model caches keyed by every field that
changes them; a hand-edited cache file is refused), C48 (GraphEraser with either partition, from a fresh folder)."""

from __future__ import annotations

import copy
import time

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


@pytest.mark.parametrize("target", ["edge", "node", "feature"])
def test_c39_every_graph_method_runs_with_its_defaults_on_karate(target):
    """34 nodes, 78 edges; delete 3 edges (or 1 of the 4 labelled nodes / their features); θ_o: 20 epochs."""
    g = karate()
    assert (g.num_nodes, g.num_edges) == (34, 78)
    t = build_graph_task(g, task="node", target=target, count=3 if target == "edge" else 1, seed=0)
    gcn = lambda s: build_gnn("gcn", g.x.shape[1], g.num_classes, hidden=16, seed=s)  # noqa: E731
    sgc = lambda s: build_gnn("sgc", g.x.shape[1], g.num_classes, bias=False, seed=s)  # noqa: E731
    for name in GRAPH_METHODS:
        cert = name == "certified_sgc"
        recipe = GraphTrainConfig(loss="ovr_logistic", lbfgs_steps=20) if cert else GraphTrainConfig(epochs=20)
        factory = sgc if cert else gcn
        model = factory(0)
        fit_graph(model, t, "original", recipe, seed=0)
        ctx = UnlearnContext(seed=0, train_recipe=recipe, init_seed=1, model_factory=factory)
        t0 = time.perf_counter()
        try:
            res = METHODS.build(name, {}).unlearn_graph(copy.deepcopy(model), t, ENGINE, ctx)
        except MethodError as err:  # a method may not serve this deletion; it must say so, naming what it needs
            assert target in str(err) or "node" in str(err) or "edge" in str(err), (name, str(err))
            continue
        assert time.perf_counter() - t0 < 60, name  # seconds, not minutes
        rv = t.view("retain")
        assert torch.isfinite(res.model(rv.x, rv.edge_index)).all(), name


def test_c39_an_omitted_deletion_set_is_a_named_error():
    with pytest.raises(ConfigError, match="exactly one of 'fraction'.*or 'count'"):
        build_graph_task(karate(), task="node", target="edge")


def _sbm_cfg(out, fraction: float, method: str = "graph_grad_ascent"):
    from unlearnkit.bench import load_config

    return load_config(data={
        "name": "c41", "track": "graph", "output_dir": str(out), "seeds": [0], "engine": {"progress": False},
        "metrics": ["graph_utility"], "methods": ["retrain", {"name": method, "epochs": 2}],
        "graph": {"data": {"name": "synthetic", "num_nodes": 100, "num_features": 8}, "task": "node",
                  "model": {"arch": "gcn", "hidden": 8}, "train": {"epochs": 5},
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


@pytest.mark.parametrize("partition", ["random", "bekm"])
def test_c48_graph_eraser_either_partition_from_a_fresh_folder(partition, tmp_path, monkeypatch):
    from unlearnkit.data.graph import synthetic_graph

    monkeypatch.chdir(tmp_path)  # an empty working folder: every output folder must be created on demand
    g = synthetic_graph(num_nodes=100, num_classes=3, num_features=8, p_in=0.15, p_out=0.02, seed=0)
    t = build_graph_task(g, task="node", target="node", count=5, seed=0)
    factory = lambda s: build_gnn("gcn", 8, 3, hidden=8, seed=s)  # noqa: E731
    recipe = GraphTrainConfig(epochs=10)
    model = factory(0)
    fit_graph(model, t, "original", recipe, seed=0)
    ctx = UnlearnContext(seed=0, train_recipe=recipe, init_seed=1, model_factory=factory)
    res = METHODS.build("graph_eraser", {"num_shards": 3, "partition": partition, "aggregator_epochs": 5}) \
        .unlearn_graph(copy.deepcopy(model), t, ENGINE, ctx)
    rv = t.view("retain")
    assert torch.isfinite(res.model(rv.x, rv.edge_index)).all()
    assert res.notes.get("partition", partition) == partition
    sizes = res.notes.get("shard_sizes")
    if sizes is not None:
        assert len(sizes) == 3 and sum(sizes) == g.num_nodes  # the partition covers the graph's nodes
