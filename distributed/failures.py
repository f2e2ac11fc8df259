"""Which failures are the user's, across the Ray boundary: never retried, shown as the project's own one line.

    from c3dhash.distributed.failures import is_project_error, first_project_error, guarded
    TorchTrainer(guarded(train_loop_per_worker), ...)       # the driver wraps the worker loop
    err = first_project_error(training_failed_error)       # the original DataError/ConfigError/... or None

An exception raised by our own packages (cluster, distributed, model, loaders, eval) says what to fix: retrying
it (Ray Train's max_failures) only repeats it and then buries it under Ray's wrapper. Ray Train V2 keeps each
worker's original exception in `WorkerGroupError.worker_failures` (rank -> exception); the failure policy
(cluster/fit.py) reads it there. No torch or ray import here: the CLI imports this module at start.
"""
from __future__ import annotations

import functools
import logging
import pickle
from typing import Any, Callable

from c3dhash.distributed.ray_compat import TRAIN_FN_LOGGER as RAY_TRAIN_FN_LOGGER


class TrainingFailed(RuntimeError):
    """A run that failed for a reason that is not a user error (a crash after the retries): exit code 1."""
    exit_code = 1


class WorkerError(ValueError):
    """A project error raised in a worker whose own exception could not travel back (not picklable)."""

    def __init__(self, message: str, rank: int | None = None):
        super().__init__(message)
        self.rank = rank

    def __reduce__(self):
        return (type(self), (str(self), self.rank))


def is_project_error(exc: BaseException) -> bool:
    """Raised by our packages (a message naming the file/key and the fix), or a missing file/folder."""
    return isinstance(exc, (FileNotFoundError, NotADirectoryError)) or (
        type(exc).__module__.split(".")[0] == "c3dhash")


def first_project_error(error: BaseException) -> BaseException | None:
    """The lowest rank's project error inside a Ray Train failure (WorkerGroupError.worker_failures or
    ControllerError.controller_failure), or the error itself when it is one; else None."""
    if is_project_error(error):
        return error
    failures: dict[int, Any] = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        if isinstance(failures[rank], BaseException) and is_project_error(failures[rank]):
            return failures[rank]
    inner = getattr(error, "controller_failure", None)
    return inner if isinstance(inner, BaseException) and is_project_error(inner) else None


def _travels(exc: BaseException) -> bool:
    try:
        return isinstance(pickle.loads(pickle.dumps(exc)), type(exc))
    except Exception:  # noqa: BLE001 - any pickling problem means it would arrive as Ray's wrapper
        return False


class _DropNextTrainFnError(logging.Filter):
    """Ray Train logs every worker exception with its traceback ("Error in training function"); for a project
    error the driver prints the message itself, once, so that one record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Error in training function"):
            logging.getLogger(RAY_TRAIN_FN_LOGGER).removeFilter(self)
            return False
        return True


def guarded(train_fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """The worker loop, with project errors sent back as themselves, without the worker's traceback (the
    message is what the user needs; a bug keeps its traceback)."""
    @functools.wraps(train_fn)
    def run(config: Any) -> None:
        try:
            train_fn(config)
        except Exception as exc:
            if not is_project_error(exc):
                raise
            logging.getLogger(RAY_TRAIN_FN_LOGGER).addFilter(_DropNextTrainFnError())
            if not _travels(exc):
                raise WorkerError(str(exc)) from None
            raise exc.with_traceback(None) from None
    return run
