"""`c3dhash export`: the trained model as a torch.export program that runs without this project.

    c3dhash export --checkpoint runs/synth-cpu/best.pt --out runs/synth-cpu/hashnet.pt2

    import torch, json
    extra = {"c3dhash.json": ""}
    net = torch.export.load("hashnet.pt2", extra_files=extra).module()
    card = json.loads(extra["c3dhash.json"])          # bits, clip geometry (frames, stride, resize, crop,
    h = net(clips)                                    # mean/std, clips per video, eval_flip), fingerprint
    code = h.mean(0) >= 0                             # clips [N, 3, T, H, W] of one video -> its bits

ONNX would need the onnx package (not installed); torch.export (.pt2) needs only torch.
"""
from __future__ import annotations

import argparse
import json

from c3dhash.cluster.cmd_index import add_model_args, resolve_model

CARD_FILE = "c3dhash.json"


def cmd_export(args: argparse.Namespace) -> int:
    path, config, _ = resolve_model(args)  # first: a config error answers before torch loads
    import torch

    from c3dhash.loaders.atomic import atomic_path
    from c3dhash.model.load import export_program, load_hash_net
    m = load_hash_net(path, config=config)
    program = export_program(m)
    card = {**m.card, "fingerprint": m.fingerprint, "input": "float clips [N, 3, T, H, W], normalised with "
            "geometry.mean/std on the [0, 1] scale", "code": "mean over a video's clips (with geometry.eval_flip, "
            "each clip and its left-right mirror) of the outputs, >= 0"}
    with atomic_path(args.out) as tmp:
        torch.export.save(program, tmp, extra_files={CARD_FILE: json.dumps(card)})
    print(f"exported {m.backbone} + {m.bits}-bit head ({m.geometry.num_frames} x {m.geometry.crop[0]} x "
          f"{m.geometry.crop[1]} clips) -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint's model with torch.export (.pt2)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("-o", "--out", required=True, help="output .pt2 file")
    p.set_defaults(func=cmd_export)
