"""Synthetic action videos in UCF101's exact layout: the class is the MOTION, never the look of a frame.

    c3dhash synth --out data/synth                      # 8 classes x 48 videos, 32 frames, 48x64, VP9
    c3dhash splits --dataset synth --root data/synth    # -> data/synth/manifests/split1/{train,val,test}.tsv

    from c3dhash.loaders.synth import make_synth_dataset
    summary = make_synth_dataset("data/tiny", classes=4, per_class=4, frames=8, size=(32, 32), codec="mjpeg")
    print(summary.format_summary())

Each video films a patterned surface: a random full-frame texture (a sum of plane waves, thresholded into
blotches) that moves as a whole behind a faint static layer (a smooth random "background" seen through it).
The class fixes how the texture moves: travel right/left/up/down, spin clockwise/counter-clockwise about a
point near the centre, swing back and forth, travel around a circle, ... Palette (dark and bright tint),
contrast, texture scale and layout, start phase, rotation centre, static layer, speed/period/amplitude and
sensor noise are drawn per video independently of the class, so no single frame tells the class while any 8
consecutive frames at stride 1-2 show the motion (swings turn every 6-9 frames, circles every 10-16).

Why full-frame motion rather than a small moving object: with motion at every pixel, r3d_18 from random init
learns the classes in a few hundred steps on 2 CPU cores (measured, 8x32x32 clips, P x K 4x4 batches, AdamW
1e-3, all-triplet loss: test mAP 0.63 after 150 steps, 0.80 after 350-400; a 10 px blob on a busy background
stayed at chance for 200 steps). Why a dark/bright palette with a mild tint rather than free colours: free
colour pairs bury the motion under appearance variance (160-step check: accuracy 0.19 vs 0.92). 48 videos per
class by default: with 18 train videos per class the train loss was ~0 while test mAP was still 0.6.

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

from c3dhash.loaders.manifest import DataError
from c3dhash.loaders.videoio import CODECS, codec_ext, write_video

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
    """Per-frame shift (dx, dy) in px and rotation (radians) of the texture for `motion`."""
    t = np.arange(frames, dtype=np.float64)
    zero = np.zeros(frames)
    if motion.startswith("Move"):
        ux = ("Right" in motion) - ("Left" in motion)
        uy = ("Down" in motion) - ("Up" in motion)
        speed = rng.uniform(0.05, 0.07) * side / math.hypot(ux, uy)  # < half the finest wavelength: no aliasing
        return speed * t * ux, speed * t * uy, zero
    if motion.startswith("Spin"):
        omega = math.radians(rng.uniform(3, 5)) * (1 if motion == "SpinClockwise" else -1)
        return zero, zero, omega * t  # image y points down, so a growing angle turns clockwise on screen
    phase = rng.uniform(0, 2 * math.pi)
    if motion.startswith("Swing"):
        # period 6-9 frames: every 8-frame window (stride 1 or 2) contains a turn, unlike straight travel
        swing = rng.uniform(0.06, 0.085) * side * np.sin(2 * math.pi * t / rng.uniform(6, 9) + phase)
        return (swing, zero, zero) if motion == "SwingSideways" else (zero, swing, zero)
    if motion.startswith("Circle"):
        radius, sign = rng.uniform(0.07, 0.1) * side, (1 if motion == "CircleClockwise" else -1)
        angle = phase + sign * 2 * math.pi * t / rng.uniform(10, 16)
        return radius * np.cos(angle), radius * np.sin(angle), zero
    raise DataError(f"unknown synthetic motion {motion!r}; known: {', '.join(MOTIONS)}")


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dark and bright RGB colours: a strong luminance contrast (the motion signal) with a random tint."""
    dark, bright = rng.uniform(0.05, 0.3), rng.uniform(0.7, 0.95)
    return (np.clip(dark + rng.uniform(-0.2, 0.2, 3), 0, 1), np.clip(bright + rng.uniform(-0.2, 0.2, 3), 0, 1))


def render_video(motion: str, *, frames: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB [frames, H, W, 3] of one video of class `motion`; all nuisance comes from `rng`."""
    h, w = size
    side, waves = float(min(h, w)), 8
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    wavelength = rng.uniform(0.2, 0.45, waves) * side
    heading = rng.uniform(0, 2 * math.pi, waves)
    kx = (2 * math.pi / wavelength * np.cos(heading))[:, None, None]
    ky = (2 * math.pi / wavelength * np.sin(heading))[:, None, None]
    amp = rng.uniform(0.5, 1.0, waves)[:, None, None]
    phase = rng.uniform(0, 2 * math.pi, waves)[:, None, None]
    scale = float(np.sqrt((amp ** 2).sum() / 2))  # std of the wave sum
    dark, bright = _palette(rng)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h  # rotation centre
    still = _smooth_noise(rng, h, w, int(rng.integers(3, 7)))  # the static layer: moves with no class
    still_alpha, noise = rng.uniform(0.15, 0.3), rng.uniform(1, 4) / 255
    dx, dy, theta = trajectory(motion, frames, side, rng)
    out = np.empty((frames, h, w, 3), np.uint8)
    for i in range(frames):
        # pixel p shows the texture point R(-theta) (p - c - d): the pattern moves by d and turns by theta
        ox, oy = xx - cx - dx[i], yy - cy - dy[i]
        cos, sin = math.cos(theta[i]), math.sin(theta[i])
        u, v = cos * ox + sin * oy, -sin * ox + cos * oy
        field = (amp * np.sin(kx * u + ky * v + phase)).sum(0)
        mix = (0.5 + 0.5 * np.tanh(1.5 * field / scale))[..., None]  # soft-thresholded: blotches, no aliasing
        img = dark * mix + bright * (1 - mix)
        img = (1 - still_alpha) * img + still_alpha * still + rng.normal(0, noise, (h, w, 3))
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


def make_synth_dataset(out: str | Path, *, classes: int = 8, per_class: int = 48, frames: int = 32,
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
