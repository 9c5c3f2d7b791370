"""Golden values of the generative metrics' formulas (Entangled, Fréchet distance, degree of unlearning, coverage)
and of the report's PNG encoder, each computed by hand or by an independent route."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from unlearnkit.errors import DataError
from unlearnkit.metrics.generative import (
    ENTANGLED_EPS,
    SSIM_C1,
    SSIM_C2,
    class_coverage,
    degree_of_unlearning,
    entangled_d,
    entangled_s,
    frechet_distance,
)
from unlearnkit.report.generative import png_bytes, tile

# --- a 4×4 pair, the inner region = the top-left 2×2 block --------------------------------------------------------
MASK = np.zeros((4, 4), dtype=bool)
MASK[:2, :2] = True
# edited image Y: inner (0.4, 0.6, 0.4, 0.6); outer: six 0.0 and six 0.2
Y = np.array([[0.4, 0.6, 0.0, 0.2],
              [0.4, 0.6, 0.0, 0.2],
              [0.0, 0.2, 0.0, 0.2],
              [0.0, 0.2, 0.0, 0.2]])
# original X: inner all 1.0; outer equal to Y's except one pixel 0.4 higher
X = Y.copy()
X[:2, :2] = 1.0
X[3, 3] = 0.6


def _hand_entangled_d(alpha: float = 0.5, beta: float = 0.5) -> float:
    eps = 1e-6
    s_in = 1 - math.sqrt((0.6 ** 2 + 0.4 ** 2 + 0.6 ** 2 + 0.4 ** 2) / 4)   # 1 − RMSE(X_I, Y_I) = 1 − √0.26
    s_out = math.sqrt(0.4 ** 2 / 12)                                         # RMSE(X_O, Y_O): one pixel off by 0.4
    s = 2 * s_in * (1 - s_out) / (s_in + (1 - s_out) + eps)
    mu_in, var_in = 0.5, 0.01                                                # (0.4, 0.6, 0.4, 0.6)
    mu_out, var_out = 0.1, 0.01                                              # six 0.0, six 0.2
    m = 2 * mu_in * mu_out / (mu_in ** 2 + mu_out ** 2 + eps)
    v = 2 * 0.1 * 0.1 / (var_in + var_out + eps)
    c = m * v
    return (alpha + beta) * s * c / (alpha * c + beta * s + eps)


def test_entangled_d_equals_a_hand_computation_on_a_4x4_pair():
    assert entangled_d(X, Y, MASK) == pytest.approx(_hand_entangled_d(), rel=1e-9)
    assert entangled_d(X, Y, MASK, alpha=0.2, beta=0.8) == pytest.approx(_hand_entangled_d(0.2, 0.8), rel=1e-9)


def test_entangled_s_is_the_consistency_of_the_edited_image():
    eps = ENTANGLED_EPS
    hand = (2 * 0.5 * 0.1 / (0.25 + 0.01 + eps)) * (2 * 0.1 * 0.1 / (0.02 + eps))
    assert entangled_s(Y, MASK) == pytest.approx(hand, rel=1e-9)


def test_entangled_channels_are_pooled_like_the_reference():
    # an RGB image with three equal channels gives the grey image's value (the reference pools N×3 values)
    rgb_x, rgb_y = np.repeat(X[:, :, None], 3, axis=2), np.repeat(Y[:, :, None], 3, axis=2)
    assert entangled_d(rgb_x, rgb_y, MASK) == pytest.approx(entangled_d(X, Y, MASK), rel=1e-12)


def test_stabilised_consistency_of_a_black_canvas():
    black = np.zeros((4, 4))
    assert entangled_s(black, MASK) == 0.0  # the reference: 0/0 regularised to 0
    hand = (SSIM_C1 / (SSIM_C1 + ENTANGLED_EPS)) * (SSIM_C2 / (SSIM_C2 + ENTANGLED_EPS))
    assert entangled_s(black, MASK, stabilized=True) == pytest.approx(hand, rel=1e-12)
    assert hand > 0.98


@pytest.mark.parametrize("bad", ["size", "mask", "rank"])
def test_entangled_refuses_mismatched_images(bad):
    if bad == "size":
        with pytest.raises(DataError, match="differ in size|does not match"):
            entangled_d(X, np.zeros((5, 5)), MASK)
    elif bad == "mask":
        with pytest.raises(DataError, match="does not match the mask"):
            entangled_s(Y, np.zeros((3, 3), dtype=bool))
    else:
        with pytest.raises(DataError, match="image"):
            entangled_d(np.zeros((2, 4, 4, 1)), Y, MASK)


def test_frechet_distance_golden_values():
    a, b = np.array([[0.0], [2.0]]), np.array([[3.0], [7.0]])
    # μ 1 vs 5, variances (ddof 1) 2 vs 8: (1−5)² + 2 + 8 − 2√16 = 18
    assert frechet_distance(a, b) == pytest.approx(18.0, abs=1e-9)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # diagonal Gaussians: Σ_k (μ_k − ν_k)² + (σ_k − τ_k)², with the sample moments
    y = rng.normal(size=(400, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([0.0, 1.0, -1.0])
    ma, mb = x.mean(0), y.mean(0)
    sa, sb = x.std(0, ddof=1), y.std(0, ddof=1)
    xd = (x - ma) / x.std(0, ddof=1)  # decorrelated up to sampling noise: compare with a loose tolerance
    assert np.abs(np.corrcoef(xd, rowvar=False) - np.eye(3)).max() < 0.15
    approx = float(((ma - mb) ** 2).sum() + ((sa - sb) ** 2).sum())
    assert frechet_distance(x, y) == pytest.approx(approx, rel=0.05)


def test_frechet_distance_refuses_bad_shapes():
    with pytest.raises(DataError):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(DataError):
        frechet_distance(np.zeros((4, 3)), np.zeros((5, 2)))


def test_degree_of_unlearning_is_the_wasserstein_1_distance():
    s = np.array([0.1, 0.5, 0.2, 0.9])
    assert degree_of_unlearning(s, s + 0.3) == pytest.approx(0.3)
    assert degree_of_unlearning(s, s[::-1]) == pytest.approx(0.0)
    # two point masses: |a − b|; half the mass moved by 1: 0.5
    assert degree_of_unlearning([0.0, 0.0], [0.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(DataError):
        degree_of_unlearning([], [1.0])


def test_class_coverage():
    assert class_coverage(np.array([0, 1]), np.array([1, 0]), 3) == pytest.approx(100.0)
    assert class_coverage(np.array([0, 0, 0, 0]), np.array([0, 1, 2, 3]), 4) == pytest.approx(25.0)
    assert math.isnan(class_coverage(np.array([], dtype=int), np.array([1]), 2))


def test_png_encoder_round_trip():
    img = (np.arange(6 * 5) * 8 % 256).astype(np.uint8).reshape(6, 5)
    data = png_bytes(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # parse the chunks by hand: IHDR size, then the IDAT scanlines (filter byte 0 + the row)
    pos, chunks = 8, {}
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        assert int.from_bytes(data[pos + 8 + n:pos + 12 + n], "big") == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = body
        pos += 12 + n
    assert int.from_bytes(chunks[b"IHDR"][:4], "big") == 5 and int.from_bytes(chunks[b"IHDR"][4:8], "big") == 6
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(6, 6)
    assert (rows[:, 0] == 0).all() and np.array_equal(rows[:, 1:], img)
    pil = pytest.importorskip("PIL.Image")
    import io

    assert np.array_equal(np.asarray(pil.open(io.BytesIO(data))), img)


def test_tile_places_every_image():
    imgs = np.stack([np.full((2, 2), 10 * (i + 1), np.uint8) for i in range(3)])
    g = tile(imgs, cols=2, pad=1, scale=1)
    assert g.shape == (2 * 3 + 1, 2 * 3 + 1)
    assert (g[1:3, 1:3] == 10).all() and (g[1:3, 4:6] == 20).all() and (g[4:6, 1:3] == 30).all()
    assert (g[4:6, 4:6] == 96).all()  # the empty cell is padding
