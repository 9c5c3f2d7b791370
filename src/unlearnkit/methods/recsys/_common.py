"""Shared pieces of recommendation unlearners: the base class and BPR triple batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from unlearnkit.data.recsys import Interactions
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult
from unlearnkit.models.recsys import NegativeSampler, Recommender


class RecsysUnlearner(Unlearner):
    """Base of recommendation unlearners (``track = "recsys"``).

    ``unlearn(model, forget, retain, engine, context)`` takes a :class:`Recommender` (θ_o; modified in place) and
    D_f, D_r as :class:`Interactions`. Methods with a setup phase that is not part of answering the deletion request
    (RecEraser training its sharded system on D) report it in ``notes["setup_seconds"]``; it is subtracted from
    ``seconds``, which then times the deletion alone.

    Raises:
        MethodError: the model is not a :class:`Recommender`, or D_f / D_r are not interaction sets.
    """

    track: ClassVar[str] = "recsys"
    needs_labels: ClassVar[bool] = False

    def unlearn(self, model: Any, forget: Any, retain: Any, engine: Engine,
                context: UnlearnContext | None = None) -> UnlearnResult:
        if not isinstance(model, Recommender):
            raise MethodError(f"{type(self).__name__} is a recsys method: it needs a Recommender (MF-BPR, LightGCN), "
                              f"got {type(model).__name__}; use it with track: recsys")
        for name, s in (("forget", forget), ("retain", retain)):
            if not isinstance(s, Interactions):
                raise MethodError(f"{type(self).__name__}: {name} must be user–item Interactions, got "
                                  f"{type(s).__name__}")
        result = super().unlearn(model, forget, retain, engine, context)
        setup = float(result.notes.get("setup_seconds", 0.0) or 0.0)
        if setup:
            result.notes["total_seconds"] = result.seconds
            result.seconds = max(result.seconds - setup, 0.0)
        return result


class TripleStream:
    """Seeded BPR triples (u, i, j) over an interaction set: shuffled passes, negatives j ∉ I_u⁺ of ``positives``.

    Args:
        data: the interactions whose pairs (u, i) are visited (sorted by id first: order-independent).
        positives: interactions defining I_u⁺ for the negatives.
        rng: numpy generator (the stream's only randomness).
    """

    def __init__(self, data: Interactions, positives: Interactions, rng: np.random.Generator) -> None:
        o = np.argsort(data.ids, kind="stable")
        self.users, self.items, self.ids = data.users[o], data.items[o], data.ids[o]
        self.sampler = NegativeSampler(positives.users, positives.items, data.n_items)
        self.rng = rng
        self._perm = np.zeros(0, dtype=np.int64)
        self._at = 0

    def __len__(self) -> int:
        return len(self.ids)

    def next(self, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        """The next ``b`` triples (reshuffling at the end of each pass) and their interaction ids."""
        out: list[np.ndarray] = []
        need = b
        while need > 0:
            if self._at >= len(self._perm):
                self._perm = self.rng.permutation(len(self.ids))
                self._at = 0
            take = self._perm[self._at:self._at + need]
            self._at += len(take)
            need -= len(take)
            out.append(take)
        idx = np.concatenate(out)
        neg = self.sampler.sample(self.users[idx], self.rng)
        t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        return t(self.users[idx]), t(self.items[idx]), t(neg), self.ids[idx]


def all_interactions(forget: Interactions, retain: Interactions) -> Interactions:
    """D = D_f ∪ D_r (for negatives that must avoid every item a user interacted with in θ_o's data)."""
    return Interactions.concat([forget, retain], name="train")


def _lr(lr: float | None, context: UnlearnContext) -> float:
    """``lr`` or, when None, the learning rate θ_o was trained with (1e-3 if unknown)."""
    if lr is not None:
        return lr
    return float(getattr(context.train_recipe, "lr", 1e-3) or 1e-3)


def on_retain_graph(model: Recommender, retain: Interactions, engine: Engine) -> torch.device:
    """Move ``model`` to the engine's device and make its propagation graph D_r (graph models drop D_f first)."""
    engine.setup()
    model.to(engine.device)
    model.set_graph(retain.ids)
    return engine.device


def descend(model: Recommender, engine: Engine, opt: torch.optim.Optimizer, steps: int, desc: str,
            batch_loss: Callable[[], tuple[torch.Tensor, list[np.ndarray]]]) -> tuple[np.ndarray, float]:
    """``steps`` optimizer steps on ``batch_loss()`` (loss, ids it used) with a progress bar; model left in eval mode.

    Returns:
        (sorted unique int64 interaction ids that contributed a gradient, the last loss).

    Raises:
        DivergenceError: a NaN/inf loss (before the update of that step).
    """
    seen: list[np.ndarray] = []
    last = float("nan")
    model.train()
    with engine.progress(steps, desc) as advance:
        for step in range(steps):
            loss, ids = batch_loss()
            seen.extend(ids)
            last = engine.check_finite(loss, step=step, desc=desc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            advance(1)
    model.eval()
    return np.unique(np.concatenate(seen)), last
