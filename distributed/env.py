"""Rank/world/device helpers that also work with no process group (then: rank 0 of a world of 1).

    from c3dhash.distributed.env import get_rank, get_world_size, is_main, barrier, is_dist
    if is_main(): print("only once")
    if is_dist(world_above=1): dist.all_reduce(t)     # the one "is a process group up?" test of the project

Ray Train's TorchTrainer initialises the process group and sets LOCAL_RANK and the CUDA device per worker;
under plain `python` nothing is initialised and the same code runs single-process.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["GpuError", "barrier", "get_device", "get_local_rank", "get_rank", "get_world_size", "is_dist",
           "is_main", "require_cuda"]


class GpuError(RuntimeError):
    """A GPU worker without a usable CUDA device; the message says what the torch build needs."""


def is_dist(*, world_above: int = 0) -> bool:
    """True when a torch.distributed process group is initialised with more than `world_above` ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > world_above


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
    if is_dist(world_above=1):
        dist.barrier()


def get_device() -> torch.device:
    """This worker's device: the current CUDA device (Ray Train sets it per worker) or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def require_cuda(host: str = "this worker") -> None:
    """Fail early (before prepare_model) on a GPU worker whose torch cannot use CUDA, naming the cause."""
    if torch.cuda.is_available():
        return
    built = torch.version.cuda or "none (a CPU-only build)"
    raise GpuError(f"cluster.use_gpu=true but torch.cuda.is_available() is false on {host}: torch "
                   f"{torch.__version__} is built for CUDA {built}, which needs an NVIDIA driver >= 580 "
                   f"(CUDA 13) and a GPU of compute capability 7.5 or newer (Turing..Blackwell); check "
                   f"`nvidia-smi` on the node, or set cluster.use_gpu=false")
