"""Tiny synthetic data and configs for the training tests (4 frames, 32 px, 16 bits)."""
from __future__ import annotations

import json
from pathlib import Path

from loaders.splits import build_splits
from loaders.synth import make_synth_dataset


def make_tiny_dataset(root: Path) -> Path:
    make_synth_dataset(root, classes=4, per_class=6, frames=12, size=(32, 32), codec="vp9", seed=3)
    build_splits(dataset="synth", root=root, split=1, val_per_class=1)
    return root


def tiny_overrides(root: Path, storage: Path, name: str, *, epochs: int = 2, workers: int = 2) -> list[str]:
    return [f"data.root={root}", "data.num_frames=4", "data.resize=[32, 32]", "data.crop=[32, 32]",
            "data.flip=false", "data.pk_classes=2", "data.pk_samples=2", "data.num_threads=1", "data.device=cpu",
            "model.bits=16", "loss.margin=4.0", f"train.epochs={epochs}", "train.steps_per_epoch=2",
            "train.optimizer=adamw", "train.lr=0.001", "train.eval_every=1", "train.log_every=1",
            "train.schedule=constant", "train.amp=off", f"cluster.name={name}", f"cluster.storage_path={storage}",
            f"cluster.num_workers={workers}", "cluster.cpus_per_worker=1", "cluster.max_failures=1"]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
