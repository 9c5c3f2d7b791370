"""Recommendation unlearning: every recsys method × seeds against the retrained oracle (synthetic; MovieLens-100k
when a local copy is given).

Usage:
    python benchmarks/recsys.py [--suites mf_users mf_user1 mf_items mf_random lgn_users] [--seeds 3]
                                [--movielens ROOT] [--out benchmarks/results] [--runs /tmp/recsys_bench]

Each suite extends ``configs/recsys_synthetic.yaml``, runs through the normal runner (cached θ_o / θ_r,
results.jsonl) and the rows are summarised here (mean ± std over seeds) into ``<out>/recsys.md``: Recall@20 and
NDCG@20 on the retained test set, the forget set's Recall@20 / NDCG@20 / AUC, the Avg. Gap to the oracle over the
four rank metrics, unlearning seconds and the time ratio to the oracle's retraining (same process, same seed).
Timings on a shared, loaded machine are noisy; ratios are the more stable reading.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from unlearnkit.bench import run_experiment
from unlearnkit.config import load_config

METHODS = [
    "retrain",
    "reverse_bpr",
    {"name": "reverse_bpr", "label": "reverse_bpr_adam", "optimizer": "adam", "lr": None},
    "rec_grad_ascent",
    {"name": "receraser", "partition_iters": 10},
]

SUITES: dict[str, tuple[str, dict]] = {
    "mf_users": ("MF-BPR, 5 % of users (30) deleted", {"recsys.scenario.kind": "users", "recsys.scenario.fraction": 0.05}),
    "mf_user1": ("MF-BPR, one user deleted", {"recsys.scenario.kind": "users", "recsys.scenario.fraction": None,
                                              "recsys.scenario.count": 1}),
    "mf_items": ("MF-BPR, 5 % of items (20) revoked", {"recsys.scenario.kind": "items",
                                                       "recsys.scenario.fraction": 0.05}),
    "mf_random": ("MF-BPR, 5 % of interactions at random", {"recsys.scenario.kind": "random",
                                                            "recsys.scenario.fraction": 0.05}),
    "lgn_users": ("LightGCN (3 layers), 5 % of users deleted", {"recsys.model.name": "lightgcn",
                                                              "recsys.scenario.fraction": 0.05}),
    "ml_users": ("MovieLens-100k, LightGCN, 5 % of users deleted", {}),
}

K = 20
COLS = [(f"recall@{K}", "Recall@20"), (f"ndcg@{K}", "NDCG@20"), (f"forget_recall@{K}", "D_f Recall@20"),
        (f"forget_ndcg@{K}", "D_f NDCG@20"), ("forget_auc", "D_f AUC"), ("avg_gap", "Avg. Gap"),
        ("unlearn_seconds", "seconds"), ("rte_ratio", "time / oracle")]


def overrides_for(suite: str, seeds: int, runs: str, ml_root: str | None) -> tuple[str, list[str]]:
    sets = [f"seeds={seeds}", f"output_dir={runs}", "engine.progress=false", f"name=recsys_{suite}"]
    if suite == "ml_users":
        base = "recsys_movielens"
        sets += [f"recsys.data.root={ml_root}", "engine.device=cpu", "recsys.train.epochs=30",
                 "recsys.train.lr=0.005", "recsys.train.batch_size=2048"]
    else:
        base = "recsys_synthetic"
        sets += [f"{k}={json.dumps(v)}" for k, v in SUITES[suite][1].items()]
    sets.append(f"methods={json.dumps(METHODS)}")
    return base, sets


def fmt(vals: list[float], digits: int = 3) -> str:
    v = [x for x in vals if x is not None and np.isfinite(x)]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def table(rows: list[dict]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    by: dict[str, dict[str, list[float]]] = {}
    order: list[str] = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        lab = r["method"]
        if lab not in by:
            by[lab] = {}
            order.append(lab)
        for key, _ in COLS:
            by[lab].setdefault(key, []).append(r["metrics"].get(key))
    lines = ["| method | " + " | ".join(h for _, h in COLS) + " |", "|---" * (len(COLS) + 1) + "|"]
    for lab in order:
        name = f"{lab} (oracle)" if lab == "retrain" else lab
        cells = [fmt(by[lab][k], 2 if k in ("unlearn_seconds", "rte_ratio") else 3) for k, _ in COLS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, by


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", nargs="*", default=["mf_users", "mf_user1", "mf_items", "mf_random", "lgn_users"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--movielens", default=None, help="folder with MovieLens-100k u.data (adds suite ml_users)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--runs", default="/tmp/recsys_bench")
    args = ap.parse_args()
    suites = list(args.suites) + (["ml_users"] if args.movielens and "ml_users" not in args.suites else [])
    out = ["# Recommendation unlearning (`benchmarks/recsys.py`)", "",
           f"{args.seeds} seeds per suite; {platform.machine()} CPU, torch threads = 1, on a machine shared with other "
           "jobs (absolute seconds are noisy; the time ratio is measured against the oracle of the same seed in the "
           "same process). Metrics: Recall@20 / NDCG@20 on the retained test set (training items masked, ties in "
           "expectation); the forget set's Recall@20 / NDCG@20 (D_r masked) and AUC against never-seen items "
           "(closer to the oracle is better); Avg. Gap = mean |metric − oracle| over the four rank metrics. "
           "RecEraser's seconds are the deletion only (affected shards + aggregator); its setup (training the "
           "sharded system on D) is excluded.", ""]
    for suite in suites:
        base, sets = overrides_for(suite, args.seeds, args.runs, args.movielens)
        cfg = load_config(base, sets)
        t0 = time.perf_counter()
        res = run_experiment(cfg, console=Console(file=io.StringIO()), write_report=False)
        wall = time.perf_counter() - t0
        lines, by = table(res.rows)
        sc = res.rows[0]["scenario"]
        out += [f"## {suite}: {SUITES[suite][0]}", "",
                f"|D| = {sc['n_train']}, |D_f| = {sc['n_forget']}, retained test = {sc['n_test']}; wall {wall:.0f} s.",
                ""] + lines + [""]
        notes = [r.get("notes", {}) for r in res.rows if r["method"] == "receraser" and r.get("status") == "ok"]
        if notes:
            aff = [len(n.get("affected_shards", [])) for n in notes]
            setup = [n.get("setup_seconds", float("nan")) for n in notes]
            out += [f"RecEraser: affected shards {aff} of {notes[0].get('n_shards')}; setup (sharded training on D) "
                    f"{fmt(setup, 1)} s.", ""]
        print("\n".join(out[-(len(lines) + 6):]), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "recsys.md"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
