"""What the service's HTTP replicas hold and call: the index searcher (in the replica's own process: batched code
queries, no hop between HTTP and the index) and the video encoder (a deployment of its own: model and decoder
warm). Neither speaks HTTP (cluster/serve/ingress.py does); a problem the client caused comes back as a
RequestError (searcher) or {"error": message, "status": 4xx} (encoder), never as a traceback.
"""
from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ray import serve

from c3dhash.cluster.serve.engine import RequestError, SearchEngine, folder_version

BATCH_SIZE = 64  # queries of concurrent requests answered by one knn call
BATCH_WAIT_S = 0.001  # how long the first request of a batch waits for others (a small share of a 50 ms p99)


def error(exc: RequestError) -> dict[str, Any]:
    return {"error": str(exc), "status": exc.status}


class IndexSearcher:
    """One index folder in memory (or over shard actors), in the HTTP replica's process. Concurrent top-K
    requests are batched into one knn call with the largest K of the batch; each keeps its own first K (the
    first K of a longer list ranked by (distance, index) are the top K).

    Every request first calls follow(): when `c3dhash index` has renamed a new folder into place (meta.json is
    a new inode), the replica loads it before answering, so after POST /reload (or any rebuild) no replica
    answers from the old folder; batches already running finish on the old engine. A folder built by another
    model is refused once (the old one keeps serving) and reported by /stats."""

    def __init__(self, index: str, shards: int = 1, threads: int = 1) -> None:
        from c3dhash.eval.search.flat import use_threads
        use_threads(threads)  # numba's pool defaults to every core of the node
        self.engine = self._load(index, shards)
        self.fingerprint = self.engine.idx.fingerprint
        self.reloads, self.refused = 0, None  # refused: (version, reason) of a folder this replica will not load

    @staticmethod
    def _load(index: str | Path, shards: int, shard_cpus: float = 1.0) -> SearchEngine:
        eng = SearchEngine(index, shards=shards, shard_cpus=shard_cpus)
        eng.knn(np.asarray(eng.idx.codes[:1]), 1)  # compile + build the layouts before the first request
        return eng

    def follow(self) -> None:
        """Load the folder now on disk if it changed (see the class docstring); RequestError(409) if refused."""
        eng = self.engine
        try:
            on_disk = folder_version(eng.path)
        except OSError:
            return  # mid-rename: keep serving the old folder
        if on_disk == eng.version:
            return
        if self.refused and self.refused[0] == on_disk:
            raise RequestError(self.refused[1], 409)
        from c3dhash.eval.index.folder import VideoIndexError
        try:
            new = self._load(eng.path, eng.shards, eng.shard_cpus)  # the folder is read once, then checked
        except VideoIndexError as exc:
            return self._refuse(on_disk, f"reload refused, still serving the old index: {exc}")
        if new.idx.fingerprint != self.fingerprint:
            new.close()
            return self._refuse(on_disk, f"reload refused: {eng.path} was rebuilt by another model "
                                         f"({new.idx.fingerprint[:19]}...); restart the service to change models")
        self.engine, self.reloads, self.refused = new, self.reloads + 1, None
        eng.close()

    def _refuse(self, version: str, reason: str) -> None:
        print(f"c3dhash serve: {reason}", flush=True)
        self.refused = (version, reason)
        raise RequestError(reason, 409)

    def fresh(self) -> SearchEngine:
        """The engine to answer from: the folder on disk, or the old one when that was refused."""
        try:
            self.follow()
        except RequestError:
            pass
        return self.engine

    async def search(self, codes: np.ndarray, top: int | None, radius: int | None,
                     names: Sequence[str]) -> dict[str, Any]:
        if radius is not None:
            return self.fresh().search(codes, radius=radius, names=names)
        return await self._knn_batch((codes, top, list(names)))

    @serve.batch(max_batch_size=BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _knn_batch(self, requests: list[tuple[np.ndarray, int, list[str]]]) -> list[dict]:
        eng = self.fresh()
        rows = np.cumsum([0] + [len(r[0]) for r in requests])
        idx, dist = eng.knn(np.concatenate([r[0] for r in requests]), max(r[1] for r in requests))
        return [eng.answer(names, [i[:top] for i in idx[a:b]], [d[:top] for d in dist[a:b]], top=top)
                for (_, top, names), a, b in zip(requests, rows[:-1], rows[1:])]

    async def search_item(self, item: int, top: int) -> dict[str, Any]:
        """Top K of an indexed item's own code (the page's "pick one from the index")."""
        eng = self.fresh()
        code = eng.item_code(item)
        rec = eng.idx.items[item]
        res = await self.search(code, top, None, [rec.path])
        res["queries"][0].update(label=rec.label, **{"class": rec.class_name})
        return res

    def info(self) -> dict[str, Any]:
        return {**self.engine.card(), "pid": os.getpid(), "reloads": self.reloads,
                "reload_refused": self.refused[1] if self.refused else None}


class VideoEncoder:
    """The index's model (refused if its fingerprint is not the index's) on one device, warmed by encoding a
    generated clip at start, so a query pays for its own decode and forward pass only."""

    def __init__(self, index: str, checkpoint: str | None = None, device: str = "cpu",
                 max_duration_s: float = 120.0, threads: int = 1) -> None:
        import torch

        from c3dhash.eval.index.folder import load_index
        from c3dhash.eval.index.query import index_model
        from c3dhash.eval.index.videos import ChunkEncoder
        torch.set_num_threads(threads)
        idx = load_index(index)
        self.enc = ChunkEncoder(index_model(idx, checkpoint), device=device, num_threads=threads)
        self.fingerprint, self.max_duration_s = idx.fingerprint, max_duration_s
        self._warm()

    def _warm(self) -> None:
        from c3dhash.loaders.videoio import write_video
        g = self.enc.model.geometry
        h, w = g.resize
        frames = np.random.default_rng(0).integers(0, 255, (g.num_frames * g.stride, h, w, 3), dtype=np.uint8)
        with tempfile.TemporaryDirectory(prefix="c3dhash-serve-") as tmp:
            self.enc.encode([str(write_video(Path(tmp) / "warm.webm", frames))])

    def encode(self, data: bytes, ext: str) -> dict[str, Any]:
        """{"code": uint64 [1, W], "thumb": PNG base64, "padded", "duration_s"} or {"error", "status"}."""
        from c3dhash.cluster.serve.uploads import check_video
        from c3dhash.eval.codes import pack_bits
        from c3dhash.eval.index.page import frame_strip, png_bytes
        try:
            duration = check_video(data, max_duration_s=self.max_duration_s)
        except RequestError as exc:
            return error(exc)
        with tempfile.TemporaryDirectory(prefix="c3dhash-serve-") as tmp:
            path = Path(tmp) / f"query{ext}"  # our name, never the client's
            path.write_bytes(data)
            res = self.enc.encode([str(path)])
            if 0 in res.skipped:
                return {"error": f"cannot decode the video: {res.skipped[0][:200]}", "status": 422}
            thumb = base64.b64encode(png_bytes(frame_strip(str(path)))).decode()
        return {"code": pack_bits(res.outputs[:1]), "thumb": thumb, "padded": bool(res.padded),
                "duration_s": round(duration, 3), "fingerprint": self.fingerprint}
