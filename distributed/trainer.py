"""The training core: every decision of a run (step, finite-loss guard, validate, keep the best, checkpoint,
resume with the config check), in a plain process or under torch.distributed, without Ray.

    trainer = Trainer(job=job, model=DDP(net), device=dev, train_loader=loader, queries=q, database=db,
                      run_dir=Path("runs/x"), hooks=Hooks(report=my_report))
    trainer.restore("runs/x/checkpoint_3/checkpoint.pt")     # optional: resume at the saved position
    trainer.fit()                                            # epochs from the position on

distributed/worker.py is the Ray Train adapter around it (device, prepare_model, get_checkpoint, report);
tests/test_trainer.py runs it on two gloo processes. The position is (epoch, step in epoch, global step):
the sampler's plan is a pure function of (seed, epoch, step), so a resume continues at the next step, the
same whatever the world size. `report(metrics, state)` is called on every rank at every epoch end and every
`train.checkpoint_every_steps` steps; `state` is the full checkpoint on rank 0 when one is due, else None.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.collapse import CollapseError, code_figures, collapse_problem, largest_weight
from c3dhash.distributed.collect import broadcast_from_zero, gather_outputs
from c3dhash.distributed.env import get_rank, get_world_size, is_dist
from c3dhash.distributed.finite import FiniteGuard, NonFiniteError
from c3dhash.distributed.job import JobConfig, config_to_dict
from c3dhash.distributed.optim import build_optimizer, build_scheduler
from c3dhash.distributed.resume import ConfigDiff, apply_optimizer_config, check_resume
from c3dhash.distributed.tensorboard import RankZeroWriter
from c3dhash.distributed.triplet import gathered_triplet_loss
from c3dhash.eval.codes import Codes
from c3dhash.eval.index.encode import amp_dtype, amp_name, autocast, encode_loader, to_codes
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.sampler import label_videos

Report = Callable[[dict[str, Any], "dict[str, Any] | None"], None]


__all__ = ["EvalSet", "Hooks", "NonFiniteError", "Trainer", "TrainState", "saved_position", "unwrap"]


class TrainLoader(Sized, Iterable, Protocol):
    def set_epoch(self, epoch: int, *, start_step: int = 0) -> None: ...


@dataclass
class TrainState:
    epoch: int = 0  # the epoch being trained (== train.epochs when the run is done)
    step_in_epoch: int = 0  # steps of `epoch` already taken: the next one to train
    global_step: int = 0
    best_val_map: float = -1.0


@dataclass(frozen=True)
class EvalSet:
    records: list[VideoRecord]  # the whole split, in manifest order
    loader: Iterable  # this rank's shard: (clips, labels, video_index) batches, re-iterable


@dataclass(frozen=True)
class Hooks:
    report: Report = lambda metrics, state: None  # noqa: E731 - a plain process needs no reporting


def saved_position(state: dict[str, Any]) -> TrainState:
    """The checkpoint's TrainState: the epoch and step to resume at."""
    return TrainState(**state["train_state"])


def _double(x: torch.Tensor | float) -> torch.Tensor | float:
    """A step's statistic as float64 (a device tensor stays on the device; a float, e.g. a bench stub's, stays)."""
    return x.double() if isinstance(x, torch.Tensor) else x


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP (or Ray's prepare_model), or the model itself."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, torch.nn.Module) else model


def _metrics():
    """(evaluate, pr_counts): imported on use, as they need numba, which bench/gpu_check.py's image lacks (it
    drives the Trainer's save/restore with no validation sets)."""
    from c3dhash.eval.metrics.curves import pr_counts
    from c3dhash.eval.metrics.exact import evaluate
    return evaluate, pr_counts


class Trainer:
    """One rank's training run. `model` may be wrapped (DDP, prepare_model): it trains; `module` (unwrapped)
    encodes, is saved and restored. Every method runs on every rank in the same order (collectives inside)."""

    def __init__(self, *, job: JobConfig, model: torch.nn.Module, device: torch.device, train_loader: TrainLoader,
                 queries: EvalSet | None, database: EvalSet | None, run_dir: Path, hooks: Hooks = Hooks()):
        self.job, self.model, self.module, self.device = job, model, unwrap(model), device
        self.train_loader, self.queries, self.database = train_loader, queries, database
        self.run_dir, self.hooks, self.state = Path(run_dir), hooks, TrainState()
        self.opt = build_optimizer(model.parameters(), job.train, batch=train_loader.batch_size)
        self.sched = build_scheduler(self.opt, job.train, len(train_loader))
        self.writer = RankZeroWriter(self.run_dir / "tensorboard", rank=-1)  # a no-op until fit() opens it
        dtype = amp_dtype(job.train.amp, device)
        # fp16 (sm_75) needs loss scaling; bf16 and fp32 do not (a disabled scaler passes everything through)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
        self._compress_gradients(model, job.train.grad_compression)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed clip shapes: autotune each Conv3d once
        if get_rank() == 0:
            print(f"mixed precision: {amp_name(dtype)} (train.amp={job.train.amp} on {device})", flush=True)
        self._t_run, self._start_step = time.time(), 0
        self.finite, self._sizes = FiniteGuard(), None  # _sizes: every rank's rows at the step being trained
        if queries is not None and database is not None:
            _metrics()  # at start on every rank, as a top-level import did: not inside a collective's wait

    @staticmethod
    def _compress_gradients(model: torch.nn.Module, how: str) -> None:
        """bf16: DDP all-reduces the gradient buckets in bf16 (decompressed to fp32 after; one process: no-op)."""
        if how == "none" or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            return
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook
        model.register_comm_hook(None, bf16_compress_hook)

    # --- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "train_state": dataclasses.asdict(self.state),
                "rng": ckpt.rng_state(), "config": config_to_dict(self.job),
                **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})}

    def load_state_dict(self, state: dict[str, Any], *, where: str = "checkpoint") -> ConfigDiff:
        """Check the saved config first (nothing is loaded when it is refused), then restore everything."""
        diff = check_resume(state.get("config"), config_to_dict(self.job), where=where)
        self.module.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        apply_optimizer_config(self.opt, self.sched, self.job.train, steps_per_epoch=len(self.train_loader),
                               batch=self.train_loader.batch_size)
        ckpt.set_rng_state(state["rng"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.state = saved_position(state)
        return diff

    def restore(self, path: str | Path, *, source: str | None = None) -> None:
        """Resume from a checkpoint file. Loaded to the CPU: load_state_dict moves tensors to the model's
        device, and the RNG states must stay CPU ByteTensors (a cuda:k map_location broke torch.set_rng_state)."""
        diff = self.load_state_dict(ckpt.load(path, map_location="cpu"), where=str(source or path))
        if get_rank() == 0:
            st = self.state
            print(f"resumed from {source or path}: next epoch {st.epoch + 1} step {st.step_in_epoch + 1} "
                  f"(global step {st.global_step + 1}) on {get_world_size()} worker(s)", flush=True)
            for line in diff.notices():
                print(line, flush=True)

    # --- the run -----------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        self.writer = RankZeroWriter(self.run_dir / "tensorboard", rank=get_rank(),
                                     purge_step=self.state.global_step)
        self._t_run, self._start_step = time.time(), self.state.global_step
        try:
            while self.state.epoch < self.job.train.epochs:
                self.end_of_epoch(self.train_epoch())
        finally:
            self.writer.close()
        return self.state

    def train_epoch(self) -> dict[str, float]:
        """Loss and active fraction stay on the device between train.log_every steps (no host sync per step);
        the sums are float64 there, so the epoch's means equal the former Python-float sums bit for bit."""
        st, loader, every = self.state, self.train_loader, max(0, self.job.train.checkpoint_every_steps)
        loader.set_epoch(st.epoch, start_step=st.step_in_epoch)
        sizes = self.epoch_sizes(st.epoch)
        t0, n, clips_seen, loss_sum, active_sum = time.time(), 0, 0, 0.0, 0.0
        last_print = t0
        for clips, labels in loader:
            self._sizes = sizes[st.step_in_epoch] if sizes else None
            loss, active, h, batch = self.train_step(clips.to(self.device), labels.to(self.device))
            st.step_in_epoch, st.global_step, n = st.step_in_epoch + 1, st.global_step + 1, n + 1
            clips_seen += batch  # the global batch (unequal rank slices: not len(clips) x world)
            loss_sum, active_sum = loss_sum + _double(loss), active_sum + _double(active)
            rate = clips_seen / max(1e-9, time.time() - t0)
            if st.global_step % max(1, self.job.train.log_every) == 0:
                self.finite.check()
                self.writer.scalars({"train/loss": float(loss), "train/lr": self.lr, "train/clips_per_s": rate,
                                     "train/active_triplets": float(active)}, st.global_step)
                self.writer.codes(h, st.global_step)
            if get_rank() == 0 and (time.time() - last_print > 20 or st.step_in_epoch == len(loader)):
                self._print_progress(float(loss_sum) / n, float(active_sum) / n, rate)
                last_print = time.time()
            if every and st.global_step % every == 0 and st.step_in_epoch < len(loader):
                self.report({"report": "step", "epoch": st.epoch, "step_in_epoch": st.step_in_epoch,
                             "global_step": st.global_step, "loss": float(loss)}, checkpoint=True)
        self.finite.check()  # before validation and the epoch's checkpoint
        self._sizes, n = None, max(1, n)
        return {"loss": float(loss_sum) / n, "active_fraction": float(active_sum) / n,
                "clips_per_s": clips_seen / max(1e-9, time.time() - t0), "lr": self.lr}

    def epoch_sizes(self, epoch: int) -> list[list[int]] | None:
        """Every rank's rows at each step of `epoch` (sizes[step][rank]): one all-gather per epoch of what this
        rank's loader plan holds, in place of one per step in the loss. None (the loss gathers per step) in one
        process or when the loader has no plan to tell (`step_sizes`)."""
        step_sizes = getattr(self.train_loader, "step_sizes", None)
        if step_sizes is None or not is_dist(world_above=1):
            return None
        # NCCL gathers device tensors; gloo takes CPU ones (self.device is the CPU there)
        mine = torch.tensor(step_sizes(epoch), dtype=torch.int64, device=self.device)
        out = torch.empty(get_world_size() * mine.numel(), dtype=torch.int64, device=self.device)
        dist.all_gather_single(out, mine)
        return out.view(get_world_size(), -1).T.tolist()

    @property
    def lr(self) -> float:
        return float(self.sched.get_last_lr()[0])

    def train_step(self, clips: torch.Tensor, labels: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(global loss, active-triplet fraction: 0-dim device tensors, this rank's codes, clips in the global
        batch). No host sync: the finite-loss flag is filed with self.finite, checked at train.log_every."""
        cfg = self.job
        with autocast(self.device, cfg.train.amp):
            h = self.model(clips)
        h = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h  # autocast's output; float64 stays
        groups = label_videos(labels) if cfg.loss.negatives == "own_video" else None
        loss, stats = gathered_triplet_loss(h, labels, cfg.loss.margin, reduction=cfg.loss.reduction,
                                            quant_weight=cfg.loss.quant_weight, return_stats=True, groups=groups,
                                            **({"sizes": self._sizes} if self._sizes else {}))
        st = self.state
        self.finite.note(epoch=st.epoch, step_in_epoch=st.step_in_epoch, global_step=st.global_step, lr=self.lr,
                         bad_ranks=stats["nonfinite_ranks"], loss=loss)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)  # fp16: skipped when a gradient overflowed (the scale is lowered)
        self.scaler.update()
        self.sched.step()
        # float64 on the device: the same IEEE division as float(num_active) / max(1.0, float(num_valid))
        active = stats["num_active"].double() / stats["num_valid"].double().clamp_min(1.0)
        return loss.detach(), active, h.detach(), int(stats["num_points"])

    def _guard_params(self) -> None:
        """Before any checkpoint: every rank checks its own (identical) weights, so all raise together."""
        bad = ckpt.non_finite(self.module.state_dict())
        if bad:
            st = self.state
            raise NonFiniteError(f"epoch {st.epoch + 1} step {st.step_in_epoch} (global step {st.global_step}): "
                                 f"weights {', '.join(bad[:3])} are not finite at lr {self.lr:.3g}; no checkpoint "
                                 f"was written. Lower train.lr and run again (it resumes from the last checkpoint)")

    def _print_progress(self, loss: float, active: float, rate: float) -> None:
        st, t = self.state, self.job.train
        total = t.epochs * len(self.train_loader)
        done = st.global_step - self._start_step
        eta = (time.time() - self._t_run) / max(1, done) * (total - st.global_step)
        print(f"epoch {st.epoch + 1}/{t.epochs} step {st.step_in_epoch}/{len(self.train_loader)} loss {loss:.4f} "
              f"active {active:.2f} clips/s {rate:.1f} eta {eta / 60:.1f} min", flush=True)

    # --- validation, best model, checkpoints -------------------------------------------------------------
    def encode(self, split: EvalSet) -> Codes:
        """This rank's shard through the UNWRAPPED module: DDP's forward broadcasts BatchNorm buffers, which
        hangs when ranks have different numbers of eval batches; all ranks get the whole split's codes."""
        index, outputs = gather_outputs(*encode_loader(self.module, split.loader, device=self.device,
                                                       amp=self.job.train.amp))
        return to_codes(index, outputs, split.records, self.job.model.bits)

    def validate(self) -> dict[str, Any] | None:
        if self.queries is None or self.database is None or not self.queries.records:
            return None
        evaluate, pr_counts = _metrics()
        queries, database = self.encode(self.queries), self.encode(self.database)
        result = None
        if get_rank() == 0:
            e = self.job.eval
            result = evaluate(queries, database, map_at_k_rel=e.map_at_k_rel, map_at_k=e.map_at_k,
                              precision_at_k=e.precision_at_k, expected_ties=e.expected_ties)
            result["pr_counts"] = pr_counts(result)  # true TP/FP/TN/FN per radius for TensorBoard
            result["codes"] = code_figures(np.concatenate([queries.codes, database.codes]), self.job.model.bits)
        return broadcast_from_zero(result)

    def collapsed(self, res: dict[str, Any] | None) -> bool:
        """Weights beyond train.max_weight_norm, or validation codes all alike: stop (CollapseError, on every
        rank: the figures are the same everywhere) or warn, by train.collapse. True: not a model to keep."""
        st, t = self.state, self.job.train
        name, norm = largest_weight(self.module)
        problems = [f"weight {name} has L2 norm {norm:.3g} > train.max_weight_norm={t.max_weight_norm:g}"] \
            if not norm <= t.max_weight_norm else []
        problem = collapse_problem(res["codes"]) if res and "codes" in res else None
        problems += [problem] if problem else []
        if not problems:
            return False
        val = f", val mAP@all {res['map_all']:.4f}" if res else ""
        text = (f"epoch {st.epoch + 1} (global step {st.global_step}): training collapsed: {'; '.join(problems)}"
                f"{val} at lr {self.lr:.3g}; this model is not kept as best.pt")
        if t.collapse == "warn":
            if get_rank() == 0:
                print(f"warning: {text} (train.collapse=warn: training goes on)", flush=True)
            return True
        raise CollapseError(f"{text}. Lower train.lr (keep model.head_norm on), then start a new run "
                            f"(--set cluster.name=...) or resume from an earlier checkpoint; "
                            f"--set train.collapse=warn only warns")

    def end_of_epoch(self, stats: dict[str, float]) -> None:
        st, t = self.state, self.job.train
        last = st.epoch == t.epochs - 1
        evaluate_now = last or (t.eval_every > 0 and (st.epoch + 1) % t.eval_every == 0)
        metrics: dict[str, Any] = {"report": "epoch", "epoch": st.epoch, "global_step": st.global_step, **stats}
        res = self.validate() if evaluate_now else None
        if res is not None:
            self._keep_best(res, metrics)
        metrics["best_val_map"] = st.best_val_map
        self.writer.flush()
        # A full checkpoint (model + optimiser) is hundreds of MB: every `checkpoint_every` epochs, at every
        # evaluation and at the end; the epochs between are retrained after a crash.
        save = evaluate_now or (st.epoch + 1) % t.checkpoint_every == 0
        st.epoch, st.step_in_epoch = st.epoch + 1, 0  # the checkpoint resumes at the next epoch's first step
        self.report(metrics, checkpoint=save)
        if get_rank() == 0 and (save or res is not None):
            val = f"val mAP@all {metrics['val_map']:.4f} (best {st.best_val_map:.4f}); " if res else ""
            print(f"epoch {st.epoch}/{t.epochs}: {val}{'checkpoint saved' if save else ''}", flush=True)

    def _keep_best(self, res: dict[str, Any], metrics: dict[str, Any]) -> None:
        st = self.state
        metrics["val_map"] = res["map_all"]
        if "map_all_expected" in res:  # eval.expected_ties
            metrics["val_map_expected"] = res["map_all_expected"]
        collapsed = self.collapsed(res)
        self.writer.scalars({"val/map_all": res["map_all"],
                             **{f"val/map_at_{k}": v for k, v in res["map_at_k_rel"].items()}}, st.global_step)
        self.writer.pr_curve("val/pr_hamming_radius", res["pr_counts"], st.global_step)
        self.writer.distance_histograms("val/hamming_distance", res["pr_counts"], st.global_step)
        # a tie keeps the later model: a validation that saturates (near-duplicate mAP 1.0 on a few held-out
        # copies) would otherwise freeze best.pt at the first epoch that reached it
        if res["map_all"] >= st.best_val_map and not collapsed:
            self._guard_params()
            st.best_val_map = res["map_all"]
            if get_rank() == 0:
                self._save_best()

    def _save_best(self) -> None:
        """best.pt is complete or the previous one (atomic_save); a full disk is one line, not Ray's retries."""
        st, path = self.state, self.run_dir / ckpt.BEST_FILE
        try:
            ckpt.atomic_save({"model": self.module.state_dict(), "config": config_to_dict(self.job),
                              "epoch": st.epoch, "val_map": st.best_val_map}, path)
        except OSError as exc:
            raise ckpt.CheckpointError(f"{path}: writing the best model failed ({exc.strerror or exc}); the "
                                       f"previous {ckpt.BEST_FILE} is intact; free space and run again to "
                                       f"resume") from None

    def report(self, metrics: dict[str, Any], *, checkpoint: bool) -> None:
        """Every rank reports (Ray Train V2 requires it); rank 0 attaches the full state when one is due."""
        state = None
        if checkpoint:
            self.finite.check()  # a non-finite loss since the last check: say so before the weights' check
            self._guard_params()
            self.collapsed(None)  # weights beyond the bound: stopped before they are saved (or warned)
            state = self.state_dict() if get_rank() == 0 else None
        self.hooks.report(metrics, state)
