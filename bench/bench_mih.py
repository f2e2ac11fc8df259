"""Exact k-NN by multi-index hashing vs the flat scan and FAISS's binary indexes, and the Ray-sharded index
1 vs 2 actors: same data, same run, 1 thread each.

    .venv/bin/python bench/bench_mih.py                                   # 1e6 and 1e7 codes, 64 bits
    .venv/bin/python bench/bench_mih.py --n 1000000 --queries 200 --flat-queries 50 --data trained
    .venv/bin/python bench/bench_mih.py --sharded-only --n 2000000        # 1 vs 2 Ray actors
    c3dhash bench mih -- --n 1000000

Rows per (N, data, k), throughput in queries/s (higher is better), ratio against c3dhash's flat scan:
  c3dhash flat     Searcher.knn(method="bitsliced"): the flat scan on the prepared bit-planes (exact; the
                   reference answer, its distances checked == FAISS flat's)
  c3dhash auto     Searcher.knn: MIH or the flat scan, chosen per call (== flat, checked)
  c3dhash MIH      the same with method="mih" forced (== flat, checked)
  FAISS flat       faiss.IndexBinaryFlat (exact)
  FAISS MultiHash  faiss.IndexBinaryMultiHash(d, m, bits // m) with nflip = 0 .. --max-flip (non-exhaustive):
                   recall printed; the first nflip reaching recall 1.0 is the fair exact comparison
  FAISS Hash       faiss.IndexBinaryHash(d, b = bits // m), nflip as above
Timing: each method --repeats times in a row (warm caches, as in a stream of searches), median wall time.
Recall = fraction of (query, rank) whose returned distance equals the exact one (so a different tied item
at the k-th distance still counts as right). Build times are printed beside (MIH tables: eval/search/mih.py).
Data: --data trained (default both): --classes centres drawn uniformly, every database item and query its
class centre with each bit flipped with probability --flip (0.1): within-class pairs differ in about
2 x 0.1 x 0.9 = 18% of the bits; the distribution of the distance from a query to its k-th neighbour is
printed for each k. uniform: random bits (MIH's worst case: the k-th neighbour is far).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np


from c3dhash.eval.search.mih import default_m  # noqa: E402
from c3dhash.eval.search.searcher import Searcher, topk  # noqa: E402


def make_codes(kind: str, n: int, q: int, bits: int, classes: int, flip: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = (bits + 63) // 64
    mask = np.full(words, np.uint64(2**64 - 1))
    if bits % 64:
        mask[-1] = np.uint64((1 << (bits % 64)) - 1)
    centres = rng.integers(0, 2**64 - 1, (classes, words), dtype=np.uint64, endpoint=True)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, words), np.uint64)
        for a in range(0, m, 1 << 20):  # bounded temporaries at 1e7+
            b = min(m, a + (1 << 20))
            if kind == "uniform":
                out[a:b] = rng.integers(0, 2**64 - 1, (b - a, words), dtype=np.uint64, endpoint=True)
            else:
                flips = np.packbits(rng.random((b - a, words * 64)) < flip, axis=1, bitorder="little")
                out[a:b] = centres[rng.integers(0, classes, b - a)] ^ flips.view(np.uint64)
        return out & mask
    return draw(n), draw(q)


def recall(d_got: np.ndarray, d_exact: np.ndarray) -> float:
    return float((np.sort(d_got, axis=1) == d_exact).mean())


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def rounds(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, object]]:
    """Each method `repeats` times in a row (its caches warm, as in a stream of searches; one flat scan
    would evict the MIH tables from the L3 cache): median wall time, last output."""
    out: dict[str, tuple[float, object]] = {}
    for name, fn in methods.items():
        runs = [timed(fn) for _ in range(repeats)]
        out[name] = (statistics.median(w for w, _ in runs), runs[-1][1])
    return out


def bench_size(args: argparse.Namespace, n: int, kind: str) -> None:
    import faiss
    bits = args.bits
    db, q = make_codes(kind, n, args.queries, bits, args.classes, args.flip)
    fq, qb = q[:args.flat_queries], q.view(np.uint8)
    m = default_m(bits, n)
    s = Searcher(db, bits)
    build, _ = timed(s.tables)
    flat = _faiss_add(faiss.IndexBinaryFlat(bits), db)
    t_mh, mh = timed(lambda: _faiss_add(faiss.IndexBinaryMultiHash(bits, m, bits // m), db))
    t_h, hh = timed(lambda: _faiss_add(faiss.IndexBinaryHash(bits, bits // m), db))
    print(f"\nN={n:.0e} {kind} codes, {bits} bits, {len(q)} queries ({len(fq)} for the flat scans); MIH m={m} "
          f"tables (built in {build:.2f} s; FAISS MultiHash {t_mh:.2f} s, Hash {t_h:.2f} s); median of "
          f"{args.repeats} runs; load average {os.getloadavg()[0]:.1f}", flush=True)
    for method in ("bitsliced", "mih", "auto"):  # warm-up: JIT caches, page faults of the tables
        s.knn(q[:4], max(args.k), method=method)
    for k in args.k:
        exact_i, exact_d = s.knn(q, k, method="words")
        kth = exact_d[:, -1]
        print(f"  k={k}: distance to the k-th neighbour: min {kth.min()}, median {int(np.median(kth))}, "
              f"90% {int(np.quantile(kth, 0.9))}, max {kth.max()}")
        methods: dict[str, Callable[[], object]] = {
            "c3dhash flat (exact)": lambda: s.knn(fq, k, method="bitsliced")[1],  # the bit-planes filter up to 448 bits
            "c3dhash auto (exact)": lambda: _checked(s, q, k, "auto", exact_i, exact_d),
            "c3dhash MIH (exact)": lambda: _checked(s, q, k, "mih", exact_i, exact_d),
            "FAISS IndexBinaryFlat (exact)": lambda: flat.search(fq.view(np.uint8), k)[0]}
        for label, index in ((f"FAISS MultiHash m={m}", mh), (f"FAISS Hash b={bits // m}", hh)):
            for nflip in range(args.max_flip + 1):
                methods[f"{label} nflip={nflip}"] = lambda i=index, f=nflip: _nflip(i, f, qb, k)
        res = rounds(methods, args.repeats)
        assert (np.sort(res["FAISS IndexBinaryFlat (exact)"][1], axis=1) == exact_d[:len(fq)]).all()
        ref_qps = len(fq) / res["c3dhash flat (exact)"][0]
        for name, (wall, out) in res.items():
            nq = len(fq) if "flat" in name.lower() else len(q)
            extra = (f"recall {recall(out, exact_d):.4f}" if name.startswith("FAISS") and "Flat" not in name
                     else f"plan {out}" if isinstance(out, dict) else "")
            row(name, nq, wall, ref_qps, extra)


def row(name: str, nq: int, wall: float, ref_qps: float, extra: str = "") -> None:
    qps = nq / wall
    print(f"    {name:<34} {qps:12.1f} q/s  {qps / ref_qps:8.2f}x  {extra}", flush=True)


def _checked(s: Searcher, q: np.ndarray, k: int, method: str, exact_i: np.ndarray, exact_d: np.ndarray) -> dict:
    i, d = s.knn(q, k, method=method)
    assert (i == exact_i).all() and (d == exact_d).all(), f"{method} differs from the flat scan"
    return dict(s.last_plan)


def _nflip(index, nflip: int, qb: np.ndarray, k: int) -> np.ndarray:
    index.nflip = nflip
    return index.search(qb, k)[0]


def _faiss_add(index, db: np.ndarray):
    index.add(db.view(np.uint8))
    return index


def bench_sharded(args: argparse.Namespace) -> None:
    """The same queries through ShardedIndex with 1 and 2 actors (flat scan forced: the work that splits)."""
    import ray

    from c3dhash.eval.ray_session import start_local

    from c3dhash.eval.search.sharded import ShardedIndex
    n = args.n[0]
    db, q = make_codes("trained", n, args.flat_queries, args.bits, args.classes, args.flip)
    ref = topk(q, db, 10)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.npy"
        np.save(path, db)
        del db
        start_local(num_cpus=2)  # 127.0.0.1 only (eval/ray_session.py)
        try:
            walls = {}
            for shards in (1, 2):
                with ShardedIndex(path, args.bits, shards=shards) as index:
                    got = index.knn(q, 10, method="bitsliced")  # warm-up (JIT caches, page cache) + exactness
                    assert all((a == b).all() for a, b in zip(got, ref)), "sharded result differs"
                    walls[shards] = min(timed(lambda: index.knn(q, 10, method="bitsliced"))[0]
                                        for _ in range(args.repeats))
        finally:
            ray.shutdown()
    print(f"\nsharded index, N={n:.0e}, {args.bits} bits, {len(q)} queries, k=10, flat scan in each actor "
          f"(best of {args.repeats}); load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs:")
    for shards, wall in walls.items():
        print(f"  {shards} actor{'s' * (shards > 1)}: {wall:7.3f} s  {len(q) / wall:9.1f} q/s  "
              f"{walls[1] / wall:5.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=float, nargs="+", default=[1e6, 1e7], help="database sizes")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--flat-queries", type=int, default=100, help="queries for the flat scans (slow at 1e7+)")
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--data", nargs="+", choices=("trained", "uniform"), default=["trained", "uniform"])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--flip", type=float, default=0.1, help="per-bit flip probability around the class centre")
    p.add_argument("--max-flip", type=int, default=3, help="largest FAISS nflip tried")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--sharded", action="store_true", help="also the 1 vs 2 Ray actors comparison")
    p.add_argument("--sharded-only", action="store_true")
    args = p.parse_args()
    args.n = [int(x) for x in args.n]
    import faiss
    import numba
    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    print(f"1 thread for FAISS and numba; load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    if not args.sharded_only:
        for n in args.n:
            for kind in args.data:
                bench_size(args, n, kind)
    if args.sharded or args.sharded_only:
        bench_sharded(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("mih"):
        main()
