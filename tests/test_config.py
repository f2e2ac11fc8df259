"""Config system: YAML + --set overrides into frozen typed dataclasses; bad keys and types are rejected."""
import dataclasses
import typing
import warnings
from pathlib import Path

import pytest

from c3dhash.cluster.config import (ClusterConfig, ConfigError, JobConfig, config_from_dict, load_config,
                                    save_config)
from c3dhash.distributed.config import TrainConfig
from c3dhash.loaders.config import DataConfig
from c3dhash.loaders.splits import DATASETS

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    saved = save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(saved) == cfg


def test_defaults_are_frozen():
    cfg = load_config(None)
    assert cfg == JobConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_overrides_are_typed():
    cfg = load_config(CONFIGS[0], ["train.lr=0.01", "data.crop=[24, 24]", "model.weights=null",
                                   "cluster.use_gpu=true", "train.epochs=3"])
    assert cfg.train.lr == 0.01 and cfg.train.epochs == 3 and cfg.cluster.use_gpu is True
    assert cfg.data.crop == (24, 24) and cfg.model.weights is None


def test_set_keeps_text_for_string_keys():
    # YAML 1.1 reads off/no/yes as booleans; a str key must still get the text the user typed.
    cfg = load_config(None, ["train.amp=off", "cluster.name=no", "train.sync_bn=off"])
    assert cfg.train.amp == "off" and cfg.cluster.name == "no" and cfg.train.sync_bn is False


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert config_from_dict({"loss": {"margin": 20}}).loss.margin == 20.0
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        config_from_dict({"train": {"epochs": 2.5}})


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.learning_rate=0.1"])
    msg = str(err.value)
    assert "learning_rate" in msg and "valid keys" in msg and "lr" in msg and "momentum" in msg


def test_unknown_section_lists_sections():
    with pytest.raises(ConfigError, match="valid sections: data, model, loss, train, eval, cluster"):
        config_from_dict({"optim": {}})


@pytest.mark.parametrize("override, pattern", [
    ("train.sync_bn=yes please", r"train\.sync_bn: expected bool"),
    ("data.crop=[1, 2, 3]", r"data\.crop: expected 2 values"),
    ("data.mean=abc", r"data\.mean: expected a list"),
    ("model.bits=0", r"model\.bits=0 must be >= 1"),
    ("train.optimizer=adam", r"choose one of sgd, adamw"),
    ("cluster.log_level=LOUD", r"cluster\.log_level=.LOUD.; choose one of DEBUG, INFO, WARNING, ERROR"),
    ("data.crop=[200, 200]", r"larger than data\.resize"),
    ("data.reverse_negatives=true", r"data\.reverse_negatives needs data\.sampler=video and an even "
                                    r"data\.pk_samples >= 4 \(got pk, 4\)"),
    ("lr=0.1", r"expected section\.key=value"),
    ("loss.negatives=own_video", r"loss\.negatives=own_video .* set data\.reverse_negatives=true"),
    ("loss.negatives=others", r"loss\.negatives=.others.; choose one of all, own_video"),
])
def test_bad_values_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


@pytest.mark.parametrize("k, ok", [(2, False), (3, False), (4, True), (6, True)])
def test_reverse_negatives_needs_an_even_k_of_at_least_4(k, ok):
    overrides = ["data.sampler=video", "data.reverse_negatives=true", f"data.pk_samples={k}"]
    if ok:
        assert load_config(None, overrides).data.reverse_negatives
    else:
        with pytest.raises(ConfigError, match=f"got video, {k}"):
            load_config(None, overrides)


@pytest.mark.parametrize("extra, ok", [
    (["data.pk_samples=6"], True), (["data.pk_samples=8", "data.num_frames=4"], True),
    (["data.pk_samples=4"], False),
    (["data.pk_samples=6", "data.num_frames=3"], False), (["data.pk_samples=6", "data.reverse_negatives=false"], False),
])
def test_frame_negatives_need_backward_pairs_six_clips_and_four_frames(extra, ok):
    overrides = ["data.sampler=video", "data.reverse_negatives=true", "data.frame_negatives=true", *extra]
    if ok:
        assert load_config(None, overrides).data.frame_negatives
    else:
        with pytest.raises(ConfigError, match=r"data\.frame_negatives needs data\.reverse_negatives, an even "
                                              r"data\.pk_samples >= 6 and data\.num_frames >= 4"):
            load_config(None, overrides)


def test_own_video_negatives_load_with_backward_clips():
    cfg = load_config(None, ["data.sampler=video", "data.reverse_negatives=true", "loss.negatives=own_video"])
    assert cfg.loss.negatives == "own_video"


def test_num_workers_is_a_count_or_an_elastic_range_that_round_trips(tmp_path):
    fixed = load_config(None, ["cluster.num_workers=3"]).cluster
    assert (fixed.elastic, fixed.worker_range) == (False, (3, 3))
    cfg = load_config(None, ["cluster.num_workers=[2, 8]"])
    assert (cfg.cluster.elastic, cfg.cluster.worker_range, cfg.cluster.num_workers) == (True, (2, 8), (2, 8))
    assert load_config(save_config(cfg, tmp_path / "c.yaml")) == cfg  # saved as a YAML list, loaded as the range
    # the global batch needs no divisibility: ranks take slices of sizes differing by at most one
    assert load_config(None, ["data.pk_classes=3", "data.pk_samples=3", "cluster.num_workers=[1, 4]"])
    # P = 0 (every class): the batch is checked against the workers once the split is read (the train loader)
    assert load_config(None, ["data.pk_classes=0", "cluster.num_workers=[1, 64]"]).data.pk_classes == 0


@pytest.mark.parametrize("overrides, pattern", [
    (["cluster.num_workers=[3, 2]"], r"num_workers=\[3, 2\]: a count >= 1 or a range \[min, max\] with 1 <= min"),
    (["cluster.num_workers=[0, 2]"], r"cluster\.num_workers=\[0, 2\]"),
    (["cluster.num_workers=0"], r"cluster\.num_workers=0 must be >= 1"),
    (["cluster.num_workers=[1, 2, 3]"], r"cluster\.num_workers: expected int \| tuple\[int, int\]"),
    (["cluster.num_workers=[1, 2]", "data.sampler=random"], r"elastic cluster\.num_workers range needs data\.sampler"),
    (["cluster.num_workers=[1, 5]", "data.pk_classes=2", "data.pk_samples=2"], r"= 4 is smaller than the 5 workers"),
    (["cluster.resize_interval_s=0"], r"cluster\.resize_interval_s=0\.0 must be > 0"),
    (["data.pk_classes=0", "data.sampler=video"],
     r"data\.pk_classes=0 \(every class in each batch\) needs data\.sampler=pk"),
    (["data.pk_classes=-1"], r"data\.pk_classes=-1 must be >= 0"),
])
def test_bad_worker_ranges_name_the_key_and_the_fix(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.1\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+ malformed YAML"):
        load_config(bad)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bf16_on_cpu_workers_warns():
    with pytest.warns(UserWarning, match=r"train\.amp=bf16 on CPU workers"):
        load_config(None, ["train.amp=bf16", "cluster.use_gpu=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, ["train.amp=bf16", "cluster.use_gpu=true"])
        load_config(None, ["train.amp=auto", "cluster.use_gpu=false"])


@pytest.mark.parametrize("override, pattern", [
    ("train.lr=-1", r"train\.lr=-1\.0 must be > 0"),
    ("train.lr=0", r"train\.lr=0\.0 must be > 0"),
    ("train.weight_decay=-0.1", r"train\.weight_decay=-0\.1 must be >= 0"),
    ("train.log_every=0", r"train\.log_every=0 must be >= 1"),
    ("cluster.cpus_per_worker=0", r"cluster\.cpus_per_worker=0 must be >= 1"),
    ("data.std=[0.2, 0, 0.2]", r"data\.std=\[0\.2, 0\.0, 0\.2\] must be > 0 \(each value\)"),
    ("data.crop=[-4, 8]", r"data\.crop=\[-4, 8\] must be >= 1 \(each value\)"),
    ("train.momentum=1.5", r"train\.momentum=1\.5 must be < 1"),
    ("data.split=4", r"data\.split=4 must be <= 3"),
    ("train.lr=.nan", r"train\.lr: expected a finite float"),
    ("eval.map_at_k=[5, 0]", r"eval\.map_at_k=\[5, 0\] must be >= 1 \(each value\)"),
    ("cluster.max_failures=-2", r"cluster\.max_failures=-2 must be >= -1"),
    ("model.bits=0", r"model\.bits=0 must be >= 1"),
])
def test_numeric_ranges_are_checked_with_the_fix(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(None, [override])
    assert "--set " in str(err.value) or "e.g. 1e-3" in str(err.value)


def test_yaml_exponent_floats_are_accepted(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\nloss:\n  margin: 2e1\ndata:\n  std: [2e-1, 0.2, 1e-1]\n")
    cfg = load_config(f, ["train.gamma=1e-1"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.loss.margin, cfg.train.gamma) == (1e-3, 5e-4, 20.0, 0.1)
    assert cfg.data.std == (0.2, 0.2, 0.1)
    with pytest.raises(ConfigError, match=r"train\.lr: expected float"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        load_config(None, ["train.epochs=1e2"])  # only float keys take the exponent form


def test_choices_are_the_literal_annotations():
    # One source of truth: the loader reads the choices from the dataclass annotations.
    hints = typing.get_type_hints(DataConfig)
    assert typing.get_origin(hints["dataset"]) is typing.Literal
    assert DATASETS == typing.get_args(hints["dataset"])
    for section, cls in (("train", TrainConfig), ("cluster", ClusterConfig)):
        for key, tp in typing.get_type_hints(cls).items():
            if typing.get_origin(tp) is typing.Literal:
                with pytest.raises(ConfigError, match=rf"{section}\.{key}='nope'; choose one of "
                                   rf"{', '.join(typing.get_args(tp))}"):
                    load_config(None, [f"{section}.{key}=nope"])
                assert getattr(load_config(None, [f"{section}.{key}={typing.get_args(tp)[-1]}"]),
                               section).__getattribute__(key) == typing.get_args(tp)[-1]


@pytest.mark.parametrize("text, key, lines", [
    ("train:\n  lr: 0.1\n  lr: 0.2\n", "lr", (2, 3)),  # PyYAML kept 0.2 silently
    ("train:\n  optimizer: adamw\n  amp: true\nmodel:\n  bits: 48\ntrain:\n  lr: 0.2\n", "train", (1, 6)),
])
def test_duplicate_yaml_keys_name_the_key_and_both_lines(tmp_path, text, key, lines):
    f = tmp_path / "dup.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    msg = str(exc.value)
    assert "\n" not in msg and str(f) in msg
    assert f"key '{key}' is given twice, on lines {lines[0]} and {lines[1]}" in msg


def test_yaml_anchors_and_merges_still_load(tmp_path):
    f = tmp_path / "merge.yaml"
    f.write_text("base: &b {lr: 0.01}\n")
    from c3dhash.cluster.config import read_yaml
    assert read_yaml(f) == {"base": {"lr": 0.01}}
    f.write_text("a: &b {lr: 0.01}\nc:\n  <<: *b\n  momentum: 0.8\n")
    assert read_yaml(f) == {"a": {"lr": 0.01}, "c": {"lr": 0.01, "momentum": 0.8}}
