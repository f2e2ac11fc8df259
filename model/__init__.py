"""model/: the r3d_18 trunk + hash head (no Ray, no distributed collectives: imports only torch/torchvision).

Names are imported lazily so `import model.config` (done by every CLI start) does not load torch/torchvision.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("KINETICS_MEAN", "KINETICS_STD", "BACKBONES", "ModelError", "WeightsError", "build_backbone",
                     "kinetics_norm", "resolve_weights"), "model.backbone"),
    "ModelConfig": "model.config",
    **dict.fromkeys(("HashNet", "build_from_config", "build_hash_net"), "model.hashnet"),
    **dict.fromkeys(("ClipGeometry", "LoadedHashNet", "export_program", "load_hash_net"), "model.load"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
