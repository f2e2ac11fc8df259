"""Encode video files with a trained model: the one unit of work of `encode`, `index` and `search --video`.

    enc = ChunkEncoder(state)                      # state: a checkpoint dict {"model": ..., "config": ...}
    res = enc.encode(["/data/a.webm", "/data/b.mp4"])
    res.outputs[i], res.skipped[i], res.padded     # mean tanh output per video, reasons, short videos
    res = encode_paths(state, paths, chunk=16)     # the same over chunks in this process (eval/index/encode_ray.py:
                                                   # the same chunks over Ray actors)

A video's clips (clips_per_video, centred on equal segments, the training stride, each with its mirror when
the model was trained with data.eval_flip) form ONE batch, and the
batch holds nothing else, so a video's code depends only on the video and the model: the same file gives the
same bits in any chunk, on any number of workers, in `index --add` and as a query (distance 0 to itself).
A file DALI cannot decode on this device (e.g. MPEG-4 or H.264 on a CPU) is transcoded on the fly to VP9 at its
own size (loaders/transcode.py; deterministic, so a query transcodes to the same bytes as when indexed).
A file that cannot be opened or decoded is skipped with its reason; a video shorter than a clip is padded by
repeating its last frame (as in training) and listed in `padded`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from c3dhash.eval.index.encode import encode_loader
from c3dhash.loaders.atomic import pid_alive
from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.pipelines import build_eval_loader
from c3dhash.loaders.probe import decode_device, unsupported_codec
from c3dhash.loaders.videoio import probe_video
from c3dhash.loaders.sampler import clip_span, views_per_video
from c3dhash.loaders.transcode import even_size, transcode_video
from c3dhash.model.load import ClipGeometry, LoadedHashNet, from_state

GPU_VIDEOS_PER_BATCH = 16  # videos whose clips form one model batch on a GPU (docs/gpu.md)
DEFAULT_CHUNK = 16  # videos per unit of work: a progress step, and what a lost worker's replacement redoes
SCRATCH_PREFIX = "c3dhash-enc-"  # + "<pid>-": a chunk's transcoded copies, removed when the chunk is done
STALE_SCRATCH_S = 600  # and a folder whose process is gone is removed once this old (its last change)


def remove_stale_scratch(root: str | None = None, *, min_age_s: float = STALE_SCRATCH_S) -> list[Path]:
    """Remove the scratch folders of encoders that died inside a chunk (a killed Ray actor cannot clean up):
    those whose process is gone and that nobody changed for min_age_s (a /tmp shared across PID namespaces
    would otherwise lose a live one). Returns what it removed."""
    removed, now = [], time.time()
    for folder in Path(root or tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*-*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or pid_alive(int(pid)) or now - folder.stat().st_mtime < min_age_s:
                continue
        except OSError:  # removed meanwhile
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@dataclass
class Encoded:
    """Per-video results in input order: outputs[i] is NaN-free only where i is not in `skipped`."""
    outputs: np.ndarray  # float32 [n, bits] mean clip outputs (zeros where skipped)
    skipped: dict[int, str] = field(default_factory=dict)  # position -> reason
    padded: list[int] = field(default_factory=list)  # positions of videos shorter than one clip

    @property
    def ok(self) -> np.ndarray:
        return np.array([i not in self.skipped for i in range(len(self.outputs))], bool)


def default_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def product_data(geometry: ClipGeometry, *, device: str = "auto", num_threads: int = 1,
                 manifest_dir: str = "", videos_per_batch: int = 1) -> DataConfig:
    """The loader settings for encoding: the model's geometry, no flip, `videos_per_batch` videos' clips per
    batch (clips never split across batches: eval_clips fills batches video by video)."""
    g = dataclasses.asdict(geometry)
    views = views_per_video(geometry.clips_per_video, geometry.eval_flip)
    return DataConfig(**g, batch_size=views * max(1, videos_per_batch), flip=False,
                      device=device, num_threads=num_threads, manifest_dir=manifest_dir)


def videos_per_batch(requested: int, device: torch.device) -> int:
    """0 = auto: GPU_VIDEOS_PER_BATCH on a GPU (the model sees 16 x clips_per_video clips), 1 on a CPU, where
    one video per batch keeps every code independent of its neighbours to the last float bit."""
    if requested > 0:
        return requested
    return GPU_VIDEOS_PER_BATCH if device.type == "cuda" else 1


class Mirrored(torch.nn.Module):
    """The net on each clip's left-right mirror (`search --video --mirrored`: a flipped copy's original)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flip(-1))


class ChunkEncoder:
    """Holds one model on one device (a Ray actor holds one of these); encodes lists of video files."""

    def __init__(self, state: dict[str, Any], *, device: str = "auto", num_threads: int = 1, amp: str = "auto",
                 config: dict[str, Any] | None = None, static: bool = False, batch_videos: int = 0,
                 mirror: bool = False):
        self.model: LoadedHashNet = from_state(state, config=config)
        self.torch_device = default_device() if device != "cpu" else torch.device("cpu")
        self.device_id = self.torch_device.index if self.torch_device.type == "cuda" else None
        net = self.model.net.to(self.torch_device)
        self.net = Mirrored(net) if mirror else net  # a mirrored query: every clip flipped left-right first
        self.dali = decode_device(device, self.device_id)
        self.device_pref, self.num_threads, self.amp = device, num_threads, amp
        self.static = static  # the demo's motion-free baseline: each clip's first frame repeated
        self.batch_videos = videos_per_batch(batch_videos, self.torch_device)
        self.loader = None  # one eval loader (one DALI pipeline) for the encoder's life, reset per chunk

    def _prepare(self, path: str, tmp: Path, pos: int) -> tuple[str | None, str, int]:
        """(file to decode or None, reason if None, frame count)."""
        try:
            info = probe_video(path)
        except Exception as exc:  # noqa: BLE001 - any demux failure means "skip this file"
            return None, f"cannot open with PyAV: {' '.join(str(exc).split())}", 0
        if info.frames == 0:
            return None, "no video frames", 0
        if not unsupported_codec(info.codec, self.dali):
            return path, "", info.frames
        out = tmp / f"{pos}.webm"
        try:  # DALI cannot take this codec here: the same deterministic VP9 a query would get
            frames = transcode_video(path, out, codec="vp9", size=even_size((info.height, info.width)))
        except Exception as exc:  # noqa: BLE001
            return None, f"{info.codec}: cannot transcode for DALI: {' '.join(str(exc).split())}", 0
        return str(out), "", frames

    def encode(self, paths: Sequence[str]) -> Encoded:
        g = self.model.geometry
        res = Encoded(np.zeros((len(paths), self.model.bits), np.float32))
        span = clip_span(g.num_frames, g.stride)
        remove_stale_scratch()
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
            records, where = [], []
            for pos, path in enumerate(paths):
                src, reason, frames = self._prepare(str(Path(path).absolute()), Path(tmp), pos)
                if src is None:
                    res.skipped[pos] = reason
                    continue
                if frames < span:
                    res.padded.append(pos)
                # root "/" + the path without its leading "/": the loader's paths stay relative to its root
                records.append(VideoRecord(str(Path(src).absolute())[1:], 0, ""))
                where.append(pos)
            if records:
                self._run(records, where, res, tmp)
        return res

    def _run(self, records: list[VideoRecord], where: list[int], res: Encoded, tmp: str) -> None:
        if self.loader is None:
            data = product_data(self.model.geometry, device=self.device_pref, num_threads=self.num_threads,
                                manifest_dir=tmp, videos_per_batch=self.batch_videos)  # no skip.tsv there
            self.loader = build_eval_loader(records, "/", data, rank=0, world_size=1, device_id=self.device_id,
                                            static=self.static)
        else:
            self.loader.reset(records)
        loader = self.loader
        index, outputs = encode_loader(self.net, loader, device=self.torch_device, amp=self.amp)
        for j, out in zip(index.tolist(), outputs):
            res.outputs[where[j]] = out
        done = set(index.tolist())
        bad = loader.skipped
        for j, rec in enumerate(records):
            if j not in done:
                res.skipped[where[j]] = bad.get(rec.path, "not decoded")


def chunks(n: int, size: int = DEFAULT_CHUNK) -> list[tuple[int, int]]:
    """[start, end) blocks of `size` videos in input order."""
    return [(a, min(n, a + size)) for a in range(0, n, max(1, size))]


def merge(n: int, bits: int, parts: dict[int, tuple[tuple[int, int], Encoded]]) -> Encoded:
    """Chunk results (by chunk id, each with its [start, end)) -> one result in input order."""
    out = Encoded(np.zeros((n, bits), np.float32))
    for (a, b), part in (parts[k] for k in sorted(parts)):
        out.outputs[a:b] = part.outputs
        out.skipped.update({a + i: r for i, r in part.skipped.items()})
        out.padded += [a + i for i in part.padded]
    return out


def encode_paths(state: dict[str, Any], paths: Sequence[str], *, chunk: int = DEFAULT_CHUNK, device: str = "auto",
                 num_threads: int = 1, amp: str = "auto", config: dict[str, Any] | None = None,
                 on_chunk: Callable[[int], None] | None = None, static: bool = False,
                 batch_videos: int = 0, mirror: bool = False) -> Encoded:
    """Every video of `paths` in this process, chunk by chunk (the single-process reference)."""
    enc = ChunkEncoder(state, device=device, num_threads=num_threads, amp=amp, config=config, static=static,
                       batch_videos=batch_videos, mirror=mirror)
    parts = {}
    for k, (a, b) in enumerate(chunks(len(paths), chunk)):
        parts[k] = ((a, b), enc.encode(paths[a:b]))
        if on_chunk:
            on_chunk(b - a)
    return merge(len(paths), enc.model.bits, parts)
