"""ROCR — Rank-One Concept Redirection (Ye et al. 2025, "LLM Unlearning Should Be Form-Independent",
arXiv:2506.07795; reference code Acruxos/ORT ``train/rocr``, built on AlphaEdit's null-space constrained editing,
Fang et al. 2025, arXiv:2410.02355, and MEMIT, Meng et al. 2023).

Instead of training on the forget answers in one form (QA), ROCR edits *where the subject is looked up*: the MLP
down-projections of a few blocks, so that the subject's representation becomes that of an unrelated concept. Every
form that mentions the subject (QA, fill-in-the-blank, multiple choice, a paraphrase) then reads the redirected
representation.

For the forget subjects s and their contexts (the forget questions that name them, in the track's prompt format),
with positions at the subject's last token:

* keys K = the down_proj inputs of block l there (d_ff × N) — at the subject's last token (the reference's
  ``subject_last``), or with ``tokens: all`` at every token of the subject's name (models that read a name through
  attention at all its tokens, such as the tiny models trained from scratch here, ignore a last-token edit);
* the current representation z = the output of the last edited block L there (d × N); the target z* = the same for the
  *unrelated* subject written in the same context (mode ``unrelated``, the reference's "Donald Trump": here a retained
  person of D_r, or ``unrelated_subject``), or Gaussian noise of z's norm (mode ``noise``);
* preserved keys K₀ = the down_proj inputs of block l on retain texts; P = the projector on the span of the
  eigenvectors of K₀K₀ᵀ/n whose eigenvalues are below ``nullspace_threshold`` × the largest (AlphaEdit's null space:
  an update ΔW = XᵀP leaves ΔW·k₀ ≈ 0 for preserved keys);
* for each edited block l_i (in order) the residual R = (z* − z) / (number of blocks left) is written by
  Xᵀ with (P K Kᵀ + λI) X = P K Rᵀ (the reference's ``torch.linalg.solve`` with ``L2`` = λ), W_down ← W_down + Xᵀ,
  and z is recomputed before the next block.

Closed form: no gradient step (``steps = 0``). Notes record the null-space dimension and the fraction of the
target distance ‖z* − z‖ that remains after the edit. Needs the subject's *name* in the forget questions
(``QAItem.subject`` as text, as the synthetic and RWKU data have; TOFU's loader names authors ``author_<k>``, which its
questions do not contain: give the names as ``subjects``, else MethodError). On a peft LoRA model the edit goes into
each down_proj's frozen base weight (the merged model's edit; adapters untouched).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.llm.lm import _to, eval_mode
from unlearnkit.llm.tokenize import Encoded, collate, format_prompt, pad_id_of
from unlearnkit.methods.base import UnlearnContext, Unlearned, Unlearner, derive_seed
from unlearnkit.methods.llm.base import decoder_layers, down_projection
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import LogFloat


def subject_positions(tokenizer: Any, text: str, subject: str, add_special: bool = True
                      ) -> tuple[list[int], list[int]] | None:
    """Token ids of ``text`` and the indices of the tokens that cover the *last* occurrence of ``subject`` in it, in
    order (None when ``subject`` does not occur)."""
    start = text.rfind(subject)
    if start < 0 or not subject:
        return None
    end = start + len(subject)
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    idx = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    return (list(enc["input_ids"]), idx) if idx else None


def subject_position(tokenizer: Any, text: str, subject: str, add_special: bool = True) -> tuple[list[int], int] | None:
    """Token ids of ``text`` and the index of the token that covers the last character of the *last* occurrence of
    ``subject`` in it (None when ``subject`` does not occur)."""
    got = subject_positions(tokenizer, text, subject, add_special)
    return None if got is None else (got[0], got[1][-1])


def aligned(src: list[int], dst: list[int]) -> list[int]:
    """For each position of ``src`` (the subject's tokens) the position of ``dst`` (the unrelated subject's tokens) at
    the same relative place: j ↦ dst[round(j·(|dst| − 1) / (|src| − 1))] (the last maps to the last)."""
    if len(src) == 1:
        return [dst[-1]]
    return [dst[round(j * (len(dst) - 1) / (len(src) - 1))] for j in range(len(src))]


class _Capture:
    """Forward hooks that record the down_proj input of block ``layer`` and the output of block ``out_layer``."""

    def __init__(self, model: nn.Module, layer: int, out_layer: int) -> None:
        blocks = decoder_layers(model)
        self.keys: torch.Tensor | None = None
        self.out: torch.Tensor | None = None

        def pre(_m, args):
            self.keys = args[0].detach()

        def post(_m, _i, out):
            self.out = (out[0] if isinstance(out, tuple) else out).detach()

        self.handles = [blocks[layer].mlp.down_proj.register_forward_pre_hook(pre),
                        blocks[out_layer].register_forward_hook(post)]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def gather_at(model: nn.Module, encoded: list[tuple[list[int], int]], pad: int, layer: int, out_layer: int,
              device: torch.device, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys (d_ff, N), outputs (d, N)) at the given token positions of the given token sequences, float64."""
    keys, outs = [], []
    with eval_mode(model):
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i:i + batch_size]
            b = _to(collate([Encoded(tuple(ids), (-100,) * len(ids), len(ids)) for ids, _ in chunk], pad), device)
            cap = _Capture(model, layer, out_layer)
            try:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            finally:
                cap.remove()
            rows = torch.arange(len(chunk))
            pos = torch.tensor([p for _, p in chunk])
            keys.append(cap.keys[rows, pos].double().cpu())
            outs.append(cap.out[rows, pos].double().cpu())
    return torch.cat(keys).T, torch.cat(outs).T


def gather_keys(model: nn.Module, seqs: list[list[int]], pad: int, layer: int, device: torch.device,
                batch_size: int = 16) -> torch.Tensor:
    """The down_proj inputs of block ``layer`` at every real token of every sequence: float64 (d_ff, Σ lengths)."""
    out = []
    with eval_mode(model):
        for i in range(0, len(seqs), batch_size):
            chunk = seqs[i:i + batch_size]
            b = _to(collate([Encoded(tuple(ids), (-100,) * len(ids), len(ids)) for ids in chunk], pad), device)
            cap = _Capture(model, layer, layer)
            try:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            finally:
                cap.remove()
            m = b["attention_mask"].bool()
            out.append(cap.keys[m].double().cpu())
    return torch.cat(out).T


def nullspace_projector(k0: torch.Tensor, threshold: float) -> tuple[torch.Tensor, int]:
    """P = U_s U_sᵀ over the eigenvectors of C = k0 k0ᵀ / n (k0: (d_ff, n)) with eigenvalue < ``threshold`` ×
    the largest; returns (P float64 (d_ff, d_ff), its rank)."""
    c = k0 @ k0.T / max(k0.shape[1], 1)
    evals, evecs = torch.linalg.eigh(c)
    small = evals < threshold * evals.max().clamp_min(1e-30)
    u = evecs[:, small]
    return u @ u.T, int(small.sum())


def rank_one_update(keys: torch.Tensor, resid: torch.Tensor, proj: torch.Tensor, l2: float) -> torch.Tensor:
    """ΔW (d, d_ff) = Xᵀ with (P K Kᵀ + λ I) X = P K Rᵀ (AlphaEdit / ROCR's closed form; K (d_ff, N), R (d, N))."""
    a = proj @ (keys @ keys.T) + l2 * torch.eye(keys.shape[0], dtype=keys.dtype)
    return torch.linalg.solve(a, proj @ keys @ resid.T).T


class ROCRConfig(Frozen):
    """ROCR settings (reference hparams for Llama-3-8B: layers 4–6 of 32, λ = 1, null-space threshold 2e-2,
    mode unrelated)."""

    layers: list[int] | None = Field(None, description="consecutive blocks whose down_proj is edited; None = the "
                                     "block at 1/4 of the depth (the reference edits 4–6 of 32)")
    mode: Literal["unrelated", "noise"] = "unrelated"
    unrelated_subject: str | None = Field(None, description="the concept the subject is redirected to; None = the "
                                          "first person of D_r whose name appears in its questions")
    nullspace_threshold: float = Field(1e-2, ge=0, lt=1, description="eigenvalues of K₀K₀ᵀ/n below this × the "
                                       "largest span the protected null space; 0 = no protection (P = I)")
    l2: float = Field(1.0, gt=0, description="λ of the solve (reference: L2 = 1)")
    tokens: Literal["last", "all"] = Field("last", description="the subject's token(s) whose representation is "
                                          "redirected: the last (the reference's subject_last) or every one (the "
                                          "unrelated subject's tokens aligned by relative position)")
    max_retain: int = Field(200, ge=1, description="retain items whose tokens give the preserved keys K₀")
    subjects: list[str] | None = Field(None, description="the forget subjects' names, for data whose subject labels "
                                       "are not names (TOFU: author_<k>): an item's subject is the first of these "
                                       "that occurs in its question; None = QAItem.subject")
    seed: int = 0


@METHODS.register("rocr", config=ROCRConfig)
class ROCR(Unlearner):
    """Rank-One Concept Redirection (arXiv:2506.07795): a closed-form, null-space-protected edit of MLP
    down-projections that redirects each forget subject's representation to an unrelated concept."""

    track: ClassVar[str] = "llm"
    needs_labels: ClassVar[bool] = False
    needs_retain: ClassVar[bool] = True
    intent: ClassVar[str] = "removal"
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"l2": LogFloat(0.01, 100.0), "nullspace_threshold": LogFloat(1e-4, 0.1)}
    source = "Ye et al. 2025, arXiv:2506.07795 (ROCR; code Acruxos/ORT); AlphaEdit arXiv:2410.02355"
    smoke_params: ClassVar[dict[str, Any]] = {}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any,
                 context: UnlearnContext) -> Unlearned:
        tok = getattr(context, "tokenizer", None)
        if tok is None:
            raise MethodError("rocr needs an LLMContext with the tokenizer")
        cfg: ROCRConfig = self.config
        fmt = getattr(context, "fmt", "qa")
        special = fmt != "chat"
        blocks = decoder_layers(model)
        n = len(blocks)
        layers = cfg.layers if cfg.layers is not None else [max(0, n // 4 - (1 if n >= 4 else 0))]
        if not layers or any(not 0 <= i < n for i in layers) or any(b != a + 1 for a, b in zip(layers, layers[1:])):
            raise ConfigError(f"rocr layers {layers} must be consecutive block indices in 0..{n - 1}")
        weights = {i: down_projection(blocks, i, "rocr")[1].weight for i in layers}
        names = [str(x) for x in (cfg.subjects or []) if str(x)]

        def subject_of(it: Any) -> str:
            if names:
                return next((x for x in names if x in it.question), "")
            return str(it.subject) if it.subject else ""

        if names and not any(subject_of(it) for it in forget):
            raise MethodError(f"rocr subjects {names[:5]} occur in none of the {len(forget)} forget questions; give "
                              "the forget subjects' names as they are written in D_f")
        subjects = sorted({subject_of(it) for it in forget} - {""})
        unrelated = cfg.unrelated_subject
        if cfg.mode == "unrelated" and unrelated is None:
            unrelated = next((str(it.subject) for it in retain if it.subject and str(it.subject) in it.question
                              and str(it.subject) not in subjects), None)
            if unrelated is None:
                raise MethodError("rocr mode unrelated needs a retained subject named in its questions (or set "
                                  "unrelated_subject); use mode: noise")
        ctxs, tgts = [], []
        for it in forget:
            s = subject_of(it)
            if not s or s not in it.question:
                continue
            here = subject_positions(tok, format_prompt(tok, it.question, fmt), s, special)
            if here is None:
                continue
            pos_here = here[1] if cfg.tokens == "all" else here[1][-1:]
            if cfg.mode == "unrelated":
                there = subject_positions(tok, format_prompt(tok, it.question.replace(s, str(unrelated)), fmt),
                                          str(unrelated), special)
                if there is None:
                    continue
                tgts.extend((there[0], p) for p in aligned(pos_here, there[1]))
            ctxs.extend((here[0], p) for p in pos_here)
        if not ctxs:
            raise MethodError("rocr found no forget question that names its subject (QAItem.subject as text); it "
                              "redirects subjects by name — TOFU's loader names authors author_<k>, which its "
                              "questions do not contain: give the names as rocr subjects: [...]")
        pad = pad_id_of(tok)
        dev = engine.device
        top = layers[-1]
        r_seqs = [list(tok(format_prompt(tok, it.question, fmt) + " " + it.answer,
                           add_special_tokens=special)["input_ids"]) for it in list(retain)[:cfg.max_retain]]
        notes: dict[str, Any] = {"layers": layers, "mode": cfg.mode, "unrelated_subject": unrelated,
                                 "contexts": len(ctxs), "subjects": subjects}
        if cfg.mode == "unrelated":
            _, z_star = gather_at(model, tgts, pad, layers[0], top, dev)
        else:
            _, z0 = gather_at(model, ctxs, pad, layers[0], top, dev)
            g = torch.Generator().manual_seed(derive_seed(context.seed, f"rocr-noise-{cfg.seed}"))
            noise = torch.randn(z0.shape, generator=g, dtype=torch.float64)
            z_star = noise * (z0.norm(dim=0, keepdim=True) / noise.norm(dim=0, keepdim=True))
        _, z_begin = gather_at(model, ctxs, pad, layers[0], top, dev)
        dist0 = float((z_star - z_begin).norm(dim=0).mean())
        null_dims = []
        for i, layer in enumerate(layers):
            keys, z = gather_at(model, ctxs, pad, layer, top, dev)
            if cfg.nullspace_threshold > 0:
                k0 = gather_keys(model, r_seqs, pad, layer, dev)
                proj, rank = nullspace_projector(k0, cfg.nullspace_threshold)
            else:
                proj, rank = torch.eye(keys.shape[0], dtype=torch.float64), keys.shape[0]
            null_dims.append(rank)
            if rank == 0:
                raise MethodError(f"rocr: the preserved keys of block {layer} span every direction (null space of "
                                  f"dimension 0 at threshold {cfg.nullspace_threshold}); raise nullspace_threshold")
            resid = (z_star - z) / (len(layers) - i)
            upd = rank_one_update(keys, resid, proj, cfg.l2)
            w = weights[layer]
            with torch.no_grad():
                w.add_(upd.to(w.dtype).to(w.device))
        _, z_end = gather_at(model, ctxs, pad, layers[0], top, dev)
        notes.update({"nullspace_dims": null_dims, "target_distance": dist0,
                      "remaining_fraction": float((z_star - z_end).norm(dim=0).mean()) / max(dist0, 1e-30)})
        return Unlearned(model, steps=0, notes=notes)


__all__ = ["ROCR", "ROCRConfig", "aligned", "gather_at", "gather_keys", "nullspace_projector", "rank_one_update",
           "subject_position", "subject_positions"]
