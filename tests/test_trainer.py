"""The training core without Ray: two gloo ranks (the conftest `gloo` runner) and one plain process.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_trainer.py

One spawn runs every two-rank scenario and saves what each rank saw: an uninterrupted run; a
run whose worker group dies mid-epoch and resumes from its step checkpoint in a fresh Trainer; validation with
shards of different batch counts (one rank holds no query at all); a loss that turns NaN on one rank only.
The tests compare them with each other and with a single process.
"""
import dataclasses

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.testing import assert_close

import c3dhash.distributed.triplet as triplet_mod
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.optim import lr_factor
from c3dhash.distributed.job import config_to_dict
from c3dhash.distributed.trainer import NonFiniteError, Trainer
from c3dhash.eval.config import EvalConfig
from train_helpers import EPOCHS, STEPS, WORLD, job, make_trainer, record_losses

FAULT_AT = 4  # the group dies before global step 5 (epoch 1, its second step)


def model_state(tr: Trainer) -> dict:
    return {k: v.detach().clone() for k, v in tr.module.state_dict().items()}


def full_run(run_dir, *, rank: int, world: int) -> dict:
    tr, rows = make_trainer(job(), run_dir, rank=rank, world=world)
    losses = record_losses(tr)
    tr.fit()
    return dict(losses=losses, rows=rows, final=model_state(tr))


def crashed_run(run_dir, *, rank: int, world: int) -> dict:
    cfg = job(checkpoint_every_steps=2)
    tr, rows_1 = make_trainer(cfg, run_dir, rank=rank, world=world)
    first = record_losses(tr, fault_at=FAULT_AT)
    with pytest.raises(RuntimeError, match="injected"):
        tr.fit()
    if world > 1:
        dist.barrier()  # rank 0 has written its checkpoint (Ray's report is a barrier too)
    tr2, rows_2 = make_trainer(cfg, run_dir, rank=rank, world=world)
    tr2.restore(ckpt.latest_checkpoint(run_dir))
    second = record_losses(tr2)
    tr2.fit()
    return dict(first=first, second=second, rows=rows_1 + rows_2, final=model_state(tr2))


def uneven_codes(run_dir, *, rank: int, world: int) -> dict:
    """One query video (rank 1 has none) and 12 database videos in batches of 2 over the ranks."""
    tr, _ = make_trainer(job(), run_dir, rank=rank, world=world, queries=1)
    # as tensors: the gloo runner loads results with weights_only=True, which refuses numpy arrays
    return {name: torch.from_numpy(tr.encode(split).codes) for name, split in (("q", tr.queries), ("db", tr.database))}


def nan_on_rank_one(run_dir, *, rank: int) -> str:
    tr, _ = make_trainer(job(checkpoint_every_steps=1), run_dir, rank=rank, world=WORLD)
    real = triplet_mod._quant_sum

    def quant_sum(h):
        # rank 1's own term only (NaN codes would reach rank 0's sums through the gather): its flag reaches
        # rank 0 through the loss's own all-reduce
        return real(h) * float("nan") if rank == 1 and tr.state.global_step == 1 else real(h)
    triplet_mod._quant_sum = quant_sum
    try:
        tr.fit()
    except NonFiniteError as exc:
        return str(exc)
    finally:
        triplet_mod._quant_sum = real
    return "no error"


def _rank_main(rank, world, out_dir):
    return dict(full=full_run(f"{out_dir}/full", rank=rank, world=world),
                crash=crashed_run(f"{out_dir}/crash", rank=rank, world=world),
                uneven=uneven_codes(f"{out_dir}/uneven", rank=rank, world=world),
                nan=nan_on_rank_one(f"{out_dir}/nan", rank=rank))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("trainer")


@pytest.fixture(scope="module")
def ranks(gloo, out):
    return gloo(_rank_main, WORLD, out_dir=out)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    torch.set_num_threads(1)
    return full_run(tmp_path_factory.mktemp("single"), rank=0, world=1)


def test_resume_mid_epoch_equals_the_uninterrupted_run_bit_for_bit(ranks):
    for res in ranks:
        full, crash = res["full"], res["crash"]
        assert [s for s, _ in crash["first"]] == [1, 2, 3, 4]
        assert [s for s, _ in crash["second"]] == [5, 6, 7, 8, 9]  # from the step-4 checkpoint, each step once
        assert crash["first"] + crash["second"] == full["losses"]  # float equality: the same computation
        for k, v in full["final"].items():
            assert torch.equal(crash["final"][k], v), k
        epochs = [r["epoch"] for r in crash["rows"] if r["report"] == "epoch"]
        assert epochs == [0, 1, 2]


def test_checkpoints_hold_the_position_and_the_config(out, ranks):
    state = ckpt.load(ckpt.latest_checkpoint(out / "full"))
    rows = [r for r in ranks[0]["full"]["rows"] if r["report"] == "epoch"]
    assert {"model", "optimizer", "scheduler", "train_state", "rng", "config"} <= set(state)
    assert state["train_state"] == {"epoch": EPOCHS, "step_in_epoch": 0, "global_step": EPOCHS * STEPS,
                                    "best_val_map": max(r["val_map"] for r in rows)}
    assert state["config"] == config_to_dict(job())
    assert all(isinstance(b, bytes) for b in [state["rng"]["torch"], *state["rng"].get("cuda", [])])
    mid = ckpt.load(out / "crash" / "checkpoint_000004")
    assert mid["train_state"]["epoch"] == 1 and mid["train_state"]["step_in_epoch"] == 1
    # epoch checkpoints at steps 3, 6, 9 and step checkpoints at 2, 4, 8 (6 is an epoch end)
    assert sorted(p.name for p in (out / "crash").glob("checkpoint_*")) == [
        f"checkpoint_{s:06d}" for s in (2, 3, 4, 6, 8, 9)]


def test_best_model_is_the_epoch_with_the_highest_validation_map(out, ranks):
    rows = [r for r in ranks[0]["full"]["rows"] if r["report"] == "epoch"]
    best = ckpt.load(out / "full" / ckpt.BEST_FILE)
    top = max(reversed(rows), key=lambda r: r["val_map"])  # the last of equal maxima: a tie keeps the later
    assert best["val_map"] == top["val_map"] and best["epoch"] == top["epoch"]
    at_that_epoch = ckpt.load(out / "full" / f"checkpoint_{(top['epoch'] + 1) * STEPS:06d}")["model"]
    for k, v in at_that_epoch.items():
        assert torch.equal(best["model"][k], v), k
    assert [r["best_val_map"] for r in rows] == list(np.maximum.accumulate([r["val_map"] for r in rows]))


def test_two_ranks_train_like_one_process(ranks, single):
    # SyncBN + the gathered loss make the 2-rank step the 1-process step; float32 sums in another order.
    for res in ranks:
        assert [s for s, _ in res["full"]["losses"]] == [s for s, _ in single["losses"]]
        assert_close(torch.tensor([v for _, v in res["full"]["losses"]]),
                     torch.tensor([v for _, v in single["losses"]]), rtol=1e-5, atol=1e-6)
        for k, v in single["final"].items():
            assert_close(res["full"]["final"][k].float(), v.float(), rtol=1e-4, atol=1e-5, msg=k)
    assert ranks[0]["full"]["losses"] == ranks[1]["full"]["losses"]  # every rank logs the global loss


def test_validation_with_uneven_shards_finishes_and_equals_one_process(ranks, tmp_path):
    tr, _ = make_trainer(job(), tmp_path, rank=0, world=1, queries=1)
    ref = {name: tr.encode(split).codes for name, split in (("q", tr.queries), ("db", tr.database))}
    for res in ranks:
        assert np.array_equal(res["uneven"]["q"].numpy(), ref["q"])
        assert np.array_equal(res["uneven"]["db"].numpy(), ref["db"])


def test_a_loss_non_finite_on_one_rank_stops_every_rank_without_a_checkpoint(out, ranks):
    for res in ranks:  # both ranks raised at the same step: the guard's all-reduce agreed (no hang)
        lr = f"lr {0.05 * lr_factor(1, cfg=job().train, steps_per_epoch=STEPS):.3g};"
        assert "epoch 1 step 2 (global step 2): the loss is not finite on 1 of 2 rank(s)" in res["nan"], res["nan"]
        assert lr in res["nan"], res["nan"]
        assert "no checkpoint" in res["nan"] and "Lower train.lr" in res["nan"]
    assert sorted(p.name for p in (out / "nan").glob("checkpoint_*")) == ["checkpoint_000001"]


def test_eval_expected_ties_adds_the_expected_map_to_validation(tmp_path):
    cfg = job(epochs=1)
    tr, rows = make_trainer(dataclasses.replace(cfg, eval=EvalConfig(expected_ties=True)), tmp_path, rank=0, world=1)
    tr.fit()
    (row,) = [r for r in rows if r["report"] == "epoch"]
    assert 0 < row["val_map_expected"] <= 1 and row["val_map"] > 0
    plain, rows = make_trainer(cfg, tmp_path / "plain", rank=0, world=1)
    plain.fit()
    assert "val_map_expected" not in rows[-1]


def test_lr_batch_scales_the_rate_to_the_global_batch(tmp_path):
    """train.lr_batch=N: lr is for N clips a step; the run's P x K = 4 clips at lr 0.05 for 2 clips equals
    lr 0.1 given as is, weight for weight (the scaling is only the peak rate; schedule and warmup unchanged)."""
    scaled, _ = make_trainer(job(epochs=1, lr=0.05, lr_batch=2, warmup_epochs=1), tmp_path / "a", rank=0, world=1)
    plain, _ = make_trainer(job(epochs=1, lr=0.1, warmup_epochs=1), tmp_path / "b", rank=0, world=1)
    assert scaled.train_loader.batch_size == 4 and scaled.lr == plain.lr == pytest.approx(0.1 / STEPS)
    scaled.fit()
    plain.fit()
    assert scaled.sched.base_lrs == plain.sched.base_lrs == [0.1]
    assert all(torch.equal(v, plain.module.state_dict()[k]) for k, v in scaled.module.state_dict().items())
    other, _ = make_trainer(job(epochs=1, lr=0.05, warmup_epochs=1), tmp_path / "c", rank=0, world=1)
    other.fit()
    assert not all(torch.equal(v, other.module.state_dict()[k]) for k, v in scaled.module.state_dict().items())
