"""Evaluation: codes files, bit packing, Hamming search (flat kernels, multi-index hashing), exact retrieval
metrics, Ray-sharded evaluation and a Ray-sharded index.

    from c3dhash.eval import load_codes, evaluate, topk
    q, db = load_codes("runs/test.npz"), load_codes("runs/train.npz")
    metrics = evaluate(q, db)                      # map_all, map_at_k_rel, map_at_k, precision_at_k, pr_curve
    idx, dist = topk(q.codes, db.codes, 100)       # ties broken by database index

Rooms, each importing only those below it (tests/test_layering.py):
    codes.py, config.py, ray_session.py   the codes file format, EvalConfig, the one way to get a Ray
    kernels/   Hamming kernels: everything that knows an instruction set
    search/    the flat scan, multi-index hashing, the Searcher, the sharded index
    metrics/   exact retrieval metrics, PR curves, Ray-sharded evaluation
    index/     encoding videos, the index folder, queries by video, the results page

Names are imported lazily so `import c3dhash.eval.config` (done by every CLI start) does not load numba.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Codes": "codes", "CodesError": "codes", "pack_bits": "codes", "unpack_bits": "codes",
    "save_codes": "codes", "load_codes": "codes",
    "check_pair": "codes", "check_query_db": "codes",
    "hamming_distances": "search.flat", "topk": "search.searcher", "radius_search": "search.searcher",
    "Searcher": "search.searcher", "search": "search.report",
    "evaluate": "metrics.exact", "evaluate_sharded": "metrics.sharded", "ShardedIndex": "search.sharded",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
