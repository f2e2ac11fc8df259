"""The HTTP face of the service (the Ray Serve deployment that Serve's proxy calls, `--replicas` of them): routes,
the bearer token, request limits, and the counters behind GET /stats. Each replica holds the index itself
(deployments.py's IndexSearcher): a code query is one hop from the proxy, parsed, batched and answered in one
process. Video queries go on to the encoder deployment, with a timeout and one retry.

    GET  /                  the search page (cluster/serve/page.html)
    GET  /healthz           {"ok": true} (no token needed: for probes)
    GET  /stats             index size, bits, fingerprint, model card, requests served, p50/p99 latency (ms)
    GET  /items?offset=&limit=     indexed items (index, path, label, class) for the page's picker
    GET  /thumb/<i>         PNG frame strip of indexed item i (an integer: no request names a file)
    POST /search            {"codes": [[...]], "top": 10 | "radius": 3, "names": [...]} -> the CLI's JSON
    POST /search/item       {"item": i, "top": 10}: the item's own code as the query
    POST /search/video?name=clip.mp4&top=10    body = the video's bytes
    POST /reload            check and load the index folder now on disk (after `c3dhash index --add`); every
                            replica loads a rebuilt folder before its next answer; in-flight requests finish

Errors are JSON {"error": one line} with a 4xx (the client's to fix) or 503 (the encoder could not answer
in time, after one retry); an unexpected failure is a 500 with a one-line message and no traceback. /stats
counts the replica that answers it.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import deque
from typing import Any

import numpy as np
from ray.exceptions import RayTaskError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from c3dhash.cluster.serve.engine import Limits, RequestError, names_of, parse_codes, parse_query

OPEN = {("GET", "/"), ("GET", "/healthz")}  # what answers without the token (the page asks for it itself)


def check_token(header: str | None, token: str | None) -> None:
    if token is None:
        return
    given = (header or "")[len("Bearer "):] if (header or "").startswith("Bearer ") else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise RequestError("missing or wrong bearer token: send Authorization: Bearer <token>", 401)


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    try:
        v = default if raw is None else int(raw)
    except ValueError:
        raise RequestError(f"{name}={raw[:20]!r}: an integer in [{lo}, {hi}]") from None
    if not lo <= v <= hi:
        raise RequestError(f"{name}={v}: an integer in [{lo}, {hi}]")
    return v


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (never held whole above it)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"body of {declared} bytes is over the {limit} byte limit", 413)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise RequestError(f"body over the {limit} byte limit", 413)
    return bytes(buf)


class Ingress:
    def __init__(self, encoder: Any, index: str, token: str | None = None, limits: dict[str, Any] | None = None,
                 shards: int = 1, threads: int = 1) -> None:
        from c3dhash.cluster.serve.deployments import IndexSearcher
        self.searcher = IndexSearcher(index, shards, threads)
        self.encoder, self.token = encoder, token
        self.limits = Limits(**(limits or {}))
        self.latency_ms: deque[float] = deque(maxlen=10000)
        self.counts = {"served": 0, "retried": 0, "failed": 0, "rejected": 0}

    async def __call__(self, request: Request) -> Response:
        t0 = time.perf_counter()
        path, method = request.url.path.rstrip("/") or "/", request.method
        try:
            if (method, path) not in OPEN:
                check_token(request.headers.get("authorization"), self.token)
            body = await self.route(method, path, request)
        except RequestError as exc:
            self.counts["rejected"] += 1
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except Unavailable as exc:
            self.counts["failed"] += 1
            return JSONResponse({"error": str(exc)}, status_code=503)
        except Exception as exc:  # noqa: BLE001 - a bug: one line to the client, details in the replica log
            self.counts["failed"] += 1
            print(f"c3dhash serve: {method} {path}: {type(exc).__name__}: {exc}")
            return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the service log"}, 500)
        if isinstance(body, Response):
            return body
        if path.startswith("/search"):
            self.counts["served"] += 1
            self.latency_ms.append((time.perf_counter() - t0) * 1000)
        return JSONResponse(body)

    async def route(self, method: str, path: str, request: Request) -> Any:
        if method == "GET":
            if path == "/":
                from c3dhash.cluster.serve.page import page_html
                return Response(page_html(), media_type="text/html; charset=utf-8")
            if path == "/healthz":
                return {"ok": True}
            if path == "/stats":
                return await self.stats()
            if path == "/items":
                return self.items(request)
            if path.startswith("/thumb/"):
                return await self.thumb(path[len("/thumb/"):])
        elif method == "POST":
            if path == "/search":
                return await self.search_codes(request)
            if path == "/search/item":
                return await self.search_item(request)
            if path == "/search/video":
                return await self.search_video(request)
            if path == "/reload":
                return await self.reload()
        raise RequestError(f"{method} {path}: no such endpoint (see GET /stats, POST /search)", 404)

    @property
    def idx(self) -> Any:
        """The index being served: items for the picker and thumbnails (codes stay memory-mapped)."""
        return self.searcher.fresh().idx

    async def call(self, handle: Any, method: str, *args: Any) -> Any:
        """One call of another deployment with the timeout, retried once (a replica that died mid-request is
        replaced by Serve; the retry goes to a live one); 503 with the reason after that."""
        last: BaseException | None = None
        for attempt in range(2):
            resp = getattr(handle, method).remote(*args)
            try:
                out = await asyncio.wait_for(_await(resp), self.limits.timeout_s)
            except RayTaskError:  # the deployment's own bug: a retry would fail the same way (a 500)
                raise
            except Exception as exc:  # noqa: BLE001 - a dead replica, a timeout: retry once, then 503
                resp.cancel()
                last = exc
                if attempt == 0:
                    self.counts["retried"] += 1
                continue
            if isinstance(out, dict) and "error" in out:
                raise RequestError(out["error"], out.get("status", 400))
            return out
        raise Unavailable(f"the {method} deployment did not answer within {self.limits.timeout_s:g} s twice "
                          f"({type(last).__name__}); retry later")

    async def search_codes(self, request: Request) -> dict[str, Any]:
        payload = parse_json(await read_body(request, self.limits.max_body_bytes))
        top, radius = parse_query(payload, self.limits)
        codes = parse_codes(payload, self.searcher.engine.bits, max_queries=self.limits.max_queries)
        return await self.searcher.search(codes, top, radius, names_of(payload, len(codes)))

    async def search_item(self, request: Request) -> dict[str, Any]:
        payload = parse_json(await read_body(request, self.limits.max_body_bytes))
        top, _ = parse_query({"top": payload.get("top")} if isinstance(payload, dict) else None, self.limits)
        item = payload.get("item")
        if isinstance(item, bool) or not isinstance(item, int):
            raise RequestError("item: the integer index of an indexed video (GET /items lists them)")
        return await self.searcher.search_item(item, top)

    async def search_video(self, request: Request) -> dict[str, Any]:
        from c3dhash.cluster.serve.uploads import check_bytes, check_name
        if self.encoder is None:
            raise RequestError("this service runs without an encoder (--encoders 0): query by codes", 404)
        name = check_name(request.query_params.get("name"))
        top = int_param(request, "top", 10, 1, self.limits.max_top)
        data = await read_body(request, self.limits.max_upload_bytes)
        check_bytes(data, max_bytes=self.limits.max_upload_bytes)
        enc = await self.call(self.encoder, "encode", data, "." + name.rsplit(".", 1)[-1].lower())
        if enc["fingerprint"] != self.searcher.fingerprint:  # an encoder started before a model change
            raise Unavailable("the encoder holds another model than the index; retry when it has restarted")
        res = await self.searcher.search(enc["code"], top, None, [name])
        q = res["queries"][0]
        q["thumb"], q["duration_s"] = enc["thumb"], enc["duration_s"]
        if enc["padded"]:
            q["notes"].append("shorter than one clip: padded with its last frame (as in training)")
        return res

    async def reload(self) -> dict[str, Any]:
        """Check the folder now on disk (the model must be the one the service started with) and load it here;
        the other replicas load it before their next answer (IndexSearcher.follow)."""
        self.searcher.follow()  # 409 with the reason when refused; requests wait while it loads, none is lost
        eng = self.searcher.engine
        # no "was": a request may have made this replica load the new folder already (IndexSearcher.follow)
        return {"reloaded": True, "count": len(eng.idx), "version": eng.version, "reloads": self.searcher.reloads}

    async def stats(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms, float)
        pct = {f"p{p}_ms": round(float(np.percentile(lat, p)), 3) if len(lat) else None for p in (50, 99)}
        return {**self.searcher.info(), "requests": dict(self.counts), **pct,
                "limits": {k: getattr(self.limits, k) for k in Limits.__dataclass_fields__}}

    def items(self, request: Request) -> dict[str, Any]:
        offset = int_param(request, "offset", 0, 0, max(0, len(self.idx)))
        limit = int_param(request, "limit", 100, 1, 1000)
        return {"count": len(self.idx), "offset": offset,
                "items": [{"index": i, "path": r.path, "label": r.label, "class": r.class_name}
                          for i, r in enumerate(self.idx.items[offset:offset + limit], start=offset)]}

    async def thumb(self, raw: str) -> Response:
        from c3dhash.cluster.serve.page import item_strip
        if not raw.isdigit() or not 0 <= int(raw) < len(self.idx):
            raise RequestError(f"/thumb/{raw[:20]}: an item index in [0, {len(self.idx) - 1}]", 404)
        png = await asyncio.to_thread(item_strip, self.idx, int(raw))
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=300"})


class Unavailable(RuntimeError):
    """No replica answered in time: 503."""


async def _await(resp: Any) -> Any:
    return await resp


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise RequestError(f"the body is not JSON ({exc})") from None
