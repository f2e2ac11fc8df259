"""Optimiser and per-step learning-rate schedule from TrainConfig (the seed: SGD 0.9 / 5e-4 / step decay)."""
from __future__ import annotations

import math

import torch

from c3dhash.distributed.config import TrainConfig


def build_optimizer(params, cfg: TrainConfig, *, batch: int) -> torch.optim.Optimizer:
    """`batch`: global clips per step, for train.lr_batch."""
    lr = cfg.base_lr(batch)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # fused: one kernel over all parameters. r3d_18 on one CPU thread: 0.02 s a step vs 0.14 s for the default
    # per-parameter loop (0.07 s foreach), ~8% of a demo step.
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)


def lr_factor(step: int, *, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at a global step: linear warmup, then step / cosine / constant."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        return cfg.gamma ** (step // max(1, cfg.step_epochs * steps_per_epoch))
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / total)))
    return 1.0


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    # A closure (not a callable object): LambdaLR then saves only its step count, which loads weights_only.
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, cfg=cfg, steps_per_epoch=steps_per_epoch))
