"""Subcommands: `train`, `demo`, `job` (submit/wait/logs/stop); `encode` is in cmd_index.py."""
from __future__ import annotations

import argparse
import shlex
import sys

from c3dhash.cluster.args import add_address_arg, add_config_args
from c3dhash.cluster.config import load_config

TRAIN_HELP = """Train a hashing model on Ray Train, on a local Ray or an existing cluster.

    c3dhash train --config synth-cpu --set train.epochs=2          # a shipped config, by name
    c3dhash train -c configs/ucf101-64bit.yaml --address ray://head:10001

The run folder is <cluster.storage_path>/<cluster.name>/ (checkpoints, best.pt, TensorBoard under tensorboard/);
a second start with the same config resumes from its latest checkpoint.
"""
JOB_HELP = """Run a command as a Ray job through the Jobs API (the dashboard's address, port 8265).

    c3dhash job submit -a http://head:8265 -- c3dhash train --config ucf101-64bit   # waits; --no-wait returns
    c3dhash job logs -a http://head:8265 --follow JOB_ID
    c3dhash job wait JOB_ID;  c3dhash job stop JOB_ID
"""


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)  # first: a config error answers before Ray and torch load
    from c3dhash.cluster.driver import run_training
    run_training(cfg, address=args.address)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, [*args.overrides, *([f"data.root={args.data}"] if args.data else [])])
    from c3dhash.cluster.demo import run_demo  # after the config check
    return run_demo(cfg)


def cmd_job(args: argparse.Namespace) -> int:
    from c3dhash.cluster import jobs
    if args.action == "submit":
        cmd = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
        job_id = jobs.submit(args.address, shlex.join(cmd), working_dir=args.working_dir)
        print(job_id, flush=True)
        if not args.no_wait:  # as `ray job submit`: the command's status is the job's
            jobs.wait(args.address, job_id, timeout_s=args.timeout)
            print(f"{job_id} SUCCEEDED")
    elif args.action == "wait":
        print(f"{args.job_id} {jobs.wait(args.address, args.job_id, timeout_s=args.timeout)}")
    elif args.action == "logs" and args.follow:
        status = jobs.follow(args.address, args.job_id)
        print(f"{args.job_id} {status}", file=sys.stderr)
    elif args.action == "logs":
        print(jobs.logs(args.address, args.job_id), end="")
    else:
        print(f"{args.job_id} stop requested: {jobs.stop(args.address, args.job_id)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train on Ray Train (local Ray unless --address / RAY_ADDRESS)",
                       description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, required=True)
    add_address_arg(p, default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="synth -> train -> encode -> eval with baselines, on a local Ray (CPU)",
                       description="The whole recipe on generated videos, from any folder: data/synth and runs/ "
                                   "are written under the current folder.")
    add_config_args(p, default="synth-cpu", help="job config, a file or a shipped name (default: synth-cpu)")
    p.add_argument("--data", default=None, help="synthetic data folder (default: the config's data.root)")
    p.set_defaults(func=cmd_demo)

    job = sub.add_parser("job", help="Ray Jobs API: submit | wait | logs | stop", description=JOB_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter).add_subparsers(
        dest="action", metavar="ACTION", required=True)
    for action, text in (("submit", "submit a command as a Ray job and wait for it (--no-wait: return at once)"),
                         ("wait", "wait until a job ends"), ("logs", "print a job's logs (--follow: stream them)"),
                         ("stop", "stop a job")):
        p = job.add_parser(action, help=text, description=text)
        add_address_arg(p, default="http://127.0.0.1:8265", help="the Ray dashboard / Jobs API address "
                        "(default http://127.0.0.1:8265)")
        if action in ("submit", "wait"):
            p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job to end")
        if action == "submit":
            p.add_argument("--working-dir", default=".", help="folder shipped as the job's working dir")
            p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
            p.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)  # the default now; old scripts
            p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- COMMAND ...")
        else:
            p.add_argument("job_id")
        if action == "logs":
            p.add_argument("-f", "--follow", action="store_true", help="stream the logs until the job ends")
        p.set_defaults(func=cmd_job)
