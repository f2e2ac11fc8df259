"""distributed/: rank helpers, autograd all-gather, SyncBN, the all-triplets loss (and the training loop)."""
from distributed.env import barrier, get_device, get_local_rank, get_rank, get_world_size, is_dist, is_main
from distributed.gather import all_gather_rows, all_gather_sizes
from distributed.syncbn import GatherSyncBatchNorm, convert_sync_bn
from distributed.triplet import LossError, all_triplet_loss, gathered_triplet_loss, num_valid_triplets

__all__ = ["GatherSyncBatchNorm", "LossError", "all_gather_rows", "all_gather_sizes", "all_triplet_loss",
           "barrier", "convert_sync_bn", "get_device", "get_local_rank", "get_rank", "get_world_size",
           "gathered_triplet_loss", "is_dist", "is_main", "num_valid_triplets"]
