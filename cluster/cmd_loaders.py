"""`c3dhash check-data`: probe every video of a dataset's manifests once and write <manifest_dir>/skip.tsv.

    c3dhash check-data --config configs/synth-cpu.yaml [--set data.root=/data/ucf101]
    c3dhash check-data --root data/synth --manifest-dir data/synth/manifests/split1 [--no-decode]

The loaders drop the files listed in skip.tsv (with a warning), so a corrupt video costs one line, not a run.
Exit status: 0 when checked (some files may be listed as bad), 2 when every video fails (skip.tsv is then
left as it was: the cause is the setup, e.g. a wrong --root, or H.264 checked against the CPU decoder; on a
machine without a GPU check GPU-bound files with --device gpu --no-decode).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from c3dhash.cluster.args import add_config_args, add_procs_arg, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to `c3dhash`."""
    p = sub.add_parser("check-data", help="probe every video of the manifests; write skip.tsv",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, help="job config, a file or a shipped name (uses data.root and data.manifest_dir/split)")
    path_arg(p, "--root", kind="dir", help="dataset root (instead of --config, or overriding its data.root)")
    path_arg(p, "--manifest-dir", kind="dir", help="folder of split manifests (default: <root>/manifests/split1)")
    add_procs_arg(p, default=2, help="parallel probes, local processes (default: 2)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None,
                   help="DALI decoder device to check against (default: data.device, else auto); "
                        "with --no-decode, gpu needs no GPU here (only NVDEC's codec list is applied)")
    p.add_argument("--no-decode", action="store_true",
                   help="only open and count frames with PyAV (fast; skips the full DALI decode)")
    p.set_defaults(func=cmd_check_data)


def _locate(args: argparse.Namespace) -> tuple[Path, Path, str]:
    from c3dhash.cluster.config import ConfigError, load_config
    from c3dhash.loaders.config import DataConfig
    from c3dhash.loaders.splits import manifest_dir

    if args.config:
        data = load_config(args.config, args.overrides).data
        data = dataclasses.replace(data, root=args.root or data.root)
    elif args.root:
        data = DataConfig(root=args.root)  # the default split (1) of that root
    else:
        raise ConfigError("pass --config CFG, or --root DIR [--manifest-dir DIR]")
    return Path(data.root), Path(args.manifest_dir) if args.manifest_dir else manifest_dir(data), data.device


def _backend(requested: str, decode: bool) -> tuple[str, int | None]:
    """(DALI backend, CUDA device) to check against. Without decoding, `gpu` only selects NVDEC's codec rules,
    so a CPU-only data pod can check files meant for GPU training."""
    import torch

    from c3dhash.loaders.probe import decode_device

    device_id = torch.cuda.current_device() if torch.cuda.is_available() else None
    if not decode and requested == "gpu":
        return "mixed", device_id
    return decode_device(requested, 0 if device_id is None else device_id), device_id


def cmd_check_data(args: argparse.Namespace) -> int:
    from c3dhash.loaders.probe import check_data

    root, manifest_dir, device = _locate(args)
    backend, device_id = _backend(args.device or device, not args.no_decode)
    n, bad, skip = check_data(root=root, manifest_dir=manifest_dir, workers=args.procs, device=backend,
                              device_id=device_id, decode=not args.no_decode)
    for path, reason in bad[:20]:
        print(f"  {root / path}: {reason}", file=sys.stderr)
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more", file=sys.stderr)
    print(f"checked {n} videos under {root} ({'DALI ' + backend if not args.no_decode else 'PyAV only'}): "
          f"{len(bad)} bad, listed in {skip}")
    return 0
