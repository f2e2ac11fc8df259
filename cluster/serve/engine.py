"""The search behind the service, without Ray Serve: one index folder, code queries in, the CLI's JSON out.

    eng = SearchEngine("runs/synth.index")                  # eval/index/folder.py's load_index
    res = eng.search(parse_codes({"codes": [[-1, 1, ...]]}, eng.bits), top=5)   # the CLI's result schema
    res = eng.search(codes, radius=3)                       # every item within 3 bits, by (distance, index)
    eng.stale()                                             # True once `c3dhash index --add` replaced the folder

The answer is the CLI's one result schema (cluster/results.py: rank, distance, index, path, label, class),
ranked by eval/search/searcher.py's Searcher (or, with shards > 1, eval/search/sharded.py's ShardedIndex,
whose merge keeps ties by database index), so it equals `c3dhash search --index DIR` for the same codes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from c3dhash.eval.codes import num_words, pack_bits
from c3dhash.eval.index.folder import META, VideoIndex, load_index
from c3dhash.cluster.results import from_videos
from c3dhash.eval.index.query import Query

WORD = 1 << 64


class RequestError(ValueError):
    """A request the client can fix: the HTTP layer answers `status` with the message (never a traceback)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (the service's own protection, independent of the index size)."""
    max_queries: int = 256  # codes per POST /search
    max_top: int = 1000  # top K
    max_radius: int = 16  # radius searches grow combinatorially with r; 16 bits is already most of a 64-bit index
    max_body_bytes: int = 4 << 20  # JSON body of POST /search
    max_upload_bytes: int = 64 << 20  # POST /search/video
    max_duration_s: float = 120.0  # seconds of video
    timeout_s: float = 30.0  # a request that has not been answered by then gets 503 (after one retry)


def folder_version(path: str | Path) -> str:
    """Identity of the index folder on disk: `c3dhash index` renames a new folder into place, so its meta.json
    is a new inode (with a new mtime and count) after every rebuild or --add."""
    st = os.stat(Path(path) / META)
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def _word(v: Any, where: str) -> int:
    if isinstance(v, str):  # "0x..." or decimal: JavaScript numbers lose bits above 2**53
        try:
            v = int(v, 0)
        except ValueError:
            raise RequestError(f"{where}: {v[:40]!r} is not an integer word (decimal or 0x hex)") from None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < WORD:
        raise RequestError(f"{where}: packed words are integers in [0, 2**64), got {str(v)[:40]}")
    return v


def parse_codes(payload: dict[str, Any], bits: int, *, max_queries: int = Limits.max_queries) -> np.ndarray:
    """uint64 [Q, W] from {"codes": [...]}: each query is W packed words (ints, or strings for JavaScript) or
    a vector of `bits` +-1 values (the network's sign); "format": "packed" | "sign" forces one reading."""
    codes, fmt = payload.get("codes"), payload.get("format", "auto")
    w = num_words(bits)
    if fmt not in ("auto", "packed", "sign"):
        raise RequestError(f"format {str(fmt)[:20]!r}: use packed, sign or leave it out")
    if not isinstance(codes, list) or not codes or not all(isinstance(c, list) for c in codes):
        raise RequestError(f"codes: a non-empty list of queries, each {w} packed words or {bits} values of +-1")
    if len(codes) > max_queries:
        raise RequestError(f"codes: {len(codes)} queries; at most {max_queries} per request", 413)
    lengths = {len(c) for c in codes}
    if fmt == "auto":
        fmt = "packed" if lengths == {w} else "sign" if lengths == {bits} else "?"
    if fmt == "packed" and lengths == {w}:
        out = np.array([[_word(v, f"codes[{i}][{j}]") for j, v in enumerate(c)] for i, c in enumerate(codes)],
                       dtype=np.uint64).reshape(len(codes), w)
        if bits % 64 and (out[:, -1] >> np.uint64(bits % 64)).any():
            raise RequestError(f"codes: bits above {bits} are set in the last word; the index holds {bits}-bit codes")
        return out
    if fmt == "sign" and lengths == {bits}:
        arr = np.array(codes, dtype=object)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v in (-1, 1) for v in arr.ravel()):
            raise RequestError("codes: sign vectors hold only -1 and +1")
        return pack_bits(arr.astype(np.int8), kind="binary")
    raise RequestError(f"codes: query lengths {sorted(lengths)[:4]}; this index holds {bits}-bit codes: send {w} "
                       f"packed word(s) or {bits} values of +-1 per query")


def parse_query(payload: Any, limits: Limits) -> tuple[int | None, int | None]:
    """(top, radius) of a request: exactly one; top defaults to 10."""
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object, e.g. {\"codes\": [[...]], \"top\": 10}")
    top, radius = payload.get("top"), payload.get("radius")
    if top is not None and radius is not None:
        raise RequestError("pass top or radius, not both")
    if radius is not None:
        if isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= limits.max_radius:
            raise RequestError(f"radius: an integer in [0, {limits.max_radius}]")
        return None, radius
    top = 10 if top is None else top
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= limits.max_top:
        raise RequestError(f"top: an integer in [1, {limits.max_top}]")
    return top, None


def names_of(payload: dict[str, Any], n: int) -> list[str]:
    names = payload.get("names")
    if isinstance(names, list) and len(names) == n:
        return [str(x)[:200] for x in names]
    return [f"query {i}" for i in range(n)]


class SearchEngine:
    """One index folder, searched in this process (or over `shards` Ray actors); see the module docstring."""

    def __init__(self, index: str | Path, *, shards: int = 1, shard_cpus: float = 1.0,
                 address: str | None = None) -> None:
        self.path = Path(index).absolute()
        self.version = folder_version(self.path)
        self.idx: VideoIndex = load_index(self.path)
        self.shards, self.shard_cpus = shards, shard_cpus
        if shards > 1:
            from c3dhash.eval.search.sharded import ShardedIndex
            self.searcher: Any = ShardedIndex(self.path / "codes.npy", self.idx.bits, shards=shards,
                                              address=address, cpus_per_shard=shard_cpus)
        else:
            from c3dhash.eval.search.searcher import Searcher
            self.searcher = Searcher(self.idx.codes, self.idx.bits)

    @property
    def bits(self) -> int:
        return self.idx.bits

    def stale(self) -> bool:
        try:
            return folder_version(self.path) != self.version
        except OSError:  # mid-rename: the old folder keeps serving until the new one is in place
            return False

    def knn(self, codes: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
        return self.searcher.knn(codes, min(top, len(self.idx)))

    def radius(self, codes: np.ndarray, r: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        off, idx, dist = self.searcher.radius(codes, r)
        return ([idx[off[i]:off[i + 1]] for i in range(len(codes))],
                [dist[off[i]:off[i + 1]] for i in range(len(codes))])

    def answer(self, names: Sequence[str], indices: Sequence[np.ndarray], distances: Sequence[np.ndarray], *,
               top: int | None = None, radius: int | None = None) -> dict[str, Any]:
        queries = [Query(n, -1, "unknown", np.asarray(i), np.asarray(d)) for n, i, d in zip(names, indices, distances)]
        return from_videos(self.idx, queries, top=top if top is not None else len(self.idx), max_distance=radius)

    def search(self, codes: np.ndarray, *, top: int | None = None, radius: int | None = None,
               names: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(names) if names is not None else [f"query {i}" for i in range(len(codes))]
        if radius is not None:
            return self.answer(names, *self.radius(codes, radius), radius=radius)
        top = 10 if top is None else top
        i, d = self.knn(codes, top)
        return self.answer(names, list(i), list(d), top=top)

    def item_code(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.idx):
            raise RequestError(f"item {i}: the index holds items 0..{len(self.idx) - 1}", 404)
        return np.asarray(self.idx.codes[i:i + 1])

    def card(self) -> dict[str, Any]:
        return {"index": str(self.path), "count": len(self.idx), "bits": self.bits,
                "fingerprint": self.idx.fingerprint, "model": self.idx.meta.get("model", {}),
                "shards": self.shards, "version": self.version}

    def close(self) -> None:
        if hasattr(self.searcher, "close"):
            self.searcher.close()
