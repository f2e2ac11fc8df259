"""Logs that read well (issue 32): on a non-terminal stderr, progress is plain lines at intervals, no `\\r`,
and Ray's prefixes carry no colour codes."""
import os
import subprocess
import sys

import pytest

BARS = """
import os, sys, time
from tqdm import tqdm                       # bound before plain_logs(), as module-level imports are
from c3dhash.cluster.logs import plain_logs
assert plain_logs() is True
print("RAY_COLOR_PREFIX=" + os.environ["RAY_COLOR_PREFIX"], flush=True)
for _ in tqdm(range(50), desc="work"):
    time.sleep(0.01)
with tqdm(total=3, desc="other") as bar:
    bar.update(3)
"""


@pytest.mark.subprocess
def test_progress_is_plain_lines_at_intervals_when_stderr_is_a_file():
    env = {**os.environ, "C3DHASH_PROGRESS_S": "0.2"}
    env.pop("RAY_COLOR_PREFIX", None)
    out = subprocess.run([sys.executable, "-c", BARS], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RAY_COLOR_PREFIX=0" in out.stdout
    err = out.stderr
    assert "\r" not in err and "\x1b[" not in err
    work = [line for line in err.splitlines() if line.startswith("work:")]
    # 50 x 10 ms at one line per 0.2 s: the first line, about 2 in between, the final one; never one per step
    assert 2 <= len(work) <= 8 and "50/50" in work[-1] and "0/50" in work[0], work
    other = [line for line in err.splitlines() if line.startswith("other:")]
    assert other[-1].count("3/3") == 1 and len(other) <= 3, other
    assert "" not in err.splitlines(), "no blank lines"


@pytest.mark.subprocess
def test_cli_progress_in_a_pipe_has_no_carriage_returns(tmp_path):
    out = subprocess.run([sys.executable, "-m", "c3dhash.cluster.cli", "synth", "--out", str(tmp_path / "s"),
                          "--classes", "2", "--per-class", "16", "--frames", "8", "--size", "16x16", "--procs", "1"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\r" not in out.stderr and "32/32" in out.stderr.splitlines()[-1], out.stderr[-500:]
