"""GIF's LiSSA solve on the bundled Cora configs: residual reached, iterations, and the distance to the oracle, for
several damping values (issue 13 item 4: the reference default damp 0 does not converge).

Usage:
    python benchmarks/gif_convergence.py [--root ../shared/data/planetoid] [--damps 0 0.01 0.02 0.05 0.1]
                                         [--iterations 100] [--out benchmarks/results]

For each setting — ``nodes`` (graph_cora_nodes: GCN node classification, 5 % of training nodes), ``edges``
(graph_cora_edges: GCN link prediction, 5 % of training edges), ``sgc_ce_nodes`` (the node deletion on SGC trained
with cross-entropy and weight decay, the config's recipe) and ``sgc_nodes`` (the same on SGC + one-vs-rest logistic,
the certified setting) — it trains θ_o and θ_r once (seed 0, the configs' recipes), then runs
GIF with each damping and records the LiSSA relative residual ‖(H + damp·scale·I)Δθ − v‖/‖v‖, the iterations, the
test accuracy / AUROC, and the total-variation distance of the posteriors to θ_r's on the retain graph (``oracle_tv``,
θ_o's own distance for comparison). Writes ``<out>/gif_convergence.md``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch

from unlearnkit.config import load_config
from unlearnkit.methods import METHODS, UnlearnContext

SETTINGS = {
    "nodes": ("graph_cora_nodes", []),
    "edges": ("graph_cora_edges", []),
    "sgc_ce_nodes": ("graph_cora_nodes", ["graph.model.arch=sgc"]),
    "sgc_nodes": ("graph_cora_nodes", ["graph.model.arch=sgc", "graph.model.bias=false",
                                       "graph.train.loss=ovr_logistic",
                                       "graph.data.normalize_features=standard_maxnorm"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="../shared/data/planetoid")  # relative to the repository root
    ap.add_argument("--damps", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.05, 0.1])
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from unlearnkit.bench.tracks import TRACKS
    from unlearnkit.engine.loop import Engine
    from unlearnkit.metrics import METRICS
    from unlearnkit.metrics.graph import GraphEvalContext

    torch.set_num_threads(1)
    lines = [f"# GIF convergence on Cora ({time.strftime('%Y-%m-%d')}, {platform.machine()}, torch "
             f"{torch.__version__}, 1 thread)", "",
             f"Command: `python benchmarks/gif_convergence.py --damps {' '.join(map(str, args.damps))} "
             f"--iterations {args.iterations}`", "",
             "| setting | damp | residual | iterations | converged (≤ 1e-2) | test acc / AUROC | oracle_tv | seconds |",
             "| --- | ---: | ---: | ---: | :---: | ---: | ---: | ---: |"]
    for name in args.settings:
        cfg_name, sets = SETTINGS[name]
        cfg = load_config(cfg_name, [f"graph.data.root={args.root}", "seeds=1", "engine.progress=false",
                                     "engine.threads=1", *sets])
        track = TRACKS.get("graph")(cfg, TRACKS.validate_config("graph", cfg.graph), Engine(cfg.engine))
        task = track.build_task()
        model_o, _, _ = track.train(task, "original", 0)
        model_r, _, _ = track.train(task, "oracle", 0)
        refs = {"original_model": model_o, "oracle_model": model_r}
        util = "test_acc" if task.task == "node" else "test_auroc"

        def evaluate(m, task=task, track=track, refs=refs):
            ctx = GraphEvalContext(m, task, track.engine, seed=0, references=refs)
            vals = {}
            for metric in ("graph_utility", "graph_oracle_distance"):
                vals.update(METRICS.build(metric).compute(ctx).values)
            return vals

        base = evaluate(model_o)
        lines.append(f"| {name} | θ_o | | | | {base[util]:.4f} | {base['oracle_tv']:.4f} | |")
        for damp in args.damps:
            method = METHODS.build("gif", {"damp": damp, "iterations": args.iterations})
            t0 = time.perf_counter()
            try:
                res = method.unlearn_graph(copy.deepcopy(model_o), task, track.engine,
                                           UnlearnContext(seed=0, train_recipe=track.recipe("original")))
            except Exception as e:  # noqa: BLE001 — a divergence is a result here
                lines.append(f"| {name} | {damp:g} | {type(e).__name__} | | no | | | |")
                continue
            secs = time.perf_counter() - t0
            s = res.notes["solver"]
            vals = evaluate(res.model)
            lines.append(f"| {name} | {damp:g} | {s['residual']:.3g} | {s['iterations']} | "
                         f"{'yes' if s['converged'] else 'no'} | {vals[util]:.4f} | {vals['oracle_tv']:.4f} | "
                         f"{secs:.1f} |")
            print(lines[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gif_convergence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
