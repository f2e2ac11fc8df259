"""Clip loading throughput: our DALI CPU pipeline vs a PyAV + torch DataLoader baseline, same clips, same run.

    .venv/bin/python bench/bench_loader.py                      # ~30 s on 2 cores
    .venv/bin/python bench/bench_loader.py --per-class 24 --size 120 160 --epochs 3

Both sides decode the SAME clips (the train loader's own plan: file, start frame, crop window, flip), resize,
crop, flip and normalise to float32 N x C x T x H x W with the same number of workers (DALI threads vs
DataLoader worker processes). The baseline decodes with PyAV from the first frame up to the clip's last
frame (VP9 seeks only to key frames, so this is what a simple PyAV loader does) and resizes with
torch.nn.functional.interpolate (bilinear, antialiased like DALI). Epochs alternate between the two sides
(fair on a shared machine); an untimed warm-up epoch comes first (DALI's frame counts, the file cache), and
the first batch of every epoch (pipeline build / worker start) is not timed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.pipelines import build_train_loader
from c3dhash.loaders.sampler import Clip, clip_span, start_frame
from c3dhash.loaders.synth import make_synth_dataset
from c3dhash.loaders.videoio import probe_video


class PyAVClips(Dataset):
    """One planned clip per item, decoded and transformed with PyAV + torch (the baseline)."""

    def __init__(self, clips: list[Clip], records: list[VideoRecord], root: Path, cfg: DataConfig):
        self.clips, self.records, self.root, self.cfg = clips, records, root, cfg
        self.frames = {r.path: probe_video(root / r.path).frames for r in records}
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        c, cfg = self.clips[i], self.cfg
        rec = self.records[c.index]
        n = self.frames[rec.path]
        start = start_frame(c.position, n_frames=n, span=clip_span(cfg.num_frames, cfg.stride))
        want = [min(start + t * cfg.stride, n - 1) for t in range(cfg.num_frames)]
        rgb, needed, last = {}, set(want), None
        with av.open(str(self.root / rec.path)) as container:
            for k, frame in enumerate(container.decode(video=0)):
                if k in needed:  # every frame must be decoded, only the clip's are converted to RGB
                    rgb[k] = last = frame.to_ndarray(format="rgb24")
                if k == want[-1]:
                    break
        x = torch.from_numpy(np.stack([rgb.get(k, last) for k in want]))  # T H W C (short: last frame)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        x = F.interpolate(x, size=cfg.resize, mode="bilinear", antialias=True, align_corners=False)
        (h, w), (ch, cw) = cfg.resize, cfg.crop
        y0, x0 = round(c.crop_y * (h - ch)), round(c.crop_x * (w - cw))
        x = x[:, :, y0:y0 + ch, x0:x0 + cw].permute(1, 0, 2, 3)  # C T H W
        x = x.flip(-1) if c.flip else x
        return (x - self.mean) / self.std


def _timed(batches, warmup: int = 1) -> tuple[int, float]:
    """Clips produced and seconds spent after the warm-up batches."""
    clips, t0 = 0, None
    for i, x in enumerate(batches):
        if i == warmup - 1:
            t0 = time.perf_counter()
        elif i >= warmup:
            clips += x.shape[0]
    return clips, time.perf_counter() - (t0 or time.perf_counter())


def measure(records: list[VideoRecord], root: Path, cfg: DataConfig, epochs: int) -> dict[str, list[float]]:
    """clips/s of each side per epoch; epochs alternate sides so both see the same machine load."""
    dali = build_train_loader(records, root, cfg, rank=0, world_size=1, device_id=None)
    rates: dict[str, list[float]] = {"DALI cpu": [], "PyAV+DataLoader": []}
    for epoch in range(-1, epochs):  # epoch -1 warms up: DALI's per-file frame counts, the OS file cache
        dali.set_epoch(max(epoch, 0))
        flat = [c for batch in dali.plan(max(epoch, 0)) for c in batch]
        base = DataLoader(PyAVClips(flat, records, root, cfg), batch_size=cfg.batch_size,
                          num_workers=cfg.num_threads, worker_init_fn=lambda _: torch.set_num_threads(1))
        # lazily: iter(DataLoader) starts workers that would prefetch while DALI is being timed
        sides = (("DALI cpu", lambda: (x for x, _ in dali)), ("PyAV+DataLoader", lambda: iter(base)))
        for name, batches in sides:
            n, s = _timed(batches())
            if epoch >= 0:
                rates[name].append(n / s)
    return rates


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # the measured work is the loaders', not intra-op threads of the main process
    cfg = DataConfig(num_frames=args.clip_frames, stride=args.stride, resize=tuple(args.resize),
                     crop=tuple(args.crop), sampler="random", batch_size=args.batch, num_threads=args.workers,
                     device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        summary = make_synth_dataset(root, classes=args.classes, per_class=args.per_class, frames=args.frames,
                                     size=tuple(args.size), codec="vp9", workers=args.workers, progress=False)
        label = {name: i for i, name in enumerate(summary.classes)}
        records = [VideoRecord(p, label[p.split("/")[0]], p.split("/")[0]) for p in summary.files]
        rates = measure(records, root, cfg, args.epochs)
    print(f"data: {len(records)} VP9 videos, {args.frames} frames of {args.size[0]}x{args.size[1]}; clips of "
          f"{cfg.num_frames} frames at stride {cfg.stride}, resize {cfg.resize}, crop {cfg.crop}, batch "
          f"{cfg.batch_size}, {args.workers} workers, {args.epochs} timed epochs per side")
    for name, r in rates.items():
        med = float(np.median(r))
        print(f"{name:>16}: {med:8.1f} clips/s {med * cfg.num_frames:9.1f} frames/s  (median of epochs; "
              f"range {min(r):.1f}-{max(r):.1f} clips/s)")
    ratios = [d / b for d, b in zip(rates["DALI cpu"], rates["PyAV+DataLoader"])]
    print(f"ratio DALI / PyAV+DataLoader: {float(np.median(ratios)):.2f}x median of per-epoch ratios "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--per-class", type=int, default=16)
    p.add_argument("--frames", type=int, default=48, help="frames per synthetic video")
    p.add_argument("--size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"))
    p.add_argument("--clip-frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--resize", type=int, nargs=2, default=(64, 85), metavar=("H", "W"))
    p.add_argument("--crop", type=int, nargs=2, default=(56, 56), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=6)
    run(p.parse_args())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("loader"):
        main()
