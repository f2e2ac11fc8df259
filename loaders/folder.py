"""Your own videos: class folders or a list file -> train/val/test manifests (the `folder` dataset).

    c3dhash splits --dataset folder --root DIR                    # DIR/<class>/**/<video>
    c3dhash splits --dataset folder --list videos.csv [--root DIR] [--group '_g(\\d+)_'] [--test-fraction 0.3]

    from c3dhash.loaders.folder import build_folder_splits
    result = build_folder_splits(root="data/mine", list_file=None, test_fraction=0.3, val_per_class=2)
    result.splits["train"], result.problems, result.dropped_classes

Inputs:
  class folders  every file with a video extension (VIDEO_EXTS) under DIR/<class>/, at any depth; the class is
                 the first folder. DIR/manifests/ (our own output) and hidden folders are ignored.
  list file      one video a line, `path,label` (CSV) or `path<TAB>label` (TSV, chosen when the line holds a
                 tab); label = a class name or an integer; an optional header `path,label`; `#` comments. Paths
                 are relative to --root (default: the list file's folder) or absolute.
Labels are the classes in sorted order (numerically when every label is an integer), 0-based.

Split rule (deterministic, stratified, stable when the list grows): every video belongs to a GROUP (with
--group REGEX: the regex's first capture group, or its whole match, searched in the path; a path it does not
match is a group of its own; without --group each video is its own group). Groups are visited in the order of
SHA-1(group key); a group goes to test while every class it holds still needs test videos
(round(test_fraction x class size), at least 1) and keeps at least one video in train; val is then carved
from what is left by the same rule with `val_per_class` videos per class. A group is therefore never on two
sides. A class that ends with no train or no test video (too few videos, or all in one group) is too small to
split: it is dropped and named in `dropped_classes` (one line each, with its size and the fix).

Files: every path is checked on disk (exists, a readable, non-empty file); each problem is one line in
`problems` ("<file>:<line>: <what>; <fix>") and the video is left out. No usable video at all -> DataError.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from c3dhash.loaders.manifest import DataError, VideoRecord, write_manifest
from c3dhash.loaders.videoio import VIDEO_EXTS

HEADER_WORDS = {"path", "video", "file", "filename"}
SKIP_DIRS = {"manifests"}


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root ('/'-separated) or absolute
    class_name: str
    where: str  # "<list>:<line>" or the folder, for messages


@dataclass(frozen=True)
class FolderSplits:
    splits: dict[str, list[VideoRecord]]
    problems: list[str] = field(default_factory=list)  # one line per unusable line or file
    dropped_classes: list[str] = field(default_factory=list)  # one line per class too small to split
    classes: list[str] = field(default_factory=list)


def scan_class_folders(root: Path) -> list[Entry]:
    """DIR/<class>/**/<video>, in sorted order."""
    out = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if cls.name in SKIP_DIRS:
            continue
        for dirpath, dirnames, filenames in os.walk(cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if os.path.splitext(name)[1].lower() in VIDEO_EXTS:
                    rel = Path(dirpath, name).relative_to(root).as_posix()
                    out.append(Entry(rel, cls.name, str(root / cls.name)))
    return out


def _split_line(line: str) -> list[str]:
    delimiter = "\t" if "\t" in line else ","
    return [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]


def parse_list(path: Path) -> tuple[list[Entry], list[str]]:
    """(entries, problems) of a CSV/TSV list; a bad line is a problem, never a crash."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found; pass a CSV/TSV with one 'path,label' line per video")
    entries, problems = [], []
    # utf-8-sig: a spreadsheet's CSV often starts with a byte-order mark, which would hide the header line
    for n, raw in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
        line, where = raw.strip(), f"{path}:{n}"
        if not line or line.startswith("#"):
            continue
        fields = _split_line(line)
        if n == 1 and fields and fields[0].lower() in HEADER_WORDS:
            continue
        if len(fields) != 2 or not fields[0] or not fields[1]:
            problems.append(f"{where}: expected 'path,label' (or path<TAB>label), got {line!r}; fix or delete "
                            f"the line")
            continue
        entries.append(Entry(fields[0].replace("\\", "/"), fields[1], where))
    return entries, problems


def _line_number(problem: str) -> int:
    m = re.match(r"[^\n]*?:(\d+): ", problem)
    return int(m.group(1)) if m else 0


def check_file(root: Path, rel: str) -> str | None:
    """Why a listed video cannot be used, or None."""
    p = root / rel
    if not p.exists():
        return "not found"
    if not p.is_file():
        return "not a file"
    try:
        with p.open("rb") as f:
            if not f.read(1):
                return "empty file"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return None


def usable_entries(entries: list[Entry], root: Path, check_files: bool) -> tuple[list[Entry], list[str]]:
    """Drop duplicates and (check_files) missing/unreadable files; one problem line each."""
    seen: dict[str, str] = {}
    kept, problems = [], []
    for e in entries:
        if e.path in seen:
            problems.append(f"{e.where}: {e.path} is listed twice (first at {seen[e.path]}); a video must be "
                            f"listed once, delete one line")
            continue
        seen[e.path] = e.where
        why = check_file(root, e.path) if check_files else None
        if why and Path(e.where).is_dir():  # found by walking a class folder: the file is the thing to fix
            problems.append(f"{root / e.path}: {why}; replace it or delete it")
            continue
        if why:
            problems.append(f"{e.where}: {root / e.path}: {why}; fix the path (relative to {root}) or the file")
            continue
        kept.append(e)
    return kept, problems


def class_order(names: set[str]) -> list[str]:
    """Sorted class names: numerically when every name is an integer (labels 0..C-1 keep their order)."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def group_key(path: str, pattern: re.Pattern | None) -> str:
    if pattern is None:
        return path
    m = pattern.search(path)
    if m is None:
        return "\0" + path  # its own group (the prefix keeps it apart from any captured key)
    return m.group(1) if pattern.groups else m.group(0)


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def assign_groups(records: list[VideoRecord], want: dict[int, int], groups: dict[str, list[VideoRecord]]
                  ) -> set[VideoRecord]:
    """Whole groups, in SHA-1 order, taken while every class they hold still wants videos and keeps one."""
    size = Counter(r.label for r in records)
    taken: Counter = Counter()
    chosen: set[VideoRecord] = set()
    for key in sorted(groups, key=_sha):
        members = groups[key]
        count = Counter(r.label for r in members)
        if all(taken[c] < want.get(c, 0) and size[c] - taken[c] - n >= 1 for c, n in count.items()):
            taken.update(count)
            chosen.update(members)
    return chosen


def _groups_of(records: list[VideoRecord], pattern: re.Pattern | None) -> dict[str, list[VideoRecord]]:
    groups: dict[str, list[VideoRecord]] = defaultdict(list)
    for r in records:
        groups[group_key(r.path, pattern)].append(r)
    return groups


def stratified_split(records: list[VideoRecord], *, test_fraction: float, val_per_class: int,
                     group: str | None = None) -> tuple[dict[str, list[VideoRecord]], list[str]]:
    """({train, val, test}, dropped-class lines); see the module docstring for the rule."""
    pattern = compile_group(group)
    size = Counter(r.label for r in records)
    names = {r.label: r.class_name for r in records}
    want_test = {c: max(1, round(test_fraction * n)) if test_fraction > 0 else 0 for c, n in size.items()}
    test = assign_groups(records, want_test, _groups_of(records, pattern))
    rest = [r for r in records if r not in test]
    val = assign_groups(rest, {c: val_per_class for c in size}, _groups_of(rest, pattern))
    train = [r for r in rest if r not in val]
    train_n, test_n = Counter(r.label for r in train), Counter(r.label for r in test)
    dropped, bad = [], set()
    for c in sorted(size):
        if train_n[c] == 0 or (test_fraction > 0 and test_n[c] == 0):
            bad.add(c)
            why = "fewer than 2 videos" if size[c] < 2 else "all its videos in one --group group"
            dropped.append(f"class {names[c]!r} ({size[c]} video(s), {why}) is too small to split: left out; "
                           f"add videos (or groups) to it, or merge it into another class")
    keep = {"train": train, "val": [r for r in records if r in val], "test": [r for r in records if r in test]}
    return {k: [r for r in v if r.label not in bad] for k, v in keep.items()}, dropped


def compile_group(group: str | None) -> re.Pattern | None:
    if not group:
        return None
    try:
        return re.compile(group)
    except re.error as exc:
        raise DataError(f"--group {group!r}: not a valid regular expression ({exc}); e.g. '_g(\\d+)_' keeps "
                        f"every video whose path holds _g07_ on one side") from exc


def relabel(records: list[VideoRecord], order: list[str] | None = None) -> list[VideoRecord]:
    """Labels 0..C-1 over `order` (default: the records' classes), so dropped classes leave no gap."""
    order = order if order is not None else class_order({r.class_name for r in records})
    label = {n: i for i, n in enumerate(order)}
    return [VideoRecord(r.path, label[r.class_name], r.class_name) for r in records]


def build_folder_splits(*, root: str | Path | None, list_file: str | Path | None, manifest_dir: str | Path | None,
                        test_fraction: float = 0.3, val_per_class: int = 2, group: str | None = None,
                        check_files: bool = True) -> FolderSplits:
    """Scan or parse, check the files, split, write <manifest_dir>/{train,val,test}.tsv; see the docstring."""
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction {test_fraction}: must be in [0, 1), e.g. 0.3")
    if val_per_class < 0:
        raise DataError(f"--val-per-class {val_per_class}: must be >= 0")
    compile_group(group)  # a bad regex fails before any file is read
    base = folder_root(root, list_file)
    if list_file:
        entries, problems = parse_list(Path(list_file))
    else:
        if not base.is_dir():
            raise DataError(f"{base}: folder not found; pass --root DIR holding one folder per class "
                            f"(DIR/<class>/<video>), or --list FILE")
        entries, problems = scan_class_folders(base), []
    entries, bad_files = usable_entries(entries, base, check_files)
    problems = sorted(problems + bad_files, key=_line_number)  # in the list's own order
    if not entries:
        where = list_file or base
        want = "path,label lines" if list_file else f"<root>/<class>/<video> files ({', '.join(VIDEO_EXTS)})"
        loose = [] if list_file else [p for p in base.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS]
        hint = (f"; {len(loose)} video(s) lie directly in {base}: move them into one folder per class, or, "
                f"unlabelled, into one folder (e.g. {base / 'all'}) for self-supervised training") if loose else ""
        raise DataError(f"{where}: no usable video ({len(problems)} problem(s)); expected {want}{hint}"
                        + "".join(f"\n  {p}" for p in problems))
    first = relabel([VideoRecord(e.path, 0, e.class_name) for e in entries])
    splits, dropped = stratified_split(first, test_fraction=test_fraction, val_per_class=val_per_class,
                                       group=group)
    if not splits["train"]:
        raise DataError(f"{list_file or base}: no class could be split into train and test:"
                        + "".join(f"\n  {d}" for d in dropped))
    kept_names = class_order({r.class_name for r in splits["train"]})
    splits = {k: relabel(v, kept_names) for k, v in splits.items()}
    target = Path(manifest_dir) if manifest_dir is not None else base / "manifests" / "split1"
    for name, recs in splits.items():
        write_manifest(target / f"{name}.tsv", recs)
    return FolderSplits(splits, problems, dropped, kept_names)


def folder_root(root: str | Path | None, list_file: str | Path | None) -> Path:
    """The folder manifest paths are relative to: --root, else the list file's folder."""
    if root:
        return Path(root)
    if list_file:
        return Path(list_file).resolve().parent
    raise DataError("folder dataset: pass --root DIR (class folders) or --list FILE (path,label lines)")
