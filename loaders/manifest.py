"""Split manifests: one record per video (path relative to the dataset root, integer label, class name).

On disk a manifest is a TSV with a header line `path<TAB>label<TAB>class_name`; `<manifest_dir>/<split>.tsv`
for split in train, val, test (and any extra split a dataset defines).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c3dhash.loaders.atomic import atomic_write_text

HEADER = ("path", "label", "class_name")


class DataError(ValueError):
    """A dataset/manifest problem; the message names the file (and line) and what to do."""


class DataWarning(UserWarning):
    """A recoverable data problem (a skipped video, lists smaller than the official ones); names the file."""


@dataclass(frozen=True)
class VideoRecord:
    path: str  # relative to the dataset root, '/'-separated
    label: int  # 0-based class index
    class_name: str


def write_manifest(path: str | Path, records: list[VideoRecord]) -> Path:
    """Write atomically (tmp + rename) so a crash never leaves half a manifest."""
    return atomic_write_text(path, tsv_text([HEADER, *((r.path, r.label, r.class_name) for r in records)]))


def tsv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Tab-separated lines, quoted by csv's rules where a field needs it (the one TSV dialect we write)."""
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(rows)
    return buf.getvalue()


def read_manifest(path: str | Path) -> list[VideoRecord]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: manifest not found; run `c3dhash splits --dataset ... --root ...` first")
    with p.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or tuple(rows[0]) != HEADER:
        raise DataError(f"{p}:1: expected header {'<TAB>'.join(HEADER)}; regenerate it with `c3dhash splits`")
    out = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 3 or not row[1].lstrip("-").isdigit():
            raise DataError(f"{p}:{i}: expected path<TAB>label<TAB>class_name, got {row!r}")
        out.append(VideoRecord(row[0], int(row[1]), row[2]))
    return out
