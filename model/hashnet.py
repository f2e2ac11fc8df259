"""HashNet: r3d_18 trunk -> Linear(512, bits) -> tanh; one relaxed code in [-1, 1]^bits per clip.

    net = build_hash_net(bits=48, weights="kinetics400")      # or build_from_config(cfg.model)
    h = net(clips)                                            # N x 3 x T x H x W float -> N x 48 in [-1, 1]
    bits = quantize(video_codes(h, video_index, num_videos))  # a video's code = sign of its clips' mean

`HashNet.features(clips)` returns the 512-d trunk feature (the input of the LSH baseline).
No Ray and no distributed collectives here: the same module runs in a worker, a notebook or a test.
"""
from __future__ import annotations

import torch
from torch import nn

from model.backbone import ModelError, build_backbone, feature_dim
from model.config import ModelConfig


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


def quantize(h: torch.Tensor) -> torch.Tensor:
    """Binary code as torch.bool: bit = (h >= 0). An exact 0 becomes 1, so there is no third value."""
    return h >= 0


def video_codes(clip_outputs: torch.Tensor, video_index: torch.Tensor, num_videos: int) -> torch.Tensor:
    """Mean of each video's clip outputs: row v = mean of clip_outputs[video_index == v] (num_videos x bits).

    Averaging the relaxed outputs (not voting on bits) matches the seed's single-clip code when a video has
    one clip and lets confident clips outweigh uncertain ones.
    """
    index = video_index.to(device=clip_outputs.device, dtype=torch.long)
    if index.dim() != 1 or index.numel() != clip_outputs.shape[0]:
        raise ModelError(f"video_index must be 1-D with one entry per clip ({clip_outputs.shape[0]}), "
                         f"got shape {tuple(video_index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_videos):
        raise ModelError(f"video_index values must lie in [0, {num_videos}), got [{int(index.min())}, "
                         f"{int(index.max())}]")
    counts = torch.bincount(index, minlength=num_videos)
    empty = (counts == 0).nonzero().flatten()
    if empty.numel():
        raise ModelError(f"videos {empty[:10].tolist()} have no clips; every video needs at least one clip")
    sums = clip_outputs.new_zeros(num_videos, clip_outputs.shape[1]).index_add_(0, index, clip_outputs)
    return sums / counts.to(sums.dtype).unsqueeze(1)
