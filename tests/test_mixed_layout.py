"""Layouts that travel: a prepared database (bit-planes of 8 lanes on AVX-512 with VPOPCNTQ, 4 elsewhere) is never
read by a process of another lane width. On a Ray cluster whose workers compile for another CPU than the driver
(runtime_env NUMBA_CPU_NAME/NUMBA_CPU_FEATURES: 4-lane workers under an 8-lane driver), sharded evaluation, the
sharded index and a Searcher shipped to a task give results equal (==) to this process's. Before layouts were
recorded, the sharded evaluation scored mAP@all 0.110 against 0.836 there, with exit 0. The unit tests below
feed a foreign layout record directly and run on any host.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_mixed_layout.py
"""
from __future__ import annotations

import numpy as np
import pytest

from c3dhash.eval.codes import Codes, pack_bits
from c3dhash.eval.kernels.isa import LANES, LAYOUT, TARGET_FEATURES, Layout, host_features
from c3dhash.eval.metrics.exact import all_ks, evaluate, per_query_stats, prepare_db
from c3dhash.eval.search.searcher import Searcher

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::c3dhash.eval.metrics.exact.MissingLabelWarning")  # label 6
FOREIGN = Layout(4, 256) if LANES == 8 else Layout(8, 512)
KW = dict(map_at_k_rel=(5, 100), map_at_k=(5, 50), precision_at_k=(10,), expected_ties=True)


def data(bits: int, n: int = 3000, nq: int = 40, seed: int = 0) -> tuple[Codes, Codes]:
    rng = np.random.default_rng(seed + bits)
    protos = rng.integers(0, 2, (6, bits)).astype(bool)
    dl, ql = rng.integers(0, 6, n), rng.integers(0, 7, nq)  # label 6: queries with no relevant item
    dbb = protos[dl] ^ (rng.random((n, bits)) < 0.15)
    dbb[100:400] = dbb[7]  # exact duplicates: ties by index across groups
    qb = protos[ql % 6] ^ (rng.random((nq, bits)) < 0.15)
    return (Codes(pack_bits(qb), bits, ql, [f"q{i}" for i in range(nq)]),
            Codes(pack_bits(dbb), bits, dl, [f"d{i}" for i in range(n)]))


def test_foreign_prepared_db_is_rebuilt_not_read():
    q, db = data(130)
    pdb = prepare_db(db, method="bitsliced")
    assert pdb.layout == LAYOUT
    ks = all_ks(KW["map_at_k_rel"], KW["map_at_k"], KW["precision_at_k"])
    want = per_query_stats(q.codes, q.labels, pdb, ks, True)
    # the record says another CPU built these planes (their contents: garbage to this process)
    foreign = type(pdb)(**{**pdb.__dict__, "layout": FOREIGN, "planes": np.zeros_like(pdb.planes)})
    got = per_query_stats(q.codes, q.labels, foreign, ks, True)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_foreign_searcher_planes_are_rebuilt_not_read():
    q, db = data(64)
    s = Searcher(db.codes, db.bits)
    want = s.knn(q.codes, 25, method="bitsliced")
    s._planes, s._planes_layout = np.zeros_like(s._planes), FOREIGN  # as if unpickled from another CPU
    got = s.knn(q.codes, 25, method="bitsliced")
    assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
    assert s._planes_layout == LAYOUT and s._planes.any()


def foreign_env() -> dict[str, str]:
    """NUMBA_CPU_NAME/FEATURES giving Ray workers another lane width than this process (4 under 8)."""
    if LANES == 4:
        pytest.skip("an 8-lane worker needs AVX-512 VPOPCNTQ, which this host lacks: the unit tests above "
                    "cover the foreign record")
    assert "+avx2" in host_features()
    return {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": TARGET_FEATURES["haswell"]}


@pytest.fixture(scope="module")
def mixed_ray():
    from c3dhash.eval.ray_session import start_local
    env = foreign_env()
    if ray.is_initialized():  # the suite's shared Ray: the workers' CPU target is set at init, so start anew
        ray.shutdown()  # (conftest's local_ray starts it again for the next module that asks)
    start_local(num_cpus=2, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


@ray.remote
def _worker_lanes() -> int:
    from c3dhash.eval.kernels.isa import LANES as lanes
    return lanes


@ray.remote
def _knn_in_task(searcher: Searcher, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    idx, dist = searcher.knn(q, k, method="bitsliced")
    return idx, dist, (searcher._planes_layout.lanes, searcher._planes_layout.group)


def test_workers_run_another_lane_width(mixed_ray):
    assert ray.get(_worker_lanes.remote()) == FOREIGN.lanes != LANES


@pytest.mark.parametrize("bits", [48, 130])
def test_sharded_evaluation_equals_this_process(mixed_ray, bits):
    from c3dhash.eval.metrics.sharded import evaluate_sharded
    q, db = data(bits)
    want = evaluate(q, db, **KW)
    assert evaluate_sharded(q, db, shards=2, **KW) == want  # every float, the PR curve included


def test_shipped_searcher_equals_this_process(mixed_ray):
    q, db = data(64)
    s = Searcher(db.codes, db.bits)
    want = s.knn(q.codes, 30, method="bitsliced")  # builds this process's planes, which travel with s
    idx, dist, layout = ray.get(_knn_in_task.remote(s, q.codes, 30))
    assert layout == (FOREIGN.lanes, FOREIGN.group)  # rebuilt on the worker
    assert (idx == want[0]).all() and (dist == want[1]).all()


def test_sharded_index_equals_this_process(mixed_ray, tmp_path):
    from c3dhash.eval.search.sharded import ShardedIndex
    from c3dhash.eval.search.searcher import radius_search, topk
    q, db = data(130)
    np.save(tmp_path / "codes.npy", db.codes)
    with ShardedIndex(tmp_path / "codes.npy", db.bits, shards=2) as index:
        for method in ("bitsliced", "auto"):
            got, want = index.knn(q.codes, 40, method=method), topk(q.codes, db.codes, 40, method="bitsliced")
            assert (got[0] == want[0]).all() and (got[1] == want[1]).all(), method
        got_r, want_r = index.radius(q.codes, 20), radius_search(q.codes, db.codes, 20)
        assert all((a == b).all() for a, b in zip(got_r, want_r))
