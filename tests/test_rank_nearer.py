"""`search --video --mirrored` ranks the database by the nearer of two codes per query (a video's and its
mirror's): from the two top lists it equals the brute-force ranking by min distance, ties by database index."""
from types import SimpleNamespace

import numpy as np
import pytest

from c3dhash.eval.codes import pack_bits
from c3dhash.eval.index.query import rank_nearer


@pytest.mark.parametrize("bits, n, top, seed", [(8, 200, 10, 0), (8, 50, 50, 1), (64, 300, 7, 2), (16, 5, 3, 3)])
def test_rank_nearer_equals_brute_force_min_distance_with_ties_by_index(bits, n, top, seed):
    rng = np.random.default_rng(seed)
    db, a, b = (rng.random((m, bits)) < 0.5 for m in (n, 6, 6))  # 8 bits: many ties
    idx = SimpleNamespace(codes=pack_bits(db.astype(np.float32) - 0.5), bits=bits)
    got_i, got_d = rank_nearer(idx, pack_bits(a - 0.5), pack_bits(b - 0.5), top)
    d = np.minimum((a[:, None] != db[None]).sum(-1), (b[:, None] != db[None]).sum(-1))
    for q in range(len(a)):
        want = np.lexsort((np.arange(n), d[q]))[:top]
        assert got_i[q].tolist() == want.tolist() and got_d[q].tolist() == d[q, want].tolist()
