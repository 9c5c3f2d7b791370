"""ALU's cost as the number of unlearning targets grows (1 → 1,000): agent calls, audit work and wall time per query.

ALU (Sanyal and Mandal, arXiv:2502.00406) claims a cost per query that stays constant in the number of targets (its
agents read the target list in one prompt). Here the auditor is a string matcher with a first-word hash index (and,
optionally, MiniLM embeddings: one matrix-vector product against the target embeddings). The queries are the
forget / retain questions of the synthetic TOFU data with their true answers as the model's answers; the targets are
one forget person plus n − 1 fictitious names that never match (so the same queries trigger the rewrite path at every
n, and only the size of the target list changes).

Usage:
    python benchmarks/alu_targets.py [--embedding] [--repeats 5]

Writes ``benchmarks/results/alu_targets.md`` (a table) and ``benchmarks/results/alu_targets.svg`` (per-query time vs
number of targets, log x axis).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from unlearnkit.data.text.synthetic import build_synthetic_task
from unlearnkit.methods.llm.alu import ALUPolicy

COUNTS = (1, 10, 100, 1000)


def fillers(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    syl = ["ka", "lo", "ren", "vi", "mar", "to", "sel", "an", "dor", "ei", "qux", "zim", "pol", "ferr"]
    return [f"{''.join(rng.choice(syl, 3)).capitalize()}z {''.join(rng.choice(syl, 3)).capitalize()}" for _ in range(n)]


def measure(kind: str, repeats: int) -> list[dict[str, float]]:
    task = build_synthetic_task("forget10", n_persons=40, qa_per_person=12, seed=0)
    items = list(task.forget) + list(task.eval_sets["retain"])
    qs, ans = [it.question for it in items], [it.answer for it in items]
    subjects = sorted({it.subject for it in task.forget})
    out = []
    for n in COUNTS:
        targets = [subjects[0], *fillers(n - 1)]  # one real forget person; the others never match
        pol = ALUPolicy(targets, auditor=kind)
        pol.revise(qs[:2], ans[:2])  # warm-up (embedding model load, target embeddings)
        times = []
        for _ in range(repeats):
            pol.reset_stats()
            t0 = time.perf_counter()
            pol.revise(qs, ans)
            times.append(time.perf_counter() - t0)
        s = pol.stats
        out.append({"targets": n, "calls_per_query": s["calls"] / s["queries"],
                    "audit_work_per_query": s["audit_work"] / s["queries"],
                    "ms_per_query": 1000 * float(np.median(times)) / len(qs), "queries": len(qs),
                    "rewritten": s["rewritten"], "refused": s["refused"]})
    return out


def svg(series: dict[str, list[dict[str, float]]]) -> str:
    w, h, pad = 420, 260, 50
    ys = [r["ms_per_query"] for rows in series.values() for r in rows]
    ymax = max(ys) * 1.2

    def x(n: float) -> float:
        return pad + (np.log10(n) / 3) * (w - 2 * pad)

    def y(v: float) -> float:
        return h - pad - v / ymax * (h - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="11"><rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>']
    for n in COUNTS:
        parts.append(f'<text x="{x(n):.0f}" y="{h - pad + 15}" text-anchor="middle">{n}</text>')
    for v in np.linspace(0, ymax, 4):
        parts.append(f'<text x="{pad - 5}" y="{y(v):.0f}" text-anchor="end">{v:.2f}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">unlearning targets (log scale)</text>')
    parts.append(f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">'
                 'ms per query (ALU agents)</text>')
    for (name, rows), color in zip(series.items(), ("#1f77b4", "#d62728")):
        pts = " ".join(f"{x(r['targets']):.1f},{y(r['ms_per_query']):.1f}" for r in rows)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{w - pad}" y="{y(rows[-1]["ms_per_query"]) - 6:.0f}" text-anchor="end" '
                     f'fill="{color}">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embedding", action="store_true", help="also the MiniLM embedding auditor (extra [minilm])")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    series = {"string": measure("string", a.repeats)}
    if a.embedding:
        series["embedding"] = measure("embedding", a.repeats)
    lines = [f"# ALU cost vs number of targets ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{platform.machine()}, Python {platform.python_version()}, 1 thread)", "",
             "| auditor | targets | agent calls / query | audit work / query | ms / query (median of "
             f"{a.repeats}) |", "|---|---:|---:|---:|---:|"]
    for name, rows in series.items():
        for r in rows:
            lines.append(f"| {name} | {r['targets']} | {r['calls_per_query']:.2f} | {r['audit_work_per_query']:.1f} "
                         f"| {r['ms_per_query']:.3f} |")
    out = Path(__file__).parent / "results"
    (out / "alu_targets.md").write_text("\n".join(lines) + "\n")
    (out / "alu_targets.svg").write_text(svg(series))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
