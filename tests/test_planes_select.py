"""Query plans for the bit-sliced kernels: clusters, blocks, anchors, and the same answers as without them.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_planes_select.py
"""
from __future__ import annotations

import numpy as np
import pytest

from c3dhash.eval.codes import Codes, pack_bits
from c3dhash.eval.search.searcher import topk
from c3dhash.eval.metrics.exact import evaluate
from c3dhash.eval.kernels.planes_select import cluster_order, plan_queries
from code_helpers import clustered_bits

QBLOCK = 8


def clustered(n: int, bits: int, rng: np.random.Generator, centres: int, flip: float) -> tuple[np.ndarray, np.ndarray]:
    """Packed codes around a few centres and their centre labels."""
    b, labels = clustered_bits(n, bits, rng, centres=centres, flip=flip)
    return pack_bits(b), labels


@pytest.mark.parametrize("bits", [48, 96, 128, 256])
def test_plan_blocks_and_anchors(bits):
    """The run order is a permutation; blocks cover it in order, at most QBLOCK queries each; an anchor's
    queries sit together inside one block; on clustered queries most rows are relative, each counting fewer
    planes than the query's direct row would."""
    rng = np.random.default_rng(bits)
    q, _ = clustered(90, bits, rng, centres=4, flip=0.05)
    plan = plan_queries(q, bits, QBLOCK)
    nq = len(q)
    np.testing.assert_array_equal(np.sort(plan.order), np.arange(nq))
    sizes = np.diff(plan.starts)
    assert plan.starts[0] == 0 and plan.starts[-1] == nq and (sizes > 0).all() and (sizes <= QBLOCK).all()
    block = np.searchsorted(plan.starts, np.arange(nq), side="right") - 1
    for a in range(len(plan.anchors)):
        pos = np.flatnonzero(plan.anchor == a)
        assert len(np.unique(block[pos])) == 1
        assert not np.isin(plan.anchor[pos.min():pos.max() + 1], [-1, a], invert=True).any()  # none between
    relative = plan.anchor >= 0
    assert relative.mean() > 0.5 and (plan.rows[relative, 4] == 1).all() and (plan.rows[~relative, 4] == 0).all()
    direct = plan_queries(q, bits, 1)  # blocks of one query: no anchor pays, every row direct
    assert len(direct.anchors) == 0 and (direct.rows[:, 4] == 0).all()
    counted = plan.rows[:, 0] + 8 * plan.rows[:, 2]
    order_direct = {int(i): k for k, i in enumerate(direct.order)}
    direct_counted = np.array([direct.rows[order_direct[int(i)], 0] + 8 * direct.rows[order_direct[int(i)], 2]
                               for i in plan.order])
    assert (counted[relative] < direct_counted[relative]).all()


def test_cluster_order_keeps_query_order_inside_a_cluster():
    rng = np.random.default_rng(0)
    q, labels = clustered(60, 128, rng, centres=3, flip=0.03)
    key, order = cluster_order(q, 128)
    run = key[order]
    firsts = [order[run == k].min() for k in dict.fromkeys(run)]  # clusters in run order
    assert firsts == sorted(firsts)  # in the order of their first query
    for k in np.unique(key):
        assert (np.diff(order[run == k]) > 0).all()  # query order inside
    assert len(np.unique(key)) <= 6  # three tight centres: a cluster each (a stray query may lead its own)
    for c in range(3):
        assert len(np.unique(key[labels == c])) == 1


@pytest.mark.parametrize("bits", [64, 96, 256])
def test_planned_search_and_metrics_equal_references(bits):
    """topk and evaluate with anchored plans (clustered queries) give the brute-force top-K, ties by index,
    and the same metrics as the word-major scan (no plan) to the last bit."""
    rng = np.random.default_rng(bits + 1)
    db, dl = clustered(3000, bits, rng, centres=5, flip=0.08)
    q, ql = clustered(300, bits, rng, centres=5, flip=0.08)
    assert (plan_queries(q, bits, 32).anchor >= 0).mean() > 0.5
    idx, dist = topk(q, db, 20, method="bitsliced")
    d = np.bitwise_count(q[:, None, :] ^ db[None]).sum(-1)
    ref = np.argsort(d, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(dist, np.take_along_axis(d, ref, 1))
    names = np.zeros(len(db), "U1")
    query, base = Codes(q, bits, ql, np.zeros(len(q), "U1")), Codes(db, bits, dl, names)
    planes = evaluate(query, base, method="bitsliced", progress=True)
    words = evaluate(query, base, method="words")
    assert planes == words
