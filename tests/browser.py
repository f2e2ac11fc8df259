"""Headless Chromium for the page tests: screenshot a URL, find solid colour marks in the PNG.

    png = screenshot("file:///tmp/results.html", tmp_path / "shot.png", size=(1400, 1000))
    blobs = colour_blobs(png, (0, 176, 0))        # [(pixels, x0, y0, x1, y1), ...] of that exact colour

Tests that need it are skipped where no `chromium` is on PATH (`make test` installs Debian's package).
"""
from __future__ import annotations

import shutil
import subprocess
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def needs_chromium(test):
    """Marks a test `browser` (a tier) and skips it without Chromium."""
    skip = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
    return pytest.mark.browser(skip(test))


def screenshot(url: str, out: Path, *, size: tuple[int, int] = (1400, 1000), wait_ms: int = 10000) -> np.ndarray:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


def colour_blobs(img: np.ndarray, colour: tuple[int, int, int], *, tol: int = 6,
                 min_pixels: int = 20) -> list[tuple[int, int, int, int, int]]:
    """4-connected regions of pixels within `tol` of `colour`: (pixels, x0, y0, x1, y1), biggest first."""
    mask = (np.abs(img - np.asarray(colour)) <= tol).all(axis=2)
    seen = np.zeros_like(mask)
    blobs = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        todo, pts = deque([(y, x)]), []
        while todo:
            cy, cx = todo.popleft()
            pts.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        if len(pts) >= min_pixels:
            ys, xs = zip(*pts)
            blobs.append((len(pts), min(xs), min(ys), max(xs), max(ys)))
    return sorted(blobs, reverse=True)
