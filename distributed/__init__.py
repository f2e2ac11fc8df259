"""distributed/: the training core (trainer.py) and its Ray adapter (worker.py), rank helpers, autograd
all-gather, SyncBN, the all-triplets loss, checkpoints.

The names below load on first use (PEP 562), so importing distributed.job or distributed.config (the job
config, which the CLI needs for `--help` and validation) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "env": ("barrier", "get_device", "get_local_rank", "get_rank", "get_world_size", "is_dist",
            "is_main"),
    "gather": ("all_gather_rows", "all_gather_sizes"),
    "syncbn": ("GatherSyncBatchNorm", "convert_sync_bn"),
    "triplet": ("LossError", "all_triplet_loss", "gathered_triplet_loss", "num_valid_triplets"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'distributed' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
