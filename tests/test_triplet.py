"""The O(B^2 log B) all-triplet loss equals an independent naive B^3 computation: loss, gradients, counts.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_triplet.py
"""
import pytest
import torch
from torch.testing import assert_close

import c3dhash.distributed.triplet as triplet
from c3dhash.distributed import LossError, all_triplet_loss

TOL = dict(rtol=1e-12, atol=1e-12)


def naive_loss(h, labels, margin, reduction="all", quant_weight=0.0, groups=None):
    """Reference: every (a, p, n) enumerated by python loops, distances by explicit differences."""
    y = labels.tolist()
    b = len(y)
    g = [0] * b if groups is None else groups.tolist()
    valid = torch.zeros(b, b, b, dtype=torch.bool)
    for a in range(b):
        for p in range(b):
            for n in range(b):
                valid[a, p, n] = a != p and y[a] == y[p] and y[n] != y[a] and g[n] == g[a]
    d = ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
    terms = torch.relu(margin + d[:, :, None] - d[:, None, :])
    active = valid & (terms > 0)
    denom = valid.sum() if reduction == "all" else active.sum()
    loss = (terms * valid).sum() / max(1, int(denom))
    loss = loss + quant_weight * ((h.abs() - 1) ** 2).mean()
    return loss, int(valid.sum()), int(active.sum())


def _case(name):
    g = torch.Generator().manual_seed(CASES.index(name))
    if name == "random":
        h = torch.randn(11, 6, generator=g, dtype=torch.float64)
        return h, torch.randint(0, 3, (11,), generator=g), 2.0
    if name == "one_class":
        return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.full((6,), 7), 2.0
    if name == "all_distinct":
        return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.arange(6), 2.0
    if name == "ties":
        # +-1 codes with duplicate rows: every distance is 4 x Hamming, margin 4 puts many terms exactly at 0.
        codes = torch.randint(0, 2, (5, 8), generator=g).double() * 2 - 1
        h = codes[torch.tensor([0, 0, 1, 2, 2, 3, 4, 4, 1, 3])]
        return h, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0]), 4.0
    if name == "partly_inactive":
        # Well separated classes, small margin: most triplets inactive, some active.
        centres = torch.randn(3, 5, generator=g, dtype=torch.float64)
        labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
        return centres[labels] + 0.7 * torch.randn(10, 5, generator=g, dtype=torch.float64), labels, 2.0
    raise KeyError(name)


CASES = ["random", "one_class", "all_distinct", "ties", "partly_inactive"]


@pytest.mark.parametrize("quant_weight", [0.0, 0.5])
@pytest.mark.parametrize("reduction", ["all", "active"])
@pytest.mark.parametrize("case", CASES)
def test_matches_naive_loss_and_gradients(case, reduction, quant_weight):
    h0, labels, margin = _case(case)
    h = h0.clone().requires_grad_(True)
    loss, stats = all_triplet_loss(h, labels, margin, reduction=reduction, quant_weight=quant_weight,
                                   return_stats=True)
    (grad,) = torch.autograd.grad(loss, h)
    h_ref = h0.clone().requires_grad_(True)
    ref, n_valid, n_active = naive_loss(h_ref, labels, margin, reduction, quant_weight)
    (grad_ref,) = torch.autograd.grad(ref, h_ref)
    assert_close(loss, ref, **TOL)
    assert_close(grad, grad_ref, **TOL)
    assert int(stats["num_valid"]) == n_valid and int(stats["num_active"]) == n_active
    if case == "partly_inactive":
        assert 0 < n_active < n_valid  # the case really exercises inactive triplets
    if case == "ties":
        assert 0 < n_active < n_valid


@pytest.mark.parametrize("reduction", ["all", "active"])
def test_own_group_negatives_match_naive_loss_and_gradients(reduction):
    """loss.negatives=own_video: labels 2 x video + direction here, groups = the video; negatives of another video
    drop out of the sum and of the count, and only them (the loss differs from the ungrouped one)."""
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 0, 3])  # video 2 plays forward only: no negative
    groups = labels // 2
    h0 = torch.randn(len(labels), 6, generator=g, dtype=torch.float64)
    h = h0.clone().requires_grad_(True)
    loss, stats = all_triplet_loss(h, labels, 3.0, reduction=reduction, return_stats=True, groups=groups)
    (grad,) = torch.autograd.grad(loss, h)
    h_ref = h0.clone().requires_grad_(True)
    ref, n_valid, n_active = naive_loss(h_ref, labels, 3.0, reduction, groups=groups)
    (grad_ref,) = torch.autograd.grad(ref, h_ref)
    assert_close(loss, ref, **TOL)
    assert_close(grad, grad_ref, **TOL)
    assert int(stats["num_valid"]) == n_valid and int(stats["num_active"]) == n_active
    assert 0 < n_active <= n_valid < naive_loss(h0, labels, 3.0)[1]
    assert not torch.isclose(loss, all_triplet_loss(h0, labels, 3.0, reduction=reduction))
    with pytest.raises(LossError, match="groups of shape"):
        all_triplet_loss(h0, labels, 3.0, groups=groups[:-1])


@pytest.mark.parametrize("case", ["one_class", "all_distinct"])
def test_no_valid_triplet_is_zero_loss_with_zero_grad(case):
    h0, labels, margin = _case(case)
    h = h0.clone().requires_grad_(True)
    loss = all_triplet_loss(h, labels, margin)
    assert loss.requires_grad and loss.item() == 0.0
    loss.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))


def test_chunked_counting_equals_unchunked(monkeypatch):
    h0, labels, margin = _case("random")
    h = h0.clone().requires_grad_(True)
    full = all_triplet_loss(h, labels, margin, reduction="active")
    (g_full,) = torch.autograd.grad(full, h)
    monkeypatch.setattr(triplet, "CHUNK_ELEMS", 25)  # 2 anchor rows per chunk on B = 11
    chunked = all_triplet_loss(h, labels, margin, reduction="active")
    (g_chunked,) = torch.autograd.grad(chunked, h)
    assert_close(chunked, full, **TOL)
    assert_close(g_chunked, g_full, **TOL)


def test_bf16_input_is_computed_in_float32():
    h0, labels, margin = _case("random")
    hb = h0.to(torch.bfloat16)
    loss = all_triplet_loss(hb, labels, margin)
    assert loss.dtype == torch.float32
    assert_close(loss, all_triplet_loss(hb.float(), labels, margin), rtol=0, atol=0)


def test_bad_inputs_raise_loss_error():
    h, labels, margin = _case("random")
    with pytest.raises(LossError, match="reduction"):
        all_triplet_loss(h, labels, margin, reduction="sum")
    with pytest.raises(LossError, match="labels of shape"):
        all_triplet_loss(h, labels[:-1], margin)


@pytest.mark.parametrize("seed", range(4))
def test_num_valid_triplets_counts_every_class_without_unique(seed):
    labels = torch.randint(0, 1 + seed * 3, (1 + seed * 7,), generator=torch.Generator().manual_seed(seed))
    counts = torch.bincount(labels).tolist()
    expected = sum(c * (c - 1) * (len(labels) - c) for c in counts)
    got = triplet.num_valid_triplets(labels)
    assert got.item() == expected and got.dtype == torch.int64
