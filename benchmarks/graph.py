"""Graph unlearning on Cora: every graph method × seeds against the retrained oracle, through the normal runner.

Usage:
    python benchmarks/graph.py [--root ../shared/data/planetoid] [--seeds 3] [--suites edges2.5 edges5 nodes]
                               [--gnndelete-epochs 200] [--out benchmarks/results] [--output-dir /tmp/graph-bench]

Suites (each a bundled config with overrides):
- ``edges2.5`` / ``edges5``: 2.5 % / 5 % of Cora's training edges (random), GCN link prediction (GNNDelete's
  setting): graph_grad_ascent, gnndelete, d2dgn, gif.
- ``nodes``: 5 % of the training nodes, GCN node classification: the above + graph_eraser.
- ``cert_edges5`` / ``cert_nodes``: the same deletions on SGC + one-vs-rest logistic regression trained with the
  removal-enabled objective (Chien et al. 2022): certified_sgc (and gif, graph_grad_ascent as contrasts).

Writes ``<out>/graph.md``: mean ± std over seeds of every metric, the time ratio to the oracle's training time
(``rte_ratio``, measured in the same process), and the run folders. Timings are wall-clock on a shared, loaded CPU:
read ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from unlearnkit.bench import run_experiment
from unlearnkit.config import load_config

NODE_METHODS = ["graph_grad_ascent", "gnndelete", "d2dgn", "gif", "graph_eraser"]
LINK_METHODS = ["graph_grad_ascent", "gnndelete", "d2dgn", "gif"]
CERT = {"graph.model": {"arch": "sgc", "bias": False}, "graph.train": {"loss": "ovr_logistic"},
        "graph.data.normalize_features": "standard_maxnorm"}

SUITES: dict[str, tuple[str, dict, list[str]]] = {
    "edges2.5": ("graph_cora_edges", {"name": "graph_cora_edges2.5", "graph.deletion.fraction": 0.025}, LINK_METHODS),
    "edges5": ("graph_cora_edges", {"name": "graph_cora_edges5"}, LINK_METHODS),
    "nodes": ("graph_cora_nodes", {"name": "graph_cora_nodes5"}, NODE_METHODS),
    "cert_edges5": ("graph_cora_nodes", {"name": "graph_cora_cert_edges5", "graph.deletion.target": "edge", **CERT},
                    ["certified_sgc", "gif", "graph_grad_ascent"]),
    "cert_nodes": ("graph_cora_nodes", {"name": "graph_cora_cert_nodes5", **CERT},
                   ["certified_sgc", "gif", "graph_grad_ascent"]),
}
KEYS = ["test_acc", "test_auroc", "forget_acc", "forget_auroc", "forget_edge_score", "mi_member_prob", "mi_ratio",
        "oracle_tv", "oracle_agreement", "unlearn_seconds", "rte_ratio"]


def method_specs(methods: list[str], gnndelete_epochs: int, request_size: int) -> list[dict]:
    out: list[dict] = [{"name": "retrain"}]
    for m in methods:
        spec: dict = {"name": m}
        if m == "gnndelete":
            spec["epochs"] = gnndelete_epochs
        if m == "certified_sgc":
            spec["request_size"] = request_size
        out.append(spec)
    return out


def run_suite(suite: str, args: argparse.Namespace) -> tuple[list[dict], str, float]:
    base, sets, methods = SUITES[suite]
    sets = {**sets, "graph.data.root": args.root, "seeds": args.seeds, "engine.progress": False,
            "output_dir": args.output_dir}
    cfg = load_config(base, [f"{k}={json.dumps(v)}" for k, v in sets.items()])
    spec_cls = type(cfg.methods[0])
    cfg = cfg.model_copy(update={"methods": [spec_cls.model_validate(m) for m in
                                             method_specs(methods, args.gnndelete_epochs, args.request_size)]})
    t0 = time.perf_counter()
    outcome = run_experiment(cfg, write_report=True)
    return outcome.rows, str(outcome.run_dir), time.perf_counter() - t0


def table(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(r["method"] for r in rows))
    keys = [k for k in KEYS if any(k in r.get("metrics", {}) for r in rows)]
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for lab in labels:
        rs = [r for r in rows if r["method"] == lab and r.get("status") == "ok"]
        errs = [r for r in rows if r["method"] == lab and r.get("status") != "ok"]
        cells = []
        for k in keys:
            v = np.array([r["metrics"][k] for r in rs if k in r["metrics"]], dtype=float)
            v = v[np.isfinite(v)]
            cells.append("–" if not len(v) else (f"{v.mean():.3g} ± {v.std():.2g}" if len(v) > 1 else f"{v[0]:.3g}"))
        name = lab + (f" ({len(errs)} error: {errs[0]['error'][:60]})" if errs else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="../shared/data/planetoid")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES))
    ap.add_argument("--gnndelete-epochs", type=int, default=200,
                    help="GNNDelete steps (reference 1,500; 200 keeps the CPU suite short)")
    ap.add_argument("--request-size", type=int, default=10, help="certified_sgc elements per Newton step")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--output-dir", default="/tmp/unlearnkit-graph-bench")
    args = ap.parse_args()
    parts = [f"# Graph unlearning on Cora ({args.seeds} seeds, CPU)\n",
             f"Machine: {platform.processor() or platform.machine()}, shared and loaded by other jobs — absolute "
             f"seconds are noisy; `rte_ratio` = unlearning seconds / the oracle's training seconds (same process). "
             f"GNNDelete ran {args.gnndelete_epochs} steps (reference: 1,500); certified_sgc removed "
             f"{args.request_size} elements per Newton step (reference: 1). All metrics in % except mi_ratio, "
             f"forget_edge_score (score in [0, 1]) and seconds.\n"]
    for suite in args.suites:
        rows, run_dir, wall = run_suite(suite, args)
        s = rows[0]["scenario"] if rows else {}
        parts.append(f"## {suite}: {s.get('task')} task, {s.get('kind')}, |D_f| = {s.get('n_forget')} "
                     f"(|D_r| = {s.get('n_retain')})\n\nRun folder: `{run_dir}` (wall {wall:.0f} s)\n\n{table(rows)}\n")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "graph.md").write_text("\n".join(parts), encoding="utf-8")
        print(f"{suite}: done in {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
