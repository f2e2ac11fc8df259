"""The flat scans over packed codes (every database item): word-major XOR + popcount and the bit-sliced filter,
in numba, plus the torch path. The public entry points are eval/search/searcher.py's (`Searcher`, `topk`,
`radius_search`), which choose among these by one `method` vocabulary; these take prepared layouts explicitly.

    idx, dist = knn_words(q, word_major(db), k)              # any width; large k: a counting sort per query
    idx, dist = knn_bitsliced(q, bit_planes(db), len(db), k)  # up to MAX_BITS, this process's layout
    offsets, idx, dist = radius_words(q, word_major(db), 3)   # CSR, (distance, index) order
    d = hamming_distances(q.codes, db.codes)                  # uint16 [Q, N], small inputs only

Every ranking breaks ties by database index (what a stable sort by distance gives), so results are
reproducible and comparable across methods, shard counts and machines.

CPU top-K in one pass per query, no sort: the database is scanned in index order in cache-sized chunks for a
block of queries; each 256-item sub-block is tested without storing anything for an item below the current
limit, sub-blocks that cannot enter the current top K are skipped (almost all, once K items are found), and
survivors go to per-distance buckets (at most K each, in index order). Because the scan is in index order,
concatenating buckets 0, 1, ... is the stable ranking. The test is either the word-major minimum or the
bit-sliced filter of eval/kernels/planes.py (faster on AVX2 and on AVX-512: docs/search.md). A large K (buckets
over TOPK_BUCKET_BYTES) takes a counting sort of each query's full distance row instead. Threads:
numba.set_num_threads(n) (prange over query blocks).
"""
from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

from c3dhash.eval.codes import CodesError, check_pair
from c3dhash.eval.kernels.words import block_distances, block_min, code_distance, popcount64
from c3dhash.eval.kernels.planes import COUNT_BITS, GROUP, LANES, MAX_BITS, count_at, planes_below, \
    prefetch_next_chunk, vectors
from c3dhash.eval.kernels.planes_select import anchor_counts, plan_queries

QBLOCK = 16  # queries sharing one pass over a database chunk
CHUNK = 1024  # database codes per chunk: W x 1024 x 8 B stays in L1 while a query block walks it
SUB = 256  # sub-block whose minimum decides whether to look at its items one by one
TOPK_BUCKET_BYTES = 8 << 20  # per query block; above it (large K x wide codes) the counting-sort path
# Without prepared planes a batch builds them when it will pay them back: the build costs about as much as a
# few hundred queries save (bench/results/kernels-history-2026-12-06.md).
PLANES_MIN_QUERIES = 256
# Queries sharing one pass over a chunk of bit-planes: more queries a block stream the database from memory
# less often; 64 x 64 KiB (about L1) is the fastest (bench/results/kernels-history-2026-12-06.md).
# The bucket memory stays within TOPK_BUCKET_BYTES (see topk).
PLANES_QBLOCK = 64
PLANES_CHUNK_BYTES = 64 << 10

# numba's default "omp" layer shares libgomp with torch, and each parallel launch sets the process-wide OpenMP
# thread count: a 1-thread training worker ran on every core after its first validation (oversubscribed: tested
# in tests/test_metrics.py). The workqueue layer is numba's own pool and leaves torch's setting alone.
# Read at numba's first parallel launch; an explicit NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def use_threads(n: int) -> None:
    """The kernels' thread count in this process, at most numba's pool size. A Ray task or actor of n CPUs
    calls it: numba's pool defaults to every core of the node, whatever the process was given."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


@njit(parallel=True, cache=True)
def _distances_kernel(q, dbT, out):
    for i in prange(q.shape[0]):
        for j in range(dbT.shape[1]):
            out[i, j] = code_distance(q, i, dbT, j)


@njit(cache=True)
def _take(i, d, item, k, cnt, buf, lim, below):
    """Keep `item` at distance d < lim[i]; when k items sit below lim, lower lim to the k-th item's bucket
    (later items at that distance come after all kept ones in index order, so they can never enter)."""
    buf[i, d, cnt[i, d]] = item
    cnt[i, d] += 1
    below[i] += 1
    if below[i] >= k:
        t = lim[i] - 1
        while below[i] - cnt[i, t] >= k:
            below[i] -= cnt[i, t]
            t -= 1
        lim[i] = t
        below[i] -= cnt[i, t]


@njit(cache=True)
def _buckets(nq, nbins, k):
    """Per query: items kept per distance bucket, their indices (index order), the limit (accept only
    distance < lim) and how many kept items lie below it (always < k)."""
    return (np.zeros((nq, nbins), np.int64), np.empty((nq, nbins, k), np.int64), np.full(nq, nbins, np.int64),
            np.zeros(nq, np.int64))


@njit(cache=True)
def _emit(q0, nq, cnt, buf, out_idx, out_dist):
    """Concatenate each query's buckets 0, 1, ...: the stable ranking's first out_idx.shape[1] items."""
    for i in range(nq):
        m = 0
        for d in range(cnt.shape[1]):
            take = min(cnt[i, d], out_idx.shape[1] - m)
            for r in range(take):
                out_idx[q0 + i, m] = buf[i, d, r]
                out_dist[q0 + i, m] = d
                m += 1


@njit(cache=True)
def _topk_block(q, q0, q1, dbT, k, nbins, out_idx, out_dist):
    nq, n = q1 - q0, dbT.shape[1]
    cnt, buf, lim, below = _buckets(nq, nbins, k)
    dist = np.empty(SUB, np.uint16)
    for c0 in range(0, n, CHUNK):
        c1 = min(n, c0 + CHUNK)
        for i in range(nq):
            for s0 in range(c0, c1, SUB):
                s1 = min(s0 + SUB, c1)
                if block_min(q, q0 + i, dbT, s0, s1) >= lim[i]:
                    continue  # the common case once the top k has filled up
                block_distances(q, q0 + i, dbT, s0, s1, dist)
                for j in range(s1 - s0):
                    if dist[j] < lim[i]:
                        _take(i, dist[j], s0 + j, k, cnt, buf, lim, below)
    _emit(q0, nq, cnt, buf, out_idx, out_dist)


@njit(parallel=True, cache=True)
def _topk_kernel(q, dbT, k, nbins, out_idx, out_dist):
    nblk = (q.shape[0] + QBLOCK - 1) // QBLOCK
    for b in prange(nblk):
        _topk_block(q, b * QBLOCK, min(q.shape[0], (b + 1) * QBLOCK), dbT, k, nbins, out_idx, out_dist)


@njit(cache=True)
def _topk_planes_block(sel, anchor, anchors, q0, q1, n, P, gchunk, k, nbins, out_idx, out_dist):
    """_topk_block with the bit-sliced filter: a group's items below lim come as bit masks in index order,
    with their distances in binary beside them, and only those are offered to the buckets; each anchor's
    distances are counted once per chunk (eval/kernels/planes_select.py)."""
    nq = q1 - q0
    cnt, buf, lim, below = _buckets(nq, nbins, k)
    lt = vectors(LANES)
    dbin = vectors(COUNT_BITS * LANES).reshape((COUNT_BITS, LANES))
    A = vectors(gchunk * COUNT_BITS * LANES).reshape((gchunk, COUNT_BITS, LANES))
    for c0 in range(0, P.shape[0], gchunk):
        c1 = min(P.shape[0], c0 + gchunk)
        cur = -1
        for i in range(nq):
            prefetch_next_chunk(P, c0, c1, i, nq)
            cur = anchor_counts(P, anchor, anchors, q0 + i, cur, c0, c1, A)
            for g in range(c0, c1):
                if planes_below(P, g, sel[q0 + i], A, g - c0, lim[i], lt, dbin) == 0:
                    continue  # the common case once the top k has filled up
                for lane in range(LANES):
                    m = lt[lane]
                    while m:
                        t = popcount64((m - np.uint64(1)) & ~m)  # the lowest set bit
                        m &= m - np.uint64(1)
                        j = g * GROUP + lane * 64 + t
                        if j >= n:
                            break  # the last group's padding
                        d = count_at(dbin, lane, t)
                        if d < lim[i]:  # lim may have dropped since the group's test
                            _take(i, d, j, k, cnt, buf, lim, below)
    _emit(q0, nq, cnt, buf, out_idx, out_dist)


@njit(parallel=True, cache=True)
def _topk_planes_kernel(sel, anchor, anchors, starts, n, P, gchunk, k, nbins, out_idx, out_dist):
    for b in prange(starts.shape[0] - 1):
        _topk_planes_block(sel, anchor, anchors, starts[b], starts[b + 1], n, P, gchunk, k, nbins, out_idx,
                           out_dist)


@njit(parallel=True, cache=True)
def _topk_counting_kernel(q, dbT, k, nbins, out_idx, out_dist):
    """Stable counting sort of each query's distance row, keeping the first k: O(N + bins) per query."""
    n = dbT.shape[1]
    for i in prange(q.shape[0]):
        dist = np.empty(n, np.uint16)
        block_distances(q, i, dbT, 0, n, dist)
        pos = np.zeros(nbins + 1, np.int64)
        for j in range(n):
            pos[dist[j] + 1] += 1
        for d in range(nbins):
            pos[d + 1] += pos[d]  # pos[d] = first rank of distance d
        for j in range(n):
            r = pos[dist[j]]
            pos[dist[j]] = r + 1
            if r < k:
                out_idx[i, r] = j
                out_dist[i, r] = dist[j]


def word_major(db: np.ndarray) -> np.ndarray:
    """[N, W] -> contiguous [W, N]: each word of all items is one stream, which the kernels vectorise over."""
    return np.ascontiguousarray(db.T)


def hamming_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """All pairwise distances, uint16 [Q, N] (memory Q x N x 2 bytes: for small inputs and tests)."""
    q, db = check_pair(q, db)
    out = np.empty((q.shape[0], db.shape[0]), np.uint16)
    if q.shape[0]:
        _distances_kernel(q, word_major(db), out)
    return out


def needs_counting(words: int, kk: int) -> bool:
    """Buckets over TOPK_BUCKET_BYTES (large K x wide codes): the counting sort of each query's distance row."""
    return QBLOCK * (words * 64 + 1) * kk * 8 > TOPK_BUCKET_BYTES


def knn_words(q: np.ndarray, dbT: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """The word-major scan (any width): kk nearest of word-major codes dbT [W, N] per query, ties by index."""
    out_idx, out_dist = np.empty((q.shape[0], kk), np.int64), np.empty((q.shape[0], kk), np.int32)
    if q.shape[0]:
        kernel = _topk_counting_kernel if needs_counting(q.shape[1], kk) else _topk_kernel
        kernel(q, dbT, kk, q.shape[1] * 64 + 1, out_idx, out_dist)
    return out_idx, out_dist


def check_planes(planes: np.ndarray, n: int, bits: int, where: str = "topk") -> None:
    """planes must be this process's bit_planes of n codes of `bits` (kernels/isa.py's LAYOUT)."""
    want = ((n + GROUP - 1) // GROUP, bits + COUNT_BITS + 1, LANES)
    if planes.dtype != np.uint64 or planes.shape != want or not planes.flags.c_contiguous:
        raise CodesError(f"{where}: planes must be bit_planes(db_codes) of this process's layout, uint64 "
                         f"{list(want)}; got {planes.dtype} {list(planes.shape)}")


def knn_bitsliced(q: np.ndarray, planes: np.ndarray, n: int, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """The bit-sliced scan (codes up to MAX_BITS, kk under the bucket limit): kk nearest per query."""
    bits, nbins = q.shape[1] * 64, q.shape[1] * 64 + 1
    if bits > MAX_BITS or needs_counting(q.shape[1], kk):
        raise CodesError(f"topk: the bit-sliced scan takes codes of at most {MAX_BITS} bits and k within "
                         f"{TOPK_BUCKET_BYTES} bytes of buckets; got {bits} bits, k={kk}: use method='words'")
    check_planes(planes, n, bits)
    out_idx, out_dist = np.empty((q.shape[0], kk), np.int64), np.empty((q.shape[0], kk), np.int32)
    if not q.shape[0]:
        return out_idx, out_dist
    gchunk = max(1, PLANES_CHUNK_BYTES // (planes.shape[1] * LANES * 8))
    qblock = max(QBLOCK, min(PLANES_QBLOCK, TOPK_BUCKET_BYTES // (nbins * kk * 8)))
    plan = plan_queries(q, bits, qblock)
    run_idx, run_dist = np.empty_like(out_idx), np.empty_like(out_dist)
    _topk_planes_kernel(plan.rows, plan.anchor, plan.anchors, plan.starts, n, planes, gchunk, kk, nbins, run_idx,
                        run_dist)
    out_idx[plan.order], out_dist[plan.order] = run_idx, run_dist
    return out_idx, out_dist


def knn_torch(q: np.ndarray, db: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """The torch path (eval/kernels/torch_hamming.py): CUDA when available, else CPU tensors."""
    import torch

    from c3dhash.eval.kernels.torch_hamming import topk_torch
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    idx, dist = topk_torch(torch.from_numpy(q.view(np.int64)).to(dev), torch.from_numpy(db.view(np.int64)).to(dev), kk)
    return idx.cpu().numpy(), dist.cpu().numpy().astype(np.int32)


@njit(cache=True)
def _radius_scan(q, i, dbT, r, pos, out_idx, out_dist, fill):
    """Query i's items at distance <= r, sub-blocks whose minimum exceeds r skipped. fill=False: pos[d] += 1
    (the count pass); fill=True: write each item at pos[d], the next slot of its distance, so the output is in
    (distance, index) order (the fill pass)."""
    n = dbT.shape[1]
    dist = np.empty(SUB, np.uint16)
    for s0 in range(0, n, SUB):
        s1 = min(s0 + SUB, n)
        if block_min(q, i, dbT, s0, s1) > r:
            continue
        block_distances(q, i, dbT, s0, s1, dist)
        for j in range(s1 - s0):
            d = dist[j]
            if d <= r:
                if fill:
                    out_idx[pos[d]] = s0 + j
                    out_dist[pos[d]] = d
                pos[d] += 1


@njit(parallel=True, cache=True)
def _radius_counts_kernel(q, dbT, r, counts):
    for i in prange(q.shape[0]):
        _radius_scan(q, i, dbT, r, counts[i], np.empty(0, np.int64), np.empty(0, np.int32), False)


@njit(parallel=True, cache=True)
def _radius_fill_kernel(q, dbT, r, starts, out_idx, out_dist):
    for i in prange(q.shape[0]):
        _radius_scan(q, i, dbT, r, starts[i].copy(), out_idx, out_dist, True)


def radius_words(q: np.ndarray, dbT: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every item of word-major codes dbT within distance r of each query, ordered by (distance, index):
    CSR (offsets int64 [Q + 1], indices int64 [M], distances int32 [M]). Two passes (count, then fill), both
    skipping far sub-blocks."""
    r = min(int(r), q.shape[1] * 64)
    counts = np.zeros((q.shape[0], r + 1), np.int64)
    if q.shape[0]:
        _radius_counts_kernel(q, dbT, r, counts)
    offsets = np.zeros(q.shape[0] + 1, np.int64)
    np.cumsum(counts.sum(axis=1), out=offsets[1:])
    starts = offsets[:-1, None] + np.cumsum(counts, axis=1) - counts  # first slot of each distance
    out_idx = np.empty(offsets[-1], np.int64)
    out_dist = np.empty(offsets[-1], np.int32)
    if q.shape[0]:
        _radius_fill_kernel(q, dbT, r, starts, out_idx, out_dist)
    return offsets, out_idx, out_dist
