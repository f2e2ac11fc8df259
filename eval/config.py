"""Evaluation configuration (owned by eval/, composed into the job config by cluster/)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalConfig:
    map_at_k_rel: tuple[int, ...] = (100,)  # CSQ: mAP@K divided by relevant items in the top K
    map_at_k: tuple[int, ...] = (5, 10, 20, 40, 60, 80, 100)  # SSVH family: mAP@K divided by K
    precision_at_k: tuple[int, ...] = (10, 50, 100)
    shards: int = 1  # Ray tasks for evaluation (1 = in process)
    expected_ties: bool = False  # also report map_all_expected (AP averaged over random orders of ties)
    max_retries: int = 3  # Ray retries of a failed evaluation task (exception or lost worker)
