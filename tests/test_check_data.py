"""`c3dhash check-data` and the skip list: bad files are found, listed in skip.tsv, and dropped by loaders."""
from __future__ import annotations

import warnings

import pytest

from cluster.cli import main
from loaders.manifest import DataError, VideoRecord, write_manifest
from loaders.probe import (DataWarning, filter_records, load_skip_list, probe_videos, video_info,
                           write_skip_list)
from tests.videos import make_dataset, write_video


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Six good VP9/MJPEG videos, plus a garbage file, a truncated file, an empty one and a missing one."""
    root = tmp_path_factory.mktemp("messy")
    records = make_dataset(root, classes=2, per_class=2, frames=6, size=(32, 32))
    write_video(root / "Class0/v_Class0_g09.avi", frames=6, size=(32, 32), codec="mjpeg")
    records.append(VideoRecord("Class0/v_Class0_g09.avi", 0, "Class0"))
    full = (root / records[0].path).read_bytes()
    broken = {"Class0/garbage.webm": b"not a video" * 50, "Class1/truncated.webm": full[: len(full) // 2],
              "Class1/empty.webm": b""}
    for rel, blob in broken.items():
        (root / rel).write_bytes(blob)
    extra = [VideoRecord(rel, int(rel[5]), rel.split("/")[0]) for rel in [*broken, "Class1/missing.webm"]]
    return root, records, extra


def test_video_info_counts_frames_from_path_and_bytes(messy):
    root, records, _ = messy
    assert video_info(root / records[0].path) == (6, "vp9")
    assert video_info((root / records[-1].path).read_bytes()) == (6, "mjpeg")


@pytest.mark.parametrize("decode", [True, False])
def test_probe_reports_each_bad_file_once_with_a_reason(messy, decode):
    root, good, extra = messy
    bad = probe_videos(good + extra + extra[:1], root, workers=2, decode=decode)
    assert [p for p, _ in bad] == [r.path for r in extra]
    reasons = dict(bad)
    assert reasons["Class1/missing.webm"] == "file not found"
    assert reasons["Class0/garbage.webm"].startswith("cannot open with PyAV")


def test_dali_decode_check_catches_what_pyav_misses(messy, monkeypatch):
    import loaders.probe as probe

    root, good, extra = messy
    monkeypatch.setattr(probe, "_pyav_reason", lambda path, device: "")  # let everything past PyAV
    bad = dict(probe_videos(good + extra[:2], root, workers=2))
    assert sorted(bad) == sorted(r.path for r in extra[:2])
    assert all(reason.startswith("DALI cannot decode it") for reason in bad.values())


def test_cpu_probe_flags_codecs_dali_cannot_decode_on_cpu(tmp_path):
    write_video(tmp_path / "a.mp4", frames=3, codec="mpeg4")
    (reason,) = [r for _, r in probe_videos([VideoRecord("a.mp4", 0, "A")], tmp_path, decode=False)]
    assert "codec mpeg4 is not decodable by DALI on CPU" in reason and "c3dhash transcode" in reason


def test_skip_list_round_trip_and_filter_warns(tmp_path):
    records = [VideoRecord(f"C/v{i}.webm", 0, "C") for i in range(4)]
    assert load_skip_list(tmp_path) == set() and filter_records(records, tmp_path) == records
    write_skip_list(tmp_path, [("C/v1.webm", "cannot open"), ("C/v3.webm", "no video frames")])
    assert load_skip_list(tmp_path) == {"C/v1.webm", "C/v3.webm"}
    with pytest.warns(DataWarning, match=r"skipping 2 video\(s\) listed in .*skip.tsv"):
        assert filter_records(records, tmp_path) == [records[0], records[2]]


def test_malformed_skip_list_names_file_and_line(tmp_path):
    (tmp_path / "skip.tsv").write_text("path\treason\nC/v1.webm\n")
    with pytest.raises(DataError, match=r"skip.tsv:2: expected path<TAB>reason"):
        load_skip_list(tmp_path)


def test_cli_writes_skip_tsv_and_loaders_then_drop_those_files(messy, tmp_path, capsys):
    root, good, extra = messy
    mdir = tmp_path / "manifests"
    write_manifest(mdir / "train.tsv", good[:3] + extra[:2])
    write_manifest(mdir / "test.tsv", good[3:] + extra[2:])
    assert main(["check-data", "--root", str(root), "--manifest-dir", str(mdir), "--workers", "2"]) == 0
    out = capsys.readouterr()
    assert f"checked {len(good) + len(extra)} videos" in out.out and f"{len(extra)} bad" in out.out
    assert "garbage.webm: cannot open with PyAV" in out.err
    assert load_skip_list(mdir) == {r.path for r in extra}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert filter_records(good + extra, mdir) == good
    assert any(f"skipping {len(extra)} video(s)" in str(w.message) for w in caught)


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["check-data"]) == 2
    assert "pass --config CFG, or --root DIR" in capsys.readouterr().err
    assert main(["check-data", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no manifests (*.tsv) found" in err and "c3dhash splits" in err and "Traceback" not in err
