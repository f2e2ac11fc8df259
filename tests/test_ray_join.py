"""Ray entry points on a cluster (issue 29): jobs join RAY_ADDRESS (as a RayJob's entrypoint must) instead of
starting a Ray of their own, and an autoscaling cluster is asked for workers and waited for, not refused.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_ray_join.py
"""
from __future__ import annotations

import numpy as np
import pytest
import ray

from c3dhash.cluster import connect
from c3dhash.eval import ray_session
from c3dhash.eval.index import encode_ray
from c3dhash.eval.index.videos import encode_paths
from c3dhash.model.load import read_checkpoint
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos


@pytest.mark.ray
def test_encode_job_places_its_actors_on_the_cluster_named_by_ray_address(tmp_path, monkeypatch, capsys):
    """What k8s/eval/rayjob-eval.yaml runs: `c3dhash encode --workers 2` with no --address, RAY_ADDRESS set
    by the job supervisor. Before the fix it started a second, local Ray and its actors ran there."""
    from ray.cluster_utils import Cluster
    if ray.is_initialized():  # the suite's shared local Ray: this test's driver must join the Cluster below
        ray.shutdown()  # (conftest's local_ray starts it again for the next module that asks)
    paths = [str(tmp_path / p) for p in make_videos(tmp_path, classes=2, per_class=1)]
    state = read_checkpoint(lsh_checkpoint(tmp_path / "best.pt", tmp_path))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    seen: dict = {}
    real_encode = encode_ray.EncoderPool.encode

    def spy(self, *a, **k):  # where the pool's actors live, and which Ray this driver joined
        seen["actors"] = set(self.nodes())
        seen["gcs"] = ray.get_runtime_context().gcs_address
        return real_encode(self, *a, **k)
    try:
        cluster.wait_for_nodes()
        address = cluster.address
        monkeypatch.setenv("RAY_ADDRESS", address)
        monkeypatch.setattr(encode_ray.EncoderPool, "encode", spy)
        got = encode_ray.encode_files(state, paths, workers=2, device="auto", progress=False)
        cluster_nodes = {n.node_id for n in cluster.list_all_nodes()}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert seen["gcs"] == address and seen["actors"] and seen["actors"] <= cluster_nodes
    assert f"joined the Ray cluster at {address}" in capsys.readouterr().out
    assert np.array_equal(got.outputs, encode_paths(state, paths).outputs)


def test_without_ray_address_a_local_ray_is_started_and_said(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_session.target(None) is None and ray_session.target("h:6379") == "h:6379"
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert ray_session.target(None) == "head:6379" and ray_session.target("other:6379") == "other:6379"


class FakeAutoscaler:
    """Nodes appear after `after` polls; records request_resources calls; sleeps cost nothing."""

    def __init__(self, monkeypatch, *, node: dict, after: int, autoscales: bool = True):
        self.nodes, self.requests, self.polls = [{"Alive": True, "Resources": {"CPU": 1}}], [], 0
        self.node, self.after = node, after
        monkeypatch.setattr(ray_session, "autoscales", lambda: autoscales)
        monkeypatch.setattr(encode_ray, "autoscales", lambda: autoscales)
        monkeypatch.setattr(ray_session, "alive_nodes", self.alive)
        monkeypatch.setattr(encode_ray, "alive_nodes", self.alive)
        monkeypatch.setattr("ray.autoscaler.sdk.request_resources", lambda **k: self.requests.append(k))
        monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1})
        real = ray_session.wait_for
        monkeypatch.setattr(ray_session, "wait_for", lambda *a, **k: real(*a, **k, sleep=lambda s: None))
        monkeypatch.setattr(encode_ray, "wait_for", ray_session.wait_for)

    def alive(self) -> list[dict]:
        self.polls += 1
        return self.nodes + ([self.node] * 2 if self.polls > self.after else [])


def test_training_on_a_scaled_down_autoscaling_cluster_asks_for_workers_and_waits(monkeypatch, capsys):
    fake = FakeAutoscaler(monkeypatch, node={"Alive": True, "Resources": {"CPU": 4, "GPU": 2}}, after=3)
    connect.check_capacity(num_workers=4, cpus_per_worker=2, use_gpu=True, timeout_s=60)
    assert fake.requests == [{"bundles": [{"CPU": 2, "GPU": 1}] * 4}, {"bundles": []}]  # asked, then withdrawn
    out = capsys.readouterr().out
    assert "waiting for the autoscaler: room for 0 of 4 training workers; 60 s left" in out
    assert "the autoscaler added room for 4 training workers" in out


def test_autoscaler_that_gives_nothing_times_out_with_a_clear_error(monkeypatch):
    FakeAutoscaler(monkeypatch, node={}, after=10**9)
    with pytest.raises(connect.CapacityError, match=r"the autoscaler was asked and given 0 s .*room for 0"):
        connect.check_capacity(num_workers=2, cpus_per_worker=1, use_gpu=True, timeout_s=0)


def test_a_fixed_cluster_is_refused_at_once_without_asking(monkeypatch):
    fake = FakeAutoscaler(monkeypatch, node={}, after=10**9, autoscales=False)
    with pytest.raises(connect.CapacityError, match="room for 0; lower cluster.num_workers"):
        connect.check_capacity(num_workers=2, cpus_per_worker=1, use_gpu=True, timeout_s=60)
    assert fake.requests == []


def test_encode_auto_waits_for_scaled_down_gpu_nodes_instead_of_using_cpu(monkeypatch, capsys):
    fake = FakeAutoscaler(monkeypatch, node={"Alive": True, "Resources": {"CPU": 8, "GPU": 1}}, after=2)
    assert encode_ray.gpu_actors("auto", workers=3, num_threads=4, timeout_s=60) is True
    assert fake.requests[0] == {"bundles": [{"CPU": 4, "GPU": 1}] * 3}
    assert "room for 0 of 1 GPU encoder actors" in capsys.readouterr().out


def test_encode_auto_says_so_when_it_falls_back_to_cpu(monkeypatch, capsys):
    FakeAutoscaler(monkeypatch, node={}, after=10**9)
    assert encode_ray.gpu_actors("auto", workers=1, num_threads=1, timeout_s=0) is False
    assert "its autoscaler gave none within 0 s; encoding on CPU actors" in capsys.readouterr().out
    with pytest.raises(encode_ray.EncodeError, match="--device gpu: the Ray cluster has no GPU"):
        encode_ray.gpu_actors("gpu", workers=1, num_threads=1, timeout_s=0)
