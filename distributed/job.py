"""The composed job config that every worker receives (defined here, on floor 3, so workers never import the
CLI; cluster/config.py re-exports it and owns loading, overrides and validation).

    from c3dhash.distributed.job import JobConfig, config_to_dict
    job = JobConfig()                    # every section's defaults
    config_to_dict(job)["train"]["lr"]   # plain dict (lists, not tuples): YAML, checkpoints, comparisons
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from c3dhash.distributed.config import LossConfig, TrainConfig
from c3dhash.eval.config import EvalConfig
from c3dhash.loaders.config import DataConfig
from c3dhash.model.config import ModelConfig


@dataclass(frozen=True)
class ClusterConfig:
    name: str = "c3dhash"  # run name: <storage_path>/<name>/ holds checkpoints and TensorBoard logs
    storage_path: str = "runs"
    # One DDP worker per GPU (or per CPU slot on a laptop): a count (a fixed group), or an elastic [min, max]
    # range: Ray Train starts with as many as fit (>= min), shrinks when a node is lost, grows back
    # (docs/elastic.md). The global batch is the config's either way, so the math does not change with the size.
    num_workers: int | tuple[int, int] = field(default=2, metadata={">=": 1})
    use_gpu: bool = False
    cpus_per_worker: int = field(default=1, metadata={">=": 1})
    max_failures: int = field(default=3, metadata={">=": -1})  # worker-group restarts before the run fails
    # checkpoints kept (the best by validation mAP is kept besides)
    num_to_keep: int = field(default=2, metadata={">=": 1})
    address: str = ""  # Ray address; "" = RAY_ADDRESS or a local Ray
    # Ray Train's own console logs; INFO also prints every report's metrics, per rank
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    # Elastic range only: how often a healthy group looks for room to grow (Ray's elastic_resize_monitor_interval_s);
    # growing restarts the group from the latest checkpoint, so this also bounds how often work is redone.
    resize_interval_s: float = field(default=60.0, metadata={">": 0})

    @property
    def elastic(self) -> bool:
        return not isinstance(self.num_workers, int)

    @property
    def worker_range(self) -> tuple[int, int]:
        """(min, max) workers: (n, n) for a fixed count."""
        n = self.num_workers
        return (n, n) if isinstance(n, int) else (int(n[0]), int(n[1]))


@dataclass(frozen=True)
class JobConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def config_to_dict(cfg: JobConfig) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v
    return {s: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, s)).items()}
            for s in (f.name for f in dataclasses.fields(JobConfig))}
