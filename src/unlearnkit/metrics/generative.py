"""Generative-model metrics (track ``generative``): what a generator still makes of the forgotten target, how its
other samples changed, and the two papers' own metrics.

Every model is evaluated on the same ``samples`` generations from fixed latents (GAN: the same z; DDPM: the same
initial noise and deterministic DDIM), so θ_u, θ_o and θ_r are compared sample for sample. Generations and their
readings are computed once per model and evaluation point (shared by every row there).

- ``gen_target``: **target share** — % of generations the judge classifier assigns to the target (class, or the
  attribute's ink rule); should fall to the oracle's (θ_r never saw the target), not below it. Also the judge's
  mean confidence on the other generations (are they still digits?) and a sample grid for the report.
- ``gen_fid``: **digits-FID** (Heusel et al., NeurIPS 2017, arXiv:1706.08500): the Fréchet distance between Gaussians
  fitted to the judge's penultimate features of θ_u's *non-target* generations and of θ_o's non-target generations
  (utility kept: lower is better), and to the held-out real non-target images. Inception-v3 weights cannot be
  downloaded here, so the feature extractor is the task's own judge classifier; values are not comparable with
  Inception FIDs. (torchmetrics' FID needs torch-fidelity's Inception weights; the formula is computed here with
  scipy's ``sqrtm``, as pytorch-fid does.)
- ``gen_clip``: Text-to-Unlearn's **degree of unlearning** γ (Nagasubramaniam et al., arXiv:2504.01218 §4): the
  Wasserstein-1 distance between the distributions of image–text scores (CLIP score of each generation with the
  target's description) of θ_o and θ_u; larger = the target concept moved more. And the mean target CLIP score.
- ``entangled``: ForgetMe's **Entangled** (Yu et al., EAAI 2025; reference ``tools/entangled.py``) on paired
  generations: for every latent whose θ_o generation shows the target, the "original" is θ_o's image, the
  "background" θ_u's image from the same latent, the mask θ_o's object (stroke) pixels. Entangled-D combines
  similarity S (inner similarity × outer change, harmonic) and consistency C (mean/σ agreement of the background's
  inner and outer regions); Entangled-S is C alone (unpaired). See :func:`entangled_d`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import DataError
from unlearnkit.metrics.base import EvaluationContext, Metric, MetricOutput
from unlearnkit.registry import METRICS

#: the reference implementation's stabiliser (tools/entangled.py: EPS = 1e-6)
ENTANGLED_EPS = 1e-6
#: SSIM's stabilisers for a dynamic range L = 1: C1 = (0.01 L)², C2 = (0.03 L)² (Wang et al., IEEE TIP 2004, Eq. 6, 10)
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2


# ---------------------------------------------------------------------------------------------------------------------
# formulas
# ---------------------------------------------------------------------------------------------------------------------
def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` (n, d) and ``b`` (m, d):
    ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) (Dowson & Landau 1982; FID, arXiv:1706.08500 Eq. 6).

    As pytorch-fid: a non-finite square root is retried with ``eps``·I added to both covariances; the imaginary part
    of round-off is dropped. Covariances are unbiased (ddof 1).

    Raises:
        DataError: fewer than 2 rows in a set, or different feature sizes.
    """
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise DataError(f"frechet_distance needs two (n, d) feature arrays of the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise DataError(f"frechet_distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    import warnings

    with warnings.catch_warnings():  # singular covariances (dead features) are handled below, as in pytorch-fid
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sa @ sb)
        if not np.isfinite(covmean).all():
            off = np.eye(sa.shape[0]) * eps
            covmean = linalg.sqrtm((sa + off) @ (sb + off))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean), 0.0))


def degree_of_unlearning(before: np.ndarray, after: np.ndarray) -> float:
    """γ = W₁(P_before, P_after): the Wasserstein-1 distance between two empirical distributions of image–text scores
    (scipy's ``wasserstein_distance``; Text-to-Unlearn, arXiv:2504.01218 §4).

    Raises:
        DataError: an empty or non-finite score array.
    """
    from scipy.stats import wasserstein_distance

    a, b = np.asarray(before, dtype=np.float64).ravel(), np.asarray(after, dtype=np.float64).ravel()
    if not len(a) or not len(b) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("degree_of_unlearning needs two non-empty arrays of finite scores")
    return float(wasserstein_distance(a, b))


def class_coverage(labels: np.ndarray, reference: np.ndarray, num_classes: int) -> float:
    """100 · Σ_c min(p_c, q_c) = 100 · (1 − TV(p, q)) (%) for the class histograms p of ``labels`` and q of
    ``reference`` (int arrays); NaN when either is empty."""
    a, b = np.asarray(labels, dtype=np.int64), np.asarray(reference, dtype=np.int64)
    if not len(a) or not len(b):
        return float("nan")
    p = np.bincount(a, minlength=num_classes) / len(a)
    q = np.bincount(b, minlength=num_classes) / len(b)
    return float(100.0 * np.minimum(p, q).sum())


def _as_hwc(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise DataError(f"{what} must be an image (H, W) or (H, W, C) with values in [0, 1], got shape {a.shape}")
    return a


def _regions(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return img[mask].reshape(-1), img[~mask].reshape(-1)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size and b.size else 0.0


def _consistency(inner: np.ndarray, outer: np.ndarray, c1: float, c2: float) -> float:
    """C = M · V with M = (2 μ_in μ_out + c1)/(μ_in² + μ_out² + c1 + EPS), V = (2 σ_in σ_out + c2)/(σ_in² + σ_out² + c2
    + EPS) over the pixel values (channels pooled) of the two regions (an empty region: μ = σ = 0)."""
    mi, vi = (float(inner.mean()), float(inner.var())) if inner.size else (0.0, 0.0)
    mo, vo = (float(outer.mean()), float(outer.var())) if outer.size else (0.0, 0.0)
    m = (2 * mi * mo + c1) / (mi ** 2 + mo ** 2 + c1 + ENTANGLED_EPS)
    v = (2 * np.sqrt(max(vi, 0.0)) * np.sqrt(max(vo, 0.0)) + c2) / (vi + vo + c2 + ENTANGLED_EPS)
    return float(m * v)


def _check_pair(mask: Any, *images: np.ndarray) -> np.ndarray:
    m = np.asarray(mask.detach().cpu() if torch.is_tensor(mask) else mask)
    if m.ndim != 2:
        raise DataError(f"the Entangled mask must be a 2-D boolean array (H, W), got shape {m.shape}")
    m = m.astype(bool) if m.dtype == bool else m >= 0.5
    for img in images:
        if img.shape[:2] != m.shape:
            raise DataError(f"Entangled: image size {img.shape[:2]} does not match the mask's {m.shape}; pass the "
                            "original, the edited image and the mask at one resolution")
    if len(images) == 2 and images[0].shape != images[1].shape:
        raise DataError(f"Entangled-D: the original image {images[0].shape} and the edited image {images[1].shape} "
                        "differ in size; resize one to the other before comparing")
    return m


def entangled_d(original: Any, edited: Any, mask: Any, alpha: float = 0.5, beta: float = 0.5, *,
                stabilized: bool = False) -> float:
    """Entangled-D of one paired edit (ForgetMe, ``tools/entangled.py``: ``entangled_paired``).

    With X = ``original``, Y = ``edited`` (images (H, W) or (H, W, C) in [0, 1]) and the inner region I = ``mask``
    (True = the forgotten object), outer O = ¬I:

        S_in = 1 − RMSE(X_I, Y_I),  S_out = RMSE(X_O, Y_O),  S = 2 S_in (1 − S_out) / (S_in + (1 − S_out) + EPS),
        C = consistency(Y_I, Y_O) (:func:`_consistency`),   Entangled-D = (α + β) S C / (α C + β S + EPS),

    EPS = 1e-6, α = β = 0.5 (the reference's defaults). ``stabilized`` adds SSIM's constants C1 = 1e-4, C2 = 9e-4 to
    the consistency terms: on black backgrounds (digits) μ = σ = 0 in both regions makes the reference's M and V 0/0
    → 0 although the regions agree perfectly; the constants make them 1 (a deviation the generative track uses and
    states).

    Raises:
        DataError: the images differ in size, or the mask does not match them.
    """
    x, y = _as_hwc(original, "the original image"), _as_hwc(edited, "the edited image")
    m = _check_pair(mask, x, y)
    xi, xo = _regions(x, m)
    yi, yo = _regions(y, m)
    s_in = 1.0 - _rmse(xi, yi)
    s_out = _rmse(xo, yo)
    s = 2.0 * s_in * (1.0 - s_out) / (s_in + (1.0 - s_out) + ENTANGLED_EPS)
    c1, c2 = (SSIM_C1, SSIM_C2) if stabilized else (0.0, 0.0)
    c = _consistency(yi, yo, c1, c2)
    return float((alpha + beta) * s * c / (alpha * c + beta * s + ENTANGLED_EPS))


def entangled_s(edited: Any, mask: Any, *, stabilized: bool = False) -> float:
    """Entangled-S of one unpaired image (the reference's ``entangled_single``: α = 0, β = 1, i.e. the consistency C of
    the edited image's inner and outer regions). Raises :class:`DataError` when the mask does not match the image."""
    y = _as_hwc(edited, "the edited image")
    m = _check_pair(mask, y)
    yi, yo = _regions(y, m)
    c1, c2 = (SSIM_C1, SSIM_C2) if stabilized else (0.0, 0.0)
    return _consistency(yi, yo, c1, c2)


# ---------------------------------------------------------------------------------------------------------------------
# evaluation context
# ---------------------------------------------------------------------------------------------------------------------
class GenerativeEvalContext(EvaluationContext):
    """One generator under evaluation: its generations from the task's fixed latents and their readings, computed
    once per weights and shared by every row of the evaluation point (θ_o's and θ_r's included).

    Args (besides :class:`EvaluationContext`'s): ``samples`` generations from latents seeded by ``sample_seed``;
    ``grid`` of them kept for the report.
    """

    def __init__(self, model: nn.Module, task: Any, engine: Any, *, samples: int = 400, sample_seed: int = 2024,
                 grid: int = 64, seed: int = 0, references: dict[str, Any] | None = None,
                 shared: dict[Any, Any] | None = None, policy: Any = None) -> None:
        super().__init__(model, task, engine, seed=seed, references=references, shared=shared, policy=policy)
        self.samples, self.sample_seed, self.grid = int(samples), int(sample_seed), int(grid)
        self._query_unit = "image"

    @property
    def guide(self) -> Any:
        return self.task.guide

    def _own(self, key: Any, fn: Any) -> Any:
        ck = ("ref", self.model_sha(self.model), key)
        if ck not in self.shared:
            self.shared[ck] = fn()
        return self.shared[ck]

    def generations(self) -> torch.Tensor:
        """(samples, 1, H, W) float32 in [−1, 1] (CPU), from the fixed latents."""
        def make() -> torch.Tensor:
            import time

            t0 = time.perf_counter()
            self.model.to(self.engine.device)
            out = self.model.generate(self.samples, self.sample_seed)
            self.timed_query(time.perf_counter() - t0, self.samples, "image")
            return out

        return self._own(("gen", self.samples, self.sample_seed), make)

    def judged(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(judge probabilities (n, 10), judge features (n, c), is-target boolean (n,)) of the generations."""
        def make() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
            x = self.generations()
            probs, feats = self.guide.judge_outputs(x)
            return probs, feats, self.guide.is_target(x, probs)

        return self._own(("judged", self.samples, self.sample_seed), make)

    def clip_target_scores(self) -> np.ndarray:
        """CLIP score of every generation with the target's description: float64 (n,)."""
        return self._own(("clip", self.samples, self.sample_seed, tuple(self.task.target_texts)),
                         lambda: self.guide.clip_scores(self.generations()))

    def of(self, name: str, fn: str) -> Any:
        """The same reading (``fn``: a method name of this context) of reference ``name`` (θ_o / θ_r)."""
        return self.for_reference(name, ("reading", fn, self.samples, self.sample_seed),
                                  lambda sub: getattr(sub, fn)())

    def real_test_features(self) -> tuple[torch.Tensor, np.ndarray]:
        """(judge features, is-target) of the held-out real images."""
        key = ("real-test", len(self.task.test))
        if key not in self.shared:
            x = self.task.images(self.task.test)
            probs, feats = self.guide.judge_outputs(x)
            from unlearnkit.data.generative import ink

            self.shared[key] = (feats, self.task.is_target_label(self.task.test.labels, ink(x)))
        return self.shared[key]


# ---------------------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------------------
class _GenMetric(Metric):
    track: ClassVar[str] = "generative"
    reads: ClassVar[frozenset[str]] = frozenset({"generations"})


@METRICS.register("gen_target")
class GenTarget(_GenMetric):
    """Share of generations showing the target, and the judge's confidence on the others (all in %)."""

    keys: ClassVar[dict[str, str]] = {
        "target_share": "% of generations the judge assigns to the target (class / attribute); closer to the oracle's "
                        "(which never saw it) is better, θ_o's is the starting point",
        "nontarget_confidence": "mean judge confidence (max probability, %) on the non-target generations: are the "
                                "other samples still clear digits? higher is better",
        "blank_share": "% of generations that are empty canvases (less ink than half the 1 % quantile of the "
                       "training images); they are neither target nor other digits",
        "nontarget_coverage": "100 · (1 − total variation) between the class histograms of the non-target "
                              "generations of this model and of θ_o (%): 100 = the other classes in θ_o's "
                              "proportions, ≈ 100/K' = collapsed onto one class (mode collapse); higher is better",
    }
    source = ("judge-classifier evaluation of class forgetting in generators (Fan et al., SalUn, ICLR 2024, "
              "arXiv:2310.12508 §5: forgetting accuracy of a classifier on generations)")

    def compute(self, ctx: GenerativeEvalContext) -> MetricOutput:
        probs, _, target = ctx.judged()
        from unlearnkit.data.generative import ink

        blank = ctx.task.is_blank(ink(ctx.generations()))
        other = ~target & ~blank
        conf = float(probs[torch.as_tensor(other)].max(1).values.mean()) * 100 if other.any() else float("nan")
        p_o, _, t_o = ctx.of("original", "judged")
        x_o = ctx.of("original", "generations")
        kept_o = ~t_o & ~ctx.task.is_blank(ink(x_o))
        cov = class_coverage(probs.argmax(1).numpy()[other], p_o.argmax(1).numpy()[kept_o], probs.shape[1])
        x = ctx.generations()[: ctx.grid]
        grid = ((x[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        return MetricOutput({"target_share": 100.0 * float(target.mean()), "nontarget_confidence": conf,
                             "nontarget_coverage": cov, "blank_share": 100.0 * float(blank.mean())},
                            {"target": target.astype(np.int8), "label": probs.argmax(1).numpy().astype(np.int8),
                             "grid": grid})


@METRICS.register("gen_fid")
class GenFID(_GenMetric):
    """Digits-FID of the non-target generations to θ_o's non-target generations and to real held-out images."""

    keys: ClassVar[dict[str, str]] = {
        "fid_to_original": "Fréchet distance (judge features) of the non-target generations to θ_o's non-target "
                           "generations; lower = the rest of the distribution kept (θ_o's own is 0)",
        "fid_to_data": "Fréchet distance (judge features) of the non-target generations to the held-out real "
                       "non-target images; lower is better",
    }
    source = "Heusel et al., NeurIPS 2017, arXiv:1706.08500 (FID), with the task's judge as the feature extractor"

    def compute(self, ctx: GenerativeEvalContext) -> MetricOutput:
        _, feats, target = ctx.judged()
        mine = feats[torch.as_tensor(~target)].numpy()
        _, f_o, t_o = ctx.of("original", "judged")
        ref = f_o[torch.as_tensor(~t_o)].numpy()
        real, real_t = ctx.real_test_features()
        out = {}
        for key, other in (("fid_to_original", ref), ("fid_to_data", real[torch.as_tensor(~real_t)].numpy())):
            out[key] = frechet_distance(mine, other) if len(mine) >= 2 and len(other) >= 2 else float("nan")
        return MetricOutput(out)


@METRICS.register("gen_clip")
class GenClip(_GenMetric):
    """Text-to-Unlearn's degree of unlearning γ and the mean CLIP score with the target's description."""

    keys: ClassVar[dict[str, str]] = {
        "degree_of_unlearning": "γ = W₁ between θ_o's and this model's distributions of CLIP scores with the target "
                                "text; larger = the concept moved more (θ_o's is 0; compare with θ_r's)",
        "clip_target_score": "mean CLIP score (cosine) of the generations with the target's description; lower = "
                             "less of the target",
    }
    source = "Nagasubramaniam et al., arXiv:2504.01218 §4 (degree of unlearning); CLIP, arXiv:2103.00020"

    def compute(self, ctx: GenerativeEvalContext) -> MetricOutput:
        mine = ctx.clip_target_scores()
        before = ctx.of("original", "clip_target_scores")
        return MetricOutput({"degree_of_unlearning": degree_of_unlearning(before, mine),
                             "clip_target_score": float(mine.mean())}, {"clip_target_score": mine})


class EntangledConfig(Frozen):
    """Entangled settings: α, β of Entangled-D (reference 0.5, 0.5); the object threshold and dilation of the masks;
    ``stabilized`` adds SSIM's constants to the consistency term (default on: digit backgrounds are black)."""

    alpha: float = Field(0.5, ge=0, description="weight of consistency in Entangled-D (reference 0.5)")
    beta: float = Field(0.5, ge=0, description="weight of similarity in Entangled-D (reference 0.5)")
    mask_threshold: float = Field(0.3, gt=0, lt=1, description="object pixels: intensity ≥ this in [0, 1]")
    dilate: int = Field(1, ge=0, description="pixels the object mask is grown by")
    stabilized: bool = Field(True, description="SSIM constants in the consistency term (black backgrounds)")


@METRICS.register("entangled", config=EntangledConfig)
class Entangled(_GenMetric):
    """ForgetMe's Entangled-D (paired) and Entangled-S (unpaired) on the generations whose θ_o version shows the
    target: θ_o's image is the original, this model's image from the same latent the background, θ_o's stroke
    pixels the mask."""

    keys: ClassVar[dict[str, str]] = {
        "entangled_d": "mean Entangled-D over the target latents (0–1); higher = the object removed cleanly while the "
                       "rest stays (θ_o's own: S = 1, C of the object itself)",
        "entangled_s": "mean Entangled-S (consistency of the in-painted region with its surroundings, 0–1); higher is "
                       "better",
        "entangled_pairs": "number of latents whose θ_o generation shows the target (the pairs averaged over)",
    }
    source = "Yu et al., ForgetMe, EAAI 2025 (github.com/YuZhenyuLindy/ForgetMe tools/entangled.py)"

    def __init__(self, config: Any = None) -> None:
        self.config = config or EntangledConfig()

    def compute(self, ctx: GenerativeEvalContext) -> MetricOutput:
        from unlearnkit.data.generative import stroke_mask, to_unit

        c = self.config
        x_o = to_unit(ctx.of("original", "generations"))
        _, _, t_o = ctx.of("original", "judged")
        x_u = to_unit(ctx.generations())
        idx = np.flatnonzero(t_o)
        masks = stroke_mask(x_o[idx], c.mask_threshold, c.dilate) if len(idx) else torch.zeros(0)
        d_vals, s_vals = [], []
        for j, i in enumerate(idx):
            m = masks[j].numpy()
            if m.all() or not m.any():
                continue
            d_vals.append(entangled_d(x_o[i, 0].numpy(), x_u[i, 0].numpy(), m, c.alpha, c.beta,
                                      stabilized=c.stabilized))
            s_vals.append(entangled_s(x_u[i, 0].numpy(), m, stabilized=c.stabilized))
        def mean(v: list[float]) -> float:
            return float(np.mean(v)) if v else float("nan")

        return MetricOutput({"entangled_d": mean(d_vals), "entangled_s": mean(s_vals),
                             "entangled_pairs": float(len(d_vals))},
                            {"entangled_d": np.asarray(d_vals, dtype=np.float64)})


__all__ = ["ENTANGLED_EPS", "SSIM_C1", "SSIM_C2", "GenerativeEvalContext", "class_coverage", "degree_of_unlearning",
           "entangled_d",
           "entangled_s", "frechet_distance"]
