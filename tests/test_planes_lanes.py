"""The bit-sliced kernels at the vector width this host does not run: eval/kernels/planes.py takes 8 lanes (512-item
groups, VPTERNLOGQ) on AVX-512 hosts with VPOPCNTQ and 4 lanes (256-item groups) elsewhere, so the rest of the
suite tests one of them. Here a subprocess compiled for an AVX2 CPU (NUMBA_CPU_NAME=haswell) runs the 4-lane
kernels against the word-major scan (top-K and every metric, `==`) on an AVX-512 host. The 8 lanes cannot run
on an AVX2-only host, whose suite runs 4.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_planes_lanes.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from c3dhash.eval.kernels.planes import LANES, host_features

pytestmark = pytest.mark.subprocess

HASWELL = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,+pclmul,+popcnt,+sse,"
           "+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")

CHECK = textwrap.dedent("""
    import numpy as np
    from c3dhash.eval.codes import Codes, pack_bits
    from c3dhash.eval.search.flat import topk, word_major
    from c3dhash.eval.metrics.exact import evaluate
    from c3dhash.eval.kernels.planes import GROUP, LANES, bit_planes
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
            a, b = topk(q, db, k, planes=bit_planes(db)), topk(q, db, k, dbT=word_major(db))
            assert (a[0] == b[0]).all() and (a[1] == b[1]).all(), (bits, k)
        Q = Codes(q, bits, ql, np.zeros(300, "U1"))
        D = Codes(db, bits, dl, np.zeros(n, "U1"))
        assert evaluate(Q, D, layout="planes") == evaluate(Q, D, layout="words"), bits
    print("4-lane kernels == word-major")
""")


@pytest.mark.skipif(LANES == 4, reason="this host runs the 4-lane kernels in the whole suite")
@pytest.mark.skipif("+avx2" not in host_features(), reason="the 4-lane check compiles for AVX2")
def test_four_lane_kernels_equal_the_word_major_scan(tmp_path):
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4-lane kernels == word-major" in out.stdout
