"""Skill unlearning by intervention and abstention (Li, Sun and Weng, "Effective Skill Unlearning through Intervention
and Abstention", NAACL 2025, arXiv:2503.21730; reference code Trustworthy-ML-Lab/effective_skill_unlearning).

Two training-free methods on the feed-forward layers of a Llama-style block (``mlp.gate_proj`` / ``mlp.down_proj``);
D_f holds the forget skill's samples, D_r the retained skills'.

**Neuron Adjust** (``neuron_adjust``; reference ``get_adjust_info.py``, ``utils/helpers.py``): the pre-activations of
every FFN neuron (outputs of ``gate_proj``, over every token of D_f's and D_r's question–answer sequences) are
summarised per skill as Gaussians N(μ_f, σ_f), N(μ_r, σ_r); the ``percent`` % of neurons (over all layers) with the
largest μ_f − μ_r are selected (reference: 3 % for math vs code, 0.5 % for languages). At inference a selected
neuron's value x that is at least as likely under the forget Gaussian (p_r(x) ≤ p_f(x)) is, with probability
p_f / (p_r + p_f) — the reference's ``u ≥ p_r / (p_r + p_f)`` with u uniform — moved to the retain distribution and
reflected about its mean: x' = 2μ_r − (μ_r + σ_r (x − μ_f)/σ_f) (``proportionate_adjusting_tensor``). Values more
likely under the retain Gaussian never change. The uniform draws come from a generator seeded by the policy seed and
the batch's tokens (the reference draws from the global RNG). Deviation: the reference passes *variances* as σ (its
running statistics omit the square root) and, in ``create_net_adjust_hookfunc``, the forget mean as σ_f; the paper's
rule with standard deviations is used here.

**Key Space Detection** (``key_space_detection``; reference ``get_layer_info_from_forget_act_stats`` and the
``steer`` hook): the key vector of a query is the input of ``down_proj`` (the FFN's coefficient vector) at the
prompt's last token in the chosen layers (reference: the last layer). Over D_f's prompts: μ and the sample standard
deviation σ per dimension, and k* = the smallest k with every fit prompt inside μ ± k·σ (the reference bisects for it;
here it is computed exactly as max |x − μ| / σ). A query is inside the hypercube when every dimension lies within
μ ± margin·k*·σ (reference ``--adjusting_hyperparam 2``) — every fit prompt is inside by construction — and the model
then abstains with the reference's message instead of answering (a guard: the model is not run). Deviation: a
half-width floor of ``1e-5·(|μ| + 1)`` so dimensions on which every fit prompt agrees (σ = 0) tolerate float rounding
between batch compositions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import CheckpointError, MethodError
from unlearnkit.methods.base import Unlearned, Unlearner
from unlearnkit.methods.llm.base import LLMUnlearner, decoder_layers
from unlearnkit.models.policy import POLICIES, InferencePolicy
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float

ABSTAIN = "Sorry, your query is not valid"


def ffn_module(model: nn.Module, layer: int, name: str) -> nn.Module:
    """``mlp.<name>`` of block ``layer`` (negative: from the end).

    Raises:
        MethodError: the layer is out of range, or the block has no such module (not a Llama-style FFN).
    """
    layers = decoder_layers(model)
    if not -len(layers) <= layer < len(layers):
        raise MethodError(f"layer {layer} is outside the model's {len(layers)} blocks")
    mlp = getattr(layers[layer], "mlp", None)
    mod = getattr(mlp, name, None)
    if not isinstance(mod, nn.Module):
        raise MethodError(f"skill unlearning needs Llama-style FFN blocks (mlp.gate_proj / mlp.down_proj); block "
                          f"{layer} of {type(model).__name__} has no mlp.{name}")
    return mod


def _norm_layers(model: nn.Module, layers: Sequence[int] | None) -> list[int]:
    n = len(decoder_layers(model))
    out = list(range(n)) if layers is None else [int(x) % n if -n <= int(x) < n else int(x) for x in layers]
    bad = [x for x in out if not 0 <= x < n]
    if bad:
        raise MethodError(f"layers {bad} are outside the model's {n} blocks (0..{n - 1} or negative from the end)")
    return sorted(dict.fromkeys(out))


def _batches(id_lists: Sequence[Sequence[int]], batch_size: int):
    order = np.argsort([len(x) for x in id_lists], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        t = max(len(id_lists[i]) for i in idx)
        ids = torch.zeros((len(idx), t), dtype=torch.long)
        mask = torch.zeros((len(idx), t), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(id_lists[i])] = torch.as_tensor(list(id_lists[i]), dtype=torch.long)
            mask[r, :len(id_lists[i])] = 1
        yield idx, ids, mask


def ffn_keys(model: nn.Module, id_lists: Sequence[Sequence[int]], layers: Sequence[int],
             batch_size: int = 32) -> dict[int, torch.Tensor]:
    """Key vectors: the input of ``mlp.down_proj`` at each sequence's last token, float64 (n, d_ff) per layer."""
    from unlearnkit.llm.lm import eval_mode, model_device

    if any(len(x) == 0 for x in id_lists):
        raise MethodError("key space detection got an empty prompt")
    dev = model_device(model)
    out = {lay: torch.zeros((len(id_lists), 0), dtype=torch.float64) for lay in layers}
    rows: dict[int, list[torch.Tensor | None]] = {lay: [None] * len(id_lists) for lay in layers}
    cur: dict[str, Any] = {}
    handles = []
    for lay in layers:
        def pre(module: nn.Module, inputs: Any, lay: int = lay) -> None:
            x = inputs[0]
            last = cur["mask"].sum(1) - 1
            got = x[torch.arange(x.shape[0], device=x.device), last.to(x.device)].double().cpu()
            for r, i in enumerate(cur["idx"]):
                rows[lay][i] = got[r]
        handles.append(ffn_module(model, lay, "down_proj").register_forward_pre_hook(pre))
    try:
        with eval_mode(model):
            for idx, ids, mask in _batches(id_lists, batch_size):
                cur.update(idx=idx, mask=mask)
                model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
    finally:
        for h in handles:
            h.remove()
    for lay in layers:
        out[lay] = torch.stack(rows[lay])  # type: ignore[arg-type]
    return out


# -- Key Space Detection --------------------------------------------------------------------------------------------
@POLICIES.register("key_space_detection")
class KeySpacePolicy(InferencePolicy):
    """Abstain when a prompt's key vector lies in the forget skill's hypercube at any chosen layer.

    Args:
        layers: block indices.  mean, half: per layer float64 (d_ff,) centre and half-width (tensors ``mean.<l>``,
        ``half.<l>``).  answer: the abstention text.
    """

    kind = "key_space_detection"
    affects = frozenset({"generations"})

    def __init__(self, layers: Sequence[int], mean: dict[int, torch.Tensor], half: dict[int, torch.Tensor],
                 answer: str = ABSTAIN, k_star: dict[str, float] | None = None, margin: float = 2.0) -> None:
        if not layers:
            raise MethodError("key space detection needs at least one layer")
        self.layers = [int(x) for x in layers]
        self.mean = {int(k): v.double() for k, v in mean.items()}
        self.half = {int(k): v.double() for k, v in half.items()}
        self.answer, self.margin = str(answer), float(margin)
        self.k_star = dict(k_star or {})
        self.abstentions = (self.answer,)
        self._model: tuple[Any, Any, str] | None = None
        #: the last guard call's per-prompt decision (tests, notes)
        self.last_inside: np.ndarray | None = None

    def inside(self, keys: dict[int, torch.Tensor]) -> np.ndarray:
        """bool (n,): inside the hypercube at any layer."""
        hit = None
        for lay in self.layers:
            k = keys[lay].double()
            ins = ((k - self.mean[lay]).abs() <= self.half[lay]).all(dim=1)
            hit = ins if hit is None else hit | ins
        return hit.numpy() if hit is not None else np.zeros(0, dtype=bool)

    def keys_of(self, model: nn.Module, id_lists: Sequence[Sequence[int]]) -> dict[int, torch.Tensor]:
        return ffn_keys(model, id_lists, self.layers)

    @contextmanager
    def attach(self, model: Any, tokenizer: Any, fmt: str):  # type: ignore[override]
        self._model = (model, tokenizer, fmt)
        try:
            yield
        finally:
            self._model = None

    def guard(self, prompts: Sequence[str]) -> list[str | None]:
        if self._model is None:
            raise MethodError("key space detection's guard reads the model: call it through the generate path "
                              "(unlearnkit.llm.lm.generate attaches the model)")
        if not prompts:
            return []
        from unlearnkit.methods.llm.prompt_gate import prompt_ids

        model, tok, fmt = self._model
        ins = self.inside(self.keys_of(model, prompt_ids(tok, list(prompts), fmt)))
        self.last_inside = ins
        return [self.answer if i else None for i in ins]

    def config(self) -> dict[str, Any]:
        return {"layers": self.layers, "answer": self.answer, "k_star": self.k_star, "margin": self.margin}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"mean.{k}": v.clone() for k, v in self.mean.items()},
                **{f"half.{k}": v.clone() for k, v in self.half.items()}}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InferencePolicy:
        try:
            mean = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("mean.")}
            half = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("half.")}
            return cls(config["layers"], mean, half, config.get("answer", ABSTAIN), config.get("k_star"),
                       config.get("margin", 2.0))
        except KeyError as err:
            raise CheckpointError(f"saved key space detection policy lacks {err}") from err


class KSDConfig(Frozen):
    """Key Space Detection (arXiv:2503.21730); reference: last layer, margin 2."""

    layers: list[int] = Field(default_factory=lambda: [-1], description="blocks whose FFN key space is watched "
                              "(reference: the last); abstain when inside at any")
    margin: float = Field(2.0, ge=1, description="hypercube half-width = margin · k* · σ (reference "
                          "adjusting_hyperparam 2); ≥ 1 keeps every fit prompt inside")
    answer: str = Field(ABSTAIN, min_length=1, description="the abstention (reference: 'Sorry, your query is not "
                        "valid')")


def _check_skill_sets(name: str, forget: Any, retain: Any = None, need_retain: bool = False) -> None:
    if forget is None or len(forget) == 0:
        raise MethodError(f"{name}: the forget skill has no samples (D_f is empty); give the skill's questions")
    if need_retain and (retain is None or len(retain) == 0):
        raise MethodError(f"{name}: the retained skills have no samples (D_r is empty); Neuron Adjust compares the "
                          "forget skill's activations with the retained skills'")


@METHODS.register("key_space_detection", config=KSDConfig)
class KeySpaceDetection(Unlearner):
    """Key Space Detection: a per-layer hypercube around the forget skill's FFN key vectors; abstain when a prompt's
    key falls inside (Li, Sun and Weng, NAACL 2025, arXiv:2503.21730)."""

    kind = "inference"
    intent = "suppression"  # the weights are left alone: an inference-time policy keeps D_f from being expressed
    track = "llm"
    needs_labels = False
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"margin": Float(1.0, 5.0)}
    source = ("Li, Sun and Weng, Effective Skill Unlearning through Intervention and Abstention, NAACL 2025, "
              "arXiv:2503.21730; code github.com/Trustworthy-ML-Lab/effective_skill_unlearning")
    smoke_params: ClassVar[dict[str, Any]] = {}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> Unlearned:
        ctx = LLMUnlearner.context_of(context)
        _check_skill_sets("key_space_detection", forget)
        c: KSDConfig = self.config  # type: ignore[assignment]
        from unlearnkit.methods.llm.prompt_gate import prompt_ids

        layers = _norm_layers(model, c.layers)
        keys = ffn_keys(model, prompt_ids(ctx.tokenizer, [it.question for it in forget], ctx.fmt), layers)
        mean, half, kstar = {}, {}, {}
        for lay in layers:
            k = keys[lay]
            mu = k.mean(0)
            sd = k.std(0, unbiased=True) if k.shape[0] > 1 else torch.zeros_like(mu)
            dev = (k - mu).abs()
            ratio = torch.where(sd > 0, dev / sd.clamp_min(1e-300), torch.zeros_like(dev))
            ks = float(ratio.max()) if ratio.numel() else 0.0
            mean[lay] = mu
            half[lay] = torch.maximum(c.margin * ks * sd, 1e-5 * (mu.abs() + 1))
            kstar[str(lay)] = ks
        pol = KeySpacePolicy(layers, mean, half, c.answer, kstar, c.margin)
        return Unlearned(model, steps=0, policy=pol, notes={"layers": layers, "k_star": kstar,
                                                            "n_fit": len(forget)})


# -- Neuron Adjust --------------------------------------------------------------------------------------------------
@POLICIES.register("neuron_adjust")
class NeuronAdjustPolicy(InferencePolicy):
    """Probabilistic shift of selected FFN pre-activations from the forget to the retain distribution.

    Args:
        stats: per layer ``{"idx": int64 (m,), "mu_r", "sd_r", "mu_f", "sd_f": float32 (m,)}``.  seed: draws.
    """

    kind = "neuron_adjust"
    affects = frozenset({"logits", "generations", "hidden_states"})

    def __init__(self, stats: dict[int, dict[str, torch.Tensor]], seed: int = 0, percent: float = 3.0) -> None:
        self.stats = {int(k): v for k, v in stats.items() if len(v["idx"])}
        self.seed, self.percent = int(seed), float(percent)
        #: changed / candidate counts of the last forward_hooks call (tests, notes)
        self.last_counts: dict[str, int] = {}

    @staticmethod
    def adjust(x: torch.Tensor, s: dict[str, torch.Tensor], u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x', changed)``: the rule of the module docstring on values ``x`` (..., m) with uniforms ``u``."""
        xf = x.float()
        mu_r, sd_r = s["mu_r"].to(xf.device), s["sd_r"].to(xf.device)
        mu_f, sd_f = s["mu_f"].to(xf.device), s["sd_f"].to(xf.device)
        lp_r = -0.5 * ((xf - mu_r) / sd_r) ** 2 - torch.log(sd_r)
        lp_f = -0.5 * ((xf - mu_f) / sd_f) ** 2 - torch.log(sd_f)
        keep_prob = torch.sigmoid(lp_r - lp_f)  # p_r / (p_r + p_f)
        changed = (lp_r <= lp_f) & (u.to(xf.device) >= keep_prob)
        moved = 2 * mu_r - (mu_r + sd_r * (xf - mu_f) / sd_f)
        return torch.where(changed, moved, xf).to(x.dtype), changed

    @contextmanager
    def forward_hooks(self, model: Any, tokenizer: Any, batch: dict[str, torch.Tensor]):  # type: ignore[override]
        h = hashlib.sha256(np.asarray([self.seed], dtype=np.int64).tobytes()
                           + batch["input_ids"].cpu().numpy().astype(np.int64).tobytes()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(h[:8], "big") & 0x7FFFFFFFFFFFFFFF)
        counts = {"changed": 0, "candidates": 0}
        self.last_counts = counts
        handles = []
        for lay, s in self.stats.items():
            idx = s["idx"].long()

            def hook(module: nn.Module, inputs: Any, output: torch.Tensor, s: dict = s,
                     idx: torch.Tensor = idx) -> torch.Tensor:
                sel = output[..., idx.to(output.device)]
                u = torch.rand(sel.shape, generator=gen)
                new, changed = self.adjust(sel, s, u)
                counts["changed"] += int(changed.sum())
                counts["candidates"] += int(changed.numel())
                out = output.clone()
                out[..., idx.to(output.device)] = new
                return out

            handles.append(ffn_module(model, lay, "gate_proj").register_forward_hook(hook))
        try:
            yield
        finally:
            for hd in handles:
                hd.remove()

    def config(self) -> dict[str, Any]:
        return {"layers": sorted(self.stats), "seed": self.seed, "percent": self.percent}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{lay}.{k}": v.clone() for lay, s in self.stats.items() for k, v in s.items()}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InferencePolicy:
        stats: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            lay, name = k.split(".", 1)
            stats.setdefault(int(lay), {})[name] = v
        missing = [lay for lay in config.get("layers", []) if lay not in stats]
        if missing:
            raise CheckpointError(f"saved neuron-adjust policy lacks the statistics of layers {missing}")
        return cls(stats, config.get("seed", 0), config.get("percent", 3.0))


class NeuronAdjustConfig(Frozen):
    """Neuron Adjust (arXiv:2503.21730); reference: 3 % of the neurons (math vs code; 0.5 % for languages)."""

    percent: float = Field(3.0, gt=0, le=100, description="% of all FFN neurons (over the layers) adjusted: the "
                           "largest μ_f − μ_r")
    layers: list[int] | None = Field(None, description="blocks considered (None = all, as the reference)")
    min_std: float = Field(1e-4, gt=0, description="floor of σ_f, σ_r (a neuron constant on one skill)")


def ffn_stats(model: nn.Module, id_lists: Sequence[Sequence[int]], layers: Sequence[int],
              batch_size: int = 32) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (mean, std) float64 (d_ff,) of ``mlp.gate_proj`` outputs over every real token of the sequences."""
    from unlearnkit.llm.lm import eval_mode, model_device

    dev = model_device(model)
    acc: dict[int, list[Any]] = {lay: [0.0, 0.0, 0] for lay in layers}
    cur: dict[str, Any] = {}
    handles = []
    for lay in layers:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor, lay: int = lay) -> None:
            m = cur["mask"].bool().to(output.device)
            v = output[m].double().cpu()
            acc[lay][0] = acc[lay][0] + v.sum(0)
            acc[lay][1] = acc[lay][1] + (v * v).sum(0)
            acc[lay][2] += v.shape[0]
        handles.append(ffn_module(model, lay, "gate_proj").register_forward_hook(hook))
    try:
        with eval_mode(model):
            for _, ids, mask in _batches(id_lists, batch_size):
                cur["mask"] = mask
                model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for lay, (s, ss, n) in acc.items():
        mean = s / n
        out[lay] = (mean, (ss / n - mean * mean).clamp_min(0).sqrt())
    return out


@METHODS.register("neuron_adjust", config=NeuronAdjustConfig)
class NeuronAdjust(Unlearner):
    """Neuron Adjust: the FFN neurons whose pre-activations most separate the forget skill are shifted, with the
    paper's probabilistic rule, to the retained skills' distribution (Li, Sun and Weng, NAACL 2025,
    arXiv:2503.21730)."""

    kind = "inference"
    intent = "suppression"  # the weights are left alone: an inference-time policy keeps D_f from being expressed
    track = "llm"
    needs_labels = False
    needs_retain = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"percent": Float(0.5, 10.0)}
    source = KeySpaceDetection.source
    smoke_params: ClassVar[dict[str, Any]] = {"percent": 5.0}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> Unlearned:
        from unlearnkit.llm.lm import encode_pairs

        ctx = LLMUnlearner.context_of(context)
        _check_skill_sets("neuron_adjust", forget, retain, need_retain=True)
        c: NeuronAdjustConfig = self.config  # type: ignore[assignment]
        layers = _norm_layers(model, c.layers)
        enc_f = [e.input_ids for e in encode_pairs(ctx.tokenizer, forget.pairs(), ctx.fmt, ctx.max_len)]
        enc_r = [e.input_ids for e in encode_pairs(ctx.tokenizer, retain.pairs(), ctx.fmt, ctx.max_len)]
        sf, sr = ffn_stats(model, enc_f, layers), ffn_stats(model, enc_r, layers)
        diff = torch.cat([sf[lay][0] - sr[lay][0] for lay in layers])
        k = max(1, int(round(c.percent / 100 * diff.numel())))
        thr = float(diff.topk(k).values[-1])
        stats: dict[int, dict[str, torch.Tensor]] = {}
        for lay in layers:
            idx = torch.nonzero(sf[lay][0] - sr[lay][0] >= thr, as_tuple=False).flatten()
            if len(idx) == 0:
                continue
            stats[lay] = {"idx": idx.long(), "mu_r": sr[lay][0][idx].float(),
                          "sd_r": sr[lay][1][idx].clamp_min(c.min_std).float(), "mu_f": sf[lay][0][idx].float(),
                          "sd_f": sf[lay][1][idx].clamp_min(c.min_std).float()}
        pol = NeuronAdjustPolicy(stats, seed=int(context.seed), percent=c.percent)
        return Unlearned(model, steps=0, policy=pol,
                         notes={"n_selected": int(sum(len(s["idx"]) for s in stats.values())),
                                "n_neurons": int(diff.numel()), "threshold_mean_diff": thr,
                                "per_layer": {str(k): int(len(v["idx"])) for k, v in stats.items()}})
