"""The canary for Ray's private API (distributed/ray_compat.py): every touchpoint still exists in the installed
Ray with the signature the project relies on. A Ray upgrade that moves one fails here, not in a run.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_ray_compat.py
"""
import importlib
import inspect
import json
import logging

from ray.train.torch import TorchTrainer
from ray.train.v2._internal import constants
from ray.train.v2._internal.execution.controller.controller import TrainController
from ray.train.v2.api.config import FailureConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from c3dhash.cluster.fit import ProjectErrorsFail, ProjectTrainer
from c3dhash.distributed import ray_compat


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_trainer_hooks_keep_their_signatures_and_the_controller_takes_a_failure_policy():
    assert params(DataParallelTrainer._initialize_and_run_controller) == ["self", "controller_init_kwargs"]
    assert params(DataParallelTrainer._register_sigint_handler) == ["self", "controller"]
    assert "failure_policy" in params(TrainController.__init__)  # what the first hook adds to the kwargs
    assert issubclass(ProjectTrainer, TorchTrainer)
    for name in ray_compat.TRAINER_HOOKS:  # overridden, and overriding a method Ray still calls by that name
        assert name in vars(ProjectTrainer) and name in inspect.getsource(DataParallelTrainer)


def test_failure_policy_types():
    decision = ray_compat.FailureDecision
    assert {decision.RAISE, decision.RETRY} <= set(decision)
    assert params(ray_compat.DefaultFailurePolicy.__init__) == ["self", "failure_config"]
    assert params(ray_compat.DefaultFailurePolicy.make_decision) == ["self", "training_failed_error"]
    assert isinstance(ProjectErrorsFail(FailureConfig(max_failures=1)), ray_compat.DefaultFailurePolicy)


def test_logger_names_are_the_ones_ray_logs_under():
    util = importlib.import_module(ray_compat.TRAIN_FN_LOGGER)
    assert util.logger.name == ray_compat.TRAIN_FN_LOGGER
    assert "Error in training function" in inspect.getsource(util.construct_user_exception_with_traceback)
    context = importlib.import_module(ray_compat.REPORT_LOGGER_MODULE)
    assert context.logger is logging.getLogger(ray_compat.report_logger_name())


def test_snapshot_file_and_fields(tmp_path):
    assert constants.CHECKPOINT_MANAGER_SNAPSHOT_FILENAME == ray_compat.SNAPSHOT_FILE
    source = inspect.getsource(importlib.import_module("ray.train.v2._internal.execution.checkpoint."
                                                       "checkpoint_manager"))
    for field in ("checkpoint_results", "latest_checkpoint_result", "checkpoint_dir_name"):
        assert field in source, field  # the keys registered_checkpoints reads
    (tmp_path / ray_compat.SNAPSHOT_FILE).write_text(json.dumps({
        "checkpoint_results": [{"checkpoint_dir_name": n} for n in ("b", "a", "c")],
        "latest_checkpoint_result": {"checkpoint_dir_name": "a"}}))
    assert [p.name for p in ray_compat.registered_checkpoints(tmp_path)] == ["b", "c", "a"]  # latest last
    assert ray_compat.registered_checkpoints(tmp_path / "none") is None


def test_connection_helpers():
    ns: dict = {}
    exec(ray_compat.GCS_CLIENT_IMPORT, ns)
    import ray._raylet
    assert ns["GcsClient"] is ray._raylet.GcsClient  # it forwards calls to InnerGcsClient (a compiled class)
    assert callable(ray._raylet.InnerGcsClient.internal_kv_get)
    assert params(ray_compat.canonicalize_bootstrap_address)[0] == "addr"


def test_storage_check_and_the_in_place_checkpoint_upload(tmp_path, monkeypatch):
    """worker.move_into_storage: a folder staged in the run folder is renamed into Ray's checkpoint path (the
    same inode: written once); a run folder this node does not share fails Ray's own check."""
    import pytest
    import ray.train
    from ray.train.v2._internal.execution.storage import StorageContext
    from types import SimpleNamespace

    from c3dhash.distributed import checkpoint as ckpt
    from c3dhash.distributed import worker
    storage = StorageContext(str(tmp_path / "runs"), "x")  # creates the run folder and Ray's marker in it
    assert callable(getattr(storage, ray_compat.STORAGE_CHECK))
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_storage=lambda: storage))
    staged = tmp_path / "runs" / "x" / ckpt.STAGING_DIR / "c3dhash-checkpoint-1"  # where worker.staging_root puts it
    staged.mkdir(parents=True)
    (staged / "checkpoint.pt").write_bytes(b"x" * 1000)
    inode = (staged / "checkpoint.pt").stat().st_ino
    out = worker.move_into_storage(ray.train.Checkpoint.from_directory(str(staged)), "checkpoint_000002")
    dest = tmp_path / "runs" / "x" / "checkpoint_000002"
    assert out.path == str(dest) and (dest / "checkpoint.pt").stat().st_ino == inode and not staged.exists()
    elsewhere = tmp_path / "tmp" / "c3dhash-checkpoint-2"  # staged in the temp folder (object storage): copied
    elsewhere.mkdir(parents=True)
    (elsewhere / "checkpoint.pt").write_bytes(b"y" * 1000)
    out = worker.move_into_storage(ray.train.Checkpoint.from_directory(str(elsewhere)), "checkpoint_000003")
    copied = tmp_path / "runs" / "x" / "checkpoint_000003" / "checkpoint.pt"
    assert out.path == str(copied.parent) and copied.read_bytes() == b"y" * 1000
    assert (elsewhere / "checkpoint.pt").stat().st_ino != copied.stat().st_ino
    for marker in (tmp_path / "runs" / "x").glob(".*marker*"):
        marker.unlink()  # as on a node whose runs/x is its own folder, not the driver's
    staged.mkdir()
    with pytest.raises(RuntimeError):
        worker.move_into_storage(ray.train.Checkpoint.from_directory(str(staged)), "checkpoint_000004")
    assert staged.exists()  # nothing moved
