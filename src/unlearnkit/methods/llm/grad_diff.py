"""Gradient Difference (Liu et al. 2022, "Continual learning and private unlearning", PMLR 199; TOFU baseline):
γ · (gradient ascent on D_f) + α · (NLL on D_r). Defaults γ = α = 1, retain NLL, as open-unlearning's
``configs/trainer/GradDiff.yaml``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from unlearnkit.methods.llm.ga import GradientAscent
from unlearnkit.methods.llm.base import RetainRegConfig
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class GradDiffConfig(RetainRegConfig):
    """GradDiff: ``retain_loss`` nll (default) or kl, weight α = ``retain_weight``."""

    retain_loss: Literal["nll", "kl"] = "nll"
    retain_weight: float = Field(1.0, ge=0)


@METHODS.register("grad_diff", config=GradDiffConfig)
class GradDiff(GradientAscent):
    """Gradient ascent on D_f plus a descent term on D_r (each forget example paired with one retain example)."""

    source = "Liu et al. 2022 (PMLR 199); TOFU baseline (arXiv:2401.06121)"
    #: unlearnkit tune: lr, epochs and the retain weight
    search_space = {"lr": LogFloat(1e-5, 5e-3), "epochs": Int(1, 10), "retain_weight": LogFloat(0.1, 10.0)}
