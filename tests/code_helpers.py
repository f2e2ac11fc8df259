"""Test codes and their reference distances, shared by the kernel, search and metric tests.

    b, labels = clustered_bits(n, bits, rng, centres=6, flip=0.05)   # bool [n, bits] around a few centres
    d = reference_distances(qb, dbb)                                  # Hamming by counting unequal bits

Few centres and a small flip probability give many equal distances (ties) and exact duplicates: the cases
where a kernel's tie order or a metric's tie handling shows. The reference counts bits in numpy and shares no
code with the kernels.
"""
from __future__ import annotations

import numpy as np


def clustered_bits(n: int, bits: int, rng: np.random.Generator, *, centres: int,
                   flip: float) -> tuple[np.ndarray, np.ndarray]:
    """n codes, each a random centre with every bit flipped with probability `flip`; and each code's centre."""
    base = rng.integers(0, 2, (centres, bits)).astype(bool)
    which = rng.integers(0, centres, n)
    return base[which] ^ (rng.random((n, bits)) < flip), which


def reference_distances(qb: np.ndarray, dbb: np.ndarray) -> np.ndarray:
    """[Q, N] Hamming distances between rows of two bool bit matrices."""
    return (qb[:, None, :] != dbb[None, :, :]).sum(-1)
