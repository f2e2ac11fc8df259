"""Synthetic action videos in UCF101's exact layout: the class is the MOTION, never the look of a frame.

    c3dhash synth --out data/synth                      # 8 classes x 30 videos, 32 frames, 48x64, VP9
    c3dhash splits --dataset synth --root data/synth    # -> data/synth/manifests/split1/{train,val,test}.tsv

    from loaders.synth import make_synth_dataset
    summary = make_synth_dataset("data/tiny", classes=4, per_class=4, frames=8, size=(32, 32), codec="mjpeg")
    print(summary.format_summary())

Each video shows a striped, elongated blob over a smooth random background. The class fixes how the blob moves
(travel right/left/up/down, spin clockwise/counter-clockwise, swing, circle, ...); colour, size, aspect,
stripes, start position and orientation, background, a slow random drift and sensor noise are drawn per video
and independent of the class, so one frame carries no class information while any 8 consecutive frames at
stride 1-2 show the motion. The frame is a torus (the blob wraps around the edges), so position never hints
at the time or the direction of travel.

Layout (UCF101's): <out>/<Class>/v_<Class>_gXX_cYY.<ext> and <out>/ucfTrainTestlist/{classInd,trainlist01,
testlist01}.txt. Video i of a class is group (i mod G) + 1, clip (i div G) + 1 with
G = clamp(ceil(M/3), 2, 25) groups; like UCF101 split 1 (test = groups 1-7 of 25) the first round(7G/25)
groups (at least 1, at most G-1) are test, the rest train.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from loaders.manifest import DataError
from loaders.videoio import CODECS, codec_ext, write_video

# Class name -> motion. Order = classInd order; `classes=C` takes the first C.
MOTIONS = ("MoveRight", "MoveLeft", "MoveUp", "MoveDown", "SpinClockwise", "SpinCounterclockwise",
           "SwingSideways", "CircleClockwise", "SwingUpDown", "CircleCounterclockwise", "MoveDownRight",
           "MoveUpLeft")
LIST_DIR = "ucfTrainTestlist"


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    classes: tuple[str, ...]
    counts: dict[str, int]  # videos per official split: {"train": ..., "test": ...}
    codec: str
    files: tuple[str, ...]  # video paths relative to `out`, class-major order
    frames: int = 0
    size: tuple[int, int] = (0, 0)

    def format_summary(self) -> str:
        per_split = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        h, w = self.size
        return (f"wrote {len(self.files)} {self.codec} videos ({self.frames} frames, {h}x{w}) "
                f"of {len(self.classes)} classes to {self.out} ({per_split}); "
                f"lists in {self.out / LIST_DIR}")


def format_summary(summary: SynthSummary) -> str:
    return summary.format_summary()


def group_layout(per_class: int) -> tuple[int, int]:
    """(groups, test groups) for `per_class` videos per class: UCF101's 7-of-25 test ratio, scaled."""
    groups = min(25, max(2, math.ceil(per_class / 3)))
    return groups, min(groups - 1, max(1, round(groups * 7 / 25)))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinear upsampling of a cells x cells x 3 random grid: a smooth, colourful background."""
    grid = rng.random((cells + 1, cells + 1, 3))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    rows = grid[y0] * (1 - fy) + grid[y0 + 1] * fy  # [h, cells + 1, 3]
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


def trajectory(motion: str, frames: int, side: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per-frame blob centre offsets (dx, dy) from the start and orientation offset (radians) for `motion`."""
    t = np.arange(frames, dtype=np.float64)
    zero = np.zeros(frames)
    speed = rng.uniform(0.035, 0.055) * side  # px per frame for travelling classes
    if motion.startswith("Move"):
        ux = ("Right" in motion) - ("Left" in motion)
        uy = ("Down" in motion) - ("Up" in motion)
        norm = math.hypot(ux, uy)
        return speed * t * ux / norm, speed * t * uy / norm, zero
    if motion.startswith("Spin"):
        omega = math.radians(rng.uniform(10, 18)) * (1 if motion == "SpinClockwise" else -1)
        return zero, zero, omega * t  # image y points down, so a growing angle turns clockwise on screen
    phase = rng.uniform(0, 2 * math.pi)
    if motion.startswith("Swing"):
        # period 6-9 frames: every 8-frame window (stride 1 or 2) contains a turn, unlike straight travel
        swing = rng.uniform(0.15, 0.22) * side * np.sin(2 * math.pi * t / rng.uniform(6, 9) + phase)
        return (swing, zero, zero) if motion == "SwingSideways" else (zero, swing, zero)
    if motion.startswith("Circle"):
        radius, sign = rng.uniform(0.15, 0.22) * side, (1 if motion == "CircleClockwise" else -1)
        angle = phase + sign * 2 * math.pi * t / rng.uniform(10, 16)
        return radius * np.cos(angle), radius * np.sin(angle), zero
    raise DataError(f"unknown synthetic motion {motion!r}; known: {', '.join(MOTIONS)}")


def render_video(motion: str, *, frames: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB [frames, H, W, 3] of one video of class `motion`; all nuisance comes from `rng`."""
    h, w = size
    side = float(min(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    level = rng.uniform(0.15, 0.85)  # background brightness; the blob contrasts with it by ~0.35
    background = level + 0.25 * (_smooth_noise(rng, h, w, int(rng.integers(2, 6))) - 0.5)
    blob_level = level + (0.35 if level < 0.5 else -0.35)
    colours = np.clip(blob_level + rng.uniform(-0.15, 0.15, (2, 3)), 0, 1)
    colours[1] = np.clip(colours[1] + rng.choice([-1, 1]) * 0.2, 0, 1)  # second stripe colour
    a = rng.uniform(0.16, 0.24) * side  # semi-axes: elongated so that spinning is visible
    b = a * rng.uniform(0.35, 0.55)
    stripe, stripe_phase = rng.uniform(0.4, 0.7) * a, rng.uniform(0, 2 * math.pi)
    x0, y0, theta0 = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, math.pi)
    drift = rng.uniform(0, 0.008 * side) * np.array([math.cos(d := rng.uniform(0, 2 * math.pi)), math.sin(d)])
    noise = rng.uniform(2, 6) / 255
    dx, dy, dtheta = trajectory(motion, frames, side, rng)
    out = np.empty((frames, h, w, 3), np.uint8)
    for i in range(frames):
        cx, cy = x0 + dx[i] + drift[0] * i, y0 + dy[i] + drift[1] * i
        # offsets on the torus, so the blob wraps around the edges instead of leaving the frame
        ox, oy = (xx - cx + w / 2) % w - w / 2, (yy - cy + h / 2) % h - h / 2
        th = theta0 + dtheta[i]
        u, v = ox * math.cos(th) + oy * math.sin(th), -ox * math.sin(th) + oy * math.cos(th)
        edge = (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * b  # ~distance to the outline in px
        alpha = np.clip(0.5 - edge, 0, 1)[..., None]  # 1 px anti-aliased edge: no shimmer when it moves
        mix = (0.5 + 0.5 * np.tanh(3 * np.sin(2 * math.pi * u / stripe + stripe_phase)))[..., None]
        blob = colours[0] * mix + colours[1] * (1 - mix)
        img = background * (1 - alpha) + blob * alpha + rng.normal(0, noise, (h, w, 3))
        out[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def _write_one(task: tuple) -> str:
    path, motion, seed_key, frames, size, codec, fps = task
    video = render_video(motion, frames=frames, size=size, rng=np.random.default_rng(seed_key))
    write_video(path, video, codec=codec, fps=fps)
    return str(path)


def _check_args(classes: int, per_class: int, frames: int, size: tuple[int, int], codec: str) -> None:
    if not 1 <= classes <= len(MOTIONS):
        raise DataError(f"synth: classes={classes}; choose 1..{len(MOTIONS)} "
                        f"(one per motion: {', '.join(MOTIONS)})")
    if per_class < 2:
        raise DataError(f"synth: per_class={per_class}; need >= 2 so each class has a train and a test group")
    if frames < 2:
        raise DataError(f"synth: frames={frames}; need >= 2 frames to show motion")
    if len(size) != 2 or min(size) < 16 or size[0] % 2 or size[1] % 2:
        raise DataError(f"synth: size={size}; use even H and W >= 16 (4:2:0 video needs even sizes), "
                        f"e.g. 48x64")
    if codec not in CODECS:
        raise DataError(f"synth: codec={codec!r}; choose one of {', '.join(CODECS)}")


def _write_lists(out: Path, names: tuple[str, ...], train: list[tuple[str, int]], test: list[str]) -> None:
    lists = out / LIST_DIR
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, start=1)))
    (lists / "trainlist01.txt").write_text("".join(f"{p} {label}\n" for p, label in train))
    (lists / "testlist01.txt").write_text("".join(f"{p}\n" for p in test))


def make_synth_dataset(out: str | Path, *, classes: int = 8, per_class: int = 30, frames: int = 32,
                       size: tuple[int, int] = (48, 64), codec: str = "vp9", seed: int = 0, fps: int = 25,
                       workers: int | None = None, progress: bool = True) -> SynthSummary:
    """Write `classes` x `per_class` videos plus UCF101-format lists under `out`; deterministic in `seed`.

    workers: processes (None = all cores, or 1 below 32 videos). Files of the same names are replaced.
    """
    size = (int(size[0]), int(size[1]))
    _check_args(classes, per_class, frames, size, codec)
    out, names, ext = Path(out), MOTIONS[:classes], codec_ext(codec)
    groups, test_groups = group_layout(per_class)
    tasks, train, test, files = [], [], [], []
    for c, name in enumerate(names):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            g, clip = i % groups + 1, i // groups + 1
            rel = f"{name}/v_{name}_g{g:02d}_c{clip:02d}{ext}"
            files.append(rel)
            # the seed key names the video, not its position in the task list: same video for any per_class
            tasks.append((out / rel, name, (seed, c, g, clip), frames, size, codec, fps))
            if g <= test_groups:
                test.append(rel)
            else:
                train.append((rel, c + 1))
    if workers is None:  # starting a process pool costs ~1 s: below ~32 small videos one process wins
        workers = (os.cpu_count() or 1) if len(tasks) >= 32 else 1
    workers = min(workers, len(tasks))
    bar = tqdm(total=len(tasks), desc="synth", unit="video", disable=not progress)
    if workers <= 1:
        for task in tasks:
            _write_one(task)
            bar.update()
    else:  # spawn: safe even when the caller already imported torch/ray (fork would copy their threads)
        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, tasks, chunksize=4):
                bar.update()
    bar.close()
    _write_lists(out, names, train, test)
    counts = {"train": len(train), "test": len(test)}
    return SynthSummary(out, names, counts, codec, tuple(files), frames, size)
