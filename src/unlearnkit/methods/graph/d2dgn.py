"""D2DGN, "Distill to Delete" (Sinha, Mandal, Kankanhalli 2023, arXiv:2309.16173)."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.graph._common import (GraphUnlearner, check_loss, forget_elements, link_elems,
                                              retain_elements, sample_negatives)
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class D2DGNConfig(Frozen):
    """D2DGN settings. The paper gives the loss terms; the weights, temperature and steps below are ours (no
    reference implementation was available to us): unit weights, temperature 1, 100 Adam steps at lr 1e-3."""

    epochs: int = Field(100, ge=1, description="full-batch distillation steps")
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(1.0, gt=0, description="τ of the soft targets")
    response_weight: float = Field(1.0, ge=0, description="weight of the response-based KL on retained elements")
    feature_weight: float = Field(1.0, ge=0, description="weight of the embedding MSE on retained nodes")
    forget_weight: float = Field(1.0, ge=0, description="weight of the KL on deleted elements")


@METHODS.register("d2dgn", config=D2DGNConfig)
class D2DGN(GraphUnlearner):
    """Distill to Delete: a student (initialised from θ_o) distils the original model on the retained part of the
    graph and an uninformed teacher on the deleted part, on the retain graph.

    loss = w_r·τ²·KL(p_T^τ ‖ p_S^τ)[retained] + w_f·MSE(h_S, h_T)[retained nodes] + w_d·KL(p_U ‖ p_S)[deleted]

    - response-based soft targets p_T^τ = softmax(f_T/τ) (node task) or σ(s_T/τ) per pair (link task, retained
      edges and as many sampled non-edges) from θ_o, the competent teacher;
    - feature-based knowledge: the node embeddings of the last hidden layer (link task: the output embeddings) of
      θ_o on the retained nodes;
    - deleted elements (:func:`forget_elements`): KL to the outputs of a randomly initialised network of the same
      architecture (the uninformed teacher), so deleted elements are predicted as an untrained model would.

    Teachers run on the retain graph, so no message from a deleted element reaches the student through them.
    Our reading of the paper (arXiv:2309.16173 §3): its text names response-based soft targets and feature-based
    embeddings on the retained part and a KL divergence on the deleted part; the choice of the uninformed teacher
    as the KL target for the deleted part is ours (a bounded target, as in Chundawat et al.'s bad teacher).
    """

    source: ClassVar[str] = "Sinha, Mandal, Kankanhalli, Distill to Delete (D2DGN), 2023, arXiv:2309.16173"
    #: unlearnkit tune: lr, steps and the forget weight
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LogFloat(1e-4, 1e-2),
        "epochs": Int(10, 300, log=True),
        "forget_weight": LogFloat(0.1, 10.0),
    }
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 3}

    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        if context.model_factory is None:
            raise MethodError("d2dgn needs a model factory for its uninformed teacher")
        v = task.view("retain")
        teacher = copy.deepcopy(model).eval()
        uninformed = context.model_factory(derive_seed(context.seed, "d2dgn-uninformed")).eval()
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "d2dgn-negatives"))
        forget = forget_elements(task)
        retain = retain_elements(task)
        tau = cfg.temperature
        with torch.no_grad():
            t_out, t_hid = teacher(v.x, v.edge_index, return_hidden=True)
            u_out = uninformed(v.x, v.edge_index)
        feat_layer = -2 if len(t_hid) > 1 and task.task == "node" else -1
        t_feat = t_hid[feat_layer] if task.task == "node" else t_out
        if task.task == "node":
            r_idx = torch.as_tensor(retain, dtype=torch.long)
            f_idx = torch.as_tensor(forget, dtype=torch.long)
            feat_idx = r_idx
        else:
            f_pairs, _ = link_elems(forget)
            alive = torch.from_numpy(v.alive).nonzero().view(-1)
            feat_idx = alive
            with torch.no_grad():
                u_f = torch.sigmoid(uninformed.decode(u_out, f_pairs)) if f_pairs.numel() else None
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        model.train()
        for step in range(cfg.epochs):
            opt.zero_grad()
            out, hid = model(v.x, v.edge_index, return_hidden=True)
            s_feat = hid[feat_layer] if task.task == "node" else out
            if task.task == "node":
                l_resp = _kl(t_out[r_idx] / tau, out[r_idx] / tau) * tau * tau
                l_forget = _kl(u_out[f_idx], out[f_idx]) if len(f_idx) else out.sum() * 0
            else:
                pairs, _ = link_elems(retain, sample_negatives(task, "retain", len(retain), gen))
                with torch.no_grad():
                    p_t = torch.sigmoid(teacher.decode(t_out, pairs) / tau)
                l_resp = _bkl(p_t, model.decode(out, pairs) / tau) * tau * tau
                l_forget = _bkl(u_f, model.decode(out, f_pairs)) if u_f is not None else out.sum() * 0
            l_feat = nn.functional.mse_loss(s_feat[feat_idx], t_feat[feat_idx])
            loss = cfg.response_weight * l_resp + cfg.feature_weight * l_feat + cfg.forget_weight * l_forget
            check_loss(loss, step, "d2dgn")
            loss.backward()
            opt.step()
        model.eval()
        return UnlearnResult(model, steps=cfg.epochs, notes={"n_forget_elements": int(len(forget))})


def _kl(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) ‖ softmax(logits)), mean over rows."""
    return nn.functional.kl_div(torch.log_softmax(logits, 1), torch.log_softmax(target_logits, 1),
                                reduction="batchmean", log_target=True)


def _bkl(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean Bernoulli KL(p ‖ σ(logits))."""
    q_log, q1_log = nn.functional.logsigmoid(logits), nn.functional.logsigmoid(-logits)
    p = p.clamp(1e-7, 1 - 1e-7)
    return (p * (p.log() - q_log) + (1 - p) * ((1 - p).log() - q1_log)).mean()
