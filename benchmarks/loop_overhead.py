"""Engine training throughput vs a plain PyTorch loop on the same model, data and optimizer, in one process.

Usage: python benchmarks/loop_overhead.py [--model mlp|cnn] [--epochs 30] [--repeats 6] [--progress]

Both loops: SGD(momentum 0.9, wd 5e-4), cosine schedule stepped per batch, batch 64, shuffled with a seeded
generator, same initial weights, 2 torch threads. The plain loop is what one writes by hand for in-memory data
(randperm + index, zero_grad/backward/step, loss.item() each step for logging). The engine adds its NaN check, id
bookkeeping and (optionally) the rich progress bar. Reported: samples/s of each and the ratio engine/plain
(goal ≥ 0.95); after one warm-up run of each, the best of ``--repeats`` runs in alternating order is used, to reduce
noise from other processes and from drift.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch
from torch import nn

from unlearnkit.config.schema import EngineConfig, ModelSpec, TrainConfig
from unlearnkit.config.schema import DataConfig
from unlearnkit.data import load_data
from unlearnkit.engine.loop import Engine
from unlearnkit.models import build_model


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TrainConfig, seed: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(y) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), recipe.batch_size):
            idx = perm[i : i + recipe.batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss.item()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--progress", action="store_true", help="engine with its rich progress bar on")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_data(DataConfig(name="digits"))
    train = data.train
    x, y, _ = train.batch(torch.arange(len(train)).numpy())
    spec = ModelSpec(name=args.model, **({"hidden": [256, 128]} if args.model == "mlp" else {"channels": [32, 64]}))
    recipe = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.05, scheduler="cosine")
    engine = Engine(EngineConfig(progress=args.progress, deterministic=False, threads=2))
    n = len(train) * args.epochs

    def run_plain(r: int) -> float:
        return plain_loop(build_model(spec, train.input_shape, 10, seed=0), x, y, recipe, seed=r)

    def run_engine(r: int) -> float:
        return engine.fit(build_model(spec, train.input_shape, 10, seed=0), train, recipe, seed=r).seconds

    run_plain(0), run_engine(0)  # warm-up: allocator, kernels, thread pool
    best_plain, best_engine = math.inf, math.inf
    for r in range(args.repeats):  # alternate the order (ABBA) so drift hits both loops alike
        order = (run_plain, run_engine) if r % 2 == 0 else (run_engine, run_plain)
        for fn in order:
            t = fn(r)
            if fn is run_plain:
                best_plain = min(best_plain, t)
            else:
                best_engine = min(best_engine, t)
    plain_tp, engine_tp = n / best_plain, n / best_engine
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads")
    print(f"model {args.model}, digits train {len(train)} samples × {args.epochs} epochs, batch 64, "
          f"progress bar {'on' if args.progress else 'off'}")
    print(f"plain loop : {plain_tp:10.0f} samples/s ({best_plain:.3f} s)")
    print(f"engine.fit : {engine_tp:10.0f} samples/s ({best_engine:.3f} s)")
    print(f"ratio engine/plain = {engine_tp / plain_tp:.3f} (goal ≥ 0.95)")


if __name__ == "__main__":
    main()
