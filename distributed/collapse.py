"""Training that has stopped learning: weights beyond a bound, or validation codes that no longer tell videos apart.

    figures = code_figures(codes, bits)         # distinct codes, the largest share of one code, bit balance
    problem = collapse_problem(figures)     # a sentence, or None
    big = largest_weight(module)            # (name, norm) of the parameter with the largest L2 norm

The finite-loss guard let a diverging run (head_norm off, SGD at lr 1e4) end "done" with exit 0: its weights
reached 1.2e17 and every test video got the same code. The Trainer checks these at every validation and before
every checkpoint; `train.collapse` says whether to stop (exit 2) or warn, and such a model is never best.pt.
"""
from __future__ import annotations

import numpy as np
import torch

MIN_CODES = 100  # "nearly all identical" needs this many codes to mean anything (tiny healthy runs share codes)
MAX_SHARE = 0.99  # more than this share of the validation videos on one code: collapsed


class CollapseError(RuntimeError):
    """Training collapsed (weights exploded, or all validation codes alike); the message carries the figures."""


def code_figures(codes: np.ndarray, bits: int) -> dict[str, float]:
    """Figures of packed `bits`-bit codes uint64 [N, W]: count, distinct codes, the largest share of one code and
    the bit balance (mean over bits of 2 min(p, 1 - p): 1 when every bit halves the videos, 0 when none varies)."""
    n = int(codes.shape[0])
    if n == 0:
        return {"count": 0, "distinct": 0, "top_share": 0.0, "bit_balance": 0.0}
    _, counts = np.unique(np.ascontiguousarray(codes), axis=0, return_counts=True)
    unpacked = np.unpackbits(np.ascontiguousarray(codes).view(np.uint8), axis=1, bitorder="little")[:, :bits]
    p = unpacked.mean(axis=0, dtype=np.float64)
    return {"count": n, "distinct": int(len(counts)), "top_share": float(counts.max() / n),
            "bit_balance": float((2 * np.minimum(p, 1 - p)).mean())}


def collapse_problem(fig: dict[str, float]) -> str | None:
    n = fig["count"]
    if n >= 2 and fig["distinct"] == 1:
        return f"all {n} validation codes are identical (bit balance {fig['bit_balance']:.3f})"
    if n >= MIN_CODES and fig["top_share"] > MAX_SHARE:
        return (f"{fig['top_share']:.0%} of {n} validation codes are one code ({fig['distinct']} distinct, bit "
                f"balance {fig['bit_balance']:.3f})")
    return None


def largest_weight(module: torch.nn.Module) -> tuple[str, float]:
    name, norm = "", 0.0
    with torch.no_grad():
        for k, v in module.named_parameters():
            n = float(torch.linalg.vector_norm(v.detach().float()))
            if not n <= norm:  # NaN counts as largest too
                name, norm = k, n
    return name, norm
