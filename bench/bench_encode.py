"""Sharded encoding throughput: 1 vs 2 Ray encoder actors (1 CPU each) over the same videos, same run.

    .venv/bin/python bench/bench_encode.py                            # defaults: the demo's clip geometry
    c3dhash bench encode -- --per-class 4 --frames 16 --repeats 1     # ~1 min on 2 shared cores

Synthetic VP9 videos (loaders/synth.py) are encoded by a random-init r3d_18 + hash head at the demo's geometry
(configs/synth-cpu.yaml: frames, stride, resize, crop, clips per video). Each pool's actors are started and
warmed up (model built, first chunk encoded) before timing, so the figure is steady-state videos per second; the
pools alternate over `--repeats` rounds (fair on a shared machine) and the best round of each counts. Target: >=
1.8x with 2 workers on a quiet 2-core machine; the load average is printed because this only means something on
a quiet one.
The codes of the two pools are compared too (they must be equal bit for bit).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from c3dhash.cluster.config import config_to_dict, load_config
from c3dhash.eval.index.encode_ray import EncoderPool, chunk_size
from c3dhash.eval.ray_session import join_or_start
from c3dhash.loaders.synth import make_synth_dataset
from c3dhash.model.hashnet import build_from_config


def make_state(bits: int) -> dict:
    cfg = load_config("synth-cpu", [f"model.bits={bits}"])
    torch.manual_seed(0)  # the net the config describes (its head norm too), so the checkpoint loads as a run's
    net = build_from_config(dataclasses.replace(cfg.model, weights=None))
    return {"model": net.state_dict(), "config": config_to_dict(cfg)}


def timed(pool: EncoderPool, paths: list[str], workers: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    res = pool.encode(paths, chunk=chunk_size(len(paths), workers))
    return len(paths) / (time.perf_counter() - t0), res.outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bits", type=int, default=48)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = make_synth_dataset(tmp, classes=args.classes, per_class=args.per_class, frames=args.frames,
                               progress=False)
        paths = [str(Path(tmp) / f) for f in s.files]
        state = make_state(args.bits)
        started = join_or_start(None, num_cpus=2)  # RAY_ADDRESS's cluster, else a local one of 2 CPUs
        try:
            # one pool of 2 actors (the local Ray has 2 CPUs) and a view of it holding only its first actor
            both = EncoderPool(state, workers=2)
            one = copy.copy(both)
            one.actors = both.actors[:1]
            pools = {1: one, 2: both}
            both.encode(paths[:4], chunk=1)  # warm-up: actors up, model built, DALI and torch initialised
            best = {1: 0.0, 2: 0.0}
            outputs = {}
            for _ in range(args.repeats):
                for w, pool in pools.items():
                    rate, outputs[w] = timed(pool, paths, w)
                    best[w] = max(best[w], rate)
        finally:
            if started:
                ray.shutdown()
    load = os.getloadavg()
    d = state["config"]["data"]
    print(f"{len(paths)} videos ({args.frames} frames, 48x64 VP9), {d['num_frames']} x {d['crop'][0]} x "
          f"{d['crop'][1]} clips at stride {d['stride']}, {d['clips_per_video']} clips per video, {args.bits} bits, "
          f"1 CPU per actor")
    print(f"1 worker: {best[1]:.2f} videos/s   2 workers: {best[2]:.2f} videos/s   "
          f"speedup {best[2] / best[1]:.2f}x (target >= 1.8x on a quiet 2-core machine)")
    print(f"codes of 1 and 2 workers equal bit for bit: {np.array_equal(outputs[1], outputs[2])}")
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("encode"):
        main()
