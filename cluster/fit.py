"""TorchTrainer.fit() with the project's failure rules (Ray Train 2.60, V2 API).

    trainer = ProjectTrainer(guarded(train_loop_per_worker), ...)   # as TorchTrainer
    result = fit(trainer, run_dir)      # raises the worker's own DataError/ConfigError/..., TrainingFailed, or
                                        # KeyboardInterrupt after a graceful stop (Ctrl-C, SIGTERM)

- A project error raised in a worker (distributed/failures.py) is not retried: `ProjectErrorsFail` answers RAISE
  for it and leaves every other failure (a killed worker, a lost node) to Ray's DefaultFailurePolicy and
  `cluster.max_failures`. Ray Train V2 keeps the worker's exception in WorkerGroupError.worker_failures; `fit`
  re-raises it, so the CLI prints its message (exit 2) instead of Ray's wrapper. Other failures become one line
  (TrainingFailed, exit 1).
- Ctrl-C / SIGTERM: Ray's own SIGINT handler aborted the controller at once and exited 1. A checkpoint is
  registered (checkpoint_manager_snapshot.json, which the next run resumes from) only when the controller polls
  the workers' reports, every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S = 2 s; an abort right after a worker printed
  "checkpoint saved" lost that epoch. `stop` waits (at most GRACE_S) until every complete checkpoint folder on
  disk is in the snapshot, then aborts the controller, which stops the workers.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.train.torch import TorchTrainer
from ray.train.v2.api.exceptions import TrainingFailedError

from c3dhash.distributed.checkpoint import CHECKPOINT_FILE
from c3dhash.distributed.failures import TrainingFailed, first_project_error
from c3dhash.distributed.ray_compat import DefaultFailurePolicy, FailureDecision, hooked_trainer, \
    registered_checkpoints

GRACE_S = 10.0  # longest wait for the controller to register checkpoints already written


class ProjectErrorsFail(DefaultFailurePolicy):
    """Ray's default policy, except that a project error (a message for the user) is raised at once."""

    def make_decision(self, training_failed_error: TrainingFailedError) -> FailureDecision:
        if first_project_error(training_failed_error) is not None:
            return FailureDecision.RAISE
        return super().make_decision(training_failed_error)


# TorchTrainer with ProjectErrorsFail and without Ray's SIGINT handler (fit() handles interrupts); the hooks are
# Ray's private methods, kept in distributed/ray_compat.py with the other private touchpoints.
ProjectTrainer = hooked_trainer(TorchTrainer, ProjectErrorsFail)


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. from `timeout` or a scheduler): stopped like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def registered(run_dir: Path) -> bool:
    """True when every complete checkpoint folder in run_dir is in Ray's snapshot (nothing left to register)."""
    folders = {p.name for p in run_dir.glob("checkpoint_*") if (p / CHECKPOINT_FILE).is_file()}
    return folders <= {p.name for p in registered_checkpoints(run_dir) or []}


def stop(trainer: ProjectTrainer, run_dir: Path) -> None:
    """Let the controller register checkpoints already written, then abort it (it stops the workers)."""
    deadline = time.monotonic() + GRACE_S
    while not registered(run_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    if trainer.controller is not None:
        try:
            ray.get(trainer.controller.abort.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):  # abort() ends the actor: an error here means done
            pass


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    last = text.splitlines()[-1] if text else ""
    return last if last.startswith(type(exc).__name__) else f"{type(exc).__name__}: {last}"


def one_line(exc: BaseException) -> str:
    """Each failed rank's exception in one line (the last line of Ray's traceback text)."""
    failures = getattr(exc, "worker_failures", None) or {}
    return "; ".join(f"rank {r}: {_last_line(e)}" for r, e in sorted(failures.items())) or _last_line(exc)


def fit(trainer: ProjectTrainer, run_dir: Path, *, max_failures: int) -> Any:
    """trainer.fit(), with project errors re-raised as themselves and interrupts stopped gracefully."""
    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        print(f"stopping: waiting for checkpoints already saved to be registered in {run_dir}", flush=True)
        stop(trainer, run_dir)
        raise
    except TrainingFailedError as exc:
        err = first_project_error(exc)
        if err is not None:
            raise err from None
        raise TrainingFailed(f"training failed after {max_failures} restart(s) (cluster.max_failures): "
                             f"{one_line(exc)}; the run resumes from its last checkpoint when started again "
                             f"(logs: {run_dir})") from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
