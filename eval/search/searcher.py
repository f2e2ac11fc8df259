"""The one search engine: exact Hamming k-NN and radius search over one database, every front door through it.

    s = Searcher(db.codes, db.bits)               # layouts and MIH tables are built on first use, then kept
    idx, dist = s.knn(q.codes, 10)                # ties by database index, whatever the method
    offsets, idx, dist = s.radius(q.codes, 3)     # CSR, (distance, index) order
    s.last_plan                                   # {"mih": queries answered by MIH, "flat": by a flat scan}
    idx, dist = topk(q.codes, db.codes, 10)       # a one-off Searcher (auto: no layout built for few queries)

One vocabulary, `method` (METHODS), for topk, radius_search, Searcher, the sharded index, `c3dhash search`,
`show` and (its flat scans only) evaluate:
  bitsliced  the bit-sliced filter over this process's bit-planes (eval/kernels/planes.py; up to MAX_BITS)
  words      the word-major popcount scan (any width)
  mih        multi-index hashing (eval/search/mih.py); a query past its budget falls back to the flat scan
  torch      the torch path (CUDA when available, else CPU tensors); k-NN only
  auto       MIH or the flat scan by the cost model below; the flat scan is bitsliced up to MAX_BITS when its
             planes are (or will be) reused, else words. Never torch (ask for it).
Results are identical across methods (==, ties included); the choice is speed only.

A Searcher records the layout (kernels/isa.py's Layout) its bit-planes were built for; a Searcher that crosses
a process boundary (pickled into a Ray task or actor on another CPU) rebuilds them on first use there, never
reading planes of another lane width.

MIH or flat ("auto"): the flat scan costs about N units (one unit = one database item scanned) per query,
whatever the data. MIH's cost grows with the distance to the k-th neighbour (or the radius). So "auto" answers
a sample of SAMPLE queries with MIH, each allowed at most N units; if their mean cost (a query that gave up
counts its wasted work plus a flat scan) is below N, the rest use MIH too, each still falling back to the flat
scan past N units; else the flat scan answers the rest. Small databases (N < MIN_MIH_N), and calls with too
few queries to pay for building the tables, take the flat scan directly. Unit costs: kernels/isa.py.
"""
from __future__ import annotations

import numpy as np

from c3dhash.eval.codes import CodesError, check_pair, num_words
from c3dhash.eval.kernels.isa import LAYOUT, Layout
from c3dhash.eval.kernels.planes import MAX_BITS, bit_planes
from c3dhash.eval.search.flat import PLANES_MIN_QUERIES, knn_bitsliced, knn_torch, knn_words, needs_counting, \
    radius_words, word_major

METHODS = ("auto", "bitsliced", "words", "mih", "torch")
SCANS = ("auto", "bitsliced", "words")  # the methods that scan every item (what evaluate takes)
SAMPLE = 16  # queries MIH answers before "auto" decides for the rest
MIN_MIH_N = 1 << 14  # below this the flat scan takes microseconds anyway
BUILD_COST = 4.0  # building costs about BUILD_COST units per item and table (counting sort)


def check_method(method: str, allowed: tuple[str, ...] = METHODS, where: str = "search") -> str:
    if method not in allowed:
        raise CodesError(f"{where}: method={method!r}; choose one of {', '.join(allowed)}")
    return method


def flat_scan(method: str, bits: int, *, reuse: bool, nq: int = 0, where: str = "search") -> str:
    """The flat scan ("bitsliced" or "words") that `method` means for codes of `bits`: auto takes the bit-sliced
    one up to MAX_BITS when its planes are reused (a Searcher, a prepared database) or the batch is large enough
    to pay for building them (PLANES_MIN_QUERIES)."""
    if method == "bitsliced" and bits > MAX_BITS:
        raise CodesError(f"{where}: method='bitsliced' takes codes of at most {MAX_BITS} bits, got {bits}; "
                         f"use method='words' or 'auto'")
    if method in ("bitsliced", "words"):
        return method
    return "bitsliced" if bits <= MAX_BITS and (reuse or nq >= PLANES_MIN_QUERIES) else "words"


class Searcher:
    """One database of uint64 [N, W] codes with `bits` bits; its layouts (word-major, bit-planes) and MIH tables
    are built lazily and kept. reuse=False (one-off calls: topk, radius_search) builds no bit-planes for
    batches too small to pay for them."""

    def __init__(self, codes: np.ndarray, bits: int, *, m: int | None = None, reuse: bool = True) -> None:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype != np.uint64 or codes.shape[1] != num_words(bits):
            raise CodesError(f"Searcher: codes must be uint64 [N, {num_words(bits)}] for {bits} bits, got "
                             f"{codes.dtype} {list(codes.shape)}")
        _, self.codes = check_pair(codes[:0], codes, "Searcher")
        self.bits, self.m, self.reuse = int(bits), m, reuse
        self._tables = None
        self._dbT: np.ndarray | None = None
        self._planes: np.ndarray | None = None
        self._planes_layout: Layout | None = None  # the layout self._planes were built for
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
        """This process's bit-planes (up to MAX_BITS, else None): rebuilt when those held were built for another
        layout (a Searcher unpickled on a CPU of another lane width)."""
        if self.bits > MAX_BITS:
            return None
        if self._planes is None or self._planes_layout != LAYOUT:
            self._planes, self._planes_layout = bit_planes(self.codes), LAYOUT
        return self._planes

    def _flat_knn(self, q: np.ndarray, kk: int, scan: str) -> tuple[np.ndarray, np.ndarray]:
        if scan == "bitsliced" and not needs_counting(q.shape[1], kk):
            return knn_bitsliced(q, self.planes(), self.num_db, kk)
        return knn_words(q, self.dbT(), kk)  # a large k: the counting sort, whichever scan was asked

    def _mih_or_flat(self, method: str, nq: int) -> str:
        """'mih', 'flat' or 'sample' (auto: let a sample decide)."""
        if method == "mih":
            return "mih"
        if method != "auto" or self.num_db < MIN_MIH_N:
            return "flat"
        if self._tables is None:
            from c3dhash.eval.search.mih import default_m
            m = self.m or default_m(self.bits, self.num_db)
            if nq * self.num_db < 2 * BUILD_COST * m * self.num_db:
                return "flat"
        return "sample"

    def knn(self, q: np.ndarray, k: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items per query, ties by index: (idx int64, dist int32), each [Q, min(k, N)]."""
        check_method(method)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise CodesError(f"search: k must be a positive integer, got {k!r}")
        q, _ = check_pair(q, self.codes, "search")
        kk = min(int(k), self.num_db)
        if method == "torch":
            self.last_plan = {"mih": 0, "flat": q.shape[0]}
            return knn_torch(q, self.codes, kk)
        scan = flat_scan(method, self.bits, reuse=self.reuse, nq=q.shape[0])
        how = self._mih_or_flat(method, q.shape[0])
        if how == "flat":
            self.last_plan = {"mih": 0, "flat": q.shape[0]}
            return self._flat_knn(q, kk, scan)
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
            idx[bad], dist[bad] = self._flat_knn(q[bad], kk, scan)
        self.last_plan = {"mih": int(q.shape[0] - len(bad)), "flat": int(len(bad))}
        return idx, dist

    def radius(self, q: np.ndarray, r: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Items within distance r per query by (distance, index), CSR: (offsets [Q + 1], idx, dist). The flat
        radius scan is word-major: method 'bitsliced' is accepted and runs it; 'torch' is refused."""
        check_method(method, ("auto", "bitsliced", "words", "mih"), "radius search")
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
            raise CodesError(f"search: radius must be a non-negative integer, got {r!r}")
        q, _ = check_pair(q, self.codes, "search")
        how = self._mih_or_flat(method, q.shape[0])
        if how == "flat":
            self.last_plan = {"mih": 0, "flat": q.shape[0]}
            return radius_words(q, self.dbT(), r)
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
            off, i2, d2 = radius_words(q[bad], self.dbT(), r)
            for t, b in enumerate(bad):
                parts[b] = (i2[off[t]:off[t + 1]], d2[off[t]:off[t + 1]])
        self.last_plan = {"mih": int(q.shape[0] - len(bad)), "flat": int(len(bad))}
        return _csr(parts, q.shape[0])


def _csr(parts: list, nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = np.zeros(nq + 1, np.int64)
    np.cumsum([len(p[0]) for p in parts], out=offsets[1:])
    if not parts:
        return offsets, np.zeros(0, np.int64), np.zeros(0, np.int32)
    return (offsets, np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.int32))


def _mih_pays(ok: np.ndarray, work: np.ndarray, n: float) -> bool:
    """Mean MIH cost of the sample (a query that gave up paid its work and then a flat scan) below a scan."""
    return bool(np.where(ok, work, work + n).mean() < n)


def _one_off(db_codes: np.ndarray, where: str) -> Searcher:
    db = np.asarray(db_codes)
    if db.ndim != 2:
        raise CodesError(f"{where}: database codes must be uint64 [N, W], got {list(db.shape)}")
    return Searcher(db, db.shape[1] * 64, reuse=False)


def topk(q_codes: np.ndarray, db_codes: np.ndarray, k: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database items per query, ties by database index: (indices int64, distances int32),
    each [Q, min(k, N)] (a one-off Searcher; search one database often: keep a Searcher)."""
    check_method(method, where="topk")
    return _one_off(db_codes, "topk").knn(q_codes, k, method=method)


def radius_search(q_codes: np.ndarray, db_codes: np.ndarray, r: int, *,
                  method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every database item within Hamming distance r of each query, ordered by (distance, index): CSR
    (offsets int64 [Q + 1], indices int64 [M], distances int32 [M]); query i's are indices[offsets[i]:offsets[i+1]]."""
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise CodesError(f"radius_search: r must be a non-negative integer, got {r!r}")
    return _one_off(db_codes, "radius_search").radius(q_codes, r, method=method)
