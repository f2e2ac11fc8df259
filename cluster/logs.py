"""Logs that read well in a file, `kubectl logs` or CI: when stderr is not a terminal, progress bars print a
plain line at intervals (no `\\r` redraws that pile up into one 16 KB line) and Ray's log prefixes carry no
colour codes.

    plain_logs()          # cli.main calls it once, before any command runs; a no-op on a terminal

C3DHASH_PROGRESS_S sets the interval (default 10 s). Every bar also prints its first and its final line.
"""
from __future__ import annotations

import os
import sys
import time

DEFAULT_INTERVAL_S = 10.0


class _Discard:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("C3DHASH_PROGRESS_S", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def plain_progress(interval_s: float | None = None) -> None:
    """Make every tqdm bar of this process (whoever imported tqdm, and when) print plain lines."""
    from tqdm import std
    if getattr(std.tqdm, "_c3dhash_plain", False):
        return
    every = _interval() if interval_s is None else interval_s
    original_close = std.tqdm.close

    def line(bar) -> None:
        bar.fp.write(bar.__str__().strip() + "\n")
        bar.fp.flush()

    def display(self, msg=None, pos=None) -> bool:
        now = time.monotonic()
        last = getattr(self, "_c3dhash_last", None)
        if last is None or now - last >= every:
            self._c3dhash_last = now
            line(self)
        return True

    def close(self) -> None:
        if self.disable or getattr(self, "_c3dhash_closed", False):
            return original_close(self)
        self._c3dhash_closed = True
        line(self)  # the final state, once
        fp, self.fp = self.fp, _Discard()  # tqdm's own close would redraw with \r and add a newline
        try:
            original_close(self)
        finally:
            self.fp = fp

    std.tqdm.display = display
    std.tqdm.close = close
    std.tqdm._c3dhash_plain = True


def plain_logs(stream=None) -> bool:
    """On a non-terminal stderr: plain progress lines and no colour in Ray's prefixes. Returns whether it did."""
    stream = stream or sys.stderr
    if stream.isatty():
        return False
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # read by Ray's log printer in this (driver) process
    plain_progress()
    return True
