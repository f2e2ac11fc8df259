"""Rank/world/device helpers that also work with no process group (then: rank 0 of a world of 1).

    from distributed.env import get_rank, get_world_size, is_main, barrier, convert_sync_bn
    if is_main(): print("only once")
    net = convert_sync_bn(net) if cfg.train.sync_bn and get_world_size() > 1 else net

Ray Train's TorchTrainer initialises the process group and sets LOCAL_RANK and the CUDA device per worker;
under plain `python` nothing is initialised and the same code runs single-process.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from distributed.syncbn import GatherSyncBatchNorm, convert_sync_bn

__all__ = ["GatherSyncBatchNorm", "barrier", "convert_sync_bn", "get_device", "get_local_rank", "get_rank",
           "get_world_size", "is_dist", "is_main"]


def is_dist() -> bool:
    """True when a torch.distributed process group is initialised (world size may still be 1)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_local_rank() -> int:
    """Rank on this node (LOCAL_RANK, set by Ray Train and torchrun); 0 without a process group."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_dist() else 0


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def get_device() -> torch.device:
    """This worker's device: the current CUDA device (Ray Train sets it per worker) or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
