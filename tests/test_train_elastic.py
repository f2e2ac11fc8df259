"""Elastic training on a real Ray cluster (ray.cluster_utils.Cluster): cluster.num_workers = [1, 2], a node
lost mid-epoch and one added back. The math across sizes is tested without Ray (tests/test_elastic.py).

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_train_elastic.py

The head node has no CPU (Ray Train's controller and Ray's autoscaling coordinator need none, and the
coordinator does not count a CPU-less head), so the workers' room is exactly the two 1-CPU worker nodes.
Workers hold before a step at the points listed in tests/faults.py (HOLDS) while the test changes the cluster,
so every change lands between two steps, at a known one:
- 2 workers train steps 1-2 (epoch 0) and hold; the test removes a node: the worker there dies, Ray restarts
  the group with the 1 worker there is room for, from the step-2 checkpoint;
- 1 worker trains step 3 (a step checkpoint, mid-epoch) and holds; the test adds a node: Ray's elastic policy
  sees room for 2 (within ~20 s: its coordinator's tick) and restarts the group at 2 from the step-3 checkpoint;
- 2 workers train steps 4-6.
The same run shows what else only Ray does with checkpoints and logs across group restarts: one worker per node,
Ray's registry keeps num_to_keep checkpoints, the best model, TensorBoard steps that never go back. A worker
killed mid-run and a second start with the same name: tests/test_failures.py (its merged run).
"""
import os
import threading
import time
from pathlib import Path

import pytest
import ray
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import faults
from c3dhash.cluster import driver
from c3dhash.cluster.config import load_config, run_dir
from c3dhash.cluster.driver import run_training
from c3dhash.distributed import checkpoint as ckpt
from train_helpers import make_tiny_dataset, read_metrics, tiny_overrides

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WAIT_S = 300  # for each cluster change to show in metrics.jsonl; a loaded 2-core machine takes ~30-60 s


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    tests = str(Path(__file__).parent)  # the Ray nodes inherit it: workers can import tests/faults.py
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
        if ray.is_initialized():  # the suite's shared local Ray (conftest starts it again when next asked)
            ray.shutdown()
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        ray.init(address=c.address)
        yield c, workers, mp
    ray.shutdown()
    c.shutdown()


def wait_for_row(out: Path, step: int, run: threading.Thread) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        rows = [r for r in read_metrics(out) if r["global_step"] == step] if (out / "metrics.jsonl").exists() else []
        if rows:
            return rows[-1]
        assert run.is_alive(), "the run ended early"
        time.sleep(0.5)
    raise AssertionError(f"no report of global step {step} within {WAIT_S} s")


@pytest.fixture(scope="module")
def elastic_run(cluster, tmp_path_factory):
    c, workers, mp = cluster
    data = make_tiny_dataset(tmp_path_factory.mktemp("synth"))
    cfg = load_config(None, [*tiny_overrides(data, tmp_path_factory.mktemp("runs"), "elastic", epochs=3),
                             "cluster.num_workers=[1, 2]", "cluster.resize_interval_s=2", "cluster.max_failures=1",
                             "train.checkpoint_every_steps=1", "train.eval_every=0"])
    # After the node loss Ray may first try 2 workers on its stale view of the nodes: give up on that in 10 s
    mp.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "10")
    mp.setattr(driver, "train_loop_per_worker", faults.hold_loop)
    out, result, seen = run_dir(cfg), [], {}
    run = threading.Thread(target=lambda: result.append(run_training(cfg)), daemon=True)
    run.start()
    seen["before"] = wait_for_row(out, 2, run)  # the 2 workers hold after step 2
    lost = workers[1]
    c.remove_node(lost)
    seen["lost"] = lost.node_id
    seen["shrunk"] = wait_for_row(out, 3, run)  # 1 worker trained step 3 and holds
    seen["added"] = c.add_node(num_cpus=1).node_id
    run.join(timeout=2 * WAIT_S)
    assert not run.is_alive() and result, "the run did not finish"
    return cfg, result[0], seen


def test_the_group_shrinks_to_one_worker_and_grows_back_to_two(elastic_run):
    cfg, _, seen = elastic_run
    rows = read_metrics(run_dir(cfg))
    assert [(r["report"], r["global_step"], len(r["nodes"])) for r in rows] == [
        ("step", 1, 2), ("epoch", 2, 2), ("step", 3, 1), ("epoch", 4, 2), ("step", 5, 2), ("epoch", 6, 2)]
    assert len(set(seen["before"]["nodes"])) == 2 and seen["lost"] in seen["before"]["nodes"]
    assert seen["lost"] not in seen["shrunk"]["nodes"]
    assert all(seen["added"] in r["nodes"] for r in rows[3:])  # the group grew onto the new node


def test_every_step_is_trained_once_and_the_run_ends_at_its_last_step(elastic_run):
    cfg, result, _ = elastic_run
    rows = read_metrics(run_dir(cfg))
    # what rank 0 trained (logged after each step): no step trained twice, none lost, each at the expected size
    trained = [tuple(map(int, line.split())) for line in (run_dir(cfg) / faults.TRAINED).read_text().splitlines()]
    assert trained == [(2, 1), (2, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    assert [r["global_step"] for r in rows] == list(range(1, 7))  # each step reported once, none lost or redone
    assert [r["epoch"] for r in rows if r["report"] == "epoch"] == [0, 1, 2]
    state = ckpt.load(ckpt.resolve(run_dir(cfg), "latest"))["train_state"]
    assert (state["epoch"], state["global_step"]) == (3, 6)
    assert result.metrics["global_step"] == 6


def test_ray_checkpoints_hold_the_position_and_respect_num_to_keep(elastic_run):
    cfg, _, _ = elastic_run
    out = run_dir(cfg)
    registered = ckpt.registered_checkpoints(out)  # Ray's checkpoint_manager_snapshot.json
    # (after a group restart Ray 2.60 was seen leaving one dropped folder on disk: only the registry counts)
    assert registered and len(registered) <= cfg.cluster.num_to_keep < 6
    assert all((p / ckpt.CHECKPOINT_FILE).is_file() for p in registered)
    assert ckpt.resolve(out, "latest") == registered[-1] / ckpt.CHECKPOINT_FILE
    assert ckpt.load(ckpt.resolve(out, "latest"))["config"]["cluster"]["name"] == "elastic"
    evaluated = [r["val_map"] for r in read_metrics(out) if "val_map" in r]
    assert evaluated and ckpt.load(ckpt.resolve(out, "best"))["val_map"] == max(evaluated)


def test_tensorboard_events_are_written_with_monotonic_steps(elastic_run):
    cfg, _, _ = elastic_run
    acc = EventAccumulator(str(run_dir(cfg) / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/lr", "train/clips_per_s", "train/active_triplets", "val/map_all"):
        assert tag in tags["scalars"], tags["scalars"]
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # three groups wrote to it, none went back
    assert {"codes/values", "codes/bit_balance"} <= set(tags["histograms"])
    assert "val/pr_hamming_radius" in tags["tensors"]
