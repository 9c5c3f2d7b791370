"""Class unlearning via concepts and data poisoning: infer the forgotten class's concepts with a post-hoc concept
bottleneck and integrated gradients, then relabel (poison) its samples so the model unlearns them (Chang et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import DataError, MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._common import head_features
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class ConceptPoisonConfig(OptimConfig):
    """Settings. The paper's concept banks come from annotated concept data sets (CUB, Broden) or text (CLIP); the
    digits have none, so concepts are found without labels (see :func:`concept_bank`). Fine-tuning defaults as random
    labelling (10 epochs, SGD lr 0.01, batch 256; Fan et al. 2024 App. C), the paper's own values could not be read
    offline."""

    n_concepts: int = Field(24, ge=2, description="size of the concept bank (k-means centroids of θ_o's features)")
    top_k: int = Field(4, ge=1, description="concepts attributed to the forgotten class that are unlearned")
    ig_steps: int = Field(32, ge=2, description="Riemann steps of integrated gradients (right end points)")
    pcbm_steps: int = Field(300, ge=1, description="Adam steps fitting the sparse concept bottleneck")
    pcbm_l1: float = Field(1e-3, ge=0, description="L1 penalty of the bottleneck's weights (PCBM's sparsity)")
    poison: Literal["targeted", "random"] = Field(
        "targeted", description="targeted: the label the bottleneck predicts once the class's concepts are removed; "
        "random: a uniformly drawn other label")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)


@dataclass
class ConceptBottleneck:
    """A post-hoc concept bottleneck (Yuksekgonul, Wang & Zou, ICLR 2023, arXiv:2205.15480): concept scores
    c(x) = C (f(x) − μ) (C: unit concept vectors (k, d), μ the mean feature) and a sparse linear classifier
    g(c) = W c + b (W (K, k))."""

    concepts: torch.Tensor
    mean: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Concept scores (n, k) of penultimate features (n, d)."""
        return (features.double() - self.mean) @ self.concepts.T

    def logits(self, c: torch.Tensor) -> torch.Tensor:
        return c @ self.weight.T + self.bias


def concept_bank(features: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsupervised concepts: the k-means centroids (scikit-learn, seeded) of the features (n, d) minus their mean,
    normalised — each a direction in θ_o's feature space shared by a group of samples (ACE, Ghorbani et al., NeurIPS
    2019, arXiv:1902.03129, in place of annotated concept sets). Returns (concepts (k, d) float64, mean (d,)).

    Raises:
        DataError: fewer samples than concepts, or non-finite features (NaN / inf inputs or a diverged model).
    """
    from sklearn.cluster import KMeans

    f = features.double()
    if len(f) < k:
        raise DataError(f"the concept bank needs at least n_concepts={k} samples, got {len(f)}")
    if not torch.isfinite(f).all():
        bad = int((~torch.isfinite(f).all(dim=1)).sum())
        raise DataError(f"the concept bank got non-finite features for {bad} of {len(f)} samples (NaN / inf inputs, "
                        "or a model whose outputs are not finite); check the data and θ_o")
    mu = f.mean(0)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(f.numpy())
    cent = torch.as_tensor(km.cluster_centers_, dtype=torch.float64) - mu
    return F.normalize(cent, dim=1), mu


def fit_bottleneck(scores: torch.Tensor, labels: np.ndarray, num_classes: int, *, l1: float, steps: int,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The PCBM's interpretable predictor: multinomial logistic regression on concept scores (n, k) with an L1 penalty
    on its weights (PCBM: elastic net, arXiv:2205.15480 Eq. 2), fitted with Adam from zero. Returns (W (K, k), b (K,))."""
    torch.manual_seed(seed)
    c = scores.double()
    s = c.std(0).clamp_min(1e-8)
    y = torch.as_tensor(labels, dtype=torch.long)
    w = torch.zeros(num_classes, c.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy((c / s) @ w.T + b, y) + l1 * w.abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (w / s).detach(), b.detach()  # weights on the unstandardised scores


def integrated_gradients(fn, x: torch.Tensor, baseline: torch.Tensor, steps: int = 32) -> torch.Tensor:
    """Integrated gradients (Sundararajan, Taly & Yan, ICML 2017, arXiv:1703.01365 Eq. 3, right Riemann sum):
    (x − x′) ⊙ (1/m) Σ_{s=1..m} ∂fn(x′ + (s/m)(x − x′))/∂x for inputs x (n, k), baseline x′ (k,) or (n, k), and a
    scalar-per-row function ``fn`` ((n, k) → (n,)). Returns attributions (n, k); their row sums approach
    fn(x) − fn(x′) (completeness) as m grows."""
    x = x.double()
    base = baseline.double().expand_as(x)
    total = torch.zeros_like(x)
    for s in range(1, steps + 1):
        p = (base + (s / steps) * (x - base)).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(p).sum(), p)
        total += g
    return (x - base) * total / steps


def class_concepts(bottleneck: ConceptBottleneck, scores: torch.Tensor, labels: np.ndarray, target: int, top_k: int,
                   steps: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The concepts attributed to class ``target``: integrated gradients of the bottleneck's target logit over the
    concept scores of the target's samples (baseline: the mean scores of the other classes), averaged; among the
    concepts the class *expresses* (mean score above the baseline), the ``top_k`` largest positive mean attributions.
    (A concept the class lacks can also get a positive attribution — its absence argues for the class — but it is not
    the class's concept and unlearning it would touch the other classes.) Returns (selected concept indices, sorted by
    attribution; the mean attribution of every concept (k,)).

    Raises:
        MethodError: no sample of ``target``, or no concept with a positive attribution.
    """
    lab = np.asarray(labels)
    own = scores[torch.as_tensor(lab == target)]
    rest = scores[torch.as_tensor(lab != target)]
    if len(own) == 0:
        raise MethodError(f"class {target} has no sample: nothing to attribute")
    baseline = rest.mean(0) if len(rest) else torch.zeros(scores.shape[1], dtype=torch.float64)
    attr = integrated_gradients(lambda c: bottleneck.logits(c)[:, target], own, baseline, steps).mean(0)
    expressed = own.mean(0) > baseline
    order = [int(i) for i in torch.argsort(attr, descending=True) if attr[i] > 0 and expressed[i]]
    chosen = order[:top_k]
    if not chosen:
        raise MethodError(f"no concept is positively attributed to class {target}; raise n_concepts")
    return np.asarray(chosen, dtype=np.int64), attr.numpy()


@METHODS.register("concept_poison", config=ConceptPoisonConfig)
class ConceptPoison(Unlearner):
    """Forget a class by unlearning its concepts: poison its samples with labels chosen without those concepts.

    Chang, Zhu, Xu, Liu & Zhou, "Class Machine Unlearning for Complex Data via Concepts Inference and Data Poisoning",
    arXiv:2405.15662: (1) a post-hoc concept bottleneck (:class:`ConceptBottleneck`) on θ_o's penultimate features
    — concept bank (:func:`concept_bank`), sparse linear predictor (:func:`fit_bottleneck`); (2) integrated gradients
    over the concept scores pick the concepts attributed to each forgotten class (:func:`class_concepts`);
    (3) data poisoning: each forget sample is relabelled — *targeted*: the bottleneck's prediction once the selected
    concepts are set to the other classes' mean score (what the sample is, without the class's concepts); *random*:
    a uniform other label — and θ_o is fine-tuned on the poisoned D_f together with D_r (SGD, ``epochs``).

    The concept bank is unsupervised (k-means of θ_o's features) because the digits have no concept annotations;
    the paper uses annotated / text-derived concepts. ``notes`` record the selected concepts and their attributions.
    """

    needs_retain = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-4, 0.1), "epochs": Int(1, 20), "top_k": Int(1, 8)}
    source = "Chang et al., arXiv:2405.15662 (concepts + data poisoning); PCBM arXiv:2205.15480; IG arXiv:1703.01365"
    smoke_params = {"epochs": 1, "pcbm_steps": 20, "n_concepts": 6, "top_k": 2, "ig_steps": 4}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        feats, labels, ids = head_features(model, [forget, retain], engine)
        seed = derive_seed(context.seed, "concept_poison")
        concepts, mu = concept_bank(feats, min(c.n_concepts, len(feats)), seed % (2 ** 31))
        bn = ConceptBottleneck(concepts, mu, torch.zeros(0), torch.zeros(0))
        scores = bn.scores(feats)
        k_cls = forget.num_classes
        bn.weight, bn.bias = fit_bottleneck(scores, labels, k_cls, l1=c.pcbm_l1, steps=c.pcbm_steps, seed=seed)
        n_f = len(forget)
        f_scores, f_labels = scores[:n_f], labels[:n_f]
        rng = np.random.default_rng(seed)
        new_labels = f_labels.copy()
        selected: dict[int, list[int]] = {}
        for t in np.unique(f_labels):
            chosen, attr = class_concepts(bn, scores, labels, int(t), c.top_k, c.ig_steps)
            selected[int(t)] = chosen.tolist()
            rows = np.flatnonzero(f_labels == t)
            if c.poison == "random":
                shift = rng.integers(1, k_cls, size=len(rows))
                new_labels[rows] = (t + shift) % k_cls
                continue
            others = scores[torch.as_tensor(labels != t)].mean(0)
            ablated = f_scores[torch.as_tensor(rows)].clone()
            ablated[:, torch.as_tensor(chosen)] = others[torch.as_tensor(chosen)]
            logits = bn.logits(ablated)
            logits[:, int(t)] = -torch.inf
            new_labels[rows] = logits.argmax(1).numpy()
        data = forget.relabel(new_labels, "forget_poisoned").concat(retain, "forget_poisoned+retain")
        fit = engine.fit(model, data, c.recipe(), seed=derive_seed(context.seed, "concept_poison-fit"),
                         desc="concept_poison")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"concepts": {str(k): v for k, v in selected.items()},
                                    "relabelled": int((new_labels != f_labels).sum()),
                                    "label_histogram": np.bincount(new_labels, minlength=k_cls).tolist()})


__all__ = ["ConceptBottleneck", "ConceptPoison", "class_concepts", "concept_bank", "fit_bottleneck",
           "integrated_gradients"]
