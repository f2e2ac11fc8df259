"""`c3dhash serve --haproxy` as a user runs it (a process of its own): Ray Serve's HAProxy data plane in front of
the search replicas. Code queries over HTTP equal the in-process engine, the token is required, the frontend
binds 127.0.0.1, and Ctrl-C stops the service and its Ray. --haproxy without a token is refused."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from c3dhash.cluster.cli import main
from c3dhash.cluster.serve.app import free_port
from c3dhash.cluster.serve.engine import SearchEngine
from c3dhash.eval.index.folder import write_index
from c3dhash.loaders.manifest import VideoRecord

pytestmark = [pytest.mark.subprocess, pytest.mark.ray]

TOKEN = "haproxy-test-token-0123456789"


def post(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_haproxy_ingress_answers_like_the_engine_and_stops_on_ctrl_c(tmp_path):
    rng = np.random.default_rng(0)
    items = [VideoRecord(f"c{j % 4}/v{j}.webm", j % 4, f"c{j % 4}") for j in range(500)]
    index = write_index(tmp_path / "lib.index", codes=rng.integers(0, 2**63, (500, 1), dtype=np.uint64), items=items,
                        meta={"bits": 64, "root": str(tmp_path), "fingerprint": "sha256:t", "model": {}}, skipped=[])
    token = tmp_path / "token"
    token.write_text(TOKEN)
    assert main(["serve", "--index", str(index), "--haproxy", "--encoders", "0"]) == 2  # no token: refused
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "c3dhash.cluster.cli", "serve", "--index", str(index), "--haproxy",
                             "--token-file", str(token), "--encoders", "0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as test_failures
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if urllib.request.urlopen(url + "/healthz", timeout=5).status == 200:
                    break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        q = np.load(index / "codes.npy")[[3, 7]]
        want = SearchEngine(index).search(q, top=5, names=["a", "b"])
        status, got = post(url + "/search", {"codes": [[str(int(c))] for c in q[:, 0]], "top": 5, "names": ["a", "b"]},
                           TOKEN)
        assert (status, got) == (200, want)
        assert post(url + "/search", {"codes": [["1"]]}, None)[0] == 401
        import ray  # noqa: F401 - puts Ray's bundled psutil on sys.path
        import psutil
        listening = [(c.laddr.ip, psutil.Process(c.pid).name()) for c in psutil.net_connections(kind="tcp")
                     if c.laddr.port == port and c.status == psutil.CONN_LISTEN]
        assert listening == [("127.0.0.1", "haproxy")], listening  # HAProxy took the port, on loopback only
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    assert rc == 130, proc.stderr.read()[-2000:]
    time.sleep(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/healthz", timeout=5)
