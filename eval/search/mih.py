"""Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012 / TPAMI 2014): exact Hamming k-NN and radius
search that looks at a small part of the database when near neighbours are near.

    tables = build_tables(db.codes, db.bits)             # m substring tables, CSR, built once
    idx, dist, ok, work = mih_knn(tables, q.codes, 10)   # rows with ok == False gave up (use the flat scan)
    rows, ok = mih_radius(tables, q.codes, 3)            # per query (indices, distances) within radius 3

Normally reached through eval/search/searcher.py's Searcher (method 'mih' or 'auto': MIH or the flat scan).

Each code is cut into m contiguous substrings (the first bits % m one bit longer). Table t maps substring value
-> the database items having it, in CSR form: `ids` sorted by (value, index) and `starts` (dense: indexed by
the value itself, 2^s + 1 entries, when 2^s <= DENSE_FACTOR * N; else beside sorted distinct `keys`, found by
binary search). Pigeonhole: an item at distance d from the query is within floor(d / m) of it on at least
one substring. Probing, in each table in turn, every value at substring distance rho = 0, 1, 2, ... finds,
after tables 0..j at rho, every item at distance <= m * rho + j (an unfound item differs by >= rho + 1 in
tables 0..j and >= rho in the others). Each table keeps its own copy of the codes in bucket order, so a
bucket is one sequential read; an item is taken only at its first discovery in the probing order (checked
from its substrings, no per-item state), its exact distance computed, and a k-NN query stops as soon as k
candidates lie within that guaranteed radius: then the top k by (distance, index) among the candidates is
the flat scan's answer, ties included (every item at the k-th distance has been found). Radius r: tables
0..r % m probe rho = r // m, the others rho - 1, so that sum(rho_t + 1) > r.

A query gives up (ok = False) once its work (probes x PROBE_COST + candidates x CAND_COST, in units of one
flat-scan item) exceeds `budget`: far neighbours (uniform codes, long codes, large k) make MIH probe
combinatorially many values, and the flat scan is then the faster exact answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from c3dhash.eval.codes import CodesError
from c3dhash.eval.kernels.isa import MIH_CAND_COST, MIH_PROBE_COST
from c3dhash.eval.kernels.planes import prefetch
from c3dhash.eval.kernels.words import popcount64

DENSE_FACTOR = 8  # dense offsets (2^s + 1 entries) when 2^s <= DENSE_FACTOR * N: no binary search
# Work units = flat-scan items; the unit costs are calibrated in kernels/isa.py (with the machine named).
PROBE_COST, CAND_COST = MIH_PROBE_COST, MIH_CAND_COST
MAX_SUBSTRING = 32  # longer substrings cannot be enumerated usefully
PREFETCH_AHEAD = 4  # a dense table's bucket offsets are prefetched this many probes ahead, its codes one ahead


@dataclass(frozen=True)
class Tables:
    """m substring hash tables in CSR form, concatenated (t's part of X is X[X_base[t]:X_base[t + 1]])."""
    bits: int
    num_db: int
    first_bit: np.ndarray  # int64 [m]
    length: np.ndarray  # int64 [m], substring lengths
    dense: np.ndarray  # bool [m]
    ids: np.ndarray  # int32/int64 [m * N], database indices sorted by (substring value, index) per table
    tcodes: np.ndarray  # uint64 [m * N, W], codes[ids]: a bucket's codes lie together, read sequentially
    keys: np.ndarray  # uint64, sorted distinct values of the sparse tables
    keys_base: np.ndarray  # int64 [m + 1]
    starts: np.ndarray  # int64, CSR offsets into a table's ids (dense: per value; sparse: per distinct key)
    starts_base: np.ndarray  # int64 [m + 1]

    @property
    def m(self) -> int:
        return int(self.length.shape[0])


def default_m(bits: int, n: int) -> int:
    """The paper's choice, substrings of about log2(N) bits (at least 1 table, at most MAX_SUBSTRING bits)."""
    m = max(1, round(bits / max(math.log2(max(n, 2)), 1.0)))
    return max(m, -(-bits // MAX_SUBSTRING))


@njit(cache=True, inline="always")
def substring(codes, i, b0, s):
    """Bits b0 .. b0 + s - 1 of code row i (s <= 32 < 64, so at most two words)."""
    w, o = b0 // 64, b0 % 64
    v = codes[i, w] >> np.uint64(o)
    if o + s > 64:
        v |= codes[i, w + 1] << np.uint64(64 - o)
    return v & np.uint64((1 << s) - 1)


@njit(cache=True)
def _dense_table(codes, b0, s, ids, starts):
    """Counting sort of the substring values: stable, so ids stay ascending inside each bucket."""
    n = codes.shape[0]
    keys = np.empty(n, np.int64)
    for i in range(n):
        keys[i] = substring(codes, i, b0, s)
        starts[keys[i] + 1] += 1
    for v in range(starts.shape[0] - 1):
        starts[v + 1] += starts[v]
    pos = starts[:-1].copy()
    for i in range(n):
        ids[pos[keys[i]]] = i
        pos[keys[i]] += 1


@njit(cache=True)
def _substrings(codes, b0, s, out):
    for i in range(codes.shape[0]):
        out[i] = substring(codes, i, b0, s)


def build_tables(codes: np.ndarray, bits: int, m: int | None = None) -> Tables:
    """The m substring tables of uint64 [N, W] codes (default m: `default_m`)."""
    n = codes.shape[0]
    m = default_m(bits, n) if m is None else int(m)
    if not 1 <= m <= bits or -(-bits // m) > MAX_SUBSTRING:
        raise CodesError(f"multi-index hashing: m={m} tables for {bits} bits; choose 1 <= m <= bits with "
                         f"substrings of at most {MAX_SUBSTRING} bits (m >= {-(-bits // MAX_SUBSTRING)})")
    length = np.array([bits // m + (t < bits % m) for t in range(m)], np.int64)
    first = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    idt = np.int32 if n < 2**31 else np.int64
    ids = np.empty(m * n, idt)
    dense = np.array([(1 << int(s)) <= DENSE_FACTOR * n for s in length])
    keys, starts = [], []
    for t in range(m):
        b0, s = int(first[t]), int(length[t])
        part = ids[t * n:(t + 1) * n]
        if dense[t]:
            st = np.zeros((1 << s) + 1, np.int64)
            _dense_table(codes, b0, s, part, st)
            keys.append(np.zeros(0, np.uint64))
        else:
            sub = np.empty(n, np.uint64)
            _substrings(codes, b0, s, sub)
            order = np.argsort(sub, kind="stable")
            part[:] = order
            k, first_pos = np.unique(sub[order], return_index=True)
            keys.append(k)
            st = np.append(first_pos, n).astype(np.int64)
        starts.append(st)
    base = lambda arrs: np.concatenate([[0], np.cumsum([len(a) for a in arrs])]).astype(np.int64)  # noqa: E731
    tcodes = np.empty((m * n, codes.shape[1]), np.uint64)
    for t in range(m):
        np.take(codes, ids[t * n:(t + 1) * n], axis=0, out=tcodes[t * n:(t + 1) * n])
    return Tables(int(bits), int(n), first, length, dense, ids, tcodes, np.concatenate(keys), base(keys),
                  np.concatenate(starts).astype(idt), base(starts))


@njit(cache=True, inline="always")
def _bucket(tb, key, dense, keys, keys_base, starts, starts_base):
    """[lo, hi) of value `key` in table tb's ids; (0, 0) when absent."""
    sb = starts_base[tb]
    if dense[tb]:
        v = np.int64(key)
        return starts[sb + v], starts[sb + v + 1]
    ks = keys[keys_base[tb]:keys_base[tb + 1]]
    p = np.searchsorted(ks, key)
    if p < ks.shape[0] and ks[p] == key:
        return starts[sb + p], starts[sb + p + 1]
    return 0, 0


@njit(cache=True, inline="always")
def _next_combination(x):
    """Gosper's hack: the next larger integer with the same number of set bits."""
    c = x & (~x + np.uint64(1))
    r = x + c
    return (((r ^ x) >> np.uint64(2)) // c) | r


@njit(cache=True)
def _probe(qcodes, qi, qsub, tb, rho, first, length, dense, ids, tcodes, keys, keys_base, starts, starts_base,
           cand_i, cand_d, nc, hist, lk):
    """Visit every value at substring distance rho in table tb. An item is taken only at its first
    discovery in the probing order (rho, table) (no earlier table within rho, none within rho - 1), so each
    is counted once with no per-item state; its code is read from the table's own copy, sequentially.
    Candidates with distance <= lim = lk[0] are appended (arrays grown as needed). k-NN (lk[2] = k > 0):
    hist counts the candidates by distance, lk[1] those within lim, and lim drops to the k-th smallest
    distance as soon as a candidate brings it down (an item beyond it cannot enter the top k: k candidates
    lie within it), so a crowded bucket of trained codes costs a distance per item, not a candidate each
    (trained codes crowd a query's first bucket). Radius (lk[2] = 0): lim stays. Returns (cand_i, cand_d, count, probes,
    visited)."""
    s, m = length[tb], length.shape[0]
    if rho > s:
        return cand_i, cand_d, nc, 0, 0
    n, nw = ids.shape[0] // m, tcodes.shape[1]
    base = tb * n
    probes, visited = 0, 0
    lim, nle, k = lk[0], lk[1], lk[2]
    mask = np.uint64((1 << rho) - 1)
    top = np.uint64(1) << np.uint64(s)
    ahead, sb = mask, starts_base[tb]
    for _ in range(PREFETCH_AHEAD):
        if rho > 0 and ahead < top:
            ahead = _next_combination(ahead)
    while mask < top:
        nxt = _next_combination(mask) if rho > 0 else top  # the next probe's value (rho = 0: this one only)
        if dense[tb] and rho > 0:  # probes are dependent random reads: fetch the next ones' while this one runs
            if ahead < top:
                prefetch(starts, sb + np.int64(qsub[tb] ^ ahead))
                ahead = _next_combination(ahead)
            if nxt < top:
                prefetch(tcodes, (base + starts[sb + np.int64(qsub[tb] ^ nxt)]) * nw)
        lo, hi = _bucket(tb, qsub[tb] ^ mask, dense, keys, keys_base, starts, starts_base)
        probes += 1
        visited += hi - lo
        for p in range(lo, hi):
            row = base + p
            d = 0
            for w in range(nw):
                d += popcount64(qcodes[qi, w] ^ tcodes[row, w])
            if d > lim:
                continue
            seen = False
            for t2 in range(m):
                if t2 != tb:
                    ds = popcount64(qsub[t2] ^ substring(tcodes, row, first[t2], length[t2]))
                    if ds < rho or (ds == rho and t2 < tb):
                        seen = True
                        break
            if seen:
                continue
            if nc == cand_i.shape[0]:
                cand_i = np.concatenate((cand_i, np.empty_like(cand_i)))
                cand_d = np.concatenate((cand_d, np.empty_like(cand_d)))
            cand_i[nc] = ids[row]
            cand_d[nc] = d
            nc += 1
            if k > 0:
                hist[d] += 1
                nle += 1
                while nle - hist[lim] >= k:
                    nle -= hist[lim]
                    lim -= 1
        mask = nxt
    lk[0], lk[1] = lim, nle
    return cand_i, cand_d, nc, probes, visited


@njit(cache=True)
def _query_substrings(qcodes, qi, first, length):
    out = np.empty(length.shape[0], np.uint64)
    for t in range(length.shape[0]):
        out[t] = substring(qcodes, qi, first[t], length[t])
    return out


@njit(cache=True)
def _ranked(cand_i, cand_d, nc, lim, n):
    """Candidates with distance <= lim in (distance, index) order."""
    keep = 0
    key = np.empty(nc, np.int64)
    for c in range(nc):
        if cand_d[c] <= lim:
            key[keep] = cand_d[c] * n + cand_i[c]
            keep += 1
    key = np.sort(key[:keep])
    return key % n, key // n


@njit(cache=True)
def _knn_one(tb_args, qcodes, qi, k, budget, out_idx, out_dist, out_work):
    """Exact top k of query qi by (distance, index) into out_*[qi]; False if it gave up (work > budget).
    out_work[qi] = the work it took (units of one flat-scan item)."""
    first, length, dense, ids, tcodes, keys, keys_base, starts, starts_base, bits = tb_args
    m, n = length.shape[0], ids.shape[0] // length.shape[0]
    qsub = _query_substrings(qcodes, qi, first, length)
    hist = np.zeros(bits + 1, np.int64)
    cand_i = np.empty(max(64, 2 * k), np.int64)
    cand_d = np.empty(max(64, 2 * k), np.int64)
    lk = np.array([bits, 0, k], np.int64)  # lim: the k-th smallest distance so far (bits while fewer than k)
    nc, work = 0, 0.0
    for rho in range(length.max() + 1):
        for tb in range(m):
            cand_i, cand_d, nc, probes, visited = _probe(qcodes, qi, qsub, tb, rho, first, length, dense, ids,
                                                         tcodes, keys, keys_base, starts, starts_base,
                                                         cand_i, cand_d, nc, hist, lk)
            work += probes * PROBE_COST + visited * CAND_COST
            out_work[qi] = work
            lim = lk[0]
            found_all = rho >= length[tb]  # one exhausted table has produced every item
            if found_all or lim <= m * rho + tb:
                idx, dist = _ranked(cand_i, cand_d, nc, lim, n)
                out_idx[qi, :k] = idx[:k]
                out_dist[qi, :k] = dist[:k]
                return True
            if work > budget:
                return False
    return False  # not reached: the longest table is exhausted above


@njit(parallel=True, cache=True)
def _knn_kernel(tb_args, qcodes, k, budget, out_idx, out_dist, ok, work):
    for qi in prange(qcodes.shape[0]):
        ok[qi] = _knn_one(tb_args, qcodes, qi, k, budget, out_idx, out_dist, work)


@njit(cache=True)
def _radius_one(tb_args, qcodes, qi, r, budget):
    first, length, dense, ids, tcodes, keys, keys_base, starts, starts_base, bits = tb_args
    m, n = length.shape[0], ids.shape[0] // length.shape[0]
    qsub = _query_substrings(qcodes, qi, first, length)
    cand_i = np.empty(64, np.int64)
    cand_d = np.empty(64, np.int64)
    nc, work = 0, 0.0
    hist, lk = np.zeros(0, np.int64), np.array([r, 0, 0], np.int64)  # a fixed limit
    top_rho, last_table = r // m, r % m
    for rho in range(top_rho + 1):
        for tb in range(m if rho < top_rho else last_table + 1):
            cand_i, cand_d, nc, probes, visited = _probe(qcodes, qi, qsub, tb, rho, first, length, dense, ids,
                                                         tcodes, keys, keys_base, starts, starts_base,
                                                         cand_i, cand_d, nc, hist, lk)
            work += probes * PROBE_COST + visited * CAND_COST
            if rho >= length[tb]:
                break
            if work > budget:
                return cand_i[:0], cand_d[:0], False, work
        else:
            continue
        break  # an exhausted table: every item has been seen
    idx, dist = _ranked(cand_i, cand_d, nc, r, n)
    return idx, dist, True, work


def _args(t: Tables) -> tuple:
    return (t.first_bit, t.length, t.dense, t.ids, t.tcodes, t.keys, t.keys_base, t.starts, t.starts_base,
            t.bits)


def mih_knn(tables: Tables, q: np.ndarray, k: int, *,
            budget: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top k (k <= N) of each query by (distance, index): (idx int64 [Q, k], dist int32 [Q, k], ok bool [Q],
    work float [Q]); rows with ok False gave up after `budget` work units and hold garbage."""
    nq = q.shape[0]
    out_idx = np.zeros((nq, k), np.int64)
    out_dist = np.zeros((nq, k), np.int32)
    ok = np.zeros(nq, np.bool_)
    work = np.zeros(nq)
    if nq:
        _knn_kernel(_args(tables), q, int(k), float(budget), out_idx, out_dist, ok, work)
    return out_idx, out_dist, ok, work


def mih_radius(tables: Tables, q: np.ndarray, r: int, *, budget: float = np.inf,
               with_work: bool = False) -> tuple:
    """Items within distance r of each query by (distance, index): a list of (idx int64, dist int32) per
    query and ok bool [Q] (False: gave up after `budget` work units; its entry is empty), and with
    `with_work` the work float [Q] each took."""
    out, ok, work = [], np.zeros(q.shape[0], np.bool_), np.zeros(q.shape[0])
    for qi in range(q.shape[0]):
        idx, dist, ok[qi], work[qi] = _radius_one(_args(tables), q, qi, min(int(r), tables.bits), float(budget))
        out.append((idx, dist.astype(np.int32)))
    return (out, ok, work) if with_work else (out, ok)
