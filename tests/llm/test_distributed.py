"""Several processes (gloo on the CPU here): KNOWN_FAULTS C15 — results do not change with the number of processes at
equal effective batch — and the runner's rank-0-only writes.

Launchers: the C15 worker runs under ``accelerate launch --multi_gpu --num_processes 2`` (accelerate's CLI, which
starts torchrun's elastic launcher; the processes use the CPU and gloo because the engine's device is ``cpu``).
``accelerate launch --cpu --num_processes 2`` is not used: for several CPU processes accelerate's simple launcher
needs ``mpirun`` (``--mpirun_hostfile``), and without MPI it starts a single process. The runner tests launch
``torchrun`` directly (the same environment variables; accelerate's ``PartialState`` inside), so both launch paths
are covered.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from dist_cases import CASES, grad_diff_state  # noqa: E402
from unlearnkit.errors import ConfigError  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _accelerate_launch(args: list[str], cwd: Path, timeout: float, tmp: Path) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes 2`` on this CPU (see the module docstring); ``HF_HOME`` points
    to an empty folder so that no user default accelerate config file changes the launch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp), "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_MIXED_PRECISION",
              "ACCELERATE_USE_CPU", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = _accelerate_launch([str(HERE / "dist_worker.py"), str(out)], cwd=HERE, timeout=600,
                              tmp=tmp_path_factory.mktemp("hf_home"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    from safetensors.torch import load_file

    return {name: (load_file(str(out / f"{name}.safetensors")), json.loads((out / f"{name}.json").read_text()))
            for name in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_c15_same_weights_at_equal_effective_batch(case, two_process_results):
    """(world 1, per-device 8, accum 1) = (world 2, per-device 4; ``accelerate launch``) = (world 1, per-device 4,
    accum 2) within 1e-5."""
    n = CASES[case][0]
    tol = 1e-5
    one_8, res_8 = grad_diff_state(case, batch_size=8, grad_accum=1)
    one_4x2, res_4x2 = grad_diff_state(case, batch_size=4, grad_accum=2)
    two, meta = two_process_results[case]
    assert meta["world_size"] == 2 and meta["effective_batch"] == 8 == res_8.notes["effective_batch"]
    assert meta["accelerate_launch"] and meta["distributed_type"] == "MULTI_CPU"  # accelerate's launcher and state
    assert meta["mixed_precision"] == res_8.notes["mixed_precision"] == "no"
    assert meta["steps"] == res_8.steps == res_4x2.steps == 2 * -(-n // 8)
    assert meta["seen_ids"] == [int(i) for i in res_8.seen_ids]  # forget ∪ every rank's retain draws
    start = grad_diff_state(case, batch_size=8, grad_accum=1)  # deterministic: the same run twice is bitwise equal
    moved = 0.0
    for k, v in one_8.items():
        assert torch.equal(v, start[0][k])
        assert torch.allclose(one_4x2[k], v, atol=tol, rtol=0), (k, float((one_4x2[k] - v).abs().max()))
        assert torch.allclose(two[k], v, atol=tol, rtol=0), (k, float((two[k] - v).abs().max()))
        moved = max(moved, float((v - _initial()[k]).abs().max()))
    assert moved > 1e-3  # the weights did move: equality is not the trivial one of an untouched model


_INIT: dict[str, torch.Tensor] = {}


def _initial() -> dict[str, torch.Tensor]:
    if not _INIT:
        from core_fixtures import tiny_model

        _INIT.update({k: v.detach().clone() for k, v in tiny_model(3).float().state_dict().items()})
    return _INIT


def test_declared_world_size_must_match_the_launch():
    from core_fixtures import engine, tiny_model
    from unlearnkit.llm.lm import LMTrainConfig, optimize

    with pytest.raises(ConfigError, match="declares world_size 2 but the run was launched with 1"):
        optimize(tiny_model(), n_items=4, micro_loss=lambda *a: torch.zeros(()),
                 recipe=LMTrainConfig(batch_size=2, grad_accum=1, world_size=2), engine=engine(), seed=0)
    with pytest.raises(ConfigError, match=r"2 × 4 × 1 = 8"):
        optimize(tiny_model(), n_items=4, micro_loss=lambda *a: torch.zeros(()),
                 recipe=LMTrainConfig(batch_size=2, grad_accum=4, effective_batch=16), engine=engine(), seed=0)


def test_other_tracks_refuse_a_multi_process_launch(monkeypatch, tmp_path):
    from unlearnkit.bench import run_experiment
    from unlearnkit.bench import experiment as ExperimentConfig

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = ExperimentConfig(name="x", output_dir=str(tmp_path / "runs"), methods=[{"name": "finetune"}])
    with pytest.raises(ConfigError, match="trains with one process"):
        run_experiment(cfg, write_report=False)
    assert not (tmp_path / "runs").exists()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="not an integer"):
        run_experiment(cfg, write_report=False)


TINY_RUN = {
    "data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
    "model": {"kind": "tiny", "vocab_size": 384, "hidden_size": 32, "layers": 2, "heads": 2, "max_len": 96},
    "train": {"epochs": 8, "batch_size": 8, "grad_accum": 1, "lr": 5e-3},
    "eval": {"max_items": 6, "max_new_tokens": 8, "batch_size": 16},
}


def _run_cfg(out: Path, batch_size: int):
    from unlearnkit.bench import experiment as ExperimentConfig

    llm = {k: dict(v) for k, v in TINY_RUN.items()}
    llm["train"]["batch_size"] = batch_size
    return ExperimentConfig(
        name="dist", track="llm", llm=llm, seeds=[0], output_dir=str(out), engine={"progress": False, "threads": 1},
        methods=[{"name": "grad_diff", "params": {"epochs": 2, "batch_size": batch_size, "grad_accum": 1,
                                                  "lr": 1e-3}}])


def test_runner_under_torchrun_equals_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m unlearnkit run`` (per-device batch 4) gives the rows of a one-process run
    with batch 8: same metrics, one row per (method, seed), files written once, reports by rank 0; rerun under
    torchrun resumes on every rank (rank 0's finished rows are shared)."""
    from unlearnkit.bench import run_experiment
    from unlearnkit.config.loader import dump_yaml

    single = run_experiment(_run_cfg(tmp_path / "one", 8), write_report=False)
    cfg_path = tmp_path / "two.yaml"
    cfg_path.write_text(dump_yaml(_run_cfg(tmp_path / "two", 4)))
    proc = _torchrun(["-m", "unlearnkit", "run", str(cfg_path)], cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("Results:") == 1  # rank 1 prints nothing
    run_dirs = list((tmp_path / "two").glob("*/results.jsonl"))
    assert len(run_dirs) == 1
    rows = [json.loads(line) for line in run_dirs[0].read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == ["grad_diff", "original", "retrain"]  # each row once
    assert (run_dirs[0].parent / "report.html").is_file()
    one = {r["method"]: r for r in single.rows}
    for r in rows:
        assert r["status"] == "ok", r.get("error")
        a, b = r["metrics"], one[r["method"]]["metrics"]
        for k in ("forget_quality", "model_utility", "mia.loss.auc", "forget.es"):
            assert np.isclose(a[k], b[k], rtol=1e-3, atol=1e-4), (k, a[k], b[k])
    gd = next(r for r in rows if r["method"] == "grad_diff")
    assert gd["notes"]["effective_batch"] == 8
    again = _torchrun(["-m", "unlearnkit", "run", str(cfg_path), "--no-report"], cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "nothing new to run" in again.stdout
    assert len(run_dirs[0].read_text().splitlines()) == 3
    # another method, same θ_o / θ_r: every rank loads them from the cache rank 0 wrote
    import yaml

    ga_cfg = yaml.safe_load(cfg_path.read_text())
    ga_cfg["methods"] = [{"name": "ga", "params": {"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}}]
    ga_path = tmp_path / "ga.yaml"
    ga_path.write_text(yaml.safe_dump(ga_cfg))
    third = _torchrun(["-m", "unlearnkit", "run", str(ga_path), "--no-report"], cwd=tmp_path, timeout=600)
    assert third.returncode == 0, third.stderr[-4000:]
    assert third.stderr.count("reused cached original model") == 1  # printed by rank 0 only
    assert "reused cached oracle model" in third.stderr and "training" not in third.stderr
    ga_rows = [json.loads(line) for p in (tmp_path / "two").glob("*/results.jsonl") if p != run_dirs[0]
               for line in p.read_text().splitlines()]
    assert sorted(r["method"] for r in ga_rows) == ["ga", "original", "retrain"] and all(r["status"] == "ok" for r in ga_rows)


def test_sum_gradients_sums_each_gradient_through_accelerate_reduce(monkeypatch):
    """The gradient sum is ``accelerate.utils.reduce(..., "sum")``, one tensor at a time. Simulated: this rank and
    one other rank that had a gradient for every parameter except the last (gradients: the same values, loss 0).
    Every gradient comes back summed; a parameter this rank had no gradient for takes part as zeros (the other
    rank's gradient arrives); a parameter no rank had keeps ``grad = None``."""
    import accelerate.utils

    import unlearnkit.engine.distributed as d

    calls = []
    n_params = 4
    other_had = torch.tensor([0.0, 0.0] + [1.0] * (n_params - 1) + [0.0], dtype=torch.float64)

    def fake_reduce(t, reduction="mean"):
        assert reduction == "sum"
        calls.append((t.numel(), t.dtype))
        if len(calls) == 1:  # the head: [loss, failed bits, had-gradient flags]
            return t + other_had
        return t + other_grads[len(calls) - 2]

    other_grads = [torch.full((3,), 10.0), torch.full((2,), 20.0, dtype=torch.float64), torch.full((4,), 30.0)]
    monkeypatch.setattr(accelerate.utils, "reduce", fake_reduce)
    params = [torch.nn.Parameter(torch.zeros(n, dtype=dt)) for n, dt in
              [(3, torch.float32), (2, torch.float64), (4, torch.float32), (5, torch.float32)]]
    params[0].grad = torch.arange(1.0, 4.0)
    params[1].grad = torch.arange(1.0, 3.0, dtype=torch.float64)
    # params[2]: no gradient on this rank, one on the other; params[3]: on no rank
    total = d.DistState(rank=0, world_size=2).sum_gradients(params, 1.5)
    assert total == 1.5
    assert torch.equal(params[0].grad, torch.tensor([11.0, 12.0, 13.0]))
    assert torch.equal(params[1].grad, torch.tensor([21.0, 22.0], dtype=torch.float64))
    assert torch.equal(params[2].grad, torch.full((4,), 30.0))
    assert params[3].grad is None
    assert calls == [(2 + n_params, torch.float64), (3, torch.float32), (2, torch.float64), (4, torch.float32)]
    assert d.DistState().sum_gradients(params, 1.5) == 1.5  # one process: the identity, no collective
    assert len(calls) == 4


def test_a_failure_on_one_rank_stops_every_rank_in_the_same_collective(monkeypatch):
    """Rank 1 runs out of memory in its micro-batch: it re-raises its own error, rank 0 a MethodError naming rank 1
    — both right after the loss all-reduce, so neither waits for a collective the other never calls."""
    import accelerate.utils

    import unlearnkit.engine.distributed as d
    from unlearnkit.errors import MethodError

    def rank1_failed(t, reduction="mean"):  # what the all-reduce returns when rank 1 reported a failure
        t = t.clone()
        t[1] += 2.0
        return t

    monkeypatch.setattr(accelerate.utils, "reduce", rank1_failed)
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    with pytest.raises(MethodError, match=r"rank\(s\) \[1\] failed"):
        d.DistState(rank=0, world_size=2).sum_gradients([p], 1.0)
    assert torch.equal(p.grad, torch.ones(2))  # no gradient was summed
    monkeypatch.setattr(accelerate.utils, "reduce", lambda t, reduction="mean": t.clone())
    with pytest.raises(MemoryError, match="rank 1 ran out"):
        d.DistState(rank=1, world_size=2).sum_gradients([p], 1.0, MemoryError("rank 1 ran out"))


def test_agree_and_gather_use_accelerate_utilities(monkeypatch):
    """``agree`` / ``gather`` are accelerate's ``broadcast_object_list`` / ``gather_object`` (one value per rank)."""
    import accelerate.utils

    from unlearnkit.engine.distributed import DistState

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", lambda objs, from_process=0: ["from rank 0"])
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda objs: [*objs, "rank 1's"])
    two = DistState(rank=1, world_size=2)
    assert two.agree("mine") == "from rank 0"
    assert two.gather("rank 0's") == ["rank 0's", "rank 1's"]
    assert DistState().agree("mine") == "mine" and DistState().gather(3) == [3]


def test_ranks_above_zero_write_nothing(tmp_path, monkeypatch):
    """A rank > 0 runs the whole loop (training, evaluation) and creates no file: no run folder, cache, rows,
    per-sample arrays or checkpoints (collectives stubbed: rank 0's decisions = this rank's, sums = identity)."""
    from unlearnkit.bench import Runner
    from unlearnkit.engine.distributed import DistState

    class Rank1(DistState):
        def agree(self, value):
            return value

        def gather(self, value):
            return [value, value]

        def sum_gradients(self, params, loss_sum, failure=None):
            if failure is not None:
                raise failure
            return loss_sum

    cfg = _run_cfg(tmp_path / "out", 8)
    runner = Runner(cfg)
    monkeypatch.setattr(type(runner.engine), "dist", property(lambda self: Rank1(rank=1, world_size=2)))
    out = runner.run()
    assert not out.is_main and out.rows == [] and out.new_rows == 3  # θ_r's, θ_o's and the method's rows
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
