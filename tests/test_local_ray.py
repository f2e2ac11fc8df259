"""The local Ray that c3dhash starts for itself listens on loopback only (issue 33: anyone on the network could
run code in a job through the GCS, raylet and workers bound to every interface with token auth off)."""
import ipaddress
import socket

import pytest
import ray

from c3dhash.cluster.connect import connect
from c3dhash.eval.ray_session import join_or_start

import psutil  # noqa: E402,I100 - Ray ships psutil in its thirdparty_files (on sys.path once ray is imported)


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _listening() -> list[tuple[str, str, int]]:
    """(process, ip, port) of every listening TCP socket of this process and its descendants (the GCS, raylet,
    agents and dashboard are this driver's children; workers are the raylet's)."""
    found = []
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            found += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _other_address() -> str | None:
    from ray._private.services import node_ip_address_from_perspective
    ip = node_ip_address_from_perspective()
    return None if not ip or _loopback(ip) else ip


@pytest.mark.parametrize("start", ["join_or_start", "connect"])
def test_local_ray_listens_on_loopback_only(start):
    if ray.is_initialized():
        ray.shutdown()
    if start == "join_or_start":  # eval's jobs: sharded encoding, evaluation and index
        assert join_or_start(None, num_cpus=1)
    else:  # `c3dhash train` / `demo` without --address (with the dashboard, which Train V2 queries)
        connect(None, num_cpus=1)
    try:
        @ray.remote
        class Echo:
            def ping(self):
                return "pong"

        actor = Echo.remote()  # a worker process of its own, with its gRPC server
        assert ray.get(actor.ping.remote()) == "pong"
        sockets = _listening()
        gcs_port = int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
        names = {name for name, _, _ in sockets}
        assert {"gcs_server", "raylet"} <= names and any(port == gcs_port for _, _, port in sockets), sockets
        exposed = [s for s in sockets if not _loopback(s[1])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        other = _other_address()
        if other is not None:  # the machine's other address reaches nothing
            with pytest.raises(OSError):
                socket.create_connection((other, gcs_port), timeout=3).close()
    finally:
        ray.shutdown()
