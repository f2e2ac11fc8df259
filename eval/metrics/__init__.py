"""Retrieval metrics: exact mAP family, P@K, PR counts and curves, and their Ray-sharded evaluation.
Imports search/ and kernels/ below it, never index/."""
