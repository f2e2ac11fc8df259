"""Which bit-planes each query counts (eval/kernels/planes.py's selected_counts rows), and the order queries run in:
queries near each other share an anchor, whose distances are counted once per database group.

    plan = plan_queries(q_codes, bits, qblock)   # QueryPlan: order, blocks, rows (see below)
    # kernels: for each block, each chunk of groups: planes_dist(P, g, plan.anchors[a], A, g - c0) once per
    # anchor a of the block (plan.anchor[i]), then each query i's rows plan.rows[i] (direct or relative to A)

A direct row counts the query's set bits or its clear bits, the fewer (about B/2 planes; eval/kernels/planes.py).
A relative row counts only the bits T where the query differs from its anchor m: d(x, q) = d(x, m) - |T| +
2 sum over T of (x_b ^ q_b). Trained codes cluster (a class's codes lie near each other), so a cluster's
majority code m is much nearer to its members than B/2: at B/4 (codes within a class flipped 1 bit in 4),
a member counts B/4 planes plus one XOR each (~6 ops a plane against 5) instead of ~B/2, and the anchor's
B/2 are shared by the cluster. Queries whose anchor would not pay (uniform codes, lone queries) keep
their direct rows; the results are the same either way (exact arithmetic on the same bits).

Clusters: leader clustering in query order (a query joins its nearest leader when nearer than
B/2 - sqrt(B), two standard deviations below two random codes' distance, else leads a new cluster; at most
MAX_LEADERS): O(Q x leaders) popcounts, deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from c3dhash.eval.kernels.words import popcount64
from c3dhash.eval.kernels.planes import COUNT_BITS, LANES, ROW_DTYPE, ROW_K, ROW_N16, ROW_N8, ROW_REL, ROW_ZX, ROW_ZY, \
    SEL_HDR, SUM_BITS, planes_dist

MAX_LEADERS = 1024  # clustering costs Q x leaders popcounts; later queries run direct rows
XOR_COST = 6 / 5  # a relative row's plane (load, XOR, full adder share) against a direct row's


@dataclass(frozen=True)
class QueryPlan:
    order: np.ndarray  # int64 [Q]: the queries in run order (plan position i is query order[i])
    starts: np.ndarray  # int64 [blocks + 1]: block b runs plan positions starts[b] .. starts[b + 1] - 1
    rows: np.ndarray  # int32 [Q, row]: selected_counts rows, in run order
    anchor: np.ndarray  # int64 [Q]: the row of `anchors` a relative row counts against, -1 for a direct row
    anchors: np.ndarray  # int32 [A, row]: the anchors' direct rows


def row_length(words: int) -> int:
    return SEL_HDR + 2 * (words * 64 + 16)


@njit(cache=True)
def _set_planes(row, idx, n, zero_plane):
    """Row planes idx[:n], padded with the zero plane to whole 16-plane steps (or one 8-plane step for the
    last 8 or fewer), each stored as its word offset b * LANES (the kernel's load then needs no shift: its
    address is base + 8 x entry); returns the planes counted."""
    n16, n8 = n // 16 * 16, 0
    if 0 < n - n16 <= 8:
        n8 = 1  # one 8-plane step for the last few planes
    elif n > n16:
        n16 += 16
    row[ROW_N16], row[ROW_N8] = n16, n8
    for k in range(n16 + 8 * n8):
        row[SEL_HDR + k] = (idx[k] if k < n else zero_plane) * LANES
    return n16 + 8 * n8


@njit(cache=True)
def _set_k(row, k):
    k %= 1 << SUM_BITS
    for b in range(SUM_BITS):
        row[ROW_K + b] = -((k >> b) & 1)


@njit(cache=True)
def direct_row(row, qbits, zero_plane):
    """The query's set bits, or its clear bits when fewer (d = |q| + |x| - 2c or |q| - |x| + 2c); returns the
    planes counted."""
    pc = 0
    for b in range(qbits.shape[0]):
        pc += qbits[b]
    zeros = pc > qbits.shape[0] // 2
    want = 0 if zeros else 1
    row[ROW_ZX], row[ROW_ZY], row[ROW_REL] = (-1, 0, 0) if zeros else (0, -1, 0)
    _set_k(row, pc + 1)
    idx = np.empty(qbits.shape[0], np.int64)
    n = 0
    for b in range(qbits.shape[0]):
        if qbits[b] == want:
            idx[n] = b
            n += 1
    return _set_planes(row, idx, n, zero_plane)


@njit(cache=True)
def relative_row(row, qbits, mbits, zero_plane):
    """The bits T where the query differs from its anchor, each plane XORed with the query's bit there
    (d = d(x, m) - |T| + 2c); returns the planes counted."""
    half = (row.shape[0] - SEL_HDR) // 2
    idx = np.empty(qbits.shape[0], np.int64)
    n = 0
    for b in range(qbits.shape[0]):
        if qbits[b] != mbits[b]:
            idx[n] = b
            row[SEL_HDR + half + n] = -np.int32(qbits[b])
            n += 1
    row[ROW_ZX], row[ROW_ZY], row[ROW_REL] = 0, 0, 1
    _set_k(row, -n)
    return _set_planes(row, idx, n, zero_plane)


@njit(cache=True)
def _direct_rows(qbits, rows, zero_plane):
    cost = np.empty(qbits.shape[0], np.float64)
    for i in range(qbits.shape[0]):
        cost[i] = direct_row(rows[i], qbits[i], zero_plane)
    return cost


@njit(cache=True)
def _try_anchor(rows, cost, qbits, lo, hi, mbits, arow, zero_plane):
    """Rows lo..hi - 1 relative to anchor mbits where that is cheaper, when the savings pay for the anchor's
    direct row (arow, filled); returns whether the anchor is used."""
    trial = np.zeros((hi - lo, rows.shape[1]), rows.dtype)
    gain = np.zeros(hi - lo)
    for k in range(hi - lo):
        gain[k] = max(cost[lo + k] - relative_row(trial[k], qbits[lo + k], mbits, zero_plane) * XOR_COST, 0.0)
    if gain.sum() <= direct_row(arow, mbits, zero_plane):
        return False
    for k in range(hi - lo):
        if gain[k] > 0:
            rows[lo + k] = trial[k]
    return True


def _unpack(q: np.ndarray, bits: int) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(q).view(np.uint8), axis=1, bitorder="little")[:, :bits]


def query_select(q: np.ndarray, bits: int) -> np.ndarray:
    """int32 [Q, row_length(W)]: each query's direct row (its set or clear bits, the fewer; see selected_counts)."""
    out = np.zeros((q.shape[0], row_length(q.shape[1])), ROW_DTYPE)
    _direct_rows(_unpack(q, bits), out, q.shape[1] * 64 + COUNT_BITS)
    return out


@njit(cache=True)
def leader_clusters(q, limit, max_leaders):
    """Cluster id per query (-1: none): its nearest leader's when at distance <= limit, else a new leader's."""
    nq, words = q.shape
    lead = np.empty(max_leaders, np.int64)
    cid = np.full(nq, -1, np.int64)
    nl = 0
    for i in range(nq):
        best, bd = -1, limit + 1
        for c in range(nl):
            d = 0
            for w in range(words):
                d += popcount64(q[i, w] ^ q[lead[c], w])
            if d < bd:
                best, bd = c, d
        if best >= 0:
            cid[i] = best
        elif nl < max_leaders:
            lead[nl] = i
            cid[i] = nl
            nl += 1
    return cid


def cluster_order(q: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's cluster key (a lone query: a key of its own) and the run order: clusters together, in the
    order of their first query, query order inside."""
    cid = leader_clusters(np.ascontiguousarray(q), bits // 2 - math.isqrt(bits), MAX_LEADERS)
    key = np.where(cid >= 0, cid, cid.max(initial=-1) + 1 + np.arange(len(cid)))
    return key, np.argsort(key, kind="stable").astype(np.int64)


def _pieces(run_key: np.ndarray, qblock: int) -> tuple[list[tuple[int, int]], list[int]]:
    """The clusters' pieces (run positions lo, hi) and block starts: whole clusters packed into blocks of at
    most qblock queries, larger ones split."""
    bounds = np.flatnonzero(np.diff(run_key)) + 1
    pieces, starts, fill = [], [0], 0
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(run_key)]])):
        for s in range(a, b, qblock):
            e = min(b, s + qblock)
            if fill and fill + (e - s) > qblock:
                starts.append(starts[-1] + fill)
                fill = 0
            pieces.append((s, e))
            fill += e - s
    if fill:
        starts.append(starts[-1] + fill)
    return pieces, starts


def plan_queries(q: np.ndarray, bits: int, qblock: int) -> QueryPlan:
    """Order, blocks and rows for q (uint64 [Q, W]); see the module docstring."""
    nq, words = q.shape
    zero_plane = words * 64 + COUNT_BITS
    key, order = cluster_order(q, bits)
    run_key = key[order]
    pieces, starts = _pieces(run_key, qblock)
    qbits = _unpack(q[order], bits)
    rows = np.zeros((nq, row_length(words)), ROW_DTYPE)
    cost = _direct_rows(qbits, rows, zero_plane)
    anchor = np.full(nq, -1, np.int64)
    anchors, majority = [], {}
    for lo, hi in pieces:
        if hi - lo < 2:
            continue
        c = int(run_key[lo])
        if c not in majority:  # the whole cluster's majority bits (a split cluster's pieces share it)
            members = qbits[run_key == c]
            majority[c] = (2 * members.sum(axis=0, dtype=np.int64) > len(members)).astype(np.uint8)
        arow = np.zeros(row_length(words), ROW_DTYPE)
        if _try_anchor(rows, cost, qbits, lo, hi, majority[c], arow, zero_plane):
            anchor[lo:hi][rows[lo:hi, 4] == 1] = len(anchors)
            anchors.append(arow)
    return QueryPlan(order, np.array(starts, np.int64), rows, anchor,
                     np.array(anchors, ROW_DTYPE).reshape(len(anchors), row_length(words)))


@njit(cache=True)
def anchor_counts(P, anchor, anchors, qi, cur, c0, c1, A):
    """Before run position qi's pass over groups c0 .. c1 - 1: its anchor's distances into A[g - c0], once per
    anchor and chunk (a block's queries of one anchor run together); returns the anchor A now holds."""
    a = anchor[qi]
    if a < 0 or a == cur:
        return cur
    for g in range(c0, c1):
        planes_dist(P, g, anchors[a], A, g - c0)
    return a
