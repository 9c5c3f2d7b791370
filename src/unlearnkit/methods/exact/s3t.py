"""S3T: Sequence-aware Sharded Sliced Training (Chowdhury et al., ICLR 2025, arXiv:2406.16257).

Per shard, a **frozen backbone** carries L parameter-efficient layers (here LoRA slots), one per data slice. Layers are
trained sequentially, top-down (reference ``s3t_base.py`` trains the top transformer layers first): step i trains
layer i on the slices σ(0..i) of an ordering σ (cumulative, paper Fig. 2) while the backbone and layers 0..i−1 stay
frozen. Layer i therefore depends only on slices σ(0..i): deleting a sample of slice j *deactivates* (zeroes) the
layers trained on or after j's position in σ, and the layers before it remain an exact model of data that never
contained the sample. Each shard is trained over B orderings (budget B); after deletions the shard serves the ordering
that keeps the most layers, and the deactivated layers can be retrained in the background (:meth:`S3T.retrain`).

Orderings: cyclic rotations of (0, …, L−1) (the paper's "cyclic rotation" selection, reference
``sequence_selection.get_cyclic`` for B ≤ L): ordering b = (b, b+1, …, b+L−1) mod L, so every slice is first in one
ordering and last in another; with B = L any single deletion leaves some ordering with L − 1 active layers.
The bipartite-matching selection (BMS), which needs deletion priors, is not implemented.

Deviations from the reference code, and why:
  * the reference leaves the classification head trainable in every step, so the head sees every slice and
    deactivating later layers does not remove their data's influence; here the head is part of the frozen backbone
    (the top LoRA slot adapts it), which keeps the isolation that exactness needs;
  * the layers are small own LoRA slots (``ΔW = B·A·α/√r``, rsLoRA scaling as the reference's ``use_rslora=True``,
    ``α = 2r`` as its ``lora_alpha``; A kaiming-uniform, B = 0) on the backbone's ``nn.Linear`` modules, assigned
    top-down and cycling when L exceeds the number of linear layers. ``peft`` would need a separately named adapter
    per slot and per-forward activation sets on arbitrary user MLPs; the slots are the unlearning mechanism itself;
  * backbone: a given pretrained module (the paper's setting; it must not have seen deletable data), else a frozen
    *fresh initialisation* of ``model_factory`` — data-free, so exactness holds, at the price of accuracy. Training
    the backbone on the shard would make every deletion retrain it, so it is not offered. The backbone always runs in
    eval mode (BatchNorm statistics and dropout frozen), since updating its statistics would leak every slice.

Exactness: the served configuration (ordering b, k layers) equals, bit for bit, S3T trained from scratch on the same
partition without the deleted ids, read at (b, k) — the same content-addressed checkpoint.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn

from unlearnkit.config.schema import EngineConfig, Frozen, TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.checkpoint import MANIFEST, load_checkpoint, read_manifest, state_sha256
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import CheckpointError, ConfigError, DataError, MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.exact.sisa import (
    MAX_SHARDS, EnsembleModule, ShardedState, _as_id_array, _factory_from, aggregate, build_init, compact, content_key, fit_seeded, ids_sha256,
    make_partition, save_idempotent, sealed_text, write_partition, write_text_atomic,
)
from unlearnkit.persist import private_dir
from unlearnkit.registry import METHODS

STATE_FILE = "state.json"
STATE_FORMAT = "unlearnkit-s3t-state/1"


# ---------------------------------------------------------------------------------------------------------------
# LoRA slots on a frozen backbone
# ---------------------------------------------------------------------------------------------------------------
class LoRASlot(nn.Module):
    """One low-rank layer ``ΔW = B A`` (A float (r, in), B float (out, r)); B starts at 0 so ΔW starts at 0."""

    def __init__(self, in_features: int, out_features: int, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform_(a=√5), as peft/nn.Linear initialise lora_A
        self.A = nn.Parameter((torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound)
        self.B = nn.Parameter(torch.zeros(out_features, rank))


class SlottedLinear(nn.Module):
    """``base(x) + Σ_{active slots} scale · x Aᵀ Bᵀ``; ``active`` is shared with the owning :class:`S3TModel`."""

    def __init__(self, base: nn.Linear, slots: dict[int, LoRASlot], scale: float, active: list[bool]) -> None:
        super().__init__()
        self.base = base
        self.slots = nn.ModuleDict({str(i): s for i, s in slots.items()})
        self.scale = scale
        self._active = active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        for i, slot in self.slots.items():
            if self._active[int(i)]:
                y = y + self.scale * ((x @ slot.A.t()) @ slot.B.t())
        return y


class S3TModel(nn.Module):
    """A frozen backbone with ``n_slots`` LoRA slots on its linear layers, slot 0 on the top (last) one.

    Args:
        backbone: the model (logits (n, k)); modified in place (its ``nn.Linear`` modules are wrapped).
        n_slots: L. rank: LoRA rank r. alpha: LoRA α (scale α/√r). seed: seeds the slots' A matrices.

    Raises:
        ConfigError: the backbone has no ``nn.Linear`` module to adapt.
    """

    def __init__(self, backbone: nn.Module, n_slots: int, rank: int, alpha: float, seed: int) -> None:
        super().__init__()
        linears = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"S3T adapts nn.Linear layers, but {type(backbone).__name__} has none; "
                              "use a model with a linear head")
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.active: list[bool] = [False] * n_slots
        scale = alpha / math.sqrt(rank)
        per_module: dict[int, dict[int, LoRASlot]] = {}
        for i in range(n_slots):
            j = len(linears) - 1 - (i % len(linears))
            lin = linears[j][1]
            gen = torch.Generator().manual_seed(derive_seed(seed, f"slot-{i}"))
            per_module.setdefault(j, {})[i] = LoRASlot(lin.in_features, lin.out_features, rank, gen)
        for j, slots in per_module.items():
            name, lin = linears[j]
            parent_name, _, attr = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            setattr(parent, attr, SlottedLinear(lin, slots, scale, self.active))
        self.backbone = backbone
        self._slots = {i: s for slots in per_module.values() for i, s in slots.items()}

    def slot(self, i: int) -> LoRASlot:
        return self._slots[i]

    def set_active(self, k: int) -> None:
        """Activate slots 0..k−1 (the first k layers of the ordering), deactivate the rest."""
        for i in range(len(self.active)):
            self.active[i] = i < k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def train(self, mode: bool = True) -> S3TModel:
        super().train(mode)
        self.backbone.eval()  # frozen backbone: no BatchNorm statistics updates, no dropout
        return self


# ---------------------------------------------------------------------------------------------------------------
# config, job
# ---------------------------------------------------------------------------------------------------------------
class S3TLayout(Frozen):
    """The fields S3T and its runner method share: how the ensemble is cut and its LoRA layers sized."""

    shards: int = Field(1, ge=1, le=MAX_SHARDS)
    slices: int = Field(4, ge=1, le=MAX_SHARDS)
    orderings: int | None = Field(None, ge=1)
    rank: int = Field(4, ge=1)
    alpha: float | None = Field(None, gt=0)
    aggregation: Literal["vote", "softmax"] = "vote"
    partition: Literal["uniform", "class_balanced"] = "uniform"

    @model_validator(mode="after")
    def _check_orderings(self) -> S3TLayout:
        if self.orderings is not None and self.orderings > self.slices:
            raise ValueError(f"orderings (B={self.orderings}) must be ≤ slices (L={self.slices}): cyclic rotations "
                             "give L distinct orderings")
        return self


class S3TConfig(S3TLayout):
    """S3T settings (Chowdhury et al., ICLR 2025, arXiv:2406.16257; reference github.com/brcsomnath/S3T).

    Fields:
        shards: S ≥ 1.  slices: L ≥ 1 slices per shard = LoRA layers per model (reference ``num_slices``).
        orderings: B, slice orderings trained per shard (cyclic rotations), 1 ≤ B ≤ L; None = L.
        rank: LoRA rank r (reference 16; smaller suits small models).  alpha: LoRA α; None = 2r (reference).
        aggregation / partition: as SISA.  train: recipe of *each* step (``epochs`` per layer, as the reference
        trains every step for ``--epochs``).  seed / init_seed: as SISA.
    """

    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0
    init_seed: int | None = None

    @property
    def budget(self) -> int:
        return self.orderings or self.slices

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.rank


def cyclic_orderings(slices: int, budget: int) -> list[tuple[int, ...]]:
    """The first ``budget`` cyclic rotations of (0, …, L−1): ordering b = (b, b+1, …) mod L."""
    return [tuple((b + i) % slices for i in range(slices)) for b in range(budget)]


@dataclass(frozen=True)
class OrderingJob:
    """Train (or reuse) the steps of one (shard, ordering); picklable. ``slice_ids`` in slice order (not σ order)."""

    store: str
    shard: int
    ordering: int
    perm: tuple[int, ...]
    data: SampleSet
    slice_ids: tuple[np.ndarray, ...]
    recipe: TrainConfig
    slot_seed: int
    backbone_seed: int
    backbone_state: dict[str, torch.Tensor] | None
    step_seeds: tuple[int, ...]
    engine: EngineConfig
    model_factory: Callable[[int], nn.Module]
    rank: int
    alpha: float


@dataclass
class OrderingOutcome:
    shard: int
    ordering: int
    keys: list[str]
    digests: list[str]
    trained: list[int]
    sample_epochs: int
    steps: int
    seconds: float


def build_s3t_model(job: OrderingJob) -> S3TModel:
    """The untrained model of a job: backbone (given state or fresh init) + L inactive slots."""
    backbone = build_init(job.model_factory, job.backbone_seed)
    if job.backbone_state is not None:
        try:
            backbone.load_state_dict(job.backbone_state, strict=True)
        except RuntimeError as err:
            raise ConfigError(f"the S3T backbone does not fit model_factory's architecture: {err}") from err
    return S3TModel(backbone, len(job.perm), job.rank, job.alpha, job.slot_seed)


def run_ordering_job(job: OrderingJob) -> OrderingOutcome:
    """Train layer i on slices σ(0..i) for every step whose checkpoint is missing (content-addressed, idempotent).

    Raises DivergenceError (NaN/inf loss), CheckpointError (corrupt parent checkpoint).
    """
    root = Path(job.store) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    engine = Engine(job.engine.model_copy(update={"progress": False}))
    model = build_s3t_model(job)
    parent = content_key({"kind": "s3t-init", "weights": state_sha256(model)})
    in_memory, digest = parent, state_sha256(model)
    keys: list[str] = []
    digests: list[str] = []
    trained: list[int] = []
    samples = steps = 0
    t0 = time.perf_counter()
    prefix = np.zeros(0, dtype=np.int64)
    for i, (sl, seed) in enumerate(zip(job.perm, job.step_seeds)):
        prefix = np.sort(np.concatenate([prefix, job.slice_ids[sl]]))
        key = content_key({"kind": "s3t-step", "parent": parent, "slot": i, "ids": ids_sha256(prefix),
                           "n": len(prefix), "recipe": job.recipe.model_dump(mode="json"), "seed": seed})
        if (root / key / MANIFEST).is_file():
            digest = read_manifest(root / key)["meta"]["state_sha256"]
        else:
            if in_memory != parent:
                load_checkpoint(root / parent, model)
            model.set_active(i + 1)
            if len(prefix):
                slot = model.slot(i)
                for p in model.parameters():
                    p.requires_grad_(False)
                for p in slot.parameters():
                    p.requires_grad_(True)
                fit = fit_seeded(engine, model, job.data.select_ids(prefix), job.recipe, seed,
                                 params=list(slot.parameters()), desc=f"shard {job.shard} order {job.ordering} L{i}")
                samples += fit.samples
                steps += fit.steps
                trained.append(i)
            digest = state_sha256(model)
            save_idempotent(root / key, model, key, {"shard": job.shard, "ordering": job.ordering, "step": i,
                                                      "n": len(prefix), "state_sha256": digest})
            in_memory = key
        keys.append(key)
        digests.append(digest)
        parent = key
    return OrderingOutcome(job.shard, job.ordering, keys, digests, trained, samples, steps, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------------
# S3T
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class S3TReport:
    """Outcome of fit / delete / retrain.

    Attributes:
        seconds: wall-clock time (seconds).  sample_epochs: sample-gradients computed.
        served: shard → (ordering, active layers) served now.  deactivated: shard → layers deactivated in the
            served ordering by this call (delete) .  version: committed state version.
        affected: shard → slices holding deleted ids (delete only).  deletable / unknown / already_deleted: ids.
    """

    seconds: float
    sample_epochs: int
    served: dict[int, tuple[int, int]]
    version: int
    model_digest: str
    steps: int = 0
    deletable: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    already_deleted: list[int] = field(default_factory=list)
    affected: dict[int, list[int]] = field(default_factory=dict)
    trained: dict[tuple[int, int], list[int]] = field(default_factory=dict)


class S3T(ShardedState):
    """Sharded, sliced, sequence-aware PEFT ensemble with instant deletion by layer deactivation.

    Args:
        config: :class:`S3TConfig`.
        model_factory: ``f(seed) -> nn.Module`` (logits (n, k)) — the backbone architecture.
        store: folder for ``state.json``, ``states/`` and ``checkpoints/``.
        engine: trains and predicts.
        backbone: optional pretrained backbone (same architecture as ``model_factory``'s); it must not have seen
            data that may be deleted. None = a frozen fresh initialisation (data-free).

    Source: Chowdhury et al., "Towards Scalable Exact Machine Unlearning Using Parameter-Efficient Fine-Tuning",
    ICLR 2025, arXiv:2406.16257, §3 (sequential slice-wise training, deactivation, multiple sequences).
    """

    def __init__(self, config: S3TConfig, model_factory: Callable[[int], nn.Module], store: str | Path,
                 engine: Engine | None = None, backbone: nn.Module | None = None) -> None:
        self.config = config
        self.model_factory = model_factory
        self.store = Path(store)
        self.engine = engine or Engine(EngineConfig(progress=False))
        self.backbone_state = ({k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
                               if backbone is not None else None)
        self.orderings = cyclic_orderings(config.slices, config.budget)
        self.version = 0
        self.model_digest = ""
        self._ids = np.zeros(0, dtype=np.int64)
        self._shard = np.zeros(0, dtype=np.int64)
        self._slice = np.zeros(0, dtype=np.int64)
        self._deleted = np.zeros(0, dtype=np.int64)
        self._keys: dict[tuple[int, int], list[str]] = {}
        self._digests: dict[tuple[int, int], list[str]] = {}
        self._valid: dict[tuple[int, int], int] = {}
        self._models: dict[int, S3TModel] = {}
        self._data: SampleSet | None = None
        self._partition = ""

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _base_seed(self) -> int:
        return self.config.init_seed if self.config.init_seed is not None else derive_seed(self.config.seed, "init")

    def _job(self, shard: int, b: int) -> OrderingJob:
        assert self._data is not None
        keep = (self._shard == shard) & ~np.isin(self._ids, self._deleted)
        slices = tuple(np.sort(self._ids[keep & (self._slice == r)]) for r in range(self.config.slices))
        base = self._base_seed()
        return OrderingJob(
            str(self.store), shard, b, self.orderings[b], compact(self._data, self._ids[keep], f"shard{shard}"),
            slices, self.config.train, derive_seed(base, f"slots-shard-{shard}-ordering-{b}"),
            derive_seed(base, "backbone"), self.backbone_state,
            tuple(derive_seed(self.config.seed, f"s3t-shard-{shard}-ordering-{b}-step-{i}")
                  for i in range(self.config.slices)),
            self.engine.config, self.model_factory, self.config.rank, self.config.lora_alpha)

    def assignment(self) -> dict[int, tuple[int, int]]:
        """``{id: (shard, slice)}`` of the active ids."""
        keep = ~np.isin(self._ids, self._deleted)
        return {int(i): (int(s), int(r)) for i, s, r in zip(self._ids[keep], self._shard[keep], self._slice[keep])}

    def served(self) -> dict[int, tuple[int, int]]:
        """shard → (ordering, active layers): per shard the ordering keeping the most layers (ties → lowest b)."""
        out: dict[int, tuple[int, int]] = {}
        for s in sorted({s for s, _ in self._keys}):
            b = max(range(self.config.budget), key=lambda o: (self._valid[(s, o)], -o))
            out[s] = (b, self._valid[(s, b)])
        return out

    def served_ids(self) -> np.ndarray:
        """Sorted ids the served layers were trained on (their cumulative slice prefixes)."""
        parts = []
        for s, (b, k) in self.served().items():
            rows = (self._shard == s) & np.isin(self._slice, self.orderings[b][:k]) & ~np.isin(self._ids, self._deleted)
            parts.append(self._ids[rows])
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def model_at(self, shard: int, ordering: int, layers: int) -> S3TModel:
        """The checkpointed model of (shard, ordering) after ``layers`` steps (verified), in eval mode."""
        model = build_s3t_model(self._job(shard, ordering))
        if layers > 0:
            key = self._keys[(shard, ordering)][layers - 1]
            load_checkpoint(self.store / "checkpoints" / key, model)
            if state_sha256(model) != self._digests[(shard, ordering)][layers - 1]:
                raise CheckpointError(f"checkpoint {key[:12]}… does not match its committed digest")
        model.set_active(layers)
        return model.eval()

    def _refresh(self) -> None:
        self._models = {s: self.model_at(s, b, k) for s, (b, k) in self.served().items()}
        self.model_digest = content_key({"aggregation": self.config.aggregation, "served": {
            str(s): [b, k, self._digests[(s, b)][k - 1] if k else "backbone"] for s, (b, k) in self.served().items()}})

    def _partition_digest(self) -> str:
        if not self._partition:
            self._partition = write_partition(self.store, self._ids, self._shard, self._slice)
        return self._partition

    def _commit(self) -> None:
        private_dir(self.store)  # state files name the trained and deleted ids: owner only
        text = sealed_text({
            "format": STATE_FORMAT, "version": self.version, "config": self.config.model_dump(mode="json"),
            "partition": self._partition_digest(),
            "deleted": self._deleted.tolist(),
            "keys": {f"{s}/{b}": v for (s, b), v in self._keys.items()},
            "digests": {f"{s}/{b}": v for (s, b), v in self._digests.items()},
            "valid": {f"{s}/{b}": v for (s, b), v in self._valid.items()},
            "model_digest": self.model_digest,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        write_text_atomic(self.store / "states" / f"v{self.version}.json", text)
        write_text_atomic(self.store / STATE_FILE, text)

    def _train(self, pairs: Sequence[tuple[int, int]], executor: Any) -> tuple[int, int, dict]:
        jobs = [self._job(s, b) for s, b in pairs]
        outs = [run_ordering_job(j) for j in jobs] if executor is None else list(executor.map(run_ordering_job, jobs))
        samples = steps = 0
        trained = {}
        for o in outs:
            self._keys[(o.shard, o.ordering)] = o.keys
            self._digests[(o.shard, o.ordering)] = o.digests
            self._valid[(o.shard, o.ordering)] = self.config.slices
            samples += o.sample_epochs
            steps += o.steps
            trained[(o.shard, o.ordering)] = o.trained
        return samples, steps, trained

    # -- public ------------------------------------------------------------------------------------------------------
    def fit(self, data: SampleSet, executor: Any = None,
            assignment: Mapping[int, tuple[int, int]] | None = None) -> S3TReport:
        """Partition ``data`` and train every (shard, ordering); commits a new version.

        Raises ConfigError (fewer samples than shards × slices), DataError (assignment does not match the data),
        DivergenceError (training diverged; nothing committed).
        """
        cfg = self.config
        ids = np.sort(data.ids.astype(np.int64))
        if assignment is None:
            if len(ids) < cfg.shards * cfg.slices:
                raise ConfigError(f"{len(ids)} samples cannot fill {cfg.shards} shards × {cfg.slices} slices; "
                                  "use fewer shards or slices")
            labels = data.labels[np.argsort(data.ids, kind="stable")]
            shard, slc = make_partition(ids, labels, cfg.shards, cfg.slices, cfg.partition, cfg.seed)
        else:
            if set(assignment) != set(ids.tolist()):
                raise DataError("assignment must name exactly the ids of the data")
            pairs = np.asarray([assignment[i] for i in ids.tolist()], dtype=np.int64).reshape(-1, 2)
            shard, slc = pairs[:, 0].copy(), pairs[:, 1].copy()
        self._ids, self._shard, self._slice = ids, shard, slc
        self._partition = ""
        self._deleted = np.zeros(0, dtype=np.int64)
        self._data = data
        self._keys, self._digests, self._valid = {}, {}, {}
        t0 = time.perf_counter()
        pairs_ = [(s, b) for s in range(cfg.shards) if (shard == s).any() for b in range(cfg.budget)]
        samples, steps, trained = self._train(pairs_, executor)
        self._refresh()
        self.version += 1
        self._commit()
        return S3TReport(time.perf_counter() - t0, samples, self.served(), self.version, self.model_digest, steps,
                         trained=trained)

    @classmethod
    def load(cls, store: str | Path, model_factory: Callable[[int], nn.Module], data: SampleSet,
             engine: Engine | None = None, backbone: nn.Module | None = None) -> S3T:
        """Resume from the committed state of ``store`` (``state.json``), verifying its seal, the partition file and
        every served checkpoint's SHA-256 (the served model digest must equal the committed one).

        Args:
            backbone: the pretrained backbone given to the original :meth:`fit`, if any (checkpoints hold the whole
                model; the backbone is read from them except for shards served with no active layer).

        Raises:
            CheckpointError: no/corrupt/edited state, a stored config that no longer validates, or a checkpoint that
                fails its SHA-256 check.
            DataError: ``data`` lacks ids the ensemble is trained on (later deletions retrain from them).
        """
        from unlearnkit.methods.exact.sisa import read_partition, read_sealed

        state = read_sealed(Path(store) / STATE_FILE, STATE_FORMAT)
        try:
            config = S3TConfig.model_validate(state["config"])
        except ValidationError as err:
            raise CheckpointError(f"{store}/{STATE_FILE}: stored config is invalid ({err})") from err
        self = cls(config, model_factory, store, engine, backbone)
        self.version = int(state["version"])
        self._partition = state["partition"]
        self._ids, self._shard, self._slice = read_partition(self.store, self._partition)
        self._deleted = np.asarray(state["deleted"], dtype=np.int64)

        def pairs(d: Mapping[str, Any]) -> dict[tuple[int, int], Any]:
            return {(int(k.split("/")[0]), int(k.split("/")[1])): v for k, v in d.items()}

        self._keys, self._digests = pairs(state["keys"]), pairs(state["digests"])
        self._valid = {k: int(v) for k, v in pairs(state["valid"]).items()}
        missing = np.setdiff1d(self.active_ids, data.ids)
        if len(missing):
            raise DataError(f"the data lacks {len(missing)} ids the ensemble is trained on (e.g. "
                            f"{missing[:5].tolist()}); pass the original training set")
        self._data = data
        self._refresh()
        if self.model_digest != state["model_digest"]:
            raise CheckpointError(f"{store}: the served models' digest does not match the committed state")
        return self

    def delete(self, ids: Iterable[int]) -> S3TReport:
        """Deactivate, in every ordering, the layers trained on or after a deleted sample's slice; serve per shard
        the ordering that keeps the most layers. No training happens (instant); commit a new version.

        Unknown and already-deleted ids are skipped (listed in the report). Raises NotFittedError before fit,
        MethodError if every sample would be deleted.
        """
        self._require_fitted()
        t0 = time.perf_counter()
        req = _as_id_array(ids)
        known = np.isin(req, self._ids)
        gone = np.isin(req, self._deleted)
        deletable = req[known & ~gone]
        rep_kw = dict(deletable=deletable.tolist(), unknown=req[~known].tolist(),
                      already_deleted=req[known & gone].tolist())
        if len(deletable) == 0:
            return S3TReport(0.0, 0, self.served(), self.version, self.model_digest, **rep_kw)
        new_deleted = np.union1d(self._deleted, deletable)
        if len(np.setdiff1d(self._ids, new_deleted)) == 0:
            raise MethodError("this request would delete every remaining training sample")
        affected: dict[int, list[int]] = {}
        for i in deletable.tolist():
            k = np.searchsorted(self._ids, i)
            affected.setdefault(int(self._shard[k]), []).append(int(self._slice[k]))
        for s, slices in affected.items():
            for b, perm in enumerate(self.orderings):
                first = min(perm.index(r) for r in set(slices))
                self._valid[(s, b)] = min(self._valid[(s, b)], first)
        self._deleted = new_deleted
        for s in list({s for s, _ in self._keys}):
            if not ((self._shard == s) & ~np.isin(self._ids, new_deleted)).any():  # shard emptied: drop it
                for b in range(self.config.budget):
                    for d in (self._keys, self._digests, self._valid):
                        d.pop((s, b), None)
        self._refresh()
        self.version += 1
        self._commit()
        return S3TReport(time.perf_counter() - t0, 0, self.served(), self.version, self.model_digest,
                         affected={s: sorted(set(v)) for s, v in affected.items()}, **rep_kw)

    def retrain(self, executor: Any = None, shards: Iterable[int] | None = None) -> S3TReport:
        """Background retraining: retrain every deactivated layer (of ``shards``, default all) on the remaining data,
        from the last valid checkpoint of each ordering; commits a new version with full-depth orderings."""
        self._require_fitted()
        want = set(shards) if shards is not None else None
        pairs = [(s, b) for (s, b), k in sorted(self._valid.items())
                 if k < self.config.slices and (want is None or s in want)]
        t0 = time.perf_counter()
        if not pairs:
            return S3TReport(0.0, 0, self.served(), self.version, self.model_digest)
        samples, steps, trained = self._train(pairs, executor)
        self._refresh()
        self.version += 1
        self._commit()
        return S3TReport(time.perf_counter() - t0, samples, self.served(), self.version, self.model_digest, steps,
                         trained=trained)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Aggregated probabilities float32 (n, k) of the served configurations."""
        self._require_fitted()
        dev = self.engine.device
        outs = [m.to(dev).eval()(x.to(dev)).float().cpu() for _, m in sorted(self._models.items())]
        return aggregate(outs, self.config.aggregation)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted classes int64 (n,)."""
        return self.predict_proba(x).argmax(dim=1)

    def as_module(self) -> EnsembleModule:
        """A copy of the served ensemble; forward returns log-probabilities (n, k)."""
        self._require_fitted()
        return EnsembleModule([copy.deepcopy(m) for _, m in sorted(self._models.items())],
                              self.config.aggregation).eval()


# ---------------------------------------------------------------------------------------------------------------
# runner method
# ---------------------------------------------------------------------------------------------------------------
class S3TMethodConfig(S3TLayout):
    """S3T as a runner method: train on D = D_f ∪ D_r, delete D_f by deactivation, optionally retrain.

    Fields as :class:`S3TConfig` (``recipe`` None = θ_o's recipe, per step), plus ``retrain``: ``never`` (serve
    the deactivated configuration), ``empty`` (default: retrain shards whose served configuration lost every
    layer — the paper retrains when no sequence is left), ``always`` (retrain every deactivated layer).
    """

    recipe: TrainConfig | None = None
    retrain: Literal["never", "empty", "always"] = "empty"


@METHODS.register("s3t", config=S3TMethodConfig)
class S3TMethod(Unlearner):
    """S3T exact unlearning (Chowdhury et al., ICLR 2025, arXiv:2406.16257).

    Per shard, LoRA layers on a frozen backbone (a fresh, data-free initialisation of the model architecture; θ_o is
    not used since it saw D_f) are trained sequentially, layer i on slices σ(0..i), over B cyclic slice orderings.
    Deleting D_f deactivates, per ordering, the layers trained on or after the first slice holding a forget sample;
    each shard serves its ordering with the most layers left. With ``retrain="empty"`` shards left with no layer
    are retrained on D_r. The returned model is the served ensemble (log-probabilities); its weights equal a
    from-scratch S3T training on D_r with the same partition read at the served (ordering, depth).
    Checkpoints live in a temporary folder removed after the run. Notes record train/delete/retrain seconds,
    sample-epochs, the served (ordering, layers) per shard and the layers deactivated.
    """

    kind = "exact"
    needs_retain = True
    needs_full_train = True
    returns_ensemble = True
    source = "Chowdhury et al., Towards Scalable Exact Machine Unlearning Using PEFT, ICLR 2025, arXiv:2406.16257"
    #: unlearnkit tune: exact: nothing to tune
    search_space = {}
    smoke_params = {"shards": 1, "slices": 2, "orderings": 2}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        recipe = c.recipe or context.train_recipe or TrainConfig()
        full = retain.concat(forget, name="train")
        cfg = S3TConfig(shards=c.shards, slices=c.slices, orderings=c.orderings, rank=c.rank, alpha=c.alpha,
                        aggregation=c.aggregation, partition=c.partition, train=recipe, seed=context.seed,
                        init_seed=context.init_seed)
        with tempfile.TemporaryDirectory(prefix="unlearnkit-s3t-") as tmp:
            s3t = S3T(cfg, _factory_from(model, context), tmp, engine)
            fit = s3t.fit(full)
            before = {s: k for s, (_, k) in s3t.served().items()}
            rep = s3t.delete(forget.ids)
            after = dict(rep.served)
            retrain_seconds, retrain_samples, steps = 0.0, 0, 0
            todo = ([] if c.retrain == "never" else
                    [s for s, (_, k) in after.items() if k == 0] if c.retrain == "empty" else list(after))
            if todo:
                rr = s3t.retrain(shards=todo)
                retrain_seconds, retrain_samples, steps = rr.seconds, rr.sample_epochs, rr.steps
            ensemble = s3t.as_module()
            seen = s3t.served_ids()
            served = s3t.served()
        return UnlearnResult(ensemble, steps=steps, seen_ids=seen, notes={
            "train_seconds": fit.seconds, "train_sample_epochs": fit.sample_epochs,
            "delete_seconds": rep.seconds, "retrain_seconds": retrain_seconds,
            "retrain_sample_epochs": retrain_samples, "retrained_shards": todo,
            "served_after_delete": {str(s): list(v) for s, v in after.items()},
            "served": {str(s): list(v) for s, v in served.items()},
            "layers_deactivated": {str(s): before[s] - after.get(s, (0, 0))[1] for s in before},
            "store": "temporary folder (removed after the run)",
        })
