"""GraphSAGE and GAT (advertised in the README's graph row): one layer of each against its formula in numpy, and
both trained through the runner on a two-block graph, with unlearning methods on top.

References: GraphSAGE mean aggregator (Hamilton, Ying, Leskovec, NeurIPS 2017, arXiv:1706.02216, Alg. 1 with the
root term of PyG's SAGEConv: h_i = W_l · mean_{j∈N(i)} x_j + b + W_r · x_i); GAT (Veličković et al., ICLR 2018,
arXiv:1710.10903, Eq. 1–4: α_ij = softmax_j LeakyReLU_0.2(a_srcᵀ W x_j + a_dstᵀ W x_i) over N(i) ∪ {i}).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from unlearnkit.data.graph import edge_index_of  # noqa: E402
from unlearnkit.errors import ConfigError  # noqa: E402
from unlearnkit.models.graph import build_gnn  # noqa: E402

EDGES = np.array([[0, 1], [0, 2], [1, 2], [2, 3], [3, 4]])  # 5 nodes; node 4 has one neighbour
X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def _neighbours(n: int) -> list[list[int]]:
    nb = [[] for _ in range(n)]
    for u, v in EDGES:
        nb[u].append(v)
        nb[v].append(u)
    return nb


def test_sage_layer_is_the_mean_aggregator():
    m = build_gnn("sage", 4, 3, num_layers=1, seed=0).eval()
    conv = m.convs[0]
    assert type(conv).__name__ == "SAGEConv"
    wl, bl = conv.lin_l.weight.detach().double().numpy(), conv.lin_l.bias.detach().double().numpy()
    wr = conv.lin_r.weight.detach().double().numpy()
    x = X.astype(np.float64)
    want = np.stack([wl @ x[nb].mean(0) + bl + wr @ x[i] for i, nb in enumerate(_neighbours(5))])
    with torch.no_grad():
        got = m(torch.from_numpy(X), edge_index_of(EDGES)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gat_layer_is_attention_over_neighbours_and_self():
    m = build_gnn("gat", 4, 3, num_layers=1, seed=0).eval()  # the last (only) layer has one head
    conv = m.convs[0]
    assert type(conv).__name__ == "GATConv" and conv.heads == 1
    w = conv.lin.weight.detach().double().numpy()
    a_src = conv.att_src.detach().double().numpy().reshape(-1)
    a_dst = conv.att_dst.detach().double().numpy().reshape(-1)
    b = conv.bias.detach().double().numpy()
    h = X.astype(np.float64) @ w.T  # (5, 3)
    want = []
    for i, nb in enumerate(_neighbours(5)):
        js = nb + [i]  # self-loop added
        e = np.array([a_src @ h[j] + a_dst @ h[i] for j in js])
        e = np.where(e > 0, e, 0.2 * e)
        alpha = np.exp(e - e.max())
        alpha /= alpha.sum()
        want.append((alpha[:, None] * h[js]).sum(0) + b)
    with torch.no_grad():
        got = m(torch.from_numpy(X), edge_index_of(EDGES)).double().numpy()
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-6)


def test_gat_hidden_width_must_split_over_heads():
    m = build_gnn("gat", 4, 3, hidden=16, heads=4, seed=0)
    assert [type(c).__name__ for c in m.convs] == ["GATConv", "GATConv"] and m.convs[0].heads == 4
    assert m(torch.from_numpy(X), edge_index_of(EDGES)).shape == (5, 3)
    with pytest.raises(ConfigError, match="multiple of heads"):
        build_gnn("gat", 4, 3, hidden=10, heads=4)


@pytest.mark.parametrize("arch,param", [("sage", "lin_l.weight"), ("gat", "att_src")])
def test_sage_and_gat_train_and_unlearn_through_the_runner(arch, param, tmp_path):
    """120-node two-block graph, 3 classes, 10 % of the training nodes deleted: θ_o learns (test accuracy far above
    the 33 % of chance, and so do the unlearned models), every method row is ok, and the saved models are of the
    requested architecture."""
    from safetensors import safe_open

    from unlearnkit.bench import run_experiment
    from unlearnkit.bench import load_config

    cfg = load_config(data={
        "name": f"arch-{arch}", "track": "graph", "output_dir": str(tmp_path), "seeds": [0],
        "engine": {"progress": False}, "metrics": ["graph_utility"],
        "methods": ["retrain", {"name": "graph_grad_ascent", "epochs": 2}, {"name": "gnndelete", "epochs": 5}],
        "graph": {"data": {"name": "synthetic", "num_nodes": 120, "num_features": 8}, "task": "node",
                  "model": {"arch": arch, "hidden": 16}, "train": {"epochs": 50},
                  "deletion": {"target": "node", "fraction": 0.1, "seed": 0}}})
    out = run_experiment(cfg, write_report=False)
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {"retrain", "original", "graph_grad_ascent", "gnndelete"}  # θ_o is a row (issue 13)
    assert all(r["status"] == "ok" for r in rows.values()), {k: r.get("error") for k, r in rows.items()}
    assert all(r["metrics"]["test_acc"] > 70.0 for r in rows.values()), {k: r["metrics"] for k, r in rows.items()}
    weights = out.run_dir / "checkpoints" / "graph_grad_ascent-seed0" / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert any(k.endswith(param) for k in keys), keys
