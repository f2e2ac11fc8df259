"""The one way this project gets a Ray: join one it is given, or start a local one that only this machine reaches.

    started = join_or_start(address, num_cpus=4)   # ... work ...; if started: ray.shutdown()
    start_local(num_cpus=4, include_dashboard=None) # what `c3dhash train` does without --address

A local Ray listens on 127.0.0.1 only: GCS, raylet, object manager, workers, agents and dashboard. Ray's
default binds them to every interface, and with token auth off (RAY_AUTH_MODE=disabled, as the Makefile runs)
anyone who could reach the machine could run code in the job. ray.init(_node_ip_address="127.0.0.1") alone is
not enough: Ray replaces a loopback node address by the machine's address unless it runs in its single-machine
mode (ENABLE_RAY_CLUSTER false, what it does on macOS and Windows), which we switch on for the start only.

Address order, as `c3dhash train` (cluster/connect.py): the explicit address, else RAY_ADDRESS (which the Ray
job supervisor sets for every `ray job submit` / KubeRay RayJob entrypoint), else a new local Ray. Without
that, a job on a cluster started its own Ray inside the GPU-less head pod and waited forever for GPU actors.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's own single-machine mode for the duration of ray.init: a loopback node address is kept as given.
    Once the node exists its address is the node's, so the switch is restored right after."""
    from ray._private import ray_constants
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def start_local(*, num_cpus: int, include_dashboard: bool | None = False, log_to_driver: bool = False,
                **kwargs) -> None:
    """A fresh local Ray ("local": even when a `ray start` cluster runs here) bound to 127.0.0.1 only."""
    import ray
    with _single_machine():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard, dashboard_host=LOOPBACK,
                 log_to_driver=log_to_driver, _node_ip_address=LOOPBACK, **kwargs)


def target(address: str | None) -> str | None:
    """The address a job joins: `address`, else RAY_ADDRESS, else None (start a local Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def join_or_start(address: str | None, *, num_cpus: int) -> bool:
    """Join `address` / RAY_ADDRESS (or the Ray this process already runs), else start a local one; True if
    ray.init ran here (the caller shuts it down). Prints which cluster it joined.

    No dashboard and no log forwarding for a local one: these jobs print their own progress."""
    import ray
    if ray.is_initialized():
        return False
    where = target(address)
    if where:
        info = ray.init(address=where, log_to_driver=False)
        print(f"joined the Ray cluster at {where} (GCS {info.address_info.get('gcs_address', '?')}, "
              f"{_resources()})", flush=True)
    else:
        start_local(num_cpus=num_cpus)
        print(f"started a local Ray ({_resources()}; set RAY_ADDRESS or --address to use a cluster)", flush=True)
    return True


def _resources() -> str:
    import ray
    res = ray.cluster_resources()
    return f"{len(alive_nodes())} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"


def autoscales() -> bool:
    """Whether the joined cluster has an autoscaler that can add nodes (KubeRay enableInTreeAutoscaling,
    `ray up`). Autoscaler v2 marks itself in the GCS. v1's monitor also runs on a plain `ray start` cluster,
    with a read-only provider whose node types are the nodes themselves (`node_<id>`); a real one maps nodes
    to the configured node types (e.g. KubeRay's group names)."""
    import json

    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2
        if is_autoscaler_v2(fetch_from_server=True):
            return True
    except Exception:  # noqa: BLE001 - an older GCS without the key: ask v1
        pass
    raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    try:
        report = json.loads(raw).get("autoscaler_report") or {} if raw else {}
    except ValueError:
        return False
    types = (report.get("node_type_mapping") or {}).values()
    return any(not str(t).startswith("node_") for t in types)


def alive_nodes() -> list[dict]:
    import ray
    return [n for n in ray.nodes() if n.get("Alive")]


def wait_for(room: Callable[[], int], need: int, bundles: list[dict], *, timeout_s: float, what: str,
             poll_s: float = 5.0, sleep: Callable[[float], None] | None = None) -> int:
    """Ask the autoscaler for `bundles` and wait until room() >= need, printing a countdown; returns the room
    at the end (less than need after timeout_s: the caller decides). The request is withdrawn afterwards so
    the cluster may scale down again once the job's own tasks and actors hold what it placed."""
    import time

    from ray.autoscaler.sdk import request_resources
    sleep = sleep or time.sleep
    have = room()
    if have >= need:
        return have
    request_resources(bundles=bundles)
    t_end, last = time.monotonic() + timeout_s, None
    try:
        while have < need:
            left = t_end - time.monotonic()
            if left <= 0:
                break
            if last is None or last - left >= 30 or left < poll_s:
                print(f"waiting for the autoscaler: room for {have} of {need} {what}; {left:.0f} s left",
                      flush=True)
                last = left
            sleep(min(poll_s, max(0.0, left)))
            have = room()
    finally:
        request_resources(bundles=[])
    return have
