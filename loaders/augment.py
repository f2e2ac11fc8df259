"""Augmentation of decoded, normalised clips, from what the sampler drew (loaders/sampler.py): colour, time.

    x = colour_jitter(x, clips, mean=cfg.mean, std=cfg.std)     # x: float [B, 3, T, H, W], clips: B Clips
    x = play_backwards(x, clips)                                # the clips marked `reverse`, frames reversed
    x = scramble_frames(x, clips)                               # `still`: frame 0 held; `shuffled`: reordered

Applied after DALI in torch (one place for CPU and GPU decoders, no change to the pipeline graph): the factors
travel in each Clip, drawn per GLOBAL batch, so a clip is augmented identically whatever the world size.
Per clip, on the [0, 1] scale and in this order: brightness (scale), contrast (blend with the clip's mean grey
level), saturation (blend with each pixel's grey level); clamped to [0, 1], then normalised back.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from c3dhash.loaders.sampler import Clip

GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def colour_jitter(x: torch.Tensor, clips: Sequence[Clip], *, mean: Sequence[float], std: Sequence[float]
                  ) -> torch.Tensor:
    """A new tensor; clips whose factors are all 1 come back unchanged (up to the normalisation round trip)."""
    if len(clips) != x.shape[0]:
        raise ValueError(f"colour_jitter: {len(clips)} clips for a batch of {x.shape[0]}")
    shape = (1, 3, 1, 1, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).reshape(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).reshape(shape)
    w = torch.tensor(GREY, dtype=x.dtype, device=x.device).reshape(shape)

    def per_clip(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1, 1)

    raw = x * s + m
    raw = raw * per_clip([c.brightness for c in clips])
    grey = (raw * w).sum(1, keepdim=True)
    level = grey.mean(dim=(2, 3, 4), keepdim=True)
    raw = level + (raw - level) * per_clip([c.contrast for c in clips])
    grey = (raw * w).sum(1, keepdim=True)
    raw = grey + (raw - grey) * per_clip([c.saturation for c in clips])
    return (raw.clamp(0.0, 1.0) - m) / s


def needs_colour(clips: Sequence[Clip]) -> bool:
    return any((c.brightness, c.contrast, c.saturation) != (1.0, 1.0, 1.0) for c in clips)


def play_backwards(x: torch.Tensor, clips: Sequence[Clip]) -> torch.Tensor:
    """x [B, C, T, H, W] with the frames of every `reverse` clip in reverse order (x itself when there is none).
    After decoding, like the colour: the decoder's graph and its clip start frames stay as they are."""
    backward = [j for j, c in enumerate(clips) if c.reverse]
    if not backward:
        return x
    if len(clips) != x.shape[0]:
        raise ValueError(f"play_backwards: {len(clips)} clips for a batch of {x.shape[0]}")
    x = x.clone()
    x[backward] = x[backward].flip(2)
    return x


@lru_cache(maxsize=None)
def shuffle_order(t: int) -> tuple[int, ...]:
    """The frame order of a shuffled clip of t >= 4 frames: fixed for t, no frame in its place and no two
    neighbouring frames next to each other in either order, so no stretch of the clip shows the motion."""
    if t < 4:
        raise ValueError(f"shuffle_order: {t} frames; a shuffle that breaks every neighbour pair needs >= 4")
    rng = np.random.default_rng(t)
    while True:
        order = rng.permutation(t)
        if (order != np.arange(t)).all() and (np.abs(np.diff(order)) > 1).all():
            return tuple(int(i) for i in order)


def scramble_frames(x: torch.Tensor, clips: Sequence[Clip]) -> torch.Tensor:
    """x [B, C, T, H, W] with every `still` clip's first frame held for its T frames and every `shuffled` clip's
    frames in shuffle_order(T) (x itself when there is none): the clip's look without its motion."""
    marked = [j for j, c in enumerate(clips) if c.scramble]
    if not marked:
        return x
    if len(clips) != x.shape[0]:
        raise ValueError(f"scramble_frames: {len(clips)} clips for a batch of {x.shape[0]}")
    x, t = x.clone(), x.shape[2]
    order = torch.tensor(shuffle_order(t), device=x.device)
    for j in marked:
        x[j] = x[j][:, :1].expand(-1, t, -1, -1) if clips[j].scramble == "still" else x[j][:, order]
    return x
