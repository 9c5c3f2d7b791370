"""ACU: after every Learn and every request the analytic head equals the ridge head refit on what remains (to 1e-6),
computed independently with numpy; in a run, ACU's model is the oracle's; requests read only D_f."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_helpers import BASE, GROUPS, MLP, SGD, task_part
from unlearnkit.bench import Runner, load_config
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.continual import LEARNERS, LearnSpec, ModelInfo
from unlearnkit.methods.continual.acu import AnalyticModel


def refit_numpy(model: AnalyticModel, data, gamma: float) -> np.ndarray:
    """W = (ΦᵀΦ + γI)⁻¹ΦᵀY on ``data`` with the model's frozen features, by numpy (an independent solve)."""
    x, y, _ = data.batch(np.arange(len(data)))
    with torch.no_grad():
        f = model.body(x).reshape(len(x), -1).double().numpy()
    b = model.expand.numpy()
    phi = np.maximum(f @ b.T, 0.0)
    phi = np.hstack([phi, np.ones((len(phi), 1))])
    yy = np.eye(model.num_classes)[y.numpy()]
    return np.linalg.solve(phi.T @ phi + gamma * np.eye(phi.shape[1]), phi.T @ yy)


@pytest.mark.parametrize("features", ["random", "first_task"])
def test_acu_equals_the_ridge_refit_after_every_operation(digits, engine, features):
    learner = LEARNERS.build("acu", {"buffer_size": 96, "gamma": 0.1, "features": features})
    info = ModelInfo((1, 8, 8), 10, GROUPS, "single", MLP, init_seed=3)
    from unlearnkit.models import build_model

    model = learner.build(lambda: build_model(MLP, (1, 8, 8), 10, seed=3), info)
    method = METHODS.build("acu", {})
    train = digits.train
    parts = [task_part(train, t) for t in range(4)]
    kept = np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(0)

    def check(where):
        want = refit_numpy(model, train.select_ids(kept), 0.1)
        got = model.W.numpy()
        assert np.abs(got - want).max() < 1e-6, f"{where}: max |W − W_refit| = {np.abs(got - want).max():.2e}"
        assert int(model.n_fit) == len(kept)

    ops = ["L1", "L2", "U1", "L3", "U2:0.5", "L4", "U2:rest", "U3:0.3"]
    for op in ops:
        k = int(op[1]) - 1
        if op[0] == "L":
            learner.learn(model, LearnSpec(parts[k], k, GROUPS, SGD, seed=k), engine)
            kept = np.union1d(kept, parts[k].ids)
        else:
            pool = np.intersect1d(parts[k].ids, kept)
            share = op.split(":")[1] if ":" in op else "1"
            req = pool if share in ("1", "rest") else np.sort(rng.choice(pool, int(float(share) * len(pool)),
                                                                          replace=False))
            forget = train.select_ids(req, "forget")
            retain = train.select_ids(np.setdiff1d(kept, req), "retain")
            res = method.unlearn(model, forget, retain, engine, UnlearnContext(seed=0))
            assert res.model is model and res.steps == 0
            kept = np.setdiff1d(kept, req)
        check(op)
    # the model's logits are the ridge head's scores
    x, _, _ = train.batch(np.arange(20))
    with torch.no_grad():
        f = model.body(x).reshape(20, -1).double()
        want = (model.design(f) @ model.W).float()
    assert torch.allclose(model(x), want)


def test_acu_reads_only_the_forget_set(digits, engine, monkeypatch):
    learner = LEARNERS.build("acu", {"buffer_size": 32})
    model = learner.build(lambda: None, ModelInfo((1, 8, 8), 10, GROUPS, "single", MLP, 0))
    a, b = task_part(digits.train, 0), task_part(digits.train, 1)
    for k, part in enumerate((a, b)):
        learner.learn(model, LearnSpec(part, k, GROUPS, SGD, seed=0), engine)
    seen = []
    real = type(a).batch

    def spy(self, idx):
        seen.append(self.name)
        return real(self, idx)

    monkeypatch.setattr(type(a), "batch", spy)
    METHODS.build("acu", {}).unlearn(model, a.take(np.arange(len(a)), "forget"), b.take(np.arange(len(b)), "retain"),
                                     engine, UnlearnContext(seed=0))
    assert seen and set(seen) == {"forget"}


def test_acu_model_is_the_oracle_in_a_run(tmp_path):
    cfg = load_config(data={**BASE, "name": "acu", "output_dir": str(tmp_path),
                            "scenario": {"kind": "continual", "tasks": 3, "sequence": "L1 L2 U1 L3 U2:0.5",
                                         "learner": {"name": "acu", "buffer_size": 64}},
                            "methods": ["acu"]})
    runner = Runner(cfg)
    out = runner.run()
    branch = runner.plan[0]
    for pos in branch.points:
        oracle = runner.oracle(0, branch, pos).model
        import glob
        from unlearnkit.engine.checkpoint import load_checkpoint

        tag = branch.ops[pos].tag
        (ck,) = glob.glob(str(out.run_dir / "checkpoints" / f"acu-seed0-{tag}"))
        model = runner.new_model(0)
        load_checkpoint(__import__("pathlib").Path(ck), model)
        assert torch.allclose(model.W, oracle.W, atol=1e-6), f"point {tag}"
        assert int(model.n_fit) == int(oracle.n_fit)
    rows = [r for r in out.rows if r["method"] == "acu"]
    assert all(r["status"] == "ok" for r in rows)
    # learner defaults are filled into the resolved config (its hash covers them)
    assert cfg.scenario.learner == {"name": "acu", "gamma": 0.1, "buffer_size": 64, "buffer_seed": 0,
                                    "features": "random", "feature_seed": 0}


def test_acu_needs_its_learner_and_refuses_other_methods(tmp_path):
    with pytest.raises(ConfigError, match=r"method\(s\) \['finetune'\] cannot unlearn the models of learner 'acu'"):
        load_config(data={**BASE, "output_dir": str(tmp_path), "methods": ["finetune"],
                          "scenario": {"kind": "continual", "tasks": 3, "sequence": "L1 L2 U1",
                                       "learner": "acu"}})
    cfg = load_config(data={**BASE, "output_dir": str(tmp_path), "methods": ["acu"],
                            "scenario": {"kind": "continual", "tasks": 3, "sequence": "L1 L2 U1"}})
    with pytest.raises(MethodError, match="method 'acu' unlearns the models of `scenario.learner: acu`"):
        Runner(cfg).run()
