"""Checkpoint files (atomic, data-only loading, resolution through Ray's registry), RNG state on any map
location, the resume config check, and the learning-rate schedule."""
import json
import pickle

import pytest
import torch

from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.config import TrainConfig
from c3dhash.distributed.optim import build_optimizer, build_scheduler, lr_factor


def test_atomic_save_round_trips_and_leaves_no_temp(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "rng": ckpt.rng_state(),
             "config": {"train": {"lr": 0.1, "betas": [0.9, 0.99]}}, "best_val_map": 0.5}
    path = ckpt.atomic_save(state, tmp_path / "run" / "checkpoint.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    back = ckpt.load(path.parent)  # a checkpoint directory resolves to its checkpoint.pt
    torch.testing.assert_close(back["model"]["w"], state["model"]["w"])
    assert back["epoch"] == 3 and back["config"] == state["config"]


class Payload:
    def __reduce__(self):  # what a malicious checkpoint would carry: code run at load time
        return (print, ("pwned",))


def test_checkpoint_with_code_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, bad, pickle_module=pickle)
    with pytest.raises(ckpt.CheckpointError, match="evil.pt"):
        ckpt.load(bad)


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = ckpt.atomic_save({"w": torch.ones(1000)}, tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match=r"c\.pt: cannot be loaded"):
        ckpt.load(path)


def test_resolve_best_latest_and_missing(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="train the run first"):
        ckpt.resolve(tmp_path, "latest")
    for name in ("checkpoint_2026-01-01_00-00-01", "checkpoint_2026-01-01_00-00-09"):
        ckpt.atomic_save({"epoch": name}, tmp_path / name / ckpt.CHECKPOINT_FILE)
    assert ckpt.resolve(tmp_path, "latest").parent.name.endswith("00-00-09")
    ckpt.atomic_save({"val_map": 1.0}, tmp_path / ckpt.BEST_FILE)
    assert ckpt.resolve(tmp_path, "best") == tmp_path / ckpt.BEST_FILE


def _ray_snapshot(run_dir, names, latest):
    """What Ray Train 2.60's checkpoint manager writes into the run folder (the fields we read)."""
    def result(n):
        return {"version": 0, "checkpoint_dir_name": n, "metrics": {}}
    (run_dir / ckpt.RAY_SNAPSHOT).write_text(json.dumps({
        "ray_version": "2.60.0", "checkpoint_results": [result(n) for n in names],
        "checkpoint_report_indices": list(range(len(names))), "latest_checkpoint_result": result(latest),
        "pending_training_results": [], "pending_validation_specs": [], "current_report_index": len(names),
        "validated_checkpoint_dir_names": [], "timed_out_validation_checkpoint_dir_names": [],
        "failed_validation_checkpoint_dir_names": []}))


def test_latest_is_what_ray_registered_not_the_newest_folder(tmp_path):
    names = [f"checkpoint_2026-01-01_00-00-0{i}" for i in (1, 2, 3)]
    for n in names:
        ckpt.atomic_save({"epoch": n}, tmp_path / n / ckpt.CHECKPOINT_FILE)
    _ray_snapshot(tmp_path, names[:2], latest=names[1])  # the newest folder is a copy Ray never registered
    assert ckpt.resolve(tmp_path, "latest") == tmp_path / names[1] / ckpt.CHECKPOINT_FILE
    (tmp_path / names[1] / ckpt.CHECKPOINT_FILE).write_bytes(b"truncated")  # registered but unreadable
    assert ckpt.resolve(tmp_path, "latest") == tmp_path / names[0] / ckpt.CHECKPOINT_FILE
    (tmp_path / ckpt.RAY_SNAPSHOT).unlink()  # no registry: the newest folder that loads
    assert ckpt.resolve(tmp_path, "latest") == tmp_path / names[2] / ckpt.CHECKPOINT_FILE


def test_failed_best_write_leaves_neither_temp_nor_file(tmp_path, monkeypatch):
    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        ckpt.atomic_save({"model": {}}, tmp_path / ckpt.BEST_FILE)
    assert list(tmp_path.iterdir()) == []


def test_rng_state_restores_the_stream():
    state = ckpt.rng_state()
    a = torch.rand(4)
    ckpt.set_rng_state(state)
    torch.testing.assert_close(torch.rand(4), a, rtol=0, atol=0)


def test_rng_state_survives_a_non_cpu_map_location(tmp_path):
    """Issue 12 finding 1: resume mapped the checkpoint to cuda:k and torch.set_rng_state then raised. Any
    non-CPU map_location shows it on a CPU machine ("meta"); RNG states are bytes, which no map_location moves."""
    path = ckpt.atomic_save({"rng": ckpt.rng_state(), "w": torch.ones(2)}, tmp_path / "c.pt")
    expected = torch.rand(4)
    state = ckpt.load(path, map_location="meta")
    assert state["w"].device.type == "meta"
    ckpt.set_rng_state(state["rng"])
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)
    old_style = {"torch": torch.get_rng_state().to("meta")}  # what the old tensor format became on cuda:k
    with pytest.raises(TypeError, match="ByteTensor"):
        torch.set_rng_state(old_style["torch"])


@pytest.mark.parametrize("schedule", ["step", "cosine", "constant"])
def test_lr_schedule_warmup_then_decay(schedule):
    cfg = TrainConfig(epochs=10, schedule=schedule, warmup_epochs=2, step_epochs=4, gamma=0.5)
    f = [lr_factor(s, cfg=cfg, steps_per_epoch=5) for s in range(50)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warmup over 10 steps
    if schedule == "step":
        assert f[19] == 1.0 and f[20] == 0.5 and f[40] == 0.25
    elif schedule == "cosine":
        assert f[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(f[10:], f[11:])) and f[49] < 0.01
    else:
        assert set(f[10:]) == {1.0}


def test_scheduler_state_survives_a_weights_only_round_trip(tmp_path):
    w = torch.nn.Parameter(torch.ones(3))
    cfg = TrainConfig(optimizer="adamw", lr=0.1, schedule="cosine", epochs=4)
    opt = build_optimizer([w], cfg, batch=4)
    sched = build_scheduler(opt, cfg, steps_per_epoch=3)
    for _ in range(5):
        w.grad = torch.ones(3)
        opt.step()
        sched.step()
    path = ckpt.atomic_save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "s.pt")
    state = ckpt.load(path)
    opt2 = build_optimizer([torch.nn.Parameter(torch.ones(3))], cfg, batch=4)
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=3)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert sched2.last_epoch == 5 and sched2.get_last_lr() == sched.get_last_lr()
