"""Per-item numba kernels over word-major codes: popcount, sub-block distances and minimum, and the
per-distance histogram that eval/metrics/exact.py builds exact ranks from. Imports only kernels/isa.py: the flat
search (eval/search/flat.py), the metrics and MIH sit above it.

    d = block_distances(q, qi, dbT, s0, s1, out)   # in numba: out[:s1-s0] = distances, returns their minimum
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from c3dhash.eval.kernels.isa import INTRINSIC_CTPOP

NSUB = 8  # interleaved sub-histograms per query (see histogram); its unrolled loop assumes 8
BIG = 1 << 62


@intrinsic
def popcount64(typingctx, x):
    """llvm.ctpop.i64: a single POPCNT (or vectorised VPOPCNTQ) instruction."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None
    sig = types.int64(x)  # signed result: numba turns int64 + uint64 into float64

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic(INTRINSIC_CTPOP, [ir.IntType(64)])
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
