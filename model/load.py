"""Self-describing checkpoints: a trained HashNet plus everything needed to use it, from the checkpoint alone.

    m = load_hash_net("runs/synth-cpu/best.pt")       # torch.load(weights_only=True)
    m.net, m.bits, m.backbone, m.geometry              # eval-mode net, 48, "r3d_18", ClipGeometry(...)
    m.fingerprint                                      # "sha256:..." of the weights + bits + geometry
    program = export_program(m)                        # torch.export.ExportedProgram, batch of clips dynamic

Every c3dhash checkpoint (best.pt and the Ray Train checkpoints) holds "model" (the state dict) and "config"
(the resolved job config as a dict of sections). The clip geometry that the weights were trained for (frames,
stride, resize, crop, mean/std, clips per video) comes from config["data"], bits and backbone from
config["model"]. A config passed by the caller may fill a checkpoint that carries none, and must agree with
one that does: a model used with other clips or another code length gives wrong codes without any error.
A combined checkpoint (`c3dhash combine`: combine_checkpoints) loads the same way; its net is a Towers
(model/towers.py).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from c3dhash.model.backbone import ModelError
from c3dhash.model.hashnet import HashNet, build_hash_net
from c3dhash.model.readout import fit_readout
from c3dhash.model.towers import READOUT_KEYS, TOWER_KEYS, Towers, build_towers


@dataclass(frozen=True)
class ClipGeometry:
    """How a video becomes the model's input: clips of num_frames at stride, resized, centre-cropped."""
    num_frames: int
    stride: int
    resize: tuple[int, int]
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    clips_per_video: int
    eval_flip: bool = False  # each clip also encoded mirrored (data.eval_flip)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


GEOMETRY_KEYS = tuple(f.name for f in dataclasses.fields(ClipGeometry))
# Keys added after checkpoints existed: a config without one means the default, and the fingerprint leaves a
# key out while it holds its default, so the indexes of older checkpoints keep matching their model.
LATER_KEYS = {"data.eval_flip": False}
MODEL_KEYS = ("bits", "backbone")


@dataclass(frozen=True)
class LoadedHashNet:
    net: HashNet | Towers  # eval mode, on CPU; Towers: a combined model (c3dhash combine)
    bits: int
    backbone: str
    geometry: ClipGeometry
    fingerprint: str
    card: dict[str, Any]  # what a user may want to know about the model (written into an index's meta.json)
    config: dict[str, dict[str, Any]]  # the checkpoint's resolved job config (sections)
    source: str


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _identity(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The config values the weights depend on: {"model.bits": .., "data.num_frames": .., ...}."""
    out = {}
    for section, keys in (("model", MODEL_KEYS), ("data", GEOMETRY_KEYS)):
        values = {**{k.split(".", 1)[1]: v for k, v in LATER_KEYS.items() if k.startswith(f"{section}.")},
                  **(config.get(section) or {})}
        missing = [k for k in keys if k not in values]
        if missing:
            raise ModelError(f"{where}: its config lacks {', '.join(f'{section}.{k}' for k in missing)}; "
                             f"pass the training run's --config")
        out.update({f"{section}.{k}": _plain(values[k]) for k in keys})
    towers = (config.get("model") or {}).get("towers")
    if towers:  # a combined model (model/towers.py): what each tower's codes depend on beyond its weights
        out["model.towers"] = [{k: t[k] for k in (*TOWER_KEYS, *READOUT_KEYS) if k in t} for t in towers]
    return out


def check_config(ckpt_config: dict[str, Any], given: dict[str, Any], where: str) -> None:
    """Raise if the given config disagrees with the checkpoint's on bits, backbone or clip geometry."""
    mine, theirs = _identity(ckpt_config, where), _identity(given, "--config")
    bad = [f"{k}={mine.get(k)!r} (checkpoint) vs {theirs.get(k)!r} (--config)" for k in {**mine, **theirs}
           if mine.get(k) != theirs.get(k)]
    if bad:
        raise ModelError(f"{where}: the given config disagrees with the checkpoint: {'; '.join(bad)}; "
                         f"drop --config (the checkpoint describes itself) or pass the training run's config")


def combine_checkpoints(states: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    """A checkpoint dict ({"model", "config"}) whose model is the towers (model/towers.py) of `states`, in order.

    Every checkpoint must have the same backbone and clip geometry (the identity keys but bits and eval_flip): one
    decoded clip feeds every tower. The config is the first checkpoint's with model.bits the sum, model.towers the
    per-tower keys, and data.eval_flip off (each tower flips itself)."""
    if len(states) < 2:
        raise ModelError(f"combine needs two or more checkpoints, got {len(states)}")
    ids = []
    for s, src in zip(states, sources):
        cfg = s.get("config") or {}
        if not cfg:
            raise ModelError(f"{src}: the checkpoint carries no config; combine best.pt files of c3dhash runs")
        if (cfg.get("model") or {}).get("towers"):
            raise ModelError(f"{src}: already a combined model; combine the checkpoints it was made of")
        ids.append(_identity(cfg, src))
    for ident, src in zip(ids[1:], sources[1:]):
        bad = [f"{k}={ident[k]!r} vs {ids[0][k]!r}" for k in ids[0]
               if k not in ("model.bits", "data.eval_flip") and ident[k] != ids[0][k]]
        if bad:
            raise ModelError(f"{src}: its clips differ from {sources[0]}'s ({'; '.join(bad)}); towers read the same "
                             f"clips, so train them with one clip geometry")
    towers = [{"bits": int(i["model.bits"]), "head_norm": bool(s["config"]["model"].get("head_norm", False)),
               "eval_flip": bool(i["data.eval_flip"]), "source": src} for s, i, src in zip(states, ids, sources)]
    config = copy.deepcopy(states[0]["config"])
    config["model"] = {"bits": sum(t["bits"] for t in towers), "backbone": ids[0]["model.backbone"],
                       "towers": towers}
    config["data"]["eval_flip"] = False
    model = {f"towers.{i}.{k}": v for i, s in enumerate(states) for k, v in s["model"].items()}
    return {"model": model, "config": config}


def with_readouts(state: dict[str, Any], specs: list[str], outputs: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """A combined checkpoint (combine_checkpoints) with each tower's read-out `specs[i]` (model/readout.py) fitted
    on `outputs`: that model's real outputs for a library's videos, one row each, towers side by side."""
    towers = state["config"]["model"]["towers"]
    if len(specs) != len(towers):
        raise ModelError(f"{len(specs)} read-out(s) for {len(towers)} towers; give one per --checkpoint, in order")
    if any(k in t for t in towers for k in READOUT_KEYS):
        raise ModelError("the towers already have read-outs; fit them on the combination of the plain checkpoints")
    config, model = copy.deepcopy(state["config"]), dict(state["model"])
    start = 0
    for i, (t, spec) in enumerate(zip(config["model"]["towers"], specs)):
        fitted = fit_readout(spec, outputs[:, start:start + t["bits"]], seed=seed + i)
        start += t["bits"]
        if fitted is None:
            continue
        t.update(code_bits=int(fitted.matrix.shape[1]), readout=spec)
        model[f"readouts.{i}.centre"] = torch.from_numpy(fitted.centre)
        model[f"readouts.{i}.matrix"] = torch.from_numpy(fitted.matrix)
    config["model"]["bits"] = sum(t.get("code_bits", t["bits"]) for t in config["model"]["towers"])
    return {"model": model, "config": config}


def fingerprint(state: dict[str, torch.Tensor], identity: dict[str, Any]) -> str:
    """sha256 over every weight (name, dtype, shape, bytes, in name order) and the bits/backbone/geometry."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    identity = {k: v for k, v in identity.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}
    h.update(json.dumps(identity, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """{"model": state dict, "config": sections} of a checkpoint (weights_only=True; optimiser etc. dropped)."""
    state = _read(Path(path))
    return {"model": state["model"], "config": state.get("config") or {},
            **{k: state[k] for k in ("epoch", "val_map", "step") if isinstance(state.get(k), (int, float))}}


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "checkpoint.pt"  # a Ray Train checkpoint directory
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found; pass best.pt of a training run "
                         f"(<storage_path>/<name>/best.pt) or a checkpoint_*/ folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ModelError(f"{path}: torch.load(weights_only=True) cannot read it ({type(exc).__name__}); "
                         f"pass a c3dhash checkpoint (best.pt)") from exc
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ModelError(f"{path}: not a c3dhash checkpoint (no 'model' state dict); pass best.pt of a run")
    return state


def from_state(state: dict[str, Any], *, config: dict[str, Any] | None = None,
               source: str = "checkpoint") -> LoadedHashNet:
    """Build the model from a loaded checkpoint dict (what `load_hash_net` reads; Ray actors get this)."""
    ckpt_config = state.get("config") or {}
    if not ckpt_config and not config:
        raise ModelError(f"{source}: the checkpoint carries no config (an old checkpoint); pass the training "
                         f"run's --config")
    if ckpt_config and config:
        check_config(ckpt_config, config, source)
    cfg = ckpt_config or config or {}
    identity = _identity(cfg, source)
    values = {k: identity[f"data.{k}"] for k in GEOMETRY_KEYS}  # lists (_plain) back to the tuples of the fields
    geometry = ClipGeometry(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    bits, backbone = int(cfg["model"]["bits"]), str(cfg["model"]["backbone"])
    towers = cfg["model"].get("towers")
    head_norm = bool(cfg["model"].get("head_norm", False))  # older checkpoints have no such key: off
    net = (build_towers(towers, backbone) if towers else  # weights: the checkpoint's
           build_hash_net(bits=bits, backbone=backbone, weights=None, head_norm=head_norm))
    if net.bits != bits:  # a combined model's bits are its towers' sum
        raise ModelError(f"{source}: model.bits={bits} but its towers hold {net.bits}; combine the runs again")
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ModelError(f"{source}: weights do not fit a {backbone} net with {bits} bits "
                         f"({str(exc).splitlines()[0]})") from exc
    card = {"bits": bits, "backbone": backbone, "geometry": geometry.as_dict(), "source": source,
            **({"towers": towers} if towers else {}),
            **{k: state[k] for k in ("epoch", "val_map", "step") if isinstance(state.get(k), (int, float))}}
    return LoadedHashNet(net=net.eval(), bits=bits, backbone=backbone, geometry=geometry,
                         fingerprint=fingerprint(state["model"], identity), card=card, config=cfg, source=source)


def load_hash_net(path: str | Path, *, config: dict[str, Any] | None = None) -> LoadedHashNet:
    """Load a checkpoint (weights_only=True) into an eval-mode HashNet with its bits and clip geometry.

    `config`: a job config as a dict of sections (e.g. from --config); it must agree with the checkpoint's
    on bits, backbone and geometry, and is used only when the checkpoint carries none."""
    return from_state(read_checkpoint(path), config=config, source=str(path))


def example_clips(m: LoadedHashNet, n: int = 2) -> torch.Tensor:
    g = m.geometry
    return torch.zeros(n, 3, g.num_frames, g.crop[0], g.crop[1])


def export_program(m: LoadedHashNet) -> torch.export.ExportedProgram:
    """torch.export of clips [N, 3, T, H, W] -> tanh outputs [N, bits], N dynamic; runs without this project
    (torch.export.load(file).module()); a video's code is (mean of its clips' outputs) >= 0."""
    clips = torch.export.Dim("clips", min=1, max=4096)
    return torch.export.export(m.net.eval(), (example_clips(m),), dynamic_shapes=({0: clips},))
