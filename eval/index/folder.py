"""A video index: a folder of codes, items and the model that made them, written atomically.

    c3dhash index --checkpoint runs/synth-cpu/best.pt --videos data/synth --out runs/synth.index [--workers 2]
    c3dhash index --checkpoint best.pt --manifest data/ucf101/manifests/split1/train.tsv --out ucf.index
    c3dhash index --checkpoint best.pt --videos DIR --out INDEX --add       # encode only what is new

    idx = load_index("runs/synth.index")    # codes memory-mapped; idx.items, idx.meta, idx.as_codes()

Layout (format "c3dhash-index", version 1):
    codes.npy    uint64 [N, ceil(bits/64)], the bit layout of the codes file (eval/codes.py): bit i is bit
                 i % 64 of word i // 64, LSB first, unused high bits zero; np.load(mmap_mode="r") on load
    items.tsv    path<TAB>label<TAB>class_name (the manifest format), row i = code i; paths relative to meta's
                 root; labels from the class folder (root/<class>/...) or the manifest, -1/unknown otherwise
    meta.json    format, version, bits, count, root, fingerprint (sha256 of weights + bits + geometry),
                 model card (bits, backbone, clip geometry, checkpoint), skipped (count)
    skipped.tsv  path<TAB>reason of every video that could not be decoded (not in the index)

Written into a temp folder beside the target and renamed into place (an existing index is swapped out and
removed only after), so a crash never leaves half an index. `--add` keeps every old code and encodes only
the videos the index does not hold (and those it skipped before), appended in scan order; an index built
by another model (other fingerprint) is refused.
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from c3dhash.eval.codes import Codes, CodesError, check_code_array, num_words, pack_bits
from c3dhash.eval.index.guard import check_writable, folder_bytes, index_lock
from c3dhash.eval.index.videos import Encoded
from c3dhash.loaders.atomic import atomic_write, atomic_write_text
from c3dhash.loaders.manifest import DataError, VideoRecord, read_manifest, tsv_text, write_manifest
from c3dhash.loaders.probe import filter_records
from c3dhash.loaders.videoio import VIDEO_EXTS

FORMAT, VERSION = "c3dhash-index", 1
CODES, ITEMS, META, SKIPPED = "codes.npy", "items.tsv", "meta.json", "skipped.tsv"
UNKNOWN = (-1, "unknown")


class VideoIndexError(ValueError):
    """An index that cannot be built, read or extended; the message names the folder and the fix."""


@dataclass
class VideoIndex:
    path: Path
    codes: np.ndarray  # uint64 [N, W], memory-mapped
    items: list[VideoRecord]
    meta: dict[str, Any]

    @property
    def bits(self) -> int:
        return int(self.meta["bits"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def root(self) -> Path:
        return Path(self.meta["root"])

    def __len__(self) -> int:
        return len(self.items)

    def as_codes(self) -> Codes:
        return Codes(codes=np.asarray(self.codes), bits=self.bits,
                     labels=np.asarray([r.label for r in self.items], np.int64),
                     ids=np.asarray([r.path for r in self.items], str), source=str(self.path))


def scan_folder(root: str | Path) -> list[VideoRecord]:
    """Every video under `root` in path order; root/<class>/... gives the class, labels = sorted class order."""
    base = Path(root)
    if not base.is_dir():
        raise VideoIndexError(f"--videos {base}: folder not found")
    found = sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                   if p.suffix.lower() in VIDEO_EXTS and p.is_file() and not p.name.startswith("."))
    if not found:
        raise VideoIndexError(f"--videos {base}: no videos ({', '.join(VIDEO_EXTS)}) found; pass the folder "
                              f"that holds them (class folders give labels)")
    return label_by_folder(found)


def label_by_folder(paths: list[str]) -> list[VideoRecord]:
    classes = sorted({p.split("/")[0] for p in paths if "/" in p})
    label = {c: i for i, c in enumerate(classes)}
    return [VideoRecord(p, label[p.split("/")[0]], p.split("/")[0]) if "/" in p else VideoRecord(p, *UNKNOWN)
            for p in paths]


def manifest_items(manifest: str | Path, root: str | Path | None) -> tuple[list[VideoRecord], Path]:
    """Records of a manifest (minus its skip.tsv) and the dataset root: --root, else the folder above
    `manifests/` (the layout `c3dhash splits` writes), else the manifest's folder."""
    m = Path(manifest)
    records = filter_records(read_manifest(m), m.parent)
    if root is None:
        parts = m.absolute().parts
        root = Path(*parts[:len(parts) - 1 - parts[::-1].index("manifests")]) if "manifests" in parts[:-1] \
            else m.parent
    if not records:
        raise VideoIndexError(f"--manifest {m}: no videos listed")
    return records, Path(root)


def _write_folder(out: Path, write: Callable[[Path], None]) -> Path:
    """write(temp folder) beside `out`, then rename it onto `out` (an old index is replaced, then removed)."""
    out = out.absolute()
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = tmp.with_suffix(".old")
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_target(out: Path) -> None:
    """--out may be new or an index (replaced); anything else is refused before any work is done."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META).is_file())):
        raise VideoIndexError(f"--out {out}: exists and is not a c3dhash index; choose a new folder")


def write_index(out: str | Path, *, codes: np.ndarray, items: list[VideoRecord], meta: dict[str, Any],
                skipped: list[tuple[str, str]]) -> Path:
    if codes.dtype != np.uint64 or codes.shape != (len(items), num_words(int(meta["bits"]))):
        raise VideoIndexError(f"{out}: codes {codes.dtype} {list(codes.shape)} do not fit {len(items)} items "
                              f"of {meta['bits']} bits")
    full = {"format": FORMAT, "version": VERSION, **meta, "count": len(items), "skipped": len(skipped)}

    def write(tmp: Path) -> None:
        atomic_write(tmp / CODES, lambda f: np.save(f, np.ascontiguousarray(codes), allow_pickle=False))
        write_manifest(tmp / ITEMS, items)
        atomic_write_text(tmp / SKIPPED, tsv_text([("path", "reason"), *skipped]))
        atomic_write_text(tmp / META, json.dumps(full, indent=1) + "\n")
    try:
        return _write_folder(Path(out), write)
    except OSError as exc:  # a full disk or a folder gone read-only: the old index was never touched
        raise VideoIndexError(f"--out {out}: writing the index failed ({exc.strerror or exc}); "
                              f"{'the old index is intact; ' if (Path(out) / META).is_file() else ''}"
                              f"free space or choose another folder, then run again") from None


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a parsed meta.json, or None: the schema every reader relies on."""
    if not isinstance(meta, dict):
        return f"must be a JSON object, got {type(meta).__name__}"
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        return (f"format {meta.get('format')!r} version {meta.get('version')!r}; this c3dhash reads {FORMAT} "
                f"version {VERSION}")
    for key, kind in (("bits", int), ("count", int), ("root", str), ("fingerprint", str)):
        v = meta.get(key)
        if not isinstance(v, kind) or isinstance(v, bool) or (kind is int and v < (1 if key == "bits" else 0)):
            return f"{key!r} must be {'a positive' if key == 'bits' else 'a'} {kind.__name__}, got {v!r}"
    card = meta.get("model", {})
    if not isinstance(card, dict) or card.get("bits", meta["bits"]) != meta["bits"]:
        return f"'bits' is {meta['bits']} but the model that built it has {card.get('bits')!r} bits"
    return None


def _escapes(path: str) -> bool:
    """An item path that is absolute or leaves the root (../): never read, printed or linked."""
    norm = posixpath.normpath(path.replace("\\", "/"))
    return not path or norm.startswith("/") or norm == ".." or norm.startswith("../")


def load_index(path: str | Path) -> VideoIndex:
    """The one reader of an index folder (search, show, eval, the sharded index's codes): meta.json against its
    schema, codes.npy against bits and count, items.tsv against both, item paths under the root. Every
    problem is one VideoIndexError line naming the file and the fix."""
    p = Path(path)
    rebuild = f"rebuild it with `c3dhash index ... --out {p}`"
    if not (p / META).is_file():
        raise VideoIndexError(f"{p}: not a c3dhash index (no {META}); build one with `c3dhash index`")
    try:
        meta = json.loads((p / META).read_text())
    except (OSError, ValueError) as exc:
        raise VideoIndexError(f"{p / META}: unreadable ({exc}); {rebuild}") from None
    problem = _meta_problem(meta)
    if problem:
        raise VideoIndexError(f"{p / META}: {problem}; {rebuild}")
    try:
        codes = np.load(p / CODES, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise VideoIndexError(f"{p / CODES}: unreadable ({str(exc).splitlines()[0]}); {rebuild}") from None
    if not isinstance(codes, np.ndarray):  # an .npz archive under the .npy name
        codes.close()
        raise VideoIndexError(f"{p / CODES}: an .npz archive, not a .npy array; {rebuild}")
    try:
        check_code_array(codes, meta["bits"], f"{p / CODES} ({META}: {meta['bits']} bits)", fix=rebuild)
    except CodesError as exc:
        raise VideoIndexError(str(exc)) from None
    if not (p / ITEMS).is_file():
        raise VideoIndexError(f"{p / ITEMS}: missing (the index lists its videos there); {rebuild}")
    try:
        items = read_manifest(p / ITEMS)
    except DataError as exc:
        raise VideoIndexError(f"{str(exc).split('; ')[0]}; {rebuild}") from None
    if codes.shape[0] != len(items) or len(items) != meta["count"]:
        raise VideoIndexError(f"{p}: {CODES} has {codes.shape[0]} codes, {ITEMS} {len(items)} items and {META} "
                              f"count {meta['count']}: they disagree; {rebuild}")
    bad = next((r.path for r in items if _escapes(r.path)), None)
    if bad is not None:
        raise VideoIndexError(f"{p / ITEMS}: item path {bad!r} is not inside the index root {meta['root']}; "
                              f"{rebuild}")
    return VideoIndex(p, codes, items, meta)


def assemble(encoded: Encoded, todo: list[VideoRecord], *, old: VideoIndex | None,
             relabel: bool) -> tuple[np.ndarray, list[VideoRecord], list[tuple[str, str]]]:
    """Old codes + the newly encoded ones (skipped left out) -> (codes, items, skipped)."""
    ok = encoded.ok
    bits = encoded.outputs.shape[1]
    new_codes = pack_bits(encoded.outputs[ok]) if ok.any() else np.zeros((0, num_words(bits)), np.uint64)
    new_items = [r for r, good in zip(todo, ok) if good]
    skipped = [(todo[i].path, reason) for i, reason in sorted(encoded.skipped.items())]
    if old is not None:
        codes = np.concatenate([np.asarray(old.codes), new_codes])
        items = old.items + new_items
    else:
        codes, items = new_codes, new_items
    if relabel:  # folder labels: sorted class names of everything indexed, as a full rebuild gives
        items = label_by_folder([r.path for r in items])
    return codes, items, skipped


def _sources(videos: str | None, manifest: str | None, root: str | None) -> tuple[list[VideoRecord], Path, bool]:
    if bool(videos) == bool(manifest):
        raise VideoIndexError("pass exactly one of --videos DIR or --manifest TSV")
    if videos:
        return scan_folder(videos), Path(videos).absolute(), True
    records, base = manifest_items(str(manifest), root)
    return records, base.absolute(), False


def _old_index(out: Path, *, fingerprint: str, root: Path) -> VideoIndex | None:
    if not (out / META).is_file():
        print(f"index: {out} does not exist yet; --add builds it")
        return None
    old = load_index(out)
    if old.fingerprint != fingerprint:
        raise VideoIndexError(f"--add: {out} was built by another model ({old.meta.get('model', {}).get('source')}, "
                              f"{old.fingerprint[:19]}...) than this checkpoint ({fingerprint[:19]}...); "
                              f"codes of two models cannot be compared: rebuild without --add or use its checkpoint")
    if old.root != root:
        raise VideoIndexError(f"--add: {out} holds videos under {old.root}, not {root}; add videos from the same "
                              f"folder (or build another index)")
    return old


def build_index(*, checkpoint: str, out: str | Path, encode: Callable[[dict, list[str]], Encoded],
                videos: str | None = None, manifest: str | None = None, root: str | None = None,
                add: bool = False, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Encode the videos (`encode(state, paths)`: in process or sharded) and write the index; a summary."""
    from c3dhash.model.load import from_state, read_checkpoint
    out = Path(out).absolute()
    check_target(out)
    records, base, by_folder = _sources(videos, manifest, root)
    state = read_checkpoint(checkpoint)
    model = from_state(state, config=config, source=str(Path(checkpoint).absolute()))  # search finds it again
    check_writable(out, 2 * folder_bytes(out) + 1024 * len(records))  # before a single video is encoded
    with index_lock(out):  # another `index` on `out` would lose one of the two writes
        return _build_locked(out, state, model, records, base, encode=encode, add=add, by_folder=by_folder)


def _build_locked(out: Path, state: dict, model: Any, records: list[VideoRecord], base: Path, *,
                  encode: Callable[[dict, list[str]], Encoded], add: bool, by_folder: bool) -> dict[str, Any]:
    old = _old_index(out, fingerprint=model.fingerprint, root=base) if add else None
    held = {r.path for r in old.items} if old else set()
    todo = [r for r in records if r.path not in held]
    summary = {"out": str(out), "old": len(held), "new": 0, "skipped": [], "padded": []}
    if old is not None and not todo:
        return summary
    encoded = encode(state, [str(base / r.path) for r in todo])
    codes, items, skipped = assemble(encoded, todo, old=old, relabel=by_folder)
    summary.update(new=len(items) - len(held), skipped=skipped, padded=[todo[i].path for i in encoded.padded])
    if not items:
        raise VideoIndexError(f"none of the {len(todo)} videos could be decoded (e.g. {skipped[0][0]}: "
                              f"{skipped[0][1]}); nothing written")
    meta = {"bits": model.bits, "root": str(base), "fingerprint": model.fingerprint, "model": model.card}
    write_index(out, codes=codes, items=items, meta=meta, skipped=skipped)
    return summary
