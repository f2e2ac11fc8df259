"""Every instruction-set decision of the Hamming kernels, in one place: the CPU numba compiles for, the
bit-plane layout that follows from it (lanes, group), the LLVM intrinsic names the IR calls, and the cost
model that picks multi-index hashing or the flat scan, calibrated on a named machine. Imports nothing of eval/.

    from c3dhash.eval.kernels.isa import LAYOUT, Layout
    LAYOUT                      # Layout(lanes=8, group=512, version=1) on AVX-512 with VPOPCNTQ, else 4 / 256
    LAYOUT.check(other, where)  # raises LayoutError naming both when a prepared database came from another CPU

A prepared database (bit-planes) is only valid in a process whose LAYOUT equals the one it was built with:
its vectors hold GROUP items a bit-plane. A process hands such data to another (a Ray task, an actor, a file)
only with its Layout beside it, and the receiver rebuilds (or refuses) when the two differ.

What has run where: the 8-lane kernels on AVX-512 with VPOPCNTQ (Zen 5 VM, the measurements here), the 4-lane
kernels on AVX2 (Haswell-class hosts, and forced with NUMBA_CPU_NAME=haswell on AVX-512 hosts in the tests),
and the portable baseline (4 lanes on generic LLVM vectors, lowered to SSE2 as on any x86-64, the same
lowering aarch64 NEON takes) forced with NUMBA_CPU_NAME=x86-64 in tests/test_planes_lanes.py on every CI run.
No aarch64 machine has run them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
from llvmlite import binding as llvm

# Feature lists for NUMBA_CPU_FEATURES (with NUMBA_CPU_NAME): the tests force these targets in subprocesses
# and Ray workers so that every lane width runs on one host.
TARGET_FEATURES = {
    "haswell": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,+pclmul,+popcnt,"
               "+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave",
    "x86-64": "+64bit,+cmov,+cx8,+fxsr,+mmx,+sse,+sse2",  # the portable baseline: no POPCNT, no AVX
}
VECTOR_POPCOUNT_FEATURES = frozenset({"+avx512f", "+avx512bw", "+avx512vpopcntdq"})


def host_features() -> list[str]:
    """The CPU features numba compiles for (NUMBA_CPU_FEATURES, else the host's)."""
    return (numba.config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()).split(",")


def host_cpu_name() -> str:
    return str(numba.config.CPU_NAME or llvm.get_host_cpu_name())


def host_has_vector_popcount() -> bool:
    """AVX-512 with VPOPCNTQ on the CPU numba compiles for: the 8-lane kernels (measured there; AVX-512 without
    it, as on Skylake-X, keeps 4 lanes: not measured)."""
    return VECTOR_POPCOUNT_FEATURES <= set(host_features())


LANES = 8 if host_has_vector_popcount() else 4  # 64-bit words a bit-plane vector: 512- or 256-bit registers
GROUP = 64 * LANES  # items per group: one vector per bit-plane
TERNLOG = LANES == 8  # full adders as two VPTERNLOGQ (AVX-512F); else five generic logic ops
PLANES_FORMAT = 1  # bit_planes' array format: bump when the planes or their popcount rows change

# LLVM intrinsics the kernels call (one place, so a port reads what it must provide)
INTRINSIC_CTPOP = "llvm.ctpop"  # scalar i64 popcount (POPCNT; a bit trick without it)
INTRINSIC_CTPOP_VEC = "llvm.ctpop.v%di64" % LANES  # VPOPCNTQ on AVX-512, nibble lookups elsewhere
INTRINSIC_REDUCE_ADD = "llvm.vector.reduce.add.v%di64" % LANES
INTRINSIC_TERNLOG = "llvm.x86.avx512.pternlog.q.512"  # only emitted when TERNLOG
INTRINSIC_PREFETCH = "llvm.prefetch.p0"


class LayoutError(ValueError):
    """A prepared database was built for another CPU's layout than this process's."""


@dataclass(frozen=True)
class Layout:
    """What a bit-plane array depends on: vectors of `lanes` words, `group` items a vector, format `version`."""
    lanes: int
    group: int
    version: int = PLANES_FORMAT

    def check(self, built: "Layout | None", where: str) -> None:
        """Raise LayoutError unless data built with `built` can be read in a process of this layout."""
        if built != self:
            raise LayoutError(f"{where}: the bit-planes were built for {built} but this process ({host_cpu_name()}) "
                              f"runs {self}; rebuild them here (Searcher/prepare_db do) instead of shipping them")


LAYOUT = Layout(LANES, GROUP)

# The cost model of eval/search/searcher.py (MIH or the flat scan), in units of one flat-scan item: a probe
# (2-3 dependent random loads) and a visited bucket entry, each as many flat items as it costs. Calibrated with
# bench/bench_mih.py at 1e6 and 1e7 x 64 bits on the machine named below (its runs and figures:
# bench/results/kernels-history-2026-12-06.md); an 8-lane flat item is cheaper, so MIH's units are larger there.
MIH_PROBE_COST, MIH_CAND_COST = (540.0, 180.0) if LANES == 8 else (180.0, 90.0)
MIH_CALIBRATED_ON = "Zen 5 VM (AVX-512 VPOPCNTQ)" if LANES == 8 else "AVX2 host (Haswell class)"
