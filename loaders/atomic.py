"""The one way this project writes a file that others may read: never a partial file, never a stray temp.

    with atomic_path("runs/x/best.pt") as tmp:   # a temp path in the same folder, same extension last
        torch.save(state, tmp)                   # (PyAV and numpy pick formats by extension)
    atomic_write("codes.npz", lambda f: np.savez(f, ...))
    atomic_write_text("config.yaml", text)

The temp file lives in the target folder (rename is atomic only within one filesystem), is fsynced before the
rename, gets the normal mode of a new file (mkstemp's is 0600) and is removed on any error, Ctrl-C included.
Floor 1 (beside manifests) so that every package above can use it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block succeeds it is fsynced and renamed onto `path`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=f".tmp{p.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call write(binary file) on a temp file beside `path`, then rename it onto `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def stale_temps(path: str | Path) -> list[Path]:
    """Temp files that a killed writer of `path` left behind (SIGKILL skips every cleanup)."""
    p = Path(path)
    return sorted(p.parent.glob(f".{p.stem}.*.tmp{p.suffix}")) if p.parent.is_dir() else []


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine: the owner check of a lock file or a scratch folder."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
