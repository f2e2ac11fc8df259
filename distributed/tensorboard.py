"""TensorBoard from rank 0 only: scalars, code statistics, the Hamming-radius PR curve and distance histograms.

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

    def pr_curve(self, tag: str, counts: dict[str, Any], step: int) -> None:
        """The Hamming-radius PR curve from eval/metrics/curves.py pr_counts: true TP/FP/TN/FN per radius 0..bits.

        TensorBoard's thresholds go from least to most strict, radii the other way: index i = radius bits - i.
        It drops the strict end where TP + FP = 0, so it draws one point per radius that retrieves something
        (all-zero counts, as written before, left a single point)."""
        if self.writer is None:
            return
        missing = [k for k in ("tp", "fp", "tn", "fn", "precision", "recall") if k not in counts]
        if missing:
            raise ValueError(f"pr_curve({tag!r}): counts lack {', '.join(missing)}; pass eval.curves.pr_counts(...)")
        keys = ("tp", "fp", "tn", "fn", "precision", "recall")
        arr = {k: np.asarray(counts[k], dtype=np.float64)[::-1] for k in keys}
        self.writer.add_pr_curve_raw(tag, true_positive_counts=arr["tp"], false_positive_counts=arr["fp"],
                                     true_negative_counts=arr["tn"], false_negative_counts=arr["fn"],
                                     precision=arr["precision"], recall=arr["recall"], global_step=step,
                                     num_thresholds=len(arr["tp"]))

    def distance_histograms(self, tag: str, counts: dict[str, Any], step: int) -> None:
        """Hamming distances of same-label and different-label pairs (one bucket per distance)."""
        if self.writer is None:
            return
        for name in ("same", "diff"):
            c = np.asarray(counts[name], dtype=np.float64)
            d = np.arange(len(c), dtype=np.float64)
            if c.sum() == 0:
                continue
            nz = np.flatnonzero(c)
            self.writer.add_histogram_raw(f"{tag}/{name}_label", min=float(d[nz[0]]), max=float(d[nz[-1]]),
                                          num=int(c.sum()), sum=float((c * d).sum()),
                                          sum_squares=float((c * d * d).sum()), bucket_limits=(d + 0.5).tolist(),
                                          bucket_counts=c.tolist(), global_step=step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
