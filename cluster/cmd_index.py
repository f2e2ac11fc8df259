"""`index`: encode videos into a searchable index folder; `encode`: a dataset split into a codes file.

    c3dhash index --checkpoint runs/synth-cpu/best.pt --videos data/synth --out runs/synth.index
    c3dhash index --checkpoint best.pt --manifest data/ucf101/manifests/split1/train.tsv --out ucf.index \\
        --workers 4 [--address auto] [--device gpu --threads 4]
    c3dhash index --checkpoint best.pt --videos DIR --out INDEX --add          # only the new videos
    c3dhash encode --checkpoint runs/synth-cpu/best.pt --split test --out runs/test.npz [--workers 2]
    c3dhash encode --config configs/synth-cpu.yaml --checkpoint best --split test --out runs/test.npz

The checkpoint describes itself (bits, backbone, clip geometry); `--config` is optional and must
agree with it. `--workers N` shards the encoding over N Ray actors (one GPU each where the Ray cluster has GPUs,
or with `--device gpu`), with the same codes as one process.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from c3dhash.cluster.args import add_config_args, add_ray_worker_args, path_arg
from c3dhash.cluster.config import ConfigError


def add_model_args(p: argparse.ArgumentParser, *, required: bool = True, default: str | None = None,
                   help: str | None = None) -> None:
    path_arg(p, "--checkpoint", kind="checkpoint", required=required, default=default,
             help=help or "the model: best.pt of a run, a checkpoint_*/ folder, or best | latest with --config")
    add_config_args(p, help="the run's job config, a file or a shipped name (optional: checked against the "
                            "checkpoint; needed for --checkpoint best | latest)")


def resolve_model(args: argparse.Namespace) -> tuple[str, dict[str, Any] | None, Any]:
    """(checkpoint file, --config as a dict of sections or None, the JobConfig or None)."""
    from c3dhash.cluster.config import config_to_dict, load_config, run_dir
    cfg = load_config(args.config, args.overrides) if args.config else None
    path = args.checkpoint
    if path in ("best", "latest"):
        if cfg is None:
            raise ConfigError(f"--checkpoint {path} needs --config (to find the run folder); or pass the file, "
                              f"e.g. --checkpoint runs/<name>/best.pt")
        from c3dhash.distributed.checkpoint import resolve
        path = str(resolve(run_dir(cfg), path))
    return path, config_to_dict(cfg) if cfg else None, cfg


def encoder(args: argparse.Namespace, config: dict[str, Any] | None, *, static: bool = False):
    """encode(state, paths, mirror=False) for the chosen workers (eval/index/encode_ray.py)."""
    from c3dhash.eval.index.encode_ray import encode_files
    if args.address:  # a dead address or a refused token: one line in seconds, before any video is read
        from c3dhash.cluster.connect import probe
        args.address = probe(args.address)

    def encode(state: dict[str, Any], paths: list[str], mirror: bool = False):
        return encode_files(state, paths, workers=args.workers, device=args.device, num_threads=args.threads,
                            address=args.address or None, config=config, static=static, mirror=mirror)
    return encode


def failed_job(func):
    """A sharded encoding that could not finish (workers kept dying) is a failed job: exit 1, not 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Exception as exc:
            # Not imported up front (it loads torch and Ray): an EncodeError exists only once a job has run.
            encode_ray = sys.modules.get("c3dhash.eval.index.encode_ray")
            if encode_ray is None or not isinstance(exc, encode_ray.EncodeError):
                raise
            print(f"c3dhash {args.command}: failed: {exc}; nothing written", file=sys.stderr)
            return 1
    return run


def report_skips(skipped: list[tuple[str, str]], padded: list[str]) -> None:
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if padded:
        print(f"{len(padded)} video(s) shorter than one clip were padded with their last frame (as in training), "
              f"e.g. {padded[0]}", file=sys.stderr)


def cmd_index(args: argparse.Namespace) -> int:
    path, config, _ = resolve_model(args)  # first: a config error answers before torch loads
    from c3dhash.eval.index.folder import build_index
    s = build_index(checkpoint=path, out=args.out, encode=encoder(args, config), videos=args.videos,
                    manifest=args.manifest, root=args.root, add=args.add, config=config)
    report_skips(s["skipped"], s["padded"])
    if args.add and not s["new"] and not s["skipped"]:
        print(f"{s['out']}: nothing new to add ({s['old']} videos indexed)")
        return 0
    print(f"indexed {s['new']} new + {s['old']} old videos -> {s['out']}"
          + (f" ({len(s['skipped'])} skipped, listed in {Path(s['out']) / 'skipped.tsv'})" if s["skipped"] else ""))
    return 0


def encode_split(args: argparse.Namespace, split: str):
    """(Codes of the split's decodable videos, number of videos listed) with the --checkpoint model."""
    import numpy as np

    from c3dhash.cluster.config import section_from_dict
    from c3dhash.eval.codes import Codes, pack_bits
    from c3dhash.loaders.config import DataConfig
    from c3dhash.loaders.splits import load_split
    path, config, cfg = resolve_model(args)  # first: a config error answers before torch loads
    from c3dhash.model.load import from_state, read_checkpoint
    state = read_checkpoint(path)
    model = from_state(state, config=config, source=path)
    data = cfg.data if cfg else section_from_dict(DataConfig, model.config["data"], f"{path}: config data")
    records = load_split(data, split)  # the manifest minus its skip.tsv
    res = encoder(args, config, static=getattr(args, "static", False))(
        state, [str(Path(data.root) / r.path) for r in records])
    report_skips([(records[i].path, why) for i, why in sorted(res.skipped.items())], [])
    ok = res.ok
    kept = [r for r, good in zip(records, ok) if good]
    codes = Codes(codes=pack_bits(res.outputs[ok]), bits=model.bits,
                  labels=np.asarray([r.label for r in kept], np.int64), ids=np.asarray([r.path for r in kept], str))
    print(f"encoded {len(kept)} of {len(records)} {split} videos ({model.bits} bits)", file=sys.stderr)
    return codes, len(records)


def cmd_encode(args: argparse.Namespace) -> int:
    from c3dhash.eval.codes import save_codes
    codes, _ = encode_split(args, args.split)
    save_codes(args.out, codes)
    print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="encode a folder or manifest of videos into a searchable index folder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    path_arg(src, "--videos", kind="dir", help="folder of videos (class folders <DIR>/<class>/... give labels)")
    path_arg(src, "--manifest", help="split manifest TSV (path, label, class_name), e.g. .../train.tsv")
    path_arg(p, "--root", kind="dir", default=None,
             help="dataset root of --manifest (default: the folder above manifests/)")
    p.add_argument("-o", "--out", required=True, help="index folder to write (replaced atomically)")
    p.add_argument("--add", action="store_true", help="keep the index's codes, encode only videos it lacks")
    add_ray_worker_args(p)
    p.set_defaults(func=failed_job(cmd_index))

    p = sub.add_parser("encode", help="encode a split with a trained model into a codes .npz",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, required=False, default="best")
    p.add_argument("--split", required=True, choices=("train", "val", "test"))
    p.add_argument("-o", "--out", required=True, help="output .npz (codes file)")
    p.add_argument("--static", action="store_true", help="first frame repeated (motion-free baseline)")
    add_ray_worker_args(p)
    p.set_defaults(func=failed_job(cmd_encode))
