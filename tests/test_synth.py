"""Synthetic action videos: UCF101 layout and lists, PyAV + DALI CPU decoding, determinism, motion-only
classes.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_synth.py
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from c3dhash.cluster.cli import main
from c3dhash.loaders.manifest import DataError
from c3dhash.loaders.splits import build_splits
from c3dhash.loaders.synth import MOTIONS, group_layout, make_synth_dataset
from c3dhash.loaders.videoio import GOP, probe_video, read_frames

LISTS = "ucfTrainTestlist"


def _synth(out, **kw):
    args = dict(classes=3, per_class=4, frames=8, size=(32, 48), codec="mjpeg", seed=0, workers=1,
                progress=False)
    return make_synth_dataset(out, **{**args, **kw})


def test_layout_lists_and_group_disjoint_split(tmp_path):
    s = _synth(tmp_path, classes=3, per_class=7)
    groups, test_groups = group_layout(7)
    assert (groups, test_groups) == (3, 1)  # ceil(7/3) groups, round(3 * 7/25) = 1 test group
    lists = tmp_path / LISTS
    assert (lists / "classInd.txt").read_text() == "1 MoveRight\n2 MoveLeft\n3 MoveUp\n"
    train = [ln.split() for ln in (lists / "trainlist01.txt").read_text().splitlines()]
    test = (lists / "testlist01.txt").read_text().splitlines()
    pattern = re.compile(r"^(\w+)/v_\1_g(\d\d)_c(\d\d)\.avi$")
    for path, label in train:
        cls, g, _ = pattern.match(path).groups()
        assert MOTIONS[int(label) - 1] == cls and int(g) > test_groups
    assert all(int(pattern.match(p).group(2)) <= test_groups for p in test)
    # video i of a class -> group i % 3 + 1: groups 1, 2, 3 hold 3, 2, 2 videos; group 1 is test
    assert s.counts == {"train": 3 * 4, "test": 3 * 3} and len(test) == 9 and len(train) == 12
    assert sorted(s.files) == sorted([p for p, _ in train] + test)
    assert all((tmp_path / f).is_file() for f in s.files)
    assert s.classes == MOTIONS[:3] and "21 mjpeg videos" in s.format_summary()


@pytest.mark.parametrize("codec,ext", [("vp9", ".webm"), ("mjpeg", ".avi")])
def test_decodes_with_pyav_and_dali_cpu(tmp_path, codec, ext):
    from nvidia.dali import fn, pipeline_def

    frames, (h, w) = 20, (32, 48)
    _synth(tmp_path, classes=2, per_class=2, frames=frames, size=(h, w), codec=codec)
    records = build_splits(dataset="synth", root=tmp_path, val_per_class=0)
    recs = records["train"] + records["test"]
    assert len(recs) == 4 and all(r.path.endswith(ext) for r in recs)
    for r in recs:
        info = probe_video(tmp_path / r.path)
        assert (info.frames, info.height, info.width, info.fps) == (frames, h, w, 25.0)
        assert max(np.diff((*info.keyframes, info.frames))) <= GOP and info.keyframes[0] == 0

    @pipeline_def(batch_size=len(recs), num_threads=1, device_id=None)
    def pipe():
        video, label = fn.experimental.readers.video(
            device="cpu", filenames=[str(tmp_path / r.path) for r in recs], labels=[r.label for r in recs],
            sequence_length=frames, random_shuffle=False, name="reader")
        return video, label

    p = pipe()
    p.build()
    video, label = (np.array(out.as_tensor()) for out in p.run())
    assert video.shape == (len(recs), frames, h, w, 3) and video.dtype == np.uint8
    assert label.ravel().tolist() == [r.label for r in recs]
    for got, r in zip(video, recs):
        # the same stream through two decoders: equal up to the YUV->RGB conversion (a few levels on sharp
        # edges), and every DALI frame is closest to the PyAV frame of the same index (same order, no skips)
        ref = read_frames(tmp_path / r.path).astype(np.float32)
        dist = np.abs(got.astype(np.float32)[:, None] - ref[None]).mean((2, 3, 4))  # [dali frame, pyav frame]
        assert dist.argmin(1).tolist() == list(range(frames))
        assert dist.diagonal().max() < 6.0


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = (_synth(tmp_path / n, codec="vp9", seed=s) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    for f in a.files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / a.files[0]).read_bytes() != (tmp_path / "c" / c.files[0]).read_bytes()
    # the video's content depends on its name, not on how many videos were asked for
    more = _synth(tmp_path / "d", codec="vp9", seed=3, per_class=5)
    assert (tmp_path / "d" / a.files[0]).read_bytes() == (tmp_path / "a" / a.files[0]).read_bytes()
    assert len(more.files) == 15


def _motion_features(clips: np.ndarray) -> np.ndarray:
    """Per-clip global Lucas-Kanade translation and rotation from frame differences: [N, 7]."""
    g = clips.astype(np.float64).mean(-1) / 255  # N, T, H, W grey
    it, mid = g[:, 1:] - g[:, :-1], (g[:, 1:] + g[:, :-1]) / 2
    iy, ix = np.gradient(mid, axis=(2, 3))
    a, b, c = (ix * ix).sum((2, 3)), (ix * iy).sum((2, 3)), (iy * iy).sum((2, 3))
    p, q = -(ix * it).sum((2, 3)), -(iy * it).sum((2, 3))
    det = a * c - b * b + 1e-9
    u, v = (c * p - b * q) / det, (a * q - b * p) / det  # per-pair translation (px / frame)
    h, w = g.shape[2:]
    yy, xx = np.mgrid[0:h, 0:w]
    wt = np.abs(it)  # centre of change on the torus (the frame wraps), then rotation about it
    cx = np.angle((wt * np.exp(2j * np.pi * xx / w)).sum((2, 3))) % (2 * np.pi) * w / (2 * np.pi)
    cy = np.angle((wt * np.exp(2j * np.pi * yy / h)).sum((2, 3))) % (2 * np.pi) * h / (2 * np.pi)
    ox = (xx - cx[..., None, None] + w / 2) % w - w / 2
    oy = (yy - cy[..., None, None] + h / 2) % h - h / 2
    rot_grad = ox * iy - oy * ix
    rot = -(it * rot_grad).sum((2, 3)) / (rot_grad ** 2).sum((2, 3))
    return np.stack([u.mean(1), v.mean(1), abs(u).mean(1), abs(v).mean(1), 10 * rot.mean(1),
                     abs(np.diff(u, axis=1)).mean(1), abs(np.diff(v, axis=1)).mean(1)], 1)


def _histograms(clips: np.ndarray) -> np.ndarray:
    frames = clips.reshape(-1, clips.shape[2] * clips.shape[3], 3)
    return np.stack([np.concatenate([np.bincount(f[:, ch] // 16, minlength=16) for ch in range(3)])
                     for f in frames]).astype(np.float64)


def _nearest_centroid_accuracy(x_train, y_train, x_test, y_test) -> float:
    scale = x_train.std(0) + 1e-9
    labels = np.unique(y_train)
    mu = np.stack([x_train[y_train == k].mean(0) for k in labels]) / scale
    d = ((x_test[:, None] / scale - mu[None]) ** 2).sum(-1)
    return float((labels[d.argmin(1)] == y_test).mean())


def test_class_is_in_the_motion_not_in_a_frame(tmp_path):
    classes = 8
    _synth(tmp_path, classes=classes, per_class=12, frames=12, size=(32, 32), codec="mjpeg")
    splits = build_splits(dataset="synth", root=tmp_path, val_per_class=0)
    data = {}
    for name in ("train", "test"):
        clips = np.stack([read_frames(tmp_path / r.path) for r in splits[name]])
        data[name] = clips, np.array([r.label for r in splits[name]])
    (clips_tr, y_tr), (clips_te, y_te) = data["train"], data["test"]
    t = clips_tr.shape[1]
    # single frames: every frame of every video is one sample, raw pixels
    pixels_tr, pixels_te = (c.reshape(-1, 32 * 32 * 3).astype(np.float64) for c in (clips_tr, clips_te))
    frame_acc = _nearest_centroid_accuracy(pixels_tr, y_tr.repeat(t), pixels_te, y_te.repeat(t))
    # single frames, translation-invariant: per-channel 16-bin histograms (colour, contrast, blob size)
    hist_acc = _nearest_centroid_accuracy(_histograms(clips_tr), y_tr.repeat(t),
                                          _histograms(clips_te), y_te.repeat(t))
    motion_acc = _nearest_centroid_accuracy(_motion_features(clips_tr), y_tr,
                                            _motion_features(clips_te), y_te)
    assert frame_acc < 2 / classes, f"single frames classify at {frame_acc:.2f} (chance {1 / classes:.2f})"
    assert hist_acc < 2 / classes, f"frame histograms classify at {hist_acc:.2f} (chance {1 / classes:.2f})"
    assert motion_acc > 0.8, f"motion features classify at only {motion_acc:.2f}"


def test_bad_arguments_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="classes=13"):
        _synth(tmp_path, classes=13)
    with pytest.raises(DataError, match="even H and W"):
        _synth(tmp_path, size=(33, 48))
    with pytest.raises(DataError, match="per_class=1"):
        _synth(tmp_path, per_class=1)
    with pytest.raises(DataError, match="codec='av1'"):
        _synth(tmp_path, codec="av1")


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["synth", "--out", str(out), "--classes", "2", "--per-class", "2", "--frames", "4", "--size",
               "32x32", "--codec", "mjpeg", "--procs", "1"])
    assert rc == 0 and "wrote 4 mjpeg videos (4 frames, 32x32) of 2 classes" in capsys.readouterr().out
    assert probe_video(out / "MoveLeft" / "v_MoveLeft_g02_c01.avi").frames == 4
    assert main(["synth", "--out", str(out), "--size", "32x31"]) == 2
    assert "even H and W" in capsys.readouterr().err
