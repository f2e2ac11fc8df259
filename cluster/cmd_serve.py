"""Subcommand `serve`: a long-lived search service for an index on Ray Serve (HTTP JSON + a page).

    c3dhash serve --index runs/synth.index                        # http://127.0.0.1:8000, a local Ray of its own
    c3dhash serve --index ucf.index --replicas 2 --shards 4 --address auto --token-file ~/.c3dhash-token \\
        --host 0.0.0.0 --port 8000
    c3dhash serve --index runs/synth.index --write-config serve.yaml    # for `serve deploy serve.yaml`
    curl -s 127.0.0.1:8000/search -d '{"codes": [["0x1234abcd5678ef90"]], "top": 5}'
    curl -s '127.0.0.1:8000/search/video?name=q.webm&top=5' --data-binary @q.webm
    c3dhash index --checkpoint best.pt --videos DIR --out runs/synth.index --add && curl -X POST .../reload

Endpoints, limits and the Python API: docs/serve.md. Without --token-file the service binds 127.0.0.1 only.
Ctrl-C stops it (and the local Ray it started).
"""
from __future__ import annotations

import argparse
import os
import sys


def config_from_args(args: argparse.Namespace):
    from c3dhash.cluster.serve.app import ServeConfig
    from c3dhash.cluster.serve.engine import Limits
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_duration_s=args.max_duration,
                    timeout_s=args.timeout)
    return ServeConfig(index=args.index, checkpoint=args.checkpoint, replicas=args.replicas, shards=args.shards,
                       encoders=args.encoders, device=args.device, cpus=args.cpus, host=args.host, port=args.port,
                       token_file=args.token_file, haproxy=args.haproxy, limits=limits)


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    cfg = config_from_args(args)
    if args.write_config:
        import yaml

        from c3dhash.cluster.serve.app import serve_config
        from c3dhash.loaders.atomic import atomic_write_text
        atomic_write_text(args.write_config, yaml.safe_dump(serve_config(cfg), sort_keys=False))
        print(f"wrote {args.write_config}: `serve deploy {args.write_config}` on a Ray cluster with Serve")
        return 0
    from c3dhash.cluster.serve.app import start
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        from c3dhash.cluster.connect import probe
        address = probe(address)
    cfg.check_here()  # one clear line before a Ray starts
    svc = start(cfg, address=address)
    print(f"serving {cfg.index} at {svc.url} ({cfg.replicas} search replica(s), {cfg.encoders} encoder(s)"
          f"{', bearer token required' if cfg.token_file else ''}); page: {svc.url}/  Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
        raise
    finally:
        svc.stop()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an index over HTTP on Ray Serve (code and video queries, a page)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="index folder (c3dhash index)")
    p.add_argument("--checkpoint", default=None, help="the index's model for video queries (default: meta.json's)")
    p.add_argument("--replicas", type=int, default=1, help="search replicas (each answers HTTP and holds the index)")
    p.add_argument("--shards", type=int, default=1, help="shard actors per search replica (an index too big for one)")
    p.add_argument("--encoders", type=int, default=1, help="video encoder replicas (0: code queries only)")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu", help="encoder device")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per search / encoder replica")
    p.add_argument("--host", default="127.0.0.1", help="bind address (other than loopback only with --token-file)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", default=None, help="file holding a bearer token every request must carry")
    p.add_argument("--haproxy", action="store_true", help="Ray Serve's HAProxy ingress for the local Ray (faster "
                   "code queries; needs --token-file: its stats ports listen on every interface)")
    p.add_argument("--address", default="", help="an existing Ray cluster (auto, ray://...); default: RAY_ADDRESS, "
                   "else a local Ray of its own")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest video upload")
    p.add_argument("--max-duration", type=float, default=120.0, help="longest video upload, seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 503 (after a retry)")
    p.add_argument("--write-config", metavar="YAML", help="write the Serve config for `serve deploy` and exit")
    p.set_defaults(func=cmd_serve)
