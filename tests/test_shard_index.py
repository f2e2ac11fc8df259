"""The Ray-sharded index equals one process exactly: k-NN (ties by global index, k beyond a shard and beyond
the database) and radius queries, even and uneven row ranges, the memory-mapped codes file checked.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_shard_index.py
"""
from __future__ import annotations

import numpy as np
import pytest

from c3dhash.eval.codes import CodesError, pack_bits
from c3dhash.eval.search.searcher import radius_search, topk
from c3dhash.eval.search.sharded import ShardedIndex, even_ranges, merge_topk, open_codes
from code_helpers import clustered_bits

ray = pytest.importorskip("ray")


def tied(n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    b, _ = clustered_bits(n, bits, rng, centres=5, flip=0.03)
    b[100:400:7] = b[5]  # duplicates across the shard boundaries
    return pack_bits(b)


@pytest.fixture(scope="module", params=[64, 96])
def data(request, tmp_path_factory):
    bits = request.param
    rng = np.random.default_rng(bits)
    db = tied(1000, bits, rng)
    q = np.concatenate([tied(15, bits, rng), db[[5, 999]]])
    path = tmp_path_factory.mktemp("index") / "codes.npy"
    np.save(path, db)
    return path, bits, db, q


@pytest.mark.parametrize("ranges", [None, [(0, 1), (1, 640), (640, 1000)]])
def test_sharded_equals_single_process(local_ray, data, ranges):
    path, bits, db, q = data
    with ShardedIndex(path, bits, shards=2, ranges=ranges) as index:
        assert len(index.ranges) == (2 if ranges is None else 3)
        for k in (1, 10, 300, 1000, 1500):
            idx, dist = index.knn(q, k)
            ref_i, ref_d = topk(q, db, k)
            np.testing.assert_array_equal(idx, ref_i)
            np.testing.assert_array_equal(dist, ref_d)
        for r in (0, 4, bits):
            for got, want in zip(index.radius(q, r), radius_search(q, db, r)):
                np.testing.assert_array_equal(got, want)


def test_merge_breaks_ties_by_global_index():
    a = (np.array([[7, 9]]), np.array([[2, 3]], np.int32))
    b = (np.array([[1, 4]]), np.array([[3, 3]], np.int32))
    idx, dist = merge_topk([a, b], 3, 10)
    assert idx.tolist() == [[7, 1, 4]] and dist.tolist() == [[2, 3, 3]]


def test_codes_file_is_memory_mapped_and_checked(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((6, 2), np.uint64))
    arr = open_codes(tmp_path / "c.npy", 128)
    assert isinstance(arr, np.memmap) and arr.shape == (6, 2)
    with pytest.raises(CodesError, match=r"expected uint64 \[N, 1\] codes for 64 bits"):
        open_codes(tmp_path / "c.npy", 64)
    with pytest.raises(CodesError, match="not found"):
        open_codes(tmp_path / "missing.npy", 64)
    with pytest.raises(CodesError, match="must tile rows 0..6"):
        ShardedIndex(tmp_path / "c.npy", 128, ranges=[(0, 3), (4, 6)])
    assert even_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)] and even_ranges(2, 4) == [(0, 1), (1, 2)]


def test_each_actor_scans_on_its_own_cpus_only(local_ray, data):
    """numba's pool defaults to every core: an actor of 1 CPU on it made 2 actors no faster than 1 (1.09x)."""
    import numba
    path, bits, _, _ = data
    with ShardedIndex(path, bits, shards=2, cpus_per_shard=1) as index:
        threads = ray.get([a.__ray_call__.remote(lambda self: numba.get_num_threads()) for a in index._actors])
    assert threads == [1, 1]
