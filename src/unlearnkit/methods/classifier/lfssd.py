"""Loss-free (label-free) Selective Synaptic Dampening (LFSSD)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from unlearnkit.methods.classifier.ssd import SSD, SSDConfig
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import LogFloat


class LFSSDConfig(SSDConfig):
    """LFSSD settings: the same fields as SSD. The paper and its code (the SSD repository's README, "Implementing
    LFSSD") give no separate defaults, so SSD's ResNet-18 values are kept: α = 10, λ = 1, exponent 1, batch size 128.
    Importances are means over samples of |∂ ‖f(x_i)‖₂² / ∂θ| (``estimator="per_sample"``, the default,
    batch-size independent) or, with ``estimator="batch_mean"`` (the README's recipe applied to the reference
    loader), means over batches of |∂ mean_b ‖f(x)‖₂² / ∂θ|, which depend on the batch size.
    """

    selection_weighting: float = Field(10.0, gt=0, description="α: select where I_f > α·I_D (SSD default 10)")
    dampening_constant: float = Field(1.0, gt=0, description="λ: β = min(λ·I_D/I_f, 1) (SSD default 1)")


@METHODS.register("lfssd", config=LFSSDConfig)
class LFSSD(SSD):
    """Loss-Free Selective Synaptic Dampening (Foster, Schoepf, Brintrup, ICLR 2024 Tiny Paper "Loss-Free Machine
    Unlearning", arXiv:2402.19308).

    SSD with the diagonal Fisher replaced by a label-free sensitivity in the spirit of Memory Aware Synapses:
    Ω = E_i |∂ ‖f(x_i)‖₂²/∂θ| per sample by default (the reference README computes
    E_batches |∂ (mean_{x∈batch} ‖f(x)‖₂²)/∂θ| — loss = ‖out‖²_F row-wise, mean over the batch; accumulate |grad|
    instead of grad² — available as ``estimator="batch_mean"``). Ω_D on D = D_r ∪ D_f and Ω_f on D_f; entries with
    Ω_f > α·Ω_D are dampened, θ ← min(λ·Ω_D/Ω_f, 1)·θ. No labels are read (``needs_labels = False``); D is still needed for Ω_D
    unless cached with ``with_train_importance(compute_importances(..., kind="output_norm"))``.

    Hyper-parameters and caching as in :class:`SSD` (α = 10, λ = 1, batch size 128); the arXiv id is the one the
    reference README links (2402.19308).
    """

    needs_labels = False
    importance_kind = "output_norm"
    # α = 2: the conformance task forgets 10 %, where I_f/I_D ≤ |D|/|D_f| = 10 lets α = 10 select nothing
    smoke_params: ClassVar[dict[str, Any]] = {"batch_size": 32, "selection_weighting": 2.0}
    source = "Foster, Schoepf, Brintrup, ICLR 2024 Tiny Paper, arXiv:2402.19308"
    #: unlearnkit tune: α (selection) and λ (dampening), as SSD
    search_space = {"selection_weighting": LogFloat(0.5, 50.0), "dampening_constant": LogFloat(0.1, 10.0)}
