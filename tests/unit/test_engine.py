"""Engine: determinism, optimizers/schedulers from the recipe, ids seen, grad clipping, NaN stop, eval mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testkit import tiny_model
from torch import nn

from unlearnkit.config.schema import EngineConfig, TrainConfig
from unlearnkit.engine.loop import Engine, cross_entropy_loss, make_optimizer, make_scheduler
from unlearnkit.errors import ConfigError, DivergenceError

RECIPE = TrainConfig(epochs=3, batch_size=16, lr=0.05, scheduler="cosine")


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- determinism ----------------------------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_weights(tiny_task, engine):
    m1, m2, m3 = tiny_model(0), tiny_model(0), tiny_model(0)
    r1 = engine.fit(m1, tiny_task.train, RECIPE, seed=7)
    r2 = engine.fit(m2, tiny_task.train, RECIPE, seed=7)
    engine.fit(m3, tiny_task.train, RECIPE, seed=8)
    assert state_equal(m1, m2)
    assert r1.losses == r2.losses
    assert not state_equal(m1, m3)  # the seed controls the data order
    assert not state_equal(m1, tiny_model(0))  # training changed the weights


# -- the ids seen, steps, samples -----------------------------------------------------------------------------------
def test_ids_seen_equal_the_training_set(tiny_task, engine):
    data = tiny_task.retain
    res = engine.fit(tiny_model(0), data, TrainConfig(epochs=2, batch_size=16, lr=0.01), seed=0)
    assert np.array_equal(res.seen_ids, np.sort(data.ids))
    assert len(np.intersect1d(res.seen_ids, tiny_task.forget.ids)) == 0
    n = len(data)
    assert n == 81  # 5 batches of 16 + 1: the trailing 1-sample batch is merged (BatchNorm-safe)
    assert res.steps == 2 * 5
    assert res.samples == 2 * n
    assert len(res.losses) == 2 and all(math.isfinite(v) for v in res.losses)
    res32 = engine.fit(tiny_model(0), data, TrainConfig(epochs=2, batch_size=32, lr=0.01), seed=0)
    assert res32.steps == 2 * 3 and res32.samples == 2 * n  # 32 + 32 + 17: no merge


def test_each_sample_is_used_once_per_epoch(tiny_task, engine, monkeypatch):
    seen: list[int] = []

    def spy(model, x, y):
        return cross_entropy_loss(model, x, y)

    data = tiny_task.retain
    original_batches = engine.batches

    def counting_batches(*a, **kw):
        for x, y, ids in original_batches(*a, **kw):
            seen.extend(ids.tolist())
            yield x, y, ids

    monkeypatch.setattr(engine, "batches", counting_batches)
    engine.fit(tiny_model(0), data, TrainConfig(epochs=2, batch_size=7, lr=0.01), seed=0, loss_fn=spy)
    n = len(data)
    assert len(seen) == 2 * n
    assert sorted(seen[:n]) == sorted(data.ids.tolist()) == sorted(seen[n:])
    assert seen[:n] != seen[n:]  # reshuffled each epoch


def test_empty_training_set_is_an_error(tiny_task, engine):
    with pytest.raises(ConfigError, match="empty"):
        engine.fit(tiny_model(0), tiny_task.train.take(np.zeros(0, dtype=np.int64)), RECIPE, seed=0)


def test_no_trainable_parameters_is_an_error(tiny_task, engine):
    m = tiny_model(0)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        engine.fit(m, tiny_task.train, RECIPE, seed=0)


# -- optimizers and schedulers from the recipe ----------------------------------------------------------------------
def test_optimizers_are_built_with_the_recipe_hyperparameters():
    params = list(tiny_model(0).parameters())
    sgd = make_optimizer(params, TrainConfig(optimizer="sgd", lr=0.3, momentum=0.8, nesterov=True, weight_decay=1e-3))
    assert type(sgd) is torch.optim.SGD
    g = sgd.param_groups[0]
    assert (g["lr"], g["momentum"], g["nesterov"], g["weight_decay"]) == (0.3, 0.8, True, 1e-3)
    adam = make_optimizer(params, TrainConfig(optimizer="adam", lr=2e-3, weight_decay=0.0))
    assert type(adam) is torch.optim.Adam
    assert (adam.param_groups[0]["lr"], adam.param_groups[0]["weight_decay"]) == (2e-3, 0.0)
    adamw = make_optimizer(params, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05))
    assert type(adamw) is torch.optim.AdamW  # decoupled weight decay
    assert (adamw.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (1e-3, 0.05)
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(params)


def _lrs(recipe: TrainConfig, steps_per_epoch: int) -> tuple[list[float], float]:
    """lr used at each optimizer step, and the lr after the last step."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    sched = make_scheduler(opt, recipe, steps_per_epoch)
    used = []
    for _ in range(recipe.epochs * steps_per_epoch):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return used, opt.param_groups[0]["lr"]


def test_cosine_schedule_anneals_to_zero_at_the_last_step():
    recipe = TrainConfig(epochs=4, lr=0.2, scheduler="cosine")
    used, final = _lrs(recipe, steps_per_epoch=5)
    total = 20
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=total, eta_min=0.0)
    want = []
    for _ in range(total):
        want.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert used == pytest.approx(want, abs=1e-12)
    assert used[0] == 0.2 and used[10] == pytest.approx(0.1, abs=1e-12)  # half-way: lr/2
    assert final == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(used, used[1:]))


def test_step_schedule_decays_by_gamma_every_step_size_epochs():
    recipe = TrainConfig(epochs=7, lr=0.4, scheduler="step", step_size=2, gamma=0.5)
    used, _ = _lrs(recipe, steps_per_epoch=3)
    want = [0.4 * 0.5 ** (epoch // 2) for epoch in range(7) for _ in range(3)]
    assert used == pytest.approx(want, abs=1e-12)
    assert used[5] == 0.4 and used[6] == pytest.approx(0.2) and used[12] == pytest.approx(0.1)


def test_no_scheduler_keeps_the_lr():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert make_scheduler(opt, TrainConfig(scheduler="none"), 10) is None


def test_fit_follows_the_schedule(tiny_task, engine, monkeypatch):
    """The engine steps the scheduler once per optimizer step: cosine ends at lr 0 after the last step."""
    lrs: list[float] = []
    orig = torch.optim.SGD.step

    def spy_step(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return orig(self, *a, **kw)

    monkeypatch.setattr(torch.optim.SGD, "step", spy_step)
    res = engine.fit(tiny_model(0), tiny_task.train, TrainConfig(epochs=2, batch_size=32, lr=0.1), seed=0)
    total = res.steps
    want = [0.1 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    assert lrs == pytest.approx(want, abs=1e-12)


# -- gradient clipping ----------------------------------------------------------------------------------------------
def _grad_norms(engine, data, clip):
    norms: list[float] = []
    model = tiny_model(0)

    def big_loss(m, x, y):  # large gradients so clipping matters
        return 1000.0 * cross_entropy_loss(m, x, y)

    def record(step):
        g = torch.cat([p.grad.flatten() for p in model.parameters()])
        norms.append(float(g.norm()))

    engine.fit(model, data, TrainConfig(epochs=1, batch_size=16, lr=1e-4, grad_clip=clip, scheduler="none"),
               seed=0, loss_fn=big_loss, after_step=record)
    return norms


def test_grad_clip_bounds_the_global_norm(tiny_task, engine):
    free = _grad_norms(engine, tiny_task.train, None)
    clipped = _grad_norms(engine, tiny_task.train, 0.5)
    assert max(free) > 10  # without clipping the norm is far above the bound
    assert max(clipped) <= 0.5 + 1e-5
    assert clipped[0] == pytest.approx(0.5, rel=1e-4)  # clipped to the bound, not below it


# -- NaN / inf loss (C43) -------------------------------------------------------------------------------------------
def test_c43_inf_batch_at_step_3_stops_before_the_update(tiny_task, engine):
    model = tiny_model(0)
    calls = {"n": 0}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def poisoned(m, x, y):
        step = calls["n"]
        calls["n"] += 1
        if step == 3:
            x = x.clone()
            x[0, 0] = float("inf")
        return cross_entropy_loss(m, x, y)

    def snap(step):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(DivergenceError) as exc:
        engine.fit(model, tiny_task.train, TrainConfig(epochs=3, batch_size=8, lr=0.05), seed=0,
                   loss_fn=poisoned, after_step=snap)
    err = exc.value
    assert err.step == 3 and not math.isfinite(err.loss)
    assert "step 3" in str(err)
    assert sorted(snapshots) == [0, 1, 2]  # steps 0..2 updated, step 3 did not
    state = model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    assert all(torch.equal(state[k], snapshots[2][k]) for k in state)
    assert isinstance(err, FloatingPointError)


def test_c43_huge_learning_rate_raises_divergence_with_finite_weights(tiny_task, engine):
    model = tiny_model(0)
    with pytest.raises(DivergenceError) as exc:
        engine.fit(model, tiny_task.train, TrainConfig(epochs=10, batch_size=8, lr=1e6, scheduler="none",
                                                       weight_decay=0.0), seed=0)
    assert 0 < exc.value.step < 10 * 11
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_check_finite_helper():
    assert Engine.check_finite(torch.tensor(1.5), step=0) == 1.5
    with pytest.raises(DivergenceError) as exc:
        Engine.check_finite(torch.tensor(float("nan")), step=4, desc="custom")
    assert exc.value.step == 4 and "custom" in str(exc.value)


# -- evaluation mode (C21) ------------------------------------------------------------------------------------------
class _ModeSpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.lin(self.drop(x))


def test_c21_predict_runs_in_eval_mode_and_restores_the_flag(tiny_task, engine):
    m = _ModeSpy()
    m.train()
    p1 = engine.predict(m, tiny_task.test)
    p2 = engine.predict(m, tiny_task.test)
    assert m.modes and not any(m.modes)  # every forward pass in eval mode
    assert m.training is True  # flag restored
    assert torch.equal(p1.logits, p2.logits)  # dropout inactive: deterministic
    with torch.no_grad():
        m.eval()
        x, _, _ = tiny_task.test.batch(np.arange(len(tiny_task.test)))
        ref = m.lin(x)
    assert torch.equal(p1.logits, ref)
    m.eval()
    engine.predict(m, tiny_task.test)
    assert m.training is False


def test_predict_outputs_align_with_ids_and_labels(tiny_task, engine, trained_model):
    preds = engine.predict(trained_model, tiny_task.test)
    assert preds.logits.shape == (len(tiny_task.test), 3) and preds.logits.dtype == torch.float32
    assert preds.ids.tolist() == tiny_task.test.ids.tolist()
    assert preds.labels.tolist() == tiny_task.test.labels.tolist()
    small = Engine(EngineConfig(progress=False, eval_batch_size=4))  # batching does not change outputs
    assert torch.allclose(small.predict(trained_model, tiny_task.test).logits, preds.logits, atol=1e-6)
    assert preds.accuracy() > 80.0  # the blobs are separable
    n_ok = int((preds.logits.argmax(1) == preds.labels).sum())
    assert preds.accuracy() == 100.0 * n_ok / len(preds.labels)
    assert torch.allclose(preds.probs.sum(1), torch.ones(len(preds.labels)))


def test_device_auto_and_missing_cuda():
    assert Engine(EngineConfig(device="cpu")).device == torch.device("cpu")
    if not torch.cuda.is_available():
        assert Engine(EngineConfig(device="auto")).device.type == "cpu"
        with pytest.raises(ConfigError, match="CUDA is not available"):
            _ = Engine(EngineConfig(device="cuda")).device


def test_progress_is_silent_when_stderr_is_not_a_terminal(capfd):
    """A log file or pipe must not collect one line per progress refresh (seen with many short loops)."""
    from unlearnkit.config.schema import EngineConfig
    from unlearnkit.engine.loop import Engine

    eng = Engine(EngineConfig(device="cpu", progress=True))
    for _ in range(20):
        with eng.progress(5, "loop") as advance:
            for _ in range(5):
                advance()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_lines_at_a_fixed_interval_with_epoch_step_and_eta():
    """Issue 13 item 10: in a log, progress is a line at most every `interval` seconds (fake clock), plus `done`."""
    import io

    from unlearnkit.engine.loop import ProgressLog

    now = [100.0]
    buf = io.StringIO()
    log = ProgressLog(40, "train θ_o", interval=10.0, epochs=4, clock=lambda: now[0], stream=buf)
    for _ in range(40):
        now[0] += 1.0  # one second per step
        log.advance(1, info=lambda: "loss 0.5000")
    log.finish()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 5  # after 10, 20, 30, 40 s, then done
    assert lines[0] == ("[unlearnkit] train θ_o: epoch 2/4, step 10/40 (25 %), 10.0 s elapsed, ETA 30 s, "
                        "loss 0.5000")
    assert lines[1].startswith("[unlearnkit] train θ_o: epoch 3/4, step 20/40 (50 %), 20.0 s elapsed, ETA 20 s")
    assert lines[-1] == "[unlearnkit] train θ_o: epoch 4/4, step 40/40 (100 %), 40.0 s elapsed, done, loss 0.5000"
    quick = io.StringIO()
    short = ProgressLog(5, "short", interval=10.0, clock=lambda: now[0], stream=quick)
    for _ in range(5):
        short.advance()
    short.finish()
    assert quick.getvalue() == ""  # shorter than one interval: silent


_PROGRESS_SCRIPT = """
import numpy as np, torch
from torch import nn
from unlearnkit.config.schema import EngineConfig, TrainConfig
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.engine.loop import Engine
torch.manual_seed(0)
x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
pos = np.arange(64)
data = SampleSet(TensorSource(x, y), pos, pos, y.numpy(), 2, "toy")
eng = Engine(EngineConfig(device="cpu", progress=True, progress_interval=0.0))
eng.fit(nn.Linear(4, 2), data, TrainConfig(epochs=3, batch_size=16, lr=0.1, scheduler="none"), seed=0,
        desc="fit toy")
"""


def test_training_with_stderr_redirected_to_a_file_writes_progress_lines(tmp_path):
    """A run whose stderr is a log file gets progress lines (before the fix: nothing, however long it ran)."""
    import os
    import subprocess
    import sys

    log = tmp_path / "stderr.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as err:
        subprocess.run([sys.executable, "-c", _PROGRESS_SCRIPT], stderr=err, stdout=subprocess.DEVNULL, env=env,
                       check=True, timeout=120)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("[unlearnkit] fit toy:")]
    assert len(lines) == 13, log.read_text()  # interval 0: every one of the 12 steps, then done
    assert "epoch 1/3, step 1/12" in lines[0] and "ETA" in lines[0] and "loss" in lines[0]
    assert lines[-1].startswith("[unlearnkit] fit toy: epoch 3/3, step 12/12 (100 %)") and "done" in lines[-1]
