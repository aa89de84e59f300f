"""Typed training configuration: a dataclass, YAML files and ``key=value`` overrides.

Fields mirror arcface_torch's ``configs/base.py`` (same names and defaults where they exist).
Precedence: dataclass defaults < YAML file (after the files it names in ``_base_``) < command-line
``key=value`` overrides. Values of overrides are parsed as YAML scalars/lists (``fp16=true``,
``margin_list=[1.0,0.0,0.4]``) and then checked against the field's type; an unknown key is an
error naming the known ones.

The same machinery serves every training task: :func:`load_config` and :func:`apply_overrides`
take the config dataclass (``cls=``; :class:`TrainConfig` for recognition, the detection and
landmark rooms pass their own). A YAML file may start from other files with
``_base_: base.yaml`` (or a list of them, paths relative to the file), so a published variant
is one base plus a few overridden keys.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from facelab.errors import ConfigError

__all__ = ["TrainConfig", "load_config", "apply_overrides", "read_yaml_config", "check_fields"]


def check_fields(checks: list[tuple[bool, str]]) -> None:
    """Raise :class:`~facelab.errors.ConfigError` ``"config: <message>"`` for the first ``(ok, message)`` not ok."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"config: {message}")


@dataclass
class TrainConfig:
    """Everything a training run needs. See arcface_torch ``configs/base.py`` for the originals."""

    network: str = "iresnet50"
    network_kwargs: dict[str, Any] = field(default_factory=dict)  #: extra backbone arguments (e.g. width, input_size)
    input_size: int = 112
    embedding_size: int = 512
    margin_list: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.0])
    scale: float = 64.0
    interclass_filtering_threshold: float = 0.0
    margin_straight_through: bool = False  #: True: margin without gradient, as arcface_torch's CombinedMarginLoss
    margin_threshold: bool = True  #: th/mm fallback beyond m1·θ + m2 > π (False: as arcface_torch's CombinedMarginLoss)
    easy_margin: bool = False
    num_subcenters: int = 1  #: K sub-centres per class (Sub-center ArcFace)
    subcenter_drop_epoch: int = 0  #: at the start of this epoch keep only each class's dominant sub-centre (0 = never)
    sample_rate: float = 1.0
    vpl: bool = False  #: Variational Prototype Learning (feature memory mixed into the prototypes)
    vpl_start_iters: int = 8000
    vpl_allowed_delta: int = 200
    vpl_lambda: float = 0.15
    fp16: bool = False
    bf16: bool = False
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128  #: per rank
    num_epoch: int = 20
    warmup_epoch: int = 0
    gradient_acc: int = 1
    clip_grad_norm: float = 5.0
    seed: int = 2048
    rec: str = ""  #: a .rec file or a folder with train.rec/train.idx, or "synthetic"
    folder: str = ""  #: an image folder with one sub-folder per identity
    synthetic: bool = False
    synthetic_length: int = 10000
    num_classes: int = 0  #: 0 = from the data
    flip: bool = True
    num_workers: int = 2
    val_targets: list[str] = field(default_factory=list)  #: .bin names in the rec folder, or paths
    verbose: int = 2000  #: steps between verifications
    frequent: int = 10  #: steps between log lines
    save_every: int = 0  #: steps between checkpoints (0 = end of every epoch only)
    max_steps: int = 0  #: stop (with a checkpoint) after this many steps; 0 = run all epochs
    resume: bool = True  #: continue from the checkpoint in ``output`` if there is one
    output: str = "work_dirs/run"
    train_data_name: str = ""  #: recorded in exported model cards

    def validate(self) -> TrainConfig:
        """Check ranges; returns ``self``. Raises :class:`~facelab.errors.ConfigError`."""
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.input_size >= 16 and self.input_size % 16 == 0, "input_size must be a multiple of 16 (112)"),
            (self.num_epoch >= 1, "num_epoch must be >= 1"),
            (0 <= self.warmup_epoch <= self.num_epoch, "warmup_epoch must be in [0, num_epoch]"),
            (self.gradient_acc >= 1, "gradient_acc must be >= 1"),
            (0.0 <= self.sample_rate <= 1.0, "sample_rate must be in [0, 1]"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (len(self.margin_list) == 3, "margin_list must be [m1, m2, m3]"),
            (self.lr > 0, "lr must be > 0"),
            (not (self.fp16 and self.bf16), "fp16 and bf16 are exclusive"),
        ]
        check_fields(checks)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _coerce(key: str, value: Any, cls: type = TrainConfig) -> Any:
    hint = _hints(cls)[key]
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if hint in (int, float):
            if isinstance(value, bool):
                raise TypeError
            out = hint(value)
            if hint is int and out != value:
                raise TypeError
            return out
        if hint is str:
            return "" if value is None else str(value)
        if origin is list:
            (item,) = typing.get_args(hint)
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [item(v) for v in value]
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"config: {key}={value!r} is not a valid {getattr(hint, '__name__', hint)}")


def apply_overrides(cfg: Any, overrides: dict[str, Any] | list[str]) -> Any:
    """Set fields of a config dataclass from a dict or from ``["key=value", ...]`` strings (values parsed as YAML)."""
    import yaml

    if isinstance(overrides, list):
        parsed: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"config override {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            parsed[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        overrides = parsed
    known = {f.name for f in fields(cfg)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"config: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        setattr(cfg, key, _coerce(key, value, type(cfg)))
    return cfg


def read_yaml_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML config file, merged over the files its ``_base_`` key names.

    Args:
        path: the YAML file. ``_base_`` (a path or a list of paths, relative to this file) is
            read first, in order; this file's own keys win.

    Raises:
        ConfigError: missing file, not a mapping, or a ``_base_`` cycle.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    if p.resolve() in _seen:
        raise ConfigError(f"config file {p}: _base_ cycle through {[str(s) for s in _seen]}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of key: value")
    bases = data.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else list(bases):
        merged.update(read_yaml_config(p.parent / str(base), (*_seen, p.resolve())))
    merged.update(data)
    return merged


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None, cls: type = TrainConfig
) -> Any:
    """Defaults of ``cls``, then the YAML file ``path`` (a mapping, with its ``_base_`` files), then ``overrides``.

    Returns:
        The validated config (``cls.validate()`` is called when ``cls`` has it).
    """
    cfg = cls()
    if path is not None:
        apply_overrides(cfg, read_yaml_config(path))
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg.validate() if hasattr(cfg, "validate") else cfg
