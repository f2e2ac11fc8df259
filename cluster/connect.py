"""Joining Ray: fail within seconds, in one line naming the address and the fix, instead of minutes of warnings.

    from c3dhash.cluster.connect import connect, check_capacity, explain
    connect(address, num_cpus=4)              # ADDR / RAY_ADDRESS / a new local Ray; raises ConnectError
    check_capacity(num_workers=4, cpus_per_worker=1, use_gpu=True)   # refuses what the cluster cannot place
    raise ConnectError(explain(exc, address)) # the same advice for the Jobs API (cluster/jobs.py)

`ray.init(address=...)` to a dead address retries for minutes (and ignores SIGTERM meanwhile), and to a
token-authenticated cluster without a token for about 20 s, then says neither why nor what to do. So before
ray.init: a TCP connect to the GCS (PROBE_S) and, in a subprocess with a timeout, one authenticated GCS call
(Ray's own GcsClient, whose AuthenticationError names the missing token).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

from c3dhash.distributed.ray_compat import GCS_CLIENT_IMPORT

PROBE_S = 5.0  # TCP connect and authenticated GCS call, each
TOKEN_FIX = ("export RAY_AUTH_MODE=token and export RAY_AUTH_TOKEN=<the cluster's token> (on the head: "
             "`ray get-auth-token`; KubeRay: the RayCluster's Secret, docs/kubernetes.md)")
_GCS_PROBE = f"""
import sys
{GCS_CLIENT_IMPORT}
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"c3dhash-probe", None, timeout=float(sys.argv[2]))
except Exception as exc:
    print(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    sys.exit(3)
"""


class ConnectError(ConnectionError):
    """Ray cannot be reached or refuses us; the message names the address and the fix."""


class CapacityError(ValueError):
    """The cluster cannot place the workers the config asks for."""


def explain(exc: BaseException, address: str) -> str:
    """One line for a failed connection: what happened at which address and what to do."""
    text = f"{type(exc).__name__} {exc}"
    if "Authentication" in text or "InvalidAuthToken" in text or "Unauthorized" in text:
        return f"Ray at {address} refused us: it uses token authentication and no valid token was sent; {TOKEN_FIX}"
    return (f"cannot reach Ray at {address} ({str(exc).strip().splitlines()[0] if str(exc).strip() else text}); "
            f"start it (`ray start --head`) or fix --address / RAY_ADDRESS")


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def _resolve(address: str) -> str:
    """`auto` -> the GCS address the last `ray start` on this machine recorded."""
    if address != "auto":
        return address
    from c3dhash.distributed.ray_compat import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError as exc:
        raise ConnectError(f"--address auto: no running Ray found on this machine ({exc}); start one with "
                           f"`ray start --head` or pass --address HOST:6379") from None
    return found or address


def probe(address: str) -> str:
    """Raise ConnectError unless the GCS at `address` answers an authenticated call; returns the address."""
    address = _resolve(address)
    hp = _host_port(address)
    if hp is None:
        raise ConnectError(f"--address {address}: expected HOST:PORT (the head's GCS, port 6379), ray://HOST:10001 "
                           f"or auto")
    try:
        socket.create_connection(hp, timeout=PROBE_S).close()
    except OSError as exc:
        raise ConnectError(explain(exc, address)) from None
    if address.startswith("ray://"):
        return address  # Ray Client: ray.init reports its own errors quickly
    try:
        out = subprocess.run([sys.executable, "-c", _GCS_PROBE, address, str(PROBE_S)], capture_output=True,
                             text=True, timeout=2 * PROBE_S + 10)
    except subprocess.TimeoutExpired:
        raise ConnectError(f"Ray at {address} accepts connections but its GCS did not answer within "
                           f"{2 * PROBE_S + 10:.0f} s; is it a Ray head's GCS port (6379)?") from None
    if out.returncode == 3:
        raise ConnectError(explain(RuntimeError(out.stdout.strip()), address))
    return address


def connect(address: str | None, *, num_cpus: int) -> str:
    """Join ADDR / RAY_ADDRESS when given (checked first), else start a local Ray with num_cpus CPUs."""
    import ray

    if ray.is_initialized():
        return "the current Ray"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        # "local": a new Ray even when a `ray start` cluster runs on this machine (ray.init() would join it,
        # and then refuse num_cpus), on 127.0.0.1 only. With the dashboard: Train V2 queries the State API.
        from c3dhash.eval.ray_session import start_local
        start_local(num_cpus=num_cpus, include_dashboard=None, log_to_driver=True)  # None: if installed
        return "a local Ray"
    address = probe(address)
    try:
        ray.init(address=address)
    except Exception as exc:  # noqa: BLE001 - whatever Ray raises, the user needs the address and the fix
        raise ConnectError(explain(exc, address)) from None
    return address


def placeable(nodes: list[dict[str, Any]], *, cpus_per_worker: int, use_gpu: bool) -> int:
    """How many workers of (cpus_per_worker CPUs [+ 1 GPU]) fit on these alive nodes (one worker per bundle)."""
    total = 0
    for node in nodes:
        if not node.get("Alive", True):
            continue
        res = node.get("Resources", {})
        fit = int(res.get("CPU", 0) // cpus_per_worker)
        if use_gpu:
            fit = min(fit, int(res.get("GPU", 0)))
        total += fit
    return total


SCALE_UP_TIMEOUT_S = float(os.environ.get("C3DHASH_SCALE_UP_TIMEOUT_S", 900))  # new GPU pods: image pull, NVDEC


def check_capacity(*, num_workers: int, cpus_per_worker: int, use_gpu: bool,
                   timeout_s: float | None = None) -> None:
    """Refuse before training what the cluster can never place (Ray would wait forever). An autoscaling
    cluster (e.g. k8s/interactive, minReplicas 0) is first asked for the workers (request_resources) and
    waited for, with a countdown, up to C3DHASH_SCALE_UP_TIMEOUT_S."""
    from c3dhash.eval.ray_session import alive_nodes, autoscales, wait_for

    def room() -> int:
        return placeable(alive_nodes(), cpus_per_worker=cpus_per_worker, use_gpu=use_gpu)

    have = room()
    if have >= num_workers:
        return
    timeout = SCALE_UP_TIMEOUT_S if timeout_s is None else timeout_s
    scaled = autoscales()
    if scaled:
        bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
        have = wait_for(room, num_workers, [bundle] * num_workers, timeout_s=timeout, what="training workers")
        if have >= num_workers:
            print(f"the autoscaler added room for {have} training workers", flush=True)
            return
    nodes = alive_nodes()
    cpu = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    gpu = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)
    need = f"{cpus_per_worker} CPU" + (" + 1 GPU" if use_gpu else "")
    waited = (f"the autoscaler was asked and given {timeout:.0f} s (C3DHASH_SCALE_UP_TIMEOUT_S); " if scaled
              else "")
    raise CapacityError(f"the Ray cluster cannot place cluster.num_workers={num_workers} workers of {need} each: "
                        f"{waited}it has {len(nodes)} node(s) with {cpu:g} CPU and {gpu:g} GPU in all, room for "
                        f"{have}; lower cluster.num_workers (or cluster.cpus_per_worker), or add nodes")
