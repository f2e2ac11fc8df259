"""`c3dhash`: the command-line face of the project. Thin: each subcommand lives in a cluster/cmd_*.py module.

    c3dhash synth --out data/synth            # synthetic action videos in UCF101's layout
    c3dhash splits --dataset synth --root data/synth
    c3dhash train --config configs/synth-cpu.yaml --set train.epochs=2
    c3dhash eval --query q.npz --db d.npz --shards 2
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands; each exposes register(subparsers).
COMMAND_MODULES = ("cluster.cmd_data", "cluster.cmd_loaders", "cluster.cmd_train", "cluster.cmd_index",
                   "cluster.cmd_eval", "cluster.cmd_show", "cluster.cmd_export", "cluster.cmd_bench")
# Exceptions raised by our own packages are user-facing problems with a message that says what to fix.
OUR_PACKAGES = ("cluster", "distributed", "model", "loaders", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c3dhash", description="Deep video hashing on Ray Train + DALI.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, (FileNotFoundError, NotADirectoryError)) or (
        type(exc).__module__.split(".")[0] in OUR_PACKAGES)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user errors get one clear line, bugs keep their traceback
        if is_user_error(exc):
            print(f"c3dhash {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
