"""P x K / random samplers, rank slicing and the temporal rule (pure Python, no DALI)."""
import dataclasses
from collections import Counter

import numpy as np
import pytest

from c3dhash.loaders.manifest import DataError
from c3dhash.loaders.sampler import (PKSampler, RandomSampler, clip_span, copy_clips, eval_clips, eval_positions,
                                     eval_shard, shard_batch, slice_bounds, start_frame, train_clips,
                                     views_per_video)


def test_pk_batches_hold_k_clips_of_p_distinct_classes():
    labels = np.repeat(np.arange(6), 5)
    s = PKSampler(labels, p=3, k=2, seed=1)
    assert len(s) == 5 == len(s.batches(0))  # ceil(30 / 6)
    for batch in s.batches(0):
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 3 and set(counts.values()) == {2}
        assert len(set(batch.tolist())) == 6  # no video twice in a batch


def test_pk_balanced_epoch_sees_every_video_exactly_once():
    labels = np.repeat(np.arange(4), 8)  # 32 videos, P*K = 8, 4 steps: each class drawn twice
    for epoch in range(3):
        seen = np.concatenate(PKSampler(labels, p=2, k=4, seed=3).batches(epoch))
        assert sorted(seen.tolist()) == list(range(32))


def test_pk_is_seeded_and_reshuffles_every_epoch():
    labels = np.repeat(np.arange(5), 7)
    a, b = PKSampler(labels, p=2, k=3, seed=0), PKSampler(labels, p=2, k=3, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(a.batches(4), b.batches(4)))
    assert not all(np.array_equal(x, y) for x, y in zip(a.batches(4), a.batches(5)))
    assert not all(np.array_equal(x, y) for x, y in zip(a.batches(4), PKSampler(labels, p=2, k=3, seed=1)
                                                        .batches(4)))


def test_pk_repeats_only_classes_smaller_than_k():
    labels = np.array([0] * 2 + [1] * 9 + [2] * 9)  # class 0 has fewer than K=4 videos
    s = PKSampler(labels, p=3, k=4, seed=0, steps=6)
    for batch in s.batches(0):
        for c in (1, 2):
            members = batch[labels[batch] == c]
            assert len(members) == 4 and len(set(members.tolist())) == 4
        small = batch[labels[batch] == 0]
        assert len(small) == 4 and set(small.tolist()) == {0, 1}


def test_pk_uneven_classes_cover_every_video_when_steps_allow():
    labels = np.array([0] * 3 + [1] * 5 + [2] * 8 + [3] * 4)
    seen = np.concatenate(PKSampler(labels, p=2, k=2, seed=5, steps=8).batches(0))
    assert set(seen.tolist()) == set(range(len(labels)))


def test_pk_zero_means_every_class_and_gives_the_same_batches_as_naming_them():
    """data.pk_classes=0: P = the split's class count, batch for batch the sampler of P = that count (so a run
    of the shipped 8-class set is the same with 0 or 8, and `--set data.pk_classes=N` runs equal 0's)."""
    labels = np.repeat(np.arange(5), [7, 9, 6, 8, 10])
    every, named = PKSampler(labels, p=0, k=3, seed=4), PKSampler(labels, p=5, k=3, seed=4)
    assert (every.p, every.batch_size, len(every)) == (5, 15, len(named))
    for a, b in zip(every.batches(2), named.batches(2)):
        assert np.array_equal(a, b) and set(labels[a].tolist()) == set(range(5))
    with pytest.raises(DataError, match=r"P=-1 and K=3 must be >= 0 and >= 1"):
        PKSampler(labels, p=-1, k=3)


def test_pk_rejects_more_classes_than_the_split_has():
    with pytest.raises(DataError, match="pk_classes=4 but the split has only 3 classes"):
        PKSampler([0, 1, 2, 2], p=4, k=1)


def test_random_sampler_full_batches_cover_the_epoch():
    s = RandomSampler(10, batch_size=4, seed=0)
    batches = s.batches(1)
    assert len(s) == 3 and all(len(b) == 4 for b in batches)
    assert set(np.concatenate(batches).tolist()) == set(range(10))
    assert all(np.array_equal(x, y) for x, y in zip(batches, RandomSampler(10, batch_size=4).batches(1)))


def test_rank_slices_partition_the_global_batch():
    clips = train_clips(np.arange(12), seed=0, epoch=0, step=0, flip=True)
    parts = [shard_batch(clips, rank=r, world_size=3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4] and sum(parts, []) == clips


def test_slices_of_a_batch_not_divisible_by_the_world_size_differ_by_at_most_one():
    assert [slice_bounds(14, rank=r, world_size=3) for r in range(3)] == [(0, 5), (5, 10), (10, 14)]
    assert [slice_bounds(3, rank=r, world_size=4) for r in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 3)]
    with pytest.raises(DataError, match="rank 3 outside a world of 3"):
        slice_bounds(14, rank=3, world_size=3)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_any_world_size_sees_the_single_process_batches_step_for_step(world):
    """Elastic training: P x K = 14 (not divisible by 3) is fixed by the config; W ranks' slices, concatenated
    in rank order, are exactly the 1-process batch (records, positions, crops, flips) at every step."""
    labels = np.repeat(np.arange(7), 6)
    sampler = PKSampler(labels, p=7, k=2, seed=4)
    for epoch in (0, 1):
        for step, batch in enumerate(sampler.batches(epoch)):
            single = train_clips(batch, seed=4, epoch=epoch, step=step, flip=True)
            again = train_clips(PKSampler(labels, p=7, k=2, seed=4).batches(epoch)[step], seed=4, epoch=epoch,
                                step=step, flip=True)  # what another rank's own sampler draws
            parts = [shard_batch(again, rank=r, world_size=world) for r in range(world)]
            assert sum(parts, []) == single and len(single) == 14
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_train_draw_is_seeded_per_epoch_and_step():
    a = train_clips(np.arange(8), seed=0, epoch=1, step=2, flip=True)
    assert a == train_clips(np.arange(8), seed=0, epoch=1, step=2, flip=True)
    assert a != train_clips(np.arange(8), seed=0, epoch=1, step=3, flip=True)
    assert {c.flip for c in a} == {True, False}
    assert not any(c.flip for c in train_clips(np.arange(8), seed=0, epoch=1, step=2, flip=False))


def test_eval_shards_are_disjoint_and_cover_without_padding():
    shards = [eval_shard(11, rank=r, world_size=4) for r in range(4)]
    flat = sum(shards, [])
    assert sorted(flat) == list(range(11)) and len(flat) == 11


def test_eval_clips_batches_every_clip_once_last_batch_smaller():
    batches = eval_clips([3, 7, 9], clips_per_video=2, batch_size=4)
    assert [len(b) for b in batches] == [4, 2]
    flat = [(c.index, c.position) for b in batches for c in b]
    assert flat == [(v, p) for v in (3, 7, 9) for p in (0.25, 0.75)]
    assert all(c.crop_x == c.crop_y == 0.5 and not c.flip for b in batches for c in b)


def test_mirror_views_follow_each_clip_and_keep_a_videos_clips_together():
    batches = eval_clips([3, 7], clips_per_video=2, batch_size=views_per_video(2, True), mirror=True)
    assert [len(b) for b in batches] == [4, 4] and views_per_video(2, False) == 2
    assert [(c.index, c.position, c.flip) for c in batches[0]] == [(3, 0.25, False), (3, 0.25, True),
                                                                   (3, 0.75, False), (3, 0.75, True)]
    assert {c.index for c in batches[1]} == {7}
    drawn = copy_clips([5], clips_per_video=3, batch_size=6, seed=1, flip=True, colour=0.2, mirror=True)[0]
    alone = copy_clips([5], clips_per_video=3, batch_size=6, seed=1, flip=True, colour=0.2)[0]
    assert drawn[0::2] == alone and [c.flip for c in drawn[1::2]] == [not c.flip for c in alone]
    assert [dataclasses.replace(c, flip=not c.flip) for c in drawn[1::2]] == alone  # only the flip differs


def test_start_frame_rule():
    span = clip_span(4, 2)
    assert span == 7
    assert start_frame(0.0, n_frames=20, span=span) == 0
    assert start_frame(0.999999, n_frames=20, span=span) == 13  # last clip ends on the last frame
    assert start_frame(1.0, n_frames=20, span=span) == 13
    assert start_frame(0.7, n_frames=3, span=span) == 0  # short video: start 0, the decoder pads
    assert eval_positions(1) == [0.5]
    assert start_frame(eval_positions(1)[0], n_frames=21, span=span) == 7  # centre: frames 7..13 of 0..20
    draws = [start_frame(u, n_frames=10, span=span) for u in np.linspace(0, 1, 400, endpoint=False)]
    assert Counter(draws) == {0: 100, 1: 100, 2: 100, 3: 100}  # uniform over the valid starts
