"""CPU training step of the hash net per clip geometry and setting: seconds per step, ratio vs the shipped one.

    .venv/bin/python bench/bench_step.py                        # the demo's per-worker batch (8 clips), 1 thread
    c3dhash bench step -- --batch 16 --threads 1 2 --repeats 5
    c3dhash bench step -- --geometry 8x32 4x32 4x24 --channels-last both

One step = forward of r3d_18 + hash head (+ head_norm as configured), the all-triplet loss, backward and the
fused AdamW step of distributed/optim.py: what a demo worker does per step minus the gloo all-reduce and the
loader (they are measured by `c3dhash bench loader`). Geometry FxS = F frames of S x S pixels. The first step
(oneDNN primitive creation) is not timed; the best of --repeats steps is reported (least disturbed by other
load), with the load average beside it. The FLOPs of r3d_18 scale with F x S^2 (every layer keeps the clip's
aspect), and on one Zen3 core the step runs at ~60 GFLOP/s, near its FMA peak: it is compute bound, so
only a smaller clip makes it faster (channels_last_3d, oneDNN and threads are measured, not assumed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch


from c3dhash.cluster.config import load_config  # noqa: E402
from c3dhash.distributed.optim import build_optimizer  # noqa: E402
from c3dhash.distributed.triplet import all_triplet_loss  # noqa: E402
from c3dhash.model.hashnet import build_hash_net  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synth-cpu.yaml"


def step_seconds(*, frames: int, size: int, batch: int, classes: int, channels_last: bool, head_norm: bool,
                 bits: int, margin: float, repeats: int, train_cfg) -> float:
    torch.manual_seed(0)
    net = build_hash_net(bits=bits, channels_last=channels_last, head_norm=head_norm).train()
    opt = build_optimizer(net.parameters(), train_cfg, batch=batch)
    x = torch.randn(batch, 3, frames, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    labels = torch.arange(batch) % classes
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss = all_triplet_loss(net(x), labels, margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step creates oneDNN primitives
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG), help="bits, margin, head_norm, optimiser and geometry from it")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--geometry", nargs="+", default=["8x32", "4x32", "8x24", "4x24"], help="FRAMESxPIXELS")
    p.add_argument("--batch", type=int, default=0, help="clips per step (default: the config's P x K / workers)")
    p.add_argument("--classes", type=int, default=8, help="P when the config's is 0 (every class; no data here)")
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--channels-last", choices=("off", "on", "both"), default="both")
    p.add_argument("--onednn", choices=("on", "off", "both"), default="on",
                   help="torch.backends.mkldnn.enabled: oneDNN conv3d kernels, or torch's native ones")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    workers = cfg.cluster.num_workers if isinstance(cfg.cluster.num_workers, int) else cfg.cluster.num_workers[1]
    classes = cfg.data.pk_classes or a.classes
    batch = a.batch or max(1, classes * cfg.data.pk_samples // workers)
    shipped = f"{cfg.data.num_frames}x{cfg.data.crop[0]}"
    layouts = {"off": [False], "on": [True], "both": [False, True]}[a.channels_last]
    onednn = {"off": [False], "on": [True], "both": [True, False]}[a.onednn]
    print(f"train step, {cfg.model.backbone} + {cfg.model.bits} bits (head_norm {cfg.model.head_norm}), batch "
          f"{batch}, best of {a.repeats}; the config's geometry is {shipped}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    rows = []
    for threads, geo, cl, dnn in [(t, g, c, d) for t in a.threads for g in a.geometry for c in layouts for d in onednn]:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = dnn
        frames, size = (int(v) for v in geo.lower().split("x"))
        s = step_seconds(frames=frames, size=size, batch=batch, classes=classes, channels_last=cl,
                         head_norm=cfg.model.head_norm, bits=cfg.model.bits, margin=cfg.loss.margin,
                         repeats=a.repeats, train_cfg=cfg.train)
        rows.append((threads, geo, cl, dnn, s))
        ref = next((r[4] for r in rows if r[0] == threads and r[1] == shipped and not r[2] and r[3]), None)
        ratio = f"{ref / s:5.2f}x" if ref else "    -"
        flags = f"channels_last_3d {'on ' if cl else 'off'}  oneDNN {'on ' if dnn else 'off'}"
        print(f"  threads {threads}  {geo:>6}  {flags}  {s:6.3f} s/step  {batch / s:6.1f} clips/s  {ratio} vs "
              f"{shipped}", flush=True)
    print(f"load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("step"):
        main()
