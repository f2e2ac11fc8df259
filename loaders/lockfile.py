"""A lock file that names its holder: one writer per run folder (cluster/lock.py) or index folder (eval/index).

    me = holder_record()
    held = try_lock(path, me)      # None: the lock is ours now; else the holder's {host, pid, since}

The file is created with O_EXCL (atomic on local and NFS v3+ file systems) and holds the host, pid and start
time of its holder as JSON. A lock left by a dead process on this host is taken over (with a note); a lock from
another host is only reported (its pid cannot be checked from here). Floor 1, beside atomic.py, so that every
package above can use it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from c3dhash.loaders.atomic import pid_alive


def holder_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def holder(path: Path) -> dict:
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def _create(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


def try_lock(path: Path, me: dict) -> dict | None:
    """Take the lock (None) or return its live holder's record; a stale lock (dead pid, this host) is taken
    over. An unreadable lock (being written right now) is looked at again for a second, then reported as {}."""
    for _ in range(6):
        if _create(path, me):
            return None
        held = holder(path)
        if held.get("host") == me["host"] and isinstance(held.get("pid"), int) and not pid_alive(held["pid"]):
            path.unlink(missing_ok=True)  # stale: its process is gone
            print(f"note: took over the stale lock of pid {held['pid']} (no longer running): {path}", flush=True)
            continue
        if held:
            return held
        time.sleep(0.2)
    return {}


def release(path: Path) -> None:
    """Remove the lock if this process holds it (never another's)."""
    if holder(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)
