"""Test-only fault injection for the Ray end-to-end tests; never imported by the product.

A Ray worker is another process: a monkeypatch in the test process does not reach it. So the test hands Ray
this module's train loop instead of the product's (monkeypatching cluster.driver.train_loop_per_worker, which
the driver passes to TorchTrainer); the workers import this module by name (tests/ is on the PYTHONPATH the
Ray nodes inherit), patch the Trainer inside their own process, and run the product's loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

CRASH_AT = (1, 1)  # (epoch, step in epoch) before which the last rank raises, once per run folder


def crash_once_loop(config: dict[str, Any]) -> None:
    from distributed import worker
    from distributed.env import get_rank, get_world_size
    from distributed.trainer import Trainer

    marker = Path(config["run_dir"]) / ".fault_injected"
    real_step = Trainer.train_step

    def train_step(self, clips, labels):
        st = self.state
        if (st.epoch, st.step_in_epoch) == CRASH_AT and get_rank() == get_world_size() - 1 and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected fault at epoch {st.epoch} step {st.step_in_epoch}")
        return real_step(self, clips, labels)

    Trainer.train_step = train_step  # this worker process only
    worker.train_loop_per_worker(config)
