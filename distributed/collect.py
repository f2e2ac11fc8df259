"""Small object collectives for evaluation: gather per-video outputs, share a value from rank 0.

Without a process group they return their input, so evaluation code runs unchanged in one process.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch.distributed as dist

from c3dhash.distributed.env import is_dist


def gather_outputs(index: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every rank's (video_index, outputs) on every rank, sorted by video index."""
    if is_dist(world_above=1):
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (index, outputs))
        parts = [p for p in parts if len(p[0])]
        index = np.concatenate([p[0] for p in parts]) if parts else index
        outputs = np.concatenate([p[1] for p in parts]) if parts else outputs
    order = np.argsort(index, kind="stable")
    return index[order], outputs[order]


def broadcast_from_zero(value: Any) -> Any:
    """Rank 0's `value` on every rank (e.g. the validation mAP that decides the best checkpoint)."""
    if not is_dist(world_above=1):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
