"""Raw dataset videos -> constant-frame-rate, short-GOP files at a fixed size that DALI decodes fast.

    c3dhash transcode --src raw/UCF101 --out data/ucf101 --codec h264 --size 128x171 --workers 8
    c3dhash splits --dataset ucf101 --root data/ucf101

    from c3dhash.loaders.transcode import transcode_tree
    summary = transcode_tree("raw/UCF101", "data/ucf101", codec="h264", size=(128, 172))

UCF101 and HMDB-51 ship MPEG-4 Part 2 .avi with long GOPs, which DALI's CPU decoder cannot read. Every video
under --src is decoded, resized (area filter) and re-encoded with a keyframe at least every 16 frames at the
source's average frame rate (frames are duplicated or dropped by timestamp, so the output is
constant-rate), mirroring the tree with the extension swapped (.mp4 for h264, .webm for vp9, .avi for
mjpeg); `c3dhash splits` finds those files from the official lists' .avi names. The split-list .txt files
under --src are copied too.
Odd sizes are rounded up to even (4:2:0 chroma): 128x171 becomes 128x172.

Resumable: each output is written to a temp file beside it (loaders/atomic.py) and renamed when complete, so an
interrupted run never leaves a half file that looks finished; a re-run skips finished outputs and removes the
half files a killed run left. A corrupt, empty or unreadable input
is recorded in <out>/transcode_failures.tsv (source path<TAB>reason) and skipped; the run goes on.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from tqdm import tqdm

from c3dhash.loaders.atomic import atomic_path, atomic_write_text, stale_temps
from c3dhash.loaders.manifest import DataError, tsv_text
from c3dhash.loaders.videoio import CODECS, VIDEO_EXTS, VideoError, codec_ext, open_writer

FAILURES = "transcode_failures.tsv"
COPY_EXTS = (".txt",)  # official split lists travel with the videos


@dataclass(frozen=True)
class TranscodeSummary:
    out: Path
    total: int  # videos found under src
    done: int  # transcoded by this run
    skipped: int  # already finished by an earlier run
    failed: int
    copied: int  # list files copied
    size: tuple[int, int]
    failures_path: Path | None

    def format_summary(self) -> str:
        text = (f"{self.total} videos: {self.done} transcoded, {self.skipped} already done, "
                f"{self.failed} failed -> {self.out} ({self.size[0]}x{self.size[1]}); "
                f"{self.copied} list files copied")
        if self.failures_path:
            text += f"; failures listed in {self.failures_path}"
        return text


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """Round H and W up to even numbers (4:2:0 video); 128x171 -> 128x172."""
    if len(size) != 2 or min(size) < 2:
        raise DataError(f"transcode: size {size}; expected HxW with both >= 2, e.g. 128x171")
    return (size[0] + size[0] % 2, size[1] + size[1] % 2)


def transcode_video(src: str | Path, dst: str | Path, *, codec: str, size: tuple[int, int]) -> int:
    """Re-encode one video to `dst` (atomically: a temp file renamed into place); returns the frames written."""
    height, width = size
    for old in stale_temps(dst):  # a killed earlier run's half file
        old.unlink(missing_ok=True)
    with atomic_path(dst) as tmp:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                raise VideoError(f"{src}: no video stream")
            stream = inp.streams.video[0]
            rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
            out, ostream = open_writer(tmp, codec=codec, width=width, height=height, fps=rate)
            with out:
                written = _encode_cfr(inp.decode(stream), out, ostream, rate, size, CODECS[codec][3])
        if written == 0:
            raise VideoError(f"{src}: no decodable frames")
    return written


def _encode_cfr(frames, out, ostream, rate: Fraction, size: tuple[int, int], pix_fmt: str) -> int:
    """Encode at a constant `rate`: frame time t goes to slot round(t * rate); a gap repeats the previous
    frame (what a player shows meanwhile); a second frame in one slot is dropped."""
    written, t0, prev = 0, None, None
    for frame in frames:
        slot = written
        if frame.time is not None:
            t0 = frame.time if t0 is None else t0
            slot = round((frame.time - t0) * rate)
        if slot < written:
            continue
        # a gap of > 1 s is a broken timestamp, not dropped frames: do not pad it
        repeats = slot - written if slot - written <= rate else 0
        img = frame.reformat(width=size[1], height=size[0], format=pix_fmt, interpolation="AREA")
        for pic in [img] if prev is None else [prev] * repeats + [img]:
            pic.pts, pic.time_base = written, 1 / rate
            out.mux(ostream.encode(pic))
            written += 1
        prev = img
    out.mux(ostream.encode(None))
    return written


def _job(task: tuple[str, str, str, tuple[int, int]]) -> tuple[str, str]:
    """Pool worker: ('', '') on success, (src, reason) on failure; never raises: one bad file must not
    stop the run."""
    src, dst, codec, size = task
    try:
        transcode_video(src, dst, codec=codec, size=size)
        return "", ""
    except Exception as exc:  # noqa: BLE001 - any decoder error on any file is reported, not fatal
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, no tabs
        return src, reason


def plan(src: Path, out: Path, codec: str) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(videos, list files) as (source, destination) pairs, mirroring src under out; out itself is skipped."""
    ext, videos, lists = codec_ext(codec), [], []
    out_abs = out.resolve()
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if (Path(dirpath) / d).resolve() != out_abs)
        for name in sorted(filenames):
            s = Path(dirpath) / name
            rel = s.relative_to(src)
            suffix = s.suffix.lower()
            if suffix in VIDEO_EXTS:
                videos.append((s, out / rel.with_suffix(ext)))
            elif suffix in COPY_EXTS:
                lists.append((s, out / rel))
    return videos, lists


def _write_failures(out: Path, failures: list[tuple[str, str]]) -> Path | None:
    path = out / FAILURES
    if not failures:
        path.unlink(missing_ok=True)  # a stale report from an earlier run would mislead
        return None
    return atomic_write_text(path, tsv_text(sorted(failures)))


def transcode_tree(src: str | Path, out: str | Path, *, codec: str = "h264",
                   size: tuple[int, int] = (128, 172), workers: int | None = None,
                   progress: bool = True) -> TranscodeSummary:
    """Transcode every video under `src` into `out` (same tree); see the module docstring."""
    src, out, size = Path(src), Path(out), even_size((size[0], size[1]))
    codec_ext(codec)
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found; pass the unpacked dataset folder (--src)")
    if src.resolve() == out.resolve():
        raise DataError(f"{out}: --out must differ from --src (outputs would replace the raw videos)")
    videos, lists = plan(src, out, codec)
    if not videos:
        raise DataError(f"{src}: no videos ({', '.join(VIDEO_EXTS)}) found; "
                        f"is this the unpacked dataset folder?")
    collisions: list[tuple[str, str]] = []
    todo, seen = [], set()
    for s, d in videos:
        if d in seen:
            collisions.append((str(s), f"another input already maps to {d}; rename one of them"))
            continue
        seen.add(d)
        if not d.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            todo.append((str(s), str(d), codec, size))
    for s, d in lists:
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, d)
    failed = _run(todo, workers, progress)
    report = _write_failures(out, collisions + failed)
    return TranscodeSummary(out, len(videos), len(todo) - len(failed), len(seen) - len(todo),
                            len(collisions) + len(failed), len(lists), size, report)


def _run(todo: list[tuple], workers: int | None, progress: bool) -> list[tuple[str, str]]:
    """Transcode `todo` over `workers` processes with a progress bar; returns the failures."""
    workers = min(workers or os.cpu_count() or 1, max(1, len(todo)))
    if workers <= 1:
        return _collect(map(_job, todo), len(todo), progress)
    # spawn: the CLI process may already hold torch/ray threads that fork would copy
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return _collect(pool.map(_job, todo, chunksize=4), len(todo), progress)


def _collect(results, total: int, progress: bool) -> list[tuple[str, str]]:
    failures = []
    with tqdm(total=total, desc="transcode", unit="video", disable=not progress) as bar:
        for s, reason in results:
            if s:
                failures.append((s, reason))
                bar.set_postfix(failed=len(failures))
            bar.update()
    return failures
