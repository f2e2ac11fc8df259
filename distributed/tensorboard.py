"""TensorBoard from rank 0 only: scalars, code statistics and the precision-recall curve.

Events go to `<storage_path>/<name>/tensorboard`; watch with `tensorboard --logdir runs/`.
On resume the writer is opened with `purge_step=global_step`, so TensorBoard discards the events a crashed
attempt logged after its last checkpoint and step numbers stay monotonic.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class RankZeroWriter:
    """A SummaryWriter on rank 0, a no-op elsewhere (only one rank may write a run's events)."""

    def __init__(self, log_dir: str | Path, *, rank: int, purge_step: int | None = None) -> None:
        self.writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: only rank 0 pays for it
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step or None)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def codes(self, h: torch.Tensor, step: int) -> None:
        """Histogram of the tanh outputs and per-bit balance (fraction of ones; 0.5 is ideal)."""
        if self.writer is None:
            return
        h = h.detach().float().cpu()
        balance = (h >= 0).float().mean(0)
        self.writer.add_histogram("codes/values", h, step)
        self.writer.add_histogram("codes/bit_balance", balance, step)
        self.writer.add_scalar("codes/bit_imbalance", float((balance - 0.5).abs().mean()), step)
        self.writer.add_scalar("codes/saturation", float((h.abs() > 0.95).float().mean()), step)

    def pr_curve(self, tag: str, pr: dict[str, Any], step: int) -> None:
        """The Hamming-radius PR curve from eval.metrics (precision/recall per radius)."""
        if self.writer is None:
            return
        precision = np.asarray(pr["precision"], dtype=np.float64)
        recall = np.asarray(pr["recall"], dtype=np.float64)
        # TensorBoard wants thresholds in descending order of strictness; radii ascend, so reverse.
        precision, recall = precision[::-1], recall[::-1]
        n = len(precision)
        zeros = np.zeros(n)
        self.writer.add_pr_curve_raw(tag, true_positive_counts=zeros, false_positive_counts=zeros,
                                     true_negative_counts=zeros, false_negative_counts=zeros,
                                     precision=precision, recall=recall, global_step=step, num_thresholds=n)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
