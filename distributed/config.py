"""Loss and training configuration (owned by distributed/, composed into the job config by cluster/)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class LossConfig:
    margin: float = 14.0  # squared-L2 units: 4 x Hamming for +-1 codes
    reduction: Literal["all", "active"] = "all"  # mean over every valid triplet | over the non-zero ones
    quant_weight: float = 0.0  # weight of mean((|h| - 1)^2)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    steps_per_epoch: int = 0  # 0 = one pass over the training split
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["step", "cosine", "constant"] = "step"
    step_epochs: int = 40  # step schedule: decay every this many epochs
    gamma: float = 0.1
    warmup_epochs: int = 0
    eval_every: int = 5  # epochs between validation evaluations (0 = only at the end)
    checkpoint_every: int = 1  # epochs between full checkpoints (also at every evaluation and the last epoch)
    checkpoint_every_steps: int = 0  # also a full checkpoint every this many global steps (0 = off); resumes mid-epoch
    sync_bn: bool = True
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 on GPU
    seed: int = 0
    log_every: int = 10  # steps between TensorBoard scalars
    collapse: Literal["stop", "warn"] = "stop"  # weights beyond max_weight_norm or validation codes all alike
    max_weight_norm: float = 1e6  # L2 norm of any one parameter tensor (r3d_18's are O(100) when healthy)
