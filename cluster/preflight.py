"""Everything the driver can check before Ray starts a worker: one clear line instead of a retried worker crash.

    from c3dhash.cluster.preflight import preflight
    plan = preflight(cfg)          # raises DataError / ConfigError naming the file (and line) or key and the fix
    plan.steps_per_epoch, plan.num_train, plan.num_val

What is checked, in order: the dataset folder; the split manifests (built from the official lists when missing),
read and validated line by line (labels are integers >= 0, one label per class name); the skip list applied
(every training video skipped is an error); the weights file; the codec of one training video against the
decoder the workers will use; and the first epoch's batches, built by the same sampler the workers run
(loaders/sampler.py, no DALI, no Ray). The config's numeric ranges were already checked when it was loaded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from c3dhash.cluster.config import JobConfig
from c3dhash.loaders.manifest import DataError, DataWarning, VideoRecord, read_manifest
from c3dhash.loaders.probe import SKIP_FILE, unsupported_codec
from c3dhash.loaders.sampler import make_sampler
from c3dhash.loaders.splits import build_splits_for, load_split, manifest_path
from c3dhash.loaders.videoio import probe_video
from c3dhash.model.backbone import resolve_weights


@dataclass(frozen=True)
class Plan:
    """What preflight found: sizes the driver prints, and the first epoch's global batches (record indices)."""
    num_train: int
    num_val: int
    steps_per_epoch: int
    first_epoch: tuple[tuple[int, ...], ...]

    @property
    def batch(self) -> int:
        """Clips per global step (P x K: the sampler's batches all have this size)."""
        return len(self.first_epoch[0]) if self.first_epoch else 0


def check_labels(path: Path, records: list[VideoRecord]) -> None:
    """Labels are class indices >= 0 and each class name has one label; errors name the file and line."""
    label_of: dict[str, tuple[int, int]] = {}
    for line, r in enumerate(records, start=2):  # line 1 is the header
        if r.label < 0:
            raise DataError(f"{path}:{line}: label {r.label} of {r.path} must be >= 0 (a class index); fix the "
                            f"line or regenerate the manifests with `c3dhash splits`")
        first = label_of.setdefault(r.class_name, (r.label, line))
        if first[0] != r.label:
            raise DataError(f"{path}:{line}: class {r.class_name!r} has label {r.label} here but {first[0]} on "
                            f"line {first[1]}; fix the line or regenerate the manifests with `c3dhash splits`")


def read_split(cfg: JobConfig, name: str, *, required: bool) -> list[VideoRecord]:
    """One split's records, validated, minus skip.tsv (empty when an optional split has no manifest)."""
    path = manifest_path(cfg.data, name)
    if not required and not path.is_file():
        return []
    records = read_manifest(path)
    check_labels(path, records)
    with warnings.catch_warnings():  # the workers warn about skipped videos; say it once here, in one line
        warnings.simplefilter("ignore", DataWarning)
        kept = load_split(cfg.data, name)  # the loaders' own rule: the same videos the workers will read
    if records and not kept:
        raise DataError(f"{path}: all {len(records)} videos are listed in {path.parent / SKIP_FILE}; fix or "
                        f"replace them (c3dhash check-data lists why) or delete that skip list")
    if required and not kept:
        raise DataError(f"{path}: no videos; regenerate the manifests with `c3dhash splits`")
    if len(kept) < len(records):
        print(f"{name}: {len(records) - len(kept)} of {len(records)} videos skipped "
              f"({path.parent / SKIP_FILE})", flush=True)
    return kept


def check_codec(cfg: JobConfig, records: list[VideoRecord]) -> None:
    """One training video's codec against the decoder the workers will use (CPU workers: VP8/VP9/MJPEG)."""
    device = "cpu" if cfg.data.device == "cpu" or not cfg.cluster.use_gpu else "mixed"
    path = Path(cfg.data.root) / records[0].path
    if not path.is_file():
        raise DataError(f"{path}: video listed in {manifest_path(cfg.data, 'train')} not found; check data.root "
                        f"or run `c3dhash check-data` (it lists missing files in skip.tsv)")
    try:
        codec = probe_video(path).codec
    except Exception:  # noqa: BLE001 - an unreadable file is check-data's business (and the loaders replace it)
        return
    reason = unsupported_codec(codec, device)
    if reason:
        raise DataError(f"{path}: {reason} (CPU workers: cluster.use_gpu=false or data.device=cpu)")


def first_epoch(cfg: JobConfig, records: list[VideoRecord]) -> tuple[tuple[int, ...], ...]:
    """Epoch 0's global batches from the workers' own sampler, for their world size."""
    d, world = cfg.data, cfg.cluster.worker_range[1]
    steps = cfg.train.steps_per_epoch
    sampler = make_sampler([r.label for r in records], sampler=d.sampler, p=d.pk_classes, k=d.pk_samples,
                           batch_size=d.batch_size, world_size=world, seed=d.seed, steps=steps)
    return tuple(tuple(int(i) for i in b) for b in sampler.batches(0))


def preflight(cfg: JobConfig) -> Plan:
    """Fail before any worker starts; returns what the workers will find."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise DataError(f"data.root={cfg.data.root}: dataset folder not found; prepare it (docs/datasets.md) or "
                        f"set --set data.root=DIR (for the demo: c3dhash synth --out {cfg.data.root})")
    if not manifest_path(cfg.data, "train").is_file():
        print(f"no manifests under {manifest_path(cfg.data, 'train').parent}: building them from the official "
              f"split files (c3dhash splits)", flush=True)
        build_splits_for(cfg.data)  # folder: class folders under data.root or data.list_file
    train = read_split(cfg, "train", required=True)
    val = read_split(cfg, "val", required=False)
    resolve_weights(cfg.model.weights, name=cfg.model.backbone)  # the model's own resolver and message
    check_codec(cfg, train)
    batches = first_epoch(cfg, train)
    return Plan(num_train=len(train), num_val=len(val), steps_per_epoch=len(batches), first_epoch=batches)
