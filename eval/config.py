"""Evaluation configuration (owned by eval/, composed into the job config by cluster/).

The default K lists live here once: EvalConfig, `evaluate`, `evaluate_sharded`, the CLI and the benchmarks
all read them from this module.
"""
from __future__ import annotations

from dataclasses import dataclass

MAP_AT_K_REL: tuple[int, ...] = (100,)  # CSQ: mAP@K divided by relevant items in the top K
MAP_AT_K: tuple[int, ...] = (5, 10, 20, 40, 60, 80, 100)  # SSVH family: mAP@K divided by K
PRECISION_AT_K: tuple[int, ...] = (10, 50, 100)


@dataclass(frozen=True)
class EvalConfig:
    map_at_k_rel: tuple[int, ...] = MAP_AT_K_REL
    map_at_k: tuple[int, ...] = MAP_AT_K
    precision_at_k: tuple[int, ...] = PRECISION_AT_K
    shards: int = 1  # Ray tasks for evaluation (1 = in process)
    expected_ties: bool = False  # also report map_all_expected (AP averaged over random orders of ties)
    max_retries: int = 3  # Ray retries of a failed evaluation task (exception or lost worker)
