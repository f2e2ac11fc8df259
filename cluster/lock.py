"""One run per run folder: `<run_dir>/.lock` holds the host and pid of the run training in it.

    with run_lock(run_dir):        # raises RunLocked naming host, pid and start time when another run holds it
        ...train...

Two runs on one folder overwrote each other's files and deleted each other's checkpoints. The lock file is
created with O_EXCL (atomic on local and NFS v3+ file systems); a lock left by a dead process on this host is
taken over, a lock from another host is only reported (its pid cannot be checked from here).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from c3dhash.loaders.atomic import pid_alive

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another run trains in this run folder; the message says which and what to do."""


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _create(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


def acquire(run_dir: Path) -> Path:
    """Take the run folder's lock or raise RunLocked; a stale lock (dead pid, this host) is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        if _create(path, me):
            return path
        held = _holder(path)
        if held.get("host") == me["host"] and isinstance(held.get("pid"), int) and not pid_alive(held["pid"]):
            path.unlink(missing_ok=True)  # stale: its process is gone
            print(f"note: took over the stale lock of pid {held['pid']} (no longer running) in {run_dir}", flush=True)
            continue
        if not held:  # being written right now, or unreadable: look again
            time.sleep(0.2)
            continue
        raise RunLocked(f"{run_dir} is in use by pid {held.get('pid')} on host {held.get('host')} (since "
                        f"{held.get('since')}); wait for that run to end, stop it, or train under another "
                        f"--set cluster.name=...; if that process is gone for good, delete {path}")
    raise RunLocked(f"{path}: could not take the lock (unreadable lock file); delete it if no run uses {run_dir}")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    path = acquire(run_dir)
    try:
        yield path
    finally:
        if _holder(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
