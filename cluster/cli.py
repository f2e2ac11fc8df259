"""`c3dhash`: the command-line face of the project. Thin: each subcommand lives in a cluster/cmd_*.py module.

    c3dhash synth --out data/synth            # synthetic action videos in UCF101's layout
    c3dhash splits --dataset synth --root data/synth
    c3dhash train --config configs/synth-cpu.yaml --set train.epochs=2
    c3dhash eval --query q.npz --db d.npz --shards 2
    c3dhash --version

Adding a subcommand: write cluster/cmd_NAME.py with `register(subparsers)` (argparse only) and list it in
COMMAND_MODULES. Import torch, ray, DALI, numba, ... inside the command functions, never at module level:
`c3dhash --help` and every `c3dhash X --help` build the whole parser, and tests/test_cli.py fails when one
of them loads a heavy package.

Exit codes: 0 done, 2 a user error (one line: what, where, the fix), 1 a failed job, 130 interrupted.
"""
from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.metadata
import sys
from pathlib import Path

from c3dhash.cluster.args import check_paths
from c3dhash.cluster.logs import plain_logs
from c3dhash.distributed.failures import is_project_error

# Modules that add subcommands; each exposes register(subparsers) and imports heavy packages lazily.
COMMAND_MODULES = tuple(f"c3dhash.cluster.cmd_{name}" for name in
                        ("data", "loaders", "train", "index", "eval", "show", "export", "combine", "serve", "bench"))


EPILOG = """typical use:
  c3dhash demo                                            the whole recipe on generated videos, from any folder
  c3dhash train -c synth-cpu -s train.epochs=4            a shipped config by name, or a YAML file
  c3dhash eval --checkpoint runs/synth-cpu/best.pt        encode test + train, print the metrics
  c3dhash index --checkpoint best.pt --videos DIR -o lib.index
  c3dhash search -i lib.index --video clip.mp4 -k 5 --json -

`c3dhash COMMAND --help` for each command. Exit status: 0 done, 1 a failed job (or an undecodable search
query), 2 a usage error (one line naming the flag or key), 130 interrupted.
"""


def version() -> str:
    """setup.cfg's version in a source checkout (what `pip install -e .` installs), else the installed one."""
    setup_cfg = Path(__file__).resolve().parents[1] / "setup.cfg"
    if setup_cfg.is_file():
        parser = configparser.ConfigParser()
        parser.read(setup_cfg)
        if parser.has_option("metadata", "version"):
            return parser.get("metadata", "version")
    return importlib.metadata.version("c3dhash")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c3dhash", description="Deep video hashing on Ray Train + DALI.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"c3dhash {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def is_user_error(exc: BaseException) -> bool:
    """Exceptions raised by our own packages are user-facing problems with a message that says what to fix."""
    return is_project_error(exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    plain_logs()  # stderr to a file or a pipe: progress as plain lines, Ray's prefixes without colour codes
    try:
        check_paths(args)  # missing files fail here, in a fraction of a second, before torch or ray load
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user errors get one clear line, bugs keep their traceback
        if is_user_error(exc):
            print(f"c3dhash {args.command}: error: {exc}", file=sys.stderr)
            return int(getattr(exc, "exit_code", 2))  # 1 for a failed job (TrainingFailed, JobError)
        raise


if __name__ == "__main__":
    sys.exit(main())
