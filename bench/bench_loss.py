"""Loss benchmark: the shipped all-triplet loss (O(B^2 log B) time, O(B^2) memory) vs a naive B^3 broadcast.

    .venv/bin/python bench/bench_loss.py                  # B = 128, 512, 2048; dim 64; 20 classes; CPU
    .venv/bin/python bench/bench_loss.py --sizes 256 1024 --device cuda

Each row is forward + backward of one global batch (h = tanh(randn), B x dim; labels uniform over
--classes). Time: best of --repeats runs after the first (best-of, as timeit does: other load on the
machine only adds time). Peak memory, measured on the first run:
  * CUDA: torch.cuda.max_memory_allocated() above the memory allocated before the run;
  * CPU: the rise of the process's peak RSS (getrusage ru_maxrss) during the run, each (method, B) in a fresh
    subprocess (after a tiny warm-up) so one measurement cannot hide another; this counts everything torch
    really allocated, with a resolution of about 1 MiB.
The naive version is skipped where its B^3 intermediates (~15 bytes per triplet) would exceed --naive-max-gib.
Ratios compare the two methods measured in the same invocation on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


from c3dhash.distributed.triplet import all_triplet_loss, sq_distances  # noqa: E402

NAIVE_BYTES_PER_TRIPLET = 15  # float32 terms + relu output + its grad, three bool masks


def naive_triplet_loss(h: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """The textbook B^3 version: every (a, p, n) term materialised, masked, averaged."""
    d = sq_distances(h, h)
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=h.device)
    valid = (same & not_self)[:, :, None] & ~same[:, None, :]
    terms = torch.relu(margin + d[:, :, None] - d[:, None, :])
    return (terms * valid).sum() / valid.sum().clamp_min(1)


def _batch(b: int, dim: int, classes: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(b)
    h = torch.tanh(torch.randn(b, dim, generator=g)).to(device).requires_grad_(True)
    return h, torch.randint(0, classes, (b,), generator=g).to(device)


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(method: str, b: int, *, dim: int, classes: int, margin: float, repeats: int, device: str) -> dict:
    """Run in the current process: first fwd+bwd for memory, then `repeats` timed ones."""
    fn = all_triplet_loss if method == "shipped" else naive_triplet_loss
    tiny_h, tiny_labels = _batch(8, dim, classes, device)
    fn(tiny_h, tiny_labels, margin).backward()  # lazy one-time init (autograd, thread pools) is not the loss
    h, labels = _batch(b, dim, classes, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _max_rss_bytes()
    loss = fn(h, labels, margin)
    loss.backward()
    _sync(device)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _max_rss_bytes()) - base
    times = []
    for _ in range(repeats):
        h.grad = None
        t0 = time.perf_counter()
        fn(h, labels, margin).backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"ms": 1e3 * min(times), "peak_mib": max(0, peak) / 2**20, "loss": float(loss)}


def _run_child(method: str, b: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--sizes", str(b), "--dim", str(args.dim),
           "--classes", str(args.classes), "--margin", str(args.margin), "--repeats", str(args.repeats),
           "--device", args.device, "--threads", str(args.threads)]
    # the child prints one JSON line; the results file is the parent's (a child writing one too would print
    # its "results: <path>" line after the JSON)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, "C3DHASH_BENCH_RESULTS": "off"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(b: int, s: dict, n: dict | None) -> list[str]:
    """One table row; the naive columns say 'skipped' (with its estimated size) where it was not run."""
    cells = [str(b), f"{s['ms']:.1f}"]
    if n is None:
        need = NAIVE_BYTES_PER_TRIPLET * b ** 3 / 2 ** 30
        return cells + [f"skipped (~{need:.0f} GiB)", "-", f"{s['peak_mib']:.1f}", "-", "-", "-"]
    diff = abs(n["loss"] - s["loss"]) / max(abs(s["loss"]), 1e-12)
    # Below ~1 MiB the RSS high-water mark does not resolve the shipped loss: no ratio there.
    mem_ratio = f"{n['peak_mib'] / s['peak_mib']:.1f}" if s["peak_mib"] >= 1.0 else "n/a (< 1 MiB)"
    return cells + [f"{n['ms']:.1f}", f"{n['ms'] / s['ms']:.1f}", f"{s['peak_mib']:.1f}",
                    f"{n['peak_mib']:.1f}", mem_ratio, f"{diff:.1e}"]


def run_table(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    jobs = [(b, m) for b in args.sizes for m in ("shipped", "naive")]
    results: dict[tuple[int, str], dict | None] = {}
    for b, method in tqdm(jobs, desc="bench_loss", file=sys.stderr):
        too_big = method == "naive" and NAIVE_BYTES_PER_TRIPLET * b ** 3 > args.naive_max_gib * 2 ** 30
        results[b, method] = None if too_big else _run_child(method, b, args)
    memory = "CUDA max_memory_allocated" if args.device == "cuda" else "peak-RSS rise of a fresh process"
    print(f"all-triplet loss, forward+backward, dim {args.dim}, {args.classes} classes, {args.device}, "
          f"{args.threads or torch.get_num_threads()} threads; peak memory = {memory}")
    header = ["B", "shipped ms", "naive ms", "naive/shipped time", "shipped MiB", "naive MiB",
              "naive/shipped mem", "|loss diff|/loss"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for b in args.sizes:
        shipped = results[b, "shipped"]
        assert shipped is not None  # the shipped loss always runs
        print("| " + " | ".join(_row(b, shipped, results[b, "naive"])) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048], help="global batch sizes B")
    p.add_argument("--dim", type=int, default=64, help="code length (bits)")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--margin", type=float, default=20.0, help="squared-L2 units (20 = 64-bit default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "cuda"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--naive-max-gib", type=float, default=6.0, help="skip the naive loss above this estimate")
    p.add_argument("--child", choices=("shipped", "naive"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        res = measure(args.child, args.sizes[0], dim=args.dim, classes=args.classes, margin=args.margin,
                      repeats=args.repeats, device=args.device)
        print(json.dumps(res))
        return 0
    run_table(args)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("loss"):
        code = main()
    sys.exit(code)
