"""Generated-sample grids of the generative track in the HTML report, rebuilt from the run's files only.

The ``gen_target`` metric stores a grid of each model's first generations (fixed seeds, the same latents for every
model) in its per-sample file (``gen_target.grid``: uint8 (k, H, W), 0 = black); this section draws them as inline
PNG ``data:`` URIs — θ_o, the oracle θ_r and every method side by side, with each row's target share — so a reader
sees what "forgetting a digit" did to the samples. PNG encoding is a few lines of zlib (no imaging library needed).
Numpy only (no torch).
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.report.summary import as_number, latest_rows, row_status

GRID_KEY = "gen_target.grid"


def png_bytes(image: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG of ``image`` (uint8 (H, W)); raises ``ValueError`` for other shapes / dtypes."""
    a = np.asarray(image)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"png_bytes needs a uint8 (H, W) array, got {a.dtype} {a.shape}")
    h, w = a.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))  # filter type 0 per scanline
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def tile(images: np.ndarray, cols: int = 8, pad: int = 1, scale: int = 3) -> np.ndarray:
    """Tile uint8 images (k, H, W) into one (rows·(H+pad)+pad, cols·(W+pad)+pad) grid (grey padding), each pixel
    repeated ``scale`` × ``scale`` times (8×8 digits are legible at 3×)."""
    a = np.asarray(images, dtype=np.uint8)
    if a.ndim != 3 or len(a) == 0:
        raise ValueError(f"tile needs uint8 images (k, H, W) with k ≥ 1, got {a.shape}")
    k, h, w = a.shape
    cols = max(1, min(cols, k))
    rows = -(-k // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 96, dtype=np.uint8)
    for i in range(k):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = a[i]
    return np.kron(out, np.ones((scale, scale), dtype=np.uint8)) if scale > 1 else out


def data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of a uint8 (H, W) image."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def _grid(path: Path) -> np.ndarray | None:
    try:
        z = np.load(path)
    except (OSError, ValueError):
        return None
    with z:
        if GRID_KEY not in z.files:
            return None
        g = np.asarray(z[GRID_KEY])
    return g if g.ndim == 3 and g.dtype == np.uint8 and len(g) else None


def _grids(run_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, np.ndarray]]:
    """(caption, grid) of the first ok row of every model (θ_o, θ_r, then the methods), plain points only."""
    d = Path(run_dir)
    seen: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in latest_rows(rows):
        if row_status(r) != "ok" or r.get("dimensions"):
            continue
        role = "oracle" if r.get("is_oracle") else str(r.get("role") or "method")
        seen.setdefault((role, str(r["method"])), r)
    order = sorted(seen, key=lambda k: ({"original": 0, "oracle": 1}.get(k[0], 2), k[1]))
    out = []
    for role, method in order:
        r = seen[(role, method)]
        stem = f"{method}-seed{r.get('seed')}"
        grid = _grid(d / "per_sample" / f"{stem}.npz")
        if grid is None:
            continue
        share = as_number((r.get("metrics") or {}).get("target_share"))
        name = {"original": f"{method} (θ_o)", "oracle": f"{method} (oracle θ_r)"}.get(role, method)
        cap = f"{name}, seed {r.get('seed')}" + (f": target share {share:.1f} %" if share == share else "")
        out.append((cap, grid))
    return out


_NOTE = ("The first generations of every model from the same latents (GAN: the same z; DDPM: the same initial noise, "
         "deterministic DDIM), so a cell shows what each model makes of one seed. After forgetting a class, its digits "
         "should disappear as in the oracle's grid while the other cells keep their digit.")


def generative_section(run_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """The HTML "Generated samples" section ('' when no row of the run has a sample grid)."""
    figs = [f'<figure class="samples"><img alt="{escape(cap, quote=True)}" src="{data_uri(tile(grid))}"/>'
            f"<figcaption>{escape(cap)}</figcaption></figure>" for cap, grid in _grids(run_dir, rows)]
    if not figs:
        return ""
    return ('<section id="generated-samples"><h2>Generated samples</h2>'
            f'<p>{escape(_NOTE)}</p><div style="display:flex;flex-wrap:wrap;gap:12px">{"".join(figs)}</div></section>')


def generative_markdown(run_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """The markdown "Generated samples" section (inline PNG data URIs; '' when there is no sample grid)."""
    grids = _grids(run_dir, rows)
    if not grids:
        return ""
    lines = ["", "## Generated samples", "", _NOTE, ""]
    for cap, grid in grids:
        lines += [f"**{cap}**", "", f"![{cap}]({data_uri(tile(grid))})", ""]
    return "\n".join(lines)


__all__ = ["GRID_KEY", "data_uri", "generative_markdown", "generative_section", "png_bytes", "tile"]
