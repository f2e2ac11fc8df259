"""Retrieval metrics of query codes against a database, exact, with Hamming ties broken by database index.

    from c3dhash.eval import evaluate, load_codes
    m = evaluate(load_codes("test.npz"), load_codes("train.npz"))      # dict, see below
    m["map_all"], m["map_at_k_rel"][100], m["map_at_k"][5], m["pr_curve"]["precision"]

Relevance = same label. Ranking = database sorted by (distance, index). With K' = min(K, N):
  map_all        mean AP over the whole ranked database (the seed's metric); AP = (1/R) sum over relevant
                 items of (relevant rank / overall rank). A query with no relevant item (R = 0) has AP 0
                 and counts in the mean (as in CSQ's code; the seed's data always had R > 0).
  map_at_k_rel   CSQ's mAP@K: sum_{i<=K'} P(i) rel(i) / (relevant items in the top K'), 0 when there are none.
  map_at_k       SSVH family's mAP@K: sum_{i<=K'} P(i) rel(i) / K'.
  precision_at_k relevant items in the top K' / K'.
  pr_curve       at each radius r = 0..bits the items with distance <= r are retrieved: precision = mean over
                 queries of relevant retrieved / retrieved (a query retrieving nothing counts 0), recall =
                 mean of relevant retrieved / R (a query with R = 0 counts 0).
  pair_hist      {"same", "diff"}: (query, item) pairs per distance 0..bits with the same / a different label,
                 pooled over queries (eval/metrics/curves.py's TP/FP/TN/FN per radius come from these).
  map_all_expected (expected_ties=True) the expected AP over uniformly random orders of tied items
                 (McSherry & Najork, ECIR 2008), from the per-distance histograms.

No sort: per query one pass over the database (in index order, cache-blocked) builds the per-distance item
counts and, for each relevant item, its distance d and its position p among the earlier items at d. Then its
exact rank is (items at distances < d) + p + 1, which gives every metric above in O(N + R * K-values + bits).
Per-query values are computed first and reduced in `reduce_metrics`, so a sharded run that concatenates
per-query values in query order reduces to bit-identical floats (eval/metrics/sharded.py).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
from numba import njit, prange
from tqdm import tqdm

from c3dhash.eval.codes import Codes, CodesError, check_query_db
from c3dhash.eval.config import MAP_AT_K, MAP_AT_K_REL, PRECISION_AT_K
from c3dhash.eval.kernels.isa import LAYOUT, Layout
from c3dhash.eval.search.flat import word_major
from c3dhash.eval.search.searcher import SCANS, check_method, flat_scan
from c3dhash.eval.kernels.words import NSUB, block_distances, histogram, popcount64
from c3dhash.eval.kernels.planes import COUNT_BITS, GROUP, LANES, bit_planes, prefetch_next_chunk, vectors
from c3dhash.eval.kernels.planes_hist import HIST_BINS, planes_hist
from c3dhash.eval.kernels.planes_select import anchor_counts, cluster_order, plan_queries
from c3dhash.loaders.atomic import atomic_write_text

PROGRESS_STEP = 256  # queries per progress-bar step (per-query values do not depend on it)
EVAL_QBLOCK = 8  # queries sharing a database chunk (their histograms stay in L1/L2)
CHUNK = 1024  # database items per chunk (codes and distances stay in L1 while a query block walks them)
EVAL_PLANES_QBLOCK = 64  # queries sharing a chunk of bit-planes (the database streams once per 64 queries)
# Bit-planes per chunk: about L1, with the next chunk prefetched (prefetch_next_chunk); the measurements are in
# bench/results/kernels-history-2026-12-06.md.
PLANES_CHUNK_BYTES = 64 << 10


@dataclass(frozen=True)
class PreparedDb:
    """The database laid out for the metric scans, built once (a sharded evaluation builds it on each worker).
    `layout` is the kernels/isa.py Layout the bit-planes were built for: a process of another layout (a Ray
    worker on another CPU) rebuilds them (`localised`) before scanning, never reading them."""
    dbT: np.ndarray | None  # uint64 [W, N], word-major codes (the word-major scan), or None
    planes: np.ndarray | None  # eval/kernels/planes.py's bit_planes (the bit-sliced scan), or None
    grouped_codes: np.ndarray | None  # uint64 [W, N], word-major codes in by_label order (bit-sliced scan), or None
    by_label: np.ndarray  # int64 [N], database indices grouped by label, ascending inside a group
    label_values: np.ndarray  # int64 [L], sorted distinct labels
    label_starts: np.ndarray  # int64 [L], where each label's group starts in by_label
    label_counts: np.ndarray  # int64 [L]
    bits: int
    num_db: int
    layout: Layout | None = None  # the planes' layout (None without planes)


def prepare_db(db: Codes, *, method: str = "auto") -> PreparedDb:
    """method (eval/search/searcher.py's vocabulary, its flat scans): "auto" takes the bit-planes up to MAX_BITS
    (exact mAP 2.2 / 1.9 / 1.75x the word-major scan at 64 / 128 / 256 bits on AVX2, 2.6 / 2.0 / 1.6x the VPOPCNTQ
    one on AVX-512; 1e6 codes, 1 thread), else word-major; "bitsliced" / "words" choose (equal results)."""
    if len(db) == 0:
        raise CodesError(f"{db.source or 'database'}: the database is empty; encode a non-empty split")
    check_method(method, SCANS, "evaluate")
    planes = flat_scan(method, db.bits, reuse=True, where="evaluate") == "bitsliced"
    labels = db.labels
    if labels.min() >= np.iinfo(np.int16).min and labels.max() <= np.iinfo(np.int16).max:
        labels = labels.astype(np.int16)  # same stable order; numpy radix-sorts 16-bit keys (6x faster)
    by_label = np.argsort(labels, kind="stable").astype(np.int64)
    grouped = db.labels[by_label]
    starts = np.concatenate([[0], np.flatnonzero(grouped[1:] != grouped[:-1]) + 1]).astype(np.int64)
    counts = np.diff(np.append(starts, len(grouped))).astype(np.int64)
    return PreparedDb(None if planes else word_major(db.codes), bit_planes(db.codes) if planes else None,
                      word_major(db.codes[by_label]) if planes else None, by_label,
                      grouped[starts].astype(np.int64), starts, counts, int(db.bits), len(db),
                      LAYOUT if planes else None)


def localised(pdb: PreparedDb) -> PreparedDb:
    """pdb itself when its bit-planes (if any) are this process's layout; else the same database with its planes
    rebuilt here from its codes (kept word-major in by_label order)."""
    if pdb.planes is None or pdb.layout == LAYOUT:
        return pdb
    codes = np.empty((pdb.num_db, pdb.grouped_codes.shape[0]), np.uint64)
    codes[pdb.by_label] = pdb.grouped_codes.T
    return replace(pdb, planes=bit_planes(codes), layout=LAYOUT)


@njit(cache=True)
def _harmonic_diff(a, n):
    """H(a + n) - H(a), accurate to ~1e-13 relative."""
    if n <= 256:
        s = 0.0
        for i in range(a + 1, a + n + 1):
            s += 1.0 / i
        return s
    if a < 256:
        m = a + n
        h = math.log(m) + 0.5772156649015329 + 0.5 / m - 1.0 / (12.0 * m * m) + 1.0 / (120.0 * m ** 4)
        for i in range(1, a + 1):
            h -= 1.0 / i
        return h
    m = a + n
    return (math.log1p(n / a) + 0.5 / m - 0.5 / a - 1.0 / (12.0 * m * m) + 1.0 / (12.0 * a * a))


@njit(cache=True)
def _expected_ap(total, relh, start, relstart, R):
    """McSherry-Najork: a bucket of n items (r relevant) after a items (c relevant) contributes
    sum_{i=a+1}^{a+n} (r/n) (c + 1 + (i-a-1)(r-1)/(n-1)) / i, summed in closed form with harmonic numbers."""
    s = 0.0
    for d in range(total.shape[0]):
        n, r = total[d], relh[d]
        if r == 0:
            continue
        a, c = start[d], relstart[d]
        dh = _harmonic_diff(a, n)
        slope = (r - 1) / (n - 1) if n > 1 else 0.0
        s += (r / n) * ((c + 1) * dh + slope * (n - (a + 1) * dh))
    return s / R


@njit(cache=True)
def _finish_query(total, reld, relp, ks, expected, row, ap_all, ap_exp, ksum, krel, relh):
    """Per-query metrics from the bucket counts and each relevant item's (distance, position in bucket)."""
    nb, R = total.shape[0], reld.shape[0]
    start = np.zeros(nb, np.int64)
    relstart = np.zeros(nb, np.int64)
    for r in range(R):
        relh[row, reld[r]] += 1
    for d in range(1, nb):
        start[d] = start[d - 1] + total[d - 1]
        relstart[d] = relstart[d - 1] + relh[row, d - 1]
    seen = np.zeros(nb, np.int64)
    s = 0.0
    for r in range(R):  # database index order
        d = reld[r]
        rank = start[d] + relp[r] + 1
        v = (relstart[d] + seen[d] + 1) / rank
        seen[d] += 1
        s += v
        t = ks.shape[0] - 1
        while t >= 0 and rank <= ks[t]:
            ksum[row, t] += v
            krel[row, t] += 1
            t -= 1
    ap_all[row] = s / R if R > 0 else 0.0
    if expected and R > 0:
        ap_exp[row] = _expected_ap(total, relh[row], start, relstart, R)


@njit(cache=True)
def _relevant_buffers(rcount, q0, nq):
    """Where each query of a block keeps its relevant items' (distance, position): off[i]..off[i + 1] of
    reld / relp; ptr[i] = how many the scan has met so far."""
    off = np.zeros(nq + 1, np.int64)
    for i in range(nq):
        off[i + 1] = off[i] + rcount[q0 + i]
    return off, np.empty(off[nq], np.int64), np.empty(off[nq], np.int64), np.zeros(nq, np.int64)


@njit(cache=True)
def _scan_block(q, q0, q1, dbT, by_label, rstart, rcount, ks, nbins, expected,
                ap_all, ap_exp, ksum, krel, hist, relh):
    nq, n = q1 - q0, dbT.shape[1]
    h = np.zeros((nq, nbins * NSUB), np.int32)
    off, reld, relp, ptr = _relevant_buffers(rcount, q0, nq)
    dist = np.empty(CHUNK, np.uint16)
    for c0 in range(0, n, CHUNK):
        c1 = min(n, c0 + CHUNK)
        for i in range(nq):
            qi = q0 + i
            block_distances(q, qi, dbT, c0, c1, dist)
            o = off[i]
            ptr[i] = histogram(dist, c1 - c0, h[i], by_label, rstart[qi], ptr[i], rcount[qi], c0,
                               reld[o:], relp[o:])
    for i in range(nq):
        total = h[i].reshape(nbins, NSUB).sum(axis=1).astype(np.int64)
        hist[q0 + i] = total
        _finish_query(total, reld[off[i]:off[i + 1]], relp[off[i]:off[i + 1]], ks, expected, q0 + i,
                      ap_all, ap_exp, ksum, krel, relh)


@njit(cache=True)
def _group_distances(q, qi, grouped, start, count, out):
    """out[r] = distance of query qi to item start + r of grouped (word-major: contiguous per word, 1.4x faster
    than the row codes' strided words), r < count."""
    for r in range(count):
        out[r] = 0
    for w in range(q.shape[1]):
        a = q[qi, w]
        for r in range(count):
            out[r] += popcount64(a ^ grouped[w, start + r])


@njit(cache=True)
def _scan_planes_block(queries, plan, db, out, q0, q1, ks, nbins, expected):
    """_scan_block on the bit-planes (eval/kernels/planes_hist.py): per chunk of groups, each anchor's distances once
    (eval/kernels/planes_select.py), then planes_hist counts each query's items in a group and places its relevant
    items there (they come in index order). Arguments grouped in small tuples (as per_query_stats builds them)."""
    q, popq, rstart, rcount = queries
    sel, anchor, anchors = plan
    P, n, gchunk, by_label, grouped = db
    ap_all, ap_exp, ksum, krel, hist, relh = out
    nq, ng = q1 - q0, P.shape[0]
    acc = vectors(nq * HIST_BINS).reshape((nq, HIST_BINS))
    A = vectors(gchunk * COUNT_BITS * LANES).reshape((gchunk, COUNT_BITS, LANES))
    off, reld, relp, ptr = _relevant_buffers(rcount, q0, nq)
    for i in range(nq):  # the relevant items' distances, from their codes (one vectorised pass)
        _group_distances(q, q0 + i, grouped, rstart[q0 + i], rcount[q0 + i], reld[off[i]:off[i + 1]])
    for c0 in range(0, ng, gchunk):
        c1 = min(ng, c0 + gchunk)
        cur = -1
        for i in range(nq):
            qi = q0 + i
            prefetch_next_chunk(P, c0, c1, i, nq)
            cur = anchor_counts(P, anchor, anchors, qi, cur, c0, c1, A)
            jl = by_label[rstart[qi]:rstart[qi] + rcount[qi]]
            rd, rp, p = reld[off[i]:off[i + 1]], relp[off[i]:off[i + 1]], ptr[i]
            for g in range(c0, c1):
                p = planes_hist(P, g, sel[qi], A, g - c0, acc[i], jl, p, rd, rp)
            ptr[i] = p
    for i in range(nq):
        total = acc[i, :nbins].astype(np.int64)
        total[popq[q0 + i]] -= ng * GROUP - n  # the last group's padding items: zero codes
        hist[q0 + i] = total
        _finish_query(total, reld[off[i]:off[i + 1]], relp[off[i]:off[i + 1]], ks, expected, q0 + i,
                      ap_all, ap_exp, ksum, krel, relh)


@njit(parallel=True, cache=True)
def _scan_planes_kernel(queries, plan, starts, db, out, ks, nbins, expected):
    for b in prange(starts.shape[0] - 1):
        _scan_planes_block(queries, plan, db, out, starts[b], starts[b + 1], ks, nbins, expected)


@njit(parallel=True, cache=True)
def _scan_kernel(q, dbT, by_label, rstart, rcount, ks, nbins, expected, ap_all, ap_exp, ksum, krel, hist,
                 relh):
    nblk = (q.shape[0] + EVAL_QBLOCK - 1) // EVAL_QBLOCK
    for b in prange(nblk):
        q0, q1 = b * EVAL_QBLOCK, min(q.shape[0], (b + 1) * EVAL_QBLOCK)
        _scan_block(q, q0, q1, dbT, by_label, rstart, rcount, ks, nbins, expected, ap_all, ap_exp, ksum, krel,
                    hist, relh)


def all_ks(map_at_k_rel: Sequence[int], map_at_k: Sequence[int], precision_at_k: Sequence[int]) -> np.ndarray:
    ks = [int(k) for k in (*map_at_k_rel, *map_at_k, *precision_at_k)]
    bad = [k for k in ks if k < 1]
    if bad:
        raise CodesError(f"evaluate: every K must be >= 1, got {bad}")
    return np.array(sorted(set(ks)), np.int64)


class MissingLabelWarning(UserWarning):
    """Queries whose label never occurs in the database: they have no relevant item and score 0."""


def distinct_labels(labels: np.ndarray) -> np.ndarray:
    """np.unique(labels), in O(N) by a bincount when they are small non-negative class ids (the usual case)."""
    labels = np.asarray(labels)
    if labels.size and labels.dtype.kind in "iu" and 0 <= labels.min() and labels.max() < 1 << 20:
        return np.flatnonzero(np.bincount(labels)).astype(labels.dtype)
    return np.unique(labels)


def warn_missing_labels(query: Codes, label_values: np.ndarray, db_name: str = "") -> int:
    """Warn (once per call) when some query labels never occur in the database (its distinct `label_values`);
    returns how many queries."""
    missing = ~np.isin(query.labels, label_values)
    count = int(missing.sum())
    if count:
        labels = np.unique(query.labels[missing])
        shown = ", ".join(str(v) for v in labels[:10]) + (", ..." if len(labels) > 10 else "")
        warnings.warn(f"{query.source or 'query codes'}: {count} of {len(query)} queries have a label that never "
                      f"occurs in {db_name or 'the database'} (labels {shown}); they have no relevant item and "
                      f"score 0 in every metric. Use a database split that covers the query classes.",
                      MissingLabelWarning, stacklevel=3)
    return count


def per_query_stats(q_codes: np.ndarray, q_labels: np.ndarray, pdb: PreparedDb, ks: np.ndarray,
                    expected_ties: bool = False) -> dict[str, np.ndarray]:
    """Per-query raw values (AP, sums and counts at each K, per-distance histograms); `reduce_metrics`
    turns a query-ordered concatenation of these into the metrics. ks: sorted distinct K values. A pdb built
    for another layout (another CPU) has its planes rebuilt here first."""
    pdb = localised(pdb)
    nq, nb = q_codes.shape[0], pdb.bits + 1
    kk = np.minimum(ks, pdb.num_db)  # K larger than the database means all N
    pos = np.searchsorted(pdb.label_values, q_labels)
    found = (pos < len(pdb.label_values)) & (pdb.label_values[np.minimum(pos, len(pdb.label_values) - 1)]
                                             == q_labels)
    rstart = np.where(found, pdb.label_starts[np.minimum(pos, len(pdb.label_values) - 1)], 0)
    rcount = np.where(found, pdb.label_counts[np.minimum(pos, len(pdb.label_values) - 1)], 0)
    out = dict(ap_all=np.zeros(nq), ap_exp=np.zeros(nq), ksum=np.zeros((nq, len(ks))),
               krel=np.zeros((nq, len(ks)), np.int64), hist=np.zeros((nq, nb), np.int64),
               relhist=np.zeros((nq, nb), np.int64), num_rel=rcount.astype(np.int64))
    if nq and pdb.planes is not None:
        P = pdb.planes
        gchunk = max(1, PLANES_CHUNK_BYTES // (P.shape[1] * LANES * 8))
        plan = plan_queries(q_codes, pdb.bits, EVAL_PLANES_QBLOCK)
        o = plan.order
        run = {k: np.zeros_like(v) for k, v in out.items() if k != "num_rel"}  # in run order
        queries = (np.ascontiguousarray(q_codes[o]), np.bitwise_count(q_codes[o]).sum(axis=1).astype(np.int64),
                   rstart[o].astype(np.int64), rcount[o].astype(np.int64))
        db = (P, pdb.num_db, gchunk, pdb.by_label, pdb.grouped_codes)
        res = (run["ap_all"], run["ap_exp"], run["ksum"], run["krel"], run["hist"], run["relhist"])
        _scan_planes_kernel(queries, (plan.rows, plan.anchor, plan.anchors), plan.starts, db, res,
                            kk.astype(np.int64), nb, bool(expected_ties))
        for k, v in run.items():
            out[k][o] = v
    elif nq:
        _scan_kernel(np.ascontiguousarray(q_codes), pdb.dbT, pdb.by_label, rstart.astype(np.int64),
                     rcount.astype(np.int64), kk.astype(np.int64), nb, bool(expected_ties), out["ap_all"],
                     out["ap_exp"], out["ksum"], out["krel"], out["hist"], out["relhist"])
    return out


def concat_stats(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def reduce_metrics(stats: dict[str, np.ndarray], *, ks: np.ndarray, num_db: int, bits: int,
                   map_at_k_rel: Sequence[int], map_at_k: Sequence[int], precision_at_k: Sequence[int],
                   expected_ties: bool = False) -> dict[str, Any]:
    """Means over queries (in query order) of the per-query values: the single reduction both the
    in-process and the sharded evaluation use."""
    col = {int(k): t for t, k in enumerate(ks)}
    kk = np.minimum(ks, num_db).astype(np.float64)
    ksum, krel = stats["ksum"], stats["krel"]
    ap_rel = np.where(krel > 0, ksum / np.maximum(krel, 1), 0.0)
    ret, relret = np.cumsum(stats["hist"], axis=1), np.cumsum(stats["relhist"], axis=1)
    nrel = stats["num_rel"][:, None]
    precision = np.where(ret > 0, relret / np.maximum(ret, 1), 0.0)
    recall = np.where(nrel > 0, relret / np.maximum(nrel, 1), 0.0)
    out: dict[str, Any] = {
        "map_all": float(np.mean(stats["ap_all"])),
        "map_at_k_rel": {int(k): float(np.mean(ap_rel[:, col[int(k)]])) for k in map_at_k_rel},
        "map_at_k": {int(k): float(np.mean(ksum[:, col[int(k)]] / kk[col[int(k)]])) for k in map_at_k},
        "precision_at_k": {int(k): float(np.mean(krel[:, col[int(k)]] / kk[col[int(k)]]))
                           for k in precision_at_k},
        "pr_curve": {"radius": list(range(bits + 1)), "precision": np.mean(precision, axis=0).tolist(),
                     "recall": np.mean(recall, axis=0).tolist()},
        "num_queries": int(len(stats["ap_all"])), "num_db": int(num_db), "bits": int(bits),
        "pair_hist": pair_hist(stats),
    }
    if expected_ties:
        out["map_all_expected"] = float(np.mean(stats["ap_exp"]))
    return out


def pair_hist(stats: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """(query, database item) pairs per distance 0..bits, pooled over queries: same label and different label
    (eval/metrics/curves.py's PR counts), from the per-query histograms."""
    same = stats["relhist"].sum(axis=0)
    return {"same": same.tolist(), "diff": (stats["hist"].sum(axis=0) - same).tolist()}


def evaluate(query: Codes, db: Codes, *, map_at_k_rel: Sequence[int] = MAP_AT_K_REL,
             map_at_k: Sequence[int] = MAP_AT_K, precision_at_k: Sequence[int] = PRECISION_AT_K,
             expected_ties: bool = False, progress: bool = False, method: str = "auto") -> dict[str, Any]:
    """All metrics of `query` against `db` (see the module docstring), in this process (numba threads);
    method: the flat scan, prepare_db's (the same numbers either way)."""
    check_query_db(query, db)
    ks = all_ks(map_at_k_rel, map_at_k, precision_at_k)
    pdb = prepare_db(db, method=method)
    warn_missing_labels(query, pdb.label_values, db.source)
    step = PROGRESS_STEP if progress else len(query)
    # steps of clustered queries (eval/kernels/planes_select.py: a cluster's queries share their anchor's counts)
    order = cluster_order(query.codes, pdb.bits)[1] if pdb.planes is not None else np.arange(len(query))
    codes, labels = query.codes[order], query.labels[order]
    parts = [per_query_stats(codes[a:a + step], labels[a:a + step], pdb, ks, expected_ties)
             for a in tqdm(range(0, len(query), step), desc="eval", unit="block", disable=not progress)]
    stats = {}
    for k, v in concat_stats(parts).items():
        stats[k] = np.empty_like(v)
        stats[k][order] = v  # back in query order: the reduction's float sums are order-dependent
    return reduce_metrics(stats, ks=ks, num_db=pdb.num_db, bits=pdb.bits,
                          map_at_k_rel=map_at_k_rel, map_at_k=map_at_k, precision_at_k=precision_at_k,
                          expected_ties=expected_ties)


def write_json(path: str, obj: Any) -> str:
    """Atomic JSON (temp file + rename): a crash never leaves a partial metrics file."""
    text = json.dumps(obj, indent=1)
    atomic_write_text(path, text)
    return str(path)
