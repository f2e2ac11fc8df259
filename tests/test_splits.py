"""Official split parsers, val carving and their errors, on tiny fixtures in each dataset's own format.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_splits.py
"""
from __future__ import annotations

import re
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest

from c3dhash.cluster.cli import main
from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.manifest import DataError, read_manifest
from c3dhash.loaders.splits import DataWarning, build_splits, manifest_path

FIXTURES = Path(__file__).parent / "fixtures" / "splits"
UCF_LISTS = "ucfTrainTestlist"
HMDB_LISTS = "testTrainMulti_7030_splits"


def make_root(tmp_path: Path, dataset: str, ext: str = ".avi") -> Path:
    """Copy a fixture and create an empty file for every listed video (with `ext`, as transcode would)."""
    root = tmp_path / dataset
    shutil.copytree(FIXTURES / dataset, root)
    for lst in root.rglob("*.txt"):
        if lst.name == "classInd.txt":
            continue
        for line in lst.read_text().splitlines():
            if not line.strip():
                continue
            name = line.split()[0]
            rel = name if "/" in name else f"{re.sub(r'_test_split[123].txt$', '', lst.name)}/{name}"
            target = (root / rel).with_suffix(ext)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    return root


def per_class(records) -> dict[str, int]:
    return dict(Counter(r.class_name for r in records))


def test_ucf101_counts_labels_and_group_disjoint_val(tmp_path):
    root = make_root(tmp_path, "ucf101")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 3-class fixture is not "the full dataset": no count warning
        out = build_splits(dataset="ucf101", root=root, split=1, val_per_class=2)
    # fixture: 4 groups x 2 clips per class (Basketball g04 has 3), test = g01; val = whole highest group g04
    assert per_class(out["test"]) == {"ApplyEyeMakeup": 2, "Basketball": 2, "HandstandPushups": 2}
    assert per_class(out["val"]) == {"ApplyEyeMakeup": 2, "Basketball": 3, "HandstandPushups": 2}
    assert per_class(out["train"]) == {"ApplyEyeMakeup": 4, "Basketball": 4, "HandstandPushups": 4}
    assert {r.class_name: r.label for r in out["train"]} == {"ApplyEyeMakeup": 0, "Basketball": 1,
                                                             "HandstandPushups": 2}
    group = {name: {(r.class_name, re.search(r"_g(\d+)_", r.path).group(1)) for r in recs}
             for name, recs in out.items()}
    assert not group["val"] & group["train"] and not group["test"] & (group["train"] | group["val"])
    assert {g for _, g in group["val"]} == {"04"} and {g for _, g in group["test"]} == {"01"}
    assert "HandstandPushups/v_HandStandPushups_g04_c01.avi" in {r.path for r in out["val"]}
    for name, recs in out.items():  # written manifests == returned records
        assert read_manifest(root / "manifests" / "split1" / f"{name}.tsv") == recs


def test_hmdb51_tags_unused_dropped_and_hash_val(tmp_path):
    root = make_root(tmp_path, "hmdb51")
    out = build_splits(dataset="hmdb51", root=root, split=1, val_per_class=1, manifest_dir=tmp_path / "m")
    # fixture tags per class (1 train, 2 test, 0 unused): brush_hair 5/2/1, cartwheel 4/2/2, catch 3/1/0
    assert per_class(out["train"]) == {"brush_hair": 4, "cartwheel": 3, "catch": 2}
    assert per_class(out["val"]) == {"brush_hair": 1, "cartwheel": 1, "catch": 1}
    assert per_class(out["test"]) == {"brush_hair": 2, "cartwheel": 2, "catch": 1}
    assert {r.class_name: r.label for r in out["test"]} == {"brush_hair": 0, "cartwheel": 1, "catch": 2}
    listed = {}
    for lst in (root / HMDB_LISTS).glob("*.txt"):
        cls = lst.name.replace("_test_split1.txt", "")
        listed.update({f"{cls}/{ln.split()[0]}": ln.split()[1] for ln in lst.read_text().splitlines()})
    assert all(listed[r.path] == "1" for r in out["train"] + out["val"])
    assert all(listed[r.path] == "2" for r in out["test"])
    assert sum(t == "0" for t in listed.values()) == 3  # the unused ones are in no split
    assert read_manifest(tmp_path / "m" / "val.tsv") == out["val"]


def test_jhmdb_and_val_is_deterministic_and_disjoint(tmp_path):
    root = make_root(tmp_path, "jhmdb")
    a = build_splits(dataset="jhmdb", root=root, val_per_class=2, manifest_dir=tmp_path / "a")
    b = build_splits(dataset="jhmdb", root=root, val_per_class=2, manifest_dir=tmp_path / "b")
    assert a == b
    assert per_class(a["train"]) == {"brush_hair": 1, "clap": 2}
    assert per_class(a["val"]) == {"brush_hair": 2, "clap": 2}
    assert per_class(a["test"]) == {"brush_hair": 2, "clap": 1}
    paths = [set(r.path for r in a[k]) for k in ("train", "val", "test")]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])


def test_transcoded_extension_is_found(tmp_path):
    root = make_root(tmp_path, "ucf101", ext=".webm")  # as `c3dhash transcode --codec vp9` leaves it
    out = build_splits(dataset="ucf101", root=root)
    assert all(r.path.endswith(".webm") and (root / r.path).is_file() for recs in out.values() for r in recs)
    unchecked = build_splits(dataset="ucf101", root=root, check_files=False, manifest_dir=tmp_path / "m")
    assert all(r.path.endswith(".avi") for r in unchecked["test"])


def test_manifest_path_resolution():
    cfg = DataConfig(root="data/ucf101", split=2)
    assert manifest_path(cfg, "train") == Path("data/ucf101/manifests/split2/train.tsv")
    cfg = DataConfig(root="data/ucf101", split=2, manifest_dir="elsewhere")
    assert manifest_path(cfg, "val") == Path("elsewhere/val.tsv")


def test_incomplete_full_lists_warn(tmp_path):
    lists = tmp_path / UCF_LISTS
    lists.mkdir()
    names = [f"C{i:03d}" for i in range(101)]
    (lists / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, 1)))
    train = [f"{n}/v_{n}_g08_c01.avi {i}\n" for i, n in enumerate(names, 1)]
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text("".join(f"{n}/v_{n}_g01_c01.avi\n" for n in names))
    with pytest.warns(DataWarning, match="101 train / 101 test.*9537 / 3783.*incomplete"):
        build_splits(dataset="ucf101", root=tmp_path, check_files=False)


def _edit(path: Path, line: int, text: str | None) -> None:
    """Replace (or with None delete) 1-based `line` of `path`."""
    lines = path.read_text().splitlines()
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


BAD_UCF = [  # (file, line, new text, expected message pattern)
    ("trainlist01.txt", 3, "Archery/v_Archery_g02_c01.avi 1",
     r"trainlist01.txt:3: class 'Archery' is not in"),
    ("trainlist01.txt", 2, "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c02.avi 2",
     r"trainlist01.txt:2: label 2 but"),
    ("trainlist01.txt", 4, "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c02.avi", r"trainlist01.txt:4: expected"),
    ("testlist01.txt", 5, "Basketball", r"testlist01.txt:5: expected '<Class>/<video>'"),
    ("testlist01.txt", 6, "Basketball/v_Basketball_g01_c01.avi", r"testlist01.txt:6: .* listed twice .*:3"),
    ("classInd.txt", 2, "Basketball", r"classInd.txt:2: expected '<index> <ClassName>'"),
    ("classInd.txt", 2, "3 Basketball", r"classInd.txt:2: class index 3 out of order"),
]


@pytest.mark.parametrize("name,line,text,pattern", BAD_UCF)
def test_bad_ucf_lists_name_file_and_line(tmp_path, name, line, text, pattern):
    root = make_root(tmp_path, "ucf101")
    _edit(root / UCF_LISTS / name, line, text)
    with pytest.raises(DataError, match=pattern):
        build_splits(dataset="ucf101", root=root)


def test_missing_things_and_empty_split(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        build_splits(dataset="ucf101", root=tmp_path / "nope")
    with pytest.raises(DataError, match=f"{HMDB_LISTS}: split list folder not found.*test_train_splits.rar"):
        build_splits(dataset="hmdb51", root=tmp_path)
    root = make_root(tmp_path, "ucf101")
    (root / "Basketball" / "v_Basketball_g03_c02.avi").unlink()
    with pytest.raises(DataError,
                       match=r"trainlist01.txt:10: video Basketball/v_Basketball_g03_c02.avi not found"):
        build_splits(dataset="ucf101", root=root)
    (root / UCF_LISTS / "testlist01.txt").write_text("\r\n")
    with pytest.raises(DataError, match=r"testlist01.txt: no videos listed"):
        build_splits(dataset="ucf101", root=root, check_files=False)
    with pytest.raises(DataError, match="split 4"):
        build_splits(dataset="ucf101", root=root, split=4)


def test_bad_hmdb_lines(tmp_path):
    root = make_root(tmp_path, "hmdb51")
    lst = root / HMDB_LISTS / "catch_test_split1.txt"
    original = lst.read_text()
    _edit(lst, 2, "Catch_03_catch_f_nm_np1_fr_med_3.avi 3")
    with pytest.raises(DataError, match=r"catch_test_split1.txt:2: expected '<video> <tag>' with tag 0"):
        build_splits(dataset="hmdb51", root=root)
    lst.write_text(original.replace(" 2 ", " 0 "))  # catch's only test video marked unused
    with pytest.raises(DataError, match=r"catch_test_split1.txt: class catch has no test videos \(tag 2\)"):
        build_splits(dataset="hmdb51", root=root)
    with pytest.raises(DataError, match=r"no \*_test_split2.txt files"):
        build_splits(dataset="hmdb51", root=root, split=2)


def test_cli_splits_prints_counts_and_errors_in_one_line(tmp_path, capsys):
    root = make_root(tmp_path, "hmdb51")
    assert main(["splits", "--dataset", "hmdb51", "--root", str(root), "--val-per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"train\s+9 videos\s+3 classes\s+per class min 2 max 4", out)
    assert re.search(r"test\s+5 videos\s+3 classes\s+per class min 1 max 2", out)
    assert main(["splits", "--dataset", "ucf101", "--root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--root {tmp_path / 'missing'}: folder not found" in err[0]
