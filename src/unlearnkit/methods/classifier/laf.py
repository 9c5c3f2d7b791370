"""LAF: label-agnostic forgetting with representation-level VAEs and a contrastive alignment step."""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine, make_optimizer
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._common import freeze, optimizer_step
from unlearnkit.models.parts import find_head, forward_with_features
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class LAFConfig(OptimConfig):
    """LAF settings. Defaults are the authors' values for the small CNN (MNIST/Fashion-MNIST, class and noisy-label
    unlearning) in ``hyperparameter.md``, ``Train.py`` and ``Data.py`` of github.com/ShaofeiShen768/LAF (Shen et al.,
    ICLR 2024, arXiv:2404.00506):

    Fields:
        epochs: extractor-unlearning epochs (``UNLEARNING_EPOCH``); default 20 (40 for their ResNet).
        optimizer / lr: Adam; ``lr`` is the representation-extraction-unlearning (UE) step's lr
            (``UNLEARNING_LR_UE``), default 5e-5.  ra_lr: lr of the representation-alignment (RA) step
            (``UNLEARNING_LR_RA``), default 1e-4.  weight_decay: 0.
        batch_size: forget and retain batch size (``construct_data(batch_size=32)``).
        temperature: τ of the contrastive RA loss (``TEMP``); default 20 (5 for their random-sample task).
        latent_dim: VAE latent size (``LATENT_DIMS``); default 8 (16 for their ResNet).
        vae_hidden: hidden widths of the VAE encoder (mirrored in the decoder); default (128, 32).
        vae_epochs / vae_lr / vae_batch_size: VAE training, default 10 epochs, Adam 1e-3, batch 32.
        kld_weight: weight of the KL term of the VAE loss; default 0.025.
        repair_epochs / repair_lr: optional supervised repair of the head on D_r (CE, Adam; the reference's
            ``classifier_unlearning``); default 0 = off (label-free). When > 0 the method reads D_r's labels.
        vae_sampling: ``"sample"`` (z = μ + σ·ε, as the reference, also in the unlearning step) or ``"mean"``
            (z = μ during unlearning).
    """

    epochs: int = Field(20, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(5e-5, gt=0)
    ra_lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    temperature: float = Field(20.0, gt=0)
    latent_dim: int = Field(8, ge=1)
    vae_hidden: tuple[int, ...] = (128, 32)
    vae_epochs: int = Field(10, ge=1)
    vae_lr: float = Field(1e-3, gt=0)
    vae_batch_size: int = Field(32, ge=1)
    kld_weight: float = Field(0.025, ge=0)
    repair_epochs: int = Field(0, ge=0)
    repair_lr: float = Field(1e-4, gt=0)
    vae_sampling: Literal["sample", "mean"] = "sample"


class EmbeddingVAE(nn.Module):
    """MLP VAE on embeddings: encoder d → hidden… → (μ, log σ²) ∈ R^latent; decoder latent → …hidden → d (linear out).

    ``forward(e, noise)`` with ``e`` float (b, d) and ``noise`` float (b, latent) or None (use μ) returns
    ``(reconstruction (b, d), μ (b, latent), σ (b, latent))``.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...], latent: int) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        d = dim
        for h in hidden:
            enc += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.encoder = nn.Sequential(*enc)
        self.mu = nn.Linear(d, latent)
        self.logvar = nn.Linear(d, latent)
        dec: list[nn.Module] = []
        d = latent
        for h in reversed(hidden):
            dec += [nn.Linear(d, h), nn.ReLU()]
            d = h
        dec.append(nn.Linear(d, dim))
        self.decoder = nn.Sequential(*dec)

    def forward(self, e: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(e)
        mu = self.mu(h)
        sigma = torch.exp(0.5 * self.logvar(h))
        z = mu if noise is None else mu + sigma * noise
        return self.decoder(z), mu, sigma


def vae_loss(rec: torch.Tensor, e: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, kld_weight: float):
    """(1/b) Σ‖rec − e‖² + w · (1/b) Σ −½(log σ² + 1 − μ² − σ²) (the reference's ``vae_loss_function``)."""
    b = e.shape[0]
    mse = (rec - e).pow(2).sum() / b
    kld = -0.5 * torch.sum(torch.log(sigma.pow(2) + 1e-8) + 1 - mu.pow(2) - sigma.pow(2)) / b
    return mse + kld_weight * kld


def bounded_reconstruction_error(rec: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Σ_i exp(m_i / (m_i + 1)) with m_i = ‖rec_i − e_i‖² (the reference's ``extractor_loss_functionnmse``).

    Each term lies in [1, e): a bounded, monotone transform of the per-sample squared error. Scalar tensor.
    """
    m = (rec - e).pow(2).sum(dim=1)
    return torch.exp(m / (m + 1)).sum()


def alignment_loss(e_r: torch.Tensor, t_r: torch.Tensor, e_f: torch.Tensor, t_f: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """Contrastive representation-alignment loss (the reference's ``extractor_loss_functioncosine``).

    With c^r_i = 1 − cos(e_r,i, t_r,i) and c^f_j = 1 − cos(e_f,j, t_f,j) (current vs original embeddings):
    L = Σ_i log( exp(c^r_i) / Σ_j exp(c^f_j / τ) ) = Σ_i c^r_i − n_r · log Σ_j exp(c^f_j / τ).
    Minimising it aligns retain embeddings with θ_o's and pushes forget embeddings away from θ_o's.
    Inputs float (n_r, d), (n_r, d), (n_f, d), (n_f, d). Scalar tensor.
    """
    c_r = 1 - nn.functional.cosine_similarity(e_r, t_r.detach(), dim=1)
    c_f = 1 - nn.functional.cosine_similarity(e_f, t_f.detach(), dim=1)
    return c_r.sum() - len(c_r) * torch.logsumexp(c_f / temperature, dim=0)


def _embeddings(model: nn.Module, head: nn.Linear, data: SampleSet, engine: Engine) -> torch.Tensor:
    """Penultimate features of ``data`` under ``model`` in eval mode, float (n, d) on the engine's device."""
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for x, _y, _ids in engine.batches(data, engine.config.eval_batch_size, shuffle=False):
            out.append(forward_with_features(model, head, x)[1])
    model.train(was)
    return torch.cat(out)


def train_vae(emb: torch.Tensor, cfg: LAFConfig, seed: int, engine: Engine) -> EmbeddingVAE:
    """Fit an :class:`EmbeddingVAE` on fixed embeddings ``emb`` (n, d) with Adam; init, order and ε from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = EmbeddingVAE(emb.shape[1], tuple(cfg.vae_hidden), cfg.latent_dim)
    vae.to(engine.device).train()
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(cfg.vae_epochs):
        order = torch.randperm(len(emb), generator=gen)
        for start in range(0, len(emb), cfg.vae_batch_size):
            e = emb[order[start:start + cfg.vae_batch_size].to(emb.device)]
            noise = torch.randn((len(e), cfg.latent_dim), generator=gen).to(e.device)
            rec, mu, sigma = vae(e, noise)
            loss = vae_loss(rec, e, mu, sigma, cfg.kld_weight)
            optimizer_step(loss, opt, engine, step=step, desc="laf vae")
            step += 1
    return freeze(vae)


@METHODS.register("laf", config=LAFConfig)
class LAF(Unlearner):
    """Label-Agnostic Forgetting (Shen et al., ICLR 2024; arXiv:2404.00506).

    Notation: e(x) = penultimate features (input of the head, the last ``nn.Linear``) of the current model, t(x) the
    same under frozen θ_o.

    1. Two VAEs on θ_o's embeddings: V_r on {t(x) : x ∈ D_r}, V_f on {t(x) : x ∈ D_f}; loss = Σ‖V(t) − t‖²/b +
       0.025 · KL(q(z|t) ‖ N(0, I))/b, Adam 1e-3, 10 epochs.
    2. For ``epochs`` epochs, for each pair of batches (B_f, B_r) (``zip`` of the two shuffled loaders, so
       ⌈min(|D_f|, |D_r|)/b⌉ pairs per epoch), two Adam steps on all weights:
       * UE (lr ``lr``): L_UE = Σ_{B_r} g(‖V_r(e) − e‖²) − Σ_{B_f} g(‖V_f(e) − e‖²), g(m) = exp(m/(m+1)) — keep
         retain embeddings where V_r can reconstruct them, push forget embeddings off V_f's manifold;
       * RA (lr ``ra_lr``), recomputed after UE: L_RA = Σ_{i∈B_r} c^r_i − |B_r| log Σ_{j∈B_f} exp(c^f_j/τ),
         c = 1 − cos(e, t) — retain embeddings aligned with θ_o's, forget embeddings pushed away.
    3. Optional (``repair_epochs > 0``, reads D_r labels): CE fine-tuning of the head only on D_r.

    Labels are never read unless ``repair_epochs > 0`` (``needs_labels = False``).

    Simplified / deviating from the reference code (github.com/ShaofeiShen768/LAF): the VAEs are small MLPs on the
    penultimate features of any model (the reference uses fixed 256-d embeddings of its own CNN/ResNet, whose
    ``forward`` returns (logits, embedding)); the decoder output is linear instead of sigmoid (a sigmoid cannot
    reconstruct unbounded or negative features); the VAEs are trained once on cached θ_o embeddings (the reference
    re-embeds every batch with the frozen model — the same values without augmentation); V_r is trained on D_r as in
    the paper (the notebook trains it on the full training set); the semi-supervised variants are not implemented
    beyond the optional head repair.

    Errors: MethodError (empty D_f or D_r, shared ids, no usable nn.Linear head), DivergenceError.
    """

    needs_retain = True
    needs_labels = False
    smoke_params = {"epochs": 2, "vae_epochs": 1, "batch_size": 16, "vae_batch_size": 32, "lr": 1e-3, "ra_lr": 1e-3}
    source = "Shen et al., ICLR 2024, arXiv:2404.00506"
    #: unlearnkit tune: the two Adam lrs (reference 5e-5 / 1e-4) and epochs
    search_space = {"lr": LogFloat(1e-5, 1e-2), "ra_lr": LogFloat(1e-5, 1e-2), "epochs": Int(1, 20)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg: LAFConfig = self.config  # type: ignore[assignment]
        engine.setup()
        model.to(engine.device)
        _name, head = find_head(model, "laf")
        teacher = freeze(copy.deepcopy(model))
        t_head = find_head(teacher, "laf")[1]
        vae_r = train_vae(_embeddings(teacher, t_head, retain, engine), cfg, derive_seed(context.seed, "laf-vae-r"),
                          engine)
        vae_f = train_vae(_embeddings(teacher, t_head, forget, engine), cfg, derive_seed(context.seed, "laf-vae-f"),
                          engine)

        opt_ue = make_optimizer(model.parameters(), cfg.recipe())
        opt_ra = make_optimizer(model.parameters(), cfg.recipe().model_copy(update={"lr": cfg.ra_lr}))
        gen_f = torch.Generator().manual_seed(derive_seed(context.seed, "laf-forget-order"))
        gen_r = torch.Generator().manual_seed(derive_seed(context.seed, "laf-retain-order"))
        gen_z = torch.Generator().manual_seed(derive_seed(context.seed, "laf-latent-noise"))
        sample = cfg.vae_sampling == "sample"

        def noise(n: int) -> torch.Tensor | None:
            return torch.randn((n, cfg.latent_dim), generator=gen_z).to(engine.device) if sample else None

        step = 0
        seen: list[np.ndarray] = []
        ue_epoch, ra_epoch = [], []
        for _epoch in range(cfg.epochs):
            model.train()
            ue_losses, ra_losses = [], []
            pairs = zip(engine.batches(forget, cfg.batch_size, shuffle=True, generator=gen_f),
                        engine.batches(retain, cfg.batch_size, shuffle=True, generator=gen_r))
            for (x_f, _yf, ids_f), (x_r, _yr, ids_r) in pairs:
                e_r = forward_with_features(model, head, x_r)[1]
                e_f = forward_with_features(model, head, x_f)[1]
                rec_r = vae_r(e_r, noise(len(e_r)))[0]
                rec_f = vae_f(e_f, noise(len(e_f)))[0]
                loss = bounded_reconstruction_error(rec_r, e_r) - bounded_reconstruction_error(rec_f, e_f)
                ue_losses.append(optimizer_step(loss, opt_ue, engine, step=step, desc="laf UE"))
                step += 1

                e_r = forward_with_features(model, head, x_r)[1]
                e_f = forward_with_features(model, head, x_f)[1]
                with torch.no_grad():
                    t_r = forward_with_features(teacher, t_head, x_r)[1]
                    t_f = forward_with_features(teacher, t_head, x_f)[1]
                loss = alignment_loss(e_r, t_r, e_f, t_f, cfg.temperature)
                ra_losses.append(optimizer_step(loss, opt_ra, engine, step=step, desc="laf RA"))
                step += 1
                seen += [ids_f.numpy(), ids_r.numpy()]
            ue_epoch.append(float(np.mean(ue_losses)))
            ra_epoch.append(float(np.mean(ra_losses)))
        model.eval()
        notes = {"ue_loss_per_epoch": ue_epoch, "ra_loss_per_epoch": ra_epoch, "extractor_steps": step,
                 "repair_steps": 0}
        if cfg.repair_epochs > 0:
            repair = engine.fit(model, retain, cfg.recipe().model_copy(update={"lr": cfg.repair_lr,
                                                                                "epochs": cfg.repair_epochs}),
                                seed=derive_seed(context.seed, "laf-repair-order"), params=head.parameters(),
                                desc="laf repair")
            step += repair.steps
            notes["repair_steps"] = repair.steps
            seen.append(repair.seen_ids)
        return UnlearnResult(model, steps=step, notes=notes, seen_ids=np.unique(np.concatenate(seen)))
