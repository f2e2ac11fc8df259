"""A sharded Hamming index on Ray: row ranges of one codes.npy held by Ray actors, exact merged top-K.

    with ShardedIndex("runs/index/codes.npy", bits=64, shards=2) as index:      # local Ray, 2 actors
        idx, dist = index.knn(q_codes, 10)     # == Searcher(codes, 64).knn(q_codes, 10), ties included
        offsets, idx, dist = index.radius(q_codes, 3)
    ShardedIndex(path, bits=64, ranges=[(0, 5_000_000), (5_000_000, 10_000_000)], address="auto")

`codes_path` is a .npy file of uint64 [N, ceil(bits / 64)] codes (the layout of eval/codes.py; an index
folder's codes.npy). Each actor memory-maps it (np.load(mmap_mode="r"): nothing is read up front, and actors
on one node share the page cache) and searches its rows [start, stop) with eval.search.Searcher (multi-index
hashing or the flat scan, chosen per call). A query batch fans out to every actor in one call each; each
returns its exact top k with global indices, and the driver keeps the k smallest (distance, global index)
pairs: the union of the shards' top k holds the global top k, and ties go to the lower global index exactly
as in one process. Radius results are concatenated and ordered the same way.
Each actor prepares its own layouts (bit-planes for its CPU's lane width: kernels/isa.py); none is shipped.

Memory per actor: the map itself costs nothing up front (pages are read on demand and shared); the MIH
tables (built at start with warm=True) hold m bucket-ordered copies of the shard's codes plus their ids,
about m x (8 W + 4) bytes per code (m = 3 at 64 bits: 36 bytes per code); the flat scan reads the map
directly at 64 bits and a word-major copy (8 W bytes per code) of wider codes, plus (on CPUs without a vector
popcount) the bit-sliced copy of eval/kernels/planes.py that its top-K filter reads (the codes' own size again).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from c3dhash.eval.codes import CodesError, check_code_array, num_words
from c3dhash.eval.ray_session import join_or_start


def open_codes(codes_path: str | Path, bits: int) -> np.ndarray:
    """The memory-mapped uint64 [N, W] codes array of a .npy file, checked against `bits`."""
    p = Path(codes_path)
    if not p.is_file():
        raise CodesError(f"{p}: codes file not found; write the index first (`c3dhash index`)")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CodesError(f"{p}: not a readable .npy array ({exc}); re-create the index") from exc
    if not isinstance(arr, np.ndarray):  # an .npz renamed .npy loads as an NpzFile
        raise CodesError(f"{p}: not a .npy array (an .npz archive?); re-create the index")
    if arr.dtype != np.uint64 or arr.ndim != 2 or arr.shape[1] != num_words(bits):
        raise CodesError(f"{p}: expected uint64 [N, {num_words(bits)}] codes for {bits} bits, got {arr.dtype} "
                         f"{list(arr.shape)}; was the index written with another number of bits?")
    check_code_array(arr, bits, str(p), fix="re-create the index (`c3dhash index`) or pass its bits")  # high bits
    if not arr.flags.c_contiguous:
        raise CodesError(f"{p}: codes must be stored in C order; re-create the index")
    return arr


def even_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """`shards` contiguous, non-empty row ranges covering 0..n in order (fewer when n < shards)."""
    edges = np.linspace(0, n, min(shards, n) + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class Shard:
    """Rows [start, stop) of a codes file, searched in this process (the body of each Ray actor)."""

    def __init__(self, codes_path: str, bits: int, start: int, stop: int, m: int | None = None,
                 threads: int | None = None) -> None:
        from c3dhash.eval.search.flat import use_threads
        from c3dhash.eval.search.searcher import Searcher
        if threads:  # an actor of 1 CPU must not scan on every core of the node
            use_threads(threads)
        arr = open_codes(codes_path, bits)
        if not 0 <= start < stop <= arr.shape[0]:
            raise CodesError(f"{codes_path}: row range [{start}, {stop}) outside its {arr.shape[0]} codes")
        self.start = int(start)
        self.searcher = Searcher(np.asarray(arr[start:stop]), bits, m=m)  # a view of the map, no copy

    def knn(self, q: np.ndarray, k: int, method: str = "auto") -> tuple[np.ndarray, np.ndarray, dict]:
        idx, dist = self.searcher.knn(q, k, method=method)
        return idx + self.start, dist, self.searcher.last_plan

    def radius(self, q: np.ndarray, r: int, method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        off, idx, dist = self.searcher.radius(q, r, method=method)
        return off, idx + self.start, dist

    def warm(self) -> int:
        """Build the MIH tables and flat layouts now (the first query does not pay for them); returns the size."""
        self.searcher.tables()
        self.searcher.dbT()
        self.searcher.planes()
        return self.searcher.num_db


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest (distance, global index) per query row from the shards' (idx, dist) [Q, k_s]."""
    idx = np.concatenate([p[0] for p in parts], axis=1)
    dist = np.concatenate([p[1] for p in parts], axis=1).astype(np.int64)
    key = dist * n + idx  # unique per item: sorting it is sorting by (distance, index)
    kk = min(k, key.shape[1])
    order = np.argsort(key, axis=1, kind="stable")[:, :kk]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1).astype(np.int32)


def merge_radius(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nq = len(parts[0][0]) - 1
    rows_i, rows_d = [], []
    for i in range(nq):
        ii = np.concatenate([p[1][p[0][i]:p[0][i + 1]] for p in parts])
        dd = np.concatenate([p[2][p[0][i]:p[0][i + 1]] for p in parts])
        order = np.argsort(dd.astype(np.int64) * n + ii, kind="stable")
        rows_i.append(ii[order])
        rows_d.append(dd[order])
    offsets = np.zeros(nq + 1, np.int64)
    np.cumsum([len(r) for r in rows_i], out=offsets[1:])
    cat = lambda rows, dt: np.concatenate(rows).astype(dt) if rows else np.zeros(0, dt)  # noqa: E731
    return offsets, cat(rows_i, np.int64), cat(rows_d, np.int32)


class ShardedIndex:
    """Ray actors over row ranges of `codes_path` (default: `shards` even ranges); see the module docstring.
    Starts a local Ray (one CPU per shard) unless Ray is initialised or `address` is given; close() stops
    the actors (and that local Ray)."""

    def __init__(self, codes_path: str | Path, bits: int, *, shards: int = 1,
                 ranges: Sequence[tuple[int, int]] | None = None, address: str | None = None,
                 cpus_per_shard: int = 1, m: int | None = None, warm: bool = True) -> None:
        import ray
        n = int(open_codes(codes_path, bits).shape[0])
        if ranges is None:
            if shards < 1:
                raise CodesError(f"ShardedIndex: shards must be >= 1, got {shards}")
            ranges = even_ranges(n, shards)
        ranges = [(int(a), int(b)) for a, b in ranges]
        covered = sorted(ranges)
        if not covered or covered[0][0] != 0 or covered[-1][1] != n or any(
                a1 != b0 for (_, b0), (a1, _) in zip(covered[:-1], covered[1:])):
            raise CodesError(f"ShardedIndex: ranges {ranges} must tile rows 0..{n} of {codes_path} exactly")
        self.num_db, self.bits, self.ranges = n, int(bits), covered
        self._started = False
        self._started = join_or_start(address, num_cpus=len(covered) * cpus_per_shard)
        self.last_plan: dict[str, int] = {}
        self._actors: list[Any] = []
        try:
            actor = ray.remote(num_cpus=cpus_per_shard)(Shard)
            self._actors = [actor.remote(str(codes_path), bits, a, b, m, cpus_per_shard) for a, b in covered]
            if warm:
                ray.get([a.warm.remote() for a in self._actors])
        except BaseException:
            self.close()
            raise

    def knn(self, q: np.ndarray, k: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        import ray

        from c3dhash.eval.search.searcher import check_method
        check_method(method, where="ShardedIndex.knn")  # here, not as a Ray task error from every actor
        q = np.ascontiguousarray(q)
        ref = ray.put(q)
        parts = ray.get([a.knn.remote(ref, k, method) for a in self._actors])
        plan: dict[str, Any] = {}
        for _, _, p in parts:
            for key, v in p.items():
                plan[key] = plan.get(key, 0) + v
        self.last_plan = plan
        return merge_topk([(i, d) for i, d, _ in parts], k, self.num_db)

    def radius(self, q: np.ndarray, r: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import ray
        ref = ray.put(np.ascontiguousarray(q))
        return merge_radius(ray.get([a.radius.remote(ref, r, method) for a in self._actors]), self.num_db)

    def close(self) -> None:
        import ray
        for a in self._actors:
            ray.kill(a)
        self._actors = []
        if self._started:
            ray.shutdown()
            self._started = False

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
