"""Test-only fault injection for the Ray end-to-end tests; never imported by the product.

A Ray worker is another process: a monkeypatch in the test process does not reach it. So the test hands Ray
this module's train loop instead of the product's (monkeypatching cluster.driver.train_loop_per_worker, which
the driver passes to TorchTrainer); the workers import this module by name (tests/ is on the PYTHONPATH the
Ray nodes inherit, or the driver is tests/faults_cli.py, whose folder Ray adds to its workers' sys.path), patch
the Trainer inside their own process, and run the product's loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# --- elastic training (tests/test_train_elastic.py) ----------------------------------------------------------
# (world size, global steps done) before whose next step every worker of such a group waits: the test changes
# the cluster meanwhile, and Ray resizing the group (which stops these workers) is what lets training go on.
HOLDS = {(2, 2), (1, 3)}
HOLD_TIMEOUT_S = 300.0
TRAINED = ".steps_trained"  # in the run folder: "<world size> <global step>" per step rank 0 finished training


def hold_loop(config: dict[str, Any]) -> None:
    import time

    from c3dhash.distributed import worker
    from c3dhash.distributed.env import get_rank, get_world_size
    from c3dhash.distributed.trainer import Trainer

    real_step, log = Trainer.train_step, Path(config["run_dir"]) / TRAINED

    def train_step(self, clips, labels):
        if (get_world_size(), self.state.global_step) in HOLDS:
            time.sleep(HOLD_TIMEOUT_S)  # normally ended by Ray stopping this worker group
            raise RuntimeError(f"held {HOLD_TIMEOUT_S:.0f} s after step {self.state.global_step} on "
                               f"{get_world_size()} workers: Ray did not resize the group")
        out = real_step(self, clips, labels)
        if get_rank() == 0:
            with open(log, "a") as f:
                f.write(f"{get_world_size()} {self.state.global_step + 1}\n")
        return out

    Trainer.train_step = train_step  # this worker process only
    worker.train_loop_per_worker(config)


# --- the merged failure run (tests/test_failures.py) ---------------------------------------------------------
# Global steps done before whose next step each worker waits, once per run folder: the test SIGKILLs rank 1 at
# the first and sends Ctrl-C to the driver at the second, so each lands mid-epoch at a known step.
HOLD_ONCE = (3, 5)


def held(run_dir: Path, step: int, rank: int) -> Path:
    """The marker a worker writes (its pid) when it starts waiting before step + 1."""
    return Path(run_dir) / f".held_{step}_r{rank}"


def hold_once_loop(config: dict[str, Any]) -> None:
    import os
    import time

    from c3dhash.distributed import worker
    from c3dhash.distributed.env import get_rank
    from c3dhash.distributed.trainer import Trainer

    real_step = Trainer.train_step

    def train_step(self, clips, labels):
        marker = held(config["run_dir"], self.state.global_step, get_rank())
        if self.state.global_step in HOLD_ONCE and not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(HOLD_TIMEOUT_S)  # normally ended by the test's SIGKILL or Ctrl-C
            raise RuntimeError(f"held {HOLD_TIMEOUT_S:.0f} s after step {self.state.global_step}: no fault came")
        return real_step(self, clips, labels)

    Trainer.train_step = train_step  # this worker process only
    worker.train_loop_per_worker(config)
