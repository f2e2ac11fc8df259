"""`c3dhash check-data`: probe every video of a dataset's manifests once and write <manifest_dir>/skip.tsv.

    c3dhash check-data --config configs/synth-cpu.yaml [--set data.root=/data/ucf101]
    c3dhash check-data --root data/synth --manifest-dir data/synth/manifests/split1 [--no-decode]

The loaders drop the files listed in skip.tsv (with a warning), so a corrupt video costs one line, not a run.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to `c3dhash`."""
    p = sub.add_parser("check-data", help="probe every video of the manifests; write skip.tsv",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="job config YAML (uses data.root and data.manifest_dir/split)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, repeatable (with --config)")
    p.add_argument("--root", help="dataset root (instead of --config)")
    p.add_argument("--manifest-dir", help="folder of split manifests (default: <root>/manifests/split1)")
    p.add_argument("--workers", type=int, default=2, help="parallel probes (default: 2)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None,
                   help="DALI decoder device to check against (default: data.device, else auto)")
    p.add_argument("--no-decode", action="store_true",
                   help="only open and count frames with PyAV (fast; skips the full DALI decode)")
    p.set_defaults(func=cmd_check_data)


def _locate(args: argparse.Namespace) -> tuple[Path, Path, str]:
    from cluster.config import ConfigError, load_config
    from loaders.config import DataConfig
    from loaders.splits import manifest_dir

    if args.config:
        data = load_config(args.config, args.set).data
        data = dataclasses.replace(data, root=args.root or data.root)
    elif args.root:
        data = DataConfig(root=args.root)  # the default split (1) of that root
    else:
        raise ConfigError("pass --config CFG, or --root DIR [--manifest-dir DIR]")
    return Path(data.root), Path(args.manifest_dir) if args.manifest_dir else manifest_dir(data), data.device


def cmd_check_data(args: argparse.Namespace) -> int:
    from loaders.probe import check_data, decode_device

    root, manifest_dir, device = _locate(args)
    backend = decode_device(args.device or device, 0)
    n, bad, skip = check_data(root=root, manifest_dir=manifest_dir, workers=args.workers, device=backend,
                              decode=not args.no_decode)
    for path, reason in bad[:20]:
        print(f"  {root / path}: {reason}", file=sys.stderr)
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more", file=sys.stderr)
    print(f"checked {n} videos under {root} ({'DALI ' + backend if not args.no_decode else 'PyAV only'}): "
          f"{len(bad)} bad, listed in {skip}")
    return 0
