"""Encoder actors (issue 29, item 8): one DALI pipeline for an encoder's life, and many videos' clips batched
through the model; the codes equal the one-video-per-batch path except, at most, bits within float rounding
of zero.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_encode_batch.py -s   # -s: the count
"""
from __future__ import annotations

import numpy as np
import torch

from c3dhash.eval.index import videos
from c3dhash.eval.index.videos import ChunkEncoder, encode_paths, product_data, videos_per_batch
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.pipelines import build_eval_loader
from c3dhash.model.load import from_state, read_checkpoint
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos

ROUNDING = 1e-5  # |mean tanh output| below this: a sign a different summation order may flip


def test_batched_codes_equal_single_video_batches_up_to_rounding_of_zero(tmp_path):
    paths = [str(tmp_path / p) for p in make_videos(tmp_path, classes=3, per_class=3)]
    state = read_checkpoint(lsh_checkpoint(tmp_path / "best.pt", tmp_path))
    one = encode_paths(state, paths, chunk=4, batch_videos=1)
    many = encode_paths(state, paths, chunk=4, batch_videos=4)
    assert one.skipped == many.skipped == {} and one.outputs.shape == many.outputs.shape
    differ = (one.outputs >= 0) != (many.outputs >= 0)
    near_zero = np.abs(one.outputs) < ROUNDING
    assert not (differ & ~near_zero).any()  # any differing bit is one within rounding of zero
    gap = float(np.abs(one.outputs - many.outputs).max())
    print(f"\nbatched (4 videos) vs single-video batches: {int(differ.sum())} of {differ.size} bits differ, "
          f"largest output difference {gap:.2e}")
    assert gap <= 1e-4


def test_one_pipeline_serves_every_chunk_of_an_encoder(tmp_path, monkeypatch):
    paths = [str(tmp_path / p) for p in make_videos(tmp_path, classes=2, per_class=3)]
    state = read_checkpoint(lsh_checkpoint(tmp_path / "best.pt", tmp_path))
    enc = ChunkEncoder(state, device="cpu", batch_videos=2)
    first = [enc.encode(paths[a:a + 2]) for a in range(0, len(paths), 2)]
    again = enc.encode(paths[:2])
    assert enc.loader.decoder.builds == 1  # was one pipeline per chunk
    assert np.array_equal(again.outputs, first[0].outputs)
    assert enc.loader.decoder.batch_size == 2 * enc.model.geometry.clips_per_video


def test_videos_per_batch_is_one_on_cpu_and_sixteen_on_a_gpu():
    assert videos_per_batch(0, torch.device("cpu")) == 1
    assert videos_per_batch(0, torch.device("cuda", 0)) == videos.GPU_VIDEOS_PER_BATCH == 16
    assert videos_per_batch(3, torch.device("cuda", 0)) == 3


def test_with_eval_flip_a_videos_output_is_the_mean_of_each_clip_and_its_mirror(tmp_path):
    paths = [str(tmp_path / p) for p in make_videos(tmp_path, classes=2, per_class=2)]
    state = read_checkpoint(lsh_checkpoint(tmp_path / "best.pt", tmp_path))
    mirror = {**state, "config": {**state["config"], "data": {**state["config"]["data"], "eval_flip": True}}}
    m = from_state(state)
    loader = build_eval_loader([VideoRecord(p, 0, "") for p in paths], "/", product_data(m.geometry, device="cpu"),
                               rank=0, world_size=1, device_id=None)
    sums = np.zeros((len(paths), m.bits))
    with torch.no_grad():
        for clips, _, index in loader:  # the plain views, each and its torch mirror through the model
            for row, v in zip((m.net(clips) + m.net(clips.flip(-1))).numpy(), index.tolist()):
                sums[v] += row
    expected = sums / (2 * m.geometry.clips_per_video)
    got = encode_paths(mirror, paths, chunk=4, batch_videos=1)
    assert got.skipped == {} and np.allclose(got.outputs, expected, atol=1e-5)
    assert not np.allclose(encode_paths(state, paths, chunk=4, batch_videos=1).outputs, expected, atol=1e-3)
