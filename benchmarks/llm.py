"""The LLM track's TOFU benchmark: every LLM method against θ_r on the bundled LLM configs.

Usage:
    python benchmarks/llm.py                                    # tofu_tiny (built-in synthetic data, tiny Llama)
    python benchmarks/llm.py --suites tofu_tiny tofu_real_forget01 tofu_real_forget05 [--tofu-root ../shared/data/tofu]

Each suite is a bundled config (``configs/llm/<suite>.yaml``) run through the normal runner (cached θ_o/θ_r,
results.jsonl, per-sample npz, report.html); the script reads the result rows back and writes
``benchmarks/results/llm.md``: per method forget quality, model utility, forget / retain ROUGE-L, truth ratio, MIA AUC
(LOSS, Min-K%, Min-K%++), extraction strength on D_f and unlearning seconds, plus the run's wall time, CPU time and the
machine's load average (the machine is shared: absolute seconds are noisy, compare within one table).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time
from pathlib import Path

from unlearnkit.bench import run_experiment
from unlearnkit.config import load_config

COLS = (
    ("forget_quality", "Forget quality ↑", "{:.2e}"),
    ("model_utility", "Model utility ↑", "{:.3f}"),
    ("forget.rouge", "Forget ROUGE-L", "{:.3f}"),
    ("retain.rouge", "Retain ROUGE-L ↑", "{:.3f}"),
    ("forget.truth_ratio", "Forget TR", "{:.3f}"),
    ("mia.loss.auc", "MIA AUC LOSS", "{:.3f}"),
    ("mia.min_k.auc", "MIA AUC Min-K%", "{:.3f}"),
    ("mia.min_k_pp.auc", "MIA AUC Min-K%++", "{:.3f}"),
    ("forget.es", "Forget ES", "{:.3f}"),
    ("unlearn_seconds", "Seconds", "{:.1f}"),
)


def _fmt(v, f: str) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "—"
    return f.format(v)


def table(rows: list[dict]) -> str:
    head = "| Method | " + " | ".join(c[1] for c in COLS) + " |"
    sep = "|---|" + "---:|" * len(COLS)
    lines = [head, sep]
    order = sorted(rows, key=lambda r: (not r.get("is_oracle"), r["method"] != "original", r["method"]))
    for r in order:
        name = r["method"] + (" (oracle θ_r)" if r.get("is_oracle") else " (θ_o)" if r["method"] == "original" else "")
        if r.get("status") != "ok":
            lines.append(f"| {name} | " + " | ".join(["—"] * len(COLS)) + f" |  ← {r.get('status')}: "
                         f"{str(r.get('error'))[:80]}")
            continue
        m = r["metrics"]
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k), f) for k, _, f in COLS) + " |")
    return "\n".join(lines)


def run_suite(suite: str, output_dir: str, tofu_root: str | None, sets: list[str] = ()) -> dict:
    overrides = [f"output_dir={output_dir}", *sets]
    if suite.startswith("tofu_real") and tofu_root:
        overrides.append(f"llm.data.root={tofu_root}")
    cfg = load_config(f"configs/llm/{suite}.yaml", overrides)
    load0 = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    outcome = run_experiment(cfg)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    load1 = os.getloadavg()
    rows = [r for r in outcome.rows if r.get("seed") == cfg.seeds[0]]
    return {"suite": suite, "rows": rows, "wall": wall, "cpu": (cpu1.ru_utime - cpu0.ru_utime)
            + (cpu1.ru_stime - cpu0.ru_stime), "load": (load0, load1), "run_dir": str(outcome.run_dir),
            "reused": outcome.reused, "scenario": rows[0]["scenario"] if rows else {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", nargs="+", default=["tofu_tiny"])
    ap.add_argument("--tofu-root", default="../shared/data/tofu")
    ap.add_argument("--output-dir", default="runs/bench_llm")
    ap.add_argument("--out", default="benchmarks/results/llm.md")
    ap.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    ap.add_argument("--set", nargs="*", default=[], dest="sets",
                    help="config overrides for every suite, e.g. llm.train.epochs=6 (recorded in the table header)")
    args = ap.parse_args()
    parts = []
    for suite in args.suites:
        res = run_suite(suite, args.output_dir, args.tofu_root, args.sets)
        s = res["scenario"]
        l0, l1 = res["load"]
        parts.append(
            f"### {suite}\n\n"
            f"Data: {s.get('source')} {s.get('split')} — |D_f| = {s.get('n_forget')}, |D_r| = {s.get('n_retain')}, "
            f"holdout = {s.get('n_test')} (MIA non-members). Run folder `{res['run_dir']}`."
            + (f" Overrides: `{' '.join(args.sets)}`." if args.sets else "") + "\n"
            f"Wall time {res['wall']:.0f} s (incl. θ_o, θ_r, every method and evaluation; reused from cache: "
            f"{', '.join(res['reused']) or 'nothing'}), CPU time {res['cpu']:.0f} s; 1-min load average "
            f"{l0[0]:.1f} at start, {l1[0]:.1f} at end on {os.cpu_count()} cores (shared machine).\n\n"
            + table(res["rows"]) + "\n")
        print(parts[-1], flush=True)
    header = (f"## LLM track (TOFU protocol)\n\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
              f"{platform.processor() or platform.machine()}, Python {platform.python_version()}. "
              "↑ = higher is better; Forget ROUGE-L / truth ratio / MIA AUC / ES: closer to the oracle row is better "
              "(θ_r never saw D_f; its MIA AUCs are the reference — ≈ 0.5 only when D_f and the holdout persons are "
              "alike). Forget quality is TOFU's KS-test p-value against θ_r's "
              "forget-set truth ratios (θ_r: 1.0 by construction).\n\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(parts)
    if args.append and out.is_file():
        out.write_text(out.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    else:
        out.write_text(header + text, encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
