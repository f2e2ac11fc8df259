"""Data configuration (owned by loaders/, composed into the job config by cluster/)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SEED_MEAN = (0.434, 0.405, 0.378)
SEED_STD = (0.152, 0.149, 0.157)
# The choices, checked by the config loader (cluster/config.py) and used as CLI choices (typing.get_args).
Dataset = Literal["ucf101", "hmdb51", "jhmdb", "synth", "folder"]  # folder: your own videos
Sampler = Literal["random", "pk", "video"]  # video: self-supervised, P videos x K clips, labels = video ids
Device = Literal["auto", "cpu", "gpu"]  # auto = NVDEC when CUDA is present


@dataclass(frozen=True)
class DataConfig:
    dataset: Dataset = "synth"
    root: str = "data/synth"  # folder holding the videos (and, for synth/ucf101, ucfTrainTestlist/)
    split: int = 1  # official split number 1..3
    manifest_dir: str = ""  # "" = <root>/manifests/split<split>
    val_per_class: int = 2  # validation videos carved from train, per class (deterministic)
    list_file: str = ""  # folder dataset: a 'path,label' CSV/TSV instead of class folders under root
    test_fraction: float = 0.3  # folder dataset: share of each class's videos (or groups) that go to test
    group: str = ""  # folder dataset: a regex whose match (first capture group) keeps a group on one side
    num_frames: int = 16
    stride: int = 1  # frame step inside a clip
    resize: tuple[int, int] = (128, 171)  # H, W before cropping
    crop: tuple[int, int] = (112, 112)
    clips_per_video: int = 1  # eval: clips spread uniformly over each video
    batch_size: int = 16  # clips per rank per step (sampler: random)
    sampler: Sampler = "pk"
    pk_classes: int = 8  # P: classes per global batch (sampler: pk); videos per global batch (sampler: video)
    pk_samples: int = 4  # K: clips per class per global batch (sampler: pk); clips per video (sampler: video)
    flip: bool = True
    colour_jitter: float = 0.0  # train: brightness/contrast/saturation factors drawn from [1 - s, 1 + s] (0 = off)
    mean: tuple[float, float, float] = SEED_MEAN
    std: tuple[float, float, float] = SEED_STD
    num_threads: int = 2  # DALI CPU threads per pipeline
    device: Device = "auto"
    seed: int = 0
