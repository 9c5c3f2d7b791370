"""GPU benchmark of the LLM track in bf16 (prepared; not yet measured: no GPU was lent when it was written).

One LLM config — ``tofu_tiny`` scaled up to a GPT-2-small-sized Llama (12 layers, width 768, ≈ 90 M parameters,
trained from scratch on the built-in synthetic TOFU data, so nothing is downloaded) — runs through the normal runner
on ``cuda`` with ``mixed_precision: bf16`` for θ_o, θ_r and four unlearning methods (GA, GradDiff, NPO, IdkPO).
Printed and written: seconds per optimizer step and peak GPU memory of every training run (θ_o, θ_r, each method),
the run's wall time, and the metrics of every row (forget quality, model utility, answer probabilities, ROUGE-L,
MIA AUC, extraction strength).

Usage (the device machine's image has torch, transformers, accelerate and peft but not pydantic or rouge-score; see
``benchmarks/gpu_llm_bf16.sh``, which installs carried wheels and then runs this)::

    python benchmarks/gpu_llm_bf16.py                    # bf16 on cuda (budget: < 8 min on one H100)
    python benchmarks/gpu_llm_bf16.py --compare-fp32     # also the same config in fp32 (about twice the time)
    python benchmarks/gpu_llm_bf16.py --smoke --device cpu   # tiny sizes: checks the script end to end on a CPU

Output: ``$OUT/gpu_llm_bf16.md`` and ``$OUT/gpu_llm_bf16.json`` when ``OUT`` is set (else ``--out``, default
``benchmarks/results``); the run folder itself goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

METRICS = ("forget_quality", "model_utility", "forget.prob", "retain.prob", "forget.rouge", "retain.rouge",
           "mia.loss.auc", "mia.min_k.auc", "forget.es", "unlearn_seconds")


def experiment(precision: str, device: str, out_dir: str, smoke: bool) -> Any:
    from unlearnkit.config.schema import ExperimentConfig

    if smoke:
        data = {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"}
        model = {"kind": "tiny", "vocab_size": 384, "hidden_size": 32, "layers": 2, "heads": 2, "max_len": 96}
        train = {"epochs": 2, "batch_size": 8, "grad_accum": 1, "lr": 5e-3}
        unl = {"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}
        ev = {"max_items": 4, "max_new_tokens": 4, "batch_size": 16}
    else:
        data = {"source": "synthetic", "n_persons": 200, "qa_per_person": 12, "forget_split": "forget10"}
        model = {"kind": "tiny", "vocab_size": 4096, "hidden_size": 768, "layers": 12, "heads": 12,
                 "intermediate_size": 3072, "max_len": 128}
        train = {"epochs": 10, "batch_size": 32, "grad_accum": 1, "lr": 5e-4, "warmup_ratio": 0.05,
                 "grad_clip": 1.0, "max_len": 128}
        unl = {"epochs": 5, "batch_size": 8, "grad_accum": 1, "lr": 5e-5}
        ev = {"max_items": 48, "max_new_tokens": 24, "batch_size": 48}
    train["mixed_precision"] = precision
    unl = {**unl, "mixed_precision": precision}
    return ExperimentConfig(
        name=f"gpu_llm_{precision}", track="llm", seeds=[0], output_dir=out_dir,
        llm={"data": data, "model": model, "prompt_format": "qa", "train": train, "eval": ev},
        methods=["retrain", "original", *({"name": n, "params": dict(unl)} for n in ("ga", "grad_diff", "npo",
                                                                                      "idk_po"))],
        metrics=["tofu", "mia_text", "extraction"], engine={"device": device, "progress": False})


def instrument(records: list[dict[str, Any]]) -> None:
    """Wrap the LLM optimisation loop (where θ_o, θ_r and every method train) to record steps, seconds and the
    peak GPU memory of each training run."""
    import torch

    from unlearnkit.llm import lm
    from unlearnkit.methods.llm import base, rmu

    real = lm.optimize

    def timed(model, **kw):
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fit = real(model, **kw)
        if cuda:
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        records.append({"run": kw.get("desc", "train"), "mixed_precision": fit.mixed_precision, "steps": fit.steps,
                        "effective_batch": fit.effective_batch, "seconds": sec,
                        "seconds_per_step": sec / max(1, fit.steps),
                        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                        "final_loss": fit.step_losses[-1] if fit.step_losses else None,
                        "skipped_fp16_steps": fit.skipped_steps})
        return fit

    lm.optimize = base.optimize = rmu.optimize = timed


def _fmt(v: Any, f: str = "{:.4g}") -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    return f.format(v)


def run(precision: str, device: str, smoke: bool) -> dict[str, Any]:
    import torch

    from unlearnkit.bench import run_experiment

    records: list[dict[str, Any]] = []
    instrument(records)
    tmp = tempfile.mkdtemp(prefix="gpu_llm_")
    t0 = time.perf_counter()
    outcome = run_experiment(experiment(precision, device, tmp, smoke), write_report=False)
    wall = time.perf_counter() - t0
    rows = [{"method": r["method"], "status": r["status"], "error": r.get("error"),
             "metrics": {k: r.get("metrics", {}).get(k) for k in METRICS}} for r in outcome.rows]
    return {"precision": precision, "wall_seconds": wall, "training": records, "rows": rows,
            "peak_gpu_gib_run": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            "run_dir": str(outcome.run_dir)}


def markdown(env: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [f"# LLM track on {env['device_name']} ({env['date']})", "",
             (f"torch {env['torch']}, transformers {env['transformers']}, accelerate {env['accelerate']}; "
              f"command: `{env['command']}`"), ""]
    for res in results:
        lines += [f"## mixed_precision {res['precision']}: wall {res['wall_seconds']:.1f} s", "",
                  "| training run | precision | steps | eff. batch | seconds | s / step | peak GPU GiB | last loss |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for t in res["training"]:
            lines.append(f"| {t['run']} | {t['mixed_precision']} | {t['steps']} | {t['effective_batch']} | "
                         f"{t['seconds']:.1f} | {t['seconds_per_step']:.4f} | {_fmt(t['peak_gpu_gib'], '{:.2f}')} | "
                         f"{_fmt(t['final_loss'])} |")
        lines += ["", "| method | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
        for r in res["rows"]:
            if r["status"] != "ok":
                lines.append(f"| {r['method']} | {r['status']}: {str(r['error'])[:100]} |")
                continue
            lines.append(f"| {r['method']} | " + " | ".join(_fmt(r["metrics"][k]) for k in METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "no"])
    ap.add_argument("--compare-fp32", action="store_true", help="also run the same config with mixed_precision no")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check of the script)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    import accelerate
    import torch
    import transformers

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU (use --smoke --device cpu to check the script)")
    env = {"device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
           or "cpu", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
           "transformers": transformers.__version__, "accelerate": accelerate.__version__,
           "command": "python benchmarks/gpu_llm_bf16.py" + (" --compare-fp32" if args.compare_fp32 else "")
           + (" --smoke" if args.smoke else "") + (f" --device {args.device}" if args.device != "cuda" else "")}
    results = [run(args.precision, args.device, args.smoke)]
    if args.compare_fp32:
        results.append(run("no", args.device, args.smoke))
    text = markdown(env, results)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_llm_bf16.md").write_text(text + "\n")
    (out / "gpu_llm_bf16.json").write_text(json.dumps({"env": env, "results": results}, indent=1, default=str))
    print(f"written: {out / 'gpu_llm_bf16.md'}, {out / 'gpu_llm_bf16.json'}")


if __name__ == "__main__":
    main()
