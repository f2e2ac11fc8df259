"""HashNet: r3d_18 trunk -> Linear(512, bits) -> tanh; one relaxed code in [-1, 1]^bits per clip.

    net = build_hash_net(bits=48, weights="kinetics400")      # or build_from_config(cfg.model)
    h = net(clips)                                            # N x 3 x T x H x W float -> N x 48 in [-1, 1]

A video's code is (mean of its clips' outputs) >= 0: eval/index/encode.py averages per video, eval/codes.py packs.
A trained model with its clip geometry loads from a checkpoint with model.load_hash_net (model/load.py).

`HashNet.features(clips)` returns the 512-d trunk feature (the input of the LSH baseline).
No Ray and no distributed collectives here: the same module runs in a worker, a notebook or a test.
"""
from __future__ import annotations

import torch
from torch import nn

from c3dhash.model.backbone import ModelError, build_backbone, feature_dim
from c3dhash.model.config import ModelConfig


class HashNet(nn.Module):
    def __init__(self, *, trunk: nn.Module, feature_dim: int, bits: int, channels_last: bool = False,
                 head_norm: bool = False):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(feature_dim, bits)
        # No affine: a learnt scale and shift would give back the collapse direction the norm removes.
        self.head_norm = nn.BatchNorm1d(bits, affine=False) if head_norm else None
        self.bits = bits
        self.channels_last = channels_last

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3 or not x.is_floating_point():
            raise ModelError(f"HashNet expects float clips N x 3 x T x H x W, got {tuple(x.shape)} "
                             f"{x.dtype}; "
                             f"DALI's N x T x H x W x C output needs x.permute(0, 4, 1, 2, 3)")
        # channels_last_3d only pays when the weights use it too (set by build_hash_net).
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """N x feature_dim pooled trunk features (before the hash head)."""
        return self.trunk(self._check(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))
        return torch.tanh(self.head_norm(z) if self.head_norm is not None else z)


def build_hash_net(*, bits: int, backbone: str = "r3d_18", weights: str | None = None,
                   channels_last: bool = False, head_norm: bool = False) -> HashNet:
    """Build the net; weights = a local torchvision state-dict path, "kinetics400" (its cache) or None."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise ModelError(f"model.bits must be a positive integer, got {bits!r}")
    trunk = build_backbone(name=backbone, weights=weights)
    net = HashNet(trunk=trunk, feature_dim=feature_dim(backbone), bits=bits, channels_last=channels_last,
                  head_norm=head_norm)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    return net


def build_from_config(cfg: ModelConfig) -> HashNet:
    return build_hash_net(bits=cfg.bits, backbone=cfg.backbone, weights=cfg.weights,
                          channels_last=cfg.channels_last, head_norm=cfg.head_norm)
