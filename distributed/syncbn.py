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
fused SyncBN kernel on CUDA and, on CPU, the same algorithm with torch's native CPU BN kernels and gloo
(_CpuSyncBatchNorm: one all_gather forward, one all_reduce backward). Outside training, or with world size 1,
it is plain BatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBN
from torch.nn.modules.batchnorm import _BatchNorm

from c3dhash.distributed.env import get_world_size


class _CpuSyncBatchNorm(torch.autograd.Function):
    """Train-mode BatchNorm over every rank's batch, for CPU tensors; the same maths as torch's CUDA SyncBN.

    Forward: each rank's (count, mean, M2) from one Welford pass (torch.var_mean), one all_gather, a float64
    parallel-variance (Chan et al.) combination, then torch's native eval-form batch_norm with the global
    statistics. Backward: the two per-channel sums (sum dy, sum dy * xhat) from torch's native BN backward, one
    all_reduce, then grad_x = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) in two fused passes.
    Autograd through the same formula also works, but keeps ~6 activation-sized temporaries per layer.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps: float, momentum: float, world: int):
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        n = x.numel() // c
        if n:
            var_local, mean_local = torch.var_mean(x, dims, correction=0)
        else:  # an empty local batch contributes count 0
            var_local = mean_local = x.new_zeros(c)
        row = torch.cat([torch.tensor([float(n)], dtype=torch.float64), mean_local.double(), var_local.double() * n])
        rows = [torch.empty_like(row) for _ in range(world)]
        dist.all_gather(rows, row)
        table = torch.stack(rows)
        counts, means, m2s = table[:, :1], table[:, 1:c + 1], table[:, c + 1:]
        total = float(counts.sum())
        mean = (counts * means).sum(0) / total
        m2 = (m2s + counts * (means - mean).pow(2)).sum(0)  # stable where E[x^2] - E[x]^2 would cancel
        if running_mean is not None and running_var is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((m2 / max(total - 1, 1)).to(running_var.dtype), momentum)
        mean, var = mean.to(x.dtype), (m2 / total).to(x.dtype)
        out = F.batch_norm(x, mean, var, weight, bias, training=False, momentum=0.0, eps=eps)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.total = eps, total
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, var = ctx.saved_tensors
        c, shape = x.shape[1], (1, -1) + (1,) * (x.dim() - 2)
        w = weight if weight is not None else torch.ones_like(mean)
        grad_out = grad_out.contiguous()
        # eval-form native backward: its weight/bias gradients are exactly sum(dy * xhat) and sum(dy)
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, w, mean, var, None, None, False, ctx.eps, [False, True, True])
        sums = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(sums)  # d(sum of every rank's loss) / d(global statistics)
        mean_dy, mean_dy_xhat = sums[:c] / ctx.total, sums[c:] / ctx.total
        invstd = torch.rsqrt(var + ctx.eps)
        k1 = w * invstd  # grad_x = k1 * dy + k2 * x + k3
        k2 = -k1 * invstd * mean_dy_xhat
        k3 = -k1 * mean_dy - k2 * mean
        grad_x = torch.addcmul(k3.view(shape), x, k2.view(shape)).addcmul_(grad_out, k1.view(shape))
        has_affine = weight is not None
        return (grad_x, sum_dy_xhat if has_affine else None, sum_dy if has_affine else None,
                None, None, None, None, None)


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
        world = get_world_size()
        if not self.training or world == 1:
            return super().forward(input)
        self._check_input_dim(input)
        momentum = self._momentum()
        running = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        if input.device.type == "cuda":
            return _TorchSyncBN.apply(input, self.weight, self.bias, *running, self.eps, momentum,
                                      dist.group.WORLD, world)
        # float32 at least, even under bf16 autocast: a bf16 sum keeps ~3 significant digits, too few for a variance
        x = input.float() if input.dtype in (torch.bfloat16, torch.float16) else input
        with torch.autocast("cpu", enabled=False):
            out = _CpuSyncBatchNorm.apply(x, self.weight, self.bias, *running, self.eps, momentum, world)
        return out.to(input.dtype)


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
