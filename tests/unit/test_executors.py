"""Executors: registry and settings, result order, error transport, and the parallel executors (local processes,
a local Ray instance) giving bit-identical SISA shard weights to the sequential executor."""

from __future__ import annotations

import importlib.util
import time

import pytest
from torch import nn

from unlearnkit.config.schema import TrainConfig
from unlearnkit.errors import ConfigError, DivergenceError, MethodError
from unlearnkit.methods.exact.sisa import SISA, SISAConfig
from unlearnkit.service.executors import (
    EXECUTORS, ProcessPoolExecutor, RayExecutor, SequentialExecutor, _run_captured, _unwrap, build_executor,
)

RECIPE = TrainConfig(epochs=2, batch_size=16, lr=0.05, scheduler="none")


def square(x: int) -> int:
    return x * x


def diverge(step: int) -> None:
    raise DivergenceError("loss became nan", step=step, loss=float("nan"))


class Unpicklable(Exception):
    def __init__(self, a, b):  # pickling re-calls __init__ with one argument and fails
        super().__init__(f"{a}/{b}")


def raise_unpicklable(_):
    raise Unpicklable(1, 2)


def test_registry_and_settings():
    assert EXECUTORS.names() == ["process", "ray", "sequential"]
    assert isinstance(build_executor(), SequentialExecutor)
    ex = build_executor("process", max_workers=3)
    assert isinstance(ex, ProcessPoolExecutor) and ex.max_workers == 3
    ray_ex = build_executor("ray", address="ray://head:10001", num_cpus_per_task=0.5)
    assert isinstance(ray_ex, RayExecutor) and ray_ex.address == "ray://head:10001"
    with pytest.raises(ConfigError, match="Did you mean 'process'"):
        build_executor("proces")
    with pytest.raises(ConfigError, match="unknown key 'workers'"):
        build_executor("process", workers=2)
    with pytest.raises(ConfigError):
        build_executor("process", max_workers=0)


def test_sequential_order_and_error_transport():
    with SequentialExecutor() as ex:
        assert ex.map(square, [3, 1, 2]) == [9, 1, 4]
    # the worker-side wrapper keeps DivergenceError's fields and turns unpicklable errors into MethodError
    with pytest.raises(DivergenceError) as info:
        _unwrap(_run_captured(diverge, 7))
    assert info.value.step == 7
    with pytest.raises(MethodError, match="Unpicklable: 1/2"):
        _unwrap(_run_captured(raise_unpicklable, None))


def _fit_and_delete(tmp, executor):
    data = _blobs().train
    # a closure as model factory: the process and Ray executors serialise it with cloudpickle
    width = 16
    sisa = SISA(SISAConfig(shards=2, slices=2, train=RECIPE),
                lambda s: nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3)), tmp)
    sisa.fit(data, executor=executor)
    victims = [int(data.ids[0]), int(data.ids[-1])]
    rep = sisa.delete(victims, executor=executor)
    return sisa.model_digest, rep


def _blobs():
    from tests.conftest import make_blobs

    return make_blobs()


def test_process_pool_matches_sequential(tmp_path):
    digest_seq, rep_seq = _fit_and_delete(tmp_path / "seq", None)
    with ProcessPoolExecutor(max_workers=2) as ex:
        assert ex.map(square, [4, 5]) == [16, 25]
        with pytest.raises(DivergenceError) as info:
            ex.map(diverge, [3])
        assert info.value.step == 3
        digest_proc, rep_proc = _fit_and_delete(tmp_path / "proc", ex)
    assert digest_proc == digest_seq
    assert rep_proc.shard_digests == rep_seq.shard_digests and rep_proc.sample_epochs == rep_seq.sample_epochs


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (extra [ray])")
def test_ray_executor_matches_sequential(tmp_path):
    import ray

    if ray.is_initialized():  # pragma: no cover - another test left Ray running
        pytest.skip("a Ray instance is already running in this process")
    digest_seq, rep_seq = _fit_and_delete(tmp_path / "seq", None)

    def diverge_nested(step: int) -> None:  # nested: cloudpickle ships it by value (the test module is not
        raise DivergenceError("loss became nan", step=step, loss=float("nan"))  # importable in Ray workers)

    ex = RayExecutor(num_cpus=2, include_dashboard=False)
    try:
        digest_ray, rep_ray = _fit_and_delete(tmp_path / "ray", ex)
        with pytest.raises(DivergenceError) as info:
            ex.map(diverge_nested, [5])
        assert info.value.step == 5
    finally:
        ex.close()
    assert not ray.is_initialized()
    assert digest_ray == digest_seq and rep_ray.shard_digests == rep_seq.shard_digests
    # its wall time: benchmarks/timing_checks.py (BENCHMARKS.md), not a test assertion


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for a non-reaping init counts as gone)."""
    from pathlib import Path

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_process_pool_workers_exit_when_their_parent_is_killed(tmp_path):
    """A SIGKILLed parent (outside the service, too) leaves no idle worker behind."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from unlearnkit.service.executors import ProcessPoolExecutor\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(max_workers=1)\n"
        "    print(pool.map(lambda _: os.getpid(), [0])[0], flush=True)\n"
        "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    worker = 0
    try:
        worker = int(proc.stdout.readline())
        assert _alive(worker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the pool's worker outlived its killed parent"
    finally:
        proc.kill()
        if worker and _alive(worker):  # leave no process behind, whatever the outcome
            os.kill(worker, signal.SIGKILL)
