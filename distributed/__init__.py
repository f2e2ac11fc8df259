"""distributed/: rank helpers, autograd all-gather, SyncBN, the all-triplets loss (and the training loop).

Names are imported lazily so `import distributed.config` (done by every CLI start) does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("barrier", "convert_sync_bn", "get_device", "get_local_rank", "get_rank", "get_world_size",
                     "is_dist", "is_main"), "distributed.env"),
    "all_gather_rows": "distributed.gather", "all_gather_sizes": "distributed.gather",
    "GatherSyncBatchNorm": "distributed.syncbn",
    **dict.fromkeys(("LossError", "all_triplet_loss", "gathered_triplet_loss", "num_valid_triplets"),
                    "distributed.triplet"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distributed' has no attribute {name!r}")
