"""The results page of `c3dhash show`: static HTML (thumbnails inlined, no server) and a PNG contact sheet.

    c3dhash show --index runs/synth.index --video q.webm --top 5 --out runs/results.html   # + results.png

Per query one row: a strip of frames of the query (blue mark), then each of its top K with rank, Hamming
distance, class and a mark: green = same label as the query, red = another label, grey = unknown (a query
outside the index's class folders). The marks are solid squares of exactly MARK_COLOURS, so a screenshot can
be checked by counting them (tests/test_show.py renders the page in headless Chromium).
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image, ImageDraw

from c3dhash.eval.index.folder import VideoIndex
from c3dhash.eval.index.query import Query
from c3dhash.loaders.atomic import atomic_write, atomic_write_text

MARK_COLOURS = {"query": (0, 80, 255), "same": (0, 176, 0), "diff": (224, 0, 0), "unknown": (150, 150, 150)}
THUMB_H = 48  # pixels per frame in a strip


def frame_strip(path: str | None, *, frames: int = 4, height: int = THUMB_H) -> np.ndarray:
    """`frames` frames spread over the video, side by side, uint8 [height, W, 3]; a grey block if unreadable."""
    try:
        if path is None:
            raise FileNotFoundError
        with av.open(path) as c:
            allf = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        if not allf:
            raise ValueError("no frames")
    except Exception:  # noqa: BLE001 - a missing or broken file shows as a grey tile, the page still renders
        return np.full((height, height * frames, 3), 90, np.uint8)
    picks = np.linspace(0, len(allf) - 1, frames).round().astype(int)
    h, w = allf[0].shape[:2]
    width = max(1, round(w * height / h))
    return np.concatenate([np.asarray(Image.fromarray(allf[i]).resize((width, height), Image.Resampling.BILINEAR))
                           for i in picks], axis=1)


def png_bytes(img: np.ndarray | Image.Image) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format="PNG")
    return buf.getvalue()


def kind(q: Query, label: int) -> str:
    return "unknown" if q.label < 0 or label < 0 else "same" if label == q.label else "diff"


CSS = """body{font-family:sans-serif;background:#fff;color:#222;margin:16px}
.row{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 18px 0;padding:8px;border-bottom:1px solid #ddd}
.tile{border:1px solid #ccc;padding:6px;background:#fafafa;font-size:12px;max-width:260px}
.tile img{display:block;image-rendering:pixelated}
.mark{display:inline-block;width:16px;height:16px;vertical-align:middle;margin-right:6px}
.path{color:#666;word-break:break-all}
""" + "".join(f".{k} .mark{{background:rgb{c}}}\n" for k, c in MARK_COLOURS.items())


def _tile(cls: str, strip: np.ndarray, title: str, path: str) -> str:
    src = base64.b64encode(png_bytes(strip)).decode()
    return (f'<div class="tile {cls}"><img src="data:image/png;base64,{src}" alt="">'
            f'<div><span class="mark"></span>{html.escape(title)}</div>'
            f'<div class="path">{html.escape(path)}</div></div>')


def render_html(idx: VideoIndex, queries: Sequence[Query], strips: dict[str, np.ndarray]) -> str:
    rows = []
    for q in queries:
        label = q.class_name if q.label >= 0 else "label unknown"
        tiles = [_tile("query", strips["q:" + q.name], f"query: {label}", q.name)]
        for r, (j, d) in enumerate(zip(q.indices, q.distances)):
            item = idx.items[j]
            title = f"#{r + 1}  d={int(d)}  {item.class_name}"
            tiles.append(_tile(kind(q, item.label), strips["i:" + item.path], title, item.path))
        rows.append(f'<div class="row">{"".join(tiles)}</div>')
    head = (f"<h1>c3dhash results</h1><p>index {html.escape(str(idx.path))}: {len(idx)} videos, {idx.bits} bits; "
            f"green = same label as the query, red = another label, grey = unknown; d = Hamming distance</p>")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>c3dhash results</title>'
            f"<style>{CSS}</style></head><body>{head}{''.join(rows)}</body></html>\n")


def contact_sheet(idx: VideoIndex, queries: Sequence[Query], strips: dict[str, np.ndarray]) -> Image.Image:
    """One row per query: the query strip then its top K, each framed in its mark colour, distance below."""
    pad, cap, border = 8, 14, 4
    rows = [[(MARK_COLOURS["query"], strips["q:" + q.name], "query")] +
            [(MARK_COLOURS[kind(q, idx.items[j].label)], strips["i:" + idx.items[j].path], f"#{r + 1} d={int(d)}")
             for r, (j, d) in enumerate(zip(q.indices, q.distances))] for q in queries]
    width = max(sum(s.shape[1] + 2 * border + pad for _, s, _ in row) for row in rows) + pad
    row_h = THUMB_H + 2 * border + cap + pad
    sheet = Image.new("RGB", (width, pad + row_h * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        x, y = pad, pad + r * row_h
        for colour, strip, text in row:
            w = strip.shape[1] + 2 * border
            draw.rectangle([x, y, x + w - 1, y + THUMB_H + 2 * border - 1], fill=colour)
            sheet.paste(Image.fromarray(strip), (x + border, y + border))
            draw.text((x, y + THUMB_H + 2 * border + 1), text, fill=(0, 0, 0))
            x += w + pad
    return sheet


def write_page(out: str | Path, idx: VideoIndex, queries: Sequence[Query], *, frames: int = 4) -> tuple[Path, Path]:
    """results.html and results.png (beside it), each written atomically."""
    strips: dict[str, np.ndarray] = {}
    for q in queries:
        strips.setdefault("q:" + q.name, frame_strip(q.video, frames=frames))
        for j in q.indices:
            path = idx.items[j].path
            if "i:" + path not in strips:
                strips["i:" + path] = frame_strip(str(idx.root / path), frames=frames)
    out = Path(out)
    png = out.with_suffix(".png")
    sheet = png_bytes(contact_sheet(idx, queries, strips))
    atomic_write_text(out, render_html(idx, queries, strips))
    atomic_write(png, lambda f: f.write(sheet))
    return out, png
