"""The results page's thumbnails (issue 32): they seek to the frames they show (the same frames as a full decode),
memory stays flat however long the video, each tile links to its video and fits any aspect ratio."""
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import av
import numpy as np
import pytest

from c3dhash.eval.index.page import THUMB_H, _thumb, frame_strip, render_html
from c3dhash.eval.index.query import Query
from c3dhash.loaders.manifest import VideoRecord


def write_h264(path: Path, frames: int, size=(240, 320), gop: int = 25, fps: int = 25) -> Path:
    """Frame i is a flat grey of level (7 i) % 256 with a bar at x = i % width: every frame differs."""
    h, w = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "g": str(gop), "bf": "0"}
        for i in range(frames):
            img = np.full((h, w, 3), (7 * i) % 256, np.uint8)
            img[:, (3 * i) % w] = 255 - img[0, 0]
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def reference_strip(path: Path, frames: int) -> np.ndarray:
    with av.open(str(path)) as c:
        all_frames = list(c.decode(video=0))
    picks = np.linspace(0, len(all_frames) - 1, frames).round().astype(int)
    return np.concatenate([_thumb(all_frames[i], THUMB_H) for i in picks], axis=1)


@pytest.mark.parametrize("n,frames", [(60, 4), (61, 5), (7, 4)])
def test_seeking_picks_the_frames_a_full_decode_picks(tmp_path, n, frames):
    video = write_h264(tmp_path / "v.mp4", n, size=(48, 64), gop=10)
    got = frame_strip(str(video), frames=frames)
    assert got.shape == (THUMB_H, frames * 64, 3)
    assert np.array_equal(got, reference_strip(video, frames))


PEAK = """
import json, resource, sys
from c3dhash.eval.index.page import frame_strip
frame_strip(sys.argv[1], frames=4)                      # warm-up: libraries, codec tables
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
strip = frame_strip(sys.argv[2], frames=4)
print(json.dumps({"rise_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, "w": strip.shape[1]}))
"""


@pytest.mark.slow
def test_peak_memory_stays_flat_for_a_long_video(tmp_path):
    """1500 frames of 320x240 decoded whole would be 1500 x 225 KiB = 330 MiB; four seeks keep a few frames."""
    short = write_h264(tmp_path / "short.mp4", 50)
    long = write_h264(tmp_path / "long.mp4", 1500)
    out = subprocess.run([sys.executable, "-c", PEAK, str(short), str(long)], capture_output=True, text=True,
                         timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["w"] == 4 * round(320 * THUMB_H / 240)
    assert got["rise_kib"] < 30 * 1024, got  # the whole video in memory would be > 300 MiB


def test_tiles_link_to_their_videos_and_fit_any_aspect_ratio(tmp_path):
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    wide = write_h264(root / "a" / "wide clip.mp4", 10, size=(36, 64))  # 16:9, a space in the name
    idx = type("Idx", (), {"items": [VideoRecord("a/wide clip.mp4", 0, "a")], "root": root, "path": tmp_path / "i",
                           "bits": 64, "__len__": lambda self: 1})()
    q = Query(str(wide), 0, "a", np.array([0]), np.array([0]), video=str(wide))
    strip = frame_strip(str(wide), frames=4)
    page_dir = tmp_path / "pages"
    text = render_html(idx, [q], {"q:" + q.name: strip, "i:a/wide clip.mp4": strip}, page_dir)
    hrefs = [part.split('"', 1)[0] for part in text.split('<a href="')[1:]]
    assert len(hrefs) == 2 and all((page_dir / unquote(h)).resolve() == wide.resolve() for h in hrefs), hrefs
    assert strip.shape[1] > 260  # wider than a tile: the CSS scales it into the tile
    assert ".tile img{display:block;width:100%;height:auto" in text and "width:260px" in text
