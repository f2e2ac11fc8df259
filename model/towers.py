"""One code from several trained hash nets: each net's output side by side (`c3dhash combine`).

    both = combine_checkpoints([read_checkpoint("runs/motion-cpu/best.pt"),
                                read_checkpoint("runs/library-cpu/best.pt")], sources)   # a checkpoint dict
    m = from_state(both)                       # model/load.py: m.net is a Towers, m.bits = 48 + 48

Why: the recipe that finds copies of a video (configs/library-cpu.yaml) and the one that finds videos that move
alike (configs/motion-cpu.yaml) pull one trunk two ways; on one trunk either objective spoils the other
(docs/datasets.md). Trained apart and read side by side, one index answers both kinds of question, the Hamming
distance being the sum of both parts' (a trade-off between the two jobs, measured in docs/datasets.md).
A tower trained with data.eval_flip encodes each clip and its mirror inside the net (the mean of both, as the
evaluation pipeline does), so the combined model's pipeline decodes plain clips and every tower keeps its own view.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from c3dhash.model.backbone import ModelError
from c3dhash.model.hashnet import HashNet, build_hash_net

# What a tower's codes depend on beyond its weights (part of the combined model's fingerprint).
TOWER_KEYS = ("bits", "head_norm", "eval_flip")
# Geometry keys every tower must share: they decide which pixels one clip holds (eval_flip is per tower).
SHARED_DATA = ("num_frames", "stride", "resize", "crop", "mean", "std", "clips_per_video")


class Towers(nn.Module):
    """N x 3 x T x H x W clips -> N x sum(bits): each tower's tanh outputs, concatenated in tower order."""

    def __init__(self, nets: list[HashNet], flips: list[bool]):
        super().__init__()
        self.towers = nn.ModuleList(nets)
        self.flips = tuple(bool(f) for f in flips)
        self.bits = sum(n.bits for n in nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for net, flip in zip(self.towers, self.flips):
            h = net(x)
            outs.append((h + net(x.flip(-1))) / 2 if flip else h)  # the left-right mirror of every clip
        return torch.cat(outs, 1)


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def _tower_spec(state: dict[str, Any], source: str) -> dict[str, Any]:
    cfg = state.get("config") or {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    if model.get("towers"):
        raise ModelError(f"{source}: already a combined model; combine the checkpoints it was made of")
    missing = [f"model.{k}" for k in ("bits", "backbone") if k not in model]
    missing += [f"data.{k}" for k in SHARED_DATA if k not in data]
    if missing:
        raise ModelError(f"{source}: its config lacks {', '.join(missing)}; combine best.pt files of c3dhash runs")
    return {"bits": int(model["bits"]), "head_norm": bool(model.get("head_norm", False)),
            "eval_flip": bool(data.get("eval_flip", False)), "backbone": str(model["backbone"])}


def combine_checkpoints(states: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    """A checkpoint dict ({"model", "config"}) whose model is the towers of `states`, in order.

    Every checkpoint must have the same backbone and clip geometry (frames, stride, resize, crop, mean/std,
    clips per video): one decoded clip feeds every tower. The config is the first checkpoint's with
    model.bits the sum, model.towers the per-tower keys, and data.eval_flip off (each tower flips itself)."""
    if len(states) < 2:
        raise ModelError(f"combine needs two or more checkpoints, got {len(states)}")
    specs = [_tower_spec(s, src) for s, src in zip(states, sources)]
    first = states[0]["config"]
    for s, src, spec in zip(states[1:], sources[1:], specs[1:]):
        bad = [f"data.{k}={s['config']['data'][k]!r} vs {first['data'][k]!r}" for k in SHARED_DATA
               if _plain(s["config"]["data"][k]) != _plain(first["data"][k])]
        bad += ([f"model.backbone={spec['backbone']!r} vs {specs[0]['backbone']!r}"]
                if spec["backbone"] != specs[0]["backbone"] else [])
        if bad:
            raise ModelError(f"{src}: its clips differ from {sources[0]}'s ({'; '.join(bad)}); towers read the same "
                             f"clips, so train them with one clip geometry")
    config = copy.deepcopy(first)
    config["model"] = {"bits": sum(s["bits"] for s in specs), "backbone": specs[0]["backbone"],
                       "towers": [{**{k: s[k] for k in TOWER_KEYS}, "source": src} for s, src in zip(specs, sources)]}
    config["data"]["eval_flip"] = False
    model = {f"towers.{i}.{k}": v for i, s in enumerate(states) for k, v in s["model"].items()}
    return {"model": model, "config": config}


def build_towers(specs: list[dict[str, Any]], backbone: str) -> Towers:
    """Untrained towers for the specs of a combined checkpoint's model.towers (weights: load_state_dict)."""
    nets = [build_hash_net(bits=int(s["bits"]), backbone=backbone, head_norm=bool(s["head_norm"])) for s in specs]
    return Towers(nets, [bool(s["eval_flip"]) for s in specs])
