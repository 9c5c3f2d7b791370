"""UnlearnRec (Chen, Xia & Huang, SIGIR 2025): the Influence Encoder changes only the embeddings reachable from the
request, a request naming an unknown user is refused, and the method lowers the forget set's ranking."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from unlearnkit.errors import DataError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.recsys.unlearnrec import InfluenceEncoder, influence_graph, request_edges
from unlearnkit.metrics.recsys import RecForget, RecRank, RecsysEvalContext
from unlearnkit.models.recsys import RecModelConfig, RecTrainConfig, build_rec_model, train_bpr


def model_for(task, name="mf", seed=0):
    tr = task.train
    return build_rec_model(RecModelConfig(name=name, dim=16), task.n_users, task.n_items, tr.ids, tr.users, tr.items,
                           seed)


@pytest.mark.parametrize("layers", [1, 3])
def test_the_encoder_changes_only_embeddings_reachable_from_the_request(layers):
    n_users, n_items, d = 6, 5, 4
    enc = InfluenceEncoder(n_users + n_items, d, layers=layers, mlp_layers=2, seed=0)
    with torch.no_grad():  # a trained encoder: non-zero MLP biases and weights away from the identity
        for p in enc.mlp.parameters():
            p.add_(0.3 * torch.randn_like(p))
        enc.w_eta.normal_()
    users, items = torch.tensor([0, 1, 1]), torch.tensor([2, 2, 4])  # request: (0,2), (1,2), (1,4)
    adj = influence_graph(n_users, n_items, users, items)
    e0 = torch.randn(n_users + n_items, d)
    readout = torch.randn(n_users + n_items, d)
    out, _ = enc(adj, e0, readout)
    changed = set(torch.nonzero((out != e0).any(1)).flatten().tolist())
    reachable = {0, 1, n_users + 2, n_users + 4}
    assert changed == reachable
    untouched = [k for k in range(n_users + n_items) if k not in reachable]
    assert torch.equal(out[untouched], e0[untouched])  # bit for bit


def test_influence_graph_is_the_normalised_request_adjacency():
    adj = influence_graph(2, 2, torch.tensor([0, 0]), torch.tensor([0, 1])).to_dense()
    # user 0 has degree 2, items 0 and 1 degree 1: weights 1/√2 on the edges, symmetric, nothing else
    w = 1 / np.sqrt(2)
    want = torch.zeros(4, 4)
    want[0, 2] = want[2, 0] = want[0, 3] = want[3, 0] = w
    assert torch.allclose(adj, want)


def test_a_request_for_an_unknown_user_is_refused(task, engine):
    model = model_for(task)
    bad = replace(task.forget, users=task.forget.users.copy())
    bad.users[0] = task.n_users + 5
    with pytest.raises(DataError, match=rf"unknown user\(s\) \[{task.n_users + 5}\]"):
        request_edges(model, bad)
    with pytest.raises(DataError, match="unknown user"):
        METHODS.build("unlearnrec", {"pretrain_requests": 1}).unlearn(model, bad, task.retain, engine,
                                                                       UnlearnContext(seed=0))


def test_unlearnrec_lowers_the_forget_ranking_and_keeps_recall(task, engine):
    model = model_for(task)
    model.set_graph(task.train.ids)
    train_bpr(model, task.train, RecTrainConfig(epochs=40, batch_size=256, lr=0.01), engine, seed=0)
    before = copy.deepcopy(model)
    res = METHODS.build("unlearnrec", {"pretrain_requests": 20, "finetune_steps": 10, "batch_size": 256}).unlearn(
        model, task.forget, task.retain, engine, UnlearnContext(seed=0))

    def vals(m):
        ctx = RecsysEvalContext(m, task, engine, k=10)
        return {**RecRank().compute(ctx).values, **RecForget().compute(ctx).values}

    a, b = vals(before), vals(res.model)
    assert b["forget_auc"] < a["forget_auc"] - 0.05
    assert b["recall@10"] > 0.8 * a["recall@10"]
    assert res.notes["setup_seconds"] > 0 and res.notes["changed_rows"] > 0
