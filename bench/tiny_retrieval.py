"""Tiny videos and a fixed-weights model: `bench serve`'s video index, and the retrieval tests (index, search, show,
export).

Videos: class c has background brightness 40 + 70c and a bright square moving in direction c; every video has
its own seeded noise texture, so no two codes are equal. Model: a seeded random r3d_18 trunk and a hash head
that is LSH over its features (Gaussian W, bias -W @ mean feature), which keeps each class together and each
video apart. The checkpoint carries the config like a training run's best.pt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from c3dhash.cluster.config import config_to_dict, load_config
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.loaders.videoio import write_video
from c3dhash.model.hashnet import build_hash_net

GEOMETRY = ["data.num_frames=4", "data.stride=1", "data.resize=[32, 32]", "data.crop=[32, 32]",
            "data.clips_per_video=2", "data.device=cpu", "data.num_threads=1"]


def video_frames(c: int, v: int, *, frames: int = 8, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(100 * c + v)
    base = 40 + 70 * c + rng.integers(-20, 20) + rng.integers(-30, 30, (size, size, 1))
    out = np.repeat(np.repeat(base, 3, axis=2)[None], frames, axis=0).astype(np.int32)
    dx, dy = [(3, 0), (0, 3), (-3, 0)][c % 3]
    for t in range(frames):
        x, y = (4 + dx * t + 16) % (size - 8), (4 + dy * t + 16) % (size - 8)
        out[t, y:y + 8, x:x + 8] = 250
    return np.clip(out, 0, 255).astype(np.uint8)


def make_videos(root: Path, *, classes: int = 3, per_class: int = 3, first: int = 0, frames: int = 8) -> list[str]:
    paths = []
    for c in range(classes):
        for v in range(first, first + per_class):
            rel = f"class{c}/c{c}_v{v:02d}.webm"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            write_video(root / rel, video_frames(c, v, frames=frames), codec="vp9")
            paths.append(rel)
    return paths


def lsh_checkpoint(path: Path, root: Path, *, bits: int = 64, seed: int = 0) -> Path:
    """best.pt-like checkpoint: random trunk, LSH head centred on the mean feature of the videos under root."""
    from c3dhash.eval.index.videos import product_data
    from c3dhash.loaders.manifest import VideoRecord
    from c3dhash.loaders.pipelines import build_eval_loader
    from c3dhash.model.load import ClipGeometry
    cfg = load_config(None, [*GEOMETRY, f"model.bits={bits}"])
    torch.manual_seed(seed)
    net = build_hash_net(bits=bits).eval()
    g = cfg.data
    geometry = ClipGeometry(g.num_frames, g.stride, g.resize, g.crop, g.mean, g.std, g.clips_per_video)
    records = [VideoRecord(str(p.relative_to(root)), 0, "") for p in sorted(root.rglob("*.webm"))]
    loader = build_eval_loader(records, root, product_data(geometry, device="cpu"), rank=0, world_size=1,
                               device_id=None)
    with torch.no_grad():
        feats = torch.cat([net.features(clips) for clips, _, _ in loader])
        w = torch.randn(bits, feats.shape[1], generator=torch.Generator().manual_seed(seed))
        net.head.weight.copy_(w)
        net.head.bias.copy_(-(w @ feats.mean(0)))
    ckpt.atomic_save({"model": net.state_dict(), "config": config_to_dict(cfg), "epoch": 0, "val_map": 0.0}, path)
    return path
