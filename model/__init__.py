"""model/: the r3d_18 trunk + hash head (no Ray, no distributed collectives: imports only torch/torchvision).

Names are imported lazily so `import model.config` (done by every CLI start) does not load torch/torchvision.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("KINETICS_MEAN", "KINETICS_STD", "BACKBONES", "ModelError", "WeightsError", "build_backbone",
                     "kinetics_norm", "resolve_weights"), "backbone"),
    "ModelConfig": "config",
    **dict.fromkeys(("HashNet", "build_from_config", "build_hash_net"), "hashnet"),
    **dict.fromkeys(("ClipGeometry", "LoadedHashNet", "combine_checkpoints", "export_program", "load_hash_net"),
                    "load"),
    "Towers": "towers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
