"""Resume against the checkpoint's config, weights that are not finite, and a GPU worker without CUDA: one
plain process, no Ray.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_resume.py
"""
import dataclasses

import pytest
import ray.train.torch
import torch
import yaml

from c3dhash.cluster import driver
from c3dhash.cluster.config import load_config
from c3dhash.cluster.preflight import Plan
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.env import GpuError
from c3dhash.distributed.job import ClusterConfig, JobConfig, config_to_dict
from c3dhash.distributed.optim import lr_factor
from c3dhash.distributed.resume import ResumeConfigError, check_resume
from c3dhash.distributed.trainer import NonFiniteError
from c3dhash.distributed.worker import train_loop_per_worker
from c3dhash.loaders.manifest import write_manifest
from train_helpers import STEPS, job, make_trainer


@pytest.fixture
def trained(tmp_path):
    """A one-epoch run and its checkpoint."""
    tr, _ = make_trainer(job(epochs=1), tmp_path / "a", rank=0, world=1)
    tr.fit()
    return tr, ckpt.latest_checkpoint(tmp_path / "a")


def with_changes(cfg: JobConfig, **sections) -> JobConfig:
    return dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in sections.items()})


@pytest.mark.parametrize("change", [{"model": {"bits": 16}}, {"data": {"crop": (24, 24)}},
                                    {"train": {"optimizer": "adamw"}}, {"data": {"pk_classes": 3}}])
def test_a_shape_or_meaning_change_is_refused_before_anything_loads(trained, tmp_path, change):
    _, path = trained
    fresh, _ = make_trainer(with_changes(job(epochs=2), **change), tmp_path / "b", rank=0, world=1)
    before = {k: v.clone() for k, v in fresh.module.state_dict().items()}
    key = next(f"{s}.{k}" for s, v in change.items() for k in v)
    with pytest.raises(ResumeConfigError, match=rf"cannot resume with a different {key} .*cluster.name=gloo-2"):
        fresh.restore(path)
    assert all(torch.equal(v, before[k]) for k, v in fresh.module.state_dict().items())
    assert fresh.state.global_step == 0


def test_optimizer_changes_are_applied_to_the_restored_optimizer_and_printed(trained, tmp_path, capsys):
    old, path = trained
    assert old.opt.param_groups[0]["momentum"] == 0.9
    cfg = with_changes(job(epochs=2), train={"lr": 0.2, "momentum": 0.5, "weight_decay": 0.0, "eval_every": 2})
    fresh, _ = make_trainer(cfg, tmp_path / "b", rank=0, world=1)
    fresh.restore(path)
    out = capsys.readouterr().out
    assert "train.lr 0.05 -> 0.2" in out and "train.momentum 0.9 -> 0.5" in out and "train.epochs 1 -> 2" in out
    assert "applied to the restored optimiser" in out and "train.eval_every 1 -> 2; in effect from now on" in out
    group = fresh.opt.param_groups[0]
    want = 0.2 * lr_factor(STEPS, cfg=cfg.train, steps_per_epoch=STEPS)  # the schedule of the NEW config
    assert (group["momentum"], group["weight_decay"]) == (0.5, 0.0)
    assert group["lr"] == pytest.approx(want) and fresh.sched.get_last_lr() == [group["lr"]]
    assert torch.equal(fresh.opt.state_dict()["state"][0]["momentum_buffer"],
                       old.opt.state_dict()["state"][0]["momentum_buffer"])  # the state itself is restored
    fresh.sched.step()
    assert group["lr"] == pytest.approx(0.2 * lr_factor(STEPS + 1, cfg=cfg.train, steps_per_epoch=STEPS))


def test_a_new_lr_batch_rescales_the_restored_rate(trained, tmp_path, capsys):
    _, path = trained
    cfg = with_changes(job(epochs=2), train={"lr_batch": 2})  # P x K = 4 clips: twice train.lr
    fresh, _ = make_trainer(cfg, tmp_path / "b", rank=0, world=1)
    fresh.restore(path)
    assert "train.lr_batch 0 -> 2" in capsys.readouterr().out
    group = fresh.opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.1 * lr_factor(STEPS, cfg=cfg.train, steps_per_epoch=STEPS))
    assert fresh.sched.base_lrs == [0.1] and fresh.sched.get_last_lr() == [group["lr"]]


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    tr, _ = make_trainer(job(), tmp_path, rank=0, world=1)
    reported = []
    tr.hooks = dataclasses.replace(tr.hooks, report=lambda m, s: reported.append(s))
    with torch.no_grad():
        next(tr.module.parameters())[0].fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"weights 0\.weight are not finite .*no checkpoint was written"):
        tr.report({"epoch": 0}, checkpoint=True)
    assert reported == []
    tr.report({"epoch": 0}, checkpoint=False)  # a metrics-only report needs no check
    assert reported == [None]


def test_gpu_worker_without_cuda_fails_before_prepare_model(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda m: pytest.fail("reached prepare_model"))
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.7")
    cfg = JobConfig(cluster=ClusterConfig(use_gpu=True))
    with pytest.raises(GpuError, match=r"10\.0\.0\.7: torch .* driver >= 580 \(CUDA 13\).*use_gpu=false"):
        train_loop_per_worker({"job": cfg, "run_dir": str(tmp_path)})


def test_driver_refuses_before_ray_and_keeps_every_start_config(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_manifest(root / "manifests" / "split1" / "train.tsv", [])
    base = [f"data.root={root}", f"cluster.storage_path={tmp_path / 'runs'}", "cluster.name=r", "model.bits=16"]
    plan = Plan(num_train=0, num_val=0, steps_per_epoch=0, first_epoch=())
    monkeypatch.setattr(driver, "preflight", lambda cfg: plan)  # the data checks have tests of their own
    monkeypatch.setattr(driver, "connect", lambda *a, **k: "local")
    monkeypatch.setattr(driver, "check_capacity", lambda **k: None)
    result = type("Result", (), {"metrics": {}})()
    monkeypatch.setattr(driver, "build_trainer", lambda cfg: None)
    monkeypatch.setattr(driver, "fit", lambda trainer, out, **k: result)
    run = tmp_path / "runs" / "r"
    driver.run_training(load_config(None, base))
    driver.run_training(load_config(None, [*base, "train.lr=0.01"]))
    history = sorted((run / "configs").glob("*.yaml"))
    assert [p.name[:4] for p in history] == ["000-", "001-"]
    assert yaml.safe_load(history[1].read_text())["train"]["lr"] == 0.01
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.01
    ckpt.atomic_save({"config": yaml.safe_load(history[1].read_text())}, run / "checkpoint_x" / ckpt.CHECKPOINT_FILE)
    monkeypatch.setattr(driver, "connect", lambda *a, **k: pytest.fail("Ray was reached"))
    with pytest.raises(ResumeConfigError, match="model.bits"):
        driver.run_training(load_config(None, [*base[:-1], "model.bits=32"]))
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["bits"] == 16  # not overwritten
    assert len(list((run / "configs").glob("*.yaml"))) == 2


@pytest.mark.parametrize("sampler", ["pk", "video", "random"])
def test_a_new_batch_size_is_refused_only_where_it_sizes_the_training_batches(sampler):
    saved = config_to_dict(load_config(None, [f"data.sampler={sampler}", "data.batch_size=16"]))
    current = config_to_dict(load_config(None, [f"data.sampler={sampler}", "data.batch_size=64"]))
    if sampler == "random":  # the global batch is batch_size x workers: the step's meaning changes
        with pytest.raises(ResumeConfigError, match="data.batch_size"):
            check_resume(saved, current, where="ckpt.pt")
    else:  # P x K clips a step; batch_size is only the evaluation's clips a forward
        notices = check_resume(saved, current, where="ckpt.pt").notices()
        assert notices == ["config changed since the checkpoint: data.batch_size 16 -> 64; in effect from now on"]
