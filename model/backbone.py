"""The video trunk: torchvision's r3d_18 with the classifier removed, giving one 512-d feature per clip.

    trunk = build_backbone(name="r3d_18", weights="/data/weights/r3d_18-b3b3357e.pth")
    feats = trunk(clips)                       # clips N x 3 x T x H x W  ->  N x 512

Kinetics-400 weights are read from a LOCAL file only (we never download: cluster pods may have no egress):
a path to torchvision's state dict, or "kinetics400" for torchvision's own cache
(`torch.hub.get_dir()/checkpoints/r3d_18-b3b3357e.pth`). Fetch the file once with
`curl -LO https://download.pytorch.org/models/r3d_18-b3b3357e.pth` and pass `--set model.weights=/path`.
A c3dhash checkpoint (a run's best.pt) works too: its trunk starts the new run, its hash head does not.
"""
from __future__ import annotations

import pickle
from pathlib import Path
import torch
from torch import nn

WEIGHTS_URL = "https://download.pytorch.org/models/{file}"
KINETICS_ALIAS = "kinetics400"
# Statistics torchvision's Kinetics-400 video models were trained with (R3D_18_Weights.KINETICS400_V1).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class ModelError(ValueError):
    """A model configuration problem; the message says what to change."""


class WeightsError(ModelError):
    """Pretrained weights missing or unreadable; the message names the file and where to get it."""


# name -> (torchvision.models.video constructor, torchvision weight file name, feature width). One row per
# supported trunk. The constructor is looked up when a trunk is built: the processes that only check a config
# (the training driver, Ray's controller) need not import torchvision.
BACKBONES: dict[str, tuple[str, str, int]] = {
    "r3d_18": ("r3d_18", "r3d_18-b3b3357e.pth", 512),
}


def kinetics_norm() -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per RGB channel for inputs in [0, 1]; loaders use these when Kinetics weights load."""
    return KINETICS_MEAN, KINETICS_STD


def _spec(name: str) -> tuple[str, str, int]:
    if name not in BACKBONES:
        raise ModelError(f"model.backbone={name!r} is not supported; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def feature_dim(name: str = "r3d_18") -> int:
    return _spec(name)[2]


def resolve_weights(weights: str | None, *, name: str = "r3d_18") -> Path | None:
    """Map the `model.weights` setting to a local file (None = random init); raise if it is not there."""
    if not weights:
        return None
    file = _spec(name)[1]
    how = (f"download it with `curl -L -o {file} {WEIGHTS_URL.format(file=file)}` and pass "
           f"`--set model.weights=/path/to/{file}`")
    if weights == KINETICS_ALIAS:
        path = Path(torch.hub.get_dir()) / "checkpoints" / file
        if not path.is_file():
            raise WeightsError(f"model.weights=kinetics400: {path} not found (torchvision's cache); {how}, "
                               f"or copy it to {path}")
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights: {path} not found; {how}")
    return path


def load_trunk_state(path: Path) -> dict[str, torch.Tensor]:
    """Read torchvision's state dict minus the classifier, or the trunk of a c3dhash checkpoint (a labelled run's
    trunk starting a self-supervised one); weights_only: a weight file must not run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        # torch's own message suggests weights_only=False, which we never do: keep ours to one line.
        raise WeightsError(f"{path}: torch.load(weights_only=True) cannot read it ({type(exc).__name__}: "
                           f"corrupt, or pickled objects other than tensors); pass torchvision's "
                           f"state-dict file (re-download it if it is damaged)") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a c3dhash checkpoint (best.pt)
        state = {k.removeprefix("trunk."): v for k, v in state["model"].items() if k.startswith("trunk.")}
        if not state:
            raise WeightsError(f"{path}: a checkpoint without trunk.* weights; pass a c3dhash best.pt or "
                               f"torchvision's state-dict file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a torchvision state dict (name -> tensor), "
                           f"got {type(state).__name__}")
    # The 400-way Kinetics classifier is replaced by our hash head.
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def build_backbone(*, name: str = "r3d_18", weights: str | None = None) -> nn.Module:
    """The trunk with `fc` replaced by Identity: forward returns the pooled N x feature_dim(name) feature."""
    from torchvision.models import video
    ctor, _, _ = _spec(name)
    path = resolve_weights(weights, name=name)
    trunk = getattr(video, ctor)(weights=None)  # weights=None: torchvision must never try to download
    trunk.fc = nn.Identity()
    if path is not None:
        state = load_trunk_state(path)
        missing, unexpected = trunk.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(f"{path}: not a {name} state dict (missing {sorted(missing)[:3]}..., "
                               f"unexpected {sorted(unexpected)[:3]}...); "
                               f"pass torchvision's {_spec(name)[1]}")
    return trunk
