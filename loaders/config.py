"""Data configuration (owned by loaders/, composed into the job config by cluster/).

Bounds sit next to their fields (`metadata`: operator -> bound, each value of a tuple); cluster/config.py
checks them when the job config loads, so nonsense such as a negative lr fails there, not in a worker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    split: int = field(default=1, metadata={">=": 1, "<=": 3})  # official split number 1..3
    manifest_dir: str = ""  # "" = <root>/manifests/split<split>
    # validation videos carved from train, per class (deterministic)
    val_per_class: int = field(default=2, metadata={">=": 0})
    list_file: str = ""  # folder dataset: a 'path,label' CSV/TSV instead of class folders under root
    # folder dataset: share of each class's videos (or groups) that go to test
    test_fraction: float = field(default=0.3, metadata={">=": 0, "<": 1})
    group: str = ""  # folder dataset: a regex whose match (first capture group) keeps a group on one side
    num_frames: int = field(default=16, metadata={">=": 1})
    stride: int = field(default=1, metadata={">=": 1})  # frame step inside a clip
    resize: tuple[int, int] = field(default=(128, 171), metadata={">=": 1})  # H, W before cropping
    crop: tuple[int, int] = field(default=(112, 112), metadata={">=": 1})
    clips_per_video: int = field(default=1, metadata={">=": 1})  # eval: clips spread uniformly over each video
    # eval: each clip also decoded mirrored left-right and a video's output is the mean of both, so a mirrored
    # copy gets the same code (near-duplicate search); off where left vs right is a class (the synthetic set)
    eval_flip: bool = False
    batch_size: int = field(default=16, metadata={">=": 1})  # clips per rank per step (sampler: random)
    sampler: Sampler = "pk"
    # P: classes per global batch (sampler: pk; 0 = every class of the split); videos per global batch (video)
    pk_classes: int = field(default=8, metadata={">=": 0})
    # K: clips per class per global batch (sampler: pk); clips per video (sampler: video)
    pk_samples: int = field(default=4, metadata={">=": 1})
    flip: bool = True
    # train: brightness/contrast/saturation factors drawn from [1 - s, 1 + s] (0 = off)
    colour_jitter: float = field(default=0.0, metadata={">=": 0, "<": 1})
    # train: zoom, each frame resized by a factor drawn from [1, 1 + z] before the crop (0 = off): a copy that
    # was cropped and rescaled shows the same content larger
    zoom_jitter: float = field(default=0.0, metadata={">=": 0, "<=": 1})
    # train (sampler video): a video's 2nd, 4th, ... clips of a batch play backwards, as an identity of their own,
    # so its forward clips have the same look with the opposite motion as negatives: codes must carry the
    # direction of motion, not only appearance (needs data.pk_samples even and >= 4)
    reverse_negatives: bool = False
    # train (with reverse_negatives): a video's last two clips of a batch become its frames held still (the first
    # frame repeated) and shuffled, each an identity of its own: its look without its motion as negatives
    # (needs data.pk_samples even and >= 6, data.num_frames >= 4)
    frame_negatives: bool = False
    mean: tuple[float, float, float] = field(default=SEED_MEAN, metadata={">=": 0, "<=": 1})
    std: tuple[float, float, float] = field(default=SEED_STD, metadata={">": 0})
    num_threads: int = field(default=2, metadata={">=": 1})  # DALI CPU threads per pipeline
    device: Device = "auto"
    seed: int = field(default=0, metadata={">=": 0})
