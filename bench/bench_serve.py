"""The search service under load and faults (`c3dhash serve`): an async HTTP load generator on loopback,
bounded by request count and time per cell, against one Ray Serve application.

    .venv/bin/python bench/bench_serve.py                         # 1e5 and 1e6 64-bit codes, 1/8/64 clients
    c3dhash bench serve -- --sizes 100000 --clients 1 8 --requests 200 --seconds 10 --no-video

Rows (written with the load average to bench/results/serve-<cpu>-<date>.md):
  codes      POST /search, one random trained-like 64-bit code per request, top 10; QPS, p50/p99 (ms) and
             failures per (N, clients). Baselines in the same run: the CLI's per-process search
             (`c3dhash search --index DIR --query q.npz`, one query, wall time per process) and the in-process
             engine (SearchEngine.knn, no HTTP) on the same index.
  video      POST /search/video of an indexed clip (model warm) vs `c3dhash search --video` per process;
             clip geometry: bench/tiny_retrieval.py (4 frames x 32 x 32, 2 clips per video, 64 bits).
  faults     a search replica killed (SIGKILL) during load: served / retried / failed, the slowest request
             against the timeout, recovery; POST /reload during load (a rewritten index): failed must be 0;
             bad uploads (JPEG renamed .mp4, empty, oversized, truncated, path-traversal name): each a 4xx.
Every request has a client timeout (--timeout) and one client retry; none can hang past 2 x timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from c3dhash.bench.results import default_folder


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].replace("(R)", "").replace("(TM)", "")
            return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")[:40]
    return "cpu"


def trained_codes(n: int, seed: int, classes: int = 1000, flip: float = 0.1) -> np.ndarray:
    """Clustered 64-bit codes (each a class centre with bits flipped at `flip`), as a trained model gives."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**64 - 1, classes, dtype=np.uint64, endpoint=True)
    flips = np.packbits(rng.random((n, 64)) < flip, axis=1, bitorder="little").view(np.uint64)[:, 0]
    return (centres[rng.integers(0, classes, n)] ^ flips).reshape(n, 1)


def write_codes_index(out: Path, n: int, seed: int = 0) -> Path:
    from c3dhash.eval.index.folder import write_index
    from c3dhash.loaders.manifest import VideoRecord
    items = [VideoRecord(f"class{j % 100}/v{j}.webm", j % 100, f"class{j % 100}") for j in range(n)]
    meta = {"bits": 64, "root": str(out.parent / "videos"), "fingerprint": "sha256:bench", "model": {}}
    return write_index(out, codes=trained_codes(n, seed), items=items, meta=meta, skipped=[])


async def load(url: str, bodies: list[bytes], *, clients: int, count: int, seconds: float, timeout: float,
               path: str = "/search", headers: dict | None = None) -> dict:
    """`clients` concurrent loops sending bodies round-robin until `count` requests or `seconds` pass."""
    import aiohttp
    lat, stats = [], {"served": 0, "retried": 0, "failed": 0, "statuses": {}}
    sent, t0 = 0, time.perf_counter()

    async def one(session, body) -> None:
        t = time.perf_counter()
        for attempt in range(2):
            try:
                async with session.post(url + path, data=body, headers=headers) as r:
                    await r.read()
                    stats["statuses"][r.status] = stats["statuses"].get(r.status, 0) + 1
                    if r.status == 200:
                        stats["served"] += 1
                        lat.append((time.perf_counter() - t) * 1000)
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if attempt == 0:
                stats["retried"] += 1
        stats["failed"] += 1
        stats.setdefault("slowest_failed_s", 0.0)
        stats["slowest_failed_s"] = max(stats["slowest_failed_s"], time.perf_counter() - t)

    async def client(session) -> None:
        nonlocal sent
        while sent < count and time.perf_counter() - t0 < seconds:
            body = bodies[sent % len(bodies)]
            sent += 1
            await one(session, body)

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    wall = time.perf_counter() - t0
    a = np.asarray(lat) if lat else np.zeros(1)
    return {**stats, "requests": sent, "wall_s": wall, "qps": stats["served"] / wall,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


TOKEN = "bench-token-0123456789abcdef"  # the benchmark's services run with it (c3dhash serve --haproxy needs one)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def request(url: str, data: bytes | None = None):
    import urllib.request
    return urllib.request.urlopen(urllib.request.Request(url, data=data, headers=AUTH,
                                                         method="POST" if data is not None else "GET"), timeout=120)


def post(url: str) -> int:
    with request(url, b"{}") as r:
        return r.status


def cli_seconds(argv: list[str], runs: int) -> float:
    """Median wall time of `c3dhash ...` as a new process (what a user pays per query today)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "c3dhash.cluster.cli", *argv], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def code_bodies(n: int, queries: int = 256) -> list[bytes]:
    q = trained_codes(queries, seed=n + 1)
    return [json.dumps({"codes": [[str(int(c))]], "top": 10}).encode() for c in q[:, 0]]


def bench_codes(args, tmp: Path, rows: list[str]) -> None:
    from c3dhash.cluster.serve.engine import SearchEngine
    from c3dhash.eval.codes import Codes, save_codes
    index = tmp / "codes.index"
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    for n in args.sizes:
        write_codes_index(index, n)
        q = trained_codes(1, seed=7)
        save_codes(tmp / "q.npz", Codes(codes=q, bits=64, labels=np.zeros(1, np.int64), ids=np.array(["q"])))
        cli = cli_seconds(["search", "--index", str(index), "--query", str(tmp / "q.npz"), "--top", "10"],
                          args.cli_runs)
        eng = SearchEngine(index)
        qs = trained_codes(200, seed=n + 1)
        eng.knn(qs[:1], 10)
        t = time.perf_counter()
        for i in range(len(qs)):
            eng.knn(qs[i:i + 1], 10)
        inproc_ms = (time.perf_counter() - t) / len(qs) * 1000
        rows.append(f"| codes | {n:.0e} | CLI per process | 1 | {1 / cli:.2f} | {cli * 1000:.0f} | - | 0 | "
                    f"{load_avg()} |")
        rows.append(f"| codes | {n:.0e} | in-process engine | 1 | {1000 / inproc_ms:.0f} | {inproc_ms:.2f} | - | "
                    f"0 | {load_avg()} |")
        for ingress in args.ingress:
            serve_codes(args, index, n, ingress, token, rows)


def serve_codes(args, index: Path, n: int, ingress: str, token: Path, rows: list[str]) -> None:
    """POST /search at each client count through one ingress: Serve's proxy actor, or HAProxy (with a token:
    c3dhash serve runs HAProxy only with one)."""
    from c3dhash.cluster.serve.app import ServeConfig, free_port, start
    haproxy = ingress == "haproxy"
    cfg = ServeConfig(index=str(index), encoders=0, replicas=args.replicas, cpus=1.0, port=free_port(),
                      haproxy=haproxy, token_file=str(token))
    headers = AUTH
    with start(cfg) as svc:
        for c in args.clients:
            asyncio.run(load(svc.url, code_bodies(n), clients=c, count=50, seconds=3, timeout=args.timeout,
                             headers=headers))  # warm-up: connections, the first batches
            r = asyncio.run(load(svc.url, code_bodies(n), clients=c, count=args.requests, seconds=args.seconds,
                                 timeout=args.timeout, headers=headers))
            what = "HTTP /search, HAProxy ingress" if haproxy else "HTTP /search, Serve proxy"
            rows.append(f"| codes | {n:.0e} | {what} | {c} | {r['qps']:.0f} | {r['p50_ms']:.1f} | "
                        f"{r['p99_ms']:.1f} | {r['failed']} | {load_avg()} |")
            print(rows[-1], flush=True)


def build_video_index(tmp: Path) -> tuple[Path, Path, Path]:
    from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos
    from c3dhash.eval.index.folder import build_index
    from c3dhash.eval.index.videos import encode_paths
    root = tmp / "videos"
    make_videos(root, classes=3, per_class=4)
    ckpt = lsh_checkpoint(tmp / "best.pt", root)
    index = tmp / "videos.index"
    build_index(checkpoint=str(ckpt), out=index, encode=lambda s, p: encode_paths(s, p), videos=str(root))
    return root, ckpt, index


def bad_uploads(url: str, video: bytes, limit: int) -> list[tuple[str, int, str]]:
    import urllib.error
    cases = {"JPEG renamed .mp4": ("x.mp4", b"\xff\xd8\xff\xe0" + bytes(4096)), "empty file": ("x.webm", b""),
             "oversized": ("x.webm", video[:64] + bytes(limit + 1)),
             "truncated video": ("x.webm", video[:len(video) // 3]),
             "path-traversal name": ("..%2F..%2Fetc%2Fpasswd.webm", video)}
    out = []
    for what, (name, data) in cases.items():
        try:
            with request(f"{url}/search/video?name={name}", data) as r:
                out.append((what, r.status, "accepted"))
        except urllib.error.HTTPError as e:
            out.append((what, e.code, json.loads(e.read())["error"][:90]))
    return out


def bench_video_and_faults(args, tmp: Path, rows: list[str], faults: list[str]) -> None:
    from c3dhash.cluster.serve.app import ServeConfig, free_port, start
    from c3dhash.cluster.serve.engine import Limits
    root, ckpt, index = build_video_index(tmp)
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    haproxy = args.fault_ingress == "haproxy"
    video = root / "class1/c1_v01.webm"
    cli = cli_seconds(["search", "--index", str(index), "--video", str(video), "--top", "10"], args.cli_runs)
    limits = Limits(max_upload_bytes=8 << 20, timeout_s=args.timeout)
    cfg = ServeConfig(index=str(index), encoders=1, replicas=2, cpus=0.5, port=free_port(), limits=limits,
                      token_file=str(token), haproxy=haproxy)
    faults.append(f"- ingress: {'HAProxy' if haproxy else 'Serve proxy'}, 2 search replicas, token set")
    with start(cfg) as svc:
        data = video.read_bytes()
        r = asyncio.run(load(svc.url, [data], clients=1, count=args.video_requests, seconds=args.seconds,
                             timeout=args.timeout, path="/search/video?name=q.webm&top=10", headers=AUTH))
        rows.append(f"| video | 12 videos | CLI `search --video` per process | 1 | {1 / cli:.2f} | {cli * 1000:.0f} | "
                    f"- | 0 | {load_avg()} |")
        rows.append(f"| video | 12 videos | HTTP /search/video | 1 | {r['qps']:.1f} | {r['p50_ms']:.0f} | "
                    f"{r['p99_ms']:.0f} | {r['failed']} | {load_avg()} |")
        faults.append(f"- video query: CLI per process {cli:.2f} s vs service p50 {r['p50_ms']:.0f} ms: "
                      f"{cli * 1000 / r['p50_ms']:.0f}x")
        bodies = code_bodies(12)
        stats = json.loads(request(svc.url + "/stats").read())

        async def with_kill() -> dict:
            task = asyncio.create_task(load(svc.url, bodies, clients=8, count=10**9, seconds=args.fault_seconds,
                                            timeout=args.timeout, headers=AUTH))
            await asyncio.sleep(1.0)
            os.kill(stats["pid"], signal.SIGKILL)
            return await task
        k = asyncio.run(with_kill())
        after = asyncio.run(load(svc.url, bodies, clients=8, count=200, seconds=30, timeout=args.timeout,
                                 headers=AUTH))
        faults.append(f"- search replica (pid {stats['pid']}) SIGKILLed 1 s into {args.fault_seconds:g} s of load, "
                      f"8 clients: requests {k['requests']}, served {k['served']}, client retries {k['retried']}, "
                      f"failed {k['failed']} (statuses {k['statuses']}), slowest {k['max_ms']:.0f} ms "
                      f"(timeout {args.timeout:g} s x 2); afterwards {after['served']}/{after['requests']} served")

        async def with_reload() -> tuple[dict, int]:
            task = asyncio.create_task(load(svc.url, bodies, clients=8, count=10**9, seconds=args.fault_seconds,
                                            timeout=args.timeout, headers=AUTH))
            await asyncio.sleep(1.0)
            from c3dhash.eval.index.folder import load_index, write_index
            old = load_index(index)
            write_index(index, codes=np.asarray(old.codes), items=old.items, meta=old.meta, skipped=[])
            code = await asyncio.to_thread(post, svc.url + "/reload")
            return await task, code
        rl, code = asyncio.run(with_reload())
        faults.append(f"- POST /reload ({code}) of a rewritten index during {args.fault_seconds:g} s of load, 8 "
                      f"clients: served {rl['served']} of {rl['requests']}, retried {rl['retried']}, "
                      f"failed {rl['failed']}")
        for what, status, msg in bad_uploads(svc.url, data, limits.max_upload_bytes):
            faults.append(f"- bad upload, {what}: {status} \"{msg}\"")
        alive = request(svc.url + "/healthz").status
        faults.append(f"- after the bad uploads GET /healthz: {alive}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--requests", type=int, default=400, help="requests per cell (at most)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per cell (at most)")
    p.add_argument("--timeout", type=float, default=10.0, help="client and service timeout per request")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--ingress", nargs="+", choices=("proxy", "haproxy"), default=["proxy", "haproxy"],
                   help="HTTP ingress of the code-query cells (c3dhash serve --haproxy)")
    p.add_argument("--fault-ingress", choices=("proxy", "haproxy"), default="haproxy",
                   help="HTTP ingress of the video and fault section")
    p.add_argument("--cli-runs", type=int, default=2)
    p.add_argument("--video-requests", type=int, default=20)
    p.add_argument("--fault-seconds", type=float, default=8.0)
    p.add_argument("--no-video", action="store_true", help="code queries only (no model, no faults)")
    p.add_argument("--out", default=str(default_folder()))
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = ["| query | N | what | clients | QPS | p50 ms | p99 ms | failed | load avg |",
            "|---|---|---|---|---|---|---|---|---|"]
    faults: list[str] = []
    start_load = load_avg()
    with tempfile.TemporaryDirectory(prefix="c3dhash-bench-serve-") as tmp:
        bench_codes(args, Path(tmp), rows)
        if not args.no_video:
            bench_video_and_faults(args, Path(tmp), rows, faults)
    text = "\n".join([f"# c3dhash serve benchmark, {date.today()}", "",
                      f"{os.cpu_count()} CPUs ({cpu_name()}), shared machine; load average at start {start_load}, "
                      f"at end {load_avg()}. Search replicas: {args.replicas}, 1 CPU each; 64-bit codes, top 10.",
                      "", *rows, "", "## Faults and video", "", *faults, ""])
    out = Path(args.out) / f"serve-{cpu_name()}-{date.today()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
