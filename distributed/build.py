"""What a Trainer is made of, built from the job config on one rank: the net and this rank's data.

    net = build_model(job, device)                      # seeded, SyncBN when the world has > 1 rank; unwrapped
    train_loader, queries, database = build_data(job, device)
    Trainer(job=job, model=wrap(net), device=device, train_loader=train_loader, queries=queries, ...)

The Ray adapter (distributed/worker.py) wraps the net with ray.train.torch.prepare_model; a plain gloo or
single process passes DDP(net) or the net itself. The eval loaders are built once per run and re-iterated at
every validation (the skip list was applied once, by load_split).
"""
from __future__ import annotations

import dataclasses

import torch

from c3dhash.distributed.env import get_rank, get_world_size
from c3dhash.distributed.job import JobConfig
from c3dhash.distributed.syncbn import convert_sync_bn
from c3dhash.distributed.trainer import EvalSet
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.pipelines import TrainLoader, build_copy_loader, build_eval_loader, build_train_loader
from c3dhash.loaders.splits import load_split
from c3dhash.model.hashnet import build_from_config


def build_model(job: JobConfig, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(job.train.seed)  # same init everywhere (DDP also broadcasts rank 0's weights)
    net: torch.nn.Module = build_from_config(job.model)
    if job.train.sync_bn and get_world_size() > 1:
        net = convert_sync_bn(net)
    if job.model.channels_last and device.type == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
    return net


def build_data(job: JobConfig, device: torch.device) -> tuple[TrainLoader, EvalSet | None, EvalSet | None]:
    """This rank's training loader and its shards of the validation queries and the training database."""
    d, rank, world = job.data, get_rank(), get_world_size()
    device_id = device.index if device.type == "cuda" else None
    train_recs, val_recs = load_split(d, "train"), load_split(d, "val")
    train = build_train_loader(train_recs, d.root, d, rank=rank, world_size=world, device_id=device_id,
                               steps=job.train.steps_per_epoch)
    if not val_recs:
        return train, None, None
    if d.sampler == "video":
        return (train, *neardup_sets(job, train_recs, val_recs, rank=rank, world=world, device_id=device_id))
    queries = EvalSet(val_recs, build_eval_loader(val_recs, d.root, d, rank=rank, world_size=world,
                                                  device_id=device_id))
    database = EvalSet(train_recs, build_eval_loader(train_recs, d.root, d, rank=rank, world_size=world,
                                                     device_id=device_id))
    return train, queries, database


def neardup_sets(job: JobConfig, train_recs: list[VideoRecord], val_recs: list[VideoRecord], *, rank: int,
                 world: int, device_id: int | None) -> tuple[EvalSet, EvalSet]:
    """Validation without labels (data.sampler=video): augmented copies of the val videos (build_copy_loader)
    query the val originals among the train videos; labels = video ids, so val mAP is near-duplicate mAP and
    model selection never sees a class label. Class mAP is measured afterwards (c3dhash eval, bench neardup)."""
    d = job.data
    ids = [dataclasses.replace(r, label=i) for i, r in enumerate(val_recs)]
    db = ids + [dataclasses.replace(r, label=len(ids) + i) for i, r in enumerate(train_recs)]
    copies = build_copy_loader(ids, d.root, d, rank=rank, world_size=world, device_id=device_id,
                               seed=job.train.seed + 1)
    return EvalSet(ids, copies), EvalSet(db, build_eval_loader(db, d.root, d, rank=rank, world_size=world,
                                                               device_id=device_id))
