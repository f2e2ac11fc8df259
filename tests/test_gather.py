"""Two gloo ranks on CPU equal one process on the concatenated batch: gather, loss, gradients, a DDP step.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_gather.py

One gloo spawn (the conftest `gloo` fixture) runs every distributed computation and saves each rank's
results; the tests compare them with single-process references computed here.
"""
import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.testing import assert_close

from c3dhash.distributed import (all_gather_rows, all_triplet_loss, barrier, convert_sync_bn, gathered_triplet_loss,
                                 get_local_rank, get_rank, get_world_size, is_main)
from c3dhash.model import build_hash_net

WORLD = 2
# name -> (local sizes per rank, reduction, quant_weight, number of classes, groups: labels // 2 or none)
LOSS_CASES = {
    "equal_all": ((4, 4), "all", 0.0, 3, False),
    "unequal_all_quant": ((3, 6), "all", 0.5, 3, False),
    "unequal_active": ((5, 2), "active", 0.0, 2, False),
    "no_valid": ((2, 3), "all", 0.0, 5, False),  # every label distinct: loss 0, zero gradients
    # loss.negatives=own_video: groups = label // 2 here, a label's negatives only in its own pair
    "groups_all": ((5, 6), "all", 0.0, 6, True),
    "groups_active": ((7, 3), "active", 0.5, 4, True),
}
DDP_SIZES = (2, 3)  # clips per rank in the DDP step: unequal on purpose
BN_SIZES = (1, 4)  # SyncBN alone: one clip on rank 0
TOL = dict(rtol=1e-12, atol=1e-12)


def loss_batch(name):
    sizes, _, _, classes, grouped = LOSS_CASES[name]
    g = torch.Generator().manual_seed(len(name))
    b = sum(sizes)
    labels = torch.arange(b) if classes >= b else torch.randint(0, classes, (b,), generator=g)
    return torch.randn(b, 6, generator=g, dtype=torch.float64), labels, (labels // 2 if grouped else None)


def ddp_batch():
    g = torch.Generator().manual_seed(7)
    clips = torch.randn(sum(DDP_SIZES), 3, 4, 32, 32, generator=g, dtype=torch.float64)
    return clips, torch.tensor([0, 1, 0, 1, 1])


def new_net():
    torch.manual_seed(0)
    return build_hash_net(bits=8).double().train()


def new_opt(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _local(x, sizes, rank):
    lo = sum(sizes[:rank])
    return x[lo:lo + sizes[rank]]


def _rank_loss_cases(rank):
    out = {}
    for name, (sizes, reduction, qw, _, _) in LOSS_CASES.items():
        h, labels, groups = loss_batch(name)
        h_local = _local(h, sizes, rank).clone().requires_grad_(True)
        loss, stats = gathered_triplet_loss(h_local, _local(labels, sizes, rank), 1.5, reduction=reduction,
                                            quant_weight=qw, return_stats=True,
                                            groups=None if groups is None else _local(groups, sizes, rank))
        loss.backward()
        out[name] = dict(loss=loss.detach(), grad=h_local.grad, valid=int(stats["num_valid"]),
                         active=int(stats["num_active"]), points=stats["num_points"])
    return out


def _rank_ddp_step(rank):
    clips, labels = ddp_batch()
    net = convert_sync_bn(new_net())
    model = DDP(net)
    opt = new_opt(model.parameters())
    h = model(_local(clips, DDP_SIZES, rank))
    loss = gathered_triplet_loss(h, _local(labels, DDP_SIZES, rank), 2.0, quant_weight=0.1)
    loss.backward()
    opt.step()
    return dict(loss=loss.detach(), state={k: v.detach().clone() for k, v in net.state_dict().items()})


BN_KINDS = (True, False, "head")  # BatchNorm3d with / without affine; "head": model.head_norm's N x bits BatchNorm1d


def bn_case(kind=True):
    g = torch.Generator().manual_seed(3)
    shape = (sum(BN_SIZES), 5) if kind == "head" else (sum(BN_SIZES), 5, 2, 3, 3)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 7  # |mean| > std
    return x, torch.randn(x.shape, generator=g, dtype=torch.float64)  # input, upstream gradient


def new_bn(kind):
    if kind == "head":
        return nn.BatchNorm1d(5, affine=False).double().train()
    bn = nn.BatchNorm3d(5, affine=kind, momentum=None if kind else 0.3).double().train()
    if kind:
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 2.0, 5, dtype=torch.float64))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, 5, dtype=torch.float64))
    return bn


def _rank_bn(rank):
    out = {}
    for kind in BN_KINDS:
        x, dy = bn_case(kind)
        bn = convert_sync_bn(new_bn(kind))
        xl = _local(x, BN_SIZES, rank).clone().requires_grad_(True)
        y = bn(xl)
        (y * _local(dy, BN_SIZES, rank)).sum().backward()
        out[kind] = dict(y=y.detach(), grad=xl.grad, running=(bn.running_mean.clone(), bn.running_var.clone()),
                         params=[p.grad for p in bn.parameters()])
    return out


def _rank_main(rank, world, out_dir):
    rows = torch.full((rank + 1, 2), float(rank), dtype=torch.float64, requires_grad=True)
    gathered, sizes = all_gather_rows(rows)
    (gathered * torch.arange(1.0, 4.0, dtype=torch.float64)[:, None]).sum().backward()
    res = dict(env=(get_rank(), get_world_size(), get_local_rank(), is_main()), sizes=sizes,
               gathered=gathered.detach(), rows_grad=rows.grad)
    barrier()
    res["loss"] = _rank_loss_cases(rank)
    res["ddp"] = _rank_ddp_step(rank)
    res["bn"] = _rank_bn(rank)
    return res


@pytest.fixture(scope="module")
def ranks(gloo):
    return gloo(_rank_main, WORLD)


def test_rank_helpers_and_gather_backward_sums_over_ranks(ranks):
    for r, res in enumerate(ranks):
        assert res["env"] == (r, WORLD, r, r == 0)
        assert res["sizes"] == [1, 2]
        assert res["gathered"][:, 0].tolist() == [0.0, 1.0, 1.0]  # unequal sizes, padding trimmed
    # Each rank's upstream gradient is row i -> (i + 1); the owner receives the sum over both ranks.
    assert ranks[0]["rows_grad"][:, 0].tolist() == [2.0]
    assert ranks[1]["rows_grad"][:, 0].tolist() == [4.0, 6.0]


def test_single_process_defaults():
    assert (get_rank(), get_world_size(), get_local_rank(), is_main()) == (0, 1, 0, True)
    barrier()  # a no-op without a process group
    x = torch.randn(3, 2)
    assert all_gather_rows(x)[0] is x
    h, labels, _ = loss_batch("equal_all")
    assert_close(gathered_triplet_loss(h, labels, 1.5), all_triplet_loss(h, labels, 1.5), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_gathered_loss_and_grads_equal_single_process(ranks, name):
    sizes, reduction, qw, _, _ = LOSS_CASES[name]
    h0, labels, groups = loss_batch(name)
    h = h0.clone().requires_grad_(True)
    ref, stats = all_triplet_loss(h, labels, 1.5, reduction=reduction, quant_weight=qw, return_stats=True,
                                  groups=groups)
    ref.backward()
    for r, res in enumerate(ranks):
        got = res["loss"][name]
        assert_close(got["loss"], ref.detach(), **TOL)  # every rank logs the global value
        assert (got["valid"], got["active"]) == (int(stats["num_valid"]), int(stats["num_active"]))
        assert got["points"] == stats["num_points"] == len(h)  # the global batch: what clips/s counts
        # DDP divides parameter gradients by the world size, so each rank's local gradient is world x the
        # single-process one; after DDP's mean the update is exactly the single-process update.
        assert_close(got["grad"] / WORLD, _local(h.grad, sizes, r), **TOL)
    if name == "no_valid":
        assert ref.item() == 0.0 and all(not res["loss"][name]["grad"].any() for res in ranks)


def test_ddp_step_with_sync_bn_equals_single_process_step(ranks):
    clips, labels = ddp_batch()
    net = new_net()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = new_opt(net.parameters())
    loss = all_triplet_loss(net(clips), labels, 2.0, quant_weight=0.1)
    loss.backward()
    opt.step()
    after = net.state_dict()
    for res in ranks:
        assert_close(res["ddp"]["loss"], loss.detach(), rtol=1e-10, atol=1e-12)
        for k, v in after.items():  # parameters and BN running statistics alike
            assert_close(res["ddp"]["state"][k], v, rtol=1e-9, atol=1e-11, msg=k)
    assert (after["head.weight"] - before["head.weight"]).abs().max() > 1e-4  # the step really moved
    assert (after["trunk.stem.1.running_mean"] - before["trunk.stem.1.running_mean"]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", BN_KINDS)
def test_cpu_sync_bn_equals_batch_norm_on_the_whole_batch(ranks, kind):
    """Output, input gradient, parameter gradients (summed over ranks) and running statistics."""
    x, dy = bn_case(kind)
    bn = new_bn(kind)
    xr = x.clone().requires_grad_(True)
    y = bn(xr)
    (y * dy).sum().backward()
    for r, res in enumerate(ranks):
        got = res["bn"][kind]
        assert_close(got["y"], _local(y.detach(), BN_SIZES, r), **TOL)
        assert_close(got["grad"], _local(xr.grad, BN_SIZES, r), **TOL)
        assert_close(got["running"][0], bn.running_mean, **TOL)
        assert_close(got["running"][1], bn.running_var, **TOL)
    for i, p in enumerate(bn.parameters()):
        assert_close(sum(res["bn"][kind]["params"][i] for res in ranks), p.grad, **TOL)
