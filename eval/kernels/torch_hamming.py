"""Hamming top-K with torch tensor ops (CUDA when present; CPU tensors in the tests): the same ranking as
the numba kernels of eval/search/flat.py, ties by database index.

    from c3dhash.eval.search.searcher import topk
    idx, dist = topk(q.codes, db.codes, 100, method="torch")
"""
from __future__ import annotations

_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F
TORCH_BUDGET = 1 << 25  # elements of one [queries, N] intermediate (256 MiB of int64)


def popcount_torch(x):
    """SWAR popcount of int64 tensors (torch has no popcount op). Arithmetic shifts are harmless here: every
    mask clears the sign-extended bits, and after the nibble step the top bit is always 0."""
    x = x - ((x >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return x & 0x7F


def hamming_distances_torch(q, db):
    """int64 [Q, W] x [N, W] tensors (uint64 words viewed as int64) -> int64 [Q, N] distances."""
    d = popcount_torch(q[:, None, 0] ^ db[None, :, 0])
    for w in range(1, q.shape[1]):
        d += popcount_torch(q[:, None, w] ^ db[None, :, w])
    return d


def topk_torch(q, db, k: int):
    """Top-k by (distance, index) for int64 code tensors on any device: one unique key per item,
    distance * N + index, so torch.topk's order is exactly the stable ranking."""
    import torch
    n = db.shape[0]
    k = min(k, n)
    step = max(1, TORCH_BUDGET // max(n, 1))
    ar = torch.arange(n, device=db.device, dtype=torch.int64)
    idx, dist = [], []
    for s in range(0, q.shape[0], step):
        key = hamming_distances_torch(q[s:s + step], db) * n + ar
        top = torch.topk(key, k, dim=1, largest=False, sorted=True).values
        idx.append(top % n)
        dist.append(top // n)
    if not idx:
        empty = torch.empty((0, k), dtype=torch.int64, device=db.device)
        return empty, empty.clone()
    return torch.cat(idx), torch.cat(dist)
