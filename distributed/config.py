"""Loss and training configuration (owned by distributed/, composed into the job config by cluster/).

Bounds sit next to their fields (`metadata`: operator -> bound, each value of a tuple); cluster/config.py
checks them when the job config loads, so nonsense such as a negative lr fails there, not in a worker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class LossConfig:
    margin: float = field(default=14.0, metadata={">": 0})  # squared-L2 units: 4 x Hamming for +-1 codes
    reduction: Literal["all", "active"] = "all"  # mean over every valid triplet | over the non-zero ones
    quant_weight: float = field(default=0.0, metadata={">=": 0})  # weight of mean((|h| - 1)^2)
    # all: every other identity in the batch is a negative | own_video: only the clip's own video played the other
    # way (data.reverse_negatives), held still or shuffled (data.frame_negatives), so nothing rewards the look that
    # tells videos apart and the codes keep the motion: class structure without labels, at the price of
    # near-duplicate search (configs/motion-cpu.yaml, docs/datasets.md)
    negatives: Literal["all", "own_video"] = "all"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=100, metadata={">=": 1})
    steps_per_epoch: int = field(default=0, metadata={">=": 0})  # 0 = one pass over the training split
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = field(default=1e-3, metadata={">": 0})
    # 0: lr as given. N: lr is the rate for a global batch of N clips, scaled linearly to the run's P x K (with
    # data.pk_classes 0 the batch grows with the class count; the linear scaling rule)
    lr_batch: int = field(default=0, metadata={">=": 0})
    momentum: float = field(default=0.9, metadata={">=": 0, "<": 1})
    weight_decay: float = field(default=5e-4, metadata={">=": 0})
    schedule: Literal["step", "cosine", "constant"] = "step"
    step_epochs: int = field(default=40, metadata={">=": 1})  # step schedule: decay every this many epochs
    gamma: float = field(default=0.1, metadata={">": 0})
    warmup_epochs: int = field(default=0, metadata={">=": 0})
    # epochs between validation evaluations (0 = only at the end)
    eval_every: int = field(default=5, metadata={">=": 0})
    # epochs between full checkpoints (also at every evaluation and the last epoch)
    checkpoint_every: int = field(default=1, metadata={">=": 1})
    # also a full checkpoint every this many global steps (0 = off); resumes mid-epoch
    checkpoint_every_steps: int = field(default=0, metadata={">=": 0})
    sync_bn: bool = True
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 on sm_80+, fp16 on sm_75, else fp32
    seed: int = field(default=0, metadata={">=": 0})
    log_every: int = field(default=10, metadata={">=": 1})  # steps between TensorBoard scalars
    collapse: Literal["stop", "warn"] = "stop"  # weights beyond max_weight_norm or validation codes all alike
    # L2 norm of any one parameter tensor (r3d_18's are O(100) when healthy)
    max_weight_norm: float = field(default=1e6, metadata={">": 0})
    # DDP gradient all-reduce in bf16 (torch's bf16_compress_hook): half the traffic between pods, inexact;
    # "none" (default) keeps it exact (docs/gpu.md)
    grad_compression: Literal["none", "bf16"] = "none"

    def base_lr(self, batch: int) -> float:
        """The schedule's peak rate for a global batch of `batch` clips (train.lr_batch)."""
        return self.lr * (batch / self.lr_batch) if self.lr_batch else self.lr
