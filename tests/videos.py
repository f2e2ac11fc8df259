"""Tiny test videos written with PyAV: a bright square moving over a dark background.

    write_video(path, frames=8, size=(32, 48), codec="vp9")   # .webm, libvpx-vp9
    write_video(path, frames=8, size=(32, 48), codec="mjpeg") # .avi, mjpeg yuvj420p
    write_video(path, frames=8, size=(32, 48), codec="mpeg4") # .mp4 (DALI cannot decode it on CPU)
    make_dataset(root, classes=3, per_class=4) -> list[VideoRecord]

Frame t has a square at x = 2 + 3t, so consecutive frames differ (tests of `static=True` rely on that).
The square's brightness encodes the class so labels can be checked through the decoder if needed.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from c3dhash.loaders.manifest import VideoRecord

# mpeg4 (part 2) is in FFmpeg but not in DALI's CPU decoder: the "needs transcoding" case
_CODECS = {"vp9": ("libvpx-vp9", "yuv420p", ".webm"), "mjpeg": ("mjpeg", "yuvj420p", ".avi"),
           "mpeg4": ("mpeg4", "yuv420p", ".mp4")}


def frame_image(t: int, size: tuple[int, int], level: int = 255) -> np.ndarray:
    h, w = size
    img = np.full((h, w, 3), 16, np.uint8)
    x = (2 + 3 * t) % max(1, w - 8)
    img[h // 4: h // 4 + 8, x: x + 8] = level
    return img


def write_video(path: str | Path, *, frames: int = 8, size: tuple[int, int] = (32, 48), codec: str = "vp9",
                level: int = 255, fps: int = 25) -> Path:
    name, pix_fmt, _ = _CODECS[codec]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(p), "w") as out:
        stream = out.add_stream(name, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], pix_fmt
        if codec == "vp9":  # fast, and no hidden alt-ref frames so packets == shown frames
            stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for t in range(frames):
            img = frame_image(t, size, level)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return p


def make_dataset(root: str | Path, *, classes: int = 3, per_class: int = 4, frames: int = 8,
                 size: tuple[int, int] = (32, 48), codec: str = "vp9",
                 frames_of: dict[str, int] | None = None) -> list[VideoRecord]:
    """UCF101-like layout root/<Class>/v_<Class>_gXX.ext; `frames_of` overrides the length of chosen files."""
    ext = _CODECS[codec][2]
    records = []
    for c in range(classes):
        name = f"Class{c}"
        for i in range(per_class):
            rel = f"{name}/v_{name}_g{i:02d}{ext}"
            n = (frames_of or {}).get(rel, frames)
            write_video(Path(root) / rel, frames=n, size=size, codec=codec, level=120 + 40 * c)
            records.append(VideoRecord(rel, c, name))
    return records


def decode_rgb(path: str | Path) -> np.ndarray:
    """Every frame of a video as uint8 [N, H, W, 3] (the reference the DALI output is compared with)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
