"""Started by ``accelerate launch --multi_gpu --num_processes 2`` (gloo on the CPU) from tests/llm/test_distributed.py:
GradDiff with two processes (per-device batch 4, no accumulation = effective batch 8); rank 0 saves the final weights
and the run's notes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from dist_cases import CASES, grad_diff_state  # noqa: E402


def main(out: Path) -> None:
    from accelerate import PartialState

    for name in CASES:
        state, res = grad_diff_state(name, batch_size=4, grad_accum=1)
        if int(os.environ["RANK"]) == 0:
            save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"{name}.safetensors"))
            (out / f"{name}.json").write_text(json.dumps({
                "steps": res.steps, "effective_batch": res.notes["effective_batch"],
                "seen_ids": [int(i) for i in res.seen_ids], "world_size": torch.distributed.get_world_size(),
                "mixed_precision": res.notes["mixed_precision"],
                "accelerate_launch": "ACCELERATE_MIXED_PRECISION" in os.environ,  # set by accelerate's CLI only
                "distributed_type": PartialState().distributed_type.name}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # tear the process group down before exit, as `unlearnkit` does (cli.py): a gloo group left to the interpreter's
    # exit can abort a rank ("terminate called without an active exception", seen once under load)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
