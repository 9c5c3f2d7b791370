"""Golden values of the distance-to-oracle metric (``retrain_distance``), computed independently: by hand (C33, C21),
with scipy (``rel_entr``, ``jensenshannon``) and numpy on linear stub models whose outputs we know.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax
from torch import nn

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.data.scenarios import Task
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import METRICS, EvalContext
from unlearnkit.metrics.distance import (
    RetrainDistance, js_divergence, js_from_logits, kl_divergence, kl_from_logits, parameter_distance,
)

ENGINE = Engine(EngineConfig(device="cpu", progress=False))
LN2 = math.log(2)


# -- C33: Jensen–Shannon -----------------------------------------------------------------------------------------
def test_c33_js_golden_values():
    p, q, h = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])
    assert js_divergence(p, q)[0] == pytest.approx(0.693147, abs=1e-6)
    assert js_divergence(p, q)[0] == pytest.approx(LN2, rel=1e-12)
    assert js_divergence(q, p)[0] == js_divergence(p, q)[0]  # symmetric
    assert js_divergence(h, h)[0] == 0.0 and js_divergence(p, p)[0] == 0.0
    batch = js_divergence(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert batch.tolist() == pytest.approx([LN2, 0.0])
    assert batch.mean() == pytest.approx(0.346574, abs=1e-6)  # mean of per-row JS, not an element-wise mean
    # the logits path reaches the same bound for saturated outputs
    assert js_from_logits(torch.tensor([[0.0, -1e4]]), torch.tensor([[-1e4, 0.0]]))[0] == pytest.approx(LN2)


def test_js_matches_scipy_and_kl_matches_hand_value():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(5), 20), rng.dirichlet(np.ones(5), 20)
    assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, axis=1) ** 2, rel=1e-9)
    a, b = np.array([[0.7, 0.2, 0.1]]), np.array([[0.5, 0.25, 0.25]])
    want = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.25) + 0.1 * math.log(0.1 / 0.25)  # 0.09203
    assert kl_divergence(a, b)[0] == pytest.approx(want, rel=1e-12)
    assert kl_divergence(b, a)[0] != pytest.approx(want, rel=1e-3)  # KL is not symmetric: order matters
    assert kl_from_logits(torch.log(torch.tensor(a)), torch.log(torch.tensor(b)))[0] == pytest.approx(want)
    assert kl_divergence(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))[0] == pytest.approx(LN2)  # 0 ln 0 = 0
    assert math.isinf(kl_divergence(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]))[0])


# -- C21: one global L2 norm -------------------------------------------------------------------------------------
class TwoTensors(nn.Module):
    def __init__(self, g1, g2):
        super().__init__()
        self.g1 = nn.Parameter(torch.tensor(g1))
        self.g2 = nn.Parameter(torch.tensor(g2))


def test_c21_parameter_distance_is_one_global_norm():
    a, b = TwoTensors([3.0, 4.0], [12.0]), TwoTensors([0.0, 0.0], [0.0])
    assert parameter_distance(a, b) == 13.0  # sqrt(9 + 16 + 144), not the mean of per-tensor norms (8.5)
    assert parameter_distance(a, a) == 0.0
    with pytest.raises(ConfigError, match="same architecture"):
        parameter_distance(a, nn.Linear(2, 1))
    with pytest.raises(ConfigError, match="shape"):
        parameter_distance(a, TwoTensors([0.0, 0.0, 0.0], [0.0]))


# -- the registered metric on linear stub models -----------------------------------------------------------------
def net(w: np.ndarray, b: np.ndarray) -> nn.Module:
    """Dropout(0.5) → Linear with the given weights: deterministic only in eval mode."""
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return nn.Sequential(nn.Dropout(0.5), lin)


def make_task(kind: str = "random") -> tuple[Task, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    if kind == "class":
        y[:6] = 2
        y[6:16] = rng.integers(0, 2, 10)
    src = TensorSource(torch.from_numpy(x), torch.from_numpy(y))
    forget = SampleSet(src, np.arange(6), np.arange(6), y[:6], 3, "forget")
    retain = SampleSet(src, np.arange(6, 16), np.arange(6, 16), y[6:16], 3, "retain")
    test = SampleSet(src, np.arange(16, 24), np.arange(16, 24), y[16:], 3, "test")
    tf = test.take(test.labels == 2, "test_forgotten") if kind == "class" else None
    task = Task("stub", forget.concat(retain, "train"), forget, retain, test, 3, {"kind": kind}, tf)
    return task, {"forget": x[:6].astype(np.float64), "test": x[16:].astype(np.float64)}


W_U, B_U = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, -1]]), np.array([0.1, 0.0, -0.2])
W_R, B_R = np.array([[0.5, 1, 0], [0, -1, 0], [1, 0, 3]]), np.array([0.0, 0.3, 0.0])
W_O, B_O = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 1]]), np.array([0.1, 0.0, -0.2])


def test_retrain_distance_on_linear_stubs():
    task, x = make_task()
    u, r, o = net(W_U, B_U), net(W_R, B_R), net(W_O, B_O)
    r.train()  # dropout on: the metric must evaluate in eval mode and restore the flag
    ctx = EvalContext(u, task, ENGINE, references={"oracle_model": r, "original_model": o})
    out = METRICS.build("retrain_distance").compute(ctx)
    v = out.values
    for split in ("forget", "test"):
        pu, pr = softmax(x[split] @ W_U.T + B_U, axis=1), softmax(x[split] @ W_R.T + B_R, axis=1)
        kl = rel_entr(pr, pu).sum(axis=1)  # KL(θ_r ‖ θ_u)
        assert v[f"kl_oracle_{split}"] == pytest.approx(kl.mean(), rel=1e-5)
        assert v[f"kl_oracle_{split}"] != pytest.approx(rel_entr(pu, pr).sum(axis=1).mean(), rel=1e-3)
        js = jensenshannon(pu, pr, axis=1) ** 2
        assert v[f"js_oracle_{split}"] == pytest.approx(js.mean(), rel=1e-5)
        assert out.per_sample[f"kl_{split}"] == pytest.approx(kl, rel=1e-5)
    assert v["l2_to_oracle"] == pytest.approx(math.sqrt(((W_U - W_R) ** 2).sum() + ((B_U - B_R) ** 2).sum()))
    assert v["l2_to_original"] == pytest.approx(2.0)  # only W[2, 2] differs: −1 vs 1
    assert r.training is True and u.training is True  # training flags restored after eval-mode predictions
    assert set(v) == set(RetrainDistance.keys)


def test_oracle_against_itself_is_zero_and_test_split_is_all_of_dt():
    task, _ = make_task("class")
    r = net(W_R, B_R)
    v = METRICS.build("retrain_distance", {"original": False}).compute(
        EvalContext(r, task, ENGINE, references={"oracle_model": r})).values
    assert v == {"kl_oracle_forget": 0.0, "js_oracle_forget": 0.0, "kl_oracle_test": 0.0, "js_oracle_test": 0.0,
                 "l2_to_oracle": 0.0}
    out = METRICS.build("retrain_distance", {"original": False}).compute(
        EvalContext(net(W_U, B_U), task, ENGINE, references={"oracle_model": r}))
    assert out.per_sample["ids_test"].tolist() == list(range(16, 24))  # D_t incl. the forgotten class


def test_c07_missing_references_raise_actionable_errors():
    task, _ = make_task()
    m = METRICS.build("retrain_distance")
    with pytest.raises(ConfigError, match=r"references\['oracle_model'\].*EvalContext\(model, task, engine"):
        m.compute(EvalContext(net(W_U, B_U), task, ENGINE))
    with pytest.raises(ConfigError, match=r"original_model"):
        m.compute(EvalContext(net(W_U, B_U), task, ENGINE, references={"oracle_model": net(W_R, B_R)}))
    with pytest.raises(ConfigError, match="must be an nn.Module"):
        m.compute(EvalContext(net(W_U, B_U), task, ENGINE, references={"oracle_model": "runs/oracle.safetensors",
                                                                           "original_model": net(W_O, B_O)}))
    v = METRICS.build("retrain_distance", {"original": False}).compute(
        EvalContext(net(W_U, B_U), task, ENGINE, references={"oracle_model": net(W_R, B_R)})).values
    assert "l2_to_original" not in v and v["l2_to_oracle"] > 0
