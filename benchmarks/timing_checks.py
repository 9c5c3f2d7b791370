"""Wall-clock figures that used to be assertions inside tests (issue 20: no timing assertions in tests).

Usage:
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/timing_checks.py [--skip-ray] [--out benchmarks/results]

1. Every registered graph method with its defaults on the karate-club graph (bundled with PyG), for an edge, a node
   and a feature deletion (the setting of tests/graph/test_graph_known_faults.py::test_c39_*): seconds of
   ``unlearn_graph`` per (method, target). The old test asserted < 60 s each.
2. SISA fit + delete (2 shards × 2 slices, Gaussian blobs) with the sequential and the Ray executor (the setting of
   tests/unit/test_executors.py::test_ray_executor_matches_sequential): seconds of each, Ray's including its start.
   The old test asserted < 120 s for the Ray part.

Writes ``<out>/timing_checks.md`` and prints it. Numbers are wall-clock seconds on the machine it runs on (state
the machine next to them in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def graph_methods() -> list[tuple[str, str, float, str]]:
    from torch_geometric.datasets import KarateClub

    from unlearnkit.config.schema import EngineConfig
    from unlearnkit.data.graph import build_graph_task, from_pyg
    from unlearnkit.engine.loop import Engine
    from unlearnkit.errors import MethodError
    from unlearnkit.methods import METHODS, UnlearnContext
    from unlearnkit.methods.graph._common import GraphTrainConfig, fit_graph
    from unlearnkit.models.graph import build_gnn

    engine = Engine(EngineConfig(progress=False))
    g = from_pyg(KarateClub()[0], "karate", normalize_features="l1")
    names = [n for n in METHODS.names() if METHODS.get(n).track == "graph"]
    rows = []
    for target in ("edge", "node", "feature"):
        t = build_graph_task(g, task="node", target=target, count=3 if target == "edge" else 1, seed=0)
        for name in names:
            cert = name == "certified_sgc"
            recipe = GraphTrainConfig(loss="ovr_logistic", lbfgs_steps=20) if cert else GraphTrainConfig(epochs=20)
            if cert:
                factory = lambda s: build_gnn("sgc", g.x.shape[1], g.num_classes, bias=False, seed=s)  # noqa: E731
            else:
                factory = lambda s: build_gnn("gcn", g.x.shape[1], g.num_classes, hidden=16, seed=s)  # noqa: E731
            model = factory(0)
            fit_graph(model, t, "original", recipe, seed=0)
            ctx = UnlearnContext(seed=0, train_recipe=recipe, init_seed=1, model_factory=factory)
            t0 = time.perf_counter()
            try:
                METHODS.build(name, {}).unlearn_graph(copy.deepcopy(model), t, engine, ctx)
                status = "ok"
            except MethodError as err:
                status = f"refused: {err}"
            rows.append((name, target, time.perf_counter() - t0, status))
    return rows


def sisa_executors(skip_ray: bool) -> list[tuple[str, float]]:
    from torch import nn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from testkit import make_blobs
    from unlearnkit.config.schema import TrainConfig
    from unlearnkit.methods.exact.sisa import SISA, SISAConfig
    from unlearnkit.service.executors import RayExecutor

    recipe = TrainConfig(epochs=2, batch_size=16, lr=0.05, scheduler="none")
    data = make_blobs().train

    def fit_and_delete(tmp: Path, executor) -> str:
        width = 16
        sisa = SISA(SISAConfig(shards=2, slices=2, train=recipe),
                    lambda s: nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3)), tmp)
        sisa.fit(data, executor=executor)
        sisa.delete([int(data.ids[0]), int(data.ids[-1])], executor=executor)
        return sisa.model_digest

    out = []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        seq = fit_and_delete(Path(d) / "seq", None)
        out.append(("sequential", time.perf_counter() - t0))
        if not skip_ray:
            t0 = time.perf_counter()
            ex = RayExecutor(num_cpus=2, include_dashboard=False)
            try:
                ray = fit_and_delete(Path(d) / "ray", ex)
            finally:
                ex.close()
            out.append(("ray (incl. start and shutdown)", time.perf_counter() - t0))
            assert ray == seq, "the Ray executor's model differs from the sequential one"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = [f"# timing checks ({time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()},"
             f" torch {torch.__version__}, 1 torch thread)", "",
             "## graph methods on karate (defaults, θ_o: 20 epochs; seconds of unlearn_graph)", "",
             "| method | edge | node | feature |", "| --- | ---: | ---: | ---: |"]
    rows = graph_methods()
    for name in sorted({r[0] for r in rows}):
        cells = []
        for target in ("edge", "node", "feature"):
            r = next(x for x in rows if x[0] == name and x[1] == target)
            cells.append(f"{r[2]:.2f}" if r[3] == "ok" else r[3][:40])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"slowest: {max(r[2] for r in rows):.2f} s (the old test's bound: 60 s)", "",
              "## SISA fit + delete (2 shards × 2 slices, blobs)", "", "| executor | seconds |", "| --- | ---: |"]
    for name, sec in sisa_executors(args.skip_ray):
        lines.append(f"| {name} | {sec:.2f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timing_checks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
