"""`c3dhash combine`: one model from several trained runs, their codes side by side (model/towers.py).

    c3dhash train --config motion-cpu --set data.root=data/lib          # videos that move alike
    c3dhash train --config library-cpu --set data.root=data/lib         # copies of a video
    c3dhash combine --checkpoint runs/motion-cpu/best.pt --checkpoint runs/library-cpu/best.pt -o both.pt
    c3dhash index --checkpoint both.pt --videos data/lib -o lib.index    # one index for both, at a trade-off

The checkpoints must share the backbone and the clip geometry (frames, stride, resize, crop, mean/std, clips
per video); each keeps its own mirrored views (data.eval_flip). The result is a checkpoint like any other:
eval, encode, index, search, serve and export read it. Its fingerprint covers every tower's weights.

Read-outs (model/readout.py), one --read-out per --checkpoint, fitted on the videos of --fit (no labels):

    c3dhash combine --checkpoint runs/motion-cpu/best.pt --checkpoint runs/library-cpu/best.pt -o both.pt \
        --read-out hyperplanes:192 --read-out itq:4 --fit data/lib       # 192 + 4 x 48 bits

  sign            the tower's own bits (the default)
  hyperplanes:M   M random-hyperplane bits through the library's centre: keep the angles of a motion tower
  itq:R           a PCA + ITQ rotation of the centred outputs, each bit counted R times: a look tower's bits
                  balanced, and weighted R to 1 against the other parts
Search such a model with mirrored queries too (`search --video ... --mirrored`) to find flipped copies.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from c3dhash.cluster.args import add_ray_worker_args, path_arg
from c3dhash.cluster.cmd_index import failed_job


def cmd_combine(args: argparse.Namespace) -> int:
    from c3dhash.cluster.config import ConfigError
    from c3dhash.model.readout import parse_spec
    specs = [parse_spec(s) for s in args.read_out] or ["sign"] * len(args.checkpoint)
    if len(specs) != len(args.checkpoint):
        raise ConfigError(f"{len(specs)} --read-out for {len(args.checkpoint)} --checkpoint; give one per "
                          f"checkpoint, in the same order (sign for a tower's own bits)")
    if (set(specs) != {"sign"}) != bool(args.fit):
        raise ConfigError("--read-out other than sign needs --fit DIR (the library's videos to fit it on)"
                          if args.fit is None else "--fit fits read-outs: give --read-out for each --checkpoint")
    import torch

    from c3dhash.loaders.atomic import atomic_path
    from c3dhash.model.load import combine_checkpoints, from_state, read_checkpoint, with_readouts
    state = combine_checkpoints([read_checkpoint(p) for p in args.checkpoint], list(args.checkpoint))
    if args.fit:
        state = with_readouts(state, specs, library_outputs(args, state), seed=args.seed)
    m = from_state(state, source=args.out)  # builds and loads it: a checkpoint that cannot load is never written
    with atomic_path(args.out) as tmp:
        torch.save(state, tmp)
    parts = " + ".join(f"{t.get('code_bits', t['bits'])}{' (mirrored views)' if t['eval_flip'] else ''}"
                       f"{' (' + t['readout'] + ')' if 'readout' in t else ''}" for t in m.card["towers"])
    print(f"combined {len(args.checkpoint)} models: {parts} = {m.bits} bits -> {args.out} ({m.fingerprint[:19]})")
    return 0


def library_outputs(args: argparse.Namespace, state: dict):
    """The combined model's real outputs for every video under --fit (the encoder `index` uses)."""
    from c3dhash.cluster.cmd_index import encoder, report_skips
    from c3dhash.eval.index.folder import scan_folder
    records = scan_folder(args.fit)
    res = encoder(args, None)(state, [str(Path(args.fit) / r.path) for r in records])
    report_skips([(records[i].path, why) for i, why in sorted(res.skipped.items())], [])
    print(f"fitting read-outs on {int(res.ok.sum())} videos under {args.fit}")
    return res.outputs[res.ok]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("combine", help="one model from several runs' checkpoints: their codes side by side",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    path_arg(p, "--checkpoint", kind="checkpoint", action="append", required=True,
             help="best.pt of a run (or a checkpoint_*/ folder); give it twice or more, in code order")
    p.add_argument("-o", "--out", required=True, help="the combined checkpoint to write")
    p.add_argument("--read-out", action="append", default=[], metavar="SPEC",
                   help="per --checkpoint, in order: sign | hyperplanes:M | itq:R (see above; needs --fit)")
    path_arg(p, "--fit", kind="dir", default=None, help="folder of the library's videos to fit the read-outs on")
    p.add_argument("--seed", type=int, default=0, help="seed of the random hyperplanes and ITQ's start")
    add_ray_worker_args(p)
    p.set_defaults(func=failed_job(cmd_combine))
