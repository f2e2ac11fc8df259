"""Failures in and around the Ray workers, on the session's local Ray (conftest `local_ray`; tiny data, 2 CPU
workers):

- a project error raised inside a worker is not retried and the CLI prints the worker's own message (exit 2);
- one run shows four behaviours: a worker process killed with SIGKILL mid-epoch, Ctrl-C (exit 130
  "interrupted") that leaves no process of the driver's own local Ray behind, and a second start with the same
  name that resumes; every epoch is trained exactly once (module fixture `merged`; a copy of its run folder,
  checkpoints truncated, is the unloadable-checkpoint case);
- SIGTERM stops training like Ctrl-C (the same path from there on: unit test of fit);
- a cluster that cannot place num_workers workers is refused before training.
Unit tests of the failure policy and the placement arithmetic need no cluster."""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
import ray
import yaml
from ray.train.v2._internal.execution.failure_handling import FailureDecision
from ray.train.v2.api.config import FailureConfig
from ray.train.v2.api.exceptions import WorkerGroupError

import faults
from c3dhash.cluster.config import config_to_dict, load_config
from c3dhash.cluster.connect import placeable
from c3dhash.cluster.fit import ProjectErrorsFail
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.failures import TrainingFailed, WorkerError, first_project_error, guarded
from c3dhash.loaders.manifest import DataError
from train_helpers import make_tiny_dataset, read_metrics, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
C3DHASH = [sys.executable, "-m", "c3dhash.cluster.cli"]


def test_policy_raises_project_errors_and_retries_the_rest():
    policy = ProjectErrorsFail(FailureConfig(max_failures=1))
    user = WorkerGroupError("x", {1: DataError("train.tsv:3: bad label"), 0: RuntimeError("gloo: peer closed")})
    assert policy.make_decision(user) == FailureDecision.RAISE
    assert str(first_project_error(user)) == "train.tsv:3: bad label"
    crash = WorkerGroupError("x", {0: RuntimeError("segfault")})
    assert policy.make_decision(crash) == FailureDecision.RETRY  # max_failures=1: one retry
    assert policy.make_decision(crash) == FailureDecision.RAISE


def test_guarded_sends_project_errors_back_without_traceback():
    class Unpicklable(DataError):
        def __reduce__(self):
            raise TypeError("no")
    Unpicklable.__module__ = "c3dhash.loaders.manifest"  # a project error type that cannot be pickled

    def bad(_):
        raise DataError("a.tsv:2: label x")
    with pytest.raises(DataError, match="a.tsv:2") as err:
        guarded(bad)({})
    frames = [f.name for f in traceback.extract_tb(err.value.__traceback__)]
    assert "bad" not in frames and frames[-1] == "run"  # the raising frames are dropped: message only

    def odd(_):
        raise Unpicklable("b.tsv:1: odd")
    with pytest.raises(WorkerError, match="b.tsv:1: odd"):
        guarded(odd)({})

    def bug(_):
        raise KeyError("bug")
    with pytest.raises(KeyError):
        guarded(bug)({})
    assert TrainingFailed.exit_code == 1


def test_a_crash_after_the_retries_is_one_line_and_exit_1(monkeypatch, capsys):
    import c3dhash.cluster.driver
    from c3dhash.cluster.cli import main
    from c3dhash.cluster.fit import one_line
    crash = WorkerGroupError("x", {1: RuntimeError("Traceback ...\n  File ...\nRuntimeError: boom"),
                                   0: OSError("gone")})
    assert one_line(crash) == "rank 0: OSError: gone; rank 1: RuntimeError: boom"

    def crashing(cfg, *, address=None):
        raise TrainingFailed(f"training failed after 3 restart(s) (cluster.max_failures): {one_line(crash)}")
    monkeypatch.setattr(c3dhash.cluster.driver, "run_training", crashing)
    assert main(["train", "--config", str(REPO / "configs/synth-cpu.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["c3dhash train: error: training failed after 3 restart(s) (cluster.max_failures): rank 0: "
                   "OSError: gone; rank 1: RuntimeError: boom"]


def test_placeable_counts_whole_workers_per_node():
    nodes = [{"Alive": True, "Resources": {"CPU": 3, "GPU": 1}}, {"Alive": True, "Resources": {"CPU": 8}},
             {"Alive": False, "Resources": {"CPU": 64, "GPU": 8}}]
    assert placeable(nodes, cpus_per_worker=2, use_gpu=False) == 1 + 4
    assert placeable(nodes, cpus_per_worker=1, use_gpu=True) == 1


# ---------------------------------------------------------------- on a shared local Ray cluster

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("synth"))


def config_file(data, tmp: Path, name: str, *, epochs: int, **overrides) -> Path:
    extra = [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    cfg = load_config(None, [*tiny_overrides(data, tmp / "runs", name, epochs=epochs), *extra])
    path = tmp / f"{name}-{epochs}.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


class Driver:
    """`c3dhash train` in a subprocess joined to the shared cluster; stdout lines are collected as they come."""

    def __init__(self, cfg: Path, address: str | None, env: dict | None = None, cmd: list | None = None):
        cmd = [*(cmd or C3DHASH), "train", "--config", str(cfg), *(["--address", address] if address else [])]
        # preexec: a suite started in the background by a shell without job control ignores SIGINT, and so would
        # the driver (Python keeps an inherited SIG_IGN): Ctrl-C is what these tests send
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})},  # c3dhash: installed, or on PYTHONPATH
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")))
        self.reader.start()

    def wait_for(self, text: str, timeout: float) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(text in line for line in self.lines):
                return time.time()
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in the output: {self.lines[-10:]} {self.proc.stderr.read()[-2000:]}")

    def finish(self, timeout: float) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(30)
        return rc, "".join(self.lines), self.proc.stderr.read()


EPOCHS = 3  # 2 steps each: rank 1 killed in epoch 1 (faults.HOLD_ONCE), Ctrl-C in epoch 2, which the resume trains
FAULTS_CLI = [sys.executable, str(Path(__file__).parent / "faults_cli.py")]


def saved_epochs(run: Path) -> list[int]:
    return [r["epoch"] for r in read_metrics(run)] if (run / "metrics.jsonl").exists() else []


def wait_for_hold(run: Path, driver: Driver, step: int, saved: int, timeout: float = 300) -> int:
    """Until both workers wait before step + 1 and `saved` epochs are registered (metrics.jsonl: the controller
    writes a row once it registered the epoch's checkpoint); rank 1's pid."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.proc.poll() is None:
        marks = [faults.held(run, step, rank) for rank in (0, 1)]
        if all(m.exists() and m.read_text() for m in marks) and len(saved_epochs(run)) >= saved:
            return int(marks[1].read_text())
        time.sleep(0.2)
    raise AssertionError(f"{run}: no hold at step {step} with {saved} epochs saved ({saved_epochs(run)}): "
                         f"{driver.lines[-10:]}")


@pytest.fixture(scope="module")
def merged(local_ray, data, tmp_path_factory) -> dict:
    """The merged run (one run, three behaviours), its faults at known steps (tests/faults.py HOLD_ONCE): rank 1's
    process killed with SIGKILL mid-epoch 1 (Ray restarts the group from epoch 0's checkpoint); Ctrl-C mid-epoch 2;
    a second start with the same name. What each start printed and returned, for the tests below (the
    project-error test corrupts a copy of its run folder)."""
    tmp = tmp_path_factory.mktemp("merged")
    cfg = config_file(data, tmp, "intr", epochs=EPOCHS, cluster__max_failures=2)
    run = tmp / "runs" / "intr"
    first = Driver(cfg, None, env={"RAY_ADDRESS": ""}, cmd=FAULTS_CLI)  # a local Ray of its own
    kill_at, interrupt_at = faults.HOLD_ONCE
    os.kill(wait_for_hold(run, first, kill_at, saved=1), signal.SIGKILL)  # a real kill, mid-run
    wait_for_hold(run, first, interrupt_at, saved=2)  # the new group trained epoch 1 again and holds in epoch 2
    ray_procs = descendants(first.proc.pid)  # raylet, GCS, Train controller and workers
    first.proc.send_signal(signal.SIGINT)
    t0 = time.time()
    interrupted = first.finish(timeout=120)
    took, saved = time.time() - t0, saved_epochs(run)
    left = still_alive(ray_procs)
    lock_left = (run / ".lock").exists()
    again = Driver(cfg, local_ray).finish(timeout=600)  # joins the suite's Ray: --address
    return {"run": run, "data": data, "interrupted": interrupted, "interrupt_took": took, "saved": saved,
            "ray_procs": ray_procs, "left": left, "lock_left": lock_left, "again": again}


@pytest.mark.subprocess
def test_sigkill_then_ctrl_c_then_the_same_name_resumes_every_epoch_once(merged):
    """A SIGKILLed worker: the group restarts from the last saved epoch; Ctrl-C: exit 130, "interrupted", lock
    released; the second start with the same name resumes after the last saved epoch. Every epoch is trained
    exactly once."""
    run, saved = merged["run"], merged["saved"]
    rc, out, err = merged["interrupted"]
    assert re.search(r"resumed from .*: next epoch 2 step 1 ", out), out[-2000:]  # the new group: after epoch 0
    assert rc == 130 and "interrupted" in err.splitlines(), (rc, saved, out[-800:], err[-800:])  # the CLI's line
    assert merged["interrupt_took"] < 60
    assert saved == [0, 1], saved  # stopped mid-epoch 2, the epochs before it kept
    assert not merged["lock_left"]
    assert len(merged["ray_procs"]) >= 4 and merged["left"] == [], merged  # its own Ray is gone with it

    rc, out, err = merged["again"]
    assert rc == 0, err[-3000:]
    assert re.search(rf"resumed from .*: next epoch {len(saved) + 1} step 1 ", out), out[-2000:]  # after the last
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))
    assert [r["global_step"] for r in rows] == [2 * (e + 1) for e in range(EPOCHS)]
    assert ckpt.load(ckpt.resolve(run, "latest"))["train_state"]["epoch"] == EPOCHS  # what a third start resumes
    assert len(list((run / "configs").glob("*.yaml"))) == 2  # the config of each start


@pytest.mark.subprocess
def test_project_error_in_a_worker_is_not_retried_and_printed_as_is(merged, local_ray, tmp_path):
    """A run whose every registered checkpoint is truncated (a copy of the merged run's folder, so no training
    of its own): refused with one line naming the newest, exit 2, nothing trained, nothing lost."""
    run = tmp_path / "runs" / "intr"
    shutil.copytree(merged["run"], run)
    registered = ckpt.registered_checkpoints(run)
    assert registered, run
    for folder in registered:
        (folder / "checkpoint.pt").write_bytes((folder / "checkpoint.pt").read_bytes()[:1000])  # truncated on disk
    cfg2 = config_file(merged["data"], tmp_path, "intr", epochs=EPOCHS + 1, cluster__max_failures=3)
    t0 = time.time()
    rc, out, err = Driver(cfg2, local_ray).finish(timeout=600)
    took = time.time() - t0
    ours = [line for line in err.splitlines() if line.startswith("c3dhash train:")]  # Ray's own logs aside
    assert rc == 2, err[-3000:]
    newest = registered[-1] / "checkpoint.pt"  # the first one tried: the error names it
    assert len(ours) == 1 and ours[0].startswith(f"c3dhash train: error: {newest}: cannot be "
                                                 f"loaded as a c3dhash checkpoint"), ours
    assert "Training failed due to" not in err and "WorkerGroupError" not in err
    assert "Error in training function" not in err  # the worker's traceback is not repeated
    assert err.count("cannot be loaded as a c3dhash checkpoint") == 1
    assert [r["epoch"] for r in read_metrics(run)] == list(range(EPOCHS))  # nothing trained, nothing lost
    assert took < 300


@pytest.mark.subprocess
def test_cluster_too_small_is_refused_before_training(local_ray, data, tmp_path):
    room = int(ray.cluster_resources()["CPU"])
    assert room + 1 <= 4 * 2, "the tiny set's P x K batch (4 classes x 2) must cover the workers"
    cfg = config_file(data, tmp_path, "big", epochs=1, cluster__num_workers=room + 1, data__pk_classes=4)
    t0 = time.time()
    rc, out, err = Driver(cfg, local_ray).finish(timeout=120)
    assert rc == 2 and time.time() - t0 < 60
    assert f"cannot place cluster.num_workers={room + 1} workers of 1 CPU each" in err and f"room for {room}" in err
    assert not (tmp_path / "runs" / "big" / "config.yaml").exists()


# ---------------------------------------------------------------- processes (the merged run's own Ray); SIGTERM

def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def still_alive(pids: set[int], wait_s: float = 60) -> list[int]:
    """The pids still alive after up to wait_s; they are SIGKILLed (a failing test leaves nothing running)."""
    deadline = time.time() + wait_s
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.5)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


def test_sigterm_stops_training_like_ctrl_c(tmp_path, capsys):
    """fit() turns SIGTERM (a scheduler, `timeout`) into a KeyboardInterrupt after the graceful stop, like
    Ctrl-C; the CLI then exits 130 (the merged run shows the rest of that path). Its handler is restored."""
    from c3dhash.cluster.fit import Terminated, fit

    class Trainer:
        controller = None

        def fit(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises in this thread first
            raise AssertionError("SIGTERM did not stop fit")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as exc:
        fit(Trainer(), tmp_path, max_failures=0)
    assert isinstance(exc.value, KeyboardInterrupt) and signal.getsignal(signal.SIGTERM) is before
    assert f"stopping: waiting for checkpoints already saved to be registered in {tmp_path}" in capsys.readouterr().out
