"""Synchronised BatchNorm for `train.sync_bn: true`, on GPU (NCCL) and on CPU (gloo) alike.

    net = convert_sync_bn(net)      # before DDP wraps it; every BatchNorm*d -> GatherSyncBatchNorm

Why: with per-rank BatchNorm each rank normalises by its own few clips, so a 2 x 8 run is NOT the
same computation as one process on 16 clips, and the exact cross-rank triplet loss (distributed/triplet.py)
loses its meaning. SyncBN makes the train-mode statistics global: the DDP step then equals the single-process
step on the concatenated batch (tests/test_gather.py checks this on r3d_18). The cost is one small collective
per BN layer in the forward and one in the backward (r3d_18 has 20 BN layers): latency-bound, not
bandwidth-bound. Turn it off (`--set train.sync_bn=false`) when the per-rank batch is large and step time
matters more than exactness.

Why not nn.SyncBatchNorm: it refuses CPU tensors, and DDP refuses it in CPU modules. This layer runs torch's
fused SyncBN kernel on CUDA and, on CPU, gathers (count, mean, M2) per rank with the autograd all-gather and
combines them with the parallel-variance formula, which autograd differentiates exactly. Outside training, or
with world size 1, it is plain BatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBN
from torch.nn.modules.batchnorm import _BatchNorm

from distributed.gather import all_gather_rows


class GatherSyncBatchNorm(_BatchNorm):
    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N x C x ...), got {input.dim()}D")

    def _momentum(self) -> float:
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm
                return 1.0 / float(self.num_batches_tracked)
        return self.momentum or 0.0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if not self.training or world == 1:
            return super().forward(input)
        self._check_input_dim(input)
        momentum = self._momentum()
        running = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        if input.device.type == "cuda":
            return _TorchSyncBN.apply(input, self.weight, self.bias, *running, self.eps, momentum,
                                      dist.group.WORLD, world)
        # Statistics and normalisation in float32 even under bf16 autocast: a bf16 sum of the 10^4-10^5 values
        # per channel keeps ~3 significant digits, too few for a variance.
        x = input.float()
        mean, var, unbiased = self._global_stats(x, world)
        if self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        # Written out (not F.batch_norm in eval form): autograd must see mean and var as functions of input.
        shape = (1, -1) + (1,) * (input.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)

    def _global_stats(self, x: torch.Tensor, world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and biased variance over all ranks' batches (differentiable), unbiased variance (detached)."""
        dims = [0] + list(range(2, x.dim()))
        n = x.numel() // x.shape[1]
        local_mean = x.sum(dims) / max(n, 1)  # an empty local batch contributes count 0
        local_m2 = (x - local_mean.view((1, -1) + (1,) * (x.dim() - 2))).pow(2).sum(dims)
        count = x.new_full((1,), float(n))
        # One row per rank, so the sizes are known: skip all_gather_rows' size exchange.
        rows, _ = all_gather_rows(torch.cat([count, local_mean, local_m2])[None], sizes=[1] * world)
        c = x.shape[1]
        counts, means, m2s = rows[:, :1], rows[:, 1:c + 1], rows[:, c + 1:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        # Parallel-variance (Chan et al.) combination: stable where E[x^2] - E[x]^2 would cancel.
        m2 = (m2s + counts * (means - mean).pow(2)).sum(0)
        return mean, m2 / total, (m2 / (total - 1).clamp_min(1)).detach()


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm*d in `model` by GatherSyncBatchNorm, sharing its weights and running stats."""
    if isinstance(model, _BatchNorm) and not isinstance(model, (GatherSyncBatchNorm, nn.SyncBatchNorm)):
        out = GatherSyncBatchNorm(model.num_features, model.eps, model.momentum, model.affine,
                                  model.track_running_stats)
        if model.affine:
            out.weight, out.bias = model.weight, model.bias
        if model.track_running_stats:
            out.running_mean, out.running_var = model.running_mean, model.running_var
            out.num_batches_tracked = model.num_batches_tracked
        out.train(model.training)
        return out
    for name, child in model.named_children():
        setattr(model, name, convert_sync_bn(child))
    return model
