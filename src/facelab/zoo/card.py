"""Model cards: what a model file is, where it comes from, how to feed it, and its licence.

A card is frozen data. Runners read their preprocessing from it (input size, colour order,
mean/std, alignment template) instead of guessing; the downloader reads the files' SHA-256 and
sizes from it. Cards serialise to and from JSON (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from facelab.errors import ConfigError
from facelab.ops.normalize import Normalization

__all__ = ["FileSpec", "ModelCard", "PackCard", "TASKS", "is_known_task"]

#: Tasks a model card may declare.
TASKS = (
    "detection",
    "recognition",
    "landmark_2d_106",
    "landmark_3d_68",
    "genderage",
    "attribute",
    "swap",
    "landmark_5",
    "liveness",
    "landmark_2d_68",
    "landmark_2d_98",
)


def is_known_task(task: str) -> bool:
    """Whether ``task`` is one of :data:`TASKS` or a 2D landmark task ``landmark_2d_<N>`` of any point count."""
    return task in TASKS or (task.startswith("landmark_2d_") and task[len("landmark_2d_") :].isdigit())


@dataclass(frozen=True)
class FileSpec:
    """One file of a model or pack.

    Attributes:
        filename: name inside the model folder (or of the archive).
        sha256: full lowercase hex SHA-256; empty when no pinned value is known.
        size_bytes: exact size, or ``None`` when unknown.
    """

    filename: str
    sha256: str = ""
    size_bytes: int | None = None


@dataclass(frozen=True)
class ModelCard:
    """Everything facelab needs to know about one model file.

    Attributes:
        name: ``arch.tag`` name, e.g. ``"scrfd_10g.buffalo_l"``.
        task: one of :data:`TASKS`.
        arch: architecture family (``"scrfd"``, ``"arcface"``, ``"retinaface"``, ...).
        files: the model's files (usually one ``.onnx``).
        urls: download mirrors, tried in order (for a file that is not shipped in a pack archive).
        input_size: ``(width, height)`` of the network input; ``None`` = dynamic.
        color_order: channel order the network expects (``"RGB"``/``"BGR"``).
        mean / std: per-channel normalisation on 0..255 pixel values.
        layout: ``"NCHW"`` or ``"NHWC"``.
        align_template: alignment template name for recognisers (e.g. ``"arcface_112_5pt"``).
        embedding_dim: embedding size for recognisers.
        license: licence of the weights (mandatory; shown to the user).
        source_url: where the weights come from.
        paper / train_data / notes: provenance.
        metrics: published or measured results, e.g. ``{"LFW": {"acc": 99.83}}``.
        extra: task-specific settings (e.g. ``{"strides": [8, 16, 32], "num_anchors": 2}``,
            ``{"threshold_cosine": 0.3}``).
    """

    name: str
    task: str
    arch: str
    files: tuple[FileSpec, ...]
    license: str
    urls: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None
    color_order: str = "RGB"
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (127.5, 127.5, 127.5)
    layout: str = "NCHW"
    align_template: str | None = None
    embedding_dim: int | None = None
    source_url: str = ""
    paper: str = ""
    train_data: str = ""
    notes: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_known_task(self.task):
            raise ConfigError(f"model card {self.name!r}: unknown task {self.task!r}; expected one of {TASKS}")
        if not self.license:
            raise ConfigError(f"model card {self.name!r}: the licence is mandatory")
        object.__setattr__(self, "files", tuple(f if isinstance(f, FileSpec) else FileSpec(**f) for f in self.files))
        object.__setattr__(self, "urls", tuple(self.urls))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))

    @property
    def normalization(self) -> Normalization:
        """The card's colour order, mean and std as a :class:`~facelab.ops.normalize.Normalization`."""
        return Normalization(self.color_order, self.mean, self.std)

    @classmethod
    def for_local_file(cls, path: str | Path, **values: Any) -> ModelCard:
        """Card for a user-supplied model file (the runners' ``default_*_card`` functions).

        Args:
            path: the model file; the card is named ``<stem>.local``, lists that one file and
                gives the path as its ``source_url``.
            **values: the other fields (``task`` and ``arch`` at least); they may also replace
                ``name``, ``files``, ``license`` or ``source_url``.
        """
        path = Path(path)
        base: dict[str, Any] = {
            "name": f"{path.stem}.local",
            "files": (FileSpec(path.name),),
            "license": "user-supplied model: check its licence",
            "source_url": str(path),
        }
        return cls(**{**base, **values})

    def with_overrides(self, **changes: Any) -> ModelCard:
        """Return a copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return _jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from :meth:`to_dict` output; unknown keys raise ``ConfigError`` (a ``ValueError``)."""
        unknown = _unknown_fields(cls, data)
        if unknown:
            raise ConfigError(f"model card: unknown fields {unknown}")
        data = dict(data)
        data["files"] = tuple(FileSpec(**f) if isinstance(f, dict) else f for f in data.get("files", ()))
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the card as JSON."""
        _write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read a card written by :meth:`save`."""
        return cls.from_dict(_read_json(path))


def _jsonable(card: ModelCard | PackCard) -> dict[str, Any]:
    """Every field of a card as JSON-safe data (tuples become lists)."""
    return json.loads(json.dumps(asdict(card)))


def _unknown_fields(cls: type, data: dict[str, Any]) -> list[str]:
    """Sorted keys of ``data`` that are not fields of the dataclass ``cls``."""
    return sorted(set(data) - {f.name for f in fields(cls)})


def _write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class PackCard:
    """A model pack: a set of models downloaded (usually as one archive) and used together.

    Attributes:
        name: pack name, e.g. ``"buffalo_l"``.
        models: the member models' cards, detection first.
        license: licence of the pack (shown once before the first download).
        archive: the archive file (name, sha256, size), or ``None`` when members download one by one.
        urls: archive mirrors, tried in order.
        source_url / notes / metrics: provenance.
    """

    name: str
    models: tuple[ModelCard, ...]
    license: str
    archive: FileSpec | None = None
    urls: tuple[str, ...] = ()
    source_url: str = ""
    notes: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.license:
            raise ConfigError(f"pack {self.name!r}: the licence is mandatory")
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "urls", tuple(self.urls))

    def model(self, task: str) -> ModelCard | None:
        """The first member card with ``task``, or ``None``."""
        return next((m for m in self.models if m.task == task), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field; member cards as :meth:`ModelCard.to_dict` dicts."""
        return _jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackCard:
        """Build a pack card from :meth:`to_dict` output (a pack JSON file); unknown keys raise ``ConfigError``."""
        unknown = _unknown_fields(cls, data)
        if unknown:
            raise ConfigError(f"pack card {data.get('name', '?')!r}: unknown fields {unknown}")
        data = dict(data)
        models = data.get("models", ())
        data["models"] = tuple(m if isinstance(m, ModelCard) else ModelCard.from_dict(m) for m in models)
        if isinstance(data.get("archive"), dict):
            data["archive"] = FileSpec(**data["archive"])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the pack card, member cards included, as JSON."""
        _write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PackCard:
        """Read a pack card written by :meth:`save`."""
        return cls.from_dict(_read_json(path))
