"""SISA deletion speed-up versus full retraining, against the theory, and accuracy versus the number of shards.

Usage:
    python benchmarks/sisa.py [--datasets digits cifar10] [--cifar-root ../shared/data/cifar10] [--out benchmarks/results]

For every dataset and (S, R) ∈ {1, 2, 5, 10, 20} × {1, 5, 10}: train SISA (same total epoch budget E per shard as the
baseline), then delete single points one request at a time and measure each deletion's wall-clock seconds and
sample-epochs. Deleted points are drawn with one point per slice position (slice r = 0..R−1, a random shard and point
each; 3 random points when R = 1), so the mean over them is exactly the expectation over the uniformly random slice
that the theory averages over. The baseline retrains one model on N − 1 samples for E epochs (plus one checkpoint
write, as a deployed model must be persisted) after each of ``--rounds`` (default 2) rounds of deletions, so that
deletions and baseline are interleaved in the same process and share the machine's load.

    speed-up (seconds)        = full-retrain seconds / mean deletion seconds        (same process, interleaved)
    speed-up (sample-epochs)  = E·(N−1) / mean deletion sample-epochs
    speed-up (optimizer steps) = full-retrain optimizer steps / mean deletion optimizer steps
    theory                    = E·N / (E·(N/S)·(2R+1)/(3R)) = 3RS / (2R+1)          (Bourtoule et al., §V)

Writes ``<out>/sisa.md`` (tables), ``<out>/sisa.svg`` (a plot drawn without matplotlib) and ``<out>/sisa.json`` (the
raw rows; ``--from-json`` re-renders the markdown and plot from it).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearnkit.config.schema import DataConfig, EngineConfig, ModelSpec, TrainConfig
from unlearnkit.data import load_data
from unlearnkit.engine.checkpoint import save_checkpoint
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.exact.sisa import SISA, SISAConfig, aggregate, build_init, sisa_expected_cost, slice_epochs
from unlearnkit.models import build_model

SHARDS = (1, 2, 5, 10, 20)
SLICES = (1, 5, 10)

DATASETS = {
    # E = 33: 2E/(R+1) is an integer for R ∈ {1, 5, 10}, so the schedule has no rounding and theory applies exactly
    "digits": dict(data=dict(name="digits"), model=ModelSpec(name="mlp", hidden=[128, 64]),
                   recipe=TrainConfig(epochs=33, batch_size=32, lr=0.05, scheduler="none")),
    "cifar10": dict(data=dict(name="cifar10", train_subset=600, test_subset=500),
                    model=ModelSpec(name="cnn", channels=[8, 16, 32]),
                    recipe=TrainConfig(epochs=5, batch_size=32, lr=0.05, scheduler="none")),
}


def schedule_cost(n: int, shards: int, slices: int, epochs: int) -> float:
    """Expected cost of one deletion under the integer epoch schedule (what the formula approximates)."""
    ep = slice_epochs(epochs, slices)
    per = n / (shards * slices)
    return sum(sum(ep[j] * per * (j + 1) for j in range(r, slices)) for r in range(slices)) / slices


def run_dataset(name: str, cifar_root: str | None, rng_seed: int = 0, rounds: int = 2) -> list[dict]:
    spec = DATASETS[name]
    dcfg = dict(spec["data"])
    if name == "cifar10":
        dcfg["root"] = cifar_root
    data = load_data(DataConfig(**dcfg))
    train, test = data.train, data.test
    shape, k = train.input_shape, data.num_classes
    recipe: TrainConfig = spec["recipe"]
    engine = Engine(EngineConfig(progress=False, device="cpu"))

    def factory(seed: int):
        return build_model(spec["model"], shape, k, seed=seed)

    xt, yt, _ = test.batch(np.arange(len(test)))
    n = len(train)
    rng = np.random.default_rng(rng_seed)
    rows = []
    for shards in SHARDS:
        for slices in SLICES:
            with tempfile.TemporaryDirectory(prefix="sisa-bench-") as tmp:
                sisa = SISA(SISAConfig(shards=shards, slices=slices, train=recipe, seed=0), factory, tmp, engine)
                fit = sisa.fit(train)
                with torch.no_grad():
                    outs = [m(xt) for m in sisa.members()]
                acc = {}
                for agg in ("vote", "softmax"):
                    acc[agg] = 100.0 * float((aggregate(outs, agg).argmax(1) == yt).float().mean())
                assign = sisa.assignment()
                positions = list(range(slices)) if slices > 1 else [0, 0, 0]
                del_s, del_cpu, del_se, del_steps = [], [], [], []
                full_s, full_cpus = [], []
                for rnd in range(rounds):
                    for r in positions:
                        active = set(sisa.active_ids.tolist())
                        pool = sorted(i for i, (_, q) in assign.items() if q == r and i in active)
                        victim = int(rng.choice(pool))
                        c0 = time.process_time()
                        rep = sisa.delete([victim])
                        del_cpu.append(time.process_time() - c0)
                        del_s.append(rep.seconds)
                        del_se.append(rep.sample_epochs)
                        del_steps.append(rep.steps)
                    # interleaved baseline after each round: full retraining on N − 1 samples + one checkpoint
                    t0, c0 = time.perf_counter(), time.process_time()
                    model = build_init(factory, 12345)
                    res = engine.fit(model, train.exclude_ids([victim]), recipe, seed=1)
                    save_checkpoint(Path(tmp) / f"full{rnd}", model)
                    full_s.append(time.perf_counter() - t0)
                    full_cpus.append(time.process_time() - c0)
                full_cpu = float(np.mean(full_cpus))
                full_se, full_steps = res.samples, res.steps
            theory = sisa_expected_cost(n, shards, slices, recipe.epochs)
            rows.append(dict(
                dataset=name, n=n, S=shards, R=slices, E=recipe.epochs, rounds=rounds, fit_seconds=fit.seconds,
                fit_sample_epochs=fit.sample_epochs, deletions=len(del_s), delete_seconds=float(np.mean(del_s)),
                delete_sample_epochs=float(np.mean(del_se)), full_seconds=float(np.mean(full_s)),
                full_sample_epochs=full_se, theory_sample_epochs=theory,
                schedule_sample_epochs=schedule_cost(n, shards, slices, recipe.epochs),
                speedup_seconds=float(np.mean(full_s) / np.mean(del_s)),
                delete_cpu=float(np.mean(del_cpu)), full_cpu=full_cpu, speedup_cpu=full_cpu / float(np.mean(del_cpu)),
                speedup_sample_epochs=full_se / float(np.mean(del_se)),
                delete_steps=float(np.mean(del_steps)), full_steps=full_steps, full_cpu_runs=full_cpus,
                speedup_steps=full_steps / float(np.mean(del_steps)),
                speedup_theory=3 * slices * shards / (2 * slices + 1), acc_vote=acc["vote"], acc_softmax=acc["softmax"],
            ))
            r = rows[-1]
            print(f"{name:8s} S={shards:2d} R={slices:2d}: speed-up {r['speedup_seconds']:6.2f} wall, "
                  f"{r['speedup_cpu']:6.2f} CPU, "
                  f"{r['speedup_sample_epochs']:6.2f} sample-epoch-based, theory {r['speedup_theory']:6.2f}; "
                  f"acc vote {acc['vote']:.1f} softmax {acc['softmax']:.1f}", flush=True)
    return rows


def to_markdown(rows: list[dict], wall: float) -> str:
    out = [f"<!-- benchmarks/sisa.py: {platform.machine()}, torch {torch.__version__}, wall {wall:.0f} s, "
           f"{time.strftime('%Y-%m-%d')} -->",
           "# SISA: deletion speed-up over full retraining, and accuracy versus shards",
           "",
           f"One point deleted per request, one request per slice position (3 for R = 1), in "
           f"{rows[0].get('rounds', 1) if rows else 1} round(s); the full retraining on N − 1 samples is measured "
           "after each round, in the same process (interleaved, so both share the machine's load). Theory "
           "3RS/(2R+1) (Bourtoule et al., arXiv:1912.03817 §V). *ratio* = measured / theory. Wall-clock seconds on a "
           "2-core CPU shared with other jobs are noisy (load average 3–8 during the recorded run); CPU seconds of this "
           "single-threaded process (time.process_time) are far less sensitive to the other jobs; the sample-epoch "
           "columns are exact counts. *theory, integer schedule*: the speed-up the integer epoch schedule "
           "(⌊2E(r+1)/(R+1)⌋ − ⌊2Er/(R+1)⌋ epochs per step) predicts; it differs from 3RS/(2R+1) when 2E/(R+1) is "
           "not an integer (CIFAR-10, E = 5). *opt. steps*: optimizer steps (minibatches) of a deletion and of the "
           "full retraining, exact counts; *ratio (opt. steps)* = their speed-up / theory is the most a CPU-seconds ratio "
           "can reach when every step costs the same whatever its batch fill; *CPU / opt.-step speed-up* is the part "
           "of that bound the measured CPU seconds realise (1 = no fixed cost per deletion or per retrained slice).",
           ""]
    for ds in sorted({r["dataset"] for r in rows}):
        sub = [r for r in rows if r["dataset"] == ds]
        r0 = sub[0]
        out += [f"## {ds} (N = {r0['n']} training samples, E = {r0['E']} epochs per shard)", "",
                "| S | R | deletion wall (s) | full wall (s) | speed-up wall | deletion CPU (s) | full CPU (s) "
                "| speed-up CPU | ratio CPU | deletion (sample-ep.) | speed-up (sample-ep.) | theory "
                "| ratio (sample-ep.) | theory, integer schedule | deletion (opt. steps) | speed-up (opt. steps) "
                "| ratio (opt. steps) | CPU / opt.-step speed-up | acc. vote | acc. softmax |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in sub:
            out.append(
                f"| {r['S']} | {r['R']} | {r['delete_seconds']:.3f} | {r['full_seconds']:.3f} | "
                f"{r['speedup_seconds']:.2f} | {r['delete_cpu']:.3f} | {r['full_cpu']:.3f} | {r['speedup_cpu']:.2f} | "
                f"{r['speedup_cpu'] / r['speedup_theory']:.2f} | "
                f"{r['delete_sample_epochs']:.0f} | {r['speedup_sample_epochs']:.2f} | {r['speedup_theory']:.2f} | "
                f"{r['speedup_sample_epochs'] / r['speedup_theory']:.2f} | "
                f"{r['full_sample_epochs'] / r['schedule_sample_epochs']:.2f} | "
                + (f"{r['delete_steps']:.1f} | {r['speedup_steps']:.2f} | "
                   f"{r['speedup_steps'] / r['speedup_theory']:.2f} | {r['speedup_cpu'] / r['speedup_steps']:.2f} | "
                   if "speedup_steps" in r else "– | – | – | – | ")
                + f"{r['acc_vote']:.1f} | {r['acc_softmax']:.1f} |")
        out.append("")
    ratio_se = [r["speedup_sample_epochs"] / r["speedup_theory"] for r in rows]
    ratio_sched = [r["speedup_sample_epochs"] * r["schedule_sample_epochs"] / r["full_sample_epochs"] for r in rows]
    ratio_cpu = [r["speedup_cpu"] / r["speedup_theory"] for r in rows]
    ok = sum(x >= 0.9 for x in ratio_cpu)

    def names(sel: list[dict]) -> str:
        return ", ".join(f"{r['dataset']} S={r['S']} R={r['R']}" for r in sel) or "none"

    with_steps = [r for r in rows if "speedup_steps" in r]
    reach = [r for r in rows if r["speedup_cpu"] / r["speedup_theory"] >= 0.9]
    bound = [r for r in with_steps if r["speedup_steps"] / r["speedup_theory"] < 0.9]
    rest = [r for r in with_steps if r not in bound and r not in reach]
    eff = [r["speedup_cpu"] / r["speedup_steps"] for r in with_steps]
    eff_big = [r["speedup_cpu"] / r["speedup_steps"] for r in with_steps if r["S"] * r["R"] >= 50]
    if with_steps:
        steps_text = (
            f"- **Why the others cannot** (optimizer steps, exact counts): {len(bound)} of {len(with_steps)} "
            f"configurations have an optimizer-step speed-up below 0.9 × theory: {names(bound)}. The SISA schedule "
            "trains small shards' slice prefixes in partly filled minibatches (digits S = 20, R = 10: prefixes of "
            "7–67 samples at batch size 32, 6 epochs each, so ≈ 66 steps where 1 555 sample-epochs at full batches "
            "would take ≈ 49; the full retraining fills all its batches), and a step of the digits MLP costs nearly "
            "the same whatever its batch fill (per-step framework overhead dominates its tiny matrix products), so "
            "for digits no removal of fixed costs can bring these rows to 0.9: minibatch underfill is a property of "
            "the schedule at that shard size, not an overhead. The CIFAR-10 CNN's steps cost more in proportion to "
            "their batch, so there the step bound is looser. The remaining below-goal rows ({}) have a step bound "
            "≥ 0.9 but lose the rest to fixed costs and timing noise.".format(names(rest))
            + f" Measured CPU speed-up / optimizer-step speed-up = {min(eff):.2f}–{max(eff):.2f}"
            + (f" ({min(eff_big):.2f}–{max(eff_big):.2f} where S·R ≥ 50)" if eff_big else "")
            + ": the fixed costs that remain are a fresh optimizer and Engine set-up per retrained slice, the "
            "checkpoint of every retrained slice (safetensors file + manifest, each hashed once and fsynced, plus "
            "the checkpoint folder's fsync — crash safety needs them before the commit) and the state commit "
            "(two atomic JSON writes).")
    else:
        steps_text = "- (optimizer-step columns missing: rows from an older run)"
    spread = [max(r["full_cpu_runs"]) / min(r["full_cpu_runs"]) for r in rows if len(r.get("full_cpu_runs", [])) > 1]
    above = [r for r in with_steps if r["speedup_cpu"] / r["speedup_steps"] > 1.05]
    noise_text = (
        "- **Timing noise**: the machine is shared with other jobs, and CPU seconds of a single-threaded process "
        "still vary with them (shared cores and caches). "
        + (f"The two identical full retrainings of a configuration differed by up to {max(spread):.2f}× in CPU "
           f"seconds (median {float(np.median(spread)):.2f}×). " if spread else "")
        + (f"CPU speed-ups above the optimizer-step speed-up by > 5 % ({names(above)}) are that noise, or, for "
           "the CNN, cheaper steps on partly filled batches. " if above else "")
        + "Read single rows as ±20 %; the trend over S·R and the step-count columns are reliable.")
    out += ["## Readings", "",
            f"- **Sample-epochs** (exact counts): measured / theory = {min(ratio_se):.2f}–{max(ratio_se):.2f}; "
            f"measured / integer-schedule theory = {min(ratio_sched):.2f}–{max(ratio_sched):.2f}. A deletion trains "
            f"exactly the planned cost; the ≥ 0.9 × theory goal holds in sample-epochs in "
            f"{sum(x >= 0.9 for x in ratio_se)} of {len(rows)} rows (the lowest rows are those where 2E/(R+1) is not "
            "an integer, so the integer schedule gives the early slices fewer epochs).",
            f"- **CPU seconds**: {ok} of {len(rows)} configurations reach ≥ 0.9 × theory: {names(reach)}. "
            "The ratio falls as S·R grows. Fixed costs per deletion were cut without weakening exactness, crash "
            "safety or content addressing: a deletion resumes from the checkpoint weights this process wrote or "
            "verified before (a size-bounded in-memory memo, used only while the manifest on disk still names the "
            "same weights digest; a checkpoint read from disk is still verified), the new members come from the "
            "job's in-memory weights instead of a re-read and re-hash, each new state is hashed once, the "
            "checkpoint folder is fsynced once per retrained shard instead of once per checkpoint (every file and "
            "every checkpoint folder is still fsynced before the state commit), and seeding skips torch's lazy "
            "accelerator seeds on CPU-only machines. Measured separately (2026-11-29, same process, deletions of "
            "the previous and the new implementation interleaved, identical digests; not re-measured by this "
            "script): CPU per deletion −3 % at digits S = 20, R = 10 (78 → 76 ms) and −12 % at S = 10, R = 5 "
            "(102 → 90 ms), wall −11 % and −7 %; fsyncs per deletion at S = 20, R = 10: 26 → 21.5. That is "
            "within this table's noise, which is why the count of rows reaching the goal did not move.",
            steps_text,
            noise_text,
            "- **Wall-clock** speed-ups track CPU ones but with the machine's load on top, and include the fsyncs' "
            "waits (a deletion writes a checkpoint per retrained slice; the baseline writes one).",
            "- **Accuracy** falls as S grows (each member sees N/S samples): digits 98.2 % (S = 1) → ≈ 95 % (S = 20); "
            "CPU-sized CIFAR-10 (600 images, 5 epochs) is far from converged at any S and mostly noise. Softmax "
            "averaging is at least as accurate as voting in most rows.",
            "",
            "![speed-up and accuracy versus shards](sisa.svg)"]
    return "\n".join(out) + "\n"


def to_svg(rows: list[dict]) -> str:
    """Per dataset: speed-up vs S (log-log; theory dashed, seconds solid, sample-epochs dotted; one colour per R)
    and accuracy vs S (R = 1, vote and softmax)."""
    datasets = sorted({r["dataset"] for r in rows})
    W, H, pad = 330, 240, 45
    colors = {1: "#1b9e77", 5: "#d95f02", 10: "#7570b3"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H * len(datasets) + 30}" '
             'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']

    def panel(x0, y0, title, xs_log, ylog, series, ylabel):
        allx = [x for s in series for x, _ in s[2]]
        ally = [y for s in series for _, y in s[2] if y > 0]
        lo_y, hi_y = (min(ally), max(ally)) if ally else (0.0, 1.0)
        if ylog:
            lo_y, hi_y = np.log10(lo_y) - 0.05, np.log10(hi_y) + 0.05
        else:
            lo_y, hi_y = lo_y - 2, hi_y + 2
        lx = np.log10(min(allx)), np.log10(max(allx))

        def px(x):
            return x0 + pad + (np.log10(x) - lx[0]) / (lx[1] - lx[0] or 1) * (W - pad - 15)

        def py(y):
            v = np.log10(y) if ylog else y
            return y0 + H - pad + 10 - (v - lo_y) / (hi_y - lo_y or 1) * (H - pad - 25)

        parts.append(f'<text x="{x0 + W / 2}" y="{y0 + 14}" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<line x1="{x0 + pad}" y1="{y0 + H - pad + 10}" x2="{x0 + W - 15}" y2="{y0 + H - pad + 10}" '
                     'stroke="black"/>')
        parts.append(f'<line x1="{x0 + pad}" y1="{y0 + 20}" x2="{x0 + pad}" y2="{y0 + H - pad + 10}" stroke="black"/>')
        for s in sorted(set(allx)):
            parts.append(f'<text x="{px(s):.1f}" y="{y0 + H - pad + 24}" text-anchor="middle">{s}</text>')
        parts.append(f'<text x="{x0 + W / 2}" y="{y0 + H - 6}" text-anchor="middle">shards S</text>')
        ticks = [10 ** t for t in range(int(np.floor(lo_y)), int(np.ceil(hi_y)) + 1)] if ylog else \
            list(np.linspace(lo_y + 2, hi_y - 2, 4))
        for t in ticks:
            v = np.log10(t) if ylog else t
            if lo_y <= v <= hi_y:
                parts.append(f'<text x="{x0 + pad - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>'
                             if ylog else
                             f'<text x="{x0 + pad - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.0f}</text>')
        parts.append(f'<text x="{x0 + 10}" y="{y0 + H / 2}" transform="rotate(-90 {x0 + 10} {y0 + H / 2})" '
                     f'text-anchor="middle">{ylabel}</text>')
        for color, dash, pts in series:
            pts = [(x, y) for x, y in pts if y > 0]
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6" '
                         f'stroke-dasharray="{dash}"/>')

    for i, ds in enumerate(datasets):
        sub = [r for r in rows if r["dataset"] == ds]
        y0 = 30 + i * H
        series = []
        for R in SLICES:
            rr = [r for r in sub if r["R"] == R]
            series.append((colors[R], "5,3", [(r["S"], r["speedup_theory"]) for r in rr]))
            series.append((colors[R], "", [(r["S"], r["speedup_cpu"]) for r in rr]))
            series.append((colors[R], "1,2", [(r["S"], r["speedup_sample_epochs"]) for r in rr]))
        panel(0, y0, f"{ds}: deletion speed-up", True, True, series, "speed-up ×")
        acc = [("#e7298a", "", [(r["S"], r["acc_vote"]) for r in sub if r["R"] == 1]),
               ("#66a61e", "4,2", [(r["S"], r["acc_softmax"]) for r in sub if r["R"] == 1])]
        panel(W, y0, f"{ds}: test accuracy (R = 1)", True, False, acc, "accuracy %")
    legend = ("R=1 green, R=5 orange, R=10 purple; dashed = theory 3RS/(2R+1), solid = CPU seconds, dotted = "
              "sample-epochs | accuracy: pink = vote, green dashed = softmax")
    parts.append(f'<text x="8" y="16">{legend}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "cifar10"], choices=sorted(DATASETS))
    ap.add_argument("--cifar-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of deletions (one per slice position each), each followed by a full retraining")
    ap.add_argument("--from-json", help="re-render sisa.md / sisa.svg from a sisa.json written by an earlier run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        rows, wall = saved["rows"], saved["wall_seconds"]
    else:
        t0 = time.perf_counter()
        rows = []
        for ds in args.datasets:
            rows += run_dataset(ds, args.cifar_root, rounds=args.rounds)
        wall = time.perf_counter() - t0
        (out / "sisa.json").write_text(json.dumps({"rows": rows, "wall_seconds": wall}, indent=1), encoding="utf-8")
    (out / "sisa.md").write_text(to_markdown(rows, wall), encoding="utf-8")
    (out / "sisa.svg").write_text(to_svg(rows), encoding="utf-8")
    print(f"wrote {out / 'sisa.md'} and {out / 'sisa.svg'}")


if __name__ == "__main__":
    main()
