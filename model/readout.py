"""A tower's read-out: its outputs -> its part of a combined code, `(h - centre) @ matrix`, fitted on a library.

    ro = fit_readout("hyperplanes:192", outputs, seed=0)   # outputs: N videos x bits, the tower's real outputs
    ro = fit_readout("itq:4", outputs)                     # PCA + ITQ rotation, each bit counted 4 times
    ReadOut(bits, code_bits)                               # the module model/towers.py applies (buffers loaded)

Why: a combined code (`c3dhash combine`) adds the Hamming distances of its parts, so how each part is binarised
decides what the sum measures. A motion tower's 48 sign bits lose part of the angle between two videos' outputs;
more random hyperplanes through the library's centre keep it (Charikar 2002: the fraction of hyperplanes that
split two vectors estimates their angle). A look tower's bits are correlated; rotating its centred outputs by
PCA + ITQ (Gong & Lazebnik 2011) gives balanced bits that change less under a copy's edits, and repeating them
weights that part against the other (bench/results/neardup-towers-binarize-offline-amd-epyc-2026-12-08.md).
Every read-out is affine, so it commutes with the mean over a video's clips: applying it to each clip inside
the net gives the code that applying it to the video's mean output would.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from c3dhash.model.backbone import ModelError

SPEC = re.compile(r"(sign|hyperplanes:(\d+)|itq:(\d+))")
ITQ_ITERATIONS = 50  # the paper's count; the quantisation loss has settled well before


@dataclass(frozen=True)
class Fitted:
    centre: np.ndarray  # (bits,)
    matrix: np.ndarray  # (bits, code_bits)


def parse_spec(spec: str) -> str:
    """'sign' | 'hyperplanes:M' | 'itq:R' (M >= 1 bits, R >= 1 repeats), or a ModelError naming the forms."""
    m = SPEC.fullmatch(spec.strip())
    if m is None or int(m.group(2) or m.group(3) or 1) < 1:
        raise ModelError(f"read-out {spec!r}: use sign (the tower's own bits), hyperplanes:M (M random-hyperplane "
                         f"bits, e.g. hyperplanes:192) or itq:R (a PCA + ITQ rotation, each bit counted R times)")
    return spec.strip()


def fit_readout(spec: str, outputs: np.ndarray, *, seed: int = 0) -> Fitted | None:
    """The read-out `spec` fitted on `outputs` (one row per library video); None for 'sign' (no read-out)."""
    spec = parse_spec(spec)
    if spec == "sign":
        return None
    x = np.asarray(outputs, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ModelError(f"read-out {spec}: needs the outputs of two or more videos to fit, got {x.shape}")
    centre = x.mean(0)
    kind, n = spec.split(":")
    rng = np.random.default_rng(seed)
    if kind == "hyperplanes":
        matrix = rng.standard_normal((x.shape[1], int(n)))
    else:
        matrix = np.tile(itq_rotation(x - centre, rng), (1, int(n)))
    return Fitted(centre.astype(np.float32), matrix.astype(np.float32))


def itq_rotation(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PCA axes of centred `z` (all of them) times the ITQ rotation that best fits the signs: bits x bits."""
    _, _, vt = np.linalg.svd(z, full_matrices=True)  # rows of vt: every principal axis, by variance
    pca = vt.T
    v = z @ pca
    r = np.linalg.qr(rng.standard_normal((v.shape[1], v.shape[1])))[0]
    for _ in range(ITQ_ITERATIONS):  # alternate: the nearest signs, then the rotation nearest those signs
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)
        r = u @ wt
    return pca @ r


class ReadOut(nn.Module):
    """(h - centre) @ matrix, as buffers: saved with the weights and covered by the model's fingerprint."""

    def __init__(self, bits: int, code_bits: int):
        super().__init__()
        self.register_buffer("centre", torch.zeros(bits))
        self.register_buffer("matrix", torch.zeros(bits, code_bits))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.centre.to(h.dtype)) @ self.matrix.to(h.dtype)
