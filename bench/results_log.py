"""Benchmarks keep what they print: `with results_log("hamming"):` copies stdout to
bench/results/<name>-<UTC time>.txt (beside the console), so every run's figures and load average stay on disk."""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator, TextIO

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class _Tee:
    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


@contextlib.contextmanager
def results_log(name: str, directory: Path = RESULTS_DIR) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
    with open(path, "w") as f:
        old, sys.stdout = sys.stdout, _Tee(sys.stdout, f)  # type: ignore[assignment]
        try:
            yield path
        finally:
            sys.stdout = old
            print(f"results written to {path}")
