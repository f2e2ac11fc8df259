"""Training checkpoints: full state for exact resume, written atomically, loaded as data (weights_only=True).

A training checkpoint (`checkpoint.pt` inside a Ray Train checkpoint directory) holds the model, optimiser and
scheduler states, epoch, global step, RNG states, the resolved config and the best validation mAP so far.
The best model by validation mAP is kept beside the Ray checkpoints as `<run_dir>/best.pt`, so Ray's
`num_to_keep` (which keeps the latest checkpoints for resume) never deletes it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from loaders.atomic import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or read; the message names the file."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary name, fsync, then rename: a crash never leaves a half-written checkpoint."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint as data only: weights_only=True refuses pickled code."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found; train first or pass an existing file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt/truncated files or pickles with code both land here
        raise CheckpointError(f"{p}: cannot be loaded as a c3dhash checkpoint ({exc}); re-train or pick "
                              f"another checkpoint") from exc


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest Ray Train checkpoint directory of a run (Ray names them checkpoint_<timestamp>)."""
    found = sorted(p for p in Path(run_dir).glob("checkpoint_*") if (p / CHECKPOINT_FILE).is_file())
    return found[-1] / CHECKPOINT_FILE if found else None


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
