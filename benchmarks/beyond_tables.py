"""Markdown tables of the issue-18 runs (UOE, CodeEraser, training order, MedForget) from their results.jsonl.

Usage::

    unlearnkit run configs/llm/uoe_moe.yaml --set engine.threads=1      # (and codeeraser, order_stages, medforget)
    python benchmarks/beyond_tables.py runs/uoe_moe-*/ runs/codeeraser-*/ runs/medforget-*/ runs/order_stages-*/

Each run folder's kind is recognised from its metric keys; the tables are what BENCHMARKS.md shows. The order run's
figure is in its report.html (section "Training order"); its markdown tables are in report.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

UOE = [("forget_quality", "FQ"), ("model_utility", "utility"), ("forget.rouge", "forget ROUGE"),
       ("forget.prob", "forget P"), ("retain.rouge", "retain ROUGE"), ("moe.routing_shift", "route shift D_r"),
       ("moe.topk_changed", "top-k changed D_r"), ("moe.topk_changed_forget", "top-k changed D_f"),
       ("moe.params_updated", "params updated"), ("moe.util_entropy", "util. entropy"), ("unlearn_seconds", "s")]
CODE = [("code.secret_ma", "secret MA"), ("code.secret_el", "secret EL3"), ("code.forgotten_share", "forgotten"),
        ("code.ma_threshold", "MA thr."), ("code.el_threshold", "EL thr."), ("code.heldout_acc", "held-out acc"),
        ("code.heldout_line_em", "line EM"), ("code.retain_acc", "retain acc"), ("code.context_acc", "context acc"),
        ("unlearn_seconds", "s")]
MED = [("med.forget.rouge", "D_f ROUGE"), ("med.forget.rouge_rephrased", "D_f ROUGE (reph.)"),
       ("med.forget.prob", "D_f P"), ("med.siblings.rouge", "siblings"), ("med.ancestors.rouge", "ancestors"),
       ("med.others.rouge", "others"), ("med.attack.d0.rouge", "attack d0"), ("med.attack.d1.rouge", "d1"),
       ("med.attack.d2.rouge", "d2"), ("med.attack.d3.rouge", "d3"), ("med.attack_gain", "gain"),
       ("med.attack_gain_prob", "gain P")]


def rows_of(run: Path) -> list[dict]:
    out = []
    for line in (run / "results.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("status", "ok") == "ok":
            out.append(r)
    return out


def table(rows: list[dict], cols: list[tuple[str, str]], dim: str | None = None) -> str:
    have = [(k, h) for k, h in cols if any(k in r["metrics"] for r in rows)]
    head = (["point"] if dim else []) + ["row"] + [h for _, h in have]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        cells = ([str(r.get(dim))] if dim else []) + [str(r["method"])]
        cells += [f"{m[k]:.3g}" if isinstance(m.get(k), (int, float)) else "—" for k, _ in have]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    for arg in argv:
        run = Path(arg)
        rows = rows_of(run)
        keys = set().union(*(r["metrics"] for r in rows)) if rows else set()
        print(f"\n### {run.name}\n")
        if "moe.routing_shift" in keys:
            print(table(rows, UOE))
        elif "code.secret_ma" in keys:
            print(table(rows, CODE))
        elif "med.forget.rouge" in keys:
            print(table(rows, MED, dim="level"))
        else:
            print((run / "report.md").read_text().split("## Training order", 1)[-1])


if __name__ == "__main__":
    main(sys.argv[1:])
