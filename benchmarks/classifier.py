"""Every registered classifier method × seeds against the oracle, on digits and CPU-sized CIFAR-10.

Usage:
    python benchmarks/classifier.py --suite digits_random digits_class [--seeds 3] [--out benchmarks/results]
    python benchmarks/classifier.py --suite cifar_random --cifar-root ../shared/data/cifar10

Each suite extends a bundled config, replaces its method list by every registered method (paper defaults; only
``batch_size`` is scaled to the data set where the method has one), runs through the normal runner (cached θ_o/θ_r,
results.jsonl, report.html) and writes the markdown table to ``<out>/<suite>.md``. BENCHMARKS.md quotes those files.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from unlearnkit.bench import run_experiment
from unlearnkit.bench import load_config
from unlearnkit.methods import METHODS
from unlearnkit.report import build_meta, load_rows, summarize, to_markdown

SUITES = {
    "digits_random": ("digits_random10", {}, 64),
    "digits_class": ("digits_class", {}, 64),
    "cifar_random": ("cifar10_random10", {"data.train_subset": 2500, "data.test_subset": 500,
                                          "model.channels": [16, 32, 64], "train.epochs": 12}, 128),
    "cifar_class": ("cifar10_random10", {"name": "cifar10_class", "scenario.kind": "class", "scenario.classes": [3],
                                         "scenario.fraction": None, "data.train_subset": 2500,
                                         "data.test_subset": 500, "model.channels": [16, 32, 64],
                                         "train.epochs": 12}, 128),
}


def method_list(batch_size: int) -> list[dict]:
    """Every registered method with its defaults; a ``batch_size`` larger than the data set's is shrunk to it."""
    out: list[dict] = []
    for name, entry in METHODS.items():
        spec: dict = {"name": name}
        if entry.config is not None and "batch_size" in entry.config.model_fields:
            default = entry.config.model_fields["batch_size"].default
            if default > batch_size:  # only shrink: a small data set needs more than a handful of steps
                spec["batch_size"] = batch_size
        out.append(spec)
    return out


def run_suite(suite: str, seeds: int, out: Path, cifar_root: str | None, output_dir: str) -> Path:
    base, sets, batch = SUITES[suite]
    # JSON is YAML: null, [3], 2500
    overrides = [f"{k}={json.dumps(v)}" for k, v in sets.items()] + [f"seeds={seeds}", "engine.progress=false",
                                                                     f"output_dir={output_dir}"]
    if suite.startswith("cifar"):
        overrides.append(f"data.root={cifar_root}")
    cfg = load_config(base, overrides)
    cfg = cfg.model_copy(update={"methods": [type(cfg.methods[0]).model_validate(m) for m in method_list(batch)]})
    t0 = time.perf_counter()
    outcome = run_experiment(cfg)
    wall = time.perf_counter() - t0
    rows = load_rows(outcome.run_dir)
    md = to_markdown(summarize(rows), build_meta(outcome.run_dir, rows))
    header = (f"<!-- suite {suite}: {platform.machine()}, {seeds} seeds, wall {wall:.0f} s, "
              f"{time.strftime('%Y-%m-%d')} -->\n")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{suite}.md"
    path.write_text(header + md, encoding="utf-8")
    print(f"{suite}: {wall:.0f} s -> {path} (run folder {outcome.run_dir})")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", nargs="+", default=["digits_random", "digits_class"], choices=sorted(SUITES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cifar-root", default="../shared/data/cifar10")
    ap.add_argument("--output-dir", default="runs/bench")
    args = ap.parse_args()
    for s in args.suite:
        run_suite(s, args.seeds, Path(args.out), args.cifar_root, args.output_dir)


if __name__ == "__main__":
    main()
