"""Transcoding: size, constant frame rate, short GOP, failures reported and skipped, resume, splits find
the outputs.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_transcode.py
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from c3dhash.cluster.cli import main
from c3dhash.loaders.manifest import DataError
from c3dhash.loaders.splits import build_splits
from c3dhash.loaders.synth import make_synth_dataset
from c3dhash.loaders.transcode import FAILURES, transcode_tree, transcode_video
from c3dhash.loaders.videoio import GOP, probe_video, read_frames


def write_raw(path: Path, values: list[int], *, pts: list[int] | None = None, fmt: str = "avi",
              rate: Fraction = Fraction(30000, 1001), size: tuple[int, int] = (40, 56)) -> Path:
    """An MPEG-4 Part 2 video like UCF101's (long GOP); frame k is flat grey values[k] at pts[k] / rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = size[1], size[0], "yuv420p"
        s.codec_context.gop_size = 250
        s.codec_context.time_base = 1 / rate
        for k, v in enumerate(values):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), v, np.uint8), format="rgb24")
            frame.pts, frame.time_base = (pts[k] if pts else k), 1 / rate
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


@pytest.fixture()
def raw(tmp_path) -> Path:
    src = tmp_path / "raw"
    write_raw(src / "Walk" / "v_Walk_g01_c01.avi", [(12 * k) % 250 for k in range(40)])
    (src / "Walk" / "v_Walk_g01_c02.avi").write_bytes(np.random.default_rng(0).bytes(4096))  # corrupt
    (src / "Walk" / "v_Walk_g02_c01.avi").write_bytes(b"")  # empty
    (src / "lists").mkdir()
    (src / "lists" / "classInd.txt").write_text("1 Walk\n")
    return src


def test_transcode_converts_reports_and_resumes(raw, tmp_path):
    out = tmp_path / "out"
    s = transcode_tree(raw, out, codec="vp9", size=(32, 47), workers=1, progress=False)
    assert (s.total, s.done, s.skipped, s.failed, s.copied, s.size) == (3, 1, 0, 2, 1, (32, 48))
    good = out / "Walk" / "v_Walk_g01_c01.webm"
    info = probe_video(good)
    assert (info.frames, info.height, info.width, info.codec) == (40, 32, 48, "vp9")
    assert info.fps == pytest.approx(30000 / 1001)
    assert max(np.diff((*info.keyframes, info.frames))) <= GOP  # the source has one keyframe in 40 frames
    # grey levels survive (frame order and content), up to compression error
    np.testing.assert_allclose(read_frames(good).mean((1, 2, 3)), [(12 * k) % 250 for k in range(40)], atol=6)
    report = (out / FAILURES).read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in report) == [str(raw / "Walk" / "v_Walk_g01_c02.avi"),
                                                              str(raw / "Walk" / "v_Walk_g02_c01.avi")]
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in report)
    assert sorted(p.name for p in (out / "Walk").iterdir()) == ["v_Walk_g01_c01.webm"]  # no half files
    assert (out / "lists" / "classInd.txt").read_text() == "1 Walk\n"

    stamp = good.stat().st_mtime_ns
    again = transcode_tree(raw, out, codec="vp9", size=(32, 47), workers=1, progress=False)
    assert (again.done, again.skipped, again.failed) == (0, 1, 2)
    assert good.stat().st_mtime_ns == stamp  # finished output not rewritten


def test_interrupted_part_file_is_redone_and_clean_run_drops_report(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    write_raw(src / "A" / "a.avi", list(range(0, 80, 10)))
    (out / "A").mkdir(parents=True)
    half = out / "A" / ".a.k1ll3d.tmp.mp4"
    half.write_bytes(b"half a file")  # what a killed run leaves behind (loaders/atomic.py's temp name)
    (out / FAILURES).write_text("old\treport\n")
    s = transcode_tree(src, out, codec="h264", size=(32, 48), workers=2, progress=False)  # the pool path
    assert (s.done, s.failed, s.failures_path) == (1, 0, None)
    assert probe_video(out / "A" / "a.mp4").frames == 8
    assert not half.exists() and not (out / FAILURES).exists()
    assert sorted(p.name for p in (out / "A").iterdir()) == ["a.mp4"]


def test_variable_frame_rate_becomes_constant(tmp_path):
    # frames at slots 0 1 2 4 5 6 9 (2 and 3 missing: dropped frames); a player holds the previous frame
    src = write_raw(tmp_path / "vfr.mkv", [0, 30, 60, 90, 120, 150, 180], pts=[0, 1, 2, 4, 5, 6, 9],
                    fmt="matroska", rate=Fraction(25))
    assert transcode_video(src, tmp_path / "cfr.avi", codec="mjpeg", size=(32, 48)) == 10
    means = read_frames(tmp_path / "cfr.avi").mean((1, 2, 3))
    np.testing.assert_allclose(means, [0, 30, 60, 60, 90, 120, 150, 150, 150, 180], atol=3)
    assert probe_video(tmp_path / "cfr.avi").fps == 25.0


def test_splits_find_transcoded_files(tmp_path):
    raw = tmp_path / "raw"  # a UCF101-format tree of MJPEG .avi files, lists included
    make_synth_dataset(raw, classes=2, per_class=2, frames=6, size=(32, 32), codec="mjpeg", workers=1,
                       progress=False)
    s = transcode_tree(raw, tmp_path / "out", codec="vp9", size=(32, 32), workers=1, progress=False)
    assert (s.done, s.failed, s.copied) == (4, 0, 3)
    recs = build_splits(dataset="ucf101", root=tmp_path / "out", val_per_class=0)
    assert sorted(r.path for r in recs["train"] + recs["test"]) == sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.webm"))
    assert len(recs["train"]) == 2 and len(recs["test"]) == 2


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(DataError, match="source folder not found"):
        transcode_tree(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos"):
        transcode_tree(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DataError, match="must differ"):
        transcode_tree(tmp_path / "empty", tmp_path / "empty")
    assert main(["transcode", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"--src {tmp_path / 'nope'}: folder not found" in capsys.readouterr().err


def test_cli_transcode_exit_status_counts_failures(raw, tmp_path, capsys):
    rc = main(["transcode", "--src", str(raw), "--out", str(tmp_path / "o"), "--codec", "mjpeg",
               "--size", "32x47", "--procs", "1"])
    captured = capsys.readouterr()
    assert rc == 1 and "1 transcoded, 0 already done, 2 failed" in captured.out
    assert "rounded to even 32x48" in captured.err
