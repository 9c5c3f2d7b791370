"""A tiny generative run end to end: rows for θ_o, θ_r and a method, and the report's sample-grid section."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from unlearnkit.bench import load_config
from unlearnkit.bench.runner import Runner
from unlearnkit.report import write_reports
from unlearnkit.report.generative import GRID_KEY


def test_a_tiny_gan_run_writes_sample_grids_into_the_report(tmp_path):
    cfg = load_config(None, data={
        "track": "generative", "name": "tiny_gan", "output_dir": str(tmp_path), "seeds": [0],
        "generative": {"data": {"source": "digits", "train_subset": 300}, "target": {"kind": "class", "classes": [3]},
                       "model": {"kind": "gan", "z_dim": 8, "channels": [8, 16]}, "train": {"epochs": 2, "lr": 2e-3},
                       "guide": {"text_encoder": "bow", "judge_epochs": 2, "clip_epochs": 2},
                       "eval": {"samples": 64, "grid": 16}},
        "methods": ["retrain", {"name": "gen_finetune", "epochs": 1}],
        "metrics": ["gen_target", "gen_fid"], "engine": {"progress": False, "threads": 1}})
    out = Runner(cfg, console=Console(file=io.StringIO())).run()
    rows = {r["method"]: r for r in out.rows}
    assert {"retrain", "original", "gen_finetune"} <= set(rows) and all(r["status"] == "ok" for r in out.rows)
    # θ_o's FID to itself is 0 and its coverage of its own class histogram 100 %
    assert abs(rows["original"]["metrics"]["fid_to_original"]) < 1e-6
    assert abs(rows["original"]["metrics"]["nontarget_coverage"] - 100.0) < 1e-9
    run_dir = out.run_dir
    with np.load(run_dir / "per_sample" / "original-seed0.npz") as z:
        grid = z[GRID_KEY]
    assert grid.shape == (16, 8, 8) and grid.dtype == np.uint8
    md, html = write_reports(run_dir)
    page, text = html.read_text(encoding="utf-8"), md.read_text(encoding="utf-8")
    assert 'id="generated-samples"' in page and page.count('src="data:image/png;base64,') == 3
    assert "## Generated samples" in text and "Target share" in text
