"""Several processes and mixed precision for the LLM loop, on Hugging Face accelerate.

How a run uses several processes (one per GPU, or several gloo processes on a CPU)::

    accelerate launch --multi_gpu --num_processes 4 -m unlearnkit run configs/llm/tofu_tiny.yaml
    accelerate launch --multi_gpu --num_processes 2 -m unlearnkit run cfg.yaml   # a CPU-only machine: gloo
    torchrun --nproc_per_node 2 -m unlearnkit run configs/llm/tofu_tiny.yaml     # the same, without accelerate's CLI

(``accelerate launch --cpu --num_processes N`` starts N processes only through ``mpirun``; without MPI use
``--multi_gpu``, which starts torchrun's launcher: with ``engine.device: cpu`` the processes run on the CPU with gloo.)

The launcher sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``; :func:`dist_state`
sees them and lets accelerate's :class:`accelerate.PartialState` create the process group (NCCL on GPUs, gloo on the
CPU) and pick the rank's device. Every rank runs the same program on the same data and seeds.

What accelerate does here:
- the process group, ranks and devices (:class:`~accelerate.PartialState`);
- the runner's collectives: :meth:`DistState.agree` is ``accelerate.utils.broadcast_object_list``,
  :meth:`DistState.gather` is ``accelerate.utils.gather_object``;
- the gradient sum of data-parallel training: ``accelerate.utils.reduce(grad, "sum")`` per tensor
  (:meth:`DistState.sum_gradients`);
- mixed precision (``bf16`` / ``fp16`` autocast, fp16 loss scaling, unscale before clipping, skipped fp16 steps),
  FSDP2 and DeepSpeed ZeRO (model and optimizer ``prepare``): :func:`make_accelerator` builds one
  :class:`accelerate.Accelerator` per training run from the recipe.

What is still written here, because accelerate does not provide it:
- failure propagation: a rank's exception in its part of a training step (out of memory on one GPU, a bad batch)
  travels in the same all-reduce as the window's loss, so every rank raises there instead of one rank leaving the
  others waiting in a collective (:meth:`DistState.sum_gradients`);
- the record of which parameters got a gradient on any rank (a parameter no rank touched keeps ``grad = None``, so
  the optimizer skips it exactly as in one process);
- the validation of precision / sharding against the device (accelerate silently ignores fp16 on a CPU and an FSDP
  plugin in a one-process or CPU run).

Why gradients are summed, not averaged by ``DistributedDataParallel`` (what ``accelerator.prepare(model)`` would do
for plain data parallelism): the loss of an optimizer step is normalised over the GLOBAL window of ``batch_size ×
grad_accum × world_size`` examples — and over its own count for a trailing partial window (KNOWN_FAULTS C17) —
while DDP averages per-rank means, the per-rank normalisation C15 warns about whenever ranks hold unequal numbers of
examples (the last window of an epoch, a window with fewer examples than ranks). DDP also needs one forward per
backward through the wrapper, while the unlearning losses run several forwards per micro-batch on the bare module
(forget and retain terms, adapter-disabled reference passes, RMU's early-stopping activation hooks), and a rank
without an example in a window would leave DDP's reducer waiting. Each rank therefore divides its loss by the global
count, and the window's gradients are summed with ``accelerate.utils.reduce(..., "sum")`` before the step. Sharded
training (FSDP2, DeepSpeed ZeRO) averages inside the engine: there the loss is multiplied by ``world / count`` so the
average is again the global-window mean, and ranks without an example run a zero-weighted micro-batch
(:mod:`unlearnkit.llm.lm`).

Writes: the runner lets rank 0 alone write (results, cache, checkpoints, reports) and broadcasts rank 0's decisions
(:meth:`DistState.agree`); cached models are read by every rank, so on several machines ``cache_dir`` must be on a
shared file system. A rank that dies outright is handled by the launcher (torchrun / accelerate stop the other
ranks); without a launcher they would wait for the collective timeout (``timeout_s``, 1 h).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from unlearnkit.errors import ConfigError

T = TypeVar("T")

MixedPrecision = Literal["no", "bf16", "fp16"]
"""Autocast precision of training forwards (``no`` = the model's own dtype)."""


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
    Collectives go through accelerate's utilities and need the :class:`accelerate.PartialState` that
    :func:`dist_state` creates.

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
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def gather(self, value: T) -> list[T]:
        """``value`` of every rank, in rank order (picklable objects)."""
        if not self.distributed:
            return [value]
        from accelerate.utils import gather_object

        return list(gather_object([value]))  # accelerate flattens one level: one list entry per rank

    def sum_gradients(self, params: Sequence[torch.nn.Parameter], loss_sum: float,
                      failure: BaseException | None = None) -> float:
        """Sum the ``.grad`` of ``params`` over all ranks in place, and ``loss_sum`` with them; returns the total loss.

        The sums are ``accelerate.utils.reduce(..., "sum")``, one tensor at a time (so at most one gradient's worth
        of extra memory). A parameter without a gradient on this rank (it got no example of the window, or the term
        that uses it did not run) takes part as zeros, and ends with ``.grad = None`` again when no rank had one (as
        in a one-process run, the optimizer then skips it).

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
        from accelerate.utils import reduce

        had = [p.grad is not None for p in params]
        dev = next((p.grad.device for p in params if p.grad is not None),
                   params[0].device if params else (self.device or torch.device("cpu")))
        # [loss, failed ranks (bit per rank), per parameter: ranks that had a gradient]
        head = torch.tensor([0.0 if failure is not None else loss_sum,
                             float(2 ** self.rank) if failure is not None else 0.0, *map(float, had)],
                            dtype=torch.float64, device=dev)
        head = reduce(head, "sum")
        raise_if_failed(int(head[1].item()), self.world_size, failure)
        for p, n in zip(params, head[2:].tolist()):
            if n == 0:
                p.grad = None
                continue
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            p.grad = reduce(g, "sum")
        return float(head[0].item())

    def __repr__(self) -> str:
        return f"DistState(rank={self.rank}, world_size={self.world_size}, device={self.device})"


def raise_if_failed(failed_bits: int, world_size: int, failure: BaseException | None) -> None:
    """After an all-reduce of per-rank failure bits (bit r set = rank r failed): re-raise this rank's own
    ``failure``, or a MethodError naming the failed ranks; nothing when no rank failed."""
    if not failed_bits:
        return
    if failure is not None:
        raise failure
    from unlearnkit.errors import MethodError

    ranks = [r for r in range(world_size) if failed_bits >> r & 1]
    raise MethodError(f"rank(s) {ranks} failed during this training step (see their error); every rank stops here "
                      "so none waits in a collective")


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


# ---------------------------------------------------------------------------------------------------------------------
# the Accelerator of one training run: precision and sharding from the recipe

_FSDP_RENAMES = {"transformer_layer_cls_to_wrap": "transformer_cls_names_to_wrap", "offload_params": "cpu_offload"}
_DS_RENAMES = {"deepspeed_config_file": "hf_ds_config", "config_file": "hf_ds_config"}


def _fsdp_plugin_cls() -> Any:
    try:
        from accelerate.utils import FullyShardedDataParallelPlugin
    except ImportError as err:
        raise ConfigError("sharding needs accelerate: pip install 'unlearnkit[llm]'") from err
    return FullyShardedDataParallelPlugin


def _plugin_fields(cls: Any) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cls)}


def load_sharding(spec: dict[str, Any] | str | None) -> tuple[str, dict[str, Any], str | None] | None:
    """Read a sharding setting into ``(kind, plugin keyword arguments, mixed precision it names)``.

    Accepted forms:
        - ``{"fsdp": {...}}``: fields of :class:`accelerate.utils.FullyShardedDataParallelPlugin`
          (``fsdp_version`` must be 2, e.g. ``{"fsdp": {"fsdp_version": 2, "reshard_after_forward": true}}``);
        - ``{"deepspeed": {...}}``: fields of :class:`accelerate.utils.DeepSpeedPlugin` (``zero_stage``,
          ``offload_optimizer_device``, ``hf_ds_config`` = a DeepSpeed JSON file or dict, ...);
        - a path to an accelerate config YAML as written by ``accelerate config`` (``distributed_type: FSDP`` with
          ``fsdp_config: {fsdp_version: 2, ...}``, or ``distributed_type: DEEPSPEED`` with ``deepspeed_config:
          {zero_stage: 2, ...}``); the ``fsdp_`` prefix of its keys is dropped;
        - ``None``: no sharding (``None`` is returned).

    Only the plugin part is read: launch settings in a config file (processes, machines, ports) belong to
    ``accelerate launch --config_file``.

    Raises:
        ConfigError: an unreadable file, another ``distributed_type``, unknown plugin fields (the message lists the
            valid ones), both or neither of fsdp / deepspeed, FSDP version 1.
    """
    if spec is None:
        return None
    file_mp: str | None = None
    where = "sharding"
    if isinstance(spec, (str, Path)):
        path = Path(os.path.expanduser(str(spec)))
        where = f"sharding file {path}"
        if not path.is_file():
            raise ConfigError(f"sharding: accelerate config file {path} does not exist; give a YAML written by "
                              "`accelerate config`, or a dict {fsdp: {...}} / {deepspeed: {...}}")
        import yaml

        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: not valid YAML ({err})") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
        dt = str(raw.get("distributed_type", "")).upper()
        mp = raw.get("mixed_precision")
        file_mp = None if mp in (None, "no") else str(mp)
        if dt == "FSDP":  # `accelerate config` writes fsdp_<field> (fsdp_version is itself a field)
            known = _plugin_fields(_fsdp_plugin_cls()) | set(_FSDP_RENAMES)
            spec = {"fsdp": {(k[5:] if k.startswith("fsdp_") and k not in known and k[5:] in known else k): v
                             for k, v in (raw.get("fsdp_config") or {}).items()}}
        elif dt == "DEEPSPEED":
            spec = {"deepspeed": {k: v for k, v in (raw.get("deepspeed_config") or {}).items()
                                  if k != "deepspeed_multinode_launcher"}}
        else:
            raise ConfigError(f"{where}: distributed_type is {raw.get('distributed_type')!r}; sharding needs FSDP or "
                              "DEEPSPEED (plain data parallelism needs no setting: launch several processes)")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("fsdp", "deepspeed"):
        raise ConfigError(f"{where}: expected exactly one of {{fsdp: {{...}}}} or {{deepspeed: {{...}}}}, got "
                          f"{spec!r}")
    kind, kw = next(iter(spec.items()))
    kw = dict(kw or {})
    try:
        from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    except ImportError as err:
        raise ConfigError("sharding needs accelerate: pip install 'unlearnkit[llm]'") from err
    renames, cls = (_FSDP_RENAMES, FullyShardedDataParallelPlugin) if kind == "fsdp" else (_DS_RENAMES,
                                                                                            DeepSpeedPlugin)
    kw = {renames.get(k, k): v for k, v in kw.items()}
    unknown = sorted(set(kw) - _plugin_fields(cls))
    if unknown:
        raise ConfigError(f"{where}: unknown {kind} field(s) {unknown}; {cls.__name__} takes "
                          f"{sorted(_plugin_fields(cls))}")
    if kind == "fsdp" and int(kw.get("fsdp_version", 1)) != 2:
        raise ConfigError(f"{where}: set fsdp_version: 2. FSDP version 1 wraps the model in a new module that the "
                          "unlearning losses (which call the model itself, with hooks and adapter switches) would "
                          "bypass; FSDP2 shards the module in place")
    return kind, kw, file_mp


def check_accelerate(mixed_precision: MixedPrecision = "no", sharding: dict[str, Any] | str | None = None, *,
                     device: torch.device | str, world_size: int = 1) -> tuple[str, dict[str, Any], str | None] | None:
    """Refuse a precision / sharding setting that cannot run on ``device`` with ``world_size`` processes, before any
    training (the runner's up-front checks and :func:`make_accelerator` call it). Returns :func:`load_sharding`'s
    result.

    Raises:
        ConfigError: ``fp16`` on a CPU (accelerate would silently train in fp32); ``bf16`` on a GPU without bf16;
            sharding on a CPU, in one process, or DeepSpeed without the deepspeed package; ``accelerate launch``
            settings (``--mixed_precision``, ``--use_fsdp``, ``--use_deepspeed``) that differ from the recipe.
    """
    device = torch.device(device)
    shard = load_sharding(sharding)
    kind = shard[0] if shard else None
    if shard and shard[2] is not None and shard[2] != mixed_precision:
        raise ConfigError(f"the sharding file sets mixed_precision {shard[2]!r} but the recipe's mixed_precision is "
                          f"{mixed_precision!r}; set mixed_precision in the recipe (results and cache keys follow it)")
    env_mp = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if env_mp not in (None, "", "no") and env_mp != mixed_precision:
        raise ConfigError(f"launched with accelerate launch --mixed_precision {env_mp} but the recipe's "
                          f"mixed_precision is {mixed_precision!r}; set mixed_precision: {env_mp} in the config (or "
                          "launch with --mixed_precision no): the config decides, so results and cache keys match it")
    for var, name in (("ACCELERATE_USE_FSDP", "fsdp"), ("ACCELERATE_USE_DEEPSPEED", "deepspeed")):
        if os.environ.get(var, "false").lower() == "true" and kind != name:
            raise ConfigError(f"launched with accelerate launch --use_{name} but the recipe has no {name} sharding; "
                              f"put it in the recipe's `sharding` ({{{name}: {{...}}}} or the accelerate config file)")
    if mixed_precision == "fp16" and device.type == "cpu":
        raise ConfigError("mixed_precision fp16 cannot run on a CPU (no fp16 autocast or loss scaling there; "
                          "accelerate would silently train in fp32): use bf16 or no on a CPU, fp16 on a GPU")
    if mixed_precision == "bf16" and device.type == "cuda" and torch.cuda.is_available() and \
            not torch.cuda.is_bf16_supported():
        raise ConfigError("mixed_precision bf16 needs a GPU with bfloat16 support (Ampere or newer); use fp16")
    if kind is not None:
        if device.type != "cuda":
            raise ConfigError(f"{kind} sharding needs CUDA GPUs (one process per GPU); this run's device is "
                              f"{device.type}. Remove `sharding` for a CPU run (plain data parallelism over gloo "
                              "processes needs no setting)")
        if world_size < 2:
            raise ConfigError(f"{kind} sharding splits the model over processes but this run has one; launch with "
                              "accelerate launch --multi_gpu --num_processes N (N ≥ 2), or remove `sharding`")
        if kind == "deepspeed":
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                raise ConfigError("deepspeed sharding needs the deepspeed package: pip install deepspeed")
    return shard


def make_accelerator(mixed_precision: MixedPrecision = "no", sharding: dict[str, Any] | str | None = None, *,
                     device: torch.device, world_size: int = 1, batch_size: int = 1,
                     grad_clip: float | None = None) -> Any:
    """One :class:`accelerate.Accelerator` for one training run (θ_o, θ_r, or an unlearning run).

    accelerate keeps its precision in a process-wide state that refuses a second, different setting; each training
    run may have its own (θ_o in fp32, a method in bf16), so the state is reset first (the process group is kept).
    Gradient accumulation is left to the caller (``gradient_accumulation_steps=1``; see the module docstring).

    Args:
        mixed_precision: ``no`` | ``bf16`` | ``fp16`` (autocast of the forwards; fp16 adds loss scaling).
        sharding: see :func:`load_sharding`.
        device: the engine's device (its type decides what can run).
        world_size: processes of the launch.  batch_size: micro-batch per process (DeepSpeed's config needs it).
        grad_clip: max gradient norm (DeepSpeed clips inside its step, so it goes into its config).

    Raises:
        ConfigError: see :func:`check_accelerate`; accelerate itself refusing the combination.
    """
    try:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    except ImportError as err:
        raise ConfigError("LLM training needs accelerate: pip install 'unlearnkit[llm]'") from err
    shard = check_accelerate(mixed_precision, sharding, device=device, world_size=world_size)
    kind = shard[0] if shard else None
    AcceleratorState._reset_state(reset_partial_state=world_size == 1)
    GradientState._reset_state()
    plugins: dict[str, Any] = {}
    if kind == "fsdp":
        plugins["fsdp_plugin"] = FullyShardedDataParallelPlugin(**shard[1])  # type: ignore[index]
    elif kind == "deepspeed":
        kw = {"gradient_accumulation_steps": 1, "gradient_clipping": grad_clip or 0.0,
              **shard[1]}  # type: ignore[index]
        if kw["gradient_accumulation_steps"] != 1:
            raise ConfigError("sharding.deepspeed.gradient_accumulation_steps: leave it out; accumulation is the "
                              "recipe's grad_accum (windows normalised over the global batch)")
        plugin = DeepSpeedPlugin(**kw)
        cfg = plugin.deepspeed_config
        cfg["train_micro_batch_size_per_gpu"] = batch_size
        cfg["train_batch_size"] = batch_size * world_size
        cfg["gradient_accumulation_steps"] = 1
        cfg["gradient_clipping"] = grad_clip or 0.0
        if "optimizer" in cfg or "scheduler" in cfg:
            raise ConfigError("sharding.deepspeed: the DeepSpeed config must not define an optimizer or scheduler; "
                              "they come from the recipe (optimizer, lr, scheduler)")
        plugins["deepspeed_plugin"] = plugin
    try:
        return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision, device_placement=False,
                           gradient_accumulation_steps=1, step_scheduler_with_optimizer=False, **plugins)
    except (ValueError, ImportError) as err:
        raise ConfigError(f"accelerate refused mixed_precision={mixed_precision!r}"
                          f"{f' with {kind} sharding' if kind else ''} on {device}: {err}") from err


__all__ = ["DistState", "MixedPrecision", "check_accelerate", "dist_state", "launched_world_size", "load_sharding",
           "make_accelerator", "raise_if_failed"]
