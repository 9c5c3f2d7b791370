"""Golden values of the representation metric (``representation``): linear CKA by hand and against an independent
HSIC computation (centering matrix, Gram matrices), k-NN and linear-probe accuracy on constructed separable features,
and the registered metric on stub models whose penultimate features we set.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.data.scenarios import Task
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError, MethodError
from unlearnkit.metrics import METRICS, EvalContext
from unlearnkit.metrics.representation import (
    Representation, knn_accuracy, linear_cka, penultimate_features, probe_accuracy,
)

ENGINE = Engine(EngineConfig(device="cpu", progress=False))


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(KHLH), K = XXᵀ (Kornblith et al., Eq. 3–4)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return float(hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_)))


# -- linear CKA -----------------------------------------------------------------------------------------------------
def test_cka_hand_values():
    x, y = np.array([[1.0], [2], [3], [4]]), np.array([[1.0], [3], [2], [4]])
    assert linear_cka(x, y) == pytest.approx(0.64)  # 1-d features: CKA = Pearson r² = 0.8²
    x2 = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    y2 = np.array([[1.0], [0], [-1], [0]])
    assert linear_cka(x2, y2) == pytest.approx(1 / math.sqrt(2))  # ‖YᵀX‖² = 4, ‖XᵀX‖ = √8, ‖YᵀY‖ = 2
    assert linear_cka(x2, x2) == pytest.approx(1.0)


def test_cka_invariances_and_agreement_with_hsic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 4))
    y = y + 0.8 * x[:, :4]  # related, not identical
    base = linear_cka(x, y)
    assert base == pytest.approx(hsic_cka(x, y), rel=1e-10)
    assert 0.2 < base < 0.95
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # orthogonal
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)  # isotropic scaling
    assert linear_cka(x + 100.0, y) == pytest.approx(base, rel=1e-10)  # centred internally
    assert linear_cka(x @ np.diag([10.0, 1, 1, 1, 1, 0.1]), y) != pytest.approx(base, rel=1e-3)  # anisotropic
    assert linear_cka(x @ q * 3.0, x) == pytest.approx(1.0)
    # more features than samples: the Gram form is used; same value as the HSIC definition
    xw, yw = rng.normal(size=(5, 50)), rng.normal(size=(5, 30))
    assert linear_cka(xw, yw) == pytest.approx(hsic_cka(xw, yw), rel=1e-10)


def test_cka_degenerate_inputs():
    x = np.arange(8.0).reshape(4, 2)
    assert linear_cka(np.ones((4, 3)), x) == 0.0  # constant representation: documented convention
    with pytest.raises(DataError, match="same samples"):
        linear_cka(x, x[:3])
    with pytest.raises(DataError, match="at least 2"):
        linear_cka(x[:1], x[:1])
    with pytest.raises(DataError, match="NaN"):
        linear_cka(np.full((4, 2), np.nan), x)


# -- k-NN and linear probe --------------------------------------------------------------------------------------
def clusters(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 around (10, 0), class 1 around (0, 10): separable by direction (cosine) and by a line."""
    y = np.repeat([0, 1], n)
    centre = np.where(y[:, None] == 0, [10.0, 0.0], [0.0, 10.0])
    return (centre + rng.uniform(-1, 1, size=(2 * n, 2))).astype(np.float32), y


FORGET_X = np.array([[9.0, 1.0], [8.0, 0.5], [0.5, 11.0], [11.0, 0.2]], dtype=np.float32)
FORGET_Y = np.array([0, 0, 1, 1])  # the last one sits in class 0's cluster: 3 of 4 separable → 75 %


def test_knn_and_probe_on_separable_features():
    x, y = clusters(20, np.random.default_rng(1))
    acc, pred = knn_accuracy(x, y, FORGET_X, FORGET_Y, k=5)
    assert acc == 75.0 and pred.tolist() == [0, 0, 1, 0]
    acc_e, _ = knn_accuracy(x, y, FORGET_X, FORGET_Y, k=5, metric="euclidean")
    assert acc_e == 75.0
    acc_p, pred_p = probe_accuracy(x, y, FORGET_X, FORGET_Y)
    assert acc_p == 75.0 and pred_p.tolist() == [0, 0, 1, 0]
    with pytest.raises(DataError, match="k = 50"):
        knn_accuracy(x, y, FORGET_X, FORGET_Y, k=50)
    with pytest.raises(DataError, match="2 classes"):
        probe_accuracy(x[:20], y[:20], FORGET_X, FORGET_Y)


# -- the registered metric on stub models ------------------------------------------------------------------------
def linear(w: np.ndarray, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w).float())
        if bias:
            lin.bias.zero_()
    return lin


HEAD2 = np.array([[1.0, 0.0], [0.0, 1.0]])
THETA = 0.7
ROT = np.array([[math.cos(THETA), -math.sin(THETA)], [math.sin(THETA), math.cos(THETA)]])


def unlearned() -> nn.Module:
    return nn.Sequential(nn.Identity(), linear(HEAD2))  # penultimate features = the input


def original() -> nn.Module:  # features = 3·R·x (orthogonal + isotropic): CKA to θ_u = 1; dropout tests eval mode
    return nn.Sequential(nn.Dropout(0.5), linear(3.0 * ROT, bias=False), linear(HEAD2))


def oracle() -> nn.Module:  # features = x₀ only
    return nn.Sequential(linear(np.array([[1.0, 0.0]]), bias=False), linear(np.array([[1.0], [-1.0]])))


def make_task(kind: str = "random", extra_test: int = 4) -> Task:
    rng = np.random.default_rng(2)
    xr, yr = clusters(20, rng)
    xt = rng.normal(size=(8, 2)).astype(np.float32) * 5
    yt = rng.integers(0, 2, 8)
    xf, yf = FORGET_X, FORGET_Y
    k = 2
    if kind == "class":  # forget class 2 (direction (1, 1)); test holds `extra_test` samples of class 2
        xf = np.array([[7.0, 7.5], [6.0, 5.5], [8.0, 8.2], [5.0, 5.1]], dtype=np.float32)
        yf = np.full(4, 2)
        yt[:extra_test] = 2
        xt[:extra_test] = np.array([[5.0, 5.2], [6.1, 6.0], [4.0, 4.3], [7.0, 6.8]], dtype=np.float32)[:extra_test]
        k = 3
    x = np.concatenate([xf, xr, xt])
    y = np.concatenate([yf, yr, yt])
    src = TensorSource(torch.from_numpy(x), torch.from_numpy(y))
    nf, nr = len(yf), len(yr)
    forget = SampleSet(src, np.arange(nf), np.arange(nf), yf, k, "forget")
    retain = SampleSet(src, np.arange(nf, nf + nr), np.arange(nf, nf + nr), yr, k, "retain")
    test = SampleSet(src, np.arange(nf + nr, len(y)), np.arange(nf + nr, len(y)), yt, k, "test")
    tf = test.take(test.labels == 2, "test_forgotten") if kind == "class" else None
    return Task("stub", forget.concat(retain, "train"), forget, retain, test, k, {"kind": kind}, tf)


def test_representation_metric_on_stub_models():
    task = make_task()
    o = original()
    o.train()
    refs = {"original_model": o, "oracle_model": oracle()}
    out = METRICS.build("representation").compute(EvalContext(unlearned(), task, ENGINE, references=refs))
    v = out.values
    assert v["cka_original_forget"] == pytest.approx(1.0, abs=1e-6)
    assert v["cka_original_test"] == pytest.approx(1.0, abs=1e-6)
    xf = FORGET_X.astype(np.float64)
    xt = task.test.source.x[torch.from_numpy(task.test.positions)].double().numpy()
    assert v["cka_oracle_forget"] == pytest.approx(hsic_cka(xf, xf[:, :1]), rel=1e-5)
    assert v["cka_oracle_test"] == pytest.approx(hsic_cka(xt, xt[:, :1]), rel=1e-5)
    assert v["cka_oracle_forget"] < 0.99
    assert v["knn_acc_forget"] == 75.0 and v["probe_acc_forget"] == 75.0
    assert v["repr_fit_samples"] == 40 and v["repr_fit_extra_test"] == 0
    assert out.per_sample["knn_pred_forget"].tolist() == [0, 0, 1, 0]
    assert o.training  # the reference's training flag is restored
    assert set(v) == set(Representation.keys)


def test_fit_subset_and_no_reference_mode():
    task = make_task()
    out = METRICS.build("representation", {"compare": [], "max_fit_samples": 10, "k": 3}).compute(
        EvalContext(unlearned(), task, ENGINE))
    assert not any(k.startswith("cka_") for k in out.values)  # no reference needed without CKA
    assert out.values["repr_fit_samples"] == 10


def test_class_scenario_adds_test_samples_of_the_forgotten_class():
    task = make_task("class")
    v = METRICS.build("representation", {"compare": []}).compute(EvalContext(unlearned(), task, ENGINE)).values
    assert v["repr_fit_extra_test"] == 4 and v["repr_fit_samples"] == 44
    assert v["knn_acc_forget"] == 100.0  # D_f still clusters with unseen samples of its class
    with pytest.raises(DataError, match=r"labels \[2\]"):
        METRICS.build("representation", {"compare": []}).compute(
            EvalContext(unlearned(), make_task("class", extra_test=0), ENGINE))


def test_c07_missing_references_and_bad_models():
    task = make_task()
    with pytest.raises(ConfigError, match=r"references\['original_model'\]"):
        METRICS.build("representation").compute(EvalContext(unlearned(), task, ENGINE))
    with pytest.raises(ConfigError, match=r"references\['oracle_model'\]"):
        METRICS.build("representation", {"compare": ["oracle"]}).compute(
            EvalContext(unlearned(), task, ENGINE, references={"original_model": original()}))
    with pytest.raises(MethodError, match="nn.Linear"):
        penultimate_features(nn.Identity(), task.forget, ENGINE)
    with pytest.raises(ConfigError, match="duplicates"):
        METRICS.build("representation", {"compare": ["oracle", "oracle"]})
