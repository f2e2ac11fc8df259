"""Query an index with videos (or with a codes file): encode with the index's model, rank by Hamming distance.

    c3dhash search --index runs/synth.index --video a.mp4 b.webm --top 5 [--json -]

    idx = load_index("runs/synth.index")
    model_state = index_model(idx, checkpoint=None)           # the checkpoint the index was built with
    hits = search_videos(idx, model_state, ["a.mp4"], top=5)   # [Query(...)]

The query is encoded exactly as the index's videos were (eval/index/videos.py: its own batch, transcoded on the
fly where DALI cannot decode it here), so a video that is in the index finds itself at distance 0. The
model must be the index's: its fingerprint (weights + bits + geometry) must equal the one in meta.json.
Ranking is eval/search/searcher.py's Searcher (one `method` vocabulary, MIH or the flat scan under 'auto'):
(distance, index in the index), so ties go to the earlier item.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from c3dhash.eval.codes import Codes, pack_bits
from c3dhash.eval.search.searcher import Searcher
from c3dhash.eval.index.folder import UNKNOWN, VideoIndex, VideoIndexError
from c3dhash.eval.index.videos import Encoded, encode_paths


@dataclass
class Query:
    name: str  # the query's path (or id in a codes file)
    label: int  # -1 when unknown
    class_name: str
    indices: np.ndarray  # int64 [K] positions in the index
    distances: np.ndarray  # int [K]
    video: str | None = None  # a file to draw thumbnails from, when there is one
    padded: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why the query could not be decoded (then no results)


def index_model(idx: VideoIndex, checkpoint: str | None) -> dict[str, Any]:
    """The checkpoint dict to encode queries with: `checkpoint` or the one the index was built from,
    refused unless its fingerprint is the index's."""
    from c3dhash.model.load import from_state, read_checkpoint
    path = checkpoint or idx.meta.get("model", {}).get("source")
    if not path or not Path(path).exists():
        raise VideoIndexError(f"{idx.path}: its checkpoint {path!r} is not there; pass the model it was built "
                              f"with: --checkpoint PATH")
    state = read_checkpoint(path)
    got = from_state(state, source=str(path)).fingerprint
    if got != idx.fingerprint:
        raise VideoIndexError(f"{path}: this model (fingerprint {got[:19]}...) did not build {idx.path} "
                              f"({idx.fingerprint[:19]}...); codes of two models cannot be compared: pass the "
                              f"checkpoint the index was built with, or rebuild the index with this one")
    return state


def clamp_top(top: int, idx: VideoIndex) -> int:
    if top < 1:
        raise VideoIndexError(f"--top {top}: must be >= 1")
    if top > len(idx):
        print(f"note: --top {top} is larger than the index ({len(idx)} videos); showing all {len(idx)}",
              file=sys.stderr)
    return min(top, len(idx))


def label_of(path: Path, idx: VideoIndex) -> tuple[int, str]:
    """A query inside the index's root gets the label of its class folder (or of its own item), else unknown."""
    try:
        rel = path.absolute().relative_to(idx.root).as_posix()
    except ValueError:
        return UNKNOWN
    for r in idx.items:
        if r.path == rel or ("/" in rel and r.class_name == rel.split("/")[0]):
            return r.label, r.class_name
    return UNKNOWN


def rank(idx: VideoIndex, codes: np.ndarray, top: int, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    return Searcher(np.ascontiguousarray(idx.codes), idx.bits).knn(np.ascontiguousarray(codes), top, method=method)


def rank_nearer(idx: VideoIndex, codes: np.ndarray, mirrored: np.ndarray, top: int,
                method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top `top` of each query by the nearer of its two codes (a video's and its mirror's), ties by database
    index. Exact from the two top lists: a database video in the merged top is in the top of the code nearer
    to it, at that distance, and a video seen at a farther distance cannot rank above the merged top."""
    lists = [rank(idx, c, top, method) for c in (codes, mirrored)]
    indices, dists = np.zeros((len(codes), top), np.int64), np.zeros((len(codes), top), np.int64)
    for q in range(len(codes)):
        i = np.concatenate([lists[0][0][q], lists[1][0][q]])
        d = np.concatenate([lists[0][1][q], lists[1][1][q]])
        order = np.lexsort((i, d))  # by distance, then index: an index's first appearance is its nearer one
        first = order[np.unique(i[order], return_index=True)[1]]
        keep = first[np.lexsort((i[first], d[first]))][:top]
        indices[q], dists[q] = i[keep], d[keep]
    return indices, dists


def search_videos(idx: VideoIndex, state: dict[str, Any], videos: Sequence[str], *, top: int, method: str = "auto",
                  encode: Callable[..., Encoded] | None = None, mirrored: bool = False) -> list[Query]:
    """Top `top` of each query video, in the given order; one that cannot be decoded is a Query with `error`
    set and no results (the caller decides whether that fails the command). `mirrored`: each video is also
    searched left-right mirrored, a database video at the nearer distance (a flipped copy finds its original)."""
    missing = [v for v in videos if not Path(v).is_file()]
    if missing:
        raise VideoIndexError(f"--video {missing[0]}: file not found")
    encode = encode or (lambda s, p, mirror=False: encode_paths(s, p, mirror=mirror))
    paths = [str(Path(v).absolute()) for v in videos]
    res = encode(state, paths)
    ok = res.ok
    empty = np.zeros(0, np.int64)
    if mirrored:
        mirror = encode(state, paths, mirror=True)
        ok = ok & mirror.ok
        indices, dists = rank_nearer(idx, pack_bits(res.outputs[ok]), pack_bits(mirror.outputs[ok]),
                                     clamp_top(top, idx), method) if ok.any() else (empty, empty)
    else:
        indices, dists = rank(idx, pack_bits(res.outputs[ok]), clamp_top(top, idx),
                              method) if ok.any() else (empty, empty)
    rows = {i: row for row, i in enumerate(np.flatnonzero(ok).tolist())}
    out = []
    for i, video in enumerate(videos):
        if i not in rows:
            out.append(Query(video, *label_of(Path(video), idx), empty, empty,
                             error=f"cannot be decoded: {res.skipped.get(i, 'no frames')}"))
            continue
        q = Query(video, *label_of(Path(video), idx), indices[rows[i]], dists[rows[i]], video=video,
                  padded=i in res.padded)
        if q.padded:
            q.notes.append("shorter than one clip: padded with its last frame (as in training)")
        out.append(q)
    return out


def search_codes(idx: VideoIndex, query: Codes, *, top: int, limit: int | None = None,
                 method: str = "auto") -> list[Query]:
    """Queries from a codes file (ids = paths relative to the index root when the videos are there)."""
    if query.bits != idx.bits:
        raise VideoIndexError(f"{query.source}: {query.bits}-bit codes, but {idx.path} holds {idx.bits}-bit "
                              f"codes; encode the queries with the index's model")
    n = len(query) if limit is None else min(limit, len(query))
    indices, dists = rank(idx, query.codes[:n], clamp_top(top, idx), method)
    names = {r.label: r.class_name for r in idx.items}
    out = []
    for i in range(n):
        path = idx.root / str(query.ids[i])
        label = int(query.labels[i])
        out.append(Query(str(query.ids[i]), label, names.get(label, str(label)), indices[i], dists[i],
                         video=str(path) if path.is_file() else None))
    return out
