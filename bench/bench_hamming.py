"""Hamming search and exact mAP vs FAISS IndexBinaryFlat: same data, same run.

    .venv/bin/python bench/bench_hamming.py                       # N = 1e6, 1000 queries, 64, 128, 256 bits
    .venv/bin/python bench/bench_hamming.py --n 100000 --threads 2 --data uniform
    c3dhash bench hamming -- --n 1000000 --skip-sharded

Rows, per code width, all on the same database and queries:
  FAISS top-k      faiss.IndexBinaryFlat.search(q, k): the reference (it only finds the top k)
  c3dhash top-k    Searcher.knn (method bitsliced up to 448 bits, else words): the same top k, ties by database
                   index (distances checked == FAISS's), with the database's layout prepared once like FAISS's
                   index (the mAP row's prepare_db builds its own; its build time is printed per width)
  c3dhash mAP@all  eval.metrics.per_query_stats: exact mAP@all, mAP@K (both kinds), P@K and the PR curve
  numpy mAP@all    XOR + np.bitwise_count + stable argsort per query, on --ref-queries queries (checked ==
                   ours to 1e-12): what a straightforward implementation costs
  sharded eval     eval.sharded.evaluate_sharded with 1 and 2 Ray tasks of 1 CPU each (first width only;
                   results checked == in-process)
Throughput = queries x database codes / second. Methodology: --threads for both FAISS (omp_set_num_threads)
and numba (set_num_threads); one warm-up call each (JIT, caches, Ray workers); then --repeats rounds that
interleave the methods (so background load hits all alike); the median wall time is reported, with the
median CPU time of this process beside it (less sensitive to other load on a shared machine: with 1 thread
it is the time the CPU spent on the work). Ratios are against FAISS top-k of the same width.
Data: --data clustered (default): --classes prototypes, each item its class prototype with every bit
flipped with probability 1/4 (like trained codes: near neighbours exist); uniform: random bits.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Mapping
from pathlib import Path

import numpy as np


from c3dhash.eval.codes import Codes  # noqa: E402
from c3dhash.eval.config import MAP_AT_K, MAP_AT_K_REL, PRECISION_AT_K  # noqa: E402
from c3dhash.eval.metrics.exact import all_ks, per_query_stats, prepare_db  # noqa: E402
from c3dhash.eval.search.searcher import Searcher  # noqa: E402

KS = all_ks(MAP_AT_K_REL, MAP_AT_K, PRECISION_AT_K)  # the defaults of `c3dhash eval`


def make_data(n: int, q: int, bits: int, classes: int, kind: str, seed: int = 0):
    """Packed codes (unused high bits zero) and labels for a database of n and q queries."""
    rng = np.random.default_rng(seed)
    words = (bits + 63) // 64
    mask = np.full(words, np.uint64(0xFFFFFFFFFFFFFFFF))
    if bits % 64:
        mask[-1] = np.uint64((1 << (bits % 64)) - 1)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, m)
        if kind == "uniform":
            codes = rng.integers(0, 2**64 - 1, (m, words), dtype=np.uint64, endpoint=True)
        else:  # flip each bit with probability 1/4: the AND of two uniform words
            noise = (rng.integers(0, 2**64 - 1, (m, words), dtype=np.uint64, endpoint=True)
                     & rng.integers(0, 2**64 - 1, (m, words), dtype=np.uint64, endpoint=True))
            codes = protos[labels] ^ noise
        return codes & mask, labels
    protos = rng.integers(0, 2**64 - 1, (classes, words), dtype=np.uint64, endpoint=True)
    db, dl = draw(n)
    qc, ql = draw(q)
    return db, dl, qc, ql


def numpy_map(qc: np.ndarray, ql: np.ndarray, db: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """Per-query AP over the stable ranking, the straightforward way."""
    n = len(db)
    out = np.zeros(len(qc))
    for i in range(len(qc)):
        d = np.bitwise_count(db ^ qc[i]).sum(axis=1, dtype=np.int64)
        rel = dl[np.argsort(d, kind="stable")] == ql[i]
        if rel.any():
            ranks = np.flatnonzero(rel) + 1
            out[i] = (np.arange(1, len(ranks) + 1) / ranks).mean()
    assert n == len(dl)
    return out


def timed(fn: Callable[[], object]) -> tuple[tuple[float, float], object]:
    """((wall s, cpu s), fn's result)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - w, time.process_time() - c), out


def run_rounds(methods: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Warm-up each, then `repeats` interleaved rounds; median (wall, cpu) seconds per method."""
    for fn in methods.values():
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(timed(fn)[0])
    return {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
            for name, ts in times.items()}


def bench_width(args: argparse.Namespace, bits: int) -> None:
    import faiss
    db, dl, qc, ql = make_data(args.n, args.queries, bits, args.classes, args.data)
    index = faiss.IndexBinaryFlat(((bits + 63) // 64) * 64)  # padding bits are zero in both: same distances
    add, _ = timed(lambda: index.add(db.view(np.uint8)))
    qbytes = qc.view(np.uint8)
    prepare_db(Codes(db[:1], bits, dl[:1], np.zeros(1, "U1")))  # JIT
    build, pdb = timed(lambda: prepare_db(Codes(db, bits, dl, np.zeros(len(db), "U1"))))
    planes = pdb.planes  # the metrics' layout (None: word-major)
    searcher = Searcher(db, bits)  # the top-K's layout, prepared here like FAISS's index (timed below: build)
    method = "bitsliced" if planes is not None else "words"
    searcher.knn(qc[:1], args.k, method=method)
    _, ours_d = searcher.knn(qc, args.k, method=method)
    faiss_d, _ = index.search(qbytes, args.k)
    assert (np.sort(faiss_d, axis=1) == ours_d).all(), "top-k distances differ from FAISS"
    sub = slice(0, args.ref_queries)
    ref_ap = numpy_map(qc[sub], ql[sub], db, dl)
    ours_ap = per_query_stats(qc[sub], ql[sub], pdb, KS)["ap_all"]
    np.testing.assert_allclose(ours_ap, ref_ap, rtol=1e-12, atol=0)
    methods = {
        f"FAISS IndexBinaryFlat top-{args.k}": lambda: index.search(qbytes, args.k),
        f"c3dhash topk top-{args.k}": lambda: searcher.knn(qc, args.k, method=method),
        "c3dhash exact mAP@all (+@K, P@K, PR)": lambda: per_query_stats(qc, ql, pdb, KS),
        f"numpy stable-argsort mAP@all ({args.ref_queries} q)": lambda: numpy_map(qc[sub], ql[sub], db, dl),
    }
    res = run_rounds(methods, args.repeats)
    counts = {name: args.n * (args.ref_queries if name.startswith("numpy") else args.queries) for name in res}
    base = next(iter(res))
    for name, (wall, cpu) in res.items():
        tw, tc = counts[name] / wall, counts[name] / cpu
        print(f"{bits:5d}  {name:<38} {wall:8.3f} {tw / 1e9:9.3f} {tw / (counts[base] / res[base][0]):8.2f}x"
              f"  {cpu:8.3f} {tc / 1e9:9.3f} {tc / (counts[base] / res[base][1]):8.2f}x")
    print(f"{bits:5d}  (prepare_db(db): {'bit-planes' if planes is not None else 'word-major codes'} and label "
          f"groups for both c3dhash rows, built once: {build[0]:.3f} s wall; FAISS's add: {add[0]:.3f} s)")


def bench_sharded(args: argparse.Namespace, bits: int) -> None:
    import ray

    from c3dhash.eval.ray_session import start_local

    from c3dhash.eval.metrics.exact import evaluate
    from c3dhash.eval.metrics.sharded import evaluate_sharded
    db, dl, qc, ql = make_data(args.n, args.queries, bits, args.classes, args.data)
    q = Codes(qc, bits, ql, np.zeros(len(qc), "U1"))
    d = Codes(db, bits, dl, np.zeros(len(db), "U1"))
    start_local(num_cpus=2)  # 127.0.0.1 only (eval/ray_session.py)
    try:
        runs = {f"{s} worker{'s' * (s > 1)}": (lambda s=s: evaluate_sharded(q, d, shards=s)) for s in (1, 2)}
        for fn in runs.values():  # warm-up + exactness check
            assert fn() == evaluate(q, d), "sharded result differs from the in-process one"
        walls: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                walls.setdefault(name, []).append(timed(fn)[0][0])
    finally:
        ray.shutdown()
    med = {name: statistics.median(w) for name, w in walls.items()}
    one = med["1 worker"]
    print(f"sharded exact evaluation, {bits} bits, Ray tasks of 1 CPU (median wall s, speedup vs 1 worker; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for name, wall in med.items():
        rate = args.n * args.queries / wall / 1e9
        print(f"  {name:<10} {wall:8.3f} s  {one / wall:5.2f}x  ({rate:.3f} Gcodes/s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="database codes")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--data", choices=("clustered", "uniform"), default="clustered")
    p.add_argument("--threads", type=int, default=1, help="threads for FAISS and numba alike")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ref-queries", type=int, default=10, help="queries for the (slow) numpy reference")
    p.add_argument("--skip-sharded", action="store_true")
    p.add_argument("--sharded-only", action="store_true", help="only the 1 vs 2 Ray workers comparison")
    args = p.parse_args()
    import faiss
    import numba
    faiss.omp_set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    print(f"N={args.n} database codes, {args.queries} queries, k={args.k}, {args.data} data "
          f"({args.classes} classes), {args.threads} thread(s) for FAISS and numba; "
          f"median of {args.repeats} interleaved rounds after a warm-up; load average before: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'bits':>5}  {'method':<38} {'wall s':>8} {'Gcodes/s':>9} {'vs FAISS':>9}  {'cpu s':>8} "
          f"{'Gcodes/s':>9} {'vs FAISS':>9}")
    for bits in [] if args.sharded_only else args.bits:
        bench_width(args, bits)
    if not args.skip_sharded:
        bench_sharded(args, args.bits[0])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("hamming"):
        main()
