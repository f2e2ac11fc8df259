"""The per-worker training loop that Ray Train runs on every rank (one DDP worker per GPU).

Each rank: its DALI shard (by world rank) -> r3d_18 + hash head (DDP) -> gathered all-triplet loss over the
global batch -> optimiser. Every `eval_every` epochs the validation split queries the training database
(each rank encodes its shard, rank 0 scores); the best model by validation mAP is kept as best.pt.
Every epoch every rank calls ray.train.report; rank 0 attaches the full checkpoint, so a restarted worker
group (or a second `c3dhash train` with the same name) resumes from the latest one.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from distributed import checkpoint as ckpt
from distributed.collect import broadcast_from_zero, gather_outputs
from distributed.config import LossConfig, TrainConfig
from distributed.env import get_rank, get_world_size
from distributed.optim import build_optimizer, build_scheduler
from distributed.syncbn import convert_sync_bn
from distributed.tensorboard import RankZeroWriter
from distributed.triplet import gathered_triplet_loss
from eval.config import EvalConfig
from eval.curves import pr_counts
from eval.encode import autocast, encode_loader, to_codes
from eval.metrics import evaluate
from loaders.config import DataConfig
from loaders.manifest import VideoRecord, read_manifest
from loaders.pipelines import build_eval_loader, build_train_loader
from loaders.probe import filter_records
from loaders.splits import manifest_path
from model.config import ModelConfig
from model.hashnet import build_from_config


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs; built by cluster/driver.py (so workers never import the CLI)."""
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    eval: EvalConfig
    run_dir: str
    resolved: dict = field(default_factory=dict)  # the resolved job config, saved in every checkpoint
    threads: int = 1  # torch intra-op threads per CPU worker (cluster.cpus_per_worker)
    fail_at: str = ""  # tests: "epoch:step" makes the last rank raise once there (fault injection)
    log_level: str = "WARNING"  # Ray Train's own log records on the console (cluster.log_level)


@dataclass
class State:
    epoch: int = 0  # next epoch to train
    step: int = 0  # global optimiser steps taken
    best_val_map: float = -1.0


def load_split(data: DataConfig, name: str) -> list[VideoRecord]:
    path = manifest_path(data, name)
    return filter_records(read_manifest(path), path.parent)


def quiet_ray_train(level: str) -> None:
    """Apply cluster.log_level to the report log too: Ray 2.60 names that logger by its file path, so the
    LoggingConfig filter (which matches "ray.train.*") misses it and every rank printed every report."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quieten
        return
    logging.getLogger(context.__file__).setLevel(level)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def build_model(spec: WorkerSpec, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(spec.train.seed)  # same init everywhere (DDP also broadcasts rank 0's weights)
    net = build_from_config(spec.model)
    if spec.train.sync_bn and get_world_size() > 1:
        net = convert_sync_bn(net)
    if spec.model.channels_last and device.type == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
    return ray.train.torch.prepare_model(net)


def restore(model, opt, sched, device) -> State:
    found = ray.train.get_checkpoint()
    if found is None:
        return State()
    with found.as_directory() as d:
        state = ckpt.load(Path(d) / ckpt.CHECKPOINT_FILE, map_location=device)
    unwrap(model).load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"])
    if get_rank() == 0:
        print(f"resumed from {found.path}: epoch {state['epoch']} done, global step {state['step']}", flush=True)
    return State(epoch=state["epoch"] + 1, step=state["step"], best_val_map=state["best_val_map"])


def maybe_fail(spec: WorkerSpec, epoch: int, step_in_epoch: int) -> None:
    """Fault injection for the resume tests: the last rank raises once at epoch:step."""
    if not spec.fail_at or f"{epoch}:{step_in_epoch}" != spec.fail_at or get_rank() != get_world_size() - 1:
        return
    marker = Path(spec.run_dir) / ".fault_injected"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError(f"injected fault at epoch {epoch} step {step_in_epoch} (C3DHASH_FAIL_AT)")


def train_step(model, opt, sched, clips, labels, spec: WorkerSpec, device) -> tuple[float, float, torch.Tensor]:
    with autocast(device, spec.train.amp):
        h = model(clips).float()
    loss, stats = gathered_triplet_loss(h, labels, spec.loss.margin, reduction=spec.loss.reduction,
                                        quant_weight=spec.loss.quant_weight, return_stats=True)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    active = float(stats["num_active"]) / max(1.0, float(stats["num_valid"]))
    return float(loss.detach()), active, h.detach()


def run_epoch(model, opt, sched, loader, spec: WorkerSpec, st: State, tb: RankZeroWriter,
              device, t_run: float, steps_done_at_start: int) -> dict[str, float]:
    n_steps, world = len(loader), get_world_size()
    total_steps = spec.train.epochs * n_steps
    t0, clips_seen, loss_sum, active_sum, last_print = time.time(), 0, 0.0, 0.0, time.time()
    for i, (clips, labels) in enumerate(loader):
        maybe_fail(spec, st.epoch, i)
        loss, active, h = train_step(model, opt, sched, clips.to(device), labels.to(device), spec, device)
        st.step += 1
        clips_seen += len(clips) * world
        loss_sum, active_sum = loss_sum + loss, active_sum + active
        rate = clips_seen / max(1e-9, time.time() - t0)
        if st.step % spec.train.log_every == 0:
            tb.scalars({"train/loss": loss, "train/lr": sched.get_last_lr()[0], "train/clips_per_s": rate,
                        "train/active_triplets": active}, st.step)
            tb.codes(h, st.step)
        if get_rank() == 0 and (time.time() - last_print > 20 or i == n_steps - 1):
            done = st.step - steps_done_at_start
            eta = (time.time() - t_run) / max(1, done) * (total_steps - st.step)
            print(f"epoch {st.epoch + 1}/{spec.train.epochs} step {i + 1}/{n_steps} loss {loss_sum / (i + 1):.4f} "
                  f"active {active_sum / (i + 1):.2f} clips/s {rate:.1f} eta {eta / 60:.1f} min", flush=True)
            last_print = time.time()
    n = max(1, n_steps)
    return {"loss": loss_sum / n, "active_fraction": active_sum / n,
            "clips_per_s": clips_seen / max(1e-9, time.time() - t0), "lr": sched.get_last_lr()[0]}


def encode_split(model, records, spec: WorkerSpec, device) -> Any:
    """Every rank encodes its shard of `records` (each video once across ranks); all ranks get the codes."""
    loader = build_eval_loader(records, spec.data.root, spec.data, rank=get_rank(), world_size=get_world_size(),
                               device_id=device.index if device.type == "cuda" else None)
    index, outputs = gather_outputs(*encode_loader(model, loader, device=device, amp=spec.train.amp))
    return to_codes(index, outputs, records, spec.model.bits)


def validate(model, train_recs, val_recs, spec: WorkerSpec, device) -> dict[str, Any] | None:
    if not val_recs:
        return None
    queries = encode_split(model, val_recs, spec, device)
    database = encode_split(model, train_recs, spec, device)
    result = None
    if get_rank() == 0:
        e = spec.eval
        result = evaluate(queries, database, map_at_k_rel=e.map_at_k_rel, map_at_k=e.map_at_k,
                          precision_at_k=e.precision_at_k)
        result["pr_counts"] = pr_counts(queries, database)  # true TP/FP/TN/FN per radius for TensorBoard
    return broadcast_from_zero(result)


def full_state(model, opt, sched, spec: WorkerSpec, st: State) -> dict[str, Any]:
    return {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": st.epoch, "step": st.step, "rng": ckpt.rng_state(), "config": spec.resolved,
            "best_val_map": st.best_val_map}


def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Every rank reports (Ray Train V2 requires it); only rank 0 attaches the checkpoint files."""
    if state is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        ckpt.atomic_save(state, Path(d) / ckpt.CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def end_of_epoch(model, opt, sched, spec, st, tb, stats, train_recs, val_recs, device) -> None:
    last = st.epoch == spec.train.epochs - 1
    every = spec.train.eval_every
    metrics: dict[str, Any] = {"epoch": st.epoch, "global_step": st.step, **stats,
                               "node": ray.get_runtime_context().get_node_id()}
    evaluate_now = last or (every > 0 and (st.epoch + 1) % every == 0)
    if evaluate_now:
        res = validate(model, train_recs, val_recs, spec, device)
        if res is not None:
            metrics["val_map"] = res["map_all"]
            tb.scalars({"val/map_all": res["map_all"],
                        **{f"val/map_at_{k}": v for k, v in res["map_at_k_rel"].items()}}, st.step)
            tb.pr_curve("val/pr_hamming_radius", res["pr_counts"], st.step)
            tb.distance_histograms("val/hamming_distance", res["pr_counts"], st.step)
            if res["map_all"] > st.best_val_map:
                st.best_val_map = res["map_all"]
                if get_rank() == 0:
                    ckpt.atomic_save({"model": unwrap(model).state_dict(), "config": spec.resolved,
                                      "epoch": st.epoch, "val_map": st.best_val_map},
                                     Path(spec.run_dir) / ckpt.BEST_FILE)
    metrics["best_val_map"] = st.best_val_map
    tb.flush()
    # A full checkpoint (model + optimiser) is hundreds of MB: every `checkpoint_every` epochs, at every
    # evaluation and at the end; the epochs between are retrained after a crash.
    save = evaluate_now or (st.epoch + 1) % spec.train.checkpoint_every == 0
    report(metrics, full_state(model, opt, sched, spec, st) if save and get_rank() == 0 else None)
    if get_rank() == 0 and (save or "val_map" in metrics):
        val = f"val mAP@all {metrics['val_map']:.4f} (best {st.best_val_map:.4f}); " if "val_map" in metrics else ""
        print(f"epoch {st.epoch + 1}/{spec.train.epochs}: {val}{'checkpoint saved' if save else ''}", flush=True)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    spec: WorkerSpec = config["spec"]
    quiet_ray_train(spec.log_level)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(spec.threads)
    train_recs, val_recs = load_split(spec.data, "train"), load_split(spec.data, "val")
    model = build_model(spec, device)
    loader = build_train_loader(train_recs, spec.data.root, spec.data, rank=get_rank(),
                                world_size=get_world_size(), device_id=device.index if device.type == "cuda" else None,
                                steps=spec.train.steps_per_epoch)
    opt = build_optimizer(model.parameters(), spec.train)
    sched = build_scheduler(opt, spec.train, len(loader))
    st = restore(model, opt, sched, device)
    tb = RankZeroWriter(Path(spec.run_dir) / "tensorboard", rank=get_rank(), purge_step=st.step)
    t_run, start_step = time.time(), st.step
    for st.epoch in range(st.epoch, spec.train.epochs):
        loader.set_epoch(st.epoch)
        stats = run_epoch(model, opt, sched, loader, spec, st, tb, device, t_run, start_step)
        end_of_epoch(model, opt, sched, spec, st, tb, stats, train_recs, val_recs, device)
    tb.close()
