"""Subcommands: `train`, `demo`, `job` (submit/wait/logs/stop); `encode` is in cmd_index.py."""
from __future__ import annotations

import argparse
import shlex

from c3dhash.cluster.config import load_config


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="job config YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.01 (repeatable)")


def cmd_train(args: argparse.Namespace) -> int:
    from c3dhash.cluster.driver import run_training
    run_training(load_config(args.config, args.overrides), address=args.address)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from c3dhash.cluster.demo import run_demo
    return run_demo(config=args.config, overrides=args.overrides, data_root=args.data)


def cmd_job(args: argparse.Namespace) -> int:
    from c3dhash.cluster import jobs
    if args.action == "submit":
        cmd = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
        job_id = jobs.submit(args.address, shlex.join(cmd), working_dir=args.working_dir)
        print(job_id)
        if args.wait:
            jobs.wait(args.address, job_id, timeout_s=args.timeout)
            print(f"{job_id} SUCCEEDED")
    elif args.action == "wait":
        print(f"{args.job_id} {jobs.wait(args.address, args.job_id, timeout_s=args.timeout)}")
    elif args.action == "logs":
        print(jobs.logs(args.address, args.job_id), end="")
    else:
        print(f"{args.job_id} stop requested: {jobs.stop(args.address, args.job_id)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train on Ray Train (local Ray unless --address / RAY_ADDRESS)")
    _config_args(p)
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="synth -> train -> encode -> eval with baselines, on a local Ray (CPU)")
    p.add_argument("--config", default="synth-cpu",
                   help="job config: a YAML file or a shipped config name (default: synth-cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--data", default=None, help="synthetic data folder (default: the config's data.root)")
    p.set_defaults(func=cmd_demo)

    job = sub.add_parser("job", help="Ray Jobs API helpers: submit | wait | logs | stop").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    for action, text in (("submit", "submit a command as a Ray job"), ("wait", "wait until a job ends"),
                         ("logs", "print a job's logs"), ("stop", "stop a job")):
        p = job.add_parser(action, help=text)
        p.add_argument("--address", default="http://127.0.0.1:8265", help="Ray dashboard/Jobs API address")
        p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (submit --wait, wait)")
        if action == "submit":
            p.add_argument("--working-dir", default=".", help="folder shipped as the job's working dir")
            p.add_argument("--wait", action="store_true", help="block until the job ends")
            p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- COMMAND ...")
        else:
            p.add_argument("job_id")
        p.set_defaults(func=cmd_job)
