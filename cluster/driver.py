"""The Ray driver: preflight checks, then TorchTrainer(train_loop_per_worker).fit().

    c3dhash train --config configs/synth-cpu.yaml                 # local Ray (the embedded default)
    c3dhash train --config configs/ucf101-64bit.yaml --address ray://head:10001
    RAY_ADDRESS=http://head:8265 ray job submit --working-dir . -- c3dhash train --config configs/ucf101-64bit.yaml

A run lives in `<storage_path>/<name>/`: Ray checkpoints (checkpoint_*), best.pt, config.yaml (the latest
start's config; configs/<n>-<time>.yaml keeps every start's), metrics.jsonl and tensorboard/. Starting a run
whose folder already holds checkpoints resumes it (Ray Train V2 restores by name), after the checkpoint's
config was compared with this one (distributed/resume.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer

from cluster.config import JobConfig, config_to_dict, save_config
from distributed import checkpoint as ckpt
from distributed.resume import check_resume
from distributed.worker import train_loop_per_worker
from loaders.manifest import DataError
from loaders.splits import build_splits, manifest_path
from model.backbone import resolve_weights


class MetricsLog(UserCallback):
    """Runs on the Train controller: appends rank 0's metrics of every report to metrics.jsonl."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        with open(self.path, "a") as f:
            nodes = [m.get("node") for m in metrics]  # where each rank ran
            f.write(json.dumps({"time": time.time(), **metrics[0], "nodes": nodes}) + "\n")


def run_dir(cfg: JobConfig) -> Path:
    return Path(cfg.cluster.storage_path).expanduser().resolve() / cfg.cluster.name


def absolute_paths(cfg: JobConfig) -> JobConfig:
    """Workers do not run in the driver's folder: resolve relative data/weights paths here, once."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path
    data = dataclasses.replace(cfg.data, root=absolute(cfg.data.root), manifest_dir=absolute(cfg.data.manifest_dir))
    weights = cfg.model.weights
    model = cfg.model if weights in (None, "kinetics400") else dataclasses.replace(cfg.model, weights=absolute(weights))
    return dataclasses.replace(cfg, data=data, model=model)


def preflight(cfg: JobConfig) -> None:
    """Fail before any worker starts: missing data, manifests or weights get one clear message."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise DataError(f"data.root={cfg.data.root}: dataset folder not found; prepare it (README: Datasets) or "
                        f"set --set data.root=DIR (for the demo: c3dhash synth --out {cfg.data.root})")
    if not manifest_path(cfg.data, "train").is_file():
        print(f"no manifests under {manifest_path(cfg.data, 'train').parent}: building them from the official "
              f"split files (c3dhash splits)", flush=True)
        build_splits(dataset=cfg.data.dataset, root=root, split=cfg.data.split,
                     manifest_dir=cfg.data.manifest_dir or None, val_per_class=cfg.data.val_per_class)
    resolve_weights(cfg.model.weights, name=cfg.model.backbone)  # the model's own resolver: same rule, same message


def check_run_folder(cfg: JobConfig, out: Path) -> None:
    """Before any worker starts: a resume whose checkpoint has other shapes/meaning is refused here."""
    latest = ckpt.latest_checkpoint(out)
    if latest is not None:
        check_resume(ckpt.load(latest, mmap=True).get("config"), config_to_dict(cfg), where=str(latest))


def save_start_config(cfg: JobConfig, out: Path) -> Path:
    """config.yaml = this start's config; configs/<n>-<time>.yaml keeps the config of every start."""
    n = len(list((out / "configs").glob("*.yaml"))) if (out / "configs").is_dir() else 0
    save_config(cfg, out / "configs" / f"{n:03d}-{time.strftime('%Y%m%d-%H%M%S')}.yaml")
    return save_config(cfg, out / "config.yaml")


def connect(address: str | None, cfg: JobConfig) -> None:
    """Join ADDR / RAY_ADDRESS when given, else start a local Ray sized for the job."""
    if ray.is_initialized():
        return
    address = address or cfg.cluster.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address)
    else:
        need = cfg.cluster.num_workers * cfg.cluster.cpus_per_worker
        # With the dashboard: Train V2 queries the State API (and users get http://127.0.0.1:8265).
        ray.init(num_cpus=max(need, os.cpu_count() or 1))


def build_trainer(cfg: JobConfig) -> TorchTrainer:
    """Workers receive the job config itself (distributed.job.JobConfig) and the run folder."""
    c, out = cfg.cluster, run_dir(cfg)
    resources = {"CPU": c.cpus_per_worker, **({"GPU": 1} if c.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": cfg, "run_dir": str(out)},
        scaling_config=ScalingConfig(num_workers=c.num_workers, use_gpu=c.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=c.name, storage_path=str(out.parent),
                             failure_config=FailureConfig(max_failures=c.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=c.num_to_keep),
                             logging_config=LoggingConfig(log_level=c.log_level),
                             # Ray Train's print patch logs each print AND echoes it: every line came out twice
                             worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
                             callbacks=[MetricsLog(str(out / "metrics.jsonl"))]),
    )


def run_training(cfg: JobConfig, *, address: str | None = None) -> ray.train.Result:
    cfg = absolute_paths(cfg)
    preflight(cfg)
    out = run_dir(cfg)
    check_run_folder(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    save_start_config(cfg, out)
    connect(address, cfg)
    t0 = time.time()
    print(f"training {cfg.cluster.name}: {cfg.cluster.num_workers} workers "
          f"({'GPU' if cfg.cluster.use_gpu else 'CPU'}), run folder {out}", flush=True)
    result = build_trainer(cfg).fit()
    m = result.metrics or {}
    print(f"done in {(time.time() - t0) / 60:.1f} min: epoch {m.get('epoch', -1) + 1}/{cfg.train.epochs}, "
          f"best val mAP {m.get('best_val_map', float('nan')):.4f}; best model {out / 'best.pt'}", flush=True)
    return result
