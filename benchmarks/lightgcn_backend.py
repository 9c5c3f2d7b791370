"""LightGCN propagation backends: PyG ``LGConv`` against ``torch.sparse`` (issue 13 item 10).

One training step of a 3-layer LightGCN (d = 64) on synthetic MovieLens-100k-sized data — 943 users × 1,682 items
× 100,000 interactions drawn uniformly without repetition — as the BPR training loop does it: propagate, score a
batch of 2,048 (user, positive, negative) triples, backward. Reports the median of ``--repeats`` timed steps after
``--warmup`` untimed ones, per backend, and checks that both give the same embeddings (max |Δ|).

Usage:
    python benchmarks/lightgcn_backend.py [--device cpu] [--threads 1] [--repeats 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from unlearnkit.models.recsys import LightGCN


def synthetic(n_users: int, n_items: int, n_inter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = rng.choice(n_users * n_items, size=n_inter, replace=False)
    return (flat // n_items).astype(np.int64), (flat % n_items).astype(np.int64)


def step_seconds(model: LightGCN, device: torch.device, repeats: int, warmup: int, batch: int) -> list[float]:
    g = torch.Generator().manual_seed(0)
    out = []
    for r in range(warmup + repeats):
        u = torch.randint(0, model.n_users, (batch,), generator=g).to(device)
        i = torch.randint(0, model.n_items, (batch,), generator=g).to(device)
        j = torch.randint(0, model.n_items, (batch,), generator=g).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        s_pos, s_neg, reg = model.bpr_terms(u, i, j)
        loss = -torch.nn.functional.logsigmoid(s_pos - s_neg).mean() + 1e-4 * reg
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if r >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--users", type=int, default=943)
    ap.add_argument("--items", type=int, default=1682)
    ap.add_argument("--interactions", type=int, default=100_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    users, items = synthetic(args.users, args.items, args.interactions, 0)
    ids = np.arange(len(users), dtype=np.int64)
    print(f"# LightGCN backend step time ({time.strftime('%Y-%m-%d')}, {cpu_name()}, "
          f"torch {torch.__version__}, {args.threads} thread(s), device {dev})")
    print(f"# {args.users} users × {args.items} items × {args.interactions} interactions, 3 layers, d = 64, batch "
          f"2048; median of {args.repeats} steps after {args.warmup} warm-up")
    embs = {}
    for backend in ("sparse", "pyg"):
        model = LightGCN(args.users, args.items, ids, users, items, dim=64, layers=3, backend=backend,
                         init_std=0.1, seed=0).to(dev)
        secs = step_seconds(model, dev, args.repeats, args.warmup, 2048)
        with torch.no_grad():
            embs[backend] = torch.cat(model.propagate()).cpu()
        print(f"{backend:7s} median {statistics.median(secs):.4f} s  min {min(secs):.4f} s  max {max(secs):.4f} s  "
              f"(resolved backend: {model.resolved_backend()})")
    print(f"max |Δ embedding| sparse vs pyg: {float((embs['sparse'] - embs['pyg']).abs().max()):.2e}")


if __name__ == "__main__":
    main()
