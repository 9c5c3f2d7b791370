"""Do bundled configs reproduce their numbers across a change of the code? Compare two runs' result rows.

Usage::

    # 1. before the change: run each config into a folder (the run folders keep results.jsonl)
    unlearnkit run digits_random10 --set output_dir=/tmp/before
    # 2. after the change
    python benchmarks/reproduce_numbers.py --before /tmp/before --after /tmp/after \\
        digits_random10 digits_sequential digits_corrective recsys_synthetic llm/tofu_tiny \\
        "graph_cora_edges graph.data.root=../shared/data/planetoid"

For every config (a bundled name, optionally followed by ``key=value`` overrides) it runs the current code into
``--after`` (fresh cache) unless ``--no-run``, then matches rows by (method label, seed, dimension values) with the
newest run folder of that config name under ``--before`` and compares every metric except timings
(``unlearn_seconds``, ``rte_ratio``, per-query cost). Prints one line per config: rows compared, metrics compared,
the largest absolute difference, and rows present on one side only; exits 1 if any metric differs.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from unlearnkit.results import latest_rows, read_rows_quietly, row_key  # noqa: E402

TIMING = ("unlearn_seconds", "rte_ratio")


def newest_run(folder: Path, name: str) -> Path | None:
    runs = sorted((p for p in folder.glob(f"{name}-*") if (p / "results.jsonl").is_file()),
                  key=lambda p: (p / "results.jsonl").stat().st_mtime)
    return runs[-1] if runs else None


def keyed(rows: list[dict]) -> dict[tuple, dict]:
    out = {}
    for r in latest_rows(rows):
        if r.get("status") == "ok":
            out[(str(r["method"]), r.get("seed"), tuple(row_key(r)))] = r
    return out


def compare(before: Path, after: Path) -> tuple[int, int, float, list, list]:
    a, b = keyed(read_rows_quietly(before / "results.jsonl")), keyed(read_rows_quietly(after / "results.jsonl"))
    common = sorted(set(a) & set(b), key=str)
    n_metrics, worst = 0, 0.0
    for k in common:
        ma, mb = a[k]["metrics"], b[k]["metrics"]
        for m in sorted(set(ma) & set(mb)):
            if m in TIMING or m.startswith("query_ms_per_"):
                continue
            x, y = ma[m], mb[m]
            if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
                continue
            n_metrics += 1
            if math.isnan(x) and math.isnan(y):
                continue
            worst = max(worst, abs(x - y) if not (math.isnan(x) or math.isnan(y)) else math.inf)
    return len(common), n_metrics, worst, sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--no-run", action="store_true", help="compare existing runs only")
    ap.add_argument("configs", nargs="+")
    args = ap.parse_args()
    bad = 0
    for spec in args.configs:
        name, *over = spec.split()
        if not args.no_run:
            cmd = [sys.executable, "-m", "unlearnkit", "run", name, "--no-report", "--set", f"output_dir={args.after}",
                   *[x for o in over for x in ("--set", o)]]
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        stem = Path(name).name
        b, a = newest_run(args.before, stem), newest_run(args.after, stem)
        if b is None or a is None:
            print(f"{name}: no run folder ({'before' if b is None else 'after'})")
            bad += 1
            continue
        rows, metrics, worst, only_b, only_a = compare(b, a)
        same = worst == 0.0
        bad += not same
        print(f"{name}: {rows} rows, {metrics} metric values compared, max |Δ| = {worst:.3g} "
              f"({'identical' if same else 'DIFFERENT'}); only before: {len(only_b)} {only_b[:3]}; "
              f"only after: {len(only_a)} {[k[0] for k in only_a][:6]}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
