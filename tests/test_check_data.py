"""`c3dhash check-data` and the skip list: bad files are found, listed in skip.tsv, and dropped by loaders."""
from __future__ import annotations

import dataclasses
import warnings

import pytest

from c3dhash.cluster.cli import main
from c3dhash.loaders.manifest import DataError, VideoRecord, write_manifest
from c3dhash.loaders.probe import DataWarning, filter_records, load_skip_list, probe_videos, write_skip_list
from c3dhash.loaders.videoio import VideoError, probe_video
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


def test_probe_video_reads_paths_and_bytes_alike(messy):
    root, records, _ = messy
    for rel, codec in ((records[0].path, "vp9"), (records[-1].path, "mjpeg")):
        info = probe_video(root / rel)
        assert (info.frames, info.codec, info.height, info.width) == (6, codec, 32, 32)
        assert probe_video((root / rel).read_bytes()) == info
    with pytest.raises(VideoError, match=r"^cannot read video"):  # bytes: the caller names the file
        probe_video(b"not a video" * 50)
    with pytest.raises(VideoError, match=r"garbage.webm: cannot read video"):
        probe_video(root / "Class0/garbage.webm")


@pytest.mark.parametrize("decode", [True, False])
def test_probe_reports_each_bad_file_once_with_a_reason(messy, decode):
    root, good, extra = messy
    bad = probe_videos(good + extra + extra[:1], root, workers=2, decode=decode)
    assert [p for p, _ in bad] == [r.path for r in extra]
    reasons = dict(bad)
    assert reasons["Class1/missing.webm"] == "file not found"
    assert reasons["Class0/garbage.webm"].startswith("cannot open with PyAV")


def test_dali_decode_check_catches_what_pyav_misses(messy, monkeypatch):
    import c3dhash.loaders.probe as probe

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
    assert main(["check-data", "--root", str(root), "--manifest-dir", str(mdir), "--procs", "2"]) == 0
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


class _CountingPipelines:
    """Wraps loaders.probe._decode_pipeline: records (batch_size, device, device_id) of each pipeline built."""

    def __init__(self, monkeypatch, fake_device: str | None = None):
        import c3dhash.loaders.probe as probe

        self.built: list[tuple[int, str, int | None]] = []
        real = probe._decode_pipeline

        def build(*, batch_size, device, device_id, num_threads):
            self.built.append((batch_size, device, device_id))
            # DALI on CPU stands in for NVDEC: the pipeline is real, the recorded arguments are the caller's
            return real(batch_size=batch_size, device=fake_device or device, device_id=None,
                        num_threads=num_threads)

        monkeypatch.setattr(probe, "_decode_pipeline", build)


def test_decode_check_builds_one_pipeline_for_many_files(messy, monkeypatch, tmp_path):
    import c3dhash.loaders.probe as probe

    root, good, _ = messy
    many = [dataclasses.replace(r, path=f"copy{i}/{r.path}") for i in range(3) for r in good]  # 18 files
    for r, src in zip(many, good * 3):
        (tmp_path / r.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r.path).write_bytes((root / src.path).read_bytes())
    pipes = _CountingPipelines(monkeypatch)
    assert probe_videos(many, tmp_path, workers=2) == []
    assert pipes.built == [(probe.DECODE_BATCH, "cpu", None)]  # before: one pipeline per 2 files (9 here)


def test_decode_check_finds_the_same_bad_files_batched(messy, monkeypatch):
    import c3dhash.loaders.probe as probe

    root, good, extra = messy
    monkeypatch.setattr(probe, "_pyav_reason", lambda path, device: "")  # let everything past PyAV
    records = extra[:1] + good + extra[1:2]  # 7 files, 2 undecodable: batches of 3 = [bad, 2 good], [3 good], [bad]
    assert len(records) == 7
    one_by_one = {}
    for r in records:
        one_by_one.update(probe.dali_decode_errors([root / r.path], batch_size=1))
    pipes = _CountingPipelines(monkeypatch)
    errors = probe.dali_decode_errors([root / r.path for r in records], batch_size=3)
    assert errors == one_by_one and sorted(errors) == sorted(str(root / r.path) for r in extra[:2])
    # batch 1 fails -> its 3 files one by one; a fresh pipeline serves batch 2 and fails on batch 3 (1 file)
    assert [b for b, _, _ in pipes.built] == [3, 1, 1, 1, 3]


def test_decode_recovery_uses_the_callers_gpu_not_gpu_0(messy, monkeypatch):
    """Finding: ranks 1..3 of a node re-decoded on GPU 0. Every pipeline must get the caller's device_id."""
    import c3dhash.loaders.probe as probe

    root, good, extra = messy
    pipes = _CountingPipelines(monkeypatch, fake_device="cpu")
    errors = probe.dali_decode_errors([root / r.path for r in good[:2] + extra[:1]], device="mixed",
                                      device_id=3, batch_size=2)
    assert list(errors) == [str(root / extra[0].path)]
    assert pipes.built and {(d, i) for _, d, i in pipes.built} == {("mixed", 3)}


def test_loader_recovery_passes_its_own_device(monkeypatch, tmp_path):
    from collections import deque

    from c3dhash.loaders import pipelines
    from c3dhash.loaders.config import DataConfig
    from c3dhash.loaders.sampler import Clip

    seen = {}
    monkeypatch.setattr(pipelines, "decode_device", lambda requested, device_id: "mixed")
    monkeypatch.setattr(pipelines, "dali_decode_errors",
                        lambda paths, **kw: seen.update(kw) or {str(paths[0]): "broken"})
    dec = pipelines.ClipDecoder([VideoRecord("a.webm", 0, "A")], tmp_path, DataConfig(), batch_size=1,
                                device_id=2, static=False, replace=False)
    with pytest.warns(DataWarning, match="broken"):
        dec._skip_failed(deque([[Clip(0, 0.5)]]), RuntimeError("x"))
    assert seen["device_id"] == 2 and seen["device"] == "mixed"


def test_cli_exits_2_and_keeps_skip_tsv_when_every_video_is_bad(messy, tmp_path, capsys):
    root, _, extra = messy
    mdir = tmp_path / "manifests"
    write_manifest(mdir / "train.tsv", extra)
    write_skip_list(mdir, [("earlier.webm", "from an earlier check")])
    assert main(["check-data", "--root", str(root), "--manifest-dir", str(mdir), "--no-decode"]) == 2
    err = capsys.readouterr().err
    assert f"all {len(extra)} videos of {mdir} failed the check" in err and "skip.tsv left unchanged" in err
    assert load_skip_list(mdir) == {"earlier.webm"}


def test_no_decode_gpu_applies_nvdec_codec_rules_without_a_gpu(tmp_path, capsys):
    write_video(tmp_path / "A/a.mp4", frames=3, codec="mpeg4")
    mdir = tmp_path / "m"
    write_manifest(mdir / "train.tsv", [VideoRecord("A/a.mp4", 0, "A")])
    args = ["check-data", "--root", str(tmp_path), "--manifest-dir", str(mdir), "--no-decode"]
    assert main(args + ["--device", "cpu"]) == 2  # the only video is not CPU-decodable
    assert main(args + ["--device", "gpu"]) == 0 and load_skip_list(mdir) == set()
    assert "checked 1 videos" in capsys.readouterr().out
