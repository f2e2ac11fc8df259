"""Data subcommands: `synth`, `splits`, `transcode` (thin: parse, call loaders/, print).

    c3dhash synth --out data/synth --classes 8 --per-class 48 --frames 32 --size 48x64 --codec vp9 --seed 0
    c3dhash splits --dataset ucf101 --root data/ucf101 --split 1 [--out DIR] [--val-per-class 2]
    c3dhash transcode --src raw/UCF101 --out data/ucf101 --codec h264 --size 128x171 --procs 8
    c3dhash splits --dataset folder --root DIR | --list FILE [--test-fraction 0.3] [--group REGEX]
"""
from __future__ import annotations

import argparse
import sys
import typing
import warnings

from c3dhash.cluster.args import add_procs_arg, path_arg
from c3dhash.loaders.config import Dataset
from c3dhash.loaders.synth import MOTIONS
from c3dhash.loaders.videoio import CODECS


def parse_size(text: str) -> tuple[int, int]:
    """'48x64' -> (48, 64): height x width."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 48x64")
    return int(parts[0]), int(parts[1])


def cmd_synth(args: argparse.Namespace) -> int:
    from c3dhash.loaders.synth import make_synth_dataset
    summary = make_synth_dataset(args.out, classes=args.classes, per_class=args.per_class, frames=args.frames,
                                 size=args.size, codec=args.codec, seed=args.seed, fps=args.fps,
                                 workers=args.procs)
    print(summary.format_summary())
    print(f"next: c3dhash splits --dataset synth --root {args.out}")
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from c3dhash.loaders.manifest import DataError
    from c3dhash.loaders.splits import build_splits, default_manifest_dir, folder_root, split_stats
    if args.dataset != "folder" and (args.list or args.group):
        raise DataError(f"--list/--group apply to --dataset folder only; {args.dataset} uses its official lists")
    if args.root is None and not (args.dataset == "folder" and args.list):
        raise DataError(f"splits --dataset {args.dataset}: --root DIR is required"
                        f"{' (or --list FILE)' if args.dataset == 'folder' else ''}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = build_splits(dataset=args.dataset, root=args.root, split=args.split, manifest_dir=args.out,
                               val_per_class=args.val_per_class, check_files=not args.no_check_files,
                               lists=args.lists, list_file=args.list, test_fraction=args.test_fraction,
                               group=args.group)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    root = folder_root(args.root, args.list) if args.dataset == "folder" else args.root
    target = args.out or default_manifest_dir(root, args.split)
    print(f"{args.dataset} split {args.split} -> {target}/{{train,val,test}}.tsv")
    for name, recs in records.items():
        n, classes, lo, hi = split_stats(recs)
        print(f"  {name:5s} {n:6d} videos  {classes:4d} classes  per class min {lo} max {hi}")
    if args.dataset == "folder":
        print(f"train with: --set data.dataset=folder --set data.root={root}"
              + (f" --set data.manifest_dir={args.out}" if args.out else ""))
    return 0


def cmd_transcode(args: argparse.Namespace) -> int:
    from c3dhash.loaders.transcode import transcode_tree
    summary = transcode_tree(args.src, args.out, codec=args.codec, size=args.size, workers=args.procs)
    if summary.size != tuple(args.size):
        print(f"note: size {args.size[0]}x{args.size[1]} rounded to even {summary.size[0]}x{summary.size[1]} "
              f"(4:2:0 video needs even sizes)", file=sys.stderr)
    print(summary.format_summary())
    return 1 if summary.failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `synth`, `splits` and `transcode` to `c3dhash`."""
    p = sub.add_parser("synth", help="write a synthetic action dataset (UCF101 layout, real video files)",
                       description="Motion-defined classes: " + ", ".join(MOTIONS))
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--classes", type=int, default=8, help=f"number of motion classes (1..{len(MOTIONS)})")
    p.add_argument("--per-class", type=int, default=48, help="videos per class (16 groups: 12 test, 36 train)")
    p.add_argument("--frames", type=int, default=32, help="frames per video")
    p.add_argument("--size", type=parse_size, default=(48, 64), help="HxW, even numbers (default 48x64)")
    p.add_argument("--codec", choices=tuple(CODECS), default="vp9",
                   help="vp9 (.webm) and mjpeg (.avi) decode with DALI on CPU; h264 (.mp4) needs a GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=25)
    add_procs_arg(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("splits", help="official split files (or your own folder/list) -> train/val/test manifests")
    p.add_argument("--dataset", choices=typing.get_args(Dataset), required=True,
                   help="folder = your own videos: class folders under --root, or --list")
    path_arg(p, "--root", kind="dir", default=None, help="folder with the class folders (and the split lists); "
             "with --list: what its relative paths start from (default: the list's folder)")
    p.add_argument("--split", type=int, default=1, choices=(1, 2, 3))
    p.add_argument("--out", default=None, help="manifest folder (default <root>/manifests/split<N>)")
    p.add_argument("--val-per-class", type=int, default=2,
                   help="validation videos per class, carved from train")
    path_arg(p, "--lists", kind="dir", default=None,
             help="folder with the official list files (default: under --root)")
    p.add_argument("--no-check-files", action="store_true", help="do not look the videos up on disk")
    p.add_argument("--list", default=None, help="folder: a CSV/TSV of 'path,label' lines (label: class name or "
                   "integer) instead of class folders")
    p.add_argument("--test-fraction", type=float, default=0.3, help="folder: share of each class that goes to test")
    p.add_argument("--group", default=None, help="folder: regex; videos whose paths share its match (first capture "
                   "group) stay on one side, e.g. '_g(\\d+)_'")
    p.set_defaults(func=cmd_splits)

    p = sub.add_parser("transcode",
                       help="re-encode raw dataset videos (CFR, short GOP, fixed size), resumable")
    path_arg(p, "--src", kind="dir", required=True, help="unpacked dataset folder (e.g. UCF101/ with class folders)")
    p.add_argument("-o", "--out", required=True, help="output folder (mirrors --src)")
    p.add_argument("--codec", choices=tuple(CODECS), default="h264")
    p.add_argument("--size", type=parse_size, default=(128, 171), help="HxW (odd sizes round up to even)")
    add_procs_arg(p)
    p.set_defaults(func=cmd_transcode)
