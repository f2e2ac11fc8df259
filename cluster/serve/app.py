"""The Ray Serve application: HTTP replicas that hold the index (batched code queries) -> video encoder.

    cfg = ServeConfig(index="runs/synth.index", replicas=2)
    with start(cfg) as svc:                          # a local Ray of its own, HTTP on 127.0.0.1:8000
        requests.post(svc.url + "/search", json={"codes": [[...]], "top": 5})
    serve_config(cfg)                                # the `serve deploy` / RayService serveConfigV2 document

`app_builder(args)` is the import path a Serve config names (c3dhash.cluster.serve.app:app_builder); its
args are ServeConfig's fields. Without a token the HTTP proxy binds 127.0.0.1 only (ServeConfig refuses
another host), so nothing outside this machine reaches an open service.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c3dhash.cluster.config import ConfigError
from c3dhash.cluster.serve.engine import Limits

APP = "c3dhash"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    index: str
    checkpoint: str | None = None  # default: the one the index names
    replicas: int = 1  # search replicas: each answers HTTP and holds the index
    shards: int = 1  # shard actors per search replica (an index larger than one replica's memory)
    encoders: int = 1  # video encoder replicas (0: code queries only, no model loaded)
    device: str = "cpu"  # encoder device: cpu | gpu | auto
    cpus: float = 1.0  # per search / encoder replica (numba and torch threads follow it)
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: str | None = None
    haproxy: bool = False  # Ray Serve's HAProxy ingress (its own local Ray only): see start()
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:  # what can be checked anywhere; check_here() where it will run
        for name in ("replicas", "shards", "port"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} {getattr(self, name)}: must be >= 1")
        if self.encoders < 0 or self.cpus <= 0:
            raise ConfigError(f"--encoders {self.encoders} --cpus {self.cpus}: encoders >= 0, cpus > 0")
        if self.token_file is None and self.host not in LOOPBACK:
            raise ConfigError(f"--host {self.host}: without --token-file the service binds 127.0.0.1 only; "
                              f"pass --token-file FILE to listen on other addresses")
        if self.haproxy and self.token_file is None:
            raise ConfigError("--haproxy: HAProxy's stats and metrics ports listen on every interface (Ray's "
                              "template), so it runs only with --token-file FILE; or leave --haproxy out")

    def check_here(self) -> None:
        """The index folder and the token file, on the machine that serves (not where a config is written)."""
        if not (Path(self.index) / "meta.json").is_file():
            raise ConfigError(f"--index {self.index}: not an index folder (no meta.json); build one with "
                              f"`c3dhash index`")
        if self.token_file is not None:
            read_token(self.token_file)

    def to_args(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["limits"] = dataclasses.asdict(self.limits)
        return d

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "ServeConfig":
        args = dict(args)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(f"serve config args: unknown key(s) {unknown}; known: {sorted(known)}")
        limits = args.pop("limits", None) or {}
        bad = sorted(set(limits) - set(Limits.__dataclass_fields__))
        if bad:
            raise ConfigError(f"serve config limits: unknown key(s) {bad}; "
                              f"known: {sorted(Limits.__dataclass_fields__)}")
        return cls(**args, limits=Limits(**limits))


def read_token(path: str) -> str:
    p = Path(path)
    try:
        token = p.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {p}: unreadable ({exc.strerror}); write the token into it") from None
    if len(token) < 16:
        raise ConfigError(f"--token-file {p}: the token is {len(token)} characters; use at least 16 "
                          f"(e.g. `openssl rand -hex 32 > {p}`)")
    return token


def build_app(cfg: ServeConfig):
    """The bound application graph (not yet running)."""
    cfg.check_here()
    from ray import serve

    from c3dhash.cluster.serve.deployments import VideoEncoder
    from c3dhash.cluster.serve.ingress import Ingress
    threads = max(1, int(cfg.cpus))
    index = str(Path(cfg.index).absolute())
    encoder = None
    if cfg.encoders:
        gpu = {"num_gpus": 1} if cfg.device == "gpu" else {}
        encoder = serve.deployment(VideoEncoder, name="encoder", num_replicas=cfg.encoders,
                                   ray_actor_options={"num_cpus": cfg.cpus, **gpu}, max_ongoing_requests=4,
                                   ).bind(index, cfg.checkpoint, cfg.device, cfg.limits.max_duration_s, threads)
    token = read_token(cfg.token_file) if cfg.token_file else None
    # The HTTP replicas hold the index themselves: a code query is one hop from Serve's proxy (no second
    # deployment call on the hot path)
    search = serve.deployment(Ingress, name="search", num_replicas=cfg.replicas,
                              ray_actor_options={"num_cpus": cfg.cpus}, max_ongoing_requests=256,
                              health_check_period_s=2, health_check_timeout_s=10)
    return search.bind(encoder, index, token, dataclasses.asdict(cfg.limits), cfg.shards, threads)


def app_builder(args: dict[str, Any]):
    """Entry point of `serve deploy` / a RayService: args = ServeConfig fields (see serve_config)."""
    return build_app(ServeConfig.from_args(args))


def serve_config(cfg: ServeConfig) -> dict[str, Any]:
    """A Serve config file for `serve deploy` (or a RayService's serveConfigV2): the same application."""
    args = cfg.to_args()
    args.pop("haproxy")  # a property of the cluster's processes there (RAY_SERVE_ENABLE_HA_PROXY=1), not of the app
    http = {"host": args.pop("host"), "port": args.pop("port")}
    return {"proxy_location": "HeadOnly", "http_options": http,
            "applications": [{"name": APP, "route_prefix": "/", "import_path": "c3dhash.cluster.serve.app:app_builder",
                              "args": args}]}


def logical_cpus(cfg: ServeConfig) -> float:
    """Ray CPUs the application asks for (a local Ray is started with this many)."""
    return cfg.replicas * (cfg.cpus + (cfg.shards if cfg.shards > 1 else 0)) + cfg.encoders * cfg.cpus


@dataclass
class Running:
    """A started service: its URL; stop() removes the application (and the Ray this process started)."""
    cfg: ServeConfig
    started_ray: bool

    @property
    def url(self) -> str:
        host = "[::1]" if self.cfg.host == "::1" else self.cfg.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.cfg.port}"

    def stop(self) -> None:
        import ray
        from ray import serve
        serve.shutdown()
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for listeners Ray would otherwise put on fixed ports)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def haproxy_env() -> dict[str, str]:
    """Ray Serve's HAProxy data plane for the Ray this process starts (its processes inherit the environment):
    HAProxy takes the HTTP port and forwards to each replica's own HTTP server, skipping the Python proxy
    actor and its per-request calls (bench/results/serve-*.md: code queries at 8 clients). Its stats and
    metrics listeners get free ports, so two services on one machine do not collide."""
    # Every c3dhash endpoint only reads (or, /reload, is idempotent), so HAProxy may replay a request that a
    # replica killed mid-request never answered on another replica (Ray's default retries connect failures only)
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response response-timeout"}


def start(cfg: ServeConfig, *, address: str | None = None) -> Running:
    """Start (or join `address`'s) Ray, the HTTP ingress on cfg.host:cfg.port and the application; returns
    once every replica is up. A Ray started here binds 127.0.0.1 only (eval/ray_session.py)."""
    import os
    from unittest.mock import patch

    import ray
    from ray import serve

    from c3dhash.eval.ray_session import start_local
    started = False
    if cfg.haproxy and (address or ray.is_initialized()):
        raise ConfigError("--haproxy applies to the local Ray `c3dhash serve` starts; on a cluster, start its "
                          "processes with RAY_SERVE_ENABLE_HA_PROXY=1 (docs/serve.md) and leave --haproxy out")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # "local": a Ray of our own even when other people's clusters run on this machine
            # Ray's processes inherit the environment; this process gets its own back
            with patch.dict(os.environ, haproxy_env() if cfg.haproxy else {}):
                start_local(num_cpus=max(1, int(logical_cpus(cfg) + 0.999)))
        started = True
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        serve.run(build_app(cfg), name=APP, route_prefix="/", blocking=False)
    except BaseException:
        Running(cfg, started).stop()
        raise
    return Running(cfg, started)
