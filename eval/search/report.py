"""Search-and-report for the CLI: the JSON-ready top-k of query Codes in database Codes.

    res = search(load_codes("runs/test.npz"), load_codes("runs/train.npz"), 10)   # c3dhash search
    res["queries"][0]["results"]          # [[db_index, db_id, distance], ...], ties by database index

backend="numba" answers through eval.nearest.Searcher (multi-index hashing or the flat scan, chosen
automatically; identical results); "torch"/"auto" take eval.hamming.topk's torch path (CUDA when present).
"""
from __future__ import annotations

from c3dhash.eval.codes import Codes, CodesError, check_query_db
from c3dhash.eval.search.flat import BACKENDS, topk


def search(query: Codes, db: Codes, k: int, *, backend: str = "numba") -> dict:
    """Per query its index, id, label and the ranked [db_index, db_id, distance] list, plus k, bits, num_db."""
    if backend not in BACKENDS:
        raise CodesError(f"search: backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    check_query_db(query, db)
    if backend == "numba":
        from c3dhash.eval.search.searcher import Searcher
        idx, dist = Searcher(db.codes, db.bits).knn(query.codes, k)
    else:
        idx, dist = topk(query.codes, db.codes, k, backend=backend)
    ids = db.ids
    queries = [{"query": i, "id": str(query.ids[i]), "label": int(query.labels[i]),
                "results": [[int(j), str(ids[j]), int(d)] for j, d in zip(idx[i], dist[i])]}
               for i in range(len(query))]
    return {"k": int(idx.shape[1]), "bits": int(db.bits), "num_db": len(db), "queries": queries}
