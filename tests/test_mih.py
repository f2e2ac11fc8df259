"""Multi-index hashing and the MIH/flat chooser return exactly the flat scan's answer: k-NN and radius
queries, ties by database index, on random, clustered and tie-heavy codes at several widths (48 and 96
bits included), k up to beyond the database.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_mih.py
"""
from __future__ import annotations

import numpy as np
import pytest

from c3dhash.eval.codes import CodesError, pack_bits, unpack_bits
from c3dhash.eval.search.mih import build_tables, default_m, mih_knn
from c3dhash.eval.search.searcher import Searcher, radius_search, topk
from c3dhash.eval.kernels.planes import MAX_BITS
from code_helpers import clustered_bits, reference_distances


def codes(kind: str, n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        b = rng.integers(0, 2, (n, bits)).astype(bool)
    else:  # "clustered": 20 centres, 5% flips; "ties": 4 centres, 1% flips and exact duplicates
        b, _ = clustered_bits(n, bits, rng, centres=20, flip=0.05) if kind == "clustered" else \
            clustered_bits(n, bits, rng, centres=4, flip=0.01)
        if kind == "ties":
            b[10:60] = b[3]
    return pack_bits(b)


def reference(q: np.ndarray, db: np.ndarray, bits: int) -> np.ndarray:
    return reference_distances(unpack_bits(q, bits), unpack_bits(db, bits))


CASES = [(kind, bits) for kind in ("uniform", "clustered", "ties") for bits in (16, 48, 64, 96, 130)]


@pytest.mark.parametrize("kind, bits", CASES)
def test_knn_equals_the_stable_ranking(kind, bits):
    rng = np.random.default_rng(bits + len(kind))
    n = 1200
    db = codes(kind, n, bits, rng)
    q = np.concatenate([codes(kind, 12, bits, rng), db[[3, 500]]])  # exact hits too
    d = reference(q, db, bits)
    order = np.argsort(d, axis=1, kind="stable")
    s = Searcher(db, bits)
    for k in (1, 10, 100, n, n + 5):
        kk = min(k, n)
        for method in ("mih", "bitsliced", "words", "auto"):
            idx, dist = s.knn(q, k, method=method)
            np.testing.assert_array_equal(idx, order[:, :kk], err_msg=f"{method} k={k}")
            np.testing.assert_array_equal(dist, np.take_along_axis(d, order[:, :kk], 1))
    # the flat scans went through the bit-sliced filter where it applies (codes of up to MAX_BITS)
    assert (s._planes is not None) == (bits <= MAX_BITS)


@pytest.mark.parametrize("kind, bits", CASES)
def test_radius_equals_the_flat_scan(kind, bits):
    rng = np.random.default_rng(7 * bits + len(kind))
    db = codes(kind, 900, bits, rng)
    q = np.concatenate([codes(kind, 8, bits, rng), db[[10]]])
    d = reference(q, db, bits)
    s = Searcher(db, bits)
    for r in (0, 1, 2, 5, bits // 3, bits):
        off, idx, dist = radius_search(q, db, r)
        for i in range(len(q)):
            hit = np.flatnonzero(d[i] <= r)
            want = hit[np.argsort(d[i, hit], kind="stable")]
            np.testing.assert_array_equal(idx[off[i]:off[i + 1]], want)
            np.testing.assert_array_equal(dist[off[i]:off[i + 1]], d[i, want])
        got = s.radius(q, r, method="mih")
        for a, b in zip(got, (off, idx, dist)):
            np.testing.assert_array_equal(a, b, err_msg=f"r={r}")


@pytest.mark.parametrize("m", [2, 3, 7])
def test_any_table_count_and_sparse_tables(monkeypatch, m):
    """Other m than the default, and tables too large for dense offsets (binary search over sorted keys)."""
    import c3dhash.eval.search.mih as mih
    monkeypatch.setattr(mih, "DENSE_FACTOR", 0)
    rng = np.random.default_rng(m)
    db, q = codes("clustered", 700, 40, rng), codes("clustered", 9, 40, rng)
    t = build_tables(db, 40, m)
    assert t.m == m and not t.dense.any() and t.length.sum() == 40
    idx, dist, ok, _ = mih_knn(t, q, 25)
    ref_i, ref_d = topk(q, db, 25)
    assert ok.all()
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(dist, ref_d)


def test_budget_gives_up_and_auto_falls_back(monkeypatch):
    """Uniform 64-bit codes: the 10th neighbour is far, MIH gives up within a budget of N units and the
    chooser answers with the flat scan; the answer is the same."""
    import c3dhash.eval.search.searcher as nearest
    monkeypatch.setattr(nearest, "MIN_MIH_N", 0)
    monkeypatch.setattr(nearest, "BUILD_COST", 0.0)
    rng = np.random.default_rng(0)
    db, q = codes("uniform", 3000, 64, rng), codes("uniform", 40, 64, rng)
    t = build_tables(db, 64)
    _, _, ok, work = mih_knn(t, q, 10, budget=100.0)
    assert not ok.any() and (work > 100.0).all()
    s = Searcher(db, 64)
    idx, dist = s.knn(q, 10)
    assert s.last_plan == {"mih": 0, "flat": 40}
    ref = topk(q, db, 10)
    np.testing.assert_array_equal(idx, ref[0])
    np.testing.assert_array_equal(dist, ref[1])
    near = db[:40] ^ np.uint64(1)  # one bit from a database item: MIH answers
    s.knn(near, 1)
    assert s.last_plan == {"mih": 40, "flat": 0}


def test_default_m_and_bad_input():
    assert default_m(64, 10**6) == 3 and default_m(64, 10**7) == 3 and default_m(256, 10**6) == 13
    assert default_m(8, 10) == 2 and default_m(128, 2) >= 4  # substrings of at most 32 bits
    db = codes("uniform", 50, 64, np.random.default_rng(1))
    with pytest.raises(CodesError, match="m=70 tables for 64 bits"):
        build_tables(db, 64, 70)
    with pytest.raises(CodesError, match="method="):
        Searcher(db, 64).knn(db, 1, method="faiss")
    with pytest.raises(CodesError, match="uint64"):
        Searcher(db.astype(np.int64), 64)
    with pytest.raises(CodesError, match="1 words per code but the database has 2"):
        Searcher(np.zeros((4, 2), np.uint64), 128).knn(db, 1)
