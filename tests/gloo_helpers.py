"""Run a function on N gloo ranks (torch.multiprocessing spawn) and collect what each rank returns.

    ranks = run_ranks(fn, world, out_dir, *args)    # fn(rank, world, out_dir, *args) -> a dict per rank

Every process group gets a collective timeout: a rank that skips or repeats a collective fails the test in
`timeout_s` instead of hanging it until pytest's own timeout. `fn` must be a module-level function (spawn
pickles it by name). The conftest fixture `gloo` wraps this with a fresh folder per call.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT_S = 60  # a collective that waits longer is a mismatch, not a slow machine (each run takes seconds)


def _entry(rank: int, world: int, out_dir: str, fn: Callable, args: tuple, timeout_s: float) -> None:
    torch.set_num_threads(1)  # N ranks on 2 cores
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        torch.save(fn(rank, world, out_dir, *args), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable, world: int, out_dir: str | Path, *args: Any, timeout_s: float = TIMEOUT_S) -> list:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_entry, args=(world, str(out), fn, args, timeout_s), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]
