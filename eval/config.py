"""Evaluation configuration (owned by eval/, composed into the job config by cluster/).

The default K lists live here once: EvalConfig, `evaluate`, `evaluate_sharded`, the CLI and the benchmarks
all read them from this module. EvalConfig holds what training's validation reads (`--set eval.*`); how a
standalone `c3dhash eval` is sharded is a flag of that command, not a job config key.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAP_AT_K_REL: tuple[int, ...] = (100,)  # CSQ: mAP@K divided by relevant items in the top K
MAP_AT_K: tuple[int, ...] = (5, 10, 20, 40, 60, 80, 100)  # SSVH family: mAP@K divided by K
PRECISION_AT_K: tuple[int, ...] = (10, 50, 100)
MAX_RETRIES = 3  # Ray retries of a failed sharded-evaluation task (exception or lost worker)


@dataclass(frozen=True)
class EvalConfig:
    map_at_k_rel: tuple[int, ...] = field(default=MAP_AT_K_REL, metadata={">=": 1})
    map_at_k: tuple[int, ...] = field(default=MAP_AT_K, metadata={">=": 1})
    precision_at_k: tuple[int, ...] = field(default=PRECISION_AT_K, metadata={">=": 1})
    # training's validation and `c3dhash eval`: also report map_all_expected (AP over random orders of ties)
    expected_ties: bool = False
