"""Bad Teacher ("blindspot" unlearning): distil a competent teacher on D_r and an incompetent one on D_f."""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._common import freeze
from unlearnkit.models import reinitialize
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat


class BadTeacherConfig(OptimConfig):
    """Bad-Teacher settings. Defaults from the authors' ``CIFARSuper20_Rocket_Unlearn.ipynb`` and ``unlearn.py``
    (github.com/vikram2000b/bad-teaching-unlearning; Chundawat et al., AAAI 2023, arXiv:2205.08096, §4):

    Fields:
        epochs: passes over D_f ∪ (sampled D_r); default 1.
        optimizer / lr / weight_decay: Adam, 1e-4 per step, no weight decay (``torch.optim.Adam(lr=0.0001)``).
        batch_size: samples per step; default 256.
        temperature: KL temperature τ > 0 (``KL_temperature``); default 1.
        retain_fraction: fraction of D_r drawn (seeded, without replacement) for the unlearning set, in (0, 1];
            default 0.3 (``random.sample(retain_train, int(0.3 * len(retain_train)))``; the paper uses "30% of D_r").
        reduction: ``"batchmean"`` (default; the mathematical KL averaged over the batch) or ``"mean"`` (PyTorch's
            element-wise mean used by the reference code, which also divides by the number of classes C).
    """

    epochs: int = Field(1, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, ge=1)
    temperature: float = Field(1.0, gt=0)
    retain_fraction: float = Field(0.3, gt=0, le=1)
    reduction: Literal["batchmean", "mean"] = "batchmean"


def bad_teacher_loss(student_logits: torch.Tensor, competent_logits: torch.Tensor, incompetent_logits: torch.Tensor,
                     is_forget: torch.Tensor, temperature: float, reduction: str = "batchmean") -> torch.Tensor:
    """The Bad-Teacher KD loss.

    Target per row: t_i = softmax(u_i/τ) if ``is_forget[i]`` else softmax(c_i/τ) (u: incompetent, c: competent
    teacher logits). Loss = KL(t_i ‖ softmax(s_i/τ)) = Σ_k t_ik (log t_ik − log s_ik), summed over classes and averaged
    over rows (``batchmean``) or over rows × classes (``mean``). No τ² factor (as in the reference code).

    Args:
        student_logits, competent_logits, incompetent_logits: float (b, C).
        is_forget: bool or {0,1} tensor (b,), True for rows from D_f.
        temperature: τ > 0.

    Returns:
        scalar float tensor ≥ 0; 0 iff the student's softened distribution equals the target on every row.
    """
    flag = is_forget.to(student_logits.dtype).unsqueeze(1)
    target = flag * torch.softmax(incompetent_logits / temperature, dim=1) + \
        (1 - flag) * torch.softmax(competent_logits / temperature, dim=1)
    log_s = torch.log_softmax(student_logits / temperature, dim=1)
    rows = nn.functional.kl_div(log_s, target.detach(), reduction="none").sum(dim=1)
    return rows.mean() if reduction == "batchmean" else rows.mean() / student_logits.shape[1]


def make_incompetent_teacher(model: nn.Module, context: UnlearnContext, seed: int) -> nn.Module:
    """A randomly initialised model of ``model``'s architecture, deterministic in ``seed``.

    Uses ``context.model_factory(seed)`` when given, else a deep copy of ``model`` re-initialised with every module's
    ``reset_parameters`` under ``seed``. The result is in eval mode with ``requires_grad=False``.

    Raises:
        MethodError: no factory is given and some parameter's module has no ``reset_parameters``.
    """
    if context.model_factory is not None:
        teacher = context.model_factory(seed)
    else:
        teacher = copy.deepcopy(model)
        try:
            reinitialize(teacher, seed)
        except ConfigError as err:
            raise MethodError(
                f"bad_teacher cannot build the incompetent (random) teacher: {err}. Pass a model_factory in the "
                "UnlearnContext"
            ) from err
    return freeze(teacher)


@METHODS.register("bad_teacher", config=BadTeacherConfig)
class BadTeacher(Unlearner):
    """Bad Teacher / blindspot unlearning (Chundawat, Tarun, Mandal, Kankanhalli; AAAI 2023; arXiv:2205.08096).

    Student θ_s ← θ_o; competent teacher T_c = frozen θ_o; incompetent teacher T_u = a randomly initialised model of
    the same architecture (seeded from the run seed; ``context.model_factory`` when given). The unlearning set is
    U = D_f ∪ S with S a seeded ``retain_fraction`` sample of D_r; each sample carries only a flag l ∈ {1 (D_f),
    0 (D_r)}. One loop of Adam steps minimises

        L = (1/b) Σ_i KL( l_i·softmax(T_u(x_i)/τ) + (1−l_i)·softmax(T_c(x_i)/τ) ‖ softmax(θ_s(x_i)/τ) )

    so the student copies the competent teacher on D_r and the random teacher on D_f. Labels are never read
    (``needs_labels = False``): only the D_f / D_r membership.

    Deviations from the reference (github.com/vikram2000b/bad-teaching-unlearning, ``UnlearnerLoss``): the reference
    calls ``F.kl_div`` with the default ``reduction='mean'``, which averages over rows *and* classes (PyTorch warns
    that this is not the KL divergence); we default to ``batchmean`` (the KL averaged over rows), ``reduction: mean``
    restores the reference scaling (a constant factor 1/C, which Adam nearly absorbs).

    Errors: MethodError (empty D_f or D_r, shared ids, model cannot be re-initialised), DivergenceError.
    """

    needs_retain = True
    needs_labels = False
    smoke_params = {"epochs": 1, "batch_size": 32, "lr": 1e-3}
    source = "Chundawat et al., AAAI 2023, arXiv:2205.08096"
    #: unlearnkit tune: Adam lr (reference 1e-4), epochs and the sampled fraction of D_r
    search_space = {"lr": LogFloat(1e-5, 1e-2), "epochs": Int(1, 5), "retain_fraction": Float(0.1, 1.0)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg: BadTeacherConfig = self.config  # type: ignore[assignment]
        if forget.num_classes < 2:
            raise MethodError(f"bad_teacher needs a task with at least 2 classes, got {forget.num_classes}")
        n_sub = max(1, int(cfg.retain_fraction * len(retain)))
        rng = np.random.default_rng(derive_seed(context.seed, "bad_teacher-retain-subset"))
        subset = retain.take(np.sort(rng.choice(len(retain), size=n_sub, replace=False)), "retain_subset")
        # labels replaced by the membership flag (1 = forget, 0 = retain), as the reference's UnLearningData does
        data = forget.relabel(np.ones(len(forget), dtype=np.int64), "forget_flag").concat(
            subset.relabel(np.zeros(n_sub, dtype=np.int64), "retain_flag"), "unlearning_set")
        dev = engine.device
        competent = freeze(copy.deepcopy(model).to(dev))
        incompetent = make_incompetent_teacher(model, context, derive_seed(context.seed, "bad_teacher-incompetent"))
        incompetent.to(dev)
        tau, red = cfg.temperature, cfg.reduction

        def loss_fn(student: nn.Module, x: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                c_logits, u_logits = competent(x), incompetent(x)
            return bad_teacher_loss(student(x), c_logits, u_logits, flag, tau, red)

        fit = engine.fit(model, data, cfg.recipe(), seed=derive_seed(context.seed, "bad_teacher-order"),
                         loss_fn=loss_fn, desc="bad_teacher")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"samples": fit.samples, "retain_subset": n_sub, "forget": len(forget),
                                    "losses": fit.losses})
