"""Find videos that cannot be decoded before training meets them; the loaders then skip them.

    c3dhash check-data --config configs/synth-cpu.yaml
    c3dhash check-data --root data/synth --manifest-dir data/synth/manifests/split1 [--no-decode]

    bad = probe_videos(records, root, workers=2)          # [(path, reason)], PyAV + a full DALI decode
    errors = dali_decode_errors(paths, device="mixed", device_id=rank_gpu)   # one pipeline, 8 files a run
    write_skip_list(manifest_dir, bad)                    # <manifest_dir>/skip.tsv: path<TAB>reason
    records = filter_records(records, manifest_dir)       # what the loaders do: drop skip.tsv entries

Every file is opened once with PyAV (container, video stream, frame count by demuxing, codec), then decoded
in full by DALI on the device training will use: DALI is what training runs, so only a DALI decode guarantees
that training will not meet a file it cannot read. Frames are counted from packets (no decoding) because
WebM stores no frame count; it matches what DALI's frame index counts.
"""
from __future__ import annotations

import csv
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np
from tqdm import tqdm

from c3dhash.loaders.atomic import atomic_write_text
from c3dhash.loaders.manifest import DataError, DataWarning, VideoRecord, tsv_text
from c3dhash.loaders.videoio import probe_video

SKIP_FILE = "skip.tsv"
SKIP_HEADER = ("path", "reason")
CPU_CODECS = ("vp8", "vp9", "mjpeg")  # what DALI decodes on CPU; NVDEC adds h264, hevc, av1, mpeg4
DECODE_BATCH = 8  # files fully decoded per DALI iteration by check-data (bounded memory: whole videos)


def decode_device(requested: str, device_id: int | None) -> str:
    """DALI decoder backend: "mixed" (NVDEC) when CUDA is usable and wanted, "cpu" otherwise."""
    import torch  # local: probing on CPU should not pay for CUDA initialisation at import time

    cuda = device_id is not None and torch.cuda.is_available()
    if requested == "gpu" and not cuda:
        raise DataError("data.device=gpu but no CUDA device is visible to this worker; "
                        "set data.device=auto or cpu (CPU decodes VP9/MJPEG only)")
    return "mixed" if cuda and requested in ("auto", "gpu") else "cpu"


def unsupported_codec(codec: str, device: str) -> str:
    """A reason string when DALI on `device` cannot decode `codec`, else ""."""
    if device == "cpu" and codec not in CPU_CODECS:
        return (f"codec {codec} is not decodable by DALI on CPU ({'/'.join(CPU_CODECS)} only); "
                f"transcode with `c3dhash transcode` or train on GPU")
    return ""


def _pyav_reason(path: Path, device: str) -> str:
    try:  # from the bytes, as the training loader does (and the reason need not repeat the path)
        info = probe_video(path.read_bytes())
    except (OSError, av.FFmpegError, DataError) as exc:  # av.error.* derive from these
        return f"cannot open with PyAV: {exc}".replace("\t", " ").replace("\n", " ")
    if info.frames == 0:
        return "no video frames"
    return unsupported_codec(info.codec, device)


def dali_decode_errors(paths: Sequence[Path], *, device: str = "cpu", device_id: int | None = None,
                       num_threads: int = 2, batch_size: int = DECODE_BATCH,
                       done: Callable[[int], object] | None = None) -> dict[str, str]:
    """Decode every frame of each file with DALI; {path: reason} for those that fail.

    One pipeline serves every batch of `batch_size` files; only a batch that fails is decoded again file by
    file (a failed batch does not say which sample failed) and the pipeline is rebuilt after it. `done(n)` is
    called after each batch of n files (a progress bar). `device_id` is the caller's own GPU for "mixed" (the
    rank's device under Ray Train, where every worker of a node sees all of the node's GPUs), never GPU 0.
    """
    out: dict[str, str] = {}
    pipe = None
    for i in range(0, len(paths), batch_size):
        chunk = list(paths[i:i + batch_size])
        if pipe is None:
            pipe = _decode_pipeline(batch_size=min(batch_size, len(paths)), device=device, device_id=device_id,
                                    num_threads=num_threads)
        try:
            pipe.feed_input("enc", [np.fromfile(p, dtype=np.uint8) for p in chunk])
            pipe.run()
        except RuntimeError as exc:
            pipe = None  # a pipeline that raised is not reused
            if len(chunk) == 1:
                out[str(chunk[0])] = "DALI cannot decode it: " + _first_line(exc)
            else:
                for p in chunk:
                    out.update(dali_decode_errors([p], device=device, device_id=device_id,
                                                  num_threads=num_threads, batch_size=1))
        if done is not None:
            done(len(chunk))
    return out


def _first_line(exc: BaseException) -> str:
    """The useful line of a DALI error: what the operator 'encountered', without the C++ assert wrapper."""
    text = str(exc)
    after = text.split("encountered:", 1)[-1].strip().splitlines()
    line = after[0] if after else text.strip()
    return line.split("failed: ", 1)[-1][:200].replace("\t", " ")


def _decode_pipeline(*, batch_size: int, device: str, device_id: int | None, num_threads: int):
    """A built DALI pipeline that fully decodes up to `batch_size` fed files ("enc") on `device`."""
    from c3dhash.loaders.dali import dali
    fn, pipeline_def, types = dali()  # local: importing DALI is slow; an extra (c3dhash[dali])

    @pipeline_def(batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id if device == "mixed" else None, prefetch_queue_depth=1)
    def decode_all():
        encoded = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
        return fn.decoders.video(encoded, device=device)

    pipe = decode_all()
    pipe.build()
    return pipe


def probe_videos(records: Sequence[VideoRecord], root: str | Path, *, workers: int = 2, device: str = "cpu",
                 device_id: int | None = None, decode: bool = True) -> list[tuple[str, str]]:
    """Probe each distinct file once; [(relative path, reason)] for the bad ones, in record order."""
    root = Path(root)
    paths = list(dict.fromkeys(r.path for r in records))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = pool.map(lambda rel: _missing(root / rel) or _pyav_reason(root / rel, device), paths)
        bad = {rel: why for rel, why in zip(paths, tqdm(reasons, total=len(paths), desc="open", unit="video"))
               if why}
    if decode:
        good = [root / rel for rel in paths if rel not in bad]
        with tqdm(total=len(good), desc=f"decode (DALI {device})", unit="video") as bar:
            errors = dali_decode_errors(good, device=device, device_id=device_id, num_threads=max(1, workers),
                                        done=bar.update)
        for path, why in errors.items():
            bad[Path(path).relative_to(root).as_posix()] = why
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
               device_id: int | None = None, decode: bool = True) -> tuple[int, list[tuple[str, str]], Path]:
    """Probe every file named by the manifests in `manifest_dir` and write skip.tsv there.

    Returns (number of distinct files, [(path, reason)], path of skip.tsv). When every file is bad, nothing
    is written (a skip list naming the whole split would empty it for training, and the cause is nearly
    always the setup: a wrong root, or H.264 files checked against the CPU decoder) and DataError says so.
    """
    from c3dhash.loaders.manifest import read_manifest

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found; pass --root (or data.root) pointing at the videos")
    records = [r for f in manifest_files(manifest_dir) for r in read_manifest(f)]
    bad = probe_videos(records, root, workers=workers, device=device, device_id=device_id, decode=decode)
    n = len({r.path for r in records})
    if n and len(bad) == n:
        raise DataError(f"{root}: all {n} videos of {manifest_dir} failed the check (first: {bad[0][0]}: "
                        f"{bad[0][1]}); skip.tsv left unchanged. Check --root/data.root, and for H.264 on a "
                        f"machine without a GPU pass --device gpu --no-decode")
    return n, bad, write_skip_list(manifest_dir, bad)
