"""Search-and-report for the CLI: the JSON-ready top-k of query Codes in database Codes.

    res = search(load_codes("runs/test.npz"), load_codes("runs/train.npz"), 10)   # c3dhash search
    res["queries"][0]["results"]          # [[db_index, db_id, distance], ...], ties by database index

Answered by eval/search/searcher.py's Searcher with its `method` vocabulary (identical results whichever).
"""
from __future__ import annotations

from c3dhash.eval.codes import Codes, check_query_db
from c3dhash.eval.search.searcher import Searcher, check_method


def search(query: Codes, db: Codes, k: int, *, method: str = "auto") -> dict:
    """Per query its index, id, label and the ranked [db_index, db_id, distance] list, plus k, bits, num_db."""
    check_method(method)
    check_query_db(query, db)
    idx, dist = Searcher(db.codes, db.bits).knn(query.codes, k, method=method)
    ids = db.ids
    queries = [{"query": i, "id": str(query.ids[i]), "label": int(query.labels[i]),
                "results": [[int(j), str(ids[j]), int(d)] for j, d in zip(idx[i], dist[i])]}
               for i in range(len(query))]
    return {"k": int(idx.shape[1]), "bits": int(db.bits), "num_db": len(db), "queries": queries}
