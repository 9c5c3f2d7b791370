"""Multi-process data parallelism for the LLM loop: launched by ``accelerate launch`` (or ``torchrun``).

How a run uses several processes (one per GPU, or several gloo processes on a CPU)::

    accelerate launch --multi_gpu --num_processes 4 -m unlearnkit run configs/llm/tofu_tiny.yaml
    torchrun --nproc_per_node 2 -m unlearnkit run configs/llm/tofu_tiny.yaml        # CPU: gloo

The launcher sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``; :func:`dist_state`
sees them and lets accelerate's :class:`accelerate.PartialState` create the process group (NCCL on GPUs, gloo on the
CPU) and pick the rank's device. Every rank runs the same program on the same data and seeds:

- :func:`unlearnkit.llm.lm.optimize` splits each *global* window of ``batch_size × grad_accum × world_size`` examples
  across the ranks, normalises each rank's loss by the global window size, and sums the gradients over ranks
  (:meth:`DistState.sum_gradients`) before the optimizer step, so every rank takes the same step and the result
  equals a one-process run with the same effective batch up to float summation order (KNOWN_FAULTS C15);
- the runner lets rank 0 alone write (results, cache, checkpoints, reports) and broadcasts rank 0's decisions
  (which rows are done, which cached models exist) so that all ranks take the same path
  (:meth:`DistState.agree`); cached models are read by every rank, so on several machines ``cache_dir`` must be on a
  shared file system. Evaluation runs on every rank (the same numbers; rank 0 writes them); the CLI leaves the
  process group when the run is done.

Failures: an exception in one rank's part of a training step (say, out of memory on one GPU) travels with the
loss all-reduce, so every rank raises there (:meth:`DistState.sum_gradients`) and the method's row records it. A rank
that dies outright (a failed write on rank 0, a crash inside a collective) is handled by the launcher: torchrun /
accelerate stop the other ranks; without a launcher they would wait for the collective timeout (``timeout_s``, 1 h).

Why not ``torch.nn.parallel.DistributedDataParallel``: the unlearning losses run several forwards per micro-batch
(forget and retain terms, adapter-disabled reference passes, RMU's activation hooks) and leave parameters unused in
some windows; DDP's reducer needs one forward per backward (or ``find_unused_parameters``) and averages gradients
over ranks, which is the per-rank normalisation C15 warns about. One explicit sum of the window's gradients keeps the
global-batch normalisation exact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch

from unlearnkit.errors import ConfigError

T = TypeVar("T")

_BUCKET = 1 << 24  # elements per all-reduce (64 MB of float32)


def launched_world_size() -> int:
    """Processes the launcher started (``WORLD_SIZE``; 1 when the program was not launched by a launcher)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(1, int(raw))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={raw!r} in the environment is not an integer; unset it or launch with "
                          "accelerate launch / torchrun") from None


class DistState:
    """Rank, world size and device of this process, and the few collectives the runner and the loop need.

    A single-process run (``world_size == 1``) has the same interface; every collective is then the identity.

    Attributes:
        rank: global rank, 0 … world_size − 1.  world_size: processes.  local_rank: rank on this machine.
        device: this rank's device (``cuda:<local_rank>`` for NCCL runs, ``cpu`` for gloo), None = the engine's own.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 device: torch.device | None = None) -> None:
        self.rank, self.world_size, self.local_rank, self.device = rank, world_size, local_rank, device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def agree(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a picklable object): decisions all ranks must share."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """``value`` of every rank, in rank order (picklable objects)."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def sum_gradients(self, params: Sequence[torch.nn.Parameter], loss_sum: float,
                      failure: BaseException | None = None) -> float:
        """Sum the ``.grad`` of ``params`` over all ranks in place, and ``loss_sum`` with them; returns the total loss.

        A parameter without a gradient on this rank (it got no example of the window, or the term that uses it did
        not run) takes part as zeros, and ends with ``.grad = None`` again when no rank had one (as in a one-process
        run, the optimizer then skips it). Gradients go in buckets of 2²⁴ elements per all-reduce.

        ``failure``: this rank's exception while computing its part of the window (out of memory, a bad batch). The
        ranks learn of it in the same all-reduce as the loss, so every rank raises instead of one rank leaving the
        others waiting in a collective.

        Raises:
            the rank's own ``failure`` on that rank; MethodError on the other ranks, naming the failed rank(s).
        """
        if not self.distributed:
            if failure is not None:
                raise failure
            return loss_sum
        grads, had = [], []
        for p in params:
            had.append(p.grad is not None)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        dev = grads[0].device if grads else (self.device or torch.device("cpu"))
        # [loss, failed ranks (bit per rank), per parameter: ranks that had a gradient]
        head = torch.tensor([0.0 if failure is not None else loss_sum,
                             float(2 ** self.rank) if failure is not None else 0.0, *map(float, had)],
                            dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(head)
        failed = int(head[1].item())
        if failed:
            if failure is not None:
                raise failure
            from unlearnkit.errors import MethodError

            ranks = [r for r in range(self.world_size) if failed >> r & 1]
            raise MethodError(f"rank(s) {ranks} failed during this training step (see their error); every rank "
                              "stops here so none waits in a collective")
        bucket: list[torch.Tensor] = []
        size = 0
        for g in grads + [None]:  # type: ignore[list-item]
            if g is not None and (not bucket or (g.dtype == bucket[0].dtype and size + g.numel() <= _BUCKET)):
                bucket.append(g)
                size += g.numel()
                continue
            if bucket:
                flat = torch.cat([b.reshape(-1) for b in bucket])
                torch.distributed.all_reduce(flat)
                off = 0
                for b in bucket:
                    b.copy_(flat[off:off + b.numel()].view_as(b))
                    off += b.numel()
            bucket, size = ([g], g.numel()) if g is not None else ([], 0)
        for p, n in zip(params, head[2:].tolist()):
            if n == 0:
                p.grad = None
        return float(head[0].item())

    def __repr__(self) -> str:
        return f"DistState(rank={self.rank}, world_size={self.world_size}, device={self.device})"


def dist_state(device: str = "cpu", timeout_s: float = 3600.0) -> DistState:
    """The :class:`DistState` of this process: single-process unless a launcher set ``WORLD_SIZE`` > 1.

    Args:
        device: the engine's device setting; ``cpu`` → gloo on the CPU, otherwise the accelerator of this rank
            (``cuda:<local_rank>`` with NCCL).
        timeout_s: collective timeout (seconds): rank 0 evaluates and writes while the others wait.

    Raises:
        ConfigError: a multi-process launch without accelerate installed, or a fixed ``cuda:N`` device (each rank
            takes its own GPU).
    """
    world = launched_world_size()
    if world == 1:
        return DistState()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} is set but {', '.join(missing)} is not: launch with accelerate launch "
                          "or torchrun (they set all of them), or unset WORLD_SIZE for one process")
    if device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() < int(
            os.environ.get("LOCAL_WORLD_SIZE", world)):
        raise ConfigError(f"{os.environ.get('LOCAL_WORLD_SIZE', world)} processes on this machine but "
                          f"{torch.cuda.device_count()} GPU(s): launch at most one process per GPU")
    if device.startswith("cuda:"):
        raise ConfigError(f"engine.device={device!r} with {world} processes: each rank uses the GPU of its local "
                          "rank; set engine.device to 'cuda' or 'auto'")
    try:
        from accelerate import PartialState
        from accelerate.utils import InitProcessGroupKwargs
    except ImportError as err:
        raise ConfigError(f"launched with {world} processes, which needs accelerate: pip install 'unlearnkit[llm]'"
                          ) from err
    kwargs = InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s)).to_kwargs()
    state = PartialState(cpu=device == "cpu", **kwargs)
    if state.num_processes != world:
        raise ConfigError(f"WORLD_SIZE={world} but accelerate set up {state.num_processes} process(es) "
                          f"({state.distributed_type}); launch with accelerate launch or torchrun")
    return DistState(state.process_index, state.num_processes, state.local_process_index, torch.device(state.device))


__all__ = ["DistState", "dist_state", "launched_world_size"]
