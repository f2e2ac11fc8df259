"""The bit-sliced kernels at the lane widths and lowerings this host does not run natively. eval/kernels/isa.py
takes 8 lanes (512-item groups, VPTERNLOGQ) on AVX-512 hosts with VPOPCNTQ and 4 lanes (256-item groups)
elsewhere, so the rest of the suite tests one of them. Here subprocesses compiled for another target run the
bit-sliced kernels and compare them with the word-major scan's results (top-K and every metric, `==`):
  haswell  the 4-lane AVX2 kernels, on an AVX-512 host (an AVX2 host runs them in the whole suite);
  x86-64   the portable baseline: 4 lanes of generic LLVM vectors lowered to SSE2 without POPCNT, the path a
           CPU without AVX2 (and, in kind, aarch64) takes. Runs on every x86-64 CI run.
The word-major results come from this process (host-native, numba-cached kernels, once for both targets) through
an .npz and a JSON file: the subprocess's cold compile for the other target is then only the bit-sliced path.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_planes_lanes.py
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from c3dhash.eval.kernels.isa import LANES, TARGET_FEATURES, host_features

pytestmark = pytest.mark.subprocess

CASES = ((48, 1300), (130, 700), (256, 1100))  # (bits, database size); 300 queries each


def case_data() -> dict[str, np.ndarray]:
    """Packed codes and labels of each case, named "<bits>_db" ... (seeded: the same arrays on every run)."""
    from c3dhash.eval.codes import pack_bits
    rng = np.random.default_rng(7)
    out = {}
    for bits, n in CASES:
        protos = rng.integers(0, 2, (6, bits)).astype(bool)
        dl, ql = rng.integers(0, 6, n), rng.integers(0, 7, 300)  # label 6: queries with no relevant item
        dbb, qb = protos[dl] ^ (rng.random((n, bits)) < 0.2), protos[ql % 6] ^ (rng.random((300, bits)) < 0.2)
        dbb[10:60] = dbb[5]  # exact duplicates: ties by index
        out |= {f"{bits}_db": pack_bits(dbb), f"{bits}_q": pack_bits(qb), f"{bits}_dl": dl, f"{bits}_ql": ql}
    return out


def ks(n: int) -> tuple[int, ...]:
    return (1, 10, n + 3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A folder with data.npz (the inputs and the word-major top-K of every case and k) and metrics.json (the
    word-major evaluate() of every case, through JSON so both sides compare the same normalised dicts)."""
    from c3dhash.eval.codes import Codes
    from c3dhash.eval.metrics.exact import MissingLabelWarning, evaluate
    from c3dhash.eval.search.searcher import topk
    folder = tmp_path_factory.mktemp("words")
    data, metrics = case_data(), {}
    for bits, n in CASES:
        q, db, ql, dl = (data[f"{bits}_{x}"] for x in ("q", "db", "ql", "dl"))
        for k in ks(n):
            data[f"{bits}_{k}_idx"], data[f"{bits}_{k}_dist"] = topk(q, db, k, method="words")
        Q, D = Codes(q, bits, ql, np.zeros(300, "U1")), Codes(db, bits, dl, np.zeros(n, "U1"))
        with warnings.catch_warnings():  # label 6 is meant to be missing from the database
            warnings.simplefilter("ignore", MissingLabelWarning)
            metrics[str(bits)] = evaluate(Q, D, method="words")
    np.savez(folder / "data.npz", **data)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np
    from c3dhash.eval.codes import Codes
    from c3dhash.eval.search.searcher import topk
    from c3dhash.eval.metrics.exact import evaluate
    from c3dhash.eval.kernels.isa import GROUP, LANES
    assert (LANES, GROUP) == (4, 256), (LANES, GROUP)
    ref = np.load(sys.argv[1] + "/data.npz")
    metrics = json.loads(open(sys.argv[1] + "/metrics.json").read())
    for bits, n in %r:
        q, db, ql, dl = (ref[f"{bits}_{x}"] for x in ("q", "db", "ql", "dl"))
        for k in (1, 10, n + 3):
            idx, dist = topk(q, db, k, method="bitsliced")
            assert idx.shape == ref[f"{bits}_{k}_idx"].shape and (idx == ref[f"{bits}_{k}_idx"]).all(), (bits, k)
            assert dist.shape == ref[f"{bits}_{k}_dist"].shape and (dist == ref[f"{bits}_{k}_dist"]).all(), (bits, k)
        Q, D = Codes(q, bits, ql, np.zeros(300, "U1")), Codes(db, bits, dl, np.zeros(n, "U1"))
        assert json.loads(json.dumps(evaluate(Q, D, method="bitsliced"))) == metrics[str(bits)], bits
    print("4-lane kernels == word-major")
""" % (CASES,))


def run_for(target: str, reference: Path, cache) -> None:
    env = dict(os.environ, NUMBA_CPU_NAME=target, NUMBA_CPU_FEATURES=TARGET_FEATURES[target],
               NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", CHECK, str(reference)], env=env,
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4-lane kernels == word-major" in out.stdout


@pytest.mark.skipif(LANES == 4, reason="this host runs the 4-lane kernels in the whole suite")
@pytest.mark.skipif("+avx2" not in host_features(), reason="the 4-lane check compiles for AVX2")
def test_four_lane_kernels_equal_the_word_major_scan(reference, tmp_path):
    run_for("haswell", reference, tmp_path)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the baseline target is x86-64's")
def test_portable_baseline_equals_the_word_major_scan(reference, tmp_path):
    run_for("x86-64", reference, tmp_path)
