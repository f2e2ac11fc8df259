"""Encode a split: the model over the eval loader, one code per video (the mean of its clips' outputs).

    c3dhash encode --checkpoint runs/synth-cpu/best.pt --split test --out runs/test.npz [--workers 2]

In training, each rank encodes its own shard (every video exactly once across ranks) and the trainer
gathers the per-video outputs. `c3dhash encode`/`index`/`search` encode video files with eval/index/videos.py (one
video's clips per batch, through `encode_loader`), in this process or on Ray actors (eval/index/encode_ray.py).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from tqdm import tqdm

from c3dhash.eval.codes import Codes, pack_bits
from c3dhash.loaders.manifest import VideoRecord


def amp_dtype(amp: str, device: torch.device, capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """The autocast dtype, None for fp32. auto: bf16 on sm_80+ (cuDNN runs bf16 Conv3d there; before sm_80
    ATen's use_cudnn refuses bf16 and every Conv3d falls back to the slow native kernel), fp16 on sm_75
    (T4 class; the Trainer adds a GradScaler), fp32 on older GPUs and on CPU. bf16 / fp16 force a dtype.
    `capability` (major, minor) stands in for the device's own (tests)."""
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp != "auto" or device.type != "cuda":
        return None
    major, minor = capability or torch.cuda.get_device_capability(device)
    if (major, minor) >= (8, 0):
        return torch.bfloat16
    return torch.float16 if (major, minor) >= (7, 5) else None


def amp_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}.get(dtype, "fp32")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast to amp_dtype(amp, device), or nothing for fp32."""
    dtype = amp_dtype(amp, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def encode_loader(model: torch.nn.Module, loader: Iterable, *, device: torch.device, amp: str = "auto",
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` over (clips, labels, video_index) batches; return (video_index [n], mean outputs [n, bits]).

    Outputs are averaged per video over its clips, in float32 whatever the autocast dtype.
    """
    was_training = model.training
    model.eval()
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    try:
        for clips, _labels, index in tqdm(loader, desc="encode", disable=not progress, leave=False):
            with autocast(device, amp):
                out = model(clips.to(device, non_blocking=True)).float().cpu()
            for row, v in zip(out, index.tolist()):
                sums[v] = sums[v] + row if v in sums else row.clone()
                counts[v] = counts.get(v, 0) + 1
    finally:
        model.train(was_training)
    order = sorted(sums)
    if not order:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    means = torch.stack([sums[v] / counts[v] for v in order]).numpy().astype(np.float32)
    return np.asarray(order, dtype=np.int64), means


def to_codes(index: np.ndarray, outputs: np.ndarray, records: list[VideoRecord], bits: int) -> Codes:
    """Per-video outputs of a split -> a Codes table in manifest order.

    Every video must appear at most once; a video the loader could not decode (reported by the loader) is left
    out with a warning rather than failing the whole evaluation.
    """
    n = len(records)
    if len(np.unique(index)) != len(index) or (len(index) and (index.min() < 0 or index.max() >= n)):
        raise ValueError(f"encoded outputs for {len(index)} videos of a split of {n} hold duplicates or indices "
                         f"out of range; every video must be encoded exactly once")
    if len(index) < n:
        missing = sorted(set(range(n)) - set(index.tolist()))
        warnings.warn(f"{len(missing)} of {n} videos were not encoded (undecodable; e.g. "
                      f"{[records[i].path for i in missing[:3]]}); they are left out of the codes", stacklevel=2)
    order = np.argsort(index, kind="stable")
    kept = index[order]
    return Codes(codes=pack_bits(outputs[order]), bits=bits,
                 labels=np.asarray([records[i].label for i in kept], dtype=np.int64),
                 ids=np.asarray([records[i].path for i in kept]))
