"""The finite-loss guard without a host sync per step: each step files its (already all-reduced) flag on the
device; `check()` reads the flags filed since the last check in one transfer, at the steps where the Trainer
syncs anyway (train.log_every steps, checkpoint reports, the epoch's end).

    guard = FiniteGuard()
    guard.note(epoch=0, step_in_epoch=0, global_step=0, lr=0.05, bad_ranks=stats["nonfinite_ranks"], loss=loss)
    guard.check()          # NonFiniteError naming the FIRST non-finite step, on every rank alike

Every rank sees the same flags (the count of non-finite ranks rides the loss's own all-reduce,
distributed/triplet.py), so every rank raises at the same check: no collective is left waiting. The steps
between the non-finite one and the check are trained on non-finite weights, which is why every checkpoint
report checks first (no checkpoint of such weights is written).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from c3dhash.distributed.env import get_rank, get_world_size


class NonFiniteError(RuntimeError):
    """The loss (or the weights) stopped being finite; the message names epoch, step and lr."""


@dataclass(frozen=True)
class _Noted:
    epoch: int
    step_in_epoch: int
    global_step: int
    lr: float
    bad_ranks: torch.Tensor  # 0-dim: ranks whose loss was not finite (the same on every rank)
    loss: torch.Tensor  # 0-dim, detached: this rank's loss


class FiniteGuard:
    def __init__(self) -> None:
        self._noted: list[_Noted] = []

    def note(self, *, epoch: int, step_in_epoch: int, global_step: int, lr: float, bad_ranks: torch.Tensor,
             loss: torch.Tensor) -> None:
        """File one step's flag (0-based position of the step being trained); no sync."""
        self._noted.append(_Noted(epoch, step_in_epoch, global_step, lr, bad_ranks.detach(), loss.detach()))

    def check(self) -> None:
        """Raise NonFiniteError for the first non-finite step filed since the last check (one host sync)."""
        noted, self._noted = self._noted, []
        if not noted:
            return
        flags = torch.stack([n.bad_ranks.reshape(()).to(torch.int64) for n in noted]).tolist()
        first = next((i for i, f in enumerate(flags) if f), None)
        if first is None:
            return
        n = noted[first]
        raise NonFiniteError(
            f"epoch {n.epoch + 1} step {n.step_in_epoch + 1} (global step {n.global_step + 1}): the loss is "
            f"not finite on {flags[first]} of {get_world_size()} rank(s) (rank {get_rank()}: "
            f"{float(n.loss)}) at lr {n.lr:.3g}; training stopped and no checkpoint of these weights "
            f"was written. Lower train.lr (or use train.amp=off) and run again: it resumes from the last "
            f"checkpoint")
