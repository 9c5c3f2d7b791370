"""Copy the latest figures of benchmarks/results/*.md into BENCHMARKS.md: python benchmarks/sync_benchmarks.py

Each benchmark script writes its own results file; this script places them, headings demoted under one section per
benchmark, between the ``<!-- results:start -->`` and ``<!-- results:end -->`` markers of BENCHMARKS.md.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"

#: (section title, results file, script) in display order
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("Exact unlearning: SISA speed-up and accuracy (issue 5)", "sisa.md", "benchmarks/sisa.py"),
    ("Deletion service under load (issue 5)", "service_load.md", "benchmarks/service_load.py"),
    ("Evaluation and audit suite (issue 4)", "evaluation.md", "benchmarks/evaluation.py"),
    ("Corrective scenario through the runner (issue 4)", "evaluation_corrective.md",
     "benchmarks/evaluation.py --parts corrective"),
    ("LLM track: TOFU protocol (issue 6)", "llm.md", "benchmarks/llm.py"),
    ("Graph track: Cora (issue 7)", "graph.md", "benchmarks/graph.py"),
    ("Recommendation track (issue 7)", "recsys.md", "benchmarks/recsys.py"),
)


def demote(text: str) -> str:
    """Drop a leading H1/H2 title and HTML comments, push every remaining heading below level 2 (### and deeper)."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("<!--")]
    while lines and (not lines[0].strip() or re.match(r"#{1,2} ", lines[0])):
        lines.pop(0)
    out = []
    for ln in lines:
        m = re.match(r"(#+) ", ln)
        if m:
            ln = "#" * max(3, len(m.group(1)) + 1) + ln[len(m.group(1)):]
        # figures referenced next to the results file are relative to benchmarks/results/
        ln = re.sub(r"\]\((?!https?:|/|benchmarks/)([^)]+\.(?:svg|png))\)", r"](benchmarks/results/\1)", ln)
        out.append(ln)
    return "\n".join(out).strip() + "\n"


def block() -> str:
    parts = []
    for title, name, script in SECTIONS:
        path = RESULTS / name
        if not path.is_file():
            continue
        parts.append(f"## {title}\n\n`{script}` → [`benchmarks/results/{name}`](benchmarks/results/{name})\n\n"
                     + demote(path.read_text(encoding="utf-8")))
    return "\n".join(parts)


def synced(text: str) -> str:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    new = f"{start}\n{block()}{end}"
    if start in text:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: new, text, flags=re.S)
    return text.rstrip() + "\n\n" + new + "\n"


if __name__ == "__main__":
    BENCHMARKS.write_text(synced(BENCHMARKS.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {BENCHMARKS}")
