"""Self-supervised training (data.sampler=video): P videos x K augmented clips, labels = video ids, through the
same sampler slicing, gathered loss and Trainer as supervised training.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_ssl.py

The gloo part spawns 2 and 3 ranks once (module fixture) and compares each with one plain process, as
tests/test_trainer.py does for supervised training: the same losses step for step and the same final weights.
"""
import dataclasses
import os
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.testing import assert_close

from c3dhash.distributed.config import LossConfig, TrainConfig
from c3dhash.distributed.job import ClusterConfig, JobConfig
from c3dhash.distributed.syncbn import convert_sync_bn
from c3dhash.distributed.trainer import Hooks, Trainer
from c3dhash.loaders.augment import colour_jitter, play_backwards, scramble_frames, shuffle_order
from c3dhash.loaders.config import SEED_MEAN, SEED_STD, DataConfig
from c3dhash.loaders.manifest import DataError
from c3dhash.loaders.sampler import (Clip, VideoSampler, clip_labels, label_videos, make_sampler, shard_batch,
                                     train_clips)
from c3dhash.model.config import ModelConfig
from train_helpers import FolderReport, tensor_eval_set, tensor_videos, tiny_net

P, K, STEPS, EPOCHS, BITS = 3, 2, 3, 2, 8


def test_video_batches_hold_k_clips_of_p_distinct_videos_and_cover_the_epoch():
    s = VideoSampler(12, p=4, k=3, seed=1)
    batches = s.batches(0)
    assert len(s) == 3 == len(batches) and s.batch_size == 12
    for b in batches:
        videos = b.reshape(4, 3)
        assert (videos == videos[:, :1]).all() and len(set(videos[:, 0].tolist())) == 4  # video-major, distinct
    assert sorted(np.concatenate(batches)[::3].tolist()) == list(range(12))  # every video once an epoch
    assert all(np.array_equal(a, b) for a, b in zip(batches, VideoSampler(12, p=4, k=3, seed=1).batches(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, s.batches(1)))


def test_a_refill_never_puts_a_video_twice_in_one_batch():
    s = VideoSampler(5, p=4, k=2, seed=0, steps=20)  # 5 videos, 4 a batch: every other batch crosses a refill
    for b in s.batches(3):
        assert len(set(b[::2].tolist())) == 4


@pytest.mark.parametrize("p, k, n, message", [(1, 4, 10, "both must be >= 2"), (4, 1, 10, "both must be >= 2"),
                                              (8, 2, 5, "data.pk_classes=8 videos per batch but the split has "
                                                        "only 5 videos")])
def test_video_sampler_refuses_batches_without_positives_or_negatives(p, k, n, message):
    with pytest.raises(DataError, match=message):
        VideoSampler(n, p=p, k=k)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_any_world_size_sees_the_single_process_clips_and_video_labels(world):
    """The elastic equality of tests/test_sampler.py, with the colour draw and the video-id labels."""
    labels = [i % 4 for i in range(20)]  # class labels exist but are not what the loss sees
    sampler = make_sampler(labels, sampler="video", p=P, k=K, batch_size=0, world_size=world, seed=5)
    for epoch in (0, 1):
        for step, batch in enumerate(sampler.batches(epoch)):
            single = train_clips(batch, seed=5, epoch=epoch, step=step, flip=True, colour=0.4)
            parts = [shard_batch(single, rank=r, world_size=world) for r in range(world)]
            assert sum(parts, []) == single
            ids = sum((clip_labels(p, labels, sampler="video") for p in parts), [])
            assert ids == batch.tolist() and ids != [labels[i] for i in batch]
            assert clip_labels(single, labels, sampler="pk") == [labels[i] for i in batch]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_reverse_negatives_mark_every_other_clip_and_label_it_apart_on_any_world_size(world):
    """data.reverse_negatives: a video's 2nd, 4th, ... clips of a batch play backwards with the label 4 x id + 1;
    no other draw moves, and the ranks' slices and labels concatenate to the single process's."""
    sampler = make_sampler(list(range(20)), sampler="video", p=3, k=4, batch_size=0, world_size=world, seed=5)
    for step, batch in enumerate(sampler.batches(1)):
        single = train_clips(batch, seed=5, epoch=1, step=step, flip=True, colour=0.4, reverse=True)
        assert [dataclasses.replace(c, reverse=False) for c in single] == train_clips(
            batch, seed=5, epoch=1, step=step, flip=True, colour=0.4)
        assert [c.reverse for c in single] == [False, True] * 6  # video-major: 2 forward, 2 backward each
        parts = [shard_batch(single, rank=r, world_size=world) for r in range(world)]
        ids = sum((clip_labels(p, [], sampler="video", reverse=True) for p in parts), [])
        assert ids == [4 * int(i) + j % 2 for j, i in enumerate(batch)]
        assert all(ids.count(i) == 2 for i in ids)  # each clip keeps one positive: its twin of the same direction


@pytest.mark.parametrize("world", [1, 2, 3])
def test_frame_negatives_turn_each_videos_last_two_clips_still_and_shuffled_on_any_world_size(world):
    """data.frame_negatives: of K = 6 clips a video's 5th is held still and its 6th shuffled, each an identity
    without a positive (labels 4 x id + 2, + 3); the first four keep their forward/backward pairs, no other draw
    moves, and the ranks' labels concatenate to the single process's."""
    sampler = make_sampler(list(range(20)), sampler="video", p=3, k=6, batch_size=0, world_size=world, seed=5)
    for step, batch in enumerate(sampler.batches(1)):
        single = train_clips(batch, seed=5, epoch=1, step=step, flip=True, reverse=True, frames=True)
        assert [dataclasses.replace(c, reverse=False, scramble="") for c in single] == train_clips(
            batch, seed=5, epoch=1, step=step, flip=True)
        assert [(c.reverse, c.scramble) for c in single] == [
            (False, ""), (True, ""), (False, ""), (True, ""), (False, "still"), (False, "shuffled")] * 3
        parts = [shard_batch(single, rank=r, world_size=world) for r in range(world)]
        ids = sum((clip_labels(p, [], sampler="video", reverse=True) for p in parts), [])
        assert ids == [4 * int(i) + (0, 1, 0, 1, 2, 3)[j % 6] for j, i in enumerate(batch)]
        assert [ids.count(i) for i in ids] == [2, 2, 2, 2, 1, 1] * 3
        assert (label_videos(torch.tensor(ids)) == torch.tensor(batch)).all()


def test_scramble_frames_hold_the_first_frame_or_reorder_without_neighbours():
    x = torch.arange(3 * 3 * 6 * 2 * 2, dtype=torch.float32).reshape(3, 3, 6, 2, 2)
    clips = [Clip(0, 0.5, scramble="still"), Clip(0, 0.5), Clip(1, 0.5, scramble="shuffled")]
    out = scramble_frames(x, clips)
    assert torch.equal(out[0], x[0, :, [0] * 6]) and torch.equal(out[1], x[1])
    order = shuffle_order(6)
    assert torch.equal(out[2], x[2, :, list(order)])
    assert sorted(order) == list(range(6)) and all(abs(a - b) > 1 for a, b in zip(order, order[1:]))
    assert all(i != j for i, j in enumerate(order))
    assert scramble_frames(x, [Clip(0, 0.5)] * 3) is x
    with pytest.raises(ValueError, match="needs >= 4"):
        shuffle_order(3)


def test_play_backwards_reverses_time_of_the_marked_clips_only():
    x = torch.arange(3 * 3 * 4 * 2 * 2, dtype=torch.float32).reshape(3, 3, 4, 2, 2)
    clips = [Clip(0, 0.5), Clip(0, 0.5, reverse=True), Clip(1, 0.5)]
    out = play_backwards(x, clips)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert torch.equal(out[1], x[1, :, [3, 2, 1, 0]]) and not torch.equal(out[1], x[1])
    assert play_backwards(x, [Clip(0, 0.5)] * 3) is x


def test_colour_draw_is_its_own_stream_and_within_bounds():
    plain = train_clips(np.arange(6), seed=0, epoch=0, step=0, flip=True)
    coloured = train_clips(np.arange(6), seed=0, epoch=0, step=0, flip=True, colour=0.3)
    strip = [dataclasses.replace(c, brightness=1.0, contrast=1.0, saturation=1.0) for c in coloured]
    assert strip == plain  # turning colour on leaves positions, crops and flips as they were
    factors = np.array([[c.brightness, c.contrast, c.saturation] for c in coloured])
    assert ((factors >= 0.7) & (factors <= 1.3)).all() and len(np.unique(factors)) == factors.size


def test_zoom_draw_is_its_own_stream_and_within_bounds():
    plain = train_clips(np.arange(6), seed=0, epoch=0, step=0, flip=True, colour=0.3)
    zoomed = train_clips(np.arange(6), seed=0, epoch=0, step=0, flip=True, colour=0.3, zoom=0.5)
    assert [dataclasses.replace(c, zoom=1.0) for c in zoomed] == plain  # the other draws as they were
    zooms = np.array([c.zoom for c in zoomed])
    assert ((zooms >= 1.0) & (zooms <= 1.5)).all() and len(np.unique(zooms)) == len(zooms)
    assert {c.zoom for c in plain} == {1.0}


def test_colour_jitter_is_per_clip_and_exact_on_the_raw_scale():
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(4, 3, 2, 5, 5, generator=g) * 0.8
    m, s = torch.tensor(SEED_MEAN).reshape(1, 3, 1, 1, 1), torch.tensor(SEED_STD).reshape(1, 3, 1, 1, 1)
    x = (raw - m) / s
    clips = train_clips(np.arange(4), seed=2, epoch=0, step=0, flip=False, colour=0.5)
    out = colour_jitter(x, clips, mean=SEED_MEAN, std=SEED_STD)
    for i in range(4):  # a rank's slice is augmented exactly as in the whole batch
        assert torch.equal(colour_jitter(x[i:i + 1], clips[i:i + 1], mean=SEED_MEAN, std=SEED_STD), out[i:i + 1])
    only_b = [dataclasses.replace(c, contrast=1.0, saturation=1.0) for c in clips]
    b = torch.tensor([c.brightness for c in clips]).reshape(-1, 1, 1, 1, 1)
    assert_close(colour_jitter(x, only_b, mean=SEED_MEAN, std=SEED_STD) * s + m, (raw * b).clamp(0, 1),
                 rtol=0, atol=1e-6)
    same = [dataclasses.replace(c, brightness=1.0, contrast=1.0, saturation=1.0) for c in clips]
    assert_close(colour_jitter(x, same, mean=SEED_MEAN, std=SEED_STD), x, rtol=0, atol=1e-5)


# --- the Trainer on gloo ranks ---------------------------------------------------------------------------------
class VideoTensorLoader:
    """The TrainLoader contract over in-memory 'videos' with the real video sampler, colour jitter and flips:
    the K clips of a video differ only by their augmentation draw, as in the DALI loader."""

    def __init__(self, x: torch.Tensor, *, rank: int, world: int, seed: int = 0):
        self.x, self.rank, self.world, self.seed = x, rank, world, seed
        self.labels = list(range(len(x)))
        self.sampler = VideoSampler(len(x), p=P, k=K, seed=seed, steps=STEPS)
        self.epoch, self.start_step = 0, 0

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    def set_epoch(self, epoch: int, *, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self):
        for s, b in enumerate(self.sampler.batches(self.epoch)):
            if s < self.start_step:
                continue
            clips = shard_batch(train_clips(b, seed=self.seed, epoch=self.epoch, step=s, flip=True, colour=0.4),
                                rank=self.rank, world_size=self.world)
            x = colour_jitter(self.x[[c.index for c in clips]], clips, mean=SEED_MEAN, std=SEED_STD)
            x = torch.stack([v.flip(-1) if c.flip else v for v, c in zip(x, clips)])
            yield x, torch.tensor(clip_labels(clips, self.labels, sampler="video"))


def ssl_job() -> JobConfig:
    return JobConfig(data=DataConfig(sampler="video", pk_classes=P, pk_samples=K, colour_jitter=0.4),
                     model=ModelConfig(bits=BITS), loss=LossConfig(margin=4.0),
                     train=TrainConfig(epochs=EPOCHS, steps_per_epoch=STEPS, optimizer="sgd", lr=0.05,
                                       schedule="cosine", eval_every=1, log_every=100, amp="off", seed=0),
                     cluster=ClusterConfig(name="ssl"))


def ssl_run(run_dir, *, rank: int, world: int) -> dict:
    x, labels = tensor_videos(3, 3)  # 9 videos of 3 classes; the classes only serve validation (class mAP)
    net = tiny_net(BITS)
    model = DDP(convert_sync_bn(net)) if world > 1 else net
    hook = FolderReport(run_dir)
    tr = Trainer(job=ssl_job(), model=model, device=torch.device("cpu"),
                 train_loader=VideoTensorLoader(x, rank=rank, world=world),
                 queries=tensor_eval_set(x[:3], labels[:3], rank=rank, world=world, batch_size=2),
                 database=tensor_eval_set(x, labels, rank=rank, world=world, batch_size=2),
                 run_dir=run_dir, hooks=Hooks(report=hook))
    losses, step = [], tr.train_step

    def wrapped(clips, labels):
        out = step(clips, labels)
        losses.append(float(out[0]))
        return out
    tr.train_step = wrapped
    tr.fit()
    return dict(losses=losses, val=[r["val_map"] for r in hook.rows if r.get("report") == "epoch"],
                final={k: v.detach().clone() for k, v in tr.module.state_dict().items()})


def _rank_main(rank, world, store, out_dir):
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    try:
        torch.save(ssl_run(f"{out_dir}/run", rank=rank, world=world), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    torch.set_num_threads(1)
    return ssl_run(tmp_path_factory.mktemp("ssl1"), rank=0, world=1)


@pytest.mark.slow  # gloo ranks in spawned processes
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_train_self_supervised_like_one_process(tmp_path, single, world):
    mp.spawn(_rank_main, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert len(single["losses"]) == EPOCHS * STEPS and all(v > 0 for v in single["losses"][:1])
    for res in ranks:  # SyncBN + the gathered loss: float32 sums in another order only
        assert_close(torch.tensor(res["losses"]), torch.tensor(single["losses"]), rtol=1e-5, atol=1e-6)
        assert_close(torch.tensor(res["val"]), torch.tensor(single["val"]), rtol=0, atol=1e-6)
        for k, v in single["final"].items():
            assert_close(res["final"][k].float(), v.float(), rtol=1e-4, atol=1e-5, msg=k)
    assert all(r["losses"] == ranks[0]["losses"] for r in ranks)  # every rank logs the global loss


@pytest.mark.parametrize("negatives", ["all", "own_video"])
def test_the_trainer_takes_negatives_from_the_own_video_only_when_asked(tmp_path, negatives):
    """loss.negatives=own_video: the Trainer's loss is the grouped loss over labels 4 x video + kind (its
    groups = the videos), which differs from the loss over every other identity."""
    from c3dhash.distributed.triplet import all_triplet_loss
    job = dataclasses.replace(ssl_job(), data=DataConfig(sampler="video", pk_classes=2, pk_samples=4,
                                                         reverse_negatives=True),
                              loss=LossConfig(margin=0.01, negatives=negatives))  # near the untrained distances
    x, _ = tensor_videos(2, 1)
    clips, labels = x[[0, 0, 0, 0, 1, 1, 1, 1]], torch.tensor([0, 1, 0, 1, 4, 5, 4, 5])
    clips = play_backwards(clips, [Clip(index=0, position=0.0, reverse=bool(y % 2)) for y in labels.tolist()])
    net = tiny_net(BITS).train()
    with torch.no_grad():
        h = net(clips)  # BatchNorm in training mode: the step's forward sees the same batch statistics
    grouped, plain = (float(all_triplet_loss(h, labels, 0.01, groups=labels // 4)),
                      float(all_triplet_loss(h, labels, 0.01)))
    tr = Trainer(job=job, model=net, device=torch.device("cpu"),
                 train_loader=VideoTensorLoader(tensor_videos(3, 1)[0], rank=0, world=1), queries=None, database=None,
                 run_dir=tmp_path)
    got = float(tr.train_step(clips, labels)[0])
    assert got == pytest.approx(grouped if negatives == "own_video" else plain, rel=1e-6)
    assert grouped != pytest.approx(plain, rel=1e-2), (grouped, plain)


# --- the DALI loader in video mode -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from tests.videos import make_dataset
    root = tmp_path_factory.mktemp("vp9")
    return root, make_dataset(root, classes=2, per_class=3, frames=8, size=(16, 16), codec="vp9")


def test_dali_loader_in_video_mode_yields_video_ids_and_matches_across_ranks(videos):
    from c3dhash.loaders import pipelines
    root, records = videos
    cfg = DataConfig(num_frames=2, stride=2, resize=(16, 16), crop=(12, 12), sampler="video", pk_classes=3,
                     pk_samples=2, num_threads=1, colour_jitter=0.4, device="cpu")
    one = list(pipelines.build_train_loader(records, root, cfg, rank=0, world_size=1, device_id=None))
    assert len(one) == 2  # ceil(6 videos / P=3)
    plan = pipelines.build_train_loader(records, root, cfg, rank=0, world_size=1, device_id=None).plan(0)
    for (x, y), clips in zip(one, plan):
        assert y.tolist() == [c.index for c in clips] and len(set(y.tolist())) == 3 and x.shape[0] == 6
    ranks = [list(pipelines.build_train_loader(records, root, cfg, rank=r, world_size=2, device_id=None))
             for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(one, *ranks):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    plain = list(pipelines.build_train_loader(records, root, dataclasses.replace(cfg, colour_jitter=0.0), rank=0,
                                              world_size=1, device_id=None))
    for (x, _), (xp, _), clips in zip(one, plain, plan):  # colour is the only difference, applied after decode
        assert not torch.equal(x, xp)
        assert torch.equal(x, colour_jitter(xp, clips, mean=cfg.mean, std=cfg.std))


def test_copy_clips_are_one_edit_per_video_so_every_shard_sees_the_same_copy():
    from c3dhash.loaders.sampler import COPY_KEEP, COPY_ZOOM, copy_clips, eval_shard
    whole = [c for b in copy_clips(range(40), clips_per_video=4, batch_size=3, seed=4, flip=True, colour=0.3)
             for c in b]
    for world in (2, 3):
        parts = [c for r in range(world) for b in copy_clips(eval_shard(40, rank=r, world_size=world),
                                                             clips_per_video=4, batch_size=3, seed=4, flip=True,
                                                             colour=0.3) for c in b]
        assert sorted(parts, key=lambda c: c.index) == sorted(whole, key=lambda c: c.index)
    edits = set()
    for v in range(40):  # a re-upload is edited as a whole: one crop, zoom, flip and colour for all its clips
        clips = [c for c in whole if c.index == v]
        edit = {dataclasses.replace(c, position=0.0) for c in clips}
        assert len(clips) == 4 and len(edit) == 1
        edits |= edit
        pos = np.array([c.position for c in clips])
        steps = np.diff(pos)  # evenly spread over a trimmed span of 70-90 % of the video
        assert np.allclose(steps, steps[0]) and COPY_KEEP[0] - 1e-9 <= 4 * steps[0] <= COPY_KEEP[1] + 1e-9
        assert pos[0] - steps[0] / 2 >= 0 and pos[-1] + steps[0] / 2 <= 1 + 1e-9
        assert COPY_ZOOM[0] <= clips[0].zoom <= COPY_ZOOM[1] and 0.7 <= clips[0].brightness <= 1.3
    assert len(edits) == 40 and {c.flip for c in edits} == {True, False}
    further = copy_clips(range(40), clips_per_video=1, batch_size=40, seed=4, flip=True, colour=0.0, zoom=0.6)[0]
    assert max(c.zoom for c in further) > COPY_ZOOM[1]  # a wider training zoom widens the copies' too
    plain = copy_clips(range(7), clips_per_video=2, batch_size=3, seed=4, flip=False, colour=0.0)
    assert not any(c.flip for b in plain for c in b)
    assert all((c.brightness, c.contrast, c.saturation) == (1.0, 1.0, 1.0) for b in plain for c in b)


def test_self_supervised_validation_is_near_duplicate_retrieval_without_class_labels(tmp_path):
    from c3dhash.cluster.config import load_config
    from c3dhash.distributed.build import build_data
    from train_helpers import make_tiny_dataset, tiny_overrides
    root = make_tiny_dataset(tmp_path / "tiny")
    job = load_config(None, [*tiny_overrides(root, tmp_path / "runs", "ssl", workers=1), "data.sampler=video",
                             "data.pk_classes=4", "data.colour_jitter=0.3", "data.flip=true"])
    train, queries, database = build_data(job, torch.device("cpu"))
    n_val, n_train = len(queries.records), len(train.records)
    assert [r.label for r in queries.records] == list(range(n_val))  # video ids, not classes
    assert [r.label for r in database.records] == list(range(n_val + n_train))
    assert [r.path for r in database.records[:n_val]] == [r.path for r in queries.records]
    (xq, yq, iq), = list(queries.loader)[:1]
    (xd, yd, idb), = list(database.loader)[:1]
    assert yq.tolist() == iq.tolist() == list(range(len(yq)))  # the first val videos, augmented
    assert not torch.equal(xq, xd[:len(xq)])  # a copy is not the centre clip of its original


@pytest.mark.slow  # a short training run on real videos
@pytest.mark.parametrize("recipe", ["library-cpu", "motion-cpu"])
def test_the_shipped_library_recipes_train_on_an_unlabelled_folder(tmp_path, recipe):
    """configs/library-cpu.yaml and motion-cpu.yaml as docs/datasets.md runs them: one folder of videos and no
    labels; the run keeps a best.pt whose model encodes each clip and its mirror (data.eval_flip, library) or
    the clip alone (motion), read back from the checkpoint. The motion recipe's batches hold every kind of clip
    (forward, backward, still, shuffled) of each video."""
    from c3dhash.cluster.config import load_config
    from c3dhash.distributed import checkpoint as ckpt
    from c3dhash.distributed.build import build_data, build_model
    from c3dhash.loaders.splits import build_splits_for
    from c3dhash.loaders.synth import make_synth_dataset
    from c3dhash.model.load import load_hash_net
    make_synth_dataset(tmp_path / "synth", classes=2, per_class=6, frames=12, size=(32, 32), seed=5, progress=False)
    library = tmp_path / "library" / "all"
    library.mkdir(parents=True)
    for video in (tmp_path / "synth").glob("*/*.webm"):
        video.rename(library / video.name)
    job = load_config(recipe, [f"data.root={library.parent}", "data.val_per_class=2", "data.pk_classes=4",
                               "train.epochs=1", "train.steps_per_epoch=2", "train.eval_every=1",
                               "train.collapse=warn", f"cluster.storage_path={tmp_path / 'runs'}"])
    motion = recipe == "motion-cpu"
    assert job.data.sampler == "video" and job.data.eval_flip != motion and job.data.dataset == "folder"
    assert (job.loss.negatives == "own_video") == job.data.frame_negatives == motion
    build_splits_for(job.data)
    device = torch.device("cpu")
    train, queries, database = build_data(job, device)
    if motion:
        _, labels = next(iter(train))
        assert len(labels) == 4 * 6 and sorted((labels % 4).tolist()) == sorted([0, 1, 0, 1, 2, 3] * 4)
    assert [r.label for r in queries.records] == list(range(len(queries.records)))  # video ids: no labels used
    run = tmp_path / "runs" / job.cluster.name
    Trainer(job=job, model=build_model(job, device), device=device, train_loader=train, queries=queries,
            database=database, run_dir=run).fit()
    m = load_hash_net(run / ckpt.BEST_FILE)
    assert m.geometry.eval_flip != motion and m.geometry.clips_per_video == 8 and m.bits == job.model.bits
