"""What an uploaded query video must be before any decoder sees it: a plain name with a video extension,
not empty, under the size limit, a video container by its first bytes, then (once written to a private temp
file under a name the service chooses) a decodable video stream under the duration limit.

The client's file name is used for its extension and as the query's display name only; it never becomes a
path. Every refusal is a RequestError with a 4xx status and one line that says what to change.
"""
from __future__ import annotations

import re

from c3dhash.cluster.serve.engine import RequestError
from c3dhash.loaders.videoio import VIDEO_EXTS

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ ()+-]{0,199}\Z")
MAGIC = {  # container signatures: the first bytes of each format VIDEO_EXTS names
    "matroska/webm": lambda b: b[:4] == b"\x1a\x45\xdf\xa3",
    "mp4/mov": lambda b: b[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"),
    "avi": lambda b: b[:4] == b"RIFF" and b[8:12] == b"AVI ",
    "mpeg": lambda b: b[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3") or b[:1] == b[188:189] == b"\x47",
}
LOOKS_LIKE = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image",
              b"%PDF": "a PDF", b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "a gzip file"}


def check_name(name: str | None) -> str:
    """The upload's display name: a plain file name (no folders, no '..') with a video extension."""
    if not name:
        raise RequestError(f"name the upload: POST /search/video?name=clip.mp4 (one of {', '.join(VIDEO_EXTS)})")
    if "/" in name or "\\" in name or ".." in name or not NAME.match(name):
        raise RequestError(f"name {name[:60]!r}: a plain file name (letters, digits, . _ - space), no folders")
    ext = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in VIDEO_EXTS:
        raise RequestError(f"name {name!r}: only video files are accepted ({', '.join(VIDEO_EXTS)})", 415)
    return name


def check_bytes(data: bytes, *, max_bytes: int) -> str:
    """The container family of `data` by its signature, or a 4xx."""
    if not data:
        raise RequestError("empty upload: send the video file's bytes as the request body")
    if len(data) > max_bytes:
        raise RequestError(f"upload of {len(data)} bytes is over the {max_bytes} byte limit", 413)
    for family, test in MAGIC.items():
        if test(data[:512]):
            return family
    what = next((v for k, v in LOOKS_LIKE.items() if data.startswith(k)), "not a video container")
    raise RequestError(f"the upload is {what}, not a video container (webm, mkv, mp4, mov, avi, mpeg)", 415)


def check_video(data: bytes, *, max_duration_s: float) -> float:
    """Probe the bytes (PyAV demux, no decode): a video stream and its duration under the limit."""
    from c3dhash.loaders.videoio import probe_video
    try:
        info = probe_video(data)
    except Exception as exc:  # noqa: BLE001 - any demux failure is the upload's fault: say so, no traceback
        raise RequestError(f"cannot read the upload as a video ({' '.join(str(exc).split())[:200]})", 422) from None
    if info.frames == 0:
        raise RequestError("the upload holds no video frames", 422)
    duration = info.frames / info.fps if info.fps else 0.0
    if duration > max_duration_s:
        raise RequestError(f"the video is {duration:.1f} s long; the limit is {max_duration_s:g} s: cut it", 413)
    return duration
