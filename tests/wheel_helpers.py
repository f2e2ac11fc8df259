"""A wheel of this checkout and fresh virtual environments to install it into (tests/test_wheel.py).

The fresh venv has no pip and no packages of its own; a .pth line puts the shared venv's site-packages after
its own, so torch, ray, ... are found without a download, while the shared venv's editable c3dhash is NOT active
(a path in a .pth file is appended to sys.path; the .pth files inside it are not run). So `import c3dhash` in the
fresh venv finds the installed wheel or nothing. PYTHONPATH is dropped for the same reason.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = (".venv", ".git", "runs", "data", "build", "dist", "tests", "k8s", "__pycache__", "*.egg-info",
        ".pytest_cache", ".mypy_cache")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "RAY_AUTH_MODE": "disabled", **extra}


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{cmd} -> {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def build_wheel(tmp: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout (the build writes build/ and *.egg-info beside setup.py)."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*SKIP), symlinks=False)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", tmp / "dist"])
    (wheel,) = (tmp / "dist").glob("c3dhash-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A venv without pip that sees the shared venv's site-packages last; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, env=clean_env())
    python = path / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True, env=clean_env()).stdout.strip())
    (purelib / "zz_shared_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def pip_install(python: Path, wheel: Path) -> subprocess.CompletedProcess:
    """The shared venv's pip installing into another environment (pip --python), offline, dependencies present."""
    return run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])


def pip_uninstall(python: Path, name: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pip", "--python", python, "uninstall", "-q", "-y", name])


def site_packages(python: Path) -> Path:
    return Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


FAKE_DASK = {  # dask's `distributed` top level, with the files the old wheel overwrote
    "distributed/__init__.py": "from distributed.client import Client\n__version__ = '2026.8.0'\n",
    "distributed/client.py": "class Client:\n    kind = 'dask'\n",
    "distributed/config.py": "DASK_CONFIG = True\n",
    "distributed/worker.py": "class Worker:\n    kind = 'dask'\n",
}


def fake_dask_wheel(out: Path) -> Path:
    """A wheel named `distributed` (dask's) holding a top-level `distributed` package: no download needed."""
    info = "distributed-2026.8.0.dist-info"
    files = {**FAKE_DASK,
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: distributed\nVersion: 2026.8.0\n",
             f"{info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: c3dhash-tests\n"
                               "Root-Is-Purelib: true\nTag: py3-none-any\n")}
    record = [f"{name},{_record_hash(text.encode())},{len(text.encode())}" for name, text in files.items()]
    path = out / "distributed-2026.8.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return path


def digests(root: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}
