"""Elastic training without Ray: the same run on 1, 2 and 4 gloo ranks, and one that changes size mid-run.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_elastic.py

The global P x K batch (3 x 2 = 6 clips) is fixed; each rank trains its slice of it (shard_batch: 3 + 3 clips on
2 ranks, 2 + 2 + 1 + 1 on 4: unequal slices), SyncBN
normalises over the whole batch, the gathered loss is the whole batch's, the lr follows the global step. So the
loss at every step must not depend on the world size, except for float rounding: the ranks add the same terms
in another order (SyncBN: per-rank means and M2 combined in float64, vs one float32 pass; the loss: per-rank
partial sums all-reduced; the gradients: per-rank sums all-reduced by DDP and divided by the world).

How close is close enough, from the summation order: reordering a sum changes it by a few units of rounding
u (u = 2^-24 in float32, 2^-53 in float64) relative to the sum of the magnitudes, times up to the number of
terms in the worst case; random-signed rounding errors grow like sqrt(n) in practice, and every later step
starts from weights that differ by such amounts. So the gap must SCALE WITH u: we allow the same 128 u in
both precisions (float32 7.6e-6, float64 1.4e-14). Measured here over 9 SGD steps: float32 1.3e-7, float64
2.9e-16 (2 to 3 u in both). A real difference of the computation does not scale with u: BatchNorm over each
rank's slice (sync_bn off) moves the 2-rank losses by 0.3, and would fail the float64 bound by 10^13.
"""
import pytest
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.config import LossConfig, TrainConfig
from c3dhash.distributed.job import ClusterConfig, JobConfig
from c3dhash.distributed.syncbn import convert_sync_bn
from c3dhash.distributed.trainer import Hooks, Trainer
from c3dhash.model.config import ModelConfig
from train_helpers import FolderReport, TensorTrainLoader, tensor_videos, tiny_net

P, K, STEPS, EPOCHS, BITS = 3, 2, 3, 3, 8
TOTAL = STEPS * EPOCHS
# (world size, first global step it trains, last): the size changes at an epoch's checkpoint (step 3) and at a
# mid-epoch step checkpoint (step 5)
ELASTIC = [(1, 1, 3), (4, 4, 5), (2, 6, TOTAL)]
ULPS = 128  # relative tolerance in units of rounding: measured 2-3, see the module docstring
RTOL = {dt: ULPS * torch.finfo(dt).eps / 2 for dt in (torch.float32, torch.float64)}  # eps / 2 = u


def job(*, sync_bn: bool = True) -> JobConfig:
    train = TrainConfig(epochs=EPOCHS, steps_per_epoch=STEPS, optimizer="sgd", lr=0.05, momentum=0.9,
                        weight_decay=5e-4, schedule="cosine", warmup_epochs=1, eval_every=0, log_every=100,
                        checkpoint_every_steps=1, amp="off", seed=0, sync_bn=sync_bn)
    return JobConfig(model=ModelConfig(bits=BITS), loss=LossConfig(margin=8.0), train=train,
                     cluster=ClusterConfig(name="elastic"))


def make_trainer(cfg: JobConfig, run_dir, *, rank: int, world: int, dtype: torch.dtype) -> Trainer:
    """What the Ray adapter builds on each rank, with the model rule of distributed/build.py (SyncBN when
    sync_bn and the world has > 1 rank) and the real P x K sampler and rank slicing."""
    x, labels = tensor_videos(3, 4)
    net = tiny_net(BITS).to(dtype)
    if cfg.train.sync_bn and world > 1:
        net = convert_sync_bn(net)
    loader = TensorTrainLoader(x.to(dtype), labels, p=P, k=K, steps=STEPS, rank=rank, world=world)
    return Trainer(job=cfg, model=DDP(net) if world > 1 else net, device=torch.device("cpu"), train_loader=loader,
                   queries=None, database=None, run_dir=run_dir, hooks=Hooks(report=FolderReport(run_dir)))


class Stop(Exception):
    """The worker group goes away (a node lost, or Ray resizing it) before global step `last` + 1."""


def train(cfg: JobConfig, run_dir, *, rank: int, world: int, dtype: torch.dtype = torch.float32,
          start: int = 1, last: int = TOTAL) -> dict:
    """Steps start..last (resuming from the checkpoint of step start - 1): (global step, loss) of each."""
    tr = make_trainer(cfg, run_dir, rank=rank, world=world, dtype=dtype)
    if start > 1:
        tr.restore(ckpt.latest_checkpoint(run_dir))
        assert tr.state.global_step == start - 1
    losses, step = [], tr.train_step

    def recorded(clips, labels):
        if tr.state.global_step == last:
            raise Stop
        out = step(clips, labels)
        losses.append((tr.state.global_step + 1, float(out[0])))
        return out
    tr.train_step = recorded
    try:
        tr.fit()
    except Stop:
        pass
    return dict(losses=losses, final={k: v.detach().clone() for k, v in tr.module.state_dict().items()})


def _rank_main(rank: int, world: int, out_dir: str, elastic_dir: str) -> dict:
    res = {f"fixed_{str(dt)[6:]}": train(job(), f"{out_dir}/fixed_{dt}", rank=rank, world=world, dtype=dt)
           for dt in (torch.float32, torch.float64)}
    if world == 2:
        res["no_sync_bn"] = train(job(sync_bn=False), f"{out_dir}/no_sync_bn", rank=rank, world=world)
    for w, first, last in ELASTIC:  # this world's part of the elastic run, in the shared run folder
        if w == world:
            res["elastic"] = train(job(), elastic_dir, rank=rank, world=world, start=first, last=last)
    return res


@pytest.fixture(scope="module")
def runs(gloo, tmp_path_factory):
    """world size -> every rank's results. The elastic run: 1 process, then 4 ranks, then 2, one folder."""
    tmp = tmp_path_factory.mktemp("elastic")
    torch.set_num_threads(1)
    one = {f"fixed_{str(dt)[6:]}": train(job(), tmp / "world1" / f"fixed_{dt}", rank=0, world=1, dtype=dt)
           for dt in (torch.float32, torch.float64)}
    w, first, last = ELASTIC[0]
    one["elastic"] = train(job(), tmp / "elastic", rank=0, world=w, start=first, last=last)
    # 4 before 2: the elastic run's order
    return {1: [one], **{world: gloo(_rank_main, world, str(tmp / "elastic")) for world in (4, 2)}}


def losses(res: dict) -> tuple[list[int], torch.Tensor]:
    steps, values = zip(*res["losses"])
    return list(steps), torch.tensor(values, dtype=torch.float64)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_two_and_four_ranks_give_the_same_loss_at_every_step(runs, dtype):
    steps_1, ref = losses(runs[1][0][f"fixed_{dtype}"])
    assert steps_1 == list(range(1, TOTAL + 1))
    assert float(ref[-1]) < float(ref[0])  # it trains: the comparison is not of constants
    for world in (2, 4):
        for res in runs[world]:  # every rank logs the global loss
            steps, values = losses(res[f"fixed_{dtype}"])
            assert steps == steps_1
            gap = max_rel(values, ref)
            assert gap <= RTOL[getattr(torch, dtype)], (world, gap, values - ref)


def test_float32_runs_of_any_size_are_the_float64_trajectory_up_to_float32_rounding(runs):
    _, ref64 = losses(runs[1][0]["fixed_float64"])
    for world in (1, 2, 4):
        _, values = losses(runs[world][0]["fixed_float32"])
        assert max_rel(values, ref64) <= RTOL[torch.float32], world


def test_without_sync_bn_the_loss_depends_on_the_world_size(runs):
    """The control: BatchNorm over each rank's 3 clips instead of the 6 is a real difference, far above RTOL."""
    _, ref = losses(runs[1][0]["fixed_float32"])
    _, per_slice = losses(runs[2][0]["no_sync_bn"])
    assert max_rel(per_slice, ref) > 100 * RTOL[torch.float32]


def test_a_run_that_changes_size_trains_every_step_once_like_a_fixed_run(runs):
    """1 process for steps 1-3, 4 ranks for 4-5 (from the epoch checkpoint), 2 ranks for 6-9 (from step 5's)."""
    for w, first, last in ELASTIC:
        for res in runs[w]:
            assert [s for s, _ in res["elastic"]["losses"]] == list(range(first, last + 1))
    chain = [loss for w, _, _ in ELASTIC for _, loss in runs[w][0]["elastic"]["losses"]]
    _, ref = losses(runs[1][0]["fixed_float32"])
    assert max_rel(torch.tensor(chain, dtype=torch.float64), ref) <= RTOL[torch.float32]
    final, fixed = runs[2][0]["elastic"]["final"], runs[1][0]["fixed_float32"]["final"]
    for k, v in fixed.items():
        torch.testing.assert_close(final[k].double(), v.double(), rtol=10 * RTOL[torch.float32], atol=1e-6,
                                   msg=k)
