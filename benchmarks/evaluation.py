"""Evaluation and audit suite on digits: NeurIPS-2023 score, U-LiRA, relearning, corrective curves over p.

Usage:
    python benchmarks/evaluation.py [--seeds 3] [--shadows 8] [--out benchmarks/results] [--output-dir runs/bench]

1. **NeurIPS-2023 score** (Triantafillou et al. 2024) of several classifier methods on digits random 10 %, through
   the normal runner (3 seeds = 3 unlearned + 3 oracle models; the competition used 512), plus the ``mia`` family
   (ROC curves in the report), ``representation`` (CKA) and ``relearn`` (relearning attack) metrics.
2. **U-LiRA** (Hayes et al. 2024): per method, K shadow models on a 600-sample digits pool are trained, then the
   100 targets each shadow trained on are unlearned with the method; leave-one-out attack AUC / accuracy. The
   shadow count is varied for one method to show the estimate's spread.
3. **Corrective** (Goel et al. 2024): the bundled ``digits_corrective`` scenario through the runner: 5 % of digits
   poisoned (1-pixel trigger, target 0); retrain (oracle), SSD and SCRUB forget the identified fraction
   p ∈ {10, 25, 50, 100} %; attack success rate and clean accuracy.

Writes ``<out>/evaluation.md``. CPU cost: a few minutes on one core (timings are noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from unlearnkit.bench import run_experiment
from unlearnkit.config import load_config
from unlearnkit.config.schema import DataConfig, MethodSpec
from unlearnkit.data.scenarios import load_data
from unlearnkit.engine.loop import Engine
from unlearnkit.methods import METHODS
from unlearnkit.metrics.lira import leave_one_out, train_shadows
from unlearnkit.models import build_model
from unlearnkit.report import compute_neurips, load_rows, summarize, write_reports

METHODS_SCORED = [
    {"name": "finetune", "batch_size": 64}, {"name": "grad_ascent", "batch_size": 64},
    {"name": "random_label", "batch_size": 64}, {"name": "l1_sparse", "batch_size": 64}, {"name": "ssd"},
    {"name": "scrub", "batch_size": 64}, {"name": "salun", "batch_size": 64},
]
ULIRA_METHODS = {"retrain": {}, "finetune": {"batch_size": 64}, "grad_ascent": {"batch_size": 64},
                 "random_label": {"batch_size": 64}, "ssd": {}, "scrub": {"batch_size": 64}}


def _fmt(x: float, d: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def neurips_part(seeds: int, output_dir: str) -> tuple[list[str], Path]:
    cfg = load_config("digits_random10", [f"seeds={seeds}", "engine.progress=false", f"output_dir={output_dir}",
                                          "name=eval_digits_random10", "engine.threads=1",
                                          "metrics=[accuracy, mia_efficacy, mia, representation, relearn]"])
    cfg = cfg.model_copy(update={"methods": [MethodSpec.model_validate(m) for m in ["retrain", *METHODS_SCORED]]})
    t0 = time.perf_counter()
    out = run_experiment(cfg, write_report=False)
    scores = compute_neurips(out.run_dir)
    write_reports(out.run_dir)
    wall = time.perf_counter() - t0
    summ = {s.method: s for s in summarize(load_rows(out.run_dir))}
    lines = [f"### NeurIPS-2023 score, relearning and CKA (digits random 10 %, {seeds} seeds, wall {wall:.0f} s)", "",
             "| Method | Score | F | RA ratio | TA ratio | UA (%) | relearn AUC (%) | relearn gap vs oracle (pp) | "
             "CKA(θ_u, θ_o) on D_f | MIA loss AUC (forget) |",
             "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    o = summ.get("retrain")
    if o is not None:
        lines.append(f"| retrain (oracle) | — | — | 1 | 1 | {_fmt(o.mean.get('unlearn_acc'), 2)} | "
                     f"{_fmt(o.mean.get('relearn_auc'), 1)} | 0 | {_fmt(o.mean.get('cka_original_forget'))} | "
                     f"{_fmt(o.mean.get('mia_loss_auc_forget'))} |")
    for m, s in scores["methods"].items():
        sm = summ.get(m)
        g = (lambda k, d=3: _fmt(sm.mean.get(k, float("nan")), d)) if sm else (lambda k, d=3: "—")  # noqa: E731
        if "error" in s:
            lines.append(f"| {m} | n/a ({s['error'][:60]}) | | | | {g('unlearn_acc', 2)} | | | | |")
            continue
        lines.append(f"| {m} | {_fmt(s['neurips_score'])} | {_fmt(s['forget_quality'])} | {_fmt(s['retain_ratio'])} "
                     f"| {_fmt(s['test_ratio'])} | {g('unlearn_acc', 2)} | {g('relearn_auc', 1)} | "
                     f"{g('relearn_auc_gap', 1)} | {g('cka_original_forget')} | {g('mia_loss_auc_forget')} |")
    return lines, out.run_dir


def ulira_part(n_shadow: int, engine: Engine) -> list[str]:
    cfg = load_config("digits_random10", ["engine.progress=false"])
    data = load_data(DataConfig(name="digits"))
    rng = np.random.default_rng(0)
    pool = data.train.take(np.sort(rng.choice(len(data.train), 600, replace=False)), "pool")
    targets = np.sort(rng.choice(pool.ids, 200, replace=False))

    def factory(seed: int):
        return build_model(cfg.model, pool.input_shape, 10, seed=seed)

    lines = ["", "### U-LiRA (digits, pool 600, 200 targets, each shadow forgets the ~100 targets it trained on)", "",
             "| Method | shadows K | AUC | best balanced accuracy | IN / OUT instances | wall (s) |",
             "| :--- | ---: | ---: | ---: | ---: | ---: |"]
    for name, params in ULIRA_METHODS.items():
        t0 = time.perf_counter()
        sh = train_shadows(pool, model_factory=factory, recipe=cfg.train, engine=engine, n_shadow=n_shadow, seed=0,
                           unlearner=METHODS.build(name, params), targets=targets)
        res = leave_one_out(sh)
        lines.append(f"| {name} | {n_shadow} | {res.auc:.3f} | {res.accuracy:.3f} | {res.n_in} / {res.n_out} | "
                     f"{time.perf_counter() - t0:.0f} |")
        print(lines[-1], flush=True)
    # spread of the estimate with the number of shadows (finetune, two membership draws each)
    lines += ["", "Effect of K (finetune; two independent membership draws per K):", "",
              "| K | AUC (draw 0) | AUC (draw 1) |", "| ---: | ---: | ---: |"]
    for k in (4, n_shadow, 2 * n_shadow):
        aucs = []
        for s in (1, 2):
            sh = train_shadows(pool, model_factory=factory, recipe=cfg.train, engine=engine, n_shadow=k, seed=s,
                               unlearner=METHODS.build("finetune", {"batch_size": 64}), targets=targets)
            aucs.append(leave_one_out(sh).auc)
        lines.append(f"| {k} | {aucs[0]:.3f} | {aucs[1]:.3f} |")
        print(lines[-1], flush=True)
    return lines


def corrective_part(output_dir: str) -> list[str]:
    """The bundled digits_corrective scenario (1 seed, digits_random10's 30-epoch recipe) through the runner."""
    from unlearnkit.bench import Runner
    from unlearnkit.data.corrective import MANIPULATION_KEY, corrective_values

    cfg = load_config("digits_corrective", ["seeds=[0]", "train.epochs=30", "engine.progress=false",
                                            "engine.threads=1", f"output_dir={output_dir}",
                                            "methods=[retrain, ssd, {name: scrub, batch_size: 64}]"])
    t0 = time.perf_counter()
    runner = Runner(cfg)
    out = runner.run()
    write_reports(out.run_dir)
    wall = time.perf_counter() - t0
    manip = runner.stages[0].references[MANIPULATION_KEY]
    theta_o = runner.original(0).model
    v_o = corrective_values(manip, lambda s: runner.engine.predict(theta_o, s))
    lines = ["", f"### Corrective: 5 % poisoned digits ({len(manip.manipulated_ids)} samples, 1-pixel trigger, target "
                 f"0), seed 0, wall {wall:.0f} s", "",
             "ASR = % of triggered non-target test samples predicted 0 (lower is better); clean = clean test "
             "accuracy (%).", "", "| Method | p | ASR (%) | corrupted-domain acc (%) | clean acc (%) |",
             "| :--- | ---: | ---: | ---: | ---: |",
             f"| original θ_o | 0 % | {v_o['attack_success_rate']:.1f} | {v_o['corrupted_acc']:.1f} | "
             f"{v_o['clean_acc']:.1f} |"]
    for r in sorted(out.rows, key=lambda r: (r["identified_fraction"], not r.get("is_oracle"))):
        m = r.get("metrics") or {}
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['identified_fraction']:g} | error: {r['error'][:80]} | | |")
            continue
        lab = r["method"] + (" (oracle)" if r.get("is_oracle") else "")
        lines.append(f"| {lab} | {100 * r['identified_fraction']:g} % | {m['attack_success_rate']:.1f} | "
                     f"{m['corrupted_acc']:.1f} | {m['clean_acc']:.1f} |")
    lines += ["", f"Report with the curves over p: `{out.run_dir}/report.html`."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shadows", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--output-dir", default="runs/bench")
    ap.add_argument("--parts", nargs="+", default=["neurips", "ulira", "corrective"])
    args = ap.parse_args()
    from unlearnkit.config.schema import EngineConfig

    engine = Engine(EngineConfig(device="cpu", progress=False, threads=1))
    t0 = time.perf_counter()
    lines = [f"<!-- benchmarks/evaluation.py: {platform.machine()}, {time.strftime('%Y-%m-%d')}, shared CPU (timings "
             "noisy) -->", "## Evaluation and audit suite (digits)", ""]
    if "neurips" in args.parts:
        part, run_dir = neurips_part(args.seeds, args.output_dir)
        lines += part + ["", f"Report with ROC curves, ε histogram and CKA bars: `{run_dir}/report.html`."]
    if "ulira" in args.parts:
        lines += ulira_part(args.shadows, engine)
    if "corrective" in args.parts:
        lines += corrective_part(args.output_dir)
    lines += ["", f"Total wall time {time.perf_counter() - t0:.0f} s."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "evaluation.md" if set(args.parts) == {"neurips", "ulira", "corrective"} else \
        f"evaluation_{'_'.join(args.parts)}.md"
    (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
