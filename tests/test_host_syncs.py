"""Host syncs of the training loop (issue 29, item 9): between train.log_every steps a step converts nothing
to a Python number, the loss gathers no batch sizes (the Trainer gathers an epoch's once), and the finite-loss
flag needs no collective of its own.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_host_syncs.py

On the CPU nothing really waits, so the test counts the calls that would wait on a GPU (Tensor.item,
float(), int(), bool(), tolist(), cpu()) when c3dhash code makes them, and the size and all-reduce collectives.
"""
import sys

import torch
import torch.distributed as dist

import c3dhash.distributed.gather as gather_mod
import c3dhash.distributed.triplet as triplet_mod
from train_helpers import job, make_trainer

SYNCS = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu")
# GatherSyncBatchNorm's gloo implementation counts rows with float(); on a GPU torch's SyncBatchNorm runs instead
CPU_ONLY = ("c3dhash.distributed.syncbn",)
LOG_EVERY, EPOCHS = 2, 2  # STEPS = 3 per epoch: global steps 1..6, logged at 2, 4, 6


def count_calls(counts: dict[str, int]) -> None:
    """Count the sync-making Tensor methods called from c3dhash code, and the collectives, into `counts`."""
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **kw):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("c3dhash.") and caller not in CPU_ONLY:
                counts["syncs"] += 1
            return _real(self, *a, **kw)
        setattr(torch.Tensor, name, counted)
    for mod, name in ((dist, "all_reduce"), (dist, "all_gather_single"), (triplet_mod, "all_gather_sizes"),
                      (gather_mod, "all_gather_sizes")):
        real = getattr(mod, name)

        def call(*a, _real=real, _name=name, **kw):
            caller = sys._getframe(1).f_globals.get("__name__", "").rpartition(".")[2]
            counts[_name] += 1
            counts[f"{_name} by {caller}"] = counts.get(f"{_name} by {caller}", 0) + 1
            return _real(*a, **kw)
        setattr(mod, name, call)


def _rank_main(rank, world, out_dir):
    tr, _ = make_trainer(job(log_every=LOG_EVERY), out_dir, rank=rank, world=world)
    counts = dict.fromkeys(("syncs", "all_reduce", "all_gather_single", "all_gather_sizes"), 0)
    per_step, step = [], tr.train_step

    def snapshot(clips, labels):
        per_step.append(counts["syncs"])
        return step(clips, labels)
    tr.train_step = snapshot
    count_calls(counts)
    epoch_ends = []
    for epoch in range(EPOCHS):
        tr.state.epoch, tr.state.step_in_epoch = epoch, 0
        tr.train_epoch()
        epoch_ends.append(counts["syncs"])
    return dict(per_step=per_step, epoch_ends=epoch_ends, **{k: v for k, v in counts.items() if k != "syncs"})


def test_syncs_only_at_log_steps_and_sizes_once_an_epoch(gloo):
    ranks = gloo(_rank_main, 2)
    for rank, res in enumerate(ranks):
        per_step, ends = res["per_step"], res["epoch_ends"]
        # syncs of global step s's iteration: from its train_step to the next one's (or to its epoch's end)
        stops = per_step[1:3] + [ends[0]] + per_step[4:6] + [ends[1]]
        iteration = [stop - start for start, stop in zip(per_step, stops)]
        progress = 2 if rank == 0 else 0  # rank 0's progress line at an epoch's last step: 2 float()
        # logged (2, 4, 6): the finite check's tolist + float(loss) + float(active); unlogged: none; an epoch's
        # end: the finite check (nothing left to read after step 6's) + float() of the two device sums
        assert iteration == [0, 3, 1 + 2 + progress, 3, 0, 3 + 0 + 2 + progress], (rank, iteration)
        assert per_step[0] == 1 and per_step[3] - ends[0] == 1, res  # each epoch's size gather: one tolist
        # 16 (+ 4 on rank 0) in 6 steps, where every step used to make 5 (the finite flag's item, float() of
        # loss, active and valid counts, the size gather's tolist): 30 + 2 x (2 + progress)
        assert ends[-1] == 16 + 2 * progress, res
        assert res["all_gather_sizes"] == 0 and res["all_gather_single"] == EPOCHS, res
        # the loss's sums, once a step: the finite flag rides them (it had an all-reduce of its own); SyncBN's
        # backward makes the others (one BatchNorm layer)
        assert res["all_reduce by triplet"] == 6 and "all_reduce by trainer" not in res, res
        assert res["all_gather_single by trainer"] == EPOCHS and "all_gather_single by gather" not in res, res


def _single(rank, world, out_dir):
    tr, _ = make_trainer(job(log_every=LOG_EVERY), out_dir, rank=0, world=1)
    counts = dict.fromkeys(("syncs", "all_reduce", "all_gather_single", "all_gather_sizes"), 0)
    count_calls(counts)
    tr.train_epoch()
    return counts


def test_one_process_gathers_nothing(gloo):
    res = gloo(_single, 1)[0]
    # steps 1..3, logged at 2: 3; the end: the finite check, float() of the two sums, 2 of the progress line
    assert res == dict(syncs=3 + 5, all_reduce=0, all_gather_single=0, all_gather_sizes=0), res
