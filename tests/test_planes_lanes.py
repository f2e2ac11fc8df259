"""The bit-sliced kernels at the lane widths and lowerings this host does not run natively. eval/kernels/isa.py
takes 8 lanes (512-item groups, VPTERNLOGQ) on AVX-512 hosts with VPOPCNTQ and 4 lanes (256-item groups)
elsewhere, so the rest of the suite tests one of them. Here subprocesses compiled for another target run the
kernels against the word-major scan (top-K and every metric, `==`):
  haswell  the 4-lane AVX2 kernels, on an AVX-512 host (an AVX2 host runs them in the whole suite);
  x86-64   the portable baseline: 4 lanes of generic LLVM vectors lowered to SSE2 without POPCNT, the path a
           CPU without AVX2 (and, in kind, aarch64) takes. Runs on every x86-64 CI run.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_planes_lanes.py
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from c3dhash.eval.kernels.isa import LANES, TARGET_FEATURES, host_features

pytestmark = pytest.mark.subprocess

CHECK = textwrap.dedent("""
    import numpy as np
    from c3dhash.eval.codes import Codes, pack_bits
    from c3dhash.eval.search.searcher import topk
    from c3dhash.eval.metrics.exact import evaluate
    from c3dhash.eval.kernels.isa import GROUP, LANES
    assert (LANES, GROUP) == (4, 256), (LANES, GROUP)
    rng = np.random.default_rng(7)
    for bits, n in ((48, 1300), (130, 700), (256, 1100)):
        protos = rng.integers(0, 2, (6, bits)).astype(bool)
        dl, ql = rng.integers(0, 6, n), rng.integers(0, 7, 300)  # label 6: queries with no relevant item
        flip = lambda m: rng.random((m, bits)) < 0.2
        dbb, qb = protos[dl] ^ flip(n), protos[ql % 6] ^ flip(300)
        dbb[10:60] = dbb[5]  # exact duplicates: ties by index
        db, q = pack_bits(dbb), pack_bits(qb)
        for k in (1, 10, n + 3):
            a, b = topk(q, db, k, method="bitsliced"), topk(q, db, k, method="words")
            assert (a[0] == b[0]).all() and (a[1] == b[1]).all(), (bits, k)
        Q = Codes(q, bits, ql, np.zeros(300, "U1"))
        D = Codes(db, bits, dl, np.zeros(n, "U1"))
        assert evaluate(Q, D, method="bitsliced") == evaluate(Q, D, method="words"), bits
    print("4-lane kernels == word-major")
""")


def run_for(target: str, cache) -> None:
    env = dict(os.environ, NUMBA_CPU_NAME=target, NUMBA_CPU_FEATURES=TARGET_FEATURES[target],
               NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4-lane kernels == word-major" in out.stdout


@pytest.mark.skipif(LANES == 4, reason="this host runs the 4-lane kernels in the whole suite")
@pytest.mark.skipif("+avx2" not in host_features(), reason="the 4-lane check compiles for AVX2")
def test_four_lane_kernels_equal_the_word_major_scan(tmp_path):
    run_for("haswell", tmp_path)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the baseline target is x86-64's")
def test_portable_baseline_equals_the_word_major_scan(tmp_path):
    run_for("x86-64", tmp_path)
