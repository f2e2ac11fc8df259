"""Distributed training on a real 2-node Ray cluster (ray.cluster_utils.Cluster), one worker per node:
checkpoints, TensorBoard, a worker that dies mid-epoch, and a second run with the same name that resumes."""
import os

import pytest
import ray
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.config import load_config
from cluster.driver import run_dir, run_training
from distributed import checkpoint as ckpt
from train_helpers import make_tiny_dataset, read_metrics, tiny_overrides

STEPS = 2  # train.steps_per_epoch in tiny_overrides


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def crashed_run(cluster, data, tmp_path_factory):
    """Two epochs; the last rank raises at epoch 1, step 1, once; Ray restarts the group from a checkpoint."""
    cfg = load_config(None, tiny_overrides(data, tmp_path_factory.mktemp("runs"), "crash", epochs=2))
    os.environ["C3DHASH_FAIL_AT"] = "1:1"
    try:
        run_training(cfg)
    finally:
        del os.environ["C3DHASH_FAIL_AT"]
    return cfg


def test_one_worker_on_each_of_two_nodes(crashed_run):
    rows = read_metrics(run_dir(crashed_run))
    assert all(len(set(r["nodes"])) == 2 for r in rows), rows


def test_checkpoints_hold_full_state_and_respect_num_to_keep(crashed_run):
    out = run_dir(crashed_run)
    dirs = sorted(p for p in out.glob("checkpoint_*") if p.is_dir())
    assert 1 <= len(dirs) <= crashed_run.cluster.num_to_keep
    state = ckpt.load(ckpt.resolve(out, "latest"))
    assert state["epoch"] == 1 and state["step"] == 2 * STEPS
    assert {"model", "optimizer", "scheduler", "rng", "config", "best_val_map"} <= set(state)
    assert state["config"]["cluster"]["name"] == "crash"
    best = ckpt.load(ckpt.resolve(out, "best"))
    assert best["val_map"] == max(r["val_map"] for r in read_metrics(out))
    assert all(torch.isfinite(v).all() for v in best["model"].values() if v.is_floating_point())


def test_worker_failure_resumes_and_trains_every_epoch_once(crashed_run):
    out = run_dir(crashed_run)
    assert (out / ".fault_injected").exists()  # the fault did fire
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert [r["global_step"] for r in rows] == [STEPS, 2 * STEPS]


def test_tensorboard_events_are_written_with_monotonic_steps(crashed_run):
    acc = EventAccumulator(str(run_dir(crashed_run) / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/lr", "train/clips_per_s", "train/active_triplets", "val/map_all"):
        assert tag in tags["scalars"], tags["scalars"]
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * STEPS
    assert {"codes/values", "codes/bit_balance"} <= set(tags["histograms"])
    assert "val/pr_hamming_radius" in tags["tensors"]


def test_second_train_with_same_name_resumes(crashed_run):
    cfg = load_config(None, [*tiny_overrides(crashed_run.data.root, crashed_run.cluster.storage_path, "crash",
                                             epochs=3)])
    run_training(cfg)
    rows = read_metrics(run_dir(cfg))
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # epochs 0 and 1 were not trained again
    assert rows[-1]["global_step"] == 3 * STEPS
    assert ckpt.load(ckpt.resolve(run_dir(cfg), "latest"))["epoch"] == 2
