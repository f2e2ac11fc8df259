"""The train/eval loaders' data path (issue 29, items 6 and 7): files are read on a reader thread ahead of
DALI, with the very clips, substitutions and tensors of the serial path, and one DALI pipeline serves a
loader for its whole life.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_loader_prefetch.py
"""
from __future__ import annotations

import dataclasses
import threading
import time
import warnings

import pytest
import torch

from c3dhash.loaders import pipelines
from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.prefetch import Prefetcher
from tests.videos import make_dataset

SIZE = (32, 48)
CFG = DataConfig(num_frames=4, stride=2, resize=(24, 36), crop=(16, 16), pk_classes=2, pk_samples=2,
                 batch_size=3, clips_per_video=2, num_threads=1, seed=0)


class SerialReader:
    """Today's path before the fix: prepare() called inside DALI's callback, on the training thread."""

    def __init__(self, prepare, batches, *, depth: int = 0):
        self.prepare, self.batches = prepare, batches
        self.threads: set[str] = set()

    def get(self):
        self.threads.add(threading.current_thread().name)
        return self.prepare(next(self.batches))

    def stop(self) -> list:
        return []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("vp9")
    records = make_dataset(root, classes=3, per_class=4, frames=8, size=SIZE, codec="vp9")
    (root / records[5].path).write_bytes(b"\x1a\x45" * 500)  # replaced at train time, left out at eval
    return root, records


def run_epochs(loader, epochs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for e in range(epochs):
        loader.set_epoch(e)
        out += list(loader)
    return out


def test_prefetched_train_clips_equal_the_serial_path_and_one_pipeline_serves_3_epochs(dataset, monkeypatch):
    root, records = dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = pipelines.build_train_loader(records, root, CFG, rank=0, world_size=1, device_id=None)
        got = run_epochs(loader, 3)
        assert loader.decoder.builds == 1  # was one per epoch (3), plus one per decode failure
        monkeypatch.setattr(pipelines, "Prefetcher", SerialReader)
        serial = pipelines.build_train_loader(records, root, CFG, rank=0, world_size=1, device_id=None)
        want = run_epochs(serial, 3)
    assert len(got) == len(want) == 3 * len(loader) and list(loader.skipped) == [records[5].path]
    for (x, y), (x0, y0) in zip(got, want):
        assert torch.equal(x, x0) and torch.equal(y, y0)  # clips, crops, flips and substitutions, bit for bit


def test_eval_loader_keeps_its_pipeline_across_passes(dataset):
    root, records = dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = pipelines.build_eval_loader(records, root, CFG, rank=0, world_size=1, device_id=None)
        first, second = list(loader), list(loader)
    assert loader.decoder.builds == 1 and len(first) == len(second) == len(loader)
    for a, b in zip(first, second):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert 5 not in torch.cat([v for _, _, v in first]).tolist()


def test_reads_happen_off_the_consuming_thread_and_ahead_of_it():
    seen, started = [], threading.Event()

    def prepare(b: int) -> int:
        seen.append((b, threading.current_thread().name))
        started.set()
        return b * 10
    reader = Prefetcher(prepare, iter(range(6)), depth=3)
    started.wait(5)
    time.sleep(0.2)
    assert len(seen) >= 3  # three prepared while nobody consumed
    assert [reader.get() for _ in range(2)] == [0, 10]
    rest = reader.stop()
    assert sorted(b for b, _ in seen) == list(range(len(seen))) and rest == list(range(2, len(rest) + 2))
    assert {name for _, name in seen} == {"c3dhash-reader"}


def test_a_prepare_error_surfaces_in_order_in_the_consumer():
    def prepare(b: int) -> int:
        if b == 2:
            raise ValueError("bad batch 2")
        return b
    reader = Prefetcher(prepare, iter(range(5)), depth=2)
    assert [reader.get(), reader.get()] == [0, 1]
    with pytest.raises(ValueError, match="bad batch 2"):
        reader.get()
    with pytest.raises(StopIteration):
        reader.get()
    reader.stop()


def test_an_abandoned_epoch_rebuilds_rather_than_reusing_stale_prefetched_batches(dataset):
    root, records = dataset
    cfg = dataclasses.replace(CFG, pk_classes=2, pk_samples=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = pipelines.build_train_loader(records, root, cfg, rank=0, world_size=1, device_id=None)
        full = list(loader)
        it = iter(loader)
        next(it)
        it.close()  # the consumer stopped half-way
        again = list(loader)
    assert loader.decoder.builds == 2 and len(again) == len(full)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full, again))
