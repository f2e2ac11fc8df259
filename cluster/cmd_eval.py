"""Subcommands `eval` (retrieval metrics) and `search` (Hamming top-K of queries in a database).

    c3dhash eval --checkpoint runs/synth-cpu/best.pt                  # encode test + train, then the metrics
    c3dhash eval --query runs/test.npz --db runs/train.npz [--json runs/metrics.json | --json -]
    c3dhash eval --query runs/test.npz --db runs/synth.index          # an index folder as the database
    c3dhash eval -q runs/test.npz --db runs/train.npz --shards 4 [--address auto] [--expected-ties]
    c3dhash eval --query runs/test.npz --db runs/train.npz --plots runs/eval.png --tensorboard runs/synth-cpu
    c3dhash search --index runs/train.npz --query runs/test.npz --top 10 [--json runs/top10.json]
    c3dhash search --index runs/synth.index --video a.mp4 b.webm --top 5 --json -
    c3dhash search -i runs/synth.index --video a.mp4 --max-distance 6          # radius search; "no match"

Search results have one schema in every mode (rank, distance, index, path, label, class; see
`--json`). Exit status: 0 done; 1 some query video could not be decoded (it is listed with its error; pass
--skip-bad to leave such queries out and exit 0); 2 a usage error (a missing file, a bad value).
"""
from __future__ import annotations

import argparse
from typing import Any

from c3dhash.cluster.args import (add_json_arg, add_ray_worker_args, emit_json, non_negative, path_arg, positive,
                                  text_stream)
from c3dhash.cluster.cmd_index import add_model_args
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


def load_db(path: str):
    """Database codes from a codes .npz or an index folder (c3dhash index)."""
    from pathlib import Path

    from c3dhash.eval.codes import load_codes
    if Path(path).is_dir():
        from c3dhash.eval.index.folder import load_index
        return load_index(path).as_codes()
    return load_codes(path)


def checkpoint_codes(args: argparse.Namespace):
    """`eval --checkpoint`: (test codes, train codes) encoded with the checkpoint (and --config's data)."""
    from c3dhash.cluster.cmd_index import encode_split
    query, _ = encode_split(args, "test")
    db, _ = encode_split(args, "train")
    return query, db


def cmd_eval(args: argparse.Namespace) -> int:
    from c3dhash.eval.codes import load_codes
    if args.address:  # fail in seconds, as `c3dhash train` does, not after ray.init's minutes of retries
        from c3dhash.cluster.connect import probe
        args.address = probe(args.address)
    query, db = checkpoint_codes(args) if args.checkpoint else (load_codes(args.query), load_db(args.db))
    from c3dhash.eval.metrics.exact import evaluate  # after the inputs: a bad one answers before numba loads
    kw = dict(map_at_k_rel=args.map_at_k_rel, map_at_k=args.map_at_k, precision_at_k=args.precision_at_k,
              expected_ties=args.expected_ties, progress=True)
    if args.shards > 1 or args.address:
        from c3dhash.eval.metrics.sharded import evaluate_sharded
        m = evaluate_sharded(query, db, shards=args.shards, address=args.address or None,
                             max_retries=args.max_retries, threads_per_shard=args.threads_per_shard, **kw)
    else:
        m = evaluate(query, db, **kw)
    print(format_metrics(m), file=text_stream(args))
    emit_json(args.json, m)
    if args.plots or args.tensorboard:  # PR curve from true counts + distance histograms: cluster/cmd_show.py
        from c3dhash.cluster.cmd_show import write_eval_curves
        write_eval_curves(query, db, m, png=args.plots, run_dir=args.tensorboard)
    return 0


def search_codes_file(args: argparse.Namespace) -> dict[str, Any]:
    """`search --query CODES` against a codes .npz or an index folder, in the one result schema."""
    from pathlib import Path

    from c3dhash.cluster.results import from_codes
    from c3dhash.eval.codes import load_codes
    from c3dhash.eval.search.report import search
    query = load_codes(args.query)
    if Path(args.index).is_dir():
        from c3dhash.eval.index.folder import load_index
        idx = load_index(args.index)
        db, items = idx.as_codes(), idx.items
        names = {r.label: r.class_name for r in items}

        def item(j: int):
            return items[j].path, items[j].label, items[j].class_name
    else:
        db = load_codes(args.index)
        names = {}

        def item(j: int):
            return str(db.ids[j]), int(db.labels[j]), None
    res = search(query, db, min(top_k(args, len(db)), len(db)), method=args.method)
    return from_codes(res, item, lambda label: names.get(label), index=args.index, max_distance=args.max_distance)


def top_k(args: argparse.Namespace, n: int) -> int:
    """--top, else 10; a radius search (--max-distance) without --top considers every item."""
    if args.top is not None:
        return args.top
    return n if args.max_distance is not None else 10


def cmd_search(args: argparse.Namespace) -> int:
    from c3dhash.cluster.config import ConfigError
    from c3dhash.cluster.results import drop_bad, format_text
    if args.mirrored and not args.video:
        raise ConfigError("--mirrored mirrors query videos: use it with --video (codes cannot be mirrored)")
    if args.video:  # query videos against an index folder: cluster/cmd_show.py
        from c3dhash.cluster.cmd_show import search_videos_json
        res = search_videos_json(args)
    else:
        res = search_codes_file(args)
    status = drop_bad(res, args.skip_bad)
    print(format_text(res, show=None if args.video else args.show), file=text_stream(args))
    emit_json(args.json, res)
    return status


def register(sub: argparse._SubParsersAction) -> None:
    """Add `eval` and `search` to `c3dhash`."""
    d = EvalConfig()
    p = sub.add_parser("eval", help="retrieval metrics: query codes against a database, or a checkpoint's "
                       "test split against its train split", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    path_arg(p, "-q", "--query", help="query codes .npz (c3dhash encode), e.g. the test split")
    path_arg(p, "--db", kind="any", help="database: codes .npz (e.g. the train split) or an index folder")
    add_model_args(p, required=False, default=None,
                   help="encode the test (queries) and train (database) splits with this model first: best.pt of "
                        "a run, a checkpoint_*/ folder, or best | latest with --config")
    p.add_argument("--shards", type=positive, default=1,
                   help="Ray tasks over query blocks (1 = in process, numba threads); results are identical")
    p.add_argument("--threads-per-shard", type=positive, default=1, help="CPUs (numba threads) per task")
    p.add_argument("--max-retries", type=int, default=MAX_RETRIES, help="retries of a failed task")
    add_ray_worker_args(p)  # --workers/--device/--threads: the encoders of --checkpoint; --address: both
    p.add_argument("--map-at-k-rel", type=positive, nargs="+", default=list(d.map_at_k_rel), metavar="K",
                   help="K for mAP@K / relevant in top K (CSQ; 100 for UCF101, 70 for HMDB-51)")
    p.add_argument("--map-at-k", type=positive, nargs="+", default=list(d.map_at_k), metavar="K",
                   help="K for mAP@K / K (SSVH family)")
    p.add_argument("--precision-at-k", type=positive, nargs="+", default=list(d.precision_at_k), metavar="K")
    p.add_argument("--expected-ties", action="store_true", default=d.expected_ties,
                   help="also report mAP@all averaged over random orders of tied items (McSherry & Najork)")
    add_json_arg(p, "all metrics (with the PR curve)")
    p.add_argument("--plots", help="write the PR curve and the same/different-label distance histograms (PNG)")
    p.add_argument("--tensorboard", metavar="RUN_DIR",
                   help="also write them to TensorBoard: RUN_DIR/tensorboard (e.g. runs/synth-cpu)")
    p.set_defaults(func=eval_command)

    s = sub.add_parser("search", help="Hamming top-K of queries (codes or videos) in a database",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    path_arg(s, "-i", "--index", kind="any", required=True,
             help="the database: an index folder (c3dhash index) or a codes .npz")
    q = s.add_mutually_exclusive_group(required=True)
    path_arg(q, "-q", "--query", help="query codes .npz")
    path_arg(q, "--video", nargs="+", metavar="FILE",
             help="query videos, encoded with the index folder's model (any codec PyAV reads)")
    add_checkpoint_arg(s)
    s.add_argument("-k", "--top", type=positive, default=None,
                   help="results per query (default 10; every item with --max-distance)")
    s.add_argument("-r", "--max-distance", type=non_negative, default=None, metavar="R",
                   help="radius search: only results within Hamming distance R; none is reported as no match")
    s.add_argument("--mirrored", action="store_true",
                   help="--video: also search each video mirrored left-right, a database video at the nearer "
                        "distance (finds flipped copies with a model whose codes tell left from right)")
    s.add_argument("--skip-bad", action="store_true",
                   help="leave out query videos that cannot be decoded and exit 0 (default: list them with their "
                        "error and exit 1)")
    s.add_argument("--show", type=non_negative, default=3, help="--query: queries printed as text (the JSON has all)")
    s.add_argument("--method", choices=("auto", "bitsliced", "words", "mih", "torch"), default="auto",
                   help="search method (docs/search.md; the same results whichever); torch: CUDA when available")
    add_json_arg(s, "every query's ranked list")
    s.set_defaults(func=cmd_search)


def eval_command(args: argparse.Namespace) -> int:
    """`eval` needs --checkpoint, or both --query and --db (argparse cannot say "one of these groups")."""
    from c3dhash.cluster.config import ConfigError
    if args.checkpoint is None and not (args.query and args.db):
        raise ConfigError("pass --query CODES --db CODES_OR_INDEX, or --checkpoint CK [--config CFG] to encode "
                          "the test and train splits first")
    if args.checkpoint is not None and (args.query or args.db):
        raise ConfigError("--checkpoint encodes the queries and the database itself; drop --query/--db, or drop "
                          "--checkpoint")
    return cmd_eval(args)
