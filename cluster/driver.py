"""The Ray driver: preflight checks (cluster/preflight.py), the run-folder lock (cluster/lock.py), connecting
(cluster/connect.py), then TorchTrainer(train_loop_per_worker).fit() with the project's failure rules
(cluster/fit.py: user errors are not retried and come back as themselves; Ctrl-C/SIGTERM stop gracefully).

    c3dhash train --config configs/synth-cpu.yaml                 # local Ray (the embedded default)
    c3dhash train --config configs/ucf101-64bit.yaml --address ray://head:10001
    RAY_ADDRESS=http://head:8265 ray job submit --working-dir . -- c3dhash train --config configs/ucf101-64bit.yaml

A run lives in `<storage_path>/<name>/`: Ray checkpoints (checkpoint_*), best.pt, config.yaml, metrics.jsonl and
tensorboard/. Starting a run whose folder already holds checkpoints resumes it (Ray Train V2 restores by name).
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

from cluster.config import JobConfig, config_to_dict, save_config
from cluster.connect import check_capacity, connect
from cluster.fit import ProjectTrainer, fit
from cluster.lock import run_lock
from cluster.preflight import preflight
from distributed.failures import guarded
from distributed.worker import WorkerSpec, train_loop_per_worker


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


def build_trainer(cfg: JobConfig, *, fail_at: str = "") -> ProjectTrainer:
    c, out = cfg.cluster, run_dir(cfg)
    spec = WorkerSpec(data=cfg.data, model=cfg.model, loss=cfg.loss, train=cfg.train, eval=cfg.eval,
                      run_dir=str(out), resolved=config_to_dict(cfg), threads=c.cpus_per_worker, fail_at=fail_at,
                      log_level=c.log_level)
    resources = {"CPU": c.cpus_per_worker, **({"GPU": 1} if c.use_gpu else {})}
    return ProjectTrainer(  # TorchTrainer + the project's failure rules (cluster/fit.py)
        guarded(train_loop_per_worker),
        train_loop_config={"spec": spec},
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
    """Preflight, lock the run folder, connect, check capacity, fit; see the module docstring."""
    cfg = absolute_paths(cfg)
    plan = preflight(cfg)
    out, c = run_dir(cfg), cfg.cluster
    with run_lock(out):
        need = c.num_workers * c.cpus_per_worker
        where = connect(address or c.address or None, num_cpus=max(need, os.cpu_count() or 1))
        check_capacity(num_workers=c.num_workers, cpus_per_worker=c.cpus_per_worker, use_gpu=c.use_gpu)
        save_config(cfg, out / "config.yaml")  # only once the run can start: a refused run changes nothing
        t0 = time.time()
        print(f"training {c.name} on {where}: {c.num_workers} workers ({'GPU' if c.use_gpu else 'CPU'}), "
              f"{plan.num_train} train / {plan.num_val} val videos, {plan.steps_per_epoch} steps per epoch, "
              f"run folder {out}", flush=True)
        trainer = build_trainer(cfg, fail_at=os.environ.get("C3DHASH_FAIL_AT", ""))
        result = fit(trainer, out, max_failures=c.max_failures)
    m = result.metrics or {}
    print(f"done in {(time.time() - t0) / 60:.1f} min: epoch {m.get('epoch', -1) + 1}/{cfg.train.epochs}, "
          f"best val mAP {m.get('best_val_map', float('nan')):.4f}; best model {out / 'best.pt'}", flush=True)
    return result
