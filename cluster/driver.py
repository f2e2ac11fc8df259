"""The Ray driver: preflight checks (cluster/preflight.py), the run-folder lock (cluster/lock.py), connecting
(cluster/connect.py), then TorchTrainer(train_loop_per_worker).fit() with the project's failure rules
(cluster/fit.py: user errors are not retried and come back as themselves; Ctrl-C/SIGTERM stop gracefully).

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
import shutil
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, UserCallback

from c3dhash.cluster.config import ConfigError, JobConfig, config_to_dict, run_dir, save_config
from c3dhash.cluster.connect import check_capacity, connect
from c3dhash.cluster.fit import ProjectTrainer, fit
from c3dhash.cluster.lock import run_lock
from c3dhash.cluster.preflight import preflight
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.failures import guarded
from c3dhash.distributed.resume import check_resume
from c3dhash.distributed.worker import train_loop_per_worker


class MetricsLog(UserCallback):
    """Runs on the Train controller: appends rank 0's metrics of every report to metrics.jsonl."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        with open(self.path, "a") as f:
            nodes = [m.get("node") for m in metrics]  # where each rank ran
            f.write(json.dumps({"time": time.time(), **metrics[0], "nodes": nodes}) + "\n")


def absolute_paths(cfg: JobConfig) -> JobConfig:
    """Workers do not run in the driver's folder: resolve relative data/weights paths here, once."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path
    data = dataclasses.replace(cfg.data, root=absolute(cfg.data.root), manifest_dir=absolute(cfg.data.manifest_dir))
    weights = cfg.model.weights
    model = cfg.model if weights in (None, "kinetics400") else dataclasses.replace(cfg.model, weights=absolute(weights))
    return dataclasses.replace(cfg, data=data, model=model)


def check_run_folder(cfg: JobConfig, out: Path) -> None:
    """Before any worker starts: the run folder takes files (and, when it holds a checkpoint, room for two more),
    and a resume whose checkpoint has other shapes/meaning is refused. The checkpoint is the one the workers will
    resume from (checkpoint.latest_checkpoint: a broken newest one is passed over, with a warning)."""
    check_writable(out)
    latest = ckpt.latest_checkpoint(out, warn=True)
    if latest is not None:
        check_resume(ckpt.load(latest, mmap=True).get("config"), config_to_dict(cfg), where=str(latest))
        need, free = 2 * latest.stat().st_size, shutil.disk_usage(out).free
        if free < need:
            raise ConfigError(f"cluster.storage_path: {free / 1e6:.0f} MB free under {out}, a checkpoint of this "
                              f"run takes {need / 2e6:.0f} MB (the next one is written beside the last); free "
                              f"space or set another cluster.storage_path")


def check_writable(out: Path) -> None:
    """The run folder (or the first folder of its path that exists) takes a new file; one line otherwise."""
    parent = out if out.exists() else next(p for p in out.parents if p.exists())
    try:
        (parent / f".write-test.{os.getpid()}").touch()
        (parent / f".write-test.{os.getpid()}").unlink()
    except OSError as exc:
        raise ConfigError(f"cluster.storage_path: cannot write in {parent} ({exc.strerror or exc}); choose a "
                          f"writable folder (--set cluster.storage_path=DIR)") from None


def save_start_config(cfg: JobConfig, out: Path) -> Path:
    """config.yaml = this start's config; configs/<n>-<time>.yaml keeps the config of every start."""
    n = len(list((out / "configs").glob("*.yaml"))) if (out / "configs").is_dir() else 0
    save_config(cfg, out / "configs" / f"{n:03d}-{time.strftime('%Y%m%d-%H%M%S')}.yaml")
    return save_config(cfg, out / "config.yaml")


def build_trainer(cfg: JobConfig) -> ProjectTrainer:
    """Workers receive the job config itself (distributed.job.JobConfig) and the run folder."""
    c, out = cfg.cluster, run_dir(cfg)
    resources = {"CPU": c.cpus_per_worker, **({"GPU": 1} if c.use_gpu else {})}
    return ProjectTrainer(  # TorchTrainer + the project's failure rules (cluster/fit.py)
        guarded(train_loop_per_worker),
        train_loop_config={"job": cfg, "run_dir": str(out)},
        # an elastic (min, max): Ray Train sizes the group to the nodes there are (docs/elastic.md)
        scaling_config=ScalingConfig(num_workers=c.worker_range if c.elastic else c.num_workers,
                                     elastic_resize_monitor_interval_s=c.resize_interval_s, use_gpu=c.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=c.name, storage_path=str(out.parent),
                             failure_config=FailureConfig(max_failures=c.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=c.num_to_keep),
                             logging_config=LoggingConfig(log_level=c.log_level),
                             # Ray Train's print patch logs each print AND echoes it: every line came out twice
                             worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
                             callbacks=[MetricsLog(str(out / "metrics.jsonl"))]),
    )


def run_training(cfg: JobConfig, *, address: str | None = None) -> ray.train.Result:
    """Preflight, lock the run folder, connect, check capacity, fit; see the module docstring."""
    cfg = absolute_paths(cfg)
    plan = preflight(cfg)
    out, c = run_dir(cfg), cfg.cluster
    check_run_folder(cfg, out)  # a resume with other shapes is refused before anything starts or is written
    with run_lock(out):
        ckpt.set_aside_broken(out)  # a truncated snapshot or a half-copied checkpoint would strand Ray's restore
        lo, hi = c.worker_range
        where = connect(address or c.address or None, num_cpus=max(hi * c.cpus_per_worker, os.cpu_count() or 1))
        # an elastic group starts with min workers and grows as nodes come
        check_capacity(num_workers=lo, cpus_per_worker=c.cpus_per_worker, use_gpu=c.use_gpu)
        save_start_config(cfg, out)  # only once the run can start: a refused run changes nothing
        t0 = time.time()
        print(f"training {c.name} on {where}: {f'{lo} to {hi}' if c.elastic else hi} workers "
              f"({'GPU' if c.use_gpu else 'CPU'}), {plan.num_train} train / {plan.num_val} val videos, "
              f"{plan.steps_per_epoch} steps per epoch of {plan.batch} clips (lr {cfg.train.base_lr(plan.batch):.3g}),"
              f" run folder {out}", flush=True)
        result = fit(build_trainer(cfg), out, max_failures=c.max_failures)
    m = result.metrics or {}
    print(f"done in {(time.time() - t0) / 60:.1f} min: epoch {m.get('epoch', -1) + 1}/{cfg.train.epochs}, "
          f"best val mAP {m.get('best_val_map', float('nan')):.4f}; best model {out / 'best.pt'}", flush=True)
    return result
