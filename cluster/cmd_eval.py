"""Subcommands `eval` (retrieval metrics) and `search` (Hamming top-K); thin: parse, call eval/, print.

    c3dhash eval --query runs/test.npz --db runs/train.npz [--json runs/metrics.json]
    c3dhash eval --query runs/test.npz --db runs/train.npz --shards 4 [--address auto] [--expected-ties]
    c3dhash eval --query hmdb_test.npz --db hmdb_train.npz --map-at-k-rel 70
    c3dhash eval --query runs/test.npz --db runs/train.npz --plots runs/eval.png --tensorboard runs/synth-cpu
    c3dhash search --index runs/train.npz --query runs/test.npz --top 10 [--json runs/top10.json]
    c3dhash search --index runs/synth.index --video a.mp4 b.webm --top 5 [--json -]     # cluster/cmd_show.py
"""
from __future__ import annotations

import argparse
from typing import Any

from c3dhash.cluster.cmd_show import add_checkpoint_arg
from c3dhash.eval.config import MAX_RETRIES, EvalConfig


def format_metrics(m: dict[str, Any]) -> str:
    """The metric table printed by `c3dhash eval`."""
    rows = [("mAP@all", m["map_all"])]
    if "map_all_expected" in m:
        rows.append(("mAP@all, expected over tie orders", m["map_all_expected"]))
    rows += [(f"mAP@{k} / relevant in top {k} (CSQ)", v) for k, v in m["map_at_k_rel"].items()]
    rows += [(f"mAP@{k} / {k} (SSVH)", v) for k, v in m["map_at_k"].items()]
    rows += [(f"precision@{k}", v) for k, v in m["precision_at_k"].items()]
    pr = m["pr_curve"]
    r = min(2, m["bits"])
    rows += [(f"precision within radius {r}", pr["precision"][r]),
             (f"recall within radius {r}", pr["recall"][r])]
    width = max(len(name) for name, _ in rows)
    head = (f"{m['num_queries']} queries x {m['num_db']} database items, {m['bits']} bits, "
            f"ties by database index")
    return "\n".join([head] + [f"  {name:<{width}}  {value:.4f}" for name, value in rows])


def cmd_eval(args: argparse.Namespace) -> int:
    from c3dhash.eval.codes import load_codes
    from c3dhash.eval.metrics.exact import evaluate, write_json
    if args.address:  # fail in seconds, as `c3dhash train` does, not after ray.init's minutes of retries
        from c3dhash.cluster.connect import probe
        args.address = probe(args.address)
    query, db = load_codes(args.query), load_codes(args.db)
    kw = dict(map_at_k_rel=args.map_at_k_rel, map_at_k=args.map_at_k, precision_at_k=args.precision_at_k,
              expected_ties=args.expected_ties, progress=True)
    if args.shards > 1 or args.address:
        from c3dhash.eval.metrics.sharded import evaluate_sharded
        m = evaluate_sharded(query, db, shards=args.shards, address=args.address or None,
                             max_retries=args.max_retries, threads_per_shard=args.threads_per_shard, **kw)
    else:
        m = evaluate(query, db, **kw)
    print(format_metrics(m))
    if args.json:
        print(f"wrote {write_json(args.json, m)}")
    if args.plots or args.tensorboard:  # PR curve from true counts + distance histograms: cluster/cmd_show.py
        from c3dhash.cluster.cmd_show import write_eval_curves
        write_eval_curves(query, db, m, png=args.plots, run_dir=args.tensorboard)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    if args.video:  # query videos against an index folder: cluster/cmd_show.py
        from c3dhash.cluster.cmd_show import cmd_search_videos
        return cmd_search_videos(args)
    from pathlib import Path

    from c3dhash.eval.codes import load_codes
    from c3dhash.eval.metrics.exact import write_json
    if Path(args.index).is_dir():
        from c3dhash.eval.index.folder import load_index
        db = load_index(args.index).as_codes()
    else:
        db = load_codes(args.index)
    from c3dhash.eval.search.report import search
    res = search(load_codes(args.query), db, args.top, backend=args.backend)
    for q in res["queries"][:args.show]:
        print(f"query {q['query']} {q['id']} (label {q['label']}):")
        for j, item_id, d in q["results"]:
            print(f"  {d:4d}  {j:8d}  {item_id}")
    if len(res["queries"]) > args.show:
        print(f"... {len(res['queries']) - args.show} more queries" + ("" if args.json else " (see --json)"))
    if args.json:
        print(f"wrote {write_json(args.json, res)}")
    return 0


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    """Add `eval` and `search` to `c3dhash`."""
    d = EvalConfig()
    p = sub.add_parser("eval", help="retrieval metrics of query codes against a database (exact)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--query", required=True, help="query codes .npz (c3dhash encode), e.g. the test split")
    p.add_argument("--db", required=True, help="database codes .npz, e.g. the train split")
    p.add_argument("--shards", type=_positive, default=1,
                   help="Ray tasks over query blocks (1 = in process, numba threads); results are identical")
    p.add_argument("--address", default="", help="existing Ray cluster (e.g. auto, ray://head:10001); "
                   "default: a local Ray with --shards CPUs when --shards > 1")
    p.add_argument("--threads-per-shard", type=_positive, default=1, help="CPUs (numba threads) per task")
    p.add_argument("--max-retries", type=int, default=MAX_RETRIES, help="retries of a failed task")
    p.add_argument("--map-at-k-rel", type=_positive, nargs="+", default=list(d.map_at_k_rel), metavar="K",
                   help="K for mAP@K / relevant in top K (CSQ; 100 for UCF101, 70 for HMDB-51)")
    p.add_argument("--map-at-k", type=_positive, nargs="+", default=list(d.map_at_k), metavar="K",
                   help="K for mAP@K / K (SSVH family)")
    p.add_argument("--precision-at-k", type=_positive, nargs="+", default=list(d.precision_at_k), metavar="K")
    p.add_argument("--expected-ties", action="store_true", default=d.expected_ties,
                   help="also report mAP@all averaged over random orders of tied items (McSherry & Najork)")
    p.add_argument("--json", help="write all metrics (with the PR curve) to this JSON file (atomically)")
    p.add_argument("--plots", help="write the PR curve and the same/different-label distance histograms (PNG)")
    p.add_argument("--tensorboard", metavar="RUN_DIR",
                   help="also write them to TensorBoard: RUN_DIR/tensorboard (e.g. runs/synth-cpu)")
    p.set_defaults(func=cmd_eval)

    s = sub.add_parser("search", help="Hamming top-K of query codes in an index (ties by database index)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--index", required=True, help="database codes .npz, or an index folder (c3dhash index)")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", help="query codes .npz")
    q.add_argument("--video", nargs="+", metavar="FILE",
                   help="query videos, encoded with the index folder's model (any codec PyAV reads)")
    add_checkpoint_arg(s)
    s.add_argument("--top", type=_positive, default=10, help="results per query (all N if larger)")
    s.add_argument("--show", type=int, default=3, help="queries to print (the JSON has all)")
    s.add_argument("--backend", choices=("auto", "numba", "torch"), default="numba",
                   help="numba: CPU kernels; torch: CUDA when available; auto: torch if CUDA is available")
    s.add_argument("--json", help="write every query's ranked list to this file (atomically); - = stdout (--video)")
    s.set_defaults(func=cmd_search)
