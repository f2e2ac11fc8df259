"""The Ray Train adapter: what Ray runs on every rank (one DDP worker per GPU) around distributed/trainer.py.

    TorchTrainer(train_loop_per_worker, train_loop_config={"job": job, "run_dir": "/runs/x"}, ...)

Ray's parts only: the device Ray assigned, ray.train.torch.prepare_model (DDP), ray.train.get_checkpoint
(a restarted worker group, or a second `c3dhash train` with the same name, resumes from the latest one) and
ray.train.report (every rank reports; rank 0 attaches the checkpoint). An elastic group (cluster.num_workers =
[min, max]) that Ray resizes is a new group of new processes: everything here (rank slices, SyncBN, DDP, eval
shards) is built again for the new world size, and the checkpoint resumes at the next step. Every training
decision is the Trainer's, which runs without Ray too (tests/test_trainer.py).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray.train
import ray.train.torch
import torch

from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.build import build_data, build_model
from c3dhash.distributed.env import require_cuda
from c3dhash.distributed.job import JobConfig
from c3dhash.distributed.ray_compat import check_storage, report_logger_name
from c3dhash.distributed.trainer import Hooks, Trainer


def quiet_ray_train(level: str) -> None:
    """Apply cluster.log_level to the report log too: Ray names that logger by its file path, so the
    LoggingConfig filter (which matches "ray.train.*") misses it and every rank printed every report."""
    name = report_logger_name()
    if name is not None:  # another Ray layout: nothing to quieten
        logging.getLogger(name).setLevel(level)


def move_into_storage(checkpoint: ray.train.Checkpoint, dir_name: str) -> ray.train.Checkpoint:
    """Ray's checkpoint upload, as one rename when the checkpoint was staged in the run folder (staging_root): an
    AdamW checkpoint of r3d_18 (~400 MB) is then written once, not written and copied. Otherwise (object
    storage) Ray's copy."""
    storage = ray.train.get_context().get_storage()
    dest = Path(storage.build_checkpoint_path_from_name(dir_name))
    if Path(checkpoint.path).parent != dest.parent / ckpt.STAGING_DIR:
        return storage.persist_current_checkpoint(checkpoint, dir_name)
    check_storage(storage)  # this node sees the driver's run folder, as before Ray's copy
    os.rename(checkpoint.path, dest)
    return ray.train.Checkpoint(str(dest))


def staging_root() -> Path:
    """Where rank 0 writes a checkpoint before Ray's upload: inside the run folder on a local or mounted
    storage_path (the upload is then a rename, and what a killed worker leaves there is removed at the next start:
    ckpt.set_aside_broken), else the temp folder."""
    storage = ray.train.get_context().get_storage()
    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return Path(storage.experiment_fs_path) / ckpt.STAGING_DIR
    return Path(tempfile.gettempdir())


def ray_report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    """The Trainer's report hook: metrics (+ where this rank ran) and, on rank 0, the checkpoint files."""
    metrics = {**metrics, "node": ray.get_runtime_context().get_node_id()}
    if state is None:
        ray.train.report(metrics)
        return
    # mkdir, not mkdtemp: the folder may become the checkpoint, with the umask's mode as Ray's copy had
    staged = staging_root() / f"c3dhash-checkpoint-{uuid.uuid4().hex}"
    try:
        staged.mkdir(parents=True)
        ckpt.atomic_save(state, staged / ckpt.CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(staged)),
                         checkpoint_upload_fn=move_into_storage)
    except OSError as exc:  # a full disk: Ray retried, then left a half-written copy under the final name
        raise ckpt.CheckpointError(
            f"writing the checkpoint of global step {metrics.get('global_step')} failed ({exc.strerror or exc}); "
            f"the earlier checkpoints are intact (an incomplete copy is set aside at the next start): free space "
            f"on the storage (cluster.storage_path) or in the temp folder and run again to resume") from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone already when it was moved into the run folder


def train_loop_per_worker(config: dict[str, Any]) -> None:
    job: JobConfig = config["job"]
    quiet_ray_train(job.cluster.log_level)
    if job.cluster.use_gpu:  # before prepare_model, whose CUDA error would not say what is wrong
        require_cuda(f"node {ray.util.get_node_ip_address()}")
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(job.cluster.cpus_per_worker)
    train_loader, queries, database = build_data(job, device)
    model = ray.train.torch.prepare_model(build_model(job, device))
    trainer = Trainer(job=job, model=model, device=device, train_loader=train_loader, queries=queries,
                      database=database, run_dir=Path(config["run_dir"]), hooks=Hooks(report=ray_report))
    path = resume_point(Path(config["run_dir"]), ray.train.get_checkpoint(),
                        warn=ray.train.get_context().get_world_rank() == 0)
    if isinstance(path, Path):
        trainer.restore(path)
    elif path is not None:  # Ray's checkpoint on storage this node cannot see as a folder
        with path.as_directory() as d:
            trainer.restore(Path(d) / ckpt.CHECKPOINT_FILE, source=path.path)
    trainer.fit()


def resume_point(run_dir: Path, found: Any, *, warn: bool) -> Any:
    """What to resume from: Ray's checkpoint when it loads, else the newest in the run folder that loads (the
    one the driver checked: checkpoint.latest_checkpoint), else nothing. A broken newest checkpoint used to
    end the run with Ray's traceback although older good ones were there."""
    if found is not None and not Path(found.path).is_dir():
        return found
    own = Path(found.path) / ckpt.CHECKPOINT_FILE if found is not None else None
    if own is not None and ckpt.loads(own):
        return own
    return ckpt.latest_checkpoint(run_dir, warn=warn)
