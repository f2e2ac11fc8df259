"""One run per run folder: `<run_dir>/.lock` holds the host and pid of the run training in it.

    with run_lock(run_dir):        # raises RunLocked naming host, pid and start time when another run holds it
        ...train...

Two runs on one folder overwrote each other's files and deleted each other's checkpoints. The lock file itself
(O_EXCL, holder record, stale takeover on this host) is loaders/lockfile.py, shared with the index folders.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from c3dhash.loaders.lockfile import holder_record, release, try_lock

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another run trains in this run folder; the message says which and what to do."""


def acquire(run_dir: Path) -> Path:
    """Take the run folder's lock or raise RunLocked; a stale lock (dead pid, this host) is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    held = try_lock(path, holder_record())
    if held is None:
        return path
    if not held:
        raise RunLocked(f"{path}: could not take the lock (unreadable lock file); delete it if no run uses {run_dir}")
    raise RunLocked(f"{run_dir} is in use by pid {held.get('pid')} on host {held.get('host')} (since "
                    f"{held.get('since')}); wait for that run to end, stop it, or train under another "
                    f"--set cluster.name=...; if that process is gone for good, delete {path}")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    path = acquire(run_dir)
    try:
        yield path
    finally:
        release(path)
