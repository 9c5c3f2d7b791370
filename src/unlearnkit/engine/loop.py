"""The one training / evaluation loop of unlearnkit (original model, oracle, fine-tuning-based methods).

The engine owns device, seeding, determinism, threads and progress bars; methods and metrics call it and never touch
devices or environment themselves.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from unlearnkit.config.schema import EngineConfig, TrainConfig
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.engine.distributed import DistState, dist_state
from unlearnkit.engine.events import Events
from unlearnkit.errors import ConfigError, DivergenceError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(model, x, y) -> scalar loss`` (mean over the batch); x on the engine's device, y int64 (b,)."""


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model(x)`` (logits (b, C)) against labels ``y`` (b,)."""
    return nn.functional.cross_entropy(model(x), y)


@dataclass
class FitResult:
    """Outcome of :meth:`Engine.fit`.

    Attributes:
        seconds: wall-clock training time (seconds).
        steps: optimizer steps taken.
        seen_ids: sorted unique int64 sample ids that contributed a gradient (the record that proves, e.g., that the
            oracle never saw D_f).
        losses: mean loss of each epoch (floats).
        samples: number of sample-gradients computed (sample-epochs).
    """

    seconds: float
    steps: int
    seen_ids: np.ndarray
    losses: list[float] = field(default_factory=list)
    samples: int = 0


@dataclass
class Predictions:
    """Model outputs on a set: ``logits`` float32 (n, C), ``labels`` int64 (n,), ``ids`` int64 (n,), on CPU."""

    logits: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor

    @property
    def probs(self) -> torch.Tensor:
        """Softmax probabilities, float32 (n, C)."""
        return torch.softmax(self.logits.float(), dim=1)

    @property
    def correct(self) -> torch.Tensor:
        """bool (n,): argmax prediction equals the label."""
        return self.logits.argmax(dim=1) == self.labels

    def accuracy(self) -> float:
        """Accuracy in percent (0–100); NaN for an empty set."""
        n = len(self.labels)
        return 100.0 * int(self.correct.sum()) / n if n else float("nan")  # exact count, float64


def num_train_batches(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch of :meth:`Engine.batches` with shuffling (a trailing 1-sample batch is merged)."""
    k = math.ceil(n / batch_size)
    return k - 1 if k > 1 and n - (k - 1) * batch_size == 1 else k


def make_optimizer(params: Iterable[torch.nn.Parameter], recipe: TrainConfig) -> torch.optim.Optimizer:
    """SGD (+momentum, nesterov), Adam or AdamW from ``recipe`` (weight decay decoupled for AdamW only)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("no trainable parameters: every parameter has requires_grad=False")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ConfigError(f"unknown optimizer {recipe.optimizer!r}; use sgd, adam or adamw")  # pragma: no cover


def make_scheduler(opt: torch.optim.Optimizer, recipe: TrainConfig, steps_per_epoch: int):
    """Per-step scheduler: cosine annealing to 0 over all steps, or step decay every ``step_size`` epochs."""
    total = max(1, recipe.epochs * steps_per_epoch)
    if recipe.scheduler == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if recipe.scheduler == "step":
        every = recipe.step_size * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: recipe.gamma ** (s // every))
    return None



class ProgressLog:
    """Progress as plain lines on stderr for logs (see :meth:`Engine.progress`).

    ``advance(n, info)`` counts steps; a line is written when ``interval`` seconds have passed since the last one
    (the first after ``interval`` seconds of work); :meth:`finish` writes a ``done`` line when any line was written.
    ``clock`` and ``stream`` are injectable for tests (default ``time.perf_counter`` and ``sys.stderr``).
    """

    def __init__(self, total: int, desc: str, *, interval: float, epochs: int | None = None,
                 clock: Callable[[], float] = time.perf_counter, stream=None) -> None:
        self.total, self.desc, self.interval, self.epochs = int(total), desc, float(interval), epochs
        self.clock, self.stream = clock, stream
        self.done = 0
        self.lines = 0
        self.start = self.last = clock()
        self._info: Callable[[], str] | None = None

    def _write(self, text: str) -> None:
        import sys

        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def _line(self, now: float, final: bool = False) -> str:
        elapsed = now - self.start
        parts = []
        if self.epochs and self.total > 0:
            per_epoch = max(self.total // self.epochs, 1)
            parts.append(f"epoch {min(self.done // per_epoch + 1, self.epochs)}/{self.epochs}")  # the one running
        pct = f" ({100.0 * self.done / self.total:.0f} %)" if self.total > 0 else ""
        parts.append(f"step {self.done}/{self.total}{pct}")
        parts.append(f"{elapsed:.1f} s elapsed")
        if final:
            parts.append("done")
        elif 0 < self.done < self.total:
            parts.append(f"ETA {elapsed / self.done * (self.total - self.done):.0f} s")
        if self._info is not None:
            try:
                parts.append(self._info())
            except Exception:  # noqa: BLE001 — a status that cannot be formatted must not stop training
                pass
        return f"[unlearnkit] {self.desc}: " + ", ".join(parts)

    def advance(self, n: int = 1, info: Callable[[], str] | None = None) -> None:
        self.done += n
        if info is not None:
            self._info = info
        now = self.clock()
        if now - self.last >= self.interval:
            self._write(self._line(now))
            self.lines += 1
            self.last = now

    def finish(self) -> None:
        if self.lines:
            self._write(self._line(self.clock(), final=True))
            self.lines += 1


class Engine:
    """Runs training and evaluation.

    Args:
        config: :class:`EngineConfig` (device, deterministic, threads, progress, eval_batch_size).

    Example::

        engine = Engine(EngineConfig(device="cpu", progress=False))
        engine.seed_everything(0)
        result = engine.fit(model, retain, TrainConfig(epochs=5, lr=0.01), seed=0)
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._device: torch.device | None = None
        self._dist: DistState | None = None
        #: the event stream (no writers outside a run): a ``step`` event per optimizer step of :meth:`fit`
        self.events = Events()
        #: while a method unlearns, the runner may set ``(every, hook)``: ``hook(model, step)`` every ``every`` steps
        self.step_hook: tuple[int, Callable[[nn.Module, int], None]] | None = None
        #: seconds spent in step hooks (evaluations), which unlearning times leave out
        self.hook_seconds = 0.0
        #: optimizer steps since the runner last reset it (the x axis of a method's curves across several fits)
        self.global_step = 0

    def after_optimizer_step(self, model: nn.Module, **fields: Any) -> None:
        """Emit the ``step`` event of one optimizer step and run the step hook when due (custom loops call this too).

        ``fields``: the step's facts (``loss``, ``lr``, ``epoch`` …); the global step and elapsed seconds are added.
        """
        self.global_step += 1
        if self.events.active:
            self.events.emit("step", step=self.global_step, **fields)
        if self.step_hook is not None:
            every, hook = self.step_hook
            if self.global_step % every == 0:
                t0 = time.perf_counter()
                was = model.training
                try:
                    hook(model, self.global_step)
                finally:
                    model.train(was)
                    self.hook_seconds += time.perf_counter() - t0

    @property
    def dist(self) -> DistState:
        """This process's rank and world size (:mod:`unlearnkit.engine.distributed`); world size 1 unless launched by
        ``accelerate launch`` / ``torchrun``. The process group is created on first access."""
        if self._dist is None:
            self._dist = dist_state(self.config.device if self.config.device != "auto" else
                                    ("cuda" if torch.cuda.is_available() else "cpu"))
        return self._dist

    # -- environment --------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The resolved torch device ('auto' → cuda if available, else cpu)."""
        if self._device is None:
            if self.dist.distributed and self.dist.device is not None:
                self._device = self.dist.device
                return self._device
            want = self.config.device
            if want == "auto":
                want = "cuda" if torch.cuda.is_available() else "cpu"
            dev = torch.device(want)
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError(f"engine.device={self.config.device!r} but CUDA is not available; use device: cpu")
            self._device = dev
        return self._device

    def setup(self) -> None:
        """Apply threads and determinism settings (idempotent)."""
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        if self.config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def seed_everything(self, seed: int) -> None:
        """Seed python, numpy and torch (all devices) with ``seed``."""
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    # -- batching -----------------------------------------------------------------------------------------------
    def batches(
        self, data: SampleSet, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, ids)`` on the engine's device; a shuffled order comes from ``generator`` (reproducible).

        With ``shuffle`` (training), a final batch of a single sample is merged into the one before it (BatchNorm
        cannot normalise one sample); every sample is still yielded exactly once.
        """
        n = len(data)
        order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
        dev = self.device
        tensor_src = isinstance(data.source, TensorSource)
        starts = list(range(0, n, batch_size))
        if shuffle and len(starts) > 1 and n - starts[-1] == 1:
            # a trailing batch of one sample breaks BatchNorm in train mode: fold it into the previous batch, so
            # every sample still contributes exactly once per epoch
            starts.pop()
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else n
            idx = order[start:end]
            x, y, ids = data.batch(idx)
            if not tensor_src or dev.type != "cpu":
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            yield x, y, ids

    @contextmanager
    def progress(self, total: int, desc: str, *, epochs: int | None = None):
        """Progress of ``total`` steps on stderr; yields ``advance(n=1, info=None)`` (``info``: a callable giving a
        short status such as ``"loss 0.1234"``, evaluated only when shown).

        On a terminal: a rich bar, updates throttled to about 10 per second. When stderr is not a terminal (a log
        file or a pipe, where a bar would write one line per refresh, or nothing): plain lines
        ``[unlearnkit] DESC: epoch e/E, step s/S (p %), t s elapsed, ETA r s, INFO`` at most every
        ``config.progress_interval`` seconds (15 by default) and a final ``done`` line — work shorter than one
        interval prints nothing, longer work never stays silent for more than an interval. Nothing at all when
        ``config.progress`` is false or on ranks > 0 of a distributed launch.

        Args:
            total: steps expected (≥ 0).  desc: what runs (e.g. ``"original seed 0"``).
            epochs: when given, lines also show the epoch (``total`` must then be epochs × steps per epoch).
        """
        from rich.console import Console

        console = Console(stderr=True)
        rank0 = os.environ.get("RANK", "0") == "0"  # one bar per launch (ranks > 0 of torchrun / accelerate: none)
        if not self.config.progress or not rank0:
            yield lambda n=1, info=None: None
            return
        if not console.is_terminal:
            log = ProgressLog(total, desc, interval=self.config.progress_interval, epochs=epochs)
            yield log.advance
            log.finish()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
                      console=console) as prog:
            tid = prog.add_task(desc, total=total, info="")
            pending = [0, time.perf_counter()]

            def advance(n: int = 1, info: Callable[[], str] | None = None) -> None:
                # throttled to ~10 updates/s: a rich update per step costs as much as a tiny model's step
                pending[0] += n
                now = time.perf_counter()
                if now - pending[1] >= 0.1:
                    prog.update(tid, advance=pending[0], **({"info": info()} if info else {}))
                    pending[0], pending[1] = 0, now

            yield advance
            if pending[0]:
                prog.update(tid, advance=pending[0])

    _progress = progress  # former private name, kept for callers outside the engine

    # -- training -----------------------------------------------------------------------------------------------
    @staticmethod
    def check_finite(loss: torch.Tensor, *, step: int, desc: str = "train") -> float:
        """Return ``float(loss)``; raise :class:`DivergenceError` (with ``step``) if it is NaN or ±inf.

        Custom loops (alternating min/max steps, ...) call this before ``backward`` so a diverged loss never updates
        the weights.
        """
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise DivergenceError(
                f"{desc}: loss became {lv} at step {step}; lower the learning rate, enable grad_clip, "
                "or check the inputs for inf/NaN",
                step=step, loss=lv,
            )
        return lv

    def fit(
        self,
        model: nn.Module,
        data: SampleSet,
        recipe: TrainConfig,
        *,
        seed: int,
        loss_fn: LossFn = cross_entropy_loss,
        params: Iterable[torch.nn.Parameter] | None = None,
        desc: str = "train",
        after_step: Callable[[int], None] | None = None,
    ) -> FitResult:
        """Train ``model`` in place on ``data`` with ``recipe``.

        Args:
            model: the network; moved to the engine's device.
            data: training set; shuffled each epoch by a generator seeded with ``seed``.
            recipe: epochs, batch size, optimizer, scheduler, grad clipping.
            seed: seeds the data order (same seed + same data ⇒ same batches).
            loss_fn: ``loss_fn(model, x, y) -> scalar`` (mean over the batch); default cross-entropy.
            params: parameters to optimise (default: all with ``requires_grad``).
            after_step: called with the step index after each optimizer step (e.g. to re-apply a mask).

        Returns:
            :class:`FitResult` with seconds, steps, the ids seen, per-epoch mean losses.

        Raises:
            DivergenceError: a loss is NaN/inf (raised at that step, before it updates the weights).
            ConfigError: no trainable parameters.
        """
        if len(data) == 0:
            raise ConfigError(f"cannot train on the empty set '{data.name}'")
        self.setup()
        model.to(self.device).train()
        opt = make_optimizer(params if params is not None else model.parameters(), recipe)
        steps_per_epoch = num_train_batches(len(data), recipe.batch_size)
        sched = make_scheduler(opt, recipe, steps_per_epoch)
        gen = torch.Generator().manual_seed(seed)
        trainable = [p for g in opt.param_groups for p in g["params"]]
        seen: list[np.ndarray] = []
        losses: list[float] = []
        step = 0
        samples = 0
        t0 = time.perf_counter()
        with self.progress(recipe.epochs * steps_per_epoch, desc, epochs=recipe.epochs) as advance:
            for epoch in range(recipe.epochs):
                total, count = 0.0, 0
                for x, y, ids in self.batches(data, recipe.batch_size, shuffle=True, generator=gen):
                    loss = loss_fn(model, x, y)
                    lv = self.check_finite(loss, step=step, desc=f"{desc} (epoch {epoch})")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if recipe.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(trainable, recipe.grad_clip)
                    opt.step()
                    if sched is not None:
                        sched.step()
                    if after_step is not None:
                        after_step(step)
                    seen.append(ids.numpy())
                    total += lv * len(y)
                    count += len(y)
                    step += 1
                    self.after_optimizer_step(model, loss=lv, lr=float(opt.param_groups[0]["lr"]), epoch=epoch,
                                              desc=desc, seconds=time.perf_counter() - t0)
                    advance(1, info=lambda: f"loss {lv:.4f}")
                losses.append(total / max(count, 1))
                samples += count
        seconds = time.perf_counter() - t0
        seen_ids = np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)
        model.eval()
        return FitResult(seconds, step, seen_ids, losses, samples)

    # -- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, data: SampleSet) -> Predictions:
        """Logits of ``model`` on ``data`` in eval mode (training flag restored afterwards); outputs on CPU."""
        was_training = model.training
        model.to(self.device).eval()
        outs, ys, ids_ = [], [], []
        try:
            for x, y, ids in self.batches(data, self.config.eval_batch_size, shuffle=False):
                outs.append(model(x).float().cpu())
                ys.append(y.cpu())
                ids_.append(ids)
        finally:
            model.train(was_training)
        if not outs:
            return Predictions(torch.zeros(0, data.num_classes), torch.zeros(0, dtype=torch.long),
                               torch.zeros(0, dtype=torch.long))
        return Predictions(torch.cat(outs), torch.cat(ys), torch.cat(ids_))
