"""Evaluation: codes files, bit packing, Hamming search (flat kernels, multi-index hashing), exact retrieval
metrics, Ray-sharded evaluation and a Ray-sharded index.

    from c3dhash.eval import load_codes, evaluate, topk
    q, db = load_codes("runs/test.npz"), load_codes("runs/train.npz")
    metrics = evaluate(q, db)                      # map_all, map_at_k_rel, map_at_k, precision_at_k, pr_curve
    idx, dist = topk(q.codes, db.codes, 100)       # ties broken by database index

Names are imported lazily so `import eval.config` (done by every CLI start) does not load numba.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Codes": "codes", "CodesError": "codes", "pack_bits": "codes", "unpack_bits": "codes",
    "save_codes": "codes", "load_codes": "codes",
    "check_pair": "codes", "check_query_db": "codes",
    "hamming_distances": "hamming", "topk": "hamming", "radius_search": "hamming",
    "Searcher": "nearest", "search": "search",
    "evaluate": "metrics", "evaluate_sharded": "sharded", "ShardedIndex": "shard_index",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
