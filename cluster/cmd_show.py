"""`c3dhash show` (a results page) and the `--video` path of `c3dhash search`: query an index with videos.

    c3dhash search --index runs/synth.index --video a.mp4 b.webm --top 5 [--json -] [--checkpoint best.pt]
    c3dhash show --index runs/synth.index --video q.webm --top 5 --out runs/results.html   # + results.png
    c3dhash show --index runs/synth.index --query runs/test.npz --max-queries 8 --out runs/results.html

Queries are encoded with the model the index was built with (meta.json names its checkpoint; `--checkpoint`
points elsewhere when it moved); a model with another fingerprint is refused.
"""
from __future__ import annotations

import argparse
import sys

from c3dhash.cluster.args import path_arg, positive


def video_queries(args: argparse.Namespace, top=None):
    """(index, Query list); top: a number, or a function of the index's size."""
    from c3dhash.eval.index.folder import load_index
    from c3dhash.eval.index.query import index_model, search_videos
    idx = load_index(args.index)
    top = top(len(idx)) if callable(top) else top
    state = index_model(idx, getattr(args, "checkpoint", None))
    return idx, search_videos(idx, state, args.video, top=top, method=getattr(args, "method", "auto"),
                              mirrored=getattr(args, "mirrored", False)), top


def search_videos_json(args: argparse.Namespace) -> dict:
    """`c3dhash search --index INDEX --video ...` (cluster/cmd_eval.py) in the one result schema."""
    from c3dhash.cluster.cmd_eval import top_k
    from c3dhash.cluster.results import from_videos
    idx, queries, top = video_queries(args, lambda n: top_k(args, n))
    return from_videos(idx, queries, top=top, max_distance=args.max_distance)


def cmd_show(args: argparse.Namespace) -> int:
    from c3dhash.eval.codes import load_codes
    from c3dhash.eval.index.folder import load_index
    from c3dhash.eval.index.page import write_page
    from c3dhash.eval.index.query import search_codes
    if args.video:
        idx, queries, _ = video_queries(args, args.top)
        for q in queries:
            if q.error:
                print(f"query {q.name}: {q.error} (left off the page)", file=sys.stderr)
        queries = [q for q in queries if not q.error]
    else:
        idx = load_index(args.index)
        queries = search_codes(idx, load_codes(args.query), top=args.top, limit=args.max_queries,
                               method=args.method)
    html, png = write_page(args.out, idx, queries, frames=args.frames)
    print(f"wrote {html} and {png} ({len(queries)} queries x top {args.top})")
    return 0


def write_eval_curves(query, db, metrics: dict, *, png: str | None, run_dir: str | None) -> None:
    """`c3dhash eval --plots PNG --tensorboard RUN_DIR`: PR curve (true counts) + distance histograms."""
    from pathlib import Path

    from c3dhash.eval.metrics.curves import pr_counts, write_plots
    counts = pr_counts(metrics)
    if png:
        title = f"{len(query)} queries x {len(db)} items, {db.bits} bits, mAP@all {metrics['map_all']:.4f}"
        print(f"wrote {write_plots(png, counts, metrics['pr_curve'], title=title)}")
    if run_dir:
        from c3dhash.distributed.tensorboard import RankZeroWriter
        tb = RankZeroWriter(Path(run_dir) / "tensorboard", rank=0)
        tb.pr_curve("eval/pr_hamming_radius", counts, 0)
        tb.distance_histograms("eval/hamming_distance", counts, 0)
        tb.scalars({"eval/map_all": metrics["map_all"]}, 0)
        tb.close()
        print(f"wrote the PR curve and distance histograms to {Path(run_dir) / 'tensorboard'} (tag eval/...)")


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    path_arg(p, "--checkpoint", kind="any", default=None,
             help="the index's model for --video (default: the checkpoint named in the index's meta.json)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="results page (HTML + PNG contact sheet) of queries against an index",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    path_arg(p, "-i", "--index", kind="dir", required=True, help="index folder (c3dhash index)")
    src = p.add_mutually_exclusive_group(required=True)
    path_arg(src, "--video", nargs="+", metavar="FILE", help="query videos (any codec PyAV reads)")
    path_arg(src, "-q", "--query", help="query codes .npz (ids relative to the index's root give thumbnails)")
    p.add_argument("-k", "--top", type=positive, default=5, help="results per query")
    p.add_argument("--max-queries", type=positive, default=10, help="queries of --query shown")
    p.add_argument("--frames", type=positive, default=4, help="frames per thumbnail strip")
    p.add_argument("--method", choices=("auto", "bitsliced", "words", "mih", "torch"), default="auto",
                   help="search method (docs/search.md; the same results whichever)")
    p.add_argument("-o", "--out", required=True, help="results .html (the contact sheet goes beside it as .png)")
    add_checkpoint_arg(p)
    p.set_defaults(func=cmd_show)
