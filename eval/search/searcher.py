"""Exact Hamming k-NN and radius search over one database, choosing multi-index hashing or the flat scan.

    s = Searcher(db.codes, db.bits)               # MIH tables are built on first use (eval/search/mih.py)
    idx, dist = s.knn(q.codes, 10)                # == eval.hamming.topk(q.codes, db.codes, 10), ties included
    offsets, idx, dist = s.radius(q.codes, 3)     # == eval.hamming.radius_search(q.codes, db.codes, 3)
    s.last_plan                                   # {"mih": queries answered by MIH, "flat": by the flat scan}

method="auto" (default) decides per call. The flat scan costs about N units (one unit = one database item
scanned) per query, whatever the data. MIH's cost grows with the distance to the k-th neighbour (or the
radius): combinatorially many substring values must be probed. It wins when near neighbours are near
(trained codes: many items within a few bits), on large databases, and for small k; it loses on uniform
random codes (the k-th neighbour of a 64-bit code among 1e6 sits at ~15 bits), long codes (the same
relative radius is many more bits) and large k. So "auto" answers a sample of SAMPLE queries with MIH, each
allowed at most N units; if their mean cost (a query that gave up counts its wasted work plus a flat scan)
is below N, the rest use MIH too, each still falling back to the flat scan past N units; else the flat scan
answers the rest. Small databases (N < MIN_MIH_N), and one-off calls with too few queries to pay for building
the tables, take the flat scan directly. method="mih" or "flat" forces one (results are identical).
"""
from __future__ import annotations

import numpy as np

from c3dhash.eval.codes import CodesError, check_pair, num_words
from c3dhash.eval.search.flat import radius_search, topk, word_major
from c3dhash.eval.kernels.planes import MAX_BITS, bit_planes

METHODS = ("auto", "mih", "flat")
SAMPLE = 16  # queries MIH answers before "auto" decides for the rest
MIN_MIH_N = 1 << 14  # below this the flat scan takes microseconds anyway
BUILD_COST = 4.0  # building costs about BUILD_COST units per item and table (counting sort)


class Searcher:
    """One database of uint64 [N, W] codes with `bits` bits; MIH tables and the word-major copy are built
    lazily and kept for later calls."""

    def __init__(self, codes: np.ndarray, bits: int, *, m: int | None = None) -> None:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype != np.uint64 or codes.shape[1] != num_words(bits):
            raise CodesError(f"Searcher: codes must be uint64 [N, {num_words(bits)}] for {bits} bits, got "
                             f"{codes.dtype} {list(codes.shape)}")
        _, self.codes = check_pair(codes[:0], codes, "Searcher")
        self.bits, self.m = int(bits), m
        self._tables = None
        self._dbT: np.ndarray | None = None
        self._planes: np.ndarray | None = None
        self.last_plan: dict[str, int] = {}

    @property
    def num_db(self) -> int:
        return int(self.codes.shape[0])

    def tables(self):
        if self._tables is None:
            from c3dhash.eval.search.mih import build_tables
            self._tables = build_tables(self.codes, self.bits, self.m)
        return self._tables

    def dbT(self) -> np.ndarray:
        if self._dbT is None:
            self._dbT = word_major(self.codes)
        return self._dbT

    def planes(self) -> np.ndarray | None:
        """The bit-sliced layout of kernels/planes.py where topk's faster filter applies (up to MAX_BITS), else None."""
        if self._planes is None and self.bits <= MAX_BITS:
            self._planes = bit_planes(self.codes)
        return self._planes

    def _method(self, method: str, nq: int) -> str:
        if method not in METHODS:
            raise CodesError(f"search: method={method!r}; choose one of {', '.join(METHODS)}")
        if method != "auto":
            return method
        if self.num_db < MIN_MIH_N:
            return "flat"
        if self._tables is None:
            from c3dhash.eval.search.mih import default_m
            m = self.m or default_m(self.bits, self.num_db)
            if nq * self.num_db < 2 * BUILD_COST * m * self.num_db:
                return "flat"
        return "auto"

    def knn(self, q: np.ndarray, k: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items per query, ties by index: (idx int64, dist int32), each [Q, min(k, N)]."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise CodesError(f"search: k must be a positive integer, got {k!r}")
        q, _ = check_pair(q, self.codes, "search")
        kk, how = min(int(k), self.num_db), self._method(method, q.shape[0])
        if how == "flat":
            self.last_plan = {"mih": 0, "flat": q.shape[0]}
            return topk(q, self.codes, kk, dbT=self.dbT(), planes=self.planes())
        from c3dhash.eval.search.mih import mih_knn
        n, tables = float(self.num_db), self.tables()
        if how == "mih":
            idx, dist, ok, _ = mih_knn(tables, q, kk)
        else:
            head = min(SAMPLE, q.shape[0])
            idx, dist, ok, work = mih_knn(tables, q[:head], kk, budget=n)
            rest = q[head:]
            if _mih_pays(ok, work, n):
                i2, d2, ok2, _ = mih_knn(tables, rest, kk, budget=n)
            else:  # MIH loses on these data: the flat scan answers the rest (below, with the given-up ones)
                i2, d2 = np.zeros((len(rest), kk), np.int64), np.zeros((len(rest), kk), np.int32)
                ok2 = np.zeros(len(rest), np.bool_)
            idx, dist, ok = np.concatenate([idx, i2]), np.concatenate([dist, d2]), np.concatenate([ok, ok2])
        bad = np.flatnonzero(~ok)
        if len(bad):
            idx[bad], dist[bad] = topk(q[bad], self.codes, kk, dbT=self.dbT(), planes=self.planes())
        self.last_plan = {"mih": int(q.shape[0] - len(bad)), "flat": int(len(bad))}
        return idx, dist

    def radius(self, q: np.ndarray, r: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Items within distance r per query by (distance, index), CSR: (offsets [Q + 1], idx, dist)."""
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
            raise CodesError(f"search: radius must be a non-negative integer, got {r!r}")
        q, _ = check_pair(q, self.codes, "search")
        how = self._method(method, q.shape[0])
        if how == "flat":
            self.last_plan = {"mih": 0, "flat": q.shape[0]}
            return radius_search(q, self.codes, r, dbT=self.dbT())
        from c3dhash.eval.search.mih import mih_radius
        n, tables = float(self.num_db), self.tables()
        if how == "mih":
            parts, ok = mih_radius(tables, q, r)
        else:
            head = min(SAMPLE, q.shape[0])
            parts, ok, work = mih_radius(tables, q[:head], r, budget=n, with_work=True)
            if _mih_pays(ok, work, n):
                p2, ok2 = mih_radius(tables, q[head:], r, budget=n)
            else:
                p2, ok2 = [(np.zeros(0, np.int64), np.zeros(0, np.int32))] * (q.shape[0] - head), \
                    np.zeros(q.shape[0] - head, np.bool_)
            parts, ok = parts + p2, np.concatenate([ok, ok2])
        bad = np.flatnonzero(~ok)
        if len(bad):
            off, i2, d2 = radius_search(q[bad], self.codes, r, dbT=self.dbT())
            for t, b in enumerate(bad):
                parts[b] = (i2[off[t]:off[t + 1]], d2[off[t]:off[t + 1]])
        self.last_plan = {"mih": int(q.shape[0] - len(bad)), "flat": int(len(bad))}
        offsets = np.zeros(q.shape[0] + 1, np.int64)
        np.cumsum([len(p[0]) for p in parts], out=offsets[1:])
        if not parts:
            return offsets, np.zeros(0, np.int64), np.zeros(0, np.int32)
        return (offsets, np.concatenate([p[0] for p in parts]).astype(np.int64),
                np.concatenate([p[1] for p in parts]).astype(np.int32))


def _mih_pays(ok: np.ndarray, work: np.ndarray, n: float) -> bool:
    """Mean MIH cost of the sample (a query that gave up paid its work and then a flat scan) below a scan."""
    return bool(np.where(ok, work, work + n).mean() < n)
