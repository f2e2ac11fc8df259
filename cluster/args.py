"""Argparse pieces every subcommand shares: one flag name per idea, and paths checked while parsing.

A path argument (path_arg) that does not exist is one line naming the flag (exit 2), checked by cli.main right
after parsing and before any heavy package is imported: `c3dhash search --index nowhere ...` answers at once.

One meaning per flag name across the CLI:
    -c/--config, -s/--set   job config (a YAML file or a shipped name such as synth-cpu) and its overrides
    -a/--address            an existing Ray cluster (a GCS address, ray://..., auto), or the Jobs API for `job`
    -w/--workers            Ray actors (one GPU each where there are GPUs)
    --threads               CPUs per Ray actor
    --procs                 local processes (synth, transcode, check-data)
    -j/--json               write JSON to this file; `-` = standard output (then the text goes to stderr)
    -o/--out, -k/--top, -i/--index, -q/--query
No heavy import here (tests/test_cli.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from c3dhash.cluster.config import ConfigError, find_config  # yaml and dataclasses: light

CHECKPOINT_NAMES = ("best", "latest")


def _whole(text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= {least}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"{text}: must be >= {least}")
    return v


def positive(text: str) -> int:
    return _whole(text, 1)


def non_negative(text: str) -> int:
    return _whole(text, 0)


class PathError(ConfigError):
    """A path argument that does not exist (or is the wrong kind): exit 2 before any heavy import."""


_KINDS = {"file": "a file", "dir": "a folder", "any": "a file or folder", "checkpoint": "a checkpoint",
          "config": "a config"}


def path_arg(p: argparse.ArgumentParser, *flags: str, kind: str = "file", **kw: Any) -> argparse.Action:
    """add_argument for a path that must exist; checked by check_paths() after parsing, before the command runs
    (not as an argparse type, so a parser can read commands meant for another machine, e.g. k8s entrypoints)."""
    assert kind in _KINDS, kind
    action = p.add_argument(*flags, **kw)
    checks = (*(p.get_default("_paths") or ()), (action.dest, kind, action.option_strings[-1]))
    p.set_defaults(_paths=checks)
    return action


def _check(value: str, kind: str, flag: str) -> str:
    if kind == "config":
        return str(find_config(value))  # a file, or a shipped config by name
    if kind == "checkpoint" and value in CHECKPOINT_NAMES:
        return value
    path = Path(value)
    if not path.exists():
        raise PathError(f"{flag} {value}: {_KINDS[kind].split(' ', 1)[1]} not found")
    if kind == "file" and not path.is_file():
        raise PathError(f"{flag} {value}: is a folder; pass a file")
    if kind == "dir" and not path.is_dir():
        raise PathError(f"{flag} {value}: is a file; pass a folder")
    return value


def check_paths(args: argparse.Namespace) -> None:
    """Every path argument of the chosen command exists (configs resolved by name); raises PathError."""
    for dest, kind, flag in getattr(args, "_paths", ()) or ():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, list):
            setattr(args, dest, [_check(v, kind, flag) for v in value])
        else:
            setattr(args, dest, _check(value, kind, flag))


def add_config_args(p: argparse.ArgumentParser, *, required: bool = False, default: str | None = None,
                    help: str | None = None) -> None:
    """-c/--config and -s/--set (into args.config, args.overrides)."""
    path_arg(p, "-c", "--config", kind="config", required=required, default=default,
             help=help or "job config: a YAML file or a shipped name (synth-cpu, ucf101-64bit, hmdb51-48bit, "
                          "jhmdb-48bit)")
    p.add_argument("-s", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.01 (repeatable)")


def add_address_arg(p: argparse.ArgumentParser, *, default: str | None = "", help: str | None = None) -> None:
    p.add_argument("-a", "--address", default=default,
                   help=help or "an existing Ray cluster: auto, HOST:6379 or ray://HOST:10001 "
                                "(default: RAY_ADDRESS, else a local Ray)")


def add_ray_worker_args(p: argparse.ArgumentParser) -> None:
    """Sharded encoding over Ray actors: -w/--workers, --device, --threads, -a/--address."""
    p.add_argument("-w", "--workers", type=positive, default=1,
                   help="Ray encoder actors (1 = this process); results are the same for any number")
    p.add_argument("--device", choices=("auto", "gpu", "cpu"), default="auto",
                   help="auto: a GPU per actor (DALI decoding on it) where the cluster has GPUs, else CPU")
    p.add_argument("--threads", type=positive, default=1, help="CPUs per actor (torch and DALI threads)")
    add_address_arg(p)


def add_procs_arg(p: argparse.ArgumentParser, *, default: int | None = None, help: str | None = None) -> None:
    p.add_argument("--procs", type=positive, default=default,
                   help=help or "local processes (default: all cores)")


def add_json_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-j", "--json", metavar="FILE",
                   help=f"write {what} as JSON to FILE (atomically); - = standard output, the text then goes "
                        f"to standard error")


def text_stream(args: argparse.Namespace):
    """Where human-readable text goes: stdout, unless the JSON itself goes there (--json -)."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def emit_json(path: str | None, obj: Any) -> None:
    """--json FILE (atomic; says where) or --json - (stdout, nothing else on it)."""
    if not path:
        return
    if path == "-":
        json.dump(obj, sys.stdout, indent=1)
        sys.stdout.write("\n")
        sys.stdout.flush()
        return
    from c3dhash.loaders.atomic import atomic_write_text
    print(f"wrote {atomic_write_text(path, json.dumps(obj, indent=1) + chr(10))}")
