"""Does the data path keep an accelerator busy? The real train loader and Trainer loop on CPU, with the
accelerator's step simulated by a sleep of S ms, with and without a slow filesystem (L ms per file read).

    c3dhash bench pipeline                               # S = 100 ms, L = 0 and 20 ms, the demo's geometry
    c3dhash bench pipeline -- --step-ms 100 --read-ms 20 --steps 12 --serial

For each L: `load` = seconds per step of the loader alone (no step), then steps/s of
Trainer.train_epoch with the sleeping step; the ideal is 1 / max(load, S): a data path that overlaps with
the step runs at the slower of the two, a serial one at their sum. Target (issue 29): >= 0.9 of the ideal at
L = 20 ms, S = 100 ms. `--serial` also measures the path before issue 29 (files read inside DALI's callback,
one after another) for comparison. Synthetic VP9 videos (loaders/synth.py) at configs/synth-cpu.yaml's clip
geometry and P x K; an untimed warm-up epoch first (pipeline build, frame counts, the page cache).
Writes bench/results/pipeline-<cpu>-<date>.md (commit, CPU, load average) besides printing.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import tempfile
import time
from pathlib import Path

import torch

from c3dhash.cluster.config import load_config
from c3dhash.distributed.trainer import Trainer
from c3dhash.loaders import pipelines
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.synth import make_synth_dataset
from c3dhash.bench.results import commit, cpu, default_folder

ROOT = Path(__file__).resolve().parents[1]


class SleepStep(Trainer):
    """The Trainer's own epoch loop (set_epoch, iteration, host transfer, logging); the accelerator's forward
    and backward replaced by a sleep of `step_s`."""
    step_s = 0.1

    def train_step(self, clips: torch.Tensor, labels: torch.Tensor):
        time.sleep(self.step_s)
        return 0.0, 0.0, torch.zeros(len(clips), self.job.model.bits), len(clips)


class SerialReader:
    """The data path before issue 29: each batch's files read (one by one) inside DALI's callback."""

    def __init__(self, prepare, batches, *, depth: int = 0):
        self.prepare, self.batches = prepare, batches

    def get(self):
        return self.prepare(next(self.batches))

    def stop(self) -> list:
        return []


def slow_reads(loader, read_s: float) -> None:
    real = loader.decoder.read_file

    def read(path: Path) -> bytes:
        time.sleep(read_s)  # a network filesystem's per-file latency
        return real(path)
    loader.decoder.read_file = read


def measure(records, root: Path, cfg, *, steps: int, step_s: float, read_s: float) -> dict[str, float]:
    loader = pipelines.build_train_loader(records, root, cfg.data, rank=0, world_size=1, device_id=None,
                                          steps=steps)
    slow_reads(loader, read_s)
    loader.set_epoch(0)
    list(loader)  # warm-up: pipeline build, frame counts, page cache
    loader.set_epoch(1)
    t0 = time.perf_counter()
    n = sum(1 for _ in loader)
    load = (time.perf_counter() - t0) / n
    job = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3, log_every=10**6))
    SleepStep.step_s = step_s
    trainer = SleepStep(job=job, model=torch.nn.Linear(1, 1), device=torch.device("cpu"), train_loader=loader,
                        queries=None, database=None, run_dir=Path(tempfile.mkdtemp()))
    trainer.state.epoch = 2
    t0 = time.perf_counter()
    trainer.train_epoch()
    rate = steps / (time.perf_counter() - t0)
    ideal = 1 / max(load, step_s)
    return {"load_ms": load * 1e3, "rate": rate, "ideal": ideal, "ratio": rate / ideal,
            "builds": loader.decoder.builds}


def cpu_name() -> str:
    return cpu()[0]  # bench/results.py: /proc/cpuinfo's model name, or the platform's


def loadavg() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> Path:
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs" / "synth-cpu.yaml")
    d = cfg.data
    rows, load_before = [], loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        summary = make_synth_dataset(root, classes=args.classes, per_class=args.per_class, frames=32,
                                     codec="vp9", workers=1, progress=False)
        label = {name: i for i, name in enumerate(summary.classes)}
        records = [VideoRecord(p, label[p.split("/")[0]], p.split("/")[0]) for p in summary.files]
        modes = [("prefetch", pipelines.Prefetcher)] + ([("serial (before)", SerialReader)] if args.serial else [])
        for read_ms in args.read_ms:
            for name, reader in modes:
                pipelines.Prefetcher = reader
                threads = pipelines.READ_THREADS
                if reader is SerialReader:
                    pipelines.READ_THREADS = 1
                try:
                    m = measure(records, root, cfg, steps=args.steps, step_s=args.step_ms / 1e3,
                                read_s=read_ms / 1e3)
                finally:
                    pipelines.Prefetcher, pipelines.READ_THREADS = modes[0][1], threads
                rows.append((name, read_ms, m))
                print(f"{name:>16} L={read_ms:>3} ms S={args.step_ms} ms: load {m['load_ms']:.0f} ms/step, "
                      f"{m['rate']:.2f} steps/s vs ideal {m['ideal']:.2f} = {m['ratio']:.2f} "
                      f"(pipelines built: {m['builds']})", flush=True)
    return write(args, d, rows, load_before)


def write(args, d, rows, load_before: str) -> Path:
    cpu, day = cpu_name(), datetime.date.today().isoformat()
    out = Path(args.out_dir) / f"pipeline-{re.sub(r'[^A-Za-z0-9]+', '-', cpu).strip('-').lower()}-{day}.md"
    lines = [f"# c3dhash bench pipeline, {day}", "",
             f"- commit {commit()}, CPU {cpu} ({os.cpu_count()} logical), torch {torch.__version__}",
             f"- load average before {load_before}, after {loadavg()} (a shared machine unless it says ~0)",
             f"- P x K = {d.pk_classes or args.classes} x {d.pk_samples} clips of {d.num_frames} frames at stride "
             f"{d.stride}, resize {list(d.resize)}, crop {list(d.crop)}, DALI CPU {d.num_threads} thread(s); "
             f"{args.classes} x {args.per_class} synthetic VP9 videos; {args.steps} timed steps",
             f"- simulated accelerator step S = {args.step_ms} ms; per-file read latency L; ideal = 1 / max(load, S); "
             f"target >= 0.9 at L = 20 ms", "",
             "| data path | L (ms) | load (ms/step) | steps/s | ideal | ratio | pipelines built |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {L} | {m['load_ms']:.0f} | {m['rate']:.2f} | {m['ideal']:.2f} | {m['ratio']:.2f} | "
              f"{m['builds']} |" for name, L, m in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step-ms", type=float, default=100.0, help="simulated accelerator step S")
    p.add_argument("--read-ms", type=float, nargs="+", default=[0.0, 20.0], help="per-file read latencies L")
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement (after the queue fills)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--serial", action="store_true", help="also measure the serial path before issue 29")
    p.add_argument("--out-dir", default=str(default_folder()))
    run(p.parse_args())


if __name__ == "__main__":
    main()
