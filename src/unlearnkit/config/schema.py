"""Pydantic v2 schemas of an unlearnkit experiment.

Every model is ``extra="forbid"`` (a typo is an error naming the key and the allowed keys) and ``frozen``
(configs are values: hashed into cache keys, never mutated).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from unlearnkit.config.limits import MAX_SEEDS, Index, Name, PathText, Seed, Threads, guard_field_value


#: result-row label of the retrained oracle θ_r (reserved: no other method may use it)
ORACLE_LABEL = "retrain"
#: result-row label of the original model θ_o (reserved: no other method may use it)
ORIGINAL_LABEL = "original"


class FieldValueError(ValueError):
    """A bad value of one field found by :class:`Frozen`'s model-level guard; ``field`` completes the error's location
    (pydantic locates a model-level error at the model)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Frozen(BaseModel):
    """Base of all unlearnkit configs: unknown keys are errors, instances are immutable, numbers are finite and in
    range, a boolean is no number, strings hold no NUL or lone surrogate (config/limits.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _guard(cls, data: Any) -> Any:
        # a model-level check (not a field validator on "*"): pydantic allows no "before" field validator on the
        # field a discriminated union dispatches on (an experiment's ``track``)
        if isinstance(data, dict):
            for name, v in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is not None:
                    try:
                        guard_field_value(v, field.annotation, name)
                    except ValueError as err:
                        raise FieldValueError(name, str(err)) from None
        return data


class TrainConfig(Frozen):
    """A training recipe: used for the original model, the oracle, and fine-tuning-based methods.

    Units: ``lr`` per step, ``weight_decay`` is the L2 coefficient (decoupled for AdamW), ``epochs`` are full passes.
    """

    epochs: int = Field(20, ge=1, description="passes over the training data")
    batch_size: int = Field(64, ge=1, description="samples per optimizer step")
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, description="initial learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by Adam/AdamW)")
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    scheduler: Literal["none", "cosine", "step"] = "cosine"
    step_size: int = Field(10, ge=1, description="epochs between decays for scheduler=step")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor for scheduler=step")
    grad_clip: float | None = Field(None, gt=0, description="max global L2 norm of gradients; None = no clipping")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov=true needs optimizer=sgd with momentum > 0")
        return self


class EngineConfig(Frozen):
    """Where and how computation runs. The engine is the only component that touches devices and threads."""

    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:1', 'mps' or 'auto' (cuda if available)")
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms + fixed seeds")
    threads: Threads | None = Field(None, description="CPU threads for torch (≤ 1024); None = torch's default")
    progress: bool = Field(True, description="show rich progress bars (on a terminal) or progress lines (in a log)")
    progress_interval: float = Field(15.0, ge=0, description="seconds between progress lines when stderr is not a "
                                                             "terminal (a log file or pipe)")
    eval_batch_size: int = Field(512, ge=1)
    trackers: list[Literal["jsonl", "mlflow", "tensorboard"]] = Field(
        default_factory=lambda: ["jsonl"], description="where training / unlearning events go (unlearnkit.engine."
        "events): jsonl = <run>/events.jsonl (the report's curves), mlflow = an MLflow SQLite store in the run folder "
        "([track] extra), tensorboard = <run>/tensorboard/")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v.strip()):
            raise ValueError(f"engine.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {v!r}")
        return v.strip()


class DataConfig(Frozen):
    """Which data set, from where.

    ``train_subset``/``test_subset`` take a seeded, class-stratified subset (CPU-sized runs); sample ids stay the
    ids of the source data set, so a subset's ids are a subset of the full data set's ids.
    """

    name: str = "digits"
    root: PathText | None = Field(None, description="local folder with the data set files (layout per loader)")
    download: bool = Field(False, description="let the loader download into root (needs network)")
    train_subset: int | None = Field(None, ge=10)
    test_subset: int | None = Field(None, ge=10)
    test_fraction: float = Field(0.25, gt=0, lt=1, description="held-out fraction where the source has no test split")
    split_seed: Seed = Field(0, description="seed of subsetting and of train/test splits built by unlearnkit")
    normalize: bool = True



#: the identified fractions p of Goel et al. (2024): share of the manipulated samples that is found and forgotten
DEFAULT_IDENTIFIED_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)


class RequestSpec(Frozen):
    """One deletion request of a ``sequential`` scenario: exactly one of

    - ``fraction`` (0 < f < 1, of |D|, the original training set) or ``count`` (n ≥ 1): samples drawn uniformly
      among those not removed by earlier requests (nor named by an ``ids`` request of the sequence);
    - ``classes``: every remaining training sample of these classes;
    - ``ids``: these source-data-set sample ids.
    """

    fraction: float | None = None
    count: int | None = None
    classes: list[Index] | None = None
    ids: list[Index] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, float):
            return {"fraction": data}
        if isinstance(data, int) and not isinstance(data, bool):
            return {"count": data}
        return data

    @model_validator(mode="after")
    def _check(self) -> RequestSpec:
        given = [f for f in ("fraction", "count", "classes", "ids") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"a deletion request needs exactly one of 'fraction', 'count', 'classes' or 'ids', got "
                             f"{given or 'none'}; e.g. {{fraction: 0.03}} or {{classes: [3]}}")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise ValueError(f"request fraction must be strictly between 0 and 1 (of |D|), got {self.fraction}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"request count must be ≥ 1, got {self.count}")
        for f in ("classes", "ids"):
            v = getattr(self, f)
            if v is not None and not v:
                raise ValueError(f"request '{f}' is empty; list at least one")
            if v is not None and len(set(v)) != len(v):
                raise ValueError(f"request '{f}' has duplicates: {v}")
        return self


#: ScenarioConfig fields added for the corrective and sequential kinds: left out of the serialised config when unset,
#: so the resolved YAML and the config hash of every other scenario are what they were before these kinds existed
_STAGED_FIELDS: tuple[str, ...] = ("manipulation", "target", "trigger_size", "trigger_value", "identified_fractions",
                                   "requests", "tasks", "sequence", "learner", "permute", "head", "evaluate")
#: ScenarioConfig fields only the continual kind reads (left out of the serialised config when unset)
_CONTINUAL_ONLY: tuple[str, ...] = ("tasks", "sequence", "learner", "permute", "head", "evaluate")

#: one operation of a continual sequence: L<k> learns task k; U<k> forgets all of task k; U<k>:<f> forgets a random
#: share f of task k (drawn with the scenario's seed)
_CONTINUAL_OP = r"^(L|U)([1-9][0-9]*)(?::([0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$"  # share range checked below


class ScenarioConfig(Frozen):
    """How the forget set D_f is chosen (DESIGN §2).

    - ``random``: ``fraction`` (0 < f < 1) **or** ``count`` (1 ≤ n < |D|) samples drawn uniformly without replacement.
    - ``class``: every training sample of ``classes``; test accuracy is then reported on the remaining classes (TA)
      and separately on the forgotten classes.
    - ``subclass``: a fine class inside a super-class hierarchy (CIFAR-20/100); only for data sets that have one.
    - ``ids``: the given source-data-set sample ids (a deletion request).
    - ``corrective`` (Goel et al., "Corrective Machine Unlearning", TMLR 2024, arXiv:2402.14015): ``fraction`` or
      ``count`` training samples are manipulated — ``manipulation: poison`` pastes a ``trigger_size``² patch
      (``trigger_value``, default: each patch pixel's maximum over the training inputs) and relabels them
      ``target`` (default 0); ``manipulation: confusion`` swaps the labels of count/2 samples of each class of the
      pair ``classes`` (default [3, 5], the reference's cat/dog). θ_o trains on the manipulated set; for every p in
      ``identified_fractions`` (default 0.1, 0.25, 0.5, 1.0) D_f is the identified ⌈p·m⌉ of the m manipulated
      samples (nested over p). One result row per p (``identified_fraction``).
    - ``continual``: learn and forget in any order. ``tasks``: k (the classes split into k tasks of consecutive
      classes) or a list of class lists; ``sequence``: operations such as ``"L1 L2 U1 L3"`` (L<k> learns task k,
      continuing from the current model; U<k> forgets all of task k; U<k>:0.3 a random 30 % of it). Rows after every
      operation from the first U on (``step``: the operation's position), each against an oracle trained on exactly
      what was learned and not forgotten up to there, in the same order. ``learner``: how every Learn trains (θ_o,
      the oracle and the methods' models alike; ``unlearnkit.methods.continual``: finetune, der++, refresh, uncle,
      acu); ``permute: true``: each task a permuted copy of the whole data set; ``head: task``: task-incremental
      evaluation (logits masked to the sample's task); ``evaluate: every``: rows after every operation, also before
      the first request (the full accuracy matrix).
    - ``sequential``: deletion requests applied one after another, each to the previous request's unlearned model;
      ``requests: k`` with ``fraction``/``count`` per request, or a list of :class:`RequestSpec`. Metrics after
      every request on the cumulative forget set, against an oracle retrained without everything removed so far.
      One result row per request (``request``: 0, 1, ...).

    ``seed`` draws the forget set (random), the manipulated samples and the identified subsets (corrective), and the
    random requests (sequential); it is independent of the training seeds.
    """

    kind: Literal["random", "class", "subclass", "ids", "corrective", "sequential", "continual"] = "random"
    fraction: float | None = Field(None, description="random: share of D forgotten; corrective: share of D "
                                   "manipulated; sequential with requests: k: share of D removed per request")
    count: int | None = Field(None, description="as fraction, as a number of samples")
    classes: list[Index] | None = Field(None, description="class / subclass: forgotten classes; corrective "
                                        "confusion: the confused pair [a, b]")
    ids: list[Index] | None = None
    seed: Seed = Field(0, description="seed of the forget-set draw (independent of training seeds)")
    manipulation: Literal["poison", "confusion"] | None = Field(
        None, description="corrective: poison (trigger patch → target label) or confusion (label swaps in a pair)")
    target: int | None = Field(None, ge=0, description="corrective poison: label of the poisoned samples (default 0)")
    trigger_size: int | None = Field(None, ge=1, description="corrective poison: side of the square trigger patch in "
                                     "pixels, bottom-right corner (default 3, the reference's patch_size)")
    trigger_value: float | None = Field(None, description="corrective poison: the patch value (input units after "
                                        "normalisation); default: per-pixel maximum of the training inputs")
    identified_fractions: list[float] | None = Field(
        None, description="corrective: shares p in (0, 1] of the manipulated samples identified and forgotten "
        "(default [0.1, 0.25, 0.5, 1.0])")
    requests: int | list[RequestSpec] | None = Field(
        None, description="sequential: number of requests (each `fraction`/`count` of D) or a list of requests")
    tasks: int | list[list[int]] | None = Field(
        None, description="continual: number of tasks (classes split evenly, in order) or the classes of each task")
    sequence: str | list[str] | None = Field(
        None, description="continual: operations in order, e.g. 'L1 L2 U1 L3' (L<k> learn task k, U<k> forget it, "
        "U<k>:0.3 forget a random 30 % of it)")
    learner: dict[str, Any] | str | None = Field(
        None, description="continual: how every Learn trains (θ_o, the oracle and the methods after their first "
        "request): {name: finetune | der++ | refresh | uncle | acu, ...its parameters} (unlearnkit.methods.continual); "
        "default: plain training with the `train` recipe")
    permute: bool | None = Field(
        None, description="continual: every task is the whole data set under a fixed random pixel permutation (its "
        "own classes k·C + y, its own sample ids); `tasks: k` is the number of permuted copies")
    head: Literal["single", "task"] | None = Field(
        None, description="continual: single = class-incremental (one head over all classes, default); task = "
        "task-incremental (the task id is known at test time: logits are masked to the sample's task classes)")
    evaluate: Literal["after_forget", "every"] | None = Field(
        None, description="continual: rows after every operation from the first U on (after_forget, default) or "
        "after every operation (every: θ_o's and θ_r's rows before the first request too — the full accuracy "
        "matrix for backward transfer and forgetting)")

    @field_validator("requests", mode="before")
    @classmethod
    def _requests(cls, v: Any) -> Any:
        """One readable message per bad request (instead of pydantic's two, one per branch of ``int | list``)."""
        from pydantic import ValidationError

        if not isinstance(v, (list, tuple)):
            return v
        out = []
        for i, q in enumerate(v):
            if isinstance(q, RequestSpec):
                out.append(q)
                continue
            try:
                out.append(RequestSpec.model_validate(q))
            except ValidationError as err:
                msgs = []
                for e in err.errors():
                    if e["type"] == "extra_forbidden":
                        msgs.append(f"unknown key '{e['loc'][-1]}' (allowed: fraction, count, classes, ids)")
                    else:
                        msgs.append(str(e["msg"]).removeprefix("Value error, "))
                raise ValueError(f"request {i} ({q!r}): {'; '.join(msgs)}") from None
        return out

    @model_serializer(mode="wrap")
    def _drop_unset_staged(self, handler: Any) -> Any:  # noqa: D102 - see _STAGED_FIELDS
        data = handler(self)
        if isinstance(data, dict):
            for f in _STAGED_FIELDS:
                if f in data and data[f] is None:
                    del data[f]
        return data

    def _not_used(self, fields: tuple[str, ...], why: str = "") -> None:
        bad = [f for f in fields if getattr(self, f) is not None]
        if bad:
            raise ValueError(f"scenario {self.kind} does not use {bad}{why}; remove them or change 'kind' (where "
                             f"they come from an extended config, set them to null: {bad[0]}: null)")

    def _fraction_or_count(self, what: str) -> None:
        if (self.fraction is None) == (self.count is None):
            raise ValueError(f"scenario {self.kind} needs exactly one of 'fraction' (0 < f < 1) or 'count' (n ≥ 1) "
                             f"{what}")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise ValueError(f"scenario.fraction must be strictly between 0 and 1, got {self.fraction}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"scenario.count must be ≥ 1, got {self.count}")

    @model_validator(mode="after")
    def _check(self) -> ScenarioConfig:
        k = self.kind
        if k == "random":
            self._fraction_or_count("")
        elif k in ("class", "subclass"):
            if not self.classes:
                raise ValueError(f"scenario {k} needs 'classes' (a non-empty list of class indices); none given")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"scenario.classes has duplicates: {self.classes}")
        elif k == "ids":
            if not self.ids:
                raise ValueError("scenario ids needs 'ids' (a non-empty list of sample ids)")
        elif k == "corrective":
            self._check_corrective()
        elif k == "sequential":
            self._check_sequential()
        elif k == "continual":
            self._check_continual()
        if k in ("corrective", "sequential", "continual"):
            return self
        extra = {
            "random": ("classes", "ids"),
            "class": ("fraction", "count", "ids"),
            "subclass": ("fraction", "count", "ids"),
            "ids": ("fraction", "count", "classes"),
        }[k]
        self._not_used(extra + _STAGED_FIELDS)
        return self

    def _check_corrective(self) -> None:
        if self.manipulation is None:
            raise ValueError("scenario corrective needs 'manipulation': poison (trigger patch → target label) or "
                             "confusion (label swaps between two classes)")
        self._fraction_or_count("of manipulated training samples")
        self._not_used(("ids", "requests") + _CONTINUAL_ONLY)
        if self.manipulation == "poison":
            self._not_used(("classes",), " with manipulation poison (the target class is 'target')")
            object.__setattr__(self, "target", 0 if self.target is None else self.target)
            object.__setattr__(self, "trigger_size", 3 if self.trigger_size is None else self.trigger_size)
        else:
            self._not_used(("target", "trigger_size", "trigger_value"), " with manipulation confusion")
            pair = [3, 5] if self.classes is None else list(self.classes)
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"scenario corrective confusion needs 'classes': two distinct classes [a, b], got "
                                 f"{self.classes}")
            object.__setattr__(self, "classes", pair)
        ps = list(DEFAULT_IDENTIFIED_FRACTIONS) if self.identified_fractions is None else list(self.identified_fractions)
        if not ps:
            raise ValueError("scenario corrective: identified_fractions is empty; give shares p in (0, 1], e.g. "
                             "[0.1, 0.25, 0.5, 1.0]")
        bad = [p for p in ps if not 0 < p <= 1]
        if bad:
            raise ValueError(f"scenario corrective: identified_fractions must lie in (0, 1] (shares of the "
                             f"manipulated samples), got {bad}")
        if len(set(ps)) != len(ps):
            raise ValueError(f"scenario corrective: identified_fractions has duplicates: {ps}")
        object.__setattr__(self, "identified_fractions", sorted(float(p) for p in ps))

    def _check_continual(self) -> None:
        import re

        self._not_used(("fraction", "count", "classes", "ids", "requests", "manipulation", "target", "trigger_size",
                        "trigger_value", "identified_fractions"))
        if self.tasks is None or self.sequence is None:
            raise ValueError("scenario continual needs 'tasks' (a number, or the classes of each task) and 'sequence' "
                             "(e.g. 'L1 L2 U1 L3')")
        lr = self.learner
        if lr is not None:
            if isinstance(lr, str):
                lr = {"name": lr.strip()}
            elif "name" not in lr or not isinstance(lr["name"], str) or not lr["name"].strip():
                raise ValueError(f"scenario continual: learner needs a 'name' (e.g. {{name: der++, buffer_size: 200}}), "
                                 f"got {lr!r}")
            object.__setattr__(self, "learner", {"name": lr["name"].strip(),
                                                 **{k: v for k, v in lr.items() if k != "name"}})
        if self.permute and not isinstance(self.tasks, int):
            raise ValueError("scenario continual: permute makes every task a permuted copy of the whole data set; give "
                             "the number of copies as `tasks: k`, not class lists")
        if isinstance(self.tasks, int):
            if self.tasks < 2:
                raise ValueError(f"scenario continual: tasks must be ≥ 2, got {self.tasks}")
            n_tasks = self.tasks
        else:
            if len(self.tasks) < 2:
                raise ValueError("scenario continual: give at least two tasks")
            seen: set[int] = set()
            seq = self.sequence.split() if isinstance(self.sequence, str) else list(self.sequence)
            for i, t in enumerate(self.tasks):
                if not t:
                    use = next((f"operation {p} ({o.strip()})" for p, o in enumerate(seq)
                                if (m := re.match(_CONTINUAL_OP, o.strip())) and int(m.group(2)) == i + 1),
                               "no operation of the sequence")
                    raise ValueError(f"scenario continual: task {i + 1} has no classes (used first by {use}); give "
                                     "each task at least one class")
                dup = seen & set(t)
                if dup or len(set(t)) != len(t):
                    raise ValueError(f"scenario continual: task {i + 1} repeats class(es) {sorted(dup or t)}; each "
                                     "class belongs to one task")
                seen |= set(t)
            n_tasks = len(self.tasks)
        ops = self.sequence.split() if isinstance(self.sequence, str) else list(self.sequence)
        if not ops:
            raise ValueError("scenario continual: the sequence is empty")
        learned: set[int] = set()
        forgotten: dict[int, float] = {}
        for pos, op in enumerate(ops):
            m = re.match(_CONTINUAL_OP, op.strip())
            if m is None:
                raise ValueError(f"scenario continual: operation {pos} ({op!r}) is not L<k>, U<k> or U<k>:<share>, "
                                 "e.g. 'L1 L2 U1:0.5 L3'")
            kind, k = m.group(1), int(m.group(2))
            if k > n_tasks:
                raise ValueError(f"scenario continual: operation {pos} ({op}) names task {k}, but there are "
                                 f"{n_tasks} tasks")
            if kind == "L":
                if m.group(3):
                    raise ValueError(f"scenario continual: operation {pos} ({op}): a learn operation takes no share")
                if k in learned:
                    raise ValueError(f"scenario continual: operation {pos} ({op}) learns task {k} a second time")
                learned.add(k)
            else:
                if k not in learned:
                    raise ValueError(f"scenario continual: operation {pos} ({op}) forgets task {k}, which was not "
                                     "learned before it")
                share = float(m.group(3)) if m.group(3) else 1.0
                if not 0 < share <= 1:
                    raise ValueError(f"scenario continual: operation {pos} ({op}): the share must be in (0, 1]")
                if forgotten.get(k, 0.0) >= 1.0:
                    raise ValueError(f"scenario continual: operation {pos} ({op}) forgets task {k}, which an earlier "
                                     "operation already forgot entirely")
                forgotten[k] = 1.0 if share == 1.0 else forgotten.get(k, 0.0) + share
        if not forgotten:
            raise ValueError("scenario continual: the sequence never forgets (add a U<k> operation)")
        object.__setattr__(self, "sequence", " ".join(o.strip() for o in ops))

    def _check_sequential(self) -> None:
        r = self.requests
        self._not_used(("manipulation", "target", "trigger_size", "trigger_value", "identified_fractions")
                       + _CONTINUAL_ONLY)
        if r is None:
            raise ValueError("scenario sequential needs 'requests': a number k (with 'fraction' or 'count' removed "
                             "per request) or a list of requests, e.g. [{fraction: 0.03}, {classes: [3]}]")
        if isinstance(r, int):
            if r < 1:
                raise ValueError(f"scenario sequential: requests must be ≥ 1, got {r}")
            self._fraction_or_count("removed per request (requests: k)")
            self._not_used(("classes", "ids"), " with requests: k (give a list of requests for class or id requests)")
            if self.fraction is not None and r * self.fraction >= 1:
                raise ValueError(f"scenario sequential: {r} requests of {self.fraction} remove everything; lower "
                                 "'fraction' or the number of requests")
            return
        if not r:
            raise ValueError("scenario sequential: the list of requests is empty; give at least one")
        self._not_used(("fraction", "count", "classes", "ids"), " with a list of requests (set them per request)")
        seen_ids: set[int] = set()
        seen_cls: set[int] = set()
        for i, q in enumerate(r):
            if q.ids is not None:
                dup = seen_ids & set(q.ids)
                if dup:
                    raise ValueError(f"scenario sequential: request {i} repeats ids of an earlier request "
                                     f"({sorted(dup)[:5]}); each sample can be deleted once")
                seen_ids |= set(q.ids)
            if q.classes is not None:
                dup = seen_cls & set(q.classes)
                if dup:
                    raise ValueError(f"scenario sequential: request {i} repeats class(es) {sorted(dup)} of an "
                                     "earlier request; every sample of a class is gone after its first request")
                seen_cls |= set(q.classes)
        total = sum(q.fraction for q in r if q.fraction is not None)
        if total >= 1:
            raise ValueError(f"scenario sequential: the requests' fractions sum to {total:g} ≥ 1; nothing would "
                             "remain for D_r")

    @property
    def staged(self) -> bool:
        """True for the kinds that produce several result rows per (method, seed): corrective, sequential,
        continual."""
        return self.kind in ("corrective", "sequential", "continual")


class ComponentSpec(Frozen):
    """A registered component by name plus its parameters (validated against the component's config class)."""

    name: Name
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data.strip()}
        if isinstance(data, dict) and "params" not in data:
            data = dict(data)
            fixed = {k: data.pop(k) for k in list(data) if k in cls.model_fields and k != "params"}
            return {**fixed, "params": data}
        return data


class ModelSpec(ComponentSpec):
    """``{name: mlp, hidden: [128]}``: a registered model builder and its parameters (checked against the builder's
    config by :func:`unlearnkit.bench.resolve`)."""


class MethodSpec(ComponentSpec):
    """``{name: finetune, lr: 0.01}`` or ``finetune``: a registered unlearning method and its parameters.

    ``label`` names the row in results (default: the method name); use it to compare two settings of a method.
    The parameters are checked against the method's config (and filled with its defaults) by
    :func:`unlearnkit.bench.resolve`, which also checks that the method serves the experiment's track.
    """

    label: Name | None = None
    eval_every: int | None = Field(None, ge=1, le=10**6, description="evaluate the track's curve metrics every N "
                                   "optimizer steps while the method unlearns (events and the report's curves)")

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("eval_every") is None:
            data.pop("eval_every", None)  # configs without curves serialise (and hash) as before
        return data

    @model_validator(mode="after")
    def _validate(self) -> MethodSpec:
        if self.label is None:
            object.__setattr__(self, "label", self.name)
        label = self.label
        # the label names result rows and files (per_sample/<label>-seed<s>.npz, checkpoints/<label>-seed<s>/)
        if not label or label in (".", "..") or any(c in label for c in "/\\ \t\n"):
            raise ValueError(f"method label {label!r} is invalid: use a non-empty name without spaces or slashes")
        if label == ORIGINAL_LABEL and self.name != "original":
            raise ValueError(f"label '{ORIGINAL_LABEL}' is reserved for the row of the original model θ_o; give method "
                             f"'{self.name}' another label")
        if label == ORACLE_LABEL:
            if self.name != "retrain":
                raise ValueError(
                    f"label '{ORACLE_LABEL}' is reserved for the oracle row; give method '{self.name}' another label"
                )
            if self.params.get("recipe") is not None:
                raise ValueError(
                    f"the '{ORACLE_LABEL}' row is the oracle, trained with the top-level 'oracle' recipe (or 'train'); "
                    "its 'recipe' here would be ignored: move it to 'oracle:', or give this row another label to "
                    "run retrain as a method"
                )
        return self


class ExperimentConfig(Frozen):
    """The fields every experiment has, whatever its track.

    Each track's experiment class (``unlearnkit.bench.tracks.<track>``) extends this with ``track: Literal[...]`` and
    its own sections (the classifier track: ``data``, ``model``, ``scenario``, ``train``, ``oracle``; the LLM track:
    ``llm``; ...). Load a config with :func:`unlearnkit.load_config` (YAML) or :func:`unlearnkit.bench.resolve`
    (a mapping): they choose the track's class from ``track`` (a discriminated union) and check method, metric,
    model and data set names against the registries before anything trains. ``unlearnkit schema`` prints the union.
    """

    #: metrics used when the experiment lists none (set by each track's experiment class)
    default_metrics: ClassVar[tuple[str, ...]] = ()

    name: Name = "experiment"
    methods: list[MethodSpec] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list, description="metric names; empty = the track's defaults")
    metric_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="settings of listed metrics, e.g. {lira: {shadow_models: 16}}; "
        "validated against each metric's config (`unlearnkit metrics` lists them)")
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], max_length=MAX_SEEDS)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    output_dir: PathText = "runs"
    cache_dir: PathText | None = Field(None, description="model cache; default: <output_dir>/cache")
    save_unlearned: bool = Field(True, description="save each unlearned model under <run>/checkpoints/")
    track: str = Field("classifier", description="model family (`unlearnkit schema` lists each track's sections)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not v or any(c in v for c in "/\\ \t"):
            raise ValueError(f"name must be non-empty without spaces or slashes, got {v!r}")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("seeds must be a count (3) or a list of seeds ([0, 1, 2]), not a boolean")
        if isinstance(v, int):
            if not 1 <= v <= MAX_SEEDS:
                raise ValueError(f"seeds as a count must be between 1 and {MAX_SEEDS}, got {v}")
            return list(range(v))
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"metrics has duplicates: {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if not self.seeds:
            raise ValueError("seeds is empty: give a count (3) or a list ([0, 1, 2])")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has duplicates: {self.seeds}")
        if not self.metrics:
            object.__setattr__(self, "metrics", list(self.default_metrics))
        for name in self.metric_params:
            if name not in self.metrics:
                raise ValueError(f"metric_params has settings for '{name}', which is not in metrics "
                                 f"{self.metrics}; add it to metrics or remove its settings")
        labels = [m.label for m in self.methods]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(
                f"methods {dup} appear more than once with the same label; give each a distinct 'label'"
            )
        return self

    @model_serializer(mode="wrap")
    def _drop_unused(self, handler: Any) -> Any:
        """Serialise only what the run uses (and so what the config hash covers): empty ``metric_params`` and the
        fields a track's class lists in ``_omit_when_default`` are left out while they hold their defaults."""
        data = handler(self)
        if not isinstance(data, dict):
            return data
        if not data.get("metric_params"):
            data.pop("metric_params", None)
        for f, default in self._omit_when_default().items():
            if f in data and data[f] == default:
                del data[f]
        # the track's own sections first (right after the name), as a reader of config.resolved.yaml expects
        own = [f for f in type(self).model_fields if f not in ExperimentConfig.model_fields and f in data]
        return {k: data[k] for k in (["name"] if "name" in data else []) + own} | \
            {k: v for k, v in data.items() if k != "name" and k not in own}

    def _omit_when_default(self) -> dict[str, Any]:
        """Serialised fields left out while equal to the given value (keeps the hash of older configs)."""
        return {}
