"""Executors: run independent, pure, idempotent jobs (shard retraining) sequentially, in local processes, or on Ray.

Exact unlearning (SISA, S3T) retrains shards independently, so a deletion's jobs can run in parallel. A job is a
picklable spec handed to a module-level function; the function writes content-addressed checkpoints and returns a
small result, so running a job twice (a retry after a crash, a duplicate Ray task) is safe.

    with build_executor("process", max_workers=2) as ex:
        results = ex.map(run_shard_job, jobs)        # results in submission order

Registered in ``EXECUTORS``: ``sequential``, ``process`` (``concurrent.futures`` with the *spawn* start method, so
workers never inherit a forked torch/OpenMP state) and ``ray`` (extra ``[ray]``; ``ray.init()`` starts a local
instance unless an ``address`` of a running cluster is given). On a cluster the job's store folder must be on
storage that every node can read and write.

Errors raised inside a job are re-raised in the caller with their type (typed unlearnkit errors keep their type and
message; an exception that cannot be pickled becomes a :class:`MethodError` naming the original type).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, DivergenceError, MethodError
from unlearnkit.registry import Registry

J = TypeVar("J")
R = TypeVar("R")

EXECUTORS: Registry[Any] = Registry("executor")


# -- error transport ------------------------------------------------------------------------------------------------
def _run_captured(fn: Callable[[Any], Any], job: Any) -> tuple[str, Any]:
    """Run ``fn(job)`` in a worker; return ``("ok", result)`` or a picklable description of the error.

    Needed because some exceptions do not survive pickling (``DivergenceError`` has keyword-only fields), and a
    failed unpickle in the parent would surface as an unrelated ``TypeError`` or a broken pool.
    """
    try:
        return "ok", fn(job)
    except DivergenceError as err:
        return "divergence", (str(err), err.step, err.loss)
    except BaseException as err:  # noqa: BLE001 - transported to the caller and re-raised there
        try:
            # a round trip of an exception this process just raised (never data from outside): can the worker
            # send it back to the caller intact, or must it be reduced to its type name and message?
            pickle.loads(pickle.dumps(err))
            return "error", err
        except Exception:  # noqa: BLE001
            return "unpicklable", (type(err).__name__, str(err))


def _unwrap(outcome: tuple[str, Any]) -> Any:
    kind, value = outcome
    if kind == "ok":
        return value
    if kind == "divergence":
        message, step, loss = value
        raise DivergenceError(message, step=step, loss=loss)
    if kind == "error":
        raise value
    name, message = value
    raise MethodError(f"a job failed with {name}: {message}")


def _cloud_call(payload: bytes) -> tuple[str, Any]:
    """Worker side of :class:`ProcessPoolExecutor`: unpickle ``(fn, job)`` (cloudpickle) and run it captured."""
    import cloudpickle

    fn, job = cloudpickle.loads(payload)
    return _run_captured(fn, job)


class Executor(ABC, Generic[J, R]):
    """Runs independent, pure, idempotent jobs; results come back in submission order.

    Use as a context manager (``with build_executor(...) as ex``) or call :meth:`close`.
    """

    name: str = "executor"

    @abstractmethod
    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        """``[fn(job) for job in jobs]``, possibly in parallel; an error in any job is re-raised here."""

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> Executor[J, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SequentialExecutor(Executor[J, R]):
    """Runs jobs one after another in this process (the default; reference results for the parallel executors)."""

    name = "sequential"

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        return [fn(job) for job in jobs]


class ProcessPoolExecutor(Executor[J, R]):
    """Local worker processes (``concurrent.futures``, *spawn* start method).

    Jobs and ``fn`` are serialised with cloudpickle, so closures and lambdas work as model factories. Each worker
    imports torch afresh (a few seconds), so the pool pays off for jobs that train for longer than that. Workers exit
    by themselves within 0.5 s when the process that created the pool dies (even by SIGKILL).

    Args:
        max_workers: worker processes; None = ``os.cpu_count()``. The pool starts on the first :meth:`map`.
        threads_per_worker: torch/OpenMP threads in each worker (default 1, so workers do not oversubscribe cores).

    Raises:
        ConfigError: ``max_workers`` < 1.
    """

    name = "process"

    def __init__(self, max_workers: int | None = None, threads_per_worker: int = 1) -> None:
        if max_workers is not None and max_workers < 1:
            raise ConfigError(f"max_workers must be ≥ 1 (or None for the CPU count), got {max_workers}")
        self.max_workers = max_workers
        self.threads_per_worker = threads_per_worker
        self._pool: Any = None

    def _ensure(self) -> Any:
        if self._pool is None:
            import concurrent.futures
            import multiprocessing

            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.max_workers or os.cpu_count() or 1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads_per_worker, os.getpid()),
            )
        return self._pool

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        try:
            import cloudpickle
        except ImportError as err:
            raise ConfigError("the process-pool executor ships model factories to its workers with cloudpickle, "
                              "which is not installed: pip install 'unlearnkit[service]'") from err

        if not jobs:
            return []
        pool = self._ensure()
        futures = [pool.submit(_cloud_call, cloudpickle.dumps((fn, job))) for job in jobs]
        return [_unwrap(f.result()) for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __repr__(self) -> str:
        return f"ProcessPoolExecutor(max_workers={self.max_workers})"


def _exit_with_parent(parent: int, every_s: float) -> None:
    """Watchdog of a worker process: exit at once when the process that started the pool is gone (a SIGKILLed
    parent re-parents its ``concurrent.futures`` workers, which would otherwise wait for work forever)."""
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker(threads: int, parent: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    threading.Thread(target=_exit_with_parent, args=(parent, 0.5), daemon=True,
                     name="unlearnkit-parent-watchdog").start()
    import torch

    torch.set_num_threads(threads)


class RayExecutor(Executor[J, R]):
    """Ray tasks (extra ``[ray]``): one task per job, results gathered in submission order.

    ``ray.init`` is called on the first :meth:`map` if Ray is not initialised yet: a local instance by default, or
    the cluster at ``address`` (``"auto"``, ``"ray://host:10001"``). :meth:`close` shuts Ray down only if this
    executor started it.

    Args:
        address: cluster address; None = start a local instance.
        num_cpus: CPUs of a local instance (None = all); ignored when connecting to a cluster.
        num_cpus_per_task: CPUs Ray reserves per job.
        include_dashboard: start Ray's dashboard (off by default: fewer processes, no open port).

    Raises:
        ConfigError: Ray is not installed (``pip install 'unlearnkit[ray]'``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_cpus_per_task: float = 1.0,
                 include_dashboard: bool = False) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_cpus_per_task = num_cpus_per_task
        self.include_dashboard = include_dashboard
        self._started = False
        self._remote: Any = None

    @staticmethod
    def _ray() -> Any:
        try:
            import ray
        except ImportError as err:
            raise ConfigError("the ray executor needs Ray: pip install 'unlearnkit[ray]'") from err
        return ray

    def _ensure(self) -> Any:
        ray = self._ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": self.include_dashboard, "log_to_driver": False}
            if self.address is None:
                if self.num_cpus is not None:
                    kwargs["num_cpus"] = self.num_cpus
                # workers inherit one thread each, like the process pool
                kwargs["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
            else:
                kwargs["address"] = self.address
            ray.init(**kwargs)
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=2)(_run_captured)
        return ray

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        if not jobs:
            return []
        ray = self._ensure()
        fn_ref = ray.put(fn)
        refs = [self._remote.remote(fn_ref, job) for job in jobs]
        return [_unwrap(o) for o in ray.get(refs)]

    def close(self) -> None:
        if self._started:
            self._ray().shutdown()
            self._started = False
        self._remote = None

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus})"


# -- registry -------------------------------------------------------------------------------------------------------
class SequentialExecutorConfig(Frozen):
    """The sequential executor has no settings."""


class ProcessExecutorConfig(Frozen):
    """Local process pool settings."""

    max_workers: int | None = Field(None, ge=1, description="worker processes; None = CPU count")
    threads_per_worker: int = Field(1, ge=1, description="torch threads per worker")


class RayExecutorConfig(Frozen):
    """Ray settings: a local instance by default, or a running cluster's ``address``."""

    address: str | None = Field(None, description="None = local ray.init(); 'auto' or 'ray://host:port' = cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local instance (None = all)")
    num_cpus_per_task: float = Field(1.0, gt=0, description="CPUs reserved per job")
    include_dashboard: bool = False


EXECUTORS.register("sequential", config=SequentialExecutorConfig)(lambda cfg: SequentialExecutor())
EXECUTORS.register("process", config=ProcessExecutorConfig)(lambda cfg: ProcessPoolExecutor(**cfg.model_dump()))
EXECUTORS.register("ray", config=RayExecutorConfig)(lambda cfg: RayExecutor(**cfg.model_dump()))


def build_executor(name: str = "sequential", **kwargs: Any) -> Executor[Any, Any]:
    """Build a registered executor by name with validated settings.

    Raises:
        ConfigError: unknown name (lists the valid ones) or an unknown / out-of-range setting.
    """
    return EXECUTORS.build(name, kwargs)


__all__ = ["EXECUTORS", "Executor", "SequentialExecutor", "ProcessPoolExecutor", "RayExecutor", "build_executor"]
