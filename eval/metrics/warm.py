"""Compile the search and metric kernels for this CPU now, into numba's on-disk cache.

    python -m c3dhash.eval.metrics.warm      # e.g. in an image build (Dockerfile), or before a test run

Every numba kernel is compiled on first use in each process that has no cached copy: ~35 CPU-s on a 2-core Xeon.
Ray actors, serve replicas and training workers (validation mAP) that start together on a fresh install each
compile their own. One run of this module writes the cache they all load (the kernels take `cache=True`): it
runs every search method and every metric once on small random codes. The cache is per CPU target
(NUMBA_CPU_NAME / NUMBA_CPU_FEATURES select another one).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from c3dhash.eval.codes import Codes
from c3dhash.eval.metrics.exact import evaluate
from c3dhash.eval.search.searcher import METHODS, SCANS, Searcher


def warm(bits: int = 64, n: int = 2000, queries: int = 20) -> float:
    """Run every kernel once; returns the seconds it took (a few when the cache was warm)."""
    t0 = time.monotonic()
    rng = np.random.default_rng(0)
    words = -(-bits // 64)
    db = rng.integers(0, 2**63, (n, words), dtype=np.uint64)
    q = np.concatenate([db[:queries // 2], rng.integers(0, 2**63, (queries - queries // 2, words), dtype=np.uint64)])
    searcher = Searcher(db, bits)
    for method in METHODS:
        searcher.knn(q, 10, method=method)
        if method != "torch":
            searcher.radius(q, 3, method=method)
    labels = rng.integers(0, 5, n)
    query = Codes(q, bits, np.concatenate([labels[:queries // 2], rng.integers(0, 5, queries - queries // 2)]),
                  [f"q{i}" for i in range(queries)])
    database = Codes(db, bits, labels, [f"d{i}" for i in range(n)])
    for method in SCANS:
        evaluate(query, database, expected_ties=True, method=method)
    return time.monotonic() - t0


if __name__ == "__main__":
    print(f"numba kernels ready in {warm():.1f} s", file=sys.stderr)
