"""All-gather along dim 0 with autograd, for unequal per-rank sizes (the last batch of an epoch).

    h_all, sizes = all_gather_rows(h_local)        # every rank: concat of all ranks' rows, in rank order
    lo = sum(sizes[:rank]); h_all[lo:lo + sizes[rank]]   # this rank's own rows inside the gathered tensor

Backward: `_functional_collectives.all_gather_single_autograd` differentiates to a reduce-scatter-SUM, so
the gradient reaching each rank's `h_local` is the sum over ranks of d(loss_r)/d(its rows). That is what makes
the cross-rank triplet loss exact (see distributed/triplet.py); tests/test_gather.py checks it on gloo.
It is also warning-free, unlike `torch.distributed.nn.functional.all_gather` (deprecated in torch 2.14).
Without an initialised process group (or world size 1) every function is the identity, so the same code runs
single-process.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as fc

from c3dhash.distributed.env import get_world_size


def all_gather_sizes(n: int, *, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's local row count, in rank order ([n] without a process group)."""
    world = get_world_size()
    if world == 1:
        return [n]
    # NCCL needs the tensor on the rank's GPU; gloo takes CPU tensors.
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    out = torch.empty(world, dtype=torch.int64, device=device)
    dist.all_gather_single(out, mine)
    return out.tolist()


def all_gather_rows(x: torch.Tensor, *, sizes: list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's `x` along dim 0 (sizes may differ); differentiable when x requires grad.

    Pass `sizes` (from all_gather_sizes) when known, to save one small collective.
    Returns (gathered, sizes). Collective: every rank must call it, in the same order.
    """
    world = get_world_size()
    if world == 1:
        return x, [x.shape[0]]
    if sizes is None:
        sizes = all_gather_sizes(x.shape[0], device=x.device)
    if len(sizes) != world or sizes[dist.get_rank()] != x.shape[0]:
        raise ValueError(f"all_gather_rows: sizes {sizes} do not match world {world} / rows {x.shape[0]}")
    longest = max(sizes)
    if x.shape[0] < longest:
        # all_gather_single needs equal shapes: pad with zeros, trim after; the padding gets no gradient.
        pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad])
    gathered = fc.all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)  # type: ignore[arg-type]
    gathered = fc.wait_tensor(gathered)
    if all(s == longest for s in sizes):
        return gathered, sizes
    keep = torch.cat([torch.arange(r * longest, r * longest + s, device=x.device)
                      for r, s in enumerate(sizes)])
    return gathered.index_select(0, keep), sizes
