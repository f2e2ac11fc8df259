"""Ray-sharded evaluation equals the in-process one exactly (==, bit-identical floats) for any shard count,
and survives a failed task (an exception, or a worker process that dies) through Ray's retries.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_sharded_eval.py
"""
from __future__ import annotations

import numpy as np
import pytest

from c3dhash.eval.codes import Codes, pack_bits
from c3dhash.eval.metrics.exact import evaluate
from c3dhash.eval.metrics.sharded import evaluate_sharded

ray = pytest.importorskip("ray")
Q = 23


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, (4, 12)).astype(bool)
    dbb = base[rng.integers(0, 4, 1500)] ^ (rng.random((1500, 12)) < 0.1)  # 12 bits: heavy ties
    qb = base[rng.integers(0, 4, Q)] ^ (rng.random((Q, 12)) < 0.1)
    db = Codes(pack_bits(dbb), 12, rng.integers(0, 5, 1500), [f"d{i}" for i in range(1500)])
    q = Codes(pack_bits(qb), 12, rng.integers(0, 6, Q), [f"q{i}" for i in range(Q)])  # label 5: no relevant
    kw = dict(map_at_k_rel=(5, 100), map_at_k=(5, 2000), precision_at_k=(10,), expected_ties=True)
    return q, db, kw, evaluate(q, db, **kw)


@pytest.mark.parametrize("shards", [1, 2, 3, Q + 9])
def test_sharded_equals_unsharded_exactly(local_ray, data, shards):
    q, db, kw, expected = data
    got = evaluate_sharded(q, db, shards=shards, **kw)
    assert got == expected  # every float bit-identical, PR curve included


def flaky_task(monkeypatch, flag):
    """Replace the evaluation task by one whose first run (the one that claims `flag`) fails: "raise" raises,
    "exit" kills its worker process. A local function, so Ray ships it by value to the workers."""
    import c3dhash.eval.metrics.sharded as sharded
    real = sharded._stats_task

    def task(*args):
        import os
        try:
            mode = open(flag).read().strip()
            os.remove(flag)  # only one task wins the removal
        except FileNotFoundError:
            return real(*args)
        if mode == "exit":
            os._exit(1)
        raise RuntimeError(f"injected fault ({flag})")
    monkeypatch.setattr(sharded, "_REMOTE", ray.remote(task))


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_failed_task_is_retried(local_ray, data, tmp_path, monkeypatch, mode):
    q, db, kw, expected = data
    flag = tmp_path / "fail-once"
    flag.write_text(mode)
    flaky_task(monkeypatch, str(flag))
    got = evaluate_sharded(q, db, shards=3, max_retries=2, **kw)
    assert not flag.exists()  # a task did claim the fault, and failed
    assert got == expected


def test_failure_without_retries_surfaces(local_ray, data, tmp_path, monkeypatch):
    q, db, kw, _ = data
    flag = tmp_path / "fail-once"
    flag.write_text("raise")
    flaky_task(monkeypatch, str(flag))
    with pytest.raises(ray.exceptions.RayTaskError, match="injected fault"):
        evaluate_sharded(q, db, shards=2, max_retries=0, **kw)
