"""`c3dhash combine`: one model from several trained runs, their codes side by side (model/towers.py).

    c3dhash train --config motion-cpu --set data.root=data/lib          # videos that move alike
    c3dhash train --config library-cpu --set data.root=data/lib         # copies of a video
    c3dhash combine --checkpoint runs/motion-cpu/best.pt --checkpoint runs/library-cpu/best.pt -o both.pt
    c3dhash index --checkpoint both.pt --videos data/lib -o lib.index    # one index for both, at a trade-off

The checkpoints must share the backbone and the clip geometry (frames, stride, resize, crop, mean/std, clips
per video); each keeps its own mirrored views (data.eval_flip). The result is a checkpoint like any other:
eval, encode, index, search, serve and export read it. Its fingerprint covers every tower's weights.
"""
from __future__ import annotations

import argparse

from c3dhash.cluster.args import path_arg


def cmd_combine(args: argparse.Namespace) -> int:
    import torch

    from c3dhash.loaders.atomic import atomic_path
    from c3dhash.model.load import combine_checkpoints, from_state, read_checkpoint
    state = combine_checkpoints([read_checkpoint(p) for p in args.checkpoint], list(args.checkpoint))
    m = from_state(state, source=args.out)  # builds and loads it: a checkpoint that cannot load is never written
    with atomic_path(args.out) as tmp:
        torch.save(state, tmp)
    parts = " + ".join(f"{t['bits']}{' (mirrored views)' if t['eval_flip'] else ''}" for t in m.card["towers"])
    print(f"combined {len(args.checkpoint)} models: {parts} = {m.bits} bits -> {args.out} ({m.fingerprint[:19]})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("combine", help="one model from several runs' checkpoints: their codes side by side",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    path_arg(p, "--checkpoint", kind="checkpoint", action="append", required=True,
             help="best.pt of a run (or a checkpoint_*/ folder); give it twice or more, in code order")
    p.add_argument("-o", "--out", required=True, help="the combined checkpoint to write")
    p.set_defaults(func=cmd_combine)
