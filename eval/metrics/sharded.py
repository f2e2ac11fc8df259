"""Ray-sharded evaluation: exact, bit-identical to `evaluate`, spread over Ray tasks (and nodes).

    c3dhash eval --query test.npz --db train.npz --shards 4                 # local Ray with 4 CPUs
    c3dhash eval --query test.npz --db train.npz --shards 16 --address auto  # an existing cluster

    from c3dhash.eval.metrics.sharded import evaluate_sharded
    m = evaluate_sharded(query, db, shards=4)   # the same dict as evaluate(query, db), float for float

The database travels as its codes and labels (put in the object store once, read zero-copy by every task on
a node), never as a prepared layout: each worker prepares it for its own CPU (eval/metrics/exact.py's
prepare_db; bit-planes depend on the lane width, kernels/isa.py) and keeps it in a per-process cache keyed by a
digest of the codes and labels, so a worker that serves several tasks or evaluations of one database prepares
it once. Queries are split into `shards` contiguous blocks, one task each: per-query values do not depend on
which other queries share a task, and the driver concatenates them in query order and runs the same
`reduce_metrics` as the in-process path, so floats are identical (==). A failed task (exception or dead worker)
is retried up to `max_retries` times.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from c3dhash.eval.codes import Codes, CodesError, check_query_db
from c3dhash.eval.config import MAP_AT_K, MAP_AT_K_REL, MAX_RETRIES, PRECISION_AT_K
from c3dhash.eval.search.flat import use_threads
from c3dhash.eval.search.sharded import even_ranges
from c3dhash.eval.ray_session import join_or_start
from c3dhash.eval.metrics.exact import (PreparedDb, all_ks, concat_stats, distinct_labels, per_query_stats, prepare_db,
                                        reduce_metrics, warn_missing_labels)

_REMOTE: Any = None
_PREPARED: dict[str, PreparedDb] = {}  # this process's prepared databases by digest (the last CACHE_SIZE)
_DB_REFS: dict[tuple[str, str, str], Any] = {}  # the driver's object-store copies, by (node, job, digest)
CACHE_SIZE = 2


def db_digest(db: Codes) -> str:
    """A digest of what prepare_db reads (codes, labels, bits): the cache key on the workers."""
    h = hashlib.sha256()  # with SHA-NI the fastest of hashlib's (1.5 GB/s): a 1e6-code database costs ~11 ms
    for a in (np.ascontiguousarray(db.codes), np.ascontiguousarray(db.labels, np.int64)):
        h.update(memoryview(a).cast("B"))
    h.update(str(db.bits).encode())
    return h.hexdigest()[:32]


def db_object(key: str, db: Codes) -> Any:
    """The database in the object store, put once per Ray session for repeated evaluations of one database
    (the benchmark, `eval` of several query files): a put of 1e6 codes and labels costs ~27 ms a call."""
    import ray
    ctx = ray.get_runtime_context()
    session = (ctx.get_node_id(), ctx.get_job_id(), key)  # a ref lives as long as its driver's job
    if session not in _DB_REFS:
        while len(_DB_REFS) >= CACHE_SIZE:
            _DB_REFS.pop(next(iter(_DB_REFS)))
        _DB_REFS[session] = ray.put({"codes": np.ascontiguousarray(db.codes),
                                     "labels": np.ascontiguousarray(db.labels, np.int64), "bits": int(db.bits)})
    return _DB_REFS[session]


def prepared(key: str, db: dict[str, Any]) -> PreparedDb:
    """This process's prepare_db of the shipped database (codes, labels, bits), cached under `key`."""
    if key not in _PREPARED:
        while len(_PREPARED) >= CACHE_SIZE:
            _PREPARED.pop(next(iter(_PREPARED)))
        n = len(db["labels"])
        _PREPARED[key] = prepare_db(Codes(db["codes"], int(db["bits"]), db["labels"], np.zeros(n, "U1")))
    return _PREPARED[key]


def _stats_task(key: str, db: dict[str, Any], q_codes: np.ndarray, q_labels: np.ndarray, ks: np.ndarray,
                expected_ties: bool, threads: int) -> dict[str, np.ndarray]:
    use_threads(threads)
    return per_query_stats(q_codes, q_labels, prepared(key, db), ks, expected_ties)


def _remote():
    """The Ray task, made once (tests replace `_REMOTE` to inject faults)."""
    global _REMOTE
    if _REMOTE is None:
        import ray
        _REMOTE = ray.remote(_stats_task)
    return _REMOTE


def evaluate_sharded(query: Codes, db: Codes, *, shards: int, address: str | None = None,
                     max_retries: int = MAX_RETRIES, threads_per_shard: int = 1,
                     map_at_k_rel: Sequence[int] = MAP_AT_K_REL, map_at_k: Sequence[int] = MAP_AT_K,
                     precision_at_k: Sequence[int] = PRECISION_AT_K, expected_ties: bool = False,
                     progress: bool = False) -> dict[str, Any]:
    """`evaluate` over `shards` Ray tasks of `threads_per_shard` CPUs each; see the module docstring."""
    import ray
    check_query_db(query, db)
    ks = all_ks(map_at_k_rel, map_at_k, precision_at_k)
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if len(db) == 0:
        raise CodesError(f"{db.source or 'database'}: the database is empty; encode a non-empty split")
    warn_missing_labels(query, distinct_labels(db.labels), db.source)
    key = db_digest(db)
    started = join_or_start(address, num_cpus=shards * threads_per_shard)
    try:
        db_ref = db_object(key, db)
        task = _remote().options(num_cpus=threads_per_shard, max_retries=max_retries, retry_exceptions=True)
        blocks = even_ranges(len(query), shards)  # query blocks, in order
        refs = [task.remote(key, db_ref, query.codes[a:b], query.labels[a:b], ks, expected_ties,
                            threads_per_shard) for a, b in blocks]
        done: dict[Any, dict[str, np.ndarray]] = {}
        pending = list(refs)
        with tqdm(total=len(refs), desc=f"eval x{len(refs)} shards", disable=not progress) as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done[ready[0]] = ray.get(ready[0])
                bar.update(1)
        stats = concat_stats([done[r] for r in refs])  # query order, whatever the completion order
    finally:
        if started:
            ray.shutdown()
    return reduce_metrics(stats, ks=ks, num_db=len(db), bits=int(db.bits), map_at_k_rel=map_at_k_rel,
                          map_at_k=map_at_k, precision_at_k=precision_at_k, expected_ties=expected_ties)
