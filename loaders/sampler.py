"""Which clips go into which batch, on which rank: pure Python/NumPy, no DALI, so every rule is unit-tested.

    sampler = PKSampler(labels, p=8, k=4, seed=0)            # one GLOBAL batch = P classes x K clips
    for step, batch in enumerate(sampler.batches(epoch)):     # record indices, class-major
        clips = train_clips(batch, seed=0, epoch=epoch, step=step, flip=True)
        mine = shard_batch(clips, rank=r, world_size=w)       # rank r's slice (sizes differ by <= 1)
    eval_clips(eval_shard(len(records), rank=r, world_size=w), clips_per_video=1, batch_size=16)

The pipelines (loaders/pipelines.py) only decode what this module decides. Everything random is drawn from
NumPy generators seeded by (seed, epoch[, step]) for the GLOBAL batch and then sliced by rank, so the union of
the ranks' batches at a step equals the single-process batch: distributed == single process, bit for bit.
The global batch (P x K) is fixed by the config, whatever the world size W: rank r takes the r-th of W
contiguous slices whose sizes differ by at most one (the first B mod W ranks one clip more), so a run on
2 or 3 workers sees, step for step, the very clips of a 1-worker run (elastic training, README).

Temporal rule shared by train and eval: a clip is `num_frames` frames at `stride`, spanning
span = (num_frames - 1) * stride + 1 frames; its first frame is
    start = min(floor(position * (L + 1)), L),  L = max(0, n_frames - span)
with position ~ U[0, 1) at train time (random jitter) and position = (j + 0.5) / clips at eval time (the
centres of `clips` equal segments of the valid start range; clips=1 is the centre clip). Eval therefore uses
the SAME stride as training: the model learns motion, so the temporal sampling rate must not change.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from c3dhash.loaders.manifest import DataError


@dataclass(frozen=True)
class Clip:
    """One clip to decode: a record (index into the loader's record list) plus where/how to cut it."""
    index: int
    position: float  # temporal position in [0, 1], see `start_frame`
    crop_x: float = 0.5  # crop window position in [0, 1] (DALI crop_pos_x/y); 0.5 = centre
    crop_y: float = 0.5
    flip: bool = False
    brightness: float = 1.0  # colour factors (loaders/augment.py); 1.0 = unchanged, the eval default
    contrast: float = 1.0
    saturation: float = 1.0
    zoom: float = 1.0  # resize factor before the crop (>= 1: the crop shows less of the frame, larger)
    reverse: bool = False  # frames in reverse order (data.reverse_negatives): a video's backward clips
    scramble: str = ""  # "still" | "shuffled" (data.frame_negatives): its first frame held, its frames reordered


def clip_span(num_frames: int, stride: int) -> int:
    return (num_frames - 1) * stride + 1


def start_frame(position: float, *, n_frames: int, span: int) -> int:
    """First frame of a clip; a video shorter than the span starts at 0 and is padded by the decoder."""
    last = max(0, n_frames - span)
    return min(int(math.floor(position * (last + 1))), last)


def eval_positions(clips: int) -> list[float]:
    return [(j + 0.5) / clips for j in range(clips)]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


class _PxK:
    """A global batch of p groups x k clips, `steps` batches an epoch (the P x K and the video samplers)."""
    p: int
    k: int
    steps: int

    def __len__(self) -> int:
        return self.steps

    @property
    def batch_size(self) -> int:
        return self.p * self.k


class PKSampler(_PxK):
    """Global batches of P classes x K clips, reshuffled every epoch.

    Each class keeps a shuffled queue of its videos and is drawn from in turn, so every video is seen once
    per epoch as far as P x K batches allow; the P classes of a batch are those with the most videos left
    this epoch (ties broken at random), which spreads classes evenly over the epoch. A class with fewer than
    K videos repeats videos inside a batch (unavoidable); otherwise a batch never holds a video twice.
    """

    def __init__(self, labels: Sequence[int], *, p: int, k: int, seed: int = 0, steps: int = 0):
        labels = np.asarray(labels, dtype=np.int64)
        self.classes = np.unique(labels)
        if p < 0 or k < 1:
            raise DataError(f"P x K sampler: P={p} and K={k} must be >= 0 and >= 1 "
                            f"(data.pk_classes, 0 = every class; data.pk_samples)")
        p = p or len(self.classes)  # data.pk_classes=0: every class of the split in each batch
        if p > len(self.classes):
            raise DataError(f"P x K sampler: data.pk_classes={p} but the split has only {len(self.classes)} "
                            f"classes; lower data.pk_classes to <= {len(self.classes)}")
        self.p, self.k, self.seed = p, k, seed
        self.members = {int(c): np.flatnonzero(labels == c) for c in self.classes}
        self.steps = steps or math.ceil(len(labels) / (p * k))

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = _rng(self.seed, epoch)
        queues = {c: list(rng.permutation(m)) for c, m in self.members.items()}
        left = {c: len(m) for c, m in self.members.items()}  # videos not yet seen this epoch
        out = []
        for _ in range(self.steps):
            order = rng.permutation(self.classes)
            chosen = sorted(order, key=lambda c: -left[int(c)])[: self.p]  # stable sort keeps the random ties
            batch = []
            for c in map(int, chosen):
                batch += self._take(c, queues, rng)
                left[c] = max(0, left[c] - self.k)
            out.append(np.asarray(batch, dtype=np.int64))
        return out

    def _take(self, c: int, queues: dict[int, list[int]], rng: np.random.Generator) -> list[int]:
        """K videos of class c from its queue; a refilled queue puts videos already in this batch last."""
        taken: list[int] = []
        while len(taken) < self.k:
            if not queues[c]:
                fresh = list(rng.permutation(self.members[c]))
                queues[c] = [v for v in fresh if v not in taken] + [v for v in fresh if v in taken]
            taken.append(int(queues[c].pop(0)))
        return taken


class VideoSampler(_PxK):
    """Self-supervised global batches: P distinct videos x K clips of each (video-major), labels = video ids.

    One shuffled queue of all videos per epoch, consumed P at a time (a refill puts videos already in the
    batch last, so a batch never holds a video twice); `steps` 0 = ceil(n / P): every video once an epoch.
    The K clips of a video differ by their augmentation draw (train_clips), which is what makes them positives.
    """

    def __init__(self, n: int, *, p: int, k: int, seed: int = 0, steps: int = 0):
        if p < 2 or k < 2:
            raise DataError(f"video sampler: P={p} videos x K={k} clips; both must be >= 2 (a clip needs a "
                            f"positive, another clip of its video, and negatives, other videos): raise "
                            f"data.pk_classes / data.pk_samples")
        if p > n:
            raise DataError(f"video sampler: data.pk_classes={p} videos per batch but the split has only {n} "
                            f"videos; lower data.pk_classes to <= {n}, or data.val_per_class (the validation "
                            f"videos of each folder are taken out of train)")
        self.n, self.p, self.k, self.seed = n, p, k, seed
        self.steps = steps or math.ceil(n / p)

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = _rng(self.seed, epoch, 2)  # its own stream: not the P x K sampler's
        queue: list[int] = []
        out = []
        for _ in range(self.steps):
            videos: list[int] = []
            while len(videos) < self.p:
                if not queue:
                    fresh = [int(v) for v in rng.permutation(self.n)]
                    queue = [v for v in fresh if v not in videos] + [v for v in fresh if v in videos]
                videos.append(queue.pop(0))
            out.append(np.repeat(np.asarray(videos, dtype=np.int64), self.k))
        return out


def make_sampler(labels: Sequence[int], *, sampler: str, p: int, k: int, batch_size: int, world_size: int,
                 seed: int, steps: int = 0) -> PKSampler | RandomSampler | VideoSampler:
    """The training sampler a data config names (data.sampler: pk | random | video)."""
    if sampler == "pk":
        return PKSampler(labels, p=p, k=k, seed=seed, steps=steps)
    if sampler == "video":
        return VideoSampler(len(labels), p=p, k=k, seed=seed, steps=steps)
    return RandomSampler(len(labels), batch_size=batch_size * world_size, seed=seed, steps=steps)


def clip_labels(clips: Sequence[Clip], labels: Sequence[int], *, sampler: str, reverse: bool = False
                ) -> list[int]:
    """The loss labels of a batch: class labels, or (sampler video) the video ids, so the positives of a clip
    are the other clips of its own video. Ids are positions in the shared record list: equal on every rank.
    With data.reverse_negatives each kind of a video's clips is an identity of its own, 4 x id + kind (kind:
    FORWARD, BACKWARD, STILL, SHUFFLED): a forward clip's positives are the other forward clips of its video, and
    the backward ones (the same look, the opposite motion), its still and shuffled ones are its negatives."""
    if sampler != "video":
        return [int(labels[c.index]) for c in clips]
    if reverse:  # from the config, not the clips: a rank's slice may hold no backward clip
        return [KINDS * c.index + clip_kind(c) for c in clips]
    return [c.index for c in clips]


FORWARD, BACKWARD, STILL, SHUFFLED = range(4)
KINDS = 4


def clip_kind(c: Clip) -> int:
    return {"still": STILL, "shuffled": SHUFFLED}.get(c.scramble, BACKWARD if c.reverse else FORWARD)


def label_videos(labels):
    """The video of each loss label of clip_labels(..., reverse=True): every kind of a video's clips is one
    group (loss.negatives=own_video). Works on ints and on integer tensors."""
    return labels // KINDS


class RandomSampler:
    """Global batches of `batch_size` records from one permutation per epoch; the last batch wraps around
    into a second permutation so every batch is full (equal batch counts on every rank)."""

    def __init__(self, n: int, *, batch_size: int, seed: int = 0, steps: int = 0):
        if n < 1:
            raise DataError("random sampler: the split is empty; check the manifest and skip.tsv")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps = steps or math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = _rng(self.seed, epoch)
        need = self.steps * self.batch_size
        order = np.concatenate([rng.permutation(self.n) for _ in range(math.ceil(need / self.n))])[:need]
        return list(order.reshape(self.steps, self.batch_size))


def slice_bounds(n: int, *, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of rank r's contiguous slice of n items: sizes n // W, plus one for the first n % W ranks."""
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} outside a world of {world_size}")
    per, extra = divmod(n, world_size)
    start = rank * per + min(rank, extra)
    return start, start + per + (rank < extra)


def shard_batch(batch: Sequence[Clip], *, rank: int, world_size: int) -> list[Clip]:
    """Rank r's contiguous slice of a global batch; the slices of ranks 0..W-1 concatenate to the batch."""
    start, end = slice_bounds(len(batch), rank=rank, world_size=world_size)
    return list(batch[start:end])


def train_clips(batch: np.ndarray, *, seed: int, epoch: int, step: int, flip: bool,
                colour: float = 0.0, zoom: float = 0.0, reverse: bool = False, frames: bool = False) -> list[Clip]:
    """Random temporal position, crop window, flip, (colour > 0) colour factors in [1 - colour, 1 + colour] and
    (zoom > 0) a zoom in [1, 1 + zoom] for every clip of a GLOBAL batch (slice it by rank afterwards, so the
    draw does not depend on the number of ranks). `reverse`: every other clip of a video in the batch (its 2nd,
    4th, ...) plays backwards; `frames`: a video's last two clips are held still and shuffled instead. No random
    draw for either, so the other augmentations stay as they were."""
    rng = _rng(seed, epoch, step, 1)  # a stream of its own: changing P/K does not reseed augmentation
    n = len(batch)
    pos, cx, cy = rng.random(n), rng.random(n), rng.random(n)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    factors = np.ones((3, n))
    if colour > 0:  # a third stream: turning colour on leaves positions, crops and flips as they were
        factors = 1.0 + colour * (2.0 * _rng(seed, epoch, step, 3).random((3, n)) - 1.0)
    zooms = 1.0 + zoom * _rng(seed, epoch, step, 4).random(n) if zoom > 0 else np.ones(n)  # a fourth stream
    occ = occurrences(batch)
    backward = occ % 2 == 1 if reverse else np.zeros(n, bool)
    scramble = [""] * n
    if frames:
        left = np.bincount(batch)[batch] - occ  # clips of the video from this one on: 2 = next to last
        scramble = ["still" if k == 2 else "shuffled" if k == 1 else "" for k in left]
        backward &= left > 2
    return [Clip(int(i), float(p), float(x), float(y), bool(f), float(b), float(c), float(s), float(z), bool(r), m)
            for i, p, x, y, f, b, c, s, z, r, m in zip(batch, pos, cx, cy, flips, *factors, zooms, backward, scramble)]


def occurrences(batch: np.ndarray) -> np.ndarray:
    """For each entry, how many earlier entries of the batch hold the same video (0 for its first clip)."""
    seen: dict[int, int] = {}
    out = np.empty(len(batch), np.int64)
    for j, i in enumerate(batch):
        out[j] = seen.get(int(i), 0)
        seen[int(i)] = out[j] + 1
    return out


def eval_shard(n: int, *, rank: int, world_size: int) -> list[int]:
    """Videos of rank r: r, r + W, r + 2W, ... Every video exactly once over all ranks, no padding."""
    return list(range(rank, n, world_size))


def views_per_video(clips_per_video: int, mirror: bool) -> int:
    """Clips decoded per video at evaluation: each position once, twice with its mirror (data.eval_flip)."""
    return clips_per_video * (2 if mirror else 1)


def _mirrored(clips: list[Clip], mirror: bool) -> list[Clip]:
    """Each clip followed by its left-right mirror (the same crop window, flipped). For centre crops the pair is
    the same pair for a mirrored video, so the mean of a video's outputs does not change when it is mirrored."""
    return [m for c in clips for m in ((c, dataclasses.replace(c, flip=not c.flip)) if mirror else (c,))]


def eval_clips(videos: Sequence[int], *, clips_per_video: int, batch_size: int,
               mirror: bool = False) -> list[list[Clip]]:
    """Centre-crop, unflipped clips of each video (each followed by its mirror with `mirror`), chunked into
    batches; the last batch may be smaller."""
    flat = _mirrored([Clip(v, p) for v in videos for p in eval_positions(clips_per_video)], mirror)
    return [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]


# The edit of a near-duplicate copy, here (validation copies) and in loaders/neardup.py (the files of a library's
# copies): 70-90 % of the frames kept, a 75-90 % crop rescaled to the frame at a random offset, which shows the
# content larger by 1/0.9 to 1/0.75.
COPY_KEEP = (0.7, 0.9)
COPY_CROP = (0.75, 0.9)
COPY_ZOOM = (1 / COPY_CROP[1], 1 / COPY_CROP[0])


def copy_clips(videos: Sequence[int], *, clips_per_video: int, batch_size: int, seed: int, flip: bool,
               colour: float, zoom: float = 0.0, mirror: bool = False) -> list[list[Clip]]:
    """Held-out copies for validation without labels: one edit per video, drawn from (seed, video) so a
    video's copy is the same on any rank and epoch, applied to all its clips as an edited re-upload would be.
    The edit: a trimmed span (COPY_KEEP of the video, the clips spread over it as eval_clips spreads them over
    the whole), one crop offset and zoom (COPY_ZOOM, or [1, 1 + zoom] when data.zoom_jitter reaches further),
    one flip (`flip`: half the copies) and one brightness, contrast and saturation factor each (`colour`).
    With `mirror` each clip is followed by its mirror image, as eval_clips does."""
    flat = []
    for v in videos:
        rng = _rng(seed, v, 10)
        keep, start, cx, cy, f, z = rng.random(6)
        keep = COPY_KEEP[0] + (COPY_KEEP[1] - COPY_KEEP[0]) * keep
        z = COPY_ZOOM[0] + (max(COPY_ZOOM[1], 1.0 + zoom) - COPY_ZOOM[0]) * z
        b, c, s = 1.0 + colour * (2.0 * rng.random(3) - 1.0) if colour > 0 else (1.0, 1.0, 1.0)
        flat += [Clip(v, float((1.0 - keep) * start + keep * p), float(cx), float(cy), bool(flip and f < 0.5),
                      float(b), float(c), float(s), float(z)) for p in eval_positions(clips_per_video)]
    flat = _mirrored(flat, mirror)
    return [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
