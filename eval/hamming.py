"""Flat Hamming kernels over packed codes: XOR + popcount in numba (torch path: eval/hamming_torch.py).

    d = hamming_distances(q.codes, db.codes)            # uint16 [Q, N], small inputs only
    idx, dist = topk(q.codes, db.codes, 100)           # int64 / int32 [Q, min(100, N)]
    idx, dist = topk(q.codes, db.codes, 100, backend="torch")   # CUDA when present
    offsets, idx, dist = radius_search(q.codes, db.codes, 3)   # CSR, (distance, index) order

Also the per-distance counting kernel (`histogram`) that eval/metrics.py builds exact ranks from. This
module imports nothing else of eval/ but codes.py: metrics, MIH and search sit above it.

Every ranking breaks ties by database index (what a stable sort by distance gives), so results are
reproducible and comparable across backends, shard counts and machines.

CPU top-K in one pass per query, no sort: the database is scanned in index order in cache-sized chunks for a
block of queries; each 256-item sub-block's minimum distance is computed vectorised (AVX-512 VPOPCNTQ where
present) without storing anything, sub-blocks that cannot enter the current top K are skipped (almost all,
once K items are found), and survivors go to per-distance buckets (at most K each, in index order). Because
the scan is in index order, concatenating buckets 0, 1, ... is the stable ranking. A large K (buckets over
TOPK_BUCKET_BYTES) takes a counting sort of each query's full distance row instead. Threads:
numba.set_num_threads(n) (prange over query blocks).
"""
from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from eval.codes import CodesError, check_pair

QBLOCK = 16  # queries sharing one pass over a database chunk
CHUNK = 1024  # database codes per chunk: W x 1024 x 8 B stays in L1 while a query block walks it
SUB = 256  # sub-block whose minimum decides whether to look at its items one by one
NSUB = 8  # interleaved sub-histograms per query (see histogram); its unrolled loop assumes 8
BIG = 1 << 62
TOPK_BUCKET_BYTES = 8 << 20  # per query block; above it (large K x wide codes) the counting-sort path
BACKENDS = ("auto", "numba", "torch")

# numba's default "omp" layer shares libgomp with torch, and each parallel launch sets the process-wide OpenMP
# thread count: a 1-thread training worker ran on every core after its first validation (2 workers on 2 cores:
# 1.43 -> 2.0 s a step, measured). The workqueue layer is numba's own pool and leaves torch's setting alone.
# Read at numba's first parallel launch; an explicit NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


@intrinsic
def popcount64(typingctx, x):
    """llvm.ctpop.i64: a single POPCNT (or vectorised VPOPCNTQ) instruction."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None
    sig = types.int64(x)  # signed result: numba turns int64 + uint64 into float64

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)
    return sig, codegen


@njit(cache=True, inline="always")
def code_distance(q, qi, dbT, j):
    """Hamming distance between query row qi of q [Q, W] and database item j of dbT [W, N]."""
    d = 0
    for w in range(dbT.shape[0]):
        d += popcount64(q[qi, w] ^ dbT[w, j])
    return d


@njit(cache=True, inline="always")
def block_distances(q, qi, dbT, s0, s1, out):
    """out[:s1-s0] = distances (uint16) of items s0..s1-1 to query qi; returns their minimum.

    Each word is a 1-D slice so every loop is a plain stream LLVM vectorises (2-D indexing in the loop
    defeated it: 6x slower); 1, 2 and 4 words (<= 64, 128, 256 bits) are fused so `out` is written once."""
    n, nw = s1 - s0, dbT.shape[0]
    r0, a0 = dbT[0, s0:s1], q[qi, 0]
    m = 1 << 30
    if nw == 1:
        for j in range(n):
            v = popcount64(a0 ^ r0[j])
            out[j] = v
            m = min(m, v)
        return m
    r1, a1 = dbT[1, s0:s1], q[qi, 1]
    if nw == 2:
        for j in range(n):
            v = popcount64(a0 ^ r0[j]) + popcount64(a1 ^ r1[j])
            out[j] = v
            m = min(m, v)
        return m
    if nw == 4:
        r2, a2, r3, a3 = dbT[2, s0:s1], q[qi, 2], dbT[3, s0:s1], q[qi, 3]
        for j in range(n):
            v = (popcount64(a0 ^ r0[j]) + popcount64(a1 ^ r1[j]) + popcount64(a2 ^ r2[j])
                 + popcount64(a3 ^ r3[j]))
            out[j] = v
            m = min(m, v)
        return m
    for j in range(n):
        out[j] = popcount64(a0 ^ r0[j]) + popcount64(a1 ^ r1[j])
    for w in range(2, nw):
        rw, aw = dbT[w, s0:s1], q[qi, w]
        for j in range(n):
            out[j] += popcount64(aw ^ rw[j])
    for j in range(n):
        m = min(m, out[j])
    return m


@njit(cache=True)
def block_min(q, qi, dbT, s0, s1):
    """min distance of items s0..s1-1 to query qi, without storing distances (top-K skips most blocks)."""
    n, nw = s1 - s0, dbT.shape[0]
    r0, a0 = dbT[0, s0:s1], q[qi, 0]
    m = 1 << 30
    if nw == 1:
        for j in range(n):
            m = min(m, popcount64(a0 ^ r0[j]))
        return m
    r1, a1 = dbT[1, s0:s1], q[qi, 1]
    if nw == 2:
        for j in range(n):
            m = min(m, popcount64(a0 ^ r0[j]) + popcount64(a1 ^ r1[j]))
        return m
    if nw == 4:
        r2, a2, r3, a3 = dbT[2, s0:s1], q[qi, 2], dbT[3, s0:s1], q[qi, 3]
        for j in range(n):
            m = min(m, popcount64(a0 ^ r0[j]) + popcount64(a1 ^ r1[j]) + popcount64(a2 ^ r2[j])
                    + popcount64(a3 ^ r3[j]))
        return m
    for j in range(s0, s1):
        m = min(m, code_distance(q, qi, dbT, j))
    return m


@njit(cache=True, inline="always")
def count_marked(dist, j0, j1, h, by_label, base, r, rend, c0, reld, relp):
    """Count items j0..j1-1, recording each marked (relevant) one's distance and its position among the
    earlier items at that distance (the sum of its bucket's sub-histograms) before counting it. Returns the
    new r. Inlined: a call per relevant item cost ~10% overall with 1% relevant items."""
    nxt = by_label[base + r] - c0 if r < rend else BIG
    for j in range(j0, j1):
        d = dist[j]
        if j == nxt:
            p = 0
            for t in range(NSUB):
                p += h[d * NSUB + t]
            reld[r] = d
            relp[r] = p
            r += 1
            nxt = by_label[base + r] - c0 if r < rend else BIG
        h[d * NSUB + (j & (NSUB - 1))] += 1
    return r


@njit(cache=True)
def histogram(dist, n, h, by_label, base, r, rend, c0, reld, relp):
    """Per-distance counts of dist[:n] into h[d * 8 + j % 8], and for the marked items by_label[base + r..]
    (ascending database indices; c0 = index of dist[0]) their distance and bucket position (reld, relp).
    Eight interleaved sub-histograms, so equal consecutive distances do not wait on each other's store
    (2x), one base register (a [8, bins] layout spilled the eight row pointers: 1.7x slower), unsigned
    distances (no negative-index check). Groups of 8 without a marked item, the vast majority, take the
    unrolled path: ~1 item per cycle."""
    nxt = by_label[base + r] - c0 if r < rend else BIG
    for g in range(n // NSUB):
        j = g * NSUB
        if nxt >= j + NSUB:
            h[dist[j] * NSUB] += 1
            h[dist[j + 1] * NSUB + 1] += 1
            h[dist[j + 2] * NSUB + 2] += 1
            h[dist[j + 3] * NSUB + 3] += 1
            h[dist[j + 4] * NSUB + 4] += 1
            h[dist[j + 5] * NSUB + 5] += 1
            h[dist[j + 6] * NSUB + 6] += 1
            h[dist[j + 7] * NSUB + 7] += 1
        else:
            r = count_marked(dist, j, j + NSUB, h, by_label, base, r, rend, c0, reld, relp)
            nxt = by_label[base + r] - c0 if r < rend else BIG
    return count_marked(dist, n - n % NSUB, n, h, by_label, base, r, rend, c0, reld, relp)


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
def _topk_block(q, q0, q1, dbT, k, nbins, out_idx, out_dist):
    nq, n = q1 - q0, dbT.shape[1]
    cnt = np.zeros((nq, nbins), np.int64)  # items kept per distance bucket
    buf = np.empty((nq, nbins, k), np.int64)  # their indices, in index order
    lim = np.full(nq, nbins, np.int64)  # accept only distance < lim
    below = np.zeros(nq, np.int64)  # items kept with distance < lim (always < k)
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
    for i in range(nq):
        m = 0
        for d in range(nbins):
            take = min(cnt[i, d], out_idx.shape[1] - m)
            for r in range(take):
                out_idx[q0 + i, m] = buf[i, d, r]
                out_dist[q0 + i, m] = d
                m += 1


@njit(parallel=True, cache=True)
def _topk_kernel(q, dbT, k, nbins, out_idx, out_dist):
    nblk = (q.shape[0] + QBLOCK - 1) // QBLOCK
    for b in prange(nblk):
        _topk_block(q, b * QBLOCK, min(q.shape[0], (b + 1) * QBLOCK), dbT, k, nbins, out_idx, out_dist)


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


def topk(q_codes: np.ndarray, db_codes: np.ndarray, k: int, *, backend: str = "numba",
         dbT: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database items per query, ties by database index: (indices int64, distances int32),
    each [Q, min(k, N)]. backend: numba (CPU), torch (CUDA if available, else CPU tensors), auto (torch
    when CUDA is available). `dbT` = word_major(db_codes) when the caller searches the same database often."""
    if backend not in BACKENDS:
        raise CodesError(f"topk: backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CodesError(f"topk: k must be a positive integer, got {k!r}")
    q, db = check_pair(q_codes, db_codes)
    kk = min(int(k), db.shape[0])
    if backend == "auto":
        backend = "torch" if _cuda_available() else "numba"
    if backend == "torch":
        import torch

        from eval.hamming_torch import topk_torch
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        idx, dist = topk_torch(torch.from_numpy(q.view(np.int64)).to(dev),
                               torch.from_numpy(db.view(np.int64)).to(dev), kk)
        return idx.cpu().numpy(), dist.cpu().numpy().astype(np.int32)
    out_idx = np.empty((q.shape[0], kk), np.int64)
    out_dist = np.empty((q.shape[0], kk), np.int32)
    nbins = q.shape[1] * 64 + 1
    kernel = _topk_kernel if QBLOCK * nbins * kk * 8 <= TOPK_BUCKET_BYTES else _topk_counting_kernel
    if q.shape[0]:
        kernel(q, word_major(db) if dbT is None else dbT, kk, nbins, out_idx, out_dist)
    return out_idx, out_dist


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


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


def radius_search(q_codes: np.ndarray, db_codes: np.ndarray, r: int, *,
                  dbT: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every database item within Hamming distance r of each query, ordered by (distance, index):
    CSR (offsets int64 [Q + 1], indices int64 [M], distances int32 [M]); query i's items are
    indices[offsets[i]:offsets[i + 1]]. Two passes (count, then fill), both skipping far sub-blocks."""
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise CodesError(f"radius_search: r must be a non-negative integer, got {r!r}")
    q, db = check_pair(q_codes, db_codes, "radius_search")
    dbT = word_major(db) if dbT is None else dbT
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
