"""Training checkpoints: full state for exact resume, written atomically, loaded as data (weights_only=True).

    state = ckpt.load(ckpt.resolve(run_dir, "latest"))   # CPU tensors; load_state_dict moves them to the model
    ckpt.set_rng_state(state["rng"])

A training checkpoint (`checkpoint.pt` inside a Ray Train checkpoint directory) holds the model, optimiser and
scheduler states, the training position (epoch, step in epoch, global step), RNG states, the resolved config
and the best validation mAP so far. RNG states are stored as bytes, not tensors: a map_location (cuda:k, meta)
can then never move them off the CPU, where torch.set_rng_state requires them.
The best model by validation mAP is kept beside the Ray checkpoints as `<run_dir>/best.pt`, so Ray's
`num_to_keep` (which keeps the latest checkpoints for resume) never deletes it.
`latest` is the checkpoint Ray Train registered last (its checkpoint_manager_snapshot.json in the run folder),
so a half-copied folder that Ray never registered is not picked; without a snapshot, the newest folder that loads.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from c3dhash.distributed.ray_compat import SNAPSHOT_FILE as RAY_SNAPSHOT, registered_checkpoints  # noqa: F401
from c3dhash.loaders.atomic import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
STAGING_DIR = ".staging"  # in the run folder: checkpoints being written, moved out whole (distributed/worker.py)


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or read; the message names the file."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary name, fsync, then rename: a crash never leaves a half-written checkpoint."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint as data only: weights_only=True refuses pickled code (mmap: read tensors lazily)."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found; train first or pass an existing file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # corrupt/truncated files or pickles with code both land here
        raise CheckpointError(f"{p}: cannot be loaded as a c3dhash checkpoint ({exc}); re-train or pick "
                              f"another checkpoint") from exc


def _to_bytes(t: torch.Tensor) -> bytes:
    return t.cpu().numpy().tobytes()


def _byte_tensor(saved: bytes | torch.Tensor) -> torch.Tensor:
    """A CPU ByteTensor, whatever the checkpoint held (bytes now; a tensor, maybe on a GPU, in older files)."""
    if isinstance(saved, torch.Tensor):
        return saved.to("cpu", torch.uint8)
    return torch.frombuffer(bytearray(saved), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """CPU RNG, plus this process's own CUDA device generator only (`cuda_device`): get_rng_state_all held one
    state per GPU visible to rank 0, which a rank seeing fewer GPUs could not restore (IndexError)."""
    state: dict[str, Any] = {"torch": _to_bytes(torch.get_rng_state())}
    if torch.cuda.is_available():
        state["cuda_device"] = _to_bytes(torch.cuda.get_rng_state(torch.cuda.current_device()))
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore into this process's current CUDA device only, whatever the saving node had. Older checkpoints
    hold `cuda`, a list of every visible device's state: take this device's entry when it has one, else the
    first (a rank on a node with fewer GPUs than rank 0's node)."""
    torch.set_rng_state(_byte_tensor(state["torch"]))
    saved = state.get("cuda_device")
    if saved is None and state.get("cuda"):
        listed = state["cuda"]
        saved = listed[torch.cuda.current_device()] if torch.cuda.is_available() and \
            torch.cuda.current_device() < len(listed) else listed[0]
    if saved is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(_byte_tensor(saved), torch.cuda.current_device())


def _problem(path: Path) -> str | None:
    """Why a checkpoint file does not load (None: it loads)."""
    try:
        load(path, mmap=True)
        return None
    except CheckpointError as exc:
        if "not found" in str(exc):
            return "not found"
        why = str(exc.__cause__ or exc).strip().splitlines()[0].split(". ")[0]  # torch adds a paragraph of advice
        return f"cannot be loaded ({why})"


def loads(path: Path) -> bool:
    return _problem(path) is None


def snapshot_problem(run_dir: str | Path) -> str | None:
    """Why Ray's checkpoint snapshot cannot be read (None: absent or readable)."""
    snap = Path(run_dir) / RAY_SNAPSHOT
    if not snap.exists():
        return None
    return None if registered_checkpoints(run_dir) is not None else f"{snap} is unreadable (truncated?)"


def latest_checkpoint(run_dir: str | Path, *, warn: bool = False) -> Path | None:
    """The checkpoint file to resume from: Ray's latest registered one that loads, else the newest that loads.
    The driver's check and the workers' resume both call this, so they pick the same file; with `warn`, each
    newer checkpoint passed over (and an unreadable snapshot) is named on stdout."""
    registered = registered_checkpoints(run_dir)
    folders = registered if registered is not None else sorted(
        p for p in Path(run_dir).glob("checkpoint_*") if p.is_dir())  # Ray names them checkpoint_<timestamp>
    snap = Path(run_dir) / RAY_SNAPSHOT  # registered is None with a snapshot present: it did not parse
    notes = [f"{snap} is unreadable (truncated?): using the checkpoint folders on disk"] \
        if registered is None and snap.exists() else []
    found, problems = None, []
    for folder in reversed(folders):
        problem = _problem(folder / CHECKPOINT_FILE)
        if problem is None:
            found = folder / CHECKPOINT_FILE
            break
        problems.append(problem)
        notes.append(f"skipped {folder / CHECKPOINT_FILE}: {problem}")
    if found is None and folders:  # a run with checkpoints, none usable: refuse rather than retrain from scratch
        newest = folders[-1] / CHECKPOINT_FILE  # the first one tried: its problem is problems[0]
        raise CheckpointError(f"{newest}: cannot be loaded as a c3dhash checkpoint ({problems[0]}), and no "
                              f"older checkpoint of this run loads; to start afresh, delete {run_dir} or train "
                              f"under another --set cluster.name=...")
    if warn and notes:
        for line in notes:
            print(f"warning: {line}", flush=True)
        print(f"warning: resuming from {found}", flush=True)
    return found


def set_aside_broken(run_dir: str | Path) -> list[Path]:
    """Before Ray reads the run folder: an unreadable snapshot (Ray Train fails on it with a long traceback) and
    unregistered checkpoint folders that do not load (a copy a full disk cut short) get a `.broken-` name, so a
    checkpoint under its final name is complete. Registered ones stay (Ray's snapshot names them); the
    resume passes over them. A worker killed while writing left its staged checkpoint in STAGING_DIR: removed
    (never registered, and ~400 MB each). Returns the new names."""
    run = Path(run_dir)
    left = [p.name for p in (run / STAGING_DIR).glob("*")]
    if left:
        shutil.rmtree(run / STAGING_DIR, ignore_errors=True)
        print(f"warning: removed {len(left)} checkpoint(s) a stopped worker was writing ({run / STAGING_DIR})",
              flush=True)
    moved, stamp = [], time.strftime("%Y%m%d-%H%M%S")
    registered = registered_checkpoints(run)
    if snapshot_problem(run):
        moved.append((run / RAY_SNAPSHOT).rename(run / f".broken-{stamp}-{RAY_SNAPSHOT}"))
    names = {p.name for p in registered or []}
    for folder in sorted(run.glob("checkpoint_*")):
        if folder.is_dir() and folder.name not in names and not loads(folder / CHECKPOINT_FILE):
            moved.append(folder.rename(run / f".broken-{stamp}-{folder.name}"))
    for p in moved:
        print(f"warning: set aside {p.name.split('-', 3)[-1]} (unreadable or incomplete) as {p}", flush=True)
    return moved


def resolve(run_dir: str | Path, which: str) -> Path:
    """`best`, `latest`, or a path (file or checkpoint directory) -> the checkpoint file to load."""
    if which == "best":
        path: Path | None = Path(run_dir) / BEST_FILE
    elif which == "latest":
        path = latest_checkpoint(run_dir)
    else:
        path = Path(which)
        path = path / CHECKPOINT_FILE if path.is_dir() else path
    if path is None or not path.is_file():
        raise CheckpointError(f"no {which!r} checkpoint under {run_dir} ({path}); train the run first "
                              f"(c3dhash train --config ...) or pass --checkpoint PATH")
    return path


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or Inf (such a model is never written as a checkpoint)."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
