"""Checkpoint RNG across nodes with different GPU counts (issue 29, item 3), simulated on CPU: torch.cuda is
replaced by a stand-in with `visible` devices whose generators index like torch.cuda.default_generators.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_rng_devices.py
"""
from __future__ import annotations

import pytest
import torch

from c3dhash.distributed import checkpoint as ckpt


class FakeCuda:
    def __init__(self, monkeypatch, *, visible: int, current: int = 0):
        self.gens = [bytes([d]) * 16 for d in range(visible)]  # one generator state per visible device
        for mod in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(mod, "set_rng_state", self.set, raising=False)
            monkeypatch.setattr(mod, "get_rng_state", self.get, raising=False)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.get(d) for d in range(visible)])
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)

    def _index(self, device) -> int:
        i = device.index if isinstance(device, torch.device) else int(device)
        if i >= len(self.gens):  # torch.cuda.default_generators[i]
            raise IndexError("tuple index out of range")
        return i

    def get(self, device=0) -> torch.Tensor:
        return torch.frombuffer(bytearray(self.gens[self._index(device)]), dtype=torch.uint8)

    def set(self, state: torch.Tensor, device=0) -> None:
        self.gens[self._index(device)] = bytes(state.tolist())


def test_a_checkpoint_holds_only_this_ranks_device_generator(monkeypatch):
    FakeCuda(monkeypatch, visible=4, current=2)
    state = ckpt.rng_state()
    assert "cuda" not in state and state["cuda_device"] == bytes([2]) * 16


@pytest.mark.parametrize("current", [0, 1])
def test_an_old_checkpoint_with_more_cuda_states_than_devices_restores(monkeypatch, current):
    """Saved by rank 0 on a 4-GPU node (get_rng_state_all: 4 states), restored by a rank that sees 2 GPUs
    (an elastic 4 + 2 resize): set_rng_state_all indexed past the 2 generators and raised IndexError."""
    saved = {"torch": ckpt._to_bytes(torch.get_rng_state()), "cuda": [bytes([10 + d]) * 16 for d in range(4)]}
    fake = FakeCuda(monkeypatch, visible=2, current=current)
    ckpt.set_rng_state(saved)
    assert fake.gens[current] == bytes([10 + current]) * 16  # this device's own entry
    assert fake.gens[1 - current] == bytes([1 - current]) * 16  # the other device untouched


def test_a_new_checkpoint_restores_onto_a_node_with_one_gpu(monkeypatch):
    FakeCuda(monkeypatch, visible=4, current=3)
    state = ckpt.rng_state()
    fake = FakeCuda(monkeypatch, visible=1)
    ckpt.set_rng_state(state)
    assert fake.gens == [bytes([3]) * 16]
