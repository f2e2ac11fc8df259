"""The all-triplets ranking loss, exact, in O(B^2 log B) time and O(B^2) memory; and its cross-rank form.

    loss = all_triplet_loss(h, labels, margin=14.0)                          # one process
    loss, stats = gathered_triplet_loss(h_local, labels_local, 14.0, return_stats=True)   # every DDP rank

Definition. Valid ordered triplets (a, p, n): a != p, y_a == y_p, y_n != y_a, each counted once (both
directions of a positive pair are separate triplets); with `groups` g, also g_n == g_a (negatives from the
anchor's own group only: loss.negatives=own_video, a group being one video). With d = squared Euclidean distance,
    loss = sum_{valid} relu(margin + d_ap - d_an) / #valid            (reduction="all"; inactive ones count)
    loss = the same sum / #{valid with a positive term}               (reduction="active")
    + quant_weight * mean((|h| - 1)^2)
No valid triplet gives loss 0 with zero gradients, connected to the graph. `margin` is in squared-L2 units:
for +-1 codes d = 4 x Hamming distance, so margin 14 at 48 bits asks for ~3.5 bits of separation.

How it avoids B^3. For a fixed (a, p) with t = margin + d_ap,
    sum_n relu(t - d_an) = c_ap * t - sum_{n: d_an < t} d_an,
where c_ap = #{n : d_an < t}. Regrouping by pair, the whole sum is sum_ab w_ab d_ab + margin * #active with
integer weights w_ap = c_ap (positives) and w_an = -k_an, k_an = #{p : t_ap > d_an} (negatives). c comes from
sorting each anchor's negative distances and `searchsorted`; k from a histogram of c (see pair_weights).
Holding w constant, autograd through d gives the exact gradient; strict `<` reproduces torch.relu at the kink
(relu(0) = 0, relu'(0) = 0).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from c3dhash.distributed.env import get_rank, get_world_size
from c3dhash.distributed.gather import all_gather_rows, all_gather_sizes

REDUCTIONS = ("all", "active")
# Anchor rows per chunk when counting: bounds the sort/searchsorted temporaries to ~CHUNK_ELEMS per matrix.
CHUNK_ELEMS = 1 << 22


class LossError(ValueError):
    """Bad loss input (shapes, reduction); the message says what was expected."""


def _check(h: torch.Tensor, labels: torch.Tensor, reduction: str, groups: torch.Tensor | None) -> None:
    if reduction not in REDUCTIONS:
        raise LossError(f"loss.reduction={reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if h.dim() != 2 or labels.dim() != 1 or labels.shape[0] != h.shape[0]:
        raise LossError(f"expected h of shape B x bits and labels of shape B, got {tuple(h.shape)} and "
                        f"{tuple(labels.shape)}")
    if groups is not None and groups.shape != labels.shape:
        raise LossError(f"expected groups of shape B like the labels, got {tuple(groups.shape)} and "
                        f"{tuple(labels.shape)}")


def _negatives(same: torch.Tensor, anchor_groups: torch.Tensor | None, groups: torch.Tensor | None
               ) -> torch.Tensor:
    """Another identity; with groups, one of the anchor's own group only."""
    if anchor_groups is None:
        return ~same
    return ~same & (anchor_groups.unsqueeze(1) == groups.unsqueeze(0))


def sq_distances(anchors: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A x B squared Euclidean distances, via norms + one matmul (never the A x B x dim difference tensor)."""
    return (anchors.pow(2).sum(1, keepdim=True) + points.pow(2).sum(1).unsqueeze(0)
            - 2.0 * anchors @ points.T)


@torch.no_grad()
def pair_weights(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                 margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer pair weights w (in d.dtype) and the active count (int64) such that
    sum over valid triplets of relu(margin + d_ap - d_an) == sum(w * d) + margin * active."""
    w = torch.empty_like(d)
    active = torch.zeros((), dtype=torch.int64, device=d.device)
    rows = max(1, CHUNK_ELEMS // max(1, d.shape[1]))
    for lo in range(0, d.shape[0], rows):
        dc, pc, nc = d[lo:lo + rows], pos[lo:lo + rows], neg[lo:lo + rows]
        # Non-negatives sort to the end as +inf; no threshold is above them, so they get k = 0 below.
        neg_sorted, order = torch.where(nc, dc, torch.inf).sort(dim=1)
        thresh = torch.where(pc, dc + margin, -torch.inf)
        # c_ap = #negatives strictly closer than margin + d_ap (a tie is relu(0) = 0: not active, no
        # gradient); 0 for non-positives, whose threshold is -inf.
        c = torch.searchsorted(neg_sorted, thresh, side="left")
        active += c.sum()
        # The negative at sorted position j is active for p iff c_ap > j, so k at position j is
        # #{p : c_ap > j} = #positives - #{p : c_ap <= j}: a cumulative histogram of c. No second sort.
        hist = torch.zeros(c.shape[0], c.shape[1] + 1, dtype=torch.int64, device=d.device)
        hist.scatter_add_(1, c, pc.to(torch.int64))
        k_sorted = pc.sum(1, keepdim=True) - hist.cumsum(1)[:, :-1]
        k = torch.empty_like(k_sorted).scatter_(1, order, k_sorted)  # back to column order
        # Entries are counts <= B, exact in float32 (< 2^24).
        w[lo:lo + rows] = (c - k).to(d.dtype)
    return w, active


def _triplet_sum(anchors: torch.Tensor, points: torch.Tensor, anchor_labels: torch.Tensor,
                 labels: torch.Tensor, offset: int, margin: float, anchor_groups: torch.Tensor | None = None,
                 groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over triplets whose anchor is one of `anchors` = rows offset.. of `points`, active count)."""
    d = sq_distances(anchors, points)
    same = anchor_labels.unsqueeze(1) == labels.unsqueeze(0)
    rows = torch.arange(anchors.shape[0], device=d.device) + offset
    not_self = rows.unsqueeze(1) != torch.arange(points.shape[0], device=d.device).unsqueeze(0)
    w, active = pair_weights(d.detach(), same & not_self, _negatives(same, anchor_groups, groups), margin)
    return (w * d).sum() + margin * active.to(d.dtype), active


def num_valid_triplets(labels: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """sum over classes of n_c (n_c - 1) (B - n_c): every anchor, positive, negative choice (int64).
    Summed per anchor, (n_a - 1)(B - n_a) with n_a = its class's count: a B x B comparison, no torch.unique,
    whose data-dependent output size is a host sync on a GPU. With groups, B - n_a becomes the anchor's
    negatives in its own group."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    n = same.sum(1)
    negatives = labels.numel() - n if groups is None else _negatives(same, groups, groups).sum(1)
    return ((n - 1) * negatives).sum()


def _quant_sum(h: torch.Tensor) -> torch.Tensor:
    return (h.abs() - 1.0).pow(2).sum()


def _prepare(h: torch.Tensor) -> torch.Tensor:
    # Counts must be exact and relu kinks decided in >= float32; bf16 would round counts above 256.
    return h.float() if h.dtype in (torch.float16, torch.bfloat16) else h


def all_triplet_loss(h: torch.Tensor, labels: torch.Tensor, margin: float, *, reduction: str = "all",
                     quant_weight: float = 0.0, return_stats: bool = False,
                     groups: torch.Tensor | None = None) -> Any:
    """Single-process loss over every valid triplet of the batch (see the module docstring).

    Returns the 0-dim loss, or (loss, {"num_valid", "num_active", "nonfinite_ranks"}) with 0-dim int64
    tensors (no GPU sync) and "num_points", the batch's rows (an int).
    """
    _check(h, labels, reduction, groups)
    labels = labels.to(h.device)
    groups = None if groups is None else groups.to(h.device)
    with torch.autocast(h.device.type, enabled=False):
        h = _prepare(h)
        total, active = _triplet_sum(h, h, labels, labels, 0, margin, groups, groups)
        valid = num_valid_triplets(labels, groups)
        denom = valid if reduction == "all" else active
        loss = total / denom.clamp_min(1).to(h.dtype)
        if quant_weight:
            loss = loss + quant_weight * _quant_sum(h) / max(1, h.numel())
    bad = (~torch.isfinite(loss.detach())).to(torch.int64)  # this (only) rank's finite-loss flag
    stats = {"num_valid": valid, "num_active": active, "num_points": h.shape[0], "nonfinite_ranks": bad}
    return (loss, stats) if return_stats else loss


def gathered_triplet_loss(h_local: torch.Tensor, labels_local: torch.Tensor, margin: float, *,
                          reduction: str = "all", quant_weight: float = 0.0,
                          return_stats: bool = False, sizes: list[int] | None = None,
                          groups: torch.Tensor | None = None) -> Any:
    """The loss of the GLOBAL batch (all ranks' rows), computed for this rank's anchors; call on every rank.

    Gradient: this rank's term is world * (sum over its anchors' triplets) / (global count), plus
    world * quant_weight * (its rows' quant sum) / (global elements). The all-gather's backward sums every
    rank's gradient into the owner of each row and DDP divides by world, so each parameter gets exactly the
    gradient of the single-process loss on the concatenated batch (tests/test_gather.py).
    Value: one all-reduce of the detached per-rank sums gives the global loss; we return
    `global + (local - local.detach())`, whose value is the global loss on every rank (for logging) and whose
    gradient is the local term's. Unequal local batch sizes are fine. Without a process group this is
    all_triplet_loss.
    `sizes`: every rank's row count, in rank order, when the caller knows them (the Trainer gathers a whole
    epoch's once); None gathers them here (one small collective and a host sync per call).
    Stats "nonfinite_ranks": how many ranks had a non-finite local sum; it rides the loss's all-reduce, so
    it is the same on every rank (the Trainer's finite guard needs no collective of its own).
    `groups`: this rank's rows' groups (see the module docstring), gathered with the labels in one collective.
    """
    world = get_world_size()
    if world == 1:
        return all_triplet_loss(h_local, labels_local, margin, reduction=reduction, quant_weight=quant_weight,
                                return_stats=return_stats, groups=groups)
    _check(h_local, labels_local, reduction, groups)
    labels_local = labels_local.to(h_local.device)  # NCCL gathers device tensors only
    groups_local = None if groups is None else groups.to(h_local.device)
    with torch.autocast(h_local.device.type, enabled=False):
        h_local = _prepare(h_local)
        if sizes is None:
            sizes = all_gather_sizes(h_local.shape[0], device=h_local.device)
        h_all, _ = all_gather_rows(h_local, sizes=sizes)
        if groups_local is None:
            labels_all, groups_all = all_gather_rows(labels_local, sizes=sizes)[0], None
        else:
            both, _ = all_gather_rows(torch.stack([labels_local, groups_local.to(labels_local.dtype)], 1),
                                      sizes=sizes)
            labels_all, groups_all = both[:, 0], both[:, 1]
        lo = sum(sizes[:get_rank()])
        # Anchors are this rank's rows of the gathered tensor; their gradient reaches h_local via the gather.
        anchors = h_all[lo:lo + h_local.shape[0]]
        total, active = _triplet_sum(anchors, h_all, labels_local, labels_all, lo, margin, groups_local,
                                     groups_all)
        quant = _quant_sum(h_local)
        bad = ~(torch.isfinite(total.detach()) & torch.isfinite(quant.detach()))
        sums = torch.stack([total.detach().double(), quant.detach().double(), active.double(), bad.double()])
        dist.all_reduce(sums)
        valid = num_valid_triplets(labels_all, groups_all)
        active_all = sums[2].round().to(torch.int64)
        denom = (valid if reduction == "all" else active_all).clamp_min(1).to(h_local.dtype)
        numel = max(1, h_all.numel())
        local = world * (total / denom + quant_weight * quant / numel)
        global_value = (sums[0].to(h_local.dtype) / denom + quant_weight * sums[1].to(h_local.dtype) / numel)
        loss = global_value + (local - local.detach())
        flagged = sums[3].round().to(torch.int64)
        # a sum that overflowed only once added up still stops every rank (global_value is the same everywhere)
        bad_ranks = torch.where(torch.isfinite(global_value), flagged, flagged.clamp_min(1))
    stats = {"num_valid": valid, "num_active": active_all, "num_points": h_all.shape[0],  # the global batch
             "nonfinite_ranks": bad_ranks}
    return (loss, stats) if return_stats else loss
