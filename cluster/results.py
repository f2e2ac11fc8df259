"""One result schema for every search mode (`search --query`, `search --video`, codes file or index folder).

JSON (`--json FILE` or `--json -`):
    {"index": ..., "bits": B, "num_db": N, "top": K, "max_distance": R or null,
     "queries": [{"query": name, "label": int (-1 unknown), "class": str or null, "error": str or null,
                  "notes": [...], "results": [{"rank": 1, "distance": d, "index": j, "path": ...,
                                               "label": int, "class": str or null}, ...]}]}
Results are ranked by (distance, index). With --max-distance R only results at distance <= R are kept; an
empty list is "no match". A query that could not be decoded has "error" set and no results; it makes the
exit status 1 unless --skip-bad (then it is left out, and a line on stderr says so).
The text output prints the same fields, one result per line.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

Item = tuple[str, int, Any]  # path, label, class name (None where the database has no class names)


def result_rows(indices: Sequence[int], distances: Sequence[int], item: Callable[[int], Item],
                max_distance: int | None) -> list[dict[str, Any]]:
    rows = []
    for r, (j, d) in enumerate(zip(indices, distances)):
        if max_distance is not None and int(d) > max_distance:
            break  # ranked by distance: the rest are farther
        path, label, cls = item(int(j))
        rows.append({"rank": r + 1, "distance": int(d), "index": int(j), "path": path, "label": int(label),
                     "class": cls})
    return rows


def query_entry(name: str, label: int, cls: Any, rows: list[dict[str, Any]], *, error: str | None = None,
                notes: Sequence[str] = ()) -> dict[str, Any]:
    return {"query": name, "label": int(label), "class": cls, "error": error, "notes": list(notes),
            "results": rows}


def from_codes(res: dict[str, Any], item: Callable[[int], Item], query_class: Callable[[int], Any], *,
               index: str, max_distance: int | None) -> dict[str, Any]:
    """eval.search.report.search()'s answer (query codes against database codes) in the one schema."""
    queries = [query_entry(q["id"], q["label"], query_class(q["label"]),
                           result_rows([j for j, _, _ in q["results"]], [d for _, _, d in q["results"]], item,
                                       max_distance)) for q in res["queries"]]
    return {"index": index, "bits": res["bits"], "num_db": res["num_db"], "top": res["k"],
            "max_distance": max_distance, "queries": queries}


def from_videos(idx, queries, *, top: int, max_distance: int | None) -> dict[str, Any]:
    """eval.index.query's Query list (query videos against an index folder) in the one schema."""
    def item(j: int) -> Item:
        r = idx.items[j]
        return r.path, r.label, r.class_name
    entries = [query_entry(q.name, q.label, q.class_name if q.label >= 0 else None,
                           [] if q.error else result_rows(q.indices, q.distances, item, max_distance),
                           error=q.error, notes=q.notes) for q in queries]
    return {"index": str(idx.path), "fingerprint": idx.fingerprint, "bits": idx.bits, "num_db": len(idx),
            "top": top, "max_distance": max_distance, "queries": entries}


def drop_bad(res: dict[str, Any], skip_bad: bool) -> int:
    """Exit status for the queries' errors: 1 when one failed, unless --skip-bad (then they are left out)."""
    bad = [q for q in res["queries"] if q["error"]]
    for q in bad:
        print(f"query {q['query']}: {q['error']}" + (" (skipped: --skip-bad)" if skip_bad else ""),
              file=sys.stderr)
    if skip_bad:
        res["queries"] = [q for q in res["queries"] if not q["error"]]
        return 0
    return 1 if bad else 0


def _named(label: int, cls: Any) -> str:
    if label < 0:
        return "label unknown"
    return f"{cls} ({label})" if cls is not None else f"label {label}"


def format_text(res: dict[str, Any], *, show: int | None = None) -> str:
    """The text form of the same fields: a head line per query, then rank, distance, index, path, class."""
    lines = []
    queries = res["queries"] if show is None else res["queries"][:show]
    for q in queries:
        notes = "; " + "; ".join(q["notes"]) if q["notes"] else ""
        lines.append(f"query {q['query']} ({_named(q['label'], q['class'])}){notes}:")
        if q["error"]:
            lines.append(f"  error: {q['error']}")
            continue
        if not q["results"]:
            lines.append(f"  no match within distance {res['max_distance']}")
            continue
        lines.append(f"  {'rank':>4}  {'dist':>4}  {'index':>7}  path  class")
        lines += [f"  {r['rank']:>4}  {r['distance']:>4}  {r['index']:>7}  {r['path']}  "
                  f"{_named(r['label'], r['class'])}" for r in q["results"]]
    if show is not None and len(res["queries"]) > show:
        lines.append(f"... {len(res['queries']) - show} more queries (--show N, or --json)")
    return "\n".join(lines)
