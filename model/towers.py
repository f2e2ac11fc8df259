"""One code from several trained hash nets: each net's output side by side (`c3dhash combine`).

    both = combine_checkpoints([read_checkpoint("runs/motion-cpu/best.pt"),     # model/load.py: a checkpoint
                                read_checkpoint("runs/library-cpu/best.pt")], sources)   # dict with model.towers
    m = from_state(both)                       # m.net is a Towers, m.bits = 48 + 48

Why: the recipe that finds copies of a video (configs/library-cpu.yaml) and the one that finds videos that move
alike (configs/motion-cpu.yaml) pull one trunk two ways; on one trunk either objective spoils the other
(docs/datasets.md). Trained apart and read side by side, one index answers both kinds of question, the Hamming
distance being the sum of both parts' (a trade-off between the two jobs, measured in docs/datasets.md).
A tower trained with data.eval_flip encodes each clip and its mirror inside the net (the mean of both, as the
evaluation pipeline does), so the combined model's pipeline decodes plain clips and every tower keeps its own view.
A tower may have a read-out (model/readout.py, `combine --read-out ... --fit DIR`): a fitted affine map of its
outputs, applied per clip, which gives the same code as applied to the video's mean output.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from c3dhash.model.hashnet import HashNet, build_hash_net
from c3dhash.model.readout import ReadOut

# What a tower's codes depend on beyond its weights (part of the combined model's fingerprint); code_bits only
# where the tower has a read-out (model/readout.py), so older combined models keep their fingerprints.
TOWER_KEYS = ("bits", "head_norm", "eval_flip")
READOUT_KEYS = ("code_bits", "readout")


class Towers(nn.Module):
    """N x 3 x T x H x W clips -> N x sum(code bits): each tower's tanh outputs, through its read-out if it has
    one, concatenated in tower order."""

    def __init__(self, nets: list[HashNet], flips: list[bool], code_bits: list[int | None] | None = None):
        super().__init__()
        code_bits = code_bits or [None] * len(nets)
        self.towers = nn.ModuleList(nets)
        self.flips = tuple(bool(f) for f in flips)
        self.readouts = nn.ModuleList(nn.Identity() if c is None else ReadOut(n.bits, c)
                                      for n, c in zip(nets, code_bits))
        self.bits = sum(n.bits if c is None else c for n, c in zip(nets, code_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for net, flip, readout in zip(self.towers, self.flips, self.readouts):
            h = net(x)
            h = (h + net(x.flip(-1))) / 2 if flip else h  # the left-right mirror of every clip
            outs.append(readout(h))
        return torch.cat(outs, 1)


def build_towers(specs: list[dict[str, Any]], backbone: str) -> Towers:
    """Untrained towers for the specs of a combined checkpoint's model.towers (weights: load_state_dict)."""
    nets = [build_hash_net(bits=int(s["bits"]), backbone=backbone, head_norm=bool(s["head_norm"])) for s in specs]
    return Towers(nets, [bool(s["eval_flip"]) for s in specs], [s.get("code_bits") for s in specs])
