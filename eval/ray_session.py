"""The one way this project gets a Ray: join one it is given, or start a local one that only this machine reaches.

    started = join_or_start(address, num_cpus=4)   # ... work ...; if started: ray.shutdown()
    start_local(num_cpus=4, include_dashboard=None) # what `c3dhash train` does without --address

A local Ray listens on 127.0.0.1 only: GCS, raylet, object manager, workers, agents and dashboard. Ray's
default binds them to every interface, and with token auth off (RAY_AUTH_MODE=disabled, as the Makefile runs)
anyone who could reach the machine could run code in the job. ray.init(_node_ip_address="127.0.0.1") alone is
not enough: Ray replaces a loopback node address by the machine's address unless it runs in its single-machine
mode (ENABLE_RAY_CLUSTER false, what it does on macOS and Windows), which we switch on for the start only.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

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


def join_or_start(address: str | None, *, num_cpus: int) -> bool:
    """Join `address` (or the Ray this process already runs), else start a local one; True if started here.

    No dashboard and no log forwarding for a local one: these jobs print their own progress."""
    import ray
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        start_local(num_cpus=num_cpus)
    return True
