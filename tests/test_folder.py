"""The `folder` dataset: class folders and list files -> stratified, deterministic, group-respecting splits.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_folder.py
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from c3dhash.cluster.cli import main
from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.folder import build_folder_splits, stratified_split
from c3dhash.loaders.manifest import VideoRecord, read_manifest
from c3dhash.loaders.splits import load_split


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_folders(root: Path, sizes: dict[str, int], *, nested: bool = True) -> Path:
    for cls, n in sizes.items():
        for i in range(n):
            sub = f"part{i % 2}/" if nested else ""
            touch(root / cls / f"{sub}{cls}_{i:03d}.webm")
    return root


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["splits", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_class_folders_give_stratified_disjoint_splits(tmp_path, capsys):
    root = make_folders(tmp_path / "mine", {"cats": 10, "dogs": 20, "birds": 7})
    touch(root / "cats" / "notes.txt")  # not a video extension: ignored
    rc, out, err = run_cli(capsys, "--dataset", "folder", "--root", str(root), "--test-fraction", "0.3",
                           "--val-per-class", "2")
    assert rc == 0 and err == "", err
    m = {s: read_manifest(root / "manifests" / "split1" / f"{s}.tsv") for s in ("train", "val", "test")}
    paths = [r.path for recs in m.values() for r in recs]
    assert len(paths) == len(set(paths)) == 37  # every video once, no text file
    assert {r.class_name: r.label for r in m["train"]} == {"birds": 0, "cats": 1, "dogs": 2}
    assert Counter(r.class_name for r in m["test"]) == {"cats": 3, "dogs": 6, "birds": 2}  # round(0.3 n)
    assert Counter(r.class_name for r in m["val"]) == {"cats": 2, "dogs": 2, "birds": 2}
    assert all(r.path.startswith(f"{r.class_name}/part") for r in m["train"])
    assert "train with: --set data.dataset=folder" in out
    # the loaders' own reader finds them through data.dataset=folder
    cfg = DataConfig(dataset="folder", root=str(root))
    assert load_split(cfg, "test") == m["test"]


def test_an_empty_video_in_a_class_folder_is_named_and_left_out(tmp_path, capsys):
    root = make_folders(tmp_path / "mine", {"cats": 10, "dogs": 10})
    touch(root / "dogs" / "broken.webm", b"")
    rc, out, err = run_cli(capsys, "--dataset", "folder", "--root", str(root))
    assert rc == 0
    assert err.splitlines() == [f"warning: {root / 'dogs' / 'broken.webm'}: empty file; replace it or delete it"]
    m = [r.path for s in ("train", "val", "test") for r in read_manifest(root / "manifests" / "split1" / f"{s}.tsv")]
    assert len(m) == 20 and "dogs/broken.webm" not in m


def test_split_is_deterministic_and_stable_when_videos_are_added(tmp_path):
    root = make_folders(tmp_path / "a", {"x": 12, "y": 12})
    first = build_folder_splits(root=root, list_file=None, manifest_dir=tmp_path / "m1").splits
    again = build_folder_splits(root=root, list_file=None, manifest_dir=tmp_path / "m2").splits
    assert first == again
    touch(root / "x" / "late_000.webm")  # one more video: SHA-1 order keeps the others where they were
    grown = build_folder_splits(root=root, list_file=None, manifest_dir=tmp_path / "m3").splits
    moved = {r.path for r in first["test"]} ^ {r.path for r in grown["test"]}
    assert len(moved) <= 2


def write_list(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_file_reports_bad_lines_and_missing_files_one_line_each(tmp_path, capsys):
    root = tmp_path / "lib"
    lines = ["path,label"]
    for i in range(8):
        touch(root / f"v{i}.webm")
        lines.append(f"v{i}.webm,{'run' if i < 4 else 'jump'}")
    touch(root / "empty.webm", b"")
    lines += ["v9.webm,run", "no label here", "empty.webm,jump", "# a comment", "v0.webm,run"]
    lst = write_list(root / "videos.csv", lines)
    rc, out, err = run_cli(capsys, "--dataset", "folder", "--list", str(lst), "--val-per-class", "1")
    assert rc == 0
    problems = err.strip().splitlines()
    assert len(problems) == 4, err
    assert f"{lst}:10: " in problems[0] and "v9.webm: not found" in problems[0]
    assert f"{lst}:11: expected 'path,label'" in problems[1]
    assert f"{lst}:12: " in problems[2] and "empty file" in problems[2]
    assert f"{lst}:14: v0.webm is listed twice (first at {lst}:2)" in problems[3]
    recs = [r for s in ("train", "val", "test") for r in read_manifest(root / "manifests/split1" / f"{s}.tsv")]
    assert sorted(r.path for r in recs) == [f"v{i}.webm" for i in range(8)]
    assert {r.class_name: r.label for r in recs} == {"jump": 0, "run": 1}


def test_a_spreadsheet_csv_with_bom_crlf_header_and_quoted_commas(tmp_path):
    root = tmp_path / "lib"
    rows = ["path,label"]
    for i in range(8):
        touch(root / f"v {i}.webm")  # a space in the name
        label = "left, or west" if i < 4 else "up"  # a comma inside a quoted field
        rows.append(f'"v {i}.webm","{label}"')
    lst = root / "videos.csv"
    lst.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")  # as spreadsheets save it
    res = build_folder_splits(root=None, list_file=lst, manifest_dir=tmp_path / "m", val_per_class=1)
    assert res.problems == [] and res.classes == ["left, or west", "up"]
    assert sum(len(v) for v in res.splits.values()) == 8


def test_tsv_list_with_integer_labels_and_absolute_paths(tmp_path):
    vids = tmp_path / "store"
    rows = []
    for i in range(12):
        touch(vids / f"clip{i}.mkv")
        rows.append(f"{vids / f'clip{i}.mkv'}\t{10 if i % 2 else 2}")  # numeric order: 2 before 10
    lst = write_list(tmp_path / "lists" / "all.tsv", rows)
    res = build_folder_splits(root=None, list_file=lst, manifest_dir=tmp_path / "m", val_per_class=1)
    assert res.classes == ["2", "10"] and not res.problems
    assert all(os.path.isabs(r.path) for r in res.splits["train"])
    assert {r.class_name: r.label for r in res.splits["test"]} == {"2": 0, "10": 1}


def test_tiny_classes_are_named_and_left_out(tmp_path, capsys):
    root = make_folders(tmp_path / "t", {"big": 6, "solo": 1, "pair": 2})
    rc, out, err = run_cli(capsys, "--dataset", "folder", "--root", str(root), "--val-per-class", "1")
    assert rc == 0
    assert err.strip().splitlines() == [
        "warning: class 'solo' (1 video(s), fewer than 2 videos) is too small to split: left out; "
        "add videos (or groups) to it, or merge it into another class"]
    train = read_manifest(root / "manifests/split1/train.tsv")
    test = read_manifest(root / "manifests/split1/test.tsv")
    assert {r.class_name for r in train} == {r.class_name for r in test} == {"big", "pair"}
    assert {r.class_name: r.label for r in train} == {"big": 0, "pair": 1}  # no gap left by 'solo'
    assert Counter(r.class_name for r in train + test)["pair"] == 2


def test_groups_never_straddle_train_val_and_test(tmp_path):
    recs = [VideoRecord(f"{c}/v_{c}_g{g:02d}_c{k}.avi", lab, c)
            for lab, c in enumerate(["a", "b", "c"]) for g in range(1, 9) for k in range(3)]
    splits, dropped = stratified_split(recs, test_fraction=0.25, val_per_class=3, group=r"_g(\d+)_")
    assert not dropped
    side = {}
    for name, rs in splits.items():
        for r in rs:
            key = (r.class_name, re.search(r"_g(\d+)_", r.path).group(1))
            assert side.setdefault(key, name) == name, key
    assert all(Counter(r.label for r in splits["test"])[c] == 6 for c in range(3))  # 2 whole groups = 25 %
    assert all(Counter(r.label for r in splits["val"])[c] == 3 for c in range(3))


def test_groups_shared_across_classes_stay_on_one_side(tmp_path):
    # a person (p1..p6) appears in every class: a person's videos must all be train or all be test
    recs = [VideoRecord(f"{c}/p{p}_{c}.webm", lab, c) for lab, c in enumerate(["wave", "sit"]) for p in range(1, 7)]
    splits, dropped = stratified_split(recs, test_fraction=0.34, val_per_class=0, group=r"(p\d+)_")
    people = {s: {r.path.split("/")[1].split("_")[0] for r in rs} for s, rs in splits.items()}
    assert not people["train"] & people["test"] and len(people["test"]) == 2 and not dropped


def test_class_in_one_group_cannot_be_split_and_is_named():
    recs = [VideoRecord(f"a/s1_{i}.webm", 0, "a") for i in range(4)] + \
           [VideoRecord(f"b/s{i}_{i}.webm", 1, "b") for i in range(4)]
    splits, dropped = stratified_split(recs, test_fraction=0.3, val_per_class=0, group=r"(s\d+)_")
    assert dropped == ["class 'a' (4 video(s), all its videos in one --group group) is too small to split: left "
                       "out; add videos (or groups) to it, or merge it into another class"]
    assert {r.class_name for s in splits.values() for r in s} == {"b"}


def test_nothing_usable_is_a_user_error_listing_every_problem(tmp_path, capsys):
    lst = write_list(tmp_path / "l.csv", ["gone1.webm,a", "gone2.webm,b", "bad"])
    rc, out, err = run_cli(capsys, "--dataset", "folder", "--list", str(lst))
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[0] == f"c3dhash splits: error: {lst}: no usable video (3 problem(s)); expected path,label lines"
    assert len(lines) == 4 and "gone1.webm: not found" in lines[1] and f"{lst}:3: expected" in lines[3]


def test_videos_with_no_class_folder_are_counted_and_the_one_folder_layout_then_splits(tmp_path, capsys):
    root = tmp_path / "flat"
    for i in range(6):
        touch(root / f"clip{i}.MP4")
    rc, out, err = run_cli(capsys, "--dataset", "folder", "--root", str(root))
    assert rc == 2 and f"6 video(s) lie directly in {root}" in err and str(root / "all") in err
    for p in list(root.iterdir()):  # as the message says: one folder, for a library with no labels
        touch(root / "all" / p.name)
        p.unlink()
    rc, out, err = run_cli(capsys, "--dataset", "folder", "--root", str(root))
    assert rc == 0 and "1 classes" in out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "folder"], "--root DIR is required (or --list FILE)"),
    (["--dataset", "synth", "--root", ".", "--list", "l.csv"], "--list/--group apply to --dataset folder only"),
    (["--dataset", "folder", "--root", "R", "--group", "(("], "not a valid regular expression"),
    (["--dataset", "folder", "--root", "R", "--test-fraction", "1.5"], "must be in [0, 1)"),
    (["--dataset", "folder", "--root", "nowhere"], "nowhere: folder not found"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    make_folders(tmp_path / "R", {"a": 3})
    os.chdir(tmp_path)
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_job_config_builds_the_same_manifests_as_the_cli(tmp_path, capsys):
    from c3dhash.cluster.config import load_config
    from c3dhash.loaders.splits import build_splits_for
    root = make_folders(tmp_path / "cfg", {"a": 9, "b": 7})
    lst = write_list(tmp_path / "l.tsv", [f"{p.relative_to(root)}\t{p.parent.parent.name}"
                                          for p in sorted(root.rglob("*.webm"))])
    assert run_cli(capsys, "--dataset", "folder", "--list", str(lst), "--root", str(root), "--out",
                   str(tmp_path / "cli"), "--test-fraction", "0.25", "--group", "_00(\\d)")[0] == 0
    job = load_config(None, ["data.dataset=folder", f"data.root={root}", f"data.list_file={lst}",
                             "data.test_fraction=0.25", "data.group=_00(\\d)", f"data.manifest_dir={tmp_path / 'j'}"])
    built = build_splits_for(job.data)
    for name in ("train", "val", "test"):
        assert read_manifest(tmp_path / "cli" / f"{name}.tsv") == built[name] == load_split(job.data, name)
