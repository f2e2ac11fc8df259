"""Every use of Ray's private API, in one place; written against Ray 2.60.0 (pinned in setup.cfg).

    from c3dhash.distributed.ray_compat import DefaultFailurePolicy, FailureDecision   # loaded on first use
    Trainer = hooked_trainer(TorchTrainer, make_policy)    # our failure policy, no Ray SIGINT handler
    registered_checkpoints(run_dir)                        # Ray Train's snapshot of registered checkpoints

- failure policy: Ray Train V2 takes no user failure policy; `hooked_trainer` passes one to the controller
  through DataParallelTrainer._initialize_and_run_controller (cluster/fit.py: project errors are not retried);
- SIGINT: DataParallelTrainer._register_sigint_handler aborts the controller at once; the override keeps the
  controller instead, so fit() can let the saved checkpoints be registered first;
- loggers: Ray logs a worker's exception under TRAIN_FN_LOGGER, and each report under a logger named by the
  file path of ray.train.v2._internal.execution.context (which the LoggingConfig filter misses);
- snapshot: checkpoint_manager_snapshot.json, Ray Train's record of the checkpoints it registered, read by
  resume (which checkpoint is latest) and by the graceful stop (is everything on disk registered yet);
- connection: GcsClient (one authenticated call in the address probe) and `auto` address resolution;
- storage check: StorageContext._check_validation_file, Ray's test that the run folder is the shared one (its
  marker file) before a worker moves a checkpoint in (distributed/worker.py move_into_storage).

Here on floor 3 (distributed/), not in cluster/: the workers (distributed/failures.py, worker.py) and the
checkpoint reader (distributed/checkpoint.py) use it, and distributed/ cannot import cluster/. Nothing here
imports Ray at module load (checkpoint.py is imported by commands that must start fast).
tests/test_ray_compat.py checks every touchpoint against the installed Ray: an upgrade that moves one fails
there, not in a run.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable

SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # ray.train.v2._internal.constants
TRAIN_FN_LOGGER = "ray.train.v2._internal.util"  # logs "Error in training function" with the worker's traceback
REPORT_LOGGER_MODULE = "ray.train.v2._internal.execution.context"  # logger = logging.getLogger(__file__)
GCS_CLIENT_IMPORT = "from ray._raylet import GcsClient"  # for the address probe's subprocess
TRAINER_HOOKS = ("_initialize_and_run_controller", "_register_sigint_handler")  # of DataParallelTrainer
STORAGE_CHECK = "_check_validation_file"  # of StorageContext: raises unless its marker is in the run folder

_LAZY = {
    "DefaultFailurePolicy": "ray.train.v2._internal.execution.failure_handling",
    "FailureDecision": "ray.train.v2._internal.execution.failure_handling",
    "canonicalize_bootstrap_address": "ray._private.services",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def report_logger_name() -> str | None:
    """The name of the logger Ray Train's report goes through (its module's file path); None if moved."""
    try:
        module = importlib.import_module(REPORT_LOGGER_MODULE)
    except ImportError:
        return None
    return module.__file__


def hooked_trainer(base: type, make_policy: Callable[[Any], Any]) -> type:
    """`base` (a DataParallelTrainer such as TorchTrainer) whose controller gets make_policy(failure_config)
    as its failure policy, and that registers no SIGINT handler: it keeps the controller in `.controller`."""

    class Hooked(base):  # type: ignore[valid-type, misc]
        controller: Any = None

        def _initialize_and_run_controller(self, **controller_init_kwargs) -> Any:
            controller_init_kwargs["failure_policy"] = make_policy(self.run_config.failure_config)
            return super()._initialize_and_run_controller(**controller_init_kwargs)

        def _register_sigint_handler(self, controller: Any) -> None:
            self.controller = controller  # Ctrl-C stays a KeyboardInterrupt for the caller to handle

    Hooked.__name__ = Hooked.__qualname__ = f"Hooked{base.__name__}"
    return Hooked


def registered_checkpoints(run_dir: str | Path) -> list[Path] | None:
    """Checkpoint folders Ray Train registered, oldest first, latest last; None without a (readable) snapshot."""
    snap = Path(run_dir) / SNAPSHOT_FILE
    try:
        state = json.loads(snap.read_text())
        names = [r["checkpoint_dir_name"] for r in state.get("checkpoint_results", [])]
        latest = (state.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    ordered = [n for n in names if n != latest] + ([latest] if latest else [])
    return [Path(run_dir) / n for n in ordered]


def check_storage(storage: Any) -> None:
    """Ray's own check (and error) that this node sees the run folder the driver created (a shared storage_path),
    which its checkpoint copy runs first."""
    getattr(storage, STORAGE_CHECK)()
