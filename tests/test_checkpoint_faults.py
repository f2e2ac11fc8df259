"""Checkpoints under faults (issue 33): a broken newest checkpoint or a truncated Ray snapshot falls back to the
newest checkpoint that loads, with a warning, and the driver's check and the workers pick the same one; a full
disk while writing is one line and leaves the earlier checkpoints (and best.pt) as they were. No Ray."""
import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from c3dhash.cluster import driver
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed import worker
from train_helpers import job, make_trainer


@pytest.fixture
def run(tmp_path):
    """Two epochs, a checkpoint each (checkpoint_000003, checkpoint_000006), and Ray's snapshot naming both."""
    tr, _ = make_trainer(job(epochs=2), tmp_path, rank=0, world=1)
    tr.fit()
    names = sorted(p.name for p in tmp_path.glob("checkpoint_*"))
    assert names == ["checkpoint_000003", "checkpoint_000006"]
    results = [{"checkpoint_dir_name": n, "metrics": {}} for n in names]
    (tmp_path / ckpt.RAY_SNAPSHOT).write_text(json.dumps({"checkpoint_results": results,
                                                          "latest_checkpoint_result": results[-1]}))
    return tmp_path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _picks(run_dir: Path, capsys) -> tuple[Path, Path, str]:
    """(the driver's pick, the worker's pick given Ray's newest, what they printed)."""
    seen = []
    original = ckpt.load

    def spy(path, *a, **kw):
        seen.append(Path(path))
        return original(path, *a, **kw)
    driver.ckpt.load = spy
    try:
        driver.check_run_folder(job(epochs=3), run_dir)
    finally:
        driver.ckpt.load = original
    newest = SimpleNamespace(path=str(run_dir / "checkpoint_000006"))
    got = worker.resume_point(run_dir, newest, warn=True)
    return seen[-1], got, capsys.readouterr().out


def test_a_broken_newest_checkpoint_falls_back_to_the_newest_that_loads(run, capsys):
    good = run / "checkpoint_000003" / ckpt.CHECKPOINT_FILE
    assert ckpt.latest_checkpoint(run) == run / "checkpoint_000006" / ckpt.CHECKPOINT_FILE
    _truncate(run / "checkpoint_000006" / ckpt.CHECKPOINT_FILE)
    checked, resumed, out = _picks(run, capsys)
    assert checked == resumed == good  # before: the driver checked 000003, the worker loaded (and died on) 000006
    assert f"warning: skipped {run / 'checkpoint_000006' / ckpt.CHECKPOINT_FILE}: cannot be loaded" in out
    assert f"warning: resuming from {good}" in out
    assert ckpt.load(resumed)["train_state"]["epoch"] == 1


def test_a_truncated_snapshot_falls_back_to_the_folders_on_disk(run, capsys):
    _truncate(run / ckpt.RAY_SNAPSHOT)
    checked, resumed, out = _picks(run, capsys)
    assert checked == resumed == run / "checkpoint_000006" / ckpt.CHECKPOINT_FILE
    assert f"warning: {run / ckpt.RAY_SNAPSHOT} is unreadable (truncated?): using the checkpoint folders" in out
    moved = ckpt.set_aside_broken(run)  # what the driver does inside the run lock, before Ray reads the folder
    assert [p.name.split("-", 3)[-1] for p in moved] == [ckpt.RAY_SNAPSHOT] and not (run / ckpt.RAY_SNAPSHOT).exists()
    assert worker.resume_point(run, None, warn=False) == run / "checkpoint_000006" / ckpt.CHECKPOINT_FILE


def test_an_incomplete_unregistered_copy_is_set_aside_and_a_registered_one_stays(run, capsys):
    half = run / "checkpoint_000009"
    half.mkdir()
    (half / ckpt.CHECKPOINT_FILE).write_bytes((run / "checkpoint_000006" / ckpt.CHECKPOINT_FILE).read_bytes()[:1000])
    _truncate(run / "checkpoint_000003" / ckpt.CHECKPOINT_FILE)  # registered: Ray's snapshot names it
    moved = ckpt.set_aside_broken(run)
    assert [p.name.split("-", 3)[-1] for p in moved] == ["checkpoint_000009"]
    assert sorted(p.name for p in run.glob("checkpoint_0*")) == ["checkpoint_000003", "checkpoint_000006"]
    assert "set aside checkpoint_000009 (unreadable or incomplete)" in capsys.readouterr().out


def test_a_full_disk_while_reporting_a_checkpoint_is_one_line(monkeypatch, tmp_path):
    def full(metrics, checkpoint=None, **upload):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(worker.ray.train, "report", full)
    monkeypatch.setattr(worker, "staging_root", lambda: tmp_path / ckpt.STAGING_DIR)
    monkeypatch.setattr(worker.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n"))
    with pytest.raises(ckpt.CheckpointError) as exc:
        worker.ray_report({"global_step": 6}, {"model": {}})
    msg = str(exc.value)
    assert "\n" not in msg and "checkpoint of global step 6 failed (No space left on device)" in msg
    assert "earlier checkpoints are intact" in msg
    assert list((tmp_path / ckpt.STAGING_DIR).iterdir()) == []  # the staged copy is gone


def test_checkpoints_a_killed_worker_was_writing_are_removed_at_the_next_start(run, capsys):
    staged = run / ckpt.STAGING_DIR / "c3dhash-checkpoint-1"
    staged.mkdir(parents=True)
    (staged / ckpt.CHECKPOINT_FILE).write_bytes(b"x" * 1000)  # cut short by the kill
    before = sorted(p.name for p in run.iterdir())
    assert ckpt.set_aside_broken(run) == []  # nothing set aside: a staged copy was never a checkpoint
    assert not (run / ckpt.STAGING_DIR).exists()
    assert sorted(p.name for p in run.iterdir()) == [n for n in before if n != ckpt.STAGING_DIR]
    assert "removed 1 checkpoint(s) a stopped worker was writing" in capsys.readouterr().out


def test_a_full_disk_while_writing_best_pt_keeps_the_previous_one(tmp_path, monkeypatch):
    tr, _ = make_trainer(job(epochs=1), tmp_path, rank=0, world=1)
    tr.fit()
    before = (tmp_path / ckpt.BEST_FILE).read_bytes()

    def half_then_full(obj, f):
        f.write(before[:100])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(ckpt.CheckpointError, match=r"best.pt: writing the best model failed \(No space left on"):
        tr._save_best()
    assert (tmp_path / ckpt.BEST_FILE).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
