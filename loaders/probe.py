"""Find videos that cannot be decoded before training meets them; the loaders then skip them.

    c3dhash check-data --config configs/synth-cpu.yaml
    c3dhash check-data --root data/synth --manifest-dir data/synth/manifests/split1 [--no-decode]

    bad = probe_videos(records, root, workers=2)          # [(path, reason)], PyAV + a full DALI decode
    write_skip_list(manifest_dir, bad)                    # <manifest_dir>/skip.tsv: path<TAB>reason
    records = filter_records(records, manifest_dir)       # what the loaders do: drop skip.tsv entries

Every file is opened once with PyAV (container, video stream, frame count by demuxing, codec), then decoded
in full by DALI on the device training will use: DALI is what training runs, so only a DALI decode guarantees
that training will not meet a file it cannot read. Frames are counted from packets (no decoding) because
WebM stores no frame count; it matches what DALI's frame index counts.
"""
from __future__ import annotations

import csv
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from tqdm import tqdm

from loaders.atomic import atomic_write_text
from loaders.manifest import DataError, DataWarning, VideoRecord, tsv_text

SKIP_FILE = "skip.tsv"
SKIP_HEADER = ("path", "reason")
CPU_CODECS = ("vp8", "vp9", "mjpeg")  # what DALI decodes on CPU; NVDEC adds h264, hevc, av1, mpeg4


def decode_device(requested: str, device_id: int | None) -> str:
    """DALI decoder backend: "mixed" (NVDEC) when CUDA is usable and wanted, "cpu" otherwise."""
    import torch  # local: probing on CPU should not pay for CUDA initialisation at import time

    cuda = device_id is not None and torch.cuda.is_available()
    if requested == "gpu" and not cuda:
        raise DataError("data.device=gpu but no CUDA device is visible to this worker; "
                        "set data.device=auto or cpu (CPU decodes VP9/MJPEG only)")
    return "mixed" if cuda and requested in ("auto", "gpu") else "cpu"


def video_info(source: str | Path | bytes) -> tuple[int, str]:
    """(frame count, codec name) of the first video stream, from a path or the file's bytes."""
    target = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with av.open(target) as container:
        if not container.streams.video:
            raise DataError("no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        frames = sum(1 for packet in container.demux(stream) if packet.size)
    return frames, codec


def unsupported_codec(codec: str, device: str) -> str:
    """A reason string when DALI on `device` cannot decode `codec`, else ""."""
    if device == "cpu" and codec not in CPU_CODECS:
        return (f"codec {codec} is not decodable by DALI on CPU ({'/'.join(CPU_CODECS)} only); "
                f"transcode with `c3dhash transcode` or train on GPU")
    return ""


def _pyav_reason(path: Path, device: str) -> str:
    try:
        frames, codec = video_info(path)
    except (OSError, av.FFmpegError, DataError) as exc:  # av.error.* derive from these
        return f"cannot open with PyAV: {exc}".replace("\t", " ").replace("\n", " ")
    if frames == 0:
        return "no video frames"
    return unsupported_codec(codec, device)


def dali_decode_errors(paths: Sequence[Path], *, device: str = "cpu", num_threads: int = 2) -> dict[str, str]:
    """Decode every frame of each file with DALI; {path: reason} for those that fail."""
    if not paths:
        return {}
    try:
        _dali_decode_all(paths, device=device, num_threads=num_threads)
        return {}
    except RuntimeError as exc:
        if len(paths) == 1:
            return {str(paths[0]): "DALI cannot decode it: " + _first_line(exc)}
    # A failed batch does not say which sample failed: retry one by one (rare path).
    out: dict[str, str] = {}
    for p in paths:
        out.update(dali_decode_errors([p], device=device, num_threads=num_threads))
    return out


def _first_line(exc: BaseException) -> str:
    """The useful line of a DALI error: what the operator 'encountered', without the C++ assert wrapper."""
    text = str(exc)
    after = text.split("encountered:", 1)[-1].strip().splitlines()
    line = after[0] if after else text.strip()
    return line.split("failed: ", 1)[-1][:200].replace("\t", " ")


def _dali_decode_all(paths: Sequence[Path], *, device: str, num_threads: int) -> None:
    from nvidia.dali import fn, pipeline_def, types  # local: DALI starts threads; PyAV-only use stays light

    @pipeline_def(batch_size=len(paths), num_threads=num_threads, device_id=0 if device == "mixed" else None,
                  prefetch_queue_depth=1)
    def decode_all():
        encoded = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
        return fn.decoders.video(encoded, device=device)

    pipe = decode_all()
    pipe.build()
    pipe.feed_input("enc", [np.fromfile(p, dtype=np.uint8) for p in paths])
    pipe.run()


def probe_videos(records: Sequence[VideoRecord], root: str | Path, *, workers: int = 2, device: str = "cpu",
                 decode: bool = True) -> list[tuple[str, str]]:
    """Probe each distinct file once; [(relative path, reason)] for the bad ones, in record order."""
    root, step = Path(root), max(1, workers)
    paths = list(dict.fromkeys(r.path for r in records))
    with ThreadPoolExecutor(max_workers=step) as pool:
        reasons = pool.map(lambda rel: _missing(root / rel) or _pyav_reason(root / rel, device), paths)
        bad = {rel: why for rel, why in zip(paths, tqdm(reasons, total=len(paths), desc="open", unit="video"))
               if why}
    if decode:
        good = [rel for rel in paths if rel not in bad]
        with tqdm(total=len(good), desc=f"decode (DALI {device})", unit="video") as bar:
            for i in range(0, len(good), step):
                chunk = good[i:i + step]
                for path, why in dali_decode_errors([root / r for r in chunk], device=device,
                                                    num_threads=step).items():
                    bad[Path(path).relative_to(root).as_posix()] = why
                bar.update(len(chunk))
    return [(rel, bad[rel]) for rel in paths if rel in bad]


def _missing(path: Path) -> str:
    return "" if path.is_file() else "file not found"


def write_skip_list(manifest_dir: str | Path, bad: Sequence[tuple[str, str]]) -> Path:
    """Write <manifest_dir>/skip.tsv atomically (an empty list still writes the header: checked, all good)."""
    return atomic_write_text(Path(manifest_dir) / SKIP_FILE, tsv_text([SKIP_HEADER, *bad]))


def load_skip_list(manifest_dir: str | Path) -> set[str]:
    """Paths listed in <manifest_dir>/skip.tsv; empty when the file does not exist."""
    p = Path(manifest_dir) / SKIP_FILE
    if not p.is_file():
        return set()
    with p.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    out = set()
    for i, row in enumerate(rows, start=1):
        if i == 1 and tuple(row) == SKIP_HEADER or not row:
            continue
        if len(row) != 2:
            raise DataError(f"{p}:{i}: expected path<TAB>reason, got {row!r}; "
                            f"rerun `c3dhash check-data` or delete the file")
        out.add(row[0])
    return out


def filter_records(records: Sequence[VideoRecord], manifest_dir: str | Path) -> list[VideoRecord]:
    """Drop the records listed in skip.tsv, warning with the count and the file."""
    skip = load_skip_list(manifest_dir)
    kept = [r for r in records if r.path not in skip]
    if len(kept) < len(records):
        warnings.warn(f"skipping {len(records) - len(kept)} video(s) listed in {Path(manifest_dir) / SKIP_FILE}",
                      DataWarning, stacklevel=2)
    return kept


def manifest_files(manifest_dir: str | Path) -> list[Path]:
    """The split manifests in a folder (every *.tsv except skip.tsv)."""
    d = Path(manifest_dir)
    files = sorted(p for p in d.glob("*.tsv") if p.name != SKIP_FILE)
    if not files:
        raise DataError(f"{d}: no manifests (*.tsv) found; "
                        f"run `c3dhash splits --dataset ... --root ...` first")
    return files


def check_data(*, root: str | Path, manifest_dir: str | Path, workers: int = 2, device: str = "cpu",
               decode: bool = True) -> tuple[int, list[tuple[str, str]], Path]:
    """Probe every file named by the manifests in `manifest_dir` and write skip.tsv there.

    Returns (number of distinct files, [(path, reason)], path of skip.tsv).
    """
    from loaders.manifest import read_manifest

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found; pass --root (or data.root) pointing at the videos")
    records = [r for f in manifest_files(manifest_dir) for r in read_manifest(f)]
    bad = probe_videos(records, root, workers=workers, device=device, decode=decode)
    return len({r.path for r in records}), bad, write_skip_list(manifest_dir, bad)
