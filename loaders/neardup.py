"""Near-duplicate copies of videos: trimmed, cropped, rescaled, maybe flipped, re-encoded with another codec.

    specs = make_copies(records, root, out_dir, seed=0)        # one copy per record; out_dir/<path stem>.<ext>
    frames = apply_spec(read_frames(path), spec)               # the same edit on frames in memory

What a library's duplicates look like (re-uploads, edits): the copy keeps 70-90 % of the frames (a few cut at
each end), a crop window of 75-90 % of the height and width at a random offset, is rescaled by 0.75-1.25
(even sizes), flipped left-right in half the copies, and re-encoded: VP9 sources become MJPEG and every other
source becomes VP9 (both decode with DALI on CPU and PyAV). Every draw is seeded by (seed, index): the same
records give the same copies. Used by the near-duplicate benchmark (bench/bench_neardup.py) and the held-out
copies of self-supervised validation.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.sampler import COPY_CROP, COPY_KEEP
from c3dhash.loaders.videoio import codec_ext, probe_video, read_frames, write_video


@dataclass(frozen=True)
class CopySpec:
    trim_start: int  # frames cut at the start
    keep: int  # frames kept
    crop: tuple[int, int, int, int]  # y0, x0, height, width of the crop window (source pixels)
    size: tuple[int, int]  # output height, width (even)
    flip: bool
    codec: str


def _even(v: float) -> int:
    return max(2, int(round(v / 2.0)) * 2)


def draw_spec(*, seed: int, index: int, frames: int, height: int, width: int, src_codec: str) -> CopySpec:
    rng = np.random.default_rng([seed, index, 7])
    keep = max(2, int(round(frames * rng.uniform(*COPY_KEEP))))
    trim = int(rng.integers(0, frames - keep + 1))
    ch, cw = int(round(height * rng.uniform(*COPY_CROP))), int(round(width * rng.uniform(*COPY_CROP)))
    y0, x0 = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
    scale = rng.uniform(0.75, 1.25)
    return CopySpec(trim, keep, (y0, x0, ch, cw), (_even(ch * scale), _even(cw * scale)), bool(rng.random() < 0.5),
                    "mjpeg" if src_codec == "vp9" else "vp9")


def apply_spec(frames: np.ndarray, spec: CopySpec) -> np.ndarray:
    """uint8 [T, H, W, 3] -> the copy's frames (before encoding)."""
    y0, x0, ch, cw = spec.crop
    clip = frames[spec.trim_start:spec.trim_start + spec.keep, y0:y0 + ch, x0:x0 + cw]
    if spec.flip:
        clip = clip[:, :, ::-1]
    h, w = spec.size
    out = [av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
           .reformat(width=w, height=h, interpolation="BILINEAR").to_ndarray(format="rgb24") for f in clip]
    return np.stack(out)


def copy_name(record: VideoRecord, spec: CopySpec) -> str:
    stem = record.path.lstrip("/").rsplit(".", 1)[0]
    return f"{stem}.copy{codec_ext(spec.codec)}"


def _make_one(task: tuple[str, str, dict]) -> str:
    src, dst, raw = task
    spec = CopySpec(**{**raw, "crop": tuple(raw["crop"]), "size": tuple(raw["size"])})
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    part = f"{dst}.part"  # the container format is explicit: a temporary name, renamed once complete
    write_video(part, apply_spec(read_frames(src), spec), codec=spec.codec)
    Path(part).replace(dst)
    return dst


def make_copies(records: Sequence[VideoRecord], root: str | Path, out: str | Path, *, seed: int = 0,
                workers: int = 1) -> list[tuple[str, CopySpec]]:
    """One copy of each record under `out` (relative names mirror the records); returns (copy path, spec)."""
    root, out = Path(root), Path(out)
    tasks, result = [], []
    for i, r in enumerate(records):
        info = probe_video(root / r.path)
        spec = draw_spec(seed=seed, index=i, frames=info.frames, height=info.height, width=info.width,
                         src_codec=info.codec)
        dst = out / copy_name(r, spec)
        result.append((str(dst), spec))
        if not dst.is_file():
            tasks.append((str(root / r.path), str(dst), asdict(spec)))
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_make_one, tasks))
    else:
        for t in tasks:
            _make_one(t)
    return result
