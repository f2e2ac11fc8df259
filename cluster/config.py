"""The job config: composes each package's frozen dataclass, loads YAML, applies `--set` overrides, validates.

    cfg = load_config("configs/synth-cpu.yaml", ["train.lr=0.01", "cluster.num_workers=4"])

Unknown sections or keys are rejected with the valid ones listed; a wrong type names the key and the type
it wants. Every run saves the resolved config (`save_config`) so it can be reproduced.
"""
from __future__ import annotations

import dataclasses
import math
import operator
import re
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from c3dhash.distributed.job import ClusterConfig, JobConfig, config_to_dict
from c3dhash.loaders.atomic import atomic_write_text


__all__ = ["ClusterConfig", "ConfigError", "JobConfig", "config_to_dict", "load_config", "save_config"]


class ConfigError(ValueError):
    """A config problem the user can fix; the message names the file/key and the fix."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


@dataclass(frozen=True)
class _SetValue:
    """A --set value: YAML-parsed, but kept as typed text for str keys (YAML 1.1 reads `off` as False)."""
    text: str
    parsed: Any


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if isinstance(value, _SetValue):
        wants_text = tp is str or origin is Literal or (
            origin in (typing.Union, types.UnionType) and str in typing.get_args(tp) and value.parsed is not None)
        value = value.text if wants_text else value.parsed
    if origin is Literal:  # the choices live in the dataclass annotations (one source of truth)
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}={value!r}; choose one of {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values ({_type_name(tp)}), got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite float, got {value!r}; set a number, e.g. 1e-3")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a new annotation kind needs a branch here
        raise TypeError(f"{where}: unsupported annotation {tp}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def section_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build one frozen dataclass from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def config_from_dict(raw: dict[str, Any], where: str = "config") -> JobConfig:
    sections = {f.name: f.default_factory for f in dataclasses.fields(JobConfig)}  # type: ignore[misc]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections ({', '.join(sections)})")
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; valid sections: {', '.join(sections)}")
    built = {name: section_from_dict(type(factory()), raw.get(name) or {}, f"{where}: {name}")
             for name, factory in sections.items()}
    cfg = JobConfig(**built)
    validate(cfg, where)
    return cfg


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr=0.01")
    key, text = item.split("=", 1)
    section, name = key.split(".", 1)
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
    return section, name, _SetValue(text, value)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = {k: dict(v or {}) for k, v in (raw or {}).items()}
    for item in overrides:
        section, name, value = _parse_override(item)
        out.setdefault(section, {})[name] = value
    return out


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"{key!r} given twice (lines {first} and {second})")
        self.key, self.first, self.second = key, first, second


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one silently,
    and a second `train:` section replaced the whole first one (its unset keys back at their defaults)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


SHIPPED = Path(__file__).resolve().parents[1] / "configs"  # package data: c3dhash/configs/*.yaml


def shipped_configs() -> list[str]:
    """Names of the configs that ship with the package (`--config synth-cpu`)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def find_config(path: str | Path) -> Path:
    """An existing file as given; else a shipped config by name (`synth-cpu`, `synth-cpu.yaml`, or
    `configs/synth-cpu.yaml` as the docs spell it), so the configs work from any folder after `pip install`."""
    p = Path(path)
    if p.is_file():
        return p
    if p.parent in (Path("."), Path("configs")):
        shipped = SHIPPED / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
        if shipped.is_file():
            return shipped
    raise ConfigError(f"{p}: config file not found; pass a YAML file or a shipped config name "
                      f"({', '.join(shipped_configs()) or 'none shipped'})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = find_config(path)
    try:
        raw = yaml.load(p.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(f"{p}: key {exc.key!r} is given twice, on lines {exc.first} and {exc.second}; keep one "
                          f"(a repeated section replaces the first one whole)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{line} malformed YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from exc
    return raw or {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, where=str(path) if path is not None else "config")


def run_dir(cfg: JobConfig) -> Path:
    """The run's folder: checkpoints, best.pt, metrics and TensorBoard events."""
    return Path(cfg.cluster.storage_path).expanduser().resolve() / cfg.cluster.name


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def save_config(cfg: JobConfig, path: str | Path) -> Path:
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def bounds(cfg: JobConfig) -> list[tuple[str, str, str, float]]:
    """(section, key, operator, bound) of every bounded key: read from each field's metadata, where the
    package's config dataclass keeps the bound next to the field."""
    return [(s.name, f.name, op, bound) for s in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, s.name)) for op, bound in f.metadata.items() if op in _OPS]


def check_ranges(cfg: JobConfig, where: str = "config") -> None:
    """Every bounded key against its bound; the message names the key, the bound and how to fix it."""
    for section, key, op, bound in bounds(cfg):
        value = getattr(getattr(cfg, section), key)
        for v in value if isinstance(value, tuple) else (value,):
            if not _OPS[op](v, bound):
                each = " (each value)" if isinstance(value, tuple) else ""
                raise ConfigError(f"{where}: {section}.{key}={_plain(value)!r} must be {op} {bound:g}{each}; "
                                  f"fix it in the config or with --set {section}.{key}=...")


def validate_workers(cfg: JobConfig, where: str) -> None:
    """cluster.num_workers, a count or an elastic [min, max] range (docs/elastic.md)."""
    c, d = cfg.cluster, cfg.data
    lo, hi = c.worker_range
    if not 1 <= lo <= hi:
        raise ConfigError(f"{where}: cluster.num_workers={list(c.worker_range) if c.elastic else lo}: a count >= 1 "
                          f"or a range [min, max] with 1 <= min <= max, e.g. [2, 8]")
    if c.elastic and d.sampler == "random":
        raise ConfigError(f"{where}: an elastic cluster.num_workers range needs data.sampler=pk (or video): the random "
                          f"sampler's global batch is data.batch_size x workers, so it would change with the size")
    if d.pk_classes == 0 and d.sampler != "pk":
        raise ConfigError(f"{where}: data.pk_classes=0 (every class in each batch) needs data.sampler=pk; with "
                          f"data.sampler={d.sampler} it counts videos or is unused: set a number >= 1")
    # P = 0 (every class): the batch is known once the split is read; the train loader checks it there
    if d.sampler in ("pk", "video") and d.pk_classes and d.pk_classes * d.pk_samples < hi:
        raise ConfigError(f"{where}: data.pk_classes x data.pk_samples = {d.pk_classes * d.pk_samples} is smaller "
                          f"than the {hi} workers of cluster.num_workers: every rank needs a clip of the global "
                          f"P x K batch per step")


def validate(cfg: JobConfig, where: str = "config") -> None:
    """Ranges and cross-field checks that types alone cannot express (choices are Literal types, checked while
    loading); fail before any worker starts."""
    check_ranges(cfg, where)
    d = cfg.data
    if d.crop[0] > d.resize[0] or d.crop[1] > d.resize[1]:
        raise ConfigError(f"{where}: data.crop {d.crop} is larger than data.resize {d.resize}")
    validate_workers(cfg, where)
    if d.reverse_negatives and (d.sampler != "video" or d.pk_samples < 4 or d.pk_samples % 2):
        raise ConfigError(f"{where}: data.reverse_negatives needs data.sampler=video and an even data.pk_samples "
                          f">= 4 (got {d.sampler}, {d.pk_samples}): half of a video's clips play backwards, and "
                          f"each half needs a positive of its own")
    if d.frame_negatives and (not d.reverse_negatives or d.pk_samples < 6 or d.pk_samples % 2 or d.num_frames < 4):
        raise ConfigError(f"{where}: data.frame_negatives needs data.reverse_negatives, an even data.pk_samples >= 6 "
                          f"and data.num_frames >= 4 (got {d.reverse_negatives}, {d.pk_samples}, {d.num_frames}): "
                          f"a video's last two clips become its still and shuffled frames, the others keep a "
                          f"forward and a backward pair")
    if cfg.loss.negatives == "own_video" and not d.reverse_negatives:
        raise ConfigError(f"{where}: loss.negatives=own_video takes a clip's negatives from its own video's "
                          f"backward (and with data.frame_negatives still and shuffled) clips; set "
                          f"data.reverse_negatives=true (with data.sampler=video), or loss.negatives=all")
    if cfg.train.amp == "bf16" and not cfg.cluster.use_gpu:
        warnings.warn(f"{where}: train.amp=bf16 on CPU workers: torch 2.14's CPU bf16 conv3d weight gradients "
                      f"were measured wrong for r3d_18 (docs/training.md: Mixed precision); use train.amp=auto or off",
                      stacklevel=2)
