"""O3 — "Practical Unlearning for Large Language Models" / "On Large Language Model Continual Unlearning" (Gao,
Wang, Weng, Wang & Zhu, arXiv:2407.10223; ICLR 2025; reference code github.com/alinaaawhat/l-1, the authors' O3
release): continual unlearning of an LLM with one orthogonal LoRA per deletion request and an out-of-distribution
detector that decides, per input, whether and how much of the unlearning LoRAs to load.

Per request k (D_f^k; no retain data is read):

1. **Orthogonal LoRA.** A new low-rank adapter ΔW_k = (α/r) B_k A_k is added to every target linear layer (the
   reference's q/k/v/o/gate/up/down projections), beside the adapters of earlier requests, and trained alone on D_f^k
   with the forget loss plus the O-LoRA orthogonality penalty (Wang et al. 2023, arXiv:2310.14152, the reference's
   ``orthogonal_loss``): λ Σ_layers Σ_{j<k} Σ |A_j A_kᵀ| (entrywise), which keeps request k's subspace apart from
   the earlier ones (parameter disentanglement). The forget loss: ``random_answer`` (default; the reference trains on
   D_f with randomly reassigned answers, its ``*_random_force`` data) — each question with the answer of another
   item of the request (a derangement) — ``idk`` (the items' "I don't know" answers, TOFU's refusal target) or
   ``ga`` (gradient ascent on D_f's answers).
2. **OOD detector.** From the base model's hidden states (θ_o's own weights, adapters off) at every layer, mean-pooled
   over the attended tokens, per layer l a Gaussian of D_f^k's inputs (mean μ_l, covariance shrunk towards its scaled
   identity) gives a Mahalanobis distance d_l(x); *local* scores d_l / median_{D_f^k}(d_l) are averaged over layers
   into the *global* score s(x) (the paper's layer-aggregated local-global scoring). The inputs fitted are the
   request's questions as prompts and as question–answer pairs (what generation and teacher-forced scoring feed).
3. **Gate** (at inference, per input, per request): w_k(x) = clip((τ_hi − s_k(x)) / (τ_hi − τ_lo), 0, 1) with τ_lo the
   ``quantile`` of s_k on D_f^k and τ_hi = τ_lo·(1 + ``band``): an input like the request loads its adapter fully, an
   unrelated one not at all (the model answers exactly as θ_o), in between partly. In a causal LM the input of the
   token at position t is its prefix, so the gate of position t is w_k(prefix up to t), kept at its running maximum
   over t: once the question is recognised, its answer tokens — generated, or teacher-forced as in TOFU's
   truth ratio over paraphrased and perturbed answers — keep the adapter. It runs once per call before the model (a
   forward pre-hook computing the detector features with the adapters off); generation's cached steps keep the
   gate reached at the end of the prompt.

Deviations (stated): the paper's detector is a separate backbone fine-tuned with a contrastive-entropy loss; here it
uses θ_o's own frozen layer features without that training (post-hoc Mahalanobis, the paper's scoring on untrained
features). Defaults: the reference's LoRA (r = 8, α = 16, lr 3e-4, 10 epochs, effective batch 128 = 8 × 16) and
orthogonality weight 0.1; detector quantile 0.95, band 0.5 and shrinkage 0.1 are ours.

The model keeps its class (a Hugging Face causal LM): target linears become :class:`GatedLoRALinear`, the detectors
live in ``model.o3_gate`` (saved with the weights), so the runner's generate / score paths need nothing special.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.text.qa import QASet
from unlearnkit.errors import MethodError
from unlearnkit.llm.lm import _to, encode_pairs, mean_token_nll
from unlearnkit.llm.tokenize import IGNORE_INDEX, Encoded, collate, encode_prompt, pad_id_of
from unlearnkit.methods.llm.base import LLMContext, LLMOptimConfig, LLMUnlearner
from unlearnkit.registry import METHODS

#: the reference's ``lora_target_modules``
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class GatedLoRALinear(nn.Module):
    """``base`` plus one LoRA per request, each scaled per input by its gate: y = base(x) + Σ_k g_k (α/r) B_k A_k x.

    ``gates``: float (K, b) per input or (K, b, T) per position, set by the O3 gate before every forward (None:
    adapters off, exactly ``base``).
    Parameters ``lora_A.<k>`` (r, in) and ``lora_B.<k>`` (out, r); ``B`` starts at zero (peft's initialisation).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.r, self.alpha = int(r), float(alpha)
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        self.gates: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:  # code that reads a Linear's weight (dtype, device) keeps working
        return self.base.weight

    def add_adapter(self, gen: torch.Generator) -> None:
        a = torch.empty(self.r, self.base.in_features)
        bound = 1.0 / math.sqrt(self.base.in_features)  # kaiming-uniform(a=√5) bound, as nn.Linear / peft
        a.uniform_(-bound, bound, generator=gen)
        w = self.base.weight
        self.lora_A.append(nn.Parameter(a.to(device=w.device, dtype=w.dtype)))
        self.lora_B.append(nn.Parameter(torch.zeros(self.base.out_features, self.r, device=w.device, dtype=w.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        g = self.gates
        if g is None or not len(self.lora_A):
            return y
        scale = self.alpha / self.r
        for k in range(min(len(self.lora_A), g.shape[0])):
            gk = g[k]  # (b,) per input or (b, T) per position
            if not bool((gk != 0).any()):
                continue
            delta = (x @ self.lora_A[k].T) @ self.lora_B[k].T
            if gk.dim() == 2 and x.dim() == 3 and gk.shape[1] != x.shape[1]:
                gk = gk[:, -x.shape[1]:]  # cached decoding: the positions this call computes
            gk = gk.to(y.dtype) * scale
            y = y + gk.view(*gk.shape, *([1] * (x.dim() - gk.dim()))) * delta
        return y


class O3Gate(nn.Module):
    """The detectors of every request and the per-input gate (see the module docstring).

    Buffers per request k: ``mu_k`` (L, d), ``prec_k`` (L, d, d) (inverse shrunk covariance), ``med_k`` (L,),
    ``tau_k`` (2,) = (τ_lo, τ_hi). ``force``: when set, a (K,) vector of gates used for every input (training).
    """

    def __init__(self) -> None:
        super().__init__()
        self.n_requests = 0
        self.force: torch.Tensor | None = None
        self._layers: list[GatedLoRALinear] = []
        self._inside = False
        self.last: torch.Tensor | None = None  # the gates of the last forward (K, b, T), for inspection

    # -- detectors ------------------------------------------------------------------------------------------------
    def add_detector(self, feats: list[torch.Tensor], *, shrinkage: float, quantile: float, band: float) -> None:
        """Fit request k's detector on D_f^k's features (one (n, d) float tensor per layer)."""
        mus, precs = [], []
        for f in feats:
            f = f.double()
            mu = f.mean(0)
            c = f - mu
            cov = c.T @ c / max(len(f) - 1, 1)
            d = cov.shape[0]
            target = torch.eye(d, dtype=cov.dtype) * (torch.trace(cov) / d).clamp_min(1e-12)
            prec = torch.linalg.inv((1 - shrinkage) * cov + shrinkage * target)
            mus.append(mu)
            precs.append(prec)
        mu_t, prec_t = torch.stack(mus), torch.stack(precs)
        dist = self._distances(feats, mu_t, prec_t)  # (L, n)
        med = dist.median(dim=1).values.clamp_min(1e-12)
        score = (dist / med.unsqueeze(1)).mean(0)
        lo = float(torch.quantile(score, quantile))
        tau = torch.tensor([lo, lo * (1.0 + band)], dtype=torch.float64)
        k = self.n_requests
        for name, t in (("mu", mu_t), ("prec", prec_t), ("med", med), ("tau", tau)):
            self.register_buffer(f"{name}_{k}", t.float() if name != "tau" else t)
        self.n_requests += 1

    @staticmethod
    def _distances(feats: list[torch.Tensor], mu: torch.Tensor, prec: torch.Tensor) -> torch.Tensor:
        out = []
        for l_, f in enumerate(feats):
            c = f.double() - mu[l_].double()
            out.append(torch.einsum("nd,de,ne->n", c, prec[l_].double(), c).clamp_min(0).sqrt())
        return torch.stack(out)

    def scores(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """s_k(x) for every request: float64 (K, b)."""
        rows = []
        for k in range(self.n_requests):
            mu, prec, med = (getattr(self, f"{n}_{k}") for n in ("mu", "prec", "med"))
            dist = self._distances([f.cpu() for f in feats], mu.cpu(), prec.cpu())
            rows.append((dist / med.cpu().double().unsqueeze(1)).mean(0))
        return torch.stack(rows) if rows else torch.zeros(0, len(feats[0]), dtype=torch.float64)

    def weights(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """w_k(x) ∈ [0, 1]: float32 (K, b)."""
        s = self.scores(feats)
        out = torch.zeros_like(s)
        for k in range(self.n_requests):
            lo, hi = (float(v) for v in getattr(self, f"tau_{k}"))
            out[k] = ((hi - s[k]) / max(hi - lo, 1e-12)).clamp(0.0, 1.0)
        return out.float()

    # -- the model ----------------------------------------------------------------------------------------------------
    def set_gates(self, gates: torch.Tensor | None) -> None:
        for layer in self._layers:
            layer.gates = gates

    @torch.no_grad()
    def hidden(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """θ_o's hidden states (adapters off) at every layer, float (b, T, d) each, and the mask (b, T)."""
        self._inside = True
        self.set_gates(None)
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        positions = (mask.long().cumsum(1) - 1).clamp_min(0)  # left or right padding: the same features
        try:
            out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                        use_cache=False)
        finally:
            self._inside = False
        return [h.float() for h in out.hidden_states], mask

    def features(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
                 ) -> list[torch.Tensor]:
        """θ_o's hidden states (adapters off) at every layer, mean-pooled over attended tokens: (b, d) each."""
        hs, mask = self.hidden(model, input_ids, attention_mask)
        m = mask.unsqueeze(-1).float()
        return [(h * m).sum(1).div(m.sum(1).clamp_min(1)).cpu() for h in hs]

    def prefix_weights(self, hs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Per position t the gate of the input's prefix up to t (its mean-pooled features), then the running
        maximum over t: once the prompt is recognised as a request's scope, every later position (the answer)
        keeps its adapter. float32 (K, b, T); 0 at padding."""
        m = mask.unsqueeze(-1).float()
        cnt = m.cumsum(1).clamp_min(1)
        b, t = mask.shape
        feats = [((h * m).cumsum(1) / cnt).reshape(b * t, -1).cpu() for h in hs]
        w = self.weights(feats).view(self.n_requests, b, t)
        w = w * mask.cpu().float().unsqueeze(0)
        return torch.cummax(w, dim=2).values

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Before the model runs: set every adapter's gate for this batch (kept for cached generation steps)."""
        if self._inside or not self.n_requests:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return None
        b = ids.shape[0]
        if self.force is not None:
            gates = self.force.view(-1, 1, 1).expand(-1, b, ids.shape[1]).to(ids.device)
            self.set_gates(gates)
            self.last = gates
            return None
        cached = False  # a decoding step after the prompt (the cache holds it): keep the prompt's gates
        for key in ("past_key_values", "cache"):  # transformers 4.x / 5.x names of the cache argument
            past = kwargs.get(key)
            if past is not None and hasattr(past, "get_seq_length") and int(past.get_seq_length()) > 0:
                cached = True
        pos = kwargs.get("cache_position")
        if pos is not None and len(pos) and int(pos[0]) > 0:
            cached = True
        if cached and self.last is not None and self.last.shape[1] == b:
            gates = self.last[:, :, -1:]  # decoding after the prompt: the gate reached at its end
            self.set_gates(gates)
            self.last = gates
            return None
        hs, mask = self.hidden(module, ids, kwargs.get("attention_mask"))
        gates = self.prefix_weights(hs, mask).to(ids.device)
        self.set_gates(gates)
        self.last = gates
        return None


def install(model: nn.Module, r: int, alpha: float, targets: tuple[str, ...]) -> O3Gate:
    """The model's O3 gate, installed on first use: target linears wrapped in :class:`GatedLoRALinear`, the gate a
    submodule ``o3_gate`` with a forward pre-hook on the model.

    Raises:
        MethodError: no linear layer matches ``targets``; a model already holding adapters of another rank.
    """
    gate = getattr(model, "o3_gate", None)
    if isinstance(gate, O3Gate):
        layers = [m for m in model.modules() if isinstance(m, GatedLoRALinear)]
        if layers and (layers[0].r != r or layers[0].alpha != alpha):
            raise MethodError(f"the model holds O3 adapters of rank {layers[0].r} (α {layers[0].alpha}); every "
                              f"request of a sequence must use the same r and alpha (got r {r}, α {alpha})")
        gate._layers = layers
        return gate
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise MethodError(f"O3 found no linear layer named {list(targets)} in {type(model).__name__}; set "
                          "target_modules to the model's projection names")
    from unlearnkit.models.parts import replace_module

    for n in names:
        replace_module(model, n, GatedLoRALinear(model.get_submodule(n), r, alpha))
    gate = O3Gate()
    model.o3_gate = gate
    gate._layers = [m for m in model.modules() if isinstance(m, GatedLoRALinear)]
    model.register_forward_pre_hook(gate.pre_hook, with_kwargs=True)
    return gate


def orthogonality(layers: list[GatedLoRALinear], k: int) -> torch.Tensor:
    """Σ_layers Σ_{j<k} Σ |A_j A_kᵀ| (O-LoRA's penalty between request k's adapter and the earlier ones)."""
    total = None
    for layer in layers:
        for j in range(k):
            t = (layer.lora_A[j].detach() @ layer.lora_A[k].T).abs().sum()
            total = t if total is None else total + t
    return total if total is not None else torch.zeros(())


class O3Config(LLMOptimConfig):
    """O3 settings (reference defaults: LoRA r 8, α 16, lr 3e-4, 10 epochs, effective batch 128 = 8 × 16,
    orthogonal_loss_weight 0.1; detector settings ours — see the module docstring)."""

    lr: float = Field(3e-4, gt=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(16, ge=1)
    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA α (scale α/r)")
    target_modules: list[str] = Field(default_factory=lambda: list(TARGETS), description="linear layers adapted")
    orth_weight: float = Field(0.1, ge=0, description="λ of the orthogonality penalty between requests' adapters")
    loss: Literal["random_answer", "idk", "ga"] = Field(
        "random_answer", description="forget loss on D_f: NLL of reassigned answers (the reference's random labels), "
        "of the items' IdK answers (TOFU's refusal target), or gradient ascent")
    quantile: float = Field(0.95, gt=0, le=1, description="τ_lo: this quantile of the detector score on D_f")
    band: float = Field(0.5, ge=0, description="τ_hi = τ_lo·(1 + band): the soft ramp of the gate")
    shrinkage: float = Field(0.1, gt=0, le=1, description="covariance shrinkage towards its scaled identity")


@METHODS.register("o3", config=O3Config)
class O3(LLMUnlearner):
    """O3: per request an orthogonal LoRA trained on D_f only (no retain data) and an OOD detector gating, per input,
    how much of each request's adapter is loaded (see the module docstring for the losses, the detector and the
    gate)."""

    source = "Gao et al., arXiv:2407.10223 (ICLR 2025, O3); reference code github.com/alinaaawhat/l-1"
    changes_architecture = True
    needs_retain = False
    #: θ_o's weights stay as they are; gated adapters keep the knowledge from being expressed (SoK: suppression)
    intent = "suppression"
    smoke_params = {"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}
    config: O3Config

    def __init__(self, config: O3Config) -> None:
        super().__init__(config)
        self.needs_retain = False

    def prepare(self, model: nn.Module, forget: QASet, ctx: LLMContext, engine: Any) -> dict[str, Any]:
        cfg = self.config
        gate = install(model, cfg.rank, cfg.alpha, tuple(cfg.target_modules))
        k = gate.n_requests
        pad = pad_id_of(ctx.tokenizer)
        pairs = forget.pairs()
        # the detector: θ_o's features of the request's prompts and question–answer pairs (adapters off)
        prompts = [encode_prompt(ctx.tokenizer, q, ctx.fmt) for q, _ in pairs]
        views = [Encoded(tuple(p), (IGNORE_INDEX,) * len(p), len(p)) for p in prompts]
        views += encode_pairs(ctx.tokenizer, pairs, ctx.fmt, ctx.max_len, what="O3 detector")
        per_layer: list[list[torch.Tensor]] = []
        was = model.training
        model.eval()
        for s in range(0, len(views), 16):
            batch = _to(collate(views[s:s + 16], pad), engine.device)
            fs = gate.features(model, batch["input_ids"], batch["attention_mask"])
            if not per_layer:
                per_layer = [[] for _ in fs]
            for acc, f in zip(per_layer, fs):
                acc.append(f)
        model.train(was)
        gate.add_detector([torch.cat(f) for f in per_layer], shrinkage=cfg.shrinkage, quantile=cfg.quantile,
                          band=cfg.band)
        gen = torch.Generator().manual_seed(int(ctx.seed) * 7919 + k)
        for layer in gate._layers:
            layer.add_adapter(gen)
        gate.force = torch.tensor([0.0] * k + [1.0])  # training: the new adapter alone, for every input
        if cfg.loss == "idk":
            pairs = forget.pairs("idk_answer")
        elif cfg.loss == "random_answer":
            n = len(pairs)
            perm = np.arange(n)
            if n > 1:
                rng = np.random.default_rng([int(ctx.seed), k])
                perm = rng.permutation(n)
                while (perm == np.arange(n)).any():  # a derangement: no item keeps its own answer
                    perm = rng.permutation(n)
            pairs = [(q, pairs[int(j)][1]) for (q, _), j in zip(pairs, perm)]
        return {"forget": encode_pairs(ctx.tokenizer, pairs, ctx.fmt, ctx.max_len), "pad": pad, "k": k, "gate": gate,
                "_notes": {"request": k + 1, "adapted_layers": len(gate._layers), "loss": cfg.loss}}

    def fields_needed(self) -> tuple[str, ...]:
        return ("idk_answer",) if self.config.loss == "idk" else ()

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        k = model.o3_gate.n_requests - 1
        return [(n, p) for n, p in model.named_parameters() if n.endswith((f"lora_A.{k}", f"lora_B.{k}"))]

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "forget", pos, engine)
        nll = mean_token_nll(model, batch)
        loss = -nll.sum() if self.config.loss == "ga" else nll.sum()
        k = state["k"]
        if k and self.config.orth_weight:
            loss = loss + self.config.orth_weight * len(pos) * orthogonality(state["gate"]._layers, k).to(loss)
        return loss

    def finish(self, model: nn.Module, state: dict[str, Any]) -> None:
        gate: O3Gate = state["gate"]
        gate.force = None
        gate.set_gates(None)
        gate.last = None
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(False)


__all__ = ["GatedLoRALinear", "O3", "O3Config", "O3Gate", "install", "orthogonality"]
