"""Model configuration (owned by model/, composed into the job config by cluster/).

Bounds sit next to their fields (`metadata`: operator -> bound, each value of a tuple); cluster/config.py
checks them when the job config loads, so nonsense such as a negative lr fails there, not in a worker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    bits: int = field(default=48, metadata={">=": 1})
    backbone: Literal["r3d_18"] = "r3d_18"
    # Local torchvision r3d_18 Kinetics-400 state dict; "kinetics400" = torchvision's cache; None = random init.
    weights: str | None = None
    channels_last: bool = False  # channels_last_3d memory format (pays on GPU)
    # BatchNorm (no affine) on the hash layer before tanh: every bit has batch mean 0 and variance 1, so the codes
    # cannot all drift into one saturated corner (docs/performance.md: Recipe robustness).
    head_norm: bool = False
