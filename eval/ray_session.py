"""The one way eval/'s Ray jobs (sharded evaluation, sharded encoding, the sharded index) get a Ray.

    started = join_or_start(address, num_cpus=4)   # ... work ...; if started: ray.shutdown()
"""
from __future__ import annotations


def join_or_start(address: str | None, *, num_cpus: int) -> bool:
    """Join `address` (or the Ray this process already runs), else start a local one; True if started here.

    "local" starts a fresh instance even when another Ray runs on this machine (a bare ray.init() would join
    it); no dashboard and no log forwarding: these jobs print their own progress."""
    import ray
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True
