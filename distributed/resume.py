"""Resuming a run: the checkpoint's config against the current one, before any state is loaded.

    diff = check_resume(state["config"], config_to_dict(job), where=str(path))   # raises ResumeConfigError
    for line in diff.notices(): print(line)
    apply_optimizer_config(opt, sched, job.train, steps_per_epoch=len(loader), batch=loader.batch_size)
    # (after opt/sched load_state_dict)

Three kinds of keys:
- shape or meaning (REFUSED): bits, backbone, dataset and split, clip geometry and normalisation, the global
  batch and its sampler, steps per epoch, the optimiser type, the seeds. The checkpoint's weights or its
  position (epoch, step in epoch) mean something else under new values: refused, with a new cluster.name to use.
- optimiser and schedule (OPTIMIZER): the restored optimiser would bring the OLD lr/momentum/weight_decay back
  (they live in its state dict), so `apply_optimizer_config` writes the current values into it and into the
  scheduler's base lr, and the current step's lr is recomputed; the change is printed.
- everything else (eval cadence, logging, loss weights, cluster sizing, paths) takes effect from now on; printed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from c3dhash.distributed.config import TrainConfig
from c3dhash.distributed.optim import lr_factor

REFUSED = {
    "model": ("bits", "backbone", "head_norm"),
    "data": ("dataset", "split", "val_per_class", "num_frames", "stride", "resize", "crop", "mean", "std",
             "sampler", "batch_size", "pk_classes", "pk_samples", "seed", "list_file", "test_fraction", "group",
             "reverse_negatives", "frame_negatives"),
    "train": ("optimizer", "steps_per_epoch", "seed"),
}
OPTIMIZER = {"train": ("lr", "lr_batch", "momentum", "weight_decay", "schedule", "step_epochs", "gamma",
                       "warmup_epochs", "epochs")}
# Where the run and its files live, not what it computes (model.weights only initialises a fresh run).
SILENT = {"cluster": ("name", "storage_path", "address"), "data": ("root",), "model": ("weights",)}


class ResumeConfigError(ValueError):
    """The current config changes what a checkpoint means; the message names the keys and the fix."""


Change = tuple[str, Any, Any]  # "section.key", checkpoint value, current value


@dataclass(frozen=True)
class ConfigDiff:
    refused: list[Change] = field(default_factory=list)
    optimizer: list[Change] = field(default_factory=list)
    other: list[Change] = field(default_factory=list)

    def notices(self) -> list[str]:
        def fmt(changes: list[Change]) -> str:
            return ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changes)
        out = []
        if self.optimizer:
            out.append(f"config changed since the checkpoint: {fmt(self.optimizer)}; applied to the restored "
                       f"optimiser and lr schedule")
        if self.other:
            out.append(f"config changed since the checkpoint: {fmt(self.other)}; in effect from now on")
        return out


def _kind(section: str, key: str, current: dict[str, Any]) -> str:
    if (section, key) == ("data", "batch_size") and current.get("data", {}).get("sampler") != "random":
        return "other"  # pk and video batches are P x K: batch_size is then only the evaluation's clips a forward
    for name, table in (("refused", REFUSED), ("optimizer", OPTIMIZER), ("silent", SILENT)):
        if key in table.get(section, ()):
            return name
    return "other"


def config_diff(saved: dict[str, Any], current: dict[str, Any]) -> ConfigDiff:
    diff = ConfigDiff()
    for section, values in current.items():
        old_values = saved.get(section) or {}
        for key, new in values.items():
            if key not in old_values or old_values[key] == new or (kind := _kind(section, key, current)) == "silent":
                continue  # keys added since the checkpoint keep their defaults' meaning
            getattr(diff, kind).append((f"{section}.{key}", old_values[key], new))
    return diff


def check_resume(saved: dict[str, Any] | None, current: dict[str, Any], *, where: str) -> ConfigDiff:
    """Compare; raise ResumeConfigError when a shape/meaning key differs (nothing has been loaded yet)."""
    diff = config_diff(saved or {}, current)
    if diff.refused:
        keys = "; ".join(f"{k}: checkpoint {old!r}, config {new!r}" for k, old, new in diff.refused)
        name = current.get("cluster", {}).get("name", "run")
        raise ResumeConfigError(
            f"{where}: cannot resume with a different {', '.join(k for k, _, _ in diff.refused)} ({keys}); these "
            f"keys change the model's shapes or what its training position means. Start a new run with "
            f"--set cluster.name={name}-2 (or restore the old values to resume)")
    return diff


def apply_optimizer_config(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
                           cfg: TrainConfig, *, steps_per_epoch: int, batch: int) -> None:
    """Make a restored optimiser/scheduler follow `cfg` (the scheduler's lambda already reads cfg)."""
    factor, lr = lr_factor(sched.last_epoch, cfg=cfg, steps_per_epoch=steps_per_epoch), cfg.base_lr(batch)
    for group in opt.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * factor
        group["weight_decay"] = cfg.weight_decay
        if "momentum" in group:  # SGD; AdamW's betas are not configurable
            group["momentum"] = cfg.momentum
    sched.base_lrs = [lr] * len(opt.param_groups)
    sched._last_lr = [g["lr"] for g in opt.param_groups]  # what get_last_lr() reports until the next step
