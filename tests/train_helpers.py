"""Tiny data, models and configs for the training tests.

- make_tiny_dataset / tiny_overrides: synthetic VP9 videos (4 frames, 32 px, 16 bits) for the Ray end-to-end
  tests and `c3dhash encode`.
- TensorTrainLoader / tensor_eval_set / tiny_net / FolderReport: the Trainer without DALI or Ray, for the gloo
  harness (tests/test_trainer.py): in-memory clips, the real P x K sampler and rank slicing, checkpoints in
  checkpoint_<global step> folders; job / make_trainer: that run's config and Trainer (tests/test_trainer.py,
  tests/test_resume.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torch.nn.parallel import DistributedDataParallel as DDP

from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.config import LossConfig, TrainConfig
from c3dhash.distributed.job import ClusterConfig, JobConfig
from c3dhash.distributed.syncbn import convert_sync_bn
from c3dhash.distributed.trainer import EvalSet, Hooks, Trainer
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.sampler import PKSampler, eval_clips, eval_shard, shard_batch, train_clips
from c3dhash.loaders.splits import build_splits
from c3dhash.loaders.synth import make_synth_dataset
from c3dhash.model.config import ModelConfig


def make_tiny_dataset(root: Path) -> Path:
    make_synth_dataset(root, classes=4, per_class=6, frames=12, size=(32, 32), codec="vp9", seed=3)
    build_splits(dataset="synth", root=root, split=1, val_per_class=1)
    return root


def tiny_overrides(root: Path, storage: Path, name: str, *, epochs: int = 2, workers: int = 2) -> list[str]:
    """A run of 2-step epochs that tests recovery and the Ray path, not learning: its 12 validation videos may
    share one code after a few epochs, which the collapse guard would stop (train.collapse=warn)."""
    return ["train.collapse=warn",
            f"data.root={root}", "data.num_frames=4", "data.resize=[32, 32]", "data.crop=[32, 32]",
            "data.flip=false", "data.pk_classes=2", "data.pk_samples=2", "data.num_threads=1", "data.device=cpu",
            "model.bits=16", "loss.margin=4.0", f"train.epochs={epochs}", "train.steps_per_epoch=2",
            "train.optimizer=adamw", "train.lr=0.001", "train.eval_every=1", "train.log_every=1",
            "train.schedule=constant", "train.amp=off", f"cluster.name={name}", f"cluster.storage_path={storage}",
            f"cluster.num_workers={workers}", "cluster.cpus_per_worker=1", "cluster.max_failures=1"]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- the Trainer without DALI ---------------------------------------------------------------------------------
CLIP = (3, 2, 8, 8)  # C, T, H, W


def tensor_videos(classes: int, per_class: int, *, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """One fixed clip per 'video': class-dependent mean plus noise (learnable, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    labels = [c for c in range(classes) for _ in range(per_class)]
    offset = torch.tensor(labels, dtype=torch.float32).reshape(-1, 1, 1, 1, 1)
    x = torch.randn(len(labels), *CLIP, generator=g) + 0.3 * offset
    return x, labels


class TensorTrainLoader:
    """The TrainLoader contract (len, set_epoch(epoch, start_step=), iteration) over in-memory clips."""

    def __init__(self, x: torch.Tensor, labels: list[int], *, p: int, k: int, steps: int, rank: int, world: int,
                 seed: int = 0):
        self.x, self.labels, self.rank, self.world, self.seed = x, labels, rank, world, seed
        self.sampler = PKSampler(labels, p=p, k=k, seed=seed, steps=steps)
        self.epoch, self.start_step = 0, 0

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    def set_epoch(self, epoch: int, *, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def step_sizes(self, epoch: int) -> list[int]:
        """This rank's clips per step, as TrainLoader.step_sizes (the Trainer gathers them once per epoch)."""
        return [len(shard_batch(list(b), rank=self.rank, world_size=self.world)) for b in self.sampler.batches(epoch)]

    def __iter__(self):
        for s, b in enumerate(self.sampler.batches(self.epoch)):
            if s < self.start_step:
                continue
            clips = shard_batch(train_clips(b, seed=self.seed, epoch=self.epoch, step=s, flip=False),
                                rank=self.rank, world_size=self.world)
            idx = [c.index for c in clips]
            yield self.x[idx], torch.tensor([self.labels[i] for i in idx])


class TensorEvalLoader:
    def __init__(self, x: torch.Tensor, labels: list[int], *, rank: int, world: int, batch_size: int):
        self.x, self.labels = x, labels
        self.batches = eval_clips(eval_shard(len(labels), rank=rank, world_size=world), clips_per_video=1,
                                  batch_size=batch_size)

    def __iter__(self):
        for batch in self.batches:
            idx = [c.index for c in batch]
            yield self.x[idx], torch.tensor([self.labels[i] for i in idx]), torch.tensor(idx)


def tensor_eval_set(x: torch.Tensor, labels: list[int], *, rank: int, world: int, batch_size: int) -> EvalSet:
    records = [VideoRecord(f"c{lab}/v{i}", lab, f"c{lab}") for i, lab in enumerate(labels)]
    return EvalSet(records, TensorEvalLoader(x, labels, rank=rank, world=world, batch_size=batch_size))


def tiny_net(bits: int, *, seed: int = 0) -> nn.Module:
    """Conv3d + BatchNorm (buffers, as in r3d_18) + a tanh hash layer: milliseconds per step."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(4, bits), nn.Tanh())


class FolderReport:
    """A plain-process report hook: metrics in a list, checkpoints in <dir>/checkpoint_<global step>/."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.rows = Path(run_dir), []

    def __call__(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.rows.append(metrics)
        if state is not None:
            step = state["train_state"]["global_step"]
            ckpt.atomic_save(state, self.run_dir / f"checkpoint_{step:06d}" / ckpt.CHECKPOINT_FILE)


# --- the tensor Trainer's run (tests/test_trainer.py, tests/test_resume.py) -----------------------------------
STEPS, EPOCHS, BITS = 3, 3, 8


def job(**train) -> JobConfig:
    t = dict(epochs=EPOCHS, steps_per_epoch=STEPS, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
             schedule="cosine", eval_every=1, log_every=100, amp="off", seed=0)
    return JobConfig(model=ModelConfig(bits=BITS), loss=LossConfig(margin=8.0), train=TrainConfig(**{**t, **train}),
                     cluster=ClusterConfig(name="gloo"))


def make_trainer(cfg: JobConfig, run_dir, *, rank: int, world: int, queries: int = 3) -> tuple[Trainer, list]:
    x, labels = tensor_videos(3, 4)
    qx, qlabels = tensor_videos(3, 1, seed=1)
    net = tiny_net(BITS)
    model = DDP(convert_sync_bn(net)) if world > 1 else net
    loader = TensorTrainLoader(x, labels, p=2, k=2, steps=STEPS, rank=rank, world=world)
    hook = FolderReport(run_dir)
    tr = Trainer(job=cfg, model=model, device=torch.device("cpu"), train_loader=loader,
                 queries=tensor_eval_set(qx[:queries], qlabels[:queries], rank=rank, world=world, batch_size=2),
                 database=tensor_eval_set(x, labels, rank=rank, world=world, batch_size=2),
                 run_dir=run_dir, hooks=Hooks(report=hook))
    return tr, hook.rows


WORLD = 2  # ranks of the gloo Trainer tests


def record_losses(tr: Trainer, *, fault_at: int | None = None) -> list[tuple[int, float]]:
    """Wrap this trainer's step (a test hook): (global step, loss) per step; raise at `fault_at`."""
    losses, step = [], tr.train_step

    def wrapped(clips, labels):
        if tr.state.global_step == fault_at:
            raise RuntimeError("injected: the worker group is lost")
        out = step(clips, labels)
        losses.append((tr.state.global_step + 1, float(out[0])))
        return out
    tr.train_step = wrapped
    return losses
