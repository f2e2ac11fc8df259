"""DALI is an optional extra (`pip install 'c3dhash[dali]'`): search, eval, reading an index and the results
page work without it; decoding videos needs it. Import it through dali() for one clear line when it is missing.
"""
from __future__ import annotations

EXTRA_FIX = "install the decoding extra: pip install 'c3dhash[dali]' (NVIDIA DALI; Linux x86_64/aarch64 only)"


class DaliMissing(ImportError):
    """Decoding was asked for and NVIDIA DALI is not installed; the message names the extra."""


def dali():
    """(fn, pipeline_def, types) of nvidia.dali, or DaliMissing naming the extra."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as exc:
        raise DaliMissing(f"decoding videos needs NVIDIA DALI, which is not installed ({exc}); {EXTRA_FIX}") from None
    return fn, pipeline_def, types
