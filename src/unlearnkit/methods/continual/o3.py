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
2. **OOD detector** (the paper's Sec. "OOD detector"; reference ``src/ood/ood_model_selector.py`` and
   ``run_ood.py`` of github.com/GCYZSL/O3-LLM-UNLEARNING). Request k gets its own detector: a LoRA (r_d = 8,
   α_d = 32, on the q/k/v projections as the reference's) on θ_o, trained on D_f^k alone (no retain data) with the
   **contrastive entropy loss** plus a denoising LM loss: each D_f view is augmented by replacing every token with
   probability 0.15 by a random token (the reference's MLM masking; a causal LM has no mask token); its mean-pooled
   hidden states z_i (θ_o + detector LoRA) are compared by dot product with those of the original inputs z'_j
   (frozen θ_o) of the batch, and L_CEL = Σ_layers mean_i H(softmax_j(z_i · z'_j)) is minimised, beside the
   NLL of the original tokens read from the augmented view (the reference's MLM loss, causal). The views are the
   request's questions as prompts and as question–answer pairs (what generation and teacher-forced scoring feed).
   **Scoring** (layer-aggregated, local-global): with the trained detector's features of D_f^k, per layer l a
   Gaussian (mean μ_l, covariance shrunk towards its scaled identity: D_f^k is far smaller than the width) gives
   the local Mahalanobis distance d_l(x), and the global term is the cosine distance to x's nearest D_f^k view,
   c_l(x) = 1 − max_j cos(f_l(x), f_l(x_j)); each is divided by its D_f^k median (leave-one-out for c) and
   s(x) = mean_l (d_l/med + w·c_l/med) / (1 + w). ``detector: post_hoc`` skips the training (the detector LoRA
   stays zero, so the scorer reads θ_o's own features; kept for comparison).
3. **Gate** (at inference, per input, per request): w_k(x) = clip((τ_hi − s_k(x)) / (τ_hi − τ_lo), 0, 1) with τ_lo the
   ``quantile`` of s_k on D_f^k (default 1: the largest D_f^k score, the reference's threshold; retain-free) and
   τ_hi = τ_lo·(1 + ``band``): an input like the request loads its adapter fully, an unrelated one not at all (the
   model answers exactly as θ_o), in between partly. In a causal LM the input of the
   token at position t is its prefix, so the gate of position t is w_k(prefix up to t), kept at its running maximum
   over t: once the question is recognised, its answer tokens — generated, or teacher-forced as in TOFU's
   truth ratio over paraphrased and perturbed answers — keep the adapter. It runs once per call before the model (a
   forward pre-hook computing each request's detector features with the unlearning adapters off: K extra forwards);
   generation's cached steps keep the gate reached at the end of the prompt.

Deviations (stated): the paper's detector is a separate pretrained encoder (RoBERTa-large + LoRA); here it is θ_o
itself plus a per-request detector LoRA (the same loss, views and scoring, no second model). The reference
aggregates the per-layer scores with a linear one-class SVM and turns them into a loading weight through a
two-Gaussian CDF fitted on D_f's train / held-out scores; here the layer scores are averaged after median
normalisation and the weight is the linear ramp above. The scores include the embedding layer (the reference
skips it): on a 2-layer model it carries the names that tell one person from another. ``cosine_weight`` defaults
to 0 (Mahalanobis only): on synthetic TOFU, where every person is asked the same question templates, the nearest-
neighbour cosine term matches templates rather than persons and loads the adapter on every retain question of a
shared template (measured on the test fixture: retain gate max 1.0 with w = 1, 0.0 with w = 0); set it to 1 for the
paper's glocal score. No LoRA dropout. Defaults: the reference's LoRA (r = 8, α = 16, lr 3e-4, 10 epochs,
effective batch 128 = 8 × 16), orthogonality weight 0.1 and detector training (1 epoch, lr 1e-4, batch 8, AdamW
eps 1e-6, weight decay 0.01, warm-up 6 %); band 0.25 and shrinkage 0.1 are ours.

The model keeps its class (a Hugging Face causal LM): target linears become :class:`GatedLoRALinear`, the detectors
live in ``model.o3_gate`` and the detector LoRAs beside the unlearning ones (all in the state dict, so a checkpoint
saves and digests them; :func:`restore` rebuilds the model from a state dict), so the runner's generate / score paths
need nothing special.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.data.text.qa import QASet
from unlearnkit.errors import MethodError
from unlearnkit.llm.lm import _to, encode_pairs, mean_token_nll
from unlearnkit.llm.tokenize import IGNORE_INDEX, Encoded, collate, encode_prompt, pad_id_of
from unlearnkit.methods.llm.base import LLMContext, LLMOptimConfig, LLMUnlearner
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat

#: the reference's ``lora_target_modules``
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: the detector's LoRA targets (the reference's detector adapts query / key / value)
DETECTOR_TARGETS = ("q_proj", "k_proj", "v_proj")


class GatedLoRALinear(nn.Module):
    """``base`` plus one LoRA per request, each scaled per input by its gate: y = base(x) + Σ_k g_k (α/r) B_k A_k x.

    ``gates``: float (K, b) per input or (K, b, T) per position, set by the O3 gate before every forward (None:
    adapters off, exactly ``base``).
    Parameters ``lora_A.<k>`` (r, in) and ``lora_B.<k>`` (out, r); ``B`` starts at zero (peft's initialisation).

    Detector adapters (layers named in the detector's targets only): ``det_A.<k>`` (r_d, in), ``det_B.<k>``
    (out, r_d), request k's OOD-detector LoRA. ``det`` = k (set by the gate while it computes request k's detector
    features) gives y = base(x) + (α_d/r_d) B^d_k A^d_k x with every unlearning adapter off; ``det`` None (always,
    outside the gate's feature pass) leaves the detector adapters out.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, det_r: int = 8, det_alpha: float = 32.0,
                 detects: bool = False) -> None:
        super().__init__()
        self.base = base
        self.r, self.alpha = int(r), float(alpha)
        self.det_r, self.det_alpha, self.detects = int(det_r), float(det_alpha), bool(detects)
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        self.det_A = nn.ParameterList()
        self.det_B = nn.ParameterList()
        self.gates: torch.Tensor | None = None
        self.det: int | None = None

    @property
    def weight(self) -> torch.Tensor:  # code that reads a Linear's weight (dtype, device) keeps working
        return self.base.weight

    def _pair(self, r: int, gen: torch.Generator | None) -> tuple[nn.Parameter, nn.Parameter]:
        a = torch.zeros(r, self.base.in_features)
        if gen is not None:
            bound = 1.0 / math.sqrt(self.base.in_features)  # kaiming-uniform(a=√5) bound, as nn.Linear / peft
            a.uniform_(-bound, bound, generator=gen)
        w = self.base.weight
        return (nn.Parameter(a.to(device=w.device, dtype=w.dtype)),
                nn.Parameter(torch.zeros(self.base.out_features, r, device=w.device, dtype=w.dtype)))

    def add_adapter(self, gen: torch.Generator | None) -> None:
        """One more unlearning LoRA (A kaiming-uniform from ``gen``, zeros without one: a slot to load into)."""
        a, b = self._pair(self.r, gen)
        self.lora_A.append(a)
        self.lora_B.append(b)

    def add_detector(self, gen: torch.Generator | None) -> None:
        """One more detector LoRA (only on layers that ``detects``)."""
        if self.detects:
            a, b = self._pair(self.det_r, gen)
            self.det_A.append(a)
            self.det_B.append(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.det is not None:
            if self.det < len(self.det_A):
                y = y + (self.det_alpha / self.det_r) * ((x @ self.det_A[self.det].T) @ self.det_B[self.det].T)
            return y
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

    Buffers per request k (L = the model's layers, d its width, n = D_f^k's detector views): ``mu_k`` (L, d) and
    ``prec_k`` (L, d, d) (inverse shrunk covariance) of D_f^k's detector features, ``bank_k`` (L, n, d) the same
    features scaled to unit norm (the cosine term's neighbours), ``med_k`` (2, L) the D_f^k medians of the
    Mahalanobis and cosine distances (leave-one-out for the latter), ``tau_k`` (2,) = (τ_lo, τ_hi); ``hparams`` (4,) =
    (r, α, r_d, α_d) of the adapters (so :func:`restore` can rebuild the model from a state dict).
    ``force``: when set, a (K,) vector of gates used for every input (training).
    """

    def __init__(self, hparams: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.n_requests = 0
        self.force: torch.Tensor | None = None
        self._layers: list[GatedLoRALinear] = []
        self._inside = False
        self.last: torch.Tensor | None = None  # the gates of the last forward (K, b, T), for inspection
        self.register_buffer("hparams", torch.tensor(hparams, dtype=torch.float64))

    # -- detectors ------------------------------------------------------------------------------------------------
    def add_detector(self, feats: list[torch.Tensor], *, shrinkage: float, quantile: float, band: float,
                     cosine_weight: float = 0.0) -> None:
        """Fit request k's scorer on D_f^k's detector features (one (n, d) float tensor per layer) and set its
        thresholds from D_f^k alone (no retain data)."""
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
        bank = torch.stack([F.normalize(f.double(), dim=-1) for f in feats])  # (L, n, d)
        maha = self._mahalanobis(feats, mu_t, prec_t)  # (L, n)
        sim = bank @ bank.transpose(1, 2)  # (L, n, n)
        n = sim.shape[1]
        if n > 1:  # leave-one-out: an input's own copy is not its neighbour
            sim = sim - 3.0 * torch.eye(n, dtype=sim.dtype).unsqueeze(0)
            cosd = (1.0 - sim.max(dim=2).values).clamp_min(0)
        else:
            cosd = torch.ones_like(maha)
        med = torch.stack([maha.median(dim=1).values, cosd.median(dim=1).values]).clamp_min(1e-6)  # (2, L)
        cw = torch.tensor(float(cosine_weight), dtype=torch.float64)
        score = self._combine(maha, cosd, med, cw)
        lo = float(torch.quantile(score, quantile))
        tau = torch.tensor([lo, lo * (1.0 + band)], dtype=torch.float64)
        k = self.n_requests
        for name, t in (("mu", mu_t.float()), ("prec", prec_t.float()), ("bank", bank.float()), ("med", med),
                        ("cw", cw), ("tau", tau)):
            self.register_buffer(f"{name}_{k}", t)
        self.n_requests += 1

    @staticmethod
    def _mahalanobis(feats: list[torch.Tensor], mu: torch.Tensor, prec: torch.Tensor) -> torch.Tensor:
        out = []
        for l_, f in enumerate(feats):
            c = f.double() - mu[l_].double()
            out.append(torch.einsum("nd,de,ne->n", c, prec[l_].double(), c).clamp_min(0).sqrt())
        return torch.stack(out)

    @staticmethod
    def _combine(maha: torch.Tensor, cosd: torch.Tensor, med: torch.Tensor, cw: torch.Tensor) -> torch.Tensor:
        """Layer-aggregated local-global score: mean over layers of (d_Maha / median + c · d_cos / median) / (1 + c),
        c the cosine weight."""
        med, c = med.double(), float(cw)
        return ((maha / med[0].unsqueeze(1) + c * cosd / med[1].unsqueeze(1)) / (1.0 + c)).mean(0)

    def score(self, k: int, feats: list[torch.Tensor]) -> torch.Tensor:
        """s_k(x) of request k on its detector's features (one (b, d) tensor per layer): float64 (b,); lower =
        more like D_f^k."""
        mu, prec, bank, med, cw = (getattr(self, f"{n}_{k}").cpu() for n in ("mu", "prec", "bank", "med", "cw"))
        feats = [f.cpu() for f in feats]
        maha = self._mahalanobis(feats, mu, prec)
        cosd = torch.stack([(1.0 - (F.normalize(f.double(), dim=-1) @ bank[l_].double().T).max(dim=1).values)
                            .clamp_min(0) for l_, f in enumerate(feats)])
        return self._combine(maha, cosd, med, cw)

    def weight(self, k: int, feats: list[torch.Tensor]) -> torch.Tensor:
        """w_k(x) = clip((τ_hi − s_k) / (τ_hi − τ_lo), 0, 1): float32 (b,)."""
        lo, hi = (float(v) for v in getattr(self, f"tau_{k}"))
        return ((hi - self.score(k, feats)) / max(hi - lo, 1e-12)).clamp(0.0, 1.0).float()

    # -- the model ----------------------------------------------------------------------------------------------------
    def set_gates(self, gates: torch.Tensor | None) -> None:
        for layer in self._layers:
            layer.gates = gates

    def forward_detector(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         det: int | None) -> tuple[Any, torch.Tensor]:
        """The model's output with every unlearning adapter off and request ``det``'s detector adapter on (None:
        θ_o itself), hidden states included; gradients flow (detector training). Returns (output, mask (b, T))."""
        self._inside = True
        self.set_gates(None)
        for layer in self._layers:
            layer.det = det
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        positions = (mask.long().cumsum(1) - 1).clamp_min(0)  # left or right padding: the same features
        try:
            out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                        use_cache=False)
        finally:
            self._inside = False
            for layer in self._layers:
                layer.det = None
        return out, mask

    @torch.no_grad()
    def hidden(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               det: int | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Request ``det``'s detector hidden states (θ_o plus its detector adapter, unlearning adapters off) after
        every layer (the embeddings excluded), float (b, T, d) each, and the mask (b, T)."""
        out, mask = self.forward_detector(model, input_ids, attention_mask, det)
        return [h.float() for h in out.hidden_states], mask

    def features(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 det: int | None) -> list[torch.Tensor]:
        """Request ``det``'s detector features: hidden states mean-pooled over attended tokens, (b, d) per layer."""
        hs, mask = self.hidden(model, input_ids, attention_mask, det)
        m = mask.unsqueeze(-1).float()
        return [(h * m).sum(1).div(m.sum(1).clamp_min(1)).cpu() for h in hs]

    def detect(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
               ) -> torch.Tensor:
        """w_k(x) of every request on whole inputs: float32 (K, b)."""
        rows = [self.weight(k, self.features(model, input_ids, attention_mask, k)) for k in range(self.n_requests)]
        return torch.stack(rows) if rows else torch.zeros(0, input_ids.shape[0])

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
               ) -> torch.Tensor:
        """s_k(x) of every request on whole inputs: float64 (K, b) (lower = more like the request's D_f)."""
        rows = [self.score(k, self.features(model, input_ids, attention_mask, k)) for k in range(self.n_requests)]
        return torch.stack(rows) if rows else torch.zeros(0, input_ids.shape[0], dtype=torch.float64)

    def prefix_weights(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
                       ) -> torch.Tensor:
        """Per position t the gate of the input's prefix up to t (its mean-pooled detector features), then the
        running maximum over t: once the prompt is recognised as a request's scope, every later position (the
        answer) keeps its adapter. float32 (K, b, T); 0 at padding."""
        rows = []
        for k in range(self.n_requests):
            hs, mask = self.hidden(model, input_ids, attention_mask, k)
            m = mask.unsqueeze(-1).float()
            cnt = m.cumsum(1).clamp_min(1)
            b, t = mask.shape
            feats = [((h * m).cumsum(1) / cnt).reshape(b * t, -1).cpu() for h in hs]
            rows.append(self.weight(k, feats).view(b, t) * mask.cpu().float())
        return torch.cummax(torch.stack(rows), dim=2).values

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
        gates = self.prefix_weights(module, ids, kwargs.get("attention_mask")).to(ids.device)
        self.set_gates(gates)
        self.last = gates
        return None


def _pool(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (h * m).sum(1) / m.sum(1).clamp_min(1)


def contrastive_entropy(queries: list[torch.Tensor], keys: list[torch.Tensor]) -> torch.Tensor:
    """The contrastive entropy loss (O3, arXiv:2407.10223; the reference's ``RobertaForSelector.forward``):
    Σ_layers mean_i H(softmax_j(z_i · z'_j)), z_i the (b, d) pooled features of the augmented view of input i
    (trained detector), z'_j those of the original input j (frozen θ_o), H the entropy (with the reference's 1e-5
    inside the log). Minimising it makes each augmented view pick one original in the batch with confidence."""
    total = torch.zeros((), device=queries[0].device)
    for z1, z2 in zip(queries, keys):
        p = torch.softmax(z1 @ z2.detach().T, dim=1)
        total = total + (-(p * torch.log(p + 1e-5)).sum(1)).mean()
    return total


def train_detector(model: nn.Module, gate: O3Gate, views: list[Encoded], k: int, *, epochs: int, lr: float,
                   batch_size: int, mask_prob: float, weight_decay: float, warmup_ratio: float, seed: int,
                   device: torch.device, pad: int, vocab_size: int) -> dict[str, list[float]]:
    """Train request k's detector adapter on D_f^k's views alone: per batch, an augmented view (each attended token
    replaced by a uniformly random token with probability ``mask_prob``, the reference's MLM masking without a mask
    token) goes through θ_o + the detector adapter, the original through frozen θ_o; loss = the causal-LM NLL of the
    original tokens from the augmented view (the reference's MLM loss, causal) + :func:`contrastive_entropy` over
    every layer. AdamW (eps 1e-6), linear warm-up then decay, as the reference. Returns per-epoch mean losses
    (``total``, ``cel``)."""
    dparams = [p for layer in gate._layers if layer.detects for p in (layer.det_A[k], layer.det_B[k])]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    for p in dparams:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(dparams, lr=lr, eps=1e-6, weight_decay=weight_decay)
    n = len(views)
    total_steps = max(1, epochs * math.ceil(n / batch_size))
    warm = int(total_steps * warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (total_steps - s) / max(1, total_steps - warm)))
    gen = torch.Generator().manual_seed(int(seed))
    hist: dict[str, list[float]] = {"total": [], "cel": []}
    was = model.training
    model.eval()  # the reference's LoRA dropout is not used: the augmentation is the masking
    try:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).tolist()
            tot = cel_sum = 0.0
            for s in range(0, n, batch_size):
                batch = _to(collate([views[i] for i in order[s:s + batch_size]], pad), device)
                ids, am = batch["input_ids"], batch["attention_mask"]
                noise = (torch.rand(ids.shape, generator=gen) < mask_prob).to(device) & am.bool()
                masked = torch.where(noise, torch.randint(vocab_size, ids.shape, generator=gen).to(device), ids)
                keys_h, mask = gate.hidden(model, ids, am, None)
                out, _ = gate.forward_detector(model, masked, am, k)
                m = mask.unsqueeze(-1).float()
                cel = contrastive_entropy([_pool(h.float(), m) for h in out.hidden_states],
                                          [_pool(h, m) for h in keys_h])
                labels = ids.masked_fill(am == 0, IGNORE_INDEX)
                lm = F.cross_entropy(out.logits[:, :-1].float().reshape(-1, out.logits.shape[-1]),
                                     labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
                loss = lm + cel
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(ids)
                cel_sum += float(cel.detach()) * len(ids)
            hist["total"].append(tot / n)
            hist["cel"].append(cel_sum / n)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for p in dparams:
            p.requires_grad_(False)
            p.grad = None
        model.train(was)
    return hist


def _wrap(model: nn.Module, names: list[str], detecting: set[str], hp: tuple[float, float, float, float]) -> O3Gate:
    from unlearnkit.models.parts import replace_module

    r, alpha, det_r, det_alpha = hp
    for n in names:
        replace_module(model, n, GatedLoRALinear(model.get_submodule(n), int(r), alpha, int(det_r), det_alpha,
                                                 detects=n in detecting))
    gate = O3Gate(hp)
    model.o3_gate = gate
    gate._layers = [m for m in model.modules() if isinstance(m, GatedLoRALinear)]
    model.register_forward_pre_hook(gate.pre_hook, with_kwargs=True)
    return gate


def install(model: nn.Module, r: int, alpha: float, targets: tuple[str, ...],
            det_targets: tuple[str, ...] = DETECTOR_TARGETS, det_r: int = 8, det_alpha: float = 32.0) -> O3Gate:
    """The model's O3 gate, installed on first use: target linears wrapped in :class:`GatedLoRALinear` (those named
    in ``det_targets`` also carry the detector adapters), the gate a submodule ``o3_gate`` with a forward pre-hook
    on the model.

    Raises:
        MethodError: no linear layer matches ``targets`` or ``det_targets``; a model already holding adapters of
            another rank or α.
    """
    gate = getattr(model, "o3_gate", None)
    if isinstance(gate, O3Gate):
        layers = [m for m in model.modules() if isinstance(m, GatedLoRALinear)]
        if layers and (layers[0].r, layers[0].alpha, layers[0].det_r, layers[0].det_alpha) != (
                r, alpha, det_r, det_alpha):
            raise MethodError(f"the model holds O3 adapters of rank {layers[0].r} (α {layers[0].alpha}) and detector "
                              f"adapters of rank {layers[0].det_r} (α {layers[0].det_alpha}); every request of a "
                              f"sequence must use the same (got {r}, {alpha}, {det_r}, {det_alpha})")
        gate._layers = layers
        return gate
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise MethodError(f"O3 found no linear layer named {list(targets)} in {type(model).__name__}; set "
                          "target_modules to the model's projection names")
    detecting = {n for n in names if n.rsplit(".", 1)[-1] in det_targets}
    if not detecting:
        raise MethodError(f"O3's detector adapts no layer: none of {list(det_targets)} is among the adapted layers "
                          f"({sorted({n.rsplit('.', 1)[-1] for n in names})}); set detector_targets to some of them")
    return _wrap(model, names, detecting, (float(r), float(alpha), float(det_r), float(det_alpha)))


def restore(model: nn.Module, state: dict[str, torch.Tensor]) -> O3Gate:
    """Rebuild an O3 model from its state dict (e.g. :func:`unlearnkit.engine.checkpoint.load_checkpoint`'s) on a
    plain copy of θ_o: the wrapped layers, every request's adapters, detector adapters and scorer buffers, then a
    strict load (so the gates decide exactly as when it was saved).

    Raises:
        MethodError: the model already holds O3 adapters, or the state dict holds none.
        CheckpointError: the state dict does not fit the model (names, shapes).
    """
    if isinstance(getattr(model, "o3_gate", None), O3Gate):
        raise MethodError("restore O3 into a plain copy of θ_o: this model already holds O3 adapters")
    if "o3_gate.hparams" not in state:
        raise MethodError("the state dict holds no O3 gate (no 'o3_gate.hparams'): it was not saved from an O3 model")
    hp = tuple(float(v) for v in state["o3_gate.hparams"])
    names = sorted({key[: -len(".lora_A.0")] for key in state if key.endswith(".lora_A.0")})
    detecting = {n for n in names if f"{n}.det_A.0" in state}
    gate = _wrap(model, names, detecting, hp)  # type: ignore[arg-type]
    n_req = sum(1 for key in state if key.startswith("o3_gate.tau_"))
    for k in range(n_req):
        for layer in gate._layers:
            layer.add_adapter(None)
            layer.add_detector(None)
        for name in ("mu", "prec", "bank", "med", "cw", "tau"):
            gate.register_buffer(f"{name}_{k}", torch.zeros_like(state[f"o3_gate.{name}_{k}"]))
    gate.n_requests = n_req
    from unlearnkit.engine.checkpoint import load_state_strict

    load_state_strict(model, state, "O3 state dict")
    for p in model.parameters():
        p.requires_grad_(False)
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
    orthogonal_loss_weight 0.1; detector LoRA r 8, α 32 on q/k/v, 1 epoch, lr 1e-4, batch 8, 15 % masking, weight
    decay 0.01, warm-up 6 %; threshold the largest D_f score; band, shrinkage and cosine weight ours — see the module
    docstring)."""

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
    quantile: float = Field(1.0, gt=0, le=1, description="τ_lo: this quantile of the detector score on D_f (the "
                            "reference's threshold: the largest D_f score)")
    band: float = Field(0.25, ge=0, description="τ_hi = τ_lo·(1 + band): the soft ramp of the gate")
    shrinkage: float = Field(0.1, gt=0, le=1, description="covariance shrinkage towards its scaled identity")
    cosine_weight: float = Field(0.0, ge=0, description="weight of the global (nearest-D_f-neighbour cosine) term "
                                 "beside the local (Mahalanobis) one in each layer's score; 0: Mahalanobis only")
    detector: Literal["cel", "post_hoc"] = Field(
        "cel", description="cel: each request's detector adapter trained with the contrastive entropy loss (the "
        "paper's); post_hoc: left untrained, so the scorer reads θ_o's own features (for comparison)")
    detector_targets: list[str] = Field(default_factory=lambda: list(DETECTOR_TARGETS),
                                        description="linear layers the detector's LoRA adapts (among target_modules)")
    detector_rank: int = Field(8, ge=1, description="the detector LoRA's rank (reference 8)")
    detector_alpha: float = Field(32.0, gt=0, description="the detector LoRA's α (reference 32)")
    detector_epochs: int = Field(1, ge=0, description="detector training epochs over D_f's views (reference 1)")
    detector_lr: float = Field(1e-4, gt=0, description="detector AdamW learning rate (reference 1e-4)")
    detector_batch_size: int = Field(8, ge=1, description="detector batch (reference 8; the CEL contrasts within it)")
    detector_mask_prob: float = Field(0.15, ge=0, lt=1, description="augmentation: share of tokens replaced")
    detector_weight_decay: float = Field(0.01, ge=0, description="detector AdamW weight decay (reference 0.01)")
    detector_warmup: float = Field(0.06, ge=0, lt=1, description="detector warm-up share of steps (reference 0.06)")

    @model_validator(mode="after")
    def _detector_targets_adapted(self) -> O3Config:
        missing = [t for t in self.detector_targets if t not in self.target_modules]
        if missing or not self.detector_targets:
            raise ValueError(f"detector_targets {self.detector_targets}: every one must be among target_modules "
                             f"{self.target_modules} (the detector's adapters live on the adapted layers)")
        return self


@METHODS.register("o3", config=O3Config)
class O3(LLMUnlearner):
    """O3: per request an orthogonal LoRA trained on D_f only (no retain data) and an OOD detector gating, per input,
    how much of each request's adapter is loaded (see the module docstring for the losses, the detector and the
    gate)."""

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-5, 1e-2),
                    "epochs": Int(1, 20),
                    "orth_weight": LogFloat(0.01, 1.0),
                    "band": Float(0.05, 0.5)}
    source = "Gao et al., arXiv:2407.10223 (ICLR 2025, O3); reference code github.com/alinaaawhat/l-1"
    changes_architecture = True
    needs_retain = False
    # θ_o's weights stay as they were: the gate loads the unlearning adapters only on inputs it recognises as the
    # requests' (an inference-time policy), so D_f's influence is kept from being expressed, not removed
    intent = "suppression"
    smoke_params = {"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}
    config: O3Config

    def __init__(self, config: O3Config) -> None:
        super().__init__(config)
        self.needs_retain = False

    def prepare(self, model: nn.Module, forget: QASet, ctx: LLMContext, engine: Any) -> dict[str, Any]:
        cfg = self.config
        gate = install(model, cfg.rank, cfg.alpha, tuple(cfg.target_modules), tuple(cfg.detector_targets),
                       cfg.detector_rank, cfg.detector_alpha)
        k = gate.n_requests
        pad = pad_id_of(ctx.tokenizer)
        pairs = forget.pairs()
        # the detector's views of D_f^k: the request's questions as prompts and as question–answer pairs (what
        # generation and teacher-forced scoring feed)
        prompts = [encode_prompt(ctx.tokenizer, q, ctx.fmt) for q, _ in pairs]
        views = [Encoded(tuple(p), (IGNORE_INDEX,) * len(p), len(p)) for p in prompts]
        views += encode_pairs(ctx.tokenizer, pairs, ctx.fmt, ctx.max_len, what="O3 detector")
        dgen = torch.Generator().manual_seed(int(ctx.seed) * 7919 + k + 104729)
        for layer in gate._layers:
            layer.add_detector(dgen)
        notes: dict[str, Any] = {"request": k + 1, "adapted_layers": len(gate._layers), "loss": cfg.loss,
                                 "detector": cfg.detector}
        if cfg.detector == "cel" and cfg.detector_epochs:
            vocab = int(model.get_input_embeddings().weight.shape[0])
            hist = train_detector(model, gate, views, k, epochs=cfg.detector_epochs, lr=cfg.detector_lr,
                                  batch_size=cfg.detector_batch_size, mask_prob=cfg.detector_mask_prob,
                                  weight_decay=cfg.detector_weight_decay, warmup_ratio=cfg.detector_warmup,
                                  seed=int(ctx.seed) * 7919 + k, device=engine.device, pad=pad, vocab_size=vocab)
            notes["detector_losses"] = hist["total"]
            notes["detector_cel"] = hist["cel"]
        per_layer: list[list[torch.Tensor]] = []
        was = model.training
        model.eval()
        for s in range(0, len(views), 16):
            batch = _to(collate(views[s:s + 16], pad), engine.device)
            fs = gate.features(model, batch["input_ids"], batch["attention_mask"], k)
            if not per_layer:
                per_layer = [[] for _ in fs]
            for acc, f in zip(per_layer, fs):
                acc.append(f)
        model.train(was)
        gate.add_detector([torch.cat(f) for f in per_layer], shrinkage=cfg.shrinkage, quantile=cfg.quantile,
                          band=cfg.band, cosine_weight=cfg.cosine_weight)
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
                "_notes": notes}

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


__all__ = ["GatedLoRALinear", "O3", "O3Config", "O3Gate", "contrastive_entropy", "install", "orthogonality",
           "restore", "train_detector"]
