"""bench/gpu_check.py on CPU at toy sizes, as on a bare PyTorch image (no Ray, DALI or numba), plus the
exactness of its torch Hamming search against eval/'s numba kernels, and the teeth of its resume check.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_gpu_check.py
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.subprocess

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
BLOCKED = ("ray", "nvidia", "numba", "llvmlite", "av")
# Runs the script with those packages unimportable, as on an image that has only torch and torchvision.
RUNNER = f"""
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked (not on the GPU image)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = [{str(SCRIPT)!r}, "--device", "cpu", "--tiny", "--threads", "1"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cpu_tiny_run_passes_every_check_without_ray_dali_or_numba():
    proc = subprocess.run([sys.executable, "-c", RUNNER], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gpu_check = load_module(SCRIPT, "gpu_check")
    names = [line.split(":")[0] for line in lines]
    assert list(dict.fromkeys(names)) == [f"PASS {n}" for n in gpu_check.CHECKS] + ["PASS all"]
    search = next(line for line in lines if line.startswith("PASS search"))
    assert "CPU (numpy)" in search and "top-k identical" in search  # numba blocked: the numpy reference
    assert "bit-identical" in next(line for line in lines if line.startswith("PASS resume"))
    train = [line.split(": ")[1] for line in lines if line.startswith("PASS train")]
    assert train == ["b3 fp32", "b3 fp32 cl3d", "b3 bf16", "b3 bf16 cl3d"]  # every configuration, one line each
    assert not [line for line in lines if line.startswith("PASS train") and "loss 0.000" in line]  # triplets


def test_torch_search_equals_eval_numba_kernels_with_many_ties(monkeypatch):
    from c3dhash.eval.codes import Codes
    from c3dhash.eval.search.searcher import topk
    from c3dhash.eval.kernels.torch_hamming import popcount_torch
    from c3dhash.eval.metrics.exact import evaluate

    search = load_module(REPO / "bench" / "gpu_check_search.py", "gpu_check_search")
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**64, size=40, dtype=np.uint64)  # 40 distinct codes over 3000 items: ties
    db, q = values[rng.integers(0, 40, (3000, 1))], rng.integers(0, 2**64, size=(50, 1), dtype=np.uint64)
    dbl, ql = rng.integers(0, 7, 3000), rng.integers(0, 8, 50)  # label 7: queries with no relevant item
    tq, tdb = (torch.from_numpy(a.view(np.int64)) for a in (q, db))
    idx, dist = search.topk_torch(tq, tdb, 100)
    ref_idx, ref_dist = topk(q, db, 100)
    assert np.array_equal(idx.numpy(), ref_idx) and np.array_equal(dist.numpy(), ref_dist)
    ap = search.average_precision_torch(tq, torch.from_numpy(ql), tdb, torch.from_numpy(dbl))
    codes = [Codes(c, 64, lab, np.arange(len(c)).astype(str)) for c, lab in ((q, ql), (db, dbl))]
    assert abs(ap.mean().item() - evaluate(*codes)["map_all"]) <= 1e-12
    np_idx, np_dist, np_map = search._numpy_reference(q, ql, db, dbl, 100)
    assert np.array_equal(np_idx, ref_idx) and np.array_equal(np_dist, ref_dist)
    assert abs(np_map - evaluate(*codes)["map_all"]) <= 1e-12
    words = np.concatenate([db[:, 0], values, [np.uint64(0), np.uint64(2**64 - 1)]])
    expected = np.array([bin(int(w)).count("1") for w in words])
    assert np.array_equal(popcount_torch(torch.from_numpy(words.view(np.int64))).numpy(), expected)
    monkeypatch.delattr(np, "bitwise_count")  # numpy < 2 has none: the SWAR fallback must agree
    assert np.array_equal(search._np_popcount(words), expected)


@pytest.mark.parametrize("broken", ["rng", "optimizer"])
def test_resume_check_fails_when_the_restore_is_incomplete(monkeypatch, broken):
    gpu_check = load_module(SCRIPT, "gpu_check")
    if broken == "rng":  # the Trainer's own restore path (distributed/checkpoint.py), not a copy of it
        monkeypatch.setattr("c3dhash.distributed.checkpoint.set_rng_state", lambda state: None)
    else:
        monkeypatch.setattr(torch.optim.SGD, "load_state_dict", lambda self, state: None)
    torch.set_num_threads(1)
    with pytest.raises(AssertionError, match="next-step loss|differ|momentum"):
        gpu_check.check_resume(torch.device("cpu"), gpu_check.TINY)


def test_index_less_cuda_resolves_to_the_current_device():
    """`--device cuda` (the default) became torch.device("cuda"): set_device raised ValueError on it and
    init_process_group got an index-less device_id. Resolved with a stand-in for torch.cuda.current_device."""
    gpu_check = load_module(SCRIPT, "gpu_check")
    assert gpu_check.resolve_device("cuda", current=lambda: 3) == torch.device("cuda", 3)
    assert gpu_check.resolve_device("cuda:1", current=lambda: 3) == torch.device("cuda", 1)
    assert gpu_check.resolve_device("cpu") == torch.device("cpu")
    assert gpu_check.pg_device_id(torch.device("cuda", 2)) == torch.device("cuda", 2)
    assert gpu_check.pg_device_id(torch.device("cpu")) is None
    with pytest.raises(AssertionError, match="resolve_device first"):
        gpu_check.pg_device_id(torch.device("cuda"))


def test_cuda_branch_of_main_sets_an_indexed_device(monkeypatch, capsys):
    """main()'s CUDA branch on a CPU machine, as far as it goes without a GPU: the device it sets is indexed,
    cuDNN autotuning is on, and a check that needs no kernels (flops, on the meta device) passes."""
    gpu_check = load_module(SCRIPT, "gpu_check")
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert gpu_check.main(["--only", "flops", "--tiny"]) == 0
    assert calls == [torch.device("cuda", 1)] and torch.backends.cudnn.benchmark is True
    assert "PASS flops" in capsys.readouterr().out


def test_without_a_gpu_the_default_device_fails_in_one_line(monkeypatch, capsys):
    gpu_check = load_module(SCRIPT, "gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--tiny"]) == 1
    assert capsys.readouterr().out.startswith("FAIL gpu: torch.cuda.is_available() is False")
