"""The results page of `c3dhash show`: static HTML (thumbnails inlined, no server) and a PNG contact sheet.

    c3dhash show --index runs/synth.index --video q.webm --top 5 --out runs/results.html   # + results.png

Each picture links to its video and fits its tile at any aspect ratio; thumbnails seek to the frames they show,
so memory stays flat however long the videos are. Per query one row: a strip of frames of the query (blue mark),
then each of its top K with rank, Hamming distance, class and a mark: green = same label as the query, red =
another label, grey = unknown (a query outside the index's class folders). The marks are solid squares of
exactly MARK_COLOURS, so a screenshot can be checked by counting them (tests/test_show.py renders the page in
headless Chromium).
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import av
import numpy as np
from PIL import Image, ImageDraw

from c3dhash.eval.index.folder import VideoIndex
from c3dhash.eval.index.query import Query
from c3dhash.loaders.atomic import atomic_write, atomic_write_text

MARK_COLOURS = {"query": (0, 80, 255), "same": (0, 176, 0), "diff": (224, 0, 0), "unknown": (150, 150, 150)}
THUMB_H = 48  # pixels per frame in a strip


def _thumb(frame: av.VideoFrame, height: int) -> np.ndarray:
    img = frame.to_image()
    width = max(1, round(img.width * height / img.height))
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR))


def _frame_count(c: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Frames in the stream: the container's count, else duration x frame rate; 0 when unknown."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate
    if rate and stream.duration and stream.time_base:
        return int(round(float(stream.duration * stream.time_base * rate)))
    if rate and c.duration:
        return int(round(c.duration / av.time_base * float(rate)))
    return 0


def _seek_picks(c, stream, picks: np.ndarray, height: int) -> list[np.ndarray] | None:
    """Frame `i` for each pick by seeking to the keyframe before it and decoding forward to its timestamp: only
    the shown frames are kept, so memory does not grow with the video's length. None where timestamps fail."""
    rate, tb = stream.average_rate, stream.time_base
    if not rate or not tb:
        return None
    start = stream.start_time or 0
    step = 1 / (rate * tb)  # timestamp units per frame
    out = []
    for i in picks.tolist():
        target = start + int(round(i * step))
        c.seek(target, stream=stream, backward=True, any_frame=False)
        got = None
        for f in c.decode(stream):
            if f.pts is None:
                return None
            if f.pts + step / 2 >= target:  # the first frame at (or within half a frame of) the target
                got = f
                break
        if got is None:
            return None
        out.append(_thumb(got, height))
    return out


def _scan_picks(path: str, picks: np.ndarray, height: int) -> list[np.ndarray]:
    """Without usable timestamps: one sequential decode that keeps only the picked frames."""
    wanted, out = set(picks.tolist()), {}
    with av.open(path) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = _thumb(f, height)
    return [out[i] for i in picks.tolist() if i in out]


def frame_strip(path: str | None, *, frames: int = 4, height: int = THUMB_H) -> np.ndarray:
    """`frames` frames spread evenly over the video (frame round(k (N-1) / (frames-1))), side by side, uint8
    [height, W, 3]; a grey block if unreadable. Decodes only up to the shown frames (seek), not the video."""
    try:
        if path is None:
            raise FileNotFoundError
        with av.open(path) as c:
            stream = c.streams.video[0]
            n = _frame_count(c, stream)
            if n < 1:
                n = sum(1 for _ in c.decode(stream))  # no count in the container: count once, keep nothing
            picks = np.linspace(0, n - 1, frames).round().astype(int)
            shots = _seek_picks(c, stream, picks, height)
        if shots is None or len(shots) < frames:
            shots = _scan_picks(path, picks, height)
        if not shots:
            raise ValueError("no frames")
    except Exception:  # noqa: BLE001 - a missing or broken file shows as a grey tile, the page still renders
        return np.full((height, height * frames, 3), 90, np.uint8)
    return np.concatenate(shots, axis=1)


def png_bytes(img: np.ndarray | Image.Image) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format="PNG")
    return buf.getvalue()


def kind(q: Query, label: int) -> str:
    return "unknown" if q.label < 0 or label < 0 else "same" if label == q.label else "diff"


CSS = """body{font-family:sans-serif;background:#fff;color:#222;margin:16px}
.row{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 18px 0;padding:8px;border-bottom:1px solid #ddd}
.tile{border:1px solid #ccc;padding:6px;background:#fafafa;font-size:12px;width:260px;box-sizing:border-box}
.tile a{display:block}
.tile img{display:block;width:100%;height:auto;object-fit:contain;image-rendering:pixelated}
.mark{display:inline-block;width:16px;height:16px;vertical-align:middle;margin-right:6px}
.path{color:#666;word-break:break-all}
""" + "".join(f".{k} .mark{{background:rgb{c}}}\n" for k, c in MARK_COLOURS.items())


def _tile(cls: str, strip: np.ndarray, title: str, path: str, href: str | None) -> str:
    """A tile: the strip scaled to the tile's width whatever the video's aspect ratio, linked to the video."""
    src = base64.b64encode(png_bytes(strip)).decode()
    img = f'<img src="data:image/png;base64,{src}" alt="{html.escape(path)}">'
    if href:
        img = f'<a href="{html.escape(href)}" title="open the video">{img}</a>'
    return (f'<div class="tile {cls}">{img}<div><span class="mark"></span>{html.escape(title)}</div>'
            f'<div class="path">{html.escape(path)}</div></div>')


def link(video: str | Path | None, page_dir: Path) -> str | None:
    """The video's address from the page: relative to its folder (the page and the videos move together),
    else a file:// URI."""
    if video is None:
        return None
    video = Path(video).absolute()
    try:
        return quote(os.path.relpath(video, page_dir.absolute()).replace(os.sep, "/"))
    except ValueError:  # another drive (Windows)
        return video.as_uri()


def render_html(idx: VideoIndex, queries: Sequence[Query], strips: dict[str, np.ndarray],
                page_dir: Path | None = None) -> str:
    rows = []
    page_dir = page_dir or Path(".")
    for q in queries:
        label = q.class_name if q.label >= 0 else "label unknown"
        tiles = [_tile("query", strips["q:" + q.name], f"query: {label}", q.name, link(q.video, page_dir))]
        for r, (j, d) in enumerate(zip(q.indices, q.distances)):
            item = idx.items[j]
            title = f"#{r + 1}  d={int(d)}  {item.class_name}"
            tiles.append(_tile(kind(q, item.label), strips["i:" + item.path], title, item.path,
                               link(idx.root / item.path, page_dir)))
        rows.append(f'<div class="row">{"".join(tiles)}</div>')
    head = (f"<h1>c3dhash results</h1><p>index {html.escape(str(idx.path))}: {len(idx)} videos, {idx.bits} bits; "
            f"green = same label as the query, red = another label, grey = unknown; d = Hamming distance; "
            f"click a picture to open its video</p>")
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
    atomic_write_text(out, render_html(idx, queries, strips, out.parent))
    atomic_write(png, lambda f: f.write(sheet))
    return out, png
