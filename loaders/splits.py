"""Official split files -> one manifest per split (train, val, test), validation carved from train.

    c3dhash splits --dataset ucf101 --root data/ucf101 --split 1     # -> data/ucf101/manifests/split1/*.tsv
    c3dhash splits --dataset synth --root data/synth
    c3dhash splits --dataset folder --root DIR | --list FILE       # your own videos: loaders/folder.py

    from c3dhash.loaders.splits import build_splits, load_split, manifest_dir
    records = build_splits(dataset="hmdb51", root="data/hmdb51", split=1)  # {"train": [..], "val", "test"}
    train = load_split(cfg.data, "train")      # <manifest_dir(cfg.data)>/train.tsv minus skip.tsv

One folder rule (`manifest_dir`): data.manifest_dir, or <root>/manifests/split<N>; the skip list
(`c3dhash check-data`) lives there too and is applied once, here in `load_split`: loaders take records as given.

Where the official lists live (`lists=` overrides the folder):
  ucf101, synth  <root>/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt   label = classInd index - 1
  hmdb51         <root>/testTrainMulti_7030_splits/<class>_test_splitN.txt      tag 1 train, 2 test, 0 unused
  jhmdb          <root>/splits/<class>_test_splitN.txt                          tag 1 train, 2 test
HMDB-51/JHMDB labels are the classes in sorted order. Videos are <root>/<class>/<video>; a listed name is
found with its own extension or, failing that, any of VIDEO_EXTS (so `c3dhash transcode` output, which
swaps .avi for .mp4/.webm, needs no other step); manifests record the file actually found.

Validation rule (deterministic, per class, never touching test): UCF101/synth names carry a group (`_gXX_`,
clips of one group share actor and scene), so val takes WHOLE train groups, highest group number first, until
it holds at least `val_per_class` videos, always leaving one group in train; val is then group-disjoint from
train (with a single train group it falls back to that group's last clips). HMDB-51/JHMDB have no groups: val
takes the `val_per_class` train videos with the smallest SHA-1 of their path (stable when lists change).
"""
from __future__ import annotations

import hashlib
import os
import re
import typing
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from c3dhash.loaders.config import DataConfig, Dataset
from c3dhash.loaders.folder import build_folder_splits, folder_root
from c3dhash.loaders.manifest import DataError, DataWarning, VideoRecord, read_manifest, write_manifest
from c3dhash.loaders.probe import filter_records
from c3dhash.loaders.videoio import VIDEO_EXTS

DATASETS = typing.get_args(Dataset)  # one list: the Literal of DataConfig.dataset
LIST_DIRS = {"ucf101": "ucfTrainTestlist", "synth": "ucfTrainTestlist",
             "hmdb51": "testTrainMulti_7030_splits", "jhmdb": "splits"}
WHERE_TO_GET = {
    "ucf101": "unzip UCF101TrainTestSplits-RecognitionTask.zip (crcv.ucf.edu/data/UCF101) into the root",
    "synth": "run `c3dhash synth --out <root>` first",
    "hmdb51": "unrar test_train_splits.rar (the HMDB-51 site, 'three splits') into the root",
    "jhmdb": "unzip splits.zip (jhmdb.is.tue.mpg.de) into the root",
}
# Official (train, test) totals of the full datasets, to flag truncated list files.
OFFICIAL_COUNTS = {("ucf101", 1): (9537, 3783), ("ucf101", 2): (9586, 3734), ("ucf101", 3): (9624, 3696),
                   ("hmdb51", 1): (3570, 1530), ("hmdb51", 2): (3570, 1530), ("hmdb51", 3): (3570, 1530)}
FULL_CLASSES = {"ucf101": 101, "hmdb51": 51}
_GROUP = re.compile(r"_g(\d+)_c(\d+)")


@dataclass(frozen=True)
class Listed:
    path: str  # as written in the list: <class>/<video>
    class_name: str
    where: str  # "<list file>:<line>" for error messages


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with 1-based numbers; the official files have CRLF endings and trailing blanks."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    return [(i, s) for i, s in enumerate(path.read_text(errors="replace").splitlines(), start=1) if s.strip()]


def parse_class_ind(path: Path) -> list[str]:
    names: list[str] = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{n}: expected '<index> <ClassName>', got {line.strip()!r}")
        if int(parts[0]) != len(names) + 1:
            raise DataError(f"{path}:{n}: class index {parts[0]} out of order; indices must run 1, 2, 3, ...")
        names.append(parts[1])
    if not names:
        raise DataError(f"{path}: no classes listed; the file is empty or truncated, re-download it")
    return names


def parse_ucf101(lists: Path, split: int) -> tuple[list[str], dict[str, list[Listed]]]:
    """classInd + trainlist0N ('Class/v_..avi <label>') + testlist0N ('Class/v_..avi')."""
    names = parse_class_ind(lists / "classInd.txt")
    index = {n: i for i, n in enumerate(names, start=1)}
    out: dict[str, list[Listed]] = {}
    for split_name in ("train", "test"):
        path = lists / f"{split_name}list{split:02d}.txt"
        out[split_name] = []
        for n, line in _lines(path):
            parts, where = line.split(), f"{path}:{n}"
            want = 2 if split_name == "train" else 1
            if len(parts) != want or "/" not in parts[0]:
                form = "<Class>/<video> <label>" if split_name == "train" else "<Class>/<video>"
                raise DataError(f"{where}: expected '{form}', got {line.strip()!r}")
            cls = parts[0].split("/", 1)[0]
            if cls not in index:
                raise DataError(f"{where}: class {cls!r} is not in {lists / 'classInd.txt'}; "
                                f"use the classInd.txt that came with these lists")
            if split_name == "train" and parts[1] != str(index[cls]):
                raise DataError(f"{where}: label {parts[1]} but classInd.txt gives {cls} index {index[cls]}; "
                                f"use the classInd.txt that came with these lists")
            out[split_name].append(Listed(parts[0], cls, where))
        if not out[split_name]:
            raise DataError(f"{path}: no videos listed; the file is empty or truncated, "
                            f"re-download the split files")
    return names, out


def parse_tagged(lists: Path, split: int) -> tuple[list[str], dict[str, list[Listed]]]:
    """HMDB-51 / JHMDB: one '<class>_test_splitN.txt' per class, lines '<video> <tag>'.

    Tags: 1 train, 2 test, 0 unused (dropped)."""
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in lists.glob(f"*{suffix}") if p.is_file())
    if not files:
        raise DataError(f"{lists}: no *{suffix} files; expected one per class")
    names = [p.name[: -len(suffix)] for p in files]
    out: dict[str, list[Listed]] = {"train": [], "test": []}
    for path, cls in zip(files, names):
        before = {k: len(v) for k, v in out.items()}
        for n, line in _lines(path):
            parts, where = line.split(), f"{path}:{n}"
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{where}: expected '<video> <tag>' with tag 0 (unused), 1 (train) or "
                                f"2 (test), "
                                f"got {line.strip()!r}")
            if parts[1] != "0":
                out["train" if parts[1] == "1" else "test"].append(Listed(f"{cls}/{parts[0]}", cls, where))
        for k in out:
            if len(out[k]) == before[k]:
                tag = 1 if k == "train" else 2
                raise DataError(f"{path}: class {cls} has no {k} videos (tag {tag}); the file is truncated "
                                f"or from another split set, re-download the split files")
    return names, out


class _Finder:
    """Finds '<class>/<video>' under root with its own or any known video extension.

    Lists each folder once (13k stat calls on a network volume are slow)."""

    def __init__(self, root: Path):
        self.root, self.listing = root, dict[str, set[str]]()

    def find(self, rel: str) -> str | None:
        folder, _, name = rel.rpartition("/")
        if folder not in self.listing:
            d = self.root / folder
            self.listing[folder] = set(os.listdir(d)) if d.is_dir() else set()
        files, stem = self.listing[folder], os.path.splitext(name)[0]
        for cand in (name, *(stem + ext for ext in VIDEO_EXTS)):
            if cand in files:
                return f"{folder}/{cand}" if folder else cand
        return None


def resolve(listed: dict[str, list[Listed]], names: list[str], root: Path, check_files: bool,
            dataset: str) -> dict[str, list[VideoRecord]]:
    label = {n: i for i, n in enumerate(names)}
    finder, seen, out = _Finder(root), dict[str, str](), dict[str, list[VideoRecord]]()
    for split_name, items in listed.items():
        if not items:
            raise DataError(f"{dataset} {split_name}: no videos listed; the list file is empty or truncated, "
                            f"re-download the official split files")
        out[split_name] = []
        for item in items:
            if item.path in seen:
                raise DataError(f"{item.where}: {item.path} is listed twice (first at {seen[item.path]}); "
                                f"a video must be in one split once; fix the list")
            seen[item.path] = item.where
            path: str | None = item.path
            if check_files and (path := finder.find(item.path)) is None:
                raise DataError(f"{item.where}: video {item.path} not found under {root} (also tried "
                                f"{', '.join(VIDEO_EXTS)}); check --root, or re-download/re-transcode it "
                                f"(see <out>/transcode_failures.tsv)")
            out[split_name].append(VideoRecord(path or item.path, label[item.class_name], item.class_name))
    return out


def _val_order(records: list[VideoRecord], want: int) -> list[VideoRecord]:
    """The videos of one class's train split that go to val (see the module docstring for the rule)."""
    if want <= 0 or len(records) < 2:
        return []
    groups: dict[int, list[VideoRecord]] = defaultdict(list)
    for r in records:
        m = _GROUP.search(r.path.rsplit("/", 1)[-1])
        groups[int(m.group(1)) if m else -1].append(r)
    if -1 not in groups and len(groups) >= 2:
        val: list[VideoRecord] = []
        for g in sorted(groups, reverse=True)[:-1]:  # the lowest group always stays in train
            if len(val) >= want:
                break
            val += groups[g]
        return val
    if -1 not in groups:  # one group: not group-disjoint, but still deterministic
        return sorted(records, key=lambda r: r.path)[-min(want, len(records) - 1):]
    by_hash = sorted(records, key=lambda r: hashlib.sha1(r.path.encode()).hexdigest())
    return by_hash[: min(want, len(records) - 1)]


def carve_val(train: list[VideoRecord], val_per_class: int) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Split train into (train, val) per class; both keep the list order."""
    per_class: dict[int, list[VideoRecord]] = defaultdict(list)
    for r in train:
        per_class[r.label].append(r)
    val = {r for recs in per_class.values() for r in _val_order(recs, val_per_class)}
    return [r for r in train if r not in val], [r for r in train if r in val]


def _check_official(dataset: str, split: int, names: list[str], listed: dict[str, list[Listed]]) -> None:
    expect = OFFICIAL_COUNTS.get((dataset, split))
    got = (len(listed["train"]), len(listed["test"]))
    if expect and len(names) == FULL_CLASSES[dataset] and got != expect:
        warnings.warn(f"{dataset} split {split}: the lists give {got[0]} train / {got[1]} test videos, the "
                      f"official split has {expect[0]} / {expect[1]}; the list files look incomplete or "
                      f"edited, re-download them", DataWarning, stacklevel=3)


def build_splits(*, dataset: str, root: str | Path, split: int = 1, manifest_dir: str | Path | None = None,
                 val_per_class: int = 2, check_files: bool = True,
                 lists: str | Path | None = None, list_file: str | Path | None = None, test_fraction: float = 0.3,
                 group: str | None = None) -> dict[str, list[VideoRecord]]:
    """Parse the official lists, carve val from train, write <manifest_dir>/{train,val,test}.tsv, return them.

    manifest_dir None = <root>/manifests/split<split>; lists None = <root>/<LIST_DIRS[dataset]>.
    dataset "folder": class folders under root or `list_file`, split by `test_fraction` (and `group`); each
    unusable line or file and each class too small to split is one DataWarning.
    """
    if dataset == "folder":
        return _folder_splits(root, list_file, split, manifest_dir, test_fraction, val_per_class, group,
                              check_files)
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if split not in (1, 2, 3):
        raise DataError(f"{dataset}: split {split}; the official splits are 1, 2 and 3")
    if dataset == "synth" and split != 1:
        raise DataError(f"synth: split {split}; `c3dhash synth` writes split 1 only")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; pass the folder that holds the class folders "
                        f"(--root), e.g. the output of `c3dhash transcode` or `c3dhash synth`")
    list_dir = Path(lists) if lists is not None else root / LIST_DIRS[dataset]
    if not list_dir.is_dir():
        raise DataError(f"{list_dir}: split list folder not found; {WHERE_TO_GET[dataset]} (or pass --lists)")
    parse = parse_ucf101 if dataset in ("ucf101", "synth") else parse_tagged
    names, listed = parse(list_dir, split)
    if dataset in FULL_CLASSES:
        _check_official(dataset, split, names, listed)
    records = resolve(listed, names, root, check_files, dataset)
    train, val = carve_val(records["train"], val_per_class)
    out = {"train": train, "val": val, "test": records["test"]}
    target = Path(manifest_dir) if manifest_dir is not None else default_manifest_dir(root, split)
    for split_name, recs in out.items():
        write_manifest(target / f"{split_name}.tsv", recs)
    return out


def build_splits_for(d: DataConfig) -> dict[str, list[VideoRecord]]:
    """build_splits with a job's data config (what preflight and the demo run when manifests are missing)."""
    return build_splits(dataset=d.dataset, root=d.root, split=d.split, manifest_dir=d.manifest_dir or None,
                        val_per_class=d.val_per_class, list_file=d.list_file or None, test_fraction=d.test_fraction,
                        group=d.group or None)


def _folder_splits(root, list_file, split, manifest_dir, test_fraction, val_per_class, group,
                   check_files) -> dict[str, list[VideoRecord]]:
    if split != 1:
        raise DataError(f"folder: split {split}; a folder dataset has one split (1)")
    base = folder_root(root, list_file)
    target = Path(manifest_dir) if manifest_dir is not None else default_manifest_dir(base, 1)
    result = build_folder_splits(root=base, list_file=list_file, manifest_dir=target, test_fraction=test_fraction,
                                 val_per_class=val_per_class, group=group, check_files=check_files)
    for line in result.problems + result.dropped_classes:
        warnings.warn(line, DataWarning, stacklevel=3)
    return result.splits


def default_manifest_dir(root: str | Path, split: int) -> Path:
    """Where `c3dhash splits` writes a split's manifests when no folder is given: <root>/manifests/split<N>."""
    return Path(root) / "manifests" / f"split{split}"


def manifest_dir(data_cfg: DataConfig) -> Path:
    """The folder of a job's manifests and skip.tsv: data.manifest_dir, else the default for data.root/split."""
    return Path(data_cfg.manifest_dir) if data_cfg.manifest_dir else default_manifest_dir(data_cfg.root,
                                                                                          data_cfg.split)


def manifest_path(data_cfg: DataConfig, split_name: str) -> Path:
    """<manifest_dir(data_cfg)>/<split_name>.tsv."""
    return manifest_dir(data_cfg) / f"{split_name}.tsv"


def load_split(data_cfg: DataConfig, split_name: str) -> list[VideoRecord]:
    """A split's records minus those listed in skip.tsv (the one place the skip list is applied)."""
    return filter_records(read_manifest(manifest_path(data_cfg, split_name)), manifest_dir(data_cfg))


def split_stats(records: list[VideoRecord]) -> tuple[int, int, int, int]:
    """(videos, classes, fewest per class, most per class) of one split, for printing."""
    per_class: dict[int, int] = defaultdict(int)
    for r in records:
        per_class[r.label] += 1
    counts = list(per_class.values()) or [0]
    return len(records), len(per_class), min(counts), max(counts)
