"""DALI clip loaders on CPU (VP9 and MJPEG): exact frames, normalisation, sharding, P x K, padding, bad files.

Run: RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_pipelines.py
Exactness tests use resize == crop == the video size, so DALI's output must equal the PyAV-decoded frames
(normalised with mean/std) at the frame indices our temporal rule picks.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections import Counter

import pytest
import torch

from c3dhash.loaders import pipelines
from c3dhash.loaders.augment import shuffle_order
from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.manifest import DataError, VideoRecord, write_manifest
from c3dhash.loaders.probe import DataWarning, write_skip_list
from c3dhash.loaders.sampler import Clip, clip_span, eval_positions, start_frame
from c3dhash.loaders.splits import load_split
from c3dhash.loaders.videoio import VideoInfo
from tests.videos import decode_rgb, make_dataset, write_video

SIZE = (32, 48)
SHORT = "Class1/v_Class1_g00"  # 3 frames: shorter than a 4-frame clip at stride 2
BASE = DataConfig(num_frames=4, stride=2, resize=SIZE, crop=SIZE, pk_classes=2, pk_samples=2, batch_size=3,
                  clips_per_video=1, num_threads=1, seed=0)


@pytest.fixture(scope="module", params=["vp9", "mjpeg"])
def dataset(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    ext = ".webm" if request.param == "vp9" else ".avi"
    records = make_dataset(root, classes=3, per_class=4, frames=8, size=SIZE, codec=request.param,
                           frames_of={SHORT + ext: 3})
    return root, records


def expected_clip(path, position: float, cfg: DataConfig, flip: bool = False) -> torch.Tensor:
    """The reference clip: PyAV frames at our start/stride, edge-padded, normalised, C x T x H x W."""
    frames = decode_rgb(path)
    n = len(frames)
    start = start_frame(position, n_frames=n, span=clip_span(cfg.num_frames, cfg.stride))
    idx = [min(start + t * cfg.stride, n - 1) for t in range(cfg.num_frames)]
    x = torch.from_numpy(frames[idx]).float() / 255.0  # T H W C
    x = (x - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    x = x.permute(3, 0, 1, 2)
    return x.flip(-1) if flip else x


def assert_frames_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # DALI and PyAV convert YUV -> RGB with slightly different rounding: allow 3 levels of 255.
    torch.testing.assert_close(actual, expected, atol=3 / 255 / min(BASE.std), rtol=0)


def test_eval_clips_are_the_centre_clip_at_train_stride(dataset):
    root, records = dataset
    cfg = dataclasses.replace(BASE, clips_per_video=2)
    loader = pipelines.build_eval_loader(records, root, cfg, rank=0, world_size=1, device_id=None)
    seen = []
    for clips, labels, index in loader:
        assert clips.dtype == torch.float32 and labels.dtype == index.dtype == torch.int64
        assert clips.shape[1:] == (3, cfg.num_frames, *cfg.crop)
        for x, label, v in zip(clips, labels.tolist(), index.tolist()):
            j = sum(1 for s in seen if s == v)
            assert label == records[v].label
            assert_frames_close(x, expected_clip(root / records[v].path, eval_positions(2)[j], cfg))
            seen.append(v)
    assert sorted(seen) == sorted(list(range(len(records))) * 2)


def test_train_batches_match_the_plan_including_flip_and_short_video_padding(dataset):
    root, records = dataset
    cfg = dataclasses.replace(BASE, pk_classes=3, pk_samples=4)
    loader = pipelines.build_train_loader(records, root, cfg, rank=0, world_size=1, device_id=None, epoch=1)
    plan = loader.plan(1)
    assert any(c.flip for b in plan for c in b) and any(not c.flip for b in plan for c in b)
    assert any(records[c.index].path.startswith(SHORT) for b in plan for c in b)
    batches = list(loader)
    assert len(batches) == len(loader) == 1
    for (clips, labels), planned in zip(batches, plan):
        assert labels.tolist() == [records[c.index].label for c in planned]
        for x, c in zip(clips, planned):
            assert_frames_close(x, expected_clip(root / records[c.index].path, c.position, cfg, c.flip))


def test_step_sizes_are_the_plans_batch_sizes_on_every_rank(dataset):
    """What the Trainer gathers once an epoch in place of the loss's per-step size gather (issue 29)."""
    root, records = dataset
    cfg = dataclasses.replace(BASE, pk_classes=3, pk_samples=4)
    sizes = []
    for rank in range(5):  # 12 clips over 5 ranks: 3, 3, 2, 2, 2
        loader = pipelines.build_train_loader(records, root, cfg, rank=rank, world_size=5, device_id=None)
        assert loader.step_sizes(2) == [len(b) for b in loader.plan(2)]
        sizes.append(loader.step_sizes(2))
    assert [s[0] for s in sizes] == [3, 3, 2, 2, 2]


def test_values_are_normalised_with_mean_and_std_on_the_unit_scale(dataset):
    root, records = dataset
    cfg = dataclasses.replace(BASE, resize=(24, 36), crop=(16, 16))
    loader = pipelines.build_train_loader(records, root, cfg, rank=0, world_size=1, device_id=None)
    clips, _ = next(iter(loader))
    assert clips.shape == (4, 3, 4, 16, 16)
    lo = (0 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    hi = (1 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    per_channel = clips.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()
    # the dark background (16/255) dominates every clip
    background = (16 / 255 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    torch.testing.assert_close(per_channel.median(1).values, background, atol=4 / 255 / min(cfg.std), rtol=0)


def test_random_crop_and_flip_are_seeded_by_seed_and_epoch(dataset):
    root, records = dataset
    cfg = dataclasses.replace(BASE, resize=(32, 48), crop=(16, 16))

    def first(epoch: int, seed: int = 0) -> torch.Tensor:
        loader = pipelines.build_train_loader(records, root, dataclasses.replace(cfg, seed=seed), rank=0,
                                              world_size=1, device_id=None)
        loader.set_epoch(epoch)
        return next(iter(loader))[0]

    a = first(2)
    assert torch.equal(a, first(2))
    assert not torch.equal(a, first(3))
    assert not torch.equal(a, first(2, seed=1))


def test_two_ranks_together_equal_one_process_and_run_equal_steps(dataset):
    root, records = dataset
    one = list(pipelines.build_train_loader(records, root, BASE, rank=0, world_size=1, device_id=None))
    ranks = [pipelines.build_train_loader(records, root, BASE, rank=r, world_size=2, device_id=None)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 3  # ceil(12 / (2 * 2))
    per_rank = [list(loader) for loader in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    for (x, y), (x0, y0), (x1, y1) in zip(one, *per_rank):
        assert x0.shape[0] == x1.shape[0] == 2
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        assert sorted(Counter(y.tolist()).values()) == [2, 2]  # P=2 classes x K=2 clips


def test_random_sampler_gives_batch_size_clips_per_rank(dataset):
    root, records = dataset
    cfg = dataclasses.replace(BASE, sampler="random", batch_size=2)
    loaders = [pipelines.build_train_loader(records, root, cfg, rank=r, world_size=2, device_id=None)
               for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 3
    assert [[x.shape[0] for x, _ in loader] for loader in loaders] == [[2, 2, 2], [2, 2, 2]]


def test_eval_shards_are_disjoint_and_cover_the_split(dataset):
    root, records = dataset
    cfg = dataclasses.replace(BASE, batch_size=4)
    got = []
    for rank in range(2):
        loader = pipelines.build_eval_loader(records, root, cfg, rank=rank, world_size=2, device_id=None)
        mine = []
        for clips, labels, index in loader:
            assert labels.tolist() == [records[i].label for i in index.tolist()]
            mine += index.tolist()
        assert mine == loader.video_indices
        got += mine
    assert sorted(got) == list(range(len(records)))


def test_static_repeats_the_first_frame_of_the_same_clip(dataset):
    root, records = dataset

    def first(static: bool) -> torch.Tensor:
        loader = pipelines.build_train_loader(records, root, BASE, rank=0, world_size=1, device_id=None,
                                              static=static)
        return next(iter(loader))[0]

    moving, static = first(False), first(True)
    assert not torch.equal(moving, moving[:, :, :1].expand_as(moving))
    assert torch.equal(static, static[:, :, :1].expand_as(static))
    torch.testing.assert_close(static[:, :, 0], moving[:, :, 0])


def test_train_loader_resumes_mid_epoch_at_the_next_step(dataset):
    """What a resume from a step checkpoint relies on: set_epoch(e, start_step=s) yields steps s.. of epoch e."""
    root, records = dataset
    loader = pipelines.build_train_loader(records, root, BASE, rank=0, world_size=1, device_id=None)
    loader.set_epoch(1)
    full = list(loader)
    loader.set_epoch(1, start_step=1)
    rest = list(loader)
    assert len(full) == len(loader) >= 2 and len(rest) == len(full) - 1
    for (x, labels), (y, labels_y) in zip(full[1:], rest):
        assert torch.equal(x, y) and torch.equal(labels, labels_y)


def test_skip_list_is_applied_once_by_load_split_not_again_by_the_loader(dataset, tmp_path):
    root, records = dataset
    cfg = dataclasses.replace(BASE, root=str(root), manifest_dir=str(tmp_path), batch_size=16)
    write_manifest(tmp_path / "val.tsv", records)
    write_skip_list(tmp_path, [(records[1].path, "broken"), (records[5].path, "broken")])
    with pytest.warns(DataWarning, match=r"skipping 2 video\(s\) listed in .*skip.tsv"):
        kept = load_split(cfg, "val")
    assert kept == [r for i, r in enumerate(records) if i not in (1, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loader neither re-reads nor re-applies skip.tsv
        loader = pipelines.build_eval_loader(kept, root, cfg, rank=0, world_size=1, device_id=None)
        index = torch.cat([v for _, _, v in loader]).tolist()
    assert index == list(range(len(kept)))  # positions in the records as passed


def test_corrupt_file_at_decode_time_is_reported_and_replaced(dataset, tmp_path):
    root, records = dataset
    bad = records[4]  # class 1
    (tmp_path / bad.path).parent.mkdir(parents=True)
    for r in records:  # a private copy of the dataset with one garbage file
        (tmp_path / r.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r.path).write_bytes((root / r.path).read_bytes() if r is not bad else b"\x1a\x45" * 500)
    loader = pipelines.build_train_loader(records, tmp_path, BASE, rank=0, world_size=1, device_id=None)
    with pytest.warns(DataWarning, match=bad.path.split("/")[-1]):
        batches = list(loader)
    assert len(batches) == len(loader) and all(x.shape[0] == 4 for x, _ in batches)
    assert list(loader.skipped) == [bad.path]
    for (_, labels), planned in zip(batches, loader.plan(0)):  # the stand-in has the same class
        assert labels.tolist() == [records[c.index].label for c in planned]


def test_file_that_only_dali_rejects_is_found_and_skipped(dataset, tmp_path, monkeypatch):
    """Simulate a file PyAV accepts but DALI cannot decode: the in-flight files are decoded one by one."""
    root, records = dataset
    for r in records:
        (tmp_path / r.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r.path).write_bytes((root / r.path).read_bytes())
    (tmp_path / records[7].path).write_bytes(b"\x00" * 2000)
    real = pipelines.probe_video
    fake = VideoInfo(8, *SIZE, 25.0, "vp9", (0,))
    monkeypatch.setattr(pipelines, "probe_video", lambda blob: fake if blob == b"\x00" * 2000 else real(blob))
    cfg = dataclasses.replace(BASE, batch_size=5)
    loader = pipelines.build_eval_loader(records, tmp_path, cfg, rank=0, world_size=1, device_id=None)
    with pytest.warns(DataWarning, match="DALI cannot decode it"):
        index = torch.cat([v for _, _, v in loader]).tolist()
    assert index == [i for i in range(len(records)) if i != 7]
    assert list(loader.skipped) == [records[7].path]


def test_gpu_requested_without_cuda_is_a_clear_error(dataset):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    root, records = dataset
    with pytest.raises(DataError, match="data.device=gpu but no CUDA device"):
        pipelines.build_train_loader(records, root, dataclasses.replace(BASE, device="gpu"), rank=0,
                                     world_size=1, device_id=0)


def test_codec_dali_cannot_decode_on_cpu_stops_with_the_fix(tmp_path):
    write_video(tmp_path / "a.mp4", frames=4, size=SIZE, codec="mpeg4")
    records = [VideoRecord("a.mp4", 0, "A")]
    loader = pipelines.build_eval_loader(records, tmp_path, BASE, rank=0, world_size=1, device_id=None)
    with pytest.raises(DataError, match=r"a.mp4: codec mpeg4 is not decodable by DALI on CPU.*transcode"):
        list(loader)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_together_equal_one_process_when_the_world_does_not_divide_the_batch(dataset, world):
    """P x K = 4 over 3 ranks: slices of 2, 1, 1 clips; decoded and concatenated they are the 1-rank batch."""
    root, records = dataset
    one = list(pipelines.build_train_loader(records, root, BASE, rank=0, world_size=1, device_id=None))
    per_rank = [list(pipelines.build_train_loader(records, root, BASE, rank=r, world_size=world, device_id=None))
                for r in range(world)]
    assert [len(batches) for batches in per_rank] == [len(one)] * world
    sizes = {2: [2, 2], 3: [2, 1, 1]}[world]
    for step, (x, y) in enumerate(one):
        assert [b[step][0].shape[0] for b in per_rank] == sizes
        assert torch.equal(torch.cat([b[step][0] for b in per_rank]), x)
        assert torch.equal(torch.cat([b[step][1] for b in per_rank]), y)


def test_pk_batch_smaller_than_the_world_is_rejected(dataset):
    root, records = dataset
    with warnings.catch_warnings(), pytest.raises(DataError, match="= 4 is smaller than the world size 5"):
        pipelines.build_train_loader(records, root, BASE, rank=0, world_size=5, device_id=None)


def test_eval_flip_decodes_each_centre_clip_then_its_exact_mirror(dataset):
    root, records = dataset
    cfg = dataclasses.replace(BASE, crop=(24, 32), clips_per_video=2, batch_size=4, eval_flip=True)
    loader = pipelines.build_eval_loader(records, root, cfg, rank=0, world_size=1, device_id=None)
    plain = pipelines.build_eval_loader(records, root, dataclasses.replace(cfg, eval_flip=False), rank=0,
                                        world_size=1, device_id=None)
    views = torch.cat([x for x, _, _ in loader])
    index = torch.cat([i for _, _, i in loader])
    assert views.shape[0] == 4 * len(records) and index.tolist() == [v for v in range(len(records)) for _ in range(4)]
    assert torch.equal(views[1::2], views[0::2].flip(-1))  # the mirror of the same centre window, bit for bit
    assert torch.equal(views[0::2], torch.cat([x for x, _, _ in plain]))


def test_a_zoomed_clip_is_the_crop_of_a_larger_resize(dataset):
    """data.zoom_jitter: a clip of zoom z is resized to z x data.resize before the crop, exactly what a config
    with that larger resize decodes (the same DALI resize), at the same crop position and flip."""
    root, records = dataset
    cfg = dataclasses.replace(BASE, resize=(16, 24), crop=(16, 16))
    clips = [Clip(i, 0.3, 0.25, 0.75, i % 2 == 1, zoom=2.0) for i in range(3)]

    def decode(c: DataConfig, batch: list[Clip]) -> torch.Tensor:
        decoder = pipelines.ClipDecoder(records, root, c, batch_size=3, device_id=None, static=False, replace=False)
        return torch.cat([x for _, x in decoder.run([batch])])

    zoomed = decode(cfg, clips)
    larger = decode(dataclasses.replace(cfg, resize=(32, 48)), [dataclasses.replace(c, zoom=1.0) for c in clips])
    assert zoomed.shape == (3, 3, 4, 16, 16) and torch.equal(zoomed, larger)
    assert not torch.equal(zoomed, decode(cfg, [dataclasses.replace(c, zoom=1.0) for c in clips]))


@pytest.mark.parametrize("frames", [False, True])
def test_reverse_and_frame_negatives_are_the_forward_decode_reordered_bit_for_bit(dataset, frames):
    """data.reverse_negatives: the loader's backward clip is the forward decode of the same window, frames
    reversed; its label is 4 x video + 1, its forward twin's 4 x video. data.frame_negatives: a video's last two
    clips are that decode with frame 0 held (label + 2) and in shuffle_order (label + 3)."""
    root, records = dataset
    k = 6 if frames else 4
    cfg = dataclasses.replace(BASE, sampler="video", pk_classes=3, pk_samples=k, reverse_negatives=True,
                              frame_negatives=frames)
    loader = pipelines.build_train_loader(records, root, cfg, rank=0, world_size=1, device_id=None)
    plan = loader.plan(0)[0]
    (x, labels), = list(loader)[:1]
    kinds = [0, 1, 0, 1, 2, 3] if frames else [0, 1, 0, 1]
    assert labels.tolist() == [4 * c.index + kind for c, kind in zip(plan, kinds * 3)]
    decoder = pipelines.ClipDecoder(records, root, cfg, batch_size=3 * k, device_id=None, static=False,
                                    replace=False)
    plain = [dataclasses.replace(c, reverse=False, scramble="") for c in plan]
    forward = torch.cat([v for _, v in decoder.run([plain])])
    order = list(shuffle_order(4))
    for j, kind in enumerate(kinds * 3):
        want = [forward[j], forward[j].flip(1), forward[j][:, [0, 0, 0, 0]], forward[j][:, order]][kind]
        assert torch.equal(x[j], want)
        assert kind == 0 or not torch.equal(x[j], forward[j])
