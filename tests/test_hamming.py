"""Hamming search: distances and top-K against a brute-force stable-argsort reference, with heavy ties.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_hamming.py
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from c3dhash.eval.codes import Codes, CodesError, pack_bits
from c3dhash.eval.search.flat import hamming_distances, knn_bitsliced
from c3dhash.eval.search.searcher import topk
from c3dhash.eval.kernels.planes import COUNT_BITS, GROUP, LANES, ROW_DTYPE, bit_planes, count_at, planes_below, \
    planes_dist
from c3dhash.eval.kernels.planes_select import direct_row, relative_row, row_length
from c3dhash.eval.search.report import search
from code_helpers import clustered_bits, reference_distances


def tied_bits(n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Codes around 6 centres: many duplicates and equal distances."""
    return clustered_bits(n, bits, rng, centres=6, flip=0.05)[0]


# 8 bits: heavy ties; 65..320 bits exercise the 2-, 3-, 4- and 5-word kernels.
@pytest.mark.parametrize("bits", [8, 65, 128, 192, 256, 320])
def test_distances_match_bit_counting(bits):
    rng = np.random.default_rng(bits)
    qb, dbb = tied_bits(13, bits, rng), tied_bits(300, bits, rng)
    d = hamming_distances(pack_bits(qb), pack_bits(dbb))
    assert d.dtype == np.uint16
    np.testing.assert_array_equal(d, reference_distances(qb, dbb))


def topk_via(path: str, monkeypatch):
    """topk through one filter: method "words" (the word-major minimum), "bitsliced", or "auto" choosing it."""
    import c3dhash.eval.search.flat as hamming
    import c3dhash.eval.search.searcher as searcher
    if path == "word":
        monkeypatch.setattr(hamming, "_topk_planes_kernel", None)  # the bit-sliced filter must not run
        return lambda q, db, k: topk(q, db, k, method="words")
    monkeypatch.setattr(hamming, "_topk_kernel", None)  # the word-major scan must not run
    if path == "built":
        monkeypatch.setattr(searcher, "PLANES_MIN_QUERIES", 1)  # auto: a batch this size pays for the planes
        return topk
    return lambda q, db, k: topk(q, db, k, method="bitsliced")


# N = 2600 spans several 1024-item chunks and 256-item sub-blocks, with a partial last one.
@pytest.mark.parametrize("path", ["word", "planes", "built"])
@pytest.mark.parametrize("bits, n", [(8, 2600), (8, 37), (64, 2600), (128, 1500), (192, 300), (256, 2600),
                                     (320, 700), (320, 3)])
def test_topk_is_the_stable_ranking(bits, n, path, monkeypatch):
    topk = topk_via(path, monkeypatch)
    rng = np.random.default_rng(n + bits)
    qb, dbb = tied_bits(21, bits, rng), tied_bits(n, bits, rng)
    dbb[5:40] = dbb[min(4, n - 1)]  # exact duplicates: pure index-order ties
    qb[3] = dbb[min(4, n - 1)]
    ref_d = reference_distances(qb, dbb)
    order = np.argsort(ref_d, axis=1, kind="stable")
    q, db = pack_bits(qb), pack_bits(dbb)
    for k in (1, 10, 100, n - 1, n, n + 7):
        idx, dist = topk(q, db, k)
        kk = min(k, n)
        assert idx.shape == dist.shape == (21, kk) and idx.dtype == np.int64
        np.testing.assert_array_equal(idx, order[:, :kk])
        np.testing.assert_array_equal(dist, np.take_along_axis(ref_d, order[:, :kk], 1))


@njit
def _below_masks(P, sel, arow, lim):
    """planes_below over every group (anchor arow's distances counted first, for a relative row)."""
    A = np.zeros((P.shape[0], COUNT_BITS, LANES), np.uint64)
    for g in range(P.shape[0]):
        planes_dist(P, g, arow, A, g)
    out = np.zeros((P.shape[0], LANES), np.uint64)
    dist = np.full(P.shape[0] * GROUP, -1, np.int64)  # -1: group reported nothing below lim
    lt, cnt = np.empty(LANES, np.uint64), np.empty((COUNT_BITS, LANES), np.uint64)
    for g in range(P.shape[0]):
        if planes_below(P, g, sel, A, g, lim, lt, cnt):
            out[g] = lt
            for j in range(GROUP):
                dist[g * GROUP + j] = count_at(cnt, j // 64, j % 64)
    return out, dist


def _rows(qb: np.ndarray, words: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row, anchor row) per query: its direct row, then relative rows against anchors at distance 0, a few
    bits, half the bits and all the bits (planes_select's two kinds of row; the anchor's is direct)."""
    zero_plane, out = words * 64 + COUNT_BITS, []
    for qbits in qb.astype(np.uint8):
        direct = np.zeros(row_length(words), ROW_DTYPE)
        direct_row(direct, qbits, zero_plane)
        out.append((direct, direct))
        for flip in (0, 3, len(qbits) // 2, len(qbits)):
            m = qbits.copy()
            m[rng.choice(len(qbits), flip, replace=False)] ^= 1
            rel, arow = np.zeros(row_length(words), ROW_DTYPE), np.zeros(row_length(words), ROW_DTYPE)
            relative_row(rel, qbits, m, zero_plane)
            direct_row(arow, m, zero_plane)
            out.append((rel, arow))
    return out


@pytest.mark.parametrize("words", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 63, 256, 257, 513, 700])
def test_bit_planes_layout_and_filter(words, n):
    """P[g, b, l] bit t is bit b of item GROUP g + 64l + t (GROUP = 64 LANES: 256 on AVX2, 512 on AVX-512),
    then the items' popcounts, then a zero plane; planes_below marks exactly the items at distance < lim (every lim
    from 0 to bits + 1), the padding of the last group aside, and gives the distance of every item of each group it
    reports (and writes nothing for the others): with a query's direct row and with its rows relative to anchors
    near, halfway and opposite."""
    rng = np.random.default_rng(words * 1000 + n)
    bits = words * 64
    dbb, qb = tied_bits(n, bits, rng), tied_bits(3, bits, rng)
    qb[1], qb[2] = ~qb[0], False  # direct rows take the set bits of one, the clear bits of the other; none of 2
    db = pack_bits(dbb)
    P = bit_planes(db)
    assert P.shape == ((n + GROUP - 1) // GROUP, bits + COUNT_BITS + 1, LANES) and P.dtype == np.uint64
    unpacked = np.unpackbits(P.view(np.uint8), axis=-1, bitorder="little")  # [G, planes, GROUP]
    items = unpacked.transpose(0, 2, 1).reshape(-1, bits + COUNT_BITS + 1)
    np.testing.assert_array_equal(items[:n, :bits], dbb)
    popcounts = (items[:, bits:bits + COUNT_BITS].astype(int) << np.arange(COUNT_BITS)).sum(axis=1)
    np.testing.assert_array_equal(popcounts[:n], dbb.sum(axis=1))
    assert not items[n:, :bits + COUNT_BITS].any() and not items[:, -1].any()  # padding items, zero plane
    d = reference_distances(qb, dbb)
    rows = _rows(qb, words, rng)
    for r, (sel, arow) in enumerate(rows):
        i = r // (len(rows) // 3)
        for lim in sorted({0, 1, int(d[i].min()), int(d[i].min()) + 1, int(np.median(d[i])), bits, bits + 1}):
            lt, dist = _below_masks(P, sel, arow, lim)
            got = np.unpackbits(lt.view(np.uint8), bitorder="little").astype(bool)[:n]
            np.testing.assert_array_equal(got, d[i] < lim)
            padded = np.full(P.shape[0] * GROUP, qb[i].sum())  # padding items: zero codes
            padded[:n] = d[i]
            reported = np.repeat((padded < lim).reshape(-1, GROUP).any(axis=1), GROUP)[:n]
            np.testing.assert_array_equal(dist[:n][reported], d[i][reported])
            assert (dist[:n][~reported] == -1).all()


def test_planes_must_match_the_database():
    q, db = np.zeros((2, 1), np.uint64), np.zeros((1100, 1), np.uint64)  # 3 groups of 512 or 5 of 256
    with pytest.raises(CodesError, match="planes must be bit_planes"):
        knn_bitsliced(q, bit_planes(db[:10]), len(db), 3)


@pytest.mark.parametrize("budget", [0, 1 << 40])
def test_both_cpu_topk_paths(monkeypatch, budget):
    """The bucket scan (small K) and the counting sort (large K) give the same stable ranking."""
    import c3dhash.eval.search.flat as hamming
    monkeypatch.setattr(hamming, "TOPK_BUCKET_BYTES", budget)
    rng = np.random.default_rng(1)
    qb, dbb = tied_bits(9, 64, rng), tied_bits(3000, 64, rng)
    ref_d = reference_distances(qb, dbb)
    order = np.argsort(ref_d, axis=1, kind="stable")
    for k in (5, 1000, 3000):
        idx, dist = topk(pack_bits(qb), pack_bits(dbb), k)
        np.testing.assert_array_equal(idx, order[:, :k])
        np.testing.assert_array_equal(dist, np.take_along_axis(ref_d, order[:, :k], 1))


@pytest.mark.parametrize("bits", [8, 130, 256])
def test_torch_path_equals_numba(bits):
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    q, db = pack_bits(tied_bits(17, bits, rng)), pack_bits(tied_bits(900, bits, rng))
    for k in (1, 50, 900, 1000):
        i_nb, d_nb = topk(q, db, k, method="words")
        i_t, d_t = topk(q, db, k, method="torch")
        np.testing.assert_array_equal(i_t, i_nb)
        np.testing.assert_array_equal(d_t, d_nb)


def test_torch_path_handles_high_bit_words():
    """Words with bit 63 set are negative as int64: the SWAR popcount must still count 64 bits."""
    pytest.importorskip("torch")
    q = np.array([[0xFFFFFFFFFFFFFFFF], [0x8000000000000001]], np.uint64)
    db = np.array([[0], [0xFFFFFFFFFFFFFFFF], [0x8000000000000000]], np.uint64)
    expected = reference_distances(np.unpackbits(q.view(np.uint8), axis=1),
                                   np.unpackbits(db.view(np.uint8), axis=1))
    _, d = topk(q, db, 3, method="torch")
    np.testing.assert_array_equal(np.sort(d, axis=1), np.sort(expected, axis=1))
    np.testing.assert_array_equal(hamming_distances(q, db), expected)


def test_bad_inputs_raise_codes_errors():
    q, db = np.zeros((2, 1), np.uint64), np.zeros((5, 2), np.uint64)
    with pytest.raises(CodesError, match="1 words per code but the database has 2"):
        topk(q, db, 3)
    with pytest.raises(CodesError, match="database is empty"):
        topk(q, np.zeros((0, 1), np.uint64), 3)
    with pytest.raises(CodesError, match="k must be a positive integer"):
        topk(q, q, 0)
    with pytest.raises(CodesError, match="uint64"):
        hamming_distances(q.astype(np.int64), q)
    with pytest.raises(CodesError, match="method='faiss'; choose one of auto, bitsliced, words, mih, torch"):
        topk(q, q, 1, method="faiss")


def test_search_returns_ids_and_distances():
    rng = np.random.default_rng(3)
    dbb = tied_bits(50, 16, rng)
    db = Codes(pack_bits(dbb), 16, rng.integers(0, 3, 50), [f"v{i}" for i in range(50)])
    q = Codes(pack_bits(dbb[[7, 9]]), 16, [1, 2], ["qa", "qb"])
    res = search(q, db, 60)
    assert res["k"] == 50 and res["num_db"] == 50 and len(res["queries"]) == 2
    first = res["queries"][0]
    assert first["id"] == "qa" and first["label"] == 1
    ref = reference_distances(dbb[[7]], dbb)[0]
    order = np.argsort(ref, kind="stable")
    assert first["results"] == [[int(j), f"v{j}", int(ref[j])] for j in order]
