"""Distributed training on a real 2-node Ray cluster (ray.cluster_utils.Cluster), one worker per node: what
only Ray shows (the Trainer's decisions are tested without Ray in tests/test_trainer.py): a worker that dies
mid-epoch and the group resuming from Ray's step checkpoint. A second start with the same name resuming after the
last saved epoch is tested once, through the CLI, in tests/test_failures.py (its merged SIGKILL / Ctrl-C run).

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_train.py
"""
import os
from pathlib import Path

import pytest
import ray
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import faults
from c3dhash.cluster import driver
from c3dhash.cluster.config import load_config
from c3dhash.cluster.driver import run_dir, run_training
from c3dhash.distributed import checkpoint as ckpt
from train_helpers import make_tiny_dataset, read_metrics, tiny_overrides

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS = 2  # train.steps_per_epoch in tiny_overrides


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    tests = str(Path(__file__).parent)  # the Ray nodes inherit it: workers can import tests/faults.py
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
        if ray.is_initialized():  # the suite's shared local Ray (conftest starts it again when next asked)
            ray.shutdown()
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
    """Two epochs, a checkpoint every step; the last rank raises before epoch 1's second step, once; Ray
    restarts the group, which resumes from the step checkpoint at that very step."""
    cfg = load_config(None, [*tiny_overrides(data, tmp_path_factory.mktemp("runs"), "crash", epochs=2),
                             "train.checkpoint_every_steps=1"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "train_loop_per_worker", faults.crash_once_loop)
        run_training(cfg)
    return cfg


def epoch_rows(out):
    return [r for r in read_metrics(out) if r["report"] == "epoch"]


def test_one_worker_on_each_of_two_nodes(crashed_run):
    rows = read_metrics(run_dir(crashed_run))
    assert all(len(set(r["nodes"])) == 2 for r in rows), rows


def test_ray_checkpoints_hold_the_position_and_respect_num_to_keep(crashed_run):
    out = run_dir(crashed_run)
    registered = ckpt.registered_checkpoints(out)  # Ray's checkpoint_manager_snapshot.json
    # (after a group restart Ray 2.60 was seen leaving one dropped folder on disk: only the registry counts)
    assert registered and len(registered) <= crashed_run.cluster.num_to_keep
    assert all((p / ckpt.CHECKPOINT_FILE).is_file() for p in registered)
    state = ckpt.load(ckpt.resolve(out, "latest"))
    assert ckpt.resolve(out, "latest") == registered[-1] / ckpt.CHECKPOINT_FILE
    assert state["train_state"]["epoch"] == 2 and state["train_state"]["global_step"] == 2 * STEPS
    assert state["config"]["cluster"]["name"] == "crash"
    best = ckpt.load(ckpt.resolve(out, "best"))
    assert best["val_map"] == max(r["val_map"] for r in epoch_rows(out))


def test_worker_failure_resumes_at_the_next_step_and_trains_every_step_once(crashed_run):
    out = run_dir(crashed_run)
    assert (out / ".fault_injected").exists()  # the fault did fire
    rows = read_metrics(out)
    # step checkpoints at global steps 1 and 3 (2 and 4 end an epoch); the crash came before step 4
    assert [(r["report"], r["global_step"]) for r in rows] == [("step", 1), ("epoch", 2), ("step", 3),
                                                               ("epoch", 4)]
    assert [r["epoch"] for r in epoch_rows(out)] == [0, 1]


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
