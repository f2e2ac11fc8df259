"""The two working deployments of the service: the index searcher (batched code queries) and the video encoder
(model and decoder warm). Neither speaks HTTP (cluster/serve/ingress.py does); both answer a dict, and a
problem the client caused comes back as {"error": message, "status": 4xx}, never as an exception.
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
BATCH_WAIT_S = 0.002  # how long the first request of a batch waits for others (a small share of a 50 ms p99)


def error(exc: RequestError) -> dict[str, Any]:
    return {"error": str(exc), "status": exc.status}


class IndexSearcher:
    """One index folder in memory (or over shard actors). Concurrent top-K requests are batched into one
    knn call with the largest K of the batch; each keeps its own first K (the first K of a longer list
    ranked by (distance, index) are the top K). A request that carries a newer index version than this
    replica holds makes it load the folder again first (POST /reload); in-flight batches finish on the old."""

    def __init__(self, index: str, shards: int = 1, threads: int = 1) -> None:
        from c3dhash.eval.search.flat import use_threads
        use_threads(threads)  # numba's pool defaults to every core of the node
        self.engine = SearchEngine(index, shards=shards)
        self.engine.knn(np.asarray(self.engine.idx.codes[:1]), 1)  # compile + build the layouts now
        self.reloads = 0

    def _fresh(self, version: str | None) -> None:
        eng = self.engine
        if not version or version == eng.version:
            return
        try:
            on_disk = folder_version(eng.path)
        except OSError:
            return  # mid-rename: keep serving the old folder
        if on_disk == eng.version:  # a replica that restarted already holds the newest folder
            return
        new = SearchEngine(eng.path, shards=eng.shards, shard_cpus=eng.shard_cpus)
        new.knn(np.asarray(new.idx.codes[:1]), 1)
        self.engine, self.reloads = new, self.reloads + 1
        eng.close()

    async def search(self, codes: np.ndarray, top: int | None, radius: int | None, names: Sequence[str],
                     version: str | None) -> dict[str, Any]:
        if radius is not None:
            self._fresh(version)
            return self.engine.search(codes, radius=radius, names=names)
        return await self._knn_batch((codes, top, list(names), version))

    @serve.batch(max_batch_size=BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _knn_batch(self, requests: list[tuple[np.ndarray, int, list[str], str | None]]) -> list[dict]:
        for r in requests:
            self._fresh(r[3])
        eng = self.engine
        rows = np.cumsum([0] + [len(r[0]) for r in requests])
        idx, dist = eng.knn(np.concatenate([r[0] for r in requests]), max(r[1] for r in requests))
        out = []
        for (codes, top, names, _), a, b in zip(requests, rows[:-1], rows[1:]):
            out.append(eng.answer(names, [i[:top] for i in idx[a:b]], [d[:top] for d in dist[a:b]], top=top))
        return out

    async def search_item(self, item: int, top: int, version: str | None) -> dict[str, Any]:
        """Top K of an indexed item's own code (the page's "pick one from the index")."""
        self._fresh(version)
        try:
            code = self.engine.item_code(item)
        except RequestError as exc:
            return error(exc)
        rec = self.engine.idx.items[item]
        res = await self.search(code, top, None, [rec.path], version)
        res["queries"][0].update(label=rec.label, **{"class": rec.class_name})
        return res

    def info(self) -> dict[str, Any]:
        return {**self.engine.card(), "pid": os.getpid(), "reloads": self.reloads}


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
