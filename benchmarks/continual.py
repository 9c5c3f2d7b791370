"""Continual learning and unlearning (issue 17): the bundled continual configs through the runner, and the readings of
the papers' claims.

Usage:
    python benchmarks/continual.py                         # every part below, 3 seeds (~30 CPU minutes)
    python benchmarks/continual.py --parts digits acu_cost --mnist1d-root ../shared/data/mnist1d

Parts:
    digits, mnist1d   the configs continual_<data>{,_refresh,_uncle,_acu}.yaml (L1 L2 U1 L3 U2 L4, rows after every
                      operation): per method the summaries of the last point (ACC, BWT, forgetting, forgotten tasks
                      vs the oracle, relapse, membership AUC of D_f) and the cost of requests and Learns;
    refresh           θ_o of DER++ against θ_o of refresh learning (same seeds, same data order; digits and
                      MNIST-1D, 10 seeds): the paired difference of the average accuracy with a 95 % t-interval, at
                      the reference's δ and larger ones;
    permuted          continual_digits_permuted.yaml (5 permuted copies of digits, UnCLe's learner, task-incremental):
                      the suite's table and accuracy matrices for --permuted-methods (default retrain, uncle,
                      finetune) over --permuted-seeds;
    uncle_ablation    UnCLe with and without its forgotten tasks in the learning regulariser (relapse);
    acu_cost          ACU's closed-form request against refitting the ridge head on what remains, as the data learned
                      before the request grows (permuted digits: 1 to 5 tasks of 1,348 samples), fixed request size;
    o3                configs/llm/tofu_tiny_o3.yaml: O3 and the LLM baselines over 4 sequential TOFU requests.

Writes ``benchmarks/results/continual_<part>.md`` per part (tables; command, date and machine in a comment) and
``benchmarks/results/continual.md`` (every part present, in order); per run, the runner's report.html.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from unlearnkit.bench import load_config, run_experiment
from unlearnkit.report.figures import accuracy_matrix, cl_summary, op_costs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "continual.md"


def _ms(vals: list[float], f: str = "{:.1f}") -> str:
    vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return "—"
    return f"{f.format(np.mean(vals))} ± {f.format(np.std(vals))}" if len(vals) > 1 else f.format(vals[0])


def run(config: str, out_dir: Path, overrides: list[str]) -> tuple[list[dict], Path, float]:
    cfg = load_config(ROOT / "configs" / config, overrides=[f"output_dir={out_dir}", *overrides])
    t0 = time.time()
    res = run_experiment(cfg)
    return res.rows, res.run_dir, time.time() - t0


def final_metric(rows: list[dict], method: str, seed: int, key: str) -> float:
    last = [r for r in rows if r["method"] == method and r["seed"] == seed and r.get("status") == "ok" and "step" in r]
    if not last:
        return float("nan")
    r = max(last, key=lambda r: r["step"])
    v = (r.get("metrics") or {}).get(key)
    return float(v) if isinstance(v, (int, float)) else float("nan")


def summary_table(rows: list[dict]) -> str:
    methods = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    methods.sort(key=lambda m: (m != "retrain", m != "original", m))
    seeds = sorted({r["seed"] for r in rows})
    head = ("| Method | ACC (%) ↑ | BWT (pp) | Forgetting (pp) ↓ | Forgotten tasks (%) | Oracle's (%) | Relapse (pp) ↓ "
            "| MIA AUC on D_f (%) | Request (s) | Learn (s) |")
    lines = [head, "|---|" + "---:|" * 9]
    for m in methods:
        sums = [cl_summary(rows, m, s) for s in seeds]
        oracle = [cl_summary(rows, "retrain", s)["acc_forgotten"] for s in seeds]
        mia = [final_metric(rows, m, s, "forgotten_mia_auc") for s in seeds]
        costs = [c for s in seeds for c in op_costs(rows, m, s).values()]
        un = [sec for op, sec in costs if op.startswith("U")]
        le = [sec for op, sec in costs if op.startswith("L")]
        name = {"retrain": "retrain (oracle θ_r)", "original": "θ_o (the learner, no unlearning)"}.get(m, m)
        failed = [r for r in rows if r["method"] == m and r.get("status") != "ok"]
        if failed:
            first = min(failed, key=lambda r: r["step"])
            name += (f" — {first['status']} from step {first['step']} in {len({r['seed'] for r in failed})}/"
                     f"{len(seeds)} seeds")
        lines.append(f"| {name} | " + " | ".join([
            _ms([x["acc"] for x in sums]), _ms([x["bwt"] for x in sums]), _ms([x["forgetting"] for x in sums]),
            _ms([x["acc_forgotten"] for x in sums]), _ms(oracle), _ms([x["relapse"] for x in sums]), _ms(mia),
            _ms(un, "{:.3f}"), _ms(le, "{:.2f}")]) + " |")
    return "\n".join(lines)


def matrix_block(rows: list[dict], method: str) -> str:
    seeds = sorted({r["seed"] for r in rows})
    mats = [accuracy_matrix(rows, method, s) for s in seeds]
    steps = mats[0][0]
    seq = next(r["scenario"]["sequence"] for r in rows if r.get("scenario", {}).get("sequence")).split()
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.stack([m for _, m in mats if m.shape == mats[0][1].shape]), axis=0)
    k = mean.shape[1]
    out = [f"| {method}: after | " + " | ".join(f"T{i + 1}" for i in range(k)) + " |", "|---|" + "---:|" * k]
    for i, st in enumerate(steps):
        out.append(f"| {st}: {seq[st]} | " + " | ".join("—" if not math.isfinite(v) else f"{v:.0f}"
                                                        for v in mean[i]) + " |")
    return "\n".join(out)


def part_suite(data: str, out: Path, overrides: list[str]) -> str:
    parts = [f"## Split {data}: L1 L2 U1 L3 U2 L4, 3 seeds\n"]
    for variant in ("", "_refresh", "_uncle", "_acu"):
        config = f"continual_{data}{variant}.yaml"
        rows, run_dir, secs = run(config, out, overrides)
        learner = next((r["scenario"].get("learner") for r in rows if r.get("scenario", {}).get("learner")), "?")
        parts.append(f"### `{config}` (learner {learner}; wall {secs:.0f} s)\n")
        parts.append(summary_table(rows) + "\n")
        interesting = ["retrain", "original"] + [m for m in ("uncle", "acu", "finetune")
                                                 if any(r["method"] == m for r in rows)][:1]
        parts.append("Accuracy matrix (%, mean over seeds; rows: after each operation; before a method's first "
                     "request its model is θ_o):\n")
        for m in interesting:
            parts.append(matrix_block(rows, m) + "\n")
        if variant == "_acu":
            diffs = []
            for r in rows:
                if r["method"] != "acu" or r.get("status") != "ok":
                    continue
                o = next(x for x in rows if x["method"] == "retrain" and x["seed"] == r["seed"]
                         and x.get("step") == r.get("step"))
                diffs += [abs(r["metrics"][k] - o["metrics"][k]) for k in r["metrics"] if k.startswith("acc_task")
                          and math.isfinite(r["metrics"][k])]
            parts.append(f"ACU against the oracle over every point, task and seed: max |Δ accuracy| = "
                         f"{max(diffs):.2g} percentage points ({len(diffs)} values).\n")
    return "\n".join(parts)


def part_permuted(out: Path, methods: list[str], overrides: list[str]) -> str:
    """Permuted digits (``continual_digits_permuted.yaml``: UnCLe's learner, task-incremental), the given methods."""
    rows, _, secs = run("continual_digits_permuted.yaml", out, [f"methods=[{','.join(methods)}]", *overrides])
    seeds = len({r["seed"] for r in rows})
    parts = [f"## Permuted digits (task-incremental, UnCLe's learner): L1 L2 U1 L3 U2 L4, {seeds} seed(s)\n",
             f"`continual_digits_permuted.yaml`, methods {', '.join(methods)}; wall {secs:.0f} s.\n",
             summary_table(rows) + "\n",
             "Accuracy matrix (%, mean over seeds; rows: after each operation):\n"]
    for m in ["retrain", "original", *[m for m in methods if m != "retrain"]]:
        parts.append(matrix_block(rows, m) + "\n")
    return "\n".join(parts)


def t_interval(d: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    m = float(d.mean())
    if len(d) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return m, m - h, m + h


def part_refresh(out: Path, seeds: int, data: str, overrides: list[str]) -> str:
    """θ_o (no unlearning: the learners alone) of DER++ vs refresh learning over the same sequence and seeds."""
    seed_list = list(range(seeds))
    lines = [f"## Refresh learning against DER++ alone ({data}, θ_o, {seeds} seeds)\n",
             "Average accuracy of θ_o over every task learned (tasks 1–4: θ_o never unlearns), after the last "
             "operation; paired by seed (same initialisation and data order); 95 % t-interval of the difference.\n",
             "| Learner | δ | ACC (%) | refresh − DER++ (pp) | 95 % CI | seeds better |", "|---|---:|---:|---:|---|---:|"]

    def accs(config: str, extra: list[str]) -> np.ndarray | str:
        from unlearnkit.errors import MethodError

        try:
            rows, _, _ = run(config, out, [f"seeds={seed_list}", "methods=[retrain]", *overrides, *extra])
        except MethodError as err:  # the pre-flight check refuses a θ_o at chance
            return str(err).split(": ", 1)[-1][:90]
        vals = []
        for s in seed_list:
            steps, mat = accuracy_matrix(rows, "original", s)
            last = mat[-1]
            vals.append(float(np.nanmean(last[: 4])))
        return np.asarray(vals)

    base = accs(f"continual_{data}.yaml", [])
    lines.append(f"| DER++ | — | {_ms(list(base))} | | | |")
    for delta in (1e-5, 1e-4, 1e-3, 1e-2):
        ref = accs(f"continual_{data}_refresh.yaml", [f"scenario.learner.delta={delta:.1e}"])
        if isinstance(ref, str):
            lines.append(f"| refresh | {delta:g} | refused: {ref} | | | |")
            continue
        m, lo, hi = t_interval(ref - base)
        lines.append(f"| refresh | {delta:g} | {_ms(list(ref))} | {m:+.2f} | [{lo:+.2f}, {hi:+.2f}] | "
                     f"{int((ref > base).sum())}/{len(base)} |")
    return "\n".join(lines) + "\n"


def part_acu_cost(repeats: int = 5) -> str:
    """Seconds of one ACU request (the Woodbury downdate of 100 samples) and of refitting the ridge head on what
    remains, after learning 1…5 permuted copies of digits (1,348 samples each)."""
    import torch

    from unlearnkit.config.schema import DataConfig, EngineConfig, ModelSpec, TrainConfig
    from unlearnkit.data import load_data
    from unlearnkit.data.continual import permuted_tasks
    from unlearnkit.engine.loop import Engine
    from unlearnkit.methods import METHODS, UnlearnContext
    from unlearnkit.methods.classifier.analytic_head import RidgeHead
    from unlearnkit.methods.continual import LEARNERS, LearnSpec, ModelInfo

    torch.set_num_threads(1)
    eng = Engine(EngineConfig(progress=False, threads=1))
    d = permuted_tasks(load_data(DataConfig(name="digits")), 5, 0)
    groups = tuple(tuple(range(10 * t, 10 * t + 10)) for t in range(5))
    spec = ModelSpec(name="mlp", params={"hidden": [100, 100]})
    learner = LEARNERS.build("acu", {"buffer_size": 1024})
    model = learner.build(lambda: None, ModelInfo((1, 8, 8), 50, groups, "single", spec, 0))
    rec = TrainConfig(epochs=1)
    lines = ["## ACU: cost of a request as the learned data grows (permuted digits, buffer 1,024)\n",
             "One request = 100 samples of task 1, removed by ACU's Woodbury downdate (reads only those 100); the "
             "alternative is refitting the ridge head on everything that remains (closed form, same features). "
             f"Median of {repeats} repetitions, 1 thread.\n",
             "| tasks learned | samples in the fit | ACU request (s) | refit on D_r (s) | max abs diff W |",
             "|---:|---:|---:|---:|---:|"]
    train = d.train
    parts = [train.take(np.isin(train.labels, g)) for g in groups]
    req = parts[0].take(np.arange(100), "forget")
    acu = METHODS.build("acu", {})
    kept = np.zeros(0, dtype=np.int64)
    for t in range(5):
        learner.learn(model, LearnSpec(parts[t], t, groups, rec, seed=t), eng)
        kept = np.union1d(kept, parts[t].ids)
        remain = train.select_ids(np.setdiff1d(kept, req.ids), "retain")
        t_acu, t_fit, diff = [], [], 0.0
        for _ in range(repeats):
            import copy

            m = copy.deepcopy(model)
            t0 = time.perf_counter()
            acu.unlearn(m, req, remain, eng, UnlearnContext(seed=0))
            t_acu.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            feats, labels, _ = m.collect(remain, eng)
            ref = RidgeHead(0.1, buffer_size=1024, buffer_seed=0).fit(feats, labels, num_classes=50)
            t_fit.append(time.perf_counter() - t0)
            diff = float((ref.W - m.W).abs().max())
        lines.append(f"| {t + 1} | {len(kept)} | {np.median(t_acu):.3f} | {np.median(t_fit):.3f} | {diff:.1e} |")
    return "\n".join(lines) + "\n"


def part_uncle_ablation(out: Path, data: str, overrides: list[str]) -> str:
    """UnCLe with and without forgotten tasks in the learning regulariser (``hold_forgotten``): relapse."""
    lines = [f"## UnCLe: forgotten tasks in the regulariser or not ({data}, 3 seeds)\n",
             "| hold_forgotten | UnCLe's forgotten tasks (%) | oracle's (%) | relapse (pp) | retained ACC (%) |",
             "|---|---:|---:|---:|---:|"]
    for hold in ("true", "false"):
        rows, _, _ = run(f"continual_{data}_uncle.yaml", out,
                         [*overrides, f"scenario.learner.hold_forgotten={hold}", "methods=[retrain, uncle]"])
        seeds = sorted({r["seed"] for r in rows})
        u = [cl_summary(rows, "uncle", s) for s in seeds]
        o = [cl_summary(rows, "retrain", s) for s in seeds]
        lines.append(f"| {hold} | {_ms([x['acc_forgotten'] for x in u])} | {_ms([x['acc_forgotten'] for x in o])} "
                     f"| {_ms([x['relapse'] for x in u])} | {_ms([x['acc'] for x in u])} |")
    return "\n".join(lines) + "\n"


def part_o3(out: Path, overrides: list[str]) -> str:
    rows, run_dir, secs = run("llm/tofu_tiny_o3.yaml", out, overrides)
    keys = (("forget_quality", "Forget quality ↑", "{:.2g}"), ("model_utility", "Model utility ↑", "{:.3f}"),
            ("forget.rouge", "Forget ROUGE-L", "{:.3f}"), ("mia.min_k.auc", "MIA AUC Min-K%", "{:.3f}"))
    methods = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    reqs = sorted({r["request"] for r in rows if "request" in r})
    lines = [f"## O3 on sequential TOFU batches (`configs/llm/tofu_tiny_o3.yaml`, wall {secs:.0f} s)\n",
             "Synthetic TOFU, tiny Llama from scratch; 4 requests of one person each; metrics after each request on "
             "everything removed so far (mean ± std over seeds).\n"]
    for key, title, f in keys:
        lines += [f"{title}:\n", "| Method | " + " | ".join(f"request {q}" for q in reqs) + " |",
                  "|---|" + "---:|" * len(reqs)]
        for m in methods:
            cells = []
            for q in reqs:
                vals = [r["metrics"].get(key) for r in rows if r["method"] == m and r.get("request") == q
                        and r.get("status") == "ok"]
                cells.append(_ms([float(v) for v in vals if isinstance(v, (int, float))], f))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    secs_o3 = [r["metrics"].get("unlearn_seconds") for r in rows if r["method"] == "o3" and r.get("status") == "ok"]
    lines.append(f"O3 seconds per request: {_ms([float(s) for s in secs_o3], '{:.2f}')}.\n")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["digits", "mnist1d", "refresh", "acu_cost", "o3"])
    ap.add_argument("--mnist1d-root", default=str(ROOT.parent / "shared" / "data" / "mnist1d"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "benchmarks-continual"))
    ap.add_argument("--refresh-seeds", type=int, default=10)
    ap.add_argument("--refresh-data", nargs="+", default=["digits", "mnist1d"], help="data sets of the refresh part")
    ap.add_argument("--permuted-methods", nargs="+", default=["retrain", "uncle", "finetune"],
                    help="methods of the permuted part")
    ap.add_argument("--permuted-seeds", default="[0,1,2]", help="seeds of the permuted part (a YAML list)")
    args = ap.parse_args()
    out = Path(args.out)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        t0 = time.time()
        if part in ("digits", "mnist1d"):
            text = part_suite(part, out, [f"data.root={args.mnist1d_root}"] if part == "mnist1d" else [])
        elif part == "refresh":
            text = "\n".join(part_refresh(out, args.refresh_seeds, data,
                                          [f"data.root={args.mnist1d_root}"] if data == "mnist1d" else [])
                             for data in args.refresh_data)
        elif part == "acu_cost":
            text = part_acu_cost()
        elif part == "uncle_ablation":
            text = "\n".join(part_uncle_ablation(out, data, [f"data.root={args.mnist1d_root}"]
                                                  if data == "mnist1d" else []) for data in ("digits", "mnist1d"))
        elif part == "permuted":
            text = part_permuted(out, args.permuted_methods, [f"seeds={args.permuted_seeds}"])
        elif part == "o3":
            text = part_o3(out, [])
        else:
            raise SystemExit(f"unknown part {part!r}")
        note = (f"<!-- part {part}: `python benchmarks/continual.py --parts {part}`, {time.strftime('%Y-%m-%d')}, "
                f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), torch threads 1, Python "
                f"{platform.python_version()}, {time.time() - t0:.0f} s -->\n")
        (OUT.parent / f"continual_{part}.md").write_text(note + text)
        print(text, flush=True)
    order = ["digits", "mnist1d", "permuted", "refresh", "acu_cost", "uncle_ablation", "o3"]
    parts = [OUT.parent / f"continual_{p}.md" for p in order if (OUT.parent / f"continual_{p}.md").exists()]
    OUT.write_text("# Continual learning and unlearning (issue 17)\n\n" + "\n".join(p.read_text() for p in parts))


if __name__ == "__main__":
    main()
