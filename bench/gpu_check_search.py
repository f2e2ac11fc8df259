"""Exact Hamming top-k and mAP@all in torch (GPU or CPU tensors) and a numpy reference, for bench/gpu_check.py.

    idx, dist = topk_torch(q, db, k)               # int64 [Q, W] / [N, W] code words (uint64 viewed as int64)
    ap = average_precision_torch(q, ql, db, dbl)   # float64 [Q]: AP over the whole ranked database
    idx, dist, map_all, how = reference(q_u64, ql, db_u64, dbl, k)   # eval/'s numba kernels, else numpy

Both follow the project's ranking (eval/): the database ordered by (Hamming distance, database index), so
ties go to the lower index and every number is reproducible; AP = (1/R) sum over relevant items of
(relevant rank / overall rank), 0 for a query with no relevant item. No numba, Ray or DALI import here (the
GPU image may lack them); the numba reference is used only when it imports.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from c3dhash.eval.kernels.torch_hamming import hamming_distances_torch as distances  # torch only: no numba
from c3dhash.eval.kernels.torch_hamming import topk_torch

_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F
BLOCK_ELEMENTS = 1 << 26  # [queries, N] elements per block (512 MiB of int64): bounds GPU memory


def _blocks(q: torch.Tensor, n: int):
    step = max(1, BLOCK_ELEMENTS // max(n, 1))
    return range(0, q.shape[0], step), step


def average_precision_torch(q: torch.Tensor, q_labels: torch.Tensor, db: torch.Tensor,
                            db_labels: torch.Tensor) -> torch.Tensor:
    """Per-query AP over the full ranking (stable sort by distance keeps index order within ties)."""
    n = db.shape[0]
    pos = torch.arange(1, n + 1, device=db.device, dtype=torch.float64)
    starts, step = _blocks(q, n)
    out = []
    for s in starts:
        d = distances(q[s:s + step], db)
        order = torch.sort(d, dim=1, stable=True).indices
        rel = db_labels[order] == q_labels[s:s + step, None]
        hits = rel.cumsum(1, dtype=torch.float64)
        total = hits[:, -1]
        ap = torch.where(rel, hits / pos, 0).sum(1) / total.clamp_min(1)
        out.append(torch.where(total > 0, ap, 0))
    return torch.cat(out)


def _np_popcount(x: np.ndarray) -> np.ndarray:
    """Per-word popcount of uint64: np.bitwise_count (numpy >= 2), else the SWAR steps of kernels/torch_hamming.py."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    x = x - ((x >> np.uint64(1)) & np.uint64(_M1))
    x = (x & np.uint64(_M2)) + ((x >> np.uint64(2)) & np.uint64(_M2))
    x = (x + (x >> np.uint64(4))) & np.uint64(_M4)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)  # unsigned: wraps by definition


def _numpy_reference(q, ql, db, dbl, k):
    """One query at a time: XOR + popcount, a stable argsort, cumulative hits."""
    n = db.shape[0]
    pos = np.arange(1, n + 1, dtype=np.float64)
    idx, dist, ap = np.empty((len(q), min(k, n)), np.int64), np.empty((len(q), min(k, n)), np.int64), []
    for i in range(len(q)):
        d = _np_popcount(q[i] ^ db).sum(1, dtype=np.int64)
        order = np.argsort(d, kind="stable")
        idx[i], dist[i] = order[:k], d[order[:k]]
        rel = dbl[order] == ql[i]
        hits = np.cumsum(rel, dtype=np.float64)
        ap.append(float((hits[rel] / pos[rel]).sum() / hits[-1]) if hits[-1] else 0.0)
    return idx, dist, float(np.mean(ap))


def reference(q, ql, db, dbl, k) -> tuple[np.ndarray, np.ndarray, float, str]:
    """CPU (indices, distances, mAP@all, how): eval/'s numba kernels when numba imports (what `c3dhash eval`
    runs), else numpy."""
    try:
        from c3dhash.eval.codes import Codes
        from c3dhash.eval.search.searcher import topk
        from c3dhash.eval.metrics.exact import evaluate
    except ImportError:
        return (*_numpy_reference(q, ql, db, dbl, k), "numpy")
    idx, dist = topk(q, db, k)
    bits = 64 * q.shape[1]
    query, base = (Codes(c, bits, lab, np.arange(len(c)).astype(str)) for c, lab in ((q, ql), (db, dbl)))
    return idx, dist.astype(np.int64), float(evaluate(query, base)["map_all"]), "numba, eval/"


def check(device: torch.device, *, n: int, queries: int, k: int, classes: int = 100, seed: int = 0) -> str:
    """Run GPU (or `device`) and CPU, compare; returns the figures line or raises AssertionError."""
    rng = np.random.default_rng(seed)
    db = rng.integers(0, 2**64, size=(n, 1), dtype=np.uint64)
    q = rng.integers(0, 2**64, size=(queries, 1), dtype=np.uint64)
    dbl, ql = rng.integers(0, classes, n), rng.integers(0, classes, queries)
    tq, tdb = (torch.from_numpy(a.view(np.int64)).to(device) for a in (q, db))
    tql, tdbl = torch.from_numpy(ql).to(device), torch.from_numpy(dbl).to(device)
    topk_torch(tq[:1], tdb, k)  # warm-up (kernel load)
    t0 = _now(device)
    idx, dist = topk_torch(tq, tdb, k)
    t1 = _now(device)
    ap = average_precision_torch(tq, tql, tdb, tdbl)
    t2 = _now(device)
    ref_idx, ref_dist, ref_map, how = reference(q, ql, db, dbl, k)
    t3 = time.perf_counter()
    assert np.array_equal(idx.cpu().numpy(), ref_idx) and np.array_equal(dist.cpu().numpy(), ref_dist), \
        "top-k differs from the CPU result"
    gpu_map = float(ap.mean().item())
    gap = abs(gpu_map - ref_map)
    # float64 sums of the same terms in another order differ by ~1e-16 relative; above 1e-9 is a real error
    assert gap <= 1e-9, f"mAP@all {gpu_map!r} vs the CPU's {ref_map!r}"
    rate = queries * n / 1e9
    return (f"{queries} queries x {n} codes (64 bits): top-{k} {t1 - t0:.3f} s ({rate / (t1 - t0):.2f} G codes/s), "
            f"mAP@all {gpu_map:.6f} in {t2 - t1:.3f} s; CPU ({how}) {t3 - t2:.1f} s: top-k identical, "
            f"|mAP diff| {gap:.1e}")


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
