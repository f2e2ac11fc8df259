"""GPU readiness check: the GPU paths of training and retrieval, on one GPU, with plain python3.

    python3 bench/gpu_check.py                       # on a GPU node: torch + torchvision; no Ray, DALI or numba
    python3 bench/gpu_check.py --device cpu --tiny --threads 1   # toy sizes, seconds (tests/test_gpu_check.py)
    python3 bench/gpu_check.py --only train,resume   # a subset (names: see CHECKS)

One line per check (per configuration for `train`), `PASS <name>: <figures>` or `FAIL <name>: <why>`, then
`PASS all` or `FAIL all`; exit status 1 if any failed; target
under 8 minutes on a GPU. Checks: the GPU itself (compute capability within torch 2.14 cu130's sm_75..sm_120);
an r3d_18 + hash head training step at 16 x 112 x 112, batch 16 and 32, fp32 and bf16 autocast, without and
with channels_last_3d (clips/s, peak memory); the FLOPs of a training clip (fwd + bwd, counted) and the
GPU's measured bf16 matmul rate, hence the fraction of that peak the best step reaches; the Trainer's
own checkpoint (Trainer.state_dict, atomic_save) restored by Trainer.restore on the GPU, whose next step must
be bit-identical to the run that did not stop; the all-triplet loss forward + backward at global batch 1024 and
4096; the GPU SyncBN kernels in a one-process group against BatchNorm; exact Hamming top-100 and mAP@all over
1e6 x 64-bit codes in torch on the GPU, equal to the CPU results (bench/gpu_check_search.py).

Imports only model/, distributed/ modules that need torch alone, loaders.atomic and eval.codes (numba is
optional: it only picks the CPU reference), so it runs on a bare PyTorch image (tests/test_gpu_check.py runs
it with ray, nvidia.dali and numba made unimportable).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the resume check
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # gpu_check_search, beside this file
if importlib.util.find_spec("c3dhash") is None:  # a bare checkout (the GPU image has torch, no install):
    _spec = importlib.util.spec_from_file_location(  # its root is the package, as setup.py maps it
        "c3dhash", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    sys.modules["c3dhash"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["c3dhash"])

from c3dhash.distributed import checkpoint as ckpt  # noqa: E402
from c3dhash.distributed.triplet import all_triplet_loss  # noqa: E402
from c3dhash.model import build_hash_net  # noqa: E402

MARGIN, BITS, PER_CLASS = 20.0, 64, 4


@dataclass(frozen=True)
class Sizes:
    clip: tuple[int, int, int]  # T, H, W
    batches: tuple[int, ...]
    steps: int  # timed steps per training configuration
    warmup: int  # untimed steps before (cuDNN plans, allocator)
    loss_batches: tuple[int, ...]
    codes: int
    queries: int
    k: int
    matmul: int


FULL = Sizes((16, 112, 112), (16, 32), 5, 2, (1024, 4096), 1_000_000, 1000, 100, 8192)
TINY = Sizes((2, 16, 16), (3,), 1, 0, (64, 128), 20_000, 16, 10, 512)  # r3d_18 still downsamples to 1x1x1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else "n/a (CPU)"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def batch(n: int, clip: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clips and P x K labels (PER_CLASS clips per class, 2 in tiny batches so that triplets exist),
    drawn from the torch RNGs."""
    x = torch.randn((n, 3, *clip), device=device)
    labels = torch.randperm(n) // (PER_CLASS if n >= 2 * PER_CLASS else 2)  # CPU RNG: resume restores both
    return x, labels.to(device)


def train_step(net, opt, x, labels, *, bf16: bool) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        h = net(x)
    loss = all_triplet_loss(h.float(), labels, MARGIN)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def check_gpu(device: torch.device, sizes: Sizes) -> str:
    if device.type != "cuda":
        return f"torch {torch.__version__} on CPU (no GPU checks of the hardware)"
    assert torch.cuda.is_available(), "torch.cuda.is_available() is False: driver older than R580 or no GPU"
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    assert (7, 5) <= (major, minor) <= (12, 0), f"{name} is sm_{major}{minor}; torch cu130 needs sm_75..sm_120"
    return f"{name} sm_{major}{minor}, torch {torch.__version__} CUDA {torch.version.cuda}"


def check_train(device: torch.device, sizes: Sizes, results: dict) -> list[str]:
    """Every (batch, precision, layout) configuration, one line each; the best rate is kept for the MFU line."""
    parts = []
    for n in sizes.batches:
        for bf16 in (False, True):
            for channels_last in (False, True):
                torch.manual_seed(0)
                net = build_hash_net(bits=BITS, channels_last=channels_last).to(device)
                opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
                x, labels = batch(n, sizes.clip, device)
                for _ in range(sizes.warmup):
                    train_step(net, opt, x, labels, bf16=bf16)
                reset_peak(device)
                sync(device)
                t0 = time.perf_counter()
                for _ in range(sizes.steps):
                    loss = train_step(net, opt, x, labels, bf16=bf16)
                sync(device)
                rate = n * sizes.steps / (time.perf_counter() - t0)
                assert math.isfinite(loss.item()), f"loss {loss.item()} at batch {n}"
                tag = f"b{n} {'bf16' if bf16 else 'fp32'}{' cl3d' if channels_last else ''}"
                parts.append(f"{tag}: {rate:.1f} clips/s, peak memory {peak_mib(device)}, loss {loss.item():.3f}")
                results["best_rate"] = max(results.get("best_rate", 0.0), rate)
                del net, opt
    return parts


def check_flops(device: torch.device, sizes: Sizes, results: dict) -> str:
    """FLOPs of one clip counted by torch's FlopCounterMode (2 per multiply-add) on the meta device (shapes
    only, nothing computed; the count does not depend on the device): forward, and forward + backward. Two
    clips are counted (train-mode BatchNorm needs more than one value per channel), then halved."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_hash_net(bits=BITS).to("meta")
    x = torch.randn((2, 3, *sizes.clip), device="meta")
    with FlopCounterMode(display=False) as fwd:
        net(x)
    with FlopCounterMode(display=False) as both:
        net(x).sum().backward()
    f, fb = fwd.get_total_flops() / 2, both.get_total_flops() / 2
    assert f > 0 and 2.5 <= fb / f <= 3.5, f"forward {f}, forward + backward {fb}"
    results["clip_flops"] = fb
    return (f"one {'x'.join(map(str, sizes.clip))} clip: forward {f / 1e9:.2f} GFLOP, forward + backward "
            f"{fb / 1e9:.2f} GFLOP ({fb / f:.2f}x forward)")


def check_matmul(device: torch.device, sizes: Sizes, results: dict) -> str:
    n = sizes.matmul
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    rate = 2 * n ** 3 * reps / (time.perf_counter() - t0)
    results["matmul_rate"] = rate
    line = f"bf16 {n}x{n} matmul {rate / 1e12:.3g} TFLOP/s"
    if results.get("best_rate") and results.get("clip_flops"):
        used = results["best_rate"] * results["clip_flops"]
        line += (f"; best training step {results['best_rate']:.1f} clips/s x {results['clip_flops'] / 1e9:.1f} "
                 f"GFLOP = {used / 1e12:.2f} TFLOP/s = {used / rate:.1%} of it")
    return line


class Batches:
    """The Trainer's train loader here: `steps` batches of random clips drawn from the torch RNGs at iteration
    time, so a restored RNG state must reproduce the next batch too."""

    def __init__(self, n: int, clip: tuple[int, int, int], device: torch.device, steps: int):
        self.n, self.clip, self.device, self.steps = n, clip, device, steps

    @property
    def batch_size(self) -> int:
        """Clips per step, all ranks (the Trainer scales train.lr by it when train.lr_batch is set)."""
        return self.n

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int, *, start_step: int = 0) -> None:
        pass

    def __iter__(self):
        for _ in range(self.steps):
            yield batch(self.n, self.clip, self.device)


def trainer(device: torch.device, sizes: Sizes, run_dir: Path, seed: int):
    """A distributed.trainer.Trainer as the workers build it (optimiser, scheduler, amp from the config)."""
    from c3dhash.distributed.job import JobConfig
    from c3dhash.distributed.config import LossConfig, TrainConfig
    from c3dhash.distributed.trainer import Trainer
    from c3dhash.model.config import ModelConfig

    torch.manual_seed(seed)
    job = JobConfig(model=ModelConfig(bits=BITS), loss=LossConfig(margin=MARGIN),
                    train=TrainConfig(epochs=1, lr=1e-2, schedule="step", step_epochs=1, gamma=0.5, amp="auto"))
    net = build_hash_net(bits=BITS).to(device)
    return Trainer(job=job, model=net, device=device, train_loader=Batches(sizes.batches[0], sizes.clip, device, 4),
                   queries=None, database=None, run_dir=run_dir)


def run_resume(device: torch.device, sizes: Sizes, ckpt_path: Path) -> None:
    """Train 2 steps, save the Trainer's state_dict, train 1 more; a fresh Trainer (other weights, other RNG
    states) restores through Trainer.restore, the code users run (CPU load, then load_state_dict moves the
    tensors, RNG bytes, scheduler, position) and trains that step: loss, parameters and optimiser state must
    be bit-identical."""
    def steps(t, k: int) -> float:
        it = iter(t.train_loader)
        for _ in range(k):
            clips, labels = next(it)
            loss = float(t.train_step(clips, labels)[0])
        return loss

    t = trainer(device, sizes, ckpt_path.parent, seed=0)
    steps(t, 2)
    t.state.step_in_epoch = t.state.global_step = 2
    ckpt.atomic_save(t.state_dict(), ckpt_path)
    ref_loss = steps(t, 1)
    ref = {k: v.clone() for k, v in t.module.state_dict().items()}
    ref_opt = [s["momentum_buffer"].clone() for s in t.opt.state.values()]

    t = trainer(device, sizes, ckpt_path.parent, seed=1)  # other weights and RNG states
    t.restore(ckpt_path)
    assert t.state.global_step == 2, f"restored position {t.state}"
    loss = steps(t, 1)
    assert loss == ref_loss, f"next-step loss {loss!r} vs {ref_loss!r}"
    differ = [k for k, v in t.module.state_dict().items() if not torch.equal(v, ref[k])]
    assert not differ, f"{len(differ)} tensors differ after the resumed step, e.g. {differ[0]}"
    assert all(torch.equal(s["momentum_buffer"], r) for s, r in zip(t.opt.state.values(), ref_opt)), "momentum"


def check_resume(device: torch.device, sizes: Sizes) -> str:
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_resume(device, sizes, Path(tmp) / "checkpoint.pt")
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[:2]
        torch.use_deterministic_algorithms(flags[2])
    return (f"Trainer.state_dict at step 2 restored by Trainer.restore on {device}: step 3 loss, all weights, "
            f"BN statistics and momentum bit-identical to the uninterrupted run")


def check_loss(device: torch.device, sizes: Sizes) -> str:
    parts = []
    for n in sizes.loss_batches:
        g = torch.Generator().manual_seed(n)
        h = torch.tanh(torch.randn(n, BITS, generator=g)).to(device).requires_grad_(True)
        labels = (torch.randperm(n, generator=g) // 8).to(device)  # 8 clips per class
        all_triplet_loss(h, labels, MARGIN).backward()  # warm-up
        reset_peak(device)
        best = float("inf")
        for _ in range(3):
            h.grad = None
            sync(device)
            t0 = time.perf_counter()
            loss = all_triplet_loss(h, labels, MARGIN)
            loss.backward()
            sync(device)
            best = min(best, time.perf_counter() - t0)
        assert math.isfinite(loss.item()) and torch.isfinite(h.grad).all(), f"non-finite at B={n}"
        parts.append(f"B={n} {best * 1e3:.1f} ms {peak_mib(device)}")
    return "forward + backward, best of 3: " + "; ".join(parts)


def check_syncbn(device: torch.device, sizes: Sizes) -> str:
    """The branch GatherSyncBatchNorm takes on this device in a process group, against BatchNorm3d."""
    import torch.distributed as dist
    from torch import nn
    from torch.nn.modules._functions import SyncBatchNorm as TorchSyncBN

    from c3dhash.distributed.syncbn import _CpuSyncBatchNorm

    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{tmp}/pg",
                                rank=0, world_size=1, device_id=pg_device_id(device))
        try:
            torch.manual_seed(0)
            bn = nn.BatchNorm3d(64).to(device)
            nn.init.normal_(bn.weight)
            nn.init.normal_(bn.bias)
            x = (torch.randn((sizes.batches[0], 64, *[max(2, s // 4) for s in sizes.clip]), device=device) * 3 + 1)
            x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
            w2, b2 = (p.detach().clone().requires_grad_() for p in (bn.weight, bn.bias))
            rm, rv = torch.zeros(64, device=device), torch.ones(64, device=device)
            y1 = bn(x1)
            if device.type == "cuda":  # exactly GatherSyncBatchNorm.forward's call on CUDA tensors
                y2 = TorchSyncBN.apply(x2, w2, b2, rm, rv, bn.eps, bn.momentum, dist.group.WORLD, 1)
            else:
                y2 = _CpuSyncBatchNorm.apply(x2, w2, b2, rm, rv, bn.eps, bn.momentum, 1)
            dy = torch.randn_like(y1)
            (y1 * dy).sum().backward()
            (y2 * dy).sum().backward()
        finally:
            dist.destroy_process_group()
    pairs = {"output": (y1, y2), "grad x": (x1.grad, x2.grad), "grad w": (bn.weight.grad, w2.grad),
             "grad b": (bn.bias.grad, b2.grad), "running mean": (bn.running_mean, rm),
             "running var": (bn.running_var, rv)}
    gaps = {k: float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for k, (a, b) in
            ((k, (a.detach(), b.detach())) for k, (a, b) in pairs.items())}
    worst = max(gaps, key=gaps.get)
    # different kernels (cuDNN BN vs SyncBN's stats/elemt), float32: relative differences of ~1e-6 expected
    assert gaps[worst] <= 1e-4, f"{worst} differs from BatchNorm3d by {gaps[worst]:.2e} (relative)"
    return f"one-process {dist.Backend.NCCL if device.type == 'cuda' else 'gloo'} group: output, gradients " \
           f"and running stats equal BatchNorm3d (worst: {worst}, relative {gaps[worst]:.1e})"


def pg_device_id(device: torch.device) -> torch.device | None:
    """init_process_group's device_id: an indexed CUDA device (an index-less one is refused), None on CPU."""
    if device.type != "cuda":
        return None
    assert device.index is not None, f"{device}: resolve_device first"
    return device


def resolve_device(name: str, current: Callable[[], int] | None = None) -> torch.device:
    """`cuda` -> `cuda:<current device>`: torch.cuda.set_device and init_process_group(device_id=...) need the
    index; `cuda:N` and `cpu` as given."""
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", (current or torch.cuda.current_device)())
    return device


def check_search(device: torch.device, sizes: Sizes) -> str:
    from gpu_check_search import check

    return check(device, n=sizes.codes, queries=sizes.queries, k=sizes.k)


CHECKS: dict[str, Callable[..., str | list[str]]] = {
    "gpu": check_gpu, "train": check_train, "flops": check_flops, "matmul": check_matmul,
    "resume": check_resume, "loss": check_loss, "syncbn": check_syncbn, "search": check_search}
WITH_RESULTS = {"train", "flops", "matmul"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (seconds on a CPU)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = TINY if args.tiny else FULL
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("FAIL gpu: torch.cuda.is_available() is False (no GPU visible, or a driver older than R580 "
              "for torch's CUDA 13 build)")
        return 1
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed clip shapes: as the workers run (check_resume turns it off)
    names = [n for n in args.only.split(",") if n] or list(CHECKS)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        p.error(f"--only: unknown check(s) {unknown}; choose from {','.join(CHECKS)}")
    results: dict = {}
    failed, start = 0, time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        try:
            extra = (results,) if name in WITH_RESULTS else ()
            out = CHECKS[name](device, sizes, *extra)
            lines = [f"PASS {name}: {item}" for item in ([out] if isinstance(out, str) else out)]
        except Exception as exc:  # one failed check must not hide the others
            failed += 1
            lines = [f"FAIL {name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
        lines[-1] += f" [{time.perf_counter() - t0:.1f} s]"
        print("\n".join(lines), flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{'FAIL' if failed else 'PASS'} all: {len(names) - failed}/{len(names)} checks passed in "
          f"{time.perf_counter() - start:.0f} s (load average {load})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("gpu-check"):
        code = main()
    sys.exit(code)
