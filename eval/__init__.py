"""Evaluation: codes files, bit packing, Hamming search (flat kernels, multi-index hashing), exact retrieval
metrics, Ray-sharded evaluation and a Ray-sharded index.

    from eval import load_codes, evaluate, topk
    q, db = load_codes("runs/test.npz"), load_codes("runs/train.npz")
    metrics = evaluate(q, db)                      # map_all, map_at_k_rel, map_at_k, precision_at_k, pr_curve
    idx, dist = topk(q.codes, db.codes, 100)       # ties broken by database index

Names are imported lazily so `import eval.config` (done by every CLI start) does not load numba.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Codes": "eval.codes", "CodesError": "eval.codes", "pack_bits": "eval.codes", "unpack_bits": "eval.codes",
    "save_codes": "eval.codes", "load_codes": "eval.codes",
    "check_pair": "eval.codes", "check_query_db": "eval.codes",
    "hamming_distances": "eval.hamming", "topk": "eval.hamming", "radius_search": "eval.hamming",
    "Searcher": "eval.nearest", "search": "eval.search",
    "evaluate": "eval.metrics", "evaluate_sharded": "eval.sharded", "ShardedIndex": "eval.shard_index",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
