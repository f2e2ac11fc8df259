"""Encoding sharded over Ray actors (on the session's local Ray): the single-process codes bit for bit, every
video once in input order, and a killed actor's chunks redone by a new one."""
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from c3dhash.eval.index.encode_ray import EncodeError, EncoderPool, chunk_size
from c3dhash.eval.index.videos import SCRATCH_PREFIX, encode_paths
from c3dhash.loaders.atomic import pid_alive
from c3dhash.model.load import read_checkpoint
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos


@pytest.fixture(scope="module")
def setup(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = [str(root / p) for p in make_videos(root, per_class=3)]
    (root / "broken.webm").write_bytes(b"not a video")
    paths.insert(4, str(root / "broken.webm"))  # a bad file mid-list keeps its place in the skipped list
    state = read_checkpoint(lsh_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", root))
    single = encode_paths(state, paths, chunk=4)
    before = set(Path(tempfile.gettempdir()).glob("c3dhash-enc-*"))
    pool = EncoderPool(state, workers=2)  # shared by the tests: starting actors is the slow part
    yield pool, paths, single
    pool.shutdown()
    # The killed actors' scratch folders (SIGKILL skips cleanup); only those whose process is gone, since under
    # pytest-xdist another worker's encoder may own a folder made meanwhile. ray.kill is asynchronous: wait a bit.
    leftovers = set(Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*")) - before
    deadline = time.monotonic() + 10
    while leftovers and time.monotonic() < deadline:
        for folder in [f for f in leftovers if not pid_alive(int(f.name[len(SCRATCH_PREFIX):].split("-")[0]))]:
            shutil.rmtree(folder, ignore_errors=True)
            leftovers.discard(folder)
        time.sleep(0.2 if leftovers else 0)


def test_sharded_codes_equal_single_process_codes(setup):
    pool, paths, single = setup
    got = pool.encode(paths, chunk=chunk_size(len(paths), 2))
    assert np.array_equal(got.outputs, single.outputs)  # floats equal, hence codes bit for bit
    assert got.skipped.keys() == single.skipped.keys() == {4} and "cannot open" in got.skipped[4]
    other = pool.encode(paths[::-1], chunk=3)  # input order is kept whatever the chunks and finishing order
    assert np.array_equal(other.outputs[::-1], single.outputs)


def test_a_killed_worker_has_its_share_redone(setup):
    pool, paths, single = setup
    done = []

    def kill_once(n: int) -> None:  # after the first finished chunk, kill the other actor mid-run
        done.append(n)
        if len(done) == 1:
            ray.kill(pool.actors[1], no_restart=True)
    got = pool.encode(paths, chunk=2, on_chunk=kill_once)
    assert pool.replaced == 1 and sum(done) == len(paths)  # every video counted once by the progress
    assert np.array_equal(got.outputs, single.outputs) and got.skipped.keys() == {4}


def test_a_chunk_that_keeps_losing_its_worker_fails_the_job(setup):
    pool, paths, _ = setup
    pool.max_redo = 0

    def kill(n: int) -> None:
        ray.kill(pool.actors[-1], no_restart=True)
    with pytest.raises(EncodeError, match="lost its worker 1 times"):
        pool.encode(paths, chunk=2, on_chunk=kill)
