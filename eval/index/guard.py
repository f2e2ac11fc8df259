"""Writing an index folder safely: one writer at a time, and a write that cannot succeed refused before the work.

    check_writable(out, need_bytes)      # VideoIndexError now, not after every video is encoded
    with index_lock(out):                # waits (with a message) while another `c3dhash index` writes `out`
        old = load_index(out); ...; write_index(out, ...)

Two `index --add` runs on one index both read the old index, each appended its own videos and the last rename
won: the other's videos were lost without a word. The lock (loaders/lockfile.py: holder host and pid, stale
takeover) lives beside the folder, `.<name>.lock`, because the folder itself is swapped out by the atomic write.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from c3dhash.loaders.lockfile import holder_record, release, try_lock

WAIT_S = float(os.environ.get("C3DHASH_INDEX_LOCK_WAIT_S", "3600"))  # then refuse, naming the holder
POLL_S = 0.5


class IndexBusy(RuntimeError):
    """Another process writes this index (and did not finish in WAIT_S); exit 2 with its name."""


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _existing_parent(out: Path) -> Path:
    p = out.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(out: Path, need_bytes: int = 0) -> None:
    """The folder that will hold `out` can take new files and about `need_bytes` more; else one line now."""
    from c3dhash.eval.index.folder import VideoIndexError
    parent = _existing_parent(out)
    probe = parent / f".{out.name}.write-test.{os.getpid()}"
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is not a folder")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise VideoIndexError(f"--out {out}: cannot write in {parent} ({exc.strerror or exc}); choose a writable "
                              f"folder (nothing was encoded)") from None
    free = shutil.disk_usage(parent).free
    if need_bytes and free < need_bytes:
        raise VideoIndexError(f"--out {out}: {free / 1e6:.1f} MB free in {parent}, about {need_bytes / 1e6:.1f} MB "
                              f"needed (the new index is written beside the old one); free space or choose "
                              f"another folder (nothing was encoded)")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0


@contextlib.contextmanager
def index_lock(out: Path, *, wait_s: float | None = None) -> Iterator[Path]:
    """Hold `.<name>.lock` beside `out` for the whole read-encode-write; wait for another holder, saying so."""
    path = lock_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (WAIT_S if wait_s is None else wait_s)
    told = False
    while (held := try_lock(path, holder_record())) is not None:
        who = (f"pid {held.get('pid')} on host {held.get('host')} (since {held.get('since')})" if held
               else "an unreadable lock")
        if time.monotonic() > deadline:
            raise IndexBusy(f"{out} is being written by {who}; run again when it ends, or, if that process is "
                            f"gone for good, delete {path}")
        if not told:
            print(f"index: {out} is being written by {who}; waiting for it (Ctrl-C to stop)", file=sys.stderr,
                  flush=True)
            told = True
        time.sleep(POLL_S)
    try:
        yield path
    finally:
        release(path)
