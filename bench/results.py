"""Results files: each benchmark writes what it printed to bench/results/<topic>-<cpu>-<date>.md.

    from results import recorded          # bench/ is on sys.path (the scripts put it there)
    with recorded("hamming"):             # everything printed inside is also written to the file
        ...

The file starts with what makes a figure comparable: the command line, the commit (and whether the tree had
uncommitted changes), the CPU model, its flags that the kernels care about, the core count, and the load
average before and after. Measurements live there, not in docstrings: a docstring keeps the invariant and the
reason; a results file keeps the figure and the machine that produced it.
C3DHASH_BENCH_RESULTS=DIR writes elsewhere; =off writes nothing (the test suite sets it). An installed package
(no source checkout around it) writes to ./bench/results/ under the working directory, not into site-packages.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

# The flags that change which kernel runs or how fast (eval/kernels picks lanes and intrinsics by them).
FLAGS = ("avx2", "bmi2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq", "avx512_bitalg", "popcnt")


def default_folder() -> Path:
    """A source checkout's bench/results/ (the figures are tracked beside the code); for an installed package,
    bench/results/ under the working directory (its own folder is site-packages: read-only, or lost on upgrade)."""
    here = Path(__file__).resolve().parent
    return here / "results" if (here.parent / "setup.cfg").is_file() else Path.cwd() / "bench" / "results"


def cpu() -> tuple[str, list[str]]:
    """(model name, the FLAGS it has) from /proc/cpuinfo; the platform's processor elsewhere."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    have = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else platform.machine()), [f for f in FLAGS if f in have]


def cpu_slug(model: str) -> str:
    """'AMD EPYC 9R14 96-Core Processor' -> 'amd-epyc-9r14';
    'Intel(R) Xeon(R) Platinum 8488C' -> 'intel-xeon-platinum-8488c'."""
    words = re.sub(r"\((r|tm)\)|cpu|processor|@.*|\d+-core", " ", model.lower())
    return "-".join(re.findall(r"[a-z0-9]+", words)[:4]) or "cpu"


def commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{sha}{' + uncommitted changes' if dirty else ''}" if sha else "unknown (not a git checkout)"


def results_path(topic: str, *, folder: Path, model: str, day: datetime.date) -> Path:
    """<folder>/<topic>-<cpu>-<date>.md; -2, -3, ... when a run of the same day is there already."""
    stem = f"{topic}-{cpu_slug(model)}-{day.isoformat()}"
    path, n = folder / f"{stem}.md", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.md", n + 1
    return path


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


@contextlib.contextmanager
def recorded(topic: str, folder: str | Path | None = None) -> Iterator[Path | None]:
    """Tee stdout into bench/results/<topic>-<cpu>-<date>.md, written when the block ends (also on error)."""
    target = folder or os.environ.get("C3DHASH_BENCH_RESULTS") or default_folder()
    if str(target) == "off":
        yield None
        return
    model, flags = cpu()
    path = results_path(topic, folder=Path(target), model=model, day=datetime.date.today())
    head = [f"# {topic}: {datetime.datetime.now().isoformat(timespec='seconds')}", "",
            f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`", f"- commit: {commit()}",
            f"- cpu: {model}; {os.cpu_count()} logical CPUs; flags: {' '.join(flags) or 'none of ' + ', '.join(FLAGS)}",
            f"- load average before: {_load()}"]
    buf, real = io.StringIO(), sys.stdout
    sys.stdout = _Tee(real, buf)
    failed, usage = True, False
    try:
        yield path
        failed = False
    except SystemExit as exc:
        usage = exc.code in (0, 2)  # argparse's --help or an argument error: nothing was measured, no file
        raise
    finally:
        sys.stdout = real
        if not usage:
            tail = [f"- load average after: {_load()}", *(["- the run FAILED before its end"] if failed else [])]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join([*head, *tail, "", "```", buf.getvalue().rstrip(), "```", ""]))
            print(f"results: {path}", flush=True)
