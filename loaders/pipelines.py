"""DALI video clip loaders, sharded by world rank: file bytes in, normalised N x C x T x H x W clips out.

    train = build_train_loader(records, root, cfg.data, rank=r, world_size=w, device_id=dev)
    for epoch in range(epochs):
        train.set_epoch(epoch)                  # reshuffles and redraws every clip position/crop/flip
        for clips, labels in train: ...        # float32 [B, 3, T, H, W], int64 [B]; len(train) on every rank
    for clips, labels, video_index in build_eval_loader(records, root, cfg.data, rank=r, world_size=w,
                                                        device_id=dev): ...

Design: our own sampler (loaders/sampler.py) decides every clip (record, temporal position, crop, flip) and a
DALI `fn.external_source` callback feeds the encoded file bytes plus those per-sample parameters into
`fn.decoders.video` (start_frame/sequence_length/stride; pad_mode="edge": short videos repeat the last frame)
-> `fn.resize` -> `fn.crop_mirror_normalize` (crop window, flip, mean/std on the [0, 1] scale, layout CFHW).
DALI's file readers shard and shuffle by themselves, which allows neither P x K batches nor exact-once
evaluation; here the same pipeline code serves both, and only the decoder backend changes: "mixed" (NVDEC)
when CUDA is usable and data.device is auto/gpu, "cpu" (VP8/VP9/MJPEG) otherwise.

Sharding uses the WORLD rank and world size (shard_id = rank, num_shards = world_size), never the local rank:
DALI's own multi-GPU examples pass local_rank as shard_id, which on several nodes makes every node read the
same shards. Train: each rank takes a contiguous slice of every global batch (P x K fixed by the config;
slice sizes differ by at most one when W does not divide it), so all ranks run len(loader) steps (unequal
step counts hang DDP) and the concatenated slices are the single-process batch at any world size. Eval:
rank r takes videos r, r + W, ... (each video exactly once, no padding); ranks may yield different batch
counts, and `video_index` (position in `records` as passed) tells which video each clip belongs to so clip
outputs can be averaged per video.

Bad files: records listed in <manifest_dir>/skip.tsv (`c3dhash check-data`) are dropped up front, once, by
loaders.splits.load_split (the loaders take records as given); a file that still fails at decode time is found
by decoding the in-flight files one by one, reported (DataWarning) and replaced by another video of the same
class (train) or left out (eval, listed in `loader.skipped`).
"""
from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.manifest import DataError, VideoRecord
from c3dhash.loaders.probe import DataWarning, dali_decode_errors, decode_device, unsupported_codec
from c3dhash.loaders.augment import colour_jitter, needs_colour, play_backwards, scramble_frames
from c3dhash.loaders.sampler import (Clip, PKSampler, RandomSampler, VideoSampler, clip_labels, clip_span, eval_clips,
                                     copy_clips, eval_shard, make_sampler, shard_batch, slice_bounds, start_frame,
                                     train_clips)
from c3dhash.loaders.prefetch import Prefetcher
from c3dhash.loaders.videoio import probe_video

PREFETCH = 4  # batches read ahead of DALI on the reader thread
DALI_QUEUE = 4  # batches DALI may have in flight (fed and decoding ahead of the consumer)
READ_THREADS = 32  # concurrent file reads within a batch


def release_unused_memory() -> None:
    """Give DALI's pooled memory of a dropped pipeline back (DALI keeps it for reuse otherwise)."""
    import gc
    gc.collect()
    try:
        from nvidia.dali.backend import ReleaseUnusedMemory
    except ImportError:
        return
    ReleaseUnusedMemory()


def _clip_pipeline(source: Callable, *, cfg: DataConfig, batch_size: int, device: str, device_id: int | None,
                   static: bool):
    from c3dhash.loaders.dali import dali
    fn, pipeline_def, types = dali()  # local: importing DALI is slow; an extra (c3dhash[dali])

    @pipeline_def(batch_size=batch_size, num_threads=cfg.num_threads, seed=cfg.seed,
                  prefetch_queue_depth=DALI_QUEUE, device_id=device_id if device == "mixed" else None)
    def clips():
        encoded, start, crop_x, crop_y, flip, zoom = fn.external_source(
            source=source, num_outputs=6, batch=True,
            dtype=[types.UINT8, types.INT32, types.FLOAT, types.FLOAT, types.INT32, types.FLOAT])
        frames = fn.decoders.video(encoded, device=device, start_frame=start,
                                   sequence_length=1 if static else cfg.num_frames,
                                   stride=cfg.stride, pad_mode="edge")
        frames = fn.resize(frames, resize_y=zoom * float(cfg.resize[0]), resize_x=zoom * float(cfg.resize[1]))
        if static:  # the "no motion" baseline: the clip's first frame repeated T times
            frames = fn.sequence_rearrange(frames, new_order=[0] * cfg.num_frames)
        return fn.crop_mirror_normalize(
            frames, crop=cfg.crop, crop_pos_x=crop_x, crop_pos_y=crop_y, mirror=flip,
            mean=[255.0 * m for m in cfg.mean], std=[255.0 * s for s in cfg.std],
            dtype=types.FLOAT, output_layout="CFHW")

    pipe = clips()
    pipe.build()
    return pipe


class ClipDecoder:
    """Runs planned batches of clips through one DALI pipeline and returns torch tensors.

    Keeps a per-record frame count (demuxed from the bytes it already read) to turn clip positions into start
    frames, and recovers from files that fail to decode (see the module docstring).
    """

    def __init__(self, records: Sequence[VideoRecord], root: str | Path, cfg: DataConfig, *, batch_size: int,
                 device_id: int | None, static: bool, replace: bool, prefetch: int = PREFETCH):
        self.records, self.root, self.cfg = list(records), Path(root), cfg
        self.batch_size, self.static, self.replace, self.prefetch = batch_size, static, replace, prefetch
        self.device = decode_device(cfg.device, device_id)
        self.device_id = device_id
        self.torch_device = torch.device("cuda", device_id) if self.device == "mixed" else torch.device("cpu")
        self.span = clip_span(cfg.num_frames, cfg.stride)
        self.frames: dict[int, int] = {}
        self.bad: dict[str, str] = {}  # path -> reason, found at decode time
        self.pipe, self.builds = None, 0  # one DALI pipeline for the decoder's life (rebuilt after a failure)
        self._reader: Prefetcher | None = None
        self._pending: deque[list[Clip]] = deque()  # fed to DALI, not yet returned (FIFO == output order)

    def use(self, records: Sequence[VideoRecord]) -> None:
        """Decode another list of records with the same pipeline (an encoder actor, chunk after chunk)."""
        self.records, self.frames, self.bad = list(records), {}, {}

    def _pipeline(self):
        if self.pipe is None:
            self.pipe = _clip_pipeline(self._next_feed, cfg=self.cfg, batch_size=self.batch_size,
                                       device=self.device, device_id=self.device_id, static=self.static)
            self.builds += 1
        return self.pipe

    def _drop_pipeline(self) -> None:
        """After a decode failure (or an epoch left half-way, whose prefetched outputs are stale)."""
        self.pipe = None
        release_unused_memory()

    def run(self, batches: Iterable[list[Clip]]) -> Iterator[tuple[list[Clip], torch.Tensor]]:
        """Decode `batches` in order. Files are read on a reader thread, `prefetch` batches ahead; the pipeline
        is reset between runs, kept across epochs."""
        todo = iter(batches)
        while True:
            self._pending = deque()
            self._reader = Prefetcher(self._prepare, todo, depth=self.prefetch)
            finished = False
            try:
                pipe = self._pipeline()
                while True:
                    try:
                        (out,) = pipe.run()
                    except StopIteration:
                        finished = True
                        pipe.reset()  # the next run (epoch) starts a new DALI epoch on the same pipeline
                        return
                    yield self._pending.popleft(), self._to_torch(out)
            except RuntimeError as exc:  # DALI failed on some file in flight: skip it, rebuild, go on
                rest = self._reader.stop()
                finished = True
                self._drop_pipeline()
                self._skip_failed(self._pending, exc)
                todo = itertools.chain(list(self._pending), rest, todo)
            finally:
                self._reader.stop()
                if not finished:  # abandoned mid-epoch, or another error: DALI holds stale prefetched batches
                    self._drop_pipeline()

    def _next_feed(self):
        """DALI's external_source callback: the reader thread's next prepared batch (StopIteration ends it)."""
        while True:
            clips, feed = self._reader.get()
            if clips:
                self._pending.append(clips)
                return feed

    def _prepare(self, clips: list[Clip]) -> tuple[list[Clip], tuple[list, ...]]:
        blobs = self._read_all(clips)
        kept, data, starts = [], [], []
        for clip in clips:
            while clip is not None:
                blob, n = self._read(clip.index, blobs)
                if blob is not None:
                    break
                clip = self._substitute(clip)
            if clip is None:
                continue
            kept.append(clip)
            data.append(np.frombuffer(blob, dtype=np.uint8))
            starts.append(np.int32(start_frame(clip.position, n_frames=n, span=self.span)))
        feed = (data, starts, [np.float32(c.crop_x) for c in kept], [np.float32(c.crop_y) for c in kept],
                [np.int32(c.flip) for c in kept], [np.float32(c.zoom) for c in kept])
        return kept, feed

    def read_file(self, path: Path) -> bytes:
        """One file's bytes (bench/bench_pipeline.py wraps it to inject a slow filesystem's latency)."""
        return path.read_bytes()

    def _read_all(self, clips: list[Clip]) -> dict[str, bytes | OSError]:
        """The batch's files, read concurrently (a network filesystem's latency overlaps)."""
        paths = list(dict.fromkeys(self.records[c.index].path for c in clips))
        paths = [p for p in paths if p not in self.bad]

        def one(path: str) -> bytes | OSError:
            try:
                return self.read_file(self.root / path)
            except OSError as exc:
                return exc
        if len(paths) <= 1:
            return {p: one(p) for p in paths}
        with ThreadPoolExecutor(min(len(paths), READ_THREADS), thread_name_prefix="c3dhash-read") as pool:
            return dict(zip(paths, pool.map(one, paths)))

    def _read(self, index: int, blobs: dict[str, bytes | OSError]) -> tuple[bytes | None, int]:
        path = self.records[index].path
        if path in self.bad:
            return None, 0
        blob = blobs.get(path)
        if blob is None:  # a stand-in outside the batch: read it now
            blob = self._read_all([Clip(index, 0.0)])[path]
        if isinstance(blob, OSError):  # vanished or unreadable since the manifest was written
            self._mark_bad(path, f"cannot read: {blob.strerror or blob}")
            return None, 0
        if index not in self.frames:
            try:
                info = probe_video(blob)
            except Exception as exc:  # any demux failure means "skip this file", never "stop training"
                self._mark_bad(path, f"cannot open with PyAV: {exc}")
                return None, 0
            if reason := unsupported_codec(info.codec, self.device):  # a setup problem, not one bad file
                raise DataError(f"{self.root / path}: {reason}")
            if info.frames == 0:
                self._mark_bad(path, "no video frames")
                return None, 0
            self.frames[index] = info.frames
        return blob, self.frames[index]

    def _substitute(self, clip: Clip) -> Clip | None:
        """Train: another good video of the same class (any class if none is left); eval: nothing."""
        if not self.replace:
            return None
        label = self.records[clip.index].label
        good = [i for i, r in enumerate(self.records) if r.path not in self.bad]
        if not good:
            raise DataError(f"{self.root}: every video of the split failed to decode; "
                            f"run `c3dhash check-data`")
        same = [i for i in good if self.records[i].label == label] or good
        return dataclasses.replace(clip, index=same[clip.index % len(same)])  # the same cut and augmentation

    def _mark_bad(self, path: str, reason: str) -> None:
        self.bad[path] = reason
        warnings.warn(f"{self.root / path}: {reason}; skipping it (run `c3dhash check-data` to find such "
                      f"files before training)", DataWarning, stacklevel=3)

    def _skip_failed(self, pending: deque, exc: RuntimeError) -> None:
        paths = list(dict.fromkeys(self.root / self.records[c.index].path for b in pending for c in b))
        errors = dali_decode_errors(paths, device=self.device, device_id=self.device_id,
                                    num_threads=self.cfg.num_threads)
        if not errors:
            raise DataError(f"DALI failed on a batch but each of its files decodes alone: "
                            f"{', '.join(map(str, paths))}: {exc}") from exc
        for path, reason in errors.items():
            self._mark_bad(Path(path).relative_to(self.root).as_posix(), reason)

    def _to_torch(self, out) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = out.as_tensor()
        x = torch.empty(dense.shape(), dtype=torch.float32, device=self.torch_device)
        stream = torch.cuda.current_stream(self.torch_device) if x.is_cuda else None
        feed_ndarray(dense, x, cuda_stream=stream)
        return x


class TrainLoader:
    """Iterable over (clips, labels); len() = steps per epoch, identical on every rank."""

    def __init__(self, records: Sequence[VideoRecord], root: str | Path, cfg: DataConfig, *, rank: int,
                 world_size: int, device_id: int | None, epoch: int = 0, static: bool = False,
                 steps: int = 0):
        self.records = list(records)
        self.cfg, self.rank, self.world_size, self.epoch, self.start_step = cfg, rank, world_size, epoch, 0
        self.sampler: PKSampler | RandomSampler | VideoSampler = make_sampler(
            [r.label for r in self.records], sampler=cfg.sampler, p=cfg.pk_classes, k=cfg.pk_samples,
            batch_size=cfg.batch_size, world_size=world_size, seed=cfg.seed, steps=steps)
        if self.sampler.batch_size < world_size:
            raise DataError(f"data.pk_classes x data.pk_samples = {self.sampler.batch_size} is smaller than "
                            f"the world size {world_size}: every rank needs at least one clip per step")
        # the largest rank slice; DALI takes smaller batches too (the slices differ by at most one clip)
        per_rank = -(-self.sampler.batch_size // world_size)
        self.decoder = ClipDecoder(self.records, root, cfg, batch_size=per_rank, device_id=device_id,
                                   static=static, replace=True)

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def batch_size(self) -> int:
        """Clips per global step, over all ranks (P x K)."""
        return self.sampler.batch_size

    def set_epoch(self, epoch: int, *, start_step: int = 0) -> None:
        """Iterate `epoch` from step `start_step` on (a resume mid-epoch: the plan is deterministic per epoch)."""
        self.epoch, self.start_step = epoch, start_step

    @property
    def skipped(self) -> dict[str, str]:
        return dict(self.decoder.bad)

    def plan(self, epoch: int) -> list[list[Clip]]:
        """This rank's clips for every step of `epoch` (what __iter__ decodes; no I/O)."""
        return [shard_batch(train_clips(b, seed=self.cfg.seed, epoch=epoch, step=s, flip=self.cfg.flip,
                                        colour=self.cfg.colour_jitter, zoom=self.cfg.zoom_jitter,
                                        reverse=self.cfg.reverse_negatives, frames=self.cfg.frame_negatives),
                            rank=self.rank, world_size=self.world_size)
                for s, b in enumerate(self.sampler.batches(epoch))]

    def step_sizes(self, epoch: int) -> list[int]:
        """This rank's clips at every step of `epoch` (the Trainer gathers all ranks' once per epoch; a decode
        failure substitutes a clip, so the batches __iter__ yields have these sizes)."""
        bounds = (slice_bounds(len(b), rank=self.rank, world_size=self.world_size)
                  for b in self.sampler.batches(epoch))
        return [end - start for start, end in bounds]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for clips, x in self.decoder.run(self.plan(self.epoch)[self.start_step:]):
            yield self.augment(x, clips), self.labels(clips).to(x.device)

    def labels(self, clips: list[Clip]) -> torch.Tensor:
        """Class labels, or video ids under data.sampler=video (self-supervised: positives = same video)."""
        return torch.tensor(clip_labels(clips, [r.label for r in self.records], sampler=self.cfg.sampler,
                                        reverse=self.cfg.reverse_negatives), dtype=torch.int64)

    def augment(self, x: torch.Tensor, clips: list[Clip]) -> torch.Tensor:
        """Colour jitter, time reversal, still and shuffled frames after decoding (loaders/augment.py); a no-op
        unless the config asks for them."""
        x = colour_jitter(x, clips, mean=self.cfg.mean, std=self.cfg.std) if needs_colour(clips) else x
        return scramble_frames(play_backwards(x, clips), clips)


class EvalLoader:
    """Iterable over (clips, labels, video_index): this rank's videos r::world, clips_per_video clips each (and
    each clip's mirror with data.eval_flip)."""

    def __init__(self, records: Sequence[VideoRecord], root: str | Path, cfg: DataConfig, *, rank: int,
                 world_size: int, device_id: int | None, static: bool = False):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.decoder = ClipDecoder(records, root, cfg, batch_size=cfg.batch_size, device_id=device_id,
                                   static=static, replace=False)
        self.reset(records)

    def reset(self, records: Sequence[VideoRecord]) -> None:
        """Another list of videos through the same DALI pipeline (no rebuild)."""
        self.records = list(records)
        videos = eval_shard(len(self.records), rank=self.rank, world_size=self.world_size)
        self.video_indices = videos  # this rank's videos, as positions in `records`
        self.batches = eval_clips(videos, clips_per_video=self.cfg.clips_per_video, batch_size=self.cfg.batch_size,
                                  mirror=self.cfg.eval_flip)
        self.decoder.use(self.records)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def skipped(self) -> dict[str, str]:
        return dict(self.decoder.bad)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for clips, x in self.decoder.run(self.batches):
            if needs_colour(clips):  # only copy loaders (build_copy_loader) draw colour at eval time
                x = colour_jitter(x, clips, mean=self.cfg.mean, std=self.cfg.std)
            labels = torch.tensor([self.records[c.index].label for c in clips], dtype=torch.int64)
            index = torch.tensor([c.index for c in clips], dtype=torch.int64)
            yield x, labels.to(x.device), index.to(x.device)


def build_train_loader(records: Sequence[VideoRecord], root: str | Path, cfg: DataConfig, *, rank: int,
                       world_size: int, device_id: int | None, epoch: int = 0, static: bool = False,
                       steps: int = 0) -> TrainLoader:
    """Training clips for one rank; `steps` = 0 means one pass (pk: ceil(len(records) / (P*K)))."""
    return TrainLoader(records, root, cfg, rank=rank, world_size=world_size, device_id=device_id, epoch=epoch,
                       static=static, steps=steps)


def build_eval_loader(records: Sequence[VideoRecord], root: str | Path, cfg: DataConfig, *, rank: int,
                      world_size: int, device_id: int | None, static: bool = False) -> EvalLoader:
    """Deterministic evaluation clips for one rank; over all ranks every video exactly once."""
    return EvalLoader(records, root, cfg, rank=rank, world_size=world_size, device_id=device_id,
                      static=static)


def build_copy_loader(records: Sequence[VideoRecord], root: str | Path, cfg: DataConfig, *, rank: int,
                      world_size: int, device_id: int | None, seed: int) -> EvalLoader:
    """An eval loader of augmented copies (loaders/sampler.py copy_clips: position, crop, flip, colour, zoom drawn
    per video from `seed`): held-out near-duplicate queries for validating self-supervised training."""
    loader = EvalLoader(records, root, cfg, rank=rank, world_size=world_size, device_id=device_id)
    loader.batches = copy_clips(loader.video_indices, clips_per_video=cfg.clips_per_video,
                                batch_size=cfg.batch_size, seed=seed, flip=cfg.flip,
                                colour=cfg.colour_jitter, zoom=cfg.zoom_jitter, mirror=cfg.eval_flip)
    return loader
